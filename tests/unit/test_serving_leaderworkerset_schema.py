"""The rendered LeaderWorkerSet is valid: its own fields against the CRD, its pods against the Pod API.

The CRD in tests/fixtures/crds/ types everything outside the pod templates and keeps the
templates open (its header says why), so the two halves are checked apart: the LeaderWorkerSet
against the CRD's structural schema with a small checker of the OpenAPI subset the CRD uses,
and each pod template field by field against the Kubernetes client's V1PodTemplateSpec, as
test_serving_k8s_schema.py checks the Deployment. The cluster test applies the same objects
to a real API server.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from gpupool.serving import SecretKeyRef, ServingInput, Taint, render_leader_worker_set
from tests.unit.test_serving_k8s_schema import assert_schema
from tests.unit.test_serving_leaderworkerset import make_group_input

CRD_PATH = (
    Path(__file__).resolve().parents[1]
    / "fixtures"
    / "crds"
    / "leaderworkerset.x-k8s.io_leaderworkersets.yaml"
)


def lws_crd() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_PATH.read_text())
    return crd


def lws_schema() -> dict[str, Any]:
    (version,) = lws_crd()["spec"]["versions"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def assert_fits(value: Any, schema: dict[str, Any], path: str = "") -> None:
    """Fail if `value` breaks the structural schema: a type, enum, bound, pattern, required
    field, or a field the schema does not know where it keeps no unknown fields."""
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} is not one of {schema['enum']}"
    if schema.get("x-kubernetes-int-or-string"):
        assert isinstance(value, int | str) and not isinstance(value, bool), f"{path}: not an int or string"
        return
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), f"{path}: expected an object, got {value!r}"
        for required in schema.get("required", []):
            assert required in value, f"{path}.{required}: required"
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                assert_fits(item, properties[key], f"{path}.{key}")
            elif extra is not None:
                assert_fits(item, extra, f"{path}.{key}")
            else:
                assert schema.get("x-kubernetes-preserve-unknown-fields"), f"{path}.{key}: unknown field"
    elif kind == "array":
        assert isinstance(value, list), f"{path}: expected a list, got {value!r}"
        for i, item in enumerate(value):
            assert_fits(item, schema["items"], f"{path}[{i}]")
    elif kind == "string":
        assert isinstance(value, str), f"{path}: expected a string, got {value!r}"
        if "pattern" in schema:
            assert re.search(schema["pattern"], value), (
                f"{path}: {value!r} does not match {schema['pattern']}"
            )
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), (
            f"{path}: expected an integer, got {value!r}"
        )
        assert value >= schema.get("minimum", value), f"{path}: {value} is below {schema['minimum']}"
        assert value <= schema.get("maximum", value), f"{path}: {value} is above {schema['maximum']}"
    else:
        pytest.fail(f"{path}: the checker does not know the schema type {kind!r}")


def assert_lws_fits(lws: dict[str, Any]) -> None:
    schema = lws_schema()
    assert lws["apiVersion"] == f"{lws_crd()['spec']['group']}/v1"
    assert lws["kind"] == lws_crd()["spec"]["names"]["kind"]
    # Root metadata is ObjectMeta, which the API server validates itself.
    assert_fits(lws["spec"], schema["properties"]["spec"], "spec")


SHAPES: dict[str, ServingInput] = {
    "two-nodes": make_group_input(),
    "everything": make_group_input(
        replicas=3,
        nodes_per_replica=4,
        pipeline_parallel_size=4,
        gpus_per_replica=32,
        quantization="fp8",
        extra_args=("--enable-prefix-caching",),
        pool_name="inference",
        pool_taints=(Taint("team", "ml", "NoSchedule"), Taint("dedicated", "", "NoExecute")),
        capacity_type="spot",
        hf_token_secret=SecretKeyRef("hf", "token"),
        api_key_secret=SecretKeyRef("keys", "apiKey"),
        model_cache_pvc="hf-cache",
        labels={"team": "ml"},
    ),
    "zero-replicas": make_group_input(replicas=0),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_leader_worker_set_fits_the_crd(shape: str) -> None:
    assert_lws_fits(render_leader_worker_set(SHAPES[shape]))


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("template", ["leaderTemplate", "workerTemplate"])
def test_every_pod_template_field_is_known_to_the_kubernetes_api(shape: str, template: str) -> None:
    pod_template = render_leader_worker_set(SHAPES[shape])["spec"]["leaderWorkerTemplate"][template]
    assert_schema(pod_template, "V1PodTemplateSpec", template)
    api = client.ApiClient()
    typed = api._ApiClient__deserialize(pod_template, "V1PodTemplateSpec")  # type: ignore[attr-defined]
    assert api.sanitize_for_serialization(typed) == pod_template  # type: ignore[no-untyped-call]


# Each breaks the LeaderWorkerSet the way the real CRD rejects: a type, an unknown field, a
# bound, an enum, a required field.
BREAKAGES = [
    (lambda s: s["leaderWorkerTemplate"].update(size="2"), "size: expected an integer"),
    (lambda s: s["leaderWorkerTemplate"].update(sizee=2), "sizee: unknown field"),
    (lambda s: s.update(replicas=-1), "below 0"),
    (lambda s: s["leaderWorkerTemplate"].update(restartPolicy="Always"), "not one of"),
    (lambda s: s["networkConfig"].update(subdomainPolicy="PerGroup"), "not one of"),
    (lambda s: s["rolloutStrategy"]["rollingUpdateConfiguration"].update(maxSurge=1.5), "int or string"),
    (lambda s: s["leaderWorkerTemplate"].pop("workerTemplate"), "workerTemplate: required"),
    (
        lambda s: s["leaderWorkerTemplate"]["leaderTemplate"]["spec"].pop("containers"),
        "containers: required",
    ),
    (
        lambda s: s["leaderWorkerTemplate"]["workerTemplate"]["metadata"].update(labels={"a": 1}),
        "labels.a",
    ),
]


@pytest.mark.parametrize(("mutate", "message"), BREAKAGES, ids=[message for _, message in BREAKAGES])
def test_the_checker_catches_what_the_crd_rejects(mutate: Any, message: str) -> None:
    lws = copy.deepcopy(render_leader_worker_set(make_group_input()))
    mutate(lws["spec"])
    with pytest.raises(AssertionError, match=re.escape(message)):
        assert_lws_fits(lws)


def test_the_crd_is_the_v1_api_with_its_scale_subresource() -> None:
    crd = lws_crd()
    assert crd["metadata"]["name"] == "leaderworkersets.leaderworkerset.x-k8s.io"
    assert crd["spec"]["scope"] == "Namespaced"
    (version,) = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1", True, True)
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.hpaPodSelector",
        },
    }
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert set(spec) == {
        "replicas",
        "leaderWorkerTemplate",
        "rolloutStrategy",
        "startupPolicy",
        "networkConfig",
    }
    assert {"size", "leaderTemplate", "workerTemplate", "restartPolicy", "subGroupPolicy"} <= set(
        spec["leaderWorkerTemplate"]["properties"]
    )
    status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert {"conditions", "readyReplicas", "replicas", "updatedReplicas", "hpaPodSelector"} <= set(status)


def test_the_crd_says_it_is_a_stand_in_and_where_its_shape_comes_from() -> None:
    header = CRD_PATH.read_text().split("apiVersion:", 1)[0]
    assert "test stand-in" in header
    assert "api/leaderworkerset/v1/leaderworkerset_types.go" in header
    assert "x-kubernetes-preserve-unknown-fields" in header
