"""The planner: pure functions that size a model and choose the cheapest GPUs to run it on.

No I/O, no Kubernetes: plain dataclasses in, plain dataclasses out, so it is tested exhaustively and
runs in the controller, the CLI and the benchmarks alike. Stable interface:

- `request_from_spec(ModelDeploymentSpec) -> DeploymentRequest` and
  `pool_constraints_from_spec(GpuPoolSpec, name=...) -> PoolConstraints` map the API models
  (validated, with the CRDs' defaults, which live only there) onto the planner's inputs.
- `plan_deployment(request, offers, constraints, *, unavailable=..., now=...) -> Plan`: the chosen
  shape (GPU, GPUs per replica, tensor-parallel size) and offer, the memory arithmetic, the cost per
  hour for all replicas, an ESTIMATED cost per million output tokens, and every alternative with
  the reason it lost or was refused. With no choice, `plan.reason` is `ModelDoesNotFit`,
  `BudgetExceeded` or `NoOffers` and `plan.message` has the numbers. `plan.to_dict()` is the JSON
  schema documented in docs/planner.md. Pass `index_offers(offers)` instead of the list to plan
  repeatedly against one catalog.
- `pack_pods(pending, in_flight, offers, limits) -> PackResult`: the set of new instances of least
  total hourly price that fits the pool's pending GPU pods within its limits.
- `estimate_memory`, `tensor_parallel_refusal`, `estimate_throughput`, `resolve_architecture`,
  `architecture_from_hf_config`, `known_models`: the building blocks, for tests and tools.
"""

from __future__ import annotations

from gpupool.planner.candidates import Candidate, Plan, Shape
from gpupool.planner.hf_config import architecture_from_hf_config, architecture_from_hub
from gpupool.planner.memory import (
    MemoryEstimate,
    accepted_tensor_parallel_sizes,
    estimate_memory,
    tensor_parallel_refusal,
)
from gpupool.planner.models import (
    ModelArchitecture,
    UnknownModel,
    find_model,
    known_models,
    resolve_architecture,
)
from gpupool.planner.offer_index import OfferIndex, index_offers
from gpupool.planner.packing import (
    Capacity,
    NewInstance,
    PackResult,
    PendingPod,
    pack_pods,
)
from gpupool.planner.placement import plan_deployment
from gpupool.planner.request import (
    BUDGET_EXCEEDED,
    MODEL_DOES_NOT_FIT,
    NO_OFFERS,
    DeploymentRequest,
    PoolConstraints,
)
from gpupool.planner.spec import pool_constraints_from_spec, request_from_spec
from gpupool.planner.throughput import ThroughputEstimate, estimate_throughput

__all__ = [
    "BUDGET_EXCEEDED",
    "MODEL_DOES_NOT_FIT",
    "NO_OFFERS",
    "Candidate",
    "Capacity",
    "DeploymentRequest",
    "MemoryEstimate",
    "ModelArchitecture",
    "NewInstance",
    "OfferIndex",
    "PackResult",
    "PendingPod",
    "Plan",
    "PoolConstraints",
    "Shape",
    "ThroughputEstimate",
    "UnknownModel",
    "accepted_tensor_parallel_sizes",
    "architecture_from_hf_config",
    "architecture_from_hub",
    "estimate_memory",
    "estimate_throughput",
    "find_model",
    "index_offers",
    "known_models",
    "pack_pods",
    "plan_deployment",
    "pool_constraints_from_spec",
    "request_from_spec",
    "resolve_architecture",
    "tensor_parallel_refusal",
]
