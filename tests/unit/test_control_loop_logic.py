"""The pure pieces of the control loop: what a status write sends, what a kept plan holds and
when it is planned again, how a budget caps a scale, what wakes a claim, how loops back off."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from gpupool.api import GpuNodeClaim, GpuPoolSpec, ModelDeploymentSpec
from gpupool.catalog import Offer
from gpupool.controllers.loop import Wakeups, backoff_seconds
from gpupool.controllers.modeldeployment.plan import (
    KeptPlacement,
    gpus_to_exclude,
    inputs_hash,
    replicas_within_budget,
)
from gpupool.controllers.pool.controller import provisioning_summary
from gpupool.controllers.provider.controller import changed_instances
from gpupool.controllers.writes import status_patch
from gpupool.planner import (
    DeploymentRequest,
    NewInstance,
    PoolConstraints,
    pool_constraints_from_spec,
    request_from_spec,
)
from gpupool.providers.base import Instance, InstanceState


class TestStatusPatch:
    def test_nothing_changed_sends_nothing(self) -> None:
        status = {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}
        assert status_patch(status, dict(status)) == {}

    def test_only_changed_fields_and_removed_ones_as_null(self) -> None:
        current = {"phase": "Launched", "instanceId": "i-1", "old": 1}
        desired = {"phase": "Ready", "instanceId": "i-1"}
        assert status_patch(current, desired) == {"phase": "Ready", "old": None}


def _kept(**changes: object) -> KeptPlacement:
    kept = KeptPlacement(
        gpu="L4", gpus_per_replica=1, tensor_parallel_size=1, max_model_len=8192, weights_gib=15.0,
        provider="sim", region="r", instance_type="g6.xlarge", capacity_type="on-demand",
        price_per_hour=0.8, replicas_per_instance=1, inputs_hash="abc",
    )  # fmt: skip
    return dataclasses.replace(kept, **changes)  # type: ignore[arg-type]


class TestKeptPlacement:
    def test_round_trips_through_status(self) -> None:
        kept = _kept(excluded_gpus=("T4",))
        assert KeptPlacement.from_status(kept.to_status()) == kept

    def test_a_placement_from_before_plans_were_kept_is_planned_again(self) -> None:
        assert KeptPlacement.from_status({"gpu": "L4", "gpusPerReplica": 1}) is None
        assert KeptPlacement.from_status(None) is None

    def test_the_hash_ignores_replicas_but_not_planning_fields(self) -> None:
        spec = {"model": "meta-llama/Llama-3.1-8B-Instruct", "engine": {"maxModelLen": 8192}}

        def request(wire: dict[str, Any]) -> DeploymentRequest:
            return request_from_spec(ModelDeploymentSpec.from_k8s(wire))

        def pool_of(wire: dict[str, Any]) -> PoolConstraints:
            return pool_constraints_from_spec(GpuPoolSpec.from_k8s(wire), name="p")

        pool = pool_of({"providers": ["sim"]})
        base = inputs_hash(request(spec), pool, ())
        assert inputs_hash(request({**spec, "replicas": 7}), pool, ()) == base
        longer = {**spec, "engine": {"maxModelLen": 16384}}
        assert inputs_hash(request(longer), pool, ()) != base
        assert inputs_hash(request(spec), pool, ("L4",)) != base
        other_pool = pool_of({"providers": ["sim"], "gpuTypes": ["H100"]})
        assert inputs_hash(request(spec), other_pool, ()) != base

    def test_a_scale_beyond_the_budget_runs_as_many_replicas_as_fit(self) -> None:
        kept = _kept(price_per_hour=1.0, replicas_per_instance=2)
        assert kept.hourly_cost(3) == 2.0  # two instances
        assert replicas_within_budget(kept, 5, budget=2.0) == 4
        assert replicas_within_budget(kept, 5, budget=None) == 5

    def test_the_kept_gpu_is_given_up_only_after_the_wait(self) -> None:
        kept = _kept(excluded_gpus=("T4",))
        assert gpus_to_exclude(kept, None, now=1000.0, wait_seconds=600) is None
        assert gpus_to_exclude(kept, 500.0, now=1000.0, wait_seconds=600) is None
        assert gpus_to_exclude(kept, 300.0, now=1000.0, wait_seconds=600) == ("L4", "T4")


def test_one_event_per_batch_sums_up_what_was_bought() -> None:
    offer = Offer("sim", "r", "", "g4dn.xlarge", "T4", 1, 16.0, 4, 16.0, 0.526, None)
    big = Offer("sim", "r", "", "g4dn.12xlarge", "T4", 4, 16.0, 48, 192.0, 3.912, None)
    batch = [NewInstance(offer, "on-demand", 0.526, (f"ns/p{i}",), 1) for i in range(3)]
    batch.append(NewInstance(big, "on-demand", 3.912, ("ns/a", "ns/b"), 2))
    message = provisioning_summary(batch)
    assert message.startswith("4 claim(s) for 5 pod(s): ")
    assert "3x g4dn.xlarge (1x T4) at sim/r (on-demand, $0.53/h each)" in message
    assert "1x g4dn.12xlarge (4x T4)" in message


def test_a_claim_is_woken_only_when_its_instance_changed() -> None:
    def instance(
        i: str, state: InstanceState = InstanceState.RUNNING, notice: datetime | None = None
    ) -> Instance:
        return Instance(id=i, state=state, provider_id=f"sim://{i}", region="r", instance_type="t",
                        interruption_at=notice)  # fmt: skip

    before = {"a": instance("a"), "b": instance("b"), "c": instance("c")}
    after = {
        "a": instance("a"),
        "b": instance("b", InstanceState.TERMINATING),
        "c": instance("c", notice=datetime(2026, 1, 1, tzinfo=UTC)),
        "d": instance("d"),
    }
    assert changed_instances(before, after) == {"b", "c", "d"}
    assert changed_instances(after, {"a": instance("a")}) == {"b", "c", "d"}
    assert changed_instances(None, {"a": instance("a")}) == {"a"}


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_seconds(n, 1.0, 60.0) for n in (1, 2, 3, 7, 20)] == [1.0, 2.0, 4.0, 60.0, 60.0]


async def test_a_wake_during_a_reconcile_is_not_lost_and_a_burst_is_one_wake() -> None:
    wakeups = Wakeups()
    event = wakeups.register(("pool", "p"))
    wakeups.wake(("pool", "other"))  # no loop for that key: nothing happens
    for _ in range(100):
        wakeups.wake(("pool", "p"))
    assert event.is_set()
    event.clear()
    assert not event.is_set()
    wakeups.forget(("pool", "p"))
    wakeups.wake(("pool", "p"))
    assert not event.is_set()
    await asyncio.sleep(0)


@pytest.mark.parametrize("failures", [0, 1])
def test_backoff_starts_at_the_minimum(failures: int) -> None:
    assert backoff_seconds(failures, 2.0, 60.0) == 2.0


class TestDisruptionBudgets:
    @staticmethod
    def _claims(n: int, deleting: int = 0) -> list[GpuNodeClaim]:
        offer = {"provider": "sim", "region": "r", "instanceType": "it", "gpu": "L4", "gpuCount": 1,
                 "capacityType": "on-demand", "pricePerHour": 1.0}  # fmt: skip
        claims: list[GpuNodeClaim] = []
        for i in range(n):
            meta: dict[str, object] = {"name": f"c{i}"}
            if i < deleting:
                meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            claims.append(GpuNodeClaim.from_k8s({
                "metadata": meta, "spec": {"pool": "p", "offer": offer},
                "status": {"nodeName": f"n{i}", "providerID": f"sim://{i}"},
            }))  # fmt: skip
        return claims

    @staticmethod
    def _node(name: str, tainted: bool = False) -> object:
        from gpupool.controllers.nodeclaim.registration import NodeInfo

        taints = ({"key": "gpupool.dev/disrupted", "value": "", "effect": "NoSchedule"},) if tainted else ()
        return NodeInfo(name=name, provider_id="", ready=True, unschedulable=False, labels={}, taints=taints)

    def _plan(self, claims: list[GpuNodeClaim], budgets: list[dict[str, object]], **kw: object) -> object:
        from gpupool.api import Disruption
        from gpupool.controllers.pool.disruption import plan_disruption

        tainted: set[str] = kw.pop("tainted", set())  # type: ignore[assignment]
        busy: set[str] = kw.pop("busy", set())  # type: ignore[assignment]
        return plan_disruption(
            claims,
            Disruption.from_k8s({"budgets": budgets}),
            node_of=lambda c: self._node(str(c.status.node_name), str(c.status.node_name) in tainted),  # type: ignore[arg-type, return-value]
            busy=lambda node: node in busy,
            **kw,  # type: ignore[arg-type]
        )

    def test_six_expired_nodes_under_a_budget_of_two_go_two_at_a_time(self) -> None:
        claims = self._claims(6)
        plan = self._plan(claims, [{"nodes": "2"}], empty=[], expired=[f"c{i}" for i in range(6)])
        assert [name for name, _ in plan.delete] == ["c0", "c1"] and plan.waiting == 4  # type: ignore[attr-defined]
        # Two already going: none more until one of them is gone.
        claims = self._claims(6, deleting=2)
        plan = self._plan(claims, [{"nodes": "2"}], empty=[], expired=[f"c{i}" for i in range(2, 6)])
        assert plan.delete == [] and plan.waiting == 4  # type: ignore[attr-defined]

    def test_a_percentage_rounds_up_and_a_reason_budget_applies_only_to_its_reason(self) -> None:
        claims = self._claims(6)
        plan = self._plan(claims, [{"nodes": "10%"}], empty=[], expired=["c0", "c1"])
        assert len(plan.delete) == 1  # type: ignore[attr-defined]
        plan = self._plan(
            claims, [{"nodes": "0", "reasons": ["Empty"]}], empty=["c2"], expired=["c0", "c1", "c3"]
        )
        assert [n for n, _ in plan.delete] == ["c0", "c1", "c3"] and plan.taint == []  # type: ignore[attr-defined]

    def test_an_empty_node_is_tainted_first_and_taken_only_when_still_empty(self) -> None:
        claims = self._claims(2)
        plan = self._plan(claims, [{"nodes": "100%"}], empty=["c0"], expired=[])
        assert [n.name for n in plan.taint] == ["n0"] and plan.delete == []  # type: ignore[attr-defined]
        plan = self._plan(claims, [{"nodes": "100%"}], empty=["c0"], expired=[], tainted={"n0"})
        assert [n for n, _ in plan.delete] == ["c0"]  # type: ignore[attr-defined]
        # A pod landed before the taint showed: the taint is lifted, the node stays.
        plan = self._plan(claims, [{"nodes": "100%"}], empty=[], expired=[], tainted={"n0"}, busy={"n0"})
        assert [n.name for n in plan.untaint] == ["n0"] and plan.delete == []  # type: ignore[attr-defined]
