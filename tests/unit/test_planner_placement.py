"""Choosing a placement: cheapest feasible shape and offer, reasons for every refusal, spec mapping."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gpupool.api import GpuPoolSpec, ModelDeploymentSpec
from gpupool.catalog import Offer, Unavailable, load_shipped_offers
from gpupool.planner import (
    BUDGET_EXCEEDED,
    MODEL_DOES_NOT_FIT,
    NO_OFFERS,
    DeploymentRequest,
    PoolConstraints,
    UnknownModel,
    find_model,
    index_offers,
    plan_deployment,
    pool_constraints_from_spec,
    request_from_spec,
)

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
LLAMA_70B = "meta-llama/Llama-3.1-70B-Instruct"


def offer(
    provider: str,
    gpu: str,
    count: int,
    memory: float,
    on_demand: float | None,
    spot: float | None = None,
    *,
    region: str = "r1",
    instance_type: str | None = None,
) -> Offer:
    return Offer(
        provider=provider,
        region=region,
        zone="",
        instance_type=instance_type or f"{gpu.lower()}x{count}",
        gpu=gpu,
        gpu_count=count,
        gpu_memory_gib=memory,
        vcpus=8 * count,
        memory_gib=64.0 * count,
        on_demand_price=on_demand,
        spot_price=spot,
    )


CATALOG = [
    offer("a", "H100", 1, 80, 3.0, 1.2),
    offer("a", "H100", 8, 80, 24.0, 9.0),
    offer("b", "H100", 2, 80, 5.5),
    offer("b", "H100", 4, 80, 11.0, 4.0, region="r2"),
    offer("a", "L4", 1, 24, 0.8, 0.3),
    offer("b", "L4", 4, 24, 3.0),
    offer("a", "A100-80GB", 4, 80, 8.0),
    offer("c", "K80", 8, 12, 0.5),
]


def request(model: str = LLAMA_8B, **spec: Any) -> DeploymentRequest:
    return request_from_spec(ModelDeploymentSpec.from_k8s({"model": model, **spec}))


def wire_request(spec: dict[str, Any]) -> DeploymentRequest:
    return request_from_spec(ModelDeploymentSpec.from_k8s(spec))


def test_cheapest_fitting_offer_wins() -> None:
    plan = plan_deployment(request(engine={"maxModelLen": 4096, "maxNumSeqs": 4}), CATALOG)
    assert plan.feasible
    assert plan.choice is not None and plan.choice.offer is not None
    assert plan.choice.offer.gpu == "L4" and plan.choice.offer.gpu_count == 1
    assert plan.choice.cost_per_hour == pytest.approx(0.8)
    assert plan.choice.memory is not None and plan.choice.memory.fits


def test_70b_takes_several_gpus_and_refusals_give_numbers() -> None:
    plan = plan_deployment(request(LLAMA_70B), CATALOG)
    assert plan.choice is not None
    assert plan.choice.shape.gpu in {"H100", "A100-80GB"}
    # 70B in bf16 at 8k: 66 GiB of weights per rank on 2 x 80 GB leaves KV for ~2.7 full sequences,
    # the 2 x H100 shape vLLM documents; H100 x2 at $5.50 beats A100-80GB x4 at $8.
    assert plan.choice.shape.tensor_parallel_size == 2
    assert plan.choice.cost_per_hour == pytest.approx(5.5)
    reasons = [c.reason or "" for c in plan.alternatives if c.refusal == MODEL_DOES_NOT_FIT]
    assert any(r.startswith("needs ") and "has " in r for r in reasons)
    assert any(c.refusal == "UnsupportedGpu" for c in plan.alternatives)


def test_replicas_multiply_instances_and_share_big_instances() -> None:
    plan = plan_deployment(request(LLAMA_70B, replicas=2), CATALOG)
    assert plan.choice is not None
    # Two tp-2 replicas: one 4 x A100 ($8) holds both; two 2 x H100 cost $11, one 8 x H100 $24.
    assert plan.choice.instances == 1 and plan.choice.cost_per_hour == pytest.approx(8.0)
    assert plan.choice.replicas_per_instance == 2
    eight = next(
        c for c in plan.alternatives if c.offer is not None and c.offer.gpu_count == 8 and c.feasible
    )
    assert eight.instances == 1 and eight.replicas_per_instance == 4


SMALL = {"engine": {"maxModelLen": 4096, "maxNumSeqs": 4}}


def test_spot_is_used_only_when_the_pool_allows_it() -> None:
    on_demand = plan_deployment(request(**SMALL), CATALOG)
    assert on_demand.choice is not None and on_demand.choice.capacity_type == "on-demand"
    spot_pool = PoolConstraints(capacity_types=("spot", "on-demand"))
    spot = plan_deployment(request(**SMALL), CATALOG, spot_pool)
    assert spot.choice is not None and spot.choice.capacity_type == "spot"
    assert spot.choice.cost_per_hour == pytest.approx(0.3)
    refused = plan_deployment(request(capacityType="spot"), CATALOG)
    assert refused.reason == NO_OFFERS and "not allowed" in refused.message


def test_budget_and_pool_limits_refuse_with_reason() -> None:
    plan = plan_deployment(request(LLAMA_70B, maxHourlyCost=5), CATALOG)
    assert not plan.feasible and plan.reason == BUDGET_EXCEEDED
    assert "over budget" in plan.message
    limited = plan_deployment(request(LLAMA_70B), CATALOG, PoolConstraints(max_gpus=1))
    assert limited.reason == BUDGET_EXCEEDED and "maxGpus 1" in limited.message
    used = plan_deployment(
        request(LLAMA_70B), CATALOG, PoolConstraints(max_hourly_cost=20, used_cost_per_hour=15)
    )
    assert used.reason == BUDGET_EXCEEDED


def test_model_that_fits_nowhere_says_so_with_the_closest_options() -> None:
    plan = plan_deployment(request("meta-llama/Llama-3.1-405B-Instruct"), CATALOG)
    assert plan.reason == MODEL_DOES_NOT_FIT
    assert "closest" in plan.message and "needs" in plan.message
    assert plan.memory is not None and plan.memory.required_gib > 700
    assert plan.to_dict()["shape"] is None


def test_no_offers_when_filters_exclude_everything() -> None:
    plan = plan_deployment(request(), CATALOG, PoolConstraints(providers=("nobody",)))
    assert plan.reason == NO_OFFERS and "nobody" in plan.message
    plan = plan_deployment(request(), CATALOG, PoolConstraints(regions=("r2",), gpu_types=("L4",)))
    assert plan.reason == NO_OFFERS


def test_regions_and_providers_filter_offers() -> None:
    plan = plan_deployment(request(LLAMA_70B), CATALOG, PoolConstraints(providers=("b",)))
    assert plan.choice is not None and plan.choice.offer is not None
    assert plan.choice.offer.provider == "b" and plan.choice.offer.gpu_count == 2
    plan = plan_deployment(request(LLAMA_70B), CATALOG, PoolConstraints(regions=("r2",), gpu_types=("H100",)))
    assert plan.choice is not None and plan.choice.offer is not None
    assert plan.choice.offer.gpu_count == 4 and plan.choice.offer.region == "r2"


def test_explicit_gpu_settings_override_derived_ones() -> None:
    plan = plan_deployment(request(gpu={"types": ["H100"], "count": 2}), CATALOG)
    assert plan.choice is not None
    assert plan.choice.shape.gpu == "H100" and plan.choice.shape.gpus_per_replica == 2
    assert plan.choice.shape.tensor_parallel_size == 2
    plan = plan_deployment(request(engine={"tensorParallelSize": 3}), CATALOG)
    assert plan.reason == "ModelDoesNotFit" or not plan.feasible
    assert any("tensor parallel 3 does not divide 32" in (c.reason or "") for c in plan.alternatives)
    plan = plan_deployment(request(gpu={"minMemoryGiB": 40}), CATALOG)
    assert plan.choice is not None and plan.choice.shape.gpu != "L4"
    with pytest.raises(ValueError, match="tensorParallelSize must divide"):
        request(gpu={"count": 2}, engine={"tensorParallelSize": 4})  # the API refuses it


def test_unavailable_offers_are_skipped_until_their_mark_expires() -> None:
    l4 = CATALOG[4]
    marks = Unavailable().mark(l4.key, "on-demand", until=100.0)
    plan = plan_deployment(request(**SMALL), CATALOG, unavailable=marks, now=50.0)
    assert plan.choice is not None and plan.choice.offer != l4
    assert any(c.refusal == "Unavailable" for c in plan.alternatives)
    later = plan_deployment(request(**SMALL), CATALOG, unavailable=marks, now=150.0)
    assert later.choice is not None and later.choice.offer == l4


def test_cost_per_token_objective_prefers_bandwidth_per_dollar() -> None:
    catalog = [offer("a", "L4", 1, 24, 0.7), offer("a", "H100", 1, 80, 2.0)]
    spec = {"engine": {"maxModelLen": 4096, "maxNumSeqs": 4}}
    by_hour = plan_deployment(request(**spec), catalog)
    by_token = plan_deployment(request(objective="costPerToken", **spec), catalog)
    assert by_hour.choice is not None and by_hour.choice.shape.gpu == "L4"
    # H100: 11x the bandwidth for 2.9x the price.
    assert by_token.choice is not None and by_token.choice.shape.gpu == "H100"
    assert by_token.choice.cost_per_million_tokens is not None
    assert by_token.choice.cost_per_million_tokens < by_hour.alternatives[0].cost_per_million_tokens  # type: ignore[operator]
    assert any("ESTIMATE" in note for note in by_token.notes)


def test_ties_break_deterministically() -> None:
    twins = [offer("z", "H100", 1, 80, 3.0), offer("a", "H100", 1, 80, 3.0), offer("m", "H100", 1, 80, 3.0)]
    for order in (twins, twins[::-1], [twins[1], twins[2], twins[0]]):
        plan = plan_deployment(request(), order)
        assert plan.choice is not None and plan.choice.offer is not None
        assert plan.choice.offer.provider == "a"


def test_context_longer_than_the_model_is_refused() -> None:
    plan = plan_deployment(request(engine={"maxModelLen": 1_000_000}), CATALOG)
    assert plan.reason == MODEL_DOES_NOT_FIT and "131072" in plan.message


def test_plan_json_schema_has_the_documented_fields() -> None:
    data = plan_deployment(request(LLAMA_70B), CATALOG).to_dict()
    assert data["shape"]["gpu"] and data["shape"]["gpusPerReplica"] == data["shape"]["tensorParallelSize"]
    for key in ("provider", "region", "instanceType", "capacityType", "pricePerHour"):
        assert data["offer"][key] is not None
    assert data["memory"]["requiredGiB"] > 0
    assert data["alternatives"] and {"feasible", "reason", "costPerHour"} <= set(data["alternatives"][0])
    assert data["estimate"] is True and data["feasible"] is True and data["reason"] is None


def test_shipped_catalog_known_cases_and_gcp_stays_out() -> None:
    offers = load_shipped_offers()
    index = index_offers(offers)
    plan = plan_deployment(request(LLAMA_8B), index)
    assert plan.choice is not None and plan.choice.offer is not None
    assert plan.choice.offer.provider != "gcp"
    assert any("gcp" in note and "690" in note for note in plan.notes)
    big = plan_deployment(
        request("meta-llama/Llama-3.1-405B-Instruct", engine={"quantization": "fp8"}),
        index,
        PoolConstraints(gpu_types=("H100", "A100-80GB")),
    )
    assert big.choice is not None
    assert big.choice.shape.gpus_per_replica == 8 and big.choice.offer is not None
    assert big.choice.offer.gpu_count == 8
    with_gcp = plan_deployment(request(LLAMA_8B), index, PoolConstraints(include_excluded=True))
    assert with_gcp.feasible and any("INCLUDED" in note for note in with_gcp.notes)


def test_index_reuse_gives_the_same_plan() -> None:
    index = index_offers(CATALOG)
    first = plan_deployment(request(LLAMA_70B), index)
    second = plan_deployment(request(LLAMA_70B), index)
    assert first.to_dict() == second.to_dict() == plan_deployment(request(LLAMA_70B), CATALOG).to_dict()


def test_request_from_spec_maps_the_wire_shape_with_crd_defaults() -> None:
    r = wire_request({"model": LLAMA_8B})
    assert (r.replicas, r.objective, r.max_num_seqs, r.gpu_memory_utilization) == (
        1,
        "costPerHour",
        None,
        0.9,
    )
    assert r.effective_max_model_len == 8192 and r.capacity_type is None
    full = wire_request(
        {
            "model": LLAMA_70B,
            "replicas": 3,
            "autoscaling": {"minReplicas": 2, "maxReplicas": 5},
            "objective": "costPerToken",
            "capacityType": "spot",
            "maxHourlyCost": 50,
            "gpu": {"types": ["H100"], "count": 4, "minMemoryGiB": 80},
            "engine": {
                "maxModelLen": 16384,
                "dtype": "bfloat16",
                "quantization": "fp8",
                "gpuMemoryUtilization": 0.85,
                "maxNumSeqs": 32,
                "tensorParallelSize": 4,
                "extraArgs": ["--kv-cache-dtype", "fp8"],
            },
            "architecture": {
                "paramsB": 70.6,
                "layers": 80,
                "hiddenSize": 8192,
                "attentionHeads": 64,
                "kvHeads": 8,
                "maxContext": 65536,
            },
        }
    )
    assert full.replicas == 2  # sized for the autoscaling floor
    assert full.capacity_type == "spot" and full.max_hourly_cost == 50
    assert full.gpu_types == ("H100",) and full.gpu_count == 4 and full.min_gpu_memory_gib == 80
    assert full.max_model_len == 16384 and full.quantization == "fp8" and full.kv_cache_dtype == "fp8"
    assert full.architecture.max_context == 65536
    assert (
        wire_request(
            {"model": LLAMA_8B, "engine": {"extraArgs": ["--kv-cache-dtype=fp8_e5m2"]}}
        ).kv_cache_dtype
        == "fp8_e5m2"
    )
    with pytest.raises(ValueError, match="model"):
        wire_request({})  # the API model refuses it, naming the field
    with pytest.raises(ValueError, match="objective"):
        wire_request({"model": LLAMA_8B, "objective": "cheapest"})
    with pytest.raises(UnknownModel):
        wire_request({"model": "acme/secret"})


def test_pool_constraints_from_spec() -> None:
    pool = pool_constraints_from_spec(
        GpuPoolSpec.from_k8s(
            {
                "providers": ["lambda"],
                "gpuTypes": ["H100"],
                "regions": ["us-east-1"],
                "capacityTypes": ["spot", "on-demand"],
                "limits": {"maxNodes": 3, "maxGpus": 24, "maxHourlyCost": 100.0},
            }
        ),
        name="gpus",
    )
    assert pool == PoolConstraints(
        name="gpus",
        providers=("lambda",),
        gpu_types=("H100",),
        regions=("us-east-1",),
        capacity_types=("spot", "on-demand"),
        max_nodes=3,
        max_gpus=24,
        max_hourly_cost=100.0,
    )
    assert pool_constraints_from_spec(GpuPoolSpec(), name="p").capacity_types == ("on-demand",)
    with pytest.raises(ValueError, match="capacityTypes"):
        GpuPoolSpec.from_k8s({"capacityTypes": ["reserved"]})


def test_moe_and_mla_models_plan_on_the_shipped_catalog() -> None:
    index = index_offers(load_shipped_offers())
    deepseek = plan_deployment(request("deepseek-ai/DeepSeek-V3"), index)
    assert deepseek.choice is not None and deepseek.choice.memory is not None
    assert deepseek.choice.memory.weights_gib > 600  # 671B in FP8
    assert any("fp8" in n for n in deepseek.notes)
    arch = find_model("Qwen/Qwen3-30B-A3B")
    assert arch is not None and arch.moe
    qwen = plan_deployment(
        dataclasses.replace(request("Qwen/Qwen3-30B-A3B"), objective="costPerToken"), index
    )
    assert qwen.choice is not None and qwen.choice.throughput is not None


def test_every_fitting_offer_unavailable_is_no_offers_not_a_misfit() -> None:
    catalog = [offer("a", "H100", 1, 80, 3.0), offer("a", "L4", 1, 24, 0.5)]
    marks = Unavailable().mark(catalog[0].key, "on-demand", until=100.0)
    # 14.8B parameters in bf16 (27.5 GiB) fit the H100 only.
    plan = plan_deployment(request("Qwen/Qwen2.5-14B-Instruct"), catalog, unavailable=marks, now=10.0)
    assert plan.reason == NO_OFFERS and "unavailable" in plan.message
    assert plan.alternatives[0].refusal == "Unavailable"


def test_plans_from_lists_follow_changed_offers() -> None:
    from gpupool.catalog import apply_discounts

    first = plan_deployment(request(LLAMA_70B), list(CATALOG))
    assert first.choice is not None and first.choice.offer is not None
    assert first.choice.offer.provider == "b"
    # A 50 % discount at provider a makes its 4 x A100-80GB ($4/h) the cheapest.
    cheaper = plan_deployment(request(LLAMA_70B), apply_discounts(CATALOG, {"a": 50}))
    assert cheaper.choice is not None and cheaper.choice.offer is not None
    assert cheaper.choice.offer.provider == "a" and cheaper.choice.cost_per_hour == pytest.approx(4.0)
    again = plan_deployment(request(LLAMA_70B), list(CATALOG))
    assert again.to_dict() == first.to_dict()


def test_a_model_no_node_holds_spans_nodes_joined_by_infiniband_only() -> None:
    eight = {"instance_type": "h100x8"}
    catalog = [
        dataclasses.replace(offer("ib", "H100", 8, 80, 24.0, **eight), network="infiniband"),
        offer("eth", "H100", 8, 80, 16.0, **eight),  # cheaper, but Ethernet only
    ]
    plan = plan_deployment(request("meta-llama/Llama-3.1-405B-Instruct"), catalog)
    assert plan.choice is not None and plan.choice.offer is not None
    # 811 GB of bf16 weights: tensor parallel 8 within a node x pipeline parallel 2 across two.
    shape = plan.choice.shape
    assert (shape.tensor_parallel_size, shape.pipeline_parallel_size, shape.gpus_per_replica) == (8, 2, 16)
    assert plan.choice.offer.provider == "ib" and plan.choice.instances == 2
    assert plan.choice.cost_per_hour == pytest.approx(48.0)
    assert "pp 2 over 2 nodes" in plan.message
    refused = next(c for c in plan.alternatives if c.provider == "eth")
    assert "InfiniBand/EFA" in (refused.reason or "")
    two = plan_deployment(request("meta-llama/Llama-3.1-405B-Instruct", replicas=2), catalog)
    assert two.choice is not None and two.choice.instances == 4  # both nodes of each group bought
    # A model one node holds is never split across nodes.
    single = plan_deployment(request(LLAMA_70B), catalog)
    assert single.choice is not None and single.choice.shape.pipeline_parallel_size == 1
    # Pinned to one node by the spec, it does not fit.
    pinned = plan_deployment(request("meta-llama/Llama-3.1-405B-Instruct", gpu={"count": 8}), catalog)
    assert pinned.reason == MODEL_DOES_NOT_FIT
