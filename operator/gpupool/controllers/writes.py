"""Status writes that happen only when the status changed.

kopf would PATCH whatever a handler leaves in its patch on every call; with a thousand
objects reconciled on events, that is a thousand writes for nothing. Here a reconcile hands
over the whole status it wants, and `StatusWriter` sends a JSON merge patch of just the
top-level fields that differ from what the object has (fields that are no longer wanted are
removed with null), or nothing at all.

"What the object has" is the body kopf keeps current from its watch, except in the moment
after our own write, before its watch event arrives: then it is what the API server
answered to that write. Comparing resourceVersions for equality (never for order, which the
API conventions forbid) tells the two apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gpupool.controllers.kube import Kube


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch that turns `current` into `desired` at the top level; {} when equal."""
    patch = {key: value for key, value in desired.items() if current.get(key) != value}
    patch.update({key: None for key in current if key not in desired})
    return patch


@dataclass
class _Written:
    before: str  # resourceVersion the object had when we wrote
    after: str  # resourceVersion our write produced
    status: dict[str, Any]


class StatusWriter:
    """Writes one object's status, only when it changed."""

    def __init__(self, kube: Kube, plural: str, name: str, namespace: str | None = None) -> None:
        self.kube = kube
        self.plural = plural
        self.name = name
        self.namespace = namespace
        self._written: _Written | None = None
        self.writes = 0

    def current(self, body: Mapping[str, Any]) -> Mapping[str, Any]:
        """The status the object has now, counting our own write whose event is still on its way."""
        version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        written = self._written
        if written is not None and version in (written.before, written.after):
            return written.status
        return body.get("status") or {}

    async def write(self, body: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
        """Patch the status to `desired` if it differs; True when a write was sent."""
        current = self.current(body)
        patch = status_patch(current, desired)
        if not patch:
            return False
        before = str((body.get("metadata") or {}).get("resourceVersion") or "")
        obj = await self.kube.patch_status(self.plural, self.name, patch, namespace=self.namespace)
        after = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        self._written = _Written(before=before, after=after, status=dict(obj.get("status") or {}))
        self.writes += 1
        return True
