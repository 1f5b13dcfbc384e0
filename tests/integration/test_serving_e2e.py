"""The whole product: a ModelDeployment becomes vLLM pods on nodes bought from the cheapest offer.

Applied as a user would, read back as a user would (`kubectl get`), with the operator and
simcloud running as processes against the real control plane.
"""

from __future__ import annotations

import subprocess
import threading
import time
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import Gpupool, OperatorProcess, SimCloud, ready_pods

pytestmark = pytest.mark.cluster

SELECTOR = "gpupool.dev/model-deployment={}"


def _ready(gp: Gpupool, name: str) -> dict[str, Any] | None:
    obj = gp.get("modeldeployments", name)
    ready = gp.condition(obj, "Ready")
    return obj if ready and ready["status"] == "True" else None


def _setup(gp: Gpupool, cloud: SimCloud, **pool: Any) -> str:
    provider = gp.create_provider("sim", cloud.url)
    spec = {"limits": {"maxGpus": 16}, **pool}
    return gp.create_pool("pool", [provider], **spec)


def test_llama_8b_goes_ready_with_endpoint_and_cost(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str, kubeconfig: str
) -> None:
    pool = _setup(gp, simcloud)
    start = time.monotonic()
    gp.create_model(
        "llama", model="meta-llama/Llama-3.1-8B-Instruct", pool=pool, engine={"maxModelLen": 8192}
    )
    md = wait_for(lambda: _ready(gp, "llama"), timeout=120, what="ModelDeployment Ready")
    elapsed = time.monotonic() - start
    status = md["status"]
    assert status["endpoint"] == f"http://llama.{namespace}.svc:8000/v1"
    assert status["readyReplicas"] == 1
    placement = status["placement"]
    assert placement["provider"] == gp.name("sim")
    # The cost is the price of the node the pod holds, shared by the GPUs it uses.
    pod = ready_pods(gp.core, namespace, SELECTOR.format("llama"))[0]
    # The pod may run on its Node a moment before the claim records that Node.
    claim = wait_for(
        lambda: next(
            (c for c in gp.claims(pool) if (c.get("status") or {}).get("nodeName") == pod.spec.node_name),
            None,
        ),
        timeout=20,
        what="the claim of the pod's node",
    )
    offer = claim["spec"]["offer"]
    share = placement["gpusPerReplica"] / offer["gpuCount"]
    md = wait_for(lambda: (o := gp.get("modeldeployments", "llama"))["status"].get("costPerHour") and o,
                  timeout=20, what="costPerHour")  # fmt: skip
    assert md["status"]["costPerHour"] == pytest.approx(offer["pricePerHour"] * share, rel=1e-3)
    assert md["status"]["observedGeneration"] == md["metadata"]["generation"]
    # The objects it owns.
    service = gp.core.read_namespaced_service("llama", namespace)
    assert service.spec.ports[0].port == 8000
    deployment = gp.apps.read_namespaced_deployment("llama", namespace)
    assert deployment.metadata.owner_references[0].kind == "ModelDeployment"
    # What a person sees first.
    out = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "get", "modeldeployments", "-n", namespace],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    header, row = out.splitlines()[:2]
    for column in ("READY", "MODEL", "GPU", "PROVIDER", "$/HR", "ENDPOINT"):
        assert column in header, header
    assert "True" in row and placement["gpu"] in row and status["endpoint"] in row
    print(f"\nModelDeployment apply to Ready (8B, boot delay 0): {elapsed:.1f}s\n{out}")


