"""The switchboard: every kopf handler of the operator, each a guard and one delegation.

Read top to bottom, this is the table of contents of what the operator reacts to. The
work is done in one module per controller (provider/, pool/, nodeclaim/,
modeldeployment/, gc.py); handlers only translate between kopf and those functions:
outcomes become status patches, events and retries.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, TypeVar

import kopf

from gpupool import metrics
from gpupool.controllers import gc
from gpupool.controllers.conditions import parse_stamp
from gpupool.controllers.kube import GROUP, VERSION, Kube, load_api_client
from gpupool.controllers.modeldeployment.reconcile import PodPlacement, reconcile_model_deployment
from gpupool.controllers.nodeclaim.reconcile import GiveUp, reconcile_claim
from gpupool.controllers.nodeclaim.registration import NodeInfo, node_info
from gpupool.controllers.nodeclaim.termination import Retry, terminate_claim
from gpupool.controllers.pool.pending import is_unschedulable, pod_demand
from gpupool.controllers.pool.reconcile import reconcile_pool
from gpupool.controllers.provider.refresh import client_for, refresh_provider
from gpupool.controllers.state import OperatorState

log = logging.getLogger(__name__)
T = TypeVar("T")

# How often each kind is looked at again when nothing happens to it.
CLAIM_INTERVAL = float(os.environ.get("GPUPOOL_CLAIM_INTERVAL", "1"))  # seconds
POOL_INTERVAL = float(os.environ.get("GPUPOOL_POOL_INTERVAL", "1"))  # seconds
PROVIDER_INTERVAL = float(os.environ.get("GPUPOOL_PROVIDER_INTERVAL", "5"))  # seconds; refreshInterval gates
MODEL_INTERVAL = float(os.environ.get("GPUPOOL_MODEL_INTERVAL", "2"))  # seconds
GC_INTERVAL = float(os.environ.get("GPUPOOL_GC_INTERVAL", "30"))  # seconds
CLUSTER_NAME = os.environ.get("GPUPOOL_CLUSTER_NAME", "gpupool")


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own finalizer name and annotation prefix, so two operators never fight over objects.
    settings.persistence.finalizer = "gpupool.dev/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="gpupool.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="gpupool.dev")
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    # The CRDs come with the chart: no need to watch CRDs, so no RBAC to read them.
    settings.scanning.disabled = True
    memo.state = OperatorState(kube=Kube(load_api_client()), cluster_name=CLUSTER_NAME)


@kopf.on.cleanup()
async def close_clients(memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState = memo.state
    for handle in state.providers.values():
        await handle.client.aclose()


# --- indexes: what kopf keeps current from its watch streams -----------------------------
# Handlers that read an index take it as a keyword argument, which kopf's callback
# protocols do not list: hence the `type: ignore[arg-type]` on those decorators.
# An indexing function returns {} (not None) when an object stops qualifying: kopf keeps
# the object's previous entry on None, and only an empty mapping replaces it.


@kopf.index("pods")
def unschedulable_gpu_pods(body: kopf.Body, **_: Any) -> dict[str, Any]:
    """pool -> pods that want a GPU of that pool and fit no node."""
    demand = pod_demand(body)
    if demand is None or not is_unschedulable(body):
        return {}
    return {demand.pool: demand}


@kopf.index("pods")
def gpu_pods_by_node(body: kopf.Body, spec: kopf.Spec, **_: Any) -> dict[str, Any]:
    """node -> GPUs requested by the live pods bound to it."""
    node = spec.get("nodeName")
    demand = pod_demand(body)
    phase = (body.get("status") or {}).get("phase")
    if not node or demand is None or phase in ("Succeeded", "Failed"):
        return {}
    return {node: demand.gpus}


@kopf.index("nodes")
def nodes_by_provider_id(body: kopf.Body, **_: Any) -> dict[str, NodeInfo]:
    """providerID -> the Node's name, readiness, labels and taints."""
    info = node_info(body)
    return {} if info is None else {info.provider_id: info}


