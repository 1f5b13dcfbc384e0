"""What the planner answers: candidate shapes and offers, each feasible or refused, and the Plan.

A Plan holds the choice and every alternative with the reason it lost or was refused, ranked on
first use, and renders the JSON that `gpupool plan -o json` prints and docs/planner.md documents.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gpupool.catalog.offers import CapacityType, Offer
from gpupool.planner.memory import MemoryEstimate
from gpupool.planner.request import (
    BUDGET_EXCEEDED,
    MODEL_DOES_NOT_FIT,
    NO_OFFERS,
    TENSOR_PARALLEL,
    UNAVAILABLE,
    UNSUPPORTED_GPU,
    Objective,
)
from gpupool.planner.throughput import ThroughputEstimate


@dataclass(frozen=True, slots=True)
class Shape:
    gpu: str
    gpu_memory_gib: float
    gpus_per_replica: int
    tensor_parallel_size: int
    # Pipeline stages, one node each: a replica of more than one spans that many instances.
    pipeline_parallel_size: int = 1

    @property
    def nodes_per_replica(self) -> int:
        return self.pipeline_parallel_size

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "gpuMemoryGiB": self.gpu_memory_gib,
            "gpusPerReplica": self.gpus_per_replica,
            "tensorParallelSize": self.tensor_parallel_size,
            "pipelineParallelSize": self.pipeline_parallel_size,
            "nodesPerReplica": self.nodes_per_replica,
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    """One way to run the deployment (an offer group at a capacity type), feasible or refused."""

    shape: Shape
    offer: Offer | None
    capacity_type: CapacityType | None
    price_per_hour: float | None = None
    instances: int = 0
    replicas_per_instance: int = 0
    cost_per_hour: float | None = None
    throughput: ThroughputEstimate | None = None
    cost_per_million_tokens: float | None = None
    memory: MemoryEstimate | None = None
    refusal: str | None = None
    detail: str | None = None
    provider: str = ""

    @property
    def feasible(self) -> bool:
        return self.refusal is None

    @property
    def reason(self) -> str | None:
        """Why it lost or was refused, with the numbers ("needs 152 GiB, has 72 GiB ...")."""
        if self.detail is None and self.refusal == MODEL_DOES_NOT_FIT and self.memory is not None:
            # Formatted on demand: most plans never show most of their refusals.
            return self.memory.shortfall_message()
        return self.detail

    def to_dict(self) -> dict[str, Any]:
        offer = self.offer
        return {
            "feasible": self.feasible,
            "refusal": self.refusal,
            "reason": self.reason,
            **self.shape.to_dict(),
            "provider": offer.provider if offer else self.provider,
            "region": offer.region if offer else None,
            "zone": offer.zone if offer else None,
            "instanceType": offer.instance_type if offer else None,
            "gpuCount": offer.gpu_count if offer else None,
            "capacityType": self.capacity_type,
            "pricePerHour": _round(self.price_per_hour),
            "instances": self.instances,
            "costPerHour": _round(self.cost_per_hour),
            "tokensPerSecond": _round(self.throughput.tokens_per_second if self.throughput else None, 1),
            "costPerMillionTokens": _round(self.cost_per_million_tokens),
            "requiredGiB": _round(self.memory.required_gib if self.memory else None, 1),
            "availableGiB": _round(self.memory.available_gib if self.memory else None, 1),
        }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class Plan:
    """The planner's decision: a choice (or none, with a reason) and every alternative ranked."""

    model: str
    objective: Objective
    replicas: int
    max_model_len: int
    choice: Candidate | None
    reason: str | None
    message: str
    notes: tuple[str, ...] = ()
    # Every candidate in no particular order; `alternatives` ranks them on first use, so a caller
    # that needs only the choice does not pay for sorting a few hundred rows.
    candidates: tuple[Candidate, ...] = field(default=(), repr=False, compare=False)
    # Builds the feasible candidates on first use of `alternatives` (see _evaluate_group).
    candidate_source: Callable[[], tuple[Candidate, ...]] | None = field(
        default=None, repr=False, compare=False
    )
    # Ranking by price needs no throughput; these fill it in for display when alternatives are read.
    fill_throughput: Callable[[Candidate], Candidate] | None = field(default=None, repr=False, compare=False)
    unfilled_choice: Candidate | None = field(default=None, repr=False, compare=False)

    @property
    def feasible(self) -> bool:
        return self.choice is not None

    @functools.cached_property
    def alternatives(self) -> tuple[Candidate, ...]:
        """Every candidate: feasible ones by the objective (the choice first), then refused ones."""
        everything = self.candidate_source() if self.candidate_source is not None else self.candidates
        feasible = sorted((c for c in everything if c.feasible), key=lambda c: sort_key(self.objective, c))
        refused = sorted((c for c in everything if not c.feasible), key=refused_sort_key)
        fill = self.fill_throughput
        if fill is not None:
            feasible = [
                self.choice if c is self.unfilled_choice and self.choice else fill(c) for c in feasible
            ]
        return (*feasible, *refused)

    @property
    def memory(self) -> MemoryEstimate | None:
        """The chosen shape's memory arithmetic, else that of the closest refused shape."""
        if self.choice is not None:
            return self.choice.memory
        for candidate in self.alternatives:
            if candidate.memory is not None:
                return candidate.memory
        return None

    def to_dict(self, max_alternatives: int | None = None) -> dict[str, Any]:
        """The documented JSON schema (docs/planner.md)."""
        choice = self.choice
        offer = choice.offer if choice else None
        memory = self.memory
        alternatives = (
            []
            if max_alternatives == 0
            else [c for c in self.alternatives if choice is None or c is not choice][
                : max_alternatives if max_alternatives is not None else None
            ]
        )
        return {
            "model": self.model,
            "objective": self.objective,
            "replicas": self.replicas,
            "maxModelLen": self.max_model_len,
            "feasible": self.feasible,
            "reason": self.reason,
            "message": self.message,
            "shape": choice.shape.to_dict() | {"replicasPerInstance": choice.replicas_per_instance}
            if choice
            else None,
            "offer": {
                "key": offer.key,
                "provider": offer.provider,
                "region": offer.region,
                "zone": offer.zone,
                "instanceType": offer.instance_type,
                "gpu": offer.gpu,
                "gpuCount": offer.gpu_count,
                "gpuMemoryGiB": offer.gpu_memory_gib,
                "capacityType": choice.capacity_type,
                "pricePerHour": _round(choice.price_per_hour),
            }
            if choice and offer
            else None,
            "instances": choice.instances if choice else 0,
            "costPerHour": _round(choice.cost_per_hour) if choice else None,
            "tokensPerSecond": _round(choice.throughput.tokens_per_second, 1)
            if choice and choice.throughput
            else None,
            "costPerMillionTokens": _round(choice.cost_per_million_tokens) if choice else None,
            "estimate": True,
            "memory": memory.to_dict() if memory else None,
            "alternatives": [c.to_dict() for c in alternatives],
            "notes": list(self.notes),
        }


