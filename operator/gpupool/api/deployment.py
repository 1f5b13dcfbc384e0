"""ModelDeployment: a model to serve with vLLM on the cheapest GPUs that fit it.

Namespaced and written by the users who serve models. Everything but the model id
has a default: the planner derives GPU type, count and tensor parallelism from the
model's size, and the fields here exist to override it where a person knows
better. The scale subresource points at `spec.replicas`, so `kubectl scale`, the
HPA and KEDA drive it like a Deployment.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from gpupool.api.base import (
    API_VERSION,
    DNS_SUBDOMAIN,
    SECRET_KEY,
    GpuNames,
    ObjectMeta,
    Rule,
    WireModel,
    cel_regex,
    matches,
)
from gpupool.api.conditions import Conditions
from gpupool.api.engine import (
    Architecture,
    Engine,
    Serving,
)
from gpupool.api.kinds import AGE, KindInfo, PrinterColumn, ready_column
from gpupool.api.pool import CapacityType

DEFAULT_POOL = "default"
# A Hugging Face repository id: an optional owner, '/', and the model name.
MODEL_ID = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9_])?(/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9_])?)?$"
SERVED_NAME = r"^[A-Za-z0-9][-A-Za-z0-9_./:]*$"
# The name becomes a Service name (a DNS-1035 label), so it must start with a letter.
DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


class Objective(StrEnum):
    """What the planner minimizes: the price per hour, or the price per token served."""

    COST_PER_HOUR = "costPerHour"
    COST_PER_TOKEN = "costPerToken"


MIN_NOT_ABOVE_MAX = Rule(
    cel="self.minReplicas <= self.maxReplicas",
    message=(
        "spec.autoscaling.minReplicas must not exceed spec.autoscaling.maxReplicas: "
        "lower minReplicas or raise maxReplicas"
    ),
    field_path=".minReplicas",
    check=lambda a: a.min_replicas <= a.max_replicas,
)


class Autoscaling(WireModel):
    """Bounds for an autoscaler (HPA, KEDA) that drives spec.replicas through the scale subresource."""

    rules: ClassVar[tuple[Rule, ...]] = (MIN_NOT_ABOVE_MAX,)

    min_replicas: int = Field(
        default=1, ge=0, le=1000, strict=True, description="Fewest replicas; 0 allows scaling to zero."
    )
    max_replicas: int = Field(ge=1, le=1000, strict=True, description="Most replicas.")


class GpuRequirements(WireModel):
    """Explicit GPU needs; each field left out is derived from the model's size."""

    types: GpuNames = Field(
        default_factory=list,
        description="GPU models allowed, normalized as in the catalog (H100, A100-80GB, L40S). Empty means any.",
    )
    count: int | None = Field(
        default=None, ge=1, le=16, strict=True, description="GPUs per replica, all on one node."
    )
    min_memory_gib: float | None = Field(
        default=None,
        alias="minMemoryGiB",
        gt=0,
        le=2048,
        strict=True,
        description="Least memory per GPU in GiB.",
    )


class ApiKeySecretRef(WireModel):
    """A key in a Secret in the ModelDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret.")
    key: str = Field(
        default="apiKey", min_length=1, max_length=253, pattern=SECRET_KEY, description="Key in the Secret."
    )


class HfTokenSecretRef(WireModel):
    """A key in a Secret in the ModelDeployment's namespace."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN, description="Name of the Secret.")
    key: str = Field(
        default="token", min_length=1, max_length=253, pattern=SECRET_KEY, description="Key in the Secret."
    )


class ModelCache(WireModel):
    """Where downloaded weights are kept between pod restarts."""

    pvc_name: str = Field(
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="A PersistentVolumeClaim in the same namespace, mounted as the Hugging Face cache.",
    )


TP_DIVIDES_COUNT = Rule(
    cel=(
        "!has(self.engine) || !has(self.engine.tensorParallelSize) || !has(self.gpu) "
        "|| !has(self.gpu.count) || self.gpu.count % self.engine.tensorParallelSize == 0"
    ),
    message=(
        "spec.engine.tensorParallelSize must divide spec.gpu.count (the GPUs of one replica): "
        "change one of them, or leave tensorParallelSize out"
    ),
    field_path=".engine.tensorParallelSize",
    check=lambda s: (
        s.engine.tensor_parallel_size is None
        or s.gpu is None
        or s.gpu.count is None
        or s.gpu.count % s.engine.tensor_parallel_size == 0
    ),
)
CONTEXT_FITS_MODEL = Rule(
    cel=(
        "!has(self.engine) || !has(self.engine.maxModelLen) || !has(self.architecture) "
        "|| has(self.engine.ropeScaling) || self.engine.maxModelLen <= self.architecture.maxContext"
    ),
    message=(
        "spec.engine.maxModelLen must not exceed spec.architecture.maxContext: "
        "the model cannot attend past its context window (unless spec.engine.ropeScaling extends it)"
    ),
    field_path=".engine.maxModelLen",
    check=lambda s: (
        s.engine.max_model_len is None
        or s.architecture is None
        or s.engine.rope_scaling is not None
        or s.engine.max_model_len <= s.architecture.max_context
    ),
)


