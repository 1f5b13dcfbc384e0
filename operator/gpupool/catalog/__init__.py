"""The offer catalog: what GPU instances the clouds rent, where, and at what price.

Pure data and loaders; nothing here calls a cloud. Interface the rest of gpupool relies on (stable):

- `Offer`: frozen dataclass with provider, region, zone, instance_type, gpu (normalized name),
  gpu_count, gpu_memory_gib (per GPU), vcpus, memory_gib (host RAM; None if unknown),
  on_demand_price and spot_price (USD/h for the whole instance; None if not sold so), source_gpu,
  cpu_arch, network (the inter-node fabric: "infiniband", "efa", "rdma" or "" for Ethernet),
  exclusion (why the offer is left out of placement by default, else None) and notes.
  `offer.key` is the stable id "provider/region/zone/instance_type/gpu/count";
  `offer.price(capacity_type)` gives the hourly price for "spot" or "on-demand".
- `load_shipped_offers()`: the snapshot shipped as package data (cached; see data/README.md for
  its source, license status and the caveats handled). `load_offers_csv(path)` and
  `parse_offers_csv(text)` read the same columns from elsewhere.
- `normalize_gpu_name(...)`, `gpu_specs()`, `spec_for(gpu)`: canonical GPU names and spec sheets.
- `network_fabric(provider, instance_type)`: the rule table behind `Offer.network`.
- `apply_discounts(offers, {provider: percent})` and `Unavailable` (capacity-error marks with
  expiry, keyed by offer key and capacity type).
- `placeable(offers)`: offers whose price is a whole-instance price (no `exclusion`).
"""

from __future__ import annotations

from collections.abc import Iterable

from gpupool.catalog.adjust import NO_UNAVAILABLE, Unavailable, apply_discounts
from gpupool.catalog.fabric import NETWORK_FABRICS, network_fabric
from gpupool.catalog.gpus import GpuSpec, gpu_specs, normalize_gpu_name, spec_for
from gpupool.catalog.load import (
    GCP_GPU_ONLY,
    PLACEHOLDER_PRICE,
    load_offers_csv,
    load_shipped_offers,
    offer_from_row,
    parse_offers_csv,
)
from gpupool.catalog.offers import CAPACITY_TYPES, CapacityType, Offer, offer_key


def placeable(offers: Iterable[Offer]) -> list[Offer]:
    """The offers whose prices can be trusted as whole-instance prices."""
    return [offer for offer in offers if offer.exclusion is None]


__all__ = [
    "CAPACITY_TYPES",
    "GCP_GPU_ONLY",
    "NETWORK_FABRICS",
    "NO_UNAVAILABLE",
    "PLACEHOLDER_PRICE",
    "CapacityType",
    "GpuSpec",
    "Offer",
    "Unavailable",
    "apply_discounts",
    "gpu_specs",
    "load_offers_csv",
    "load_shipped_offers",
    "network_fabric",
    "normalize_gpu_name",
    "offer_from_row",
    "offer_key",
    "parse_offers_csv",
    "placeable",
    "spec_for",
]
