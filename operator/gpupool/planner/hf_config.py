"""A model's architecture read from its Hugging Face `config.json` and safetensors headers.

The same parser serves a model resolved from the Hub and the built-in table, so there is one way
of knowing a model. It reads what vLLM reads: the layer shapes; which layers are full, windowed,
chunked-local, latent (MLA) or recurrent state (Mamba2, gated delta net), from `layer_types` or
the older per-family keys (Gemma's `sliding_window_pattern`, Gemma 2's alternation, Qwen3-Next's
`full_attention_interval`, Nemotron-H's `hybrid_override_pattern`, Llama 4's `no_rope_layers`);
the longest context as `vllm/config/model.py` derives it (the smallest length key, times the
rope scaling factor except for llama3/longrope/su scaling and Gemma 3, whose maximum is already
scaled; YaRN scales `original_max_position_embeddings`); the checkpoint's quantization
(`quantization_config`, or ModelOpt's `hf_quant_config.json`); whether the family forbids float16.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gpupool.planner.kv_cache import LayerKind, LayerRun
from gpupool.planner.models import ModelArchitecture, RopeScaling, StateShape, UnknownModel

#: Bytes per element of each safetensors dtype.
DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2,
    "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
# vllm/config/model.py: the length keys whose smallest value is the model's context.
_LENGTH_KEYS = (
    "max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "model_max_length",
    "max_sequence_length", "max_seq_length", "seq_len",
)  # fmt: skip
_UNSCALED_ROPE = ("su", "longrope", "llama3")
# vllm/config/model.py _FLOAT16_NOT_SUPPORTED_MODELS: numerically unstable in float16.
_NO_FLOAT16 = frozenset({"gemma2", "gemma3", "gemma3_text", "plamo2", "glm4"})
_LAYER_TYPES: Mapping[str, LayerKind] = {
    "full_attention": "full",
    "attention": "full",
    "sliding_attention": "sliding",
    "chunked_attention": "chunked",
    "linear_attention": "state",
    "mamba": "state",
}
_DEFAULT_HEAD_DIM = 128


def estimate_params_b(
    layers: int,
    hidden_size: int,
    vocab_size: int | None,
    intermediate_size: int | None = None,
    *,
    kv_fraction: float = 1.0,
    tied: bool = False,
) -> float:
    """Dense transformer parameters from its shapes, in billions.

    Attention is Q and O (h² each) plus K and V (h² each, scaled by kv_heads / heads for GQA); the
    MLP is gated (3·h·intermediate); when its width is unknown it is taken as 3.5·h (Llama, Qwen and
    phi-4 use 3.5·h), which errs on the large side for narrower models: safer for memory sizing.
    """
    attention = (2 + 2 * kv_fraction) * hidden_size * hidden_size
    width = intermediate_size or 3.5 * hidden_size
    mlp = 3 * hidden_size * width
    embeddings = (1 if tied else 2) * (vocab_size or 0) * hidden_size
    return (layers * (attention + mlp) + embeddings) / 1e9


def _text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Multimodal configs keep the language model's keys in `text_config` (or `llm_config`)."""
    merged = dict(config)
    for key in ("text_config", "llm_config", "language_config"):
        inner = config.get(key)
        if isinstance(inner, Mapping) and "num_hidden_layers" in inner:
            merged.update(inner)
            merged["model_type"] = config.get("model_type", inner.get("model_type", ""))
            merged["text_model_type"] = inner.get("model_type", "")
            break
    return merged


def _rope_scaling(config: Mapping[str, Any]) -> RopeScaling | None:
    raw = config.get("rope_scaling") or config.get("rope_parameters")
    if not isinstance(raw, Mapping):
        return None
    rope_type = str(raw.get("rope_type") or raw.get("type") or "default")
    original = raw.get("original_max_position_embeddings")
    return RopeScaling(
        rope_type=rope_type,
        factor=float(raw.get("factor") or 1.0),
        original_max_position_embeddings=int(original) if original else None,
    )


def derived_max_context(
    config_lengths: int | None, rope: RopeScaling | None, model_type: str = ""
) -> int | None:
    """The longest context vLLM allows by default, from the config's length and rope scaling."""
    if config_lengths is None:
        return None
    if rope is None or rope.rope_type in _UNSCALED_ROPE or model_type.startswith("gemma3"):
        return config_lengths
    base = config_lengths
    if rope.rope_type == "yarn" and rope.original_max_position_embeddings:
        base = rope.original_max_position_embeddings
    return int(base * rope.factor)


