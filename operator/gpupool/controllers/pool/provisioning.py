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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from gpupool.api import CapacityType as CapacityTypeName
from gpupool.api import GpuNodeClaim, GpuNodeClaimSpec, ObjectMeta
from gpupool.api.nodeclaim import Offer as ClaimedOffer
from gpupool.catalog import CapacityType, Offer
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


def claimed_offer(offer: ClaimedOffer) -> Offer:
    """The catalog Offer a claim's spec records (without prices: only its shape is needed)."""
    return Offer(
        provider=offer.provider,
        region=offer.region,
        zone=offer.zone or "",
        instance_type=offer.instance_type,
        gpu=offer.gpu,
        gpu_count=offer.gpu_count,
        gpu_memory_gib=offer.gpu_memory_gib or 0.0,
        vcpus=offer.vcpus,
        memory_gib=offer.memory_gib,
        disk_gib=offer.disk_gib,
        on_demand_price=None,
        spot_price=None,
    )


def pool_capacity(
    claims: Sequence[GpuNodeClaim],
    gpus_on_node: Callable[[str], int],
    used_on_node: Callable[[str], Resources],
    pool: str,
) -> list[Capacity]:
    """Every live claim of the pool, with the GPUs, CPU, memory and disk its node's pods leave."""
    capacity = []
    for claim in claims:
        if claim.metadata.deletion_timestamp:
            continue
        offer = claim.spec.offer
        node = claim.status.node_name or ""
        used = gpus_on_node(node) if node else 0
        capacity.append(
            Capacity(
                name=claim.name,
                gpu=offer.gpu,
                free_gpus=max(offer.gpu_count - used, 0),
                pool=pool,
                capacity_type=cast(CapacityType, str(offer.capacity_type)),
                offer=claimed_offer(offer),
                used=used_on_node(node) if node else Resources(),
            )
        )
    return capacity


def claim_manifest(pool_name: str, pool_uid: str, instance: NewInstance) -> GpuNodeClaim:
    """A GpuNodeClaim for one new instance, owned by the pool (deleting the pool deletes it)."""
    offer = instance.offer
    return GpuNodeClaim(
        metadata=ObjectMeta.model_validate(
            {
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
            }
        ),
        spec=GpuNodeClaimSpec(
            pool=pool_name,
            offer=ClaimedOffer(
                provider=offer.provider,
                region=offer.region,
                # The schema has no empty strings or zero memory: absent means unknown.
                zone=offer.zone or None,
                instance_type=offer.instance_type,
                gpu=offer.gpu,
                gpu_count=offer.gpu_count,
                gpu_memory_gib=float(offer.gpu_memory_gib) if offer.gpu_memory_gib > 0 else None,
                # What the packer fits pods against when it counts this claim as capacity.
                vcpus=offer.vcpus or None,
                memory_gib=float(offer.memory_gib) if offer.memory_gib else None,
                disk_gib=float(offer.disk_gib) if offer.disk_gib else None,
                capacity_type=CapacityTypeName(instance.capacity_type),
                price_per_hour=round(float(instance.price_per_hour), 6),
            ),
        ),
    )
