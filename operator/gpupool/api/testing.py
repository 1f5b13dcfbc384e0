"""Hypothesis strategies that build random wire objects from a kind's CRD schema.

The point is to test that the two halves of the API, the pydantic models and the
CRD the API server enforces, agree on what is valid. So the strategies are driven
by the generated schema (every field, every bound), and they produce mostly valid
values with a few wrong ones mixed in: wrong types, values just past a bound,
unknown enum values and fields, duplicates in sets, lists one item too long. Each
object then goes through both halves and the verdicts must match.

Imported by tests only; it needs hypothesis, a dev dependency.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from hypothesis import strategies as st

from gpupool.api.durations import DURATION_OR_NEVER_PATTERN, DURATION_PATTERN

# Durations around every bound the API uses, and ones Go would refuse.
DURATION_SAMPLES = (
    "0s", "5s", "9s", "10s", "30s", "29s", "1m", "5m", "9m", "10m", "1h", "1h30m", "1.5h", "2h",
    "2h1m", "24h", "25h", "720h", "721h", "8760h", "8761h", "500ms", "Never", "never", "5 m",
    "5", "-5m", "1d", "", "1h-5m", "999999h", "0.001s",
)  # fmt: skip
# An object key that no schema has.
UNKNOWN_FIELD = "unknownField"


def wire_values(schema: Mapping[str, Any], invalid_percent: int = 4) -> st.SearchStrategy[Any]:
    """Random values for `schema`; about `invalid_percent`% of the leaves are wrong on purpose."""

    def any_value(node: Mapping[str, Any]) -> st.SearchStrategy[Any]:
        valid = _valid(node, any_value)
        wrong = _invalid(node, any_value)
        return st.integers(0, 99).flatmap(lambda roll: wrong if roll < invalid_percent else valid)

    # The root is always an object of the right shape, so every draw reaches the fields.
    return _valid(schema, any_value)


def _bounds(node: Mapping[str, Any]) -> tuple[Any, Any]:
    return node.get("minimum"), node.get("maximum")


def _valid(node: Mapping[str, Any], recurse: Any) -> st.SearchStrategy[Any]:
    if "enum" in node:
        return st.sampled_from(list(node["enum"]))
    kind = node.get("type")
    if kind == "object":
        return _object(node, recurse)
    if kind == "array":
        return _array(node, recurse, node.get("minItems", 0), min(node.get("maxItems", 4), 4))
    if kind == "string":
        return _string(node)
    if kind == "integer":
        low, high = _bounds(node)
        low = -(10**6) if low is None else low
        high = 10**6 if high is None else high
        return st.one_of(st.sampled_from([low, high]), st.integers(low, high))
    if kind == "number":
        low, high = _bounds(node)
        low = -1e6 if low is None else low
        high = 1e6 if high is None else high
        floats = st.floats(
            low,
            high,
            exclude_min=bool(node.get("exclusiveMinimum")),
            exclude_max=bool(node.get("exclusiveMaximum")),
            allow_nan=False,
            allow_infinity=False,
        )
        edges = [v for v, excluded in ((low, node.get("exclusiveMinimum")), (high, None)) if not excluded]
        ints = st.integers(int(low) + 1, int(high)) if int(high) > int(low) + 1 else st.nothing()
        return st.one_of(st.sampled_from(edges) if edges else st.nothing(), floats, ints)
    if kind == "boolean":
        return st.booleans()
    raise ValueError(f"no strategy for schema node {dict(node)}")


def _object(node: Mapping[str, Any], recurse: Any) -> st.SearchStrategy[Any]:
    properties: Mapping[str, Any] | None = node.get("properties")
    if properties is None:
        values = node.get("additionalProperties", {"type": "string"})
        keys = st.one_of(
            st.from_regex(r"[a-z]([-a-z0-9]{0,10}[a-z0-9])?", fullmatch=True),
            st.from_regex(r"[a-z]{1,8}\.(com|io)/[a-z]{1,8}", fullmatch=True),
            st.sampled_from(["gpupool.dev/pool", "Bad Key", "team\n", "-x", "a" * 64]),
        )
        return st.dictionaries(keys, recurse(values), max_size=min(node.get("maxProperties", 3), 3))
    required = set(node.get("required", []))
    return st.fixed_dictionaries(
        {k: recurse(v) for k, v in properties.items() if k in required},
        optional={k: recurse(v) for k, v in properties.items() if k not in required},
    )


def _identity(node: Mapping[str, Any], item: Any) -> Any:
    """What makes two items of a list equal under its list type (set or map keys)."""
    keys = node.get("x-kubernetes-list-map-keys")
    if keys and isinstance(item, dict):
        return tuple(repr(item.get(k)) for k in keys)
    return repr(item)


def _array(node: Mapping[str, Any], recurse: Any, low: int, high: int) -> st.SearchStrategy[Any]:
    unique = node.get("x-kubernetes-list-type") in ("set", "map")
    return st.lists(
        recurse(node["items"]),
        min_size=low,
        max_size=max(low, high),
        unique_by=(lambda item: _identity(node, item)) if unique else None,
    )


def _string(node: Mapping[str, Any]) -> st.SearchStrategy[str]:
    pattern = node.get("pattern")
    low = node.get("minLength", 0)
    high = node.get("maxLength", 64)
    if node.get("format") == "date-time":
        return st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)).map(
            lambda t: t.replace(microsecond=0).isoformat() + "Z"
        )
    if pattern in (DURATION_PATTERN, DURATION_OR_NEVER_PATTERN):
        return st.sampled_from(DURATION_SAMPLES)
    if pattern:
        # Short strings are what people write; the bound itself is probed by _invalid.
        return st.from_regex(pattern, fullmatch=True).filter(lambda s: low <= len(s) <= min(high, 80))
    return st.text(min_size=low, max_size=min(high, 20))


def _invalid(node: Mapping[str, Any], recurse: Any) -> st.SearchStrategy[Any]:
    kind = node.get("type")
    options: list[st.SearchStrategy[Any]] = [st.just(["a", "list"]) if kind != "array" else st.just("text")]
    if "enum" in node:
        options.append(st.sampled_from(["not-a-choice", str(node["enum"][0]).upper() + "X"]))
    elif kind in ("integer", "number"):
        low, high = _bounds(node)
        if low is not None:
            options.append(st.just(low if node.get("exclusiveMinimum") else low - 1))
        if high is not None:
            options.append(st.just(high + 1))
        options.append(st.sampled_from(["1", True]))
        if kind == "integer":
            options.append(st.just(1.5))
    elif kind == "string":
        options.append(st.just(7))
        if "maxLength" in node and node["maxLength"] <= 4096:
            options.append(st.just("a" * (node["maxLength"] + 1)))
        if node.get("minLength", 0) > 0:
            options.append(st.just(""))
        if node.get("pattern"):
            options.append(st.sampled_from(["Not Valid!", "-x", "x\n"]))
    elif kind == "array":
        if "maxItems" in node and node["maxItems"] <= 64:
            options.append(_array(node, recurse, node["maxItems"] + 1, node["maxItems"] + 1))
        if node.get("x-kubernetes-list-type") in ("set", "map"):
            options.append(recurse(node["items"]).map(lambda item: [item, item]))
    elif kind == "object" and "properties" in node:
        valid = _object(node, recurse)
        options.append(valid.map(lambda obj: {**obj, UNKNOWN_FIELD: 1}))
        required = list(node.get("required", []))
        if required:
            options.append(
                st.tuples(valid, st.sampled_from(required)).map(
                    lambda pair: {k: v for k, v in pair[0].items() if k != pair[1]}
                )
            )
    elif kind == "boolean":
        options.append(st.just("true"))
    return st.one_of(options)