def test_70b_gets_a_multi_gpu_shape_on_a_node_that_has_it(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str
) -> None:
    pool = _setup(gp, simcloud, gpuTypes=["H100", "A100-80GB"])
    gp.create_model("big", model="meta-llama/Llama-3.1-70B-Instruct", pool=pool, engine={"maxModelLen": 8192})
    md = wait_for(lambda: _ready(gp, "big"), timeout=120, what="70B Ready")
    placement = md["status"]["placement"]
    tp = placement["tensorParallelSize"]
    assert placement["gpusPerReplica"] == tp
    assert tp in (2, 4, 8)  # 140 GB of bf16 weights cannot fit one 80 GB card
    deployment = gp.apps.read_namespaced_deployment("big", namespace)
    container = deployment.spec.template.spec.containers[0]
    args = container.args or []
    assert "--tensor-parallel-size" in args and args[args.index("--tensor-parallel-size") + 1] == str(tp)
    assert container.resources.limits["nvidia.com/gpu"] == str(tp)
    pod = ready_pods(gp.core, namespace, SELECTOR.format("big"))[0]
    node = gp.core.read_node(pod.spec.node_name)
    assert int(node.status.capacity["nvidia.com/gpu"]) >= tp
    assert node.metadata.labels["gpupool.dev/gpu"] == placement["gpu"]


def test_changing_max_model_len_rolls_out_without_losing_ready_pods(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str
) -> None:
    pool = _setup(gp, simcloud, gpuTypes=["L4", "A10G", "L40S"])
    gp.create_model("roll", model="Qwen/Qwen3-0.6B", pool=pool, replicas=2,
                    engine={"maxModelLen": 4096})  # fmt: skip
    wait_for(
        lambda: (o := _ready(gp, "roll")) and o["status"]["readyReplicas"] == 2, timeout=120, what="2 ready"
    )
    before = {rs.metadata.name for rs in gp.apps.list_namespaced_replica_set(namespace).items}

    lowest = [10]
    stop = threading.Event()

    def watch_ready() -> None:
        while not stop.is_set():
            lowest[0] = min(lowest[0], len(ready_pods(gp.core, namespace, SELECTOR.format("roll"))))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch_ready, daemon=True)
    watcher.start()
    try:
        gp.patch("modeldeployments", "roll", {"spec": {"engine": {"maxModelLen": 2048}}})

        def rolled() -> bool:
            deployment = gp.apps.read_namespaced_deployment("roll", namespace)
            args = deployment.spec.template.spec.containers[0].args or []
            s = deployment.status
            return (
                args[args.index("--max-model-len") + 1] == "2048"
                and s.updated_replicas == 2 and s.ready_replicas == 2 and (s.replicas or 0) == 2
            )  # fmt: skip

        wait_for(rolled, timeout=150, what="the rollout to finish")
    finally:
        stop.set()
        watcher.join()
    after = {rs.metadata.name for rs in gp.apps.list_namespaced_replica_set(namespace).items}
    assert after - before, "a new ReplicaSet"
    assert lowest[0] >= 2, f"Ready pods dropped to {lowest[0]} during the rollout"


def test_model_that_fits_no_offer_says_so_with_the_numbers(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str
) -> None:
    pool = _setup(gp, simcloud, gpuTypes=["L4"], limits={"maxGpus": 2})
    gp.create_model("huge", model="meta-llama/Llama-3.1-405B-Instruct", pool=pool)

    def degraded() -> dict[str, Any] | None:
        condition = gp.condition(gp.get("modeldeployments", "huge"), "Degraded")
        return condition if condition and condition["reason"] == "ModelDoesNotFit" else None

    condition = wait_for(degraded, timeout=30, what="Degraded: ModelDoesNotFit")
    assert condition["status"] == "True"
    assert "GiB" in condition["message"], condition["message"]
    assert gp.condition(gp.get("modeldeployments", "huge"), "Ready")["status"] == "False"
    events = gp.events("huge", namespace)
    # One warning for one decision: a tight loop would post one every tick.
    time.sleep(4)
    assert len([e for e in gp.events("huge", namespace) if e.reason == "ModelDoesNotFit"]) <= max(
        len(events), 1
    )
    assert not gp.claims(pool)


