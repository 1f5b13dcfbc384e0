"""The building blocks every gpupool kind is made of.

The pydantic models in this package are the one source of truth for the API: the
controllers parse objects with them and `crdgen` turns them into the CRDs the API
server validates with. So every constraint is declared once, here, in a form both
sides understand: field bounds become OpenAPI bounds, and each cross-field `Rule`
carries its CEL expression (for the API server) beside a Python check (for the
models), with one message a person can act on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Final, Self, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

GROUP = "gpupool.dev"
VERSION = "v1alpha1"
API_VERSION: Final = "gpupool.dev/v1alpha1"  # GROUP/VERSION, spelled out for the type checker
# `kubectl get gpupool` lists every kind at once: kubectl expands a category before
# it looks for a resource of that name.
CATEGORY = "gpupool"

# Names of other objects. Anchored because OpenAPI patterns match anywhere.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"
# Normalized GPU names as the catalog spells them: H100, A100-80GB, RTX-6000-Ada.
GPU_NAME = r"^[A-Za-z0-9][-A-Za-z0-9_.]*$"
# Regions as providers spell them; some (Vast) use place names such as "Texas, US, NA".
REGION = r"^[A-Za-z0-9][-A-Za-z0-9_.,: ]*$"


def to_wire_name(name: str) -> str:
    """camelCase on the wire, snake_case in Python."""
    return to_camel(name)


class WireModel(BaseModel):
    """Base of every object that travels to or from the API server.

    Frozen, so the pure core can pass them around without defensive copies; extra
    fields are refused, as the API server refuses them under strict field validation.
    """

    model_config = ConfigDict(
        alias_generator=to_wire_name,
        validate_by_name=True,
        validate_by_alias=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )

    # Cross-field rules of this object; `crdgen` emits them as x-kubernetes-validations.
    rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def from_k8s(cls, obj: Mapping[str, Any]) -> Self:
        """Parse the wire form (camelCase), as read from the API server or kopf."""
        return cls.model_validate(plain(obj), by_alias=True)

    def to_k8s(self) -> dict[str, Any]:
        """The wire form: camelCase, JSON types, absent fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler.resolve_ref_schema(handler(core_schema))
        if cls.rules:
            json_schema["x-kubernetes-validations"] = [r.as_schema() for r in cls.rules]
        return json_schema

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        for rule in type(self).rules:
            if rule.check is not None and not rule.check(self):
                raise ValueError(rule.message)
        return self


def plain(value: Any) -> Any:
    """Deep-copies mappings and sequences into dicts and lists (kopf hands out views)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Rule:
    """One cross-field rule, enforced by the API server (CEL) and by the models (Python).

    `check` is None for transition rules (they compare with the old object, which only
    the API server has). The message names the field and says how to fix it.
    """

    cel: str
    message: str
    field_path: str | None = None
    reason: str | None = None
    check: Callable[[Any], bool] | None = field(default=None, compare=False)

    def as_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out


def cel_rules(*rules: Rule) -> dict[str, Any]:
    """json_schema_extra for rules that sit on one field rather than on a model."""
    return {"x-kubernetes-validations": [r.as_schema() for r in rules]}


def field_rules(*rules: Rule) -> AfterValidator:
    """The Python side of field-level rules: each `check` gets the field's value."""

    def check(value: Any) -> Any:
        for rule in rules:
            if rule.check is not None and not rule.check(value):
                raise ValueError(rule.message)
        return value

    return AfterValidator(check)


H = TypeVar("H", bound=Hashable)


def no_duplicates(values: list[H]) -> list[H]:
    """Mirrors x-kubernetes-list-type: set, which refuses duplicate items."""
    seen: set[H] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate value {value!r}")
        seen.add(value)
    return values


def unique_by(*keys: str) -> AfterValidator:
    """Mirrors x-kubernetes-list-type: map: no two items share the same map keys."""

    def check(items: Sequence[Any]) -> Sequence[Any]:
        seen: set[tuple[Any, ...]] = set()
        for item in items:
            key = tuple(getattr(item, k) for k in keys)
            if key in seen:
                raise ValueError(f"duplicate entry for {dict(zip(keys, key, strict=True))}")
            seen.add(key)
        return items

    return AfterValidator(check)


def set_list(max_items: int) -> Any:
    """Field metadata for a list whose items are distinct (x-kubernetes-list-type: set)."""
    return Field(max_length=max_items, json_schema_extra={"x-kubernetes-list-type": "set"})


def map_list(max_items: int, *keys: str) -> Any:
    """Field metadata for a list of objects keyed by `keys` (x-kubernetes-list-type: map)."""
    return Field(
        max_length=max_items,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": list(keys)},
    )


def cel_regex(pattern: str) -> str:
    """A pattern as a CEL raw string literal, so backslashes reach RE2 untouched."""
    if "'" in pattern:
        raise ValueError(f"pattern {pattern!r} cannot be a CEL raw string")
    return f"r'{pattern}'"


def matches(pattern: str, value: str) -> bool:
    """Whether `value` matches an OpenAPI/CEL pattern exactly as RE2 decides.

    RE2's `$` matches only at the very end, Python's also before a final newline, so
    a trailing `$` becomes `\\Z` here: "team\\n" is no label key on either side.
    """
    if pattern.endswith("$"):
        pattern = pattern[:-1] + r"\Z"
    return re.search(pattern, value) is not None


# Constrained strings shared by several kinds.
ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
LabelName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
GpuName = Annotated[str, Field(min_length=1, max_length=64, pattern=GPU_NAME)]
Region = Annotated[str, Field(min_length=1, max_length=64, pattern=REGION)]
SecretKey = Annotated[str, Field(min_length=1, max_length=253, pattern=SECRET_KEY)]
GpuNames = Annotated[list[GpuName], set_list(64), AfterValidator(no_duplicates)]
Regions = Annotated[list[Region], set_list(64), AfterValidator(no_duplicates)]


class ObjectMeta(BaseModel):
    """The parts of metadata the controllers read; everything else is kept as is."""

    model_config = ConfigDict(
        alias_generator=to_wire_name,
        validate_by_name=True,
        validate_by_alias=True,
        extra="allow",
        frozen=True,
    )

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    deletion_timestamp: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
