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
    GIB,
    MemoryEstimate,
    RankLoad,
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
    reported = getattr(spec, "cuda_memory_gib", None) if spec is not None else None
    if spec is None or not reported or abs(spec.memory_gib - listed_gib) > 0.1 * spec.memory_gib:
        return listed_gib
    return float(reported)


@dataclass(frozen=True, slots=True)
class _Need:
    """One accepted tensor-parallel size under one workload: its load and the bytes a GPU must
    give it inside the budget (`inside`) and outside (`outside`) to fit."""

    tp: int
    load: RankLoad
    inside: float
    outside: float


class ShapeJudge:
    """Judges shapes for one request; lives for one plan.

    What a GPU must hold at each tensor-parallel size does not depend on its size, only on the
    workload vLLM's defaults give it (two kinds of GPU), so it is computed once per plan and a
    shape is judged by comparing its memory against that list.
    """

    def __init__(self, request: DeploymentRequest) -> None:
        self.request = request
        self.max_model_len = request.effective_max_model_len
        self.accepted = tuple(
            tp
            for tp in range(1, MAX_TENSOR_PARALLEL + 1)
            if tensor_parallel_refusal(request.architecture, tp) is None
        )
        self._needs: dict[tuple[int, int], tuple[Workload, tuple[_Need, ...]]] = {}
        self._precision: dict[str, str | None] = {}
        # Beyond the GPU's precision the arithmetic sees only its memory and count.
        self._by_size: dict[tuple[float, int, tuple[int, int], bool], ShapeVerdict] = {}
        self._stages: dict[tuple[tuple[int, int], int, int], _Need] = {}

    def workload(self, gpu: str, memory_gib: float) -> Workload:
        return self._workload(vllm_batch_defaults(gpu, memory_gib))

    def _workload(self, defaults: tuple[int, int]) -> Workload:
        r = self.request
        batched, seqs = defaults
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

    def _needs_for(self, defaults: tuple[int, int]) -> tuple[Workload, tuple[_Need, ...]]:
        found = self._needs.get(defaults)
        if found is None:
            workload = self._workload(defaults)
            needs = []
            for tp in self.accepted:
                load = rank_load(self.request.architecture, workload, tp)
                blocks = max(
                    load.blocks_at_max_len,
                    math.ceil(workload.target_concurrency * load.blocks_at_average),
                )
                inside = load.fixed_bytes + blocks * load.layout.bytes_per_block
                needs.append(_Need(tp, load, inside, load.outside_bytes))
            found = (workload, tuple(needs))
            self._needs[defaults] = found
        return found

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
        accepted = set(tps).intersection(self.accepted)
        if not accepted:
            reason = tensor_parallel_refusal(request.architecture, tps[-1]) or ""
            return ShapeVerdict((), TENSOR_PARALLEL, reason, tps[-1])
        workload, needs = self._needs_for(defaults)
        budget = memory * workload.gpu_memory_utilization * GIB
        headroom = memory * GIB - budget
        per_token = request.objective == "costPerToken"
        seqs_ok = workload.target_concurrency <= workload.max_num_seqs
        fitting: list[Option] = []
        largest: _Need | None = None
        for need in needs:
            if need.tp not in accepted:
                continue
            largest = need
            if seqs_ok and need.inside <= budget and need.outside <= headroom:
                estimate = fit(need.load, workload, memory)
                fitting.append((need.tp, estimate, self.throughput_for(gpu, estimate) if per_token else None))
                if not per_token:
                    # Per-GPU need falls as tp grows: the first fit uses the fewest GPUs.
                    break
        if not fitting:
            assert largest is not None
            closest = fit(largest.load, workload, memory)
            across = (
                self._across_nodes(gpu, memory, gpu_count, workload, defaults)
                if across_nodes and gpu_count in accepted
                else None
            )
            if across is not None:
                return across
            return ShapeVerdict((), MODEL_DOES_NOT_FIT, "", largest.tp, closest)

        def rank(option: Option) -> tuple[float, float, int]:
            # Price is the same for every tp of a group, so instances (per token/s) rank them.
            tp, _, throughput = option
            instances = -(-request.replicas // (gpu_count // tp))
            if per_token:
                return (instances / throughput.tokens_per_second if throughput else math.inf, instances, tp)
            return (instances, 0.0, tp)

        return ShapeVerdict(tuple(sorted(fitting, key=rank)))

    def _across_nodes(
        self, gpu: str, memory: float, gpu_count: int, workload: Workload, defaults: tuple[int, int]
    ) -> ShapeVerdict | None:
        """The fewest whole instances that hold one replica as tensor parallel within each node and
        pipeline parallel across them (vLLM's multi-node layout), or None when even MAX_NODES
        do not, or the spec fixes the GPUs of a replica to one node."""
        request = self.request
        if request.gpu_count or (request.tensor_parallel_size and request.tensor_parallel_size != gpu_count):
            return None
        arch = request.architecture
        most = MAX_NODES
        if request.max_gpus_per_replica is not None:
            most = min(most, request.max_gpus_per_replica // gpu_count)
        budget = memory * workload.gpu_memory_utilization * GIB
        for nodes in range(2, min(most, arch.layers) + 1):
            need = self._stages.get((defaults, gpu_count, nodes))
            if need is None:
                load = rank_load(arch, workload, gpu_count, nodes)
                blocks = max(
                    load.blocks_at_max_len, math.ceil(workload.target_concurrency * load.blocks_at_average)
                )
                inside = load.fixed_bytes + blocks * load.layout.bytes_per_block
                need = _Need(gpu_count, load, inside, load.outside_bytes)
                self._stages[(defaults, gpu_count, nodes)] = need
            if need.inside > budget or need.outside > memory * GIB - budget:
                continue
            estimate = fit(need.load, workload, memory)
            if estimate.fits:
                throughput = (
                    self.throughput_for(gpu, estimate) if request.objective == "costPerToken" else None
                )
                return ShapeVerdict(((gpu_count, estimate, throughput),), multi_node=True)
        return None


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
