"""The offers both provisioners get in the side-by-side runs: 11 AWS GPU instance types, on-demand.

The cheapest eleven x86 NVIDIA instance types of AWS us-east-1 (zone use1-az1) from the shipped
price snapshot, so gpupool (through simcloud, selling exactly these) and Karpenter's KWOK
provider (through its instance-types file) choose among the same machines at the same prices.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from gpupool.catalog import Offer, load_shipped_offers

REGION, ZONE, COUNT = "us-east-1", "use1-az1", 11
# Karpenter's KWOK provider knows only its own zone names; these stand for use1-az1.
KWOK_ZONE = "test-zone-a"


def bench_offers() -> list[Offer]:
    """The eleven offers, cheapest first."""
    chosen = [
        o
        for o in load_shipped_offers()
        if o.provider == "aws"
        and o.region == REGION
        and o.zone == ZONE
        and o.on_demand_price
        and o.exclusion is None
        and o.cpu_arch == "x86_64"
        and not o.gpu.startswith("Radeon")
        and o.vcpus
        and o.memory_gib
    ]
    chosen.sort(key=lambda o: (o.on_demand_price or 0.0, o.instance_type))
    unique: dict[str, Offer] = {}
    for offer in chosen:
        unique.setdefault(offer.instance_type, offer)
    return list(unique.values())[:COUNT]


def write_offers_csv(path: Path) -> Path:
    """The offers in the catalog's CSV columns, for `simcloud --offers-csv`."""
    columns = ["provider", "region", "zone", "instance_type", "gpu", "gpu_count", "gpu_memory_gib",
               "vcpus", "memory_gib", "price_hour", "spot_price_hour"]  # fmt: skip
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(columns)
        for o in bench_offers():
            writer.writerow([o.provider, o.region, o.zone, o.instance_type, o.source_gpu or o.gpu, o.gpu_count,
                             o.gpu_memory_gib, o.vcpus, o.memory_gib, o.on_demand_price, ""])  # fmt: skip
    return path


def karpenter_instance_types() -> list[dict[str, Any]]:
    """The offers in the JSON shape of Karpenter's KWOK provider (INSTANCE_TYPES_FILE_PATH)."""
    types = []
    for o in bench_offers():
        types.append(
            {
                "name": o.instance_type,
                "offerings": [
                    {
                        "Price": o.on_demand_price,
                        "Available": True,
                        "Requirements": [
                            {"key": "karpenter.sh/capacity-type", "operator": "In", "values": ["on-demand"]},
                            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": [KWOK_ZONE]},
                        ],
                    }
                ],
                "architecture": "amd64",
                "operatingSystems": ["linux"],
                "resources": {
                    "cpu": str(o.vcpus),
                    "memory": f"{int(o.memory_gib or 0)}Gi",
                    "pods": "110",
                    "nvidia.com/gpu": str(o.gpu_count),
                },
            }
        )
    return types


def write_karpenter_instance_types(path: Path) -> Path:
    path.write_text(json.dumps(karpenter_instance_types(), indent=1))
    return path


if __name__ == "__main__":
    for offer in bench_offers():
        print(f"{offer.instance_type:16} {offer.gpu_count} x {offer.gpu:6} {offer.vcpus:4} vCPU "
              f"{offer.memory_gib:6.0f} GiB  ${offer.on_demand_price:.4f}/h")  # fmt: skip