class ModelDeploymentSpec(WireModel):
    """The model to serve and, optionally, how."""

    rules: ClassVar[tuple[Rule, ...]] = (TP_DIVIDES_COUNT, CONTEXT_FITS_MODEL)

    model: str = Field(
        min_length=1,
        max_length=256,
        pattern=MODEL_ID,
        description="Hugging Face model id, e.g. meta-llama/Llama-3.1-8B-Instruct. Required.",
    )
    served_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=SERVED_NAME,
        description="Model name clients send in requests. Leave out to use the model id.",
    )
    pool: str = Field(
        default=DEFAULT_POOL,
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
        description="The GpuPool whose nodes serve this model.",
    )
    replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        strict=True,
        description="Serving replicas. Set by `kubectl scale` or an autoscaler through the scale subresource.",
    )
    autoscaling: Autoscaling | None = Field(
        default=None, description="Replica bounds for an autoscaler. Leave out for a fixed replica count."
    )
    objective: Objective = Field(
        default=Objective.COST_PER_HOUR,
        description="What the planner minimizes: costPerHour, or costPerToken (cheapest per token served).",
    )
    capacity_type: CapacityType | None = Field(
        default=None,
        description="Prefer spot or on-demand instances. Leave out to let the pool decide.",
    )
    max_hourly_cost: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        strict=True,
        description="Budget for the whole deployment in USD per hour; placements above it are refused.",
    )
    gpu: GpuRequirements | None = Field(
        default=None, description="Explicit GPU needs. Leave out to derive them from the model's size."
    )
    engine: Engine = Field(default_factory=Engine, description="vLLM settings.")
    serving: Serving | None = Field(
        default=None, description="The load one replica must hold. Leave out for a small default."
    )
    architecture: Architecture | None = Field(
        default=None, description="The model's shape, for a model the planner does not know."
    )
    api_key_secret_ref: ApiKeySecretRef | None = Field(
        default=None, description="Secret with the API key clients must send. Leave out for an open endpoint."
    )
    hf_token_secret_ref: HfTokenSecretRef | None = Field(
        default=None, description="Secret with a Hugging Face token, for gated models."
    )
    model_cache: ModelCache | None = Field(default=None, description="Keep downloaded weights on a volume.")


class Placement(WireModel):
    """Where and how the model is served, as the planner chose."""

    gpu: str = Field(min_length=1, max_length=64, description="GPU model of each replica.")
    gpus_per_replica: int = Field(ge=1, le=64, strict=True, description="GPUs of one replica.")
    tensor_parallel_size: int | None = Field(
        default=None, ge=1, le=64, strict=True, description="Tensor-parallel size vLLM runs with."
    )
    pipeline_parallel_size: int | None = Field(
        default=None,
        ge=1,
        le=64,
        strict=True,
        description="Pipeline stages, one node each, when a replica spans nodes.",
    )
    nodes_per_replica: int | None = Field(
        default=None, ge=1, le=64, strict=True, description="Instances one replica spans (1 when left out)."
    )
    provider: str | None = Field(default=None, max_length=253, description="GpuProvider of the chosen offer.")
    region: str | None = Field(default=None, max_length=64, description="Region of the chosen offer.")
    instance_type: str | None = Field(
        default=None, max_length=128, description="Instance type of the chosen offer."
    )
    capacity_type: CapacityType | None = Field(default=None, description="spot or on-demand.")
    price_per_hour: float | None = Field(
        default=None, ge=0, le=10_000, strict=True, description="Price of the chosen instance, USD per hour."
    )
    replicas_per_instance: int | None = Field(
        default=None, ge=1, le=64, strict=True, description="Replicas one instance of the offer holds."
    )
    max_model_len: int | None = Field(
        default=None, ge=1, le=10_000_000, strict=True, description="Context length vLLM serves (tokens)."
    )
    kv_cache_tokens: int | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000_000,
        strict=True,
        description='Tokens the KV cache of one replica holds (vLLM\'s "GPU KV cache size").',
    )
    max_concurrency: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000,
        description='Sequences of maxModelLen one replica holds at once (vLLM\'s "Maximum concurrency").',
    )
    concurrency: float | None = Field(
        default=None,
        ge=0,
        le=1_000_000_000,
        description="Sequences of the average request size (spec.serving) one replica holds at once.",
    )
    weights_gib: float | None = Field(
        default=None,
        alias="weightsGiB",
        ge=0,
        le=100_000,
        description="Size of the weights, GiB (drives the startup budget).",
    )
    inputs_hash: str | None = Field(
        default=None,
        max_length=64,
        description=(
            "Hash of what decided this placement (the spec's planning fields, the pool's constraints, "
            "the GPU models given up on). While it matches, the placement is kept: a restart, a scale or "
            "a price move never re-plans."
        ),
    )
    excluded_gpus: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None,
        max_length=64,
        description="GPU models given up on for lack of capacity; the next plan goes without them.",
    )


