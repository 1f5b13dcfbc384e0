"""What a pod asks of a pool, read from its spec alone.

A pod belongs to a pool when it selects the pool's label, through a nodeSelector or a
required node-affinity term; it may narrow the GPU models and capacity types the same
way. Reading the constraints from the pod (not from the ModelDeployment that made it)
means any workload that selects the pool gets nodes, as with Karpenter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightkube.utils.quantity import parse_quantity

from gpupool.planner.resources import ONE_POD, Resources
from gpupool.planner.scheduling import ANY_NODE, PodConstraints, Requirement, Toleration

POOL_KEY = "gpupool.dev/pool"
GPU_KEY = "gpupool.dev/gpu"
CAPACITY_KEY = "gpupool.dev/capacity-type"
GPU_RESOURCE = "nvidia.com/gpu"
MODEL_LABEL = "gpupool.dev/model-deployment"


@dataclass(frozen=True, slots=True)
class PodDemand:
    namespace: str
    name: str
    pool: str
    gpus: int
    gpu_types: tuple[str, ...]  # empty: any GPU model the pool allows
    capacity_types: tuple[str, ...]  # empty: any the pool allows
    requests: Resources = ONE_POD
    constraints: PodConstraints = ANY_NODE
    uid: str = ""
    model: str | None = None  # the ModelDeployment that made it, if one did

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _quantity(value: Any) -> int:
    try:
        return int(str(value))
    except ValueError:
        return 0


def _amount(value: Any, scale: int) -> int:
    """A quantity in units of 1/scale (milli-CPUs: 1000; bytes: 1), rounded up as the scheduler does."""
    if value is None:
        return 0
    try:
        parsed = parse_quantity(str(value))
    except ValueError:
        return 0
    return math.ceil(parsed * scale) if parsed is not None else 0


def pod_requests(spec: Mapping[str, Any]) -> Resources:
    """What the scheduler charges a node for the pod: the larger of its containers' sum and its
    largest init container, per resource, plus the pod overhead; requests default to limits."""

    def of(container: Mapping[str, Any]) -> Resources:
        resources = container.get("resources") or {}
        wanted = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
        return Resources(
            _amount(wanted.get("cpu"), 1000),
            _amount(wanted.get("memory"), 1),
            _amount(wanted.get("ephemeral-storage"), 1),
        )

    main = sum((of(c) for c in spec.get("containers") or []), Resources())
    init = [of(c) for c in spec.get("initContainers") or []]
    overhead = spec.get("overhead") or {}
    return Resources(
        max([main.cpu_milli, *(r.cpu_milli for r in init)]) + _amount(overhead.get("cpu"), 1000),
        max([main.memory_bytes, *(r.memory_bytes for r in init)]) + _amount(overhead.get("memory"), 1),
        max([main.ephemeral_bytes, *(r.ephemeral_bytes for r in init)])
        + _amount(overhead.get("ephemeral-storage"), 1),
        1,
    )


def pod_constraints(spec: Mapping[str, Any]) -> PodConstraints:
    """The pod's node selector, required node-affinity terms and tolerations."""
    affinity = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = []
    for term in affinity.get("nodeSelectorTerms") or []:
        requirements = [
            Requirement(
                str(e.get("key")), str(e.get("operator")), tuple(str(v) for v in e.get("values") or ())
            )
            for e in term.get("matchExpressions") or []
        ]
        if term.get("matchFields"):
            requirements.append(Requirement("metadata.name", "In", ()))  # a new node has no name yet
        terms.append(tuple(requirements))
    return PodConstraints(
        node_selector=tuple(sorted((str(k), str(v)) for k, v in (spec.get("nodeSelector") or {}).items())),
        terms=tuple(terms),
        tolerations=tuple(
            Toleration(
                key=str(t.get("key") or ""),
                operator=str(t.get("operator") or "Equal"),
                value=str(t.get("value") or ""),
                effect=str(t.get("effect") or ""),
            )
            for t in spec.get("tolerations") or []
        ),
    )


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


def _required_values(constraints: PodConstraints, key: str) -> tuple[str, ...]:
    selected = dict(constraints.node_selector)
    if key in selected:
        return (selected[key],)
    # Terms are ORed; gpupool's own pods have one. With several, take the union (a superset
    # is safe: the scheduler still enforces the real rule on the node we make).
    values = {
        value
        for term in constraints.terms
        for requirement in term
        if requirement.key == key and requirement.operator == "In"
        for value in requirement.values
    }
    return tuple(sorted(values))


def pod_pool(spec: Mapping[str, Any]) -> str | None:
    """The pool a GPU pod selects, or None (cheap: no resource quantities are read)."""
    pools = _required_values(pod_constraints(spec), POOL_KEY)
    return pools[0] if len(pools) == 1 and pod_gpus(spec) > 0 else None


def pod_demand(pod: Mapping[str, Any]) -> PodDemand | None:
    """The pod's demand on a pool, or None if it selects no pool or wants no GPU."""
    spec = pod.get("spec") or {}
    constraints = pod_constraints(spec)
    pools = _required_values(constraints, POOL_KEY)
    gpus = pod_gpus(spec)
    if len(pools) != 1 or gpus <= 0:
        return None
    meta = pod.get("metadata") or {}
    return PodDemand(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        pool=pools[0],
        gpus=gpus,
        gpu_types=_required_values(constraints, GPU_KEY),
        capacity_types=_required_values(constraints, CAPACITY_KEY),
        requests=pod_requests(spec),
        constraints=constraints,
        uid=meta.get("uid", ""),
        model=(meta.get("labels") or {}).get(MODEL_LABEL),
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


@dataclass(frozen=True, slots=True)
class PodUsage:
    """What a pod bound to a node takes of it."""

    gpus: int
    requests: Resources


def pod_usage(pod: Mapping[str, Any]) -> tuple[str, PodUsage] | None:
    """The node a live pod is bound to and what it takes there; None for unbound or finished pods."""
    spec = pod.get("spec") or {}
    node = spec.get("nodeName")
    if not node or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return None
    return str(node), PodUsage(pod_gpus(spec), pod_requests(spec))
