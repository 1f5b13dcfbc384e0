"""What a pool holds and costs, summed from its claims and the GPU pods on their nodes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from gpupool.api import GpuNodeClaim


def pool_totals(claims: Sequence[GpuNodeClaim], gpus_on_node: Callable[[str], int]) -> dict[str, Any]:
    """Status fields: nodes and GPUs that have joined, GPUs in use, and the hourly cost of every
    claim (a launching instance is already billed)."""
    nodes = 0
    gpus_total = 0
    gpus_allocated = 0
    cost = 0.0
    for claim in claims:
        offer = claim.spec.offer
        cost += offer.price_per_hour
        node = claim.status.node_name
        if node:
            nodes += 1
            gpus_total += offer.gpu_count
            gpus_allocated += min(gpus_on_node(node), offer.gpu_count)
    return {
        "nodes": nodes,
        "gpusTotal": gpus_total,
        "gpusAllocated": gpus_allocated,
        "costPerHour": round(cost, 4),
    }
