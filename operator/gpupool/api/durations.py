"""Durations as the API spells them ("30s", "5m", "1h30m"), parsed the way CEL does.

The API server checks duration bounds with CEL's `duration()`, which is Go's
`time.ParseDuration`; this module parses the same subset in Python so that the
models and the API server agree on every value. Days are not allowed because
Go does not know them. The pattern caps each number so CEL can never overflow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import durationpy
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from gpupool.api.base import cel_regex

NEVER = "Never"
_PART = r"[0-9]{1,6}(\.[0-9]{1,3})?(ms|s|m|h)"
DURATION_PATTERN = rf"^({_PART})+$"
DURATION_OR_NEVER_PATTERN = rf"^(Never|({_PART})+)$"
DURATION_MAX_LENGTH = 32


def parse_duration(text: str) -> timedelta:
    """Parse "30s", "5m", "1h30m" or "1.5h"; ValueError for anything else (including "Never").

    The pattern is the API's subset; the arithmetic is durationpy's (Go's ParseDuration, the
    library the Kubernetes client brings for the same job)."""
    if len(text) > DURATION_MAX_LENGTH or not re.fullmatch(DURATION_PATTERN[1:-1], text):
        raise ValueError(f"{text!r} is not a duration like 30s, 5m or 1h30m")
    parsed: timedelta = durationpy.from_str(text)
    return parsed


def parse_expiry(text: str) -> timedelta | None:
    """Like parse_duration, but "Never" means no expiry (None)."""
    return None if text == NEVER else parse_duration(text)


def format_duration(value: timedelta) -> str:
    """The shortest spelling of a whole number of seconds: 90s -> "1m30s", 0 -> "0s"."""
    seconds = int(value.total_seconds())
    if seconds <= 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts)


@dataclass(frozen=True)
class DurationBounds:
    """Annotated metadata: a duration string between `minimum` and `maximum`.

    Python validates the format and the bounds; the JSON schema gets the pattern and
    a CEL rule with the bounds, whose message says what a duration looks like.
    """

    minimum: str
    maximum: str
    allow_never: bool = False

    @property
    def message(self) -> str:
        never = ', or "Never"' if self.allow_never else ""
        return (
            f"must be a duration like 30s, 5m or 1h30m (units ms, s, m, h) "
            f"between {self.minimum} and {self.maximum}{never}"
        )

    def _check(self, value: str) -> str:
        if self.allow_never and value == NEVER:
            return value
        try:
            parsed = parse_duration(value)
        except ValueError:
            raise ValueError(self.message) from None
        if not parse_duration(self.minimum) <= parsed <= parse_duration(self.maximum):
            raise ValueError(self.message)
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        pattern = DURATION_OR_NEVER_PATTERN if self.allow_never else DURATION_PATTERN
        # `&&` short-circuits in CEL, so a malformed value never reaches duration() and
        # gets this readable message beside the pattern's.
        bounds = (
            f"self.matches({cel_regex(DURATION_PATTERN)}) && "
            f"duration(self) >= duration('{self.minimum}') && duration(self) <= duration('{self.maximum}')"
        )
        if self.allow_never:
            bounds = f"self == '{NEVER}' || ({bounds})"
        json_schema.update(
            pattern=pattern,
            maxLength=DURATION_MAX_LENGTH,
            **{"x-kubernetes-validations": [{"rule": bounds, "message": self.message}]},
        )
        return json_schema
