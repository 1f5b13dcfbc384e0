"""Memory arithmetic: will one replica of a model fit on N GPUs of a given size, and by how much?

vLLM loads the weights split across the tensor-parallel ranks, then gives the KV cache whatever is
left of `gpu_memory_utilization` x GPU memory after the weights and its own runtime overhead. A
replica is sized here so that the KV cache holds `max_model_len` tokens for each of `max_num_seqs`
concurrent sequences: a concurrency target, stricter than vLLM's own start-up check (one sequence).
All sizes are GiB (2^30 bytes); the figures are returned, not just the verdict, so a refusal can say
"needs 152 GiB, has 72 GiB".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpupool.planner.models import ModelArchitecture

GIB = float(1 << 30)

# Weight bytes per parameter by quantization. 4-bit formats carry group scales/zeros and keep the
# embeddings and LM head in 16 bit, so they average a little above 0.5.
WEIGHT_BYTES = {"bfloat16": 2.0, "float16": 2.0, "float32": 4.0, "fp8": 1.0, "int8": 1.0}
FOUR_BIT_BYTES = 0.55
QUANTIZATIONS = ("none", "fp8", "awq", "gptq", "int8", "int4")

# Per-GPU overhead outside weights and KV cache: CUDA context, cuBLAS workspace, CUDA graphs and the
# sampler's buffers (measured around 1-2 GiB on vLLM 0.x); NCCL buffers when tensor parallel.
BASE_OVERHEAD_GIB = 1.5
NCCL_OVERHEAD_GIB = 0.5
# Activation peak of vLLM's profiling run: max_num_batched_tokens x hidden x ~20 bytes (MLP
# intermediates, attention scratch), split by tensor parallelism.
PROFILE_TOKENS = 2048
ACTIVATION_BYTES_PER_TOKEN_HIDDEN = 20


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """The memory one replica needs on `tensor_parallel_size` GPUs, and what those GPUs offer."""

    tensor_parallel_size: int
    gpu_memory_gib: float
    gpu_memory_utilization: float
    weight_bytes_per_param: float
    weights_gib: float
    kv_bytes_per_token: int
    kv_tokens: int
    kv_cache_gib: float
    overhead_gib: float

    @property
    def per_gpu_required_gib(self) -> float:
        return (self.weights_gib + self.kv_cache_gib + self.overhead_gib) / self.tensor_parallel_size

    @property
    def per_gpu_available_gib(self) -> float:
        return self.gpu_memory_gib * self.gpu_memory_utilization

    @property
    def required_gib(self) -> float:
        """Weights + KV cache + overhead, summed over the replica's GPUs."""
        return self.weights_gib + self.kv_cache_gib + self.overhead_gib

    @property
    def available_gib(self) -> float:
        return self.per_gpu_available_gib * self.tensor_parallel_size

    @property
    def fits(self) -> bool:
        # Per GPU, because that is what vLLM checks: each rank holds its own shard.
        return self.per_gpu_required_gib <= self.per_gpu_available_gib + 1e-9

    def shortfall_message(self) -> str:
        count = self.tensor_parallel_size
        gpus = "1 GPU" if count == 1 else f"{count} GPUs"
        return (
            f"needs {self.required_gib:.0f} GiB, has {self.available_gib:.0f} GiB "
            f"({gpus} x {self.gpu_memory_gib:g} GiB x {self.gpu_memory_utilization:g})"
        )

    def to_dict(self) -> dict[str, float | int]:
        return {
            "weightsGiB": round(self.weights_gib, 2),
            "kvCacheGiB": round(self.kv_cache_gib, 2),
            "overheadGiB": round(self.overhead_gib, 2),
            "requiredGiB": round(self.required_gib, 2),
            "availableGiB": round(self.available_gib, 2),
            "perGpuRequiredGiB": round(self.per_gpu_required_gib, 2),
            "perGpuAvailableGiB": round(self.per_gpu_available_gib, 2),
            "gpuMemoryGiB": self.gpu_memory_gib,
            "gpuMemoryUtilization": self.gpu_memory_utilization,
            "weightBytesPerParam": self.weight_bytes_per_param,
            "kvBytesPerToken": self.kv_bytes_per_token,
            "kvTokens": self.kv_tokens,
        }


