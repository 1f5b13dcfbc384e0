"""GpuPool: a pool of GPU nodes the operator may grow and shrink.

Cluster-scoped and written by the platform team, like a Karpenter NodePool: it
bounds which offers may be bought (providers, GPU types, regions, capacity types),
how much may be spent, when idle nodes go away, and what every node is labelled
and tainted with. The status sums up what the pool holds and costs now.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, Field

from gpupool.api.base import (
    API_VERSION,
    DNS_SUBDOMAIN,
    LABEL_KEY,
    LABEL_VALUE,
    GpuNames,
    ObjectMeta,
    Regions,
    Rule,
    WireModel,
    cel_regex,
    cel_rules,
    field_rules,
    map_list,
    matches,
    no_duplicates,
    set_list,
    unique_by,
)
from gpupool.api.conditions import Conditions
from gpupool.api.durations import DURATION_PATTERN, NEVER, DurationBounds, parse_duration
from gpupool.api.kinds import AGE, KindInfo, PrinterColumn, ready_column

RESERVED_LABEL_PREFIX = "gpupool.dev/"


class CapacityType(StrEnum):
    """How an instance is bought: spot (cheaper, may be taken back) or on-demand."""

    SPOT = "spot"
    ON_DEMAND = "on-demand"


class TaintEffect(StrEnum):
    """What a taint does to pods that do not tolerate it."""

    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Limits(WireModel):
    """Ceilings the pool never grows past; a field left out means no limit."""

    max_nodes: int | None = Field(
        default=None, ge=1, le=10_000, strict=True, description="Most nodes the pool may hold."
    )
    max_gpus: int | None = Field(
        default=None, ge=1, le=100_000, strict=True, description="Most GPUs, summed over the pool's nodes."
    )
    max_hourly_cost: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        strict=True,
        description="Most the pool may cost, in USD per hour, summed over its nodes' prices. Must be positive.",
    )


EXPIRY_OUTLASTS_LAUNCH = Rule(
    cel=(
        "!has(self.expireAfter) || !has(self.launchTimeout) || self.expireAfter == 'Never' "
        f"|| !self.expireAfter.matches({cel_regex(DURATION_PATTERN)}) "
        f"|| !self.launchTimeout.matches({cel_regex(DURATION_PATTERN)}) "
        "|| duration(self.expireAfter) > duration(self.launchTimeout)"
    ),
    message=(
        "spec.disruption.expireAfter must be longer than spec.disruption.launchTimeout: "
        "raise expireAfter or set it to Never"
    ),
    field_path=".expireAfter",
    check=lambda d: (
        d.expire_after == NEVER or parse_duration(d.expire_after) > parse_duration(d.launch_timeout)
    ),
)


class DisruptionReason(StrEnum):
    """Why a node is taken away: Empty (no pods but DaemonSet pods), Expired (older than
    expireAfter), Drifted (its spec no longer matches the pool's), Unhealthy (NotReady too long)."""

    EMPTY = "Empty"
    EXPIRED = "Expired"
    DRIFTED = "Drifted"
    UNHEALTHY = "Unhealthy"


BUDGET_NODES = r"^((100|[0-9]{1,2})%|[0-9]{1,6})$"


class Budget(WireModel):
    """At most `nodes` of the pool's nodes may be in disruption at once for these reasons."""

    nodes: str = Field(
        default="10%",
        min_length=1,
        max_length=7,
        pattern=BUDGET_NODES,
        description=(
            'A count ("2") or a percentage of the pool\'s nodes ("10%", rounded up) that may be '
            'disrupted at once; "0" stops disruption for these reasons.'
        ),
    )
    reasons: list[DisruptionReason] = Field(
        default_factory=list,
        max_length=4,
        description="The reasons this budget limits; empty or left out: every reason.",
    )

    def allowed(self, total_nodes: int) -> int:
        """How many nodes this budget lets be disrupted at once out of `total_nodes`."""
        if self.nodes.endswith("%"):
            return -(-total_nodes * int(self.nodes[:-1]) // 100)
        return int(self.nodes)

    def applies_to(self, reason: DisruptionReason) -> bool:
        return not self.reasons or reason in self.reasons


class Disruption(WireModel):
    """When the operator may take nodes away, how many at once, and how long a launch may take."""

    rules: ClassVar[tuple[Rule, ...]] = (EXPIRY_OUTLASTS_LAUNCH,)

    consolidate_after: Annotated[str, DurationBounds("0s", "720h")] = Field(
        default="5m",
        description="How long a node must be empty or underused before it is removed or replaced.",
    )
    expire_after: Annotated[str, DurationBounds("10m", "8760h", allow_never=True)] = Field(
        default=NEVER,
        description="Replace nodes older than this (e.g. 720h), or Never.",
    )
    launch_timeout: Annotated[str, DurationBounds("30s", "2h")] = Field(
        default="10m",
        description="Give up on an instance whose node has not registered after this long and try the next offer.",
    )
    budgets: list[Budget] = Field(
        default_factory=lambda: [Budget()],
        max_length=50,
        description=(
            "How many nodes may be disrupted at once, per reason (as Karpenter's budgets); the "
            "tightest budget that applies wins. Default: 10% of the nodes, for every reason."
        ),
    )

    def allowed_disruptions(self, reason: DisruptionReason, total_nodes: int) -> int:
        """Nodes that may be in disruption at once for `reason` (the tightest applicable budget)."""
        limits = [b.allowed(total_nodes) for b in self.budgets if b.applies_to(reason)]
        return min(limits) if limits else total_nodes

    @property
    def consolidate_after_delta(self) -> timedelta:
        return parse_duration(self.consolidate_after)

    @property
    def expire_after_delta(self) -> timedelta | None:
        return None if self.expire_after == NEVER else parse_duration(self.expire_after)

    @property
    def launch_timeout_delta(self) -> timedelta:
        return parse_duration(self.launch_timeout)


class Taint(WireModel):
    """A taint put on every node of the pool (as in a Node's spec.taints)."""

    key: str = Field(
        min_length=1, max_length=316, pattern=LABEL_KEY, description="Taint key, e.g. nvidia.com/gpu."
    )
    value: str | None = Field(
        default=None, max_length=63, pattern=LABEL_VALUE, description="Taint value; may be left out."
    )
    effect: TaintEffect = Field(description="NoSchedule, PreferNoSchedule or NoExecute.")


LABEL_KEYS_VALID = Rule(
    cel=f"self.all(k, size(k) <= 316 && k.matches({cel_regex(LABEL_KEY)}))",
    message=(
        "spec.labels keys must be label keys such as team or example.com/team: an optional DNS "
        "prefix and '/', then up to 63 letters, digits, '-', '_' or '.', starting and ending "
        "with a letter or digit"
    ),
    check=lambda labels: all(len(k) <= 316 and matches(LABEL_KEY, k) for k in labels),
)
LABEL_KEYS_NOT_RESERVED = Rule(
    cel=f"self.all(k, !k.startsWith('{RESERVED_LABEL_PREFIX}'))",
    message=f"spec.labels must not use the {RESERVED_LABEL_PREFIX} prefix: the operator sets those labels itself",
    check=lambda labels: not any(k.startswith(RESERVED_LABEL_PREFIX) for k in labels),
)

NodeLabels = Annotated[
    dict[str, Annotated[str, Field(max_length=63, pattern=LABEL_VALUE)]],
    Field(max_length=64, json_schema_extra=cel_rules(LABEL_KEYS_VALID, LABEL_KEYS_NOT_RESERVED)),
    field_rules(LABEL_KEYS_VALID, LABEL_KEYS_NOT_RESERVED),
]


class GpuPoolSpec(WireModel):
    """Which offers the pool may buy, how much it may spend, and how its nodes look."""

    providers: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]],
        set_list(32),
        AfterValidator(no_duplicates),
    ] = Field(default_factory=list, description="Names of the GpuProviders to buy from. Empty means all.")
    gpu_types: GpuNames = Field(
        default_factory=list,
        description="GPU models the pool may use, normalized as in the catalog (H100, A100-80GB, L4). Empty means all.",
    )
    regions: Regions = Field(
        default_factory=list,
        description="Regions the pool may use, as the providers spell them. Empty means all.",
    )
    capacity_types: Annotated[
        list[CapacityType], set_list(2), Field(min_length=1), AfterValidator(no_duplicates)
    ] = Field(
        default_factory=lambda: [CapacityType.ON_DEMAND],
        description="How instances may be bought: spot, on-demand or both. Spot is used only where listed.",
    )
    limits: Limits | None = Field(
        default=None, description="Ceilings on nodes, GPUs and cost. Leave out for none."
    )
    disruption: Disruption = Field(
        default_factory=Disruption,
        description="When nodes may be consolidated, expired or given up on.",
    )
    labels: NodeLabels = Field(default_factory=dict, description="Labels put on every node of the pool.")
    taints: Annotated[list[Taint], map_list(32, "key", "effect"), unique_by("key", "effect")] = Field(
        default_factory=list, description="Taints put on every node of the pool; serving pods tolerate them."
    )


