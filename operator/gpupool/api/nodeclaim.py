"""GpuNodeClaim: one node asked of one provider, written before the cloud is called.

Created only by the operator (Karpenter's NodeClaim). The spec records the chosen
offer and never changes, which the API server enforces: a claim is a durable
promise that one launch happens, so a restart finds it and never launches twice,
and an instance without a claim can be recognised as garbage. The status follows
the instance through its phases to a Ready node.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import Field

from gpupool.api.base import (
    API_VERSION,
    DNS_SUBDOMAIN,
    GPU_NAME,
    REGION,
    ObjectMeta,
    Rule,
    WireModel,
)
from gpupool.api.conditions import Conditions
from gpupool.api.kinds import AGE, KindInfo, PrinterColumn, ready_column
from gpupool.api.pool import CapacityType


class NodeClaimPhase(StrEnum):
    """Where the claim is in its life: Pending, Launching, Launched, Registered, Ready, Terminating, Failed."""

    PENDING = "Pending"
    LAUNCHING = "Launching"
    LAUNCHED = "Launched"
    REGISTERED = "Registered"
    READY = "Ready"
    TERMINATING = "Terminating"
    FAILED = "Failed"


class Offer(WireModel):
    """One purchasable instance shape of one provider, at the price it was chosen at."""

    provider: str = Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the GpuProvider."
    )
    region: str = Field(min_length=1, max_length=64, pattern=REGION, description="Region of the instance.")
    zone: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        pattern=REGION,
        description="Zone, where the provider has them.",
    )
    instance_type: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.:/ ]*$",
        description="The provider's name for the instance shape, e.g. gpu_1x_h100_pcie.",
    )
    gpu: str = Field(
        min_length=1, max_length=64, pattern=GPU_NAME, description="Normalized GPU model, e.g. H100."
    )
    gpu_count: int = Field(ge=1, le=16, strict=True, description="GPUs on the instance.")
    gpu_memory_gib: float | None = Field(
        default=None,
        alias="gpuMemoryGiB",
        gt=0,
        le=2048,
        strict=True,
        description="Memory per GPU in GiB, where the provider reports it.",
    )
    vcpus: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        strict=True,
        description="vCPUs of the instance, where the provider reports them.",
    )
    memory_gib: float | None = Field(
        default=None,
        alias="memoryGiB",
        gt=0,
        le=65536,
        strict=True,
        description="Host memory of the instance in GiB, where the provider reports it.",
    )
    disk_gib: float | None = Field(
        default=None,
        alias="diskGiB",
        gt=0,
        le=1_048_576,
        strict=True,
        description="Root disk of the instance in GiB (the node's ephemeral storage), where known.",
    )
    capacity_type: CapacityType = Field(description="spot or on-demand.")
    price_per_hour: float = Field(
        ge=0,
        le=10_000,
        strict=True,
        description="Price of the whole instance in USD per hour, after discount.",
    )


SPEC_IS_IMMUTABLE = Rule(
    cel="self == oldSelf",
    message=(
        "spec is immutable: a GpuNodeClaim records one launch of one offer; "
        "delete it and let the pool create another"
    ),
)


class GpuNodeClaimSpec(WireModel):
    """The pool the node is for and the offer it is bought from. Immutable."""

    rules: ClassVar[tuple[Rule, ...]] = (SPEC_IS_IMMUTABLE,)

    pool: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="Name of the GpuPool the node belongs to.",
    )
    offer: Offer = Field(description="The offer the instance is bought from.")


class GpuNodeClaimStatus(WireModel):
    """How far the launch has come."""

    phase: NodeClaimPhase | None = Field(default=None, description="Where the claim is in its life.")
    instance_id: str | None = Field(
        default=None, max_length=256, description="The provider's id of the instance, once launched."
    )
    provider_id: str | None = Field(
        default=None,
        alias="providerID",
        max_length=512,
        description="The Node's spec.providerID, <provider>://<instance id>.",
    )
    node_name: str | None = Field(
        default=None, max_length=253, description="Name of the Node the instance registered as."
    )
    launched_at: datetime | None = Field(default=None, description="When the provider accepted the launch.")
    registered_at: datetime | None = Field(default=None, description="When the Node registered.")
    conditions: Conditions = Field(
        default_factory=list,
        description="Launched, Registered and Ready, each with the reason it is not yet True.",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, strict=True, description="The .metadata.generation this status reflects."
    )


class GpuNodeClaim(WireModel):
    """A whole GpuNodeClaim object as stored by the API server."""

    api_version: Literal["gpupool.dev/v1alpha1"] = Field(default=API_VERSION, description="API version.")
    kind: Literal["GpuNodeClaim"] = Field(default="GpuNodeClaim", description="Kind.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Object metadata.")
    spec: GpuNodeClaimSpec = Field(description="Desired state.")
    status: GpuNodeClaimStatus = Field(default_factory=GpuNodeClaimStatus, description="Observed state.")

    @property
    def name(self) -> str:
        """The claim's name (the operator always gives one)."""
        return self.metadata.name or ""


GPU_NODE_CLAIM = KindInfo(
    kind="GpuNodeClaim",
    plural="gpunodeclaims",
    short_names=("gnc",),
    scope="Cluster",
    description=(
        "GpuNodeClaim is one GPU node the operator asked of one provider. It is written before "
        "the cloud is called, so a restart never launches twice; its spec (pool and offer) is "
        "immutable. Created by the operator, not by users."
    ),
    spec_model=GpuNodeClaimSpec,
    status_model=GpuNodeClaimStatus,
    printer_columns=(
        PrinterColumn(
            "Provider", "string", ".spec.offer.provider", "The GpuProvider the node is bought from."
        ),
        PrinterColumn("Region", "string", ".spec.offer.region", "Region of the instance."),
        PrinterColumn("Instance", "string", ".spec.offer.instanceType", "The provider's instance type."),
        PrinterColumn("GPU", "string", ".spec.offer.gpu", "GPU model."),
        PrinterColumn("GPUs", "integer", ".spec.offer.gpuCount", "GPUs on the instance.", 1),
        PrinterColumn("Capacity", "string", ".spec.offer.capacityType", "spot or on-demand.", 1),
        PrinterColumn("$/hr", "number", ".spec.offer.pricePerHour", "Price of the instance, USD per hour."),
        PrinterColumn("Node", "string", ".status.nodeName", "The Node the instance registered as."),
        PrinterColumn("Phase", "string", ".status.phase", "Where the claim is in its life.", 1),
        ready_column("True when the node is registered and ready."),
        AGE,
    ),
)
