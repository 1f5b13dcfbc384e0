"""Processes the end-to-end tests run against: the simulated cloud and the operator.

Both are real processes talking HTTP and the Kubernetes API, started once per session
and shared; each test isolates itself by giving its GpuProvider, GpuPool and namespace
names of its own, so tests never see each other's claims or nodes. Tests that need a
misbehaving cloud start a simcloud of their own (`start_simcloud`), and tests that kill
the operator restart the shared one (`OperatorProcess.restart`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from tests.conftest import ROOT, wait_for
from tests.hubserver import HubServer, run_hub_server

GROUP, VERSION = "gpupool.dev", "v1alpha1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimCloud:
    """A simcloud process: its URL, and the admin calls the tests use to make it misbehave."""

    def __init__(
        self, tmp: Path, kubeconfig: str, *, boot_delay: float = 0.0, seed: int = 7, args: Sequence[str] = ()
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"simcloud-{self.port}.log"
        self.db = tmp / f"simcloud-{self.port}.sqlite"
        self._args = [
            sys.executable, "-m", "simcloud", "--port", str(self.port), "--db", str(self.db),
            "--kubeconfig", kubeconfig, "--boot-delay", str(boot_delay), "--seed", str(seed),
            "--tick", "0.2", *args,
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self._args, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for(self._healthy, timeout=30, what=f"simcloud on {self.url}")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def kill(self) -> None:
        """SIGKILL, as when the cloud's control plane dies; `start` brings it back on the same
        port and SQLite file, so it remembers every instance, as a real cloud does."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def fault(self, **rule: Any) -> None:
        httpx.post(f"{self.url}/admin/faults", json=rule, timeout=5).raise_for_status()

    def clear_faults(self) -> None:
        httpx.delete(f"{self.url}/admin/faults", timeout=5).raise_for_status()

    def instances(
        self, cluster: str | None = None, *, include_terminated: bool = False
    ) -> list[dict[str, Any]]:
        params = [("tag", f"gpupool.dev/cluster={cluster}")] if cluster else []
        if include_terminated:
            params.append(("includeTerminated", "true"))
        data: list[dict[str, Any]] = httpx.get(f"{self.url}/v1/instances", params=params, timeout=5).json()[
            "data"
        ]
        return data

    def move_prices(self, factor: float, gpu: str | None = None) -> None:
        body: dict[str, Any] = {"factor": factor, **({"gpu": gpu} if gpu else {})}
        httpx.post(f"{self.url}/admin/prices", json=body, timeout=5).raise_for_status()

    def interrupt(self, instance_id: str) -> None:
        httpx.post(f"{self.url}/admin/instances/{instance_id}/interrupt", timeout=5).raise_for_status()


class OperatorProcess:
    """`gpupool run` as a child process, with its log kept for the test report."""

    def __init__(
        self, tmp: Path, kubeconfig: str, cluster_name: str, extra_env: Mapping[str, str] | None = None
    ) -> None:
        self.cluster_name = cluster_name
        self.log_path = tmp / "operator.log"
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "KUBECONFIG": kubeconfig,
            "GPUPOOL_CLUSTER_NAME": cluster_name,
            # Faster clocks than production, so liveness and garbage collection show in seconds.
            "GPUPOOL_PROVIDER_LIVENESS_SECONDS": "2",
            "GPUPOOL_GC_INTERVAL_SECONDS": "5",
            "GPUPOOL_GC_GRACE_SECONDS": "5",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, check_after: float = 1.0) -> None:
        """Start the process; after `check_after` seconds (0: do not wait) it must still run."""
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gpupool", "run", "--liveness-port", "0", "--metrics-port", str(self.metrics_port)],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT,
        )  # fmt: skip
        if check_after > 0:
            time.sleep(check_after)
            assert self.proc.poll() is None, f"operator exited at once; see {self.log_path}"

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizers run, as when a node dies under the operator."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def restart(self) -> None:
        self.kill()
        self.start()

    def tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gpupool-e2e")


@pytest.fixture(scope="session")
def simcloud(work_dir: Path, kubeconfig: str, crds_installed: list[str]) -> Iterator[SimCloud]:
    cloud = SimCloud(work_dir, kubeconfig)
    yield cloud
    cloud.stop()


@pytest.fixture
def start_simcloud(work_dir: Path, kubeconfig: str) -> Iterator[Callable[..., SimCloud]]:
    """A simcloud of the test's own, for faults that must not touch other tests."""
    started: list[SimCloud] = []

    def start(**kwargs: Any) -> SimCloud:
        cloud = SimCloud(work_dir, kubeconfig, **kwargs)
        started.append(cloud)
        return cloud

    yield start
    for cloud in started:
        cloud.stop()


