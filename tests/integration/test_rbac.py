"""The operator runs the end-to-end scenario with exactly the chart's RBAC, and no more.

The chart is installed (its operator Deployment scaled to 0), a token is requested for its
ServiceAccount, and `gpupool run` is started as a local process from a kubeconfig holding only
that token: every call it makes is authorized by the chart's ClusterRoles and Role, as in a
real install. simcloud runs the same way as the chart's simcloud ServiceAccount. The scenario
goes from a GpuProvider, a GpuPool and a ModelDeployment to a Ready model on a launched node,
and back down to nothing (deletes, drain, node removal, provider finalizer), so a missing
verb anywhere in the lifecycle shows up as a Forbidden in the operator's log, which fails the
test and names the request. While the model is Ready, the operator's /metrics endpoint is
scraped and must show every series docs/metrics.md documents, with plausible values.

`kubectl auth can-i`, run as the same ServiceAccount, shows what it must NOT be able to do:
read Secrets outside the credentials namespace, write the user's objects beyond status and
finalizers, or touch workloads it does not render.

The operator is cluster-wide, so two operators on one cluster would fight over the same
cluster-scoped objects: while the scenario runs, the session's shared operator of the
end-to-end tests (tests/integration/conftest.py, fixture `operator`) is stopped, and started
again after. No other gpupool operator may run against the cluster meanwhile.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from tests.conftest import ROOT, wait_for
from tests.integration.test_chart_install import Release, helm_binary, helm_install, helm_uninstall

pytestmark = pytest.mark.cluster

GROUP, VERSION = "gpupool.dev", "v1alpha1"
# How the API server words an RBAC refusal ('User "system:serviceaccount:..." cannot list resource
# "pods" in API group ...'). Other 403s (a namespace being deleted refuses new pods) are not RBAC.
FORBIDDEN = re.compile(r'cannot [a-z]+ resource \\?"')  # the quote is escaped inside a JSON body


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_account_kubeconfig(
    kube: client.ApiClient, admin_kubeconfig: str, namespace: str, account: str, path: Path
) -> Path:
    """A kubeconfig that authenticates as `namespace/account` with a fresh bound token, and nothing else."""
    token = (
        client.CoreV1Api(kube)
        .create_namespaced_service_account_token(
            account,
            namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
            ),
        )
        .status.token
    )
    admin = yaml.safe_load(Path(admin_kubeconfig).read_text())
    context = next(c for c in admin["contexts"] if c["name"] == admin["current-context"])["context"]
    cluster = dict(next(c for c in admin["clusters"] if c["name"] == context["cluster"])["cluster"])
    ca = cluster.pop("certificate-authority", None)
    if ca:
        cluster["certificate-authority-data"] = base64.b64encode(Path(ca).read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "test", "user": account}}],
        "current-context": account,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@dataclass
class Process:
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def forbidden_lines(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if FORBIDDEN.search(line)]

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


@pytest.fixture(scope="module")
def rbac_namespace(kube: client.ApiClient) -> Iterator[str]:
    """The release's namespace, also the credentials namespace, for the whole module."""
    core = client.CoreV1Api(kube)
    name = f"gp-rbac-{uuid.uuid4().hex[:8]}"
    core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"gpupool.dev/test": "true"}))
    )
    wait_for(lambda: core.read_namespaced_service_account("default", name), timeout=30, what="default SA")
    yield name
    with contextlib.suppress(client.ApiException):
        core.delete_namespace(name)


@pytest.fixture(scope="module")
def chart_rbac(kubeconfig: str, rbac_namespace: str) -> Iterator[Release]:
    """The chart, installed with its RBAC and simcloud's, the operator Deployment at 0 replicas."""
    release = helm_install(
        kubeconfig,
        f"gp{uuid.uuid4().hex[:6]}",
        rbac_namespace,
        [
            f"credentials.namespace={rbac_namespace}",
            "replicaCount=0",
            "simcloud.enabled=true",
            "simcloud.createProvider=false",
        ],
        wait=False,
    )
    # Not --wait: simcloud's pod may find no untainted node here; its RBAC is all this test needs.
    yield release
    helm_uninstall(release)


