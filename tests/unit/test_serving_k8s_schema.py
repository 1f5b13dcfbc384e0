"""The rendered dicts are valid Kubernetes objects, field name by field name.

The Kubernetes Python client's models carry the API's schema (every field's JSON name and
type). Its deserializer silently drops unknown keys, so a typo such as `terminationGracePeriod`
would pass it; `assert_schema` walks the dict against the models instead and fails on any key
the API does not define or any value of the wrong type. The typed round trip then runs the
client's own required-field checks.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client import models

from gpupool.serving import SecretKeyRef, ServingInput, Taint, render_all
from tests.unit.test_serving_render import make_input

_LIST = re.compile(r"^List\[(.+)\]$")
_DICT = re.compile(r"^Dict\[str, (.+)\]$")
_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (int, str, dict, list),  # IntOrString and free-form fields
    "datetime": (str,),
}


def assert_schema(value: Any, type_name: str, path: str = "") -> None:
    """Fail if `value` (a JSON-shaped dict) does not fit the client model `type_name`."""
    if m := _LIST.match(type_name):
        assert isinstance(value, list), f"{path}: expected a list, got {value!r}"
        for i, item in enumerate(value):
            assert_schema(item, m.group(1), f"{path}[{i}]")
        return
    if m := _DICT.match(type_name):
        assert isinstance(value, dict), f"{path}: expected a map, got {value!r}"
        for key, item in value.items():
            assert isinstance(key, str), f"{path}: non-string key {key!r}"
            assert_schema(item, m.group(1), f"{path}.{key}")
        return
    if type_name in _PRIMITIVES:
        expected = _PRIMITIVES[type_name]
        assert isinstance(value, expected), f"{path}: expected {type_name}, got {value!r}"
        if type_name in {"int", "float"}:
            assert not isinstance(value, bool), f"{path}: expected {type_name}, got a bool"
        return
    model = getattr(models, type_name)
    assert isinstance(value, dict), f"{path}: expected an object of {type_name}, got {value!r}"
    by_json_name = {json_name: attr for attr, json_name in model.attribute_map.items()}
    for key, item in value.items():
        assert key in by_json_name, f"{path}.{key}: not a field of {type_name}"
        assert_schema(item, model.openapi_types[by_json_name[key]], f"{path}.{key}")


_TYPES = {
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "PodDisruptionBudget": "V1PodDisruptionBudget",
}

SHAPES: dict[str, ServingInput] = {
    "minimal": make_input(),
    "everything": make_input(
        replicas=3,
        tensor_parallel_size=4,
        gpus_per_replica=4,
        quantization="fp8",
        extra_args=("--enable-prefix-caching",),
        gpu_types=("H100", "H200", "A100-80GB"),
        pool_name="inference",
        pool_taints=(Taint("team", "ml", "NoSchedule"), Taint("dedicated", "", "NoExecute")),
        capacity_type="spot",
        hf_token_secret=SecretKeyRef("hf", "token"),
        api_key_secret=SecretKeyRef("keys", "apiKey"),
        model_cache_pvc="hf-cache",
        model_size_gib=131.5,
        labels={"team": "ml"},
    ),
    "zero-replicas": make_input(replicas=0),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_field_name_and_type_is_known_to_the_kubernetes_api(shape: str) -> None:
    for obj in render_all(SHAPES[shape]):
        assert_schema(obj, _TYPES[obj["kind"]], obj["kind"])


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_typed_round_trip_keeps_every_field(shape: str) -> None:
    api = client.ApiClient()
    for obj in render_all(SHAPES[shape]):
        typed = api._ApiClient__deserialize(obj, _TYPES[obj["kind"]])  # type: ignore[attr-defined]
        # Serialising the typed object back must give the same dict: nothing was dropped.
        assert api.sanitize_for_serialization(typed) == obj  # type: ignore[no-untyped-call]


def test_the_checker_catches_a_misspelt_field() -> None:
    deployment = render_all(make_input())[0]
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 30
    with pytest.raises(AssertionError, match="terminationGracePeriod"):
        assert_schema(deployment, "V1Deployment")
    bad_type = render_all(make_input())[0]
    bad_type["spec"]["replicas"] = "2"
    with pytest.raises(AssertionError, match="replicas"):
        assert_schema(bad_type, "V1Deployment")
