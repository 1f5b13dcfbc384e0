"""The control loop at scale: N pending GPU pods or N ModelDeployments from zero nodes.

Prints, for each scenario, the time until everything is Running (pods) or Ready (models), the
provisioner's peak RSS and CPU seconds, the API requests it sent (counted in the API server's
audit log by the provisioner's own ServiceAccount, watches excluded; gpupool's client-side
counter beside it), the control plane's CPU, what the nodes cost, and then, after everything
is up, an idle window: the provisioner's API reads and writes per second and its cloud requests
per second. `--peer karpenter` runs Karpenter v1.15.0's KWOK provider through the same pod
scenario on a fresh cluster with the same eleven AWS offers (bench/scale/offers.py), and prints
both side by side with their ratios. `--peer floor` runs the same objects with no provisioner at
all (bench/scale/floor.py; `--skip-gpupool` for the floor alone). Each run gets a fresh cluster.

    .venv/bin/python bench/scale/run.py pods --count 100 [--peer karpenter] [--idle 120]
    .venv/bin/python bench/scale/run.py models --count 1000 [--idle 120] [--peer floor [--skip-gpupool]]

To see where the operator's CPU goes, attach py-spy (`pip install py-spy`) to its pid during a run:
`py-spy record -p <pid> -d 40 -f raw -o /tmp/op.txt`.

A benchmark, not a test: it prints figures; it fails only when a run does not finish.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from bench.scale.cluster import (  # noqa: E402
    Cluster,
    admin_service_account_kubeconfig,
    fresh_cluster,
    gpu_pods,
    proc_stats,
    requests_of,
)
from bench.scale.offers import REGION, bench_offers, write_offers_csv  # noqa: E402
from kubernetes import client, config  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from tests.integration.conftest import free_port  # noqa: E402

GROUP, VERSION = "gpupool.dev", "v1alpha1"
MODELS = [
    "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen3-8B",
    "mistralai/Mistral-7B-Instruct-v0.3",
]
BENCH_NS = "bench-system"


@dataclass
class Result:
    """What one provisioner did in one run."""

    name: str
    count: int
    done: int
    seconds: float
    peak_rss_mib: float
    cpu_seconds: float
    requests: int
    reads: int
    writes: int
    client_requests: int | None
    control_plane_cpu: float
    nodes: int
    cost_per_hour: float
    instance_types: frozenset[str] = frozenset()
    idle_seconds: float = 0.0
    idle_reads_per_s: float = 0.0
    idle_writes_per_s: float = 0.0
    idle_cloud_per_s: float | None = None
    idle_control_plane_cpu: float = 0.0
    breakdown: list[tuple[str, int]] = field(default_factory=list)
    components: dict[str, float] = field(default_factory=dict)  # control-plane CPU by process
    claim_offers: list[dict[str, Any]] = field(default_factory=list)  # gpupool's claims' spec.offer


class Process:
    """A child process with its log in the run's directory."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                print(f"{self.log.name}: did not stop within 30 s of SIGTERM; killed", file=sys.stderr)
                self.proc.kill()


