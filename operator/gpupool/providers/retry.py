"""Retry with exponential backoff and jitter, in one place for every provider (on tenacity).

Providers raise TransientError for 429s, 5xxs, timeouts and dropped connections and never retry
themselves; `RetryingProvider` wraps any CloudProvider and retries exactly those errors, a bounded
number of times, sleeping `min(cap, base * 2**attempt)` scaled by full jitter (AWS's "full jitter":
many operators retrying after the same outage spread out instead of stampeding), or the cloud's
own Retry-After when it sent one. Every other error passes through at once: retrying a capacity or
auth error only burns the rate limit.

Retrying `create` is safe because `create` is idempotent by claim UID (see base.py). The sleep and
the random source are injectable so tests run the whole backoff instantly and deterministically.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from gpupool.providers.base import CloudProvider, Instance, LaunchRequest, ProviderOffer
from gpupool.providers.errors import TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to retry. `attempts` counts the first call: 5 means at most 4 retries."""

    attempts: int = 5
    base_seconds: float = 0.5
    cap_seconds: float = 20.0
    # A cloud's Retry-After is honoured up to this many seconds; beyond it we give up and let the
    # controller requeue, rather than hold a handler for minutes.
    max_retry_after_seconds: float = 60.0

    def delay(self, attempt: int, rand: float, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (0-based); `rand` is in [0, 1)."""
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_retry_after_seconds)
        return min(self.cap_seconds, self.base_seconds * 2.0**attempt) * rand


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy = RetryPolicy(),
    sleep: Sleep = asyncio.sleep,
    rand: Callable[[], float] = random.random,
    what: str = "call",
) -> T:
    """`await call()`, retrying TransientError per `policy`; the last error is raised when the
    attempts run out."""

    def wait(retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        retry_after = error.retry_after if isinstance(error, TransientError) else None
        return policy.delay(retry_state.attempt_number - 1, rand(), retry_after)

    def before_sleep(retry_state: tenacity.RetryCallState) -> None:
        outcome = retry_state.outcome
        delay = retry_state.next_action.sleep if retry_state.next_action else 0.0
        log.info(
            "%s failed (%s); retry %d/%d in %.2fs",
            what,
            outcome.exception() if outcome is not None else None,
            retry_state.attempt_number,
            policy.attempts - 1,
            delay,
        )

    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )

    async def attempt() -> T:  # a coroutine function, which tenacity awaits (a lambda it would not)
        return await call()

    result: T = await retrying(attempt)
    return result


class RetryingProvider:
    """A CloudProvider that retries the transient errors of the one it wraps."""

    def __init__(
        self,
        inner: CloudProvider,
        policy: RetryPolicy = RetryPolicy(),
        *,
        sleep: Sleep = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.inner = inner
        self.policy = policy
        self._sleep = sleep
        self._rand = rand
        self.name = inner.name
        self.type = inner.type

    def __repr__(self) -> str:
        return f"RetryingProvider({self.inner!r}, attempts={self.policy.attempts})"

    async def _retry(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        return await call_with_retry(
            call, policy=self.policy, sleep=self._sleep, rand=self._rand, what=f"{self.name}.{what}"
        )

    async def list_offers(self) -> builtins.list[ProviderOffer]:
        return await self._retry(self.inner.list_offers, "list_offers")

    async def create(self, request: LaunchRequest) -> Instance:
        return await self._retry(lambda: self.inner.create(request), "create")

    async def get(self, instance_id: str) -> Instance:
        return await self._retry(lambda: self.inner.get(instance_id), "get")

    async def list(self) -> builtins.list[Instance]:
        return await self._retry(self.inner.list, "list")

    async def delete(self, instance_id: str) -> None:
        await self._retry(lambda: self.inner.delete(instance_id), "delete")

    async def aclose(self) -> None:
        await self.inner.aclose()
