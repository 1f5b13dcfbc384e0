"""Launch: turn a claim into a cloud instance exactly once.

The claim's UID is the idempotency key the provider honours, so a crash between the
cloud's "yes" and our status write only means the next reconcile gets the same instance
back. Capacity and quota refusals are not retried here: the offer is marked unavailable
and the claim is given up, so the pool packs the pods onto the next cheapest offer,
which may be another cloud.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from gpupool.providers.base import LaunchRequest

POOL_LABEL = "gpupool.dev/pool"
CLAIM_LABEL = "gpupool.dev/claim"


def node_labels(claim: Mapping[str, Any], pool_labels: Mapping[str, str]) -> dict[str, str]:
    """The labels the claim's Node must carry: the pool's own, then gpupool's (which win)."""
    offer = claim["spec"]["offer"]
    return {
        **dict(pool_labels),
        POOL_LABEL: claim["spec"]["pool"],
        CLAIM_LABEL: claim["metadata"]["name"],
        "gpupool.dev/gpu": offer["gpu"],
        "gpupool.dev/capacity-type": offer["capacityType"],
        "gpupool.dev/provider": offer["provider"],
    }


def render_user_data(template: str, claim: Mapping[str, Any], labels: Mapping[str, str], taints: str) -> str:
    """Fill a GpuProvider's bootstrap template. `$$` escapes a dollar; unknown names stay as they are."""
    values = {
        "CLAIM_NAME": claim["metadata"]["name"],
        "CLAIM_UID": claim["metadata"]["uid"],
        "POOL": claim["spec"]["pool"],
        "NODE_LABELS": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        "NODE_TAINTS": taints,
        "GPU": claim["spec"]["offer"]["gpu"],
        "GPU_COUNT": str(claim["spec"]["offer"]["gpuCount"]),
    }
    return string.Template(template).safe_substitute(values)


def launch_request(
    claim: Mapping[str, Any],
    *,
    cluster_name: str,
    pool_labels: Mapping[str, str],
    taints: str,
    user_data_template: str,
) -> LaunchRequest:
    """The provider request for a claim: everything comes from the claim's immutable spec."""
    offer = claim["spec"]["offer"]
    labels = node_labels(claim, pool_labels)
    return LaunchRequest(
        claim_name=claim["metadata"]["name"],
        claim_uid=claim["metadata"]["uid"],
        cluster_name=cluster_name,
        region=offer["region"],
        zone=offer.get("zone", ""),
        instance_type=offer["instanceType"],
        capacity_type=offer["capacityType"],
        gpu=offer["gpu"],
        gpu_count=int(offer["gpuCount"]),
        # pricePerHour is after the negotiated discount, while clouds compare a spot bid with
        # their list price: bid nothing and take the current spot price.
        max_price=None,
        user_data=render_user_data(user_data_template, claim, labels, taints),
        labels=labels,
    )
