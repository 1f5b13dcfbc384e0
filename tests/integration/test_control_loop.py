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
    wait_for(
        lambda: (
            all((c.get("status") or {}).get("phase") == "Ready" for c in gp.claims(pool))
            and gp.get("modeldeployments", "llama")["status"].get("costPerHour")
        ),
        timeout=30,
        what="claims Ready and the cost reported",
    )
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