@pytest.fixture(scope="module")
def shared_operator_paused(request: pytest.FixtureRequest) -> Iterator[None]:
    """Stop the end-to-end tests' shared operator (if that fixture exists) while ours runs."""
    try:
        shared: Any = request.getfixturevalue("operator")
    except Exception:  # no such fixture, or it could not start: nothing runs that could interfere
        yield
        return
    shared.stop()
    try:
        yield
    finally:
        shared.start()


def operator_env(kubeconfig: Path, cluster_name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    env |= {
        "KUBECONFIG": str(kubeconfig),
        "GPUPOOL_CLUSTER_NAME": cluster_name,
        "GPUPOOL_GC_INTERVAL_SECONDS": "5",
        "GPUPOOL_GC_GRACE_SECONDS": "5",
        "PYTHONUNBUFFERED": "1",
    }
    return env


def can_i(kubeconfig: Path, *args: str) -> bool:
    kubectl = Path(helm_binary()).parent / "kubectl"
    result = subprocess.run(
        [str(kubectl), "--kubeconfig", str(kubeconfig), "auth", "can-i", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), f"kubectl auth can-i {' '.join(args)}: {result.stdout} {result.stderr}"
    return answer == "yes"


def test_service_account_can_do_only_what_the_operator_needs(
    kube: client.ApiClient, kubeconfig: str, rbac_namespace: str, chart_rbac: Release, tmp_path: Path
) -> None:
    namespace = rbac_namespace
    sa = service_account_kubeconfig(
        kube, kubeconfig, namespace, chart_rbac.fullname, tmp_path / "sa.kubeconfig"
    )
    other = "default"
    # Secrets: only `get`, only in the credentials namespace.
    assert can_i(sa, "get", "secrets", "-n", namespace)
    assert not can_i(sa, "get", "secrets", "--all-namespaces")
    assert not can_i(sa, "get", "secrets", "-n", other)
    assert not can_i(sa, "get", "secrets", "-n", "kube-system")
    assert not can_i(sa, "list", "secrets", "-n", namespace)
    assert not can_i(sa, "watch", "secrets", "-n", namespace)
    assert not can_i(sa, "create", "secrets", "-n", namespace)
    # The user's objects: read, and patch (status, kopf's finalizer); never create or delete.
    for kind in ("gpuproviders", "gpupools", "modeldeployments"):
        resource = f"{kind}.{GROUP}"
        assert can_i(sa, "list", resource, "-A") and can_i(sa, "patch", resource, "-A")
        assert can_i(sa, "patch", resource, "--subresource=status", "-A")
        assert not can_i(sa, "create", resource, "-A")
        assert not can_i(sa, "delete", resource, "-A")
        assert not can_i(sa, "update", resource, "-A")
    # Its own claims: the full lifecycle.
    for verb in ("create", "patch", "delete", "watch"):
        assert can_i(sa, verb, f"gpunodeclaims.{GROUP}")
    # Nodes: patch (labels, taints, cordon) and delete; never create (the node's kubelet does).
    assert can_i(sa, "patch", "nodes") and can_i(sa, "delete", "nodes")
    assert not can_i(sa, "create", "nodes")
    assert not can_i(sa, "update", "nodes")
    # Pods: read and evict (which honours budgets), never delete or create directly.
    assert can_i(sa, "create", "pods", "--subresource=eviction", "-n", other)
    assert not can_i(sa, "delete", "pods", "-n", other)
    assert not can_i(sa, "create", "pods", "-n", other)
    assert not can_i(sa, "create", "pods", "--subresource=exec", "-n", other)
    # What it renders: create and apply, never delete (owner references do that) or update.
    for resource in ("deployments.apps", "services", "poddisruptionbudgets.policy"):
        assert can_i(sa, "patch", resource, "-n", other)
        assert not can_i(sa, "delete", resource, "-n", other)
    # Things it never touches.
    for verb, resource in [
        ("get", "configmaps"),
        ("create", "statefulsets.apps"),
        ("delete", "namespaces"),
        ("create", "serviceaccounts"),
        ("create", "serviceaccounts/token"),
        ("patch", "clusterroles.rbac.authorization.k8s.io"),
        ("create", "rolebindings.rbac.authorization.k8s.io"),
        ("impersonate", "serviceaccounts"),
        ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
        ("delete", "events"),
    ]:
        assert not can_i(sa, verb, resource, "-A"), f"can {verb} {resource}"
    # simcloud's account writes Nodes and reads nothing.
    sim = service_account_kubeconfig(
        kube, kubeconfig, namespace, f"{chart_rbac.fullname}-simcloud", tmp_path / "sim.kubeconfig"
    )
    assert can_i(sim, "create", "nodes") and can_i(sim, "delete", "nodes")
    assert not can_i(sim, "get", "secrets", "-A")
    assert not can_i(sim, "patch", f"gpunodeclaims.{GROUP}")


def _md_ready(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any] | None:
    md = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", name)
    status = md.get("status") or {}
    return md if status.get("readyReplicas", 0) >= 1 else None


def _gone(fn: Any, *args: Any) -> bool:
    try:
        fn(*args)
    except client.ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def missing_series(text: str, provider: str, pool: str, namespace: str, model: str) -> list[str]:
    """What docs/metrics.md promises a scrape shows once a model is Ready, and is not there."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]

    def value(name: str, **labels: str) -> float | None:
        for sample in samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return float(sample.value)
        return None

    model_labels = {"namespace": namespace, "modeldeployment": model}
    wanted: list[tuple[str, dict[str, str], Callable[[float], bool]]] = [
        ("gpupool_build_info", {}, lambda v: v == 1),
        ("gpupool_reconcile_total", {"controller": "pool", "result": "success"}, lambda v: v > 0),
        ("gpupool_reconcile_total", {"controller": "modeldeployment", "result": "success"}, lambda v: v > 0),
        ("gpupool_reconcile_total", {"controller": "nodeclaim", "result": "success"}, lambda v: v > 0),
        ("gpupool_reconcile_total", {"controller": "provider", "result": "success"}, lambda v: v > 0),
        ("gpupool_reconcile_duration_seconds_count", {"controller": "pool"}, lambda v: v > 0),
        ("gpupool_provider_requests_total", {"provider": provider, "operation": "list_offers", "result": "success"}, lambda v: v > 0),
        ("gpupool_provider_requests_total", {"provider": provider, "operation": "create", "result": "success"}, lambda v: v >= 1),
        ("gpupool_provider_request_duration_seconds_count", {"provider": provider, "operation": "create"}, lambda v: v >= 1),
        ("gpupool_provider_offers", {"provider": provider}, lambda v: v > 0),
        ("gpupool_nodeclaims", {"phase": "Ready"}, lambda v: v >= 1),
        ("gpupool_nodeclaims", {"phase": "Failed"}, lambda v: v >= 0),
        ("gpupool_nodeclaim_launch_to_ready_seconds_count", {"provider": provider}, lambda v: v >= 1),
        ("gpupool_pool_gpus", {"pool": pool, "state": "allocated"}, lambda v: v >= 1),
        ("gpupool_pool_gpus", {"pool": pool, "state": "idle"}, lambda v: v >= 0),
        ("gpupool_pool_cost_usd_per_hour", {"pool": pool}, lambda v: v > 0),
        ("gpupool_modeldeployment_cost_usd_per_hour", model_labels, lambda v: v > 0),
        ("gpupool_modeldeployment_replicas", model_labels, lambda v: v == 1),
        ("gpupool_modeldeployment_ready_replicas", model_labels, lambda v: v == 1),
    ]  # fmt: skip
    problems = []
    for name, labels, ok in wanted:
        got = value(name, **labels)
        if got is None or not ok(got):
            problems.append(f"{name}{labels} = {got}")
    return problems


@dataclass
class Scenario:
    """What one run of the scenario left behind: how far it got, and both processes' logs."""

    operator: Process
    simcloud: Process
    error: str | None
    metrics_problems: list[str] = field(default_factory=list)

    def forbidden(self, process: Process) -> list[str]:
        return process.forbidden_lines()


# kopf watches CustomResourceDefinitions to notice CRDs added at runtime unless
# settings.scanning.disabled is set (handlers.configure sets it): the chart grants no CRD access,
# since the CRDs come with the chart. Such refusals would be that setting lost, checked on its own.
CRD_OBSERVATION = "customresourcedefinitions"


@pytest.fixture(scope="module")
def scenario(
    kube: client.ApiClient,
    kubeconfig: str,
    rbac_namespace: str,
    chart_rbac: Release,
    shared_operator_paused: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Scenario]:
    """Provider, pool and ModelDeployment up to a Ready model, then everything deleted again."""
    tmp_path = tmp_path_factory.mktemp("rbac")
    namespace = rbac_namespace
    core = client.CoreV1Api(kube)
    custom = client.CustomObjectsApi(kube)
    tag = uuid.uuid4().hex[:6]
    provider, pool, model = f"sim-{tag}", f"pool-{tag}", f"llama-{tag}"

    sim_kc = service_account_kubeconfig(
        kube, kubeconfig, namespace, f"{chart_rbac.fullname}-simcloud", tmp_path / "sim.kubeconfig"
    )
    sim_port = _free_port()
    simcloud = Process(
        [sys.executable, "-m", "simcloud", "--port", str(sim_port), "--db", str(tmp_path / "sim.sqlite"),
         "--kubeconfig", str(sim_kc), "--boot-delay", "1", "--tick", "0.2", "--regions", "lambda-us-east-1"],
        {**os.environ, "PYTHONUNBUFFERED": "1"},
        tmp_path / "simcloud.log",
    )  # fmt: skip
    op_kc = service_account_kubeconfig(
        kube, kubeconfig, namespace, chart_rbac.fullname, tmp_path / "op.kubeconfig"
    )
    metrics_port = _free_port()
    # With leader election on, as the chart runs it: the Lease's RBAC is part of the scenario.
    operator = Process(
        [sys.executable, "-m", "gpupool", "run", "--liveness-port", "0", "--metrics-port", str(metrics_port)],
        operator_env(op_kc, f"rbac-{tag}")
        | {"GPUPOOL_LEADER_ELECT": "true", "GPUPOOL_LEASE_NAMESPACE": namespace,
           "GPUPOOL_LEASE_NAME": chart_rbac.fullname, "POD_NAME": f"rbac-{tag}"},
        tmp_path / "operator.log",
    )  # fmt: skip

    def report() -> str:
        return (
            "\n--- forbidden (operator) ---\n" + "\n".join(x for x in operator.forbidden_lines() if CRD_OBSERVATION not in x)
            + "\n--- forbidden (simcloud) ---\n" + "\n".join(simcloud.forbidden_lines())
            + f"\n--- operator log tail ---\n{operator.tail()}"
        )  # fmt: skip

    def simcloud_healthy() -> bool:
        assert simcloud.alive(), simcloud.tail()
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(f"http://127.0.0.1:{sim_port}/healthz", timeout=1).status_code == 200
        return False

    error: str | None = None
    metrics_problems: list[str] = ["the scenario did not reach a Ready model"]
    simcloud.start()
    operator.start()
    try:
        wait_for(simcloud_healthy, timeout=30, what="simcloud /healthz")
        custom.create_cluster_custom_object(
            GROUP, VERSION, "gpuproviders",
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuProvider", "metadata": {"name": provider},
             "spec": {"type": "sim", "endpoint": f"http://127.0.0.1:{sim_port}", "refreshInterval": "30s"}},
        )  # fmt: skip
        custom.create_cluster_custom_object(
            GROUP, VERSION, "gpupools",
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuPool", "metadata": {"name": pool},
             "spec": {"providers": [provider], "capacityTypes": ["on-demand"],
                      "limits": {"maxNodes": 2, "maxHourlyCost": 50},
                      "disruption": {"consolidateAfter": "5s", "launchTimeout": "2m"}}},
        )  # fmt: skip
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, "modeldeployments",
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": model},
             "spec": {"model": "meta-llama/Llama-3.1-8B-Instruct", "pool": pool, "replicas": 1,
                      "engine": {"maxModelLen": 8192}}},
        )  # fmt: skip

        # Up: provider refreshed, claim launched, Node Ready, vLLM pod Running, model Ready.
        md = wait_for(
            lambda: operator.alive() and _md_ready(custom, namespace, model),
            timeout=240,
            what="ModelDeployment Ready",
        )

        # The pod can run on the new Node a moment before the claim's next reconcile records it.
        def claims_with_a_ready_one() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = custom.list_cluster_custom_object(
                GROUP, VERSION, "gpunodeclaims", label_selector=f"gpupool.dev/pool={pool}"
            )["items"]
            return items if any((c.get("status") or {}).get("phase") == "Ready" for c in items) else []

        claims = wait_for(claims_with_a_ready_one, timeout=30, what="a Ready GpuNodeClaim")
        assert md["status"].get("endpoint"), md["status"]
        gp = custom.get_cluster_custom_object(GROUP, VERSION, "gpuproviders", provider)
        assert (gp.get("status") or {}).get("offers", 0) > 0, gp.get("status")
        nodes = [c["status"]["nodeName"] for c in claims if (c.get("status") or {}).get("nodeName")]

        # While the model is Ready, the endpoint shows every documented series with values.
        def scrape_missing() -> list[str]:
            try:
                text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
            except httpx.HTTPError as exc:
                return [f"scrape failed: {exc}"]
            return missing_series(text, provider, pool, namespace, model)

        with contextlib.suppress(AssertionError):
            wait_for(lambda: not scrape_missing(), timeout=30, what="documented series")
        metrics_problems = scrape_missing()

        # Down, pool first: its claims drain their nodes while the model's pod still runs there
        # (cordon, taint, eviction through the PDB), terminate the instances, remove the Nodes.
        custom.delete_cluster_custom_object(GROUP, VERSION, "gpupools", pool)
        wait_for(
            lambda: (
                not custom.list_cluster_custom_object(
                    GROUP, VERSION, "gpunodeclaims", label_selector=f"gpupool.dev/pool={pool}"
                )["items"]
            ),
            timeout=120,
            what="claims terminated",
        )
        for node in nodes:
            wait_for(lambda n=node: _gone(core.read_node, n), timeout=60, what=f"Node {node} removed")
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", model)
        wait_for(
            lambda: _gone(
                custom.get_namespaced_custom_object, GROUP, VERSION, namespace, "modeldeployments", model
            ),
            timeout=60,
            what="ModelDeployment deleted",
        )
        custom.delete_cluster_custom_object(GROUP, VERSION, "gpuproviders", provider)
        wait_for(
            lambda: _gone(custom.get_cluster_custom_object, GROUP, VERSION, "gpuproviders", provider),
            timeout=60,
            what="provider deleted",
        )
        assert operator.alive(), "the operator exited"
    except AssertionError as failed:
        error = f"{failed}{report()}"
    finally:
        operator.stop()
        simcloud.stop()
        _cleanup(custom, core, namespace, model, pool, provider)
    yield Scenario(operator=operator, simcloud=simcloud, error=error, metrics_problems=metrics_problems)


