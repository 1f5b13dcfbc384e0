"""Model architectures: the numbers that decide how much GPU memory a model needs.

The planner sizes a replica from the model's layer shapes, layer types, parameter count and
checkpoint format, so it needs those for the model a user names. They come from the model's own
`config.json` and safetensors headers (`hf_config.architecture_from_hub`): resolved from the
Hugging Face Hub by the controller, or, offline, from the built-in table (`data/models.json`, the
same two documents for popular open models, trimmed to the keys that matter). A spec may also
describe a model field by field (`spec.architecture`). Where a figure is missing it is derived
and the derivation is recorded in `assumptions`, never hidden.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gpupool.planner.kv_cache import LayerRun


class UnknownModel(LookupError):
    """The model is not in the built-in table and nothing else describes it."""


@dataclass(frozen=True, slots=True)
class StateShape:
    """The recurrent state of one Mamba2 or gated-delta-net layer, before tensor parallelism.

    vLLM keeps a causal-conv state of `(conv_kernel - 1) x conv_dim` and an SSM state of
    `heads x head_dim x state_size` per sequence, split across ranks by heads and channels.
    """

    conv_dim: int
    conv_kernel: int
    heads: int
    head_dim: int
    state_size: int

    def bytes_per_rank(self, tensor_parallel_size: int, dtype_bytes: int) -> int:
        tp = tensor_parallel_size
        conv = (self.conv_kernel - 1) * -(-self.conv_dim // tp)
        ssm = -(-self.heads // tp) * self.head_dim * self.state_size
        return (conv + ssm) * dtype_bytes


@dataclass(frozen=True, slots=True)
class RopeScaling:
    """A model's `rope_scaling`, as far as the context length vLLM derives from it goes."""

    rope_type: str
    factor: float = 1.0
    original_max_position_embeddings: int | None = None


@dataclass(frozen=True, slots=True)
class ModelArchitecture:
    """What the memory arithmetic needs to know about a model.

    `layer_runs` lists the layers by KV cache format (full, sliding window, chunked local, MLA,
    state); empty means every layer is full attention (or MLA when `kv_lora_rank` is set).
    `checkpoint_bytes` is the exact size of the weights as stored (the safetensors headers' element
    counts times their dtype sizes); `native_format` is the checkpoint's quantization
    (`quantization_config`), None for plain 16-bit weights.
    """

    name: str
    params_b: float
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int | None = None
    intermediate_size: int | None = None
    max_context: int | None = None
    dtype: str = "bfloat16"
    vocab_size: int | None = None
    tie_word_embeddings: bool = False
    moe: bool = False
    active_params_b: float | None = None
    experts: int | None = None
    experts_per_token: int | None = None
    moe_intermediate_size: int | None = None
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    native_format: str | None = None
    checkpoint_bytes: int | None = None
    layer_runs: tuple[LayerRun, ...] = ()
    state: StateShape | None = None
    fp16_allowed: bool = True
    model_type: str = ""
    max_position_embeddings: int | None = None
    rope_scaling: RopeScaling | None = None
    assumptions: tuple[str, ...] = ()

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def active_b(self) -> float:
        """Parameters read per token, in billions (all of them for a dense model)."""
        return self.active_params_b if self.moe and self.active_params_b else self.params_b

    @property
    def runs(self) -> tuple[LayerRun, ...]:
        """The layers by KV cache format, defaulting to all full attention (or all MLA)."""
        if self.layer_runs:
            return self.layer_runs
        return (LayerRun("mla" if self.mla else "full", self.layers),)

    @property
    def embedding_params(self) -> int:
        """Input embedding plus LM head (one matrix when tied): kept in 16 bit by every format."""
        if not self.vocab_size or not self.hidden_size:
            return 0
        return self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)

    @property
    def sliding_layers(self) -> int:
        return sum(run.count for run in self.runs if run.kind in ("sliding", "chunked"))


@functools.cache
def _table_documents() -> dict[str, Mapping[str, Any]]:
    text = resources.files("gpupool.planner").joinpath("data/models.json").read_text(encoding="utf-8")
    table: dict[str, Mapping[str, Any]] = json.loads(text)["models"]
    return table


@functools.cache
def known_models() -> dict[str, ModelArchitecture]:
    """The built-in table, keyed by Hugging Face id (look-ups are case-insensitive via `find_model`)."""
    from gpupool.planner.hf_config import architecture_from_hub

    return {
        name: architecture_from_hub(
            name,
            entry["config"],
            parameters_by_dtype=entry.get("parameters"),
            extra_configs=entry.get("extra_configs"),
        )
        for name, entry in _table_documents().items()
    }


def find_model(model_id: str) -> ModelArchitecture | None:
    """The built-in architecture of a Hugging Face id, matched case-insensitively; None if unknown."""
    table = known_models()
    if model_id in table:
        return table[model_id]
    lowered = model_id.lower()
    for name, arch in table.items():
        if name.lower() == lowered:
            return arch
    return None


_SPEC_FIELDS = {
    "paramsB": "params_b",
    "layers": "layers",
    "hiddenSize": "hidden_size",
    "attentionHeads": "attention_heads",
    "kvHeads": "kv_heads",
    "headDim": "head_dim",
    "maxContext": "max_context",
    "moe": "moe",
    "activeParamsB": "active_params_b",
    "dtype": "dtype",
}


def architecture_from_spec(
    name: str, override: Mapping[str, Any], base: ModelArchitecture | None = None
) -> ModelArchitecture:
    """The spec's `architecture` (camelCase wire shape) over the built-in entry, if any."""
    given = {
        _SPEC_FIELDS[key]: value
        for key, value in override.items()
        if key in _SPEC_FIELDS and value is not None
    }
    if given.get("dtype") == "fp8":
        # A checkpoint stored in FP8 is an fp8-quantized one, whatever describes it.
        given["native_format"] = "fp8"
    if base is not None:
        if "params_b" in given:
            # A stated size replaces the checkpoint's measured one.
            given["checkpoint_bytes"] = None
        if "layers" in given and base.layer_runs:
            given["layer_runs"] = ()
        return dataclasses.replace(base, **given)
    missing = [key for key in ("layers", "attention_heads") if key not in given]
    if missing:
        raise UnknownModel(
            f"{name}: architecture needs at least layers and attentionHeads (missing {missing})"
        )
    from gpupool.planner.hf_config import architecture_from_fields

    return architecture_from_fields(name, given)


def resolve_architecture(model_id: str, override: Mapping[str, Any] | None = None) -> ModelArchitecture:
    """The architecture to plan with: built-in table, overridden field by field by the spec."""
    base = find_model(model_id)
    if override:
        return architecture_from_spec(model_id, override, base)
    if base is None:
        raise UnknownModel(
            f"model {model_id!r} is not in the built-in table and could not be read from the Hub; "
            "give spec.architecture (paramsB, layers, attentionHeads, kvHeads, headDim, ...)"
        )
    return base
