"""Leader election through a coordination.k8s.io Lease, so that of several replicas one acts.

kopf's peering decides by priorities that every replica writes into a shared object and reads
back on a timer; two replicas can both believe they are alone for a while, which is how a
claim gets launched twice. A Lease is what every Kubernetes controller uses instead: the
holder writes its identity and renews it; writes are compare-and-swap on the resourceVersion,
so two candidates can never both take it; a candidate takes it only after it saw no renewal
for `lease_duration_seconds` on its own clock (never comparing clocks across machines, as
client-go does). The holder that fails to renew within `renew_deadline_seconds` (shorter
than the lease) stops acting before anyone else may start: the runner exits the process.
Only the holder runs kopf at all, so a standby replica sends nothing but its Lease reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from lightkube import ApiError, AsyncClient
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease

from gpupool.settings import OperatorSettings

log = logging.getLogger(__name__)


@dataclass
class _Observed:
    """The last Lease record seen, and when (on our monotonic clock) it last changed."""

    holder: str
    renew_time: str
    seen_at: float


class LeaderElector:
    """Acquire, then keep, one Lease for `identity`."""

    def __init__(self, client: AsyncClient, settings: OperatorSettings, identity: str) -> None:
        self.client = client
        self.settings = settings
        self.identity = identity
        self._observed: _Observed | None = None
        self.renewed_at = 0.0  # monotonic time of our last successful renewal

    def _now_stamp(self) -> datetime:
        return datetime.now(UTC)

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: True when we hold the lease after it."""
        settings = self.settings
        name, namespace = settings.lease_name, settings.lease_namespace
        try:
            lease = await self.client.get(Lease, name, namespace=namespace)
        except ApiError as error:
            if error.status.code != 404:
                raise
            now = self._now_stamp()
            fresh = Lease(
                metadata=ObjectMeta(name=name, namespace=namespace),
                spec=LeaseSpec(
                    holderIdentity=self.identity,
                    leaseDurationSeconds=int(settings.lease_duration_seconds),
                    acquireTime=now,
                    renewTime=now,
                    leaseTransitions=0,
                ),
            )
            try:
                await self.client.create(fresh)
            except ApiError as conflict:
                if conflict.status.code == 409:
                    return False  # another candidate created it first
                raise
            self.renewed_at = time.monotonic()
            return True
        spec = lease.spec or LeaseSpec()
        holder = spec.holderIdentity or ""
        renew = str(spec.renewTime or "")
        observed = self._observed
        if observed is None or (observed.holder, observed.renew_time) != (holder, renew):
            self._observed = observed = _Observed(holder, renew, time.monotonic())
        expired = time.monotonic() - observed.seen_at > float(spec.leaseDurationSeconds or 0)
        if holder and holder != self.identity and not expired:
            return False
        now = self._now_stamp()
        if holder != self.identity:
            spec.acquireTime = now
            spec.leaseTransitions = (spec.leaseTransitions or 0) + 1
        spec.holderIdentity = self.identity
        spec.renewTime = now
        spec.leaseDurationSeconds = int(settings.lease_duration_seconds)
        lease.spec = spec
        try:
            # A replace carries the resourceVersion we read: a concurrent write makes it fail.
            await self.client.replace(lease)
        except ApiError as error:
            if error.status.code == 409:
                return False
            raise
        self.renewed_at = time.monotonic()
        return True

    async def acquire(self) -> None:
        """Return once the lease is ours; retries every `lease_retry_seconds`."""
        log.info(
            "waiting to become the leader (Lease %s/%s)",
            self.settings.lease_namespace,
            self.settings.lease_name,
        )
        while True:
            try:
                if await self.try_acquire_or_renew():
                    log.info("became the leader as %s", self.identity)
                    return
            except Exception as error:  # the API server may be briefly away; keep trying
                log.warning("leader election: %s", error)
            await asyncio.sleep(self.settings.lease_retry_seconds)

    async def keep(self) -> None:
        """Renew until a renewal has not succeeded for `renew_deadline_seconds`; then return."""
        settings = self.settings
        while True:
            await asyncio.sleep(settings.lease_retry_seconds)
            try:
                if not await self.try_acquire_or_renew():
                    log.error("leader election: the lease was taken over")
                    return
            except Exception as error:
                log.warning("leader election: renewal failed: %s", error)
            if time.monotonic() - self.renewed_at > settings.renew_deadline_seconds:
                log.error(
                    "leader election: no renewal for %.0fs; stepping down", settings.renew_deadline_seconds
                )
                return

    async def release(self) -> None:
        """Give the lease up on a clean exit, so a standby takes over at once."""
        try:
            lease = await self.client.get(
                Lease, self.settings.lease_name, namespace=self.settings.lease_namespace
            )
            if lease.spec and lease.spec.holderIdentity == self.identity:
                lease.spec.holderIdentity = None
                lease.spec.leaseDurationSeconds = 1
                await self.client.replace(lease)
        except Exception as error:
            log.warning("leader election: could not release the lease: %s", error)
