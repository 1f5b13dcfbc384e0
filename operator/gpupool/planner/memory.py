"""vLLM's memory arithmetic for one replica, per rank: will it start, and how much does it hold?

vLLM (vllm/v1/worker/gpu_worker.py, pinned image v0.11) takes a snapshot of the GPU after the CUDA
context and NCCL are up, and may use `gpuMemoryUtilization` x the memory the GPU reports (an
"80 GB" H100 reports 79.19 GiB, an L4 22.05 GiB). Out of that budget it loads the rank's share of
the weights, runs one profiling forward pass of `max_num_batched_tokens` tokens plus a sampler pass
over `max_num_seqs` dummy requests, and gives the KV cache what is left:

    kv_budget = u x reported_memory - weights(rank) - activation_peak - non_torch_growth

The CUDA context, NCCL's buffers and the CUDA graphs captured after the KV cache is allocated live
outside the budget, in `(1 - u) x memory`: vLLM refuses to start when the context alone does not
fit there, and graph capture can run out of memory when the rest is thin, so both are checked
separately. The KV budget is paged as `kv_cache.py` describes; a shape fits when it holds one
sequence of `max_model_len` (vLLM's own start-up check) and the stated concurrency at the average
request size. Everything that does not depend on the GPU's size is computed once per
(tensor-parallel, pipeline-parallel) shape (`RankLoad`); fitting it on a GPU is a few operations.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from gpupool.planner.kv_cache import KvLayout, LayerRun, cdiv, kv_layout
from gpupool.planner.models import ModelArchitecture

GIB = float(1 << 30)

QUANTIZATIONS = (
    "none", "fp8", "int8", "awq", "gptq", "int4", "nvfp4", "mxfp4", "bitsandbytes", "compressed-tensors",
)  # fmt: skip
# Bytes per weight of a linear layer in each format: 4-bit values plus their group scales
# (AWQ/GPTQ: an fp16 scale and a 4-bit zero per 128; NVFP4: an fp8 scale per 16; MXFP4: an 8-bit
# scale per 32; bitsandbytes NF4: an absmax per 64, double-quantized). Embeddings and the LM head
# stay in 16 bit in every format.
LINEAR_BYTES = {
    "fp8": 1.0, "int8": 1.0, "awq": 0.52, "gptq": 0.52, "int4": 0.52, "nvfp4": 0.5625,
    "mxfp4": 0.53125, "bitsandbytes": 0.53,
}  # fmt: skip
# Formats vLLM applies at load time to a 16-bit checkpoint (`--quantization fp8|bitsandbytes`).
ONLINE_FORMATS = ("fp8", "bitsandbytes")

# Outside the budget: the CUDA context (about 0.5 GiB with CUDA 12), NCCL's communicators when
# the replica spans GPUs, and the CUDA graphs vLLM captures after allocating the KV cache.
CUDA_CONTEXT_GIB = 0.5
NCCL_GIB = 0.25
CUDA_GRAPHS_GIB = 0.75
# Inside the budget beyond the activations: cuBLAS/Triton workspaces in the torch peak, and the
# custom all-reduce buffers that grow during the profiling pass when tensor parallel.
PROFILE_WORKSPACE_GIB = 0.25
PROFILE_NON_TORCH_GIB = 0.25
# vllm/engine/arg_utils.py get_batch_defaults (OpenAI server): GPUs of 70 GiB or more except A100s.
LARGE_GPU_GIB = 70.0
DEFAULT_BATCH = {False: (2048, 256), True: (8192, 1024)}


def vllm_batch_defaults(gpu: str, gpu_memory_gib: float) -> tuple[int, int]:
    """vLLM's default (max_num_batched_tokens, max_num_seqs) on this GPU."""
    return DEFAULT_BATCH[gpu_memory_gib >= LARGE_GPU_GIB and "A100" not in gpu.upper()]