def test_scenario_completes_as_the_chart_service_account(scenario: Scenario) -> None:
    assert scenario.error is None, scenario.error


def test_operator_needs_no_permission_the_chart_lacks(scenario: Scenario) -> None:
    refused = [line for line in scenario.operator.forbidden_lines() if CRD_OBSERVATION not in line]
    assert not refused, "the chart's RBAC is missing a permission:\n" + "\n".join(refused)


def test_simcloud_needs_no_permission_the_chart_lacks(scenario: Scenario) -> None:
    refused = scenario.simcloud.forbidden_lines()
    assert not refused, "simcloud's RBAC is missing a permission:\n" + "\n".join(refused)


def test_metrics_endpoint_serves_the_documented_series(scenario: Scenario) -> None:
    assert scenario.error is None, "scenario failed; see test_scenario_completes_as_the_chart_service_account"
    assert not scenario.metrics_problems, "missing or wrong on /metrics:\n" + "\n".join(
        scenario.metrics_problems
    )


def test_kopf_does_not_try_to_watch_crds(scenario: Scenario) -> None:
    refused = [line for line in scenario.operator.forbidden_lines() if CRD_OBSERVATION in line]
    assert not refused, "\n".join(refused[:3])


def _cleanup(
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    model: str,
    pool: str,
    provider: str,
) -> None:
    """Leave nothing behind if the test failed midway: drop finalizers the stopped operator would have removed."""
    strip = {"metadata": {"finalizers": None}}
    with contextlib.suppress(client.ApiException):
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", model, strip)
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", model)
    claims: list[dict[str, Any]] = []
    with contextlib.suppress(client.ApiException):
        claims = custom.list_cluster_custom_object(
            GROUP, VERSION, "gpunodeclaims", label_selector=f"gpupool.dev/pool={pool}"
        )["items"]
    for claim in claims:
        name = claim["metadata"]["name"]
        with contextlib.suppress(client.ApiException):
            custom.patch_cluster_custom_object(GROUP, VERSION, "gpunodeclaims", name, strip)
            custom.delete_cluster_custom_object(GROUP, VERSION, "gpunodeclaims", name)
        node = (claim.get("status") or {}).get("nodeName")
        if node:
            with contextlib.suppress(client.ApiException):
                core.delete_node(node)
    for plural, name in (("gpupools", pool), ("gpuproviders", provider)):
        with contextlib.suppress(client.ApiException):
            custom.patch_cluster_custom_object(GROUP, VERSION, plural, name, strip)
            custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)


