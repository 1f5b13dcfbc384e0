"""`helm install` of the chart into the real API server: every object is accepted, pods run.

The release goes into a fresh namespace labelled to enforce Pod Security "restricted", so the
API server's own PodSecurity admission refuses any pod of the chart that does not meet it: the
operator pod is created by the ReplicaSet controller and goes Running on a KWOK node only if it
passes. One install uses the defaults, one turns on every option at once (two replicas with
leader election, simcloud, ServiceMonitor, dashboard). The ServiceMonitor CRD is not part of this cluster, so a minimal one is
added for that test (prometheus-operator installs the real one in a user's cluster).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.cluster

CHART = ROOT / "charts" / "gpupool-operator"


def helm_binary() -> str:
    found = shutil.which("helm")
    if found:
        return found
    out = subprocess.run(
        [str(ROOT / "tests" / "cluster" / "env.sh"), "bin"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return str(Path(out) / "helm")


@dataclass
class Release:
    name: str
    namespace: str
    kubeconfig: str
    notes: str

    @property
    def fullname(self) -> str:
        return f"{self.name}-gpupool-operator"


def helm(kubeconfig: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [helm_binary(), "--kubeconfig", kubeconfig, *args], capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def helm_install(
    kubeconfig: str, name: str, namespace: str, sets: list[str], *, wait: bool = True
) -> Release:
    """Install the chart; with `wait`, until its pods are Ready (needs a schedulable node)."""
    flags = [flag for s in sets for flag in ("--set", s)]
    if wait:
        flags += ["--wait", "--timeout", "120s"]
    result = helm(kubeconfig, "install", name, str(CHART), "-n", namespace, *flags)
    return Release(name=name, namespace=namespace, kubeconfig=kubeconfig, notes=result.stdout)


def helm_uninstall(release: Release) -> None:
    helm(release.kubeconfig, "uninstall", release.name, "-n", release.namespace, "--wait", check=False)


@pytest.fixture
def restricted_namespace(kube: client.ApiClient, namespace: str) -> str:
    """The test's namespace, enforcing Pod Security "restricted" (the API server refuses other pods)."""
    core = client.CoreV1Api(kube)
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    labels |= {
        f"pod-security.kubernetes.io/{mode}-version": "latest" for mode in ("enforce", "warn", "audit")
    }
    core.patch_namespace(namespace, {"metadata": {"labels": labels}})
    return namespace


@pytest.fixture
def plain_node(kube: client.ApiClient) -> Iterator[str]:
    """An untainted KWOK node for the chart's own pods (the GPU nodes are tainted)."""
    core = client.CoreV1Api(kube)
    name = f"chart-{uuid.uuid4().hex[:8]}"
    capacity = {"cpu": "8", "memory": "16Gi", "pods": "110"}
    core.create_node(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"},
            },
            "status": {"capacity": capacity, "allocatable": capacity},
        }
    )
    yield name
    with contextlib.suppress(client.ApiException):
        core.delete_node(name)


@pytest.fixture
def release_factory(kubeconfig: str) -> Iterator[Callable[..., Release]]:
    made: list[Release] = []

    def install(namespace: str, sets: list[str]) -> Release:
        release = helm_install(kubeconfig, f"gp{uuid.uuid4().hex[:6]}", namespace, sets)
        made.append(release)
        return release

    yield install
    for release in made:
        helm_uninstall(release)


def _running_ready(core: client.CoreV1Api, namespace: str, selector: str, count: int) -> bool:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    ready = [
        p
        for p in pods
        if p.status.phase == "Running"
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    return len(ready) == count


def _refused_pods(core: client.CoreV1Api, namespace: str) -> list[str]:
    events = core.list_namespaced_event(namespace).items
    return [
        e.message
        for e in events
        if e.reason == "FailedCreate" and "violates PodSecurity" in (e.message or "")
    ]


def test_default_install_is_accepted_and_the_operator_pod_runs_restricted(
    kube: client.ApiClient,
    restricted_namespace: str,
    plain_node: str,
    release_factory: Callable[..., Release],
) -> None:
    ns = restricted_namespace
    release = release_factory(ns, [f"credentials.namespace={ns}"])
    core = client.CoreV1Api(kube)
    selector = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=operator"
    wait_for(
        lambda: _running_ready(core, ns, selector, 1) or _refused_pods(core, ns),
        timeout=90,
        what="operator pod Running",
    )
    assert not _refused_pods(core, ns), _refused_pods(core, ns)
    (pod,) = core.list_namespaced_pod(ns, label_selector=selector).items
    assert pod.spec.node_name == plain_node
    assert pod.spec.service_account_name == release.fullname
    # Every object the chart rendered exists in the API server.
    manifest = helm(release.kubeconfig, "get", "manifest", release.name, "-n", ns).stdout
    kinds = sorted(line.split(": ", 1)[1] for line in manifest.splitlines() if line.startswith("kind: "))
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            # Leader election through a Lease (on by default).
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
        ]
    )
    rbac = client.RbacAuthorizationV1Api(kube)
    for suffix in ("read", "write"):
        assert rbac.read_cluster_role(f"{release.fullname}-{suffix}").rules
    assert rbac.read_namespaced_role(f"{release.fullname}-credentials", ns).rules[0].resources == ["secrets"]
    # The metrics Service selects the operator pod.
    endpoints = wait_for(
        lambda: [
            s
            for s in client.DiscoveryV1Api(kube)
            .list_namespaced_endpoint_slice(
                ns, label_selector=f"kubernetes.io/service-name={release.fullname}-metrics"
            )
            .items
            if s.endpoints
        ],
        timeout=30,
        what="metrics Service endpoints",
    )
    assert endpoints[0].ports[0].port == 8080
    # The CRDs came with the chart and are served.
    ext = client.ApiextensionsV1Api(kube)
    for plural in ("gpuproviders", "gpupools", "gpunodeclaims", "modeldeployments"):
        assert ext.read_custom_resource_definition(f"{plural}.gpupool.dev").spec.group == "gpupool.dev"
    assert "What to apply next" in release.notes and "GpuPool" in release.notes


