"""What the operator shares between controllers in memory, and nothing it cannot rebuild.

Everything durable lives in the cluster (claims, statuses with the kept plans) or in the
clouds (instances): a restart loses only this, and this is rebuilt from them. The provider
clients, their last offer lists and their last instance listings are here because every
controller reads them and listing a cloud per reader would break its rate limits; the
capacity-error marks because they are meant to expire in minutes anyway. State that one
controller owns (a pool's batch window, a claim's status writer) lives in that controller's
daemon and goes with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gpupool.catalog import CapacityType, Offer, Unavailable
from gpupool.controllers.kube import Kube
from gpupool.controllers.loop import Wakeups
from gpupool.modelhub import ModelHub
from gpupool.providers.base import CloudProvider, Instance
from gpupool.settings import OperatorSettings

# Karpenter keeps an offering it could not launch out of consideration for 3 minutes.
UNAVAILABLE_SECONDS = 180.0


@dataclass
class ProviderHandle:
    """One GpuProvider as the operator uses it: a live client, its offers and instances."""

    name: str
    type: str
    client: CloudProvider
    spec_fingerprint: str
    user_data_template: str = ""
    offers: list[Offer] = field(default_factory=list)
    sold_out: frozenset[str] = frozenset()  # offer keys the cloud itself reports without capacity
    refreshed_at: float = 0.0
    healthy: bool = False
    # The last `list()` of this cluster's instances (id -> instance) and when it was asked
    # (epoch seconds, taken BEFORE the call: an instance launched after that moment may be
    # missing from it without having vanished).
    instances: dict[str, Instance] | None = None
    listed_at: float = 0.0
    # A GpuProvider being deleted is never bought from again.
    deleting: bool = False


@dataclass
class OperatorState:
    """Shared by every handler through kopf's `memo`."""

    kube: Kube
    settings: OperatorSettings
    wakeups: Wakeups = field(default_factory=Wakeups)
    providers: dict[str, ProviderHandle] = field(default_factory=dict)
    # GpuProviders whose first refresh since this process started has been attempted. Until
    # then a pool or claim that uses one keeps its status as it is: "not ready" would only be
    # this process's own start showing, and would be written and unwritten a second later.
    providers_seen: set[str] = field(default_factory=set)
    unavailable: Unavailable = field(default_factory=Unavailable)
    # pool -> (namespace, ModelDeployment) -> why its pending pods fit no offer the pool may
    # buy. Written by the pool's loop after each batch (and dropped with it), read by the
    # ModelDeployment's, which says so in its own conditions.
    unplaced_models: dict[str, dict[tuple[str, str], str]] = field(default_factory=dict)
    # Resolves models on the Hugging Face Hub (None: GPUPOOL_HF_ENDPOINT=off, table only).
    hub: ModelHub | None = None

    @classmethod
    def create(cls, settings: OperatorSettings) -> OperatorState:
        """The state of a starting operator: its clients, and the Hub resolver unless it is off."""
        hub = None if settings.hf_endpoint == "off" else ModelHub.from_settings(settings)
        return cls(kube=Kube(), settings=settings, hub=hub)

    @property
    def cluster_name(self) -> str:
        return self.settings.cluster_name

    def offers(self, provider_names: Sequence[str] = ()) -> list[Offer]:
        """Current offers of the named providers (all when empty), without the sold-out ones and
        without providers being deleted."""
        chosen: Iterable[ProviderHandle] = (
            self.providers.values()
            if not provider_names
            else (self.providers[n] for n in provider_names if n in self.providers)
        )
        result: list[Offer] = []
        for handle in chosen:
            if handle.deleting:
                continue
            if handle.sold_out:
                result.extend(o for o in handle.offers if o.key not in handle.sold_out)
            else:
                result.extend(handle.offers)
        return result

    def mark_unavailable(self, offer_key: str, capacity_type: CapacityType, now: float | None = None) -> None:
        moment = time.time() if now is None else now
        self.unavailable = self.unavailable.expired_removed(moment).mark(
            offer_key, capacity_type, moment + UNAVAILABLE_SECONDS
        )
