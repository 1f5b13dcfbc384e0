"""The ModelDeployment decision as plain data: what it does with a model resolved or not on the Hub,
and with a placement that spans nodes (not served yet)."""

from __future__ import annotations

import dataclasses
from typing import Any

from gpupool.api import GpuPoolSpec, ModelDeploymentSpec
from gpupool.catalog import Offer, Unavailable
from gpupool.controllers.modeldeployment.decide import ModelView, decide
from gpupool.controllers.modeldeployment.model_source import ModelSource
from gpupool.planner import find_model


def _offer(network: str = "infiniband") -> Offer:
    return Offer(
        provider="p", region="r", zone="", instance_type="h100x8", gpu="H100", gpu_count=8,
        gpu_memory_gib=80, vcpus=192, memory_gib=2048.0, on_demand_price=24.0, spot_price=None,
        network=network,
    )  # fmt: skip


def _view(model: str, source: ModelSource | None = None, **spec: Any) -> ModelView:
    return ModelView(
        name="m", namespace="ns", uid="u", generation=1,
        spec=ModelDeploymentSpec.from_k8s({"model": model, **spec}), status={},
        pool_spec=GpuPoolSpec.from_k8s({"providers": ["p"]}), pool_degraded=None,
        offers=lambda: [_offer()], unavailable=Unavailable(), pods=(), deployment_status=None,
        node_price=lambda node: (0.0, 0), now=0.0, replan_after=600.0,
        source=source or ModelSource(),
    )  # fmt: skip


def _ready(decision: Any) -> dict[str, Any]:
    return next(c for c in decision.outcome.status["conditions"] if c["type"] == "Ready")


def test_a_replica_placed_across_nodes_is_reported_and_nothing_is_applied() -> None:
    decision = decide(_view("meta-llama/Llama-3.1-405B-Instruct"))
    ready = _ready(decision)
    assert ready["status"] == "False" and ready["reason"] == "MultiNodeNotServedYet"
    placement = decision.outcome.status["placement"]
    assert placement["pipelineParallelSize"] == 2 and placement["nodesPerReplica"] == 2
    assert decision.objects == []  # no Deployment, so no pending pods, so no nodes bought


def test_an_unresolved_model_says_why_once_and_asks_again_later() -> None:
    source = ModelSource(unresolved=("Gated", "model x is gated: put a token in spec.hfTokenSecretRef"))
    first = decide(_view("acme/x", source))
    ready = _ready(first)
    assert (ready["status"], ready["reason"]) == ("False", "ModelUnresolved")
    assert "hfTokenSecretRef" in ready["message"]
    assert [e.reason for e in first.outcome.events] == ["ModelUnresolved"]
    assert first.outcome.requeue == 60.0 and first.objects == []
    again = decide(dataclasses.replace(_view("acme/x", source), status=first.outcome.status))
    assert again.outcome.events == []  # the same message is not posted twice


def test_an_architecture_from_the_hub_is_what_is_planned() -> None:
    arch = find_model("meta-llama/Llama-3.1-8B-Instruct")
    assert arch is not None
    renamed = dataclasses.replace(arch, name="acme/custom-8b")
    decision = decide(_view("acme/custom-8b", ModelSource(architecture=renamed)))
    placement = decision.outcome.status["placement"]
    assert placement["gpusPerReplica"] == 1 and placement["kvCacheTokens"] > 0
    assert any(obj["kind"] == "Deployment" for obj in decision.objects)
