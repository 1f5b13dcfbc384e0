"""Provisioning end to end: pending GPU pods -> GpuNodeClaims -> simcloud instances -> KWOK nodes.

Everything is real but the GPUs: the operator and simcloud are processes, the scheduler
binds the pods, KWOK plays the kubelet. Each test owns its provider, pool and namespace.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import wait_for
from tests.integration.conftest import Gpupool, OperatorProcess, SimCloud, gpu_deployment, ready_pods

pytestmark = pytest.mark.cluster


def _instances_of(cloud: SimCloud, operator: OperatorProcess, pool: str) -> list[dict[str, Any]]:
    return [
        i for i in cloud.instances(operator.cluster_name)
        if i["tags"].get("gpupool.dev/pool") == pool and i["state"] not in ("terminated", "terminating")
    ]  # fmt: skip


def test_pending_pods_get_nodes_and_run(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str
) -> None:
    provider = gp.create_provider("sim", simcloud.url)
    pool = gp.create_pool("pool", [provider], gpuTypes=["L4"], limits={"maxGpus": 8})
    start = time.monotonic()
    gp.apps.create_namespaced_deployment(namespace, gpu_deployment("infer", pool, gpus=1, replicas=3))

    pods = wait_for(
        lambda: len(p := ready_pods(gp.core, namespace, "app=infer")) == 3 and p,
        timeout=90,
        what="3 Ready pods",
    )
    elapsed = time.monotonic() - start
    # The claims' status catches up with their nodes a moment after the pods run.
    claims = wait_for(
        lambda: (c := gp.claims(pool)) and all((x.get("status") or {}).get("phase") == "Ready" for x in c) and c,
        timeout=30, what="every claim Ready",
    )  # fmt: skip
    # Batched: three 1-GPU pods share as few instances as the cheapest L4 offers allow.
    assert 1 <= len(claims) <= 3
    nodes = {p.spec.node_name for p in pods}
    claim_nodes = {c["status"]["nodeName"] for c in claims}
    assert nodes <= claim_nodes
    for claim in claims:
        assert claim["spec"]["offer"]["gpu"] == "L4"
        assert claim["status"]["phase"] == "Ready"
        assert gp.condition(claim, "Ready")["status"] == "True"
    node = gp.core.read_node(next(iter(nodes)))
    assert node.metadata.labels["gpupool.dev/pool"] == pool
    assert any(t.key == "nvidia.com/gpu" for t in node.spec.taints)
    # The instances are exactly the claims' (no duplicate launch).
    assert sorted(i["id"] for i in _instances_of(simcloud, operator, pool)) == sorted(
        c["status"]["instanceId"] for c in claims
    )
    pool_obj = wait_for(
        lambda: (o := gp.get("gpupools", pool))["status"].get("gpusAllocated") == 3 and o,
        timeout=15, what="pool status: 3 GPUs allocated",
    )  # fmt: skip
    assert pool_obj["status"]["costPerHour"] == pytest.approx(
        sum(c["spec"]["offer"]["pricePerHour"] for c in claims), rel=1e-3
    )
    print(f"\npending pod to Ready pod (3 pods, boot delay 0): {elapsed:.1f}s")


def _ready_claims(gp: Gpupool, pool: str, count: int | None = None) -> list[dict[str, Any]]:
    """The pool's claims once every one is Ready (their status catches up with their nodes)."""

    def ready() -> list[dict[str, Any]] | None:
        # Claims given up after a capacity error may still be finishing their cleanup.
        claims = [c for c in gp.claims(pool) if not c["metadata"].get("deletionTimestamp")]
        if not claims or any((c.get("status") or {}).get("phase") != "Ready" for c in claims):
            return None
        return claims if count is None or len(claims) == count else None

    try:
        result: list[dict[str, Any]] = wait_for(ready, timeout=120, what=f"Ready claims of {pool}")
    except AssertionError as error:
        phases = {c["metadata"]["name"]: (c.get("status") or {}).get("phase") for c in gp.claims(pool)}
        raise AssertionError(f"{error}; claims now: {phases}") from None
    return result


