"""simcloud as a real process against the real local cluster: launches become KWOK Nodes.

The process is started exactly as the chart and the demo start it (`python -m simcloud ...`), the
provider client is the one the operator uses, and the Nodes are read back from the API server:
labels, capacity, taint and providerID as a real GPU node's; KWOK marks it Ready and the real
scheduler binds a GPU pod to it; terminating removes it; a restarted process still knows every
instance and keeps the Nodes of running ones.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from gpupool.providers import InstanceState, LaunchRequest
from gpupool.providers.sim import SimCloudProvider
from simcloud.store import InstanceStore
from tests.conftest import wait_for

pytestmark = pytest.mark.cluster


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SimcloudProcess:
    def __init__(self, db: Path, kubeconfig: str, log: Path) -> None:
        self.db, self.kubeconfig, self.log = db, kubeconfig, log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            sys.executable, "-m", "simcloud",
            "--port", str(self.port),
            "--db", str(self.db),
            "--kubeconfig", self.kubeconfig,
            "--boot-delay", "1",
            "--tick", "0.2",
            "--regions", "lambda-us-east-1,aws-us-east-1",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=os.environ.copy())

        def healthy() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            return False

        wait_for(healthy, timeout=30, what="simcloud /healthz")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def simcloud(tmp_path: Path, kubeconfig: str, kube: client.ApiClient) -> Iterator[SimcloudProcess]:
    sim = SimcloudProcess(tmp_path / "simcloud.sqlite", kubeconfig, tmp_path / "simcloud.log")
    sim.start()
    yield sim
    sim.stop()
    # A failed test must not leave its Nodes behind: remove those of this test's instances only.
    core = client.CoreV1Api(kube)
    store = InstanceStore(sim.db)
    for instance in store.all():
        with contextlib.suppress(client.ApiException):
            core.delete_node(instance.node_name)
    store.close()


def _request(
    uid: str, instance_type: str = "gpu_1x_h100_sxm5", region: str = "lambda-us-east-1"
) -> LaunchRequest:
    return LaunchRequest(
        claim_name=f"default-{uid[:5]}",
        claim_uid=uid,
        cluster_name="itest",
        region=region,
        instance_type=instance_type,
        gpu="H100",
        user_data="#!/bin/sh\ntrue\n",
        labels={"gpupool.dev/pool": "default", "gpupool.dev/claim": f"default-{uid[:5]}"},
    )


def _node(core: client.CoreV1Api, name: str) -> client.V1Node | None:
    try:
        return core.read_node(name)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise


def _ready(node: client.V1Node | None) -> bool:
    conditions = (node and node.status and node.status.conditions) or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


async def test_launch_registers_a_node_terminate_removes_it_restart_keeps_state(
    simcloud: SimcloudProcess, kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    provider = SimCloudProvider(name="sim", cluster_name="itest", endpoint=simcloud.url)
    uid = str(uuid.uuid4())
    instance = await provider.create(_request(uid))
    assert instance.state == InstanceState.PENDING
    assert (await provider.create(_request(uid))).id == instance.id  # idempotent
    node_name = f"simcloud-{instance.id}"

    node = wait_for(lambda: _node(core, node_name), timeout=30, what="the instance's Node")
    labels = node.metadata.labels
    assert labels["node.kubernetes.io/instance-type"] == "gpu_1x_h100_sxm5"
    assert labels["topology.kubernetes.io/region"] == "lambda-us-east-1"
    assert labels["topology.kubernetes.io/zone"] == "lambda-us-east-1"
    assert labels["kubernetes.io/hostname"] == node_name
    assert labels["gpupool.dev/gpu"] == "H100"
    assert labels["gpupool.dev/capacity-type"] == "on-demand"
    assert labels["gpupool.dev/provider"] == "simcloud"
    assert labels["gpupool.dev/pool"] == "default"
    assert labels["gpupool.dev/claim"] == f"default-{uid[:5]}"
    assert labels["gpupool.dev/claim-uid"] == uid
    assert node.spec.provider_id == f"simcloud://{instance.id}"
    # The node lifecycle controller may add node.kubernetes.io/not-ready until KWOK reports Ready.
    taints = [
        (t.key, t.value, t.effect) for t in node.spec.taints if not t.key.startswith("node.kubernetes.io/")
    ]
    assert taints == [("nvidia.com/gpu", "present", "NoSchedule")]
    assert node.status.capacity["nvidia.com/gpu"] == "1"
    assert node.status.allocatable["nvidia.com/gpu"] == "1"
    assert node.status.capacity["pods"] == "110"
    assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
    wait_for(lambda: _ready(_node(core, node_name)), timeout=60, what="KWOK to mark the Node Ready")
    assert (await provider.get(instance.id)).state == InstanceState.RUNNING

    # The real scheduler binds a GPU pod to it and KWOK runs it.
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="gpu-probe"),
        spec=client.V1PodSpec(
            node_selector={"simcloud.dev/instance-id": instance.id},
            tolerations=[client.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
            containers=[
                client.V1Container(
                    name="probe",
                    image="busybox",
                    resources=client.V1ResourceRequirements(limits={"nvidia.com/gpu": "1"}),
                )
            ],
        ),
    )
    core.create_namespaced_pod(namespace, pod)
    wait_for(
        lambda: core.read_namespaced_pod("gpu-probe", namespace).status.phase == "Running",
        timeout=60,
        what="the GPU pod to run on the simcloud Node",
    )

    # A second instance that stays running across the restart.
    keeper_uid = str(uuid.uuid4())
    keeper = await provider.create(_request(keeper_uid, "g5.xlarge", "aws-us-east-1"))
    wait_for(lambda: _node(core, f"simcloud-{keeper.id}"), timeout=30, what="the second Node")

    await provider.delete(instance.id)
    wait_for(lambda: _node(core, node_name) is None, timeout=30, what="the Node to be removed")
    assert (await provider.get(instance.id)).state == InstanceState.TERMINATED
    await provider.aclose()

    simcloud.stop()
    simcloud.start()
    provider = SimCloudProvider(name="sim", cluster_name="itest", endpoint=simcloud.url)
    listed = {i.id: i.state for i in await provider.list()}
    assert listed == {keeper.id: InstanceState.RUNNING}
    assert (await provider.get(instance.id)).state == InstanceState.TERMINATED
    assert (await provider.create(_request(keeper_uid, "g5.xlarge", "aws-us-east-1"))).id == keeper.id
    assert _node(core, f"simcloud-{keeper.id}") is not None
    assert _node(core, node_name) is None

    await provider.delete(keeper.id)
    wait_for(lambda: _node(core, f"simcloud-{keeper.id}") is None, timeout=30, what="the second Node to go")
    await provider.aclose()
