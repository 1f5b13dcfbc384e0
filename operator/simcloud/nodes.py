"""What a simcloud machine looks like inside the cluster: a KWOK Node, and the one seam that writes it.

A real GPU machine joins the cluster by running its bootstrap script, and its kubelet registers a
Node with the GPU capacity the device plugin reports. simcloud plays both parts: once an instance
has booted it creates the Node itself, annotated for KWOK (which then acts as its kubelet: marks it
Ready, runs the pods bound to it), with the labels, taint, capacity and `spec.providerID` a real
node of that shape would have. `render_node` is pure, so the shape is tested without a cluster.

`NodeWriter` is the only place simcloud touches Kubernetes. The production writer uses the
official client; `MemoryNodeWriter` keeps Nodes in a dict, for unit tests of the HTTP behaviour and
for running simcloud with no cluster (`--no-kube`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from simcloud.store import SimInstance

log = logging.getLogger(__name__)

INSTANCE_ID_LABEL = "simcloud.dev/instance-id"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
DEFAULT_PROVIDER_LABEL = "simcloud"
# Every simcloud machine has a root disk of this size (its offers publish it as diskGiB).
DISK_GIB = 500

_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_VALUE_RE = re.compile(rf"^({_NAME})?$")
_NAME_RE = re.compile(rf"^{_NAME}$")
_PREFIX_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Names the machine ids of simcloud's instances (any fixed UUID would do).
_MACHINE_NAMESPACE = uuid.UUID("5c1d0e6a-5a0c-4f39-9f0e-6a8d0c1b2a3f")


def is_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _PREFIX_RE.match(prefix)):
        return False
    return len(name) <= 63 and bool(_NAME_RE.match(name))


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(_VALUE_RE.match(value))


def node_labels(instance: SimInstance) -> dict[str, str]:
    """The Node's labels: the well-known ones, gpupool's, then the launch tags that are valid labels
    (the operator passes the pool and claim labels that way). The well-known labels win."""
    tags = {k: v for k, v in instance.tags.items() if is_label_key(k) and is_label_value(v)}
    provider = tags.get("gpupool.dev/provider", DEFAULT_PROVIDER_LABEL)
    arch = "arm64" if instance.cpu_arch in ("arm64", "aarch64") else "amd64"
    well_known = {
        "kubernetes.io/hostname": instance.node_name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "node.kubernetes.io/instance-type": instance.instance_type,
        "topology.kubernetes.io/region": instance.region,
        "topology.kubernetes.io/zone": instance.zone or instance.region,
        "gpupool.dev/gpu": instance.gpu,
        "gpupool.dev/gpu-count": str(instance.gpu_count),
        "gpupool.dev/capacity-type": instance.capacity_type,
        "gpupool.dev/provider": provider,
        "type": "kwok",
        INSTANCE_ID_LABEL: instance.id,
    }
    return {**tags, **{k: v for k, v in well_known.items() if is_label_value(v)}}


def machine_ids(instance_id: str) -> tuple[str, str]:
    """The machine-id and SMBIOS UUID the machine's kubelet reports (`nodeInfo.machineID`,
    `nodeInfo.systemUUID`), the same for an instance on every render (simcloud restarts re-render).

    Shaped as a real machine's: 32 hex digits, and a dashed UUID. Never the instance id, and
    never text that YAML reads as a number: KWOK's node-initialize stage writes these fields
    into YAML unquoted, and a value like "524397420553" or "123456789e12" (about one 12-hex
    instance id in 220) fails that stage, so the Node never gets a condition and never turns
    Ready. A dashed UUID is never a YAML number; a machine-id that starts with a letter is not.
    """
    machine = uuid.uuid5(_MACHINE_NAMESPACE, instance_id)
    return "f" + machine.hex[1:], str(machine)


def render_node(instance: SimInstance) -> dict[str, Any]:
    """The Node manifest of a booted instance (status included: the API server keeps a Node's
    status on create, which is how KWOK nodes get their capacity)."""
    resources = {
        "cpu": str(instance.vcpus),
        "memory": f"{round(instance.memory_gib * 1024)}Mi",
        "pods": "110",
        GPU_RESOURCE: str(instance.gpu_count),
        "ephemeral-storage": f"{DISK_GIB}Gi",
    }
    taints = [dict(GPU_TAINT)]
    taints += [{"key": k, "value": v, "effect": e} for k, v, e in instance.taints if k != GPU_RESOURCE]
    machine_id, system_uuid = machine_ids(instance.id)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": instance.node_name,
            "labels": node_labels(instance),
            "annotations": {
                KWOK_ANNOTATION: "fake",
                "node.alpha.kubernetes.io/ttl": "0",
                "simcloud.dev/offer": instance.offer_key,
                "simcloud.dev/price-per-hour": f"{instance.price_per_hour:g}",
            },
        },
        "spec": {"providerID": instance.provider_id, "taints": taints},
        "status": {
            "capacity": resources,
            "allocatable": dict(resources),
            "nodeInfo": {
                "architecture": node_labels(instance)["kubernetes.io/arch"],
                "operatingSystem": "linux",
                "kubeletVersion": "fake",
                "kubeProxyVersion": "fake",
                "containerRuntimeVersion": "kwok",
                "osImage": "simcloud",
                "kernelVersion": "simcloud",
                "bootID": "",
                "machineID": machine_id,
                "systemUUID": system_uuid,
            },
            "phase": "Running",
        },
    }


class NodeWriter(Protocol):
    """Creates and deletes the Nodes of simcloud machines. Both calls are idempotent."""

    async def ensure_node(self, manifest: Mapping[str, Any]) -> None: ...

    async def delete_node(self, name: str) -> None: ...


class MemoryNodeWriter:
    """Nodes in a dict: for unit tests of the HTTP API and `--no-kube` runs."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}

    async def ensure_node(self, manifest: Mapping[str, Any]) -> None:
        self.nodes.setdefault(manifest["metadata"]["name"], dict(manifest))

    async def delete_node(self, name: str) -> None:
        self.nodes.pop(name, None)


class KubeNodeWriter:
    """Writes Nodes through the official Kubernetes client (blocking calls run in a thread)."""

    def __init__(self, kubeconfig: str | None = None, *, api_client: Any = None) -> None:
        from kubernetes import client, config

        if api_client is None:
            if kubeconfig:
                api_client = config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
            else:
                try:
                    config.load_incluster_config()  # type: ignore[no-untyped-call]
                except config.ConfigException:
                    config.load_kube_config()  # type: ignore[no-untyped-call]
                api_client = client.ApiClient()
        self._core = client.CoreV1Api(api_client)

    def _create(self, manifest: Mapping[str, Any]) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            # The client serializes plain dicts as they are; a V1Node would add nothing here.
            self._core.create_node(body=dict(manifest))  # type: ignore[arg-type]
        except ApiException as error:
            if error.status != 409:
                raise

    def _delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._core.delete_node(name=name)
        except ApiException as error:
            if error.status != 404:
                raise

    async def ensure_node(self, manifest: Mapping[str, Any]) -> None:
        await asyncio.to_thread(self._create, manifest)

    async def delete_node(self, name: str) -> None:
        await asyncio.to_thread(self._delete, name)
