"""What the renderers need to know, as plain data, and how a ModelDeployment spec maps onto it.

The renderers never see the pydantic API models or the planner's types: the controller hands
them one frozen `ServingInput`, already resolved (the GPU types, tensor-parallel size and
context length the planner chose, the pool's taints). That keeps this package free of any
dependency on the rest of gpupool, so it can be tested with literals and reused by the CLI
to print manifests. `serving_input_from_spec` is the one place that reads the CRD's wire
shape (camelCase dict) and applies the API's documented defaults.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

#: The image when the spec names none. Pinned, never `latest`: a rollout must be reproducible,
#: and a new vLLM release changes flags and memory behaviour.
DEFAULT_IMAGE = "vllm/vllm-openai:v0.11.0"

#: Keys inside the user's Secrets when the spec's `*SecretRef` omits `key`.
#: `token` matches vLLM's own Kubernetes guide for the Hugging Face token.
DEFAULT_HF_TOKEN_KEY = "token"
DEFAULT_API_KEY_KEY = "apiKey"

TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
CapacityType = Literal["spot", "on-demand"]

_TAINT_EFFECTS: frozenset[str] = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})
_CAPACITY_TYPES: frozenset[str] = frozenset({"spot", "on-demand"})


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
    """Everything needed to render one model's Deployment, Service and PodDisruptionBudget."""

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
    max_num_seqs: int
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
    labels: Mapping[str, str] = field(default_factory=dict)


def serving_input_from_spec(
    name: str,
    namespace: str,
    uid: str,
    generation: int,
    spec: Mapping[str, Any],
    *,
    gpu_types: Sequence[str],
    gpus_per_replica: int,
    tensor_parallel_size: int,
    max_model_len: int,
    model_size_gib: float,
    pool_name: str,
    pool_taints: Sequence[Taint | Mapping[str, str]] = (),
    labels: Mapping[str, str] | None = None,
) -> ServingInput:
    """Map a ModelDeployment `spec` (wire shape, camelCase) and the planner's shape onto a ServingInput.

    The planner's answers (GPU types, GPUs per replica, tensor-parallel size, context length)
    come as keyword arguments because the planner already folded the spec's overrides
    (`gpu`, `engine.tensorParallelSize`, `engine.maxModelLen`) into them.
    """
    model = spec.get("model")
    if not isinstance(model, str) or not model.strip():
        raise RenderError("spec.model", "a Hugging Face model id is required (e.g. meta-llama/Llama-3.1-8B)")
    engine: Mapping[str, Any] = spec.get("engine") or {}
    capacity = spec.get("capacityType")
    if capacity is not None and capacity not in _CAPACITY_TYPES:
        raise RenderError("spec.capacityType", f"must be spot or on-demand, not {capacity!r}")
    extra_args = engine.get("extraArgs") or []
    if not all(isinstance(arg, str) for arg in extra_args):
        raise RenderError("spec.engine.extraArgs", "every argument must be a string")
    cache = spec.get("modelCache") or {}
    return ServingInput(
        name=name,
        namespace=namespace,
        uid=uid,
        generation=generation,
        model=model,
        served_name=spec.get("servedName") or model,
        replicas=_replicas(spec),
        image=engine.get("image") or DEFAULT_IMAGE,
        tensor_parallel_size=tensor_parallel_size,
        gpus_per_replica=gpus_per_replica,
        max_model_len=max_model_len,
        dtype=engine.get("dtype") or "auto",
        quantization=engine.get("quantization") or "none",
        gpu_memory_utilization=float(engine.get("gpuMemoryUtilization", 0.9)),
        max_num_seqs=int(engine.get("maxNumSeqs", 16)),
        extra_args=tuple(extra_args),
        gpu_types=tuple(gpu_types),
        pool_name=pool_name,
        pool_taints=tuple(_taint(t) for t in pool_taints),
        capacity_type=capacity,
        hf_token_secret=_secret_ref(spec.get("hfTokenSecretRef"), DEFAULT_HF_TOKEN_KEY),
        api_key_secret=_secret_ref(spec.get("apiKeySecretRef"), DEFAULT_API_KEY_KEY),
        model_cache_pvc=cache.get("pvcName") or None,
        model_size_gib=model_size_gib,
        labels=dict(labels or {}),
    )


def _replicas(spec: Mapping[str, Any]) -> int:
    """The replica count to render: `spec.replicas`, kept inside the autoscaling bounds if any.

    With autoscaling the scale subresource writes `spec.replicas`; before anything has, the
    floor is `minReplicas`, so a new autoscaled deployment starts at its minimum.
    """
    autoscaling: Mapping[str, Any] = spec.get("autoscaling") or {}
    low = int(autoscaling.get("minReplicas", 0))
    replicas = spec.get("replicas")
    count = int(replicas) if replicas is not None else max(low, 1)
    if autoscaling:
        high = int(autoscaling.get("maxReplicas", count))
        count = min(max(count, low), high)
    if count < 0:
        raise RenderError("spec.replicas", f"must not be negative, got {count}")
    return count


def _secret_ref(ref: Mapping[str, Any] | None, default_key: str) -> SecretKeyRef | None:
    if not ref:
        return None
    return SecretKeyRef(name=str(ref["name"]), key=str(ref.get("key") or default_key))


def _taint(taint: Taint | Mapping[str, str]) -> Taint:
    if isinstance(taint, Taint):
        return taint
    effect = taint.get("effect", "NoSchedule")
    if effect not in _TAINT_EFFECTS:
        raise RenderError("GpuPool spec.taints", f"unknown taint effect {effect!r}")
    return Taint(key=taint["key"], value=taint.get("value", ""), effect=cast(TaintEffect, effect))
