"""The indexes kopf keeps current from its watch streams, keyed the way the controllers read them.

Every lookup a reconcile makes is one dict access here: pool name to its pending pods and its
claims, node to the GPUs (and the workload pods) on it, provider ID to its Node and its
claim, (namespace, name) to a ModelDeployment's pods and rendered objects. A pod and a claim
each go through one index whose keys name the question (`(USAGE, node)`). Importing this
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
    is_daemon_or_finished,
    is_unschedulable,
    pod_demand,
    pod_gpus,
    pod_usage,
)

MANAGED = {"app.kubernetes.io/managed-by": "gpupool"}

log = logging.getLogger(__name__)


# Keys of the pod and claim indexes: each object is read by one kopf handler that files every
# fact the controllers ask of it under (question, ...) keys, because kopf's bookkeeping (cause,
# kwargs, progress) is paid per handler and event, and pods and claims are its busiest streams.
PENDING = "pending"  # (PENDING, pool) -> PodDemand of an unschedulable pod that selects it
USAGE = "usage"  # (USAGE, node) -> PodUsage of each live pod bound to it
WORKLOAD = "workload"  # (WORKLOAD, node) -> True per live pod but DaemonSet and mirror pods
MODEL = "model"  # (MODEL, namespace, ModelDeployment) -> PodPlacement of each of its pods
MODEL_ON_NODE = "model-on-node"  # (MODEL_ON_NODE, node) -> (namespace, ModelDeployment) with a pod there
POOL = "pool"  # (POOL, pool) -> GpuNodeClaim, parsed once per change
PROVIDER = "provider"  # (PROVIDER, provider) -> (claim name, claim uid)
INSTANCE = "instance"  # (INSTANCE, provider, instance id) -> claim name
PROVIDER_ID = "provider-id"  # (PROVIDER_ID, providerID) -> claim name
NODE_PRICE = "node-price"  # (NODE_PRICE, node) -> (hourly price of its instance, its GPUs)
PHASE = "phase"  # (PHASE, phase) -> claim name


@kopf.index("pods")
async def pod_index(body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any) -> dict[Any, Any]:
    """What the pool and ModelDeployment loops read of a pod: whether it waits for a node of a
    pool, what it takes of its node (every pod: a DaemonSet's CPU is as taken as a model
    server's), whether it keeps its node busy, and where a ModelDeployment's pod runs."""
    facts: dict[Any, Any] = {}
    if is_unschedulable(body):
        demand = pod_demand(body)
        if demand is not None:
            facts[PENDING, demand.pool] = demand
    usage = pod_usage(body)
    if usage is not None:
        facts[USAGE, usage[0]] = usage[1]
    spec = body.get("spec") or {}
    node = spec.get("nodeName")
    if node and not is_daemon_or_finished(body):
        facts[WORKLOAD, node] = True
    model = labels.get(MODEL_LABEL)
    status = body.get("status") or {}
    if model and node and status.get("phase") not in ("Succeeded", "Failed"):
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        facts[MODEL, namespace, model] = PodPlacement(node=node, gpus=pod_gpus(spec), ready=ready)
    if model and node:
        facts[MODEL_ON_NODE, node] = (namespace, model)
    return facts


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
async def claim_index(
    body: kopf.Body, name: str, spec: kopf.Spec, status: kopf.Status, **_: Any
) -> dict[Any, Any]:
    """A claim, parsed once per change, under its pool; its provider (what a provider may not be
    deleted under); its instance and provider ID (to wake it when they change); its node's
    price; its phase (the claims-by-phase gauge)."""
    meta = body["metadata"]
    offer = spec.get("offer") or {}
    provider = str(offer.get("provider"))
    facts: dict[Any, Any] = {
        (PROVIDER, provider): (name, meta["uid"]),
        (PHASE, str(status.get("phase") or "Pending")): name,
    }
    if status.get("instanceId"):
        facts[INSTANCE, provider, str(status["instanceId"])] = name
    if status.get("providerID"):
        facts[PROVIDER_ID, str(status["providerID"])] = name
    if status.get("nodeName"):
        facts[NODE_PRICE, status["nodeName"]] = (
            float(offer.get("pricePerHour") or 0),
            int(offer.get("gpuCount") or 0),
        )
    try:
        claim = GpuNodeClaim.from_k8s(
            {
                "metadata": {k: meta.get(k) for k in ("name", "uid", "deletionTimestamp", "generation")},
                "spec": spec,
                "status": status,
            }
        )
    except ValidationError as error:
        # Only the operator writes claims and the API server validates them with the same
        # schema: this is a version skew, said once per change, never a crash of the index.
        log.warning("GpuNodeClaim %s does not match the API: %s", name, error)
    else:
        facts[POOL, claim.spec.pool] = claim
    return facts


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