@dataclass
class Elected:
    """Two replicas started with the chart's RBAC and leader election on, and the release's Lease."""

    replicas: dict[str, Process]
    release: Release
    namespace: str
    cluster_name: str

    def holder(self, kube: client.ApiClient) -> str | None:
        lease = client.CoordinationV1Api(kube).read_namespaced_lease(self.release.fullname, self.namespace)
        return lease.spec.holder_identity if lease.spec else None


@pytest.fixture(scope="module")
def elected(
    kube: client.ApiClient,
    kubeconfig: str,
    rbac_namespace: str,
    shared_operator_paused: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Elected]:
    """A release with leader election (the default), two replicas run as its account."""
    tmp_path = tmp_path_factory.mktemp("elected")
    release = helm_install(
        kubeconfig,
        f"gp{uuid.uuid4().hex[:6]}",
        rbac_namespace,
        [f"credentials.namespace={rbac_namespace}", "replicaCount=0"],
        wait=False,
    )
    cluster_name = f"ha-{uuid.uuid4().hex[:6]}"
    replicas: dict[str, Process] = {}
    try:
        kc = service_account_kubeconfig(
            kube, kubeconfig, rbac_namespace, release.fullname, tmp_path / "op.kubeconfig"
        )
        for name in ("replica-a", "replica-b"):
            env = operator_env(kc, cluster_name) | {
                "POD_NAME": name,
                "GPUPOOL_LEADER_ELECT": "true",
                "GPUPOOL_LEASE_NAMESPACE": rbac_namespace,
                "GPUPOOL_LEASE_NAME": release.fullname,
            }
            replica = Process(
                [sys.executable, "-m", "gpupool", "run", "--liveness-port", "0", "--metrics-port", "0"],
                env,
                tmp_path / f"{name}.log",
            )
            replica.start()
            replicas[name] = replica
        yield Elected(replicas=replicas, release=release, namespace=rbac_namespace, cluster_name=cluster_name)
    finally:
        for replica in replicas.values():
            replica.stop()
        helm_uninstall(release)


