"""Choosing where a ModelDeployment runs: the cheapest feasible (GPU, tensor-parallel size, offer).

The search is exhaustive but cheap. Offers are indexed once per catalog into groups that share a
provider, GPU, GPU count and GPU memory, each kept sorted by price per capacity type. Whether a
model fits depends only on (GPU memory, tensor-parallel size), and within a group the number of
instances needed is the same for every offer, so the cheapest usable offer of a group is the first
one in price order that passes the region and availability filters. A plan therefore touches a few
hundred groups, not thousands of offers, and stays well under a millisecond.

Every group the pool may use gets a row in the alternatives, feasible or not, with the reason it
lost or was refused, so a person can see why the planner did not pick the offer they expected.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from gpupool.api.deployment import DEFAULT_POOL
from gpupool.catalog.adjust import NO_UNAVAILABLE, Unavailable
from gpupool.catalog.gpus import spec_for
from gpupool.catalog.offers import CAPACITY_TYPES, CapacityType, Offer
from gpupool.planner.memory import (
    MemoryEstimate,
    estimate_memory,
    tensor_parallel_refusal,
)
from gpupool.planner.models import ModelArchitecture
from gpupool.planner.throughput import (
    ThroughputEstimate,
    cost_per_million_tokens,
    estimate_throughput,
)

Objective = Literal["costPerHour", "costPerToken"]

# Machine-readable reasons a plan has no choice, and why a candidate was refused.
MODEL_DOES_NOT_FIT = "ModelDoesNotFit"
BUDGET_EXCEEDED = "BudgetExceeded"
NO_OFFERS = "NoOffers"
TENSOR_PARALLEL = "TensorParallel"
UNAVAILABLE = "Unavailable"
UNSUPPORTED_GPU = "UnsupportedGpu"

DEFAULT_MAX_MODEL_LEN = 8192
# Largest tensor-parallel size tried: single node, and no catalog instance has more than 16 GPUs.
MAX_TENSOR_PARALLEL = 16
CONTEXT_CACHE_SIZE = 256
THROUGHPUT_NOTE = (
    "throughput and cost per token are roofline ESTIMATES from GPU memory bandwidth and compute "
    "(gpus.csv), not measurements"
)


@dataclass(frozen=True, slots=True)
class DeploymentRequest:
    """What a ModelDeployment asks for, as plain data (see `request_from_spec` for the mapping)."""

    # No defaults that the API has: the CRD's live in gpupool/api, and `request_from_spec` passes
    # them on; an absent override is None or ().
    model: str
    architecture: ModelArchitecture
    replicas: int
    objective: Objective
    dtype: str
    quantization: str
    gpu_memory_utilization: float
    max_num_seqs: int
    capacity_type: CapacityType | None = None
    max_hourly_cost: float | None = None
    gpu_types: tuple[str, ...] = ()
    gpu_count: int | None = None
    min_gpu_memory_gib: float | None = None
    max_model_len: int | None = None
    tensor_parallel_size: int | None = None
    kv_cache_dtype: str = "auto"
    max_gpus_per_replica: int | None = None

    @property
    def effective_max_model_len(self) -> int:
        """The spec's maxModelLen, else min(model's context, 8192)."""
        if self.max_model_len:
            return self.max_model_len
        context = self.architecture.max_context
        return min(context, DEFAULT_MAX_MODEL_LEN) if context else DEFAULT_MAX_MODEL_LEN


@dataclass(frozen=True, slots=True)
class PoolConstraints:
    """What a GpuPool allows. Empty tuples mean "any"; `used_*` is what the pool already spends.

    `providers` are matched against `Offer.provider`: the controller maps GpuProvider names to the
    provider of their offers before calling.
    """

    name: str = DEFAULT_POOL
    providers: tuple[str, ...] = ()
    gpu_types: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    capacity_types: tuple[CapacityType, ...] = ("on-demand",)
    max_nodes: int | None = None
    max_gpus: int | None = None
    max_hourly_cost: float | None = None
    used_nodes: int = 0
    used_gpus: int = 0
    used_cost_per_hour: float = 0.0
    include_excluded: bool = False
    # What every node of the pool is labelled and tainted with (the packer checks pods against them).
    node_labels: tuple[tuple[str, str], ...] = ()
    node_taints: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class OfferGroup:
    """Offers that are interchangeable for sizing: same provider, GPU, GPU count and GPU memory."""

    provider: str
    gpu: str
    gpu_count: int
    gpu_memory_gib: float
    by_capacity: dict[CapacityType, tuple[Offer, ...]]


@dataclass(frozen=True)
class OfferIndex:
    """Offers grouped and price-sorted for planning; build once per catalog with `index_offers`."""

    groups: tuple[OfferGroup, ...]
    by_shape: tuple[tuple[tuple[str, float, int], tuple[OfferGroup, ...]], ...]
    excluded_groups: tuple[OfferGroup, ...]
    excluded_counts: dict[str, int] = field(default_factory=dict)
    offer_count: int = 0
    contexts: dict[DeploymentRequest, _Context] = field(default_factory=dict, compare=False, repr=False)
    # Keeps every indexed Offer alive, so `_cached_index` can key on their ids.
    offers: tuple[Offer, ...] = field(default=(), compare=False, repr=False)


def _group(offers: Iterable[Offer]) -> tuple[OfferGroup, ...]:
    buckets: dict[tuple[str, str, int, float], list[Offer]] = {}
    for offer in offers:
        buckets.setdefault((offer.provider, offer.gpu, offer.gpu_count, offer.gpu_memory_gib), []).append(
            offer
        )
    groups = []
    for (provider, gpu, count, memory), members in sorted(buckets.items()):
        by_capacity: dict[CapacityType, tuple[Offer, ...]] = {}
        for capacity in CAPACITY_TYPES:
            priced = [(offer.price(capacity), offer.key, offer) for offer in members]
            ordered = sorted((price, key, offer) for price, key, offer in priced if price is not None)
            if ordered:
                by_capacity[capacity] = tuple(offer for _, _, offer in ordered)
        groups.append(OfferGroup(provider, gpu, count, memory, by_capacity))
    return tuple(groups)


_INDEX_CACHE: dict[tuple[int, ...], OfferIndex] = {}
INDEX_CACHE_SIZE = 8


def _cached_index(offers: Sequence[Offer]) -> OfferIndex:
    """The index of a list of offers, memoized on the identity of the Offer objects.

    Controllers pass a fresh list of the same Offer objects on every reconcile; keying on the
    objects' ids (kept alive by the cached index itself, so an id cannot be reused while cached)
    avoids rebuilding the index each time without hashing every field of every offer.
    """
    key = tuple(map(id, offers))
    found = _INDEX_CACHE.get(key)
    if found is None:
        if len(_INDEX_CACHE) >= INDEX_CACHE_SIZE:
            _INDEX_CACHE.pop(next(iter(_INDEX_CACHE)))
        found = index_offers(offers)
        _INDEX_CACHE[key] = found
    return found


def _by_shape(
    groups: tuple[OfferGroup, ...],
) -> tuple[tuple[tuple[str, float, int], tuple[OfferGroup, ...]], ...]:
    shapes: dict[tuple[str, float, int], list[OfferGroup]] = {}
    for group in groups:
        shapes.setdefault((group.gpu, group.gpu_memory_gib, group.gpu_count), []).append(group)
    return tuple((key, tuple(members)) for key, members in shapes.items())


def index_offers(offers: Sequence[Offer]) -> OfferIndex:
    """Group and sort offers for `plan_deployment`; offers with an `exclusion` are set apart."""
    usable = [offer for offer in offers if offer.exclusion is None]
    excluded = [offer for offer in offers if offer.exclusion is not None]
    groups = _group(usable)
    return OfferIndex(
        groups=groups,
        by_shape=_by_shape(groups),
        excluded_groups=_group(excluded),
        excluded_counts=dict(Counter(f"{o.provider}: {o.exclusion}" for o in excluded)),
        offer_count=len(offers),
        offers=tuple(offers),
    )


@dataclass(frozen=True, slots=True)
class Shape:
    gpu: str
    gpu_memory_gib: float
    gpus_per_replica: int
    tensor_parallel_size: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "gpuMemoryGiB": self.gpu_memory_gib,
            "gpusPerReplica": self.gpus_per_replica,
            "tensorParallelSize": self.tensor_parallel_size,
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    """One way to run the deployment (an offer group at a capacity type), feasible or refused."""

    shape: Shape
    offer: Offer | None
    capacity_type: CapacityType | None
    price_per_hour: float | None = None
    instances: int = 0
    replicas_per_instance: int = 0
    cost_per_hour: float | None = None
    throughput: ThroughputEstimate | None = None
    cost_per_million_tokens: float | None = None
    memory: MemoryEstimate | None = None
    refusal: str | None = None
    detail: str | None = None
    provider: str = ""

    @property
    def feasible(self) -> bool:
        return self.refusal is None

    @property
    def reason(self) -> str | None:
        """Why it lost or was refused, with the numbers ("needs 152 GiB, has 72 GiB ...")."""
        if self.detail is None and self.refusal == MODEL_DOES_NOT_FIT and self.memory is not None:
            # Formatted on demand: most plans never show most of their refusals.
            return self.memory.shortfall_message()
        return self.detail

    def to_dict(self) -> dict[str, Any]:
        offer = self.offer
        return {
            "feasible": self.feasible,
            "refusal": self.refusal,
            "reason": self.reason,
            **self.shape.to_dict(),
            "provider": offer.provider if offer else self.provider,
            "region": offer.region if offer else None,
            "zone": offer.zone if offer else None,
            "instanceType": offer.instance_type if offer else None,
            "gpuCount": offer.gpu_count if offer else None,
            "capacityType": self.capacity_type,
            "pricePerHour": _round(self.price_per_hour),
            "instances": self.instances,
            "costPerHour": _round(self.cost_per_hour),
            "tokensPerSecond": _round(self.throughput.tokens_per_second if self.throughput else None, 1),
            "costPerMillionTokens": _round(self.cost_per_million_tokens),
            "requiredGiB": _round(self.memory.required_gib if self.memory else None, 1),
            "availableGiB": _round(self.memory.available_gib if self.memory else None, 1),
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class Plan:
    """The planner's decision: a choice (or none, with a reason) and every alternative ranked."""

    model: str
    objective: Objective
    replicas: int
    max_model_len: int
    choice: Candidate | None
    reason: str | None
    message: str
    notes: tuple[str, ...] = ()
    # Every candidate in no particular order; `alternatives` ranks them on first use, so a caller
    # that needs only the choice does not pay for sorting a few hundred rows.
    candidates: tuple[Candidate, ...] = field(default=(), repr=False, compare=False)
    # Builds the feasible candidates on first use of `alternatives` (see _evaluate_group).
    candidate_source: Callable[[], tuple[Candidate, ...]] | None = field(
        default=None, repr=False, compare=False
    )
    # Ranking by price needs no throughput; these fill it in for display when alternatives are read.
    fill_throughput: Callable[[Candidate], Candidate] | None = field(default=None, repr=False, compare=False)
    unfilled_choice: Candidate | None = field(default=None, repr=False, compare=False)

    @property
    def feasible(self) -> bool:
        return self.choice is not None

    @functools.cached_property
    def alternatives(self) -> tuple[Candidate, ...]:
        """Every candidate: feasible ones by the objective (the choice first), then refused ones."""
        everything = self.candidate_source() if self.candidate_source is not None else self.candidates
        feasible = sorted((c for c in everything if c.feasible), key=lambda c: _sort_key(self.objective, c))
        refused = sorted((c for c in everything if not c.feasible), key=_refused_sort_key)
        fill = self.fill_throughput
        if fill is not None:
            feasible = [
                self.choice if c is self.unfilled_choice and self.choice else fill(c) for c in feasible
            ]
        return (*feasible, *refused)

    @property
    def memory(self) -> MemoryEstimate | None:
        """The chosen shape's memory arithmetic, else that of the closest refused shape."""
        if self.choice is not None:
            return self.choice.memory
        for candidate in self.alternatives:
            if candidate.memory is not None:
                return candidate.memory
        return None

    def to_dict(self, max_alternatives: int | None = None) -> dict[str, Any]:
        """The documented JSON schema (docs/planner.md)."""
        choice = self.choice
        offer = choice.offer if choice else None
        memory = self.memory
        alternatives = (
            []
            if max_alternatives == 0
            else [c for c in self.alternatives if choice is None or c is not choice][
                : max_alternatives if max_alternatives is not None else None
            ]
        )
        return {
            "model": self.model,
            "objective": self.objective,
            "replicas": self.replicas,
            "maxModelLen": self.max_model_len,
            "feasible": self.feasible,
            "reason": self.reason,
            "message": self.message,
            "shape": choice.shape.to_dict() | {"replicasPerInstance": choice.replicas_per_instance}
            if choice
            else None,
            "offer": {
                "key": offer.key,
                "provider": offer.provider,
                "region": offer.region,
                "zone": offer.zone,
                "instanceType": offer.instance_type,
                "gpu": offer.gpu,
                "gpuCount": offer.gpu_count,
                "gpuMemoryGiB": offer.gpu_memory_gib,
                "capacityType": choice.capacity_type,
                "pricePerHour": _round(choice.price_per_hour),
            }
            if choice and offer
            else None,
            "instances": choice.instances if choice else 0,
            "costPerHour": _round(choice.cost_per_hour) if choice else None,
            "tokensPerSecond": _round(choice.throughput.tokens_per_second, 1)
            if choice and choice.throughput
            else None,
            "costPerMillionTokens": _round(choice.cost_per_million_tokens) if choice else None,
            "estimate": True,
            "memory": memory.to_dict() if memory else None,
            "alternatives": [c.to_dict() for c in alternatives],
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class _ShapeVerdict:
    """What a (GPU, GPU memory, GPUs per instance) allows, independent of provider and price."""

    fitting: tuple[tuple[int, MemoryEstimate, ThroughputEstimate | None], ...]
    refusal: str | None = None
    reason: str = ""
    tp: int = 1
    memory: MemoryEstimate | None = None


@dataclass
class _Context:
    """Per-plan caches: memory fit and throughput depend only on (GPU, memory, tp)."""

    request: DeploymentRequest
    max_model_len: int
    memory: dict[tuple[float, int], MemoryEstimate] = field(default_factory=dict)
    throughput: dict[tuple[str, float, int], ThroughputEstimate | None] = field(default_factory=dict)
    shapes: dict[tuple[str, float, int], _ShapeVerdict] = field(default_factory=dict)
    tp_reasons: dict[int, str | None] = field(default_factory=dict)
    first_fit: dict[tuple[float, int], _ShapeVerdict] = field(default_factory=dict)
    fits_at: dict[float, MemoryEstimate | None] = field(default_factory=dict)
    accepted: list[int] | None = None
    per_gpu_need: list[tuple[int, float]] = field(default_factory=list)

    def first_fit_verdict(self, gpu_memory: float, gpu_count: int) -> _ShapeVerdict:
        """The cost-per-hour verdict: the smallest accepted tp that fits wins (fewest instances).

        Cached per (GPU memory, GPUs per instance), since neither the GPU's name nor the provider
        changes the arithmetic.
        """
        key = (gpu_memory, gpu_count)
        found = self.first_fit.get(key)
        if found is not None:
            return found
        limit = min(gpu_count, self.request.max_gpus_per_replica or gpu_count)
        accepted = [tp for tp in self.accepted_tps() if tp <= limit]
        if not accepted:
            found = _ShapeVerdict((), TENSOR_PARALLEL, self.tp_refusal(limit) or "", limit)
        else:
            fit = self.smallest_fit(gpu_memory)
            if fit is not None and fit.tensor_parallel_size <= limit:
                found = _ShapeVerdict(((fit.tensor_parallel_size, fit, None),))
            else:
                largest = self.memory_for(gpu_memory, accepted[-1])
                found = _ShapeVerdict((), MODEL_DOES_NOT_FIT, "", largest.tensor_parallel_size, largest)
        self.first_fit[key] = found
        return found

    def accepted_tps(self) -> list[int]:
        if self.accepted is None:
            self.accepted = [tp for tp in range(1, MAX_TENSOR_PARALLEL + 1) if self.tp_refusal(tp) is None]
        return self.accepted

    def smallest_fit(self, gpu_memory: float) -> MemoryEstimate | None:
        """The memory arithmetic at the smallest accepted tp that fits GPUs of this size."""
        if gpu_memory not in self.fits_at:
            if not self.per_gpu_need:
                # What one GPU must hold does not depend on the GPU's size: compute it once per tp.
                self.per_gpu_need = [
                    (tp, self.memory_for(0.0, tp).per_gpu_required_gib) for tp in self.accepted_tps()
                ]
            usable = gpu_memory * self.request.gpu_memory_utilization + 1e-9
            found = None
            for tp, need in self.per_gpu_need:
                if need <= usable:
                    found = self.memory_for(gpu_memory, tp)
                    break
            self.fits_at[gpu_memory] = found
        return self.fits_at[gpu_memory]

    def tp_refusal(self, tp: int) -> str | None:
        if tp not in self.tp_reasons:
            self.tp_reasons[tp] = tensor_parallel_refusal(self.request.architecture, tp)
        return self.tp_reasons[tp]

    def memory_for(self, gpu_memory: float, tp: int) -> MemoryEstimate:
        key = (gpu_memory, tp)
        found = self.memory.get(key)
        if found is None:
            # Everything but the GPU's size depends on tp alone: compute once per tp, then restate.
            base = self.memory.get((0.0, tp))
            if base is None:
                r = self.request
                base = estimate_memory(
                    r.architecture,
                    tensor_parallel_size=tp,
                    gpu_memory_gib=0.0,
                    max_model_len=self.max_model_len,
                    max_num_seqs=r.max_num_seqs,
                    gpu_memory_utilization=r.gpu_memory_utilization,
                    dtype=r.dtype,
                    quantization=r.quantization,
                    kv_cache_dtype=r.kv_cache_dtype,
                )
                self.memory[(0.0, tp)] = base
            found = MemoryEstimate(
                tp,
                gpu_memory,
                base.gpu_memory_utilization,
                base.weight_bytes_per_param,
                base.weights_gib,
                base.kv_bytes_per_token,
                base.kv_tokens,
                base.kv_cache_gib,
                base.overhead_gib,
            )
            self.memory[key] = found
        return found

    def throughput_for(self, gpu: str, memory: MemoryEstimate) -> ThroughputEstimate | None:
        key = (gpu, memory.gpu_memory_gib, memory.tensor_parallel_size)
        if key not in self.throughput:
            r = self.request
            self.throughput[key] = estimate_throughput(
                r.architecture,
                spec_for(gpu),
                memory,
                max_model_len=self.max_model_len,
                max_num_seqs=r.max_num_seqs,
                quantization=r.quantization,
            )
        return self.throughput[key]


def _tp_choices(request: DeploymentRequest, gpu_count: int) -> list[int] | str:
    """Tensor-parallel sizes to try on an instance with `gpu_count` GPUs, or why there are none."""
    explicit = request.tensor_parallel_size or request.gpu_count
    if explicit:
        if explicit > gpu_count:
            return f"replica needs {explicit} GPUs, instance has {gpu_count}"
        return [explicit]
    limit = min(gpu_count, request.max_gpus_per_replica or gpu_count)
    return list(range(1, limit + 1))


def _sort_key(objective: Objective, candidate: Candidate) -> tuple[Any, ...]:
    offer = candidate.offer
    tie = (
        candidate.shape.tensor_parallel_size,
        candidate.provider,
        offer.region if offer else "",
        offer.zone if offer else "",
        offer.instance_type if offer else "",
        candidate.capacity_type or "",
    )
    cost = candidate.cost_per_hour if candidate.cost_per_hour is not None else math.inf
    if objective == "costPerToken":
        per_token = candidate.cost_per_million_tokens
        return (per_token if per_token is not None else math.inf, cost, *tie)
    return (cost, *tie)


_REFUSAL_ORDER = {
    BUDGET_EXCEEDED: 0,
    UNAVAILABLE: 1,
    MODEL_DOES_NOT_FIT: 2,
    TENSOR_PARALLEL: 3,
    UNSUPPORTED_GPU: 4,
    NO_OFFERS: 5,
}


def _refused_sort_key(candidate: Candidate) -> tuple[Any, ...]:
    closeness = 0.0
    if candidate.memory is not None and candidate.refusal == MODEL_DOES_NOT_FIT:
        closeness = candidate.memory.per_gpu_required_gib / candidate.memory.per_gpu_available_gib
    cost = candidate.cost_per_hour if candidate.cost_per_hour is not None else math.inf
    return (
        _REFUSAL_ORDER.get(candidate.refusal or "", 9),
        closeness,
        cost,
        candidate.shape.gpu,
        candidate.provider,
        candidate.shape.tensor_parallel_size,
    )


def _over_limits(
    request: DeploymentRequest, pool: PoolConstraints, instances: int, gpus: int, cost: float
) -> str | None:
    if request.max_hourly_cost is not None and cost > request.max_hourly_cost + 1e-9:
        return f"over budget: ${cost:.2f}/h > maxHourlyCost ${request.max_hourly_cost:.2f}/h"
    if pool.max_hourly_cost is not None and pool.used_cost_per_hour + cost > pool.max_hourly_cost + 1e-9:
        return (
            f"over the pool's budget: ${pool.used_cost_per_hour + cost:.2f}/h > "
            f"maxHourlyCost ${pool.max_hourly_cost:.2f}/h"
        )
    if pool.max_nodes is not None and pool.used_nodes + instances > pool.max_nodes:
        return f"over the pool's maxNodes {pool.max_nodes}: needs {pool.used_nodes + instances}"
    if pool.max_gpus is not None and pool.used_gpus + gpus > pool.max_gpus:
        return f"over the pool's maxGpus {pool.max_gpus}: needs {pool.used_gpus + gpus}"
    return None


def _capacity_types(request: DeploymentRequest, pool: PoolConstraints) -> tuple[CapacityType, ...] | str:
    allowed = pool.capacity_types or CAPACITY_TYPES
    if request.capacity_type is None:
        return tuple(allowed)
    if request.capacity_type not in allowed:
        return (
            f"capacity type {request.capacity_type} is not allowed by pool {pool.name} ({', '.join(allowed)})"
        )
    return (request.capacity_type,)


def _judge_shape(ctx: _Context, gpu: str, gpu_memory: float, gpu_count: int) -> _ShapeVerdict:
    request = ctx.request
    spec = spec_for(gpu)
    if spec is not None and not spec.vllm_supported:
        return _ShapeVerdict((), UNSUPPORTED_GPU, f"the vLLM CUDA image does not run on {gpu}")
    if request.min_gpu_memory_gib is not None and gpu_memory < request.min_gpu_memory_gib:
        return _ShapeVerdict(
            (),
            MODEL_DOES_NOT_FIT,
            f"{gpu_memory:g} GiB per GPU < gpu.minMemoryGiB {request.min_gpu_memory_gib:g}",
        )
    if request.objective != "costPerToken" and not (request.tensor_parallel_size or request.gpu_count):
        # Price alone decides: throughput is filled in later, for the choice and for display only.
        return ctx.first_fit_verdict(gpu_memory, gpu_count)
    tps = _tp_choices(request, gpu_count)
    if isinstance(tps, str):
        return _ShapeVerdict(
            (), MODEL_DOES_NOT_FIT, tps, request.tensor_parallel_size or request.gpu_count or 1
        )
    accepted = [tp for tp in tps if ctx.tp_refusal(tp) is None]
    if not accepted:
        return _ShapeVerdict((), TENSOR_PARALLEL, ctx.tp_refusal(tps[-1]) or "", tps[-1])
    fitting = []
    largest: MemoryEstimate | None = None
    # Per-GPU need falls as tp grows, so for cost per hour the first fit is the best (fewest instances).
    first_fit_wins = request.objective != "costPerToken"
    for tp in accepted:
        memory = ctx.memory_for(gpu_memory, tp)
        largest = memory
        if memory.fits:
            throughput = None if first_fit_wins else ctx.throughput_for(gpu, memory)
            fitting.append((tp, memory, throughput))
            if first_fit_wins:
                break
    if not fitting:
        assert largest is not None
        return _ShapeVerdict((), MODEL_DOES_NOT_FIT, "", largest.tensor_parallel_size, largest)

    def rank(option: tuple[int, MemoryEstimate, ThroughputEstimate | None]) -> tuple[float, float, int]:
        # Cost is instances x price and price is the same for every tp of a group, so ranking by
        # instances (and instances per token/s) here picks the best tp for any price.
        tp, _, throughput = option
        instances = -(-request.replicas // (gpu_count // tp))
        if request.objective == "costPerToken":
            per_token = instances / throughput.tokens_per_second if throughput else math.inf
            return (per_token, instances, tp)
        return (instances, 0.0, tp)

    # Best first; a group falls back to the next option when the best one breaks a limit.
    return _ShapeVerdict(tuple(sorted(fitting, key=rank)))


def _evaluate_group(
    ctx: _Context,
    group: OfferGroup,
    capacity: CapacityType,
    pool: PoolConstraints,
    unavailable: Unavailable,
    now: float | None,
    verdict: _ShapeVerdict,
) -> Candidate | _Row | _ShapeRefusal | None:
    """The best way to use one offer group at one capacity type, or None if the pool may not use it.

    Refusals come back as Candidates; feasible outcomes as a `_Row`, a plain tuple that becomes a
    Candidate only if it is chosen or shown, since most of a few hundred rows never are.
    """
    request = ctx.request
    offers = group.by_capacity.get(capacity)
    if not offers:
        return None
    regions = pool.regions
    usable: Offer | None = None
    blocked: Offer | None = None
    for offer in offers:
        if regions and offer.region not in regions:
            continue
        if unavailable.until and _is_unavailable(unavailable, offer, capacity, now):
            blocked = blocked or offer
            continue
        usable = offer
        break
    shown = usable or blocked
    if shown is None:
        return None
    price = shown.price(capacity)
    assert price is not None

    if verdict.refusal is not None:
        return _ShapeRefusal(group, capacity, shown, price, verdict)

    # Price is a constant factor within a group, so _judge_shape already ranked the tp options.
    refusal: str | None = None
    reason: str | None = None
    first: tuple[int, MemoryEstimate, ThroughputEstimate | None, int, float, str | None] | None = None
    for tp, memory, throughput in verdict.fitting:
        instances = -(-request.replicas // (group.gpu_count // tp))
        cost = instances * price
        over = _over_limits(request, pool, instances, instances * group.gpu_count, cost)
        if first is None:
            first = (tp, memory, throughput, instances, cost, over)
        if over is None:
            break
    else:
        assert first is not None
        tp, memory, throughput, instances, cost, over = first
    if usable is None:
        refusal = UNAVAILABLE
        reason = f"capacity error; unavailable until {unavailable.until.get((shown.key, capacity))}"
    elif over is not None:
        refusal, reason = BUDGET_EXCEEDED, over
    per_token = (
        cost_per_million_tokens(cost, throughput.tokens_per_second * request.replicas) if throughput else None
    )
    row: _Row = (cost, per_token, tp, memory, throughput, instances, group, capacity, shown, price)
    if refusal is None:
        return row
    return _candidate_from_row(row, refusal, reason)


# (cost, cost per 1M tokens, tp, memory, throughput, instances, group, capacity, offer, price)
_Row = tuple[
    float,
    float | None,
    int,
    MemoryEstimate,
    ThroughputEstimate | None,
    int,
    OfferGroup,
    CapacityType,
    Offer,
    float,
]


@dataclass(frozen=True, slots=True)
class _ShapeRefusal:
    """A shape refused at every provider, kept as found; a Candidate only if shown."""

    group: OfferGroup
    capacity: CapacityType
    offer: Offer
    price: float
    verdict: _ShapeVerdict

    def candidate(self) -> Candidate:
        verdict, group = self.verdict, self.group
        return Candidate(
            shape=Shape(group.gpu, group.gpu_memory_gib, verdict.tp, verdict.tp),
            offer=self.offer,
            capacity_type=self.capacity,
            price_per_hour=self.price,
            memory=verdict.memory,
            refusal=verdict.refusal,
            detail=verdict.reason or None,
            provider=group.provider,
        )


def _candidate_from_row(row: _Row, refusal: str | None = None, detail: str | None = None) -> Candidate:
    cost, per_token, tp, memory, throughput, instances, group, capacity, offer, price = row
    return Candidate(
        shape=Shape(group.gpu, group.gpu_memory_gib, tp, tp),
        offer=offer,
        capacity_type=capacity,
        price_per_hour=price,
        instances=instances,
        replicas_per_instance=group.gpu_count // tp,
        cost_per_hour=cost,
        throughput=throughput,
        cost_per_million_tokens=per_token,
        memory=memory,
        refusal=refusal,
        detail=detail,
        provider=group.provider,
    )


def _is_unavailable(
    unavailable: Unavailable, offer: Offer, capacity: CapacityType, now: float | None
) -> bool:
    if now is None:
        return (offer.key, capacity) in unavailable.until
    return unavailable.is_unavailable(offer.key, capacity, now)


def plan_deployment(
    request: DeploymentRequest,
    offers: OfferIndex | Sequence[Offer],
    constraints: PoolConstraints | None = None,
    *,
    unavailable: Unavailable = NO_UNAVAILABLE,
    now: float | None = None,
) -> Plan:
    """Choose the cheapest feasible shape and offer for `request` within `constraints`.

    `offers` may be a prebuilt `OfferIndex` (fast path for repeated plans) or a list of Offers.
    `unavailable` marks offers that just failed with a capacity error; with `now` (epoch seconds)
    only unexpired marks count, without it every mark does. Pure: same inputs, same Plan.
    """
    pool = constraints or PoolConstraints()
    index = offers if isinstance(offers, OfferIndex) else _cached_index(offers)
    max_model_len = request.effective_max_model_len
    arch = request.architecture
    notes: list[str] = list(arch.assumptions)
    if arch.native_format and request.quantization == "none" and request.dtype == "auto":
        notes.append(f"weights sized for the checkpoint's native {arch.native_format} format")
    if pool.include_excluded:
        notes.append(
            "offers with untrustworthy prices are INCLUDED on request: " + "; ".join(index.excluded_counts)
        )
    else:
        notes.extend(
            f"left out {count} offers ({why})" for why, count in sorted(index.excluded_counts.items())
        )
    notes.append(THROUGHPUT_NOTE)

    def no_choice(code: str, message: str, alternatives: tuple[Candidate, ...] = ()) -> Plan:
        return Plan(
            model=request.model,
            objective=request.objective,
            replicas=request.replicas,
            max_model_len=max_model_len,
            choice=None,
            candidates=alternatives,
            reason=code,
            message=message,
            notes=tuple(notes),
        )

    if arch.max_context and max_model_len > arch.max_context:
        return no_choice(
            MODEL_DOES_NOT_FIT,
            f"maxModelLen {max_model_len} exceeds the model's context of {arch.max_context} tokens",
        )
    if (
        request.gpu_count
        and request.tensor_parallel_size
        and request.gpu_count != request.tensor_parallel_size
    ):
        return no_choice(
            MODEL_DOES_NOT_FIT,
            f"gpu.count {request.gpu_count} and tensorParallelSize {request.tensor_parallel_size} disagree: "
            "on a single node each replica uses exactly tensorParallelSize GPUs",
        )
    capacities = _capacity_types(request, pool)
    if isinstance(capacities, str):
        return no_choice(NO_OFFERS, capacities)

    wanted_gpus = set(pool.gpu_types) if pool.gpu_types else None
    if request.gpu_types:
        wanted_gpus = (
            set(request.gpu_types) & wanted_gpus if wanted_gpus is not None else set(request.gpu_types)
        )
    providers = set(pool.providers) if pool.providers else None
    groups: Iterable[OfferGroup] = index.groups
    if pool.include_excluded:
        groups = (*index.groups, *index.excluded_groups)

    ctx = index.contexts.get(request)
    if ctx is None:
        # Shape verdicts depend only on the request, so repeated plans of one deployment against
        # one catalog (every reconcile) reuse them; the cache is bounded and dropped when full.
        if len(index.contexts) >= CONTEXT_CACHE_SIZE:
            index.contexts.clear()
        ctx = _Context(request, max_model_len)
        index.contexts[request] = ctx
    candidates: list[Candidate] = []
    rows: list[_Row] = []
    shape_refusals: list[_ShapeRefusal] = []
    by_shape = index.by_shape if not pool.include_excluded else _by_shape(tuple(groups))
    for shape_key, members in by_shape:
        if wanted_gpus is not None and shape_key[0] not in wanted_gpus:
            continue
        verdict = ctx.shapes.get(shape_key)
        if verdict is None:
            verdict = _judge_shape(ctx, *shape_key)
            ctx.shapes[shape_key] = verdict
        for capacity in capacities:
            for group in members:
                if providers is not None and group.provider not in providers:
                    continue
                outcome = _evaluate_group(ctx, group, capacity, pool, unavailable, now, verdict)
                if outcome is None:
                    continue
                if isinstance(outcome, tuple):
                    rows.append(outcome)
                elif isinstance(outcome, _ShapeRefusal):
                    shape_refusals.append(outcome)
                    # Refused for memory or tensor parallelism at every provider alike: one row.
                    break
                else:
                    candidates.append(outcome)

    if rows:
        # Best primary figure first with plain float comparisons; the full tie-break key only
        # among the rows that tie on it.
        if request.objective == "costPerToken":
            best = min((r[1] if r[1] is not None else math.inf, r[0]) for r in rows)
            tied = [r for r in rows if (r[1] if r[1] is not None else math.inf, r[0]) == best]
        else:
            cheapest = min(r[0] for r in rows)
            tied = [r for r in rows if r[0] == cheapest]
        tied_candidates = [(_candidate_from_row(r), r) for r in tied]
        unfilled, chosen_row = min(tied_candidates, key=lambda pair: _sort_key(request.objective, pair[0]))

        def materialize() -> tuple[Candidate, ...]:
            made = [unfilled if r is chosen_row else _candidate_from_row(r) for r in rows]
            return (*made, *candidates, *(refusal.candidate() for refusal in shape_refusals))

        def fill(candidate: Candidate) -> Candidate:
            if (
                candidate.throughput is not None
                or candidate.memory is None
                or candidate.cost_per_hour is None
            ):
                return candidate
            throughput = ctx.throughput_for(candidate.shape.gpu, candidate.memory)
            if throughput is None:
                return candidate
            return dataclasses.replace(
                candidate,
                throughput=throughput,
                cost_per_million_tokens=cost_per_million_tokens(
                    candidate.cost_per_hour, throughput.tokens_per_second * request.replicas
                ),
            )

        choice = fill(unfilled)
        rest = [f"{len(rows) - 1} other feasible options"] if len(rows) > 1 else []
        message = (
            f"{request.replicas} x {choice.shape.gpus_per_replica} x {choice.shape.gpu} "
            f"(tp {choice.shape.tensor_parallel_size}) on {choice.provider} {choice.offer.instance_type if choice.offer else ''} "
            f"{choice.capacity_type}: ${choice.cost_per_hour:.2f}/h"
            + (f"; {', '.join(rest)}" if rest else "")
        )
        return Plan(
            model=request.model,
            objective=request.objective,
            replicas=request.replicas,
            max_model_len=max_model_len,
            choice=choice,
            reason=None,
            message=message,
            notes=tuple(notes),
            candidate_source=materialize,
            fill_throughput=fill,
            unfilled_choice=unfilled,
        )

    refused = sorted((*candidates, *(r.candidate() for r in shape_refusals)), key=_refused_sort_key)
    alternatives = tuple(refused)
    codes = {c.refusal for c in refused}
    closest = "; ".join(
        f"{c.shape.gpu} x{c.shape.tensor_parallel_size} at {c.provider}: {c.reason}" for c in refused[:3]
    )
    if not refused:
        filters = [
            f"providers {sorted(providers)}" if providers is not None else "",
            f"GPU types {sorted(wanted_gpus)}" if wanted_gpus is not None else "",
            f"regions {list(pool.regions)}" if pool.regions else "",
            f"capacity types {list(capacities)}",
        ]
        return no_choice(
            NO_OFFERS,
            f"no offer matches {', '.join(f for f in filters if f)} among {index.offer_count} offers",
        )
    if BUDGET_EXCEEDED in codes:
        return no_choice(
            BUDGET_EXCEEDED, f"every shape that fits is over a limit; closest: {closest}", alternatives
        )
    if UNAVAILABLE in codes:
        # The model fits somewhere, but every such offer just failed with a capacity error.
        return no_choice(
            NO_OFFERS, f"every offer that fits is marked unavailable; closest: {closest}", alternatives
        )
    return no_choice(
        MODEL_DOES_NOT_FIT,
        f"{request.model} does not fit any allowed offer; closest: {closest}",
        alternatives,
    )
