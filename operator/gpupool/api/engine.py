"""How vLLM runs a model and how much load one replica must hold: the engine and serving settings.

Split from deployment.py so each file holds one concern: this one is what is passed to (or
derived for) `vllm serve`, and the model description for models the planner cannot look up.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import Field

from gpupool.api.base import Rule, WireModel

DEFAULT_IMAGE = "vllm/vllm-openai:v0.11.0"
IMAGE = r"^[A-Za-z0-9][-A-Za-z0-9_./:@]*$"


class EngineDtype(StrEnum):
    """vLLM's --dtype: the precision of activations and unquantized weights."""

    AUTO = "auto"
    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"


class Quantization(StrEnum):
    """The weights' format. none serves the checkpoint as stored (its own quantization_config, if
    any, is read from the Hub); fp8 and bitsandbytes quantize a 16-bit checkpoint at load time; the
    others say the checkpoint is stored in that format."""

    NONE = "none"
    FP8 = "fp8"
    INT8 = "int8"
    AWQ = "awq"
    GPTQ = "gptq"
    INT4 = "int4"
    COMPRESSED_TENSORS = "compressed-tensors"
    NVFP4 = "nvfp4"
    MXFP4 = "mxfp4"
    BITSANDBYTES = "bitsandbytes"


class WeightsDtype(StrEnum):
    """How the checkpoint's weights are stored."""

    BFLOAT16 = "bfloat16"
    FLOAT16 = "float16"
    FLOAT32 = "float32"
    FP8 = "fp8"


class RopeType(StrEnum):
    """RoPE scaling methods vLLM applies from `--rope-scaling`."""

    YARN = "yarn"
    LINEAR = "linear"
    DYNAMIC = "dynamic"
    LLAMA3 = "llama3"
    LONGROPE = "longrope"


YARN_NEEDS_ORIGINAL = Rule(
    cel="self.ropeType != 'yarn' || has(self.originalMaxPositionEmbeddings)",
    message=(
        "spec.engine.ropeScaling.originalMaxPositionEmbeddings is required for yarn: "
        "the context the model was trained on, from its card (e.g. 32768)"
    ),
    field_path=".originalMaxPositionEmbeddings",
    reason="FieldValueRequired",
    check=lambda r: str(r.rope_type) != "yarn" or r.original_max_position_embeddings is not None,
)


class RopeScaling(WireModel):
    """A `rope_scaling` for vLLM: the longest context becomes factor x the original one."""

    rules: ClassVar[tuple[Rule, ...]] = (YARN_NEEDS_ORIGINAL,)

    rope_type: RopeType = Field(description="yarn, linear, dynamic, llama3 or longrope.")
    factor: float = Field(gt=1, le=1024, strict=True, description="Context multiplier, e.g. 4.0.")
    original_max_position_embeddings: int | None = Field(
        default=None,
        ge=128,
        le=10_000_000,
        strict=True,
        description="The context the model was trained on; required for yarn.",
    )


TOKENS_FIT_TARGET = Rule(
    cel="!has(self.averageInputTokens) || !has(self.averageOutputTokens) || self.averageInputTokens + self.averageOutputTokens <= 10000000",
    message="spec.serving.averageInputTokens + averageOutputTokens must be at most 10,000,000",
    field_path=".averageOutputTokens",
    check=lambda s: (
        s.average_input_tokens is None
        or s.average_output_tokens is None
        or s.average_input_tokens + s.average_output_tokens <= 10_000_000
    ),
)


class Serving(WireModel):
    """The load one replica must hold; the planner sizes the KV cache for it."""

    rules: ClassVar[tuple[Rule, ...]] = (TOKENS_FIT_TARGET,)

    target_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        strict=True,
        description=(
            "Sequences one replica must hold at once, at the average request size below (at "
            "maxModelLen when neither is given). Leave out for 4 sequences of 1,024 + 256 tokens, "
            "besides the one full-length sequence vLLM needs to start."
        ),
    )
    average_input_tokens: int | None = Field(
        default=None, ge=0, le=10_000_000, strict=True, description="Average prompt length in tokens."
    )
    average_output_tokens: int | None = Field(
        default=None, ge=1, le=10_000_000, strict=True, description="Average completion length in tokens."
    )


