"""What a ModelDeployment should look like now: plan (or keep the plan), render, report.

Pure: given the object, its pool, the offers and what its pods and Deployment show, it
returns the status to have, the objects to apply and the events to post. The controller
(`controller.py`) does the reads and the writes. Nothing here creates nodes: the pods are
the demand, and the pool answers it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gpupool.api import GpuPoolSpec, ModelDeploymentSpec
from gpupool.catalog import Offer, Unavailable
from gpupool.controllers.conditions import parse_stamp, put_condition
from gpupool.controllers.modeldeployment.model_source import ModelSource
from gpupool.controllers.modeldeployment.plan import (
    KeptPlacement,
    gpus_to_exclude,
    inputs_hash,
    kept_from_plan,
    replicas_within_budget,
)
from gpupool.controllers.outcome import Outcome
from gpupool.planner import UnknownModel, plan_deployment, pool_constraints_from_spec, request_from_spec
from gpupool.serving import RenderError, ServingInput, render_all, selector_string, serving_input_from_spec


@dataclass(frozen=True, slots=True)
class PodPlacement:
    """Where one of the model's pods runs, as kept in the operator's pod index."""

    node: str
    gpus: int
    ready: bool


@dataclass(frozen=True)
class ModelView:
    """Everything the decision reads, gathered by the controller from memory."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: ModelDeploymentSpec
    status: Mapping[str, Any]
    pool_spec: GpuPoolSpec | None
    pool_degraded: Mapping[str, Any] | None
    offers: Callable[[], Sequence[Offer]]
    unavailable: Unavailable
    pods: Sequence[PodPlacement]
    deployment_status: Mapping[str, Any] | None
    node_price: Callable[[str], tuple[float, int]]
    now: float
    replan_after: float
    # Why the pool found no offer that can hold this model's pending pods (CPU, memory, disk,
    # taints, selectors), or None.
    unplaced: str | None = None
    # The renderer (the controller passes one that remembers its last rendering).
    render: Callable[[ServingInput], list[dict[str, Any]]] = render_all
    # The model's architecture as the Hub described it, or why it could not.
    source: ModelSource = field(default_factory=ModelSource)
    # How soon an unresolved model is asked about again (the Hub client's failure cache).
    retry_unresolved_after: float = 60.0


@dataclass
class Decision:
    outcome: Outcome
    objects: list[dict[str, Any]] = field(default_factory=list)
    planned: bool = False


def endpoint(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc:8000/v1"


def occupied_cost(pods: Sequence[PodPlacement], node_price: Callable[[str], tuple[float, int]]) -> float:
    """Hourly cost of the GPUs the pods hold: each node's price shared by GPU."""
    cost = 0.0
    for pod in pods:
        price, gpus = node_price(pod.node)
        if gpus:
            cost += price * min(pod.gpus, gpus) / gpus
    return round(cost, 4)


def _starved_since(status: Mapping[str, Any]) -> float | None:
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "Degraded"
            and condition.get("status") == "True"
            and condition.get("reason") in ("InsufficientCapacity", "NoNodeFits")
        ):
            return parse_stamp(str(condition["lastTransitionTime"]))
    return None


