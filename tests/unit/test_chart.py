"""The Helm chart, rendered by the real `helm` binary with the default values and with each option.

No cluster: `helm lint --strict` and `helm template` only (the install into a real API server is
tests/integration/test_chart_install.py, the RBAC under a real operator run is test_rbac.py). What
is checked here is what a reviewer would otherwise check by eye: the CRDs are the generated ones,
every pod meets Pod Security "restricted" with requests and limits, RBAC has no wildcard and no
cluster-wide Secret access, read and write are split, the metrics Service, ServiceMonitor and
dashboard agree with each other and with gpupool.metrics, and bad values fail with a message.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpupool import metrics

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "gpupool-operator"
KUBE_VERSION = "1.36.0"


def _helm() -> str | None:
    found = shutil.which("helm")
    if found:
        return found
    out = subprocess.run(
        [str(ROOT / "tests" / "cluster" / "env.sh"), "bin"], capture_output=True, text=True, check=False
    ).stdout.strip()
    candidate = Path(out) / "helm"
    return str(candidate) if candidate.exists() else None


HELM = _helm()
pytestmark = pytest.mark.skipif(HELM is None, reason="helm not built (make tools)")

# Each option of the chart, as --set flags; "default" is the chart's own values.
OPTIONS: dict[str, list[str]] = {
    "default": [],
    "replicas": ["replicaCount=2"],
    "lease-name": ["replicaCount=2", "leaderElection.leaseName=gpupool-leader"],
    "no-leader-election": ["leaderElection.enabled=false"],
    "servicemonitor": ["metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=kps"],
    "dashboard": ["grafana.dashboard.enabled=true", "grafana.dashboard.namespace=monitoring"],
    "simcloud": ["simcloud.enabled=true", "simcloud.regions={lambda-us-east-1}"],
    "simcloud-no-provider": ["simcloud.enabled=true", "simcloud.createProvider=false"],
    "credentials": ["credentials.namespace=secrets-here", "credentials.secretNames={lambda,runpod}"],
    "debug": ["logLevel=debug", "env.GPUPOOL_POOL_RESYNC_SECONDS=5"],
    "hf-tokens": ["modelHub.readTokenSecrets=true", "modelHub.endpoint=off"],
    "external-sa": ["serviceAccount.create=false", "serviceAccount.name=gpupool-ext", "rbac.create=false"],
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=check)


def set_flags(sets: list[str]) -> list[str]:
    return [flag for s in sets for flag in ("--set", s)]


def render(sets: list[str], release: str = "gp", namespace: str = "gpupool-system") -> list[dict[str, Any]]:
    out = helm(
        "template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION, *set_flags(sets)
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(name_suffix)]
    assert len(found) == 1, (
        f"expected one {kind} *{name_suffix}, got {[d['metadata']['name'] for d in found]}"
    )
    return found[0]


@pytest.fixture(scope="module", params=list(OPTIONS))
def option(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(OPTIONS[request.param])


# --- lint and CRDs ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(OPTIONS))
def test_lint_strict(name: str) -> None:
    result = helm(
        "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *set_flags(OPTIONS[name]), check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


REGENERATE = "regenerate both with: make crds"


def test_chart_crds_are_the_generated_crds() -> None:
    """charts/gpupool-operator/crds/ is byte for byte what `gpupool crds` writes, as crds/ is."""
    generated = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    in_chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert generated, "crds/ is empty"
    assert sorted(in_chart) == sorted(generated), f"file sets differ; {REGENERATE}"
    stale = [name for name in generated if in_chart[name] != generated[name]]
    assert not stale, f"chart CRDs differ from crds/: {stale}; {REGENERATE}"


def test_chart_crds_match_the_api_models() -> None:
    from gpupool.api.crdgen import write_crds

    assert write_crds(str(CHART / "crds"), check=True) == 0, REGENERATE


def test_default_image_is_the_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    deployment = one(render([]), "Deployment", "gpupool-operator")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"ghcr.io/gpupool/gpupool-operator:{chart['appVersion']}"
    assert deployment["spec"]["replicas"] == 1
    # Leader election is on by default, so a rolling update never has two operators acting.
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"


# --- pods: Pod Security "restricted", resources ----------------------------------------------


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in of_kind(docs, "Deployment"):
        yield d["metadata"]["name"], d["spec"]["template"]["spec"]


def test_every_pod_meets_the_restricted_profile(option: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = option
    specs = list(pod_specs(docs))
    assert specs
    for name, spec in specs:
        pod_sc = spec.get("securityContext") or {}
        assert pod_sc.get("runAsNonRoot") is True, name
        assert pod_sc.get("runAsUser", 0) != 0, name
        assert (pod_sc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), name
        for volume in spec.get("volumes") or []:
            assert "hostPath" not in volume, name
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            sc = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["runAsNonRoot"] is True, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", where
            assert not sc.get("privileged"), where
            for kind in ("requests", "limits"):
                assert set(container["resources"][kind]) >= {"cpu", "memory"}, f"{where} {kind}"


# --- RBAC ------------------------------------------------------------------------------------

# What the operator calls (controllers/kube.py, handlers.py) and what kopf needs for them.
REQUIRED_CLUSTER: set[tuple[str, str, str]] = {
    *{("gpupool.dev", r, v) for r in ("gpuproviders", "gpupools", "modeldeployments", "gpunodeclaims") for v in ("get", "list", "watch", "patch")},
    *{("gpupool.dev", f"{r}/status", "patch") for r in ("gpuproviders", "gpupools", "modeldeployments", "gpunodeclaims")},
    ("gpupool.dev", "gpunodeclaims", "create"),
    ("gpupool.dev", "gpunodeclaims", "delete"),
    *{("", r, v) for r in ("pods", "nodes") for v in ("get", "list", "watch")},
    ("", "nodes", "patch"),
    ("", "nodes", "delete"),
    ("", "pods/eviction", "create"),
    *{(g, r, v) for g, r in (("apps", "deployments"), ("", "services"), ("policy", "poddisruptionbudgets")) for v in ("get", "list", "watch", "create", "patch")},
    ("", "events", "create"),
}  # fmt: skip


def grants(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule["verbs"]
    }


def test_rbac_has_no_wildcards(option: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = option
    for role in [*of_kind(docs, "ClusterRole"), *of_kind(docs, "Role")]:
        for rule in role["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(field, []), f"{role['metadata']['name']}: wildcard in {field}"
            assert "nonResourceURLs" not in rule


def test_operator_roles_grant_what_it_uses_split_read_and_write() -> None:
    docs = render([])
    read = one(docs, "ClusterRole", "-read")
    write = one(docs, "ClusterRole", "-write")
    assert {v for _, _, v in grants(read)} <= {"get", "list", "watch"}
    assert not {v for _, _, v in grants(write)} & {"get", "list", "watch"}
    granted = grants(read) | grants(write)
    assert granted >= REQUIRED_CLUSTER, f"missing: {sorted(REQUIRED_CLUSTER - granted)}"
    # No more than that, plus owner-reference finalizers and events.k8s.io.
    extra = granted - REQUIRED_CLUSTER
    assert extra == {
        ("gpupool.dev", "gpupools/finalizers", "update"),
        ("gpupool.dev", "modeldeployments/finalizers", "update"),
        ("events.k8s.io", "events", "create"),
    }, sorted(extra)
    for binding in of_kind(docs, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "gp-gpupool-operator", "namespace": "gpupool-system"}
        ]


def test_secrets_only_in_the_credentials_namespace(option: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = option
    for role in of_kind(docs, "ClusterRole"):
        if name == "hf-tokens" and role["metadata"]["name"].endswith("-hf-tokens"):
            # Opted in: get on Secrets anywhere, for spec.hfTokenSecretRef, and nothing else.
            assert grants(role) == {("", "secrets", "get")}
            continue
        assert not any(r == "secrets" for _, r, _ in grants(role)), role["metadata"]["name"]
    roles = of_kind(docs, "Role")
    if name == "external-sa":
        assert roles == []
        return
    secret_roles = [r for r in roles if any(res == "secrets" for _, res, _ in grants(r))]
    (role,) = secret_roles
    assert role["metadata"]["name"].endswith("-credentials")
    expected_ns = "secrets-here" if name == "credentials" else "gpupool-system"
    assert role["metadata"]["namespace"] == expected_ns
    assert role["rules"][0]["verbs"] == ["get"] and role["rules"][0]["resources"] == ["secrets"]
    if name == "credentials":
        assert role["rules"][0]["resourceNames"] == ["lambda", "runpod"]
    binding = one(docs, "RoleBinding", "-credentials")
    assert binding["metadata"]["namespace"] == expected_ns
    assert binding["roleRef"]["name"] == role["metadata"]["name"]


def operator_env(docs: list[dict[str, Any]]) -> dict[str, Any]:
    container = one(docs, "Deployment", "gpupool-operator")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_nothing_of_kopf_peering(option: tuple[str, list[dict[str, Any]]]) -> None:
    """Leader election replaced kopf's peering: no kopf.dev object, rule or --peering flag."""
    _, docs = option
    assert not any("kopf.dev" in str(d) or "KopfPeering" in str(d) for d in docs)
    args = one(docs, "Deployment", "gpupool-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(a.startswith("--peering") for a in args)


def test_leader_election_on_by_default() -> None:
    docs = render([])
    env = operator_env(docs)
    assert env["GPUPOOL_LEADER_ELECT"] == "true"
    assert env["GPUPOOL_LEASE_NAME"] == "gp-gpupool-operator"
    assert env["GPUPOOL_LEASE_NAMESPACE"] == "gpupool-system"
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    role = one(docs, "Role", "-leader-election")
    assert role["metadata"]["namespace"] == "gpupool-system"
    # Exactly the lease verbs; create is unrestricted (it cannot be limited by name), the rest
    # only on this release's Lease.
    assert grants(role) == {("coordination.k8s.io", "leases", v) for v in ("create", "get", "update")}
    by_verbs = {tuple(rule["verbs"]): rule.get("resourceNames") for rule in role["rules"]}
    assert by_verbs == {("create",): None, ("get", "update"): ["gp-gpupool-operator"]}
    binding = one(docs, "RoleBinding", "-leader-election")
    assert binding["metadata"]["namespace"] == "gpupool-system"
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "gp-gpupool-operator", "namespace": "gpupool-system"}
    ]
    # No cluster-wide lease access.
    for cluster_role in of_kind(docs, "ClusterRole"):
        assert not any(g == "coordination.k8s.io" for g, _, _ in grants(cluster_role))


