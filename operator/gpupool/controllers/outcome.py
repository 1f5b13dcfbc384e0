"""What a reconcile returns to its handler: the new status and the events to post.

Reconcilers stay free of kopf; the controllers turn an Outcome into a status write (only
when it changed), Kubernetes events and the time of the next look.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Outcome:
    status: dict[str, Any]
    events: list[Event] = field(default_factory=list)
    # Seconds until the reconcile must run again even if nothing changes (a deadline falls
    # due); None: only when woken, or at the resync.
    requeue: float | None = None

    def requeue_in(self, seconds: float) -> None:
        """Ask to run again within `seconds` (the earliest of several asks wins)."""
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)

    def info(self, reason: str, message: str) -> None:
        self.events.append(Event("Normal", reason, message))

    def warn(self, reason: str, message: str) -> None:
        self.events.append(Event("Warning", reason, message))