def _wait_provider_ready(gp: Gpupool, name: str) -> None:
    wait_for(
        lambda: (c := gp.condition(gp.get("gpuproviders", name), "Ready")) and c["status"] == "True",
        timeout=30, what=f"GpuProvider {name} Ready",
    )  # fmt: skip


def _cheapest(cloud: SimCloud, gpu: str) -> dict[str, Any]:
    import httpx

    offers = httpx.get(f"{cloud.url}/v1/instance-types", timeout=5).json()["data"]
    mine = [o for o in offers if o["gpu"] == gpu and o.get("onDemandPrice")]
    return min(mine, key=lambda o: (o["onDemandPrice"] / o["gpuCount"], o["onDemandPrice"], o["key"]))


def test_capacity_error_fails_over_to_the_next_cheapest_offer(
    gp: Gpupool, start_simcloud: Any, operator: OperatorProcess, namespace: str
) -> None:
    cloud: SimCloud = start_simcloud()
    provider = gp.create_provider("sim", cloud.url)
    pool = gp.create_pool("pool", [provider], gpuTypes=["A100-80GB"], limits={"maxGpus": 1})
    _wait_provider_ready(gp, provider)
    # The operator listed the offers while they had capacity; now the cheapest runs out.
    cheapest = _cheapest(cloud, "A100-80GB")
    cloud.fault(scope=cheapest["key"], capacityError=True)
    gp.apps.create_namespaced_deployment(namespace, gpu_deployment("big", pool, gpus=1))

    wait_for(
        lambda: ready_pods(gp.core, namespace, "app=big"), timeout=90, what="the pod Ready on another offer"
    )
    ready_claims = _ready_claims(gp, pool, 1)
    offer = ready_claims[0]["spec"]["offer"]
    assert (offer["region"], offer["instanceType"]) != (cheapest["region"], cheapest["instanceType"])
    claim_events = gp.core.list_namespaced_event(
        "default", field_selector="reason=InsufficientCapacity"
    ).items
    assert any(pool in (e.involved_object.name or "") for e in claim_events)


def test_capacity_error_on_the_cheapest_offer_uses_another_provider(
    gp: Gpupool, start_simcloud: Any, operator: OperatorProcess, namespace: str
) -> None:
    # Two clouds with the same catalog; the first is cheaper (a 50 % discount) but out of H100s.
    cheap: SimCloud = start_simcloud()
    dear: SimCloud = start_simcloud()
    cheap_provider = gp.create_provider("cheap", cheap.url, discountPercent=50)
    dear_provider = gp.create_provider("dear", dear.url)
    pool = gp.create_pool("pool", [cheap_provider, dear_provider], gpuTypes=["H100"], limits={"maxGpus": 8})
    _wait_provider_ready(gp, cheap_provider)
    _wait_provider_ready(gp, dear_provider)
    cheap.fault(scope="H100", capacityError=True)
    gp.apps.create_namespaced_deployment(namespace, gpu_deployment("h100", pool, gpus=1))

    wait_for(lambda: ready_pods(gp.core, namespace, "app=h100"), timeout=120, what="the pod Ready")
    claims = _ready_claims(gp, pool, 1)
    assert [c["spec"]["offer"]["provider"] for c in claims] == [dear_provider]
    assert not _instances_of(cheap, operator, pool)
    # The cheap provider was tried first, and refused for capacity.
    pool_events = gp.events(pool)
    assert any(e.reason == "Provisioning" and cheap_provider in (e.message or "") for e in pool_events)
    refusals = gp.core.list_namespaced_event("default", field_selector="reason=InsufficientCapacity").items
    assert any(pool in (e.involved_object.name or "") for e in refusals)


