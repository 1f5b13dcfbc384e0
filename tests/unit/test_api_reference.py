"""docs/api.md is generated from the models; it must be fresh and cover every field."""

from __future__ import annotations

from pathlib import Path

from gpupool.api import KINDS
from gpupool.api.crdgen import render_crd
from gpupool.api.reference import main, render_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_reference_is_fresh() -> None:
    assert DOC.read_text() == render_reference(), (
        "docs/api.md is stale: run `python -m gpupool.api.reference`"
    )
    assert main([str(DOC), "--check"]) == 0


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "api.md"
    stale.write_text("old")
    assert main([str(stale), "--check"]) == 1
    assert stale.read_text() == "old"
    assert main([str(stale)]) == 0
    assert main([str(stale), "--check"]) == 0


def _paths(node: dict, prefix: str) -> list[str]:  # type: ignore[type-arg]
    out = []
    for name, sub in node.get("properties", {}).items():
        out.append(f"{prefix}.{name}")
        out += _paths(sub, f"{prefix}.{name}")
        if sub.get("type") == "array":
            out += _paths(sub["items"], f"{prefix}.{name}[]")
    return out


def test_every_field_and_rule_is_documented() -> None:
    text = render_reference()
    for info in KINDS:
        root = render_crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for part in ("spec", "status"):
            for path in _paths(root["properties"][part], part):
                assert f"| `{path}` |" in text, f"{info.kind} {path} missing from docs/api.md"
        assert f"## {info.kind}" in text
    assert "spec.autoscaling.minReplicas must not exceed spec.autoscaling.maxReplicas" in text
    assert "must be a duration like 30s, 5m or 1h30m (units ms, s, m, h) between 10s and 24h" in text
