"""A roofline estimate of decode throughput, to rank offers by cost per token. An ESTIMATE.

Serving cost is mostly decode, and decode at moderate batch is bound by memory bandwidth: each step
reads the (active) weights once and the KV cache of every running sequence. At large batch it turns
compute bound. So one step of a replica takes max(bytes / bandwidth, flops / compute), derated by
efficiency factors that real engines reach, plus a penalty per extra tensor-parallel rank for the
all-reduces (smaller on NVLink than over PCIe). Tokens/s is the batch divided by the step time.

The point is the ranking between GPUs (an H200's 4.8 TB/s against an L40S's 0.86 TB/s), not an
absolute figure: expect real numbers within a factor of two. GPUs without bandwidth figures in
gpus.csv get no estimate rather than a guess.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpupool.catalog.gpus import GpuSpec
from gpupool.planner.memory import MemoryEstimate
from gpupool.planner.models import ModelArchitecture

BANDWIDTH_EFFICIENCY = 0.7
COMPUTE_EFFICIENCY = 0.4
TP_PENALTY_NVLINK = 0.05
TP_PENALTY_PCIE = 0.15


@dataclass(frozen=True, slots=True)
class ThroughputEstimate:
    tokens_per_second: float
    step_ms: float
    bound: str  # "memory" or "compute"
    batch: int


def moe_weights_read_b(arch: ModelArchitecture, batch: int) -> float:
    """Billions of parameters read per decode step: for MoE, the experts a batch touches.

    Each sequence picks a share active/total of the expert weights; a batch of B touches about
    1 - (1 - share)^B of them, and never less than one sequence's active set.
    """
    if not arch.moe or not arch.active_params_b:
        return arch.params_b
    share = arch.active_params_b / arch.params_b
    touched = 1 - (1 - share) ** batch
    return max(arch.active_params_b, arch.params_b * touched)


def estimate_throughput(
    arch: ModelArchitecture,
    spec: GpuSpec | None,
    memory: MemoryEstimate,
    *,
    quantization: str = "none",
) -> ThroughputEstimate | None:
    """Output tokens per second of one replica at the batch its KV cache holds, or None.

    The batch is the sequences of the average request the cache holds at once (at most
    max_num_seqs). Each request's prompt is prefilled once, compute bound, and shares the steps
    with decoding (chunked prefill), so its cost is spread over the request's output tokens.
    """
    if spec is None or not spec.memory_bandwidth_gbs:
        return None
    workload = memory.workload
    gpus = memory.tensor_parallel_size * memory.pipeline_parallel_size
    batch = max(1, math.floor(memory.concurrency_at_average))
    weights_bytes = moe_weights_read_b(arch, batch) * 1e9 * memory.weight_bytes_per_param
    # On average a running sequence is half way through its output, after its whole prompt.
    context = workload.average_input_tokens + workload.average_output_tokens / 2
    kv_bytes = batch * context * memory.kv_bytes_per_token
    bandwidth = spec.memory_bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY * gpus
    memory_seconds = (weights_bytes + kv_bytes) / bandwidth
    tflops = spec.fp8_tflops if quantization == "fp8" and spec.fp8_tflops else spec.bf16_tflops
    compute_seconds = 0.0
    prefill_seconds = 0.0
    if tflops:
        compute = tflops * 1e12 * COMPUTE_EFFICIENCY * gpus
        compute_seconds = 2 * arch.active_b * 1e9 * batch / compute
        prefill_seconds = 2 * arch.active_b * 1e9 * workload.average_input_tokens / compute
    penalty = TP_PENALTY_NVLINK if spec.nvlink else TP_PENALTY_PCIE
    step = max(memory_seconds, compute_seconds) * (1 + penalty * (memory.tensor_parallel_size - 1))
    outputs = max(1, workload.average_output_tokens)
    per_token = step / batch + prefill_seconds / outputs
    return ThroughputEstimate(
        tokens_per_second=1 / per_token,
        step_ms=step * 1000,
        bound="memory" if memory_seconds >= compute_seconds else "compute",
        batch=batch,
    )


def cost_per_million_tokens(cost_per_hour: float, tokens_per_second: float) -> float:
    return cost_per_hour / (tokens_per_second * 3600) * 1e6