@kopf.index("pods", labels={"gpupool.dev/model-deployment": kopf.PRESENT})
def model_pods(
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
    demand = pod_demand(body)
    key = (namespace, labels["gpupool.dev/model-deployment"])
    return {key: PodPlacement(node=node, gpus=demand.gpus if demand else 0, ready=ready)}


@kopf.index("deployments", labels={"app.kubernetes.io/managed-by": "gpupool"})
def model_deployments_status(body: kopf.Body, namespace: str | None, name: str, **_: Any) -> dict[Any, Any]:
    """(namespace, name) -> the status of each Deployment gpupool rendered."""
    return {(namespace, name): dict(body.get("status") or {})}


@kopf.index(GROUP, VERSION, "gpunodeclaims")
def node_prices(status: kopf.Status, spec: kopf.Spec, **_: Any) -> dict[str, tuple[float, int]]:
    """node -> (hourly price of its instance, its GPUs)."""
    node = status.get("nodeName")
    if not node:
        return {}
    offer = spec.get("offer") or {}
    return {node: (float(offer.get("pricePerHour") or 0), int(offer.get("gpuCount") or 0))}


@kopf.index(GROUP, VERSION, "gpunodeclaims")
def claim_phases(status: kopf.Status, **_: Any) -> dict[str, str]:
    """phase -> the claims in it, for the claims-by-phase gauge."""
    return {str(status.get("phase") or "Pending"): "claim"}


@kopf.index(GROUP, VERSION, "gpupools")
def pool_specs(name: str, spec: kopf.Spec, **_: Any) -> dict[str, dict[str, Any]]:
    """pool name -> its spec, so claims and models never GET their pool."""
    return {name: dict(spec)}


@kopf.index(GROUP, VERSION, "gpupools")
def degraded_pools(name: str, status: kopf.Status, **_: Any) -> dict[str, dict[str, Any]]:
    """pool name -> its Degraded condition, while it is True."""
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Degraded" and condition.get("status") == "True":
            return {name: dict(condition)}
    return {}


def _first(index: kopf.Index[str, T]) -> dict[str, T]:
    return {key: next(iter(values)) for key, values in index.items() if values}


# --- GpuProvider ---------------------------------------------------------------------------


@kopf.timer(GROUP, VERSION, "gpuproviders", interval=PROVIDER_INTERVAL, initial_delay=0)
async def provider_refresh(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
    with metrics.reconcile_timer("provider"):
        status = await refresh_provider(body, memo.state)
    if status is not None:
        patch.status.update(status)


@kopf.on.delete(GROUP, VERSION, "gpuproviders")
async def provider_deleted(name: str, memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState = memo.state
    claims = await state.kube.list_cluster_objects("gpunodeclaims")
    mine = [c["metadata"]["name"] for c in claims if c["spec"]["offer"]["provider"] == name]
    if mine:
        # Its instances can only be terminated through it: keep it until its claims are gone.
        raise kopf.TemporaryError(
            f"{len(mine)} GpuNodeClaims still use this provider: {', '.join(mine[:5])}", delay=5
        )
    handle = state.providers.pop(name, None)
    if handle is not None:
        await handle.client.aclose()
    metrics.forget_provider(name)


@kopf.timer(GROUP, VERSION, "gpuproviders", interval=GC_INTERVAL, initial_delay=GC_INTERVAL)
async def collect_orphaned_instances(name: str, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    state: OperatorState = memo.state
    handle = state.providers.get(name)
    if handle is None:
        return
    with metrics.reconcile_timer("gc"):
        terminated = await gc.collect_orphans(state, [handle])
    for instance_id in terminated:
        logger.warning(f"terminated orphaned instance {instance_id}: its GpuNodeClaim no longer exists")


# --- GpuPool -------------------------------------------------------------------------------


@kopf.timer(GROUP, VERSION, "gpupools", interval=POOL_INTERVAL, initial_delay=0)  # type: ignore[arg-type]
async def pool_reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    unschedulable_gpu_pods: kopf.Index[str, Any],
    gpu_pods_by_node: kopf.Index[str, int],
    claim_phases: kopf.Index[str, str],
    **_: Any,
) -> None:
    name = body["metadata"]["name"]
    pending = list(unschedulable_gpu_pods.get(name, []))
    gpus_by_node = {node: sum(values) for node, values in gpu_pods_by_node.items()}
    with metrics.reconcile_timer("pool"):
        outcome = await reconcile_pool(body, pending, gpus_by_node, memo.state)
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    patch.status.update(outcome.status)
    status = outcome.status
    metrics.set_pool(
        name, status.get("gpusTotal", 0), status.get("gpusAllocated", 0), status.get("costPerHour", 0.0)
    )
    metrics.set_claims_by_phase({phase: len(claims) for phase, claims in claim_phases.items()})


@kopf.on.delete(GROUP, VERSION, "gpupools", optional=True)
def pool_deleted(name: str, memo: kopf.Memo, **_: Any) -> None:
    # Its claims go by owner reference, each through its own finalizer.
    memo.state.pending_window.pop(name, None)
    metrics.forget_pool(name)


# --- GpuNodeClaim --------------------------------------------------------------------------


@kopf.timer(GROUP, VERSION, "gpunodeclaims", interval=CLAIM_INTERVAL, initial_delay=0)  # type: ignore[arg-type]
async def claim_reconcile(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    nodes_by_provider_id: kopf.Index[str, NodeInfo],
    pool_specs: kopf.Index[str, dict[str, Any]],
    **_: Any,
) -> None:
    state: OperatorState = memo.state
    if body["metadata"].get("deletionTimestamp"):
        return
    pools: dict[str, dict[str, Any]] = _first(pool_specs)
    try:
        with metrics.reconcile_timer("nodeclaim"):
            status = await reconcile_claim(body, state, _first(nodes_by_provider_id), pools)
    except GiveUp as gave_up:
        kopf.warn(body, reason=gave_up.reason, message=gave_up.message)
        patch.status["phase"] = "Failed"
        await state.kube.delete_cluster_object("gpunodeclaims", body["metadata"]["name"])
        return
    previous = (body.get("status") or {}).get("phase")
    if status.get("phase") != previous and status.get("phase") in ("Launched", "Registered", "Ready"):
        kopf.info(body, reason=status["phase"], message=_phase_message(status))
        if status["phase"] == "Ready" and status.get("launchedAt"):
            seconds = time.time() - parse_stamp(str(status["launchedAt"]))
            metrics.observe_launch_to_ready(body["spec"]["offer"]["provider"], seconds)
    patch.status.update(status)


def _phase_message(status: dict[str, Any]) -> str:
    if status["phase"] == "Launched":
        return f"instance {status.get('instanceId')} launched"
    return f"node {status.get('nodeName')} is {status['phase'].lower()}"


@kopf.on.delete(GROUP, VERSION, "gpunodeclaims")  # type: ignore[arg-type]
async def claim_deleted(
    body: kopf.Body, memo: kopf.Memo, nodes_by_provider_id: kopf.Index[str, NodeInfo], **_: Any
) -> None:
    await client_for(body["spec"]["offer"]["provider"], memo.state)
    try:
        with metrics.reconcile_timer("nodeclaim"):
            await terminate_claim(body, memo.state, _first(nodes_by_provider_id))
    except Retry as retry:
        raise kopf.TemporaryError(str(retry), delay=retry.delay) from retry


# --- ModelDeployment -----------------------------------------------------------------------


@kopf.timer(GROUP, VERSION, "modeldeployments", interval=MODEL_INTERVAL, initial_delay=0)  # type: ignore[arg-type]
async def model_deployment_reconcile(
    body: kopf.Body,
    name: str,
    namespace: str,
    patch: kopf.Patch,
    memo: kopf.Memo,
    model_pods: kopf.Index[Any, PodPlacement],
    model_deployments_status: kopf.Index[Any, Any],
    node_prices: kopf.Index[str, tuple[float, int]],
    pool_specs: kopf.Index[str, dict[str, Any]],
    degraded_pools: kopf.Index[str, dict[str, Any]],
    **_: Any,
) -> None:
    if body["metadata"].get("deletionTimestamp"):
        return
    deployment = next(iter(model_deployments_status.get((namespace, name), [])), None)
    pools: dict[str, dict[str, Any]] = _first(pool_specs)
    degraded: dict[str, dict[str, Any]] = _first(degraded_pools)
    with metrics.reconcile_timer("modeldeployment"):
        outcome = await reconcile_model_deployment(
            body,
            memo.state,
            list(model_pods.get((namespace, name), [])),
            deployment,
            _first(node_prices),
            pools,
            degraded,
        )
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    patch.status.update(outcome.status)
    status = outcome.status
    metrics.set_model_deployment(
        namespace or "",
        name,
        status.get("costPerHour", 0.0),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
    )


@kopf.on.delete(GROUP, VERSION, "modeldeployments", optional=True)
def model_deployment_deleted(uid: str, name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    # Its objects go by owner reference and its nodes by consolidation; only memory is ours.
    memo.state.applied.pop(uid, None)
    metrics.forget_model_deployment(namespace or "", name)
