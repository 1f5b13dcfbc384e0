"""The control loop keeps what it decided and writes only what changed.

A placement is kept in the ModelDeployment's status with the hash of what decided it, so a
restart of the operator or a `kubectl scale` never plans again, even when the cloud's prices
have moved so that a new plan would choose another offer. An operator restarted in steady
state reads everything back from the cluster and writes nothing: the resourceVersions of the
ModelDeployment, its pool, its claims and its rendered objects stay as they were. These tests
read the operator's own counters (/metrics) to know that it has looked at every object since
its restart, instead of sleeping and hoping it did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import wait_for
from tests.integration.conftest import GROUP, VERSION, Gpupool, OperatorProcess, SimCloud, ready_pods

pytestmark = pytest.mark.cluster

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def counter(port: int, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include `labels`; 0 when it has none yet."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return -1.0
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def _ready(gp: Gpupool, name: str, replicas: int = 1) -> dict[str, Any] | None:
    obj = gp.get("modeldeployments", name)
    ready = gp.condition(obj, "Ready")
    status = obj.get("status") or {}
    return obj if ready and ready["status"] == "True" and status.get("readyReplicas") == replicas else None


def _versions(gp: Gpupool, pool: str, model: str) -> dict[str, str]:
    """resourceVersion of every object the operator writes for one model."""
    versions = {
        "modeldeployment": gp.get("modeldeployments", model)["metadata"]["resourceVersion"],
        "pool": gp.get("gpupools", pool)["metadata"]["resourceVersion"],
        "deployment": gp.apps.read_namespaced_deployment(model, gp.namespace).metadata.resource_version,
        "service": gp.core.read_namespaced_service(model, gp.namespace).metadata.resource_version,
        "pdb": client.PolicyV1Api(gp.core.api_client)
        .read_namespaced_pod_disruption_budget(model, gp.namespace)
        .metadata.resource_version,
    }
    for claim in gp.claims(pool):
        versions[f"claim/{claim['metadata']['name']}"] = claim["metadata"]["resourceVersion"]
    return versions


def _planned_events(gp: Gpupool, model: str) -> int:
    return sum(e.count or 1 for e in gp.events(model, gp.namespace) if e.reason == "Planned")


def _serve(gp: Gpupool, cloud: SimCloud) -> tuple[str, str]:
    provider = gp.create_provider("sim", cloud.url)
    pool = gp.create_pool("pool", [provider], limits={"maxGpus": 16})
    gp.create_model("llama", model=MODEL, pool=pool, engine={"maxModelLen": 8192})
    wait_for(lambda: _ready(gp, "llama"), timeout=120, what="ModelDeployment Ready")

    # Ready comes from the Deployment; the claim and the cost settle a moment after.
    def settled() -> bool:
        claims = gp.claims(pool)
        status = gp.get("gpupools", pool).get("status") or {}
        md = gp.get("modeldeployments", "llama")["status"]
        return bool(claims) and (
            all((c.get("status") or {}).get("phase") == "Ready" for c in claims)
            and bool(md.get("costPerHour"))
            and status.get("nodes") == len(claims)
            and status.get("gpusTotal") == sum(c["spec"]["offer"]["gpuCount"] for c in claims)
            and status.get("gpusAllocated") == md["placement"]["gpusPerReplica"]
        )

    wait_for(settled, timeout=30, what="claims Ready, the model's cost and the pool's totals reported")
    return provider, pool


def _reconciled_everything_since_start(operator: OperatorProcess, gp: Gpupool) -> Callable[[], bool]:
    """True once the restarted operator has reconciled every ModelDeployment, pool and claim at
    least once, and again after its providers listed offers (which wakes their buyers)."""
    custom = gp.custom

    def count(plural: str) -> int:
        # Objects being deleted have no loop any more (their finalizer does the rest).
        items = custom.list_cluster_custom_object(GROUP, VERSION, plural)["items"]
        return sum(1 for item in items if not item["metadata"].get("deletionTimestamp"))

    def done() -> bool:
        port = operator.metrics_port
        return (
            counter(port, "gpupool_reconcile_total", controller="modeldeployment")
            >= count("modeldeployments")
            and counter(port, "gpupool_reconcile_total", controller="pool") >= count("gpupools")
            and counter(port, "gpupool_reconcile_total", controller="nodeclaim") >= count("gpunodeclaims")
            and counter(port, "gpupool_reconcile_total", controller="provider") >= count("gpuproviders")
        )

    return done


def test_a_restart_in_steady_state_keeps_the_placement_and_writes_nothing(
    gp: Gpupool, start_simcloud: Callable[..., SimCloud], operator: OperatorProcess
) -> None:
    cloud = start_simcloud()
    _provider, pool = _serve(gp, cloud)
    before = _versions(gp, pool, "llama")
    placement = gp.get("modeldeployments", "llama")["status"]["placement"]
    # The chosen GPU gets three times dearer: a fresh plan would go elsewhere.
    cloud.move_prices(3.0, gpu=placement["gpu"])

    operator.restart()
    wait_for(_reconciled_everything_since_start(operator, gp), timeout=60, what="a reconcile of every object")
    # The provider's first listing wakes every model and pool that buys from it: wait for that
    # second look too, which is when a re-plan would happen.
    wait_for(
        lambda: (
            counter(operator.metrics_port, "gpupool_provider_offers") > 0
            and counter(operator.metrics_port, "gpupool_reconcile_total", controller="modeldeployment")
            >= len(gp.custom.list_cluster_custom_object(GROUP, VERSION, "modeldeployments")["items"]) + 1
        ),
        timeout=60,
        what="models looked at again after the offers came",
    )
    after = _versions(gp, pool, "llama")
    assert after == before, "the restart wrote to objects in steady state"
    assert gp.get("modeldeployments", "llama")["status"]["placement"] == placement
    applies = counter(operator.metrics_port, "gpupool_kube_requests_total", verb="apply")
    assert applies == 0, f"{applies} server-side applies after a restart in steady state"


def test_kubectl_scale_adds_replicas_without_a_replan(
    gp: Gpupool, start_simcloud: Callable[..., SimCloud], operator: OperatorProcess
) -> None:
    cloud = start_simcloud()
    _serve(gp, cloud)
    md = gp.get("modeldeployments", "llama")
    placement = md["status"]["placement"]
    planned = _planned_events(gp, "llama")
    cloud.move_prices(3.0, gpu=placement["gpu"])
    # The scale subresource, as `kubectl scale` and the HPA use it.
    gp.custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, gp.namespace, "modeldeployments", "llama", {"spec": {"replicas": 2}}
    )
    wait_for(lambda: _ready(gp, "llama", replicas=2), timeout=120, what="2 replicas Ready")
    md = gp.get("modeldeployments", "llama")
    assert md["status"]["placement"] == placement
    assert _planned_events(gp, "llama") == planned, "scaling planned again"
    pods = ready_pods(gp.core, gp.namespace, "gpupool.dev/model-deployment=llama")
    assert len(pods) == 2
    assert {p.spec.node_selector.get("gpupool.dev/gpu") for p in pods if p.spec.node_selector} <= {
        placement["gpu"],
        None,
    }


def test_a_provider_being_deleted_is_never_bought_from(
    gp: Gpupool, start_simcloud: Callable[..., SimCloud], operator: OperatorProcess
) -> None:
    from tests.integration.conftest import gpu_deployment

    cloud = start_simcloud()
    provider = gp.create_provider("sim", cloud.url)
    pool = gp.create_pool("pool", [provider])
    gp.apps.create_namespaced_deployment(gp.namespace, gpu_deployment("first", pool, gpus=1))
    wait_for(lambda: len(ready_pods(gp.core, gp.namespace, "app=first")) == 1, timeout=60, what="first pod")
    # Its claim keeps the provider (and its finalizer) until the claim is gone.
    gp.custom.delete_cluster_custom_object(GROUP, VERSION, "gpuproviders", provider)
    wait_for(
        lambda: (gp.condition(gp.get("gpupools", pool), "Ready") or {}).get("reason") == "ProviderNotFound",
        timeout=30,
        what="the pool saying its provider is going",
    )
    claims_before = {c["metadata"]["name"] for c in gp.claims(pool)}
    gp.apps.create_namespaced_deployment(gp.namespace, gpu_deployment("second", pool, gpus=1, replicas=3))
    # The pool looks at the new pods (a batch closes within seconds) and buys nothing.
    wait_for(
        lambda: (
            gp.condition(gp.get("gpupools", pool), "Degraded") is not None
            and gp.condition(gp.get("gpupools", pool), "Degraded")["status"] == "True"
        ),
        timeout=30,
        what="the pool Degraded: no offer for the new pods",
    )
    assert {c["metadata"]["name"] for c in gp.claims(pool)} == claims_before
    assert len(cloud.instances()) == len(claims_before)


def test_teardown_under_cloud_faults_finishes_once_the_cloud_answers(
    gp: Gpupool, start_simcloud: Callable[..., SimCloud], operator: OperatorProcess
) -> None:
    from tests.integration.conftest import gpu_deployment

    cloud = start_simcloud()
    provider = gp.create_provider("sim", cloud.url)
    pool = gp.create_pool("pool", [provider])
    gp.apps.create_namespaced_deployment(gp.namespace, gpu_deployment("work", pool, gpus=1, replicas=3))
    wait_for(lambda: len(ready_pods(gp.core, gp.namespace, "app=work")) == 3, timeout=90, what="3 pods")
    failed_before = counter(
        operator.metrics_port, "gpupool_provider_requests_total", provider=provider, result="transient"
    )
    cloud.fault(scope="*", errorRate=0.8, errorStatus=503)
    gp.custom.delete_cluster_custom_object(GROUP, VERSION, "gpupools", pool)
    gp.custom.delete_cluster_custom_object(GROUP, VERSION, "gpuproviders", provider)
    # Teardown runs into the faults (calls still failing after their retries) before they end.
    wait_for(
        lambda: (
            counter(
                operator.metrics_port,
                "gpupool_provider_requests_total",
                provider=provider,
                result="transient",
            )
            >= failed_before + 2
        ),
        timeout=90,
        what="teardown calls failing under the faults",
    )
    cloud.clear_faults()

    def gone() -> bool:
        claims = gp.custom.list_cluster_custom_object(
            GROUP, VERSION, "gpunodeclaims", label_selector=f"gpupool.dev/pool={pool}"
        )["items"]
        providers = [
            p
            for p in gp.custom.list_cluster_custom_object(GROUP, VERSION, "gpuproviders")["items"]
            if p["metadata"]["name"] == provider
        ]
        return not claims and not providers

    wait_for(gone, timeout=120, what="the pool's claims and the provider gone")
    assert not [i for i in cloud.instances() if i["state"] not in ("terminating", "terminated")]


def test_expiry_of_six_nodes_with_a_budget_of_two_never_disrupts_more_than_two(
    gp: Gpupool, start_simcloud: Callable[..., SimCloud], operator: OperatorProcess
) -> None:
    import time
    from datetime import UTC, datetime, timedelta

    from tests.integration.conftest import gpu_deployment

    cloud = start_simcloud()
    provider = gp.create_provider("sim", cloud.url)
    pool = gp.create_pool(
        "pool", [provider], gpuTypes=["T4"],
        disruption={"consolidateAfter": "1h", "expireAfter": "10m", "launchTimeout": "2m", "budgets": [{"nodes": "2"}]},
    )  # fmt: skip
    # One pod per node: a pod anti-affinity on the hostname spreads them.
    deployment = gpu_deployment("work", pool, gpus=1, replicas=6)
    deployment["spec"]["template"]["spec"]["affinity"] = {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "work"}}, "topologyKey": "kubernetes.io/hostname"}]}}  # fmt: skip
    gp.apps.create_namespaced_deployment(gp.namespace, deployment)
    wait_for(lambda: len(ready_pods(gp.core, gp.namespace, "app=work")) == 6, timeout=120, what="6 pods")
    originals = {c["metadata"]["name"] for c in gp.claims(pool)}
    assert len(originals) >= 6
    # Age them: launched two hours ago, past expireAfter.
    old = (datetime.now(UTC) - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for name in originals:
        gp.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "gpunodeclaims", name, {"status": {"launchedAt": old}}
        )
    most = 0
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        claims = {c["metadata"]["name"]: c for c in gp.claims(pool)}
        going = sum(1 for n in originals if n in claims and claims[n]["metadata"].get("deletionTimestamp"))
        most = max(most, going)
        if not originals & set(claims):
            break
        time.sleep(0.2)
    assert not originals & {c["metadata"]["name"] for c in gp.claims(pool)}, (
        "expired nodes were not all replaced"
    )
    assert most <= 2, f"{most} nodes were disrupted at once under a budget of 2"
    assert most == 2, "the budget allows two at a time; expiry went one by one"
    wait_for(
        lambda: len(ready_pods(gp.core, gp.namespace, "app=work")) == 6, timeout=120, what="6 pods again"
    )
