"""Model architectures: the few numbers that decide how much GPU memory a model needs.

The planner sizes a replica from parameters, layers, heads and dtype, so it needs those for the model
a user names. Popular open models are known out of the box (data/models.csv, copied from public
`config.json` values); any other model can be described in the spec's `architecture` field or by a
Hugging Face `config.json`. Where a figure is missing it is derived (head_dim = hidden / heads,
parameters from the layer shapes) and the derivation is recorded in `assumptions`, never hidden.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any


class UnknownModel(LookupError):
    """The model is not in the built-in table and no architecture was given."""


@dataclass(frozen=True, slots=True)
class ModelArchitecture:
    """What the memory arithmetic needs to know about a model.

    `weight_bytes_per_param` is set for checkpoints whose native format is not 16-bit (DeepSeek-V3 is
    released in FP8, gpt-oss in MXFP4); None means the dtype decides. `kv_lora_rank` and
    `qk_rope_head_dim` are set for multi-head latent attention (DeepSeek), whose KV cache is one
    compressed vector per token and layer instead of per-head keys and values.
    """

    name: str
    params_b: float
    layers: int
    attention_heads: int
    kv_heads: int
    head_dim: int
    hidden_size: int | None = None
    max_context: int | None = None
    dtype: str = "bfloat16"
    vocab_size: int | None = None
    moe: bool = False
    active_params_b: float | None = None
    kv_lora_rank: int | None = None
    qk_rope_head_dim: int | None = None
    weight_bytes_per_param: float | None = None
    native_format: str | None = None
    assumptions: tuple[str, ...] = ()

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank is not None

    @property
    def active_b(self) -> float:
        """Parameters read per token, in billions (all of them for a dense model)."""
        return self.active_params_b if self.moe and self.active_params_b else self.params_b


# Facts the CSV has no column for. DeepSeek: MLA dims and FP8 weights from its public config;
# gpt-oss: MXFP4 MoE weights, about 4.5 bits per parameter averaged over the checkpoint.
_EXTRA: dict[str, dict[str, Any]] = {
    "deepseek-ai/DeepSeek-V3": {
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "head_dim": 128,
        "weight_bytes_per_param": 1.0,
        "native_format": "fp8",
    },
    "deepseek-ai/DeepSeek-R1": {
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "head_dim": 128,
        "max_context": 163840,
        "weight_bytes_per_param": 1.0,
        "native_format": "fp8",
    },
    "openai/gpt-oss-20b": {"weight_bytes_per_param": 0.6, "native_format": "mxfp4"},
    "openai/gpt-oss-120b": {"weight_bytes_per_param": 0.56, "native_format": "mxfp4"},
}

_DEFAULT_HEAD_DIM = 128


def estimate_params_b(
    layers: int,
    hidden_size: int,
    vocab_size: int | None,
    intermediate_size: int | None = None,
    *,
    kv_fraction: float = 1.0,
) -> float:
    """Dense transformer parameters from its shapes, in billions (embeddings counted twice, untied).

    Attention is Q and O (h² each) plus K and V (h² each, scaled by kv_heads / heads for GQA); the
    MLP is gated (3·h·intermediate); when its width is unknown it is taken as 3.5·h (Llama, Qwen and
    phi-4 use 3.5·h), which errs on the large side for narrower models: safer for memory sizing.
    """
    attention = (2 + 2 * kv_fraction) * hidden_size * hidden_size
    width = intermediate_size or 3.5 * hidden_size
    mlp = 3 * hidden_size * width
    embeddings = 2 * (vocab_size or 0) * hidden_size
    return (layers * (attention + mlp) + embeddings) / 1e9


def _int_or_none(text: str | None) -> int | None:
    return int(float(text)) if text and text.strip() else None


def _float_or_none(text: str | None) -> float | None:
    return float(text) if text and text.strip() else None


def _complete(
    name: str,
    *,
    params_b: float | None,
    layers: int,
    attention_heads: int,
    kv_heads: int | None,
    head_dim: int | None,
    hidden_size: int | None,
    extra: Mapping[str, Any] | None = None,
    **rest: Any,
) -> ModelArchitecture:
    """Fill the derivable gaps of a partial architecture, noting each derivation."""
    assumptions: list[str] = []
    extra = dict(extra or {})
    head_dim = head_dim or extra.pop("head_dim", None)
    if head_dim is None:
        if hidden_size:
            head_dim = hidden_size // attention_heads
            assumptions.append(f"head_dim {head_dim} derived as hidden_size / attention_heads")
        else:
            head_dim = _DEFAULT_HEAD_DIM
            assumptions.append(f"head_dim unknown; assumed {_DEFAULT_HEAD_DIM}")
    else:
        extra.pop("head_dim", None)
    if kv_heads is None:
        kv_heads = attention_heads
        assumptions.append("kv_heads unknown; assumed equal to attention heads (no GQA)")
    if params_b is None:
        if hidden_size is None:
            raise UnknownModel(f"{name}: neither the parameter count nor the hidden size is known")
        params_b = estimate_params_b(
            layers,
            hidden_size,
            rest.get("vocab_size"),
            rest.pop("intermediate_size", None),
            kv_fraction=kv_heads * head_dim / hidden_size,
        )
        assumptions.append(f"parameter count {params_b:.2f}B estimated from the layer shapes")
    rest.pop("intermediate_size", None)
    merged = {**rest, **extra}
    return ModelArchitecture(
        name=name,
        params_b=params_b,
        layers=layers,
        attention_heads=attention_heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        hidden_size=hidden_size,
        assumptions=tuple(assumptions),
        **merged,
    )


@functools.cache
def known_models() -> dict[str, ModelArchitecture]:
    """The built-in table, keyed by Hugging Face id (look-ups are case-insensitive via `find_model`)."""
    text = resources.files("gpupool.planner").joinpath("data/models.csv").read_text(encoding="utf-8")
    table: dict[str, ModelArchitecture] = {}
    for row in csv.DictReader(text.splitlines()):
        name = row["model"]
        moe = row["moe"].strip().lower() == "true"
        table[name] = _complete(
            name,
            params_b=_float_or_none(row["params_b"]),
            layers=int(row["layers"]),
            attention_heads=int(row["attention_heads"]),
            kv_heads=_int_or_none(row["kv_heads"]),
            head_dim=_int_or_none(row["head_dim"]),
            hidden_size=_int_or_none(row["hidden_size"]),
            extra=_EXTRA.get(name),
            max_context=_int_or_none(row["max_context"]),
            dtype=row["dtype"].strip() or "bfloat16",
            vocab_size=_int_or_none(row["vocab_size"]),
            moe=moe,
            active_params_b=_float_or_none(row["active_params_b"]) if moe else None,
        )
    return table


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


def architecture_from_hf_config(name: str, config: Mapping[str, Any]) -> ModelArchitecture:
    """An architecture from a Hugging Face `config.json` (multimodal configs: their `text_config`)."""
    text_config = config.get("text_config")
    if isinstance(text_config, Mapping) and "num_hidden_layers" in text_config:
        config = {**config, **text_config}
    try:
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
    except KeyError as missing:
        raise UnknownModel(f"{name}: config.json has no {missing.args[0]}") from None
    hidden = config.get("hidden_size")
    experts = config.get("num_local_experts") or config.get("num_experts") or config.get("n_routed_experts")
    moe = bool(experts)
    kv_lora_rank = config.get("kv_lora_rank")
    quant = config.get("quantization_config") or {}
    weight_bytes: float | None = None
    native: str | None = None
    if isinstance(quant, Mapping) and quant.get("quant_method"):
        native = str(quant["quant_method"])
        bits = quant.get("bits") or (8 if "fp8" in native else 4)
        weight_bytes = 1.0 if int(bits) >= 8 else 0.55
    params = config.get("num_parameters")
    return _complete(
        name,
        params_b=float(params) / 1e9 if params else None,
        layers=layers,
        attention_heads=heads,
        kv_heads=config.get("num_key_value_heads"),
        head_dim=config.get("head_dim") or (config.get("qk_nope_head_dim") if kv_lora_rank else None),
        hidden_size=int(hidden) if hidden else None,
        max_context=config.get("max_position_embeddings"),
        dtype=str(config.get("torch_dtype") or config.get("dtype") or "bfloat16"),
        vocab_size=config.get("vocab_size"),
        intermediate_size=config.get("intermediate_size"),
        moe=moe,
        kv_lora_rank=kv_lora_rank,
        qk_rope_head_dim=config.get("qk_rope_head_dim") if kv_lora_rank else None,
        weight_bytes_per_param=weight_bytes,
        native_format=native,
    )


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
    if base is not None:
        return dataclasses.replace(base, **given)
    missing = [key for key in ("layers", "attention_heads") if key not in given]
    if missing:
        raise UnknownModel(
            f"{name}: architecture needs at least layers and attentionHeads (missing {missing})"
        )
    return _complete(
        name,
        params_b=given.pop("params_b", None),
        layers=int(given.pop("layers")),
        attention_heads=int(given.pop("attention_heads")),
        kv_heads=given.pop("kv_heads", None),
        head_dim=given.pop("head_dim", None),
        hidden_size=given.pop("hidden_size", None),
        **given,
    )


def resolve_architecture(model_id: str, override: Mapping[str, Any] | None = None) -> ModelArchitecture:
    """The architecture to plan with: built-in table, overridden field by field by the spec."""
    base = find_model(model_id)
    if override:
        return architecture_from_spec(model_id, override, base)
    if base is None:
        raise UnknownModel(
            f"model {model_id!r} is not in the built-in table; give spec.architecture "
            "(paramsB, layers, attentionHeads, kvHeads, headDim, ...) or a config.json"
        )
    return base
