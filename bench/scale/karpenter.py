"""Karpenter v1.15.0's KWOK provider as the benchmark's peer, on the same cluster and offers.

bench/scale compares gpupool with the provisioner most people know. Karpenter's reference KWOK
provider (Go package `sigs.k8s.io/karpenter/kwok`) runs the real Karpenter core — batching,
bin-packing, NodeClaim lifecycle, disruption — and "launches" an instance by creating a Node,
which the local cluster's kwok controller then plays the kubelet for, exactly as it does for
gpupool's simcloud nodes. Its instance types come from bench/scale/offers.py, so both choose
among the same eleven AWS GPU machines at the same prices.

This module builds the binary once (from the Go module proxy, no image), applies its CRDs, a
KWOKNodeClass and a NodePool, and runs it as a local process outside the cluster under a
ServiceAccount of its own, so the API server's audit log can count its requests by username.

    .venv/bin/python bench/scale/karpenter.py [--count 10]

runs a smoke test on a cluster of its own (GPUPOOL_CLUSTER=karp): N pending 1-GPU pods until
Running, the nodes Karpenter bought and their price, then everything back down.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.scale.cluster import admin_service_account_kubeconfig, gpu_pods  # noqa: E402

KARPENTER_MODULE = "sigs.k8s.io/karpenter"
KARPENTER_VERSION = "v1.15.0"
# v1.15.0's go.mod says `go 1.26.9`; the toolchain is fetched from the module proxy once.
GO_TOOLCHAIN = "go1.27.3"
CACHE = Path(os.environ.get("GPUPOOL_CACHE", Path.home() / ".cache/gpupool"))
KARPENTER_DIR = CACHE / f"karpenter-{KARPENTER_VERSION}"
BINARY = KARPENTER_DIR / "bin" / "karpenter-kwok"

POOL_LABEL = "bench.gpupool.dev/pool"
NODEPOOL_LABEL = "karpenter.sh/nodepool"
GPU = "nvidia.com/gpu"
KARPENTER, KWOK = "karpenter.sh", "karpenter.kwok.sh"


def _go_env() -> dict[str, str]:
    if shutil.which("go") is None:
        raise RuntimeError("building Karpenter needs Go on PATH (any Go >= 1.21 can fetch the toolchain)")
    return {**os.environ, "GOTOOLCHAIN": GO_TOOLCHAIN, "CGO_ENABLED": "0", "GO111MODULE": "on"}


def ensure_karpenter() -> Path:
    """The KWOK provider binary, built once into the cache (cold: 3.6 min on 2 cores).

    `go install module@version` works for v1.15.0 (its go.mod has no replace directives). It
    installs into a staging GOBIN and is renamed into place, so an interrupted build never leaves
    a binary that looks finished.
    """
    if BINARY.is_file() and os.access(BINARY, os.X_OK):
        return BINARY
    staging = KARPENTER_DIR / ".gobin"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ldflags = f"-s -w -X {KARPENTER_MODULE}/pkg/operator.Version={KARPENTER_VERSION}"
    start = time.monotonic()
    print(
        f"[karpenter] building {KARPENTER_MODULE}/kwok@{KARPENTER_VERSION} with {GO_TOOLCHAIN}",
        file=sys.stderr,
    )
    subprocess.run(
        ["go", "install", "-trimpath", f"-ldflags={ldflags}", f"{KARPENTER_MODULE}/kwok@{KARPENTER_VERSION}"],
        env={**_go_env(), "GOBIN": str(staging)},
        cwd=KARPENTER_DIR,
        check=True,
    )
    BINARY.parent.mkdir(parents=True, exist_ok=True)
    (staging / "kwok").replace(BINARY)
    shutil.rmtree(staging, ignore_errors=True)
    print(f"[karpenter] built {BINARY} in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return BINARY


def module_dir() -> Path:
    """Karpenter's module source in GOMODCACHE (downloaded if the cache lost it)."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"{KARPENTER_MODULE}@{KARPENTER_VERSION}"],
        env=_go_env(),
        cwd=KARPENTER_DIR if KARPENTER_DIR.is_dir() else None,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return Path(json.loads(out)["Dir"])


def karpenter_crds() -> list[Path]:
    """NodePool, NodeClaim and KWOKNodeClass CRDs of v1.15.0.

    kwok/charts/crds holds the NodePool and NodeClaim CRDs as the KWOK chart installs them
    (pkg/apis/crds plus a rule reserving the karpenter.kwok.sh label domain); the KWOKNodeClass
    CRD lives with its API in kwok/apis/crds. NodeOverlay and CapacityBuffer are left out: their
    feature gates are off by default, and no controller watches them then.
    """
    src = module_dir()
    crds = [
        src / "kwok/charts/crds/karpenter.sh_nodepools.yaml",
        src / "kwok/charts/crds/karpenter.sh_nodeclaims.yaml",
        src / "kwok/apis/crds/karpenter.kwok.sh_kwoknodeclasses.yaml",
    ]
    missing = [str(p) for p in crds if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Karpenter {KARPENTER_VERSION} CRDs not where expected: {missing}")
    return crds


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(client.ApiException):
            if predicate():
                return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _api(kubeconfig: str) -> Any:
    """An API client (typed Any: the kubernetes client's own annotations are too loose for mypy)."""
    return config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]


