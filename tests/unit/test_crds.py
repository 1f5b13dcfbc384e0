"""The checked-in CRDs are exactly what the models generate, and meet the API server's bar.

The staleness test is what keeps the models the single source of truth: change a
model without `make crds` and this fails. The shape tests check what the issue asks
of every CRD without needing a cluster: bounded strings and lists (so CEL cost
estimates stay small), descriptions everywhere, structural defaults, rules with
messages that name a field.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gpupool.api import KINDS, KindInfo
from gpupool.api.crdgen import render_crd, rendered_files, structural_schema, write_crds

ROOT = Path(__file__).resolve().parents[2]
CRDS = ROOT / "crds"


def test_checked_in_crds_are_fresh() -> None:
    files = rendered_files()
    assert sorted(p.name for p in CRDS.glob("*.yaml")) == sorted(files)
    for name, text in files.items():
        assert (CRDS / name).read_text() == text, f"crds/{name} is stale: run `make crds`"
    assert write_crds(str(CRDS), check=True) == 0


def test_check_mode_reports_stale_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert write_crds(str(tmp_path), check=True) == 1
    assert list(tmp_path.iterdir()) == []
    assert write_crds(str(tmp_path), check=False) == 0
    assert write_crds(str(tmp_path), check=True) == 0
    victim = next(tmp_path.iterdir())
    victim.write_text(victim.read_text().replace("maxLength: 253", "maxLength: 254", 1))
    assert write_crds(str(tmp_path), check=True) == 1
    assert victim.name in capsys.readouterr().err


def test_generation_is_deterministic() -> None:
    assert rendered_files() == rendered_files()


def _nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        out += _nodes(sub, f"{path}.{name}")
    if "items" in schema:
        out += _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _nodes(schema["additionalProperties"], f"{path}{{}}")
    return out


def _all_nodes(info: KindInfo) -> list[tuple[str, dict[str, Any]]]:
    root = render_crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return _nodes(root["properties"]["spec"], "spec") + _nodes(root["properties"]["status"], "status")


@pytest.mark.parametrize("info", KINDS, ids=[k.kind for k in KINDS])
def test_schema_is_structural_and_bounded(info: KindInfo) -> None:
    for path, node in _all_nodes(info):
        assert "type" in node, f"{path} has no type"
        assert not {"$ref", "anyOf", "allOf", "oneOf", "nullable", "title", "const"} & set(node), path
        assert node.get("additionalProperties") is not False, path
        if node["type"] == "string" and "enum" not in node and node.get("format") != "date-time":
            assert "maxLength" in node, f"{path} is an unbounded string"
        if node["type"] == "array":
            assert "maxItems" in node, f"{path} is an unbounded list"
        if node["type"] == "object" and "additionalProperties" in node:
            assert "maxProperties" in node, f"{path} is an unbounded map"
        if node["type"] in ("integer", "number") and path.startswith("spec"):
            assert "minimum" in node and "maximum" in node, f"{path} has no bounds"
        if "pattern" in node:
            assert node["pattern"].startswith("^") and node["pattern"].endswith("$"), path


@pytest.mark.parametrize("info", KINDS, ids=[k.kind for k in KINDS])
def test_every_field_has_a_description(info: KindInfo) -> None:
    for path, node in _all_nodes(info):
        if not path.endswith(("[]", "{}")):
            assert node.get("description"), f"{path} has no description"


@pytest.mark.parametrize("info", KINDS, ids=[k.kind for k in KINDS])
def test_every_rule_names_a_field(info: KindInfo) -> None:
    rules = [r for _, node in _all_nodes(info) for r in node.get("x-kubernetes-validations", [])]
    root = render_crd(info)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules += root.get("x-kubernetes-validations", [])
    for rule in rules:
        assert rule["message"], rule
        if "duration(" in rule["rule"] and "must be a duration" in rule["message"]:
            continue  # the API server puts the field's path in front of it
        assert re.search(r"\b(spec|metadata)(\.[A-Za-z]+)*\b", rule["message"]), rule


def test_defaults_match_the_wire_shape() -> None:
    md = structural_schema(KINDS[3].spec_model)["properties"]
    assert md["pool"]["default"] == "default"
    assert md["replicas"]["default"] == 1
    assert md["objective"]["default"] == "costPerHour"
    assert md["engine"]["default"] == {}
    engine = md["engine"]["properties"]
    assert engine["image"]["default"] == "vllm/vllm-openai:v0.11.0"
    assert engine["dtype"]["default"] == "auto"
    assert engine["quantization"]["default"] == "none"
    assert engine["gpuMemoryUtilization"]["default"] == 0.9
    assert "default" not in engine["maxNumSeqs"]  # vLLM's own default applies
    assert "default" not in engine["maxModelLen"]
    pool = structural_schema(KINDS[1].spec_model)["properties"]
    assert pool["capacityTypes"]["default"] == ["on-demand"]
    disruption = pool["disruption"]["properties"]
    assert disruption["consolidateAfter"]["default"] == "5m"
    assert disruption["expireAfter"]["default"] == "Never"
    assert disruption["launchTimeout"]["default"] == "10m"
    assert "default" not in pool["providers"], "empty lists need no default"
    provider = structural_schema(KINDS[0].spec_model)["properties"]
    assert provider["refreshInterval"]["default"] == "5m"
    assert provider["discountPercent"]["default"] == 0
    assert provider["credentialsSecretRef"]["properties"]["key"]["default"] == "apiKey"


def test_crd_metadata() -> None:
    by_kind = {k.kind: render_crd(k) for k in KINDS}
    for kind, crd in by_kind.items():
        names = crd["spec"]["names"]
        assert names["categories"] == ["gpupool"], kind
        assert names["shortNames"], kind
        version = crd["spec"]["versions"][0]
        assert version["subresources"]["status"] == {}
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert "Ready" in columns and columns[-1] == "Age", kind
    md = by_kind["ModelDeployment"]
    assert md["spec"]["scope"] == "Namespaced"
    assert md["spec"]["versions"][0]["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert {by_kind[k]["spec"]["scope"] for k in ("GpuProvider", "GpuPool", "GpuNodeClaim")} == {"Cluster"}


def test_files_parse_as_one_crd_each() -> None:
    for path in CRDS.glob("*.yaml"):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1 and docs[0]["kind"] == "CustomResourceDefinition", path
