"""Registration: match the instance to its Node, make the Node the pool's, and see it Ready.

A Node is the claim's when its `spec.providerID` equals the instance's; names differ by
cloud and are not to be trusted. The labels and taints are applied by the operator even
when the bootstrap script already set them, so a node joined by hand still lands in the
right pool with the right taints. Pure: the reconciler does the reads and writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpupool.api.pool import Taint
from gpupool.planner import scheduling

GPU_TAINT = dict(zip(("key", "value", "effect"), scheduling.GPU_TAINT, strict=True))


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """The few facts about a Node that claims care about, as kept in the operator's node index."""

    name: str
    provider_id: str
    ready: bool
    unschedulable: bool
    labels: Mapping[str, str]
    taints: tuple[Mapping[str, str], ...]


def node_info(body: Mapping[str, Any]) -> NodeInfo | None:
    """A Node body (as kopf or the API gives it) reduced to NodeInfo; None without a providerID."""
    spec = body.get("spec") or {}
    provider_id = spec.get("providerID")
    if not provider_id:
        return None
    conditions = (body.get("status") or {}).get("conditions") or []
    return NodeInfo(
        name=body["metadata"]["name"],
        provider_id=provider_id,
        ready=any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions),
        unschedulable=bool(spec.get("unschedulable")),
        labels=dict(body["metadata"].get("labels") or {}),
        taints=tuple(
            {"key": t["key"], "value": t.get("value") or "", "effect": t["effect"]}
            for t in spec.get("taints") or []
        ),
    )


def status_behind_node(status: Mapping[str, Any], node: NodeInfo | None) -> bool:
    """Whether a claim's status has yet to catch up with its Node: the Node joined and the claim
    has not recorded it, or the Node is Ready and the claim is not.

    A Node's events wake its claim through the claim's providerID; a Node that joins (after a
    crash, even turns Ready) before its claim has recorded the instance wakes nobody, so the
    claim's own next change must wake it."""
    if node is None:
        return False
    return not status.get("nodeName") or (node.ready and status.get("phase") != "Ready")


def node_patch(
    node: NodeInfo, labels: Mapping[str, str], pool_taints: Sequence[Taint]
) -> dict[str, Any] | None:
    """The patch that gives the Node the claim's labels and taints, or None if it has them."""
    current_labels = node.labels
    missing_labels = {k: v for k, v in labels.items() if current_labels.get(k) != v}
    current_taints = [dict(t) for t in node.taints]
    wanted = [
        GPU_TAINT,
        *({"key": t.key, "value": t.value or "", "effect": str(t.effect)} for t in pool_taints),
    ]
    missing_taints = [t for t in wanted if not any(_same_taint(t, c) for c in current_taints)]
    if not missing_labels and not missing_taints:
        return None
    patch: dict[str, Any] = {}
    if missing_labels:
        patch["metadata"] = {"labels": missing_labels}
    if missing_taints:
        # Taints are a list without a merge key in strategic merge patch: send the whole list.
        patch["spec"] = {"taints": [*current_taints, *missing_taints]}
    return patch


def _same_taint(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    return a["key"] == b["key"] and a["effect"] == b["effect"]
