"""What the renderers need to know, as plain data, and how a ModelDeployment's spec maps onto it.

The renderers never see the pydantic API models or the planner's types: the controller hands
them one frozen `ServingInput`, already resolved (the GPU types, tensor-parallel size and
context length the planner chose, the pool's taints), so they can be tested with literals and
reused by the CLI to print manifests. `serving_input_from_spec` is the one place that reads the
API model; every default (image, Secret keys, vLLM settings) is the model's, from gpupool/api.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, cast

from gpupool.api.deployment import ModelDeploymentSpec
from gpupool.api.engine import DEFAULT_IMAGE
from gpupool.api.pool import Taint as PoolTaint

__all__ = ["DEFAULT_IMAGE", "RenderError", "SecretKeyRef", "ServingInput", "Taint", "serving_input_from_spec"]

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
CapacityType = Literal["spot", "on-demand"]


class RenderError(ValueError):
    """The spec cannot be turned into valid Kubernetes objects.

    `field` is the spec path a person should fix (`spec.engine.extraArgs`), so the controller
    can put it straight into the ModelDeployment's `Ready=False` condition message.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SecretKeyRef:
    """One key of one Secret in the ModelDeployment's namespace."""

    name: str
    key: str


@dataclass(frozen=True)
class Taint:
    """A node taint of the pool, which the serving pods must tolerate to land on its nodes."""

    key: str
    value: str
    effect: TaintEffect


@dataclass(frozen=True)
class ServingInput:
    """Everything needed to render one model's workload, Service and PodDisruptionBudget."""

    name: str
    namespace: str
    uid: str
    generation: int
    model: str
    served_name: str
    replicas: int
    image: str
    tensor_parallel_size: int
    gpus_per_replica: int
    max_model_len: int
    dtype: str
    quantization: str
    gpu_memory_utilization: float
    # vLLM's own defaults apply when these are None (the spec left them out).
    max_num_seqs: int | None
    # Normalized GPU names (H100, A100-80GB, L4) the planner allows; the pods may land on any.
    gpu_types: tuple[str, ...]
    pool_name: str
    extra_args: tuple[str, ...] = ()
    pool_taints: tuple[Taint, ...] = ()
    capacity_type: CapacityType | None = None
    hf_token_secret: SecretKeyRef | None = None
    api_key_secret: SecretKeyRef | None = None
    model_cache_pvc: str | None = None
    # Size of the weights on disk, GiB: drives the startup budget and /dev/shm.
    model_size_gib: float = 0.0
    max_num_batched_tokens: int | None = None
    # `--rope-scaling` as vLLM's JSON (rope_type, factor, original_max_position_embeddings).
    rope_scaling: Mapping[str, object] | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    # Pipeline stages vLLM splits the layers into (`--pipeline-parallel-size`). A multi-node
    # replica runs one stage per node, so there it equals `nodes_per_replica`.
    pipeline_parallel_size: int = 1
    # Nodes one replica spans, one pod each with `tensor_parallel_size` GPUs. Above 1 the
    # replica is a LeaderWorkerSet group (a leader running the engine, workers joining it
    # through Ray) instead of one pod of a Deployment.
    nodes_per_replica: int = 1


def serving_input_from_spec(
    name: str,
    namespace: str,
    uid: str,
    generation: int,
    spec: ModelDeploymentSpec,
    *,
    gpu_types: Sequence[str],
    gpus_per_replica: int,
    tensor_parallel_size: int,
    max_model_len: int,
    model_size_gib: float,
    pool_name: str,
    pool_taints: Sequence[PoolTaint] = (),
    labels: Mapping[str, str] | None = None,
    pipeline_parallel_size: int = 1,
    nodes_per_replica: int = 1,
) -> ServingInput:
    """Map a ModelDeployment's spec and the planner's shape onto a ServingInput.

    The planner's answers (GPU types, GPUs per replica, tensor-parallel size, context length,
    and for a model no single instance holds the pipeline stages and nodes per replica) come
    as keyword arguments because the planner already folded the spec's overrides (`gpu`,
    `engine.tensorParallelSize`, `engine.maxModelLen`) into them.
    """
    engine = spec.engine
    hf_token, api_key, cache = spec.hf_token_secret_ref, spec.api_key_secret_ref, spec.model_cache
    return ServingInput(
        name=name,
        namespace=namespace,
        uid=uid,
        generation=generation,
        model=spec.model,
        served_name=spec.served_name or spec.model,
        replicas=_replicas(spec),
        image=engine.image,
        tensor_parallel_size=tensor_parallel_size,
        gpus_per_replica=gpus_per_replica,
        max_model_len=max_model_len,
        dtype=str(engine.dtype),
        quantization=str(engine.quantization),
        gpu_memory_utilization=engine.gpu_memory_utilization,
        max_num_seqs=engine.max_num_seqs,
        extra_args=tuple(engine.extra_args),
        gpu_types=tuple(gpu_types),
        pool_name=pool_name,
        pool_taints=tuple(
            Taint(key=t.key, value=t.value or "", effect=cast(TaintEffect, str(t.effect)))
            for t in pool_taints
        ),
        capacity_type=cast(CapacityType, str(spec.capacity_type)) if spec.capacity_type else None,
        hf_token_secret=SecretKeyRef(name=hf_token.name, key=hf_token.key) if hf_token else None,
        api_key_secret=SecretKeyRef(name=api_key.name, key=api_key.key) if api_key else None,
        model_cache_pvc=cache.pvc_name if cache else None,
        model_size_gib=model_size_gib,
        max_num_batched_tokens=engine.max_num_batched_tokens,
        rope_scaling=_rope_scaling(spec),
        labels=dict(labels or {}),
        pipeline_parallel_size=pipeline_parallel_size,
        nodes_per_replica=nodes_per_replica,
    )


def _rope_scaling(spec: ModelDeploymentSpec) -> dict[str, object] | None:
    """The spec's ropeScaling in the snake_case keys of a config.json, as `--rope-scaling` takes it."""
    rope = spec.engine.rope_scaling
    if rope is None:
        return None
    rendered: dict[str, object] = {"rope_type": str(rope.rope_type), "factor": rope.factor}
    if rope.original_max_position_embeddings is not None:
        rendered["original_max_position_embeddings"] = rope.original_max_position_embeddings
    return rendered


def _replicas(spec: ModelDeploymentSpec) -> int:
    """The replica count to render: `spec.replicas`, kept inside the autoscaling bounds if any.

    The scale subresource (kubectl scale, the HPA) writes `spec.replicas`; an autoscaler may lag
    behind a change of the bounds, so the bounds win.
    """
    if spec.autoscaling is None:
        return spec.replicas
    return min(max(spec.replicas, spec.autoscaling.min_replicas), spec.autoscaling.max_replicas)
