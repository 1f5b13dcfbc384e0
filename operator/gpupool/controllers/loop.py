"""Per-object reconcile loops that sleep until something the object depends on changes.

Every GpuProvider, GpuPool, GpuNodeClaim and ModelDeployment has one kopf daemon that runs
`reconcile_forever`: reconcile, then sleep until woken. The switchboard's watch handlers wake
a loop by its key when an object it reads changes (its own spec, its pods, its node, its
claims); the reconcile itself may ask to be woken at a deadline (a batch closing, a launch
timing out, a node falling due for consolidation). The resync interval is only a safety
net: a reconcile reads memory (kopf's indexes), so a resync that finds nothing to do costs
the API server nothing.

A wake that arrives while a reconcile runs is not lost: the event is cleared before the
reconcile starts, so the loop goes round once more at once. Many wakes in a burst (a
thousand pods of one pool) coalesce into one reconcile after a short settle delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field

import kopf

log = logging.getLogger(__name__)


@dataclass
class Wakeups:
    """Keyed wake-up events; a key has an event only while its loop runs."""

    _events: dict[Hashable, asyncio.Event] = field(default_factory=dict)

    def register(self, key: Hashable) -> asyncio.Event:
        return self._events.setdefault(key, asyncio.Event())

    def forget(self, key: Hashable) -> None:
        self._events.pop(key, None)

    def wake(self, key: Hashable) -> None:
        event = self._events.get(key)
        if event is not None:
            event.set()

    def wake_all(self, keys: Iterable[Hashable]) -> None:
        for key in keys:
            self.wake(key)


def backoff_seconds(failures: int, minimum: float, maximum: float) -> float:
    """Exponential backoff after `failures` consecutive failed reconciles (1, 2, 4, ... capped)."""
    return float(min(maximum, minimum * 2 ** max(failures - 1, 0)))


async def _sleep_until_woken(event: asyncio.Event, stopped: kopf.DaemonStopped, seconds: float) -> None:
    if event.is_set() or stopped:
        return
    woken = asyncio.ensure_future(event.wait())
    stopping = asyncio.ensure_future(stopped.wait())
    try:
        await asyncio.wait({woken, stopping}, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        woken.cancel()
        stopping.cancel()


Reconcile = Callable[[], Awaitable[float | None]]


async def reconcile_forever(
    key: Hashable,
    reconcile: Reconcile,
    *,
    wakeups: Wakeups,
    stopped: kopf.DaemonStopped,
    resync: float,
    settle: float = 0.0,
    backoff_min: float = 1.0,
    backoff_max: float = 60.0,
) -> None:
    """Run `reconcile` until the daemon is stopped; it returns seconds until it must run again
    (None: only when woken, or at the resync)."""
    event = wakeups.register(key)
    failures = 0
    try:
        while not stopped:
            event.clear()
            try:
                requeue = await reconcile()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                requeue = backoff_seconds(failures, backoff_min, backoff_max)
                log.exception("reconcile of %s failed (%d in a row); again in %.0fs", key, failures, requeue)
            timeout = resync if requeue is None else min(requeue, resync)
            await _sleep_until_woken(event, stopped, timeout)
            if settle > 0 and event.is_set() and not stopped:
                await asyncio.sleep(settle)
    finally:
        if wakeups._events.get(key) is event:
            wakeups.forget(key)
