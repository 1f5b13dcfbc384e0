"""Reading offer CSVs into Offers, fixing the source's known faults in the open.

The shipped snapshot comes from SkyPilot's public catalog, which has documented quirks (GCP prices
only the GPUs, RunPod's RAM column holds GPU memory, Azure lists 12 H100s on an 8-GPU VM, ...).
Each quirk is handled here, once, and each handled row carries a note saying what was done, so a
price or a memory figure that looks odd in `gpupool offers` can always be explained. Parsing is
separated from file reading so the simulated cloud can feed CSV text it received over the wire.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path

from gpupool.catalog.fabric import network_fabric
from gpupool.catalog.gpus import normalize_gpu_name, spec_for
from gpupool.catalog.offers import Offer

GCP_GPU_ONLY = "gpu-only price (GCP rows omit the host VM)"
PLACEHOLDER_PRICE = "placeholder price (mithril's 1.0/8.0 are not real prices)"

# Cloud-specific instance types whose host CPU is not x86: the node needs arm64 images.
_ARM_INSTANCE_PREFIXES = ("g5g.",)
_ARM_GPUS = frozenset({"GH200", "GB200"})

_AZURE_GPU_COUNT_FIXES = {"Standard_ND96isr_H100_v5": 8}


def _float(text: str | None) -> float | None:
    if text is None or not text.strip():
        return None
    return float(text)


def _int(text: str | None) -> int | None:
    value = _float(text)
    return None if value is None else round(value)


def offer_from_row(row: Mapping[str, str]) -> Offer | None:
    """One CSV row (columns of gpu-offers.csv) as an Offer, or None if the row names no GPU."""
    provider = row["provider"].strip()
    instance_type = row.get("instance_type", "").strip()
    source_gpu = row["gpu"].strip()
    gpu_count = _int(row["gpu_count"]) or 0
    if not source_gpu or gpu_count <= 0:
        return None
    notes: list[str] = []
    exclusion: str | None = None

    fixed_count = _AZURE_GPU_COUNT_FIXES.get(instance_type) if provider == "azure" else None
    if fixed_count is not None and fixed_count != gpu_count:
        notes.append(f"gpu_count {gpu_count} in the source; the cloud documents {fixed_count}")
        gpu_count = fixed_count

    reported_memory = _float(row.get("gpu_memory_gib"))
    gpu = normalize_gpu_name(source_gpu, reported_memory, provider=provider, instance_type=instance_type)
    if reported_memory is None or reported_memory <= 0:
        spec = spec_for(gpu)
        if spec is None:
            return None
        gpu_memory = spec.memory_gib
        notes.append("GPU memory from the spec sheet; the source gives none")
    else:
        gpu_memory = reported_memory

    vcpus = _int(row.get("vcpus"))
    host_memory = _float(row.get("memory_gib"))
    if provider == "runpod":
        host_memory = None
        notes.append("host RAM unknown: the source's memory column holds total GPU memory")
    if provider == "vast":
        vcpus, host_memory = None, None
        notes.append("vCPUs and RAM unknown: the source's 32/64 are placeholders")

    on_demand = _float(row.get("price_hour"))
    spot = _float(row.get("spot_price_hour"))
    if provider == "gcp" and not instance_type:
        exclusion = GCP_GPU_ONLY
        # The key needs an instance type: A3 High and A3 Mega share GPU, count and zone.
        instance_type = f"accelerator:{source_gpu}"
        notes.append("no instance type in the source; price covers the GPUs only, not the host VM")
    if provider == "mithril":
        exclusion = PLACEHOLDER_PRICE

    arch = "x86_64"
    if instance_type.startswith(_ARM_INSTANCE_PREFIXES) or gpu in _ARM_GPUS:
        arch = "arm64"

    return Offer(
        provider=provider,
        region=row.get("region", "").strip(),
        zone=row.get("zone", "").strip(),
        instance_type=instance_type,
        gpu=gpu,
        gpu_count=gpu_count,
        gpu_memory_gib=gpu_memory,
        vcpus=vcpus,
        memory_gib=host_memory,
        on_demand_price=on_demand,
        spot_price=spot,
        source_gpu=source_gpu,
        cpu_arch=arch,
        network=network_fabric(provider, instance_type),
        exclusion=exclusion,
        notes=tuple(notes),
    )


def parse_offers(rows: Iterable[Mapping[str, str]]) -> list[Offer]:
    """Offers from CSV rows, in a stable order, the first of any duplicate key kept."""
    seen: set[str] = set()
    offers: list[Offer] = []
    for row in rows:
        offer = offer_from_row(row)
        if offer is None or offer.key in seen:
            continue
        seen.add(offer.key)
        offers.append(offer)
    return offers


def parse_offers_csv(text: str) -> list[Offer]:
    return parse_offers(csv.DictReader(io.StringIO(text)))


def load_offers_csv(path: str | Path) -> list[Offer]:
    """Offers from a CSV file with the columns of the shipped gpu-offers.csv."""
    return parse_offers_csv(Path(path).read_text(encoding="utf-8"))


@functools.cache
def _shipped() -> tuple[Offer, ...]:
    text = resources.files("gpupool.catalog").joinpath("data/gpu-offers.csv").read_text(encoding="utf-8")
    return tuple(parse_offers_csv(text))


def load_shipped_offers() -> list[Offer]:
    """The snapshot shipped with the package (loaded once; a fresh list each call)."""
    return list(_shipped())
