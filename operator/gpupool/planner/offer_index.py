"""Offers indexed for planning: grouped by what sizing depends on, sorted by price.

Whether a model fits depends only on (GPU memory, tensor-parallel size), and within a group of
offers with one provider, GPU, GPU count and GPU memory the number of instances needed is the same
for every offer, so the placement search looks at a few hundred groups, not thousands of offers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gpupool.catalog.offers import CAPACITY_TYPES, CapacityType, Offer


@dataclass(frozen=True, slots=True)
class OfferGroup:
    """Offers that are interchangeable for sizing: same provider, GPU, GPU count and GPU memory."""

    provider: str
    gpu: str
    gpu_count: int
    gpu_memory_gib: float
    by_capacity: dict[CapacityType, tuple[Offer, ...]]
    # Some offer has an InfiniBand/EFA/RDMA fabric: a replica may span several of its nodes.
    fast_network: bool = False


@dataclass(frozen=True)
class OfferIndex:
    """Offers grouped and price-sorted for planning; build once per catalog with `index_offers`."""

    groups: tuple[OfferGroup, ...]
    by_shape: tuple[tuple[tuple[str, float, int], tuple[OfferGroup, ...]], ...]
    excluded_groups: tuple[OfferGroup, ...]
    excluded_counts: dict[str, int] = field(default_factory=dict)
    offer_count: int = 0
    # Keeps every indexed Offer alive, so `cached_index` can key on their ids.
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
        fast = any(offer.fast_network for offer in members)
        groups.append(OfferGroup(provider, gpu, count, memory, by_capacity, fast))
    return tuple(groups)


_INDEX_CACHE: dict[tuple[int, ...], OfferIndex] = {}
INDEX_CACHE_SIZE = 8


def cached_index(offers: Sequence[Offer]) -> OfferIndex:
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


def shapes_of(
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
        by_shape=shapes_of(groups),
        excluded_groups=_group(excluded),
        excluded_counts=dict(Counter(f"{o.provider}: {o.exclusion}" for o in excluded)),
        offer_count=len(offers),
        offers=tuple(offers),
    )
