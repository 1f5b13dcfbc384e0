"""The KV cache as vLLM lays it out on one GPU: pages, groups of layers, blocks per request.

vLLM's v1 engine (vllm/v1/core/kv_cache_utils.py, vllm/v1/kv_cache_interface.py, pinned image
v0.11) cuts the memory left for the KV cache into blocks of `block_size` tokens. Every layer's
page for one block has the same size, and layers are bundled into KV cache *groups* of
`group_size` layers that draw block ids from one shared pool, so one block id costs
`page x group_size` bytes. What a request takes from the pool depends on each group's layer type:

- full attention (and MLA's latent vector): every token, `cdiv(tokens, block)` blocks;
- sliding window `w`: at most the window plus one step of batched prefill,
  `cdiv(min(w - 1 + max_batched_tokens, tokens), block) + 1` blocks;
- chunked local attention (Llama 4) with chunk `c`: `cdiv(min(c + max_batched_tokens, tokens), block)`;
- Mamba / linear-attention state: one page per sequence, whatever its length.

A model with one layer type is one group of all its layers. A hybrid model is split into groups of
the smallest type's layer count (the larger count when the two are within 25 %), each type padded
to whole groups: Gemma-3-27B's 10 full and 52 windowed layers make 1 + 6 groups of 10. When state
layers are present, the attention block grows (in steps of 16 tokens) until its page holds a state,
and the state page is padded to it. The maximum concurrency vLLM logs is the block pool divided by
the blocks one request takes; its "GPU KV cache size" in tokens is `num_blocks // groups x block`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

LayerKind = Literal["full", "sliding", "chunked", "mla", "state"]

#: vLLM's default block on CUDA (FlashAttention and FlashInfer backends).
BLOCK_SIZE = 16
# Hybrid grouping: within this ratio of layer counts the larger count is the group size.
_GROUP_SIZE_SLACK = 1.25


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class LayerRun:
    """Layers of one KV cache format: `count` of them, with a window or chunk for local attention."""

    kind: LayerKind
    count: int
    window: int = 0


@dataclass(frozen=True, slots=True)
class KvLayout:
    """How one rank's KV cache is paged: the block, the page, and the groups' layer types."""

    block_size: int
    page_bytes: int
    group_size: int
    groups: tuple[tuple[LayerKind, int], ...]
    max_batched_tokens: int

    @property
    def bytes_per_block(self) -> int:
        """One block id in the shared pool: a page in each layer slot of a group."""
        return self.page_bytes * self.group_size

    def blocks_per_request(self, tokens: int) -> int:
        """Blocks one sequence of `tokens` takes from the pool, summed over the groups."""
        block, batched = self.block_size, self.max_batched_tokens
        total = 0
        for kind, window in self.groups:
            if kind in ("full", "mla"):
                total += cdiv(tokens, block)
            elif kind == "sliding":
                total += cdiv(min(window - 1 + batched, tokens), block) + 1
            elif kind == "chunked":
                total += cdiv(min(window + batched, tokens), block)
            else:
                total += 1
        return total

    def num_blocks(self, budget_bytes: float) -> int:
        return max(0, int(budget_bytes // self.bytes_per_block))

    def kv_cache_tokens(self, num_blocks: int) -> int:
        """The "GPU KV cache size: N tokens" vLLM logs for this pool."""
        return num_blocks // len(self.groups) * self.block_size if self.groups else 0

    def concurrency(self, num_blocks: int, tokens: int) -> float:
        """Sequences of `tokens` the pool holds at once (vLLM's "Maximum concurrency")."""
        need = self.blocks_per_request(tokens)
        return num_blocks / need if need else 0.0


def kv_layout(
    runs: Sequence[LayerRun],
    *,
    attention_token_bytes: int,
    state_bytes: int = 0,
    max_batched_tokens: int,
    block_size: int = BLOCK_SIZE,
) -> KvLayout:
    """The paging of one rank holding `runs`, whose attention layers take `attention_token_bytes`
    per token and whose state layers `state_bytes` per sequence."""
    runs = [run for run in runs if run.count > 0]
    has_attention = any(run.kind != "state" for run in runs)
    if state_bytes and has_attention:
        # The attention page must hold a whole state (vLLM's HybridAttentionMambaModelConfig).
        block_size = BLOCK_SIZE * cdiv(state_bytes, BLOCK_SIZE * attention_token_bytes)
        page = block_size * attention_token_bytes
    elif state_bytes:
        page = state_bytes
    else:
        page = block_size * attention_token_bytes
    counts: dict[tuple[LayerKind, int], int] = {}
    for run in runs:
        key = (run.kind, run.window if run.kind in ("sliding", "chunked") else 0)
        counts[key] = counts.get(key, 0) + run.count
    if not counts:
        return KvLayout(block_size, max(page, 1), 1, (), max_batched_tokens)
    smallest, largest = min(counts.values()), max(counts.values())
    group_size = largest if len(counts) == 1 or largest < smallest * _GROUP_SIZE_SLACK else smallest
    groups = tuple(key for key, count in counts.items() for _ in range(cdiv(count, group_size)))
    return KvLayout(block_size, page, group_size, groups, max_batched_tokens)
