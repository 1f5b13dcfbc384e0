"""The pieces every vLLM pod is made of, whichever workload object carries its template.

A single-node model runs in a Deployment and a multi-node one in a LeaderWorkerSet, but their
pods must agree on everything that is not about the workload: the labels and owner reference,
where they may land (node affinity, tolerations), how secrets reach vLLM, the volumes, the
probes, the shutdown drain and the security settings. Both renderers build their pods from
these functions, so a change here (a toleration, a probe timing) reaches both alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from gpupool.serving.inputs import ServingInput
from gpupool.serving.sizing import (
    STARTUP_PERIOD_SECONDS,
    cpu_request,
    memory_request_gib,
    shm_size_gib,
)
from gpupool.serving.vllm_args import VLLM_PORT

# Labels every object carries. The selector uses only the two that identify the
# ModelDeployment: a Deployment's selector is immutable, so it must never include a label
# whose value could change (a version, the user's labels).
LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_MODEL_DEPLOYMENT = "gpupool.dev/model-deployment"

# Node labels gpupool puts on its GPU nodes (the claim controller sets them at registration).
NODE_LABEL_POOL = "gpupool.dev/pool"
NODE_LABEL_GPU = "gpupool.dev/gpu"
NODE_LABEL_CAPACITY_TYPE = "gpupool.dev/capacity-type"
NODE_LABEL_PROVIDER = "gpupool.dev/provider"
#: The well-known region label; gpupool's nodes carry their offer's region in it.
NODE_LABEL_REGION = "topology.kubernetes.io/region"

#: Short hash of the rendered pod spec, on the pod template.
SPEC_HASH_ANNOTATION = "gpupool.dev/spec-hash"
#: The ModelDeployment generation an object was rendered from (object metadata only).
GENERATION_ANNOTATION = "gpupool.dev/generation"

GPU_RESOURCE = "nvidia.com/gpu"
#: GPU nodes carry `nvidia.com/gpu=present:NoSchedule` so that only GPU workloads land there.
GPU_TAINT_KEY = "nvidia.com/gpu"

OWNER_API_VERSION = "gpupool.dev/v1alpha1"
OWNER_KIND = "ModelDeployment"

CONTAINER_NAME = "vllm"
PORT_NAME = "http"
#: Where the Hugging Face cache lives in the pod (HF_HOME): root's cache dir in the vLLM image.
MODEL_CACHE_PATH = "/root/.cache/huggingface"

# vLLM does not drain on SIGTERM: its launcher cancels the HTTP server task instead of
# letting uvicorn wait for requests in flight (vllm/entrypoints/launcher.py, serve_http's
# signal handler). So the
# drain happens before the signal: a terminating pod leaves the Service's endpoints at once,
# and the preStop sleep keeps vLLM serving what it already accepted. 30 s covers a typical
# streamed completion (~1k tokens at 30-50 tokens/s); the grace period adds 30 s for the
# engine and its tensor-parallel workers to exit before SIGKILL.
PRESTOP_SLEEP_SECONDS = 30
TERMINATION_GRACE_SECONDS = 60


def selector_labels(inp: ServingInput) -> dict[str, str]:
    """The labels that select every pod of this model (the workload's and the PDB's selector)."""
    return {LABEL_INSTANCE: inp.name, LABEL_MODEL_DEPLOYMENT: inp.name}


def object_labels(inp: ServingInput) -> dict[str, str]:
    """Labels for every rendered object and pod: the user's, then gpupool's (which win)."""
    labels = dict(sorted(inp.labels.items()))
    labels.update(
        {
            LABEL_NAME: "vllm",
            LABEL_INSTANCE: inp.name,
            LABEL_MANAGED_BY: "gpupool",
            LABEL_MODEL_DEPLOYMENT: inp.name,
        }
    )
    return labels


def owner_reference(inp: ServingInput) -> dict[str, Any]:
    """The reference that makes the ModelDeployment own (and garbage-collect) an object."""
    return {
        "apiVersion": OWNER_API_VERSION,
        "kind": OWNER_KIND,
        "name": inp.name,
        "uid": inp.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(inp: ServingInput) -> dict[str, Any]:
    """Object metadata of every rendered object: named after the model, labelled, owned."""
    return {
        "name": inp.name,
        "namespace": inp.namespace,
        "labels": object_labels(inp),
        "annotations": {GENERATION_ANNOTATION: str(inp.generation)},
        "ownerReferences": [owner_reference(inp)],
    }


def spec_hash(pod_spec: Mapping[str, Any]) -> str:
    """A short, stable hash of a pod spec: sorted-key JSON, SHA-256, first 10 hex digits."""
    canonical = json.dumps(pod_spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def vllm_pod_spec(
    inp: ServingInput, container: dict[str, Any], *, pod_affinity: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A vLLM pod around one container: placement, hygiene and volumes as every pod has them."""
    affinity: dict[str, Any] = {"nodeAffinity": node_affinity(inp)}
    if pod_affinity is not None:
        affinity["podAffinity"] = pod_affinity
    return {
        # vLLM never calls the Kubernetes API: no token to steal from a model server.
        "automountServiceAccountToken": False,
        # Kubernetes injects `<SERVICE>_PORT`-style variables for every Service in the
        # namespace; a Service named `vllm` would set VLLM_PORT, which vLLM reads for its own
        # internal use and then fails (vLLM docs, "Environment Variables").
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "affinity": affinity,
        "tolerations": tolerations(inp),
        "containers": [container],
        "volumes": volumes(inp),
    }


