"""What the operator knows about offers beyond the list price: discounts and recent capacity errors.

Both are kept out of the Offer's identity. A negotiated discount rewrites the prices (the planner
should rank by what the team actually pays); a capacity error marks an offer unavailable for a
while, keyed by offer key and capacity type, because a cloud out of spot H100s may still sell them
on demand. The marks carry their own expiry and time is always passed in, so these stay pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gpupool.catalog.offers import CapacityType, Offer


def apply_discounts(offers: Iterable[Offer], discount_percent: Mapping[str, float]) -> list[Offer]:
    """Offers with each provider's negotiated discount (0..95 %) taken off every price."""
    adjusted: list[Offer] = []
    for offer in offers:
        percent = discount_percent.get(offer.provider, 0.0)
        if not percent:
            adjusted.append(offer)
            continue
        if not 0 <= percent <= 95:
            raise ValueError(f"discount for {offer.provider} must be within 0..95 %, got {percent}")
        factor = 1 - percent / 100

        def scaled(price: float | None, factor: float = factor) -> float | None:
            return None if price is None else round(price * factor, 6)

        adjusted.append(
            dataclasses.replace(
                offer,
                on_demand_price=scaled(offer.on_demand_price),
                spot_price=scaled(offer.spot_price),
                notes=(*offer.notes, f"{percent:g} % negotiated discount applied"),
            )
        )
    return adjusted


@dataclass(frozen=True)
class Unavailable:
    """Offers that recently failed with a capacity error, each until an expiry (epoch seconds).

    Immutable: `mark` returns a new value, so a controller can keep one in memory and replace it,
    and the planner can take it as plain data.
    """

    until: Mapping[tuple[str, CapacityType], float] = field(default_factory=dict)

    def mark(self, offer_key: str, capacity_type: CapacityType, until: float) -> Unavailable:
        merged = dict(self.until)
        merged[(offer_key, capacity_type)] = max(until, merged.get((offer_key, capacity_type), until))
        return Unavailable(merged)

    def is_unavailable(self, offer_key: str, capacity_type: CapacityType, now: float) -> bool:
        expiry = self.until.get((offer_key, capacity_type))
        return expiry is not None and now < expiry

    def expired_removed(self, now: float) -> Unavailable:
        return Unavailable({key: expiry for key, expiry in self.until.items() if now < expiry})


NO_UNAVAILABLE = Unavailable()
