"""What the operator keeps in memory between handler calls, and nothing it cannot rebuild.

Everything durable lives in the cluster (claims, statuses) or in the clouds (instances): a
restart loses only this, and this is rebuilt from them. The provider clients and their last
offer lists are here because listing every cloud on every reconcile would hit rate limits;
the capacity-error marks are here because they are meant to expire in minutes anyway.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gpupool.catalog import CapacityType, Offer, Unavailable
from gpupool.controllers.kube import Kube
from gpupool.providers.base import CloudProvider

if TYPE_CHECKING:
    from gpupool.controllers.modeldeployment.reconcile import Applied

# Karpenter keeps an offering it could not launch out of consideration for 3 minutes.
UNAVAILABLE_SECONDS = 180.0


@dataclass
class ProviderHandle:
    """One GpuProvider as the operator uses it: a live client and the offers it listed last."""

    name: str
    type: str
    client: CloudProvider
    spec_fingerprint: str
    user_data_template: str = ""
    offers: list[Offer] = field(default_factory=list)
    sold_out: frozenset[str] = frozenset()  # offer keys the cloud itself reports without capacity
    refreshed_at: float = 0.0
    healthy: bool = False


@dataclass
class OperatorState:
    """Shared by every handler through kopf's `memo`."""

    kube: Kube
    cluster_name: str
    providers: dict[str, ProviderHandle] = field(default_factory=dict)
    unavailable: Unavailable = field(default_factory=Unavailable)
    # pool name -> (first, last) time a pending pod of that pool was seen, for batching
    pending_window: dict[str, tuple[float, float]] = field(default_factory=dict)
    # node name -> since when it has had no GPU pod, for consolidation
    empty_since: dict[str, float] = field(default_factory=dict)
    # claim uid -> when its instance was last looked up (monotonic), to pace cloud calls
    instance_checked: dict[str, float] = field(default_factory=dict)
    # ModelDeployment uid -> its current plan and what was last applied for it
    applied: dict[str, Applied] = field(default_factory=dict)

    def offers(self, provider_names: Sequence[str] = ()) -> list[Offer]:
        """Current offers of the named providers (all when empty), without the sold-out ones."""
        chosen: Iterable[ProviderHandle] = (
            self.providers.values()
            if not provider_names
            else (self.providers[n] for n in provider_names if n in self.providers)
        )
        result: list[Offer] = []
        for handle in chosen:
            result.extend(o for o in handle.offers if o.key not in handle.sold_out)
        return result

    def mark_unavailable(self, offer_key: str, capacity_type: CapacityType, now: float | None = None) -> None:
        moment = time.time() if now is None else now
        self.unavailable = self.unavailable.expired_removed(moment).mark(
            offer_key, capacity_type, moment + UNAVAILABLE_SECONDS
        )
