"""Judging one instance shape for one request: which tensor-parallel sizes fit, and what each holds.

A shape is a GPU model, the memory its offers list, and the GPUs per instance; neither the
provider nor the price changes the arithmetic, so the search judges each shape once. The
arithmetic itself (`memory.rank_load`) is cached by its plain inputs, so a shape of one GPU size
costs a few operations after the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gpupool.catalog.gpus import GpuSpec, spec_for
from gpupool.planner.memory import (
    MemoryEstimate,
    Workload,
    fit,
    rank_load,
    tensor_parallel_refusal,
    vllm_batch_defaults,
)
from gpupool.planner.precision import WEIGHT_FORMATS, precision_check
from gpupool.planner.request import (
    MAX_TENSOR_PARALLEL,
    MODEL_DOES_NOT_FIT,
    TENSOR_PARALLEL,
    UNSUPPORTED_GPU,
    DeploymentRequest,
)
from gpupool.planner.throughput import ThroughputEstimate, estimate_throughput

Option = tuple[int, MemoryEstimate, ThroughputEstimate | None]


@dataclass(frozen=True, slots=True)
class ShapeVerdict:
    """What a shape allows: the fitting tensor-parallel options best first, or why none does."""

    fitting: tuple[Option, ...]
    refusal: str | None = None
    reason: str = ""
    tp: int = 1
    memory: MemoryEstimate | None = None


def reported_memory_gib(gpu: str, listed_gib: float) -> float:
    """The memory the CUDA runtime reports for this card, which vLLM's budget is a share of.

    Offers list the marketed size or nvidia-smi's figure; the catalog's GPU specs know what
    `torch.cuda.mem_get_info` reports. A listing that is not that card's size keeps its figure.
    """
    spec = spec_for(gpu)
    reported = getattr(spec, "cuda_memory_gib", None) if spec is not None else None
    if spec is None or not reported or abs(spec.memory_gib - listed_gib) > 0.1 * spec.memory_gib:
        return listed_gib
    return float(reported)


class ShapeJudge:
    """Judges shapes for one request; lives for one plan."""

    def __init__(self, request: DeploymentRequest) -> None:
        self.request = request
        self.max_model_len = request.effective_max_model_len
        self.accepted = tuple(
            tp
            for tp in range(1, MAX_TENSOR_PARALLEL + 1)
            if tensor_parallel_refusal(request.architecture, tp) is None
        )

    def workload(self, gpu: str, memory_gib: float) -> Workload:
        r = self.request
        batched, seqs = vllm_batch_defaults(gpu, memory_gib)
        inputs, outputs = r.request_tokens
        return Workload(
            max_model_len=self.max_model_len,
            target_concurrency=r.concurrency,
            average_input_tokens=inputs,
            average_output_tokens=outputs,
            max_batched_tokens=r.max_num_batched_tokens or batched,
            max_num_seqs=r.max_num_seqs or seqs,
            gpu_memory_utilization=r.gpu_memory_utilization,
            dtype=r.dtype,
            quantization=r.quantization,
            kv_cache_dtype=r.kv_cache_dtype,
        )

    def memory_for(self, gpu: str, listed_gib: float, tp: int, pp: int = 1) -> MemoryEstimate:
        memory = reported_memory_gib(gpu, listed_gib)
        workload = self.workload(gpu, memory)
        return fit(rank_load(self.request.architecture, workload, tp, pp), workload, memory)

    def throughput_for(self, gpu: str, memory: MemoryEstimate) -> ThroughputEstimate | None:
        return estimate_throughput(
            self.request.architecture, spec_for(gpu), memory, quantization=self.request.quantization
        )

    def tp_choices(self, gpu_count: int) -> list[int] | str:
        """Tensor-parallel sizes to try on an instance with `gpu_count` GPUs, or why there are none."""
        request = self.request
        explicit = request.tensor_parallel_size or request.gpu_count
        if explicit:
            if explicit > gpu_count:
                return f"replica needs {explicit} GPUs, instance has {gpu_count}"
            return [explicit]
        limit = min(gpu_count, request.max_gpus_per_replica or gpu_count)
        return list(range(1, limit + 1))

    def judge(self, gpu: str, listed_gib: float, gpu_count: int) -> ShapeVerdict:
        request = self.request
        spec = spec_for(gpu)
        if spec is not None and not spec.vllm_supported:
            return ShapeVerdict((), UNSUPPORTED_GPU, f"the vLLM CUDA image does not run on {gpu}")
        precision = _precision_refusal(spec, request)
        if precision is not None:
            return ShapeVerdict((), UNSUPPORTED_GPU, precision)
        if request.min_gpu_memory_gib is not None and listed_gib < request.min_gpu_memory_gib:
            return ShapeVerdict(
                (),
                MODEL_DOES_NOT_FIT,
                f"{listed_gib:g} GiB per GPU < gpu.minMemoryGiB {request.min_gpu_memory_gib:g}",
            )
        tps = self.tp_choices(gpu_count)
        if isinstance(tps, str):
            return ShapeVerdict(
                (), MODEL_DOES_NOT_FIT, tps, request.tensor_parallel_size or request.gpu_count or 1
            )
        accepted = [tp for tp in tps if tp in self.accepted]
        if not accepted:
            reason = tensor_parallel_refusal(request.architecture, tps[-1]) or ""
            return ShapeVerdict((), TENSOR_PARALLEL, reason, tps[-1])
        per_token = request.objective == "costPerToken"
        fitting: list[Option] = []
        largest: MemoryEstimate | None = None
        for tp in accepted:
            memory = self.memory_for(gpu, listed_gib, tp)
            largest = memory
            if memory.fits:
                fitting.append((tp, memory, self.throughput_for(gpu, memory) if per_token else None))
                if not per_token:
                    # Per-GPU need falls as tp grows: the first fit uses the fewest GPUs.
                    break
        if not fitting:
            assert largest is not None
            return ShapeVerdict((), MODEL_DOES_NOT_FIT, "", largest.tensor_parallel_size, largest)

        def rank(option: Option) -> tuple[float, float, int]:
            # Price is the same for every tp of a group, so instances (per token/s) rank them.
            tp, _, throughput = option
            instances = -(-request.replicas // (gpu_count // tp))
            if per_token:
                return (instances / throughput.tokens_per_second if throughput else math.inf, instances, tp)
            return (instances, 0.0, tp)

        return ShapeVerdict(tuple(sorted(fitting, key=rank)))


def _precision_refusal(spec: GpuSpec | None, request: DeploymentRequest) -> str | None:
    """Why this GPU cannot run the model's precision, or None."""
    arch = request.architecture
    stored = arch.native_format or ("fp8" if arch.dtype == "fp8" else arch.dtype)
    weights = request.quantization if request.quantization != "none" else stored
    if weights not in WEIGHT_FORMATS:
        weights = "bfloat16"
    verdict = precision_check(
        spec, activation_dtype=request.dtype, weight_format=weights, fp16_allowed=arch.fp16_allowed
    )
    return verdict.refusal
