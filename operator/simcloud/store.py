"""simcloud's memory: every instance it ever launched, in one SQLite file.

A cloud does not forget machines when its control plane restarts, and gpupool's tests restart
simcloud to prove the operator copes. So every state change is written through to SQLite before
the API answers, and timestamps (boot due, termination due) are stored as absolute times: a restart
simply resumes the schedule. The stdlib sqlite3 module is enough: one writer (the event loop
thread), a handful of rows, and WAL so a reader (a test, `sqlite3` on the command line) never
blocks it.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATES = ("pending", "running", "terminating", "terminated")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    id TEXT PRIMARY KEY,
    client_token TEXT UNIQUE,
    name TEXT NOT NULL,
    offer_key TEXT NOT NULL,
    region TEXT NOT NULL,
    zone TEXT NOT NULL,
    instance_type TEXT NOT NULL,
    gpu TEXT NOT NULL,
    gpu_count INTEGER NOT NULL,
    gpu_memory_gib REAL NOT NULL,
    vcpus INTEGER NOT NULL,
    memory_gib REAL NOT NULL,
    cpu_arch TEXT NOT NULL,
    capacity_type TEXT NOT NULL,
    price_per_hour REAL NOT NULL,
    tags TEXT NOT NULL,
    taints TEXT NOT NULL,
    user_data TEXT NOT NULL,
    state TEXT NOT NULL,
    launched_at REAL NOT NULL,
    boot_at REAL NOT NULL,
    running_at REAL,
    terminating_at REAL,
    terminated_at REAL,
    never_register INTEGER NOT NULL DEFAULT 0,
    node_registered INTEGER NOT NULL DEFAULT 0,
    notice_at REAL,
    interrupt_at REAL
);
CREATE INDEX IF NOT EXISTS instances_state ON instances (state);
"""


@dataclass(frozen=True, slots=True)
class SimInstance:
    """One simulated machine. Times are Unix seconds; None means "not yet"."""

    id: str
    name: str
    offer_key: str
    region: str
    zone: str
    instance_type: str
    gpu: str
    gpu_count: int
    gpu_memory_gib: float
    vcpus: int
    memory_gib: float
    cpu_arch: str
    capacity_type: str
    price_per_hour: float
    state: str
    launched_at: float
    boot_at: float
    client_token: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[tuple[str, str, str], ...] = ()
    user_data: str = ""
    running_at: float | None = None
    terminating_at: float | None = None
    terminated_at: float | None = None
    never_register: bool = False
    node_registered: bool = False
    notice_at: float | None = None
    interrupt_at: float | None = None

    @property
    def node_name(self) -> str:
        return f"simcloud-{self.id}"

    @property
    def provider_id(self) -> str:
        return f"simcloud://{self.id}"


def _row_to_instance(row: sqlite3.Row) -> SimInstance:
    data: dict[str, Any] = dict(row)
    data["tags"] = json.loads(data["tags"])
    data["taints"] = tuple(tuple(t) for t in json.loads(data["taints"]))
    data["never_register"] = bool(data["never_register"])
    data["node_registered"] = bool(data["node_registered"])
    return SimInstance(**data)


def _instance_to_row(instance: SimInstance) -> dict[str, Any]:
    data = dataclasses.asdict(instance)
    data["tags"] = json.dumps(dict(instance.tags), sort_keys=True)
    data["taints"] = json.dumps([list(t) for t in instance.taints])
    data["never_register"] = int(instance.never_register)
    data["node_registered"] = int(instance.node_registered)
    return data


class InstanceStore:
    """The instances table. Every write commits before returning."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        if self.path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def save(self, instance: SimInstance) -> None:
        row = _instance_to_row(instance)
        columns = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        self._db.execute(f"INSERT OR REPLACE INTO instances ({columns}) VALUES ({marks})", row)

    def get(self, instance_id: str) -> SimInstance | None:
        row = self._db.execute("SELECT * FROM instances WHERE id = ?", (instance_id,)).fetchone()
        return None if row is None else _row_to_instance(row)

    def by_client_token(self, token: str) -> SimInstance | None:
        row = self._db.execute("SELECT * FROM instances WHERE client_token = ?", (token,)).fetchone()
        return None if row is None else _row_to_instance(row)

    def due(self, column: str, now: float, *, states: tuple[str, ...]) -> list[SimInstance]:
        """Instances in one of `states` whose time `column` (boot_at, interrupt_at) has come:
        the clock's work, read without decoding every live machine on each tick."""
        if column not in ("boot_at", "interrupt_at", "notice_at"):
            raise ValueError(f"not a time column: {column}")
        marks = ", ".join("?" for _ in states)
        rows = self._db.execute(
            f"SELECT * FROM instances WHERE state IN ({marks}) AND {column} IS NOT NULL AND {column} <= ?"
            " ORDER BY launched_at, id",
            (*states, now),
        ).fetchall()
        return [_row_to_instance(row) for row in rows]

    def all(self, *, states: tuple[str, ...] = STATES) -> list[SimInstance]:
        marks = ", ".join("?" for _ in states)
        rows = self._db.execute(
            f"SELECT * FROM instances WHERE state IN ({marks}) ORDER BY launched_at, id", states
        ).fetchall()
        return [_row_to_instance(row) for row in rows]
