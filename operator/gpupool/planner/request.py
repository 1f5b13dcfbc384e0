"""What the planner is asked: a ModelDeployment's request and its pool's constraints, as plain data.

`spec.py` maps the API models onto these; the placement search (`placement.py`), the pool's
packer and the offer checks read them. The refusal reasons live here too, so every planner
module names a failure the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from gpupool.api.deployment import DEFAULT_POOL
from gpupool.catalog.offers import CapacityType
from gpupool.planner.models import ModelArchitecture

Objective = Literal["costPerHour", "costPerToken"]

# Machine-readable reasons a plan has no choice, and why a candidate was refused.
MODEL_DOES_NOT_FIT = "ModelDoesNotFit"
BUDGET_EXCEEDED = "BudgetExceeded"
NO_OFFERS = "NoOffers"
TENSOR_PARALLEL = "TensorParallel"
UNAVAILABLE = "Unavailable"
UNSUPPORTED_GPU = "UnsupportedGpu"

DEFAULT_MAX_MODEL_LEN = 8192
# Without spec.serving.targetConcurrency a replica must hold what vLLM needs to start (one sequence
# of maxModelLen) and this many sequences of the default request (1,024 tokens in, 256 out).
DEFAULT_TARGET_CONCURRENCY = 4
DEFAULT_INPUT_TOKENS = 1024
DEFAULT_OUTPUT_TOKENS = 256
# Largest tensor-parallel size tried: single node, and no catalog instance has more than 16 GPUs.
MAX_TENSOR_PARALLEL = 16


@dataclass(frozen=True, slots=True)
class DeploymentRequest:
    """What a ModelDeployment asks for, as plain data (see `request_from_spec` for the mapping)."""

    # No defaults that the API has: the CRD's live in gpupool/api, and `request_from_spec` passes
    # them on; an absent override is None or ().
    model: str
    architecture: ModelArchitecture
    replicas: int
    objective: Objective
    dtype: str
    quantization: str
    gpu_memory_utilization: float
    max_num_seqs: int | None = None
    target_concurrency: int | None = None
    average_input_tokens: int | None = None
    average_output_tokens: int | None = None
    max_num_batched_tokens: int | None = None
    capacity_type: CapacityType | None = None
    max_hourly_cost: float | None = None
    gpu_types: tuple[str, ...] = ()
    gpu_count: int | None = None
    min_gpu_memory_gib: float | None = None
    max_model_len: int | None = None
    tensor_parallel_size: int | None = None
    kv_cache_dtype: str = "auto"
    max_gpus_per_replica: int | None = None

    @property
    def effective_max_model_len(self) -> int:
        """The spec's maxModelLen, else min(model's context, 8192)."""
        if self.max_model_len:
            return self.max_model_len
        context = self.architecture.max_context
        return min(context, DEFAULT_MAX_MODEL_LEN) if context else DEFAULT_MAX_MODEL_LEN

    @property
    def concurrency(self) -> int:
        """Sequences one replica must hold at once."""
        return self.target_concurrency or DEFAULT_TARGET_CONCURRENCY

    @property
    def request_tokens(self) -> tuple[int, int]:
        """(input, output) tokens of the average request the concurrency is counted at.

        A stated target without a request size counts full-length sequences; otherwise the
        defaults fill what is not given. Never longer than maxModelLen.
        """
        limit = self.effective_max_model_len
        if (
            self.average_input_tokens is None
            and self.average_output_tokens is None
            and self.target_concurrency is not None
        ):
            return (
                limit - min(DEFAULT_OUTPUT_TOKENS, limit // 2),
                min(DEFAULT_OUTPUT_TOKENS, limit // 2),
            )
        given_in = (
            self.average_input_tokens if self.average_input_tokens is not None else DEFAULT_INPUT_TOKENS
        )
        given_out = (
            self.average_output_tokens if self.average_output_tokens is not None else DEFAULT_OUTPUT_TOKENS
        )
        output = min(given_out, limit)
        return (max(0, min(given_in, limit - output)), output)


@dataclass(frozen=True, slots=True)
class PoolConstraints:
    """What a GpuPool allows. Empty tuples mean "any"; `used_*` is what the pool already spends.

    `providers` are matched against `Offer.provider`: the controller maps GpuProvider names to the
    provider of their offers before calling.
    """

    name: str = DEFAULT_POOL
    providers: tuple[str, ...] = ()
    gpu_types: tuple[str, ...] = ()
    regions: tuple[str, ...] = ()
    capacity_types: tuple[CapacityType, ...] = ("on-demand",)
    max_nodes: int | None = None
    max_gpus: int | None = None
    max_hourly_cost: float | None = None
    used_nodes: int = 0
    used_gpus: int = 0
    used_cost_per_hour: float = 0.0
    include_excluded: bool = False
    # What every node of the pool is labelled and tainted with (the packer checks pods against them).
    node_labels: tuple[tuple[str, str], ...] = ()
    node_taints: tuple[tuple[str, str, str], ...] = ()
