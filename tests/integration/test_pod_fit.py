"""Buy only what the pods can use: a pod that no offer can hold buys nothing and says why.

The pool simulates each pending pod against the offers before it buys (CPU, memory and disk
against the node's allocatable, taints, selectors): a pod asking for more than any node it
could buy would otherwise get a node it never runs on, and the pool would count that node's
free GPUs for it for ever. Instead nothing is bought, the pool's Degraded condition and an
event on the pod name the resource, the pod's ModelDeployment says so in its own conditions,
and the pool does not loop on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.integration.conftest import Gpupool, OperatorProcess, SimCloud, gpu_deployment
from tests.integration.test_control_loop import counter

pytestmark = pytest.mark.cluster


def _degraded_message(gp: Gpupool, plural: str, name: str) -> str:
    condition = gp.condition(gp.get(plural, name), "Degraded") or {}
    return str(condition.get("message", "")) if condition.get("status") == "True" else ""


def _quiet(operator: OperatorProcess, seconds: float) -> tuple[float, float]:
    """Pool reconciles and API writes the operator makes over `seconds` (a rate, so a window)."""
    port = operator.metrics_port

    def now() -> tuple[float, float]:
        writes = sum(
            counter(port, "gpupool_kube_requests_total", verb=v) for v in ("patch", "create", "apply")
        )
        return counter(port, "gpupool_reconcile_total", controller="pool"), writes

    reconciles, writes = now()
    time.sleep(seconds)
    reconciles_after, writes_after = now()
    return reconciles_after - reconciles, writes_after - writes


def test_a_pod_asking_more_cpu_than_any_offer_buys_nothing_and_names_cpu(
    gp: Gpupool, start_simcloud: Callable[..., SimCloud], operator: OperatorProcess
) -> None:
    cloud = start_simcloud()
    provider = gp.create_provider("sim", cloud.url)
    pool = gp.create_pool("pool", [provider])
    hog = gpu_deployment("hog", pool, gpus=1)
    hog["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] = {"cpu": "600"}
    gp.apps.create_namespaced_deployment(gp.namespace, hog)

    wait_for(
        lambda: "the cpu it requests: 600" in _degraded_message(gp, "gpupools", pool),
        timeout=60,
        what="the pool Degraded, naming the CPU the pod asks for",
    )
    pod = gp.core.list_namespaced_pod(gp.namespace, label_selector="app=hog").items[0]
    wait_for(
        lambda: any(
            e.reason == "NoNodeFits" and "cpu" in (e.message or "")
            for e in gp.events(pod.metadata.name, gp.namespace)
        ),
        timeout=30,
        what="a NoNodeFits event on the pod",
    )
    assert gp.claims(pool) == []
    assert cloud.instances() == []
    # No hot loop: the pool looks again only when something changes or its resync falls due.
    reconciles, writes = _quiet(operator, 6.0)
    assert reconciles <= 3, f"{reconciles} pool reconciles in 6 s for one unplaceable pod"
    assert writes == 0, f"{writes} writes in 6 s for one unplaceable pod"
    assert gp.claims(pool) == []


def test_a_model_whose_pods_fit_no_offer_says_so_on_the_model_deployment(
    gp: Gpupool, start_simcloud: Callable[..., SimCloud], operator: OperatorProcess, tmp_path: Path
) -> None:
    # One offer: an L40S whose host has 2 vCPUs, so 1.9 allocatable; vLLM's pod asks for 2.
    offers = tmp_path / "offers.csv"
    offers.write_text(
        "provider,region,zone,instance_type,gpu,gpu_count,gpu_memory_gib,vcpus,memory_gib,price_hour,spot_price_hour\n"
        "aws,us-east-1,use1-az1,tiny.l40s,L40S,1,48,2,64,1.0,\n"
    )
    cloud = start_simcloud(args=("--offers-csv", str(offers), "--sources", "aws"))
    provider = gp.create_provider("sim", cloud.url)
    pool = gp.create_pool("pool", [provider])
    gp.create_model(
        "llama", model="meta-llama/Llama-3.1-8B-Instruct", pool=pool, engine={"maxModelLen": 4096}
    )

    def model_says_cpu() -> bool:
        condition = gp.condition(gp.get("modeldeployments", "llama"), "Degraded") or {}
        return condition.get("reason") == "NoNodeFits" and "cpu" in str(condition.get("message"))

    wait_for(model_says_cpu, timeout=60, what="the ModelDeployment Degraded with NoNodeFits, naming cpu")
    wait_for(
        lambda: any(e.reason == "NoNodeFits" for e in gp.events("llama", gp.namespace)),
        timeout=30,
        what="a NoNodeFits event on the ModelDeployment",
    )
    assert gp.claims(pool) == []
    assert cloud.instances() == []
