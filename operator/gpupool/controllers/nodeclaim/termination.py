"""Termination: take a claim's node away without losing a pod or an instance.

Order matters. Cordon first, so nothing new lands; evict through the Eviction API, so
PodDisruptionBudgets are honoured (a refused eviction means "later", not "force");
terminate the instance only once the pods are gone, and delete the Node only once the
cloud says the instance is going, so a Node never outlives the record of its instance.
Each call does what it can and raises Retry while something is still in progress; kopf
keeps the finalizer until a call returns.
"""

from __future__ import annotations

import contextlib

from lightkube.resources.core_v1 import Pod

from gpupool.api import GpuNodeClaim
from gpupool.controllers.kube import Kube, NotFound
from gpupool.controllers.nodeclaim.registration import NodeInfo
from gpupool.controllers.state import OperatorState
from gpupool.providers.base import InstanceState
from gpupool.providers.errors import NotFoundError

DISRUPTED_TAINT = {"key": "gpupool.dev/disrupted", "value": "", "effect": "NoSchedule"}


class Retry(Exception):
    """Termination is under way; call again after `delay` seconds."""

    def __init__(self, message: str, delay: float = 2.0) -> None:
        super().__init__(message)
        self.delay = delay


def _evictable(pod: Pod) -> bool:
    owners = (pod.metadata and pod.metadata.ownerReferences) or []
    if any(o.kind == "DaemonSet" for o in owners):
        return False  # DaemonSet pods would be recreated on the node at once
    annotations = (pod.metadata and pod.metadata.annotations) or {}
    if "kubernetes.io/config.mirror" in annotations:
        return False  # static pods belong to the kubelet
    return pod.status is None or pod.status.phase not in ("Succeeded", "Failed")


async def cordon_and_drain(kube: Kube, node: NodeInfo) -> None:
    name = node.name
    taints = [dict(t) for t in node.taints]
    if not node.unschedulable or not any(t["key"] == DISRUPTED_TAINT["key"] for t in taints):
        if not any(t["key"] == DISRUPTED_TAINT["key"] for t in taints):
            taints.append(dict(DISRUPTED_TAINT))
        await kube.patch_node(name, {"spec": {"unschedulable": True, "taints": taints}})
    pods = [p for p in await kube.list_pods_on_node(name) if _evictable(p)]
    refused = 0
    for pod in pods:
        meta = pod.metadata
        if meta is None or meta.deletionTimestamp or not meta.name or not meta.namespace:
            continue
        if not await kube.evict_pod(meta.namespace, meta.name):
            refused += 1
    if pods:
        detail = f" ({refused} refused by a PodDisruptionBudget)" if refused else ""
        raise Retry(f"draining node {name}: {len(pods)} pods left{detail}", delay=5.0 if refused else 2.0)


async def terminate_claim(claim: GpuNodeClaim, state: OperatorState, node: NodeInfo | None) -> None:
    """Drain, terminate, delete the Node. Raises Retry until all three are done."""
    provider = claim.spec.offer.provider
    if node is not None:
        await cordon_and_drain(state.kube, node)

    handle = state.providers.get(provider)
    if handle is None:
        if claim.status.instance_id:
            raise Retry(f"GpuProvider {provider!r} is not ready; cannot terminate yet", 15)
    else:
        instance_ids = [claim.status.instance_id] if claim.status.instance_id else []
        if not instance_ids:
            # No recorded id, yet a launch may have gone through just before a crash:
            # the cloud knows the instance by the claim's UID.
            uid = claim.metadata.uid
            instance_ids = [i.id for i in await handle.client.list() if i.claim_uid == uid]
        for instance_id in instance_ids:
            await handle.client.delete(instance_id)
            try:
                instance = await handle.client.get(instance_id)
            except NotFoundError:
                continue
            if instance.state not in (InstanceState.TERMINATED, InstanceState.TERMINATING):
                raise Retry(f"instance {instance_id} is still {instance.state.value}")

    if node is not None:
        with contextlib.suppress(NotFound):
            await state.kube.delete_node(node.name)