def test_budget_too_small_is_budget_exceeded(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str
) -> None:
    pool = _setup(gp, simcloud)
    gp.create_model("cheap", model="meta-llama/Llama-3.1-8B-Instruct", pool=pool, maxHourlyCost=0.01)
    condition = wait_for(
        lambda: (c := gp.condition(gp.get("modeldeployments", "cheap"), "Degraded")) and c["reason"] == "BudgetExceeded" and c,
        timeout=30, what="Degraded: BudgetExceeded",
    )  # fmt: skip
    assert condition["status"] == "True"
    assert "maxHourlyCost" in condition["message"] or "budget" in condition["message"].lower(), condition[
        "message"
    ]
    assert not gp.claims(pool)


def test_scale_subresource_and_delete(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str, kubeconfig: str
) -> None:
    pool = _setup(gp, simcloud, gpuTypes=["L4"])
    gp.create_model("scaled", model="Qwen/Qwen3-0.6B", pool=pool)
    wait_for(lambda: _ready(gp, "scaled"), timeout=120, what="Ready")
    subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, "scale", "-n", namespace, "modeldeployment/scaled", "--replicas=3"],
        check=True, capture_output=True,
    )  # fmt: skip
    wait_for(
        lambda: (o := _ready(gp, "scaled")) and o["status"]["readyReplicas"] == 3, timeout=120, what="3 ready"
    )
    assert len(ready_pods(gp.core, namespace, SELECTOR.format("scaled"))) == 3

    gp.custom.delete_namespaced_custom_object(
        "gpupool.dev", "v1alpha1", namespace, "modeldeployments", "scaled"
    )
    wait_for(
        lambda: not gp.apps.list_namespaced_deployment(namespace).items, timeout=60, what="Deployment gone"
    )
    # Its nodes are empty now, and consolidated (consolidateAfter is 10s here).
    wait_for(lambda: not gp.claims(pool), timeout=90, what="nodes consolidated")


def test_pool_out_of_room_shows_on_the_model_as_insufficient_capacity(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str
) -> None:
    from tests.integration.conftest import gpu_deployment

    pool = _setup(gp, simcloud, gpuTypes=["L4"], limits={"maxGpus": 1})
    # Another workload takes the pool's only GPU first.
    gp.apps.create_namespaced_deployment(namespace, gpu_deployment("first", pool, gpus=1))
    wait_for(lambda: ready_pods(gp.core, namespace, "app=first"), timeout=90, what="the first workload Ready")
    gp.create_model("late", model="Qwen/Qwen3-0.6B", pool=pool)

    def starved() -> dict[str, Any] | None:
        condition = gp.condition(gp.get("modeldeployments", "late"), "Degraded")
        return condition if condition and condition["reason"] == "InsufficientCapacity" else None

    condition = wait_for(starved, timeout=60, what="Degraded: InsufficientCapacity")
    assert condition["status"] == "True" and "maxGpus" in condition["message"], condition
    assert gp.condition(gp.get("modeldeployments", "late"), "Ready")["status"] == "False"


def test_a_persons_edit_of_a_managed_field_is_put_back(
    gp: Gpupool, simcloud: SimCloud, operator: OperatorProcess, namespace: str
) -> None:
    pool = _setup(gp, simcloud, gpuTypes=["L4"])
    gp.create_model("owned", model="Qwen/Qwen3-0.6B", pool=pool, engine={"maxModelLen": 4096})
    wait_for(lambda: _ready(gp, "owned"), timeout=120, what="Ready")
    # Someone scales the Deployment by hand and edits the vLLM arguments.
    deployment = gp.apps.read_namespaced_deployment("owned", namespace)
    args = list(deployment.spec.template.spec.containers[0].args)
    tampered = [a if a != "4096" else "999" for a in args]
    gp.apps.patch_namespaced_deployment("owned", namespace, {
        "spec": {"replicas": 5, "template": {"spec": {"containers": [{"name": "vllm", "args": tampered}]}}}})  # fmt: skip

    def restored() -> bool:
        current = gp.apps.read_namespaced_deployment("owned", namespace)
        return current.spec.replicas == 1 and list(current.spec.template.spec.containers[0].args) == args

    wait_for(restored, timeout=30, what="the operator's fields put back")
