"""Consolidation and expiration: which of a pool's nodes to give back, and when.

A node that has held no GPU pod for `consolidateAfter` is given back.

Only empty nodes are removed for now (Karpenter's "empty" consolidation); replacing an
underused node by a cheaper one is not done yet. Nothing is removed while the pool has
pending pods, since an empty node may be exactly where the scheduler is about to put one.
The empty-since clock is in memory (the pool controller's own): a restart only makes the
operator more patient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from gpupool.api import GpuNodeClaim, NodeClaimPhase


def consolidation_candidates(
    claims: Sequence[GpuNodeClaim],
    gpus_on_node: Callable[[str], int],
    empty_since: Mapping[str, float],
    now: float,
    consolidate_after: float,
    pending_pods: int,
) -> tuple[list[str], dict[str, float]]:
    """Names of claims to delete, and the updated empty-since clock per node."""
    clock: dict[str, float] = {}
    doomed: list[str] = []
    for claim in claims:
        node = claim.status.node_name
        if not node or claim.status.phase != NodeClaimPhase.READY or claim.metadata.deletion_timestamp:
            continue
        if gpus_on_node(node) > 0:
            continue
        since = empty_since.get(node, now)
        clock[node] = since
        if pending_pods == 0 and now - since >= consolidate_after:
            doomed.append(claim.name)
    return doomed, clock


def expired_claims(claims: Sequence[GpuNodeClaim], now: float, expire_after: float | None) -> list[str]:
    """Claims launched more than `expireAfter` ago (None: Never), as Karpenter expires nodes.

    Deleting them drains within PodDisruptionBudgets, and the evicted pods' demand buys fresh
    nodes, so long-lived machines (and their drifted images or leaked state) are recycled.
    """
    if expire_after is None:
        return []
    doomed = []
    for claim in claims:
        launched = claim.status.launched_at
        if claim.metadata.deletion_timestamp or launched is None:
            continue
        if now - launched.timestamp() >= expire_after:
            doomed.append(claim.name)
    return doomed
