"""Choosing where a ModelDeployment runs: the cheapest feasible (GPU, tensor-parallel size, offer).

The search is exhaustive but cheap: it walks the offer groups of `offer_index` (a few hundred,
not thousands of offers), judges each (GPU memory, GPUs per instance) shape once, and takes the
first offer of a group in price order that passes the region and availability filters.

Every group the pool may use gets a row in the alternatives (`candidates.Plan`), feasible or
not, with the reason it lost or was refused, so a person can see why the planner did not pick
the offer they expected.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gpupool.catalog.adjust import NO_UNAVAILABLE, Unavailable
from gpupool.catalog.offers import CAPACITY_TYPES, CapacityType, Offer
from gpupool.planner.candidates import Candidate, Plan, Shape, refused_sort_key, sort_key
from gpupool.planner.memory import MemoryEstimate, quantization_refusal
from gpupool.planner.offer_index import OfferGroup, OfferIndex, cached_index, shapes_of
from gpupool.planner.request import (
    BUDGET_EXCEEDED,
    MODEL_DOES_NOT_FIT,
    NO_OFFERS,
    UNAVAILABLE,
    DeploymentRequest,
    PoolConstraints,
)
from gpupool.planner.shape_fit import ShapeJudge, ShapeVerdict
from gpupool.planner.throughput import ThroughputEstimate, cost_per_million_tokens

THROUGHPUT_NOTE = (
    "throughput and cost per token are roofline ESTIMATES from GPU memory bandwidth and compute "
    "(gpus.csv), not measurements"
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


def _evaluate_group(
    request: DeploymentRequest,
    group: OfferGroup,
    capacity: CapacityType,
    pool: PoolConstraints,
    unavailable: Unavailable,
    now: float | None,
    verdict: ShapeVerdict,
) -> Candidate | _Row | _ShapeRefusal | None:
    """The best way to use one offer group at one capacity type, or None if the pool may not use it.

    Refusals come back as Candidates; feasible outcomes as a `_Row`, a plain tuple that becomes a
    Candidate only if it is chosen or shown, since most of a few hundred rows never are.
    """
    offers = group.by_capacity.get(capacity)
    if not offers:
        return None
    regions = pool.regions
    usable: Offer | None = None
    blocked: Offer | None = None
    slow: Offer | None = None
    for offer in offers:
        if regions and offer.region not in regions:
            continue
        if verdict.multi_node and not offer.fast_network:
            # Pipeline stages exchange activations every step: only InfiniBand/EFA/RDMA will do.
            slow = slow or offer
            continue
        if unavailable.until and _is_unavailable(unavailable, offer, capacity, now):
            blocked = blocked or offer
            continue
        usable = offer
        break
    shown = usable or blocked
    if shown is None:
        if slow is None:
            return None
        price = slow.price(capacity)
        assert price is not None
        tp, memory, _ = verdict.fitting[0]
        nodes = memory.pipeline_parallel_size
        row: _Row = (nodes * price, None, tp, memory, None, nodes, group, capacity, slow, price)
        return _candidate_from_row(
            row,
            MODEL_DOES_NOT_FIT,
            f"needs {nodes} nodes of {group.gpu_count} x {group.gpu} joined by InfiniBand/EFA; "
            f"{slow.instance_type or slow.provider} has no such network",
        )
    price = shown.price(capacity)
    assert price is not None

    if verdict.refusal is not None:
        return _ShapeRefusal(group, capacity, shown, price, verdict)

    # Price is a constant factor within a group, so _judge_shape already ranked the tp options.
    refusal: str | None = None
    reason: str | None = None
    first: tuple[int, MemoryEstimate, ThroughputEstimate | None, int, float, str | None] | None = None
    for tp, memory, throughput in verdict.fitting:
        if memory.pipeline_parallel_size > 1:
            instances = request.replicas * memory.pipeline_parallel_size
        else:
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
    row = (cost, per_token, tp, memory, throughput, instances, group, capacity, shown, price)
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
    verdict: ShapeVerdict

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
    pp = memory.pipeline_parallel_size
    return Candidate(
        shape=Shape(group.gpu, group.gpu_memory_gib, tp * pp, tp, pp),
        offer=offer,
        capacity_type=capacity,
        price_per_hour=price,
        instances=instances,
        replicas_per_instance=group.gpu_count // tp if pp == 1 else 1,
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
    index = offers if isinstance(offers, OfferIndex) else cached_index(offers)
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
    mismatch = quantization_refusal(arch, request.quantization)
    if mismatch is not None:
        return no_choice(MODEL_DOES_NOT_FIT, mismatch)
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

    judge = ShapeJudge(request)
    candidates: list[Candidate] = []
    rows: list[_Row] = []
    shape_refusals: list[_ShapeRefusal] = []
    by_shape = index.by_shape if not pool.include_excluded else shapes_of(tuple(groups))
    for shape_key, members in by_shape:
        if wanted_gpus is not None and shape_key[0] not in wanted_gpus:
            continue
        verdict = judge.judge(*shape_key, across_nodes=any(g.fast_network for g in members))
        for capacity in capacities:
            for group in members:
                if providers is not None and group.provider not in providers:
                    continue
                outcome = _evaluate_group(request, group, capacity, pool, unavailable, now, verdict)
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
        unfilled, chosen_row = min(tied_candidates, key=lambda pair: sort_key(request.objective, pair[0]))

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
            throughput = judge.throughput_for(candidate.shape.gpu, candidate.memory)
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
            f"(tp {choice.shape.tensor_parallel_size}"
            + (
                f" x pp {choice.shape.pipeline_parallel_size} over {choice.shape.nodes_per_replica} nodes"
                if choice.shape.pipeline_parallel_size > 1
                else ""
            )
            + f") on {choice.provider} {choice.offer.instance_type if choice.offer else ''} "
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

    refused = sorted((*candidates, *(r.candidate() for r in shape_refusals)), key=refused_sort_key)
    alternatives = tuple(refused)
    codes = {c.refusal for c in refused}
    # The three closest, each said once (several providers often refuse one shape alike).
    lines = (f"{c.shape.gpu} x{c.shape.tensor_parallel_size} at {c.provider}: {c.reason}" for c in refused)
    closest = "; ".join(list(dict.fromkeys(itertools.islice(lines, 12)))[:3])
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
