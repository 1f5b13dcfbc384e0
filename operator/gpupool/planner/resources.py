"""CPU, memory and disk: what a pod requests and what a node of an offer can give it.

A GPU pod that gets its GPUs but not its CPU or memory stays Pending on the node bought for
it, and the pool would count that node's free GPUs as capacity for ever. So the packer checks
every resource the scheduler checks, against what the node will have allocatable: the
instance's vCPUs, RAM and disk minus what the kubelet keeps for itself and the system.

The reservation follows Karpenter's (and GKE's) published formulas, so a node is never
expected to give more than a kubelet configured that way would report: CPU 6 % of the first
core, 1 % of the second, 0.5 % of the next two and 0.25 % of every core above four; memory
255 MiB plus 11 MiB per pod the node may run, plus the kubelet's 100 MiB hard eviction
threshold; disk 10 % (the nodefs eviction threshold). A figure the catalog does not know (a
marketplace that does not publish vCPUs) is not checked: None means unknown, not zero.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from gpupool.catalog.offers import Offer

MIB = 1024**2
GIB = 1024**3
MAX_PODS = 110  # the kubelet's default maxPods
EVICTION_MEMORY_BYTES = 100 * MIB
EVICTION_DISK_SHARE = 0.10


@dataclass(frozen=True, slots=True)
class Resources:
    """Amounts of the resources the scheduler fits, besides GPUs: milli-CPUs, bytes, pods."""

    cpu_milli: int = 0
    memory_bytes: int = 0
    ephemeral_bytes: int = 0
    pods: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpu_milli + other.cpu_milli,
            self.memory_bytes + other.memory_bytes,
            self.ephemeral_bytes + other.ephemeral_bytes,
            self.pods + other.pods,
        )


@dataclass(frozen=True, slots=True)
class Allocatable:
    """What a node offers pods; None where the catalog does not know the instance's figure."""

    cpu_milli: int | None
    memory_bytes: int | None
    ephemeral_bytes: int | None
    pods: int = MAX_PODS

    def shortfall(self, need: Resources) -> str | None:
        """The first resource `need` does not fit in, described for a person, or None if it fits."""
        if self.cpu_milli is not None and need.cpu_milli > self.cpu_milli:
            return f"cpu: needs {format_cpu(need.cpu_milli)}, allocatable {format_cpu(self.cpu_milli)}"
        if self.memory_bytes is not None and need.memory_bytes > self.memory_bytes:
            return (
                f"memory: needs {format_bytes(need.memory_bytes)}, "
                f"allocatable {format_bytes(self.memory_bytes)}"
            )
        if self.ephemeral_bytes is not None and need.ephemeral_bytes > self.ephemeral_bytes:
            return (
                f"ephemeral-storage: needs {format_bytes(need.ephemeral_bytes)}, "
                f"allocatable {format_bytes(self.ephemeral_bytes)}"
            )
        if need.pods > self.pods:
            return f"pods: needs {need.pods}, allocatable {self.pods}"
        return None

    def minus(self, used: Resources) -> Allocatable:
        def less(value: int | None, taken: int) -> int | None:
            return None if value is None else value - taken

        return Allocatable(
            less(self.cpu_milli, used.cpu_milli),
            less(self.memory_bytes, used.memory_bytes),
            less(self.ephemeral_bytes, used.ephemeral_bytes),
            self.pods - used.pods,
        )


UNKNOWN = Allocatable(None, None, None)
NOTHING = Resources()
ONE_POD = Resources(pods=1)  # what a pod that requests nothing still takes


def reserved_cpu_milli(vcpus: int) -> int:
    """The kubelet's CPU reservation for a node of `vcpus` cores (Karpenter's formula)."""
    cores = vcpus
    milli = 60.0 * min(cores, 1)
    milli += 10.0 * min(max(cores - 1, 0), 1)
    milli += 5.0 * min(max(cores - 2, 0), 2)
    milli += 2.5 * max(cores - 4, 0)
    return round(milli)


def reserved_memory_bytes(max_pods: int = MAX_PODS) -> int:
    """The kubelet's memory reservation plus its hard eviction threshold."""
    return (255 + 11 * max_pods) * MIB + EVICTION_MEMORY_BYTES


@functools.lru_cache(maxsize=16384)  # the packer asks about the same offers in every batch
def allocatable(offer: Offer) -> Allocatable:
    """What a Node of this offer will have allocatable, as far as the catalog knows."""
    cpu = offer.vcpus * 1000 - reserved_cpu_milli(offer.vcpus) if offer.vcpus else None
    memory = round(offer.memory_gib * GIB) - reserved_memory_bytes() if offer.memory_gib else None
    disk = round(offer.disk_gib * GIB * (1 - EVICTION_DISK_SHARE)) if offer.disk_gib else None
    return Allocatable(cpu, memory, disk)


def format_cpu(milli: int) -> str:
    return f"{milli // 1000}" if milli % 1000 == 0 else f"{milli}m"


def format_bytes(amount: int) -> str:
    if amount % GIB == 0:
        return f"{amount // GIB}Gi"
    if amount >= GIB:
        return f"{amount / GIB:.1f}Gi"
    return f"{round(amount / MIB)}Mi"
