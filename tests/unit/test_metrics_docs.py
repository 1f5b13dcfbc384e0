"""docs/metrics.md documents exactly the series gpupool.metrics defines.

The metric names are a contract with dashboards and alerts; this keeps the page honest when a
series is added, renamed or dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from gpupool.metrics import create_series

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def defined_series() -> set[str]:
    names: set[str] = set()
    for family in create_series(CollectorRegistry(), runtime=False).registry.collect():
        suffix = {"counter": "_total", "info": "_info"}.get(family.type, "")
        # The info family is documented under the name it is exposed with, gpupool_build_info.
        names.add(family.name + suffix)
    return names


def documented_series() -> set[str]:
    table = DOC.read_text().split("## Series", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(gpupool_[a-z_]+)` \|", table, flags=re.MULTILINE))


def test_every_series_is_documented_and_nothing_else() -> None:
    assert documented_series() == defined_series()