def _layer_kinds(config: Mapping[str, Any], layers: int) -> list[tuple[LayerKind, int]] | None:
    """Per layer (kind, window), or None when every layer is plain full attention."""
    window = int(config.get("sliding_window") or 0)
    chunk = int(config.get("attention_chunk_size") or 0)
    types = config.get("layer_types")
    if isinstance(types, Sequence) and not isinstance(types, str) and len(types) == layers:
        kinds = [_LAYER_TYPES.get(str(t), "full") for t in types]
        return [(k, window if k == "sliding" else chunk if k == "chunked" else 0) for k in kinds]
    pattern = config.get("hybrid_override_pattern")
    if isinstance(pattern, str) and pattern:
        # Nemotron-H: M = Mamba2, * = attention, - and E = MLP/MoE blocks that keep no cache.
        return [("state", 0) if c == "M" else ("full", 0) for c in pattern if c in "M*"]
    interval = config.get("full_attention_interval")
    if interval:
        return [("full", 0) if (i + 1) % int(interval) == 0 else ("state", 0) for i in range(layers)]
    if config.get("attn_layer_period"):
        period, offset = int(config["attn_layer_period"]), int(config.get("attn_layer_offset") or 0)
        return [("full", 0) if i % period == offset else ("state", 0) for i in range(layers)]
    model_type = str(config.get("text_model_type") or config.get("model_type") or "")
    if chunk and model_type.startswith("llama4"):
        rope_layers = config.get("no_rope_layers")
        if isinstance(rope_layers, Sequence) and len(rope_layers) == layers:
            return [("chunked", chunk) if flag else ("full", 0) for flag in rope_layers]
        return [("full", 0) if (i + 1) % 4 == 0 else ("chunked", chunk) for i in range(layers)]
    if not window:
        return None
    if config.get("sliding_window_pattern"):
        every = int(config["sliding_window_pattern"])
        return [("full", 0) if (i + 1) % every == 0 else ("sliding", window) for i in range(layers)]
    if model_type == "gemma2":
        return [("sliding", window) if i % 2 == 0 else ("full", 0) for i in range(layers)]
    if "use_sliding_window" in config:
        if not config["use_sliding_window"]:
            return None
        first = int(config.get("max_window_layers") or 0)
        return [("sliding", window) if i >= first else ("full", 0) for i in range(layers)]
    return [("sliding", window)] * layers


