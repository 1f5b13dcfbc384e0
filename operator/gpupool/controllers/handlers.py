"""The switchboard: every kopf handler of the operator, each a guard and one delegation.

Read top to bottom, this is the table of contents of what the operator reacts to:

- indexes (`indexes.py`): what kopf keeps current from its watch streams, keyed the way they
  are read;
- wake-ups: watch handlers that wake the loops whose objects depend on what changed;
- one daemon per GpuProvider, GpuPool, GpuNodeClaim and ModelDeployment, each running its
  controller's `reconcile` whenever woken (`loop.reconcile_forever`);
- deletion handlers, for what lives outside the cluster (instances) or in memory.

The work is done in one folder per controller (provider/, pool/, nodeclaim/,
modeldeployment/); handlers only translate between kopf and those classes.

Every function here is `async def`, even the ones that never await: kopf runs a plain `def`
in a thread pool, a thread hop for each of the thousands of watch events a burst brings.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any

import kopf

from gpupool import metrics
from gpupool.api import GpuNodeClaim, GpuPoolSpec
from gpupool.api.deployment import DEFAULT_POOL
from gpupool.controllers import indexes  # importing it registers the indexes with kopf
from gpupool.controllers.kube import FINALIZER, GROUP, VERSION
from gpupool.controllers.loop import reconcile_forever
from gpupool.controllers.modeldeployment.controller import (
    ManagedObject,
    ModelDeploymentController,
)
from gpupool.controllers.nodeclaim.controller import ClaimController
from gpupool.controllers.nodeclaim.registration import NodeInfo, status_behind_node
from gpupool.controllers.nodeclaim.termination import Retry, terminate_claim
from gpupool.controllers.pool.controller import PoolController
from gpupool.controllers.pool.pending import MODEL_LABEL, pod_pool
from gpupool.controllers.provider.controller import ProviderController
from gpupool.controllers.provider.refresh import client_for
from gpupool.controllers.state import OperatorState
from gpupool.planner.resources import Resources
from gpupool.providers.errors import ProviderError
from gpupool.settings import OperatorSettings

log = logging.getLogger(__name__)
Idx = kopf.Index[Any, Any]


class NoDiffBase(kopf.DiffBaseStorage):
    """kopf's last-handled-configuration, not kept: gpupool has no create/update handlers.

    The daemons read the live spec, so kopf needs no diff base to tell what changed; keeping
    one would cost a PATCH per object created and per spec change, and a deep copy of the
    body on every watch event, for nothing."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> Any:
        return {}

    def fetch(self, *, body: kopf.Body) -> Any:
        return {}

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our own finalizer name and annotation prefix, so two operators never fight over objects.
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="gpupool.dev")
    settings.persistence.diffbase_storage = NoDiffBase()
    settings.posting.level = logging.INFO
    # Events come only from kopf.event/info/warn calls, never from log lines: kopf would post
    # "Handler ... succeeded." as an Event for every watch event handled, a write each.
    settings.posting.loggers = False
    settings.watching.server_timeout = 300
    settings.batching.error_delays = [1, 2, 5, 10, 30, 60]
    # The CRDs come with the chart: no need to watch CRDs, so no RBAC to read them.
    settings.scanning.disabled = True
    if "state" not in memo:
        memo.state = OperatorState.create(OperatorSettings())


@kopf.on.cleanup()
async def close_clients(memo: kopf.Memo, **_: Any) -> None:
    state: OperatorState = memo.state
    for handle in state.providers.values():
        await handle.client.aclose()
    await state.kube.aclose()


def _state(memo: kopf.Memo) -> OperatorState:
    state: OperatorState = memo.state
    return state


