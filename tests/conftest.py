"""Fixtures shared by every test: the real cluster, a namespace per test, GPU nodes.

Cluster tests run against a real kube-apiserver. `KUBECONFIG` picks the cluster
(kind, or anything a user points at); without it, the local cluster is started
by tests/cluster/up.sh. As crate-operator does, the suite refuses a cluster that
does not look like a throwaway test cluster, so it never runs against production.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from kubernetes import client, config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_DIR = ROOT / "tests" / "cluster"

# Where a cluster test may run: a local control plane or kind, both on loopback.
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def _kubeconfig_path() -> str:
    existing = os.environ.get("KUBECONFIG")
    if existing:
        return existing
    out = subprocess.run(
        [str(CLUSTER_DIR / "up.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()
    os.environ["KUBECONFIG"] = out
    bin_dir = subprocess.run(
        [str(CLUSTER_DIR / "env.sh"), "bin"], check=True, capture_output=True, text=True
    ).stdout.strip()
    os.environ["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    return out


@pytest.fixture(scope="session")
def kubeconfig() -> str:
    """Path of the test cluster's kubeconfig, after checking it is a test cluster."""
    path = _kubeconfig_path()
    loader = config.kube_config.KubeConfigLoader(
        config_dict=yaml.safe_load(Path(path).read_text()),
    )
    cfg = client.Configuration()
    loader.load_and_set(cfg)
    host = urlparse(cfg.host).hostname or ""
    if host not in _LOCAL_HOSTS and os.environ.get("GPUPOOL_TEST_ANY_CLUSTER") != "1":
        pytest.exit(
            f"refusing to run cluster tests against {cfg.host}: not a local test cluster. "
            "Set GPUPOOL_TEST_ANY_CLUSTER=1 if this cluster is really disposable.",
            returncode=2,
        )
    return path


@pytest.fixture(scope="session")
def kube(kubeconfig: str) -> Iterator[client.ApiClient]:
    """An API client bound to the test cluster."""
    api = config.new_client_from_config(config_file=kubeconfig)
    yield api
    api.close()


@pytest.fixture
def namespace(kube: client.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, deleted after it (without waiting)."""
    name = f"gp-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(kube)
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"gpupool.dev/test": "true"}))
    )
    # The ServiceAccount controller creates `default` asynchronously; pods need it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except client.ApiException:
            time.sleep(0.2)
    yield name
    with contextlib.suppress(client.ApiException):
        core.delete_namespace(name)


def apply_crds(kube: client.ApiClient, directory: Path = ROOT / "crds") -> list[str]:
    """Create or update every CRD in `directory`, then wait until each is Established."""
    ext = client.ApiextensionsV1Api(kube)
    names: list[str] = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            name = doc["metadata"]["name"]
            names.append(name)
            try:
                current = ext.read_custom_resource_definition(name)
                doc["metadata"]["resourceVersion"] = current.metadata.resource_version
                ext.replace_custom_resource_definition(name, doc)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
                ext.create_custom_resource_definition(doc)
    for name in names:
        wait_for(lambda n=name: _established(ext, n), timeout=60, what=f"CRD {name} Established")
    return names


def _established(ext: client.ApiextensionsV1Api, name: str) -> bool:
    crd = ext.read_custom_resource_definition(name)
    conditions = (crd.status and crd.status.conditions) or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


@pytest.fixture(scope="session")
def crds_installed(kube: client.ApiClient) -> list[str]:
    """The project's CRDs, installed on the test cluster and Established."""
    return apply_crds(kube)


def wait_for(
    predicate: Callable[[], Any], *, timeout: float = 30, interval: float = 0.2, what: str = "condition"
) -> Any:
    """Poll until `predicate` returns something truthy; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
        except client.ApiException as exc:
            last_error = exc
            result = None
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f": {last_error}" if last_error else "")
    )


def gpu_node_manifest(
    name: str,
    *,
    gpus: int,
    gpu: str = "L4",
    instance_type: str = "g6.xlarge",
    region: str = "us-east-1",
    zone: str = "us-east-1a",
    labels: dict[str, str] | None = None,
    provider_id: str | None = None,
) -> dict[str, Any]:
    """A fake GPU Node that KWOK plays the kubelet for, shaped like a real cloud GPU node."""
    capacity = {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "node.kubernetes.io/instance-type": instance_type,
                "topology.kubernetes.io/region": region,
                "topology.kubernetes.io/zone": zone,
                "gpupool.dev/gpu": gpu,
                **(labels or {}),
            },
        },
        "spec": {
            "providerID": provider_id or f"kwok://{name}",
            "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}],
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }


@pytest.fixture
def gpu_nodes(kube: client.ApiClient) -> Iterator[Callable[..., str]]:
    """Adds fake GPU nodes for one test (see gpu_node_manifest); removes them after."""
    core = client.CoreV1Api(kube)
    created: list[str] = []

    def add(**kwargs: Any) -> str:
        name = kwargs.pop("name", None) or f"gpu-{uuid.uuid4().hex[:8]}"
        core.create_node(gpu_node_manifest(name, **kwargs))
        created.append(name)
        return name

    yield add
    for name in created:
        with contextlib.suppress(client.ApiException):
            core.delete_node(name)
