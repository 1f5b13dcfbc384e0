"""The GpuProvider controller's shell: one instance per provider, in its daemon.

All of a provider's periodic work happens here, each on its own clock, and the daemon
sleeps until the next one falls due: the offer refresh (`refreshInterval`), one listing of
this cluster's instances (`provider_liveness_seconds`) that feeds every claim's liveness,
and the garbage collection of orphans (`gc_interval_seconds`), which reuses that listing.
So a provider with a thousand nodes costs its cloud one `list()` per interval, never a GET
per claim. When offers change, the pools and models that buy from the provider are woken;
when an instance changes, its claim is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping

import kopf

from gpupool import metrics
from gpupool.controllers import gc
from gpupool.controllers.conditions import seconds
from gpupool.controllers.loop import backoff_seconds
from gpupool.controllers.provider.refresh import refresh_provider
from gpupool.controllers.state import OperatorState, ProviderHandle
from gpupool.controllers.writes import StatusWriter
from gpupool.providers.base import Instance
from gpupool.providers.errors import ProviderError

log = logging.getLogger(__name__)


def _offers_fingerprint(handle: ProviderHandle) -> tuple[object, ...]:
    return (
        tuple((o.key, o.on_demand_price, o.spot_price) for o in handle.offers),
        handle.sold_out,
    )


def changed_instances(before: Mapping[str, Instance] | None, after: Mapping[str, Instance]) -> set[str]:
    """Ids of instances that appeared, went, or changed state or interruption notice."""
    if before is None:
        return set(after)
    changed = set(before.keys() ^ after.keys())
    for instance_id in before.keys() & after.keys():
        old, new = before[instance_id], after[instance_id]
        if (old.state, old.interruption_at) != (new.state, new.interruption_at):
            changed.add(instance_id)
    return changed


class ProviderController:
    """Does one GpuProvider's periodic work; `reconcile` is called by its loop."""

    def __init__(self, body: kopf.Body, state: OperatorState) -> None:
        self.body = body
        self.state = state
        self.name: str = body["metadata"]["name"]
        self.writer = StatusWriter(state.kube, "gpuproviders", self.name)
        self.gc_at = 0.0
        self.refresh_at = 0.0
        self.failures = 0
        self.observed_generation: int | None = None

    async def reconcile(
        self,
        wake_buyers: Callable[[], None],
        claims_of_instances: Callable[[Iterable[str]], None],
        claim_uids: Callable[[], Iterable[str]],
    ) -> float | None:
        body, state, settings = self.body, self.state, self.state.settings
        handle = state.providers.get(self.name)
        if body["metadata"].get("deletionTimestamp"):
            if handle is not None and not handle.deleting:
                handle.deleting = True
                wake_buyers()
            return None
        generation = int(body["metadata"].get("generation") or 1)
        now = time.time()
        if generation != self.observed_generation or now >= self.refresh_at:
            before = _offers_fingerprint(handle) if handle is not None else None
            with metrics.reconcile_timer("provider"):
                status = await refresh_provider(body, state, current=self.writer.current(body))
            self.observed_generation = generation
            await self.writer.write(body, status)
            first = self.name not in state.providers_seen
            state.providers_seen.add(self.name)
            handle = state.providers.get(self.name)
            if handle is not None and handle.healthy:
                self.failures = 0
                self.refresh_at = handle.refreshed_at + self._refresh_interval()
            else:
                # A cloud that fails is asked again after a growing pause, never in a hot loop.
                self.failures += 1
                self.refresh_at = now + backoff_seconds(
                    self.failures,
                    settings.error_backoff_min_seconds * 5,
                    settings.error_backoff_max_seconds * 5,
                )
            if first or (handle is not None and _offers_fingerprint(handle) != before):
                wake_buyers()
        if handle is None or not handle.healthy:
            return max(self.refresh_at - time.time(), 0.5)

        if time.time() - handle.listed_at >= settings.provider_liveness_seconds:
            await self._list_instances(handle, claims_of_instances, claim_uids)
        liveness_at = handle.listed_at + settings.provider_liveness_seconds
        return max(min(self.refresh_at, liveness_at) - time.time(), 0.5)

    def _refresh_interval(self) -> float:
        return seconds(str((self.body.get("spec") or {}).get("refreshInterval") or "5m"))

    async def _list_instances(
        self,
        handle: ProviderHandle,
        claims_of_instances: Callable[[Iterable[str]], None],
        claim_uids: Callable[[], Iterable[str]],
    ) -> None:
        settings = self.state.settings
        asked_at = time.time()
        try:
            listed = await handle.client.list()
        except ProviderError as error:
            # Liveness waits for the next listing; claims keep their phase meanwhile.
            log.warning("GpuProvider %s: listing instances failed: %s", self.name, error)
            handle.listed_at = asked_at  # try again at the next interval, not at once
            return
        instances = {instance.id: instance for instance in listed}
        changed = changed_instances(handle.instances, instances)
        gone_or_changed = changed | (set(handle.instances or ()) - set(instances))
        handle.instances, handle.listed_at = instances, asked_at
        if gone_or_changed:
            claims_of_instances(gone_or_changed)
        if asked_at - self.gc_at >= settings.gc_interval_seconds:
            self.gc_at = asked_at
            with metrics.reconcile_timer("gc"):
                terminated = await gc.collect_orphans(handle, listed, claim_uids(), settings.gc_grace_seconds)
            for instance_id in terminated:
                kopf.warn(
                    self.body,
                    reason="OrphanTerminated",
                    message=f"terminated orphaned instance {instance_id}: its GpuNodeClaim no longer exists",
                )
