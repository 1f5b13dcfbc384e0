"""One reconcile of a GpuNodeClaim: look at where it is, take the next step, write the status.

Level-triggered: it runs when the claim, its Node or its provider's instance listing
changes (and at deadlines: the launch timeout), reads them from memory each time, and never
assumes the previous call finished. The cloud is called only to launch; liveness comes from
the provider's one listing per interval, shared by every claim. Phases, in
order: Pending (written by the pool) -> Launched (the cloud accepted; instance id recorded)
-> Registered (its Node joined; labelled and tainted) -> Ready (the Node is Ready). A claim
that cannot get there (no capacity, launch timeout, instance vanished, spot interruption)
is deleted, and its finalizer cleans up; the pool then asks again for its pods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, cast

from gpupool.api import GpuNodeClaim, GpuPoolSpec
from gpupool.api.nodeclaim import Offer as ClaimedOffer
from gpupool.catalog import CapacityType, offer_key
from gpupool.controllers.conditions import now_stamp, parse_stamp, put_condition
from gpupool.controllers.nodeclaim.launch import launch_request, node_labels
from gpupool.controllers.nodeclaim.registration import NodeInfo, node_patch
from gpupool.controllers.outcome import Outcome
from gpupool.controllers.state import OperatorState
from gpupool.providers.base import InstanceState
from gpupool.providers.errors import (
    AuthError,
    CapacityError,
    InvalidRequestError,
    ProviderError,
    QuotaError,
)

log = logging.getLogger(__name__)


class GiveUp(Exception):
    """The claim cannot become a node: delete it so the pool tries another offer."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _age_seconds(stamp: str | None) -> float:
    return time.time() - parse_stamp(stamp) if stamp else 0.0


def _condition(
    status: dict[str, Any], claim: GpuNodeClaim, type_: str, ok: bool, reason: str, message: str
) -> None:
    put_condition(status, type_, ok, reason, message, claim.metadata.generation or 1)


async def reconcile_claim(
    claim: GpuNodeClaim,
    status: dict[str, Any],
    state: OperatorState,
    nodes: Mapping[str, NodeInfo],
    pool_spec: GpuPoolSpec,
    outcome: Outcome,
) -> None:
    """Take the claim one step further, writing into `status`; raises GiveUp to abandon it.

    `status` starts as the claim's current status in its wire form, the form the StatusWriter
    compares with what the API server has; the spec is read from the model.
    """
    status.setdefault("conditions", [])
    status["observedGeneration"] = claim.metadata.generation or 1
    offer = claim.spec.offer
    capacity_type = cast(CapacityType, str(offer.capacity_type))
    handle = state.providers.get(offer.provider)
    if handle is None or (handle.deleting and not status.get("instanceId")):
        if handle is not None:
            raise GiveUp("ProviderDeleting", f"GpuProvider {offer.provider!r} is being deleted")
        status["phase"] = status.get("phase") or "Pending"
        _condition(
            status, claim, "Launched", False, "ProviderNotReady",
            f"GpuProvider {offer.provider!r} is not known or not ready yet",
        )  # fmt: skip
        return
    timeout = pool_spec.disruption.launch_timeout_delta.total_seconds()

    if not status.get("instanceId"):
        request = launch_request(
            claim,
            cluster_name=state.cluster_name,
            pool_labels=pool_spec.labels,
            pool_taints=pool_spec.taints,
            user_data_template=handle.user_data_template,
        )
        try:
            launched = await handle.client.create(request)
        except (CapacityError, QuotaError) as error:
            state.mark_unavailable(_offer_key(offer), capacity_type)
            reason = "InsufficientCapacity" if isinstance(error, CapacityError) else "QuotaExceeded"
            raise GiveUp(reason, str(error)) from error
        except (AuthError, InvalidRequestError) as error:
            # No retry will fix these; keep the pods moving to other offers meanwhile.
            state.mark_unavailable(_offer_key(offer), capacity_type)
            reason = "AuthFailed" if isinstance(error, AuthError) else "InvalidRequest"
            raise GiveUp(reason, str(error)) from error
        except ProviderError as error:  # transient after retries: try again soon
            status["phase"] = "Launching"
            _condition(status, claim, "Launched", False, "LaunchRetrying", str(error))
            outcome.requeue_in(state.settings.error_backoff_min_seconds * 5)
            return
        status.update(
            phase="Launched",
            instanceId=launched.id,
            providerID=launched.provider_id,
            launchedAt=now_stamp(),
        )
        _condition(
            status, claim, "Launched", True, "Launched",
            f"instance {launched.id} launched at {offer.provider} in {offer.region}",
        )  # fmt: skip
        # On to registration at once: after a crash between the launch and this record, the
        # instance's Node may have joined already, and its events woke nobody (no claim knew
        # its providerID yet), so nothing else would bring this claim back before its resync.

    # Launched: the instance must still exist, and not be on its way out. The provider's one
    # listing per interval says so for every claim at once; a listing asked before the launch
    # was recorded may not show the instance yet, so only a later one counts its absence.
    launched_at = parse_stamp(str(status["launchedAt"])) if status.get("launchedAt") else 0.0
    if handle.instances is not None and handle.listed_at > launched_at + 1.0:
        instance = handle.instances.get(status["instanceId"])
        if instance is None:
            raise GiveUp("InstanceVanished", f"instance {status['instanceId']} no longer exists")
        if instance.state in (InstanceState.TERMINATING, InstanceState.TERMINATED):
            raise GiveUp("InstanceTerminated", f"instance {instance.id} is {instance.state.value}")
        if instance.interruption_at is not None:
            raise GiveUp(
                "SpotInterrupted",
                f"instance {instance.id} gets a spot interruption at {instance.interruption_at.isoformat()}",
            )

    node = nodes.get(status["providerID"])
    if node is None:
        if status.get("nodeName"):
            raise GiveUp("NodeVanished", f"node {status['nodeName']} was deleted")
        age = _age_seconds(status.get("launchedAt"))
        if age > timeout:
            state.mark_unavailable(_offer_key(offer), capacity_type)
            raise GiveUp(
                "RegistrationTimeout",
                f"no Node registered for instance {status['instanceId']} within {timeout:.0f}s",
            )
        _condition(
            status, claim, "Registered", False, "AwaitingNode", "waiting for the instance's Node to join"
        )
        outcome.requeue_in(max(timeout - age, 0.0) + 0.5)
        return

    patch = node_patch(node, node_labels(claim, pool_spec.labels), pool_spec.taints)
    if patch is not None:
        await state.kube.patch_node(node.name, patch)
    if not status.get("nodeName"):
        status.update(phase="Registered", nodeName=node.name, registeredAt=now_stamp())
        _condition(status, claim, "Registered", True, "Registered", f"node {node.name} registered")
    if node.ready:
        status["phase"] = "Ready"
        _condition(status, claim, "Ready", True, "NodeReady", f"node {node.name} is Ready")
    else:
        status["phase"] = "Registered"
        _condition(status, claim, "Ready", False, "NodeNotReady", f"node {node.name} is not Ready")


def _offer_key(offer: ClaimedOffer) -> str:
    """The catalog key of the offer a claim's spec records."""
    return offer_key(
        offer.provider, offer.region, offer.zone or "", offer.instance_type, offer.gpu, offer.gpu_count
    )
