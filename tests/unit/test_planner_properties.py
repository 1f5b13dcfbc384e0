"""Property tests: on random catalogs and models the planner agrees with brute force.

The brute force enumerates every (offer, capacity type, tensor-parallel size) with no index, no
caches and no per-shape shortcuts, so it checks the planner's optimizations as much as its rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpupool.catalog import CapacityType, Offer, spec_for
from gpupool.planner import (
    DeploymentRequest,
    ModelArchitecture,
    PoolConstraints,
    estimate_memory,
    estimate_throughput,
    plan_deployment,
    tensor_parallel_refusal,
)
from gpupool.planner.precision import precision_check
from gpupool.planner.shape_fit import reported_memory_gib
from gpupool.planner.throughput import cost_per_million_tokens

GPUS = {"H100": 80.0, "A100-80GB": 80.0, "L4": 24.0, "L40S": 48.0, "A10G": 22.35, "H200": 141.0, "T4": 16.0}


@st.composite
def offers(draw: st.DrawFn) -> list[Offer]:
    count = draw(st.integers(min_value=1, max_value=14))
    result = []
    for position in range(count):
        gpu = draw(st.sampled_from(sorted(GPUS)))
        gpu_count = draw(st.sampled_from([1, 2, 3, 4, 8]))
        on_demand = draw(st.one_of(st.none(), st.floats(min_value=0.1, max_value=80, allow_nan=False)))
        spot = draw(st.one_of(st.none(), st.floats(min_value=0.05, max_value=60, allow_nan=False)))
        result.append(
            Offer(
                provider=draw(st.sampled_from(["p1", "p2", "p3"])),
                region=draw(st.sampled_from(["r1", "r2"])),
                zone="",
                instance_type=f"t{position}",
                gpu=gpu,
                gpu_count=gpu_count,
                gpu_memory_gib=GPUS[gpu],
                vcpus=8,
                memory_gib=64,
                on_demand_price=on_demand,
                spot_price=spot,
            )
        )
    return result


@st.composite
def architectures(draw: st.DrawFn) -> ModelArchitecture:
    heads = draw(st.sampled_from([8, 12, 14, 16, 24, 28, 32, 40, 48, 64, 96, 128]))
    kv_heads = draw(st.sampled_from([d for d in range(1, heads + 1) if heads % d == 0]))
    moe = draw(st.booleans())
    # Sizes of real model families, jittered: most fit somewhere, some fit nowhere.
    params = draw(st.sampled_from([0.5, 1, 3, 7, 8, 14, 32, 70, 180, 400])) * draw(
        st.floats(min_value=0.8, max_value=1.25)
    )
    return ModelArchitecture(
        name="random",
        params_b=params,
        layers=draw(st.integers(min_value=2, max_value=128)),
        attention_heads=heads,
        kv_heads=kv_heads,
        head_dim=draw(st.sampled_from([64, 96, 128, 256])),
        max_context=None,
        moe=moe,
        active_params_b=params * draw(st.floats(min_value=0.05, max_value=0.5)) if moe else None,
    )


@st.composite
def requests(draw: st.DrawFn) -> DeploymentRequest:
    return DeploymentRequest(
        model="random",
        architecture=draw(architectures()),
        dtype="auto",
        replicas=draw(st.integers(min_value=1, max_value=4)),
        objective=draw(st.sampled_from(["costPerHour", "costPerToken"])),
        max_hourly_cost=draw(st.one_of(st.none(), st.floats(min_value=0.5, max_value=200))),
        max_model_len=draw(st.sampled_from([512, 2048, 8192, 32768])),
        max_num_seqs=draw(st.one_of(st.none(), st.integers(min_value=1, max_value=32))),
        target_concurrency=draw(st.one_of(st.none(), st.integers(min_value=1, max_value=16))),
        average_input_tokens=draw(st.one_of(st.none(), st.sampled_from([128, 1024, 4096]))),
        quantization=draw(st.sampled_from(["none", "fp8", "awq"])),
        gpu_memory_utilization=draw(st.sampled_from([0.8, 0.9, 0.95])),
    )


@st.composite
def pools(draw: st.DrawFn) -> PoolConstraints:
    capacity_types: tuple[CapacityType, ...] = draw(
        st.sampled_from([("on-demand",), ("spot",), ("spot", "on-demand")])
    )
    return PoolConstraints(
        providers=tuple(draw(st.sets(st.sampled_from(["p1", "p2", "p3"]), max_size=2))),
        regions=tuple(draw(st.sets(st.sampled_from(["r1", "r2"]), max_size=1))),
        capacity_types=capacity_types,
        max_nodes=draw(st.one_of(st.none(), st.integers(min_value=1, max_value=4))),
        max_gpus=draw(st.one_of(st.none(), st.integers(min_value=1, max_value=32))),
        max_hourly_cost=draw(st.one_of(st.none(), st.floats(min_value=1, max_value=200))),
    )


@dataclass(frozen=True)
class Option:
    offer: Offer
    capacity: CapacityType
    tp: int
    instances: int
    cost: float
    per_token: float | None


def brute_force(request: DeploymentRequest, catalog: list[Offer], pool: PoolConstraints) -> list[Option]:
    """Every feasible (offer, capacity type, tp), computed the slow obvious way."""
    options = []
    length = request.effective_max_model_len
    for offer in catalog:
        if pool.providers and offer.provider not in pool.providers:
            continue
        if pool.regions and offer.region not in pool.regions:
            continue
        for capacity in pool.capacity_types:
            price = offer.price(capacity)
            if price is None:
                continue
            stored = request.architecture.native_format or request.architecture.dtype
            precision = precision_check(
                spec_for(offer.gpu),
                activation_dtype=request.dtype,
                weight_format=request.quantization if request.quantization != "none" else stored,
                fp16_allowed=request.architecture.fp16_allowed,
            )
            if precision.refusal is not None:
                continue  # FP8 on a T4, bfloat16-only models on a V100: vLLM refuses them
            for tp in range(1, offer.gpu_count + 1):
                if tensor_parallel_refusal(request.architecture, tp) is not None:
                    continue
                inputs, outputs = request.request_tokens
                memory = estimate_memory(
                    request.architecture,
                    tensor_parallel_size=tp,
                    gpu=offer.gpu,
                    gpu_memory_gib=reported_memory_gib(offer.gpu, offer.gpu_memory_gib),
                    max_model_len=length,
                    target_concurrency=request.concurrency,
                    average_input_tokens=inputs,
                    average_output_tokens=outputs,
                    max_num_seqs=request.max_num_seqs,
                    gpu_memory_utilization=request.gpu_memory_utilization,
                    quantization=request.quantization,
                )
                if not memory.fits:
                    continue
                instances = math.ceil(request.replicas / (offer.gpu_count // tp))
                cost = instances * price
                if request.max_hourly_cost is not None and cost > request.max_hourly_cost:
                    continue
                if pool.max_hourly_cost is not None and cost > pool.max_hourly_cost:
                    continue
                if pool.max_nodes is not None and instances > pool.max_nodes:
                    continue
                if pool.max_gpus is not None and instances * offer.gpu_count > pool.max_gpus:
                    continue
                throughput = estimate_throughput(
                    request.architecture,
                    spec_for(offer.gpu),
                    memory,
                    quantization=request.quantization,
                )
                per_token = (
                    cost_per_million_tokens(cost, throughput.tokens_per_second * request.replicas)
                    if throughput
                    else None
                )
                options.append(Option(offer, capacity, tp, instances, cost, per_token))
    return options


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests(), catalog=offers(), pool=pools())
def test_choice_is_never_dearer_than_any_feasible_alternative(
    request: DeploymentRequest, catalog: list[Offer], pool: PoolConstraints
) -> None:
    plan = plan_deployment(request, catalog, pool)
    options = brute_force(request, catalog, pool)
    if not options:
        assert plan.choice is None
        assert plan.reason in {"ModelDoesNotFit", "BudgetExceeded", "NoOffers"}
        assert plan.message
        return
    choice = plan.choice
    assert choice is not None, plan.message
    assert choice.cost_per_hour is not None
    if request.objective == "costPerHour":
        assert choice.cost_per_hour <= min(o.cost for o in options) + 1e-9
    else:
        known = [o.per_token for o in options if o.per_token is not None]
        if known:
            assert choice.cost_per_million_tokens is not None
            assert choice.cost_per_million_tokens <= min(known) * (1 + 1e-9)
        else:
            assert choice.cost_per_hour <= min(o.cost for o in options) + 1e-9
    # What was chosen is itself one of the feasible options.
    assert any(
        o.offer == choice.offer
        and o.capacity == choice.capacity_type
        and o.tp == choice.shape.tensor_parallel_size
        for o in options
    )


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request=requests(), catalog=offers(), pool=pools())
def test_choice_is_a_shape_vllm_accepts_whose_memory_covers_the_need(
    request: DeploymentRequest, catalog: list[Offer], pool: PoolConstraints
) -> None:
    plan = plan_deployment(request, catalog, pool)
    for candidate in plan.alternatives:
        if not candidate.feasible:
            assert candidate.reason
            continue
        tp = candidate.shape.tensor_parallel_size
        assert tensor_parallel_refusal(request.architecture, tp) is None
        assert candidate.offer is not None and tp <= candidate.offer.gpu_count
        memory = candidate.memory
        assert memory is not None
        assert memory.per_gpu_required_gib <= memory.per_gpu_available_gib + 1e-6
        assert memory.required_gib <= memory.available_gib + 1e-6
        # What CUDA reports for the card, which vLLM's budget is a share of.
        assert memory.gpu_memory_gib == reported_memory_gib(
            candidate.offer.gpu, candidate.offer.gpu_memory_gib
        )
        assert candidate.cost_per_hour is not None
        if request.max_hourly_cost is not None:
            assert candidate.cost_per_hour <= request.max_hourly_cost + 1e-9
        if pool.max_gpus is not None:
            assert candidate.instances * candidate.offer.gpu_count <= pool.max_gpus
        if pool.max_nodes is not None:
            assert candidate.instances <= pool.max_nodes
    # Deterministic: the same inputs in another order give the same choice.
    again = plan_deployment(request, list(reversed(catalog)), pool)
    assert (again.choice is None) == (plan.choice is None)
    if plan.choice is not None and again.choice is not None:
        assert again.choice.cost_per_hour == plan.choice.cost_per_hour
        assert again.choice.offer == plan.choice.offer
