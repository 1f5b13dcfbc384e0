"""The API models as the controllers use them: parsing, defaults, rules, conditions, durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError

from gpupool.api import (
    KINDS,
    CapacityType,
    Condition,
    ConditionStatus,
    GpuNodeClaim,
    GpuNodeClaimStatus,
    GpuPool,
    GpuPoolSpec,
    GpuProviderSpec,
    ModelDeployment,
    ModelDeploymentSpec,
    ModelDeploymentStatus,
    NodeClaimPhase,
    Objective,
    ProviderType,
    Quantization,
    format_duration,
    get_condition,
    is_true,
    parse_duration,
    parse_expiry,
    set_condition,
)
from gpupool.api.crdgen import structural_schema
from gpupool.api.testing import wire_values

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_model_id_is_all_a_deployment_needs() -> None:
    spec = ModelDeploymentSpec.from_k8s({"model": "Qwen/Qwen3-8B"})
    assert spec.pool == "default"
    assert spec.replicas == 1
    assert spec.objective is Objective.COST_PER_HOUR
    assert spec.engine.image == "vllm/vllm-openai:v0.11.0"
    assert spec.engine.gpu_memory_utilization == 0.9
    assert spec.engine.max_num_seqs is None  # vLLM's own default applies
    assert spec.engine.quantization is Quantization.NONE
    assert spec.engine.max_model_len is None
    assert spec.gpu is None and spec.autoscaling is None and spec.capacity_type is None


def test_wire_names_are_camel_case_and_absent_fields_stay_absent() -> None:
    spec = ModelDeploymentSpec.from_k8s(
        {"model": "m", "gpu": {"count": 2, "minMemoryGiB": 40}, "hfTokenSecretRef": {"name": "hf"}}
    )
    wire = spec.to_k8s()
    assert wire["gpu"] == {"types": [], "count": 2, "minMemoryGiB": 40.0}
    assert wire["hfTokenSecretRef"] == {"name": "hf", "key": "token"}
    assert "maxModelLen" not in wire["engine"] and "autoscaling" not in wire
    assert ModelDeploymentSpec.from_k8s(wire) == spec
    status = GpuNodeClaimStatus(phase=NodeClaimPhase.LAUNCHED, provider_id="sim://i-1", instance_id="i-1")
    assert status.to_k8s() == {
        "phase": "Launched",
        "providerID": "sim://i-1",
        "instanceId": "i-1",
        "conditions": [],
    }


def test_parses_kopf_style_read_only_views() -> None:
    spec = MappingProxyType({"model": "m", "autoscaling": MappingProxyType({"maxReplicas": 3})})
    parsed = ModelDeploymentSpec.from_k8s(spec)
    assert parsed.autoscaling is not None and parsed.autoscaling.max_replicas == 3


def test_models_are_frozen() -> None:
    spec = ModelDeploymentSpec(model="m")
    with pytest.raises(ValidationError):
        spec.replicas = 2  # type: ignore[misc]
    assert spec.model_copy(update={"replicas": 2}).replicas == 2


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="gpus"):
        ModelDeploymentSpec.from_k8s({"model": "m", "gpus": 2})


def test_numbers_are_not_coerced_from_text() -> None:
    with pytest.raises(ValidationError, match="replicas"):
        ModelDeploymentSpec.from_k8s({"model": "m", "replicas": "2"})
    with pytest.raises(ValidationError, match="replicas"):
        ModelDeploymentSpec.from_k8s({"model": "m", "replicas": 2.5})
    assert ModelDeploymentSpec.from_k8s({"model": "m", "maxHourlyCost": 3}).max_hourly_cost == 3.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"model": "m", "autoscaling": {"minReplicas": 3, "maxReplicas": 2}}, "spec.autoscaling.minReplicas"),
        (
            {"model": "m", "gpu": {"count": 4}, "engine": {"tensorParallelSize": 3}},
            "spec.engine.tensorParallelSize",
        ),
        (
            {
                "model": "m",
                "engine": {"maxModelLen": 8192},
                "architecture": {
                    "paramsB": 1,
                    "layers": 2,
                    "hiddenSize": 64,
                    "attentionHeads": 8,
                    "kvHeads": 3,
                    "maxContext": 4096,
                },
            },
            "spec.architecture.kvHeads",
        ),
    ],
)
def test_cross_field_rules_hold_in_python(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace(".", r"\.")):
        ModelDeploymentSpec.from_k8s(spec)


def test_provider_rules() -> None:
    assert GpuProviderSpec.from_k8s({"type": "sim"}).credentials_secret_ref is None
    with pytest.raises(ValidationError, match=r"spec\.credentialsSecretRef is required"):
        GpuProviderSpec.from_k8s({"type": "runpod"})
    ok = GpuProviderSpec.from_k8s(
        {"type": "runpod", "credentialsSecretRef": {"name": "rp", "namespace": "gpupool-system"}}
    )
    assert ok.type is ProviderType.RUNPOD
    assert ok.credentials_secret_ref is not None and ok.credentials_secret_ref.key == "apiKey"


def test_pool_defaults_and_rules() -> None:
    pool = GpuPoolSpec.from_k8s({})
    assert pool.capacity_types == [CapacityType.ON_DEMAND]
    assert pool.disruption.consolidate_after_delta == timedelta(minutes=5)
    assert pool.disruption.expire_after_delta is None
    assert pool.disruption.launch_timeout_delta == timedelta(minutes=10)
    with pytest.raises(ValidationError, match=r"expireAfter must be longer"):
        GpuPoolSpec.from_k8s({"disruption": {"expireAfter": "15m", "launchTimeout": "20m"}})
    with pytest.raises(ValidationError, match=r"gpupool\.dev/ prefix"):
        GpuPoolSpec.from_k8s({"labels": {"gpupool.dev/pool": "x"}})
    with pytest.raises(ValidationError, match="label keys"):
        GpuPoolSpec.from_k8s({"labels": {"team\n": "x"}})
    with pytest.raises(ValidationError, match="duplicate"):
        GpuPoolSpec.from_k8s(
            {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}]}
        )
    assert GpuPool.from_k8s({"metadata": {"name": "default"}}).spec == pool


def test_deployment_name_must_be_a_service_name() -> None:
    ok = ModelDeployment.from_k8s({"metadata": {"name": "llama", "namespace": "ns"}, "spec": {"model": "m"}})
    assert ok.metadata.namespace == "ns"
    with pytest.raises(ValidationError, match=r"metadata\.name"):
        ModelDeployment.from_k8s({"metadata": {"name": "9llama"}, "spec": {"model": "m"}})


def test_metadata_keeps_fields_it_does_not_model() -> None:
    claim = GpuNodeClaim.from_k8s(
        {
            "apiVersion": "gpupool.dev/v1alpha1",
            "kind": "GpuNodeClaim",
            "metadata": {"name": "c", "generation": 2, "finalizers": ["gpupool.dev/termination"]},
            "spec": {
                "pool": "default",
                "offer": {
                    "provider": "sim",
                    "region": "r",
                    "instanceType": "t",
                    "gpu": "L4",
                    "gpuCount": 1,
                    "capacityType": "spot",
                    "pricePerHour": 1,
                },
            },
        }
    )
    assert claim.metadata.generation == 2
    assert claim.to_k8s()["metadata"]["finalizers"] == ["gpupool.dev/termination"]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")) + sorted(EXAMPLES.glob("reference/*.yaml")))
def test_examples_parse(path: Path) -> None:
    models = {k.kind: k for k in KINDS}
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc["kind"] in models:
            resource = {"ModelDeployment": ModelDeployment, "GpuPool": GpuPool}.get(doc["kind"])
            models[doc["kind"]].spec_model.from_k8s(doc["spec"])
            if resource is not None:
                resource.from_k8s(doc)


# Durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0s", timedelta()),
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("720h", timedelta(days=30)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "5 m", "-5m", "1d", "Never", "5M", "1h-5m", "9999999h", "5m\n"])
def test_parse_duration_refuses_what_go_would(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_expiry_and_format() -> None:
    assert parse_expiry("Never") is None
    assert parse_expiry("2h") == timedelta(hours=2)
    assert format_duration(timedelta(seconds=90)) == "1m30s"
    assert format_duration(timedelta(hours=2)) == "2h"
    assert format_duration(timedelta()) == "0s"
    for seconds in (1, 59, 61, 3599, 3601, 86400 + 7):
        assert parse_duration(format_duration(timedelta(seconds=seconds))) == timedelta(seconds=seconds)


# Conditions


def test_set_condition_appends_and_keeps_the_input() -> None:
    before: list[Condition] = []
    after = set_condition(before, "Ready", False, "NoOfferFits", "no offer fits 1x L4", 3, T0)
    assert before == []
    (ready,) = after
    assert ready.status is ConditionStatus.FALSE
    assert ready.observed_generation == 3
    assert ready.last_transition_time == T0


def test_transition_time_moves_only_when_status_changes() -> None:
    first = set_condition([], "Ready", "False", "Pending", "waiting", 1, T0)
    same = set_condition(first, "Ready", "False", "Launching", "launching", 2, T0 + timedelta(minutes=1))
    assert same[0].last_transition_time == T0
    assert same[0].reason == "Launching" and same[0].observed_generation == 2
    flipped = set_condition(
        same, "Ready", True, "Serving", "ok", 2, T0 + timedelta(minutes=2, microseconds=7)
    )
    assert flipped[0].last_transition_time == T0 + timedelta(minutes=2)
    assert is_true(flipped, "Ready")


def test_other_conditions_keep_their_order() -> None:
    conditions = set_condition([], "Ready", False, "A", "", 1, T0)
    conditions = set_condition(conditions, "Progressing", True, "B", "", 1, T0)
    conditions = set_condition(conditions, "Ready", True, "C", "", 1, T0)
    assert [c.type for c in conditions] == ["Ready", "Progressing"]
    assert get_condition(conditions, "Degraded") is None
    status = ModelDeploymentStatus(conditions=conditions, observed_generation=1)
    wire = status.to_k8s()
    assert wire["conditions"][0] == {
        "type": "Ready",
        "status": "True",
        "reason": "C",
        "message": "",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": 1,
    }
    assert ModelDeploymentStatus.from_k8s(wire) == status


def test_condition_reason_must_be_camel_case() -> None:
    with pytest.raises(ValidationError, match="reason"):
        set_condition([], "Ready", True, "not a reason", "", 1, T0)


# Round trip of random valid specs


@pytest.mark.parametrize("info", KINDS, ids=[k.kind for k in KINDS])
def test_wire_round_trip(info: Any) -> None:
    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(wire_values(structural_schema(info.spec_model), invalid_percent=0))
    def round_trip(spec: dict[str, Any]) -> None:
        try:
            parsed = info.spec_model.from_k8s(spec)
        except ValidationError:
            return  # cross-field rules can still refuse a draw of valid leaves
        assert info.spec_model.from_k8s(parsed.to_k8s()) == parsed

    round_trip()