class Engine(WireModel):
    """vLLM settings; the defaults serve most models well."""

    image: str = Field(
        default=DEFAULT_IMAGE,
        min_length=1,
        max_length=512,
        pattern=IMAGE,
        description="The vLLM server image.",
    )
    max_model_len: int | None = Field(
        default=None,
        ge=128,
        le=10_000_000,
        strict=True,
        description=(
            "Longest context (prompt plus output) in tokens. Leave out for the smaller of the "
            "model's maximum and 8192."
        ),
    )
    dtype: EngineDtype = Field(
        default=EngineDtype.AUTO, description="Activation precision: auto, bfloat16 or float16."
    )
    quantization: Quantization = Field(
        default=Quantization.NONE,
        description=(
            "Weight format: none (as stored, read from the checkpoint), fp8 or bitsandbytes (quantized "
            "at load time), or the checkpoint's own format: int8, awq, gptq, int4, compressed-tensors, "
            "nvfp4, mxfp4."
        ),
    )
    gpu_memory_utilization: float = Field(
        default=0.9,
        ge=0.5,
        le=0.99,
        strict=True,
        description="Share of each GPU's memory vLLM may use, from 0.5 to 0.99.",
    )
    max_num_seqs: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        strict=True,
        description=(
            "vLLM's --max-num-seqs: the most sequences a replica batches at once. Leave out for "
            "vLLM's own default (256, or 1024 on GPUs of 70 GiB or more other than A100). To size "
            "the KV cache for a load, set spec.serving.targetConcurrency instead."
        ),
    )
    max_num_batched_tokens: int | None = Field(
        default=None,
        ge=64,
        le=1_048_576,
        strict=True,
        description=(
            "vLLM's --max-num-batched-tokens: tokens per engine step. Leave out for vLLM's default "
            "(2048, or 8192 on GPUs of 70 GiB or more other than A100)."
        ),
    )
    rope_scaling: RopeScaling | None = Field(
        default=None,
        description=(
            "RoPE scaling to serve a longer context than the model's config states, as the model's "
            "card documents it (e.g. Qwen's YaRN factor 4 over 32768 tokens)."
        ),
    )
    tensor_parallel_size: int | None = Field(
        default=None,
        ge=1,
        le=16,
        strict=True,
        description="Tensor-parallel size. Leave out to use every GPU of a replica.",
    )
    extra_args: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=1024)]], Field(max_length=64)
    ] = Field(default_factory=list, description="More arguments for `vllm serve`, appended as given.")


KV_HEADS_DIVIDE = Rule(
    cel="self.attentionHeads % self.kvHeads == 0",
    message=(
        "spec.architecture.kvHeads must divide spec.architecture.attentionHeads: "
        "each KV head serves a whole number of query heads"
    ),
    field_path=".kvHeads",
    check=lambda a: a.attention_heads % a.kv_heads == 0,
)
ACTIVE_NOT_ABOVE_TOTAL = Rule(
    cel="!has(self.activeParamsB) || self.activeParamsB <= self.paramsB",
    message="spec.architecture.activeParamsB must not exceed spec.architecture.paramsB",
    field_path=".activeParamsB",
    check=lambda a: a.active_params_b is None or a.active_params_b <= a.params_b,
)
MOE_NEEDS_ACTIVE = Rule(
    cel="!self.moe || has(self.activeParamsB)",
    message="spec.architecture.activeParamsB is required when spec.architecture.moe is true",
    field_path=".activeParamsB",
    reason="FieldValueRequired",
    check=lambda a: not a.moe or a.active_params_b is not None,
)


class Architecture(WireModel):
    """The model's shape, for models the planner does not know (config.json values)."""

    rules: ClassVar[tuple[Rule, ...]] = (KV_HEADS_DIVIDE, ACTIVE_NOT_ABOVE_TOTAL, MOE_NEEDS_ACTIVE)

    params_b: float = Field(
        alias="paramsB", gt=0, le=10_000, strict=True, description="Parameters in billions."
    )
    layers: int = Field(ge=1, le=1024, strict=True, description="Transformer layers (num_hidden_layers).")
    hidden_size: int = Field(ge=1, le=1_048_576, strict=True, description="Hidden size (hidden_size).")
    attention_heads: int = Field(ge=1, le=1024, strict=True, description="Query heads (num_attention_heads).")
    kv_heads: int = Field(ge=1, le=1024, strict=True, description="Key/value heads (num_key_value_heads).")
    head_dim: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        strict=True,
        description="Size of one head; leave out for hiddenSize / attentionHeads.",
    )
    max_context: int = Field(
        ge=1,
        le=100_000_000,
        strict=True,
        description="Longest context the model supports (max_position_embeddings).",
    )
    moe: bool = Field(default=False, strict=True, description="Whether the model is a mixture of experts.")
    active_params_b: float | None = Field(
        default=None,
        alias="activeParamsB",
        gt=0,
        le=10_000,
        strict=True,
        description="Parameters active per token in billions; required for a mixture of experts.",
    )
    dtype: WeightsDtype = Field(
        default=WeightsDtype.BFLOAT16, description="How the checkpoint's weights are stored."
    )