def decide(view: ModelView) -> Decision:
    status: dict[str, Any] = {
        "conditions": list(view.status.get("conditions") or []),
        "observedGeneration": view.generation,
        "endpoint": endpoint(view.name, view.namespace),
    }
    outcome = Outcome(status)
    decision = Decision(outcome)
    spec = view.spec
    generation = view.generation
    pool_name = view.spec.pool

    if view.pool_spec is None:
        _not_ready(
            outcome, generation, "PoolNotFound",
            f"spec.pool: GpuPool {pool_name!r} does not exist; create it or name another pool",
        )  # fmt: skip
        return decision
    if view.source.unresolved is not None:
        why, message = view.source.unresolved
        if not _already_says(view.status, "ModelUnresolved", message):
            outcome.warn("ModelUnresolved", f"{why}: {message}")
        _not_ready(outcome, generation, "ModelUnresolved", message)
        outcome.requeue_in(view.retry_unresolved_after)
        return decision
    try:
        request = request_from_spec(spec, architecture=view.source.architecture)
    except UnknownModel as error:
        _not_ready(
            outcome, generation, "UnknownModel", f"spec.model: {error}; describe it in spec.architecture"
        )
        return decision
    except ValueError as error:
        _not_ready(outcome, generation, "InvalidSpec", str(error))
        return decision
    constraints = pool_constraints_from_spec(view.pool_spec, name=pool_name)

    kept = KeptPlacement.from_status(view.status.get("placement"), view.status.get("costPerMillionTokens"))
    excluded: tuple[str, ...] = kept.excluded_gpus if kept else ()
    if kept is not None:
        given_up = gpus_to_exclude(kept, _starved_since(view.status), view.now, view.replan_after)
        if given_up is not None:
            excluded = given_up
            outcome.warn(
                "Replanning",
                f"no {kept.gpu} capacity for {view.replan_after:.0f}s: planning again without "
                f"{', '.join(given_up)}",
            )
    digest = inputs_hash(request, constraints, excluded)
    if kept is None or kept.inputs_hash != digest:
        offers = view.offers()
        if not offers:
            # Not an error yet: providers list their offers within one refresh.
            message = f"no ready GpuProvider of pool {pool_name!r} has listed offers yet"
            put_condition(status, "Ready", False, "WaitingForOffers", message, generation)
            put_condition(status, "Progressing", True, "WaitingForOffers", message, generation)
            return decision
        allowed = [o for o in offers if o.gpu not in excluded]
        plan = plan_deployment(request, allowed, constraints, unavailable=view.unavailable, now=view.now)
        if not plan.feasible and excluded and kept is not None:
            # Every other GPU model is out of reach too: start over from the full list.
            excluded = ()
            digest = inputs_hash(request, constraints, excluded)
            plan = plan_deployment(request, offers, constraints, unavailable=view.unavailable, now=view.now)
        if not plan.feasible:
            already = next((c for c in status["conditions"] if c.get("type") == "Degraded"), None)
            if not already or already.get("message") != plan.message:
                outcome.warn(plan.reason or "NoPlacement", plan.message)
            _not_ready(outcome, generation, plan.reason or "NoPlacement", plan.message)
            return decision
        fresh = kept_from_plan(plan, digest, excluded)
        if kept is None or fresh.to_status() | {"inputsHash": ""} != kept.to_status() | {"inputsHash": ""}:
            outcome.info(
                "Planned",
                f"{fresh.gpus_per_replica}x {fresh.gpu} per replica (tensor parallel "
                f"{fresh.tensor_parallel_size}), cheapest at {fresh.provider} {fresh.instance_type}, "
                f"${fresh.price_per_hour:.2f}/h per instance",
            )
        kept = fresh
        decision.planned = True

    if kept.pipeline_parallel_size > 1:
        # NOT BUILT YET (issue 12, item 5): the planner places a replica across nodes and the
        # renderer writes its LeaderWorkerSet, but the operator neither applies LeaderWorkerSets
        # nor buys a group's nodes together, so it applies nothing and buys nothing.
        status.update(placement=kept.to_status())
        _not_ready(
            outcome, generation, "MultiNodeNotServedYet",
            f"placed on {kept.pipeline_parallel_size} nodes of {kept.gpu} per replica (tensor parallel "
            f"{kept.tensor_parallel_size} x pipeline parallel {kept.pipeline_parallel_size}); serving a "
            "replica across nodes is not built yet: limit spec.gpu.types to GPUs one node can hold it on",
        )  # fmt: skip
        return decision
    wanted = spec.replicas
    replicas = replicas_within_budget(kept, wanted, spec.max_hourly_cost)
    if replicas < wanted:
        spec = spec.model_copy(update={"replicas": replicas})
    try:
        inputs = serving_input_from_spec(
            view.name, view.namespace, view.uid, generation, spec,
            gpu_types=[kept.gpu], gpus_per_replica=kept.gpus_per_replica,
            tensor_parallel_size=kept.tensor_parallel_size, max_model_len=kept.max_model_len,
            model_size_gib=kept.weights_gib, pool_name=pool_name,
            pool_taints=view.pool_spec.taints,
        )  # fmt: skip
        decision.objects = view.render(inputs)
    except RenderError as error:
        _not_ready(outcome, generation, "InvalidSpec", str(error))
        return decision

    deployment = view.deployment_status or {}
    ready = int(deployment.get("readyReplicas") or 0)
    updated = int(deployment.get("updatedReplicas") or 0)
    status.update(
        placement=kept.to_status(),
        replicas=int(deployment.get("replicas") or 0),
        readyReplicas=ready,
        selector=selector_string(inputs),
        costPerHour=occupied_cost(view.pods, view.node_price),
    )
    if kept.cost_per_million_tokens is not None:
        status["costPerMillionTokens"] = round(kept.cost_per_million_tokens, 4)
    _report(outcome, view, kept, wanted, replicas, ready, updated)
    return decision


