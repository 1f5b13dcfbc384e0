"""Bad input is refused by the real API server, with a message that names the field.

Each row of the table is one invalid manifest. The test sends it to the API server
(strict field validation, as kubectl does) and asserts that it is refused and that
the error names the offending field; it also asserts that the pydantic models
refuse the same spec, since the two must agree.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from pydantic import ValidationError

from gpupool.api import GPU_NODE_CLAIM, GPU_POOL, GPU_PROVIDER, MODEL_DEPLOYMENT, KindInfo

pytestmark = pytest.mark.cluster

DELETE = object()

PROVIDER_SIM: dict[str, Any] = {"type": "sim"}
PROVIDER_LAMBDA: dict[str, Any] = {
    "type": "lambda",
    "credentialsSecretRef": {"name": "lambda-api-key", "namespace": "gpupool-system"},
}
POOL: dict[str, Any] = {"limits": {"maxNodes": 4}}
CLAIM: dict[str, Any] = {
    "pool": "default",
    "offer": {
        "provider": "sim",
        "region": "us-east-1",
        "instanceType": "g6.xlarge",
        "gpu": "L4",
        "gpuCount": 1,
        "capacityType": "on-demand",
        "pricePerHour": 0.8048,
    },
}
MODEL: dict[str, Any] = {"model": "meta-llama/Llama-3.1-8B-Instruct"}
ARCH: dict[str, Any] = {
    "paramsB": 8,
    "layers": 32,
    "hiddenSize": 4096,
    "attentionHeads": 32,
    "kvHeads": 8,
    "maxContext": 131072,
}


def edit(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of `base` with dotted paths set (or removed, with DELETE)."""
    out = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return out


@dataclass(frozen=True)
class Case:
    id: str
    kind: KindInfo
    spec: dict[str, Any]
    field: str  # what the error must name
    name: str | None = None  # metadata.name, when the name itself is the mistake


