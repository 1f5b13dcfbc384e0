"""The simcloud provider against the real simcloud app (ASGI transport, SQLite, in-memory Nodes).

These are the provider contract tests: idempotent create by claim UID, ownership-scoped list,
NotFound on get, idempotent delete, and each simcloud error mapped to its typed class.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gpupool.catalog import load_shipped_offers
from gpupool.providers import (
    AuthError,
    CapacityError,
    CloudProvider,
    InstanceState,
    InvalidRequestError,
    LaunchRequest,
    NotFoundError,
    QuotaError,
    RetryingProvider,
    RetryPolicy,
    TransientError,
)
from gpupool.providers.sim import SimCloudProvider
from simcloud.app import create_app
from simcloud.faults import FaultBook
from simcloud.nodes import MemoryNodeWriter
from simcloud.offers import simcloud_offers
from simcloud.service import SimCloud
from simcloud.store import InstanceStore

OFFERS = simcloud_offers(load_shipped_offers(), regions=("lambda-us-east-1", "aws-us-east-1"))


class World:
    def __init__(self, db: Path, api_key: str = "") -> None:
        self.now = 1_800_000_000.0
        self.nodes = MemoryNodeWriter()
        self.store = InstanceStore(db)
        self.cloud = SimCloud(self.store, OFFERS, self.nodes, boot_delay=1, clock=lambda: self.now)
        self.faults = FaultBook(1)
        self.app = create_app(self.cloud, self.faults, api_key=api_key, tick_interval=None)
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app))

    def provider(self, cluster: str = "c1", api_key: str = "") -> SimCloudProvider:
        return SimCloudProvider(
            name="sim", cluster_name=cluster, endpoint="http://simcloud", api_key=api_key, client=self.client
        )

    async def boot(self) -> None:
        self.now += 5
        await self.cloud.tick()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    w = World(tmp_path / "s.sqlite")
    yield w
    await w.client.aclose()
    w.store.close()


def request(uid: str = "11111111-2222-3333-4444-555555555555", **kw: object) -> LaunchRequest:
    fields: dict[str, object] = {
        "claim_name": "default-x7k2p",
        "claim_uid": uid,
        "cluster_name": "c1",
        "region": "lambda-us-east-1",
        "instance_type": "gpu_1x_a10",
        "gpu": "A10",
        "user_data": "#!/bin/sh\necho join --token abc.def\n",
        "labels": {"gpupool.dev/pool": "default", "gpupool.dev/claim": "default-x7k2p"},
    }
    fields.update(kw)
    return LaunchRequest(**fields)  # type: ignore[arg-type]


async def test_provider_satisfies_the_protocol(world: World) -> None:
    assert isinstance(world.provider(), CloudProvider)


async def test_list_offers_reports_prices_and_availability(world: World) -> None:
    world.faults.add(
        __import__("simcloud.faults", fromlist=["Fault"]).Fault(scope="g5.xlarge", capacity_error=True)
    )
    offers = await world.provider().list_offers()
    by_key = {o.offer.key: o for o in offers}
    a10 = by_key["sim/lambda-us-east-1//gpu_1x_a10/A10/1"]
    assert a10.offer.provider == "sim" and a10.offer.on_demand_price == 1.29 and a10.available
    g5 = [o for o in offers if o.offer.instance_type == "g5.xlarge"]
    assert g5 and all(not o.available for o in g5)
    assert all(o.offer.spot_price for o in g5)
    # The fabric the catalog derived for the AWS row survives the trip through simcloud's API.
    assert {o.offer.network for o in offers if o.offer.instance_type == "p5.48xlarge"} == {"efa"}


async def test_create_is_idempotent_by_claim_uid(world: World) -> None:
    provider = world.provider()
    first = await provider.create(request())
    # A crash after the launch but before the claim recorded the id: the retry finds it.
    again = await provider.create(request())
    assert again.id == first.id
    assert first.state == InstanceState.PENDING
    assert first.provider_id == f"simcloud://{first.id}"
    assert first.claim_uid == "11111111-2222-3333-4444-555555555555"
    assert first.tags["gpupool.dev/cluster"] == "c1"
    assert len(world.cloud.list_instances()) == 1

    other = await provider.create(request(uid="99999999-2222-3333-4444-555555555555"))
    assert other.id != first.id


async def test_get_list_and_delete(world: World) -> None:
    mine = world.provider("c1")
    theirs = world.provider("c2")
    a = await mine.create(request())
    b = await theirs.create(request(uid="other-uid", cluster_name="c2"))
    await world.boot()

    got = await mine.get(a.id)
    assert got.state == InstanceState.RUNNING and got.launched_at is not None
    assert [i.id for i in await mine.list()] == [a.id]
    assert [i.id for i in await theirs.list()] == [b.id]

    await mine.delete(a.id)
    await mine.delete(a.id)  # idempotent
    await mine.delete("does-not-exist")  # "already gone" is success
    await world.boot()
    assert (await mine.get(a.id)).state == InstanceState.TERMINATED
    assert await mine.list() == []
    with pytest.raises(NotFoundError):
        await mine.get("does-not-exist")


async def test_pool_labels_and_taints_reach_the_node(world: World) -> None:
    instance = await world.provider().create(request(taints=(("team", "ml", "NoExecute"),)))
    await world.boot()
    node = world.nodes.nodes[f"simcloud-{instance.id}"]
    assert node["metadata"]["labels"]["gpupool.dev/pool"] == "default"
    assert node["metadata"]["labels"]["gpupool.dev/claim"] == "default-x7k2p"
    assert {"key": "team", "value": "ml", "effect": "NoExecute"} in node["spec"]["taints"]


async def test_create_after_termination_launches_anew_only_with_a_new_uid(world: World) -> None:
    provider = world.provider()
    first = await provider.create(request())
    await provider.delete(first.id)
    await world.boot()
    # Same claim UID: the client token still names the terminated instance (no silent relaunch).
    again = await provider.create(request())
    assert again.id == first.id and again.state == InstanceState.TERMINATED


async def test_errors_are_typed(world: World) -> None:
    from simcloud.faults import Fault

    provider = world.provider()
    world.faults.add(Fault(scope="gpu_1x_a10", capacity_error=True))
    with pytest.raises(CapacityError) as capacity:
        await provider.create(request())
    assert capacity.value.code == "insufficient-capacity"
    world.faults.clear()

    world.faults.add(Fault(scope="gpu_1x_a10", quota_error=True))
    with pytest.raises(QuotaError):
        await provider.create(request())
    world.faults.clear()

    with pytest.raises(InvalidRequestError):
        await provider.create(request(capacity_type="spot"))

    world.faults.add(Fault(error_rate=1.0, error_status=503))
    with pytest.raises(TransientError):
        await provider.list()
    world.faults.clear()

    world.faults.add(Fault(error_rate=1.0, error_status=429))
    with pytest.raises(TransientError) as limited:
        await provider.list()
    assert limited.value.retry_after == 1.0


async def test_wrong_key_is_an_auth_error_that_does_not_leak(tmp_path: Path) -> None:
    w = World(tmp_path / "k.sqlite", api_key="right-key")
    provider = w.provider(api_key="wrong-key-0123456789")
    with pytest.raises(AuthError) as denied:
        await provider.list()
    assert "wrong-key-0123456789" not in str(denied.value)
    assert "wrong-key-0123456789" not in repr(provider)
    assert len(await w.provider(api_key="right-key").list()) == 0
    await w.client.aclose()
    w.store.close()


async def test_retrying_provider_rides_out_injected_5xx(world: World) -> None:
    from simcloud.faults import Fault

    world.faults.reseed(3)
    world.faults.add(Fault(error_rate=0.5, error_status=503))
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    provider = RetryingProvider(world.provider(), RetryPolicy(attempts=10), sleep=sleep, rand=lambda: 0.5)
    created = [await provider.create(request(uid=f"uid-{n}")) for n in range(5)]
    assert len({i.id for i in created}) == 5
    assert len(world.cloud.list_instances()) == 5  # retries never launched twice
    assert sleeps, "the seeded fault rate must have caused at least one retry"
