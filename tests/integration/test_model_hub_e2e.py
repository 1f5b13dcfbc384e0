"""Any Hugging Face model: resolved through the Hub (the local Hub-compatible server), planned from
its own config.json and safetensors headers, served; a gated one without a token says why."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from kubernetes import client

from tests.conftest import wait_for
from tests.hubserver import READ_TOKEN, HubServer
from tests.integration.conftest import Gpupool, OperatorProcess, SimCloud

pytestmark = pytest.mark.cluster

# Not in the built-in table: only the Hub knows it (2 shards, 3,085,938,688 BF16 elements).
OUTSIDE_TABLE = "Qwen/Qwen2.5-3B-Instruct"
GATED = "meta-llama/Llama-3.2-1B-Instruct"


def _ready(gp: Gpupool, name: str) -> dict[str, Any] | None:
    obj = gp.get("modeldeployments", name)
    ready = gp.condition(obj, "Ready")
    return obj if ready and ready["status"] == "True" else None


def _pool(gp: Gpupool, cloud: SimCloud) -> str:
    provider = gp.create_provider("sim", cloud.url)
    return gp.create_pool("pool", [provider], limits={"maxGpus": 8})


def test_a_model_outside_the_table_is_resolved_on_the_hub_and_goes_ready(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, model_hub: HubServer
) -> None:
    pool = _pool(gp, simcloud)
    gp.create_model("qwen", model=OUTSIDE_TABLE, pool=pool, engine={"maxModelLen": 8192})
    md = wait_for(lambda: _ready(gp, "qwen"), timeout=150, what="ModelDeployment Ready")
    placement = md["status"]["placement"]
    # The weights are the checkpoint's exact bytes, read from its safetensors headers.
    assert placement["weightsGiB"] == pytest.approx(6_171_877_376 / 2**30, abs=1e-3)
    assert placement["kvCacheTokens"] > 0 and placement["concurrency"] >= 4
    assert model_hub.count("/api/models/Qwen/Qwen2.5-3B-Instruct") >= 1


def test_a_gated_model_without_a_token_says_why_and_with_one_resolves(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str
) -> None:
    pool = _pool(gp, simcloud)
    gp.create_model("gated", model=GATED, pool=pool)

    def unresolved() -> dict[str, Any] | None:
        ready = gp.condition(gp.get("modeldeployments", "gated"), "Ready")
        return ready if ready and ready["reason"] == "ModelUnresolved" else None

    condition = wait_for(unresolved, timeout=60, what="Ready=False ModelUnresolved")
    assert condition["status"] == "False"
    assert "gated" in condition["message"] and "hfTokenSecretRef" in condition["message"]
    events = wait_for(
        lambda: [e for e in gp.events("gated", namespace) if e.reason == "ModelUnresolved"],
        timeout=30,
        what="a ModelUnresolved event",
    )
    assert events[0].type == "Warning"
    # Nothing was bought for it: no Deployment, no pods, no claims.
    assert not gp.claims(pool)
    with pytest.raises(client.ApiException):
        gp.apps.read_namespaced_deployment("gated", namespace)

    # With a token the model resolves; the token shows nowhere in the object.
    gp.core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="hf"),
            data={"token": base64.b64encode(READ_TOKEN.encode()).decode()},
        ),
    )
    gp.patch_model("gated", {"spec": {"hfTokenSecretRef": {"name": "hf"}}})
    md = wait_for(lambda: _ready(gp, "gated"), timeout=150, what="the gated model Ready with a token")
    assert md["status"]["placement"]["weightsGiB"] == pytest.approx(2_471_628_800 / 2**30, abs=1e-3)
    assert READ_TOKEN not in str(md)
    assert all(READ_TOKEN not in (e.message or "") for e in gp.events("gated", namespace))
    assert READ_TOKEN not in operator.tail(2000)