def sort_key(objective: Objective, candidate: Candidate) -> tuple[Any, ...]:
    offer = candidate.offer
    tie = (
        candidate.shape.tensor_parallel_size,
        candidate.provider,
        offer.region if offer else "",
        offer.zone if offer else "",
        offer.instance_type if offer else "",
        candidate.capacity_type or "",
    )
    cost = candidate.cost_per_hour if candidate.cost_per_hour is not None else math.inf
    if objective == "costPerToken":
        per_token = candidate.cost_per_million_tokens
        return (per_token if per_token is not None else math.inf, cost, *tie)
    return (cost, *tie)


_REFUSAL_ORDER = {
    BUDGET_EXCEEDED: 0,
    UNAVAILABLE: 1,
    MODEL_DOES_NOT_FIT: 2,
    TENSOR_PARALLEL: 3,
    UNSUPPORTED_GPU: 4,
    NO_OFFERS: 5,
}


def refused_sort_key(candidate: Candidate) -> tuple[Any, ...]:
    closeness = 0.0
    if candidate.memory is not None and candidate.refusal == MODEL_DOES_NOT_FIT:
        closeness = candidate.memory.per_gpu_required_gib / candidate.memory.per_gpu_available_gib
    cost = candidate.cost_per_hour if candidate.cost_per_hour is not None else math.inf
    return (
        _REFUSAL_ORDER.get(candidate.refusal or "", 9),
        closeness,
        cost,
        candidate.shape.gpu,
        candidate.provider,
        candidate.shape.tensor_parallel_size,
    )
