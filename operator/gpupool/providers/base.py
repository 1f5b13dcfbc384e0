"""The provider seam: one small protocol between gpupool and every cloud it rents GPUs from.

Modelled on Karpenter's CloudProvider. The controllers know only this protocol, the plain data
types below and the errors in `errors.py`; each cloud lives in its own module behind it (`sim`,
`lambda_cloud`, `runpod`). The contract of each method is written on it, because the claim and pool
controllers are built on those promises (idempotent create, idempotent delete, NotFound on get),
not on any one cloud's behaviour.

Ownership is recorded on the cloud side, never only in the cluster: every instance carries the
cluster name and the GpuNodeClaim's UID (as tags where the cloud has tags, else in the instance
name). That is what makes `create` safe to retry after a crash and what lets the garbage collector
find instances whose claim is gone.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from gpupool.catalog import CapacityType, Offer

# Canonical tag keys, valid as Kubernetes label keys, so a cloud that turns tags into node labels
# (simcloud) needs no mapping. Clouds with stricter tag syntax translate them (see lambda_cloud).
TAG_CLUSTER = "gpupool.dev/cluster"
TAG_CLAIM_UID = "gpupool.dev/claim-uid"
TAG_CLAIM = "gpupool.dev/claim"
TAG_POOL = "gpupool.dev/pool"


class InstanceState(enum.StrEnum):
    """Where an instance is in its life, the same four words for every cloud."""

    PENDING = "pending"  # accepted by the cloud, not yet running
    RUNNING = "running"  # the machine is up; its Node may or may not have registered yet
    TERMINATING = "terminating"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class ProviderOffer:
    """An offer as one cloud reports it right now: the catalog Offer plus whether it has capacity.

    Clouds that only list what they can launch (Lambda) report every offer as available; offers
    marked unavailable are still listed so prices stay known while the capacity is sold out."""

    offer: Offer
    available: bool = True


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """Everything a cloud needs to launch one instance for one GpuNodeClaim.

    `claim_uid` is the idempotency key: a second create with the same UID returns the instance the
    first one launched. `labels` are the node labels the operator wants (the pool and claim labels);
    they travel as tags so that they survive on the cloud side. `taints` are the pool's node taints
    (simcloud applies labels and taints itself; real clouds get them through the bootstrap script).
    `max_price` is a spot bid ceiling for the whole instance, compared with the cloud's LIST price,
    so it must never be a discounted price; None bids the current spot price. On-demand launches
    ignore it."""

    claim_name: str
    claim_uid: str
    cluster_name: str
    region: str
    instance_type: str
    capacity_type: CapacityType = "on-demand"
    zone: str = ""
    gpu: str = ""
    gpu_count: int = 1
    max_price: float | None = None
    user_data: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    # The pool's node taints as (key, value, effect); the GPU taint is always added by the node side.
    taints: tuple[tuple[str, str, str], ...] = ()

    def tags(self) -> dict[str, str]:
        """The canonical ownership tags plus the requested labels (ownership tags win)."""
        return {
            **dict(self.labels),
            TAG_CLUSTER: self.cluster_name,
            TAG_CLAIM_UID: self.claim_uid,
            TAG_CLAIM: self.claim_name,
        }

    def __repr__(self) -> str:
        # user_data is a join script and may hold a bootstrap token: never print it.
        return (
            f"LaunchRequest(claim={self.claim_name!r}, uid={self.claim_uid!r}, cluster={self.cluster_name!r},"
            f" region={self.region!r}, zone={self.zone!r}, instance_type={self.instance_type!r},"
            f" capacity_type={self.capacity_type!r}, user_data=<{len(self.user_data)} chars>)"
        )


@dataclass(frozen=True, slots=True)
class Instance:
    """One machine as the cloud reports it.

    `provider_id` is the value the Node's `spec.providerID` carries (`simcloud://<id>`,
    `lambda://<id>`, `runpod://<id>`), which is how a claim is matched to its Node. `claim_uid` is
    read back from the tags (or name) the instance was launched with; None for instances gpupool
    did not launch. `interruption_at` is set once the cloud has announced a spot interruption."""

    id: str
    state: InstanceState
    provider_id: str
    region: str
    instance_type: str
    capacity_type: CapacityType = "on-demand"
    zone: str = ""
    name: str = ""
    claim_uid: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    launched_at: datetime | None = None
    interruption_at: datetime | None = None
    price_per_hour: float | None = None


@runtime_checkable
class CloudProvider(Protocol):
    """The seam. Every method may raise the errors of `errors.py` and nothing else.

    Implementations do not retry: transient errors are raised as TransientError and retried in
    one place (`retry.RetryingProvider`), so backoff is uniform and testable."""

    #: The GpuProvider's name; it is the `provider` of every Offer this provider lists.
    name: str
    #: The GpuProvider type (`sim`, `lambda`, `runpod`); `provider_id`s start with its scheme.
    type: str

    async def list_offers(self) -> list[ProviderOffer]:
        """Every instance type this account can rent, per region, with the current prices and
        whether there is capacity now. Prices are list prices; discounts are applied above."""
        ...

    async def create(self, request: LaunchRequest) -> Instance:
        """Launch one instance for the claim, or return the one already launched for it.

        Idempotent by `request.claim_uid`: before launching, the provider looks for a live
        instance tagged with that UID (or named after it) and returns it if found, so a retry
        after a crash between "launch" and "record the instance id" never launches twice.
        Raises CapacityError / QuotaError so the caller can fail over to another offer."""
        ...

    async def get(self, instance_id: str) -> Instance:
        """The instance's current state. Raises NotFoundError once the cloud no longer knows it
        (a terminated instance may still be returned, in state TERMINATED, for a while)."""
        ...

    async def list(self) -> list[Instance]:
        """Every non-terminated instance owned by this cluster (tagged with its cluster name),
        whether or not a claim still refers to it: the garbage collector's view of the cloud."""
        ...

    async def delete(self, instance_id: str) -> None:
        """Ask the cloud to terminate the instance. Idempotent: an instance that is already
        terminating, terminated or unknown is success. Returns once the cloud has accepted the
        request; the instance may stay TERMINATING for a while (poll `get`)."""
        ...

    async def aclose(self) -> None:
        """Release the HTTP connection pool."""
        ...


def claim_instance_name(cluster_name: str, claim_uid: str) -> str:
    """The instance name derived from the claim: `gpupool-<cluster>-<uid>`, at most 64 characters.

    Clouds without tags (RunPod) find an instance again by this name; the UID is kept whole (it
    is what matters) and the cluster name is shortened if needed."""
    room = 64 - len("gpupool--") - len(claim_uid)
    return f"gpupool-{cluster_name[: max(room, 0)]}-{claim_uid}"


def claim_uid_from_name(cluster_name: str, name: str) -> str | None:
    """The claim UID in an instance name made by `claim_instance_name` for this cluster, else None.

    Kubernetes UIDs are 36-character UUIDs; the check rebuilds the name, so cluster `a` does not
    claim the instances of cluster `a-b`."""
    uid = name[-36:]
    if len(uid) == 36 and claim_instance_name(cluster_name, uid) == name:
        return uid
    return None


def parse_timestamp(value: object) -> datetime | None:
    """An ISO-8601 timestamp from a cloud payload ("Z" accepted), or None if absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
