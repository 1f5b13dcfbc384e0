"""Packing a pool's pending GPU pods onto the cheapest set of new instances (Karpenter's model).

Demand comes from pods: each pending pod asks for a number of GPUs of some allowed GPU models. First
the pods go onto capacity that exists or is on its way (best fit, biggest pods first). The rest is a
variable-sized bin-packing problem with costs: choose instances, each with a GPU count and an hourly
price, so every pod fits on one instance and the total price is least.

Pods with the same allowed GPU models and capacity types form a class; within a class any instance
type works for any pod, so only `cover[k]` matters: the cheapest instance with at least k GPUs.

- Exact, when a class has at most EXACT_MAX_PODS pods: a memoized search over partitions, each
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

import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from gpupool.catalog.adjust import NO_UNAVAILABLE, Unavailable
from gpupool.catalog.gpus import spec_for
from gpupool.catalog.offers import CAPACITY_TYPES, CapacityType, Offer
from gpupool.planner.placement import PoolConstraints

EXACT_MAX_PODS = 12
EXACT_TAIL_PODS = 12


@dataclass(frozen=True, slots=True)
class PendingPod:
    """A pod waiting for GPUs. Empty `gpu_types`/`capacity_types` mean whatever the pool allows."""

    name: str
    gpus: int
    gpu_types: tuple[str, ...] = ()
    pool: str = "default"
    capacity_types: tuple[CapacityType, ...] = ()


@dataclass(frozen=True, slots=True)
class Capacity:
    """A node that exists or is being launched, with GPUs not yet taken by pods."""

    name: str
    gpu: str
    free_gpus: int
    pool: str = "default"
    capacity_type: CapacityType | None = None


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

    @property
    def cost_per_hour(self) -> float:
        return sum(instance.price_per_hour for instance in self.new_instances)

    @property
    def gpus(self) -> int:
        return sum(instance.offer.gpu_count for instance in self.new_instances)


@dataclass(frozen=True, slots=True)
class _BinType:
    offer: Offer
    capacity_type: CapacityType
    price: float

    @property
    def size(self) -> int:
        return self.offer.gpu_count


@dataclass
class _Bin:
    kind: _BinType
    pods: list[PendingPod]
    used: int

    @property
    def free(self) -> int:
        return self.kind.size - self.used


_OfferTable = dict[tuple[str, int], dict[CapacityType, _BinType]]


def _offer_table(
    offers: Sequence[Offer], limits: PoolConstraints, unavailable: Unavailable, now: float | None
) -> _OfferTable:
    """The cheapest usable offer per (GPU, GPU count, capacity type), computed once per packing."""
    table: _OfferTable = {}
    providers = set(limits.providers)
    regions = set(limits.regions)
    pool_gpus = set(limits.gpu_types)
    capacities = tuple(limits.capacity_types or CAPACITY_TYPES)
    for offer in offers:
        if offer.exclusion is not None and not limits.include_excluded:
            continue
        if pool_gpus and offer.gpu not in pool_gpus:
            continue
        if providers and offer.provider not in providers:
            continue
        if regions and offer.region not in regions:
            continue
        spec = spec_for(offer.gpu)
        if spec is not None and not spec.vllm_supported:
            continue
        for capacity in capacities:
            price = offer.price(capacity)
            if price is None:
                continue
            if unavailable.until and (
                (offer.key, capacity) in unavailable.until
                if now is None
                else unavailable.is_unavailable(offer.key, capacity, now)
            ):
                continue
            slot = table.setdefault((offer.gpu, offer.gpu_count), {})
            current = slot.get(capacity)
            if current is None or (price, offer.key) < (current.price, current.offer.key):
                slot[capacity] = _BinType(offer, capacity, price)
    return table


def _bin_types(
    table: _OfferTable, gpus: frozenset[str] | None, capacities: tuple[CapacityType, ...]
) -> list[_BinType]:
    """The cheapest usable offer for each (GPU, GPU count) a class of pods may use."""
    kinds = []
    for (gpu, _), by_capacity in table.items():
        if gpus is not None and gpu not in gpus:
            continue
        usable = [by_capacity[c] for c in capacities if c in by_capacity]
        if usable:
            kinds.append(min(usable, key=lambda b: (b.price, b.capacity_type, b.offer.key)))
    return sorted(kinds, key=lambda b: (b.size, b.price, b.offer.key))


def _cover_table(kinds: Sequence[_BinType]) -> list[_BinType | None]:
    """cover[k]: the cheapest instance type with at least k GPUs (index 0 unused)."""
    largest = max((k.size for k in kinds), default=0)
    cover: list[_BinType | None] = [None] * (largest + 1)
    for need in range(1, largest + 1):
        fitting = [k for k in kinds if k.size >= need]
        cover[need] = min(fitting, key=lambda k: (k.price, k.size, k.offer.key)) if fitting else None
    return cover


def _exact_partition(sizes: tuple[int, ...], cover: Sequence[_BinType | None]) -> list[tuple[int, ...]]:
    """An optimal partition of `sizes` (sorted descending) into instances priced by `cover`."""
    largest = len(cover) - 1

    @functools.cache
    def solve(remaining: tuple[int, ...]) -> tuple[float, tuple[tuple[int, ...], ...]]:
        if not remaining:
            return 0.0, ()
        first, rest = remaining[0], remaining[1:]
        best: tuple[float, tuple[tuple[int, ...], ...]] = (math.inf, ())
        seen: set[tuple[int, ...]] = set()

        def extend(start: int, chosen: tuple[int, ...], total: int) -> None:
            nonlocal best
            if chosen in seen:
                return
            seen.add(chosen)
            kind = cover[total]
            if kind is not None:
                left = list(rest)
                for size in chosen[1:]:
                    left.remove(size)
                sub_cost, sub_parts = solve(tuple(left))
                cost = kind.price + sub_cost
                if cost < best[0] - 1e-9:
                    best = (cost, (chosen, *sub_parts))
            previous = None
            for position in range(start, len(rest)):
                size = rest[position]
                if size == previous or total + size > largest:
                    previous = size
                    continue
                previous = size
                extend(position + 1, (*chosen, size), total + size)

        extend(0, (first,), first)
        return best

    return list(solve(sizes)[1])


def _greedy_partition(sizes: Sequence[int], cover: Sequence[_BinType | None]) -> list[tuple[int, ...]]:
    """Cheapest-per-GPU greedy fill (see the module docstring); returns the pods' sizes per instance."""
    counts = Counter(sizes)
    kinds = sorted({id(k): k for k in cover if k is not None}.values(), key=lambda k: (k.size, k.price))
    parts: list[tuple[int, ...]] = []
    while counts:
        best: tuple[float, int, float, str] | None = None
        best_fill: dict[int, int] = {}
        for kind in kinds:
            room = kind.size
            fill: dict[int, int] = {}
            for size in sorted(counts, reverse=True):
                take = min(counts[size], room // size)
                if take:
                    fill[size] = take
                    room -= take * size
            used = kind.size - room
            if not used:
                continue
            rank = (kind.price / used, -used, kind.price, kind.offer.key)
            if best is None or rank < best:
                best, best_fill = rank, fill
        if best is None:
            break
        repeat = min(counts[size] // take for size, take in best_fill.items())
        part = tuple(size for size, take in sorted(best_fill.items(), reverse=True) for _ in range(take))
        parts.extend([part] * repeat)
        for size, take in best_fill.items():
            counts[size] -= take * repeat
            if counts[size] <= 0:
                del counts[size]
    return _refine_tail(parts, cover)


def _part_price(part: tuple[int, ...], cover: Sequence[_BinType | None]) -> float:
    kind = cover[sum(part)]
    return kind.price if kind is not None else math.inf


def _refine_tail(parts: list[tuple[int, ...]], cover: Sequence[_BinType | None]) -> list[tuple[int, ...]]:
    """Re-solve exactly the pods of the least efficient instances, where greedy waste collects.

    Greedy fills the bulk with the best price-per-GPU instance; its mistakes are in the last few,
    partly filled instances. Their pods (up to EXACT_TAIL_PODS) are re-partitioned optimally, and
    the result is kept only if it is cheaper, so this never makes a packing worse.
    """
    ranked = sorted(
        range(len(parts)), key=lambda i: _part_price(parts[i], cover) / sum(parts[i]), reverse=True
    )
    chosen: list[int] = []
    pods = 0
    for position in ranked:
        if pods + len(parts[position]) > EXACT_TAIL_PODS:
            break
        chosen.append(position)
        pods += len(parts[position])
    if len(chosen) < 2:
        return parts
    tail = [parts[i] for i in chosen]
    sizes = tuple(sorted((size for part in tail for size in part), reverse=True))
    better = _exact_partition(sizes, cover)
    before = sum(_part_price(part, cover) for part in tail)
    after = sum(_part_price(part, cover) for part in better)
    if after >= before - 1e-9:
        return parts
    keep = set(chosen)
    return [part for i, part in enumerate(parts) if i not in keep] + better


def _assign(
    pods: Sequence[PendingPod], parts: Sequence[tuple[int, ...]], cover: Sequence[_BinType | None]
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
        bins.append(_Bin(kind, [by_size[size].pop() for size in part], sum(part)))
    return bins


def _fits_existing(
    pod: PendingPod,
    gpu: str,
    capacity: CapacityType | None,
    gpus: frozenset[str] | None,
    capacities: tuple[CapacityType, ...],
) -> bool:
    if gpus is not None and gpu not in gpus:
        return False
    return capacity is None or capacity in capacities


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

    # 1. Existing and in-flight capacity, biggest pods first, best fit.
    free = {c.name: c.free_gpus for c in in_flight if c.pool == limits.name and c.free_gpus > 0}
    existing = sorted((c for c in in_flight if c.name in free), key=lambda c: c.name)
    remaining: list[PendingPod] = []
    for pod in sorted(mine, key=lambda p: (-p.gpus, p.name)):
        if pod.gpus <= 0:
            unplaced[pod.name] = "asks for no GPUs"
            continue
        gpus, capacities = allowed(pod)
        target = None
        if existing:
            fitting = [
                c
                for c in existing
                if free[c.name] >= pod.gpus and _fits_existing(pod, c.gpu, c.capacity_type, gpus, capacities)
            ]
            if fitting:
                target = min(fitting, key=lambda c: (free[c.name] - pod.gpus, c.name))
        if target is not None:
            free[target.name] -= pod.gpus
            on_existing[pod.name] = target.name
            if free[target.name] == 0:
                existing = [c for c in existing if c.name != target.name]
        else:
            remaining.append(pod)

    # 2. New instances, class by class, most restrictive first.
    classes: dict[tuple[frozenset[str] | None, tuple[CapacityType, ...]], list[PendingPod]] = {}
    for pod in remaining:
        classes.setdefault(allowed(pod), []).append(pod)
    table = _offer_table(offers, limits, unavailable, now)
    kinds = {key: _bin_types(table, key[0], key[1]) for key in classes}
    tables = {key: _cover_table(kinds[key]) for key in classes}
    order = sorted(
        classes,
        key=lambda key: (len(kinds[key]), sorted(key[0]) if key[0] is not None else ["~"], key[1]),
    )
    bins: list[_Bin] = []
    bins_with_room: list[_Bin] = []
    exact = True
    for key in order:
        gpus, capacities = key
        cover = tables[key]
        largest = len(cover) - 1
        todo: list[PendingPod] = []
        for pod in sorted(classes[key], key=lambda p: (-p.gpus, p.name)):
            if not capacities:
                unplaced[pod.name] = "none of its capacity types is allowed by the pool"
                continue
            if pod.gpus > largest:
                what = ", ".join(sorted(gpus)) if gpus is not None else "any GPU"
                unplaced[pod.name] = f"no usable offer has {pod.gpus} GPUs of {what}" + (
                    f" (largest: {largest})" if largest else ""
                )
                continue
            # Free GPUs left by earlier classes on instances this pod may use.
            spare = [
                b
                for b in bins_with_room
                if b.free >= pod.gpus
                and _fits_existing(pod, b.kind.offer.gpu, b.kind.capacity_type, gpus, capacities)
            ]
            if spare:
                host = min(spare, key=lambda b: (b.free, b.kind.offer.key))
                host.pods.append(pod)
                host.used += pod.gpus
                if host.free == 0:
                    bins_with_room.remove(host)
                exact = False
                continue
            todo.append(pod)
        if not todo:
            continue
        sizes = tuple(sorted((p.gpus for p in todo), reverse=True))
        if len(sizes) <= EXACT_MAX_PODS:
            parts = _exact_partition(sizes, cover)
        else:
            parts = _greedy_partition(sizes, cover)
            exact = False
        packed = _assign(todo, parts, cover)
        bins.extend(packed)
        bins_with_room.extend(b for b in packed if b.free > 0)

    # 3. Limits: accept instances cheapest per used GPU first.
    accepted: list[_Bin] = []
    nodes, gpus_total, cost = limits.used_nodes, limits.used_gpus, limits.used_cost_per_hour
    for b in sorted(bins, key=lambda b: (b.kind.price / b.used, b.kind.offer.key, b.pods[0].name)):
        breach = None
        if limits.max_nodes is not None and nodes + 1 > limits.max_nodes:
            breach = f"pool limit maxNodes {limits.max_nodes} reached"
        elif limits.max_gpus is not None and gpus_total + b.kind.size > limits.max_gpus:
            breach = f"pool limit maxGpus {limits.max_gpus} reached"
        elif limits.max_hourly_cost is not None and cost + b.kind.price > limits.max_hourly_cost + 1e-9:
            breach = f"pool limit maxHourlyCost ${limits.max_hourly_cost:g}/h reached"
        if breach is not None:
            for pod in b.pods:
                unplaced[pod.name] = breach
            exact = False
            continue
        accepted.append(b)
        nodes, gpus_total, cost = nodes + 1, gpus_total + b.kind.size, cost + b.kind.price

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
    )


def _single_class_cover(offers: Sequence[Offer], limits: PoolConstraints) -> list[_BinType | None]:
    table = _offer_table(offers, limits, NO_UNAVAILABLE, None)
    return _cover_table(_bin_types(table, None, tuple(limits.capacity_types or CAPACITY_TYPES)))


def _total(parts: Sequence[tuple[int, ...]], cover: Sequence[_BinType | None]) -> float:
    total = 0.0
    for part in parts:
        kind = cover[sum(part)]
        assert kind is not None
        total += kind.price
    return total


def optimal_cost(sizes: Sequence[int], offers: Sequence[Offer], limits: PoolConstraints) -> float:
    """The least total price for one class of pods, by exhaustive search (for tests and the bench)."""
    cover = _single_class_cover(offers, limits)
    return _total(_exact_partition(tuple(sorted(sizes, reverse=True)), cover), cover)


def greedy_cost(sizes: Sequence[int], offers: Sequence[Offer], limits: PoolConstraints) -> float:
    """The heuristic's total price for one class of pods (for measuring its gap)."""
    cover = _single_class_cover(offers, limits)
    return _total(_greedy_partition(sorted(sizes, reverse=True), cover), cover)
