"""One reconcile of a ModelDeployment: plan, render, apply, and report what it serves and costs.

Planning happens once per generation (and again while no plan fits, since offers and
capacity change): re-planning on every tick would move a running model whenever a price
moved. The vLLM objects are server-side applied with force whenever their rendering
changes, and again every REAPPLY_SECONDS so a person's edit of a managed field is put
back. Readiness comes from the Deployment's status, cost from the nodes the pods hold.
Nothing here creates nodes: the pods are the demand, and the pool answers it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpupool.controllers.conditions import put_condition
from gpupool.controllers.outcome import Outcome
from gpupool.controllers.state import OperatorState
from gpupool.planner import (
    Plan,
    UnknownModel,
    plan_deployment,
    pool_constraints_from_spec,
    request_from_spec,
)
from gpupool.serving import RenderError, render_all, selector_labels, serving_input_from_spec

# How often unchanged objects are applied again anyway, to put back a person's edit.
REAPPLY_SECONDS = float(os.environ.get("GPUPOOL_REAPPLY_SECONDS", "60"))


@dataclass
class Applied:
    """What the operator last did for one ModelDeployment (in memory; rebuilt after a restart)."""

    generation: int
    plan: Plan
    rendered_hash: str = ""
    applied_at: float = 0.0


@dataclass(frozen=True, slots=True)
class PodPlacement:
    """Where one of the model's pods runs, as kept in the operator's pod index."""

    node: str
    gpus: int
    ready: bool


def endpoint(name: str, namespace: str) -> str:
    return f"http://{name}.{namespace}.svc:8000/v1"


def placement_status(plan: Plan) -> dict[str, Any]:
    choice = plan.choice
    assert choice is not None and choice.offer is not None
    return {
        "gpu": choice.shape.gpu,
        "gpusPerReplica": choice.shape.gpus_per_replica,
        "tensorParallelSize": choice.shape.tensor_parallel_size,
        "provider": choice.offer.provider,
        "region": choice.offer.region,
        "instanceType": choice.offer.instance_type,
        "capacityType": choice.capacity_type,
        "pricePerHour": round(choice.price_per_hour or 0.0, 4),
    }


def occupied_cost(pods: list[PodPlacement], node_prices: Mapping[str, tuple[float, int]]) -> float:
    """Hourly cost of the GPUs the pods hold: each node's price shared by GPU."""
    cost = 0.0
    for pod in pods:
        price, gpus = node_prices.get(pod.node, (0.0, 0))
        if gpus:
            cost += price * min(pod.gpus, gpus) / gpus
    return round(cost, 4)