def test_provider_errors_at_20_percent_converge_without_duplicates(
    gp: Gpupool, start_simcloud: Any, operator: OperatorProcess, namespace: str
) -> None:
    cloud: SimCloud = start_simcloud(seed=11)
    cloud.fault(scope="*", errorRate=0.2, errorStatus=503)
    cloud.fault(scope="*", errorRate=0.2, errorStatus=429)
    provider = gp.create_provider("flaky", cloud.url)
    pool = gp.create_pool("pool", [provider], gpuTypes=["L4"], limits={"maxGpus": 16})
    gp.apps.create_namespaced_deployment(namespace, gpu_deployment("flaky", pool, gpus=2, replicas=4))

    wait_for(lambda: len(ready_pods(gp.core, namespace, "app=flaky")) == 4, timeout=150, what="4 Ready pods")
    claims = _ready_claims(gp, pool)
    cloud.clear_faults()
    instances = _instances_of(cloud, operator, pool)
    assert sorted(i["id"] for i in instances) == sorted(c["status"]["instanceId"] for c in claims)
    # One instance per claim UID: a retried launch found the first instead of making a second.
    uids = [i["tags"]["gpupool.dev/claim-uid"] for i in instances]
    assert len(uids) == len(set(uids))


def test_pool_limit_keeps_pods_pending_until_raised(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str
) -> None:
    provider = gp.create_provider("sim", simcloud.url)
    pool = gp.create_pool("pool", [provider], gpuTypes=["L4"], limits={"maxGpus": 1})
    gp.apps.create_namespaced_deployment(namespace, gpu_deployment("wide", pool, gpus=2))

    def limited() -> bool:
        degraded = gp.condition(gp.get("gpupools", pool), "Degraded")
        return bool(degraded and degraded["status"] == "True" and degraded["reason"] == "LimitReached")

    wait_for(limited, timeout=60, what="pool Degraded with LimitReached")
    message = gp.condition(gp.get("gpupools", pool), "Degraded")["message"]
    assert "maxGpus" in message, message
    assert any(e.reason == "LimitReached" and e.type == "Warning" for e in gp.events(pool))
    assert not gp.claims(pool)
    pods = gp.core.list_namespaced_pod(namespace, label_selector="app=wide").items
    assert all(p.status.phase == "Pending" for p in pods)

    gp.patch("gpupools", pool, {"spec": {"limits": {"maxGpus": 8}}})
    wait_for(
        lambda: ready_pods(gp.core, namespace, "app=wide"), timeout=90, what="the pod Ready after raising"
    )
    wait_for(lambda: gp.condition(gp.get("gpupools", pool), "Degraded")["status"] == "False",
             timeout=30, what="Degraded cleared")  # fmt: skip


def test_operator_killed_while_launching_leaks_nothing_and_launches_nothing_twice(
    gp: Gpupool, start_simcloud: Any, operator: OperatorProcess, namespace: str
) -> None:
    # Slow launches widen the window between "the cloud said yes" and "the claim recorded it".
    cloud: SimCloud = start_simcloud(seed=3)
    cloud.fault(scope="*", latencyMs=700)
    provider = gp.create_provider("slow", cloud.url)
    pool = gp.create_pool("pool", [provider], gpuTypes=["L4"], limits={"maxGpus": 16})
    gp.apps.create_namespaced_deployment(namespace, gpu_deployment("crashy", pool, gpus=1, replicas=6))

    for delay in (2.0, 1.3, 2.7, 0.9):
        time.sleep(delay)
        operator.restart()
    cloud.clear_faults()
    wait_for(lambda: len(ready_pods(gp.core, namespace, "app=crashy")) == 6, timeout=180, what="6 Ready pods")

    def cloud_matches_claims() -> bool:
        claims = gp.claims(pool)
        ids = sorted((c.get("status") or {}).get("instanceId") or "" for c in claims)
        return ids == sorted(i["id"] for i in _instances_of(cloud, operator, pool))

    # Orphans from an interrupted launch are terminated by the garbage collector.
    wait_for(cloud_matches_claims, timeout=60, what="simcloud's instances == the claims' instances")
    uids = [i["tags"]["gpupool.dev/claim-uid"] for i in _instances_of(cloud, operator, pool)]
    assert len(uids) == len(set(uids))


