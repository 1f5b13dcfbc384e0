"""The indexes kopf keeps current from its watch streams, keyed the way the controllers read them.

Every lookup a reconcile makes is one dict access here: pool name to its pending pods and its
claims, node to the GPUs (and the workload pods) on it, provider ID to its Node and its
claim, (namespace, name) to a ModelDeployment's pods and rendered objects. Importing this
module registers them with kopf (the switchboard does). An indexing function returns {}
(not None) when an object stops qualifying: kopf keeps the object's previous entry on None,
and only an empty mapping replaces it. Each is `async def`: kopf runs a plain `def` in a
thread pool, one thread hop per watch event.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from pydantic import ValidationError

from gpupool.api import GpuNodeClaim, GpuPoolSpec
from gpupool.api.deployment import DEFAULT_POOL
from gpupool.controllers.kube import GROUP, VERSION
from gpupool.controllers.modeldeployment.controller import ManagedObject, managed_object
from gpupool.controllers.modeldeployment.decide import PodPlacement
from gpupool.controllers.nodeclaim.registration import NodeInfo, node_info
from gpupool.controllers.pool.pending import (
    MODEL_LABEL,
    PodDemand,
    PodUsage,
    is_daemon_or_finished,
    is_unschedulable,
    pod_demand,
    pod_gpus,
    pod_usage,
)

MANAGED = {"app.kubernetes.io/managed-by": "gpupool"}

log = logging.getLogger(__name__)


@kopf.index("pods")
async def unschedulable_gpu_pods(body: kopf.Body, **_: Any) -> dict[str, PodDemand]:
    """pool -> pods that want a GPU of that pool and fit no node."""
    demand = pod_demand(body) if is_unschedulable(body) else None
    return {} if demand is None else {demand.pool: demand}


@kopf.index("pods")
async def pods_by_node(body: kopf.Body, **_: Any) -> dict[str, PodUsage]:
    """node -> the GPUs, CPU, memory and disk each live pod bound to it requests (every pod:
    a DaemonSet's CPU is as taken as a model server's)."""
    usage = pod_usage(body)
    return {} if usage is None else {usage[0]: usage[1]}


@kopf.index("pods")
async def workload_pods_by_node(body: kopf.Body, spec: kopf.Spec, **_: Any) -> dict[str, bool]:
    """node -> its live pods but DaemonSet and mirror pods: a node without any is empty."""
    node = spec.get("nodeName")
    if not node or is_daemon_or_finished(body):
        return {}
    return {node: True}


@kopf.index("pods", labels={MODEL_LABEL: kopf.PRESENT})
async def model_pods(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[Any, PodPlacement]:
    """(namespace, ModelDeployment) -> where each of its pods runs."""
    node = (body.get("spec") or {}).get("nodeName")
    status = body.get("status") or {}
    if not node or status.get("phase") in ("Succeeded", "Failed"):
        return {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    key = (namespace, labels[MODEL_LABEL])
    return {key: PodPlacement(node=node, gpus=pod_gpus(body.get("spec") or {}), ready=ready)}


@kopf.index("pods", labels={MODEL_LABEL: kopf.PRESENT})
async def model_deployments_by_node(
    spec: kopf.Spec, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[str, tuple[str | None, str]]:
    """node -> the ModelDeployments with a pod on it (their cost follows the node's price)."""
    node = spec.get("nodeName")
    return {node: (namespace, labels[MODEL_LABEL])} if node else {}


@kopf.index("nodes")
async def nodes_by_provider_id(body: kopf.Body, **_: Any) -> dict[str, NodeInfo]:
    """providerID -> the Node's name, readiness, labels and taints."""
    info = node_info(body)
    return {} if info is None else {info.provider_id: info}


def _managed(body: kopf.Body, namespace: str | None, labels: kopf.Labels) -> dict[Any, ManagedObject]:
    model = labels.get(MODEL_LABEL)
    return {(namespace, model): managed_object(body)} if model else {}


@kopf.index("deployments", labels=MANAGED)
async def managed_deployments(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[Any, Any]:
    """(namespace, ModelDeployment) -> its Deployment: rendered hash, drift key, status."""
    return _managed(body, namespace, labels)


@kopf.index("services", labels=MANAGED)
async def managed_services(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[Any, Any]:
    """(namespace, ModelDeployment) -> its Service."""
    return _managed(body, namespace, labels)


@kopf.index("poddisruptionbudgets", labels=MANAGED)
async def managed_pdbs(
    body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> dict[Any, Any]:
    """(namespace, ModelDeployment) -> its PodDisruptionBudget."""
    return _managed(body, namespace, labels)


@kopf.index(GROUP, VERSION, "gpunodeclaims")
async def claims_by_pool(body: kopf.Body, spec: kopf.Spec, **_: Any) -> dict[str, GpuNodeClaim]:
    """pool -> its claims, parsed once per change (the pool counts their capacity, cost and phases)."""
    meta = body["metadata"]
    try:
        claim = GpuNodeClaim.from_k8s(
            {
                "metadata": {k: meta.get(k) for k in ("name", "uid", "deletionTimestamp", "generation")},
                "spec": spec,
                "status": body.get("status") or {},
            }
        )
    except ValidationError as error:
        # Only the operator writes claims and the API server validates them with the same
        # schema: this is a version skew, said once per change, never a crash of the index.
        log.warning("GpuNodeClaim %s does not match the API: %s", meta.get("name"), error)
        return {}
    return {claim.spec.pool: claim}


@kopf.index(GROUP, VERSION, "gpunodeclaims")
async def claims_by_provider(body: kopf.Body, spec: kopf.Spec, **_: Any) -> dict[str, tuple[str, str]]:
    """provider -> (claim name, claim uid): what a provider may not be deleted under."""
    provider = str((spec.get("offer") or {}).get("provider"))
    return {provider: (body["metadata"]["name"], body["metadata"]["uid"])}


@kopf.index(GROUP, VERSION, "gpunodeclaims")
async def claims_by_instance(name: str, spec: kopf.Spec, status: kopf.Status, **_: Any) -> dict[Any, str]:
    """(provider, instance id) and provider ID -> claim name, to wake a claim when its
    instance or its Node changes."""
    keys: dict[Any, str] = {}
    if status.get("instanceId"):
        keys[(str((spec.get("offer") or {}).get("provider")), str(status["instanceId"]))] = name
    if status.get("providerID"):
        keys[str(status["providerID"])] = name
    return keys


@kopf.index(GROUP, VERSION, "gpunodeclaims")
async def node_prices(status: kopf.Status, spec: kopf.Spec, **_: Any) -> dict[str, tuple[float, int]]:
    """node -> (hourly price of its instance, its GPUs)."""
    node = status.get("nodeName")
    if not node:
        return {}
    offer = spec.get("offer") or {}
    return {node: (float(offer.get("pricePerHour") or 0), int(offer.get("gpuCount") or 0))}


@kopf.index(GROUP, VERSION, "gpunodeclaims")
async def claim_phases(status: kopf.Status, **_: Any) -> dict[str, str]:
    """phase -> the claims in it, for the claims-by-phase gauge."""
    return {str(status.get("phase") or "Pending"): "claim"}


@kopf.index(GROUP, VERSION, "gpuproviders")
async def provider_names(name: str, **_: Any) -> dict[str, bool]:
    """provider name -> True, for every GpuProvider that exists (listed before any loop starts)."""
    return {name: True}


@kopf.index(GROUP, VERSION, "gpupools")
async def pool_specs(name: str, spec: kopf.Spec, **_: Any) -> dict[str, GpuPoolSpec]:
    """pool name -> its spec, parsed, so claims and models never GET their pool."""
    try:
        return {name: GpuPoolSpec.from_k8s(spec)}
    except ValidationError as error:
        log.warning("GpuPool %s does not match the API: %s", name, error)
        return {}


@kopf.index(GROUP, VERSION, "gpupools")
async def pools_by_provider(name: str, spec: kopf.Spec, **_: Any) -> dict[str, str]:
    """provider -> the pools that buy from it."""
    return {str(provider): name for provider in spec.get("providers") or ()}


@kopf.index(GROUP, VERSION, "gpupools")
async def degraded_pools(name: str, status: kopf.Status, **_: Any) -> dict[str, dict[str, Any]]:
    """pool name -> its Degraded condition, while it is True."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Degraded" and condition.get("status") == "True":
            return {name: dict(condition)}
    return {}


@kopf.index(GROUP, VERSION, "modeldeployments")
async def models_by_pool(
    name: str, namespace: str | None, spec: kopf.Spec, **_: Any
) -> dict[str, tuple[Any, str]]:
    """pool name -> the ModelDeployments it serves."""
    return {str(spec.get("pool", DEFAULT_POOL)): (namespace, name)}
