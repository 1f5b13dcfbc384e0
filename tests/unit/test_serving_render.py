"""The rendered vLLM Deployment, Service and PodDisruptionBudget, field by field.

Each test pins a behaviour a user or a platform team relies on: where the pods may land,
what vLLM is told, how secrets reach it, how rollouts and drains behave, and that only a
real spec change rolls the pods.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from gpupool.serving import (
    DEFAULT_IMAGE,
    RenderError,
    SecretKeyRef,
    ServingInput,
    Taint,
    render_all,
    render_deployment,
    render_pdb,
    render_service,
    selector_labels,
    selector_string,
)
from gpupool.serving.render import SPEC_HASH_ANNOTATION, spec_hash


def make_input(**overrides: Any) -> ServingInput:
    """Llama 3.1 8B on one GPU, the most common shape; override any field."""
    base: dict[str, Any] = {
        "name": "llama-8b",
        "namespace": "team-a",
        "uid": "0b6f3c2e-1111-4222-8333-944455556666",
        "generation": 3,
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "served_name": "llama-8b",
        "replicas": 2,
        "image": DEFAULT_IMAGE,
        "tensor_parallel_size": 1,
        "gpus_per_replica": 1,
        "max_model_len": 8192,
        "dtype": "auto",
        "quantization": "none",
        "gpu_memory_utilization": 0.9,
        "max_num_seqs": 16,
        "gpu_types": ("L4", "A10G"),
        "pool_name": "default",
        "model_size_gib": 15.0,
    }
    base.update(overrides)
    return ServingInput(**base)


def pod_spec(inp: ServingInput) -> dict[str, Any]:
    spec: dict[str, Any] = render_deployment(inp)["spec"]["template"]["spec"]
    return spec


def container(inp: ServingInput) -> dict[str, Any]:
    c: dict[str, Any] = pod_spec(inp)["containers"][0]
    return c


def env_by_name(inp: ServingInput) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(inp)["env"]}


# --- the vLLM command line -----------------------------------------------------------------


def test_vllm_is_started_with_vllm_serve_and_the_managed_flags_in_order() -> None:
    c = container(make_input())
    assert c["command"] == ["vllm", "serve"]
    assert c["args"] == [
        "meta-llama/Llama-3.1-8B-Instruct",
        "--served-model-name",
        "llama-8b",
        "--tensor-parallel-size",
        "1",
        "--max-model-len",
        "8192",
        "--dtype",
        "auto",
        "--gpu-memory-utilization",
        "0.9",
        "--max-num-seqs",
        "16",
        "--port",
        "8000",
    ]


def test_the_plans_shape_reaches_vllm() -> None:
    inp = make_input(
        tensor_parallel_size=4,
        gpus_per_replica=4,
        max_model_len=32768,
        dtype="bfloat16",
        gpu_memory_utilization=0.95,
        max_num_seqs=64,
        served_name="llama-70b",
    )
    args = container(inp)["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "4"
    assert args[args.index("--max-model-len") + 1] == "32768"
    assert args[args.index("--dtype") + 1] == "bfloat16"
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.95"
    assert args[args.index("--max-num-seqs") + 1] == "64"
    assert args[args.index("--served-model-name") + 1] == "llama-70b"


def test_user_extra_args_come_last_and_untouched() -> None:
    extra = ("--enable-prefix-caching", "--block-size", "32", "--seed=7")
    args = container(make_input(extra_args=extra))["args"]
    assert tuple(args[-4:]) == extra
    assert args.index("--port") < args.index("--enable-prefix-caching")


@pytest.mark.parametrize(
    ("quantization", "expected"),
    [("none", None), ("fp8", "fp8"), ("awq", None), ("gptq", None), ("int8", None), ("int4", None)],
)
def test_quantization_flag_only_for_load_time_methods(quantization: str, expected: str | None) -> None:
    args = container(make_input(quantization=quantization))["args"]
    if expected is None:
        assert "--quantization" not in args
    else:
        assert args[args.index("--quantization") + 1] == expected


def test_gpu_memory_utilization_has_no_float_noise() -> None:
    args = container(make_input(gpu_memory_utilization=0.1 + 0.8))["args"]
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.9"


@pytest.mark.parametrize(
    ("arg", "flag"),
    [
        ("--max-model-len", "--max-model-len"),
        ("--max-model-len=4096", "--max-model-len"),
        ("--max_model_len", "--max-model-len"),
        ("--tensor-parallel-size", "--tensor-parallel-size"),
        ("-tp", "-tp"),
        ("--pipeline-parallel-size=2", "--pipeline-parallel-size"),
        ("--pipeline_parallel_size", "--pipeline-parallel-size"),
        ("-pp", "-pp"),
        ("--dtype=half", "--dtype"),
        ("--quantization", "--quantization"),
        ("-q", "-q"),
        ("--gpu-memory-utilization", "--gpu-memory-utilization"),
        ("--max-num-seqs=8", "--max-num-seqs"),
        ("--served-model-name", "--served-model-name"),
        ("--model", "--model"),
        ("--port=9000", "--port"),
        ("--api-key", "--api-key"),
    ],
)
def test_extra_args_that_repeat_a_managed_flag_are_rejected(arg: str, flag: str) -> None:
    inp = make_input(extra_args=("--enable-prefix-caching", arg, "1"))
    with pytest.raises(RenderError) as caught:
        render_deployment(inp)
    assert caught.value.field == "spec.engine.extraArgs"
    assert flag in str(caught.value)
    assert "spec.engine.extraArgs" in str(caught.value)


def test_the_error_says_which_spec_field_to_use_instead() -> None:
    with pytest.raises(RenderError, match=r"spec\.engine\.maxModelLen"):
        render_deployment(make_input(extra_args=("--max-model-len", "4096")))
    with pytest.raises(RenderError, match=r"spec\.apiKeySecretRef"):
        render_all(make_input(extra_args=("--api-key", "sk-123")))


def test_negative_numbers_and_other_flags_are_not_mistaken_for_managed_flags() -> None:
    extra = ("--seed", "-1", "--kv-cache-dtype", "fp8", "--enable-chunked-prefill", "--max-model-length-x")
    args = container(make_input(extra_args=extra))["args"]
    assert tuple(args[-len(extra) :]) == extra


# --- secrets -----------------------------------------------------------------------------


def test_hf_token_and_api_key_come_from_secrets_never_argv() -> None:
    inp = make_input(
        hf_token_secret=SecretKeyRef(name="hf", key="token"),
        api_key_secret=SecretKeyRef(name="llm-keys", key="apiKey"),
    )
    env = env_by_name(inp)
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}},
    }
    assert env["VLLM_API_KEY"] == {
        "name": "VLLM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "llm-keys", "key": "apiKey"}},
    }
    assert "--api-key" not in container(inp)["args"]
    assert "value" not in env["HF_TOKEN"]
    assert "value" not in env["VLLM_API_KEY"]


def test_no_secret_env_without_secret_refs() -> None:
    env = env_by_name(make_input())
    assert "HF_TOKEN" not in env
    assert "VLLM_API_KEY" not in env
    assert env["HF_HOME"]["value"] == "/root/.cache/huggingface"


# --- resources and volumes -----------------------------------------------------------------


def test_gpus_are_requested_and_limited_equally_and_cpu_memory_only_requested() -> None:
    resources = container(make_input(gpus_per_replica=4, tensor_parallel_size=4))["resources"]
    assert resources["limits"] == {"nvidia.com/gpu": "4"}
    assert resources["requests"]["nvidia.com/gpu"] == "4"
    assert resources["requests"]["cpu"] == "5"
    assert resources["requests"]["memory"].endswith("Gi")
    assert "cpu" not in resources["limits"]
    assert "memory" not in resources["limits"]


def test_memory_request_reserves_the_shm_it_may_fill() -> None:
    inp = make_input()
    volumes = {v["name"]: v for v in pod_spec(inp)["volumes"]}
    shm_gib = int(volumes["shm"]["emptyDir"]["sizeLimit"].removesuffix("Gi"))
    memory_gib = int(container(inp)["resources"]["requests"]["memory"].removesuffix("Gi"))
    assert memory_gib >= shm_gib + 4


def test_dev_shm_is_a_memory_emptydir_that_grows_with_tensor_parallelism() -> None:
    small = {v["name"]: v for v in pod_spec(make_input())["volumes"]}["shm"]
    big = {v["name"]: v for v in pod_spec(make_input(tensor_parallel_size=8, gpus_per_replica=8))["volumes"]}[
        "shm"
    ]
    assert small["emptyDir"]["medium"] == "Memory"
    assert int(big["emptyDir"]["sizeLimit"].removesuffix("Gi")) > int(
        small["emptyDir"]["sizeLimit"].removesuffix("Gi")
    )
    mounts = {m["name"]: m["mountPath"] for m in container(make_input())["volumeMounts"]}
    assert mounts["shm"] == "/dev/shm"


def test_model_cache_is_the_pvc_when_given() -> None:
    inp = make_input(model_cache_pvc="hf-cache")
    volumes = {v["name"]: v for v in pod_spec(inp)["volumes"]}
    assert volumes["model-cache"] == {
        "name": "model-cache",
        "persistentVolumeClaim": {"claimName": "hf-cache"},
    }
    mounts = {m["name"]: m["mountPath"] for m in container(inp)["volumeMounts"]}
    assert mounts["model-cache"] == env_by_name(inp)["HF_HOME"]["value"]


def test_model_cache_is_an_emptydir_without_pvc_so_restarts_do_not_redownload() -> None:
    volumes = {v["name"]: v for v in pod_spec(make_input())["volumes"]}
    assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {}}


# --- probes --------------------------------------------------------------------------------


def test_all_probes_hit_health_on_the_named_port() -> None:
    c = container(make_input())
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_probe_periods_and_thresholds() -> None:
    c = container(make_input())
    assert c["startupProbe"]["periodSeconds"] == 10
    assert c["readinessProbe"]["periodSeconds"] == 5
    assert c["livenessProbe"]["periodSeconds"] == 15
    assert c["livenessProbe"]["failureThreshold"] == 3


def test_startup_budget_is_minutes_for_8b_and_tens_of_minutes_for_70b() -> None:
    def budget_minutes(size_gib: float) -> float:
        probe = container(make_input(model_size_gib=size_gib))["startupProbe"]
        return float(probe["periodSeconds"] * probe["failureThreshold"]) / 60

    small = budget_minutes(15.0)  # Llama 3.1 8B, bf16
    large = budget_minutes(131.5)  # Llama 3.1 70B, bf16
    assert 5 <= small <= 15
    assert 20 <= large <= 45
    assert budget_minutes(760) > large


# --- placement -----------------------------------------------------------------------------


def match_expressions(inp: ServingInput) -> dict[str, dict[str, Any]]:
    affinity = pod_spec(inp)["affinity"]["nodeAffinity"]
    terms = affinity["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert len(terms) == 1, "several terms are ORed: every constraint must be in one term"
    return {e["key"]: e for e in terms[0]["matchExpressions"]}


def test_node_affinity_requires_the_pool_and_the_planned_gpu_types() -> None:
    exprs = match_expressions(make_input(pool_name="inference", gpu_types=("L4", "A10G", "L4")))
    assert exprs["gpupool.dev/pool"] == {"key": "gpupool.dev/pool", "operator": "In", "values": ["inference"]}
    assert exprs["gpupool.dev/gpu"] == {"key": "gpupool.dev/gpu", "operator": "In", "values": ["A10G", "L4"]}
    assert "gpupool.dev/capacity-type" not in exprs


def test_node_affinity_requires_the_capacity_type_when_set() -> None:
    exprs = match_expressions(make_input(capacity_type="spot"))
    assert exprs["gpupool.dev/capacity-type"]["values"] == ["spot"]
    assert exprs["gpupool.dev/capacity-type"]["operator"] == "In"


def test_gpu_taint_is_always_tolerated() -> None:
    tolerations = pod_spec(make_input())["tolerations"]
    assert tolerations == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_pool_taints_are_tolerated_exactly() -> None:
    taints = (
        Taint(key="gpupool.dev/team", value="ml", effect="NoSchedule"),
        Taint(key="dedicated", value="", effect="NoExecute"),
        Taint(key="nvidia.com/gpu", value="", effect="NoSchedule"),  # same as the GPU toleration
    )
    tolerations = pod_spec(make_input(pool_taints=taints))["tolerations"]
    assert tolerations == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "gpupool.dev/team", "operator": "Equal", "value": "ml", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Exists", "effect": "NoExecute"},
    ]


# --- pod hygiene ---------------------------------------------------------------------------


def test_pod_has_no_service_links_no_token_and_no_capabilities() -> None:
    spec = pod_spec(make_input())
    assert spec["enableServiceLinks"] is False
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    sc = spec["containers"][0]["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_in_flight_requests_get_time_before_sigterm_and_vllm_time_after() -> None:
    spec = pod_spec(make_input())
    drain = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert drain >= 20  # vLLM aborts in-flight requests on SIGTERM: the drain is the preStop
    assert spec["terminationGracePeriodSeconds"] >= drain + 20


# --- rollout, hash, determinism ------------------------------------------------------------


def test_rollout_surges_one_and_never_drops_serving_capacity() -> None:
    spec = render_deployment(make_input())["spec"]
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert spec["replicas"] == 2


def test_progress_deadline_outlasts_the_startup_budget() -> None:
    for size in (15.0, 131.5):
        deployment = render_deployment(make_input(model_size_gib=size))
        probe = deployment["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
        budget = probe["periodSeconds"] * probe["failureThreshold"]
        assert deployment["spec"]["progressDeadlineSeconds"] > budget


def test_spec_hash_annotation_is_the_hash_of_the_rendered_pod_spec() -> None:
    template = render_deployment(make_input())["spec"]["template"]
    assert template["metadata"]["annotations"][SPEC_HASH_ANNOTATION] == spec_hash(template["spec"])
    assert len(template["metadata"]["annotations"][SPEC_HASH_ANNOTATION]) == 10


def template_of(inp: ServingInput) -> dict[str, Any]:
    template: dict[str, Any] = render_deployment(inp)["spec"]["template"]
    return template


@pytest.mark.parametrize(
    "change",
    [
        {"replicas": 7},
        {"replicas": 0},
        {"generation": 99},
        {"gpu_types": ("A10G", "L4")},
        {"uid": "another-uid"},
    ],
)
def test_changes_outside_the_pod_spec_do_not_roll_pods(change: dict[str, Any]) -> None:
    before = template_of(make_input())
    after = template_of(make_input(**change))
    assert after == before


@pytest.mark.parametrize(
    "change",
    [
        {"image": "vllm/vllm-openai:v0.11.1"},
        {"max_model_len": 4096},
        {"gpu_types": ("H100",)},
        {"extra_args": ("--enable-prefix-caching",)},
        {"api_key_secret": SecretKeyRef(name="k", key="apiKey")},
        {"model_cache_pvc": "cache"},
        {"capacity_type": "on-demand"},
    ],
)
def test_pod_spec_changes_change_the_hash(change: dict[str, Any]) -> None:
    before = template_of(make_input())["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    after = template_of(make_input(**change))["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    assert after != before


def test_rendering_is_deterministic_byte_for_byte() -> None:
    first = json.dumps(render_all(make_input(labels={"b": "2", "a": "1"})))
    second = json.dumps(render_all(make_input(labels={"a": "1", "b": "2"})))
    assert first == second


def test_rendering_does_not_mutate_or_share_state_between_calls() -> None:
    inp = make_input()
    first = render_deployment(inp)
    first["spec"]["template"]["spec"]["containers"][0]["args"].append("--mutated")
    assert "--mutated" not in render_deployment(inp)["spec"]["template"]["spec"]["containers"][0]["args"]


# --- labels and ownership ------------------------------------------------------------------


def test_every_object_is_labelled_and_owned_by_the_model_deployment() -> None:
    inp = make_input(labels={"team": "search"})
    for obj in render_all(inp):
        meta = obj["metadata"]
        assert meta["name"] == "llama-8b"
        assert meta["namespace"] == "team-a"
        assert meta["labels"] == {
            "team": "search",
            "app.kubernetes.io/name": "vllm",
            "app.kubernetes.io/instance": "llama-8b",
            "app.kubernetes.io/managed-by": "gpupool",
            "gpupool.dev/model-deployment": "llama-8b",
        }
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "gpupool.dev/v1alpha1",
                "kind": "ModelDeployment",
                "name": "llama-8b",
                "uid": inp.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert meta["annotations"]["gpupool.dev/generation"] == "3"


def test_users_cannot_override_gpupools_labels() -> None:
    inp = make_input(labels={"app.kubernetes.io/instance": "hijack", "app.kubernetes.io/managed-by": "me"})
    labels = render_deployment(inp)["metadata"]["labels"]
    assert labels["app.kubernetes.io/instance"] == "llama-8b"
    assert labels["app.kubernetes.io/managed-by"] == "gpupool"


def test_selector_is_only_the_identity_labels_and_ignores_user_labels() -> None:
    expected = {"app.kubernetes.io/instance": "llama-8b", "gpupool.dev/model-deployment": "llama-8b"}
    for labels in ({}, {"team": "a"}, {"team": "b", "cost-center": "42"}):
        inp = make_input(labels=labels)
        deployment = render_deployment(inp)
        assert deployment["spec"]["selector"] == {"matchLabels": expected}
        assert render_pdb(inp)["spec"]["selector"] == {"matchLabels": expected}
        assert render_service(inp)["spec"]["selector"] == expected
        assert selector_labels(inp) == expected
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert expected.items() <= pod_labels.items()


# --- Service and PDB -----------------------------------------------------------------------


def test_service_exposes_http_on_8000() -> None:
    svc = render_service(make_input())
    assert svc["apiVersion"] == "v1"
    assert svc["kind"] == "Service"
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
    ]


@pytest.mark.parametrize("replicas", [0, 1, 2, 5])
def test_pdb_allows_one_eviction_at_a_time_for_any_replica_count(replicas: int) -> None:
    pdb = render_pdb(make_input(replicas=replicas))
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_render_all_returns_deployment_service_pdb() -> None:
    kinds = [(o["apiVersion"], o["kind"]) for o in render_all(make_input())]
    assert kinds == [("apps/v1", "Deployment"), ("v1", "Service"), ("policy/v1", "PodDisruptionBudget")]


# --- invalid input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "llama.8b"}, "metadata.name"),
        ({"name": "8b-llama"}, "metadata.name"),
        ({"name": "Llama"}, "metadata.name"),
        ({"name": "a" * 64}, "metadata.name"),
        ({"model": " "}, "spec.model"),
        ({"gpu_types": ()}, "spec.gpu.types"),
        ({"replicas": -1}, "spec.replicas"),
        ({"gpus_per_replica": 0}, "spec.gpu.count"),
        ({"tensor_parallel_size": 3, "gpus_per_replica": 4}, "spec.engine.tensorParallelSize"),
        ({"tensor_parallel_size": 0}, "spec.engine.tensorParallelSize"),
        ({"pipeline_parallel_size": 0}, "status.placement"),
        ({"tensor_parallel_size": 2, "gpus_per_replica": 2, "pipeline_parallel_size": 2}, "status.placement"),
        ({"nodes_per_replica": 0}, "status.placement"),
        ({"max_model_len": 0}, "spec.engine.maxModelLen"),
        ({"gpu_memory_utilization": 1.5}, "spec.engine.gpuMemoryUtilization"),
        ({"max_num_seqs": 0}, "spec.engine.maxNumSeqs"),
    ],
)
def test_invalid_input_raises_a_render_error_naming_the_field(change: dict[str, Any], field: str) -> None:
    inp = make_input(**change)
    for render in (render_deployment, render_service, render_pdb):
        with pytest.raises(RenderError) as caught:
            render(inp)
        assert caught.value.field == field


def test_a_63_character_name_is_fine() -> None:
    inp = make_input(name="a" * 63)
    assert render_service(inp)["metadata"]["name"] == "a" * 63


def test_tensor_parallel_may_be_a_divisor_of_the_gpus() -> None:
    # Pipeline parallelism may use the rest; TP only has to divide the GPUs.
    inp = make_input(tensor_parallel_size=2, gpus_per_replica=4, pipeline_parallel_size=2)
    assert container(inp)["resources"]["limits"]["nvidia.com/gpu"] == "4"
    args = container(inp)["args"]
    assert args[args.index("--pipeline-parallel-size") + 1] == "2"
    # One node: vLLM's own multiprocessing executor, no Ray.
    assert "--distributed-executor-backend" not in args


def test_serving_input_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_input().replicas = 3  # type: ignore[misc]


def test_selector_string_is_label_selector_syntax_for_the_scale_subresource() -> None:
    assert selector_string(make_input()) == (
        "app.kubernetes.io/instance=llama-8b,gpupool.dev/model-deployment=llama-8b"
    )
