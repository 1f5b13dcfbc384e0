"""GpuProvider: one cloud account the operator may rent GPUs from.

Cluster-scoped and written by the platform team. The spec says how to reach the
cloud and which of its offers count; the status says how many offers the catalog
knows from it and whether the last refresh worked.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from gpupool.api.base import (
    API_VERSION,
    DNS_LABEL,
    DNS_SUBDOMAIN,
    SECRET_KEY,
    ObjectMeta,
    Regions,
    Rule,
    WireModel,
    cel_rules,
)
from gpupool.api.conditions import Conditions
from gpupool.api.durations import DurationBounds
from gpupool.api.kinds import AGE, KindInfo, PrinterColumn, ready_column

URL_PATTERN = r"^https?://[^ \t\r\n]+$"
SIM_DEFAULT_ENDPOINT = "http://127.0.0.1:8788"


class ProviderType(StrEnum):
    """The cloud API a provider speaks."""

    SIM = "sim"
    LAMBDA = "lambda"
    RUNPOD = "runpod"


class SecretKeyRef(WireModel):
    """A key in a Secret in a named namespace (the provider is cluster-scoped)."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret.")
    namespace: str = Field(
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL,
        description="Namespace of the Secret, usually the operator's own (gpupool-system).",
    )
    key: str = Field(
        default="apiKey",
        min_length=1,
        max_length=253,
        pattern=SECRET_KEY,
        description="Key in the Secret whose value is the provider's API key.",
    )


class Bootstrap(WireModel):
    """How a new instance joins the cluster."""

    user_data_template: str | None = Field(
        default=None,
        max_length=32768,
        description=(
            "Cloud-init or shell script run on an instance's first boot so that it joins this "
            "cluster as a node. Leave out to use the provider type's default."
        ),
    )


TYPE_IS_IMMUTABLE = Rule(
    cel="self == oldSelf",
    message="spec.type is immutable: create a new GpuProvider for another kind of cloud",
)

CREDENTIALS_REQUIRED = Rule(
    cel="self.type == 'sim' || has(self.credentialsSecretRef)",
    message=(
        "spec.credentialsSecretRef is required unless spec.type is sim: "
        "name the Secret (name, namespace, key) that holds the provider's API key"
    ),
    field_path=".credentialsSecretRef",
    reason="FieldValueRequired",
    check=lambda spec: spec.type is ProviderType.SIM or spec.credentials_secret_ref is not None,
)


class GpuProviderSpec(WireModel):
    """Which cloud, how to reach it, and which of its offers the pools may use."""

    rules: ClassVar[tuple[Rule, ...]] = (CREDENTIALS_REQUIRED,)

    type: ProviderType = Field(
        description="The cloud API to use: sim (the simulated cloud), lambda or runpod. Immutable.",
        json_schema_extra=cel_rules(TYPE_IS_IMMUTABLE),
    )
    endpoint: str | None = Field(
        default=None,
        max_length=2048,
        pattern=URL_PATTERN,
        description=(
            "Base URL of the provider's API. Leave out for the type's public endpoint "
            f"(sim: {SIM_DEFAULT_ENDPOINT})."
        ),
    )
    credentials_secret_ref: SecretKeyRef | None = Field(
        default=None,
        description="The Secret holding the API key. Required for every type but sim.",
    )
    regions: Regions = Field(
        default_factory=list,
        description="Regions whose offers may be used, as the provider spells them. Empty means all.",
    )
    discount_percent: float = Field(
        default=0,
        ge=0,
        le=95,
        strict=True,
        description=(
            "Negotiated discount in percent, taken off every price of this provider before offers are ranked."
        ),
    )
    refresh_interval: Annotated[str, DurationBounds("10s", "24h")] = Field(
        default="5m",
        description="How often the offer catalog is refreshed from the provider, e.g. 30s, 5m, 1h.",
    )
    bootstrap: Bootstrap | None = Field(
        default=None, description="How new instances join the cluster. Leave out for the type's default."
    )
    options: Annotated[
        dict[str, Annotated[str, Field(max_length=256)]],
        Field(max_length=16),
    ] = Field(
        default_factory=dict,
        description=(
            "Settings particular to the provider type, never secrets: lambda sshKeyName (required by Lambda "
            "to launch); runpod image and containerDiskGb."
        ),
    )


class GpuProviderStatus(WireModel):
    """What the operator last learned from the provider."""

    offers: int | None = Field(
        default=None, ge=0, le=1_000_000, strict=True, description="GPU offers known from this provider."
    )
    last_refresh_time: datetime | None = Field(
        default=None, description="When the offers were last refreshed successfully."
    )
    conditions: Conditions = Field(
        default_factory=list, description="Ready is True when the last refresh succeeded."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, strict=True, description="The .metadata.generation this status reflects."
    )


class GpuProvider(WireModel):
    """A whole GpuProvider object as stored by the API server."""

    api_version: Literal["gpupool.dev/v1alpha1"] = Field(default=API_VERSION, description="API version.")
    kind: Literal["GpuProvider"] = Field(default="GpuProvider", description="Kind.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Object metadata.")
    spec: GpuProviderSpec = Field(description="Desired state.")
    status: GpuProviderStatus = Field(default_factory=GpuProviderStatus, description="Observed state.")


GPU_PROVIDER = KindInfo(
    kind="GpuProvider",
    plural="gpuproviders",
    short_names=("gpv",),
    scope="Cluster",
    description=(
        "GpuProvider is one cloud account the operator may rent GPU nodes from: its API, "
        "credentials, allowed regions, price discount and how often its offers are refreshed."
    ),
    spec_model=GpuProviderSpec,
    status_model=GpuProviderStatus,
    printer_columns=(
        PrinterColumn("Type", "string", ".spec.type", "The cloud API this provider speaks."),
        PrinterColumn("Offers", "integer", ".status.offers", "GPU offers known from this provider."),
        ready_column("True when the last offer refresh succeeded."),
        PrinterColumn(
            "Last Refresh", "date", ".status.lastRefreshTime", "When the offers were last refreshed.", 1
        ),
        AGE,
    ),
)


def default_endpoint(provider_type: ProviderType) -> str | None:
    """The endpoint used when the spec leaves it out (None: the client library's own)."""
    defaults: dict[ProviderType, str | None] = {
        ProviderType.SIM: SIM_DEFAULT_ENDPOINT,
        ProviderType.LAMBDA: None,
        ProviderType.RUNPOD: None,
    }
    return defaults[provider_type]
