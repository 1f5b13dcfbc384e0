"""Buying only what the pods can use: CPU, memory, disk, node selectors, affinity and taints."""

from __future__ import annotations

from typing import Any

from gpupool.catalog import Offer
from gpupool.controllers.pool.pending import pod_constraints, pod_demand, pod_requests
from gpupool.planner import Capacity, PendingPod, PoolConstraints, pack_pods
from gpupool.planner.resources import GIB, Resources, allocatable, reserved_cpu_milli
from gpupool.planner.scheduling import ANY_NODE, PodConstraints, Requirement, Toleration

GPU_TOLERATION = ANY_NODE.tolerations


def offer(
    count: int, price: float, vcpus: int | None, memory: float | None, *, itype: str = "", zone: str = "z1"
) -> Offer:
    return Offer(
        "sim", "r1", zone, itype or f"t4x{count}-{vcpus}", "T4", count, 16, vcpus, memory, price, None,
        disk_gib=100,
    )  # fmt: skip


SMALL = offer(1, 0.5, 4, 16)  # g4dn.xlarge-like
WIDE = offer(1, 0.9, 16, 64)  # g4dn.4xlarge-like
QUAD = offer(4, 3.9, 48, 192)  # g4dn.12xlarge-like
CATALOG = [SMALL, WIDE, QUAD]
POOL = PoolConstraints()


def pod(name: str, gpus: int = 1, cpu: float = 1, memory_gib: float = 4, **constraints: Any) -> PendingPod:
    return PendingPod(
        name,
        gpus,
        requests=Resources(round(cpu * 1000), round(memory_gib * GIB), 0, 1),
        constraints=PodConstraints(**({"tolerations": GPU_TOLERATION} | constraints)),
    )


def test_allocatable_subtracts_the_kubelets_reservation() -> None:
    room = allocatable(SMALL)
    assert reserved_cpu_milli(4) == 80  # 60 + 10 + 5 + 5
    assert room.cpu_milli == 3920
    assert room.memory_bytes == 16 * GIB - (255 + 11 * 110 + 100) * 1024**2
    assert room.ephemeral_bytes == round(100 * GIB * 0.9)
    assert allocatable(offer(1, 1, None, None)).cpu_milli is None  # unknown is not zero


def test_a_pod_that_needs_more_cpu_than_the_cheapest_node_gets_the_next_one() -> None:
    result = pack_pods([pod("a", cpu=6)], [], CATALOG, POOL)
    assert [i.offer for i in result.new_instances] == [WIDE]


def test_cpu_per_gpu_limits_how_many_pods_share_an_instance() -> None:
    # 12 CPUs a pod: the 4-GPU node (47.8 allocatable) holds three, not four.
    result = pack_pods([pod(f"p{i}", cpu=12) for i in range(3)], [], [QUAD], POOL)
    assert [len(i.pods) for i in result.new_instances] == [3]
    result = pack_pods([pod(f"p{i}", cpu=12) for i in range(4)], [], [QUAD], POOL)
    assert sorted(len(i.pods) for i in result.new_instances) == [1, 3]
    assert not result.unplaced


def test_a_pod_no_offer_can_hold_names_the_resource() -> None:
    result = pack_pods([pod("big", cpu=64)], [], CATALOG, POOL)
    assert not result.new_instances
    assert "cpu it requests: 64, the most allocatable is 47" in result.unplaced["big"]
    result = pack_pods([pod("fat", memory_gib=500)], [], CATALOG, POOL)
    assert "memory it requests: 500Gi" in result.unplaced["fat"]
    disk = PendingPod("disk", 1, requests=Resources(0, 0, 200 * GIB, 1))
    assert "ephemeral-storage" in pack_pods([disk], [], CATALOG, POOL).unplaced["disk"]


