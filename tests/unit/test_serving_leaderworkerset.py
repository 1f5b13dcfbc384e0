"""The LeaderWorkerSet of a model whose replicas span nodes, field by field.

Each test pins what a multi-node replica relies on: one group per replica with one pod per
node, each pod with its node's GPUs; vLLM's Ray launch (the leader starts the head and waits
for the group, the workers join it); only the leader serves and is probed; the group stays in
one provider and region; and everything else (labels, owner, placement, secrets, volumes) is
what the single-node Deployment has.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gpupool.serving import (
    RenderError,
    SecretKeyRef,
    ServingInput,
    Taint,
    leader_selector_labels,
    render_all,
    render_deployment,
    render_leader_worker_set,
    render_service,
    selector_labels,
    selector_string,
)
from gpupool.serving.leaderworkerset import LEADER_SCRIPT, WORKER_SCRIPT
from gpupool.serving.render import SPEC_HASH_ANNOTATION, spec_hash
from tests.unit.test_serving_inputs import from_spec
from tests.unit.test_serving_render import make_input


def make_group_input(**overrides: Any) -> ServingInput:
    """Llama 3.1 405B over two 8-GPU nodes: tensor parallel 8 within a node, 2 pipeline stages."""
    base: dict[str, Any] = {
        "name": "llama-405b",
        "model": "meta-llama/Llama-3.1-405B-Instruct",
        "served_name": "llama-405b",
        "replicas": 2,
        "tensor_parallel_size": 8,
        "gpus_per_replica": 16,
        "pipeline_parallel_size": 2,
        "nodes_per_replica": 2,
        "gpu_types": ("H100", "H200"),
        "model_size_gib": 754.0,
    }
    base.update(overrides)
    return make_input(**base)


def templates(inp: ServingInput) -> tuple[dict[str, Any], dict[str, Any]]:
    lwt = render_leader_worker_set(inp)["spec"]["leaderWorkerTemplate"]
    return lwt["leaderTemplate"], lwt["workerTemplate"]


def containers(inp: ServingInput) -> tuple[dict[str, Any], dict[str, Any]]:
    leader, worker = templates(inp)
    return leader["spec"]["containers"][0], worker["spec"]["containers"][0]


# --- the object -------------------------------------------------------------------------


def test_one_group_per_replica_with_one_pod_per_node() -> None:
    lws = render_leader_worker_set(make_group_input(replicas=3, nodes_per_replica=4, pipeline_parallel_size=4,
                                                    gpus_per_replica=32))  # fmt: skip
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    assert lws["kind"] == "LeaderWorkerSet"
    assert lws["spec"]["replicas"] == 3
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 4


def test_group_policies_follow_vllms_launch() -> None:
    spec = render_leader_worker_set(make_group_input())["spec"]
    # Any pod lost breaks the shared engine: the group restarts as one.
    assert spec["leaderWorkerTemplate"]["restartPolicy"] == "RecreateGroupOnPodRestart"
    # The leader is ready only once the workers joined, so they must not wait for it.
    assert spec["startupPolicy"] == "LeaderCreated"
    # A new group comes up before an old one goes, as the Deployment's surge.
    assert spec["rolloutStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdateConfiguration": {"maxUnavailable": 0, "maxSurge": 1},
    }
    # Not `Shared`: LWS would name its headless Service after the set, the model's Service name.
    assert spec["networkConfig"] == {"subdomainPolicy": "UniquePerReplica"}


def test_render_all_returns_the_leader_worker_set_instead_of_the_deployment() -> None:
    kinds = [(o["apiVersion"], o["kind"]) for o in render_all(make_group_input())]
    assert kinds == [
        ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet"),
        ("v1", "Service"),
        ("policy/v1", "PodDisruptionBudget"),
    ]
    single = [o["kind"] for o in render_all(make_input())]
    assert single == ["Deployment", "Service", "PodDisruptionBudget"]


def test_the_planners_multi_node_shape_maps_from_the_spec_onto_a_leader_worker_set() -> None:
    spec = {"model": "meta-llama/Llama-3.1-405B-Instruct", "replicas": 2}
    plan = {"gpu_types": ["H100"], "gpus_per_replica": 16, "tensor_parallel_size": 8, "model_size_gib": 754.0}
    inp = from_spec(spec, **plan, pipeline_parallel_size=2, nodes_per_replica=2)
    assert (inp.pipeline_parallel_size, inp.nodes_per_replica) == (2, 2)
    assert render_all(inp)[0]["kind"] == "LeaderWorkerSet"
    # Without them, the shape is what it always was: one node, no pipeline stages.
    single = from_spec({"model": "meta-llama/Llama-3.1-8B-Instruct"})
    assert (single.pipeline_parallel_size, single.nodes_per_replica) == (1, 1)


def test_each_renderer_refuses_the_other_shape() -> None:
    with pytest.raises(RenderError) as caught:
        render_deployment(make_group_input())
    assert caught.value.field == "status.placement"
    with pytest.raises(RenderError) as caught:
        render_leader_worker_set(make_input())
    assert caught.value.field == "status.placement"


def test_metadata_labels_and_owner_are_the_deployments() -> None:
    inp = make_group_input(labels={"team": "search"})
    lws = render_leader_worker_set(inp)
    single = render_deployment(make_input(name="llama-405b", labels={"team": "search"}))
    assert lws["metadata"] == single["metadata"]
    leader, worker = templates(inp)
    for template in (leader, worker):
        assert template["metadata"]["labels"] == lws["metadata"]["labels"]


# --- pods and resources -----------------------------------------------------------------


def test_each_pod_requests_its_nodes_gpus_the_tensor_parallel_size() -> None:
    for c in containers(make_group_input()):
        assert c["resources"]["limits"] == {"nvidia.com/gpu": "8"}
        assert c["resources"]["requests"]["nvidia.com/gpu"] == "8"
        # CPU and memory for the pod's own GPUs, not the whole replica's 16.
        assert c["resources"]["requests"]["cpu"] == "9"
        assert "cpu" not in c["resources"]["limits"]


def test_dev_shm_and_model_cache_are_the_deployments() -> None:
    inp = make_group_input(model_cache_pvc="hf-cache")
    leader, worker = templates(inp)
    for template in (leader, worker):
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
        assert volumes["model-cache"] == {
            "name": "model-cache",
            "persistentVolumeClaim": {"claimName": "hf-cache"},
        }
        mounts = {m["name"]: m["mountPath"] for m in template["spec"]["containers"][0]["volumeMounts"]}
        assert mounts == {"shm": "/dev/shm", "model-cache": "/root/.cache/huggingface"}


def test_pod_hygiene_and_drain_are_the_deployments_on_both_pods() -> None:
    single = render_deployment(make_input())["spec"]["template"]["spec"]
    for template in templates(make_group_input()):
        spec = template["spec"]
        for key in ("automountServiceAccountToken", "enableServiceLinks", "securityContext",
                    "terminationGracePeriodSeconds"):  # fmt: skip
            assert spec[key] == single[key], key
        c = spec["containers"][0]
        assert c["securityContext"] == single["containers"][0]["securityContext"]
        # Workers drain with the leader: it still needs its pipeline stages for 30 s.
        assert c["lifecycle"] == single["containers"][0]["lifecycle"]


# --- the launch ---------------------------------------------------------------------------


def test_the_leader_runs_the_ray_head_then_vllm_serve_with_the_plans_shape() -> None:
    leader, _ = containers(make_group_input())
    assert leader["command"] == ["sh", "-c", LEADER_SCRIPT, "gpupool-leader"]
    assert "ray start --head --port=6379" in LEADER_SCRIPT
    assert 'exec vllm serve "$@"' in LEADER_SCRIPT
    args = leader["args"]
    assert args[0] == "meta-llama/Llama-3.1-405B-Instruct"
    assert args[args.index("--tensor-parallel-size") + 1] == "8"
    assert args[args.index("--pipeline-parallel-size") + 1] == "2"
    assert args[args.index("--distributed-executor-backend") + 1] == "ray"
    assert args[args.index("--port") + 1] == "8000"


def test_workers_join_the_leaders_ray_cluster_and_block() -> None:
    _, worker = containers(make_group_input())
    assert worker["command"] == ["sh", "-c", WORKER_SCRIPT]
    assert worker["args"] == ["gpupool-worker"]
    assert 'ray start --address="$LWS_LEADER_ADDRESS:6379" --block' in WORKER_SCRIPT


def test_extra_args_reach_only_the_leader_and_may_not_pick_the_executor() -> None:
    leader, worker = containers(make_group_input(extra_args=("--enable-prefix-caching",)))
    assert leader["args"][-1] == "--enable-prefix-caching"
    assert "--enable-prefix-caching" not in worker["args"]
    with pytest.raises(RenderError, match="--distributed-executor-backend") as caught:
        render_leader_worker_set(make_group_input(extra_args=("--distributed-executor-backend=mp",)))
    assert caught.value.field == "spec.engine.extraArgs"
    # On one node the executor stays the user's choice.
    render_deployment(make_input(extra_args=("--distributed-executor-backend", "ray")))


def _fake_tools(bin_dir: Path, log: Path) -> None:
    """`ray`, `python3` and `vllm` that record how they were called; python3 reports the group
    complete on its second call, as if the last worker joined between two polls."""
    scripts = {
        "ray": f'echo "ray $*" >> {log}\n',
        "vllm": f'for a in "$@"; do echo "vllm-arg:$a" >> {log}; done\n',
        "python3": f'echo python3 >> {log}\n[ "$(grep -c python3 {log})" -ge 2 ]\n',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_the_leader_script_waits_for_the_group_and_passes_every_argument_verbatim(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    _fake_tools(tmp_path, log)
    # Arguments a shell would mangle if they were spliced into the script.
    tricky = ["--chat-template", "{{ x }} $(touch pwned) `id` 'q' \"d\"", "--seed", "-1"]
    leader, _ = containers(make_group_input(extra_args=tuple(tricky)))
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "LWS_GROUP_SIZE": "2"}
    # Shorten the poll's pause: the test checks the loop, not the 5 s.
    command = [
        *leader["command"][:2],
        leader["command"][2].replace("sleep 5", "sleep 0"),
        *leader["command"][3:],
    ]
    subprocess.run([*command, *leader["args"]], env=env, check=True, timeout=30, cwd=tmp_path)
    calls = log.read_text().splitlines()
    assert calls[0] == "ray start --head --port=6379"
    assert calls[1:3] == ["python3", "python3"]  # polled until the group was complete
    assert [c.removeprefix("vllm-arg:") for c in calls[3:]] == ["serve", *leader["args"]]
    assert not (tmp_path / "pwned").exists()


def test_the_scripts_fail_fast_without_the_variables_lws_injects() -> None:
    leader, worker = containers(make_group_input())
    env = {"PATH": os.environ["PATH"]}
    for c in (leader, worker):
        done = subprocess.run(
            [*c["command"], *c["args"]], check=False, env=env, capture_output=True, text=True, timeout=30
        )
        assert done.returncode != 0
        assert "is set by the LeaderWorkerSet controller" in done.stderr


def test_the_worker_script_retries_until_it_joins(tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    (tmp_path / "ray").write_text(f'#!/bin/sh\necho "ray $*" >> {log}\n[ "$(wc -l < {log})" -ge 2 ]\n')
    (tmp_path / "ray").chmod(0o755)
    _, worker = containers(make_group_input())
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "LWS_LEADER_ADDRESS": "llama-0.llama-0.team-a"}
    # Shorten the retry pause: the test checks the loop, not the 5 s.
    script = worker["command"][2].replace("sleep 5", "sleep 0")
    subprocess.run(["sh", "-c", script, "gpupool-worker"], env=env, check=True, timeout=30)
    assert log.read_text().splitlines() == ["ray start --address=llama-0.llama-0.team-a:6379 --block"] * 2


# --- probes and ports ---------------------------------------------------------------------


def test_only_the_leader_serves_and_is_probed_on_health() -> None:
    leader, worker = containers(make_group_input())
    assert leader["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert leader[probe]["httpGet"] == {"path": "/health", "port": "http"}
        assert probe not in worker
    assert "ports" not in worker


def test_the_leaders_startup_budget_also_covers_the_workers_joining() -> None:
    leader, _ = containers(make_group_input(model_size_gib=131.5))
    single = render_deployment(make_input(model_size_gib=131.5))["spec"]["template"]["spec"]["containers"][0]
    extra = (leader["startupProbe"]["failureThreshold"] - single["startupProbe"]["failureThreshold"]) * 10
    assert extra == 600


# --- secrets ------------------------------------------------------------------------------


def test_hf_token_on_every_pod_api_key_only_on_the_leader() -> None:
    inp = make_group_input(
        hf_token_secret=SecretKeyRef(name="hf", key="token"),
        api_key_secret=SecretKeyRef(name="llm-keys", key="apiKey"),
    )
    leader, worker = ({e["name"]: e for e in c["env"]} for c in containers(inp))
    assert leader["HF_TOKEN"] == worker["HF_TOKEN"]
    assert leader["VLLM_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "llm-keys", "key": "apiKey"}}
    assert "VLLM_API_KEY" not in worker
    for env in (leader, worker):
        assert env["RAY_USAGE_STATS_ENABLED"]["value"] == "0"
        assert env["VLLM_NO_USAGE_STATS"]["value"] == "1"
    assert "--api-key" not in containers(inp)[0]["args"]


# --- placement ----------------------------------------------------------------------------


def test_node_affinity_and_tolerations_are_the_deployments() -> None:
    taints = (Taint("team", "ml", "NoSchedule"),)
    inp = make_group_input(capacity_type="spot", pool_taints=taints, pool_name="big")
    single = render_deployment(make_input(capacity_type="spot", pool_taints=taints, pool_name="big",
                                          gpu_types=("H100", "H200")))  # fmt: skip
    for template in templates(inp):
        spec = template["spec"]
        assert (
            spec["affinity"]["nodeAffinity"] == single["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
        )
        assert spec["tolerations"] == single["spec"]["template"]["spec"]["tolerations"]


def test_a_group_stays_in_one_provider_and_region_but_groups_do_not_exclude_each_other() -> None:
    lws = render_leader_worker_set(make_group_input())
    # Not LWS's exclusive-topology annotation: it would keep a second group out of the region.
    assert "leaderworkerset.sigs.k8s.io/exclusive-topology" not in lws["metadata"]["annotations"]
    for template in templates(make_group_input()):
        affinity = template["spec"]["affinity"]
        assert "podAntiAffinity" not in affinity
        terms = affinity["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert {t["topologyKey"] for t in terms} == {"gpupool.dev/provider", "topology.kubernetes.io/region"}
        for term in terms:
            assert term["labelSelector"] == {"matchLabels": selector_labels(make_group_input())}
            # The API server narrows the selector to the pod's own group at creation.
            assert term["matchLabelKeys"] == ["leaderworkerset.sigs.k8s.io/group-key"]


# --- Service, selector, PDB ---------------------------------------------------------------


def test_the_service_selects_only_the_leaders() -> None:
    inp = make_group_input()
    selector = render_service(inp)["spec"]["selector"]
    assert selector == {
        "app.kubernetes.io/instance": "llama-405b",
        "gpupool.dev/model-deployment": "llama-405b",
        "leaderworkerset.sigs.k8s.io/worker-index": "0",
    }
    assert selector == leader_selector_labels(inp)
    assert render_service(inp)["spec"]["ports"] == render_service(make_input())["spec"]["ports"]


def test_status_selector_counts_one_pod_per_replica_the_leader() -> None:
    assert selector_string(make_group_input()) == (
        "app.kubernetes.io/instance=llama-405b,gpupool.dev/model-deployment=llama-405b,"
        "leaderworkerset.sigs.k8s.io/worker-index=0"
    )


def test_the_pdb_covers_every_pod_of_every_group() -> None:
    pdb = render_all(make_group_input())[2]
    assert pdb["spec"]["selector"] == {"matchLabels": selector_labels(make_group_input())}
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


# --- hash and determinism -----------------------------------------------------------------


def test_both_templates_carry_the_hash_of_the_group() -> None:
    leader, worker = templates(make_group_input())
    group = spec_hash({"leader": leader["spec"], "worker": worker["spec"]})
    assert leader["metadata"]["annotations"] == {SPEC_HASH_ANNOTATION: group}
    assert worker["metadata"]["annotations"] == {SPEC_HASH_ANNOTATION: group}


@pytest.mark.parametrize("change", [{"replicas": 7}, {"generation": 99}, {"gpu_types": ("H200", "H100")}])
def test_changes_outside_the_pod_specs_do_not_roll_groups(change: dict[str, Any]) -> None:
    assert templates(make_group_input(**change)) == templates(make_group_input())


def test_rendering_is_deterministic() -> None:
    assert render_all(make_group_input(labels={"b": "2", "a": "1"})) == render_all(
        make_group_input(labels={"a": "1", "b": "2"})
    )


# --- invalid shapes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"pipeline_parallel_size": 1}, "status.placement"),  # stages must be one per node
        ({"pipeline_parallel_size": 3}, "status.placement"),
        ({"gpus_per_replica": 8}, "status.placement"),  # not 8 per node x 2 nodes
        ({"tensor_parallel_size": 3}, "spec.engine.tensorParallelSize"),
        ({"name": "a" * 49}, "metadata.name"),
        ({"extra_args": ("--pipeline-parallel-size", "4")}, "spec.engine.extraArgs"),
    ],
)
def test_invalid_group_shapes_raise_a_render_error_naming_the_field(
    change: dict[str, Any], field: str
) -> None:
    with pytest.raises(RenderError) as caught:
        render_all(make_group_input(**change))
    assert caught.value.field == field


def test_a_48_character_name_is_fine_for_a_group() -> None:
    assert render_leader_worker_set(make_group_input(name="a" * 48))["metadata"]["name"] == "a" * 48