def _leader(elected: Elected, kube: client.ApiClient) -> str:
    holder: str = wait_for(
        lambda: elected.holder(kube) in elected.replicas and elected.holder(kube),
        timeout=60,
        what="a replica holding the Lease",
    )
    return holder


def test_one_replica_holds_the_lease_and_only_it_acts(elected: Elected, kube: client.ApiClient) -> None:
    leader = _leader(elected, kube)
    standby = next(name for name in elected.replicas if name != leader)
    wait_for(
        lambda: "became the leader" in elected.replicas[leader].log.read_text(), timeout=30, what="leader log"
    )
    wait_for(
        lambda: "waiting to become the leader" in elected.replicas[standby].log.read_text(),
        timeout=30,
        what="the standby waiting for the Lease",
    )
    standby_log = elected.replicas[standby].log.read_text()
    assert "became the leader" not in standby_log
    # The standby runs no kopf at all: no watch, no handler, nothing that could act.
    assert "kopf" not in standby_log, elected.replicas[standby].tail()
    for name, replica in elected.replicas.items():
        assert replica.alive(), f"{name} exited:\n{replica.tail()}"
        refused = [line for line in replica.forbidden_lines() if CRD_OBSERVATION not in line]
        assert not refused, f"{name}: the chart's RBAC lacks a permission:\n" + "\n".join(refused)