def weight_bytes_per_param(arch: ModelArchitecture, dtype: str = "auto", quantization: str = "none") -> float:
    """Bytes each parameter takes in GPU memory for this dtype/quantization."""
    if quantization in ("fp8", "int8"):
        return 1.0
    if quantization in ("awq", "gptq", "int4"):
        return FOUR_BIT_BYTES
    if quantization != "none":
        raise ValueError(f"unknown quantization {quantization!r}; expected one of {QUANTIZATIONS}")
    if dtype == "auto":
        if arch.weight_bytes_per_param is not None:
            return arch.weight_bytes_per_param
        # vLLM's "auto" runs float32 checkpoints in 16 bit.
        return 2.0
    if dtype not in WEIGHT_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}")
    return WEIGHT_BYTES[dtype]


def kv_cache_bytes(kv_cache_dtype: str) -> int:
    """Bytes per KV element: vLLM's `--kv-cache-dtype auto` keeps the 16-bit activation dtype."""
    return 1 if kv_cache_dtype.startswith("fp8") else 2


def kv_bytes_per_token_per_gpu(
    arch: ModelArchitecture, tensor_parallel_size: int, kv_dtype_bytes: int
) -> int:
    """KV cache bytes one token adds on each GPU of the replica.

    KV heads are split across ranks, but never below one per rank: with tp > kv_heads vLLM
    replicates them. MLA's latent vector is not split by heads, so every rank holds all of it.
    """
    if arch.mla:
        per_layer = ((arch.kv_lora_rank or 0) + (arch.qk_rope_head_dim or 0)) * kv_dtype_bytes
    else:
        heads_per_gpu = max(1, math.ceil(arch.kv_heads / tensor_parallel_size))
        per_layer = 2 * heads_per_gpu * arch.head_dim * kv_dtype_bytes
    return per_layer * arch.layers


def estimate_memory(
    arch: ModelArchitecture,
    *,
    tensor_parallel_size: int,
    gpu_memory_gib: float,
    max_model_len: int,
    max_num_seqs: int = 16,
    gpu_memory_utilization: float = 0.9,
    dtype: str = "auto",
    quantization: str = "none",
    kv_cache_dtype: str = "auto",
) -> MemoryEstimate:
    """The memory arithmetic for one replica on `tensor_parallel_size` GPUs of `gpu_memory_gib` each."""
    tp = tensor_parallel_size
    bytes_per_param = weight_bytes_per_param(arch, dtype, quantization)
    weights = arch.params_b * 1e9 * bytes_per_param / GIB
    kv_per_gpu_token = kv_bytes_per_token_per_gpu(arch, tp, kv_cache_bytes(kv_cache_dtype))
    kv_tokens = max_model_len * max_num_seqs
    kv_cache = kv_per_gpu_token * tp * kv_tokens / GIB
    hidden = arch.hidden_size or arch.attention_heads * arch.head_dim
    activations_per_gpu = PROFILE_TOKENS * hidden * ACTIVATION_BYTES_PER_TOKEN_HIDDEN / tp / GIB
    per_gpu_overhead = BASE_OVERHEAD_GIB + (NCCL_OVERHEAD_GIB if tp > 1 else 0.0) + activations_per_gpu
    return MemoryEstimate(
        tensor_parallel_size=tp,
        gpu_memory_gib=gpu_memory_gib,
        gpu_memory_utilization=gpu_memory_utilization,
        weight_bytes_per_param=bytes_per_param,
        weights_gib=weights,
        kv_bytes_per_token=kv_per_gpu_token * tp,
        kv_tokens=kv_tokens,
        kv_cache_gib=kv_cache,
        overhead_gib=per_gpu_overhead * tp,
    )


def tensor_parallel_refusal(arch: ModelArchitecture, tensor_parallel_size: int) -> str | None:
    """Why vLLM would reject this tensor-parallel size for the model, or None if it accepts it.

    vLLM shards attention heads evenly, so tp must divide the attention heads; KV heads are split
    when tp divides them and replicated when tp is a multiple of them.
    """
    tp = tensor_parallel_size
    if tp < 1:
        return f"tensor parallel {tp} is not a positive integer"
    if arch.attention_heads % tp:
        return f"tensor parallel {tp} does not divide {arch.attention_heads} attention heads"
    if arch.mla:
        return None
    if arch.kv_heads % tp and tp % arch.kv_heads:
        return f"tensor parallel {tp} neither divides nor is a multiple of {arch.kv_heads} KV heads"
    return None


def accepted_tensor_parallel_sizes(arch: ModelArchitecture, max_size: int) -> list[int]:
    return [tp for tp in range(1, max_size + 1) if tensor_parallel_refusal(arch, tp) is None]
