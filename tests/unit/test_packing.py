"""Packing pending GPU pods onto the cheapest new instances, within the pool's limits."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpupool.catalog import Offer, Unavailable
from gpupool.planner import Capacity, PendingPod, PoolConstraints, pack_pods
from gpupool.planner.packing import greedy_cost, optimal_cost


def offer(gpu: str, count: int, price: float, spot: float | None = None, provider: str = "p") -> Offer:
    return Offer(provider, "r", "", f"{gpu}x{count}", gpu, count, 80, 8, 64, price, spot)


H100 = [offer("H100", 1, 3.0), offer("H100", 2, 5.0), offer("H100", 4, 9.0), offer("H100", 8, 16.0)]
L4 = [offer("L4", 1, 0.8), offer("L4", 4, 3.0)]
CATALOG = H100 + L4
POOL = PoolConstraints()


def pods(*sizes: int, gpu_types: tuple[str, ...] = ("H100",), prefix: str = "p") -> list[PendingPod]:
    return [PendingPod(f"{prefix}{i}", size, gpu_types) for i, size in enumerate(sizes)]


def test_small_batches_are_packed_exactly() -> None:
    result = pack_pods(pods(1, 1, 1, 1, 2), [], CATALOG, POOL)
    assert result.exact
    # 6 GPUs: 8-GPU node ($16) vs 4+2 ($14) vs 4+1+1 ($15): the optimum is $14.
    assert result.cost_per_hour == 14.0
    assert sorted(i.offer.gpu_count for i in result.new_instances) == [2, 4]
    assert sorted(p for i in result.new_instances for p in i.pods) == ["p0", "p1", "p2", "p3", "p4"]
    assert not result.unplaced


def test_pods_go_to_their_allowed_gpu_models() -> None:
    mixed = pods(1, 1, gpu_types=("L4",), prefix="l") + pods(2, prefix="h") + [PendingPod("any", 1)]
    result = pack_pods(mixed, [], CATALOG, POOL)
    by_pod = {p: i.offer.gpu for i in result.new_instances for p in i.pods}
    assert by_pod["l0"] == by_pod["l1"] == "L4"
    assert by_pod["h0"] == "H100"
    assert by_pod["any"] == "L4"  # cheapest GPU that can take an unconstrained pod
    assert not result.unplaced


def test_existing_and_in_flight_capacity_is_used_first() -> None:
    in_flight = [
        Capacity("claim-a", "H100", 3),
        Capacity("claim-b", "L4", 4),
        Capacity("other", "H100", 8, pool="x"),
    ]
    result = pack_pods(pods(2, 1, 4), in_flight, CATALOG, POOL)
    assert result.on_existing == {"p0": "claim-a", "p1": "claim-a"}
    assert [i.offer.gpu_count for i in result.new_instances] == [4]


def test_limits_are_respected_and_named_for_unplaced_pods() -> None:
    result = pack_pods(pods(4, 4, 4), [], CATALOG, PoolConstraints(max_nodes=1))
    assert len(result.new_instances) == 1
    assert set(result.unplaced.values()) == {"pool limit maxNodes 1 reached"}
    result = pack_pods(pods(4, 4), [], CATALOG, PoolConstraints(max_gpus=6, used_gpus=2))
    assert sum(i.offer.gpu_count for i in result.new_instances) <= 4
    assert any("maxGpus 6" in why for why in result.unplaced.values())
    result = pack_pods(pods(1, 1), [], CATALOG, PoolConstraints(max_hourly_cost=3.5))
    assert result.cost_per_hour <= 3.5
    assert any("maxHourlyCost" in why for why in result.unplaced.values())


def test_unplaceable_pods_say_why() -> None:
    result = pack_pods(pods(16) + pods(1, gpu_types=("B200",), prefix="b"), [], CATALOG, POOL)
    assert "no usable offer has 16 GPUs of H100 (largest: 8)" in result.unplaced["p0"]
    assert "B200" in result.unplaced["b0"]
    result = pack_pods([PendingPod("s", 1, ("H100",), capacity_types=("spot",))], [], CATALOG, POOL)
    assert "capacity types" in result.unplaced["s"]


def test_pool_filters_capacity_types_and_unavailable_offers() -> None:
    catalog = [offer("H100", 1, 3.0, spot=1.0), offer("H100", 1, 2.5, provider="q")]
    spot_pool = PoolConstraints(capacity_types=("spot", "on-demand"))
    result = pack_pods(pods(1), [], catalog, spot_pool)
    assert result.new_instances[0].capacity_type == "spot" and result.new_instances[0].price_per_hour == 1.0
    marks = Unavailable().mark(catalog[0].key, "spot", 100.0)
    result = pack_pods(pods(1), [], catalog, spot_pool, unavailable=marks, now=10.0)
    assert result.new_instances[0].offer.provider == "q"
    only_q = pack_pods(pods(1), [], catalog, PoolConstraints(providers=("q",)))
    assert only_q.new_instances[0].offer.provider == "q"


def test_other_pools_pods_are_ignored() -> None:
    result = pack_pods([PendingPod("mine", 1), PendingPod("theirs", 1, pool="other")], [], CATALOG, POOL)
    assert result.ignored == ("theirs",)
    assert [p for i in result.new_instances for p in i.pods] == ["mine"]


def test_large_batches_use_the_heuristic_and_stay_near_optimal() -> None:
    sizes = [1, 2, 1, 4, 1, 1, 2, 8, 1, 2, 4, 1] * 3
    result = pack_pods(pods(*sizes), [], CATALOG, POOL)
    assert not result.exact
    assert not result.unplaced
    lower_bound = sum(sizes) * 2.0  # $16 per 8 GPUs is the cheapest GPU-hour here
    assert result.cost_per_hour <= lower_bound * 1.1


def brute_force_cost(sizes: Sequence[int], catalog: Sequence[Offer]) -> float:
    """Least cost by trying every assignment of pods to up to len(sizes) bins (tiny inputs only)."""
    kinds = sorted({(o.gpu_count, o.on_demand_price or math.inf) for o in catalog})
    cheapest = {
        need: min((price for count, price in kinds if count >= need), default=math.inf)
        for need in range(1, 17)
    }
    best = math.inf
    for labels in itertools.product(range(len(sizes)), repeat=len(sizes)):
        loads: dict[int, int] = {}
        for label, size in zip(labels, sizes, strict=True):
            loads[label] = loads.get(label, 0) + size
        best = min(best, sum(cheapest.get(load, math.inf) for load in loads.values()))
    return best


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.sampled_from([1, 1, 2, 3, 4, 8]), min_size=1, max_size=6))
def test_exact_packing_matches_brute_force(sizes: list[int]) -> None:
    result = pack_pods(pods(*sizes), [], H100, POOL)
    assert result.exact
    assert math.isclose(result.cost_per_hour, brute_force_cost(sizes, H100))
    assert math.isclose(optimal_cost(sizes, H100, PoolConstraints()), result.cost_per_hour)
    assert greedy_cost(sizes, H100, PoolConstraints()) >= result.cost_per_hour - 1e-9


@st.composite
def catalogs(draw: st.DrawFn) -> list[Offer]:
    result = []
    for gpu in ("H100", "L4"):
        for count in draw(st.sets(st.sampled_from([1, 2, 4, 8]), min_size=1)):
            price = draw(st.floats(min_value=0.5, max_value=4)) * count
            spot = draw(st.one_of(st.none(), st.floats(min_value=0.2, max_value=3)))
            result.append(
                offer(gpu, count, round(price, 3), None if spot is None else round(spot * count, 3))
            )
    return result


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    catalog=catalogs(),
    sizes=st.lists(
        st.tuples(
            st.sampled_from([1, 2, 4, 8, 3]), st.sampled_from([(), ("H100",), ("L4",), ("H100", "L4")])
        ),
        min_size=1,
        max_size=40,
    ),
    free=st.lists(
        st.tuples(st.sampled_from(["H100", "L4"]), st.integers(min_value=0, max_value=8)), max_size=3
    ),
    max_nodes=st.one_of(st.none(), st.integers(min_value=0, max_value=10)),
    max_gpus=st.one_of(st.none(), st.integers(min_value=0, max_value=64)),
    max_cost=st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
    used=st.integers(min_value=0, max_value=3),
)
def test_packing_never_exceeds_limits_and_accounts_for_every_pod(
    catalog: list[Offer],
    sizes: list[tuple[int, tuple[str, ...]]],
    free: list[tuple[str, int]],
    max_nodes: int | None,
    max_gpus: int | None,
    max_cost: float | None,
    used: int,
) -> None:
    pending = [PendingPod(f"p{i}", gpus, types) for i, (gpus, types) in enumerate(sizes)]
    in_flight = [Capacity(f"c{i}", gpu, n) for i, (gpu, n) in enumerate(free)]
    limits = PoolConstraints(
        capacity_types=("spot", "on-demand"),
        max_nodes=max_nodes,
        max_gpus=max_gpus,
        max_hourly_cost=max_cost,
        used_nodes=used,
        used_gpus=used,
        used_cost_per_hour=float(used),
    )
    result = pack_pods(pending, in_flight, catalog, limits)
    if max_nodes is not None:
        assert used + len(result.new_instances) <= max(max_nodes, used)
    if max_gpus is not None:
        assert used + result.gpus <= max(max_gpus, used)
    if max_cost is not None:
        assert used + result.cost_per_hour <= max(max_cost, used) + 1e-9
    placed = [p for i in result.new_instances for p in i.pods]
    names = {p.name for p in pending}
    # Every pod is placed exactly once, or reported with a reason.
    assert len(placed) == len(set(placed))
    assert set(placed) | set(result.on_existing) | set(result.unplaced) == names
    assert not (set(placed) & set(result.unplaced)) and not (set(result.on_existing) & set(result.unplaced))
    by_name = {p.name: p for p in pending}
    for instance in result.new_instances:
        assert instance.gpus_used == sum(by_name[p].gpus for p in instance.pods) <= instance.offer.gpu_count
        for pod in instance.pods:
            assert not by_name[pod].gpu_types or instance.offer.gpu in by_name[pod].gpu_types
    for pod, claim in result.on_existing.items():
        capacity = next(c for c in in_flight if c.name == claim)
        assert not by_name[pod].gpu_types or capacity.gpu in by_name[pod].gpu_types
    for claim in in_flight:
        assert (
            sum(by_name[p].gpus for p, c in result.on_existing.items() if c == claim.name) <= claim.free_gpus
        )