def vllm_container(
    inp: ServingInput,
    *,
    command: list[str],
    args: list[str],
    env: list[dict[str, Any]],
    probes: dict[str, Any] | None,
) -> dict[str, Any]:
    """The container of one pod, sized for `inp.gpus_per_replica` GPUs.

    `probes` (from `serving_probes`) also opens the `http` port: a pod that serves has both,
    a pod that only lends its GPUs to another pod's engine (a Ray worker) has neither.
    """
    gpus = str(inp.gpus_per_replica)
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": inp.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "args": args,
        "env": env,
    }
    if probes is not None:
        container["ports"] = [{"name": PORT_NAME, "containerPort": VLLM_PORT, "protocol": "TCP"}]
    container["resources"] = {
        # Extended resources must have limit == request; CPU and memory get requests only
        # (see sizing.py for why there are no limits).
        "requests": {
            "cpu": cpu_request(inp),
            "memory": f"{memory_request_gib(inp)}Gi",
            GPU_RESOURCE: gpus,
        },
        "limits": {GPU_RESOURCE: gpus},
    }
    container["volumeMounts"] = [
        {"name": "shm", "mountPath": "/dev/shm"},
        {"name": "model-cache", "mountPath": MODEL_CACHE_PATH},
    ]
    if probes is not None:
        container.update(probes)
    container["lifecycle"] = {"preStop": {"sleep": {"seconds": PRESTOP_SLEEP_SECONDS}}}
    # The vLLM image runs as root and writes its caches (Hugging Face, torch.compile,
    # Triton, FlashInfer JIT) under /root and /tmp, so runAsNonRoot and a read-only root
    # filesystem would break it. What it does not need is any Linux capability or a way
    # to gain privileges: the GPU devices come from the device plugin, not from caps.
    container["securityContext"] = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
    }
    return container


def serving_probes(*, startup_failures: int) -> dict[str, Any]:
    """Startup, readiness and liveness on vLLM's `/health`, for the pod that serves."""
    return {
        # The startup probe holds the other two off until the model is loaded; its budget
        # grows with the weights (sizing.startup_budget_seconds).
        "startupProbe": _health_probe(period=STARTUP_PERIOD_SECONDS, failures=startup_failures, timeout=5),
        "readinessProbe": _health_probe(period=5, failures=3, timeout=5),
        # A loaded engine answers /health in milliseconds; allow a long timeout anyway, since
        # a saturated server is slow, not dead, and restarting it costs a full model load.
        "livenessProbe": _health_probe(period=15, failures=3, timeout=10),
    }


def _health_probe(*, period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": PORT_NAME},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def vllm_env(
    inp: ServingInput, *, api_key: bool = True, extra: tuple[tuple[str, str], ...] = ()
) -> list[dict[str, Any]]:
    """The container's environment; `api_key=False` for a pod that serves no HTTP."""
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": MODEL_CACHE_PATH},
        # A platform's model servers should not report usage to a third party by default.
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
    ]
    env += [{"name": name, "value": value} for name, value in extra]
    if inp.hf_token_secret is not None:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": inp.hf_token_secret.name, "key": inp.hf_token_secret.key}
                },
            }
        )
    if api_key and inp.api_key_secret is not None:
        env.append(
            {
                "name": "VLLM_API_KEY",
                "valueFrom": {
                    "secretKeyRef": {"name": inp.api_key_secret.name, "key": inp.api_key_secret.key}
                },
            }
        )
    return env


def volumes(inp: ServingInput) -> list[dict[str, Any]]:
    """The memory-backed /dev/shm and the model cache (the PVC if any, else an emptyDir)."""
    # Without a PVC the cache is an emptyDir rather than the container's filesystem, so a
    # container restart (liveness failure, OOM) reloads from local disk instead of
    # downloading the weights again.
    cache: dict[str, Any] = (
        {"persistentVolumeClaim": {"claimName": inp.model_cache_pvc}}
        if inp.model_cache_pvc
        else {"emptyDir": {}}
    )
    return [
        {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{shm_size_gib(inp)}Gi"}},
        {"name": "model-cache", **cache},
    ]


def node_affinity(inp: ServingInput) -> dict[str, Any]:
    """Required: the pool's nodes, of a planned GPU type, of the spec's capacity type if any."""
    # Sorted and deduplicated: the plan may list the same GPU types in another order, which
    # must not change the pod spec and roll every pod.
    expressions: list[dict[str, Any]] = [
        {"key": NODE_LABEL_POOL, "operator": "In", "values": [inp.pool_name]},
        {"key": NODE_LABEL_GPU, "operator": "In", "values": sorted(set(inp.gpu_types))},
    ]
    if inp.capacity_type is not None:
        expressions.append({"key": NODE_LABEL_CAPACITY_TYPE, "operator": "In", "values": [inp.capacity_type]})
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": expressions}]
        }
    }


def tolerations(inp: ServingInput) -> list[dict[str, Any]]:
    """The GPU taint, whatever its value, and every taint of the pool."""
    # Exists, not Equal "present": providers disagree on the value (present, true, "").
    result: list[dict[str, Any]] = [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
    for taint in inp.pool_taints:
        toleration: dict[str, Any] = (
            {"key": taint.key, "operator": "Equal", "value": taint.value, "effect": taint.effect}
            if taint.value
            else {"key": taint.key, "operator": "Exists", "effect": taint.effect}
        )
        if toleration not in result:
            result.append(toleration)
    return result
