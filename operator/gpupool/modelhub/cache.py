"""The resolver the controllers call: Hub reads off the event loop, remembered for a while, shared.

A ModelDeployment is reconciled on every event and resync, and a thousand of them may name the
same model; the Hub must see one request per model per hour, not one per reconcile. So:
successes are kept for `hub_cache_seconds`; failures too, for `hub_failure_cache_seconds`, so a
spec naming a missing or gated model costs one round of Hub calls a minute, never a hot loop;
and concurrent calls for the same model, revision and token share one request in flight.

The cache key holds a keyed hash of the token (a random key per process), never the token:
two Secrets with different tokens may see different things (gated, private repos).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable

from cachetools import TLRUCache

from gpupool.modelhub.errors import scrub, translate
from gpupool.modelhub.fetch import Progress, fetch_model
from gpupool.modelhub.model import HubModel, ModelUnresolved
from gpupool.settings import OperatorSettings

log = logging.getLogger(__name__)

_Key = tuple[str, str, str]
_Outcome = HubModel | ModelUnresolved


class ModelHub:
    """Resolves models against one Hub endpoint, with its cache; one per process is enough."""

    def __init__(
        self,
        *,
        endpoint: str = "https://huggingface.co",
        cache_seconds: float = 3600.0,
        failure_cache_seconds: float = 60.0,
        request_timeout_seconds: float = 10.0,
        resolve_timeout_seconds: float = 60.0,
        max_entries: int = 512,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.cache_seconds = cache_seconds
        self.failure_cache_seconds = failure_cache_seconds
        self.request_timeout_seconds = request_timeout_seconds
        self.resolve_timeout_seconds = resolve_timeout_seconds
        self._salt = os.urandom(16)
        self._done: TLRUCache[_Key, _Outcome] = TLRUCache(max_entries, ttu=self._expiry, timer=clock)
        self._inflight: dict[_Key, asyncio.Task[_Outcome]] = {}

    @classmethod
    def from_settings(cls, settings: OperatorSettings | None = None) -> ModelHub:
        s = settings or OperatorSettings()
        return cls(
            endpoint=s.hf_endpoint,
            cache_seconds=s.hub_cache_seconds,
            failure_cache_seconds=s.hub_failure_cache_seconds,
            request_timeout_seconds=s.hub_request_timeout_seconds,
            resolve_timeout_seconds=s.hub_resolve_timeout_seconds,
            max_entries=s.hub_cache_entries,
        )

    def _expiry(self, _key: _Key, value: _Outcome, now: float) -> float:
        ttl = self.cache_seconds if isinstance(value, HubModel) else self.failure_cache_seconds
        return now + ttl

    def _key(self, model_id: str, revision: str | None, token: str | None) -> _Key:
        who = hmac.new(self._salt, token.encode(), hashlib.sha256).hexdigest() if token else ""
        return (model_id, revision or "", who)

    def forget(self) -> None:
        """Drop every remembered outcome (requests in flight finish and are remembered)."""
        self._done.clear()

    async def resolve(self, model_id: str, *, token: str | None, revision: str | None = None) -> HubModel:
        """The model's metadata; raises ModelUnresolved (fresh each call) when it cannot be had."""
        key = self._key(model_id, revision, token)
        outcome = self._done.get(key)
        if outcome is None:
            task = self._inflight.get(key)
            if task is None:
                task = asyncio.create_task(self._fetch(key, model_id, token=token, revision=revision))
                self._inflight[key] = task
            # Shielded: a caller that is cancelled does not cancel the others' shared request.
            outcome = await asyncio.shield(task)
        if isinstance(outcome, ModelUnresolved):
            raise ModelUnresolved(outcome.reason, outcome.message)
        return outcome

    async def _fetch(self, key: _Key, model_id: str, *, token: str | None, revision: str | None) -> _Outcome:
        progress = Progress()
        outcome: _Outcome
        try:
            outcome = await asyncio.wait_for(
                asyncio.to_thread(
                    fetch_model,
                    model_id,
                    token=token,
                    revision=revision,
                    endpoint=self.endpoint,
                    timeout=self.request_timeout_seconds,
                    progress=progress,
                ),
                self.resolve_timeout_seconds,
            )
        except ModelUnresolved as exc:
            outcome = ModelUnresolved(exc.reason, scrub(exc.message, token))
        except asyncio.CancelledError:
            progress.abandoned = True
            self._inflight.pop(key, None)
            raise
        except Exception as exc:  # every failure becomes a status, never a crashed handler
            # The worker thread cannot be cancelled: past the deadline it makes no further request.
            progress.abandoned = True
            outcome = translate(
                exc,
                model_id=model_id,
                revision=revision,
                file=progress.file,
                endpoint=self.endpoint,
                token=token,
                retry_seconds=self.failure_cache_seconds,
            )
        self._done[key] = outcome
        self._inflight.pop(key, None)
        if isinstance(outcome, HubModel):
            log.info(
                "resolved %s at %s: %d parameters %s in %d safetensors file(s)",
                model_id,
                outcome.revision[:12],
                outcome.parameters,
                outcome.parameters_by_dtype,
                len(outcome.safetensors_files),
            )
        else:
            log.warning("model %s unresolved (%s): %s", model_id, outcome.reason, outcome.message)
        return outcome


@functools.cache
def default_hub() -> ModelHub:
    """The process's resolver, configured from the operator's settings on first use."""
    return ModelHub.from_settings()


async def resolve_model(model_id: str, *, token: str | None, revision: str | None = None) -> HubModel:
    """The model's config.json and safetensors metadata from the Hub (cached); raises ModelUnresolved."""
    return await default_hub().resolve(model_id, token=token, revision=revision)


def resolve_model_sync(model_id: str, *, token: str | None, revision: str | None = None) -> HubModel:
    """`resolve_model` for code without an event loop (the CLI); raises ModelUnresolved."""
    return asyncio.run(resolve_model(model_id, token=token, revision=revision))
