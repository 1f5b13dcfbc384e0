"""Garbage collection of instances, the safety net under "never lose an instance".

Claims are written before the cloud is called and carry a finalizer, so in the normal
course every instance is terminated by its claim. This catches what falls outside that:
an instance whose claim was deleted before its id was recorded, or removed by hand with
its finalizer. An instance tagged as this cluster's whose claim UID matches no claim, and
older than a grace period, is terminated. The other direction (a claim whose instance
vanished) is handled by the claim reconciler, which gives the claim up so the pool
replaces it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

from gpupool.controllers.state import ProviderHandle
from gpupool.providers.base import Instance, InstanceState

log = logging.getLogger(__name__)


def orphans(
    instances: Sequence[Instance],
    claim_uids: Iterable[str],
    now: datetime,
    grace_seconds: float,
) -> list[Instance]:
    """Instances of ours whose claim is gone and that are past the grace period."""
    known = set(claim_uids)
    result = []
    for instance in instances:
        if instance.state in (InstanceState.TERMINATING, InstanceState.TERMINATED):
            continue
        if instance.claim_uid is None or instance.claim_uid in known:
            continue
        if instance.launched_at is not None and (now - instance.launched_at).total_seconds() < grace_seconds:
            continue
        result.append(instance)
    return result


async def collect_orphans(
    handle: ProviderHandle, instances: Sequence[Instance], claim_uids: Iterable[str], grace_seconds: float
) -> list[str]:
    """Terminate the provider's orphaned instances; returns the ids terminated.

    `instances` must have been listed BEFORE `claim_uids` were read (the claim index is read
    after the listing returns): a claim created between the two reads is then seen among the
    claims, so its fresh instance is never taken for an orphan.
    """
    terminated: list[str] = []
    for instance in orphans(instances, claim_uids, datetime.now(UTC), grace_seconds):
        log.warning(
            "terminating orphaned instance %s at %s (claim %s is gone)",
            instance.id,
            handle.name,
            instance.claim_uid,
        )
        await handle.client.delete(instance.id)
        terminated.append(instance.id)
    return terminated