def test_untolerated_pool_taint_buys_nothing_and_says_which() -> None:
    tainted = PoolConstraints(node_taints=(("team", "ml", "NoSchedule"),))
    result = pack_pods([pod("a")], [], CATALOG, tainted)
    assert not result.new_instances
    assert "does not tolerate the taint team=ml:NoSchedule" in result.unplaced["a"]
    bare = PendingPod("bare", 1, constraints=PodConstraints())  # not even the GPU taint's toleration
    assert "nvidia.com/gpu" in pack_pods([bare], [], CATALOG, POOL).unplaced["bare"]
    tolerant = pod("b", tolerations=(*GPU_TOLERATION, Toleration("team", "Equal", "ml", "NoSchedule")))
    assert pack_pods([tolerant], [], CATALOG, tainted).new_instances


def test_node_selector_and_affinity_choose_among_the_offers() -> None:
    picky = pod("a", node_selector=(("node.kubernetes.io/instance-type", QUAD.instance_type),))
    assert [i.offer for i in pack_pods([picky], [], CATALOG, POOL).new_instances] == [QUAD]
    elsewhere = offer(1, 0.6, 4, 16, itype="t4-z2", zone="z2")
    not_z1 = pod("b", terms=((Requirement("topology.kubernetes.io/zone", "NotIn", ("z1",)),),))
    assert [i.offer for i in pack_pods([not_z1], [], [*CATALOG, elsewhere], POOL).new_instances] == [
        elsewhere
    ]
    labelled = PoolConstraints(node_labels=(("team", "ml"),))
    wants_team = pod("c", node_selector=(("team", "ml"),))
    assert pack_pods([wants_team], [], CATALOG, labelled).new_instances
    result = pack_pods([wants_team], [], CATALOG, POOL)
    assert "nodeSelector team=ml" in result.unplaced["c"]
    hostname = pod("d", node_selector=(("kubernetes.io/hostname", "n1"),))
    assert hostname.name in pack_pods([hostname], [], CATALOG, POOL).unplaced


def test_capacity_whose_cpu_is_taken_is_not_counted() -> None:
    on_its_way = Capacity("claim-a", "T4", 1, offer=SMALL, used=Resources(3500, 0, 0, 1))
    result = pack_pods([pod("a", cpu=1)], [on_its_way], CATALOG, POOL)
    assert not result.on_existing
    assert len(result.new_instances) == 1
    roomy = Capacity("claim-b", "T4", 1, offer=WIDE)
    assert pack_pods([pod("a", cpu=6)], [roomy], CATALOG, POOL).on_existing == {"a": "claim-b"}


def test_pod_requests_follow_the_schedulers_arithmetic() -> None:
    spec = {
        "containers": [
            {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
            {"resources": {"limits": {"cpu": "2", "memory": "512Mi", "nvidia.com/gpu": "1"}}},
        ],
        "initContainers": [{"resources": {"requests": {"cpu": "4", "ephemeral-storage": "10Gi"}}}],
        "overhead": {"memory": "100Mi"},
    }
    # Containers sum to 2.5 CPU; the init container's 4 is larger; limits stand in for requests.
    assert pod_requests(spec) == Resources(4000, GIB + 512 * 1024**2 + 100 * 1024**2, 10 * GIB, 1)


def test_pod_constraints_read_selector_affinity_and_tolerations() -> None:
    spec = {
        "nodeSelector": {"gpupool.dev/pool": "p"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]},
                    ]
                }
            }
        },
        "tolerations": [{"operator": "Exists"}],
    }
    constraints = pod_constraints(spec)
    assert constraints.node_selector == (("gpupool.dev/pool", "p"),)
    assert constraints.terms[0] == (Requirement("zone", "In", ("a",)),)
    assert not all(r.matches({"metadata.name": "n"}) for r in constraints.terms[1])  # no name yet
    assert constraints.tolerations[0].tolerates("anything", "x", "NoExecute")
    body = {
        "metadata": {
            "name": "x",
            "namespace": "ns",
            "uid": "u",
            "labels": {"gpupool.dev/model-deployment": "m"},
        },
        "spec": {**spec, "containers": [{"resources": {"limits": {"nvidia.com/gpu": "2"}}}]},
    }
    demand = pod_demand(body)
    assert demand is not None
    assert (demand.gpus, demand.model, demand.uid) == (2, "m", "u")
