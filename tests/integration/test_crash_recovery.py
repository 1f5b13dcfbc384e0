"""Crash recovery: SIGKILLs of the operator and of the cloud during a burst lose nothing.

The experiment of issue 10, as a test: while 20 ModelDeployments are being provisioned, the
operator is SIGKILLed 60 times at random short intervals (and restarted each time) and
simcloud 3 times (restarted on the same port and SQLite file, so it remembers its machines as
a real cloud does). Within 2 minutes of the last kill every claim must be Ready (a claim given
up is deleted and replaced, so "Ready or replaced" is "every live claim Ready"), every model
Ready, and the cloud must hold exactly one live instance per live claim: no instance launched
twice for one claim, none left behind by a claim that went, no claim bought twice for one pod.

Each operator lives a random 0.3-2.5 s counted from when kopf is up in it (about a second
after the process starts): counted from the start, most kills would land in Python's imports,
and a restarted operator's catch-up (listing, relaunching, re-registering) would go untested.
The lives are drawn from a seeded generator (`GPUPOOL_CRASH_SEED`, printed), so a failing
schedule can be run again.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gpupool.api import GpuNodeClaim
from gpupool.controllers.kube import FINALIZER
from gpupool.controllers.nodeclaim.launch import launch_request
from gpupool.providers.registry import build_provider
from tests.conftest import wait_for
from tests.integration.conftest import GROUP, VERSION, Gpupool, OperatorProcess, SimCloud, ready_pods

pytestmark = pytest.mark.cluster

MODEL = "Qwen/Qwen3-0.6B"  # one L4 holds it; not gated, so no token is needed
MODELS = 20
OPERATOR_KILLS = 60
CLOUD_KILLS = 3
RECOVERY_SECONDS = 120.0
SEED = int(os.environ.get("GPUPOOL_CRASH_SEED", "10"))


def _live_claims(gp: Gpupool, pool: str) -> list[dict[str, Any]]:
    return [c for c in gp.claims(pool) if not c["metadata"].get("deletionTimestamp")]


def _phases(gp: Gpupool, pool: str) -> dict[str, str]:
    return {
        c["metadata"]["name"]: str((c.get("status") or {}).get("phase"))
        + (" (deleting)" if c["metadata"].get("deletionTimestamp") else "")
        for c in gp.claims(pool)
    }


def _unready_detail(gp: Gpupool, pool: str) -> list[dict[str, Any]]:
    """What a claim that is not Ready says, and what its Node says: the report of a failure."""
    details = []
    all_nodes = gp.core.list_node().items
    for claim in gp.claims(pool):
        status = claim.get("status") or {}
        if status.get("phase") == "Ready":
            continue
        nodes = [n for n in all_nodes if n.spec and n.spec.provider_id == status.get("providerID")]
        details.append(
            {
                "claim": claim["metadata"]["name"],
                "status": status,
                "nodes": [
                    (n.metadata.name, [(c.type, c.status) for c in (n.status.conditions or [])])
                    for n in nodes
                ],
            }
        )
    return details


def _ready_models(gp: Gpupool) -> set[str]:
    listed: dict[str, Any] = gp.custom.list_namespaced_custom_object(
        GROUP, VERSION, gp.namespace, "modeldeployments"
    )
    items: list[dict[str, Any]] = listed["items"]
    return {
        md["metadata"]["name"]
        for md in items
        if (c := gp.condition(md, "Ready")) and c["status"] == "True"
        and (md.get("status") or {}).get("readyReplicas") == 1
    }  # fmt: skip


def _recovered(gp: Gpupool, pool: str) -> bool:
    """Every claim Ready (none still on its way out, replaced ones gone), every model Ready."""
    claims = gp.claims(pool)
    return (
        bool(claims)
        and all(
            (c.get("status") or {}).get("phase") == "Ready" and not c["metadata"].get("deletionTimestamp")
            for c in claims
        )
        and len(_ready_models(gp)) == MODELS
    )


def _ours(cloud: SimCloud, operator: OperatorProcess, pool: str, **kw: Any) -> list[dict[str, Any]]:
    return [
        i for i in cloud.instances(operator.cluster_name, **kw) if i["tags"].get("gpupool.dev/pool") == pool
    ]


def _live(instance: dict[str, Any]) -> bool:
    return instance["state"] not in ("terminating", "terminated")


def _wait_operating(operator: OperatorProcess, log_offset: int) -> None:
    """Until the operator started after `log_offset` in its log has kopf running."""

    def up() -> bool:
        with operator.log_path.open("rb") as log:
            log.seek(log_offset)
            return b"Initial authentication has finished" in log.read()

    wait_for(up, timeout=30, interval=0.05, what="the restarted operator's kopf to start")


def _kill_schedule(rng: random.Random) -> tuple[list[float], set[int]]:
    """How long each operator lives before its SIGKILL, and in which lives simcloud dies too."""
    lives = [rng.uniform(0.3, 2.5) for _ in range(OPERATOR_KILLS)]
    # Never after the last kill: the recovery clock starts there.
    cloud_kills = set(rng.sample(range(OPERATOR_KILLS - 1), CLOUD_KILLS))
    return lives, cloud_kills


def test_sigkills_during_provisioning_leave_every_claim_ready_with_one_instance(
    gp: Gpupool, start_simcloud: Callable[..., SimCloud], operator: OperatorProcess
) -> None:
    rng = random.Random(SEED)
    print(f"\ncrash schedule seed: {SEED} (GPUPOOL_CRASH_SEED)")
    started = time.monotonic()
    # Nodes join 3 s after launch: long enough that many join while no operator runs.
    cloud = start_simcloud(boot_delay=3.0)
    provider = gp.create_provider("sim", cloud.url)
    # Spot L4s are cheapest one per instance (g6.xlarge), so each model gets a claim of its
    # own: 20 claims to crash through, and a count that shows any bought twice. Consolidation is
    # off for the test's length: a duplicate node must stay to be counted.
    pool = gp.create_pool(
        "pool", [provider], gpuTypes=["L4"], capacityTypes=["spot"], limits={"maxGpus": 64},
        disruption={"consolidateAfter": "1h"},
    )  # fmt: skip

    lives, cloud_kills = _kill_schedule(rng)
    offset = 0  # the operator may have started long ago: its first line of kopf is enough
    every = OPERATOR_KILLS // MODELS
    for n, life in enumerate(lives):
        # One model every few kills: provisioning goes on through the whole crash loop, so the
        # kills land in every step of it (planning, batching, launch, registration, Ready).
        if n % every == 0 and n // every < MODELS:
            gp.create_model(f"m{n // every:02d}", model=MODEL, pool=pool, engine={"maxModelLen": 4096})
        _wait_operating(operator, offset)
        if n in cloud_kills:
            # The cloud dies under a running operator, with its requests and boots in flight.
            time.sleep(life / 2)
            cloud.kill()
            cloud.start()
            time.sleep(life / 2)
        else:
            time.sleep(life)
        assert operator.proc is not None and operator.proc.poll() is None, (
            f"the operator exited by itself before kill {n + 1}; see {operator.log_path}"
        )
        operator.kill()
        offset = operator.log_path.stat().st_size
        operator.start(check_after=0)
    last_kill = time.monotonic()
    print(
        f"{OPERATOR_KILLS} operator kills and {CLOUD_KILLS} simcloud kills in {last_kill - started:.0f}s; "
        f"claims then: {Counter(_phases(gp, pool).values())}, models Ready: {len(_ready_models(gp))}"
    )

    try:
        wait_for(
            lambda: _recovered(gp, pool), timeout=RECOVERY_SECONDS, interval=1.0,
            what=f"every claim and all {MODELS} ModelDeployments Ready",
        )  # fmt: skip
    except AssertionError as error:
        raise AssertionError(
            f"{error}; claims: {_phases(gp, pool)}; models Ready: {len(_ready_models(gp))}; "
            f"not Ready: {_unready_detail(gp, pool)}"
        ) from None
    recovered = time.monotonic() - last_kill
    print(f"recovered {recovered:.0f}s after the last kill")

    claims = _live_claims(gp, pool)
    by_uid = {c["metadata"]["uid"]: c for c in claims}
    shapes = Counter(f"{c['spec']['offer']['instanceType']}" for c in claims)
    print(f"claims: {dict(shapes)}")
    # Nothing bought twice for the same pod: one 1-GPU claim per model, one pod on each node.
    pods = ready_pods(gp.core, gp.namespace, "gpupool.dev/model-deployment")
    on_nodes = Counter(p.spec.node_name for p in pods if p.spec)
    assert len(pods) == MODELS
    assert [int(c["spec"]["offer"]["gpuCount"]) for c in claims] == [1] * MODELS, shapes
    assert {c["status"]["nodeName"] for c in claims} == set(on_nodes), (on_nodes, _phases(gp, pool))
    assert set(on_nodes.values()) == {1}, on_nodes

    # Never launched twice: one instance per claim UID, counting the terminated ones.
    launched = Counter(
        i["tags"].get("gpupool.dev/claim-uid") for i in _ours(cloud, operator, pool, include_terminated=True)
    )
    assert max(launched.values()) == 1, {uid: n for uid, n in launched.items() if n > 1}
    for uid, claim in by_uid.items():
        assert launched[uid] == 1, f"claim {claim['metadata']['name']} has {launched[uid]} instances"

    # Never lost: once the finalizers and the orphan collector are done, the cloud's live
    # instances are exactly the live claims' (GPUPOOL_GC_* are seconds in the test operator).
    def no_leaks() -> bool:
        live = [i for i in _ours(cloud, operator, pool) if _live(i)]
        return sorted(i["id"] for i in live) == sorted(c["status"]["instanceId"] for c in claims) and all(
            i["tags"].get("gpupool.dev/claim-uid") in by_uid for i in live
        )

    try:
        wait_for(no_leaks, timeout=60, interval=1.0, what="the cloud's live instances to be the claims'")
    except AssertionError as error:
        live = {
            i["id"]: i["tags"].get("gpupool.dev/claim-uid") for i in _ours(cloud, operator, pool) if _live(i)
        }
        raise AssertionError(f"{error}; live instances: {live}; claims: {sorted(by_uid)}") from None

    # And the teardown after all those crashes: every instance terminated by its claim.
    for n in range(MODELS):
        gp.custom.delete_namespaced_custom_object(
            GROUP, VERSION, gp.namespace, "modeldeployments", f"m{n:02d}"
        )
    wait_for(
        lambda: not gp.core.list_namespaced_pod(gp.namespace).items, timeout=60, what="the models' pods gone"
    )
    gp.custom.delete_cluster_custom_object(GROUP, VERSION, "gpupools", pool)
    wait_for(
        lambda: not gp.claims(pool) and not [i for i in _ours(cloud, operator, pool) if _live(i)],
        timeout=60,
        what="the claims gone and their instances terminated",
    )
    print(f"test took {time.monotonic() - started:.0f}s")


def _cheapest_l4_spot(cloud: SimCloud) -> dict[str, Any]:
    offers = httpx.get(f"{cloud.url}/v1/instance-types", timeout=5).json()["data"]
    mine = [o for o in offers if o["gpu"] == "L4" and o.get("spotPrice") and o["gpuCount"] == 1]
    return min(mine, key=lambda o: (o["spotPrice"], o["key"]))


def test_a_node_that_joined_before_its_launch_was_recorded_is_taken_at_once(
    gp: Gpupool, start_simcloud: Callable[..., SimCloud], operator: OperatorProcess
) -> None:
    """The kill between the cloud's "yes" and the claim's status write, made on purpose: the
    instance exists and its Node is Ready before any operator knows the claim has it. Its
    Node's events found no claim to wake; the restarted operator must still take it at once,
    not at the claim's resync (a minute), and launch nothing new."""
    cloud = start_simcloud()
    provider = gp.create_provider("sim", cloud.url)
    pool = gp.create_pool(
        "pool", [provider], gpuTypes=["L4"], capacityTypes=["spot"], disruption={"consolidateAfter": "1h"}
    )
    wait_for(
        lambda: (c := gp.condition(gp.get("gpuproviders", provider), "Ready")) and c["status"] == "True",
        timeout=30, what="the provider Ready",
    )  # fmt: skip
    offer = _cheapest_l4_spot(cloud)
    pool_uid = gp.get("gpupools", pool)["metadata"]["uid"]
    operator.kill()
    try:
        # The claim as the pool writes it, then the launch as the claim controller sends it.
        manifest = {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuNodeClaim",
            "metadata": {
                "name": gp.name("claim"), "labels": {"gpupool.dev/pool": pool}, "finalizers": [FINALIZER],
                "ownerReferences": [{"apiVersion": f"{GROUP}/{VERSION}", "kind": "GpuPool", "name": pool,
                                     "uid": pool_uid, "blockOwnerDeletion": True}],
            },
            "spec": {"pool": pool, "offer": {
                "provider": provider, "region": offer["region"], "zone": offer["zone"],
                "instanceType": offer["instanceType"], "gpu": "L4", "gpuCount": 1,
                "capacityType": "spot", "pricePerHour": offer["spotPrice"],
            }},
        }  # fmt: skip
        claim = gp.custom.create_cluster_custom_object(GROUP, VERSION, "gpunodeclaims", manifest)
        request = launch_request(
            GpuNodeClaim.from_k8s(claim),
            cluster_name=operator.cluster_name,
            pool_labels={},
            pool_taints=[],
            user_data_template="",
        )

        async def launch() -> str:
            client = build_provider("sim", cloud.url, "", operator.cluster_name, name=provider)
            try:
                return (await client.create(request)).provider_id
            finally:
                await client.aclose()

        provider_id = asyncio.run(launch())
        wait_for(
            lambda: any(
                n.spec.provider_id == provider_id
                and any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
                for n in gp.core.list_node().items
            ),
            timeout=30, what="the instance's Node Ready",
        )  # fmt: skip
    finally:
        operator.start()
    started = time.monotonic()
    try:
        wait_for(
            lambda: (gp.get("gpunodeclaims", gp.name("claim")).get("status") or {}).get("phase") == "Ready",
            timeout=20, what="the claim Ready after the restart",
        )  # fmt: skip
    except AssertionError as error:
        status = gp.get("gpunodeclaims", gp.name("claim")).get("status")
        raise AssertionError(f"{error}; the claim's status: {status}") from None
    print(f"\nthe claim was Ready {time.monotonic() - started:.1f}s after the restart")
    status = gp.get("gpunodeclaims", gp.name("claim"))["status"]
    assert status["providerID"] == provider_id
    assert [i["providerID"] for i in _ours(cloud, operator, pool)] == [provider_id], "launched again"

    gp.custom.delete_cluster_custom_object(GROUP, VERSION, "gpupools", pool)
    wait_for(
        lambda: not gp.claims(pool) and not [i for i in _ours(cloud, operator, pool) if _live(i)],
        timeout=60, what="the claim gone and its instance terminated",
    )  # fmt: skip
