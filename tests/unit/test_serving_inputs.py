"""Mapping a ModelDeployment spec (wire shape) onto ServingInput, and the sizing formulas."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gpupool.api import ModelDeploymentSpec
from gpupool.api.pool import Taint as PoolTaint
from gpupool.api.pool import TaintEffect
from gpupool.serving import (
    DEFAULT_IMAGE,
    RenderError,
    SecretKeyRef,
    Taint,
    render_all,
    serving_input_from_spec,
)
from gpupool.serving.sizing import (
    memory_request_gib,
    shm_size_gib,
    startup_budget_seconds,
    startup_failure_threshold,
)
from tests.unit.test_serving_render import make_input

PLAN: dict[str, Any] = {
    "gpu_types": ["L4"],
    "gpus_per_replica": 1,
    "tensor_parallel_size": 1,
    "max_model_len": 8192,
    "model_size_gib": 15.0,
    "pool_name": "default",
}


def from_spec(spec: dict[str, Any], **plan: Any) -> Any:
    return serving_input_from_spec(
        "llama", "ns", "uid-1", 4, ModelDeploymentSpec.from_k8s(spec), **{**PLAN, **plan}
    )


def test_a_minimal_spec_gets_the_api_defaults() -> None:
    inp = from_spec({"model": "meta-llama/Llama-3.1-8B-Instruct"})
    assert inp.name == "llama"
    assert inp.namespace == "ns"
    assert inp.uid == "uid-1"
    assert inp.generation == 4
    assert inp.served_name == "meta-llama/Llama-3.1-8B-Instruct"
    assert inp.replicas == 1
    assert inp.image == DEFAULT_IMAGE == "vllm/vllm-openai:v0.11.0"
    assert inp.dtype == "auto"
    assert inp.quantization == "none"
    assert inp.gpu_memory_utilization == 0.9
    assert inp.max_num_seqs is None and inp.max_num_batched_tokens is None and inp.rope_scaling is None
    assert inp.extra_args == ()
    assert inp.capacity_type is None
    assert inp.hf_token_secret is None
    assert inp.api_key_secret is None
    assert inp.model_cache_pvc is None
    assert inp.pool_taints == ()
    assert inp.gpu_types == ("L4",)
    render_all(inp)  # and it renders


def test_every_wire_field_is_mapped() -> None:
    spec = {
        "model": "Qwen/Qwen2.5-72B-Instruct",
        "servedName": "qwen",
        "pool": "ignored-the-controller-resolves-it",
        "replicas": 3,
        "capacityType": "spot",
        "engine": {
            "image": "registry.example/vllm:v0.11.0-patched",
            "dtype": "bfloat16",
            "quantization": "fp8",
            "gpuMemoryUtilization": 0.85,
            "maxNumSeqs": 32,
            "extraArgs": ["--enable-prefix-caching"],
        },
        "apiKeySecretRef": {"name": "keys", "key": "vllm"},
        "hfTokenSecretRef": {"name": "hf", "key": "hf_token"},
        "modelCache": {"pvcName": "hf-cache"},
    }
    inp = from_spec(
        spec,
        gpu_types=["H100", "H200"],
        gpus_per_replica=2,
        tensor_parallel_size=2,
        max_model_len=16384,
        model_size_gib=72.0,
        pool_name="inference",
        pool_taints=[PoolTaint(key="team", value="ml", effect=TaintEffect.NO_EXECUTE)],
        labels={"team": "ml"},
    )
    assert inp.served_name == "qwen"
    assert inp.replicas == 3
    assert inp.capacity_type == "spot"
    assert inp.image == "registry.example/vllm:v0.11.0-patched"
    assert inp.dtype == "bfloat16"
    assert inp.quantization == "fp8"
    assert inp.gpu_memory_utilization == 0.85
    assert inp.max_num_seqs == 32
    assert inp.extra_args == ("--enable-prefix-caching",)
    assert inp.api_key_secret == SecretKeyRef(name="keys", key="vllm")
    assert inp.hf_token_secret == SecretKeyRef(name="hf", key="hf_token")
    assert inp.model_cache_pvc == "hf-cache"
    assert inp.gpu_types == ("H100", "H200")
    assert inp.gpus_per_replica == 2
    assert inp.tensor_parallel_size == 2
    assert inp.max_model_len == 16384
    assert inp.model_size_gib == 72.0
    assert inp.pool_name == "inference"
    assert inp.pool_taints == (Taint(key="team", value="ml", effect="NoExecute"),)
    assert inp.labels == {"team": "ml"}
    render_all(inp)


def test_secret_refs_without_key_use_the_documented_default_keys() -> None:
    inp = from_spec({"model": "m", "apiKeySecretRef": {"name": "k"}, "hfTokenSecretRef": {"name": "h"}})
    assert inp.api_key_secret == SecretKeyRef(name="k", key="apiKey")
    assert inp.hf_token_secret == SecretKeyRef(name="h", key="token")


@pytest.mark.parametrize(
    ("replicas", "autoscaling", "expected"),
    [
        (None, None, 1),
        (0, None, 0),
        (4, None, 4),
        (None, {"minReplicas": 2, "maxReplicas": 5}, 2),
        (1, {"minReplicas": 2, "maxReplicas": 5}, 2),
        (9, {"minReplicas": 2, "maxReplicas": 5}, 5),
        (3, {"minReplicas": 2, "maxReplicas": 5}, 3),
    ],
)
def test_replicas_stay_inside_the_autoscaling_bounds(
    replicas: int | None, autoscaling: dict[str, int] | None, expected: int
) -> None:
    spec: dict[str, Any] = {"model": "m"}
    if replicas is not None:
        spec["replicas"] = replicas
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    assert from_spec(spec).replicas == expected


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "model"),
        ({"model": ""}, "model"),
        ({"model": "   "}, "model"),
        ({"model": 7}, "model"),
        ({"model": "m", "capacityType": "reserved"}, "capacityType"),
        ({"model": "m", "engine": {"extraArgs": ["--max-num-batched-tokens", 4096]}}, "engine.extraArgs.1"),
    ],
)
def test_a_spec_the_api_refuses_never_reaches_the_renderer(spec: dict[str, Any], field: str) -> None:
    # The renderer takes the validated model only: the API's errors, naming the field, come first.
    with pytest.raises(ValidationError) as caught:
        ModelDeploymentSpec.from_k8s(spec)
    assert field in {".".join(str(p) for p in e["loc"]) for e in caught.value.errors()}


def test_duplicate_managed_flag_from_the_spec_surfaces_at_render() -> None:
    inp = from_spec({"model": "m", "engine": {"extraArgs": ["--dtype", "half"]}})
    with pytest.raises(RenderError) as caught:
        render_all(inp)
    assert caught.value.field == "spec.engine.extraArgs"
    assert "--dtype" in caught.value.message


# --- sizing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_gib", "seconds"),
    [(0.0, 600), (15.0, 600), (40.0, 620), (130.0, 1340), (754.0, 6332), (2000.0, 7200)],
)
def test_startup_budget_formula(size_gib: float, seconds: int) -> None:
    assert startup_budget_seconds(size_gib) == seconds
    assert startup_failure_threshold(size_gib) * 10 >= seconds


@given(st.floats(min_value=0, max_value=5000), st.floats(min_value=0, max_value=5000))
def test_startup_budget_never_shrinks_for_a_bigger_model(a: float, b: float) -> None:
    small, big = sorted((a, b))
    assert startup_budget_seconds(small) <= startup_budget_seconds(big)
    assert startup_failure_threshold(small) <= startup_failure_threshold(big)


@given(
    st.sampled_from([1, 2, 4, 8]),
    st.floats(min_value=0, max_value=2000, allow_nan=False),
)
def test_shm_stays_within_bounds_and_memory_covers_it(tp: int, size_gib: float) -> None:
    inp = make_input(tensor_parallel_size=tp, gpus_per_replica=tp, model_size_gib=size_gib)
    shm = shm_size_gib(inp)
    assert 2 <= shm <= 32
    assert memory_request_gib(inp) >= shm + 4 + 2 * tp


def test_requests_fit_a_4_vcpu_16_gib_single_gpu_instance() -> None:
    # g5.xlarge / g6.xlarge / g2-standard-4: the cheapest single-GPU shapes must stay eligible.
    inp = make_input(model_size_gib=15.0)
    resources = render_all(inp)[0]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    assert float(resources["cpu"]) <= 3
    assert int(resources["memory"].removesuffix("Gi")) <= 12


def test_the_api_models_wire_form_maps_cleanly() -> None:
    # The contract with gpupool.api: what `ModelDeploymentSpec.to_k8s()` emits (defaults filled
    # in, camelCase) is what serving_input_from_spec reads.
    from gpupool.api.deployment import ModelDeploymentSpec

    spec = ModelDeploymentSpec.from_k8s(
        {
            "model": "meta-llama/Llama-3.1-8B-Instruct",
            "servedName": "llama",
            "replicas": 2,
            "capacityType": "spot",
            "engine": {"quantization": "fp8", "extraArgs": ["--enable-prefix-caching"]},
            "apiKeySecretRef": {"name": "keys"},
            "hfTokenSecretRef": {"name": "hf"},
            "modelCache": {"pvcName": "hf-cache"},
        }
    )
    inp = from_spec(spec.to_k8s())  # the wire form round-trips through the model
    assert inp.model == "meta-llama/Llama-3.1-8B-Instruct"
    assert inp.served_name == "llama"
    assert inp.replicas == 2
    assert inp.capacity_type == "spot"
    assert inp.image == DEFAULT_IMAGE
    assert inp.quantization == "fp8"
    assert inp.extra_args == ("--enable-prefix-caching",)
    assert inp.api_key_secret == SecretKeyRef(name="keys", key="apiKey")
    assert inp.hf_token_secret == SecretKeyRef(name="hf", key="token")
    assert inp.model_cache_pvc == "hf-cache"
    render_all(inp)