def test_leader_election_with_replicas_and_lease_name() -> None:
    docs = render(OPTIONS["lease-name"], namespace="ops")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    env = operator_env(docs)
    assert env["GPUPOOL_LEASE_NAME"] == "gpupool-leader"
    assert env["GPUPOOL_LEASE_NAMESPACE"] == "ops"
    role = one(docs, "Role", "-leader-election")
    assert role["metadata"]["namespace"] == "ops"
    assert [r.get("resourceNames") for r in role["rules"]] == [None, ["gpupool-leader"]]


def test_without_leader_election_one_replica_recreated() -> None:
    docs = render(OPTIONS["no-leader-election"])
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    assert operator_env(docs)["GPUPOOL_LEADER_ELECT"] == "false"
    assert [r["metadata"]["name"] for r in of_kind(docs, "Role")] == ["gp-gpupool-operator-credentials"]
    assert [b["metadata"]["name"] for b in of_kind(docs, "RoleBinding")] == [
        "gp-gpupool-operator-credentials"
    ]


# --- metrics Service, ServiceMonitor, dashboard ----------------------------------------------


def test_metrics_port_service_and_servicemonitor_agree() -> None:
    docs = render(OPTIONS["servicemonitor"])
    deployment = one(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-port=8080" in container["args"]
    assert {"name": "metrics", "containerPort": 8080, "protocol": "TCP"} in container["ports"]
    service = one(docs, "Service", "-metrics")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["spec"]["ports"][0]["name"] == "metrics"
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # Only the operator's Service is scraped, not simcloud's.
    with_sim = render([*OPTIONS["servicemonitor"], "simcloud.enabled=true"])
    selector = one(with_sim, "ServiceMonitor")["spec"]["selector"]["matchLabels"].items()
    matched = [
        s["metadata"]["name"]
        for s in of_kind(with_sim, "Service")
        if selector <= s["metadata"]["labels"].items()
    ]
    assert matched == ["gp-gpupool-operator-metrics"]


def documented_series() -> set[str]:
    from prometheus_client import CollectorRegistry

    series = metrics.create_series(CollectorRegistry(), runtime=False)
    names: set[str] = set()
    for family in series.registry.collect():
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        names.add(family.name + suffix)
    return names


def test_dashboard_is_loaded_by_the_sidecar_label_and_uses_real_series() -> None:
    docs = render(OPTIONS["dashboard"])
    config_map = one(docs, "ConfigMap", "-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["namespace"] == "monitoring"
    dashboard = json.loads(config_map["data"]["gpupool.json"])
    assert dashboard["uid"] == "gpupool-overview"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    known = documented_series()
    for expr in exprs:
        for name in re.findall(r"gpupool_[a-z_]+", expr):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            assert name in known or base in known, f"dashboard uses unknown series {name}"
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for wanted in (
        "cost per hour by pool",
        "cost per hour by modeldeployment",
        "gpus by state",
        "provisioning latency",
        "provider errors",
    ):
        assert wanted in titles, wanted
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert of_kind(render([]), "ConfigMap") == []


def test_simcloud_option() -> None:
    assert not any("simcloud" in d["metadata"]["name"] for d in render([]))
    docs = render(OPTIONS["simcloud"])
    deployment = one(docs, "Deployment", "-simcloud")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "simcloud"]
    assert "--regions=lambda-us-east-1" in container["args"]
    service = one(docs, "Service", "-simcloud")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    provider = one(docs, "GpuProvider")
    assert provider["spec"] == {
        "type": "sim",
        "endpoint": "http://gp-gpupool-operator-simcloud.gpupool-system.svc:8788",
        "refreshInterval": "30s",
    }
    # simcloud writes Nodes and nothing else.
    role = one(docs, "ClusterRole", "-simcloud")
    assert grants(role) == {("", "nodes", "create"), ("", "nodes", "delete")}
    assert of_kind(render(OPTIONS["simcloud-no-provider"]), "GpuProvider") == []


# --- values.schema.json ----------------------------------------------------------------------

INVALID: list[tuple[list[str], str]] = [
    (["replicaCount=2", "leaderElection.enabled=false"], "/leaderElection/enabled"),
    (["leaderElection.leaseName=Not_A_Name"], "/leaderElection/leaseName"),
    (["replicaCount=-1"], "/replicaCount"),
    (["replicaCount=two"], "/replicaCount"),
    (["image.pullPolicy=Sometimes"], "/image/pullPolicy"),
    (["image.repository="], "/image/repository"),
    (["resources.limits.cpu=lots"], "/resources/limits/cpu"),
    (["resources.requests=null"], "/resources"),
    (["credentials.namespace=Not_A_Namespace"], "/credentials/namespace"),
    (["metrics.port=70000"], "/metrics/port"),
    (["metrics.serviceMonitor.interval=often"], "/metrics/serviceMonitor/interval"),
    (["logLevel=verbose"], "/logLevel"),
    (["simcloud.bootDelay=-5"], "/simcloud/bootDelay"),
    (["simcloud.providerName=Sim Cloud"], "/simcloud/providerName"),
    (["env.not-a-var=1"], "invalid propertyName 'not-a-var'"),
    (["replicas=2"], "additional properties 'replicas' not allowed"),
    (["metrics.portt=9090"], "additional properties 'portt' not allowed"),
]


@pytest.mark.parametrize(("sets", "where"), INVALID, ids=[s[0] for s, _ in INVALID])
def test_schema_refuses_invalid_values_with_a_message(sets: list[str], where: str) -> None:
    result = helm("template", "gp", str(CHART), "--kube-version", KUBE_VERSION, *set_flags(sets), check=False)
    assert result.returncode != 0, f"accepted {sets}"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert where in result.stderr, result.stderr
