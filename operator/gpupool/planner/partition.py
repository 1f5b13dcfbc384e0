"""Cost-weighted bin packing in one dimension: sizes onto instance kinds priced by `cover`.

The packer reduces each class of pods to this: item sizes (GPUs' worth of a pod) and `cover[k]`,
the cheapest instance kind that holds k. The exact search is optimal; the greedy one scales, and
its measured gap to the optimum is in docs/planner.md (bench/planner/run.py measures it again).

- Exact: a memoized search over partitions, each part containing the largest remaining item and
  costing cover[its sum].
- Greedy ("cheapest per GPU"): repeatedly take the instance kind whose largest-first fill from the
  remaining items has the lowest price per GPU used, open as many copies of that fill as the counts
  allow at once, then re-solve exactly the least efficient tail.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from gpupool.catalog.offers import CapacityType, Offer

EXACT_TAIL_PODS = 12


@dataclass(frozen=True, slots=True)
class InstanceKind:
    offer: Offer
    capacity_type: CapacityType
    price: float
    size: int  # GPUs' worth of the class's pods it holds (its GPUs, or fewer: see the docstring)


def cover_table(kinds: Sequence[InstanceKind]) -> list[InstanceKind | None]:
    """cover[k]: the cheapest instance type with at least k GPUs (index 0 unused)."""
    largest = max((k.size for k in kinds), default=0)
    cover: list[InstanceKind | None] = [None] * (largest + 1)
    for need in range(1, largest + 1):
        fitting = [k for k in kinds if k.size >= need]
        cover[need] = min(fitting, key=lambda k: (k.price, k.size, k.offer.key)) if fitting else None
    return cover


def exact_partition(sizes: tuple[int, ...], cover: Sequence[InstanceKind | None]) -> list[tuple[int, ...]]:
    """An optimal partition of `sizes` (sorted descending) into instances priced by `cover`."""
    largest = len(cover) - 1

    @functools.cache
    def solve(remaining: tuple[int, ...]) -> tuple[float, tuple[tuple[int, ...], ...]]:
        if not remaining:
            return 0.0, ()
        first, rest = remaining[0], remaining[1:]
        best: tuple[float, tuple[tuple[int, ...], ...]] = (math.inf, ())
        seen: set[tuple[int, ...]] = set()

        def extend(start: int, chosen: tuple[int, ...], total: int) -> None:
            nonlocal best
            if chosen in seen:
                return
            seen.add(chosen)
            kind = cover[total]
            if kind is not None:
                left = list(rest)
                for size in chosen[1:]:
                    left.remove(size)
                sub_cost, sub_parts = solve(tuple(left))
                cost = kind.price + sub_cost
                if cost < best[0] - 1e-9:
                    best = (cost, (chosen, *sub_parts))
            previous = None
            for position in range(start, len(rest)):
                size = rest[position]
                if size == previous or total + size > largest:
                    previous = size
                    continue
                previous = size
                extend(position + 1, (*chosen, size), total + size)

        extend(0, (first,), first)
        return best

    return list(solve(sizes)[1])


def greedy_partition(sizes: Sequence[int], cover: Sequence[InstanceKind | None]) -> list[tuple[int, ...]]:
    """Cheapest-per-GPU greedy fill (see the module docstring); returns the pods' sizes per instance."""
    counts = Counter(sizes)
    kinds = sorted({id(k): k for k in cover if k is not None}.values(), key=lambda k: (k.size, k.price))
    parts: list[tuple[int, ...]] = []
    while counts:
        best: tuple[float, int, float, str] | None = None
        best_fill: dict[int, int] = {}
        for kind in kinds:
            room = kind.size
            fill: dict[int, int] = {}
            for size in sorted(counts, reverse=True):
                take = min(counts[size], room // size)
                if take:
                    fill[size] = take
                    room -= take * size
            used = kind.size - room
            if not used:
                continue
            rank = (kind.price / used, -used, kind.price, kind.offer.key)
            if best is None or rank < best:
                best, best_fill = rank, fill
        if best is None:
            break
        repeat = min(counts[size] // take for size, take in best_fill.items())
        part = tuple(size for size, take in sorted(best_fill.items(), reverse=True) for _ in range(take))
        parts.extend([part] * repeat)
        for size, take in best_fill.items():
            counts[size] -= take * repeat
            if counts[size] <= 0:
                del counts[size]
    return _refine_tail(parts, cover)


def _part_price(part: tuple[int, ...], cover: Sequence[InstanceKind | None]) -> float:
    kind = cover[sum(part)]
    return kind.price if kind is not None else math.inf


def _refine_tail(parts: list[tuple[int, ...]], cover: Sequence[InstanceKind | None]) -> list[tuple[int, ...]]:
    """Re-solve exactly the pods of the least efficient instances, where greedy waste collects.

    Greedy fills the bulk with the best price-per-GPU instance; its mistakes are in the last few,
    partly filled instances. Their pods (up to EXACT_TAIL_PODS) are re-partitioned optimally, and
    the result is kept only if it is cheaper, so this never makes a packing worse.
    """
    ranked = sorted(
        range(len(parts)), key=lambda i: _part_price(parts[i], cover) / sum(parts[i]), reverse=True
    )
    chosen: list[int] = []
    pods = 0
    for position in ranked:
        if pods + len(parts[position]) > EXACT_TAIL_PODS:
            break
        chosen.append(position)
        pods += len(parts[position])
    if len(chosen) < 2:
        return parts
    tail = [parts[i] for i in chosen]
    sizes = tuple(sorted((size for part in tail for size in part), reverse=True))
    better = exact_partition(sizes, cover)
    before = sum(_part_price(part, cover) for part in tail)
    after = sum(_part_price(part, cover) for part in better)
    if after >= before - 1e-9:
        return parts
    keep = set(chosen)
    return [part for i, part in enumerate(parts) if i not in keep] + better


def partition_price(parts: Sequence[tuple[int, ...]], cover: Sequence[InstanceKind | None]) -> float:
    total = 0.0
    for part in parts:
        kind = cover[sum(part)]
        assert kind is not None
        total += kind.price
    return total
