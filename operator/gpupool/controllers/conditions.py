"""Conditions and durations on the wire-shaped dicts the controllers pass around.

The API package keeps conditions as models (`gpupool.api.conditions`); handlers work on
status dicts as kopf hands them over. These two helpers are the bridge, so the rule
"lastTransitionTime moves only when the status changes" lives in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gpupool.api.conditions import Condition, set_condition
from gpupool.api.durations import parse_duration


def put_condition(
    status: dict[str, Any], type_: str, ok: bool, reason: str, message: str, generation: int | None
) -> None:
    """Set one condition in `status["conditions"]`, in place."""
    wanted = "True" if ok else "False"
    for existing in status.get("conditions") or ():
        if existing.get("type") == type_:
            if (
                existing.get("status") == wanted
                and existing.get("reason") == reason
                and existing.get("message") == message
                and existing.get("observedGeneration") == generation
            ):
                return  # as it is: most reconciles change nothing, and rebuilding costs
            break
    current = [Condition.from_k8s(c) for c in status.get("conditions") or []]
    updated = set_condition(current, type_, ok, reason, message, generation, datetime.now(UTC))
    status["conditions"] = [c.to_k8s() for c in updated]


def seconds(text: str) -> float:
    """A duration string of the API ("30s", "5m", "1h") in seconds."""
    return parse_duration(text).total_seconds()


def now_stamp() -> str:
    """Now, as the API server writes timestamps (RFC 3339, whole seconds, Z)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def parse_stamp(stamp: str) -> float:
    """An API timestamp ("2026-01-01T00:00:00Z") as epoch seconds."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