def _report(
    outcome: Outcome,
    view: ModelView,
    kept: KeptPlacement,
    wanted: int,
    replicas: int,
    ready: int,
    updated: int,
) -> None:
    status = outcome.status
    generation = view.generation
    pool_name = view.spec.pool
    starved = view.pool_degraded
    if view.unplaced and ready < replicas:
        # The pool can buy nothing its pods fit on (CPU, memory, a taint): no wait will help.
        message = f"GpuPool {pool_name} has no offer whose node can hold its pods: {view.unplaced}"[:1000]
        already = next((c for c in view.status.get("conditions") or () if c.get("type") == "Degraded"), None)
        if not already or already.get("message") != message:
            outcome.warn("NoNodeFits", message)
        put_condition(status, "Degraded", True, "NoNodeFits", message, generation)
    elif replicas < wanted:
        put_condition(
            status, "Degraded", True, "BudgetExceeded",
            f"spec.maxHourlyCost: {wanted} replicas would cost ${kept.hourly_cost(wanted):.2f}/h, over the "
            f"budget of ${view.spec.max_hourly_cost:.2f}/h; running {replicas}. Raise the budget or scale down.",
            generation,
        )  # fmt: skip
    elif ready < replicas and starved is not None:
        # The pods wait for nodes the pool cannot buy: say so here, where the user looks.
        put_condition(
            status, "Degraded", True, "InsufficientCapacity",
            f"GpuPool {pool_name}: {starved.get('message', '')}"[:1000], generation,
        )  # fmt: skip
    else:
        put_condition(
            status, "Degraded", False, "Placed", "a placement fits the model and the budget", generation
        )
    if ready >= replicas and updated >= replicas:
        put_condition(
            status, "Progressing", False, "RolloutComplete", f"{ready}/{replicas} replicas ready", generation
        )
    else:
        put_condition(
            status, "Progressing", True, "RollingOut",
            f"{ready}/{replicas} replicas ready, {updated} updated; the pool provisions nodes for the rest",
            generation,
        )  # fmt: skip
    if replicas == 0:
        put_condition(status, "Ready", True, "ScaledToZero", "no replicas requested", generation)
    elif ready > 0:
        put_condition(
            status, "Ready", True, "Serving", f"{ready}/{replicas} replicas serving at {status['endpoint']}",
            generation,
        )  # fmt: skip
    else:
        put_condition(
            status, "Ready", False, "WaitingForReplicas", f"{ready}/{replicas} replicas ready", generation
        )


def _already_says(status: Mapping[str, Any], reason: str, message: str) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("reason") == reason and c.get("message") == message
        for c in status.get("conditions") or []
    )


def _not_ready(outcome: Outcome, generation: int, reason: str, message: str) -> None:
    status = outcome.status
    put_condition(status, "Ready", False, reason, message, generation)
    put_condition(status, "Degraded", True, reason, message, generation)
