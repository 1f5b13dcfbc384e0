"""The rendered serving objects against a real API server and scheduler.

The unit tests check the dicts; these check what only the cluster can: that the API server
accepts them through server-side apply (validation, defaulting, admission), that re-applying
an unchanged render is a no-op, that the real kube-scheduler places the pods only on the
pool's nodes of the planned GPU types, and that a spec change rolls out by surging without
ever dropping the serving pod (maxUnavailable 0).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.dynamic import DynamicClient

from gpupool.serving import ServingInput, render_all, render_deployment
from gpupool.serving.render import SPEC_HASH_ANNOTATION
from tests.conftest import wait_for
from tests.unit.test_serving_render import make_input

pytestmark = pytest.mark.cluster

FIELD_MANAGER = "gpupool-serving-test"


def _apply(dyn: DynamicClient, obj: dict[str, Any], *, dry_run: bool = False) -> Any:
    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    extra = {"dry_run": "All"} if dry_run else {}
    return dyn.server_side_apply(
        resource,
        body=obj,
        name=obj["metadata"]["name"],
        namespace=obj["metadata"]["namespace"],
        field_manager=FIELD_MANAGER,
        force_conflicts=True,
        **extra,
    )


def _owned_by_configmap(objs: list[dict[str, Any]], owner: client.V1ConfigMap) -> list[dict[str, Any]]:
    """The objects with a ConfigMap standing in for the ModelDeployment as their owner.

    Without the ModelDeployment CRD (or with it but no such object) the garbage collector
    could delete objects owned by a missing ModelDeployment mid-test; ownership itself is
    covered by the unit tests and the controller's own tests.
    """
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": owner.metadata.name,
        "uid": owner.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    out = copy.deepcopy(objs)
    for obj in out:
        obj["metadata"]["ownerReferences"] = [ref]
    return out


def _serving_input(namespace: str, **overrides: Any) -> ServingInput:
    base = make_input(
        name="llama",
        namespace=namespace,
        replicas=1,
        pool_name=namespace,  # a pool only this test's nodes belong to
        gpu_types=("L4", "A10G"),
        capacity_type="on-demand",
    )
    return dataclasses.replace(base, **overrides)


def _pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    selector = "app.kubernetes.io/instance=llama,gpupool.dev/model-deployment=llama"
    return [
        p
        for p in core.list_namespaced_pod(namespace, label_selector=selector).items
        if p.metadata.deletion_timestamp is None
    ]


def _is_ready(pod: client.V1Pod) -> bool:
    conditions = (pod.status and pod.status.conditions) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def test_the_api_server_accepts_every_rendered_object_on_dry_run(
    kube: client.ApiClient, namespace: str
) -> None:
    dyn = DynamicClient(kube)
    inp = make_input(
        namespace=namespace,
        tensor_parallel_size=4,
        gpus_per_replica=4,
        quantization="fp8",
        extra_args=("--enable-prefix-caching",),
        capacity_type="spot",
        model_cache_pvc="hf-cache",
        model_size_gib=131.5,
        labels={"team": "ml"},
    )
    for obj in render_all(inp):
        applied = _apply(dyn, obj, dry_run=True).to_dict()
        assert applied["kind"] == obj["kind"]
        assert applied["metadata"]["ownerReferences"] == obj["metadata"]["ownerReferences"]
        assert applied["metadata"]["labels"] == obj["metadata"]["labels"]
        assert applied["spec"]["selector"] == obj["spec"]["selector"]
        if obj["kind"] == "Deployment":
            sent = obj["spec"]["template"]["spec"]["containers"][0]
            got = applied["spec"]["template"]["spec"]["containers"][0]
            assert got["args"] == sent["args"]
            assert got["startupProbe"]["failureThreshold"] == sent["startupProbe"]["failureThreshold"]
            assert applied["spec"]["strategy"] == obj["spec"]["strategy"]
        if obj["kind"] == "PodDisruptionBudget":
            assert applied["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"


def test_pods_land_only_on_the_pools_nodes_of_a_planned_gpu_and_reapply_is_a_no_op(
    kube: client.ApiClient, namespace: str, gpu_nodes: Callable[..., str]
) -> None:
    core = client.CoreV1Api(kube)
    dyn = DynamicClient(kube)
    pool = {"gpupool.dev/pool": namespace, "gpupool.dev/capacity-type": "on-demand"}
    # Decoys: a GPU type the plan did not choose, the right GPU in another pool, spot capacity.
    gpu_nodes(gpus=8, gpu="H100", labels=pool)
    gpu_nodes(gpus=8, gpu="L4", labels={**pool, "gpupool.dev/pool": f"other-{namespace}"})
    gpu_nodes(gpus=8, gpu="L4", labels={**pool, "gpupool.dev/capacity-type": "spot"})
    right = gpu_nodes(gpus=1, gpu="L4", labels=pool)

    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    objs = _owned_by_configmap(render_all(_serving_input(namespace)), owner)
    generations = [_apply(dyn, obj).metadata.generation for obj in objs]

    pod = wait_for(
        lambda: (ps := _pods(core, namespace)) and ps[0].spec.node_name and ps[0],
        timeout=60,
        what="the serving pod to be scheduled",
    )
    assert pod.spec.node_name == right
    template_hash = objs[0]["spec"]["template"]["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    assert pod.metadata.annotations[SPEC_HASH_ANNOTATION] == template_hash

    # The same render, applied again, changes no spec (controllers' status writes aside, so
    # the generation, not the resourceVersion, is the witness) and rolls nothing.
    again = [_apply(dyn, obj).metadata.generation for obj in objs]
    assert again == generations
    apps = client.AppsV1Api(kube)
    replica_sets = apps.list_namespaced_replica_set(namespace).items
    assert len(replica_sets) == 1


def test_a_spec_change_surges_a_new_pod_and_never_drops_the_serving_one(
    kube: client.ApiClient, namespace: str, gpu_nodes: Callable[..., str]
) -> None:
    core = client.CoreV1Api(kube)
    dyn = DynamicClient(kube)
    pool = {"gpupool.dev/pool": namespace, "gpupool.dev/capacity-type": "on-demand"}
    first_node = gpu_nodes(gpus=1, gpu="L4", labels=pool)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})

    inp = _serving_input(namespace)
    for obj in _owned_by_configmap(render_all(inp), owner):
        _apply(dyn, obj)
    old = wait_for(
        lambda: (ps := _pods(core, namespace)) and _is_ready(ps[0]) and ps[0],
        timeout=90,
        what="the first pod Ready",
    )
    assert old.spec.node_name == first_node

    # New image: the surge pod has no free GPU (the only node's one GPU is taken), so it waits,
    # and the old pod keeps serving: maxUnavailable 0 means it is not killed first.
    changed = dataclasses.replace(inp, image="vllm/vllm-openai:v0.11.1")
    (deployment,) = _owned_by_configmap([render_deployment(changed)], owner)
    _apply(dyn, deployment)
    surge = wait_for(
        lambda: next((p for p in _pods(core, namespace) if p.metadata.name != old.metadata.name), None),
        timeout=60,
        what="the surge pod",
    )
    assert surge.spec.containers[0].image == "vllm/vllm-openai:v0.11.1"
    for _ in range(3):
        current = core.read_namespaced_pod(old.metadata.name, namespace)
        assert current.metadata.deletion_timestamp is None
        assert _is_ready(current)
        assert core.read_namespaced_pod(surge.metadata.name, namespace).spec.node_name is None
        time.sleep(1)

    # Capacity arrives (what the pool controller would provision): the rollout completes.
    second_node = gpu_nodes(gpus=1, gpu="L4", labels=pool)

    def rolled_out() -> bool:
        pods = _pods(core, namespace)
        ready = [p for p in pods if _is_ready(p)]
        # Serving capacity never drops to zero while the new pod comes up.
        assert ready, "no ready serving pod during the rollout"
        return len(pods) == 1 and pods[0].metadata.name == surge.metadata.name and _is_ready(pods[0])

    wait_for(rolled_out, timeout=120, interval=0.2, what="the rollout to finish")
    assert core.read_namespaced_pod(surge.metadata.name, namespace).spec.node_name == second_node
