"""Launch: turn a claim into a cloud instance exactly once.

The claim's UID is the idempotency key the provider honours, so a crash between the
cloud's "yes" and our status write only means the next reconcile gets the same instance
back. Capacity and quota refusals are not retried here: the offer is marked unavailable
and the claim is given up, so the pool packs the pods onto the next cheapest offer,
which may be another cloud.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import cast

from gpupool.api import GpuNodeClaim
from gpupool.api.pool import Taint
from gpupool.catalog import CapacityType
from gpupool.planner.scheduling import gpupool_labels
from gpupool.providers.base import LaunchRequest
from gpupool.providers.bootstrap import DEFAULT_USER_DATA_TEMPLATE, render_user_data

CLAIM_LABEL = "gpupool.dev/claim"


def node_labels(claim: GpuNodeClaim, pool_labels: Mapping[str, str]) -> dict[str, str]:
    """The labels the claim's Node must carry: the pool's own, then gpupool's (which win)."""
    offer = claim.spec.offer
    return {
        **dict(pool_labels),
        CLAIM_LABEL: claim.name,
        # The same labels the packer expected the node to have when it bought it.
        **gpupool_labels(
            claim.spec.pool, offer.gpu, offer.gpu_count, str(offer.capacity_type), offer.provider
        ),
    }


def launch_request(
    claim: GpuNodeClaim,
    *,
    cluster_name: str,
    pool_labels: Mapping[str, str],
    pool_taints: Sequence[Taint],
    user_data_template: str,
) -> LaunchRequest:
    """The provider request for a claim: everything comes from the claim's immutable spec.

    The taints travel with the request so the node registers with them (no window in which
    pods that do not tolerate them land on it); the user data is the GpuProvider's bootstrap
    template, or the type's default, rendered by `providers.bootstrap`.
    """
    offer = claim.spec.offer
    request = LaunchRequest(
        claim_name=claim.name,
        claim_uid=claim.metadata.uid or "",
        cluster_name=cluster_name,
        region=offer.region,
        zone=offer.zone or "",
        instance_type=offer.instance_type,
        capacity_type=cast(CapacityType, str(offer.capacity_type)),
        gpu=offer.gpu,
        gpu_count=offer.gpu_count,
        # pricePerHour is after the negotiated discount, while clouds compare a spot bid with
        # their list price: bid nothing and take the current spot price.
        max_price=None,
        labels=node_labels(claim, pool_labels),
        taints=tuple((t.key, t.value or "", str(t.effect)) for t in pool_taints),
    )
    user_data = render_user_data(user_data_template or DEFAULT_USER_DATA_TEMPLATE, request)
    return dataclasses.replace(request, user_data=user_data)
