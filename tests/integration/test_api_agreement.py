"""The pydantic models and the CRD the API server enforces agree on what is valid.

Hypothesis builds random specs from the generated schema itself (every field, mostly
valid values with a few wrong ones: wrong types, values just past a bound, unknown
enum values and fields, duplicates). Each spec is parsed by the model and sent to the
real API server as a dry-run create with strict field validation; both must give the
same verdict. When both accept, the object the API server would store (with its
defaults applied) must parse to the same model as the spec did, so the defaults in
the CRD are the defaults in the code.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from kubernetes import client
from pydantic import ValidationError

from gpupool.api import KINDS, KindInfo
from gpupool.api.crdgen import structural_schema
from gpupool.api.testing import wire_values

pytestmark = pytest.mark.cluster

EXAMPLES_PER_KIND = int(os.environ.get("GPUPOOL_AGREEMENT_EXAMPLES", "150"))


def _server_verdict(
    api: client.CustomObjectsApi, info: KindInfo, spec: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """(stored object, None) if the API server accepts the spec, else (None, its message)."""
    body = {
        "apiVersion": f"{info.group}/{info.version}",
        "kind": info.kind,
        "metadata": {"name": f"agree-{uuid.uuid4().hex[:8]}"},
        "spec": spec,
    }
    try:
        if info.scope == "Cluster":
            stored = api.create_cluster_custom_object(
                info.group, info.version, info.plural, body, dry_run="All", field_validation="Strict"
            )
        else:
            stored = api.create_namespaced_custom_object(
                info.group,
                info.version,
                "default",
                info.plural,
                body,
                dry_run="All",
                field_validation="Strict",
            )
    except client.ApiException as exc:
        if exc.status not in (400, 422):
            raise
        return None, str(json.loads(exc.body)["message"])
    return stored, None


@pytest.mark.parametrize("info", KINDS, ids=[k.kind for k in KINDS])
def test_models_and_api_server_agree(
    kube: client.ApiClient, crds_installed: list[str], info: KindInfo
) -> None:
    api = client.CustomObjectsApi(kube)
    verdicts = {"accepted": 0, "refused": 0}

    @settings(
        max_examples=EXAMPLES_PER_KIND,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(spec=wire_values(structural_schema(info.spec_model)))
    def agree(spec: dict[str, Any]) -> None:
        try:
            parsed = info.spec_model.from_k8s(spec)
            model_error = None
        except ValidationError as exc:
            parsed, model_error = None, str(exc)
        stored, server_error = _server_verdict(api, info, spec)
        assert (model_error is None) == (server_error is None), (
            f"models {'accept' if model_error is None else 'refuse'} what the API server "
            f"{'accepts' if server_error is None else 'refuses'}:\n"
            f"spec: {spec}\nmodels: {model_error}\nAPI server: {server_error}"
        )
        if stored is not None:
            verdicts["accepted"] += 1
            assert info.spec_model.from_k8s(stored["spec"]) == parsed, (
                "CRD defaults differ from model defaults"
            )
        else:
            verdicts["refused"] += 1

    agree()
    # Both verdicts must be common, or the test is not testing the boundary.
    assert verdicts["accepted"] >= EXAMPLES_PER_KIND // 10, verdicts
    assert verdicts["refused"] >= EXAMPLES_PER_KIND // 10, verdicts


def _is_subset(small: Any, big: Any) -> bool:
    if isinstance(small, dict):
        return isinstance(big, dict) and all(k in big and _is_subset(v, big[k]) for k, v in small.items())
    if isinstance(small, list):
        return isinstance(big, list) and len(small) == len(big) and all(map(_is_subset, small, big))
    return bool(small == big)


MINIMAL_SPECS: dict[str, dict[str, Any]] = {
    "GpuProvider": {"type": "sim"},
    "GpuPool": {},
    "GpuNodeClaim": {
        "pool": "default",
        "offer": {
            "provider": "sim",
            "region": "us-east-1",
            "instanceType": "g6.xlarge",
            "gpu": "L4",
            "gpuCount": 1,
            "capacityType": "on-demand",
            "pricePerHour": 0.8,
        },
    },
    "ModelDeployment": {"model": "Qwen/Qwen3-8B"},
}


@pytest.mark.parametrize("info", KINDS, ids=[k.kind for k in KINDS])
def test_every_status_the_models_write_is_accepted(
    kube: client.ApiClient, crds_installed: list[str], namespace: str, info: KindInfo
) -> None:
    """Controllers write status through the models; the API server must take all of it."""
    api = client.CustomObjectsApi(kube)
    name = f"status-{uuid.uuid4().hex[:8]}"
    body = {
        "apiVersion": f"{info.group}/{info.version}",
        "kind": info.kind,
        "metadata": {"name": name},
        "spec": MINIMAL_SPECS[info.kind],
    }
    args = (info.group, info.version, info.plural)
    if info.scope == "Cluster":
        api.create_cluster_custom_object(*args, body)
    else:
        api.create_namespaced_custom_object(info.group, info.version, namespace, info.plural, body)
    written = {"count": 0}

    @settings(
        max_examples=EXAMPLES_PER_KIND // 2,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(status=wire_values(structural_schema(info.status_model), invalid_percent=0))
    def write(status: dict[str, Any]) -> None:
        try:
            model = info.status_model.from_k8s(status)
        except ValidationError:
            return
        patch = {"status": model.to_k8s()}
        if info.scope == "Cluster":
            stored = api.patch_cluster_custom_object_status(*args, name, patch, dry_run="All")
        else:
            stored = api.patch_namespaced_custom_object_status(
                info.group, info.version, namespace, info.plural, name, patch, dry_run="All"
            )
        # A running operator may own other status fields; ours must come back as written.
        assert _is_subset(patch["status"], stored.get("status", {})), (patch, stored.get("status"))
        info.status_model.from_k8s(stored.get("status", {}))
        written["count"] += 1

    try:
        write()
    finally:
        if info.scope == "Cluster":
            api.delete_cluster_custom_object(*args, name)
    assert written["count"] >= EXAMPLES_PER_KIND // 10, written
