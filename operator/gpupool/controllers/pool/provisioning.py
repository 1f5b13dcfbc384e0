"""Provisioning: turn a pool's unschedulable pods into GpuNodeClaims, as Karpenter does.

Pods that arrive together (a new Deployment's replicas) are packed together, which is
cheaper than one node per pod, so the controller waits for a batch: it closes after
`batch_idle_seconds` without a new pod, or `batch_max_seconds` after the first. Every live
claim of the pool counts as capacity with the GPUs (and CPU, memory, disk) its node's pods do not hold, whether its
node is still coming up or Ready already (the scheduler may not have bound a pod to it yet),
so a pod is never provisioned for twice. Claims are created before any cloud call; the
claim controller does the launch. Pure: the controller does the reads and the writes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpupool.catalog import Offer
from gpupool.controllers.kube import FINALIZER, GROUP, VERSION
from gpupool.planner import Capacity, NewInstance
from gpupool.planner.resources import Resources


@dataclass(frozen=True, slots=True)
class BatchWindow:
    """The pending pods seen so far, since when, and when the last new one came."""

    first: float
    last: float
    seen: frozenset[str]


def batch_ready(
    window: BatchWindow | None, pods: frozenset[str], now: float, idle: float, maximum: float
) -> tuple[bool, BatchWindow | None, float | None]:
    """Whether the batch is complete, the window to remember, and seconds until it will be."""
    if not pods:
        return False, None, None
    if window is None:
        window = BatchWindow(now, now, pods)
    elif not pods <= window.seen:
        window = BatchWindow(window.first, now, window.seen | pods)
    closes_at = min(window.last + idle, window.first + maximum)
    if now >= closes_at:
        return True, window, None
    return False, window, closes_at - now


def claimed_offer(offer: Mapping[str, Any]) -> Offer:
    """The catalog Offer a claim's spec records (without prices: only its shape is needed)."""
    return Offer(
        provider=str(offer["provider"]),
        region=str(offer["region"]),
        zone=str(offer.get("zone") or ""),
        instance_type=str(offer["instanceType"]),
        gpu=str(offer["gpu"]),
        gpu_count=int(offer["gpuCount"]),
        gpu_memory_gib=float(offer.get("gpuMemoryGiB") or 0.0),
        vcpus=int(offer["vcpus"]) if offer.get("vcpus") else None,
        memory_gib=float(offer["memoryGiB"]) if offer.get("memoryGiB") else None,
        disk_gib=float(offer["diskGiB"]) if offer.get("diskGiB") else None,
        on_demand_price=None,
        spot_price=None,
    )


def pool_capacity(
    claims: Sequence[Mapping[str, Any]],
    gpus_on_node: Callable[[str], int],
    used_on_node: Callable[[str], Resources],
    pool: str,
) -> list[Capacity]:
    """Every live claim of the pool, with the GPUs, CPU, memory and disk its node's pods leave."""
    capacity = []
    for claim in claims:
        if claim["metadata"].get("deletionTimestamp"):
            continue
        status = claim.get("status") or {}
        offer = claim["spec"]["offer"]
        node = status.get("nodeName") or ""
        used = gpus_on_node(node) if node else 0
        capacity.append(
            Capacity(
                name=claim["metadata"]["name"],
                gpu=offer["gpu"],
                free_gpus=max(int(offer["gpuCount"]) - used, 0),
                pool=pool,
                capacity_type=offer["capacityType"],
                offer=claimed_offer(offer),
                used=used_on_node(node) if node else Resources(),
            )
        )
    return capacity


def claim_manifest(pool_name: str, pool_uid: str, instance: NewInstance) -> dict[str, Any]:
    """A GpuNodeClaim for one new instance, owned by the pool (deleting the pool deletes it)."""
    offer = instance.offer
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GpuNodeClaim",
        "metadata": {
            "name": f"{pool_name}-{uuid.uuid4().hex[:8]}",
            "labels": {"gpupool.dev/pool": pool_name},
            # Born with the finalizer its termination needs, so kopf has no patch to make for it.
            "finalizers": [FINALIZER],
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "GpuPool",
                    "name": pool_name,
                    "uid": pool_uid,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "pool": pool_name,
            "offer": {
                "provider": offer.provider,
                "region": offer.region,
                # The schema has no empty strings or zero memory: absent means unknown.
                **({"zone": offer.zone} if offer.zone else {}),
                "instanceType": offer.instance_type,
                "gpu": offer.gpu,
                "gpuCount": offer.gpu_count,
                **({"gpuMemoryGiB": offer.gpu_memory_gib} if offer.gpu_memory_gib > 0 else {}),
                # What the packer fits pods against when it counts this claim as capacity.
                **({"vcpus": offer.vcpus} if offer.vcpus else {}),
                **({"memoryGiB": float(offer.memory_gib)} if offer.memory_gib else {}),
                **({"diskGiB": float(offer.disk_gib)} if offer.disk_gib else {}),
                "capacityType": instance.capacity_type,
                "pricePerHour": round(instance.price_per_hour, 6),
            },
        },
    }
