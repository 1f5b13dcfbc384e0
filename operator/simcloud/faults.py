"""Fault rules: the failures a real cloud produces, injected on demand and reproducibly.

The claim controller's failover, the retry loop and the launch timeout are only tested if the
cloud misbehaves on cue. A rule applies to a scope: `*` (every request), or an offer named by its
key, instance type, region, `region/instance_type` or GPU (see `offers.offer_names`). Launches are
matched against the offer's names; every other API call only against `*` rules, since it concerns
no offer. Random errors draw from one seeded generator, so a test that sets a seed sees the same
sequence of failures on every run.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from typing import Any

ERROR_STATUSES = (429, 500, 502, 503)


@dataclass(frozen=True, slots=True)
class Fault:
    scope: str = "*"
    capacity_error: bool = False  # launches fail with insufficient-capacity (the offer shows unavailable)
    quota_error: bool = False  # launches fail with quota-exceeded
    error_rate: float = 0.0  # fraction of matching requests answered with error_status
    error_status: int = 503
    latency_ms: int = 0  # added before the request is handled
    never_register: bool = False  # launched instances run but their Node never appears

    def matches(self, names: Collection[str]) -> bool:
        return self.scope == "*" or self.scope in names

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {
            "scope": data["scope"],
            "capacityError": data["capacity_error"],
            "quotaError": data["quota_error"],
            "errorRate": data["error_rate"],
            "errorStatus": data["error_status"],
            "latencyMs": data["latency_ms"],
            "neverRegister": data["never_register"],
        }


def fault_from_json(body: Mapping[str, Any]) -> Fault:
    """A Fault from the admin API's camelCase JSON; ValueError says what is wrong."""
    known = {
        "scope",
        "capacityError",
        "quotaError",
        "errorRate",
        "errorStatus",
        "latencyMs",
        "neverRegister",
        "seed",
    }
    unknown = set(body) - known
    if unknown:
        raise ValueError(f"unknown fault fields: {sorted(unknown)}; known: {sorted(known)}")
    rate = float(body.get("errorRate", 0.0))
    if not 0.0 <= rate <= 1.0:
        raise ValueError("errorRate must be between 0 and 1")
    status = int(body.get("errorStatus", 503))
    if status not in ERROR_STATUSES:
        raise ValueError(f"errorStatus must be one of {ERROR_STATUSES}")
    latency = int(body.get("latencyMs", 0))
    if latency < 0:
        raise ValueError("latencyMs must be >= 0")
    scope = str(body.get("scope", "*")) or "*"
    return Fault(
        scope=scope,
        capacity_error=bool(body.get("capacityError", False)),
        quota_error=bool(body.get("quotaError", False)),
        error_rate=rate,
        error_status=status,
        latency_ms=latency,
        never_register=bool(body.get("neverRegister", False)),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the faults decide for one request: wait this long, then fail (status and code) or go on."""

    latency_ms: int = 0
    error_status: int | None = None
    error_code: str = ""


_CODE_FOR_STATUS = {429: "rate-limited", 500: "internal", 502: "unavailable", 503: "unavailable"}


class FaultBook:
    """The active fault rules and the seeded random source they draw from."""

    def __init__(self, seed: int | None = None) -> None:
        self._faults: list[Fault] = []
        self._rng = random.Random(seed)

    @property
    def faults(self) -> tuple[Fault, ...]:
        return tuple(self._faults)

    def add(self, fault: Fault) -> None:
        self._faults.append(fault)

    def clear(self) -> None:
        self._faults.clear()

    def reseed(self, seed: int) -> None:
        self._rng = random.Random(seed)

    def unavailable(self, names: Collection[str]) -> bool:
        """Whether launches of the offer with these names would fail for capacity."""
        return any(f.capacity_error and f.matches(names) for f in self._faults)

    def judge(self, names: Collection[str] = ("*",)) -> Verdict:
        """Latency and random errors for one request concerning the offer with `names` (API calls
        that concern no offer pass the default, so only `*` rules apply)."""
        matching = [f for f in self._faults if f.matches(names)]
        latency = max((f.latency_ms for f in matching), default=0)
        for fault in matching:
            if fault.error_rate > 0 and self._rng.random() < fault.error_rate:
                status = fault.error_status
                return Verdict(latency, status, _CODE_FOR_STATUS[status])
        return Verdict(latency)

    def refusal(self, names: Collection[str]) -> tuple[int, str] | None:
        """Why a launch of this offer is refused (status, code), or None. Quota before capacity,
        as a real cloud checks the account before looking for a machine."""
        matching = [f for f in self._faults if f.matches(names)]
        if any(f.quota_error for f in matching):
            return 403, "quota-exceeded"
        if any(f.capacity_error for f in matching):
            return 409, "insufficient-capacity"
        return None

    def never_register(self, names: Collection[str]) -> bool:
        return any(f.never_register and f.matches(names) for f in self._faults)
