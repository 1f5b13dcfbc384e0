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
    RankLoad,
    Workload,
    fit,
    fits_on,
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
#: Most instances one replica may span (pipeline stages across nodes).
MAX_NODES = 8


@dataclass(frozen=True, slots=True)
class ShapeVerdict:
    """What a shape allows: the fitting tensor-parallel options best first, or why none does."""

    fitting: tuple[Option, ...]
    refusal: str | None = None
    reason: str = ""
    tp: int = 1
    memory: MemoryEstimate | None = None
    # The fitting option spans several instances (pipeline stages): only fast-network offers.
    multi_node: bool = False


def reported_memory_gib(gpu: str, listed_gib: float) -> float:
    """The memory the CUDA runtime reports for this card, which vLLM's budget is a share of.

    Offers list the marketed size or nvidia-smi's figure; the catalog's GPU specs know what
    `torch.cuda.mem_get_info` reports. A listing that is not that card's size keeps its figure.
    """
    spec = spec_for(gpu)
    if spec is None or not spec.cuda_memory_gib or abs(spec.memory_gib - listed_gib) > 0.1 * spec.memory_gib:
        return listed_gib
    return spec.cuda_memory_gib


class ShapeJudge:
    """Judges shapes for one request; lives for one plan.

    What a GPU must hold at each (tensor-parallel, pipeline-parallel) size does not depend on its
    size, only on the workload vLLM's defaults give it (two kinds of GPU), so each load is computed
    once per plan and a shape is judged by comparing its memory against it.
    """

    def __init__(self, request: DeploymentRequest) -> None:
        self.request = request
        self.max_model_len = request.effective_max_model_len
        self.accepted = tuple(
            tp
            for tp in range(1, MAX_TENSOR_PARALLEL + 1)
            if tensor_parallel_refusal(request.architecture, tp) is None
        )
        self._workloads: dict[tuple[int, int], Workload] = {}
        self._loads: dict[tuple[tuple[int, int], int, int], RankLoad] = {}
        self._precision: dict[str, str | None] = {}
        # Beyond the GPU's precision the arithmetic sees only its memory and count.
        self._by_size: dict[tuple[float, int, tuple[int, int], bool], ShapeVerdict] = {}

    def _workload(self, defaults: tuple[int, int]) -> Workload:
        found = self._workloads.get(defaults)
        if found is None:
            r = self.request
            batched, seqs = defaults
            inputs, outputs = r.request_tokens
            found = Workload(
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
            self._workloads[defaults] = found
        return found

    def _load(self, defaults: tuple[int, int], tp: int, pp: int = 1) -> RankLoad:
        found = self._loads.get((defaults, tp, pp))
        if found is None:
            found = rank_load(self.request.architecture, self._workload(defaults), tp, pp)
            self._loads[(defaults, tp, pp)] = found
        return found

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

    def judge(
        self, gpu: str, listed_gib: float, gpu_count: int, *, across_nodes: bool = True
    ) -> ShapeVerdict:
        """`across_nodes`: whether some offer of the shape could join its nodes (a fast network)."""
        request = self.request
        spec = spec_for(gpu)
        if spec is not None and not spec.vllm_supported:
            return ShapeVerdict((), UNSUPPORTED_GPU, f"the vLLM CUDA image does not run on {gpu}")
        if gpu not in self._precision:
            self._precision[gpu] = _precision_refusal(spec, request)
        precision = self._precision[gpu]
        if precision is not None:
            return ShapeVerdict((), UNSUPPORTED_GPU, precision)
        if request.min_gpu_memory_gib is not None and listed_gib < request.min_gpu_memory_gib:
            return ShapeVerdict(
                (),
                MODEL_DOES_NOT_FIT,
                f"{listed_gib:g} GiB per GPU < gpu.minMemoryGiB {request.min_gpu_memory_gib:g}",
            )
        memory = reported_memory_gib(gpu, listed_gib)
        defaults = vllm_batch_defaults(gpu, memory)
        key = (memory, gpu_count, defaults, across_nodes)
        verdict = self._by_size.get(key)
        if verdict is None or request.objective == "costPerToken":
            # Per token, throughput depends on the GPU's bandwidth: judged for each GPU.
            verdict = self._judge_size(gpu, memory, gpu_count, defaults, across_nodes)
            self._by_size[key] = verdict
        return verdict

    def _judge_size(
        self, gpu: str, memory: float, gpu_count: int, defaults: tuple[int, int], across_nodes: bool
    ) -> ShapeVerdict:
        request = self.request
        tps = self.tp_choices(gpu_count)
        if isinstance(tps, str):
            return ShapeVerdict(
                (), MODEL_DOES_NOT_FIT, tps, request.tensor_parallel_size or request.gpu_count or 1
            )
        accepted = [tp for tp in self.accepted if tp in tps]
        if not accepted:
            reason = tensor_parallel_refusal(request.architecture, tps[-1]) or ""
            return ShapeVerdict((), TENSOR_PARALLEL, reason, tps[-1])
        workload = self._workload(defaults)
        per_token = request.objective == "costPerToken"
        fitting: list[Option] = []
        for tp in accepted:
            load = self._load(defaults, tp)
            if fits_on(load, workload, memory):
                estimate = fit(load, workload, memory)
                fitting.append((tp, estimate, self.throughput_for(gpu, estimate) if per_token else None))
                if not per_token:
                    # Per-GPU need falls as tp grows: the first fit uses the fewest GPUs.
                    break
        if not fitting:
            if across_nodes and gpu_count in accepted:
                across = self._across_nodes(gpu, memory, gpu_count, defaults)
                if across is not None:
                    return across
            closest = fit(self._load(defaults, accepted[-1]), workload, memory)
            return ShapeVerdict((), MODEL_DOES_NOT_FIT, "", accepted[-1], closest)

        def rank(option: Option) -> tuple[float, float, int]:
            # Price is the same for every tp of a group, so instances (per token/s) rank them.
            tp, _, throughput = option
            instances = -(-request.replicas // (gpu_count // tp))
            if per_token:
                return (instances / throughput.tokens_per_second if throughput else math.inf, instances, tp)
            return (instances, 0.0, tp)

        return ShapeVerdict(tuple(sorted(fitting, key=rank)))

    def _across_nodes(
        self, gpu: str, memory: float, gpu_count: int, defaults: tuple[int, int]
    ) -> ShapeVerdict | None:
        """The fewest whole instances that hold one replica as tensor parallel within each node and
        pipeline parallel across them (vLLM's multi-node layout), or None when even MAX_NODES
        do not, or the spec fixes the GPUs of a replica to one node."""
        request = self.request
        if request.gpu_count or (request.tensor_parallel_size and request.tensor_parallel_size != gpu_count):
            return None
        most = MAX_NODES
        if request.max_gpus_per_replica is not None:
            most = min(most, request.max_gpus_per_replica // gpu_count)
        workload = self._workload(defaults)
        for nodes in range(2, min(most, request.architecture.layers) + 1):
            load = self._load(defaults, gpu_count, nodes)
            if fits_on(load, workload, memory):
                estimate = fit(load, workload, memory)
                throughput = (
                    self.throughput_for(gpu, estimate) if request.objective == "costPerToken" else None
                )
                return ShapeVerdict(((gpu_count, estimate, throughput),), multi_node=True)
        return None


def _precision_refusal(spec: GpuSpec | None, request: DeploymentRequest) -> str | None:
    """Why this GPU cannot run the model's precision, or None."""
    arch = request.architecture
    stored = arch.native_format or arch.dtype
    weights = request.quantization if request.quantization != "none" else stored
    if weights not in WEIGHT_FORMATS:
        weights = "bfloat16"
    verdict = precision_check(
        spec, activation_dtype=request.dtype, weight_format=weights, fp16_allowed=arch.fp16_allowed
    )
    return verdict.refusal