def test_a_burst_of_50_pods_is_launched_once_with_two_replicas(
    elected: Elected, kube: client.ApiClient, simcloud: Any
) -> None:
    from tests.integration.conftest import gpu_deployment, ready_pods

    leader = _leader(elected, kube)
    standby = next(name for name in elected.replicas if name != leader)
    custom, apps, core = client.CustomObjectsApi(kube), client.AppsV1Api(kube), client.CoreV1Api(kube)
    tag = uuid.uuid4().hex[:6]
    provider, pool, app = f"ha-sim-{tag}", f"ha-pool-{tag}", f"burst-{tag}"
    namespace = elected.namespace
    custom.create_cluster_custom_object(
        GROUP, VERSION, "gpuproviders",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuProvider", "metadata": {"name": provider},
         "spec": {"type": "sim", "endpoint": simcloud.url, "refreshInterval": "30s"}},
    )  # fmt: skip
    custom.create_cluster_custom_object(
        GROUP, VERSION, "gpupools",
        {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuPool", "metadata": {"name": pool},
         "spec": {"providers": [provider], "disruption": {"consolidateAfter": "10m"}}},
    )  # fmt: skip
    try:
        apps.create_namespaced_deployment(namespace, gpu_deployment(app, pool, gpus=1, replicas=50))
        wait_for(
            lambda: len(ready_pods(core, namespace, f"app={app}")) == 50,
            timeout=240,
            what="50 pods Running",
        )
        claims = custom.list_cluster_custom_object(
            GROUP, VERSION, "gpunodeclaims", label_selector=f"gpupool.dev/pool={pool}"
        )["items"]
        instances = simcloud.instances(elected.cluster_name)
        uids = [i["tags"].get("gpupool.dev/claim-uid") for i in instances]
        assert len(uids) == len(set(uids)), f"an instance was launched twice for one claim: {uids}"
        assert sorted(uids) == sorted(c["metadata"]["uid"] for c in claims)
        standby_log = elected.replicas[standby].log.read_text()
        assert "Provisioning" not in standby_log and "became the leader" not in standby_log
    finally:
        with contextlib.suppress(client.ApiException):
            apps.delete_namespaced_deployment(app, namespace)
        custom.delete_cluster_custom_object(GROUP, VERSION, "gpupools", pool)
        wait_for(
            lambda: (
                not custom.list_cluster_custom_object(
                    GROUP, VERSION, "gpunodeclaims", label_selector=f"gpupool.dev/pool={pool}"
                )["items"]
            ),
            timeout=180,
            what="the burst's claims terminated",
        )
        custom.delete_cluster_custom_object(GROUP, VERSION, "gpuproviders", provider)


def test_the_standby_takes_over_when_the_leader_is_killed(elected: Elected, kube: client.ApiClient) -> None:
    leader = _leader(elected, kube)
    standby = next(name for name in elected.replicas if name != leader)
    process = elected.replicas[leader].proc
    assert process is not None
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    # The lease runs 15 s from the last renewal; the standby retries every 2 s.
    wait_for(lambda: elected.holder(kube) == standby, timeout=40, what=f"{standby} taking the Lease")
    wait_for(
        lambda: "became the leader" in elected.replicas[standby].log.read_text(),
        timeout=10,
        what="takeover log",
    )