@dataclass(frozen=True, slots=True)
class Workload:
    """What the replica must hold: context, concurrency target, request size, batch limits."""

    max_model_len: int
    target_concurrency: int
    average_input_tokens: int
    average_output_tokens: int
    max_batched_tokens: int
    max_num_seqs: int
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    quantization: str = "none"
    kv_cache_dtype: str = "auto"

    @property
    def average_tokens(self) -> int:
        return min(self.average_input_tokens + self.average_output_tokens, self.max_model_len)


@dataclass(frozen=True, slots=True)
class RankLoad:
    """What the busiest rank of one (tp, pp) shape holds, whatever the GPU's size."""

    tensor_parallel_size: int
    pipeline_parallel_size: int
    weights_bytes: float
    model_weights_bytes: float
    activation_bytes: float
    non_torch_bytes: float
    outside_bytes: float
    layout: KvLayout
    blocks_at_max_len: int
    blocks_at_average: int
    # Blocks the workload needs: one full-length sequence, and the target at the average size.
    blocks_needed: int
    kv_bytes_per_token: int
    weight_bytes_per_param: float

    @property
    def gpus(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def fixed_bytes(self) -> float:
        return self.weights_bytes + self.activation_bytes + self.non_torch_bytes

    @property
    def needed_bytes(self) -> float:
        """What a GPU's budget must hold for this load to fit."""
        return self.fixed_bytes + self.blocks_needed * self.layout.bytes_per_block


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """One rank of one replica on a GPU of `gpu_memory_gib`: the budget, the cache, what it holds."""

    load: RankLoad
    workload: Workload
    gpu_memory_gib: float
    num_blocks: int

    @property
    def tensor_parallel_size(self) -> int:
        return self.load.tensor_parallel_size

    @property
    def pipeline_parallel_size(self) -> int:
        return self.load.pipeline_parallel_size

    @property
    def gpu_memory_utilization(self) -> float:
        return self.workload.gpu_memory_utilization

    @property
    def weights_gib(self) -> float:
        """The whole model's weights as loaded, GiB."""
        return self.load.model_weights_bytes / GIB

    @property
    def weight_bytes_per_param(self) -> float:
        return self.load.weight_bytes_per_param

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes one token of context adds over the replica (full-attention layers)."""
        return self.load.kv_bytes_per_token

    @property
    def budget_gib(self) -> float:
        return self.gpu_memory_gib * self.workload.gpu_memory_utilization

    @property
    def kv_budget_gib(self) -> float:
        return self.budget_gib - self.load.fixed_bytes / GIB

    @property
    def kv_cache_tokens(self) -> int:
        return self.load.layout.kv_cache_tokens(self.num_blocks)

    @property
    def max_concurrency(self) -> float:
        """Sequences of max_model_len held at once: the figure vLLM logs as "Maximum concurrency"."""
        return self.num_blocks / self.load.blocks_at_max_len if self.load.blocks_at_max_len else 0.0

    @property
    def concurrency_at_average(self) -> float:
        """Sequences of the average request size held at once, capped by max_num_seqs."""
        held = self.num_blocks / self.load.blocks_at_average if self.load.blocks_at_average else 0.0
        return min(held, float(self.workload.max_num_seqs))

    @property
    def headroom_gib(self) -> float:
        """Memory outside the budget, for the CUDA context, NCCL and CUDA graphs."""
        return self.gpu_memory_gib * (1 - self.workload.gpu_memory_utilization)

    @property
    def blocks_needed(self) -> int:
        return self.load.blocks_needed

    @property
    def per_gpu_required_gib(self) -> float:
        return self.load.needed_bytes / GIB

    @property
    def per_gpu_available_gib(self) -> float:
        return self.budget_gib

    @property
    def required_gib(self) -> float:
        return self.per_gpu_required_gib * self.load.gpus

    @property
    def available_gib(self) -> float:
        return self.per_gpu_available_gib * self.load.gpus

    @property
    def starts(self) -> bool:
        """vLLM's start-up checks: the context fits outside the budget, one full sequence inside."""
        return (
            self.headroom_gib >= self.load.outside_bytes / GIB
            and self.num_blocks >= self.load.blocks_at_max_len
        )

    @property
    def fits(self) -> bool:
        return fits_on(self.load, self.workload, self.gpu_memory_gib)

    @property
    def thin_headroom(self) -> bool:
        """Too little outside the budget for the CUDA graphs as well: capture may run out of memory."""
        return self.headroom_gib < (self.load.outside_bytes / GIB) + CUDA_GRAPHS_GIB

    def shortfall_message(self) -> str:
        gpus = self.load.gpus
        shape = "1 GPU" if gpus == 1 else f"{gpus} GPUs"
        w = self.workload
        if self.headroom_gib < self.load.outside_bytes / GIB:
            return (
                f"gpuMemoryUtilization {w.gpu_memory_utilization:g} leaves {self.headroom_gib:.2f} GiB of "
                f"{self.gpu_memory_gib:g} GiB outside vLLM's budget; the CUDA context needs "
                f"{self.load.outside_bytes / GIB:.2f} GiB: lower spec.engine.gpuMemoryUtilization"
            )
        if w.target_concurrency > w.max_num_seqs:
            return f"targetConcurrency {w.target_concurrency} exceeds maxNumSeqs {w.max_num_seqs}"
        return (
            f"needs {self.per_gpu_required_gib:.1f} GiB per GPU, has {self.per_gpu_available_gib:.1f} GiB "
            f"({shape} x {self.gpu_memory_gib:g} GiB x {w.gpu_memory_utilization:g}; weights "
            f"{self.load.weights_bytes / GIB:.1f}, activations {self.load.activation_bytes / GIB:.1f}, "
            f"KV cache for {w.target_concurrency} x {w.average_tokens} tokens and 1 x {w.max_model_len})"
        )

    def to_dict(self) -> dict[str, float | int]:
        load = self.load
        return {
            "weightsGiB": round(self.weights_gib, 2),
            "perGpuWeightsGiB": round(load.weights_bytes / GIB, 2),
            "activationGiB": round((load.activation_bytes + load.non_torch_bytes) / GIB, 2),
            "kvBudgetGiB": round(self.kv_budget_gib, 2),
            "kvCacheGiB": round(self.num_blocks * load.layout.bytes_per_block / GIB, 2),
            "kvCacheTokens": self.kv_cache_tokens,
            "maxConcurrency": round(self.max_concurrency, 2),
            "concurrencyAtAverage": round(self.concurrency_at_average, 2),
            "averageTokens": self.workload.average_tokens,
            "headroomGiB": round(self.headroom_gib, 2),
            "requiredGiB": round(self.required_gib, 2),
            "availableGiB": round(self.available_gib, 2),
            "perGpuRequiredGiB": round(self.per_gpu_required_gib, 2),
            "perGpuAvailableGiB": round(self.per_gpu_available_gib, 2),
            "gpuMemoryGiB": self.gpu_memory_gib,
            "gpuMemoryUtilization": self.workload.gpu_memory_utilization,
            "weightBytesPerParam": round(load.weight_bytes_per_param, 4),
            "kvBytesPerToken": load.kv_bytes_per_token,
            "maxNumBatchedTokens": self.workload.max_batched_tokens,
            "maxNumSeqs": self.workload.max_num_seqs,
            "blockSize": load.layout.block_size,
            "kvCacheGroups": len(load.layout.groups),
        }


def quantization_refusal(arch: ModelArchitecture, quantization: str) -> str | None:
    """Why vLLM would refuse `--quantization` for this checkpoint, or None."""
    stored = arch.native_format
    if quantization == "none" or stored is None or quantization == stored:
        return None
    if quantization == "compressed-tensors" and stored in ("int8", "int4", "fp8", "nvfp4"):
        return None
    return (
        f"spec.engine.quantization {quantization} does not match the checkpoint's {stored} weights "
        f"(its quantization_config): vLLM refuses the mismatch; leave quantization out"
    )


def loaded_weight_bytes(arch: ModelArchitecture, quantization: str = "none") -> float:
    """Bytes of the whole model's weights once vLLM has loaded them."""
    stored = arch.native_format
    embedding = arch.embedding_params * 2.0
    params = arch.params_b * 1e9
    if quantization in ("none", "compressed-tensors") or quantization == stored:
        if arch.checkpoint_bytes:
            # float32 checkpoints are served in 16 bit by dtype auto.
            return arch.checkpoint_bytes / (2 if arch.dtype == "float32" else 1)
        fmt = stored
    else:
        fmt = quantization
    if fmt is None or fmt not in LINEAR_BYTES:
        return params * 2.0
    return embedding + max(params - arch.embedding_params, 0.0) * LINEAR_BYTES[fmt]


def kv_dtype_bytes(kv_cache_dtype: str) -> int:
    """Bytes per KV element: `--kv-cache-dtype auto` keeps the 16-bit activation dtype."""
    return 1 if kv_cache_dtype.startswith("fp8") else 2


def _stage_runs(arch: ModelArchitecture, pp: int) -> tuple[LayerRun, ...]:
    """The layers of the busiest pipeline stage: each type's share, rounded up."""
    return tuple(LayerRun(run.kind, cdiv(run.count, pp), run.window) for run in arch.runs)


def _activation_bytes(arch: ModelArchitecture, tp: int, batched: int, seqs: int) -> float:
    """The profiling run's torch peak: the widest layer's intermediates for `batched` tokens, or
    the sampler's float32 logits and their sorted copies for `seqs` requests, whichever is larger."""
    hidden = arch.hidden_size or arch.attention_heads * arch.head_dim
    qkv = (arch.attention_heads + 2 * arch.kv_heads) * arch.head_dim / tp
    width = arch.intermediate_size or 3.5 * hidden
    mlp = 3 * width / tp
    if arch.moe and arch.experts_per_token:
        per_expert = arch.moe_intermediate_size or width
        mlp = max(mlp, arch.experts_per_token * (3 * per_expert / tp + hidden))
    forward = batched * 2.0 * (4 * hidden + qkv + mlp)
    sampler = min(seqs, batched) * (arch.vocab_size or 32000) * (2.0 + 12.0)
    return max(forward, sampler) + PROFILE_WORKSPACE_GIB * GIB


@functools.lru_cache(maxsize=4096)
def rank_load(arch: ModelArchitecture, workload: Workload, tp: int, pp: int = 1) -> RankLoad:
    """The busiest rank of a replica split `tp` ways within a node and `pp` ways across stages."""
    total = loaded_weight_bytes(arch, workload.quantization)
    embedding = arch.embedding_params * 2.0
    layers_share = cdiv(arch.layers, pp) / arch.layers
    if pp == 1:
        weights = total / tp
    else:
        one_matrix = embedding / (1 if arch.tie_word_embeddings else 2)
        weights = ((total - embedding) * layers_share + one_matrix) / tp
    bytes_per_param = total / (arch.params_b * 1e9) if arch.params_b else 2.0
    if not arch.mla and tp > arch.kv_heads and arch.hidden_size:
        # Each rank keeps a whole KV head when there are fewer heads than ranks.
        replicated = 2 * arch.hidden_size * arch.head_dim * (1 - arch.kv_heads / tp) * bytes_per_param
        weights += replicated * cdiv(arch.layers, pp)
    kv_bytes = kv_dtype_bytes(workload.kv_cache_dtype)
    if arch.mla:
        token_bytes = ((arch.kv_lora_rank or 0) + (arch.qk_rope_head_dim or 0)) * kv_bytes
    else:
        token_bytes = 2 * max(1, arch.kv_heads // tp) * arch.head_dim * kv_bytes
    state = arch.state.bytes_per_rank(tp, 2) if arch.state is not None else 0
    layout = kv_layout(
        _stage_runs(arch, pp),
        attention_token_bytes=token_bytes,
        state_bytes=state,
        max_batched_tokens=workload.max_batched_tokens,
    )
    blocks_at_max_len = layout.blocks_per_request(workload.max_model_len)
    blocks_at_average = layout.blocks_per_request(workload.average_tokens)
    attention_layers = sum(run.count for run in arch.runs if run.kind in ("full", "mla"))
    replica_token_bytes = token_bytes * attention_layers * (1 if arch.mla else tp)
    outside = CUDA_CONTEXT_GIB + (NCCL_GIB if tp * pp > 1 else 0.0)
    return RankLoad(
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
        weights_bytes=weights,
        model_weights_bytes=total,
        activation_bytes=_activation_bytes(arch, tp, workload.max_batched_tokens, workload.max_num_seqs),
        non_torch_bytes=PROFILE_NON_TORCH_GIB * GIB if tp * pp > 1 else 0.0,
        outside_bytes=outside * GIB,
        layout=layout,
        blocks_at_max_len=blocks_at_max_len,
        blocks_at_average=blocks_at_average,
        blocks_needed=max(blocks_at_max_len, math.ceil(workload.target_concurrency * blocks_at_average)),
        kv_bytes_per_token=replica_token_bytes,
        weight_bytes_per_param=bytes_per_param,
    )


def fits_on(load: RankLoad, workload: Workload, gpu_memory_gib: float) -> bool:
    """Whether `load` fits GPUs that report `gpu_memory_gib`: vLLM starts (the context fits outside
    the budget, one full sequence inside) and the budget holds the target concurrency."""
    budget = gpu_memory_gib * workload.gpu_memory_utilization * GIB
    return (
        workload.target_concurrency <= workload.max_num_seqs
        and load.needed_bytes <= budget
        and load.outside_bytes <= gpu_memory_gib * GIB - budget
    )


def fit(load: RankLoad, workload: Workload, gpu_memory_gib: float) -> MemoryEstimate:
    """`load` on GPUs that report `gpu_memory_gib`."""
    budget = gpu_memory_gib * workload.gpu_memory_utilization * GIB - load.fixed_bytes
    return MemoryEstimate(load, workload, gpu_memory_gib, load.layout.num_blocks(budget))


def estimate_memory(
    arch: ModelArchitecture,
    *,
    tensor_parallel_size: int,
    gpu_memory_gib: float,
    max_model_len: int,
    gpu: str = "",
    pipeline_parallel_size: int = 1,
    target_concurrency: int = 1,
    average_input_tokens: int | None = None,
    average_output_tokens: int = 0,
    max_num_seqs: int | None = None,
    max_num_batched_tokens: int | None = None,
    gpu_memory_utilization: float = 0.9,
    dtype: str = "auto",
    quantization: str = "none",
    kv_cache_dtype: str = "auto",
) -> MemoryEstimate:
    """The memory arithmetic for one replica on GPUs named `gpu` that report `gpu_memory_gib`."""
    batched, seqs = vllm_batch_defaults(gpu, gpu_memory_gib)
    workload = Workload(
        max_model_len=max_model_len,
        target_concurrency=target_concurrency,
        average_input_tokens=max_model_len if average_input_tokens is None else average_input_tokens,
        average_output_tokens=average_output_tokens,
        max_batched_tokens=max_num_batched_tokens or batched,
        max_num_seqs=max_num_seqs or seqs,
        gpu_memory_utilization=gpu_memory_utilization,
        dtype=dtype,
        quantization=quantization,
        kv_cache_dtype=kv_cache_dtype,
    )
    load = rank_load(arch, workload, tensor_parallel_size, pipeline_parallel_size)
    return fit(load, workload, gpu_memory_gib)


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