SERVICE_MONITOR_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {
            "kind": "ServiceMonitor",
            "plural": "servicemonitors",
            "singular": "servicemonitor",
            "listKind": "ServiceMonitorList",
        },
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}


@pytest.fixture
def service_monitor_crd(kube: client.ApiClient) -> str:
    ext = client.ApiextensionsV1Api(kube)
    with contextlib.suppress(client.ApiException):
        ext.create_custom_resource_definition(SERVICE_MONITOR_CRD)

    def established() -> bool:
        crd = ext.read_custom_resource_definition("servicemonitors.monitoring.coreos.com")
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_for(established, timeout=30, what="ServiceMonitor CRD")
    return "servicemonitors.monitoring.coreos.com"


def test_every_option_at_once_is_accepted(
    kube: client.ApiClient,
    restricted_namespace: str,
    plain_node: str,
    service_monitor_crd: str,
    release_factory: Callable[..., Release],
) -> None:
    ns = restricted_namespace
    provider = f"sim-{uuid.uuid4().hex[:6]}"
    release = release_factory(
        ns,
        [
            f"credentials.namespace={ns}",
            "replicaCount=2",
            "leaderElection.enabled=true",
            "simcloud.enabled=true",
            f"simcloud.providerName={provider}",
            "metrics.serviceMonitor.enabled=true",
            "grafana.dashboard.enabled=true",
            "logLevel=debug",
        ],
    )
    core = client.CoreV1Api(kube)
    custom = client.CustomObjectsApi(kube)
    try:
        op = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=operator"
        sim = f"app.kubernetes.io/instance={release.name},app.kubernetes.io/component=simcloud"
        wait_for(
            lambda: _running_ready(core, ns, op, 2) or _refused_pods(core, ns),
            timeout=90,
            what="2 operator pods",
        )
        wait_for(
            lambda: _running_ready(core, ns, sim, 1) or _refused_pods(core, ns),
            timeout=90,
            what="simcloud pod",
        )
        assert not _refused_pods(core, ns), _refused_pods(core, ns)
        # The replicas elect a leader through a Lease in the release namespace (the pods are KWOK's,
        # so nothing runs to create it here): the Role that lets them is installed.
        rules = (
            client.RbacAuthorizationV1Api(kube)
            .read_namespaced_role(f"{release.fullname}-leader-election", ns)
            .rules
        )
        assert any("leases" in (rule.resources or []) for rule in rules)
        monitor = custom.get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", ns, "servicemonitors", release.fullname
        )
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
        dashboard = core.read_namespaced_config_map(f"{release.fullname}-dashboard", ns)
        assert dashboard.metadata.labels["grafana_dashboard"] == "1"
        assert json.loads(dashboard.data["gpupool.json"])["panels"]
        gp = custom.get_cluster_custom_object("gpupool.dev", "v1alpha1", "gpuproviders", provider)
        assert gp["spec"]["endpoint"] == f"http://{release.fullname}-simcloud.{ns}.svc:8788"
        assert f"{provider}" in release.notes
    finally:
        # The GpuProvider is cluster-scoped and no operator runs here to remove a finalizer.
        with contextlib.suppress(client.ApiException):
            custom.delete_cluster_custom_object("gpupool.dev", "v1alpha1", "gpuproviders", provider)


def test_invalid_values_are_refused_at_install_with_a_message(kubeconfig: str, namespace: str) -> None:
    result = helm(
        kubeconfig, "install", "gpbad", str(CHART), "-n", namespace,
        "--set", "replicaCount=3", "--set", "leaderElection.enabled=false", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert "/leaderElection/enabled" in result.stderr
    # Nothing was created.
    assert helm(kubeconfig, "status", "gpbad", "-n", namespace, check=False).returncode != 0
