"""From the API's wire shape (camelCase spec dicts) to the planner's plain inputs.

The planner does not import the pydantic API models: the controller and the CLI both hold specs as
dicts (from the API server or from YAML), and one mapping here keeps their defaults identical to the
CRD's (pool "default", replicas 1, gpuMemoryUtilization 0.9, maxNumSeqs 16, on-demand capacity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from gpupool.catalog.offers import CAPACITY_TYPES, CapacityType
from gpupool.planner.models import ModelArchitecture, resolve_architecture
from gpupool.planner.placement import DeploymentRequest, Objective, PoolConstraints


def _kv_cache_dtype(extra_args: Sequence[str]) -> str:
    """`--kv-cache-dtype X` or `--kv-cache-dtype=X` among vLLM's extra args, else "auto"."""
    for position, arg in enumerate(extra_args):
        if arg.startswith("--kv-cache-dtype="):
            return arg.split("=", 1)[1]
        if arg == "--kv-cache-dtype" and position + 1 < len(extra_args):
            return extra_args[position + 1]
    return "auto"


def _capacity(value: Any) -> CapacityType | None:
    if value is None:
        return None
    if value not in CAPACITY_TYPES:
        raise ValueError(f"capacityType must be one of {CAPACITY_TYPES}, got {value!r}")
    return cast(CapacityType, value)


def request_from_spec(
    spec: Mapping[str, Any], *, architecture: ModelArchitecture | None = None
) -> DeploymentRequest:
    """A DeploymentRequest from a ModelDeployment spec dict (wire shape, camelCase).

    `architecture` (e.g. read from a config.json) replaces the built-in table; otherwise the model
    id is looked up there, overridden field by field by `spec.architecture`. Raises UnknownModel
    when neither knows the model, ValueError on values outside the CRD's enums.
    """
    model = str(spec.get("model") or "").strip()
    if not model:
        raise ValueError("spec.model is required")
    arch = architecture or resolve_architecture(model, spec.get("architecture") or None)
    engine: Mapping[str, Any] = spec.get("engine") or {}
    gpu: Mapping[str, Any] = spec.get("gpu") or {}
    objective = spec.get("objective") or "costPerHour"
    if objective not in ("costPerHour", "costPerToken"):
        raise ValueError(f"objective must be costPerHour or costPerToken, got {objective!r}")
    autoscaling: Mapping[str, Any] = spec.get("autoscaling") or {}
    # With autoscaling, size the placement for the floor; growth goes through the pool's packer.
    replicas = int(autoscaling.get("minReplicas") or spec.get("replicas") or 1)
    quantization = engine.get("quantization") or "none"
    return DeploymentRequest(
        model=model,
        architecture=arch,
        replicas=max(1, replicas),
        objective=cast(Objective, objective),
        capacity_type=_capacity(spec.get("capacityType")),
        max_hourly_cost=float(spec["maxHourlyCost"]) if spec.get("maxHourlyCost") is not None else None,
        gpu_types=tuple(gpu.get("types") or ()),
        gpu_count=int(gpu["count"]) if gpu.get("count") else None,
        min_gpu_memory_gib=float(gpu["minMemoryGiB"]) if gpu.get("minMemoryGiB") is not None else None,
        max_model_len=int(engine["maxModelLen"]) if engine.get("maxModelLen") else None,
        dtype=engine.get("dtype") or "auto",
        quantization=quantization,
        gpu_memory_utilization=float(engine.get("gpuMemoryUtilization") or 0.9),
        max_num_seqs=int(engine.get("maxNumSeqs") or 16),
        tensor_parallel_size=int(engine["tensorParallelSize"]) if engine.get("tensorParallelSize") else None,
        kv_cache_dtype=_kv_cache_dtype(list(engine.get("extraArgs") or ())),
    )


def pool_constraints_from_spec(spec: Mapping[str, Any], *, name: str = "default") -> PoolConstraints:
    """PoolConstraints from a GpuPool spec dict (wire shape). Status figures are not read here."""
    limits: Mapping[str, Any] = spec.get("limits") or {}
    capacity_types = tuple(_capacity(c) for c in (spec.get("capacityTypes") or ["on-demand"]))
    return PoolConstraints(
        name=name,
        providers=tuple(spec.get("providers") or ()),
        gpu_types=tuple(spec.get("gpuTypes") or ()),
        regions=tuple(spec.get("regions") or ()),
        capacity_types=tuple(c for c in capacity_types if c is not None),
        max_nodes=int(limits["maxNodes"]) if limits.get("maxNodes") is not None else None,
        max_gpus=int(limits["maxGpus"]) if limits.get("maxGpus") is not None else None,
        max_hourly_cost=float(limits["maxHourlyCost"]) if limits.get("maxHourlyCost") is not None else None,
        node_labels=tuple(sorted((str(k), str(v)) for k, v in (spec.get("labels") or {}).items())),
        node_taints=tuple(
            (str(t["key"]), str(t.get("value") or ""), str(t["effect"])) for t in spec.get("taints") or []
        ),
    )
