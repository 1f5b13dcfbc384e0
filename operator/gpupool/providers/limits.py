"""Client-side rate limits, one set per cloud account, from each cloud's documented limits.

A cloud that is asked faster than it allows answers 429 and, past a point, locks the account
out for a while; a thousand claims each asking for themselves would do exactly that. So every
call of a provider client passes one leaky bucket (aiolimiter) sized from the cloud's
documented request rate, and launches pass a second one where the cloud limits launches
separately (Lambda: one per 12 s). The buckets sit UNDER the retry loop: a retry waits for
the bucket like any call, so backoff and rate limit never add up to a burst. The request
bucket is inside each client (`_http.JsonApi`), so a call that makes several requests (an
idempotent launch looks before it leaps) counts each of them.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass

from aiolimiter import AsyncLimiter

from gpupool.providers.base import CloudProvider, Instance, LaunchRequest, ProviderOffer


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Requests per second for every HTTP request, and launches per `launch_period_seconds`."""

    requests_per_second: float
    launches: int | None = None
    launch_period_seconds: float = 1.0

    def request_limiter(self) -> AsyncLimiter:
        """A bucket of one second's worth of requests: no burst above the documented rate."""
        capacity = max(self.requests_per_second, 1.0)
        return AsyncLimiter(capacity, capacity / self.requests_per_second)


# Lambda Cloud API docs: "about 1 request per second"; instance launches "1 per 12 seconds".
LAMBDA_LIMITS = RateLimits(requests_per_second=1.0, launches=1, launch_period_seconds=12.0)
# RunPod publishes no number for its GraphQL API; its support pages advise staying under a few
# requests per second per key. 5/s is that, with launches paced like Lambda's to be safe.
RUNPOD_LIMITS = RateLimits(requests_per_second=5.0, launches=1, launch_period_seconds=2.0)
# simcloud enforces what a test asks of it (faults); the client is only kept from flooding it.
SIM_LIMITS = RateLimits(requests_per_second=100.0)


class LaunchPacedProvider:
    """A CloudProvider whose launches wait for the account's launch bucket (the request bucket
    is applied to every HTTP request, inside the client)."""

    def __init__(self, inner: CloudProvider, limits: RateLimits) -> None:
        assert limits.launches, "only for clouds that limit launches"
        self.inner = inner
        self.name = inner.name
        self.type = inner.type
        self._launches = AsyncLimiter(limits.launches, limits.launch_period_seconds)

    def __repr__(self) -> str:
        return f"LaunchPacedProvider({self.inner!r})"

    async def list_offers(self) -> builtins.list[ProviderOffer]:
        return await self.inner.list_offers()

    async def create(self, request: LaunchRequest) -> Instance:
        async with self._launches:
            return await self.inner.create(request)

    async def get(self, instance_id: str) -> Instance:
        return await self.inner.get(instance_id)

    async def list(self) -> builtins.list[Instance]:
        return await self.inner.list()

    async def delete(self, instance_id: str) -> None:
        await self.inner.delete(instance_id)

    async def aclose(self) -> None:
        await self.inner.aclose()