@pytest.fixture(scope="session")
def model_hub() -> Iterator[HubServer]:
    """The local Hugging Face Hub the operator asks (tests/hubserver.py): models outside the
    built-in table resolve there; the table's own models are not on it and fall back to the table."""
    with run_hub_server() as hub:
        yield hub


@pytest.fixture(scope="session")
def operator(
    work_dir: Path, kubeconfig: str, crds_installed: list[str], model_hub: HubServer
) -> Iterator[OperatorProcess]:
    proc = OperatorProcess(
        work_dir,
        kubeconfig,
        cluster_name=f"test-{uuid.uuid4().hex[:6]}",
        extra_env={"GPUPOOL_HF_ENDPOINT": model_hub.url, "GPUPOOL_HUB_FAILURE_CACHE_SECONDS": "2"},
    )
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _operator_log_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "operator" in request.fixturenames:
        proc: OperatorProcess = request.getfixturevalue("operator")
        print(f"\n--- operator log (tail) ---\n{proc.tail()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


class Gpupool:
    """Create and read the gpupool objects of one test, named so they are the test's alone."""

    def __init__(self, kube: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(kube)
        self.core = client.CoreV1Api(kube)
        self.apps = client.AppsV1Api(kube)
        self.namespace = namespace
        self.prefix = namespace  # unique per test
        self.cluster_scoped: list[tuple[str, str]] = []

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    def create_provider(self, suffix: str, url: str, **spec: Any) -> str:
        name = self.name(suffix)
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuProvider", "metadata": {"name": name},
                "spec": {"type": "sim", "endpoint": url, "refreshInterval": "30s", **spec}}  # fmt: skip
        self.custom.create_cluster_custom_object(GROUP, VERSION, "gpuproviders", body)
        self.cluster_scoped.append(("gpuproviders", name))
        return name

    def create_pool(self, suffix: str, providers: list[str], **spec: Any) -> str:
        name = self.name(suffix)
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuPool", "metadata": {"name": name},
                "spec": {"providers": providers, "disruption": {"consolidateAfter": "10s"}, **spec}}  # fmt: skip
        self.custom.create_cluster_custom_object(GROUP, VERSION, "gpupools", body)
        # Pools before providers at cleanup: a provider waits until its claims are gone.
        self.cluster_scoped.insert(0, ("gpupools", name))
        return name

    def create_model(self, name: str, **spec: Any) -> str:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment",
                "metadata": {"name": name, "namespace": self.namespace}, "spec": spec}  # fmt: skip
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "modeldeployments", body)
        return name

    def patch_model(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "modeldeployments", name, patch
        )

    def get(self, plural: str, name: str) -> dict[str, Any]:
        if plural == "modeldeployments":
            obj: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, plural, name
            )
        else:
            obj = self.custom.get_cluster_custom_object(GROUP, VERSION, plural, name)
        return obj

    def patch(self, plural: str, name: str, body: dict[str, Any]) -> None:
        if plural == "modeldeployments":
            self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, plural, name, body)
        else:
            self.custom.patch_cluster_custom_object(GROUP, VERSION, plural, name, body)

    def claims(self, pool: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.custom.list_cluster_custom_object(
            GROUP, VERSION, "gpunodeclaims", label_selector=f"gpupool.dev/pool={pool}"
        )["items"]
        return items

    def condition(self, obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
        return next(
            (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == type_), None
        )

    def events(self, name: str, namespace: str = "default") -> list[client.CoreV1Event]:
        items = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return list(items)

    def cleanup(self) -> None:
        for plural, name in self.cluster_scoped:
            with contextlib.suppress(client.ApiException):
                self.custom.delete_cluster_custom_object(GROUP, VERSION, plural, name)


@pytest.fixture
def gp(kube: client.ApiClient, namespace: str, start_simcloud: Any) -> Iterator[Gpupool]:
    # Depends on start_simcloud only for the teardown order: objects go before their clouds.
    helper = Gpupool(kube, namespace)
    yield helper
    helper.cleanup()


def gpu_deployment(
    name: str,
    pool: str | None,
    *,
    gpus: int,
    replicas: int = 1,
    gpu: str | None = None,
    node_selector: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A plain Deployment of GPU pods that selects a pool (or any nodes), the way any workload can."""
    selector = {
        **({"gpupool.dev/pool": pool} if pool else {}),
        **({"gpupool.dev/gpu": gpu} if gpu else {}),
        **(node_selector or {}),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": selector,
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox",
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ],
                },
            },
        },
    }


def ready_pods(core: client.CoreV1Api, namespace: str, selector: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [
        p for p in pods
        if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]  # fmt: skip
