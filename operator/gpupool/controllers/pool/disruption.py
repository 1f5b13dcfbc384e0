"""Disruption: which of a pool's nodes to take away now, within its budgets.

Two reasons are acted on here: Empty (a node with no pods but DaemonSet pods for
`consolidateAfter`) and Expired (launched longer ago than `expireAfter`). Each reason may
disrupt only as many nodes as the tightest budget that applies to it allows, counting every
node already being taken away (a claim being deleted), as Karpenter counts them: so six
expired nodes under a budget of two go two at a time, each pair once the previous one is gone.

An empty node is not taken on the strength of one look: it is first tainted
(`gpupool.dev/disrupted:NoSchedule`), so nothing new lands on it, and only taken when a later
look, once the taint shows on the Node, still finds it empty. A pod that landed in between
wins: the taint is lifted and the clock starts again. Pure: the controller does the writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gpupool.api import Disruption, DisruptionReason, GpuNodeClaim
from gpupool.controllers.nodeclaim.registration import NodeInfo
from gpupool.controllers.nodeclaim.termination import DISRUPTED_TAINT


@dataclass
class DisruptionPlan:
    """What to do now: nodes to taint, taints to lift, claims to delete (with why)."""

    taint: list[NodeInfo] = field(default_factory=list)
    untaint: list[NodeInfo] = field(default_factory=list)
    delete: list[tuple[str, DisruptionReason]] = field(default_factory=list)  # claim name, reason
    waiting: int = 0  # candidates held back by a budget


def _tainted(node: NodeInfo | None) -> bool:
    return node is not None and any(t["key"] == DISRUPTED_TAINT["key"] for t in node.taints)


def plan_disruption(
    claims: Sequence[GpuNodeClaim],
    disruption: Disruption,
    *,
    empty: Sequence[str],
    expired: Sequence[str],
    node_of: Callable[[GpuNodeClaim], NodeInfo | None],
    busy: Callable[[str], bool],
) -> DisruptionPlan:
    """`empty` and `expired` are claim names in the order to take them (longest empty, oldest
    first); `busy(node)` says whether a node holds pods but DaemonSet pods now."""
    plan = DisruptionPlan()
    by_name = {c.name: c for c in claims}
    total = len(claims)
    disrupting = sum(1 for c in claims if c.metadata.deletion_timestamp)
    live = [c for c in claims if not c.metadata.deletion_timestamp]

    # A node tainted by us that got busy again, or is no longer a candidate, is given back.
    for claim in live:
        node = node_of(claim)
        name = claim.name
        if node is not None and _tainted(node) and (busy(node.name) or name not in empty):
            plan.untaint.append(node)

    allowed = disruption.allowed_disruptions(DisruptionReason.EXPIRED, total) - disrupting
    for name in expired:
        if allowed <= 0:
            plan.waiting += 1
            continue
        plan.delete.append((name, DisruptionReason.EXPIRED))
        disrupting += 1
        allowed -= 1

    taken = {name for name, _ in plan.delete}
    allowed = disruption.allowed_disruptions(DisruptionReason.EMPTY, total) - disrupting
    for name in empty:
        candidate = by_name.get(name)
        node = node_of(candidate) if candidate is not None else None
        if name in taken or node is None or node in plan.untaint:
            continue
        if allowed <= 0:
            plan.waiting += 1
            continue
        allowed -= 1
        if _tainted(node):
            plan.delete.append((name, DisruptionReason.EMPTY))
        else:
            plan.taint.append(node)
    return plan
