"""End-to-end benchmark: N ModelDeployments applied at once, from zero nodes, until all are Ready.

Runs against the local cluster (or $KUBECONFIG), with simcloud at boot delay 0 and the operator
as real processes, and prints the time until every ModelDeployment is Ready and the operator's
peak RSS and CPU. It is a benchmark, not a test: it prints figures and asserts nothing but that
the run finished.

    .venv/bin/python bench/e2e/run.py [--count 100] [--timeout 900]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from kubernetes import client, config  # noqa: E402
from tests.integration.conftest import OperatorProcess, SimCloud  # noqa: E402

GROUP, VERSION = "gpupool.dev", "v1alpha1"
MODELS = [
    "meta-llama/Llama-3.2-1B-Instruct",
    "meta-llama/Llama-3.2-3B-Instruct",
    "meta-llama/Llama-3.1-8B-Instruct",
    "Qwen/Qwen2.5-7B-Instruct",
    "Qwen/Qwen3-8B",
    "mistralai/Mistral-7B-Instruct-v0.3",
]


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS in MiB, CPU seconds) of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


def kubeconfig() -> str:
    if os.environ.get("KUBECONFIG"):
        return os.environ["KUBECONFIG"]
    return subprocess.run(
        [str(ROOT / "tests/cluster/up.sh")], check=True, capture_output=True, text=True
    ).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()

    kc = kubeconfig()
    api = config.new_client_from_config(config_file=kc)
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    tmp = Path(tempfile.mkdtemp(prefix="gpupool-bench-"))
    cloud = SimCloud(tmp, kc, boot_delay=0.0)
    operator = OperatorProcess(tmp, kc, cluster_name=f"bench-{uuid.uuid4().hex[:6]}")
    assert operator.proc is not None
    tag = uuid.uuid4().hex[:6]
    namespace, provider, pool = f"bench-{tag}", f"bench-{tag}", f"bench-{tag}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    custom.create_cluster_custom_object(GROUP, VERSION, "gpuproviders", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuProvider", "metadata": {"name": provider},
        "spec": {"type": "sim", "endpoint": cloud.url, "refreshInterval": "5m"}})  # fmt: skip
    custom.create_cluster_custom_object(GROUP, VERSION, "gpupools", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuPool", "metadata": {"name": pool},
        "spec": {"providers": [provider], "capacityTypes": ["on-demand"],
                 "limits": {"maxNodes": 1000, "maxGpus": 4000},
                 "disruption": {"consolidateAfter": "30s"}}})  # fmt: skip
    # Let the provider list its offers first, so the clock measures the deployments.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = (
            custom.get_cluster_custom_object(GROUP, VERSION, "gpuproviders", provider).get("status") or {}
        )
        if status.get("offers"):
            break
        time.sleep(0.5)

    peak = [0.0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):  # the process may be gone at the very end
                peak[0] = max(peak[0], proc_stats(operator.proc.pid)[0])  # type: ignore[union-attr]
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, cpu_before = proc_stats(operator.proc.pid)
    start = time.monotonic()
    for i in range(args.count):
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment",
            "metadata": {"name": f"m{i:03d}"},
            "spec": {"model": MODELS[i % len(MODELS)], "pool": pool, "engine": {"maxModelLen": 4096}}})  # fmt: skip
    applied = time.monotonic() - start
    ready_at: dict[str, float] = {}
    while time.monotonic() - start < args.timeout:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "modeldeployments")["items"]
        for item in items:
            conditions = (item.get("status") or {}).get("conditions") or []
            if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                ready_at.setdefault(item["metadata"]["name"], time.monotonic() - start)
        if len(ready_at) == args.count:
            break
        time.sleep(1)
    elapsed = time.monotonic() - start
    _, cpu_after = proc_stats(operator.proc.pid)
    stop.set()
    claims = custom.list_cluster_custom_object(
        GROUP, VERSION, "gpunodeclaims", label_selector=f"gpupool.dev/pool={pool}"
    )["items"]
    times = sorted(ready_at.values())
    cpu = cpu_after - cpu_before

    print(f"ModelDeployments        {args.count} (applied in {applied:.1f}s)")
    print(
        f"all Ready               {'yes' if len(times) == args.count else f'NO: {len(times)}'} in {elapsed:.1f}s"
    )
    if times:
        print(f"first / median / last   {times[0]:.1f}s / {times[len(times) // 2]:.1f}s / {times[-1]:.1f}s")
    print(f"claims (nodes)          {len(claims)}")
    print(f"operator peak RSS       {peak[0]:.0f} MiB")
    print(f"operator CPU            {cpu:.1f}s ({100 * cpu / elapsed:.0f}% of one core on average)")

    custom.delete_cluster_custom_object(GROUP, VERSION, "gpupools", pool)
    core.delete_namespace(namespace)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        left = custom.list_cluster_custom_object(
            GROUP, VERSION, "gpunodeclaims", label_selector=f"gpupool.dev/pool={pool}"
        )["items"]
        if not left:
            break
        time.sleep(1)
    custom.delete_cluster_custom_object(GROUP, VERSION, "gpuproviders", provider)
    time.sleep(3)
    operator.stop()
    cloud.stop()
    return 0 if len(times) == args.count else 1


if __name__ == "__main__":
    raise SystemExit(main())
