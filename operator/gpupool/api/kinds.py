"""What the CRD of a kind says besides its schema: names, scope, columns, subresources.

Each kind module declares one `KindInfo` beside its models, so everything about a
kind sits in one file; `crdgen` only assembles. Controllers use the same values
(plural, group, version) to talk to the API server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from gpupool.api.base import CATEGORY, GROUP, VERSION, Rule, WireModel

READY_JSON_PATH = '.status.conditions[?(@.type=="Ready")].status'


@dataclass(frozen=True)
class PrinterColumn:
    """One column of `kubectl get`; priority 1 shows only with `-o wide`."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str
    priority: int = 0

    def as_crd(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
        }
        if self.priority:
            out["priority"] = self.priority
        return out


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since the object was created.")


def ready_column(description: str) -> PrinterColumn:
    return PrinterColumn("Ready", "string", READY_JSON_PATH, description)


@dataclass(frozen=True)
class KindInfo:
    """The CRD-level facts of one kind; the schema comes from `spec_model`/`status_model`."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: Literal["Cluster", "Namespaced"]
    description: str
    spec_model: type[WireModel]
    status_model: type[WireModel]
    printer_columns: tuple[PrinterColumn, ...]
    # Spec defaults to {} when the kind is usable with every field defaulted.
    spec_optional: bool = False
    scale: bool = False
    root_rules: tuple[Rule, ...] = field(default=())

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"

    @property
    def group(self) -> str:
        return GROUP

    @property
    def version(self) -> str:
        return VERSION

    @property
    def categories(self) -> tuple[str, ...]:
        return (CATEGORY,)
