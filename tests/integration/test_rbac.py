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
        "GPUPOOL_GC_INTERVAL": "5",
        "GPUPOOL_GC_GRACE": "5",
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
    operator = Process(
        [sys.executable, "-m", "gpupool", "run", "--liveness-port", "0", "--metrics-port", str(metrics_port)],
        operator_env(op_kc, f"rbac-{tag}"),
        tmp_path / "operator.log",
    )

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
class Peered:
    """Two replicas started with the chart's peering RBAC: their logs and what they agreed."""

    replicas: list[Process]
    registered: bool
    standby_paused: bool


@pytest.fixture(scope="module")
def peered(
    kube: client.ApiClient,
    kubeconfig: str,
    rbac_namespace: str,
    shared_operator_paused: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Peered]:
    """A release with peering on, and two replicas (priorities 100 and 200) run as its account."""
    tmp_path = tmp_path_factory.mktemp("peering")
    release = helm_install(
        kubeconfig,
        f"gp{uuid.uuid4().hex[:6]}",
        rbac_namespace,
        [f"credentials.namespace={rbac_namespace}", "replicaCount=0", "peering.enabled=true"],
        wait=False,
    )
    replicas: list[Process] = []
    registered = standby_paused = False
    custom = client.CustomObjectsApi(kube)

    def peers() -> dict[str, Any]:
        body = custom.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", release.fullname)
        return dict(body.get("status") or {})

    try:
        kc = service_account_kubeconfig(
            kube, kubeconfig, rbac_namespace, release.fullname, tmp_path / "op.kubeconfig"
        )
        wait_for(lambda: peers() is not None, timeout=30, what="the ClusterKopfPeering object of the release")
        for priority in (100, 200):
            replica = Process(
                [
                    sys.executable,
                    "-m",
                    "gpupool",
                    "run",
                    "--liveness-port",
                    "0",
                    "--metrics-port",
                    "0",
                    "--peering",
                    release.fullname,
                ],
                {**operator_env(kc, f"peer-{priority}"), "GPUPOOL_PEERING_PRIORITY": str(priority)},
                tmp_path / f"replica-{priority}.log",
            )
            replica.start()
            replicas.append(replica)
        with contextlib.suppress(AssertionError):
            registered = bool(
                wait_for(lambda: len(peers()) == 2, timeout=60, what="both replicas registered")
            )
        low = replicas[0]
        with contextlib.suppress(AssertionError):
            standby_paused = bool(
                wait_for(
                    lambda: "Pausing operations in favour of" in low.log.read_text(), timeout=30, what="pause"
                )
            )
        yield Peered(replicas=replicas, registered=registered, standby_paused=standby_paused)
    finally:
        for replica in replicas:
            replica.stop()
        helm_uninstall(release)


def test_peered_replicas_use_the_peering_object_with_the_chart_rbac(peered: Peered) -> None:
    """Both replicas read, watch and patch the ClusterKopfPeering as the chart's account."""
    assert peered.registered, "\n\n".join(r.tail() for r in peered.replicas)
    assert all(r.alive() for r in peered.replicas)
    for replica in peered.replicas:
        refused = [line for line in replica.forbidden_lines() if CRD_OBSERVATION not in line]
        assert not refused, "peering RBAC is missing a permission:\n" + "\n".join(refused)


@pytest.mark.xfail(
    strict=False,
    reason="kopf 1.45 race: now and then the replica that started first never processes the peering "
    "object's events (its worker stays idle; 'Unprocessed streams left' at exit), so it does not pause "
    "for the higher-priority one; seen with bare kopf too (1 of 3 runs)",
)
def test_the_lower_priority_replica_pauses(peered: Peered) -> None:
    low, high = peered.replicas
    assert peered.standby_paused, low.tail()
    assert "Pausing" not in high.log.read_text(), high.tail()
