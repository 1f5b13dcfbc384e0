"""A fresh local cluster per benchmark run, with an audit log that tells who asked what.

Every run starts from an empty cluster (`tests/cluster/up.sh` under a cluster name of its own),
so nothing a previous run left (nodes, claims, a warm watch cache) flatters or burdens the next.
kube-apiserver writes one audit line per request at the Metadata level; the benchmark runs each
provisioner under a ServiceAccount of its own, so counting the lines by username gives exactly
the requests that provisioner sent, kopf's watches and finalizers included, which no client-side
counter sees. The control plane's CPU is read from /proc for the cluster's own processes.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("GPUPOOL_CACHE", Path.home() / ".cache/gpupool"))

CONTROL_PLANE = (
    "kube-apiserver",
    "etcd",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok-controller",
    "kwok",
)
AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: Metadata
"""


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS in MiB, CPU seconds) of a process, from /proc."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


@dataclass
class Cluster:
    """One benchmark cluster: its kubeconfig, audit log and control-plane processes."""

    name: str
    kubeconfig: str

    @property
    def workdir(self) -> Path:
        return CACHE / "kwok" / "clusters" / self.name

    @property
    def audit_log(self) -> Path:
        return self.workdir / "logs" / "audit.log"

    def control_plane_pids(self) -> list[int]:
        """kube-apiserver, etcd, controller-manager, scheduler and kwok of this cluster."""
        pids = []
        marker = str(self.workdir)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            # By the binary's name: a client's command line (simcloud's --kubeconfig) names the
            # cluster's directory, which has "kwok" in its path, too.
            cmdline = b" ".join(argv).decode(errors="replace")
            if marker in cmdline and Path(argv[0].decode(errors="replace")).name in CONTROL_PLANE:
                pids.append(int(entry.name))
        return pids

    def control_plane_cpu(self) -> float:
        return sum(self.control_plane_cpu_by_component().values())

    def control_plane_cpu_by_component(self) -> dict[str, float]:
        """CPU seconds so far of each control-plane process, by its binary's name."""
        seconds: dict[str, float] = {}
        for pid in self.control_plane_pids():
            try:
                name = Path(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()).name
                seconds[name] = seconds.get(name, 0.0) + proc_stats(pid)[1]
            except OSError:
                continue
        return seconds

    def requests(self, since: datetime, until: datetime | None = None) -> Counter[tuple[str, str]]:
        """(username, verb) -> requests completed in [since, until), watches excluded."""
        counts: Counter[tuple[str, str]] = Counter()
        for event in self._events():
            verb = event.get("verb", "")
            if verb == "watch":
                continue
            stamp = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if stamp < since or (until is not None and stamp >= until):
                continue
            counts[(event.get("user", {}).get("username", ""), verb)] += 1
        return counts

    def breakdown(self, user: str, since: datetime, top: int = 8) -> list[tuple[str, int]]:
        """The user's most frequent requests since `since`, as "verb resource[/subresource]"."""
        counts: Counter[str] = Counter()
        for event in self._events():
            if event.get("verb") == "watch" or event.get("user", {}).get("username") != user:
                continue
            stamp = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if stamp < since:
                continue
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            counts[f"{event.get('verb')} {resource}"] += 1
        return counts.most_common(top)

    def activity(self, since: datetime, top: int = 8) -> str:
        """The most frequent kinds of request since `since` by client program (user agent), each
        with its first and last second after `since`: which component is still at work at the end."""
        times: dict[str, list[float]] = {}
        for event in self._events():
            stamp = datetime.fromisoformat(str(event["requestReceivedTimestamp"]).replace("Z", "+00:00"))
            if event.get("verb") == "watch" or stamp < since:
                continue
            ref: Any = event.get("objectRef") or {}
            what = ref.get("resource", "?") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
            agent = str(event.get("userAgent", "?")).split("/")[0]
            times.setdefault(f"{agent} {event.get('verb')} {what}", []).append(
                (stamp - since).total_seconds()
            )
        busiest = sorted(times.items(), key=lambda kv: -len(kv[1]))[:top]
        return "\n".join(f"  {len(ts):6,}  {min(ts):6.1f} .. {max(ts):6.1f} s  {key}" for key, ts in busiest)

    def _events(self) -> Iterator[dict[str, object]]:
        if not self.audit_log.exists():
            return
        with self.audit_log.open() as lines:
            for line in lines:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue

    def down(self) -> None:
        subprocess.run(
            [str(ROOT / "tests/cluster/down.sh")],
            env={**os.environ, "GPUPOOL_CLUSTER": self.name},
            check=False,
            capture_output=True,
        )


def fresh_cluster(name: str) -> Cluster:
    """Stop any cluster of that name, start a new one with audit logging, and return it."""
    policy = CACHE / "bench-audit-policy.yaml"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text(AUDIT_POLICY)
    env = {**os.environ, "GPUPOOL_CLUSTER": name, "GPUPOOL_AUDIT_POLICY": str(policy)}
    env.pop("KUBECONFIG", None)
    subprocess.run([str(ROOT / "tests/cluster/down.sh")], env=env, check=False, capture_output=True)
    kubeconfig = subprocess.run(
        [str(ROOT / "tests/cluster/up.sh")], env=env, check=True, capture_output=True, text=True
    ).stdout.strip()
    return Cluster(name=name, kubeconfig=kubeconfig)


def requests_of(counts: Counter[tuple[str, str]], user: str) -> tuple[int, int, int]:
    """(all, reads, writes) of one user's requests."""
    reads = sum(n for (u, verb), n in counts.items() if u == user and verb in ("get", "list"))
    total = sum(n for (u, _verb), n in counts.items() if u == user)
    return total, reads, total - reads


def admin_service_account_kubeconfig(kubeconfig: str, namespace: str, name: str, path: Path) -> Path:
    """A kubeconfig holding only a 1 h token of a cluster-admin ServiceAccount `namespace/name`."""
    from kubernetes import client, config
    from tests.integration.test_rbac import service_account_kubeconfig

    api = config.new_client_from_config(config_file=kubeconfig)
    core: Any = client.CoreV1Api(api)
    rbac: Any = client.RbacAuthorizationV1Api(api)
    creates: list[Callable[[], Any]] = [
        lambda: core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))),
        lambda: core.create_namespaced_service_account(
            namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
        ),
        lambda: rbac.create_cluster_role_binding(
            client.V1ClusterRoleBinding(
                metadata=client.V1ObjectMeta(name=f"bench-{namespace}-{name}-cluster-admin"),
                role_ref=client.V1RoleRef(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"
                ),
                subjects=[client.RbacV1Subject(kind="ServiceAccount", name=name, namespace=namespace)],
            )
        ),
    ]
    for create in creates:
        try:
            create()
        except client.ApiException as error:
            if error.status != 409:
                raise
    return service_account_kubeconfig(api, kubeconfig, namespace, name, path)


def gpu_pods(name: str, count: int, selector: dict[str, str]) -> dict[str, Any]:
    """A Deployment of `count` busybox pods asking one GPU each, on nodes matching `selector`."""
    from tests.integration.conftest import gpu_deployment

    return gpu_deployment(name, None, gpus=1, replicas=count, node_selector=selector)