class ModelDeploymentStatus(WireModel):
    """Where the model runs, how much of it is up, and what it costs."""

    placement: Placement | None = Field(default=None, description="The serving shape the planner chose.")
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=100_000,
        strict=True,
        description="Replicas that exist (the scale subresource reads it).",
    )
    ready_replicas: int | None = Field(
        default=None, ge=0, le=100_000, strict=True, description="Replicas ready to serve."
    )
    selector: str | None = Field(
        default=None, max_length=4096, description="Label selector of the serving pods, for autoscalers."
    )
    endpoint: str | None = Field(
        default=None, max_length=2048, description="In-cluster URL of the OpenAI-compatible API."
    )
    cost_per_hour: float | None = Field(
        default=None,
        ge=0,
        le=100_000_000,
        strict=True,
        description="What the replicas cost now, USD per hour.",
    )
    cost_per_million_tokens: float | None = Field(
        default=None,
        ge=0,
        le=100_000_000,
        strict=True,
        description="Estimated USD per million generated tokens at full load.",
    )
    conditions: Conditions = Field(
        default_factory=list,
        description="Ready (serving), Progressing (rolling out or waiting for nodes) and Degraded.",
    )
    observed_generation: int | None = Field(
        default=None, ge=0, strict=True, description="The .metadata.generation this status reflects."
    )


NAME_IS_SERVICE_NAME = Rule(
    cel=f"!has(self.metadata.name) || (size(self.metadata.name) <= 63 && self.metadata.name.matches({cel_regex(DNS_1035)}))",
    message=(
        "metadata.name must be at most 63 lowercase letters, digits or '-', starting with a letter: "
        "it also names the model's Service"
    ),
    check=lambda md: (
        md.metadata.name is None or (len(md.metadata.name) <= 63 and matches(DNS_1035, md.metadata.name))
    ),
)


class ModelDeployment(WireModel):
    """A whole ModelDeployment object as stored by the API server."""

    rules: ClassVar[tuple[Rule, ...]] = (NAME_IS_SERVICE_NAME,)

    api_version: Literal["gpupool.dev/v1alpha1"] = Field(default=API_VERSION, description="API version.")
    kind: Literal["ModelDeployment"] = Field(default="ModelDeployment", description="Kind.")
    metadata: ObjectMeta = Field(default_factory=ObjectMeta, description="Object metadata.")
    spec: ModelDeploymentSpec = Field(description="Desired state.")
    status: ModelDeploymentStatus = Field(
        default_factory=ModelDeploymentStatus, description="Observed state."
    )


MODEL_DEPLOYMENT = KindInfo(
    kind="ModelDeployment",
    plural="modeldeployments",
    short_names=("md", "mdep"),
    scope="Namespaced",
    description=(
        "ModelDeployment is a model to serve with vLLM: the operator picks the cheapest GPUs "
        "that fit it across the pool's providers, brings up nodes, and runs the serving pods, "
        "Service and disruption budget. Only spec.model is required."
    ),
    spec_model=ModelDeploymentSpec,
    status_model=ModelDeploymentStatus,
    printer_columns=(
        ready_column("True when every replica is ready to serve."),
        PrinterColumn("Replicas", "integer", ".status.readyReplicas", "Replicas ready to serve.", 1),
        PrinterColumn("Model", "string", ".spec.model", "Hugging Face model id."),
        PrinterColumn("GPU", "string", ".status.placement.gpu", "GPU model each replica runs on."),
        PrinterColumn("GPUs", "integer", ".status.placement.gpusPerReplica", "GPUs per replica.", 1),
        PrinterColumn("Provider", "string", ".status.placement.provider", "GpuProvider of the placement."),
        PrinterColumn("$/hr", "number", ".status.costPerHour", "What the replicas cost now, USD per hour."),
        PrinterColumn(
            "$/Mtok", "number", ".status.costPerMillionTokens", "Estimated USD per million tokens.", 1
        ),
        PrinterColumn("Endpoint", "string", ".status.endpoint", "URL of the OpenAI-compatible API."),
        AGE,
    ),
    scale=True,
    root_rules=(NAME_IS_SERVICE_NAME,),
)


def default_max_model_len(model_max_context: int) -> int:
    """The context length served when spec.engine.maxModelLen is left out."""
    return min(model_max_context, 8192)