CASES = [
    # ModelDeployment
    Case("md-replicas-wrong-type", MODEL_DEPLOYMENT, edit(MODEL, replicas="two"), "spec.replicas"),
    Case("md-replicas-negative", MODEL_DEPLOYMENT, edit(MODEL, replicas=-1), "spec.replicas"),
    Case("md-replicas-too-many", MODEL_DEPLOYMENT, edit(MODEL, replicas=1001), "spec.replicas"),
    Case("md-replicas-fraction", MODEL_DEPLOYMENT, edit(MODEL, replicas=1.5), "spec.replicas"),
    Case("md-model-empty", MODEL_DEPLOYMENT, edit(MODEL, model=""), "spec.model"),
    Case("md-model-missing", MODEL_DEPLOYMENT, {"replicas": 1}, "spec.model"),
    Case("md-model-not-an-id", MODEL_DEPLOYMENT, edit(MODEL, model="llama 3 please"), "spec.model"),
    Case("md-objective-unknown", MODEL_DEPLOYMENT, edit(MODEL, objective="cheapest"), "spec.objective"),
    Case("md-capacity-unknown", MODEL_DEPLOYMENT, edit(MODEL, capacityType="reserved"), "spec.capacityType"),
    Case(
        "md-autoscaling-min-above-max",
        MODEL_DEPLOYMENT,
        edit(MODEL, autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        "spec.autoscaling.minReplicas",
    ),
    Case(
        "md-autoscaling-max-missing",
        MODEL_DEPLOYMENT,
        edit(MODEL, autoscaling={"minReplicas": 1}),
        "spec.autoscaling.maxReplicas",
    ),
    Case("md-budget-negative", MODEL_DEPLOYMENT, edit(MODEL, maxHourlyCost=-5), "spec.maxHourlyCost"),
    Case("md-budget-zero", MODEL_DEPLOYMENT, edit(MODEL, maxHourlyCost=0), "spec.maxHourlyCost"),
    Case(
        "md-gpu-utilization-above-1",
        MODEL_DEPLOYMENT,
        edit(MODEL, engine={"gpuMemoryUtilization": 1.2}),
        "spec.engine.gpuMemoryUtilization",
    ),
    Case(
        "md-gpu-utilization-too-low",
        MODEL_DEPLOYMENT,
        edit(MODEL, engine={"gpuMemoryUtilization": 0.3}),
        "spec.engine.gpuMemoryUtilization",
    ),
    Case("md-dtype-unknown", MODEL_DEPLOYMENT, edit(MODEL, engine={"dtype": "fp64"}), "spec.engine.dtype"),
    Case(
        "md-quantization-unknown",
        MODEL_DEPLOYMENT,
        edit(MODEL, engine={"quantization": "int3"}),
        "spec.engine.quantization",
    ),
    Case(
        "md-max-num-seqs-zero",
        MODEL_DEPLOYMENT,
        edit(MODEL, engine={"maxNumSeqs": 0}),
        "spec.engine.maxNumSeqs",
    ),
    Case(
        "md-image-with-space",
        MODEL_DEPLOYMENT,
        edit(MODEL, engine={"image": "vllm latest"}),
        "spec.engine.image",
    ),
    Case("md-gpu-count-zero", MODEL_DEPLOYMENT, edit(MODEL, gpu={"count": 0}), "spec.gpu.count"),
    Case(
        "md-tp-does-not-divide-gpus",
        MODEL_DEPLOYMENT,
        edit(MODEL, gpu={"count": 3}, engine={"tensorParallelSize": 2}),
        "spec.engine.tensorParallelSize",
    ),
    Case(
        "md-gpu-types-duplicate",
        MODEL_DEPLOYMENT,
        edit(MODEL, gpu={"types": ["H100", "H100"]}),
        "spec.gpu.types",
    ),
    Case(
        "md-gpu-memory-negative",
        MODEL_DEPLOYMENT,
        edit(MODEL, gpu={"minMemoryGiB": -1}),
        "spec.gpu.minMemoryGiB",
    ),
    Case(
        "md-kv-heads-do-not-divide",
        MODEL_DEPLOYMENT,
        edit(MODEL, architecture=edit(ARCH, kvHeads=5)),
        "spec.architecture.kvHeads",
    ),
    Case(
        "md-moe-without-active-params",
        MODEL_DEPLOYMENT,
        edit(MODEL, architecture=edit(ARCH, moe=True)),
        "spec.architecture.activeParamsB",
    ),
    Case(
        "md-context-longer-than-model",
        MODEL_DEPLOYMENT,
        edit(MODEL, architecture=edit(ARCH, maxContext=4096), engine={"maxModelLen": 8192}),
        "spec.engine.maxModelLen",
    ),
    Case("md-unknown-field", MODEL_DEPLOYMENT, edit(MODEL, gpus=2), "spec.gpus"),
    Case(
        "md-secret-ref-without-name",
        MODEL_DEPLOYMENT,
        edit(MODEL, apiKeySecretRef={"key": "k"}),
        "spec.apiKeySecretRef.name",
    ),
    Case("md-name-not-a-service-name", MODEL_DEPLOYMENT, MODEL, "metadata.name", name="9-llama"),
    # GpuProvider
    Case("provider-type-unknown", GPU_PROVIDER, edit(PROVIDER_SIM, type="aws"), "spec.type"),
    Case("provider-type-missing", GPU_PROVIDER, {"regions": ["us-east-1"]}, "spec.type"),
    Case(
        "provider-credentials-missing",
        GPU_PROVIDER,
        edit(PROVIDER_LAMBDA, credentialsSecretRef=DELETE),
        "spec.credentialsSecretRef",
    ),
    Case(
        "provider-secret-namespace-missing",
        GPU_PROVIDER,
        edit(PROVIDER_LAMBDA, credentialsSecretRef__namespace=DELETE),
        "spec.credentialsSecretRef.namespace",
    ),
    Case(
        "provider-discount-too-big",
        GPU_PROVIDER,
        edit(PROVIDER_SIM, discountPercent=99),
        "spec.discountPercent",
    ),
    Case(
        "provider-discount-negative",
        GPU_PROVIDER,
        edit(PROVIDER_SIM, discountPercent=-1),
        "spec.discountPercent",
    ),
    Case(
        "provider-refresh-not-a-duration",
        GPU_PROVIDER,
        edit(PROVIDER_SIM, refreshInterval="5 minutes"),
        "spec.refreshInterval",
    ),
    Case(
        "provider-refresh-too-often",
        GPU_PROVIDER,
        edit(PROVIDER_SIM, refreshInterval="1s"),
        "spec.refreshInterval",
    ),
    Case(
        "provider-refresh-in-days",
        GPU_PROVIDER,
        edit(PROVIDER_SIM, refreshInterval="1d"),
        "spec.refreshInterval",
    ),
    Case("provider-endpoint-not-http", GPU_PROVIDER, edit(PROVIDER_SIM, endpoint="ftp://x"), "spec.endpoint"),
    Case(
        "provider-regions-duplicate",
        GPU_PROVIDER,
        edit(PROVIDER_SIM, regions=["us-east-1", "us-east-1"]),
        "spec.regions",
    ),
    # GpuPool
    Case(
        "pool-budget-negative",
        GPU_POOL,
        edit(POOL, limits={"maxHourlyCost": -1}),
        "spec.limits.maxHourlyCost",
    ),
    Case("pool-budget-zero", GPU_POOL, edit(POOL, limits={"maxHourlyCost": 0}), "spec.limits.maxHourlyCost"),
    Case("pool-max-nodes-zero", GPU_POOL, edit(POOL, limits={"maxNodes": 0}), "spec.limits.maxNodes"),
    Case("pool-max-gpus-wrong-type", GPU_POOL, edit(POOL, limits={"maxGpus": "many"}), "spec.limits.maxGpus"),
    Case("pool-capacity-types-empty", GPU_POOL, edit(POOL, capacityTypes=[]), "spec.capacityTypes"),
    Case(
        "pool-capacity-type-unknown",
        GPU_POOL,
        edit(POOL, capacityTypes=["preemptible"]),
        "spec.capacityTypes[0]",
    ),
    Case(
        "pool-expiry-shorter-than-launch",
        GPU_POOL,
        edit(POOL, disruption={"expireAfter": "20m", "launchTimeout": "30m"}),
        "spec.disruption.expireAfter",
    ),
    Case(
        "pool-consolidate-after-negative",
        GPU_POOL,
        edit(POOL, disruption={"consolidateAfter": "-5m"}),
        "spec.disruption.consolidateAfter",
    ),
    Case(
        "pool-taint-effect-unknown",
        GPU_POOL,
        edit(POOL, taints=[{"key": "gpu", "effect": "Sometimes"}]),
        "spec.taints[0].effect",
    ),
    Case("pool-label-reserved-prefix", GPU_POOL, edit(POOL, labels={"gpupool.dev/pool": "x"}), "spec.labels"),
    Case("pool-label-key-invalid", GPU_POOL, edit(POOL, labels={"bad key!": "x"}), "spec.labels"),
    Case("pool-label-value-too-long", GPU_POOL, edit(POOL, labels={"team": "x" * 64}), "spec.labels.team"),
    Case("pool-unknown-field", GPU_POOL, edit(POOL, maxNodes=3), "spec.maxNodes"),
    # GpuNodeClaim
    Case("claim-gpu-count-zero", GPU_NODE_CLAIM, edit(CLAIM, offer__gpuCount=0), "spec.offer.gpuCount"),
    Case(
        "claim-price-wrong-type",
        GPU_NODE_CLAIM,
        edit(CLAIM, offer__pricePerHour="cheap"),
        "spec.offer.pricePerHour",
    ),
    Case("claim-offer-missing", GPU_NODE_CLAIM, edit(CLAIM, offer=DELETE), "spec.offer"),
    Case(
        "claim-capacity-unknown",
        GPU_NODE_CLAIM,
        edit(CLAIM, offer__capacityType="reserved"),
        "spec.offer.capacityType",
    ),
]


def _body(kind: KindInfo, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{kind.group}/{kind.version}",
        "kind": kind.kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def _create(kube: client.ApiClient, kind: KindInfo, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    api = client.CustomObjectsApi(kube)
    if kind.scope == "Cluster":
        return api.create_cluster_custom_object(  # type: ignore[no-any-return]
            kind.group, kind.version, kind.plural, body, field_validation="Strict"
        )
    return api.create_namespaced_custom_object(  # type: ignore[no-any-return]
        kind.group, kind.version, namespace, kind.plural, body, field_validation="Strict"
    )


def _delete(kube: client.ApiClient, kind: KindInfo, namespace: str, name: str) -> None:
    api = client.CustomObjectsApi(kube)
    try:
        if kind.scope == "Cluster":
            api.delete_cluster_custom_object(kind.group, kind.version, kind.plural, name)
        else:
            api.delete_namespaced_custom_object(kind.group, kind.version, namespace, kind.plural, name)
    except client.ApiException as exc:
        if exc.status != 404:
            raise


def _refusal(kube: client.ApiClient, kind: KindInfo, namespace: str, body: dict[str, Any]) -> str:
    """Create `body`; return the API server's error message (the test fails if it was accepted)."""
    try:
        _create(kube, kind, namespace, body)
    except client.ApiException as exc:
        assert exc.status in (400, 422), exc
        return str(json.loads(exc.body)["message"])
    _delete(kube, kind, namespace, body["metadata"]["name"])
    pytest.fail(f"the API server accepted an invalid {kind.kind}: {body}")


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.kind.kind for c in CASES} == {"GpuProvider", "GpuPool", "GpuNodeClaim", "ModelDeployment"}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_invalid_manifest_is_refused_naming_the_field(
    kube: client.ApiClient, crds_installed: list[str], namespace: str, case: Case
) -> None:
    name = case.name or f"invalid-{uuid.uuid4().hex[:8]}"
    message = _refusal(kube, case.kind, namespace, _body(case.kind, name, case.spec))
    assert case.field in message, f"error does not name {case.field}: {message}"
    # The models refuse it too: the controllers never see what the API server would not store.
    model = case.kind.spec_model
    if case.name is None:
        with pytest.raises(ValidationError):
            model.model_validate(case.spec, by_alias=True)


def test_rule_messages_say_how_to_fix(
    kube: client.ApiClient, crds_installed: list[str], namespace: str
) -> None:
    body = _body(MODEL_DEPLOYMENT, "scaled", edit(MODEL, autoscaling={"minReplicas": 5, "maxReplicas": 2}))
    message = _refusal(kube, MODEL_DEPLOYMENT, namespace, body)
    assert "spec.autoscaling.minReplicas must not exceed spec.autoscaling.maxReplicas" in message
    assert "lower minReplicas or raise maxReplicas" in message


def _replace_spec(kube: client.ApiClient, kind: KindInfo, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Replace the spec, retrying on conflicts (an operator may be adding its finalizer)."""
    api = client.CustomObjectsApi(kube)
    for _ in range(10):
        current = api.get_cluster_custom_object(kind.group, kind.version, kind.plural, name)
        current["spec"] = spec
        try:
            return api.replace_cluster_custom_object(  # type: ignore[no-any-return]
                kind.group, kind.version, kind.plural, name, current
            )
        except client.ApiException as exc:
            if exc.status != 409:
                raise
    pytest.fail(f"{kind.kind} {name} kept changing under the test")


def test_node_claim_spec_is_immutable(
    kube: client.ApiClient, crds_installed: list[str], namespace: str
) -> None:
    name = f"claim-{uuid.uuid4().hex[:8]}"
    _create(kube, GPU_NODE_CLAIM, namespace, _body(GPU_NODE_CLAIM, name, CLAIM))
    try:
        with pytest.raises(client.ApiException) as refused:
            _replace_spec(kube, GPU_NODE_CLAIM, name, edit(CLAIM, offer__pricePerHour=0.5))
        message = json.loads(refused.value.body)["message"]
        assert refused.value.status == 422
        assert "spec is immutable" in message and "GpuNodeClaim" in message
        # Writing the same spec again is no change, and is allowed.
        _replace_spec(kube, GPU_NODE_CLAIM, name, CLAIM)
    finally:
        _delete(kube, GPU_NODE_CLAIM, namespace, name)


def test_provider_type_is_immutable(
    kube: client.ApiClient, crds_installed: list[str], namespace: str
) -> None:
    name = f"provider-{uuid.uuid4().hex[:8]}"
    _create(kube, GPU_PROVIDER, namespace, _body(GPU_PROVIDER, name, PROVIDER_SIM))
    try:
        with pytest.raises(client.ApiException) as refused:
            _replace_spec(kube, GPU_PROVIDER, name, PROVIDER_LAMBDA)
        message = json.loads(refused.value.body)["message"]
        assert "spec.type" in message and "immutable" in message
        # Other fields may change.
        updated = _replace_spec(kube, GPU_PROVIDER, name, edit(PROVIDER_SIM, refreshInterval="1m"))
        assert updated["spec"]["refreshInterval"] == "1m"
    finally:
        _delete(kube, GPU_PROVIDER, namespace, name)


@pytest.mark.parametrize("value", ["5 minutes", "1d", "1s"])
def test_duration_errors_say_what_a_duration_looks_like(
    kube: client.ApiClient, crds_installed: list[str], namespace: str, value: str
) -> None:
    body = _body(GPU_PROVIDER, f"provider-{uuid.uuid4().hex[:8]}", edit(PROVIDER_SIM, refreshInterval=value))
    message = _refusal(kube, GPU_PROVIDER, namespace, body)
    assert "spec.refreshInterval" in message
    assert "must be a duration like 30s, 5m or 1h30m (units ms, s, m, h) between 10s and 24h" in message