async def _loop(
    key: Hashable,
    reconcile: Callable[[], Awaitable[float | None]],
    state: OperatorState,
    stopped: kopf.DaemonStopped,
    *,
    resync: float,
    settle: float = 0.0,
) -> None:
    """One object's loop, with the operator's wake-ups and error backoff."""
    await reconcile_forever(
        key,
        reconcile,
        wakeups=state.wakeups,
        stopped=stopped,
        resync=resync,
        settle=settle,
        backoff_min=state.settings.error_backoff_min_seconds,
        backoff_max=state.settings.error_backoff_max_seconds,
    )


def _first(index: Idx, key: Hashable) -> Any:
    return next(iter(index.get(key, ())), None)


# --- wake-ups: a change wakes the loops that read what changed ---------------------------


@kopf.on.event("pods")
async def pod_changed(
    body: kopf.Body, labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    wakeups = _state(memo).wakeups
    pool = pod_pool(body.get("spec") or {})
    if pool is not None:
        wakeups.wake(("pool", pool))
    model = labels.get(MODEL_LABEL)
    if model:
        wakeups.wake(("model", namespace, model))


@kopf.on.event("nodes")  # type: ignore[arg-type]
async def node_changed(body: kopf.Body, memo: kopf.Memo, claim_index: Idx, **_: Any) -> None:
    provider_id = (body.get("spec") or {}).get("providerID")
    claim = _first(claim_index, (indexes.PROVIDER_ID, provider_id)) if provider_id else None
    if claim is not None:
        _state(memo).wakeups.wake(("claim", claim))


@kopf.on.event(GROUP, VERSION, "gpunodeclaims")  # type: ignore[arg-type]
async def claim_changed(
    name: str,
    spec: kopf.Spec,
    status: kopf.Status,
    memo: kopf.Memo,
    pod_index: Idx,
    claim_index: Idx,
    nodes_by_provider_id: Idx,
    **_: Any,
) -> None:
    wakeups = _state(memo).wakeups
    wakeups.wake(("pool", spec.get("pool")))
    # A Node whose events came before this claim's providerID was indexed woke nobody.
    provider_id = status.get("providerID")
    if provider_id and status_behind_node(status, _first(nodes_by_provider_id, provider_id)):
        wakeups.wake(("claim", name))
    node_name = status.get("nodeName")
    if node_name:
        wakeups.wake_all(
            ("model", ns, md) for ns, md in pod_index.get((indexes.MODEL_ON_NODE, node_name), ())
        )
    metrics.set_claims_by_phase(
        {phase: len(claim_index.get((indexes.PHASE, phase), ())) for phase in metrics.CLAIM_PHASES}
    )


@kopf.on.event(GROUP, VERSION, "gpupools")  # type: ignore[arg-type]
async def pool_changed(name: str, memo: kopf.Memo, models_by_pool: Idx, **_: Any) -> None:
    wakeups = _state(memo).wakeups
    wakeups.wake(("pool", name))
    wakeups.wake_all(("model", ns, md) for ns, md in models_by_pool.get(name, ()))


@kopf.on.event(GROUP, VERSION, "gpuproviders")
async def provider_changed(name: str, memo: kopf.Memo, **_: Any) -> None:
    _state(memo).wakeups.wake(("provider", name))


@kopf.on.event(GROUP, VERSION, "modeldeployments")
async def model_changed(name: str, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    _state(memo).wakeups.wake(("model", namespace, name))


@kopf.on.event("deployments", labels=indexes.MANAGED)
@kopf.on.event("services", labels=indexes.MANAGED)
@kopf.on.event("poddisruptionbudgets", labels=indexes.MANAGED)
async def managed_object_changed(
    labels: kopf.Labels, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    model = labels.get(MODEL_LABEL)
    if model:
        _state(memo).wakeups.wake(("model", namespace, model))


# --- GpuProvider -----------------------------------------------------------------------------

DAEMON = {"cancellation_timeout": 10.0}


@kopf.daemon(GROUP, VERSION, "gpuproviders", **DAEMON)  # type: ignore[arg-type]
async def provider_daemon(
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    pools_by_provider: Idx,
    models_by_pool: Idx,
    claim_index: Idx,
    **_: Any,
) -> None:
    state = _state(memo)
    controller = ProviderController(body, state)
    name = controller.name

    def wake_buyers() -> None:
        for pool in pools_by_provider.get(name, ()):
            state.wakeups.wake(("pool", pool))
            state.wakeups.wake_all(("model", ns, md) for ns, md in models_by_pool.get(pool, ()))
        for claim, _uid in claim_index.get((indexes.PROVIDER, name), ()):
            state.wakeups.wake(("claim", claim))

    def wake_claims(instance_ids: Iterable[str]) -> None:
        for instance_id in instance_ids:
            claim = _first(claim_index, (indexes.INSTANCE, name, instance_id))
            if claim is not None:
                state.wakeups.wake(("claim", claim))

    def claim_uids() -> list[str]:
        return [uid for _claim, uid in claim_index.get((indexes.PROVIDER, name), ())]

    await _loop(
        ("provider", name),
        lambda: controller.reconcile(wake_buyers, wake_claims, claim_uids),
        state,
        stopped,
        resync=state.settings.provider_liveness_seconds,
    )


@kopf.on.delete(GROUP, VERSION, "gpuproviders")  # type: ignore[arg-type]
async def provider_deleted(name: str, memo: kopf.Memo, claim_index: Idx, **_: Any) -> None:
    state = _state(memo)
    handle = state.providers.get(name)
    if handle is not None:
        handle.deleting = True
    mine = sorted(claim for claim, _uid in claim_index.get((indexes.PROVIDER, name), ()))
    if mine:
        # Its instances can only be terminated through it: keep it until its claims are gone.
        raise kopf.TemporaryError(
            f"{len(mine)} GpuNodeClaims still use this provider: {', '.join(mine[:5])}", delay=5
        )
    handle = state.providers.pop(name, None)
    if handle is not None:
        await handle.client.aclose()
    metrics.forget_provider(name)


# --- GpuPool ---------------------------------------------------------------------------------


@kopf.daemon(GROUP, VERSION, "gpupools", **DAEMON)  # type: ignore[arg-type]
async def pool_daemon(
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    pod_index: Idx,
    nodes_by_provider_id: Idx,
    claim_index: Idx,
    provider_names: Idx,
    **_: Any,
) -> None:
    state = _state(memo)
    controller = PoolController(body, state)
    name = controller.name

    def gpus_on_node(node: str) -> int:
        return sum(usage.gpus for usage in pod_index.get((indexes.USAGE, node), ()))

    def used_on_node(node: str) -> Resources:
        return sum((usage.requests for usage in pod_index.get((indexes.USAGE, node), ())), Resources())

    def node_of(claim: GpuNodeClaim) -> NodeInfo | None:
        provider_id = claim.status.provider_id
        info: NodeInfo | None = _first(nodes_by_provider_id, provider_id) if provider_id else None
        return info

    def busy(node: str) -> bool:
        return (indexes.WORKLOAD, node) in pod_index

    try:
        await _loop(
            ("pool", name),
            lambda: controller.reconcile(
                list(pod_index.get((indexes.PENDING, name), ())),
                list(claim_index.get((indexes.POOL, name), ())),
                gpus_on_node,
                used_on_node,
                provider_names.__contains__,
                node_of,
                busy,
            ),
            state,
            stopped,
            resync=state.settings.pool_resync_seconds,
            # A burst of pod bindings is one status write, not one per pod.
            settle=0.5,
        )
    finally:
        controller.forget()


@kopf.on.delete(GROUP, VERSION, "gpupools", optional=True)
async def pool_deleted(name: str, **_: Any) -> None:
    # Its claims go by owner reference, each through its own finalizer.
    metrics.forget_pool(name)


# --- GpuNodeClaim ----------------------------------------------------------------------------


@kopf.daemon(GROUP, VERSION, "gpunodeclaims", **DAEMON)  # type: ignore[arg-type]
async def claim_daemon(
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    nodes_by_provider_id: Idx,
    pool_specs: Idx,
    provider_names: Idx,
    **_: Any,
) -> None:
    state = _state(memo)
    controller = ClaimController(body, state)

    class Nodes:
        """The node index seen as providerID -> NodeInfo."""

        def get(self, provider_id: str) -> NodeInfo | None:
            info: NodeInfo | None = _first(nodes_by_provider_id, provider_id)
            return info

    nodes = Nodes()
    await _loop(
        ("claim", controller.name),
        lambda: controller.reconcile(
            nodes,  # type: ignore[arg-type]
            # A claim outlives its pool only while it terminates: the API's defaults then.
            _first(pool_specs, body["spec"]["pool"]) or GpuPoolSpec(),
            provider_names.__contains__,
        ),
        state,
        stopped,
        resync=state.settings.claim_resync_seconds,
        # A Node joins NotReady and turns Ready a moment later: one status write for both.
        settle=0.2,
    )


@kopf.on.delete(GROUP, VERSION, "gpunodeclaims")  # type: ignore[arg-type]
async def claim_deleted(body: kopf.Body, memo: kopf.Memo, nodes_by_provider_id: Idx, **_: Any) -> None:
    state = _state(memo)
    claim = GpuNodeClaim.from_k8s(body)
    await client_for(claim.spec.offer.provider, state)
    provider_id = claim.status.provider_id
    node = _first(nodes_by_provider_id, provider_id) if provider_id else None
    try:
        with metrics.reconcile_timer("nodeclaim"):
            await terminate_claim(claim, state, node)
    except Retry as retry:
        raise kopf.TemporaryError(str(retry), delay=retry.delay) from retry
    except ProviderError as error:
        # The cloud is failing (after the retry loop's own retries): try again soon, not in
        # kopf's default minute, so a teardown finishes shortly after the cloud answers again.
        raise kopf.TemporaryError(f"terminating: {error}", delay=5) from error


# --- ModelDeployment -------------------------------------------------------------------------


@kopf.daemon(GROUP, VERSION, "modeldeployments", **DAEMON)  # type: ignore[arg-type]
async def model_daemon(
    body: kopf.Body,
    memo: kopf.Memo,
    stopped: kopf.DaemonStopped,
    pod_index: Idx,
    managed_deployments: Idx,
    managed_services: Idx,
    managed_pdbs: Idx,
    claim_index: Idx,
    pool_specs: Idx,
    degraded_pools: Idx,
    **_: Any,
) -> None:
    state = _state(memo)
    controller = ModelDeploymentController(body, state)
    key = controller.key

    def node_price(node: str) -> tuple[float, int]:
        price: tuple[float, int] = _first(claim_index, (indexes.NODE_PRICE, node)) or (0.0, 0)
        return price

    def managed() -> dict[str, ManagedObject]:
        found = (_first(index, key) for index in (managed_deployments, managed_services, managed_pdbs))
        return {obj.kind: obj for obj in found if obj is not None}

    async def reconcile() -> float | None:
        pool = str((body.get("spec") or {}).get("pool", DEFAULT_POOL))
        return await controller.reconcile(
            list(pod_index.get((indexes.MODEL, *key), ())),
            managed(),
            _first(pool_specs, pool),
            _first(degraded_pools, pool),
            node_price,
        )

    await _loop(
        ("model", *key),
        reconcile,
        state,
        stopped,
        resync=state.settings.model_resync_seconds,
        # A rollout is a burst of events (the pod created, scheduled, started, ready; the
        # Deployment's and the PDB's status after each): one reconcile for the burst.
        settle=0.5,
    )


@kopf.on.delete(GROUP, VERSION, "modeldeployments", optional=True)
async def model_deployment_deleted(name: str, namespace: str | None, **_: Any) -> None:
    # Its objects go by owner reference and its nodes by consolidation; its state went with
    # its daemon.
    metrics.forget_model_deployment(namespace or "", name)
