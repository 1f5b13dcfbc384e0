"""One reconcile of a GpuPool: provision for its unschedulable pods, consolidate, report.

Provisioning waits for a batch, as Karpenter does: pods that arrive together (a new
Deployment's replicas) are packed together, which is cheaper than one node per pod. The
batch closes after BATCH_IDLE seconds without a new pod, or BATCH_MAX after the first.
Claims already launching count as capacity, so a pod is never provisioned for twice.
Claims are created here, before any cloud call; the claim controller does the launch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from kubernetes.client import ApiException

from gpupool.controllers.conditions import parse_stamp, put_condition, seconds
from gpupool.controllers.kube import GROUP, VERSION
from gpupool.controllers.outcome import Outcome
from gpupool.controllers.pool.consolidation import consolidation_candidates, expired_claims
from gpupool.controllers.pool.pending import PodDemand
from gpupool.controllers.pool.status import pool_totals
from gpupool.controllers.state import OperatorState
from gpupool.planner import Capacity, NewInstance, PendingPod, pack_pods, pool_constraints_from_spec

log = logging.getLogger(__name__)

BATCH_IDLE = 1.0  # seconds without a new pending pod that close a batch
BATCH_MAX = 10.0  # seconds after the first pending pod that close a batch regardless
# A node that just became Ready may not have been seen by the scheduler yet: its free
# GPUs still count as capacity on the way for this long.
FRESH_NODE_SECONDS = 20.0


def batch_ready(
    window: tuple[float, float, frozenset[str]] | None, pods: frozenset[str], now: float
) -> tuple[bool, tuple[float, float, frozenset[str]] | None]:
    """Whether the batch of pending pods is complete, and the window to remember."""
    if not pods:
        return False, None
    if window is None:
        window = (now, now, pods)
    first, last, seen = window
    if not pods <= seen:
        last, seen = now, seen | pods
    window = (first, last, seen)
    return (now - last >= BATCH_IDLE or now - first >= BATCH_MAX), window


def in_flight_capacity(
    claims: Sequence[Mapping[str, Any]], gpus_by_node: Mapping[str, int], now: float, pool: str
) -> list[Capacity]:
    """Claims whose node is not Ready yet (or only just), with the GPUs no pod holds."""
    capacity = []
    for claim in claims:
        if claim["metadata"].get("deletionTimestamp"):
            continue
        status = claim.get("status") or {}
        offer = claim["spec"]["offer"]
        ready_at = _ready_since(status)
        if status.get("phase") == "Ready" and ready_at and now - parse_stamp(ready_at) > FRESH_NODE_SECONDS:
            continue
        used = gpus_by_node.get(status.get("nodeName") or "", 0)
        capacity.append(
            Capacity(
                name=claim["metadata"]["name"],
                gpu=offer["gpu"],
                free_gpus=max(int(offer["gpuCount"]) - used, 0),
                pool=pool,
                capacity_type=offer["capacityType"],
            )
        )
    return capacity


def _ready_since(status: Mapping[str, Any]) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return str(condition.get("lastTransitionTime"))
    return None


def claim_manifest(pool: Mapping[str, Any], instance: NewInstance) -> dict[str, Any]:
    """A GpuNodeClaim for one new instance, owned by the pool (deleting the pool deletes it)."""
    name = pool["metadata"]["name"]
    offer = instance.offer
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "GpuNodeClaim",
        "metadata": {
            "name": f"{name}-{uuid.uuid4().hex[:8]}",
            "labels": {"gpupool.dev/pool": name},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "GpuPool",
                    "name": name,
                    "uid": pool["metadata"]["uid"],
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "pool": name,
            "offer": {
                "provider": offer.provider,
                "region": offer.region,
                # The schema has no empty strings or zero memory: absent means unknown.
                **({"zone": offer.zone} if offer.zone else {}),
                "instanceType": offer.instance_type,
                "gpu": offer.gpu,
                "gpuCount": offer.gpu_count,
                **({"gpuMemoryGiB": offer.gpu_memory_gib} if offer.gpu_memory_gib > 0 else {}),
                "capacityType": instance.capacity_type,
                "pricePerHour": round(instance.price_per_hour, 6),
            },
        },
    }


async def reconcile_pool(
    pool: Mapping[str, Any],
    pending: Sequence[PodDemand],
    gpus_by_node: Mapping[str, int],
    state: OperatorState,
) -> Outcome:
    name = pool["metadata"]["name"]
    generation = pool["metadata"].get("generation", 1)
    spec = pool.get("spec") or {}
    status: dict[str, Any] = {"conditions": list((pool.get("status") or {}).get("conditions") or [])}
    outcome = Outcome(status)
    now = time.time()

    claims = await state.kube.list_cluster_objects("gpunodeclaims", label_selector=f"gpupool.dev/pool={name}")
    live = [c for c in claims if not c["metadata"].get("deletionTimestamp")]
    totals = pool_totals(live, gpus_by_node)

    providers = tuple(spec.get("providers") or ())
    known = [p for p in providers if p not in state.providers]
    offers = state.offers(providers)
    constraints = dataclasses.replace(
        pool_constraints_from_spec(spec, name=name),
        used_nodes=len(live),
        used_gpus=sum(int(c["spec"]["offer"]["gpuCount"]) for c in live),
        used_cost_per_hour=sum(float(c["spec"]["offer"].get("pricePerHour") or 0) for c in live),
    )

    # --- provisioning -----------------------------------------------------------------
    keys = frozenset(d.key for d in pending)
    ready, window = batch_ready(state.pending_window.get(name), keys, now)  # type: ignore[arg-type]
    if window is None:
        state.pending_window.pop(name, None)
    else:
        state.pending_window[name] = window  # type: ignore[assignment]
    blocked: dict[str, str] = {}
    if ready:
        state.pending_window.pop(name, None)
        pods = [
            PendingPod(
                name=d.key,
                gpus=d.gpus,
                gpu_types=d.gpu_types,
                pool=name,
                capacity_types=tuple(c for c in d.capacity_types if c in ("spot", "on-demand")),  # type: ignore[misc]
            )
            for d in pending
        ]
        in_flight = in_flight_capacity(live, gpus_by_node, now, name)
        result = pack_pods(pods, in_flight, offers, constraints, unavailable=state.unavailable, now=now)
        log.debug(
            "pool %s: pending %s, in flight %s -> %d new, on existing %s, unplaced %s",
            name,
            [p.name for p in pods],
            in_flight,
            len(result.new_instances),
            result.on_existing,
            result.unplaced,
        )
        for instance in result.new_instances:
            manifest = claim_manifest(pool, instance)
            offer = instance.offer
            try:
                await state.kube.create_cluster_object("gpunodeclaims", manifest)
            except ApiException as error:
                if error.status != 422:
                    raise
                # The API server refuses a claim for this offer (a name the schema does not
                # accept): leave the offer out for a while and let the next batch try another.
                state.mark_unavailable(offer.key, instance.capacity_type, now)
                outcome.warn("ClaimRejected", f"offer {offer.key} cannot be claimed: {str(error.body)[:300]}")
                continue
            outcome.info(
                "Provisioning",
                f"claim {manifest['metadata']['name']}: {offer.gpu_count}x {offer.gpu} {offer.instance_type} "
                f"at {offer.provider}/{offer.region} ({instance.capacity_type}, ${instance.price_per_hour:.2f}/h) "
                f"for {len(instance.pods)} pod(s)",
            )
        blocked = dict(result.unplaced)

    previous_degraded = next((c for c in status["conditions"] if c.get("type") == "Degraded"), None)
    if blocked:
        reasons = sorted(set(blocked.values()))
        message = f"{len(blocked)} pending pod(s) cannot get a node: " + "; ".join(reasons)[:900]
        reason = "LimitReached" if any("limit" in r for r in reasons) else "NoOfferFits"
        if not previous_degraded or previous_degraded.get("message") != message:
            outcome.warn(reason, message)
        put_condition(status, "Degraded", True, reason, message, generation)
    elif ready or not pending:
        put_condition(
            status,
            "Degraded",
            False,
            "Provisioned",
            "every pending pod has a node or one on its way",
            generation,
        )

    # --- consolidation ----------------------------------------------------------------
    disruption = spec.get("disruption") or {}
    doomed, clock = consolidation_candidates(
        live,
        gpus_by_node,
        state.empty_since,
        now,
        seconds(str(disruption.get("consolidateAfter") or "5m")),
        len(pending),
    )
    # The clock is shared by every pool: reset only this pool's nodes that are busy again.
    for claim in live:
        node = (claim.get("status") or {}).get("nodeName")
        if node and node not in clock:
            state.empty_since.pop(node, None)
    state.empty_since.update(clock)
    expire_text = str(disruption.get("expireAfter") or "Never")
    for claim_name in expired_claims(live, now, None if expire_text == "Never" else seconds(expire_text)):
        await state.kube.delete_cluster_object("gpunodeclaims", claim_name)
        outcome.info("Expiring", f"claim {claim_name}: launched more than {expire_text} ago")
    for claim_name in doomed:
        await state.kube.delete_cluster_object("gpunodeclaims", claim_name)
        outcome.info(
            "Consolidating",
            f"claim {claim_name}: its node has had no GPU pod for {disruption.get('consolidateAfter') or '5m'}",
        )

    # --- status -----------------------------------------------------------------------
    status.update(totals)
    status["observedGeneration"] = generation
    if known:
        put_condition(
            status,
            "Ready",
            False,
            "ProviderNotFound",
            f"spec.providers names GpuProvider(s) that do not exist or are not ready: {', '.join(known)}",
            generation,
        )
    elif not offers:
        put_condition(
            status,
            "Ready",
            False,
            "NoOffers",
            "no ready GpuProvider lists an offer this pool may use",
            generation,
        )
    else:
        put_condition(
            status,
            "Ready",
            True,
            "OffersAvailable",
            f"{len(offers)} offers from the pool's providers",
            generation,
        )
    return outcome
