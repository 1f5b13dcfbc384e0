"""The Offer: one instance type that one cloud rents in one place, with its prices.

Everything that chooses capacity (the planner, the pool's packer, the claim controller's failover,
the simulated cloud) speaks in Offers, so the type is small, frozen and hashable, and its `key` is a
stable string that survives a reload of the catalog: it is what marks an offer unavailable and what
a GpuNodeClaim's spec can be traced back to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

CapacityType = Literal["spot", "on-demand"]
CAPACITY_TYPES: tuple[CapacityType, ...] = get_args(CapacityType)


def offer_key(provider: str, region: str, zone: str, instance_type: str, gpu: str, gpu_count: int) -> str:
    """The key of an offer from its parts, for callers holding them without an Offer (a claim's spec)."""
    return f"{provider}/{region}/{zone}/{instance_type}/{gpu}/{gpu_count}"


@dataclass(frozen=True, slots=True)
class Offer:
    """One rentable instance type in one region (and zone, where the cloud prices per zone).

    Prices are USD per hour for the whole instance, all its GPUs included; None means the cloud does
    not sell that capacity type there. `exclusion` is set when the price cannot be trusted as a
    whole-instance price (GCP's GPU-only rows, placeholder prices): such offers are listed but left
    out of placement unless a caller opts in. `notes` say what the loader changed and why.
    `network` says whether instances can be joined into one multi-node replica.
    """

    provider: str
    region: str
    zone: str
    instance_type: str
    gpu: str
    gpu_count: int
    gpu_memory_gib: float
    vcpus: int | None
    memory_gib: float | None
    on_demand_price: float | None
    spot_price: float | None
    source_gpu: str = ""
    cpu_arch: str = "x86_64"
    disk_gib: float | None = None  # the root disk a node gets (ephemeral storage); None: unknown
    # The inter-node fabric (catalog.fabric): "infiniband", "efa", "rdma" (RoCE), or "" for ordinary
    # Ethernet, on which a replica must stay within one node.
    network: str = ""
    exclusion: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def key(self) -> str:
        """provider/region/zone/instance_type/gpu/count: unique within a catalog, stable across loads."""
        return offer_key(self.provider, self.region, self.zone, self.instance_type, self.gpu, self.gpu_count)

    def price(self, capacity_type: CapacityType) -> float | None:
        """USD per hour for the whole instance at this capacity type, or None if not sold so."""
        if capacity_type == "spot":
            return self.spot_price
        if capacity_type == "on-demand":
            return self.on_demand_price
        raise ValueError(f"unknown capacity type {capacity_type!r}; expected one of {CAPACITY_TYPES}")

    def price_per_gpu(self, capacity_type: CapacityType) -> float | None:
        price = self.price(capacity_type)
        return None if price is None else price / self.gpu_count

    @property
    def fast_network(self) -> bool:
        """Whether the offer's nodes have an RDMA fabric between them (multi-node replicas)."""
        return bool(self.network)

    @property
    def total_gpu_memory_gib(self) -> float:
        return self.gpu_memory_gib * self.gpu_count
