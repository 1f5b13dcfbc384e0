"""The GpuPool controller's shell: one instance per pool, in its daemon.

Woken when the pool's pending pods, claims or spec change, or when offers arrive; it asks
to run again when a batch closes or a node falls due for consolidation or expiry. Its own
state (the batch window, since when each node has been empty) lives here and goes with
the daemon. Every read is from memory: the pending pods and the claims come from kopf's
indexes, never from a LIST per reconcile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import kopf

from gpupool import metrics
from gpupool.api import DisruptionReason, GpuNodeClaim, GpuPoolSpec
from gpupool.controllers.conditions import put_condition
from gpupool.controllers.kube import status_code
from gpupool.controllers.nodeclaim.registration import NodeInfo
from gpupool.controllers.nodeclaim.termination import DISRUPTED_TAINT
from gpupool.controllers.outcome import Outcome
from gpupool.controllers.pool.consolidation import consolidation_candidates, expired_claims
from gpupool.controllers.pool.disruption import DisruptionPlan, plan_disruption
from gpupool.controllers.pool.pending import PodDemand
from gpupool.controllers.pool.provisioning import BatchWindow, batch_ready, claim_manifest, pool_capacity
from gpupool.controllers.pool.status import pool_totals
from gpupool.controllers.state import OperatorState
from gpupool.controllers.writes import StatusWriter
from gpupool.planner import NewInstance, PendingPod, pack_pods, pool_constraints_from_spec
from gpupool.planner.resources import Resources

log = logging.getLogger(__name__)
# Claims created concurrently for one batch (client-go's default burst is 10; the API server's
# max-in-flight is 400).
CLAIM_CREATES_AT_ONCE = 16
# How long a created claim is counted before the watch shows it (the watch is normally a
# fraction of a second behind; a minute covers an API server under load).
EXPECTATION_SECONDS = 60.0


class PoolController:
    """Reconciles one GpuPool; `reconcile` is called by its loop."""

    def __init__(self, body: kopf.Body, state: OperatorState) -> None:
        self.body = body
        self.state = state
        self.name: str = body["metadata"]["name"]
        self.writer = StatusWriter(state.kube, "gpupools", self.name)
        self.window: BatchWindow | None = None
        self.empty_since: dict[str, float] = {}
        # Claims created but not yet seen in the claim index (the watch lags the create): they
        # count as capacity and against the limits meanwhile, or the next batch would buy the
        # same pods' nodes again (controller-runtime's "expectations").
        self.expected: dict[str, tuple[GpuNodeClaim, float]] = {}
        # Pod key -> the reason last posted on it as an event, for pods that fit no offer.
        self.reported: dict[str, str] = {}

    async def reconcile(
        self,
        pending: Sequence[PodDemand],
        claims: Sequence[GpuNodeClaim],
        gpus_on_node: Callable[[str], int],
        used_on_node: Callable[[str], Resources],
        provider_exists: Callable[[str], bool],
        node_of: Callable[[GpuNodeClaim], NodeInfo | None],
        busy: Callable[[str], bool],
    ) -> float | None:
        body = self.body
        if body["metadata"].get("deletionTimestamp"):
            return None
        spec = GpuPoolSpec.from_k8s(body.get("spec") or {})
        if any(provider_exists(p) and p not in self.state.providers_seen for p in spec.providers):
            return None  # the provider's first listing since start wakes this pool
        with metrics.reconcile_timer("pool"):
            outcome = await self._reconcile(spec, pending, claims, gpus_on_node, used_on_node, node_of, busy)
        for event in outcome.events:
            kopf.event(body, type=event.type, reason=event.reason, message=event.message)
        status = outcome.status
        await self.writer.write(body, status)
        metrics.set_pool(
            self.name,
            status.get("gpusTotal", 0),
            status.get("gpusAllocated", 0),
            status.get("costPerHour", 0.0),
        )
        return outcome.requeue

    async def _reconcile(
        self,
        spec: GpuPoolSpec,
        pending: Sequence[PodDemand],
        claims: Sequence[GpuNodeClaim],
        gpus_on_node: Callable[[str], int],
        used_on_node: Callable[[str], Resources],
        node_of: Callable[[GpuNodeClaim], NodeInfo | None],
        busy: Callable[[str], bool],
    ) -> Outcome:
        state, body, name = self.state, self.body, self.name
        settings = state.settings
        generation = int(body["metadata"].get("generation") or 1)
        current = self.writer.current(body)
        status: dict[str, Any] = {"conditions": list(current.get("conditions") or [])}
        outcome = Outcome(status)
        now = time.time()

        seen = {c.name for c in claims}
        self.expected = {
            name: (manifest, at)
            for name, (manifest, at) in self.expected.items()
            if name not in seen and now - at < EXPECTATION_SECONDS
        }
        live = [c for c in claims if not c.metadata.deletion_timestamp]
        live += [manifest for manifest, _at in self.expected.values()]
        providers = tuple(spec.providers)
        missing = [p for p in providers if p not in state.providers or state.providers[p].deleting]
        offers = state.offers(providers)
        constraints = dataclasses.replace(
            pool_constraints_from_spec(spec, name=name),
            used_nodes=len(live),
            used_gpus=sum(c.spec.offer.gpu_count for c in live),
            used_cost_per_hour=sum(c.spec.offer.price_per_hour for c in live),
        )

        # --- provisioning -----------------------------------------------------------------
        keys = frozenset(d.key for d in pending)
        ready, self.window, closes_in = batch_ready(
            self.window, keys, now, settings.batch_idle_seconds, settings.batch_max_seconds
        )
        if closes_in is not None:
            outcome.requeue_in(closes_in)
        blocked: dict[str, str] = {}
        if ready:
            self.window = None
            pods = [
                PendingPod(
                    name=d.key,
                    gpus=d.gpus,
                    gpu_types=d.gpu_types,
                    pool=name,
                    capacity_types=tuple(c for c in d.capacity_types if c in ("spot", "on-demand")),  # type: ignore[misc]
                    requests=d.requests,
                    constraints=d.constraints,
                )
                for d in pending
            ]
            capacity = pool_capacity(live, gpus_on_node, used_on_node, name)
            result = pack_pods(pods, capacity, offers, constraints, unavailable=state.unavailable, now=now)
            # Side by side: a burst's nodes should join together, so the scheduler places its pods
            # in one wave instead of retrying each of them on every node that arrives.
            gate = asyncio.Semaphore(CLAIM_CREATES_AT_ONCE)

            async def create(instance: NewInstance) -> bool:
                async with gate:
                    return await self._create_claim(instance, outcome, now)

            made = await asyncio.gather(*(create(i) for i in result.new_instances))
            created = [i for i, ok in zip(result.new_instances, made, strict=True) if ok]
            if created:
                outcome.info("Provisioning", provisioning_summary(created))
            log.info(
                "pool %s: a batch of %d pending pod(s): %d new claim(s), %d on capacity already there, %d unplaced",
                name, len(pods), len(created), len(result.on_existing), len(result.unplaced),
            )  # fmt: skip
            blocked = dict(result.unplaced)
            self._report_unplaced(pending, {k: r for k, r in blocked.items() if k not in result.over_limit})

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
                status, "Degraded", False, "Provisioned", "every pending pod has a node or one on its way",
                generation,
            )  # fmt: skip

        # --- disruption: empty and expired nodes, within the budgets ----------------------
        disruption = spec.disruption
        consolidate_after = disruption.consolidate_after_delta.total_seconds()
        candidates, clock = consolidation_candidates(
            live, lambda node: int(busy(node)), self.empty_since, now, consolidate_after, len(pending)
        )
        self.empty_since = clock
        if clock and not pending:
            outcome.requeue_in(max(min(clock.values()) + consolidate_after - now, 0.5))
        expiry = disruption.expire_after_delta
        expired = expired_claims(live, now, expiry.total_seconds() if expiry else None)
        plan = plan_disruption(
            [c for c in claims if c.name not in self.expected],
            disruption,
            empty=candidates,
            expired=expired,
            node_of=node_of,
            busy=busy,
        )
        await self._disrupt(plan, outcome, disruption.consolidate_after, disruption.expire_after)
        if plan.taint or plan.waiting:
            outcome.requeue_in(2.0)  # the taint shows on the Node, or a disruption ends, in seconds

        # --- status -----------------------------------------------------------------------
        status.update(pool_totals(live, gpus_on_node))
        status["observedGeneration"] = generation
        if missing:
            put_condition(
                status, "Ready", False, "ProviderNotFound",
                f"spec.providers names GpuProvider(s) that do not exist, are not ready or are being deleted: "
                f"{', '.join(missing)}",
                generation,
            )  # fmt: skip
        elif not offers:
            put_condition(
                status, "Ready", False, "NoOffers", "no ready GpuProvider lists an offer this pool may use",
                generation,
            )  # fmt: skip
        else:
            put_condition(
                status, "Ready", True, "OffersAvailable", f"{len(offers)} offers from the pool's providers",
                generation,
            )  # fmt: skip
        return outcome

    def _report_unplaced(self, pending: Sequence[PodDemand], blocked: Mapping[str, str]) -> None:
        """Tell each pod that fits no offer (limits aside: those are the pool's to report) why (once per reason, as the scheduler's events do),
        and its ModelDeployment, whose loop says so in its conditions."""
        by_key = {d.key: d for d in pending}
        models: dict[tuple[str, str], str] = {}
        for key, reason in blocked.items():
            demand = by_key.get(key)
            if demand is None:
                continue
            if demand.model:
                models.setdefault((demand.namespace, demand.model), reason)
            if self.reported.get(key) != reason:
                pod: Any = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": demand.name, "namespace": demand.namespace, "uid": demand.uid},
                }
                kopf.warn(pod, reason="NoNodeFits", message=f"GpuPool {self.name}: {reason}"[:1000])
        self.reported = {k: r for k, r in blocked.items() if k in by_key}
        before = self.state.unplaced_models.get(self.name, {})
        if models != before:
            self.state.unplaced_models[self.name] = models
            changed = {k for k in before.keys() | models.keys() if before.get(k) != models.get(k)}
            self.state.wakeups.wake_all(("model", namespace, model) for namespace, model in changed)

    def forget(self) -> None:
        """What this pool's loop put in the shared state goes with it."""
        before = self.state.unplaced_models.pop(self.name, {})
        self.state.wakeups.wake_all(("model", namespace, model) for namespace, model in before)

    async def _disrupt(
        self, plan: DisruptionPlan, outcome: Outcome, consolidate_after: str, expire_after: str
    ) -> None:
        kube = self.state.kube
        for node in plan.untaint:
            kept = [dict(t) for t in node.taints if t["key"] != DISRUPTED_TAINT["key"]]
            await kube.patch_node(node.name, {"spec": {"taints": kept}})
        for node in plan.taint:
            await kube.patch_node(
                node.name, {"spec": {"taints": [*map(dict, node.taints), dict(DISRUPTED_TAINT)]}}
            )
        for claim_name, reason in plan.delete:
            await kube.delete_cluster_object("gpunodeclaims", claim_name)
            if reason == DisruptionReason.EXPIRED:
                outcome.info("Expiring", f"claim {claim_name}: launched more than {expire_after} ago")
            else:
                outcome.info(
                    "Consolidating",
                    f"claim {claim_name}: its node has had no pods but DaemonSets' for {consolidate_after}",
                )

    async def _create_claim(self, instance: NewInstance, outcome: Outcome, now: float) -> bool:
        """Create the claim for one new instance; False when the API server refused it."""
        manifest = claim_manifest(self.name, self.body["metadata"]["uid"], instance)
        offer = instance.offer
        try:
            await self.state.kube.create_cluster_object("gpunodeclaims", manifest.to_k8s())
            self.expected[manifest.name] = (manifest, now)
        except Exception as error:
            if status_code(error) != 422:
                raise
            # The API server refuses a claim for this offer (a name the schema does not
            # accept): leave the offer out for a while and let the next batch try another.
            self.state.mark_unavailable(offer.key, instance.capacity_type, now)
            outcome.warn("ClaimRejected", f"offer {offer.key} cannot be claimed: {str(error)[:300]}")
            return False
        return True


def provisioning_summary(instances: Sequence[NewInstance]) -> str:
    """One event's message for a whole batch: what was bought, where, for how many pods.

    One event per batch, not per claim: a burst of a thousand pods must not cost the API
    server a thousand event writes (each claim's own events say the rest)."""
    groups: Counter[tuple[str, str, int, str, str, str, float]] = Counter()
    for i in instances:
        o = i.offer
        groups[
            (o.instance_type, o.gpu, o.gpu_count, o.provider, o.region, i.capacity_type, i.price_per_hour)
        ] += 1
    pods = sum(len(i.pods) for i in instances)
    parts = [
        f"{n}x {itype} ({count}x {gpu}) at {provider}/{region} ({capacity}, ${price:.2f}/h each)"
        for (itype, gpu, count, provider, region, capacity, price), n in sorted(groups.items())
    ]
    return f"{len(instances)} claim(s) for {pods} pod(s): " + "; ".join(parts)[:900]
