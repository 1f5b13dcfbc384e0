"""Proof that the test cluster is real: the scheduler honours GPU counts and CRDs work.

If any of this were mocked, a pod asking for a GPU would not stay Pending for lack
of one, and a status written through the main endpoint would not be dropped.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import wait_for
from tests.integration.conftest import gpu_deployment

pytestmark = pytest.mark.cluster


def _pods(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"app={app}").items)


def _failed_scheduling(core: client.CoreV1Api, namespace: str, pod: str) -> list[str]:
    events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={pod}").items
    return [e.message or "" for e in events if e.reason == "FailedScheduling"]


def _is_ready(pod: client.V1Pod) -> bool:
    conditions = (pod.status and pod.status.conditions) or []
    return pod.status.phase == "Running" and any(c.type == "Ready" and c.status == "True" for c in conditions)


def test_gpu_pods_wait_for_a_gpu_node_and_the_scheduler_counts_gpus(
    kube: client.ApiClient, namespace: str, gpu_nodes: Any
) -> None:
    core = client.CoreV1Api(kube)
    apps = client.AppsV1Api(kube)
    test_id = namespace
    # Only the node this test adds qualifies, so other tests' nodes cannot interfere.
    manifest = gpu_deployment(
        "gpu-app", None, gpus=1, replicas=2, node_selector={"gpupool.dev/test-id": test_id}
    )
    apps.create_namespaced_deployment(namespace, manifest)

    pods = wait_for(lambda: (p := _pods(core, namespace, "gpu-app")) and len(p) == 2 and p, what="2 pods")
    # No GPU node yet: both pods are Pending and the real scheduler says why.
    for pod in pods:
        messages = wait_for(
            lambda n=pod.metadata.name: _failed_scheduling(core, namespace, n), what="FailedScheduling event"
        )
        assert any("available" in m or "didn't match" in m for m in messages), messages
        assert core.read_namespaced_pod(pod.metadata.name, namespace).status.phase == "Pending"

    node = gpu_nodes(gpus=1, labels={"gpupool.dev/test-id": test_id})

    ready = wait_for(
        lambda: [p for p in _pods(core, namespace, "gpu-app") if _is_ready(p)], timeout=60, what="a Ready pod"
    )
    assert len(ready) == 1
    assert ready[0].spec.node_name == node

    # The node's only GPU is taken: the second replica stays Pending, for lack of a GPU.
    def pending_for_gpu() -> bool:
        pending = [p for p in _pods(core, namespace, "gpu-app") if not p.spec.node_name]
        if len(pending) != 1:
            return False
        return any(
            "nvidia.com/gpu" in m for m in _failed_scheduling(core, namespace, pending[0].metadata.name)
        )

    wait_for(pending_for_gpu, timeout=60, what="second replica Pending for Insufficient nvidia.com/gpu")
    assert len([p for p in _pods(core, namespace, "gpu-app") if _is_ready(p)]) == 1


def test_custom_resource_round_trips_with_status_subresource(kube: client.ApiClient, namespace: str) -> None:
    ext = client.ApiextensionsV1Api(kube)
    custom = client.CustomObjectsApi(kube)
    suffix = uuid.uuid4().hex[:6]
    group, plural = f"smoke{suffix}.test.gpupool.dev", "widgets"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                                "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                            },
                        }
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(crd)
    try:
        wait_for(
            lambda: any(
                c.type == "Established" and c.status == "True"
                for c in (ext.read_custom_resource_definition(f"{plural}.{group}").status.conditions or [])
            ),
            what="CRD Established",
        )
        body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}}
        # Discovery of a brand-new group can lag a moment behind Established.
        wait_for(
            lambda: custom.create_namespaced_custom_object(group, "v1", namespace, plural, body),
            what="create",
        )

        # With a status subresource, the main endpoint ignores status ...
        obj = custom.get_namespaced_custom_object(group, "v1", namespace, plural, "w")
        obj["status"] = {"phase": "Ignored"}
        custom.replace_namespaced_custom_object(group, "v1", namespace, plural, "w", obj)
        assert "status" not in custom.get_namespaced_custom_object(group, "v1", namespace, plural, "w")

        # ... and the status endpoint writes it, without touching spec or generation.
        gen = obj["metadata"]["generation"]
        custom.patch_namespaced_custom_object_status(
            group, "v1", namespace, plural, "w", {"status": {"phase": "Ready"}}
        )
        back = custom.get_namespaced_custom_object(group, "v1", namespace, plural, "w")
        assert back["status"] == {"phase": "Ready"}
        assert back["spec"] == {"size": 3}
        assert back["metadata"]["generation"] == gen
    finally:
        ext.delete_custom_resource_definition(f"{plural}.{group}")
