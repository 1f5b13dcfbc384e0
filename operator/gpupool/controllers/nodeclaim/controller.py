"""The GpuNodeClaim controller's shell: one instance per claim, in its daemon.

Woken when the claim, its Node or its provider's instance listing changes; it asks to run
again when its launch times out. The status is written only when it changed; a claim that
becomes Ready posts one event; a claim given up is marked Failed and deleted (with a
warning saying why), and its finalizer (`termination`) cleans up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from pydantic import ValidationError

from gpupool import metrics
from gpupool.api import GpuNodeClaim, GpuPoolSpec
from gpupool.controllers.conditions import parse_stamp
from gpupool.controllers.nodeclaim.reconcile import GiveUp, reconcile_claim
from gpupool.controllers.nodeclaim.registration import NodeInfo
from gpupool.controllers.outcome import Outcome
from gpupool.controllers.state import OperatorState
from gpupool.controllers.writes import StatusWriter

log = logging.getLogger(__name__)


class ClaimController:
    """Reconciles one GpuNodeClaim; `reconcile` is called by its loop."""

    def __init__(self, body: kopf.Body, state: OperatorState) -> None:
        self.body = body
        self.state = state
        self.name: str = body["metadata"]["name"]
        self.writer = StatusWriter(state.kube, "gpunodeclaims", self.name)

    async def reconcile(
        self,
        nodes: Mapping[str, NodeInfo],
        pool_spec: GpuPoolSpec,
        provider_exists: Callable[[str], bool],
    ) -> float | None:
        body, state = self.body, self.state
        if body["metadata"].get("deletionTimestamp"):
            return None
        try:
            claim = GpuNodeClaim.from_k8s(body)
        except ValidationError as error:
            # Only the operator writes claims, under the same schema: a version skew. Said once;
            # the claim's next change tries again.
            log.warning("GpuNodeClaim %s does not match the API: %s", self.name, error)
            return None
        provider = claim.spec.offer.provider
        if provider_exists(provider) and provider not in state.providers_seen:
            return None  # the provider's first listing since start wakes this claim
        current = self.writer.current(body)
        status: dict[str, Any] = dict(current)
        outcome = Outcome(status)
        try:
            with metrics.reconcile_timer("nodeclaim"):
                await reconcile_claim(claim, status, state, nodes, pool_spec, outcome)
        except GiveUp as gave_up:
            kopf.warn(body, reason=gave_up.reason, message=gave_up.message)
            await self.writer.write(body, {**current, "phase": "Failed"})
            await state.kube.delete_cluster_object("gpunodeclaims", self.name)
            return None
        # One Normal event per claim, when it is Ready: the phases before are in its conditions,
        # and a thousand claims must not cost three thousand event writes.
        if status.get("phase") == "Ready" and current.get("phase") != "Ready":
            seconds = (
                time.time() - parse_stamp(str(status["launchedAt"])) if status.get("launchedAt") else 0.0
            )
            kopf.info(
                body,
                reason="Ready",
                message=f"node {status.get('nodeName')} is Ready, {seconds:.0f}s after launch",
            )
            metrics.observe_launch_to_ready(provider, seconds)
        await self.writer.write(body, status)
        return outcome.requeue
