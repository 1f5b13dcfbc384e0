"""The ModelDeployment controller's imperative shell: one instance per object, in its daemon.

It gathers what `decide` reads from memory (kopf's indexes, the providers' offers), applies
the rendered objects only when they differ from what the cluster has, writes the status
only when it changed, and posts the events. What it remembers (the drift keys of the
objects it applied) lives and dies with the daemon, so nothing grows when objects go.

Re-applying is driven by the cluster, not a clock. Each rendered object carries the hash
of its rendering (`gpupool.dev/rendered-hash`); the managed-objects index reports, per
object, that hash and a drift key (the generation, or a hash of the spec for a Service).
An object is applied when it is missing, when its hash is not the rendering's, or when its
drift key moved away from the one our own apply produced: a person's edit, put back at once.
After a restart the drift keys the objects have are taken as ours when their hash matches,
so a restart applies nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import kopf

from gpupool import metrics
from gpupool.api import GpuPoolSpec, ModelDeploymentSpec
from gpupool.catalog import Offer
from gpupool.controllers.modeldeployment.decide import ModelView, PodPlacement, decide
from gpupool.controllers.modeldeployment.model_source import model_source
from gpupool.controllers.state import OperatorState
from gpupool.controllers.writes import StatusWriter
from gpupool.serving import ServingInput, render_all

RENDERED_HASH = "gpupool.dev/rendered-hash"
CREATED = "<absent>"  # the "version" of an object the index does not have


@dataclass(frozen=True, slots=True)
class ManagedObject:
    """One object gpupool rendered, as the managed-objects index keeps it."""

    kind: str
    rendered_hash: str
    drift_key: str
    resource_version: str
    status: Mapping[str, Any]


def drift_key(body: Mapping[str, Any]) -> str:
    """What changes when someone edits the object: its generation, else a hash of its spec."""
    generation = (body.get("metadata") or {}).get("generation")
    if generation:
        return f"g{generation}"
    spec = json.dumps(body.get("spec") or {}, sort_keys=True, default=str)
    return "s" + hashlib.sha256(spec.encode()).hexdigest()[:16]


def managed_object(body: Mapping[str, Any]) -> ManagedObject:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return ManagedObject(
        kind=str(body.get("kind") or ""),
        rendered_hash=str(annotations.get(RENDERED_HASH) or ""),
        drift_key=drift_key(body),
        resource_version=str((body.get("metadata") or {}).get("resourceVersion") or ""),
        status=dict(body.get("status") or {}),
    )


def with_rendered_hash(obj: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The object with the hash of its rendering among its annotations, and that hash."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
    meta = dict(obj["metadata"])
    meta["annotations"] = {**(meta.get("annotations") or {}), RENDERED_HASH: digest}
    return {**obj, "metadata": meta}, digest


class ModelDeploymentController:
    """Reconciles one ModelDeployment; `reconcile` is called by its loop."""

    def __init__(self, body: kopf.Body, state: OperatorState) -> None:
        self.body = body
        self.state = state
        meta = body["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.key = (self.namespace, self.name)
        self.writer = StatusWriter(state.kube, "modeldeployments", self.name, self.namespace)
        self.ours: dict[str, str] = {}  # kind -> drift key our last apply produced
        # kind -> resourceVersion the object had when we applied over it: while the index
        # still shows that version, the watch has not delivered our apply yet.
        self.superseded: dict[str, str] = {}
        self.rendered: tuple[ServingInput, list[dict[str, Any]]] | None = None

    async def reconcile(
        self,
        pods: Sequence[PodPlacement],
        managed: Mapping[str, ManagedObject],
        pool_spec: GpuPoolSpec | None,
        pool_degraded: Mapping[str, Any] | None,
        node_price: Callable[[str], tuple[float, int]],
    ) -> float | None:
        body = self.body
        if body["metadata"].get("deletionTimestamp"):
            return None
        state = self.state
        spec = ModelDeploymentSpec.from_k8s(body.get("spec") or {})
        providers = tuple(pool_spec.providers) if pool_spec is not None else ()

        def offers() -> Sequence[Offer]:
            return state.offers(providers)

        deployment = managed.get("Deployment")
        source = await model_source(state.hub, state.kube, self.namespace, spec)
        view = ModelView(
            name=self.name,
            namespace=self.namespace,
            uid=body["metadata"]["uid"],
            generation=int(body["metadata"].get("generation") or 1),
            spec=spec,
            status=self.writer.current(body),
            pool_spec=pool_spec,
            pool_degraded=pool_degraded,
            offers=offers,
            unavailable=state.unavailable,
            pods=pods,
            deployment_status=deployment.status if deployment else None,
            node_price=node_price,
            now=time.time(),
            replan_after=state.settings.replan_after_seconds,
            unplaced=state.unplaced_models.get(spec.pool, {}).get(self.key),
            render=self._render,
            source=source,
            retry_unresolved_after=state.settings.hub_failure_cache_seconds,
        )
        with metrics.reconcile_timer("modeldeployment"):
            decision = decide(view)
            for obj in decision.objects:
                await self._apply_if_drifted(obj, managed.get(obj["kind"]))
        for event in decision.outcome.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        status = decision.outcome.status
        await self.writer.write(body, status)
        metrics.set_model_deployment(
            self.namespace,
            self.name,
            status.get("costPerHour", 0.0),
            status.get("replicas", 0),
            status.get("readyReplicas", 0),
        )
        # Offers may appear, the budget or capacity may change: look again at the resync.
        return decision.outcome.requeue

    def _render(self, inputs: ServingInput) -> list[dict[str, Any]]:
        """The rendered objects, their hashes among their annotations; the last rendering
        again when the inputs are the same (most reconciles: a pod became ready)."""
        if self.rendered is None or self.rendered[0] != inputs:
            self.rendered = (inputs, [with_rendered_hash(obj)[0] for obj in render_all(inputs)])
        return self.rendered[1]

    async def _apply_if_drifted(self, obj: Mapping[str, Any], live: ManagedObject | None) -> None:
        digest = str(obj["metadata"]["annotations"][RENDERED_HASH])
        kind = str(obj["kind"])
        seen = live.resource_version if live is not None else CREATED
        if self.superseded.get(kind) == seen:
            return  # our last apply is still on its way through the watch
        self.superseded.pop(kind, None)
        if live is not None and live.rendered_hash == digest:
            ours = self.ours.setdefault(kind, live.drift_key)  # after a restart: take it as ours
            if ours == live.drift_key:
                return
        applied = await self.state.kube.apply(obj)
        self.ours[kind] = drift_key(applied)
        self.superseded[kind] = seen