def test_deleting_the_pool_terminates_every_instance_and_removes_every_node(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str
) -> None:
    provider = gp.create_provider("sim", simcloud.url)
    pool = gp.create_pool("pool", [provider], gpuTypes=["L4"], limits={"maxGpus": 8})
    gp.apps.create_namespaced_deployment(namespace, gpu_deployment("gone", pool, gpus=1, replicas=2))
    wait_for(lambda: len(ready_pods(gp.core, namespace, "app=gone")) == 2, timeout=90, what="2 Ready pods")
    nodes = {c["status"]["nodeName"] for c in _ready_claims(gp, pool)}
    assert _instances_of(simcloud, operator, pool)

    gp.custom.delete_cluster_custom_object("gpupool.dev", "v1alpha1", "gpupools", pool)
    wait_for(lambda: not gp.claims(pool), timeout=90, what="claims gone")
    wait_for(lambda: not _instances_of(simcloud, operator, pool), timeout=30, what="instances terminated")

    def nodes_gone() -> bool:
        names = {n.metadata.name for n in gp.core.list_node().items}
        return not (nodes & names)

    wait_for(nodes_gone, timeout=30, what="nodes removed")


def test_empty_node_is_consolidated(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str
) -> None:
    provider = gp.create_provider("sim", simcloud.url)
    pool = gp.create_pool("pool", [provider], gpuTypes=["L4"], limits={"maxGpus": 8})
    gp.apps.create_namespaced_deployment(namespace, gpu_deployment("brief", pool, gpus=1))
    wait_for(lambda: ready_pods(gp.core, namespace, "app=brief"), timeout=90, what="a Ready pod")
    assert gp.claims(pool)
    gp.apps.delete_namespaced_deployment("brief", namespace)
    # consolidateAfter is 10s in these pools.
    wait_for(lambda: not gp.claims(pool), timeout=60, what="the empty node consolidated")
    wait_for(lambda: not _instances_of(simcloud, operator, pool), timeout=30, what="its instance terminated")
    assert any(e.reason == "Consolidating" for e in gp.events(pool))


def test_spot_interruption_replaces_the_node(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str
) -> None:
    provider = gp.create_provider("sim", simcloud.url)
    pool = gp.create_pool("pool", [provider], gpuTypes=["L4"], capacityTypes=["spot"], limits={"maxGpus": 8})
    gp.apps.create_namespaced_deployment(namespace, gpu_deployment("spotty", pool, gpus=1))
    wait_for(lambda: ready_pods(gp.core, namespace, "app=spotty"), timeout=90, what="a Ready pod")
    claim = _ready_claims(gp, pool, 1)[0]
    assert claim["spec"]["offer"]["capacityType"] == "spot"
    simcloud.interrupt(claim["status"]["instanceId"])

    def replaced() -> bool:
        claims = gp.claims(pool)
        others = [c for c in claims if c["metadata"]["name"] != claim["metadata"]["name"]]
        pods = ready_pods(gp.core, namespace, "app=spotty")
        return bool(others and pods and pods[0].spec.node_name != claim["status"]["nodeName"])

    wait_for(replaced, timeout=90, what="a replacement node with the pod on it")
    assert any(e.reason == "SpotInterrupted" for e in gp.events(claim["metadata"]["name"]))


def test_launch_that_never_registers_times_out_and_moves_on(
    gp: Gpupool, start_simcloud: Any, operator: OperatorProcess, namespace: str
) -> None:
    cloud: SimCloud = start_simcloud()
    provider = gp.create_provider("sim", cloud.url)
    pool = gp.create_pool(
        "pool", [provider], gpuTypes=["L4"], limits={"maxGpus": 4},
        disruption={"consolidateAfter": "10s", "launchTimeout": "30s"},
    )  # fmt: skip
    _wait_provider_ready(gp, provider)
    cheapest = _cheapest(cloud, "L4")
    cloud.fault(scope=cheapest["key"], neverRegister=True)
    gp.apps.create_namespaced_deployment(namespace, gpu_deployment("stuck", pool, gpus=1))

    wait_for(lambda: ready_pods(gp.core, namespace, "app=stuck"), timeout=120, what="the pod Ready elsewhere")
    claim = _ready_claims(gp, pool, 1)[0]
    assert claim["spec"]["offer"]["region"] != cheapest["region"] or (
        claim["spec"]["offer"]["instanceType"] != cheapest["instanceType"]
    )
    timeouts = gp.core.list_namespaced_event("default", field_selector="reason=RegistrationTimeout").items
    assert any(pool in (e.involved_object.name or "") for e in timeouts)
    # The instance that never became a node was terminated, not leaked.
    wait_for(
        lambda: [i["id"] for i in _instances_of(cloud, operator, pool)] == [claim["status"]["instanceId"]],
        timeout=30, what="only the working instance left",
    )  # fmt: skip


