"""simcloud's HTTP API, driven through the real starlette app over httpx's ASGI transport.

The only stand-in is the Node writer (an in-memory recorder); the store is a real SQLite file and
the clock is a variable the tests move, so boots, terminations and interruptions are stepped
through without waiting. The real-cluster behaviour is in tests/integration/test_simcloud_cluster.py.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpupool.catalog import load_shipped_offers
from simcloud.app import create_app
from simcloud.faults import FaultBook
from simcloud.nodes import MemoryNodeWriter, render_node
from simcloud.offers import simcloud_offers
from simcloud.service import SimCloud
from simcloud.store import InstanceStore, SimInstance

OFFERS = simcloud_offers(
    load_shipped_offers(),
    sources=("lambda", "runpod", "aws"),
    regions=("lambda-us-east-1", "runpod-CA", "aws-us-east-1"),
)
H100 = {"region": "lambda-us-east-1", "instanceType": "gpu_1x_h100_sxm5"}


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Sim:
    """One simcloud: its service, fault book, Node recorder, clock and an HTTP client to it."""

    def __init__(self, db: Path, *, api_key: str = "", seed: int | None = 7) -> None:
        self.db = db
        self.clock = Clock()
        self.nodes = MemoryNodeWriter()
        self.store = InstanceStore(db)
        self.cloud = SimCloud(
            self.store, OFFERS, self.nodes, boot_delay=5, interrupt_grace=30, clock=self.clock
        )
        self.faults = FaultBook(seed)
        self.app = create_app(self.cloud, self.faults, api_key=api_key, tick_interval=None)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://simcloud")

    async def launch(self, **extra: Any) -> httpx.Response:
        return await self.http.post("/v1/instances", json={**H100, **extra})

    async def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        await self.cloud.tick()

    async def close(self) -> None:
        await self.http.aclose()
        self.store.close()


@pytest.fixture
async def sim(tmp_path: Path) -> AsyncIterator[Sim]:
    s = Sim(tmp_path / "simcloud.sqlite")
    yield s
    await s.close()


@pytest.fixture
def make_sim(tmp_path: Path) -> Callable[..., Sim]:
    return lambda **kw: Sim(tmp_path / "simcloud.sqlite", **kw)


async def test_instance_types_carry_real_catalog_prices(sim: Sim) -> None:
    response = await sim.http.get("/v1/instance-types", params={"region": "lambda-us-east-1"})
    assert response.status_code == 200
    by_type = {o["instanceType"]: o for o in response.json()["data"]}
    h100 = by_type["gpu_1x_h100_sxm5"]
    # The shipped catalog's Lambda price for one H100 SXM5 (gpu-offers.csv).
    assert h100["onDemandPrice"] == 4.29
    assert h100["gpu"] == "H100" and h100["gpuCount"] == 1 and h100["available"] is True
    all_regions = {o["region"] for o in (await sim.http.get("/v1/instance-types")).json()["data"]}
    assert all_regions == {"lambda-us-east-1", "runpod-CA", "aws-us-east-1"}


async def test_launch_boots_into_a_node_after_the_delay(sim: Sim) -> None:
    response = await sim.launch(tags={"gpupool.dev/pool": "default", "gpupool.dev/claim": "default-abc"})
    assert response.status_code == 201
    instance = response.json()["data"]
    assert instance["state"] == "pending"
    assert instance["providerID"] == f"simcloud://{instance['id']}"
    assert instance["pricePerHour"] == 4.29

    await sim.advance(4.9)
    assert (await sim.http.get(f"/v1/instances/{instance['id']}")).json()["data"]["state"] == "pending"
    assert sim.nodes.nodes == {}

    await sim.advance(0.2)
    assert (await sim.http.get(f"/v1/instances/{instance['id']}")).json()["data"]["state"] == "running"
    node = sim.nodes.nodes[f"simcloud-{instance['id']}"]
    labels = node["metadata"]["labels"]
    assert labels["gpupool.dev/pool"] == "default"
    assert labels["gpupool.dev/claim"] == "default-abc"
    assert labels["node.kubernetes.io/instance-type"] == "gpu_1x_h100_sxm5"
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
    assert node["spec"]["providerID"] == instance["providerID"]


async def test_client_token_makes_launch_idempotent(sim: Sim) -> None:
    first = await sim.launch(clientToken="claim-uid-1")
    again = await sim.launch(clientToken="claim-uid-1")
    other = await sim.launch(clientToken="claim-uid-2")
    assert first.status_code == 201 and again.status_code == 200 and other.status_code == 201
    assert first.json()["data"]["id"] == again.json()["data"]["id"] != other.json()["data"]["id"]
    assert len((await sim.http.get("/v1/instances")).json()["data"]) == 2


async def test_list_filters_by_tag(sim: Sim) -> None:
    await sim.launch(tags={"gpupool.dev/cluster": "a"})
    await sim.launch(tags={"gpupool.dev/cluster": "b"})
    listed = (await sim.http.get("/v1/instances", params={"tag": "gpupool.dev/cluster=a"})).json()["data"]
    assert [i["tags"]["gpupool.dev/cluster"] for i in listed] == ["a"]


async def test_terminate_removes_the_node_and_is_idempotent(sim: Sim) -> None:
    instance_id = (await sim.launch()).json()["data"]["id"]
    await sim.advance(5)
    assert f"simcloud-{instance_id}" in sim.nodes.nodes

    first = await sim.http.delete(f"/v1/instances/{instance_id}")
    assert first.status_code == 200 and first.json()["data"]["state"] == "terminating"
    await sim.advance(0.5)
    assert sim.nodes.nodes == {}
    got = (await sim.http.get(f"/v1/instances/{instance_id}")).json()["data"]
    assert got["state"] == "terminated" and got["terminatedAt"] is not None

    again = await sim.http.delete(f"/v1/instances/{instance_id}")
    assert again.status_code == 200 and again.json()["data"]["state"] == "terminated"
    assert (await sim.http.delete("/v1/instances/nope")).status_code == 404
    assert (await sim.http.get("/v1/instances")).json()["data"] == []
    everything = (await sim.http.get("/v1/instances", params={"includeTerminated": "true"})).json()["data"]
    assert [i["id"] for i in everything] == [instance_id]


async def test_terminate_during_boot_wins(sim: Sim) -> None:
    instance_id = (await sim.launch()).json()["data"]["id"]
    await sim.http.delete(f"/v1/instances/{instance_id}")
    await sim.advance(10)
    assert (await sim.http.get(f"/v1/instances/{instance_id}")).json()["data"]["state"] == "terminated"
    assert sim.nodes.nodes == {}


async def test_a_node_that_cannot_be_written_does_not_hold_up_the_others(sim: Sim) -> None:
    failing = (await sim.launch()).json()["data"]["id"]
    fine = (await sim.launch()).json()["data"]["id"]
    real_ensure = sim.nodes.ensure_node
    broken = {f"simcloud-{failing}"}

    async def ensure_node(manifest: dict[str, Any]) -> None:
        if manifest["metadata"]["name"] in broken:
            raise RuntimeError("the API server said no")
        await real_ensure(manifest)

    sim.nodes.ensure_node = ensure_node  # type: ignore[method-assign]
    await sim.advance(5)
    states = {i["id"]: i["state"] for i in (await sim.http.get("/v1/instances")).json()["data"]}
    assert states == {failing: "pending", fine: "running"}
    broken.clear()
    await sim.advance(0.5)
    assert (await sim.http.get(f"/v1/instances/{failing}")).json()["data"]["state"] == "running"


async def test_restart_loses_no_instance_and_resumes_the_boot(make_sim: Callable[..., Sim]) -> None:
    first = make_sim()
    booted = (await first.launch(clientToken="t1")).json()["data"]["id"]
    await first.advance(5)
    pending = (await first.launch(clientToken="t2")).json()["data"]["id"]
    now = first.clock.now
    await first.close()

    second = make_sim()
    second.clock.now = now
    await second.cloud.resume()
    assert f"simcloud-{booted}" in second.nodes.nodes  # re-created on the new writer
    states = {i["id"]: i["state"] for i in (await second.http.get("/v1/instances")).json()["data"]}
    assert states == {booted: "running", pending: "pending"}
    again = await second.launch(clientToken="t1")
    assert again.status_code == 200 and again.json()["data"]["id"] == booted
    await second.advance(5)
    assert (await second.http.get(f"/v1/instances/{pending}")).json()["data"]["state"] == "running"
    await second.close()


async def test_capacity_fault_is_scoped_to_the_offer(sim: Sim) -> None:
    added = await sim.http.post("/admin/faults", json={"scope": "gpu_1x_h100_sxm5", "capacityError": True})
    assert added.status_code == 201
    refused = await sim.launch()
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "insufficient-capacity"
    types = (await sim.http.get("/v1/instance-types", params={"region": "lambda-us-east-1"})).json()["data"]
    availability = {o["instanceType"]: o["available"] for o in types}
    assert availability["gpu_1x_h100_sxm5"] is False and availability["gpu_1x_a10"] is True
    ok = await sim.http.post(
        "/v1/instances", json={"region": "lambda-us-east-1", "instanceType": "gpu_1x_a10"}
    )
    assert ok.status_code == 201

    assert (await sim.http.delete("/admin/faults")).status_code == 200
    assert (await sim.launch()).status_code == 201


async def test_quota_fault_by_offer_key(sim: Sim) -> None:
    key = "simcloud/lambda-us-east-1//gpu_1x_h100_sxm5/H100/1"
    await sim.http.post("/admin/faults", json={"scope": key, "quotaError": True})
    refused = await sim.launch()
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "quota-exceeded"


async def test_error_rate_answers_429_with_retry_after(sim: Sim) -> None:
    await sim.http.post("/admin/faults", json={"errorRate": 1.0, "errorStatus": 429})
    response = await sim.http.get("/v1/instances")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "rate-limited"


async def test_error_rate_is_reproducible_under_a_seed(make_sim: Callable[..., Sim]) -> None:
    async def pattern() -> list[int]:
        s = make_sim(seed=None)
        await s.http.post("/admin/faults", json={"seed": 42, "errorRate": 0.5, "errorStatus": 503})
        statuses = [(await s.http.get("/v1/instances")).status_code for _ in range(20)]
        await s.close()
        return statuses

    first, second = await pattern(), await pattern()
    assert first == second
    assert set(first) == {200, 503}


async def test_latency_fault_delays_answers(sim: Sim) -> None:
    await sim.http.post("/admin/faults", json={"latencyMs": 150})
    started = time.monotonic()
    assert (await sim.http.get("/v1/instances")).status_code == 200
    assert time.monotonic() - started >= 0.15


async def test_never_register_runs_without_a_node(sim: Sim) -> None:
    await sim.http.post("/admin/faults", json={"scope": "lambda-us-east-1", "neverRegister": True})
    instance_id = (await sim.launch()).json()["data"]["id"]
    await sim.advance(60)
    assert (await sim.http.get(f"/v1/instances/{instance_id}")).json()["data"]["state"] == "running"
    assert sim.nodes.nodes == {}


async def test_spot_interruption_notice_then_termination(sim: Sim) -> None:
    launched = await sim.http.post(
        "/v1/instances",
        json={
            "region": "aws-us-east-1",
            "zone": "use1-az1",
            "instanceType": "g5.xlarge",
            "capacityType": "spot",
        },
    )
    assert launched.status_code == 201
    instance = launched.json()["data"]
    assert instance["capacityType"] == "spot" and instance["pricePerHour"] == 0.4507
    await sim.advance(5)

    notice = await sim.http.post(f"/admin/instances/{instance['id']}/interrupt", json={"graceSeconds": 20})
    assert notice.status_code == 200
    got = (await sim.http.get(f"/v1/instances/{instance['id']}")).json()["data"]
    assert got["state"] == "running" and got["interruption"]["noticeTime"] is not None
    feed = (await sim.http.get("/v1/interruptions")).json()["data"]
    assert [n["instanceId"] for n in feed] == [instance["id"]]

    await sim.advance(19)
    assert (await sim.http.get(f"/v1/instances/{instance['id']}")).json()["data"]["state"] == "running"
    await sim.advance(1)  # the grace period ends: terminating
    await sim.advance(0.5)  # and the Node goes
    assert (await sim.http.get(f"/v1/instances/{instance['id']}")).json()["data"]["state"] == "terminated"
    assert sim.nodes.nodes == {}


async def test_invalid_launches_are_refused(sim: Sim) -> None:
    unknown = await sim.http.post(
        "/v1/instances", json={"region": "lambda-us-east-1", "instanceType": "nope"}
    )
    assert unknown.status_code == 400 and unknown.json()["error"]["code"] == "invalid-request"
    spot_on_lambda = await sim.launch(capacityType="spot")
    assert spot_on_lambda.status_code == 400
    # On-demand ignores maxPrice (a discounted contract price is no bid); spot treats it as a bid.
    assert (await sim.launch(maxPrice=1.0)).status_code == 201
    spot = {
        "region": "aws-us-east-1",
        "zone": "use1-az1",
        "instanceType": "g5.xlarge",
        "capacityType": "spot",
    }
    low_bid = await sim.http.post("/v1/instances", json={**spot, "maxPrice": 0.3})
    assert low_bid.status_code == 409 and low_bid.json()["error"]["code"] == "insufficient-capacity"
    assert (await sim.http.post("/v1/instances", json={**spot, "maxPrice": 0.5})).status_code == 201
    missing = await sim.http.post("/v1/instances", json={"region": "lambda-us-east-1"})
    assert missing.status_code == 400
    bad_fault = await sim.http.post("/admin/faults", json={"errorRate": 2})
    assert bad_fault.status_code == 400


async def test_api_key_is_required_when_configured(make_sim: Callable[..., Sim]) -> None:
    s = make_sim(api_key="s3cret")
    denied = await s.http.get("/v1/instances")
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthorized"
    assert (await s.http.post("/v1/instances", content=b"not json")).status_code == 401
    wrong = await s.http.post("/v1/instances", json=H100, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and s.cloud.list_instances() == []
    allowed = await s.http.get("/v1/instances", headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 200
    await s.close()


async def test_capacity_per_offer_sells_out_and_frees_on_termination(tmp_path: Path) -> None:
    s = Sim(tmp_path / "cap.sqlite")
    s.cloud.capacity_per_offer = 2
    first = (await s.launch()).json()["data"]["id"]
    assert (await s.launch()).status_code == 201
    refused = await s.launch()
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "insufficient-capacity"
    types = (await s.http.get("/v1/instance-types", params={"region": "lambda-us-east-1"})).json()["data"]
    assert {o["instanceType"]: o["available"] for o in types}["gpu_1x_h100_sxm5"] is False
    await s.http.delete(f"/v1/instances/{first}")
    assert (await s.launch()).status_code == 409  # still terminating: the machine is not free yet
    await s.advance(0.5)
    assert (await s.launch()).status_code == 201
    await s.close()


def test_node_manifest_shape() -> None:
    instance = SimInstance(
        id="abc123",
        name="n",
        offer_key="k",
        region="runpod-CA",
        zone="",
        instance_type="2x_A100-80GB_SECURE",
        gpu="A100-80GB",
        gpu_count=2,
        gpu_memory_gib=80,
        vcpus=16,
        memory_gib=128,
        cpu_arch="x86_64",
        capacity_type="on-demand",
        price_per_hour=3.98,
        state="pending",
        launched_at=0,
        boot_at=0,
        tags={"gpupool.dev/pool": "p", "bad key!": "x", "gpupool.dev/claim": "not a valid value!"},
        taints=(("team", "ml", "NoExecute"),),
    )
    node = render_node(instance)
    labels = node["metadata"]["labels"]
    assert labels["topology.kubernetes.io/region"] == "runpod-CA"
    assert labels["topology.kubernetes.io/zone"] == "runpod-CA"  # no zone: the region stands in
    assert labels["gpupool.dev/gpu"] == "A100-80GB"
    assert labels["gpupool.dev/capacity-type"] == "on-demand"
    assert labels["gpupool.dev/provider"] == "simcloud"
    assert labels["gpupool.dev/pool"] == "p"
    assert "bad key!" not in labels and "gpupool.dev/claim" not in labels
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert node["spec"]["providerID"] == "simcloud://abc123"
    assert node["spec"]["taints"] == [
        {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"},
        {"key": "team", "value": "ml", "effect": "NoExecute"},
    ]
    assert node["status"]["capacity"] == node["status"]["allocatable"]
    assert node["status"]["capacity"]["nvidia.com/gpu"] == "2"
    assert node["status"]["capacity"]["memory"] == "131072Mi"
    assert node["status"]["capacity"]["pods"] == "110"