class PeakRss:
    """Samples a process's high-water RSS every half second."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, proc_stats(self.pid)[0])
            time.sleep(0.5)

    def stop(self) -> float:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.peak = max(self.peak, proc_stats(self.pid)[0])
        return self.peak


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(client.ApiException, httpx.HTTPError):
            if predicate():
                return True
        time.sleep(interval)
    return False


def metric(port: int, name: str, **labels: str) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def running_pods(core: client.CoreV1Api, namespace: str) -> int:
    pods = core.list_namespaced_pod(namespace, field_selector="status.phase=Running").items
    return sum(1 for p in pods if p.metadata.deletion_timestamp is None)


# --- gpupool -------------------------------------------------------------------------------------


class Gpupool:
    """simcloud and the operator, the operator as a cluster-admin ServiceAccount of its own."""

    user = f"system:serviceaccount:{BENCH_NS}:gpupool"

    def __init__(self, cluster: Cluster, tmp: Path, *, bench_offers_only: bool) -> None:
        from tests.conftest import apply_crds

        apply_crds(config.new_client_from_config(config_file=cluster.kubeconfig))
        self.cluster = cluster
        self.port = free_port()
        self.metrics_port = free_port()
        sim_args = [sys.executable, "-m", "simcloud", "--port", str(self.port), "--db", str(tmp / "sim.sqlite"),
                    "--kubeconfig", cluster.kubeconfig, "--boot-delay", "0", "--tick", "0.2"]  # fmt: skip
        if bench_offers_only:
            sim_args += ["--offers-csv", str(write_offers_csv(tmp / "offers.csv")), "--sources", "aws"]
        self.simcloud = Process(sim_args, {**os.environ, "PYTHONUNBUFFERED": "1"}, tmp / "simcloud.log")
        kc = admin_service_account_kubeconfig(
            cluster.kubeconfig, BENCH_NS, "gpupool", tmp / "gpupool.kubeconfig"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
        # The Hub is not asked (GPUPOOL_HF_ENDPOINT=off): the benchmark's models come from the
        # built-in table, so no network shapes the control loop's figures.
        env |= {"KUBECONFIG": str(kc), "GPUPOOL_CLUSTER_NAME": f"bench-{uuid.uuid4().hex[:6]}",
                "GPUPOOL_HF_ENDPOINT": "off", "PYTHONUNBUFFERED": "1"}  # fmt: skip
        self.operator = Process(
            [
                sys.executable,
                "-m",
                "gpupool",
                "run",
                "--liveness-port",
                "0",
                "--metrics-port",
                str(self.metrics_port),
            ],
            env,
            tmp / "operator.log",
        )
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200, 30, 0.2
        )

    def setup(self, custom: client.CustomObjectsApi, regions: list[str]) -> str:
        custom.create_cluster_custom_object(GROUP, VERSION, "gpuproviders", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuProvider", "metadata": {"name": "sim"},
            "spec": {"type": "sim", "endpoint": f"http://127.0.0.1:{self.port}", "refreshInterval": "5m"}})  # fmt: skip
        custom.create_cluster_custom_object(GROUP, VERSION, "gpupools", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuPool", "metadata": {"name": "bench"},
            "spec": {"providers": ["sim"], "capacityTypes": ["on-demand"], **({"regions": regions} if regions else {}),
                     "disruption": {"consolidateAfter": "1h"}}})  # fmt: skip

        def listed() -> bool:
            status = (
                custom.get_cluster_custom_object(GROUP, VERSION, "gpuproviders", "sim").get("status") or {}
            )
            return bool(status.get("offers"))

        assert wait_until(listed, 60, 0.5), "the provider never listed offers"
        return "bench"

    def cost(self, custom: client.CustomObjectsApi) -> tuple[int, float, frozenset[str]]:
        claims = custom.list_cluster_custom_object(GROUP, VERSION, "gpunodeclaims")["items"]
        return (
            len(claims),
            sum(float(c["spec"]["offer"]["pricePerHour"]) for c in claims),
            frozenset(c["spec"]["offer"]["instanceType"] for c in claims),
        )

    def claim_offers(self, custom: client.CustomObjectsApi) -> list[dict[str, Any]]:
        return [
            c["spec"]["offer"]
            for c in custom.list_cluster_custom_object(GROUP, VERSION, "gpunodeclaims")["items"]
        ]

    def client_requests(self) -> int:
        return int(metric(self.metrics_port, "gpupool_kube_requests_total"))

    def cloud_requests(self) -> float:
        return metric(self.metrics_port, "gpupool_provider_requests_total")

    def stop(self) -> None:
        self.operator.stop()
        self.simcloud.stop()


def measure(
    name: str,
    cluster: Cluster,
    pid: int,
    user: str,
    count: int,
    start_work: Callable[[], None],
    done: Callable[[], int],
    timeout: float,
) -> Result:
    rss = PeakRss(pid)
    cpu_before, cp_before = proc_stats(pid)[1], cluster.control_plane_cpu()
    components_before = cluster.control_plane_cpu_by_component()
    since = datetime.now(UTC)
    start = time.monotonic()
    start_work()
    finished = 0
    while time.monotonic() - start < timeout:
        with contextlib.suppress(client.ApiException):
            finished = done()
        if finished >= count:
            break
        time.sleep(1)
    seconds = time.monotonic() - start
    cpu = proc_stats(pid)[1] - cpu_before
    total, reads, writes = requests_of(cluster.requests(since), user)
    breakdown = cluster.breakdown(user, since)
    components = {
        name: cpu - components_before.get(name, 0.0)
        for name, cpu in cluster.control_plane_cpu_by_component().items()
    }
    print(
        f"{name}: control-plane CPU by component: "
        + ", ".join(f"{n} {c:.1f} s" for n, c in sorted(components.items()))
    )
    return Result(
        name=name, count=count, done=finished, seconds=seconds, peak_rss_mib=rss.stop(), cpu_seconds=cpu,
        requests=total, reads=reads, writes=writes, client_requests=None,
        control_plane_cpu=cluster.control_plane_cpu() - cp_before, nodes=0, cost_per_hour=0.0,
        breakdown=breakdown, components=components,
    )  # fmt: skip


def idle(
    result: Result, cluster: Cluster, user: str, seconds: float, cloud: Callable[[], float] | None
) -> None:
    """Measure the provisioner doing nothing for `seconds` with everything up, once it has
    settled: the last pods Running is not the provisioner's last write (claims still turning
    Ready), so the window opens after 5 s without a write from it, or after 120 s."""
    if seconds <= 0:
        return
    started = time.monotonic()
    while time.monotonic() - started < 120:
        _total, _reads, writes = requests_of(cluster.requests(datetime.now(UTC) - timedelta(seconds=5)), user)
        if writes == 0:
            break
        time.sleep(2)
    print(f"{user}: settled {time.monotonic() - started:.0f} s after the run, then idle for {seconds:.0f} s")
    since = datetime.now(UTC)
    cp_before = cluster.control_plane_cpu()
    cloud_before = cloud() if cloud else 0.0
    time.sleep(seconds)
    _total, reads, writes = requests_of(cluster.requests(since), user)
    result.idle_seconds = seconds
    result.idle_reads_per_s = reads / seconds
    result.idle_writes_per_s = writes / seconds
    result.idle_control_plane_cpu = cluster.control_plane_cpu() - cp_before
    if cloud:
        result.idle_cloud_per_s = (cloud() - cloud_before) / seconds


def run_gpupool_pods(count: int, timeout: float, idle_seconds: float) -> Result:
    cluster = fresh_cluster("bench-scale")
    tmp = Path(tempfile.mkdtemp(prefix="gpupool-scale-"))
    gp = Gpupool(cluster, tmp, bench_offers_only=True)
    api = config.new_client_from_config(config_file=cluster.kubeconfig)
    custom, core, apps = client.CustomObjectsApi(api), client.CoreV1Api(api), client.AppsV1Api(api)
    try:
        pool = gp.setup(custom, [f"aws-{REGION}"])
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="work")))
        result = measure(
            "gpupool", cluster, gp.operator.pid, gp.user, count,
            lambda: apps.create_namespaced_deployment("work", gpu_pods("burst", count, {"gpupool.dev/pool": pool})),
            lambda: running_pods(core, "work"), timeout,
        )  # fmt: skip
        result.client_requests = gp.client_requests()
        result.nodes, result.cost_per_hour, result.instance_types = gp.cost(custom)
        result.claim_offers = gp.claim_offers(custom)
        print(timeline(custom, core, "work"))
        idle(result, cluster, gp.user, idle_seconds, gp.cloud_requests)
        return result
    finally:
        gp.stop()
        cluster.down()


def timeline(custom: client.CustomObjectsApi, core: client.CoreV1Api, namespace: str) -> str:
    """When the steps of a gpupool burst happened, in seconds after the first pod was created."""

    def stamp(text: Any) -> float:
        if isinstance(text, datetime):
            return text.timestamp()
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()

    pods = core.list_namespaced_pod(namespace).items
    claims = custom.list_cluster_custom_object(GROUP, VERSION, "gpunodeclaims")["items"]
    if not pods or not claims:
        return "timeline: nothing to show"
    t0 = min(stamp(p.metadata.creation_timestamp) for p in pods)

    def span(values: list[float]) -> str:
        return f"{min(values) - t0:5.1f} .. {max(values) - t0:5.1f} s" if values else "-"

    def ready_at(claim: dict[str, Any]) -> list[float]:
        return [stamp(c["lastTransitionTime"]) for c in (claim.get("status") or {}).get("conditions") or []
                if c["type"] == "Ready" and c["status"] == "True"]  # fmt: skip

    running = [
        stamp(c.last_transition_time)
        for p in pods
        for c in p.status.conditions or []
        if c.type == "Ready" and c.status == "True"
    ]
    lines = [
        f"pods created      {span([stamp(p.metadata.creation_timestamp) for p in pods])}",
        f"claims created    {span([stamp(c['metadata']['creationTimestamp']) for c in claims])}",
        f"claims launched   {span([stamp(c['status']['launchedAt']) for c in claims if c.get('status', {}).get('launchedAt')])}",
        f"nodes registered  {span([stamp(c['status']['registeredAt']) for c in claims if c.get('status', {}).get('registeredAt')])}",
        f"claims Ready      {span([t for c in claims for t in ready_at(c)])}",
        f"pods Ready        {span(running)}",
    ]  # fmt: skip
    node_ready = {(c.get("status") or {}).get("nodeName"): min(ready_at(c)) for c in claims if ready_at(c)}
    waits = sorted(
        stamp(c.last_transition_time) - node_ready[p.spec.node_name]
        for p in pods
        if p.spec.node_name in node_ready
        for c in p.status.conditions or []
        if c.type == "Ready" and c.status == "True"
    )
    if waits:
        lines.append(
            f"pod Ready after its node: median {waits[len(waits) // 2]:.1f} s, max {waits[-1]:.1f} s "
            "(the scheduler's backoff)"
        )
    return "timeline (s after the first pod):\n  " + "\n  ".join(lines)


def run_gpupool_models(count: int, timeout: float, idle_seconds: float) -> Result:
    cluster = fresh_cluster("bench-scale")
    tmp = Path(tempfile.mkdtemp(prefix="gpupool-scale-"))
    gp = Gpupool(cluster, tmp, bench_offers_only=False)
    api = config.new_client_from_config(config_file=cluster.kubeconfig)
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    try:
        pool = gp.setup(custom, [])
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="work")))

        def apply() -> None:
            for i in range(count):
                custom.create_namespaced_custom_object(GROUP, VERSION, "work", "modeldeployments", {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment", "metadata": {"name": f"m{i:04d}"},
                    "spec": {"model": MODELS[i % len(MODELS)], "pool": pool, "engine": {"maxModelLen": 4096}}})  # fmt: skip

        def ready() -> int:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, "work", "modeldeployments")["items"]
            return sum(
                1
                for item in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (item.get("status") or {}).get("conditions") or []
                )
            )

        result = measure("gpupool", cluster, gp.operator.pid, gp.user, count, apply, ready, timeout)
        result.client_requests = gp.client_requests()
        result.nodes, result.cost_per_hour, result.instance_types = gp.cost(custom)
        result.claim_offers = gp.claim_offers(custom)
        idle(result, cluster, gp.user, idle_seconds, gp.cloud_requests)
        return result
    finally:
        gp.stop()
        cluster.down()


# --- Karpenter -----------------------------------------------------------------------------------


def run_karpenter_pods(
    count: int, timeout: float, idle_seconds: float, instance_types: frozenset[str] = frozenset()
) -> Result:
    """Karpenter through the same burst; with `instance_types`, its NodePool may buy only those
    (gpupool's choice), so both make the same nodes and only the pipelines differ."""
    from bench.scale import karpenter

    binary = karpenter.ensure_karpenter()
    cluster = fresh_cluster("bench-scale")
    tmp = Path(tempfile.mkdtemp(prefix="karpenter-scale-"))
    api = config.new_client_from_config(config_file=cluster.kubeconfig)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    prices = {o.instance_type: o.on_demand_price or 0.0 for o in bench_offers()}
    kc = admin_service_account_kubeconfig(
        cluster.kubeconfig, BENCH_NS, "karpenter", tmp / "karpenter.kubeconfig"
    )
    user = f"system:serviceaccount:{BENCH_NS}:karpenter"
    allowed = sorted(instance_types) if instance_types else list(prices)
    karpenter.apply_crds_and_nodepool(cluster.kubeconfig, "bench", allowed)
    process = karpenter.KarpenterProcess(binary, kc, tmp)
    process.start()
    try:
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="work")))
        selector = {"bench.gpupool.dev/pool": "bench"}
        result = measure(
            "Karpenter" + (" (same nodes)" if instance_types else ""), cluster, process.pid, user, count,
            lambda: apps.create_namespaced_deployment("work", gpu_pods("burst", count, selector)),
            lambda: running_pods(core, "work"), timeout,
        )  # fmt: skip
        nodes = core.list_node(label_selector="bench.gpupool.dev/pool=bench").items
        result.nodes = len(nodes)
        result.cost_per_hour = sum(
            prices.get((n.metadata.labels or {}).get("node.kubernetes.io/instance-type", ""), 0.0)
            for n in nodes
        )
        idle(result, cluster, user, idle_seconds, None)
        return result
    finally:
        process.stop()
        cluster.down()


