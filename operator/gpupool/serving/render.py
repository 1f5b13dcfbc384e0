"""Render one model's vLLM Deployment (or LeaderWorkerSet), Service and PodDisruptionBudget as plain dicts.

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

from typing import Any

from gpupool.serving.inputs import RenderError, ServingInput
from gpupool.serving.leaderworkerset import leader_selector_labels, render_leader_worker_set
from gpupool.serving.pod import (
    CONTAINER_NAME,
    GENERATION_ANNOTATION,
    GPU_RESOURCE,
    GPU_TAINT_KEY,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_MODEL_DEPLOYMENT,
    LABEL_NAME,
    MODEL_CACHE_PATH,
    NODE_LABEL_CAPACITY_TYPE,
    NODE_LABEL_GPU,
    NODE_LABEL_POOL,
    OWNER_API_VERSION,
    OWNER_KIND,
    PORT_NAME,
    SPEC_HASH_ANNOTATION,
    object_labels,
    owner_reference,
    selector_labels,
    serving_probes,
    spec_hash,
    vllm_container,
    vllm_env,
    vllm_pod_spec,
)
from gpupool.serving.pod import metadata as _metadata
from gpupool.serving.sizing import startup_budget_seconds, startup_failure_threshold
from gpupool.serving.validate import validate
from gpupool.serving.vllm_args import VLLM_PORT, vllm_args

# The names other modules and tests have always imported from here.
__all__ = [
    "CONTAINER_NAME",
    "GENERATION_ANNOTATION",
    "GPU_RESOURCE",
    "GPU_TAINT_KEY",
    "LABEL_INSTANCE",
    "LABEL_MANAGED_BY",
    "LABEL_MODEL_DEPLOYMENT",
    "LABEL_NAME",
    "MODEL_CACHE_PATH",
    "NODE_LABEL_CAPACITY_TYPE",
    "NODE_LABEL_GPU",
    "NODE_LABEL_POOL",
    "OWNER_API_VERSION",
    "OWNER_KIND",
    "PORT_NAME",
    "SPEC_HASH_ANNOTATION",
    "object_labels",
    "owner_reference",
    "render_all",
    "render_deployment",
    "render_pdb",
    "render_service",
    "selector_labels",
    "selector_string",
    "spec_hash",
    "validate",
]

# A rollout is "stuck" only after the node may have been provisioned (launch timeout plus
# failover), the ~10 GB vLLM image pulled, and the model started: 30 min on top of the
# startup budget, so Progressing=False means something is really wrong.
_PROVISION_AND_PULL_SECONDS = 1800


def selector_string(inp: ServingInput) -> str:
    """The replicas' pods in label-selector syntax, as the scale subresource's `status.selector` wants it.

    For a model whose replicas span nodes these are the groups' leaders: one pod per replica,
    the one that serves, so an autoscaler counts and measures replicas, not nodes.
    """
    return ",".join(f"{key}={value}" for key, value in sorted(_replica_pods(inp).items()))


def render_all(inp: ServingInput) -> list[dict[str, Any]]:
    """The workload, Service and PodDisruptionBudget, in the order to apply them.

    The workload is a Deployment when a replica fits on one node, and a LeaderWorkerSet when it
    spans several (`inp.nodes_per_replica > 1`), one group of pods per replica. The same
    PodDisruptionBudget suits both: it selects every pod of the model, so a drain evicts one
    pod at a time; evicting one pod of a group recreates the whole group, whose pods are then
    not ready, and the budget holds the next eviction until they are. So groups go one at a
    time, and with a single group the eviction is allowed, as for a single replica.
    """
    workload = render_leader_worker_set(inp) if inp.nodes_per_replica > 1 else render_deployment(inp)
    return [workload, render_service(inp), render_pdb(inp)]


def render_deployment(inp: ServingInput) -> dict[str, Any]:
    """The vLLM Deployment. Raises RenderError if the input cannot make a valid one."""
    validate(inp)
    if inp.nodes_per_replica > 1:
        raise RenderError(
            "status.placement",
            f"a replica over {inp.nodes_per_replica} nodes is a LeaderWorkerSet "
            "(render_leader_worker_set), not a Deployment",
        )
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
    """A ClusterIP Service with port `http` 8000 in front of the ready pods that serve."""
    validate(inp)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(inp),
        "spec": {
            "type": "ClusterIP",
            "selector": _replica_pods(inp),
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


def _replica_pods(inp: ServingInput) -> dict[str, str]:
    """The labels of the pods that stand for the replicas, the ones that serve.

    All of them when a replica is one pod; the groups' leaders when it spans nodes (only the
    leader runs vLLM's server, the workers lend it their GPUs).
    """
    return leader_selector_labels(inp) if inp.nodes_per_replica > 1 else selector_labels(inp)


def _pod_spec(inp: ServingInput) -> dict[str, Any]:
    container = vllm_container(
        inp,
        command=["vllm", "serve"],
        args=vllm_args(inp),
        env=vllm_env(inp),
        probes=serving_probes(startup_failures=startup_failure_threshold(inp.model_size_gib)),
    )
    return vllm_pod_spec(inp, container)
