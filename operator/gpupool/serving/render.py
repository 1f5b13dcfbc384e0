"""Render one model's vLLM Deployment, Service and PodDisruptionBudget as plain dicts.

The output is what the controller server-side-applies: deterministic (same input, same
bytes), so a re-apply with nothing changed is a no-op, and nothing in the pod template
depends on anything but the serving shape. In particular the generation and the replica
count stay out of it, so scaling never rolls pods; only a change of the pod spec does, and
the `gpupool.dev/spec-hash` annotation makes that change visible on every pod.

Choices a platform team would ask about, each explained where it is made:
rollouts surge one pod and never drop one (GPU capacity is the scarce thing); the
PodDisruptionBudget allows one eviction at a time even for a single replica, so it never
wedges node drains or consolidation; the pod runs as root because the vLLM image does, but
with no capabilities, no privilege escalation, no service-account token and no service links.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from gpupool.serving.inputs import RenderError, ServingInput
from gpupool.serving.sizing import (
    STARTUP_PERIOD_SECONDS,
    cpu_request,
    memory_request_gib,
    shm_size_gib,
    startup_budget_seconds,
    startup_failure_threshold,
)
from gpupool.serving.vllm_args import VLLM_PORT, vllm_args

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
_PRESTOP_SLEEP_SECONDS = 30
_TERMINATION_GRACE_SECONDS = 60
# A rollout is "stuck" only after the node may have been provisioned (launch timeout plus
# failover), the ~10 GB vLLM image pulled, and the model started: 30 min on top of the
# startup budget, so Progressing=False means something is really wrong.
_PROVISION_AND_PULL_SECONDS = 1800

# A Service name must be a DNS-1035 label, stricter than a ModelDeployment name
# (DNS-1123 subdomain): no dots, no leading digit.
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def selector_labels(inp: ServingInput) -> dict[str, str]:
    """The labels that select this model's pods; also the ModelDeployment's `status.selector`."""
    return {LABEL_INSTANCE: inp.name, LABEL_MODEL_DEPLOYMENT: inp.name}


def selector_string(inp: ServingInput) -> str:
    """The pod selector in label-selector syntax, as the scale subresource's `status.selector` wants it."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(inp).items()))


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


def render_all(inp: ServingInput) -> list[dict[str, Any]]:
    """Deployment, Service and PodDisruptionBudget, in the order to apply them."""
    return [render_deployment(inp), render_service(inp), render_pdb(inp)]


def render_deployment(inp: ServingInput) -> dict[str, Any]:
    """The vLLM Deployment. Raises RenderError if the input cannot make a valid one."""
    validate(inp)
    pod_spec = _pod_spec(inp)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(inp),
        "spec": {
            "replicas": inp.replicas,
            "selector": {"matchLabels": selector_labels(inp)},
            # A spec change brings a new pod up before an old one goes: capacity never drops,
            # at the price of one extra replica's GPUs for the length of the rollout.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": startup_budget_seconds(inp.model_size_gib)
            + _PROVISION_AND_PULL_SECONDS,
            "template": {
                "metadata": {
                    "labels": object_labels(inp),
                    "annotations": {SPEC_HASH_ANNOTATION: spec_hash(pod_spec)},
                },
                "spec": pod_spec,
            },
        },
    }


def render_service(inp: ServingInput) -> dict[str, Any]:
    """A ClusterIP Service with port `http` 8000 in front of the ready pods."""
    validate(inp)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(inp),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(inp),
            "ports": [
                {
                    "name": PORT_NAME,
                    "port": VLLM_PORT,
                    "targetPort": PORT_NAME,
                    "protocol": "TCP",
                    "appProtocol": "http",
                }
            ],
        },
    }


def render_pdb(inp: ServingInput) -> dict[str, Any]:
    """A PodDisruptionBudget allowing one voluntary eviction at a time, whatever the replicas.

    With several replicas it keeps drains and consolidation to one pod at a time. With one
    replica it still allows the eviction: `minAvailable: 1` there would block every drain of
    the node forever, wedging consolidation, spot replacement and upgrades on a pod that is
    down during any disruption anyway. The object always exists, so scaling 1 <-> N never
    creates or deletes one. `AlwaysAllow` lets a pod that is not ready (still loading, or
    crash-looping) be evicted: it serves nothing, and must not hold a node hostage.
    """
    validate(inp)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(inp),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(inp)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def spec_hash(pod_spec: Mapping[str, Any]) -> str:
    """A short, stable hash of a pod spec: sorted-key JSON, SHA-256, first 10 hex digits."""
    canonical = json.dumps(pod_spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:10]