class GpuPoolStatus(WireModel):
    """What the pool holds and costs now."""

    nodes: int | None = Field(default=None, ge=0, le=1_000_000, strict=True, description="Nodes in the pool.")
    gpus_total: int | None = Field(
        default=None, ge=0, le=10_000_000, strict=True, description="GPUs on the pool's nodes."
    )
    gpus_allocated: int | None = Field(
        default=None,
        ge=0,
        le=10_000_000,
        strict=True,
        description="GPUs requested by pods bound to the pool's nodes.",
    )
    cost_per_hour: float | None = Field(
        default=None, ge=0, le=100_000_000, strict=True, description="Sum of the nodes' prices, USD per hour."
    )
    conditions: Conditions = Field(
        default_factory=list, description="Ready is True when the pool can satisfy its demand."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, strict=True, description="The .metadata.generation this status reflects."
    )


class GpuPool(WireModel):
    """A whole GpuPool object as stored by the API server."""

    api_version: Literal["gpupool.dev/v1alpha1"] = Field(default=API_VERSION, description="API version.")
    kind: Literal["GpuPool"] = Field(default="GpuPool", description="Kind.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Object metadata.")
    spec: GpuPoolSpec = Field(default_factory=GpuPoolSpec, description="Desired state.")
    status: GpuPoolStatus = Field(default_factory=GpuPoolStatus, description="Observed state.")


GPU_POOL = KindInfo(
    kind="GpuPool",
    plural="gpupools",
    short_names=("gpl",),
    scope="Cluster",
    description=(
        "GpuPool is a pool of GPU nodes the operator grows from the cheapest fitting offers and "
        "shrinks when idle: allowed providers, GPU types, regions and capacity types, limits on "
        "nodes, GPUs and cost, disruption timings, and node labels and taints."
    ),
    spec_model=GpuPoolSpec,
    status_model=GpuPoolStatus,
    printer_columns=(
        PrinterColumn("Nodes", "integer", ".status.nodes", "Nodes in the pool."),
        PrinterColumn("GPUs", "integer", ".status.gpusTotal", "GPUs on the pool's nodes."),
        PrinterColumn("Allocated", "integer", ".status.gpusAllocated", "GPUs in use by pods.", 1),
        PrinterColumn("$/hr", "number", ".status.costPerHour", "What the pool costs now, USD per hour."),
        ready_column("True when the pool can place its pending demand."),
        AGE,
    ),
    spec_optional=True,
)
