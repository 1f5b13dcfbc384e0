"""From the API's models to the planner's plain inputs.

The controllers and the CLI both hold a ModelDeployment's and a GpuPool's spec as the pydantic
API models (validated, defaults applied), so every default the planner sees is the CRD's and
lives in one place: gpupool/api. This module only changes the shape: enums to their strings,
lists to tuples, the autoscaling floor to the replicas the placement is sized for, vLLM's
`--kv-cache-dtype` out of the extra arguments.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import cast

from gpupool.api.deployment import ModelDeploymentSpec
from gpupool.api.engine import RopeScaling as RopeScalingSpec
from gpupool.api.pool import GpuPoolSpec
from gpupool.catalog.offers import CapacityType
from gpupool.planner.hf_config import derived_max_context
from gpupool.planner.models import ModelArchitecture, RopeScaling, resolve_architecture
from gpupool.planner.request import DeploymentRequest, Objective, PoolConstraints


def _kv_cache_dtype(extra_args: Sequence[str]) -> str:
    """`--kv-cache-dtype X` or `--kv-cache-dtype=X` among vLLM's extra args, else "auto"."""
    for position, arg in enumerate(extra_args):
        if arg.startswith("--kv-cache-dtype="):
            return arg.split("=", 1)[1]
        if arg == "--kv-cache-dtype" and position + 1 < len(extra_args):
            return extra_args[position + 1]
    return "auto"


def request_from_spec(
    spec: ModelDeploymentSpec, *, architecture: ModelArchitecture | None = None
) -> DeploymentRequest:
    """A DeploymentRequest from a ModelDeployment's spec.

    `architecture` (e.g. read from a config.json) replaces the built-in table; otherwise the model
    id is looked up there, overridden field by field by `spec.architecture`. Raises UnknownModel
    when neither knows the model.
    """
    override = spec.architecture.to_k8s() if spec.architecture is not None else None
    arch = architecture or resolve_architecture(spec.model, override)
    engine, gpu, serving = spec.engine, spec.gpu, spec.serving
    if engine.rope_scaling is not None:
        arch = with_rope_scaling(arch, engine.rope_scaling)
    # With autoscaling, size the placement for the floor; growth goes through the pool's packer.
    replicas = (spec.autoscaling.min_replicas if spec.autoscaling is not None else 0) or spec.replicas
    return DeploymentRequest(
        model=spec.model,
        architecture=arch,
        replicas=max(1, replicas),
        objective=cast(Objective, str(spec.objective)),
        capacity_type=cast(CapacityType, str(spec.capacity_type)) if spec.capacity_type else None,
        max_hourly_cost=spec.max_hourly_cost,
        gpu_types=tuple(gpu.types) if gpu is not None else (),
        gpu_count=gpu.count if gpu is not None else None,
        min_gpu_memory_gib=gpu.min_memory_gib if gpu is not None else None,
        max_model_len=engine.max_model_len,
        dtype=str(engine.dtype),
        quantization=str(engine.quantization),
        gpu_memory_utilization=engine.gpu_memory_utilization,
        max_num_seqs=engine.max_num_seqs,
        max_num_batched_tokens=engine.max_num_batched_tokens,
        target_concurrency=serving.target_concurrency if serving is not None else None,
        average_input_tokens=serving.average_input_tokens if serving is not None else None,
        average_output_tokens=serving.average_output_tokens if serving is not None else None,
        tensor_parallel_size=engine.tensor_parallel_size,
        kv_cache_dtype=_kv_cache_dtype(engine.extra_args),
    )


def with_rope_scaling(arch: ModelArchitecture, given: RopeScalingSpec) -> ModelArchitecture:
    """The architecture served with `--rope-scaling`: vLLM derives the longest context again."""
    rope = RopeScaling(str(given.rope_type), given.factor, given.original_max_position_embeddings)
    base = arch.max_position_embeddings or arch.max_context
    return dataclasses.replace(
        arch, rope_scaling=rope, max_context=derived_max_context(base, rope, arch.model_type)
    )


def pool_constraints_from_spec(spec: GpuPoolSpec, *, name: str) -> PoolConstraints:
    """PoolConstraints from a GpuPool's spec. Status figures are not read here."""
    limits = spec.limits
    return PoolConstraints(
        name=name,
        providers=tuple(spec.providers),
        gpu_types=tuple(spec.gpu_types),
        regions=tuple(spec.regions),
        capacity_types=tuple(cast(CapacityType, str(c)) for c in spec.capacity_types),
        max_nodes=limits.max_nodes if limits is not None else None,
        max_gpus=limits.max_gpus if limits is not None else None,
        max_hourly_cost=limits.max_hourly_cost if limits is not None else None,
        node_labels=tuple(sorted(spec.labels.items())),
        node_taints=tuple((t.key, t.value or "", str(t.effect)) for t in spec.taints),
    )