def test_orphaned_instance_is_garbage_collected(
    gp: Gpupool, start_simcloud: Any, operator: OperatorProcess, namespace: str
) -> None:
    import uuid

    import httpx

    cloud: SimCloud = start_simcloud()
    provider = gp.create_provider("sim", cloud.url)
    pool = gp.create_pool("pool", [provider], gpuTypes=["L4"])
    _wait_provider_ready(gp, provider)
    offer = _cheapest(cloud, "L4")
    # An instance tagged as this cluster's whose claim does not exist: what a claim deleted
    # by hand (finalizer and all) would leave behind.
    orphan = httpx.post(f"{cloud.url}/v1/instances", timeout=5, json={
        "region": offer["region"], "zone": offer.get("zone") or "", "instanceType": offer["instanceType"],
        "tags": {"gpupool.dev/cluster": operator.cluster_name, "gpupool.dev/claim-uid": str(uuid.uuid4()),
                 "gpupool.dev/pool": pool},
    }).json()["data"]  # fmt: skip
    # Someone else's instance (no cluster tag of ours) must be left alone.
    foreign = httpx.post(f"{cloud.url}/v1/instances", timeout=5, json={
        "region": offer["region"], "zone": offer.get("zone") or "", "instanceType": offer["instanceType"],
        "tags": {"team": "someone-else"},
    }).json()["data"]  # fmt: skip

    def state_of(instance_id: str) -> str:
        data = httpx.get(f"{cloud.url}/v1/instances/{instance_id}", timeout=5).json()["data"]
        return str(data["state"])

    # GC runs every 5 s here with a 5 s grace period (GPUPOOL_GC_INTERVAL/GRACE in the harness).
    wait_for(
        lambda: state_of(orphan["id"]) in ("terminating", "terminated"), timeout=60, what="orphan terminated"
    )
    assert state_of(foreign["id"]) in ("pending", "running")


def test_drain_respects_pod_disruption_budgets(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str
) -> None:
    provider = gp.create_provider("sim", simcloud.url)
    pool = gp.create_pool("pool", [provider], gpuTypes=["L4"], limits={"maxGpus": 4})
    gp.apps.create_namespaced_deployment(namespace, gpu_deployment("guarded", pool, gpus=1))
    policy = client.PolicyV1Api(gp.core.api_client)
    policy.create_namespaced_pod_disruption_budget(namespace, {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "guarded"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}},
    })  # fmt: skip
    pod = wait_for(lambda: ready_pods(gp.core, namespace, "app=guarded"), timeout=90, what="a Ready pod")[0]
    claim = _ready_claims(gp, pool, 1)[0]
    name = claim["metadata"]["name"]

    gp.custom.delete_cluster_custom_object("gpupool.dev", "v1alpha1", "gpunodeclaims", name)
    node = pod.spec.node_name
    wait_for(lambda: gp.core.read_node(node).spec.unschedulable, timeout=30, what="node cordoned")
    time.sleep(6)
    # The budget refuses the eviction: the pod keeps serving and the claim keeps its finalizer.
    assert gp.core.read_namespaced_pod(pod.metadata.name, namespace).metadata.deletion_timestamp is None
    assert gp.get("gpunodeclaims", name)["metadata"].get("deletionTimestamp")

    policy.delete_namespaced_pod_disruption_budget("guarded", namespace)
    wait_for(
        lambda: name not in {c["metadata"]["name"] for c in gp.claims(pool)}, timeout=60, what="claim gone"
    )
    # The evicted pod's replacement gets a new node from the pool.
    wait_for(
        lambda: (p := ready_pods(gp.core, namespace, "app=guarded")) and p[0].spec.node_name != node,
        timeout=90, what="the pod Ready on a new node",
    )  # fmt: skip
