"""Which offers a class of pods can use, and how much of the class each one holds.

A class is pods with the same allowed GPU models and capacity types, the same scheduling
constraints (node selector, affinity, tolerations) and the same CPU, memory and disk per GPU.
An offer is usable for the class when the pool may buy it and the class's pods would be
scheduled on its node (labels and taints, planner/scheduling.py); its worth is its effective
size: its GPUs, or fewer when its allocatable CPU, memory or disk (planner/resources.py) runs
out first. A part of k GPUs of the class needs exactly k times its per-GPU requests, so the 1-D
packing of planner/partition.py stays exact. When nothing can hold a pod, `why_unplaceable`
names what is missing: the GPUs, the node constraint, or the resource.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping, Sequence

from gpupool.catalog.adjust import Unavailable
from gpupool.catalog.gpus import spec_for
from gpupool.catalog.offers import CAPACITY_TYPES, CapacityType, Offer
from gpupool.planner.partition import InstanceKind
from gpupool.planner.request import PoolConstraints
from gpupool.planner.resources import Allocatable, Resources, allocatable, format_bytes, format_cpu
from gpupool.planner.scheduling import PodConstraints, node_labels, node_taints, refusal

OfferTable = dict[tuple[str, int], dict[CapacityType, InstanceKind]]
# CPU, memory and disk per GPU: pods with the same ratio pack like GPUs alone. Pod slots are
# left out: 110 per node never bind before eight GPUs do, and counting them would split pods
# of different GPU counts into classes that cannot share an instance.
# Each as a reduced fraction (numerator, denominator) in integers: exact, and fast to divide by.
Ratio = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
NO_RATIO: Ratio = ((0, 1), (0, 1), (0, 1))
# Allowed GPU models (None: any), capacity types, scheduling constraints, per-GPU requests.
ClassKey = tuple[frozenset[str] | None, tuple[CapacityType, ...], PodConstraints, Ratio]


def ratio_of(requests: Resources, gpus: int) -> Ratio:
    per = max(gpus, 1)

    def reduced(amount: int) -> tuple[int, int]:
        common = math.gcd(amount, per) or 1
        return amount // common, per // common

    return (
        reduced(requests.cpu_milli),
        reduced(requests.memory_bytes),
        reduced(requests.ephemeral_bytes),
    )


def effective_size(room: Allocatable, gpus: int, ratio: Ratio) -> int:
    """How many GPUs' worth of pods with these per-GPU requests fit in `room`."""
    size = gpus
    for have, (numerator, denominator) in zip(
        (room.cpu_milli, room.memory_bytes, room.ephemeral_bytes), ratio, strict=True
    ):
        if have is not None and numerator > 0:
            # floor(have / (numerator / denominator)), in integers
            size = min(size, have * denominator // numerator)
    return max(size, 0)


def node_refusal(
    constraints: PodConstraints, offer: Offer, capacity: CapacityType, limits: PoolConstraints
) -> str | None:
    """Why a pod with these constraints would not be scheduled on this offer's node, or None."""
    labels = _labels(offer, capacity, limits.name, limits.node_labels) if constraints.reads_labels else {}
    return refusal(constraints, labels, node_taints(limits.node_taints))


@functools.lru_cache(maxsize=16384)
def _labels(
    offer: Offer, capacity: CapacityType, pool: str, pool_labels: tuple[tuple[str, str], ...]
) -> Mapping[str, str]:
    # Many classes of pods ask about the same few thousand offers in every batch.
    return node_labels(offer, capacity, pool, dict(pool_labels))


def usable_offers(
    offers: Sequence[Offer], limits: PoolConstraints, unavailable: Unavailable, now: float | None
) -> list[tuple[Offer, CapacityType, float]]:
    """Every (offer, capacity type, price) the pool may buy now, cheapest first (ties by key)."""
    usable = list(_usable(offers, limits, unavailable, now))
    usable.sort(key=lambda item: (item[2], item[0].key))
    return usable


def _usable(
    offers: Sequence[Offer], limits: PoolConstraints, unavailable: Unavailable, now: float | None
) -> Iterator[tuple[Offer, CapacityType, float]]:
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
            yield offer, capacity, price


Usable = Sequence[tuple[Offer, CapacityType, float]]


def by_gpu(usable: Usable) -> dict[str, list[tuple[Offer, CapacityType, float]]]:
    grouped: dict[str, list[tuple[Offer, CapacityType, float]]] = {}
    for item in usable:
        grouped.setdefault(item[0].gpu, []).append(item)
    return grouped


def offer_table(
    usable: Usable,  # cheapest first, as usable_offers returns them
    limits: PoolConstraints,
    constraints: PodConstraints | None = None,
    ratio: Ratio = NO_RATIO,
) -> OfferTable:
    """The cheapest usable offer per (GPU, effective size, capacity type) for one class of pods."""
    table: OfferTable = {}
    per_offer = constraints if constraints is not None and constraints.reads_labels else None
    if (
        constraints is not None
        and per_offer is None
        and refusal(constraints, {}, node_taints(limits.node_taints))
    ):
        return table  # the pool's taints alone keep these pods off every node it could buy
    sized = ratio != NO_RATIO
    for offer, capacity, price in usable:
        if per_offer is not None and node_refusal(per_offer, offer, capacity, limits) is not None:
            continue
        size = effective_size(allocatable(offer), offer.gpu_count, ratio) if sized else offer.gpu_count
        if size <= 0:
            continue
        slot = table.setdefault((offer.gpu, size), {})
        if capacity not in slot:  # `usable` is cheapest first: the first one seen wins
            slot[capacity] = InstanceKind(offer, capacity, price, size)
    return table


def instance_kinds(
    table: OfferTable, gpus: frozenset[str] | None, capacities: tuple[CapacityType, ...]
) -> list[InstanceKind]:
    """The cheapest usable offer for each (GPU, GPU count) a class of pods may use."""
    kinds = []
    for (gpu, _), by_capacity in table.items():
        if gpus is not None and gpu not in gpus:
            continue
        usable = [by_capacity[c] for c in capacities if c in by_capacity]
        if usable:
            kinds.append(min(usable, key=lambda b: (b.price, b.capacity_type, b.offer.key)))
    return sorted(kinds, key=lambda b: (b.size, b.price, b.offer.key))


def why_unplaceable(
    gpus: int,
    requests: Resources,
    constraints: PodConstraints,
    gpu_models: frozenset[str] | None,
    capacities: tuple[CapacityType, ...],
    usable: Usable,
    limits: PoolConstraints,
) -> str:
    """What keeps every usable offer from holding a pod, naming the GPU count, the node
    constraint or the resource that no offer has enough of."""
    what = ", ".join(sorted(gpu_models)) if gpu_models is not None else "any GPU"
    candidates = [
        (offer, capacity)
        for offer, capacity, _price in usable
        if (gpu_models is None or offer.gpu in gpu_models) and capacity in capacities
    ]
    largest = max((offer.gpu_count for offer, _ in candidates), default=0)
    big_enough = [(o, c) for o, c in candidates if o.gpu_count >= gpus]
    if not big_enough:
        return f"no usable offer has {gpus} GPUs of {what}" + (f" (largest: {largest})" if largest else "")
    refusals = [(node_refusal(constraints, o, c, limits), o) for o, c in big_enough]
    admitted = [allocatable(o) for reason, o in refusals if reason is None]
    if not admitted:
        return f"no usable offer with {gpus} GPU(s) of {what} would take it: {refusals[0][0]}"
    head = f"no usable offer with {gpus} GPU(s) of {what} has"
    for resource, need, have, show in (
        ("cpu", requests.cpu_milli, [a.cpu_milli for a in admitted], format_cpu),
        ("memory", requests.memory_bytes, [a.memory_bytes for a in admitted], format_bytes),
        ("ephemeral-storage", requests.ephemeral_bytes, [a.ephemeral_bytes for a in admitted], format_bytes),
    ):
        known = [h for h in have if h is not None]
        if known and len(known) == len(have) and need > max(known):
            return (
                f"{head} the {resource} it requests: {show(need)}, the most allocatable is {show(max(known))}"
            )
    return f"{head} room for all of its requests at once (cpu, memory and ephemeral-storage)"


def room_for(
    requests: Resources,
    constraints: PodConstraints,
    offer: Offer | None,
    capacity: CapacityType | None,
    room: Allocatable,
    limits: PoolConstraints,
) -> bool:
    """Whether a pod may go on a node of `offer` (scheduling constraints) with `room` left on it."""
    if offer is None:
        return True
    if capacity is not None and node_refusal(constraints, offer, capacity, limits) is not None:
        return False
    return room.shortfall(requests) is None
