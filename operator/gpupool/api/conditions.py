"""Status conditions, shaped exactly like Kubernetes' own metav1.Condition.

Every kind reports `Ready` (and `Progressing`/`Degraded` where they mean something)
the way core objects do, so `kubectl wait --for=condition=Ready` and every tool that
reads conditions work unchanged. `set_condition` is pure: it returns a new list and
keeps `lastTransitionTime` when the status did not change, which is what makes the
time mean "since when", not "last reconciled".
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from gpupool.api.base import WireModel, map_list, unique_by

CONDITION_TYPE = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
)
CONDITION_REASON = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"


class ConditionStatus(StrEnum):
    """Whether the condition holds: True, False or Unknown."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(WireModel):
    """One aspect of the object's current state (metav1.Condition)."""

    type: str = Field(
        min_length=1,
        max_length=316,
        pattern=CONDITION_TYPE,
        description="Kind of condition in CamelCase, e.g. Ready, Progressing, Degraded.",
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=CONDITION_REASON,
        description="Machine-readable CamelCase reason for the last transition, e.g. NoOfferFits.",
    )
    message: str = Field(
        default="", max_length=32768, description="Human-readable details of the last transition."
    )
    last_transition_time: datetime = Field(description="When the status last changed (RFC 3339).")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        strict=True,
        description="The .metadata.generation the condition was set from; older means stale.",
    )


Conditions = Annotated[list[Condition], map_list(16, "type"), unique_by("type")]


def get_condition(conditions: Sequence[Condition], type_: str) -> Condition | None:
    """The condition of this type, or None."""
    return next((c for c in conditions if c.type == type_), None)


def is_true(conditions: Sequence[Condition], type_: str) -> bool:
    """True when the condition exists and its status is True."""
    found = get_condition(conditions, type_)
    return found is not None and found.status is ConditionStatus.TRUE


def set_condition(
    conditions: Sequence[Condition],
    type: str,
    status: ConditionStatus | str | bool,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """A new list with the condition of `type` set; other conditions keep their order.

    `lastTransitionTime` moves only when the status changes; reason, message and
    observedGeneration always take the new values. `now` is truncated to whole seconds,
    as the API server's own timestamps are.
    """
    if isinstance(status, bool):
        status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
    status = ConditionStatus(status)
    stamp = now.astimezone(UTC).replace(microsecond=0)
    previous = get_condition(conditions, type)
    transition = previous.last_transition_time if previous and previous.status is status else stamp
    updated = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=transition,
        observed_generation=generation,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if c.type == type else c for c in conditions]
