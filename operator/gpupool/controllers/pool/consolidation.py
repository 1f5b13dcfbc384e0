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
from typing import Any

from gpupool.controllers.conditions import parse_stamp


def consolidation_candidates(
    claims: Sequence[Mapping[str, Any]],
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
        status = claim.get("status") or {}
        node = status.get("nodeName")
        if not node or status.get("phase") != "Ready" or claim["metadata"].get("deletionTimestamp"):
            continue
        if gpus_on_node(node) > 0:
            continue
        since = empty_since.get(node, now)
        clock[node] = since
        if pending_pods == 0 and now - since >= consolidate_after:
            doomed.append(claim["metadata"]["name"])
    return doomed, clock


def expired_claims(claims: Sequence[Mapping[str, Any]], now: float, expire_after: float | None) -> list[str]:
    """Claims launched more than `expireAfter` ago (None: Never), as Karpenter expires nodes.

    Deleting them drains within PodDisruptionBudgets, and the evicted pods' demand buys fresh
    nodes, so long-lived machines (and their drifted images or leaked state) are recycled.
    """
    if expire_after is None:
        return []
    doomed = []
    for claim in claims:
        launched = (claim.get("status") or {}).get("launchedAt")
        if claim["metadata"].get("deletionTimestamp") or not launched:
            continue
        if now - parse_stamp(str(launched)) >= expire_after:
            doomed.append(claim["metadata"]["name"])
    return doomed
