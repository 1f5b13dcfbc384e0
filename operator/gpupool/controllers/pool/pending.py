"""What a pod asks of a pool, read from its spec alone.

A pod belongs to a pool when it selects the pool's label, through a nodeSelector or a
required node-affinity term; it may narrow the GPU models and capacity types the same
way. Reading the constraints from the pod (not from the ModelDeployment that made it)
means any workload that selects the pool gets nodes, as with Karpenter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

POOL_KEY = "gpupool.dev/pool"
GPU_KEY = "gpupool.dev/gpu"
CAPACITY_KEY = "gpupool.dev/capacity-type"
GPU_RESOURCE = "nvidia.com/gpu"


@dataclass(frozen=True, slots=True)
class PodDemand:
    namespace: str
    name: str
    pool: str
    gpus: int
    gpu_types: tuple[str, ...]  # empty: any GPU model the pool allows
    capacity_types: tuple[str, ...]  # empty: any the pool allows

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def pod_gpus(spec: Mapping[str, Any]) -> int:
    """GPUs a pod needs: the sum over its containers, or its largest init container."""

    def of(container: Mapping[str, Any]) -> int:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or {}
        requests = resources.get("requests") or {}
        return _quantity(limits.get(GPU_RESOURCE, requests.get(GPU_RESOURCE, 0)))

    main = sum(of(c) for c in spec.get("containers") or [])
    init = max((of(c) for c in spec.get("initContainers") or []), default=0)
    return max(main, init)


def _required_values(spec: Mapping[str, Any], key: str) -> tuple[str, ...]:
    selector = spec.get("nodeSelector") or {}
    if key in selector:
        return (str(selector[key]),)
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    # Terms are ORed; gpupool's own pods have one. With several, take the union (a superset
    # is safe: the scheduler still enforces the real rule on the node we make).
    values: list[str] = []
    for term in affinity.get("nodeSelectorTerms") or []:
        for expression in term.get("matchExpressions") or []:
            if expression.get("key") == key and expression.get("operator") == "In":
                values.extend(str(v) for v in expression.get("values") or [])
    return tuple(sorted(set(values)))


def pod_demand(pod: Mapping[str, Any]) -> PodDemand | None:
    """The pod's demand on a pool, or None if it selects no pool or wants no GPU."""
    spec = pod.get("spec") or {}
    pools = _required_values(spec, POOL_KEY)
    gpus = pod_gpus(spec)
    if len(pools) != 1 or gpus <= 0:
        return None
    meta = pod.get("metadata") or {}
    return PodDemand(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        pool=pools[0],
        gpus=gpus,
        gpu_types=_required_values(spec, GPU_KEY),
        capacity_types=_required_values(spec, CAPACITY_KEY),
    )


def is_unschedulable(pod: Mapping[str, Any]) -> bool:
    """Pending, unbound, and the scheduler has said it fits no node."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if spec.get("nodeName") or status.get("phase") not in (None, "Pending"):
        return False
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return any(
        c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == "Unschedulable"
        for c in status.get("conditions") or []
    )


def is_daemon_or_finished(pod: Mapping[str, Any]) -> bool:
    """A pod that does not keep its node busy: a DaemonSet's, a static (mirror) pod, or one
    that has finished or is going away. A node with only such pods is empty."""
    meta = pod.get("metadata") or {}
    if any(o.get("kind") == "DaemonSet" for o in meta.get("ownerReferences") or []):
        return True
    if "kubernetes.io/config.mirror" in (meta.get("annotations") or {}):
        return True
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