# --- report ----------------------------------------------------------------------------------------


def _row(label: str, ours: str, theirs: str | None, ratio: str | None) -> str:
    if theirs is None:
        return f"| {label} | {ours} |"
    return f"| {label} | {ours} | {theirs} | {ratio} |"


def report(results: list[Result], what: str) -> None:
    ours = results[0]
    peer = results[1] if len(results) > 1 else None

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f} x" if b else "-"

    print(f"\n{what}, {ours.count} from zero nodes")
    header = "| | gpupool |" + (f" {peer.name} | ratio (gpupool / {peer.name}) |" if peer else "")
    print(header)
    print("|---|---:|" + ("---:|---:|" if peer else ""))
    rows: list[tuple[str, Callable[[Result], str], Callable[[Result], float]]] = [
        ("all done", lambda r: f"{'yes' if r.done >= r.count else f'NO ({r.done})'} in {r.seconds:.1f} s", lambda r: r.seconds),
        ("provisioner API requests (audit)", lambda r: f"{r.requests:,}", lambda r: r.requests),
        ("  reads / writes", lambda r: f"{r.reads:,} / {r.writes:,}", lambda r: r.writes),
        ("provisioner CPU", lambda r: f"{r.cpu_seconds:.1f} s", lambda r: r.cpu_seconds),
        ("provisioner peak RSS", lambda r: f"{r.peak_rss_mib:.0f} MiB", lambda r: r.peak_rss_mib),
        ("control-plane CPU", lambda r: f"{r.control_plane_cpu:.1f} s", lambda r: r.control_plane_cpu),
        ("nodes / cost", lambda r: f"{r.nodes} / ${r.cost_per_hour:.2f}/h", lambda r: r.cost_per_hour),
        (f"idle {ours.idle_seconds:.0f} s: API reads/s", lambda r: f"{r.idle_reads_per_s:.2f}", lambda r: r.idle_reads_per_s),
        ("idle: API writes/s", lambda r: f"{r.idle_writes_per_s:.2f}", lambda r: r.idle_writes_per_s),
        ("idle: control-plane CPU", lambda r: f"{r.idle_control_plane_cpu:.1f} s", lambda r: r.idle_control_plane_cpu),
    ]  # fmt: skip
    for label, show, value in rows:
        if peer:
            print(_row(label, show(ours), show(peer), ratio(value(ours), value(peer))))
        else:
            print(_row(label, show(ours), None, None))
    for result in results:
        print(f"\n{result.name}'s requests: " + ", ".join(f"{what} {n}" for what, n in result.breakdown))
    if ours.client_requests is not None:
        print(
            f"\ngpupool's own client counted {ours.client_requests:,} requests (kopf's are only in the audit count)"
        )
    if ours.idle_cloud_per_s is not None:
        print(f"gpupool idle cloud requests: {ours.idle_cloud_per_s:.2f}/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("scenario", choices=["pods", "models"])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--idle", type=float, default=120, help="seconds of idle measurement after the run")
    parser.add_argument("--peer", choices=["karpenter", "floor"], default=None)
    parser.add_argument("--skip-gpupool", action="store_true", help="with --peer floor: run only the floor")
    parser.add_argument(
        "--same-nodes",
        action="store_true",
        help="the peer may buy only the instance types gpupool bought: the same nodes, two pipelines",
    )
    parser.add_argument(
        "--kcm-qps",
        type=int,
        default=None,
        help="kube-controller-manager's client QPS (burst 2x) on every cluster of the run; default 20",
    )
    args = parser.parse_args()
    if args.kcm_qps is not None:  # read by tests/cluster/up.sh for every fresh cluster of this run
        os.environ["GPUPOOL_KCM_QPS"] = str(args.kcm_qps)
    print(f"kube-controller-manager client: {os.environ.get('GPUPOOL_KCM_QPS', '20')} QPS", flush=True)
    if args.peer == "floor":  # bench/scale/floor.py: the same objects with no provisioner
        from bench.scale.floor import run_floor_peer

        gpupool = run_gpupool_pods if args.scenario == "pods" else run_gpupool_models
        ours = None if args.skip_gpupool else gpupool(args.count, args.timeout, args.idle)
        return run_floor_peer(args.scenario, args.count, args.timeout, ours)
    if args.scenario == "pods":
        results = [run_gpupool_pods(args.count, args.timeout, args.idle)]
        if args.peer == "karpenter":
            same = results[0].instance_types if args.same_nodes else frozenset()
            results.append(run_karpenter_pods(args.count, args.timeout, args.idle, same))
        report(results, f"{args.count} pending 1-GPU pods")
    else:
        results = [run_gpupool_models(args.count, args.timeout, args.idle)]
        report(results, f"{args.count} ModelDeployments")
    return 0 if all(r.done >= r.count for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