async def reconcile_model_deployment(
    body: Mapping[str, Any],
    state: OperatorState,
    pods: list[PodPlacement],
    deployment_status: Mapping[str, Any] | None,
    node_prices: Mapping[str, tuple[float, int]],
    pools: Mapping[str, Mapping[str, Any]],
    pool_degraded: Mapping[str, Mapping[str, Any]] | None = None,
) -> Outcome:
    meta = body["metadata"]
    name, namespace, uid = meta["name"], meta["namespace"], meta["uid"]
    generation = int(meta.get("generation", 1))
    spec = body.get("spec") or {}
    previous = body.get("status") or {}
    status: dict[str, Any] = {
        "conditions": list(previous.get("conditions") or []),
        "observedGeneration": generation,
        "endpoint": endpoint(name, namespace),
    }
    outcome = Outcome(status)
    pool_name = spec.get("pool") or "default"
    pool_degraded = pool_degraded or {}

    pool_spec = pools.get(pool_name)
    if pool_spec is None:
        return _not_ready(
            outcome,
            generation,
            "PoolNotFound",
            f"spec.pool: GpuPool {pool_name!r} does not exist; create it or name another pool",
        )

    applied = state.applied.get(uid)
    if applied is None or applied.generation != generation or not applied.plan.feasible:
        offers = state.offers(tuple(pool_spec.get("providers") or ()))
        if not offers:
            # Not an error yet: providers list their offers within one refresh.
            message = f"no ready GpuProvider of pool {pool_name!r} has listed offers yet"
            put_condition(status, "Ready", False, "WaitingForOffers", message, generation)
            put_condition(status, "Progressing", True, "WaitingForOffers", message, generation)
            return outcome
        try:
            request = request_from_spec(spec)
        except UnknownModel as error:
            return _not_ready(
                outcome, generation, "UnknownModel", f"spec.model: {error}; describe it in spec.architecture"
            )
        except (ValueError, KeyError) as error:
            return _not_ready(outcome, generation, "InvalidSpec", str(error))
        plan = plan_deployment(
            request,
            offers,
            pool_constraints_from_spec(pool_spec, name=pool_name),
            unavailable=state.unavailable,
            now=time.time(),
        )
        if not plan.feasible:
            state.applied.pop(uid, None)
            already = next((c for c in status["conditions"] if c.get("type") == "Degraded"), None)
            if not already or already.get("message") != plan.message:
                outcome.warn(plan.reason or "NoPlacement", plan.message)
            return _not_ready(outcome, generation, plan.reason or "NoPlacement", plan.message)
        if applied is None or applied.plan.to_dict(0) != plan.to_dict(0):
            choice = plan.choice
            assert choice is not None and choice.offer is not None
            outcome.info(
                "Planned",
                f"{plan.replicas} replica(s) on {choice.shape.gpus_per_replica}x {choice.shape.gpu} "
                f"(tensor parallel {choice.shape.tensor_parallel_size}), cheapest at {choice.offer.provider} "
                f"{choice.offer.instance_type}, ${choice.cost_per_hour or 0:.2f}/h",
            )
        applied = Applied(generation=generation, plan=plan)
        state.applied[uid] = applied

    plan = applied.plan
    choice = plan.choice
    assert choice is not None
    memory = plan.memory
    try:
        inputs = serving_input_from_spec(
            name,
            namespace,
            uid,
            generation,
            spec,
            gpu_types=[choice.shape.gpu],
            gpus_per_replica=choice.shape.gpus_per_replica,
            tensor_parallel_size=choice.shape.tensor_parallel_size,
            max_model_len=plan.max_model_len,
            model_size_gib=memory.weights_gib if memory else 0.0,
            pool_name=pool_name,
            pool_taints=list(pool_spec.get("taints") or []),
        )
        objects = render_all(inputs)
    except RenderError as error:
        return _not_ready(outcome, generation, "InvalidSpec", str(error))

    digest = hashlib.sha256(json.dumps(objects, sort_keys=True).encode()).hexdigest()
    now = time.monotonic()
    if digest != applied.rendered_hash or now - applied.applied_at >= REAPPLY_SECONDS:
        for obj in objects:
            await state.kube.apply(obj)
        applied.rendered_hash, applied.applied_at = digest, now

    desired = inputs.replicas
    ready = int((deployment_status or {}).get("readyReplicas") or 0)
    updated = int((deployment_status or {}).get("updatedReplicas") or 0)
    status.update(
        placement=placement_status(plan),
        replicas=int((deployment_status or {}).get("replicas") or 0),
        readyReplicas=ready,
        selector=",".join(f"{k}={v}" for k, v in sorted(selector_labels(inputs).items())),
        costPerHour=occupied_cost(pods, node_prices),
    )
    if choice.cost_per_million_tokens is not None:
        status["costPerMillionTokens"] = round(choice.cost_per_million_tokens, 4)
    starved = pool_degraded.get(pool_name)
    if ready < desired and starved is not None:
        # The pods wait for nodes the pool cannot buy: say so here, where the user looks.
        put_condition(
            status, "Degraded", True, "InsufficientCapacity",
            f"GpuPool {pool_name}: {starved.get('message', '')}"[:1000], generation,
        )  # fmt: skip
    else:
        put_condition(
            status, "Degraded", False, "Placed", "a placement fits the model and the budget", generation
        )
    if ready >= desired and updated >= desired:
        put_condition(
            status, "Progressing", False, "RolloutComplete", f"{ready}/{desired} replicas ready", generation
        )
    else:
        put_condition(
            status,
            "Progressing",
            True,
            "RollingOut",
            f"{ready}/{desired} replicas ready, {updated} updated; the pool provisions nodes for the rest",
            generation,
        )
    if desired == 0:
        put_condition(status, "Ready", True, "ScaledToZero", "no replicas requested", generation)
    elif ready > 0:
        put_condition(
            status,
            "Ready",
            True,
            "Serving",
            f"{ready}/{desired} replicas serving at {status['endpoint']}",
            generation,
        )
    else:
        put_condition(
            status, "Ready", False, "WaitingForReplicas", f"{ready}/{desired} replicas ready", generation
        )
    return outcome


def _not_ready(outcome: Outcome, generation: int, reason: str, message: str) -> Outcome:
    status = outcome.status
    put_condition(status, "Ready", False, reason, message, generation)
    put_condition(status, "Degraded", True, reason, message, generation)
    return outcome