def apply_crds_and_nodepool(kubeconfig: str, pool: str, instance_types: list[str]) -> None:
    """The CRDs (until Established), a KWOKNodeClass and a NodePool `pool` limited to `instance_types`.

    Nodes get the label bench.gpupool.dev/pool=<pool> and the taint nvidia.com/gpu=present:NoSchedule,
    on-demand only, no limits, and consolidation that cannot fire within a run (WhenEmpty after 1 h).
    The KWOKNodeClass needs no status written: its CRD defaults status to Ready=True, without
    which the NodePool would stay NodeClassReady=False and never provision.
    """
    api = _api(kubeconfig)
    ext: Any = client.ApiextensionsV1Api(api)
    custom: Any = client.CustomObjectsApi(api)
    names = []
    for path in karpenter_crds():
        crd = yaml.safe_load(path.read_text())
        name = crd["metadata"]["name"]
        names.append(name)
        try:
            ext.create_custom_resource_definition(crd)
        except client.ApiException as error:
            if error.status != 409:
                raise
            crd["metadata"]["resourceVersion"] = ext.read_custom_resource_definition(
                name
            ).metadata.resource_version
            ext.replace_custom_resource_definition(name, crd)

    def established(name: str) -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    for name in names:
        if not wait_until(functools.partial(established, name), 60):
            raise TimeoutError(f"CRD {name} not Established after 60 s")

    node_class: dict[str, Any] = {
        "apiVersion": f"{KWOK}/v1alpha1",
        "kind": "KWOKNodeClass",
        "metadata": {"name": pool},
        "spec": {},  # nodeRegistrationDelay 0: the Node is created as soon as the NodeClaim launches
    }
    requirements = [
        {"key": f"{KARPENTER}/capacity-type", "operator": "In", "values": ["on-demand"]},
        {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": instance_types},
    ]
    node_pool: dict[str, Any] = {
        "apiVersion": f"{KARPENTER}/v1",
        "kind": "NodePool",
        "metadata": {"name": pool},
        "spec": {
            "template": {
                "metadata": {"labels": {POOL_LABEL: pool}},
                "spec": {
                    "nodeClassRef": {"group": KWOK, "kind": "KWOKNodeClass", "name": pool},
                    "taints": [{"key": GPU, "value": "present", "effect": "NoSchedule"}],
                    "requirements": requirements,
                    "expireAfter": "Never",
                },
            },
            "disruption": {"consolidationPolicy": "WhenEmpty", "consolidateAfter": "1h"},
        },
    }
    for group, version, plural, body in (
        (KWOK, "v1alpha1", "kwoknodeclasses", node_class),
        (KARPENTER, "v1", "nodepools", node_pool),
    ):
        try:
            custom.create_cluster_custom_object(group, version, plural, body)
        except client.ApiException as error:
            if error.status != 409:
                raise
            current = custom.get_cluster_custom_object(group, version, plural, pool)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            custom.replace_cluster_custom_object(group, version, plural, pool, body)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KarpenterProcess:
    """The KWOK provider as a local process: leader election off, its own ports, our instance types.

    v1.15.0 has no webhooks and needs no CLUSTER_NAME or SYSTEM_NAMESPACE; its options are flags
    with environment fallbacks (pkg/operator/options, kwok/options). Its metrics and health
    servers bind every interface (":port"), so both get free ports. Batching stays at Karpenter's
    defaults (1 s idle, 10 s at most), the same windows gpupool's pool controller uses.
    """

    def __init__(
        self, binary: Path, kubeconfig: str | Path, workdir: Path, instance_types_file: Path | None = None
    ) -> None:
        self.binary = binary
        self.kubeconfig = str(kubeconfig)
        self.workdir = workdir
        self.log_path = workdir / "karpenter.log"
        if instance_types_file is None:
            from bench.scale.offers import write_karpenter_instance_types

            instance_types_file = write_karpenter_instance_types(workdir / "instance-types.json")
        self.instance_types_file = instance_types_file
        self.metrics_port = _free_port()
        self.health_port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("Karpenter is not started")
        return self.proc.pid

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/tmp"),
            "KUBECONFIG": self.kubeconfig,
            "DISABLE_LEADER_ELECTION": "true",
            "METRICS_PORT": str(self.metrics_port),
            "HEALTH_PROBE_PORT": str(self.health_port),
            "INSTANCE_TYPES_FILE_PATH": str(self.instance_types_file),
            "LOG_LEVEL": "info",
        }

    def start(self, timeout: float = 60) -> None:
        """Start it and wait until /readyz answers (caches synced, NodePool and NodeClaim CRDs served)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(self.binary)], stdout=out, stderr=subprocess.STDOUT, env=self.env(), cwd=self.workdir
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Karpenter exited with {self.proc.returncode}:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.health_port}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        else:
            self.stop()
            raise TimeoutError(f"Karpenter not ready after {timeout:.0f} s:\n{self.tail()}")
        # main() only logs a bad instance-types file and goes on with none: fail loudly instead.
        if "failed constructing instance types" in self.log_path.read_text(errors="replace"):
            self.stop()
            raise RuntimeError(f"Karpenter could not read {self.instance_types_file}:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --- smoke run ---------------------------------------------------------------------------------------


def _cluster(name: str, script: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"} | {"GPUPOOL_CLUSTER": name}
    return subprocess.run(
        [str(ROOT / "tests/cluster" / script)], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def smoke(count: int, cluster: str, pool: str, timeout: float) -> int:
    from bench.scale.offers import bench_offers

    prices = {o.instance_type: o.on_demand_price or 0.0 for o in bench_offers()}
    start = time.monotonic()
    binary = ensure_karpenter()
    print(f"binary {binary} ready in {time.monotonic() - start:.1f} s")
    kubeconfig = _cluster(cluster, "up.sh")
    workdir = Path(tempfile.mkdtemp(prefix="karpenter-smoke-"))
    process: KarpenterProcess | None = None
    try:
        api = _api(kubeconfig)
        core: Any = client.CoreV1Api(api)
        apps: Any = client.AppsV1Api(api)
        custom: Any = client.CustomObjectsApi(api)
        token_kubeconfig = admin_service_account_kubeconfig(
            kubeconfig, "karpenter", "karpenter", workdir / "karpenter.kubeconfig"
        )
        apply_crds_and_nodepool(kubeconfig, pool, list(prices))
        process = KarpenterProcess(binary, token_kubeconfig, workdir)
        started = time.monotonic()
        process.start()
        print(
            f"Karpenter pid {process.pid} ready in {time.monotonic() - started:.1f} s, log {process.log_path}"
        )

        namespace = "karpenter-smoke"
        with contextlib.suppress(client.ApiException):
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))

        def running() -> int:
            pods = core.list_namespaced_pod(namespace, label_selector="app=burst").items
            return sum(
                1 for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None
            )

        began = time.monotonic()
        apps.create_namespaced_deployment(namespace, gpu_pods("burst", count, {POOL_LABEL: pool}))
        ok = wait_until(lambda: running() >= count, timeout, 0.5)
        seconds = time.monotonic() - began
        nodes = core.list_node(label_selector=f"{POOL_LABEL}={pool}").items
        kinds = Counter((n.metadata.labels or {}).get("node.kubernetes.io/instance-type", "?") for n in nodes)
        cost = sum(prices.get(kind, 0.0) * n for kind, n in kinds.items())
        fake = sum(1 for n in nodes if (n.metadata.annotations or {}).get("kwok.x-k8s.io/node") == "fake")
        ready = sum(
            1
            for n in nodes
            if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        )
        claims = custom.list_cluster_custom_object(
            KARPENTER, "v1", "nodeclaims", label_selector=f"{NODEPOOL_LABEL}={pool}"
        )["items"]
        print(
            f"{'all' if ok else 'NOT all'} {count} pods Running in {seconds:.1f} s ({running()} running): "
            f"{len(nodes)} nodes ({fake} kwok-annotated, {ready} Ready), {len(claims)} NodeClaims, "
            f"${cost:.4f}/h"
        )
        for kind, n in sorted(kinds.items(), key=lambda kv: prices.get(kv[0], 0.0)):
            print(f"  {n:3} x {kind:14} ${prices.get(kind, 0.0):.4f}/h")

        # Back down: the pods, then Karpenter's NodeClaims (its finalizers drain and delete the Nodes).
        began = time.monotonic()
        apps.delete_namespaced_deployment("burst", namespace)
        wait_until(lambda: not core.list_namespaced_pod(namespace, label_selector="app=burst").items, 120)
        for claim in claims:
            with contextlib.suppress(client.ApiException):
                custom.delete_cluster_custom_object(KARPENTER, "v1", "nodeclaims", claim["metadata"]["name"])
        gone = wait_until(
            lambda: (
                not core.list_node(label_selector=f"{POOL_LABEL}={pool}").items
                and not custom.list_cluster_custom_object(KARPENTER, "v1", "nodeclaims")["items"]
            ),
            180,
        )
        print(f"{'cleaned up' if gone else 'NOT cleaned up'} in {time.monotonic() - began:.1f} s")
        return 0 if ok and gone else 1
    finally:
        if process is not None:
            process.stop()
        _cluster(cluster, "down.sh")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=10, help="pending 1-GPU pods")
    parser.add_argument("--cluster", default="karp", help="name of the local cluster to start and stop")
    parser.add_argument("--pool", default="bench")
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args()
    return smoke(args.count, args.cluster, args.pool, args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
