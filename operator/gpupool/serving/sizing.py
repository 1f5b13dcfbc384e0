"""Numbers the pod spec needs that depend on the model's size: startup budget, /dev/shm, CPU, memory.

Every figure here is a deliberate estimate with its reasoning, because each one fails in a
costly way when wrong. A startup budget too short kills a 70B pod in a loop while it is still
downloading (vLLM's Kubernetes guide lists exactly that: "KeyboardInterrupt: terminated");
one too long only delays noticing a broken pod. Requests too large price the cheapest offers
out of the plan; too small and the node is overcommitted.
"""

from __future__ import annotations

import math

from gpupool.serving.inputs import ServingInput

#: The startup probe's period, seconds.
STARTUP_PERIOD_SECONDS = 10

# Startup = fetch the weights + load them onto the GPUs + engine warm-up.
# Fetch: 8 s/GiB is ~128 MiB/s, a pessimistic rate for the Hugging Face hub into a cloud VM
# (often 200-500 MiB/s), and covers loading from local disk into GPU memory as well.
# Warm-up: 300 s covers vLLM's torch.compile, CUDA graph capture and KV-cache profiling,
# which take one to a few minutes whatever the model size.
_FETCH_SECONDS_PER_GIB = 8.0
_WARMUP_SECONDS = 300
# Bounds: never less than the warm-up plus a margin, never more than two hours (past that a
# pod is broken, not slow).
_MIN_STARTUP_SECONDS = 600
_MAX_STARTUP_SECONDS = 7200


def startup_budget_seconds(model_size_gib: float) -> int:
    """How long a fresh pod may take to answer `/health`, seconds.

    `300 + 8 * GiB`, clamped to [600, 7200]: an 8B model in bf16 (~15 GiB) gets 10 minutes,
    a 70B model (~130 GiB) about 22 minutes, a 405B model (~754 GiB) about 1 h 45 min.
    """
    raw = _WARMUP_SECONDS + _FETCH_SECONDS_PER_GIB * max(model_size_gib, 0.0)
    return int(min(max(raw, _MIN_STARTUP_SECONDS), _MAX_STARTUP_SECONDS))


def startup_failure_threshold(model_size_gib: float) -> int:
    """The startup probe's failureThreshold that gives the budget at `STARTUP_PERIOD_SECONDS`."""
    return math.ceil(startup_budget_seconds(model_size_gib) / STARTUP_PERIOD_SECONDS)


def shm_size_gib(inp: ServingInput) -> int:
    """Size limit of the memory-backed /dev/shm, GiB.

    Docker's default 64 MiB /dev/shm breaks PyTorch multiprocessing and NCCL, which vLLM uses
    between tensor-parallel workers (vLLM's Kubernetes guide mounts a Memory emptyDir there).
    NCCL's shared-memory transport needs some per rank, and bigger models move bigger
    tensors: `2 GiB per tensor-parallel rank + 1 GiB per 16 GiB of weights`, in [2, 32].
    It is a limit, not a reservation: pages count against the pod only once written.
    """
    raw = 2 * inp.tensor_parallel_size + math.ceil(max(inp.model_size_gib, 0.0) / 16)
    return min(max(raw, 2), 32)


def cpu_request(inp: ServingInput) -> str:
    """CPU request: one core for the API server and tokenizer plus one per GPU worker.

    Modest on purpose: the smallest common GPU instances have 4 vCPUs per GPU, and a request
    above what they can allocate would exclude them from the plan. There is no CPU limit,
    so vLLM may use the idle cores of its node without CFS throttling its latency.
    """
    return str(1 + inp.gpus_per_replica)


def memory_request_gib(inp: ServingInput) -> int:
    """Memory request, GiB: 4 for the Python process, 2 per GPU worker, plus the /dev/shm limit.

    The weights are read through mmap'd safetensors, reclaimable page cache that a request
    need not reserve. /dev/shm pages do count against the pod, so its size is reserved.
    There is no memory limit: a limit would OOM-kill the pod during the page-cache spike of a
    load, the one moment it is most expensive to lose.
    """
    return 4 + 2 * inp.gpus_per_replica + shm_size_gib(inp)