def validate(inp: ServingInput) -> None:
    """Raise RenderError, naming the spec field, for input no valid object could be made from."""
    if len(inp.name) > 63 or not _DNS1035_LABEL.match(inp.name):
        raise RenderError(
            "metadata.name",
            f"{inp.name!r} must be a DNS-1035 label (lower-case letters, digits and '-', "
            "starting with a letter, at most 63 characters) to name the model's Service",
        )
    if not inp.model.strip():
        raise RenderError("spec.model", "a Hugging Face model id is required")
    if not inp.gpu_types:
        raise RenderError("spec.gpu.types", "no GPU type is allowed for this model; the plan chose none")
    if inp.replicas < 0:
        raise RenderError("spec.replicas", f"must not be negative, got {inp.replicas}")
    if inp.gpus_per_replica < 1:
        raise RenderError("spec.gpu.count", f"must be at least 1, got {inp.gpus_per_replica}")
    tp = inp.tensor_parallel_size
    if tp < 1 or inp.gpus_per_replica % tp != 0:
        raise RenderError(
            "spec.engine.tensorParallelSize",
            f"{tp} must be at least 1 and divide the {inp.gpus_per_replica} GPUs of a replica",
        )
    if inp.max_model_len < 1:
        raise RenderError("spec.engine.maxModelLen", f"must be at least 1, got {inp.max_model_len}")
    if not 0.0 < inp.gpu_memory_utilization <= 1.0:
        raise RenderError(
            "spec.engine.gpuMemoryUtilization", f"must be in (0, 1], got {inp.gpu_memory_utilization}"
        )
    if inp.max_num_seqs is not None and inp.max_num_seqs < 1:
        raise RenderError("spec.engine.maxNumSeqs", f"must be at least 1, got {inp.max_num_seqs}")


def _metadata(inp: ServingInput) -> dict[str, Any]:
    return {
        "name": inp.name,
        "namespace": inp.namespace,
        "labels": object_labels(inp),
        "annotations": {GENERATION_ANNOTATION: str(inp.generation)},
        "ownerReferences": [owner_reference(inp)],
    }


def _pod_spec(inp: ServingInput) -> dict[str, Any]:
    return {
        # vLLM never calls the Kubernetes API: no token to steal from a model server.
        "automountServiceAccountToken": False,
        # Kubernetes injects `<SERVICE>_PORT`-style variables for every Service in the
        # namespace; a Service named `vllm` would set VLLM_PORT, which vLLM reads for its own
        # internal use and then fails (vLLM docs, "Environment Variables").
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": _TERMINATION_GRACE_SECONDS,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "affinity": {"nodeAffinity": _node_affinity(inp)},
        "tolerations": _tolerations(inp),
        "containers": [_container(inp)],
        "volumes": _volumes(inp),
    }


def _container(inp: ServingInput) -> dict[str, Any]:
    gpus = str(inp.gpus_per_replica)
    return {
        "name": CONTAINER_NAME,
        "image": inp.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["vllm", "serve"],
        "args": vllm_args(inp),
        "env": _env(inp),
        "ports": [{"name": PORT_NAME, "containerPort": VLLM_PORT, "protocol": "TCP"}],
        "resources": {
            # Extended resources must have limit == request; CPU and memory get requests only
            # (see sizing.py for why there are no limits).
            "requests": {
                "cpu": cpu_request(inp),
                "memory": f"{memory_request_gib(inp)}Gi",
                GPU_RESOURCE: gpus,
            },
            "limits": {GPU_RESOURCE: gpus},
        },
        "volumeMounts": [
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "model-cache", "mountPath": MODEL_CACHE_PATH},
        ],
        # The startup probe holds the other two off until the model is loaded; its budget
        # grows with the weights (sizing.startup_budget_seconds).
        "startupProbe": _health_probe(
            period=STARTUP_PERIOD_SECONDS,
            failures=startup_failure_threshold(inp.model_size_gib),
            timeout=5,
        ),
        "readinessProbe": _health_probe(period=5, failures=3, timeout=5),
        # A loaded engine answers /health in milliseconds; allow a long timeout anyway, since
        # a saturated server is slow, not dead, and restarting it costs a full model load.
        "livenessProbe": _health_probe(period=15, failures=3, timeout=10),
        "lifecycle": {"preStop": {"sleep": {"seconds": _PRESTOP_SLEEP_SECONDS}}},
        # The vLLM image runs as root and writes its caches (Hugging Face, torch.compile,
        # Triton, FlashInfer JIT) under /root and /tmp, so runAsNonRoot and a read-only root
        # filesystem would break it. What it does not need is any Linux capability or a way
        # to gain privileges: the GPU devices come from the device plugin, not from caps.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def _health_probe(*, period: int, failures: int, timeout: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/health", "port": PORT_NAME},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": timeout,
    }


def _env(inp: ServingInput) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "HF_HOME", "value": MODEL_CACHE_PATH},
        # A platform's model servers should not report usage to a third party by default.
        {"name": "VLLM_NO_USAGE_STATS", "value": "1"},
    ]
    if inp.hf_token_secret is not None:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {"name": inp.hf_token_secret.name, "key": inp.hf_token_secret.key}
                },
            }
        )
    if inp.api_key_secret is not None:
        env.append(
            {
                "name": "VLLM_API_KEY",
                "valueFrom": {
                    "secretKeyRef": {"name": inp.api_key_secret.name, "key": inp.api_key_secret.key}
                },
            }
        )
    return env


def _volumes(inp: ServingInput) -> list[dict[str, Any]]:
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


def _node_affinity(inp: ServingInput) -> dict[str, Any]:
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


def _tolerations(inp: ServingInput) -> list[dict[str, Any]]:
    # Exists, not Equal "present": providers disagree on the value (present, true, "").
    tolerations: list[dict[str, Any]] = [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
    for taint in inp.pool_taints:
        toleration: dict[str, Any] = (
            {"key": taint.key, "operator": "Equal", "value": taint.value, "effect": taint.effect}
            if taint.value
            else {"key": taint.key, "operator": "Exists", "effect": taint.effect}
        )
        if toleration not in tolerations:
            tolerations.append(toleration)
    return tolerations
