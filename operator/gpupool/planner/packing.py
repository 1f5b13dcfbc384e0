"""Packing a pool's pending GPU pods onto the cheapest set of new instances (Karpenter's model).

Demand comes from pods: each pending pod asks for a number of GPUs of some allowed GPU models. First
the pods go onto capacity that exists or is on its way (best fit, biggest pods first). The rest is a
variable-sized bin-packing problem with costs: choose instances, each with a GPU count and an hourly
price, so every pod fits on one instance and the total price is least.

Pods with the same allowed GPU models and capacity types, the same scheduling constraints (node
selector, affinity, tolerations) and the same CPU, memory and disk per GPU form a class. Within a
class an instance type's worth is its effective size: the GPUs it has, or fewer when its allocatable
CPU, memory or disk would run out first (a part of k GPUs of the class needs k times its per-GPU
requests, exactly). So only `cover[k]` matters: the cheapest instance type that holds k GPUs' worth.
Instance types whose nodes the class's pods would not be scheduled on (labels, taints) are left out.

- Exact, when a class has at most EXACT_MAX_PODS pods (planner/partition.py): a memoized search over partitions, each
  part containing the largest remaining pod and costing cover[its GPU sum]. Optimal per class.
- Heuristic otherwise ("cheapest per GPU, greedy"): repeatedly take the instance type whose greedy
  largest-first fill from the remaining pods has the lowest price per GPU used, open as many copies
  of that fill as the counts allow at once, and finally downsize every instance to cover[GPUs used].
  Its measured gap to the optimum is in docs/planner.md (bench/planner/run.py measures it again).

Classes are packed most restrictive first, and a later class first fills the free GPUs that earlier
classes left on instances it may use. Limits (maxNodes, maxGpus, maxHourlyCost, minus what the pool
already uses) are applied last: instances are accepted cheapest per used GPU first, and the pods of
an instance that would break a limit are reported unplaced with the limit named.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gpupool.api.deployment import DEFAULT_POOL
from gpupool.catalog.adjust import NO_UNAVAILABLE, Unavailable
from gpupool.catalog.offers import CAPACITY_TYPES, CapacityType, Offer
from gpupool.planner.offer_fit import (
    ClassKey,
    OfferTable,
    Ratio,
    by_gpu,
    instance_kinds,
    offer_table,
    ratio_of,
    room_for,
    usable_offers,
    why_unplaceable,
)
from gpupool.planner.partition import (
    InstanceKind,
    cover_table,
    exact_partition,
    greedy_partition,
    partition_price,
)
from gpupool.planner.request import PoolConstraints
from gpupool.planner.resources import NOTHING, ONE_POD, UNKNOWN, Allocatable, Resources, allocatable
from gpupool.planner.scheduling import ANY_NODE, PodConstraints

EXACT_MAX_PODS = 12


@dataclass(frozen=True, slots=True)
class PendingPod:
    """A pod waiting for GPUs. Empty `gpu_types`/`capacity_types` mean whatever the pool allows."""

    name: str
    gpus: int
    gpu_types: tuple[str, ...] = ()
    pool: str = DEFAULT_POOL
    capacity_types: tuple[CapacityType, ...] = ()
    requests: Resources = ONE_POD
    constraints: PodConstraints = ANY_NODE


@dataclass(frozen=True, slots=True)
class Capacity:
    """A node that exists or is being launched, with GPUs not yet taken by pods.

    With `offer`, the pods on it (`used`) and the pool's labels and taints are checked too;
    without, only its GPUs are.
    """

    name: str
    gpu: str
    free_gpus: int
    pool: str = DEFAULT_POOL
    capacity_type: CapacityType | None = None
    offer: Offer | None = None
    used: Resources = NOTHING


# A bucket of existing capacity: GPU model, capacity type, offer, free GPUs, room left.
_Shape = tuple[str, CapacityType | None, Offer | None, int, Allocatable]


@dataclass(frozen=True, slots=True)
class NewInstance:
    """An instance to create: the offer, how it is bought, and the pods it is for."""

    offer: Offer
    capacity_type: CapacityType
    price_per_hour: float
    pods: tuple[str, ...]
    gpus_used: int


@dataclass(frozen=True)
class PackResult:
    new_instances: tuple[NewInstance, ...]
    on_existing: dict[str, str] = field(default_factory=dict)
    unplaced: dict[str, str] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    exact: bool = True
    # Of `unplaced`, the pods an offer could hold but the pool's limits do not allow buying for.
    over_limit: frozenset[str] = frozenset()

    @property
    def cost_per_hour(self) -> float:
        return sum(instance.price_per_hour for instance in self.new_instances)

    @property
    def gpus(self) -> int:
        return sum(instance.offer.gpu_count for instance in self.new_instances)


@dataclass
class _Bin:
    kind: InstanceKind
    pods: list[PendingPod]
    used: int
    requests: Resources = NOTHING

    @property
    def free(self) -> int:
        return self.kind.size - self.used


def _assign(
    pods: Sequence[PendingPod], parts: Sequence[tuple[int, ...]], cover: Sequence[InstanceKind | None]
) -> list[_Bin]:
    """Turn size partitions back into instances holding concrete pods (downsized to cover)."""
    by_size: dict[int, list[PendingPod]] = {}
    for pod in sorted(pods, key=lambda p: p.name, reverse=True):
        by_size.setdefault(pod.gpus, []).append(pod)
    bins = []
    for part in parts:
        kind = cover[sum(part)]
        assert kind is not None
        # Lists are in reverse name order, so pop() hands out pods by name in O(1).
        held = [by_size[size].pop() for size in part]
        bins.append(_Bin(kind, held, sum(part), sum((p.requests for p in held), Resources())))
    return bins


def _may_host(
    pod: PendingPod,
    allowed: tuple[frozenset[str] | None, tuple[CapacityType, ...]],
    gpu: str,
    capacity: CapacityType | None,
    offer: Offer | None,
    room: Allocatable,
    limits: PoolConstraints,
) -> bool:
    """Whether `pod` (its allowed GPU models and capacity types given) may go on a node that
    exists or is on its way, with `room` left on it."""
    gpus, capacities = allowed
    if gpus is not None and gpu not in gpus:
        return False
    if capacity is not None and capacity not in capacities:
        return False
    return room_for(pod.requests, pod.constraints, offer, capacity, room, limits)


def pack_pods(
    pending: Sequence[PendingPod],
    in_flight: Sequence[Capacity],
    offers: Sequence[Offer],
    limits: PoolConstraints,
    *,
    unavailable: Unavailable = NO_UNAVAILABLE,
    now: float | None = None,
) -> PackResult:
    """The new instances of least total hourly price that fit `pending` within `limits`.

    Only pods and capacity of pool `limits.name` are considered; other pods are returned in
    `ignored`. Deterministic: the same inputs give the same instances in the same order.
    """
    mine = [p for p in pending if p.pool == limits.name]
    ignored = tuple(sorted(p.name for p in pending if p.pool != limits.name))
    on_existing: dict[str, str] = {}
    unplaced: dict[str, str] = {}
    pool_gpus = frozenset(limits.gpu_types) if limits.gpu_types else None
    pool_capacities = tuple(limits.capacity_types or CAPACITY_TYPES)

    def allowed(pod: PendingPod) -> tuple[frozenset[str] | None, tuple[CapacityType, ...]]:
        gpus = frozenset(pod.gpu_types) if pod.gpu_types else None
        if pool_gpus is not None:
            gpus = gpus & pool_gpus if gpus is not None else pool_gpus
        capacities = tuple(c for c in pool_capacities if not pod.capacity_types or c in pod.capacity_types)
        return gpus, capacities

    # 1. Existing and in-flight capacity, biggest pods first, best fit. Claims of the same
    # shape and fill (a burst's hundreds of identical nodes) share a bucket, so each pod looks
    # at a few buckets, not at every claim; within a bucket the first name wins, as before.
    buckets: dict[_Shape, list[str]] = {}
    for c in in_flight:
        if c.pool == limits.name and c.free_gpus > 0:
            room = allocatable(c.offer).minus(c.used) if c.offer is not None else UNKNOWN
            buckets.setdefault((c.gpu, c.capacity_type, c.offer, c.free_gpus, room), []).append(c.name)
    for names in buckets.values():
        heapq.heapify(names)
    remaining: list[PendingPod] = []
    for pod in sorted(mine, key=lambda p: (-p.gpus, p.name)):
        if pod.gpus <= 0:
            unplaced[pod.name] = "asks for no GPUs"
            continue
        may = allowed(pod)
        best: _Shape | None = None
        for shape, names in buckets.items():
            gpu, capacity, offer, free, room = shape
            if (
                free >= pod.gpus
                and _may_host(pod, may, gpu, capacity, offer, room, limits)
                and (best is None or (free - pod.gpus, names[0]) < (best[3] - pod.gpus, buckets[best][0]))
            ):
                best = shape
        if best is None:
            remaining.append(pod)
            continue
        names = buckets[best]
        target = heapq.heappop(names)
        if not names:
            del buckets[best]
        on_existing[pod.name] = target
        gpu, capacity, offer, free, room = best
        if free > pod.gpus:
            after = (gpu, capacity, offer, free - pod.gpus, room.minus(pod.requests))
            heapq.heappush(buckets.setdefault(after, []), target)

    # 2. New instances, class by class, most restrictive first.
    classes: dict[ClassKey, list[PendingPod]] = {}
    for pod in remaining:
        classes.setdefault((*allowed(pod), pod.constraints, ratio_of(pod.requests, pod.gpus)), []).append(pod)
    usable = usable_offers(offers, limits, unavailable, now)
    grouped = by_gpu(usable)
    shared: dict[tuple[PodConstraints, Ratio], OfferTable] = {}
    kinds = {}
    for key in classes:
        gpu_models, constraints, ratio = key[0], key[2], key[3]
        if not constraints.reads_labels:
            # No label to check per offer: one table serves every class with these constraints.
            if (constraints, ratio) not in shared:
                shared[(constraints, ratio)] = offer_table(usable, limits, constraints, ratio)
            table = shared[(constraints, ratio)]
        else:
            # Only the class's GPU models: with many classes, most offers concern none of them.
            candidates = (
                usable if gpu_models is None else [u for g in sorted(gpu_models) for u in grouped.get(g, ())]
            )
            table = offer_table(candidates, limits, constraints, ratio)
        kinds[key] = instance_kinds(table, gpu_models, key[1])
    reasons: dict[tuple[Any, ...], str] = {}
    tables = {key: cover_table(kinds[key]) for key in classes}
    order = sorted(
        classes,
        key=lambda key: (
            len(kinds[key]),
            sorted(key[0]) if key[0] is not None else ["~"],
            key[1],
            str(key[2:]),
        ),
    )
    bins: list[_Bin] = []
    bins_with_room: list[_Bin] = []
    exact = True
    for key in order:
        gpus, capacities = key[0], key[1]
        cover = tables[key]
        largest = len(cover) - 1
        todo: list[PendingPod] = []
        for pod in sorted(classes[key], key=lambda p: (-p.gpus, p.name)):
            if not capacities:
                unplaced[pod.name] = "none of its capacity types is allowed by the pool"
                continue
            if pod.gpus > largest or cover[pod.gpus] is None:
                why = (pod.gpus, pod.requests, pod.constraints, gpus, capacities)
                if why not in reasons:
                    reasons[why] = why_unplaceable(*why, usable, limits)
                unplaced[pod.name] = reasons[why]
                continue
            # Free GPUs left by earlier classes on instances this pod may use.
            spare = [
                b
                for b in bins_with_room
                if b.free >= pod.gpus
                and _may_host(
                    pod,
                    (gpus, capacities),
                    b.kind.offer.gpu,
                    b.kind.capacity_type,
                    b.kind.offer,
                    allocatable(b.kind.offer).minus(b.requests),
                    limits,
                )
            ]
            if spare:
                host = min(spare, key=lambda b: (b.free, b.kind.offer.key))
                host.pods.append(pod)
                host.used += pod.gpus
                host.requests = host.requests + pod.requests
                if host.free == 0:
                    bins_with_room.remove(host)
                exact = False
                continue
            todo.append(pod)
        if not todo:
            continue
        sizes = tuple(sorted((p.gpus for p in todo), reverse=True))
        if len(sizes) <= EXACT_MAX_PODS:
            parts = exact_partition(sizes, cover)
        else:
            parts = greedy_partition(sizes, cover)
            exact = False
        packed = _assign(todo, parts, cover)
        bins.extend(packed)
        bins_with_room.extend(b for b in packed if b.free > 0)

    over_limit: set[str] = set()
    # 3. Limits: accept instances cheapest per used GPU first.
    accepted: list[_Bin] = []
    nodes, gpus_total, cost = limits.used_nodes, limits.used_gpus, limits.used_cost_per_hour
    for b in sorted(bins, key=lambda b: (b.kind.price / b.used, b.kind.offer.key, b.pods[0].name)):
        breach = None
        if limits.max_nodes is not None and nodes + 1 > limits.max_nodes:
            breach = f"pool limit maxNodes {limits.max_nodes} reached"
        elif limits.max_gpus is not None and gpus_total + b.kind.offer.gpu_count > limits.max_gpus:
            breach = f"pool limit maxGpus {limits.max_gpus} reached"
        elif limits.max_hourly_cost is not None and cost + b.kind.price > limits.max_hourly_cost + 1e-9:
            breach = f"pool limit maxHourlyCost ${limits.max_hourly_cost:g}/h reached"
        if breach is not None:
            for pod in b.pods:
                unplaced[pod.name] = breach
                over_limit.add(pod.name)
            exact = False
            continue
        accepted.append(b)
        nodes, gpus_total, cost = nodes + 1, gpus_total + b.kind.offer.gpu_count, cost + b.kind.price

    instances = tuple(
        NewInstance(
            offer=b.kind.offer,
            capacity_type=b.kind.capacity_type,
            price_per_hour=b.kind.price,
            pods=tuple(sorted(p.name for p in b.pods)),
            gpus_used=b.used,
        )
        for b in sorted(accepted, key=lambda b: (b.kind.offer.key, min(p.name for p in b.pods)))
    )
    return PackResult(
        new_instances=instances,
        on_existing=on_existing,
        unplaced=dict(sorted(unplaced.items())),
        ignored=ignored,
        exact=exact,
        over_limit=frozenset(over_limit),
    )


def _single_class_cover(offers: Sequence[Offer], limits: PoolConstraints) -> list[InstanceKind | None]:
    table = offer_table(usable_offers(offers, limits, NO_UNAVAILABLE, None), limits)
    return cover_table(instance_kinds(table, None, tuple(limits.capacity_types or CAPACITY_TYPES)))


def optimal_cost(sizes: Sequence[int], offers: Sequence[Offer], limits: PoolConstraints) -> float:
    """The least total price for one class of pods, by exhaustive search (for tests and the bench)."""
    cover = _single_class_cover(offers, limits)
    return partition_price(exact_partition(tuple(sorted(sizes, reverse=True)), cover), cover)


def greedy_cost(sizes: Sequence[int], offers: Sequence[Offer], limits: PoolConstraints) -> float:
    """The heuristic's total price for one class of pods (for measuring its gap)."""
    cover = _single_class_cover(offers, limits)
    return partition_price(greedy_partition(sorted(sizes, reverse=True), cover), cover)
