"""The plan survives: a placement kept in status, and the hash of the inputs that decided it.

Planning picks an offer from prices that move every refresh, so planning again on every
restart, every `kubectl scale` or every HPA step would move a running model whenever a
price moved. Instead the chosen shape is written to `status.placement` together with a
hash of what decided it (the planning fields of the spec, the pool's constraints, the GPU
models given up for lack of capacity) and read back: while the hash matches, the placement
is the plan. Replicas and autoscaling bounds are not planning inputs; a budget is checked
against the kept placement's price instead.

Pure: the reconciler supplies the spec, the pool and the clock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpupool.planner import DeploymentRequest, Plan, PoolConstraints


@dataclass(frozen=True, slots=True)
class KeptPlacement:
    """What rendering and reporting need of a plan, as `status.placement` holds it."""

    gpu: str
    gpus_per_replica: int
    tensor_parallel_size: int
    max_model_len: int
    weights_gib: float
    provider: str
    region: str
    instance_type: str
    capacity_type: str
    price_per_hour: float
    replicas_per_instance: int
    inputs_hash: str
    excluded_gpus: tuple[str, ...] = ()
    cost_per_million_tokens: float | None = None
    pipeline_parallel_size: int = 1
    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None
    concurrency: float | None = None

    def to_status(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "gpusPerReplica": self.gpus_per_replica,
            "tensorParallelSize": self.tensor_parallel_size,
            **(
                {
                    "pipelineParallelSize": self.pipeline_parallel_size,
                    "nodesPerReplica": self.pipeline_parallel_size,
                }
                if self.pipeline_parallel_size > 1
                else {}
            ),
            "maxModelLen": self.max_model_len,
            "weightsGiB": round(self.weights_gib, 3),
            "provider": self.provider,
            "region": self.region,
            "instanceType": self.instance_type,
            "capacityType": self.capacity_type,
            "pricePerHour": round(self.price_per_hour, 4),
            "replicasPerInstance": self.replicas_per_instance,
            "inputsHash": self.inputs_hash,
            **({"kvCacheTokens": self.kv_cache_tokens} if self.kv_cache_tokens is not None else {}),
            **(
                {"maxConcurrency": round(self.max_concurrency, 2)} if self.max_concurrency is not None else {}
            ),
            **({"concurrency": round(self.concurrency, 2)} if self.concurrency is not None else {}),
            **({"excludedGpus": list(self.excluded_gpus)} if self.excluded_gpus else {}),
        }

    @classmethod
    def from_status(
        cls, placement: Mapping[str, Any] | None, cost_per_million_tokens: Any = None
    ) -> KeptPlacement | None:
        """The placement a status holds, or None when it predates plan keeping (re-plan then)."""
        if not placement or not placement.get("inputsHash") or not placement.get("maxModelLen"):
            return None
        try:
            return cls(
                gpu=str(placement["gpu"]),
                gpus_per_replica=int(placement["gpusPerReplica"]),
                tensor_parallel_size=int(placement.get("tensorParallelSize") or placement["gpusPerReplica"]),
                max_model_len=int(placement["maxModelLen"]),
                pipeline_parallel_size=int(placement.get("pipelineParallelSize") or 1),
                weights_gib=float(placement.get("weightsGiB") or 0.0),
                provider=str(placement.get("provider") or ""),
                region=str(placement.get("region") or ""),
                instance_type=str(placement.get("instanceType") or ""),
                capacity_type=str(placement.get("capacityType") or "on-demand"),
                price_per_hour=float(placement.get("pricePerHour") or 0.0),
                replicas_per_instance=max(int(placement.get("replicasPerInstance") or 1), 1),
                inputs_hash=str(placement["inputsHash"]),
                excluded_gpus=tuple(placement.get("excludedGpus") or ()),
                kv_cache_tokens=_optional(int, placement.get("kvCacheTokens")),
                max_concurrency=_optional(float, placement.get("maxConcurrency")),
                concurrency=_optional(float, placement.get("concurrency")),
                cost_per_million_tokens=(
                    float(cost_per_million_tokens) if cost_per_million_tokens is not None else None
                ),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def hourly_cost(self, replicas: int) -> float:
        """What `replicas` replicas of this placement cost per hour (whole instances)."""
        return math.ceil(replicas / self.replicas_per_instance) * self.price_per_hour


def inputs_hash(request: DeploymentRequest, pool: PoolConstraints, excluded_gpus: Sequence[str]) -> str:
    """A short, stable hash of everything that decides a placement, and nothing that should not.

    The replica count is left out (scaling never re-plans); the pool's usage figures are
    left out (they change with every node); prices are left out by construction (offers are
    not an input here), so a price move alone never moves a running model.
    """
    planning = dataclasses.replace(request, replicas=1)
    constraints = dataclasses.replace(pool, used_nodes=0, used_gpus=0, used_cost_per_hour=0.0)
    text = repr((planning, constraints, tuple(sorted(excluded_gpus))))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def kept_from_plan(plan: Plan, digest: str, excluded_gpus: Sequence[str]) -> KeptPlacement:
    """The placement to keep for a feasible plan."""
    choice = plan.choice
    assert choice is not None and choice.offer is not None
    memory = choice.memory
    return KeptPlacement(
        gpu=choice.shape.gpu,
        gpus_per_replica=choice.shape.gpus_per_replica,
        tensor_parallel_size=choice.shape.tensor_parallel_size,
        pipeline_parallel_size=choice.shape.pipeline_parallel_size,
        max_model_len=plan.max_model_len,
        weights_gib=memory.weights_gib if memory else 0.0,
        provider=choice.offer.provider,
        region=choice.offer.region,
        instance_type=choice.offer.instance_type,
        capacity_type=choice.capacity_type or "on-demand",
        price_per_hour=choice.price_per_hour or 0.0,
        replicas_per_instance=max(choice.replicas_per_instance, 1),
        inputs_hash=digest,
        excluded_gpus=tuple(excluded_gpus),
        cost_per_million_tokens=choice.cost_per_million_tokens,
        kv_cache_tokens=memory.kv_cache_tokens if memory else None,
        max_concurrency=memory.max_concurrency if memory else None,
        concurrency=memory.concurrency_at_average if memory else None,
    )


def _optional(kind: type[int] | type[float], value: Any) -> Any:
    return kind(value) if value is not None else None


def replicas_within_budget(kept: KeptPlacement, replicas: int, budget: float | None) -> int:
    """The most replicas up to `replicas` whose instances fit the hourly budget."""
    if budget is None or kept.price_per_hour <= 0:
        return replicas
    fitting = replicas
    while fitting > 0 and kept.hourly_cost(fitting) > budget + 1e-9:
        fitting -= 1
    return fitting


def gpus_to_exclude(
    kept: KeptPlacement, starved_since: float | None, now: float, wait_seconds: float
) -> tuple[str, ...] | None:
    """The GPU models to plan without, when the kept GPU has had no capacity for too long; else None.

    The kept GPU joins those already given up on. Once every model has been given up on, the
    caller's plan finds nothing and the list starts again from the kept GPU alone.
    """
    if starved_since is None or now - starved_since < wait_seconds:
        return None
    return tuple(sorted({*kept.excluded_gpus, kept.gpu}))
