"""The pure decisions inside the controllers, without a cluster: what a pod asks, when a batch
closes, what counts as capacity on its way, which nodes are consolidated, which instances are
orphans, and what a claim's launch request and node patch look like."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gpupool.api import GpuNodeClaim
from gpupool.api.pool import Taint, TaintEffect
from gpupool.controllers.gc import orphans
from gpupool.controllers.nodeclaim.launch import launch_request, node_labels
from gpupool.controllers.nodeclaim.registration import NodeInfo, node_info, node_patch, status_behind_node
from gpupool.controllers.pool.consolidation import consolidation_candidates
from gpupool.controllers.pool.pending import is_unschedulable, pod_demand, pod_gpus
from gpupool.controllers.pool.provisioning import BatchWindow, batch_ready, claim_manifest, pool_capacity
from gpupool.controllers.pool.status import pool_totals
from gpupool.planner import NewInstance
from gpupool.planner.resources import Resources
from gpupool.providers.base import Instance, InstanceState

UNSCHEDULABLE = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
BATCH_IDLE, BATCH_MAX = 1.0, 10.0


def on(gpus: dict[str, int]):  # type: ignore[no-untyped-def]
    """A node -> GPUs-in-use lookup, as the pool controller reads its index."""
    return lambda node: gpus.get(node, 0)


def pod(
    *, gpus: int = 1, pool: str | None = "p", via: str = "selector", gpu: tuple[str, ...] = (), **status: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]
    }
    if pool and via == "selector":
        spec["nodeSelector"] = {"gpupool.dev/pool": pool}
    elif pool:
        expressions = [{"key": "gpupool.dev/pool", "operator": "In", "values": [pool]}]
        if gpu:
            expressions.append({"key": "gpupool.dev/gpu", "operator": "In", "values": list(gpu)})
        spec["affinity"] = {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": expressions}]}}}  # fmt: skip
    return {"metadata": {"name": "x", "namespace": "ns"}, "spec": spec,
            "status": {"phase": "Pending", "conditions": [UNSCHEDULABLE], **status}}  # fmt: skip


def claim(
    name: str,
    *,
    gpus: int = 4,
    price: float = 2.0,
    node: str | None = None,
    phase: str = "Launched",
    deleting: bool = False,
    **extra: Any,
) -> GpuNodeClaim:
    status: dict[str, Any] = {"phase": phase, **extra}
    if node:
        status["nodeName"] = node
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return GpuNodeClaim.from_k8s({
        "metadata": meta,
        "spec": {"pool": "p", "offer": {"provider": "sim", "region": "r", "instanceType": "it", "gpu": "L4",
                                         "gpuCount": gpus, "capacityType": "on-demand", "pricePerHour": price}},
        "status": status,
    })  # fmt: skip


class TestPodDemand:
    def test_selector_and_affinity_both_name_the_pool(self) -> None:
        assert pod_demand(pod(via="selector")).pool == "p"  # type: ignore[union-attr]
        demand = pod_demand(pod(via="affinity", gpu=("H100", "A100-80GB")))
        assert demand is not None and demand.gpu_types == ("A100-80GB", "H100")

    def test_no_pool_or_no_gpu_is_not_demand(self) -> None:
        assert pod_demand(pod(pool=None)) is None
        assert pod_demand(pod(gpus=0)) is None

    def test_gpus_sum_containers_and_take_the_largest_init_container(self) -> None:
        spec = {
            "containers": [{"resources": {"limits": {"nvidia.com/gpu": "2"}}}, {"resources": {"requests": {"nvidia.com/gpu": "1"}}}],
            "initContainers": [{"resources": {"limits": {"nvidia.com/gpu": "4"}}}],
        }  # fmt: skip
        assert pod_gpus(spec) == 4
        spec["initContainers"] = []
        assert pod_gpus(spec) == 3

    def test_only_unbound_pending_pods_the_scheduler_gave_up_on(self) -> None:
        assert is_unschedulable(pod())
        assert not is_unschedulable(pod(conditions=[]))
        bound = pod()
        bound["spec"]["nodeName"] = "n1"
        assert not is_unschedulable(bound)
        assert not is_unschedulable(pod(phase="Running"))
        deleting = pod()
        deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        assert not is_unschedulable(deleting)


class TestBatching:
    def test_closes_after_idle_and_says_when(self) -> None:
        ready, window, closes_in = batch_ready(None, frozenset({"a"}), 100.0, BATCH_IDLE, BATCH_MAX)
        assert not ready and closes_in == pytest.approx(BATCH_IDLE)
        ready, window, closes_in = batch_ready(
            window, frozenset({"a"}), 100.0 + BATCH_IDLE, BATCH_IDLE, BATCH_MAX
        )
        assert ready and closes_in is None

    def test_new_pods_keep_it_open_until_the_maximum(self) -> None:
        window = None
        now = 0.0
        pods: frozenset[str] = frozenset()
        closed_at = None
        while now < BATCH_MAX + 5:
            pods = pods | {f"p{now}"}  # a new pod every half second
            ready, window, _ = batch_ready(window, pods, now, BATCH_IDLE, BATCH_MAX)
            if ready:
                closed_at = now
                break
            now += 0.5
        assert closed_at == pytest.approx(BATCH_MAX)

    def test_no_pods_no_window(self) -> None:
        window = BatchWindow(1.0, 1.0, frozenset({"a"}))
        assert batch_ready(window, frozenset(), 5.0, BATCH_IDLE, BATCH_MAX) == (False, None, None)


class TestCapacityAndTotals:
    def test_every_live_claim_counts_with_the_gpus_its_pods_do_not_hold(self) -> None:
        # A Ready node's free GPUs count as much as a launching one's: the scheduler may not
        # have bound the pending pod to it yet, and buying again for that pod would double it.
        claims = [
            claim("launching"),
            claim("ready", node="n1", phase="Ready"),
            claim("full", node="n2", phase="Ready"),
        ]
        deleting = claim("deleting", deleting=True)
        capacity = pool_capacity([*claims, deleting], on({"n1": 3, "n2": 4}), lambda _node: Resources(), "p")
        assert {c.name: c.free_gpus for c in capacity} == {"launching": 4, "ready": 1, "full": 0}

    def test_totals(self) -> None:
        totals = pool_totals([claim("a", node="n1", price=1.5), claim("b", price=2.5)], on({"n1": 9}))
        assert totals == {"nodes": 1, "gpusTotal": 4, "gpusAllocated": 4, "costPerHour": 4.0}

    def test_claim_manifest_leaves_out_empty_zone_and_unknown_memory(self) -> None:
        from gpupool.catalog import Offer

        offer = Offer("sim", "r", "", "it", "L4", 1, 0.0, None, None, 1.0, None)
        manifest = claim_manifest("p", "u", NewInstance(offer, "on-demand", 1.0, ("a",), 1)).to_k8s()
        assert "zone" not in manifest["spec"]["offer"] and "gpuMemoryGiB" not in manifest["spec"]["offer"]
        assert manifest["metadata"]["ownerReferences"][0]["uid"] == "u"
        assert manifest["metadata"]["labels"] == {"gpupool.dev/pool": "p"}


class TestConsolidation:
    def test_empty_ready_node_goes_after_the_delay(self) -> None:
        claims = [claim("a", node="n1", phase="Ready"), claim("b", node="n2", phase="Ready")]
        doomed, clock = consolidation_candidates(claims, on({"n2": 1}), {}, 100.0, 30.0, 0)
        assert doomed == [] and clock == {"n1": 100.0}
        doomed, clock = consolidation_candidates(claims, on({"n2": 1}), clock, 130.0, 30.0, 0)
        assert doomed == ["a"]

    def test_nothing_goes_while_pods_are_pending(self) -> None:
        doomed, _ = consolidation_candidates(
            [claim("a", node="n1", phase="Ready")], on({}), {"n1": 0.0}, 999.0, 30.0, 2
        )
        assert doomed == []


class TestExpiration:
    def test_claims_older_than_expire_after_go(self) -> None:
        from gpupool.controllers.pool.consolidation import expired_claims

        now = datetime(2026, 1, 2, tzinfo=UTC).timestamp()
        claims = [
            claim("old", launchedAt="2026-01-01T00:00:00Z"),
            claim("new", launchedAt="2026-01-01T23:30:00Z"),
            claim("unlaunched"),
        ]
        assert expired_claims(claims, now, 3600.0) == ["old"]
        assert expired_claims(claims, now, None) == []


class TestGarbageCollection:
    def test_only_our_instances_without_a_claim_past_the_grace(self) -> None:
        now = datetime(2026, 1, 1, tzinfo=UTC)
        old, new = now - timedelta(minutes=5), now - timedelta(seconds=5)

        def inst(
            i: str, uid: str | None, at: datetime, state: InstanceState = InstanceState.RUNNING
        ) -> Instance:
            return Instance(id=i, state=state, provider_id=f"sim://{i}", region="r", instance_type="it",
                            claim_uid=uid, launched_at=at)  # fmt: skip

        instances = [
            inst("kept", "live", old),
            inst("orphan", "gone", old),
            inst("young", "gone2", new),
            inst("foreign", None, old),
            inst("ending", "gone3", old, InstanceState.TERMINATING),
        ]
        assert [i.id for i in orphans(instances, ["live"], now, 60)] == ["orphan"]


class TestLaunch:
    def test_request_and_user_data_come_from_the_claim(self) -> None:
        c = claim("c1")
        request = launch_request(
            c, cluster_name="prod", pool_labels={"team": "ml"}, pool_taints=[],
            user_data_template="join --labels=${GPUPOOL_NODE_LABELS} --taints=${GPUPOOL_NODE_TAINTS} ${UNKNOWN} $$HOME",
        )  # fmt: skip
        assert request.claim_uid == "uid-c1" and request.max_price is None
        assert request.labels["team"] == "ml" and request.labels["gpupool.dev/pool"] == "p"
        assert "gpupool.dev/gpu=L4" in request.user_data
        assert "--taints=nvidia.com/gpu=present:NoSchedule" in request.user_data
        assert "${UNKNOWN} $HOME" in request.user_data

    def test_operator_labels_win_over_pool_labels(self) -> None:
        labels = node_labels(claim("c1"), {"gpupool.dev/pool": "spoofed"})
        assert labels["gpupool.dev/pool"] == "p"

    def test_user_data_without_placeholders_is_unchanged(self) -> None:
        request = launch_request(
            claim("c"),
            cluster_name="prod",
            pool_labels={},
            pool_taints=[],
            user_data_template="#!/bin/sh\necho hi\n",
        )
        assert request.user_data == "#!/bin/sh\necho hi\n"

    def test_pool_taints_travel_with_the_request_and_the_default_bootstrap_is_used(self) -> None:
        request = launch_request(
            claim("c"), cluster_name="prod", pool_labels={},
            pool_taints=[Taint(key="team", value="ml", effect=TaintEffect.NO_SCHEDULE)], user_data_template="",
        )  # fmt: skip
        assert request.taints == (("team", "ml", "NoSchedule"),)
        assert "kubeadm join" in request.user_data
        assert "nvidia.com/gpu=present:NoSchedule,team=ml:NoSchedule" in request.user_data


class TestNodePatch:
    def test_adds_missing_labels_and_taints_only(self) -> None:
        body = {
            "metadata": {"name": "n1", "labels": {"a": "1"}},
            "spec": {"providerID": "sim://1", "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]},
        }  # fmt: skip
        info = node_info(body)
        assert info is not None and info.ready
        patch = node_patch(
            info, {"a": "1", "b": "2"}, [Taint(key="team", value="ml", effect=TaintEffect.NO_SCHEDULE)]
        )
        assert patch == {
            "metadata": {"labels": {"b": "2"}},
            "spec": {"taints": [
                {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
                {"key": "team", "value": "ml", "effect": "NoSchedule"},
            ]},
        }  # fmt: skip
        assert node_patch(info, {"a": "1"}, []) is None

    def test_a_node_without_provider_id_is_not_indexed(self) -> None:
        assert node_info({"metadata": {"name": "n"}, "spec": {}}) is None


class TestStatusBehindNode:
    """A claim's own change wakes it while its status lags its Node (whose events woke nobody)."""

    def _node(self, *, ready: bool) -> NodeInfo:
        return NodeInfo(
            name="n1", provider_id="sim://1", ready=ready, unschedulable=False, labels={}, taints=()
        )

    def test_a_node_the_claim_has_not_recorded_yet(self) -> None:
        launched = {"phase": "Launched", "providerID": "sim://1"}
        assert status_behind_node(launched, self._node(ready=False))
        assert status_behind_node(launched, self._node(ready=True))

    def test_a_ready_node_of_a_claim_not_ready(self) -> None:
        registered = {"phase": "Registered", "providerID": "sim://1", "nodeName": "n1"}
        assert status_behind_node(registered, self._node(ready=True))
        assert not status_behind_node(registered, self._node(ready=False))

    def test_caught_up_or_no_node_yet(self) -> None:
        ready = {"phase": "Ready", "providerID": "sim://1", "nodeName": "n1"}
        assert not status_behind_node(ready, self._node(ready=True))
        assert not status_behind_node({"phase": "Launched", "providerID": "sim://1"}, None)