def _runs(kinds: list[tuple[LayerKind, int]] | None) -> tuple[LayerRun, ...]:
    if kinds is None:
        return ()
    counts: dict[tuple[LayerKind, int], int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return tuple(LayerRun(kind, count, window) for (kind, window), count in counts.items())


def _state_shape(config: Mapping[str, Any], hidden: int | None) -> StateShape | None:
    """Mamba2 / Mamba / gated delta net state dimensions, whatever the family calls them."""
    if config.get("linear_num_value_heads"):
        key_heads = int(config["linear_num_key_heads"])
        value_heads = int(config["linear_num_value_heads"])
        key_dim, value_dim = int(config["linear_key_head_dim"]), int(config["linear_value_head_dim"])
        return StateShape(
            conv_dim=2 * key_heads * key_dim + value_heads * value_dim,
            conv_kernel=int(config.get("linear_conv_kernel_dim") or 4),
            heads=value_heads,
            head_dim=key_dim,
            state_size=value_dim,
        )
    heads = config.get("mamba_n_heads") or config.get("mamba_num_heads")
    state = config.get("mamba_d_state") or config.get("ssm_state_size") or config.get("state_size")
    kernel = config.get("mamba_d_conv") or config.get("conv_kernel") or config.get("mamba_conv_kernel")
    if heads and state:
        head_dim = int(config.get("mamba_d_head") or config.get("mamba_head_dim") or config["head_dim"])
        groups = int(config.get("mamba_n_groups") or config.get("n_groups") or 1)
        inner = int(heads) * head_dim
        return StateShape(inner + 2 * groups * int(state), int(kernel or 4), int(heads), head_dim, int(state))
    if config.get("mamba_expand") and hidden and state:
        inner = int(config["mamba_expand"]) * hidden  # Mamba1 (Jamba): one state row per channel
        return StateShape(inner, int(kernel or 4), inner, 1, int(state))
    return None


def checkpoint_format(
    config: Mapping[str, Any], extra_configs: Mapping[str, Mapping[str, Any]] | None = None
) -> str | None:
    """The checkpoint's quantization as a vLLM method family (fp8, awq, gptq, int8, int4, nvfp4,
    mxfp4, bitsandbytes), or None for plain 16/32-bit weights."""
    quant = config.get("quantization_config")
    modelopt = (extra_configs or {}).get("hf_quant_config.json")
    if not isinstance(quant, Mapping) and isinstance(modelopt, Mapping):
        quant = {"quant_method": "modelopt", **dict(modelopt.get("quantization") or {})}
    if not isinstance(quant, Mapping) or not quant.get("quant_method"):
        return None
    method = str(quant["quant_method"]).lower()
    if method == "modelopt":
        algo = str(quant.get("quant_algo") or "").upper()
        return "nvfp4" if "FP4" in algo else "fp8"
    if method in ("compressed-tensors", "compressed_tensors"):
        return _compressed_tensors_format(quant)
    if method in ("fbgemm_fp8", "fp8", "ptpc_fp8"):
        return "fp8"
    if method in ("awq", "awq_marlin"):
        return "awq"
    if method in ("gptq", "gptq_marlin"):
        return "gptq"
    if method in ("mxfp4", "bitsandbytes", "nvfp4"):
        return method
    return method


def _compressed_tensors_format(quant: Mapping[str, Any]) -> str:
    groups = quant.get("config_groups")
    if isinstance(groups, Mapping):
        for group in groups.values():
            weights = group.get("weights") if isinstance(group, Mapping) else None
            if isinstance(weights, Mapping):
                bits = int(weights.get("num_bits") or 8)
                kind = str(weights.get("type") or "int")
                if bits == 4:
                    return "nvfp4" if kind == "float" else "int4"
                return "fp8" if kind == "float" else "int8"
    return "int8"


def checkpoint_bytes(parameters_by_dtype: Mapping[str, int]) -> int:
    return sum(count * DTYPE_BYTES.get(dtype.upper(), 2) for dtype, count in parameters_by_dtype.items())


def _packed_params(parameters_by_dtype: Mapping[str, int], fmt: str | None) -> int:
    """Parameter count from element counts: 4-bit formats pack 8 (I32) or 2 (U8) weights per element."""
    total = 0
    for dtype, count in parameters_by_dtype.items():
        if fmt in ("awq", "gptq", "int4") and dtype.upper() == "I32":
            total += count * 8
        elif fmt in ("mxfp4", "nvfp4", "bitsandbytes") and dtype.upper() == "U8":
            total += count * 2
        else:
            total += count
    return total


def architecture_from_hub(
    name: str,
    config: Mapping[str, Any],
    *,
    parameters_by_dtype: Mapping[str, int] | None = None,
    extra_configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> ModelArchitecture:
    """An architecture from a config.json and, when known, its safetensors element counts."""
    merged = _text_config(config)
    try:
        layers = int(merged["num_hidden_layers"])
        heads = int(merged["num_attention_heads"])
    except (KeyError, TypeError, ValueError) as missing:
        raise UnknownModel(f"{name}: config.json has no usable {missing}") from None
    hidden = int(merged["hidden_size"]) if merged.get("hidden_size") else None
    fmt = checkpoint_format(merged, extra_configs)
    lengths = [int(merged[k]) for k in _LENGTH_KEYS if isinstance(merged.get(k), int | float) and merged[k]]
    rope = _rope_scaling(merged)
    model_type = str(merged.get("text_model_type") or merged.get("model_type") or "")
    given: dict[str, Any] = {
        "layers": layers,
        "attention_heads": heads,
        "kv_heads": merged.get("num_key_value_heads"),
        "head_dim": merged.get("head_dim")
        or (merged.get("qk_nope_head_dim") if merged.get("kv_lora_rank") else None),
        "hidden_size": hidden,
        "intermediate_size": merged.get("intermediate_size"),
        "max_position_embeddings": min(lengths) if lengths else None,
        "rope_scaling": rope,
        "max_context": derived_max_context(min(lengths) if lengths else None, rope, model_type),
        "dtype": str(merged.get("torch_dtype") or merged.get("dtype") or "bfloat16"),
        "vocab_size": merged.get("vocab_size"),
        "tie_word_embeddings": bool(merged.get("tie_word_embeddings", True)),
        "experts": merged.get("num_local_experts")
        or merged.get("num_experts")
        or merged.get("n_routed_experts"),
        "experts_per_token": merged.get("num_experts_per_tok") or merged.get("moe_topk"),
        "moe_intermediate_size": merged.get("moe_intermediate_size"),
        "moe_layers": layers - int(merged.get("first_k_dense_replace") or 0),
        "kv_lora_rank": merged.get("kv_lora_rank"),
        "qk_rope_head_dim": merged.get("qk_rope_head_dim") if merged.get("kv_lora_rank") else None,
        "native_format": fmt,
        "layer_runs": _runs(_layer_kinds(merged, layers)),
        "state": _state_shape(merged, hidden),
        "fp16_allowed": model_type not in _NO_FLOAT16 and str(config.get("model_type")) not in _NO_FLOAT16,
        "model_type": model_type,
    }
    if parameters_by_dtype:
        given["checkpoint_bytes"] = checkpoint_bytes(parameters_by_dtype)
        given["params_b"] = _packed_params(parameters_by_dtype, fmt) / 1e9
    return architecture_from_fields(name, given)


def architecture_from_hf_config(name: str, config: Mapping[str, Any]) -> ModelArchitecture:
    """An architecture from a config.json alone (parameter count estimated from the shapes)."""
    return architecture_from_hub(name, config)


def architecture_from_fields(name: str, given: Mapping[str, Any]) -> ModelArchitecture:
    """Fill the derivable gaps of a partial architecture, noting each derivation."""
    fields = {key: value for key, value in given.items() if value is not None}
    assumptions: list[str] = []
    layers, heads = int(fields.pop("layers")), int(fields.pop("attention_heads"))
    hidden = fields.get("hidden_size")
    head_dim = fields.pop("head_dim", None)
    if head_dim is None:
        if hidden:
            head_dim = hidden // heads
            assumptions.append(f"head_dim {head_dim} derived as hidden_size / attention_heads")
        else:
            head_dim = _DEFAULT_HEAD_DIM
            assumptions.append(f"head_dim unknown; assumed {_DEFAULT_HEAD_DIM}")
    kv_heads = fields.pop("kv_heads", None)
    if kv_heads is None:
        kv_heads = heads
        assumptions.append("kv_heads unknown; assumed equal to attention heads (no GQA)")
    if fields.get("dtype") == "fp8":
        fields.setdefault("native_format", "fp8")
    experts = fields.get("experts")
    moe_layers = int(fields.pop("moe_layers", None) or layers)
    fields["moe"] = bool(fields.get("moe") or experts)
    params_b = fields.pop("params_b", None)
    if params_b is None:
        if hidden is None:
            raise UnknownModel(f"{name}: neither the parameter count nor the hidden size is known")
        params_b = _params_from_shapes(layers, heads, int(kv_heads), int(head_dim), fields)
        assumptions.append(f"parameter count {params_b:.2f}B estimated from the layer shapes")
    if fields["moe"] and not fields.get("active_params_b") and experts and fields.get("experts_per_token"):
        fields["active_params_b"] = _active_params_b(params_b, moe_layers, fields)
        assumptions.append(
            f"active parameters {fields['active_params_b']:.1f}B derived from the expert shapes"
        )
    return ModelArchitecture(
        name=name,
        params_b=float(params_b),
        layers=layers,
        attention_heads=heads,
        kv_heads=int(kv_heads),
        head_dim=int(head_dim),
        assumptions=tuple(assumptions),
        **fields,
    )


def _params_from_shapes(layers: int, heads: int, kv_heads: int, head_dim: int, f: Mapping[str, Any]) -> float:
    hidden = int(f["hidden_size"])
    experts, per_expert = f.get("experts"), f.get("moe_intermediate_size") or f.get("intermediate_size")
    kv_fraction = kv_heads * head_dim / hidden
    tied = bool(f.get("tie_word_embeddings", False))
    dense = estimate_params_b(
        layers, hidden, f.get("vocab_size"), f.get("intermediate_size"), kv_fraction=kv_fraction, tied=tied
    )
    if experts and per_expert:
        mlp = 3 * hidden * (f.get("intermediate_size") or 3.5 * hidden)
        dense += layers * (int(experts) * 3 * hidden * int(per_expert) - mlp) / 1e9
    return dense


def _active_params_b(params_b: float, moe_layers: int, f: Mapping[str, Any]) -> float:
    """Total minus the experts a token does not use (routed experts only; shared ones are dense)."""
    hidden = int(f.get("hidden_size") or 0)
    per_expert = int(f.get("moe_intermediate_size") or f.get("intermediate_size") or 0)
    experts, chosen = int(f["experts"]), int(f["experts_per_token"])
    expert_params = moe_layers * experts * 3 * hidden * per_expert / 1e9
    return max(params_b - expert_params * (1 - chosen / experts), params_b * chosen / experts)
