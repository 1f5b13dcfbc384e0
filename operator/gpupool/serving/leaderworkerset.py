"""Render a model whose replica spans several nodes as a LeaderWorkerSet (leaderworkerset.x-k8s.io/v1).

When no single instance holds a model, the planner splits each replica into
`nodes_per_replica` pods on as many nodes: tensor parallel within a node (over its NVLink),
one pipeline stage per node (only activations cross the network between stages). A Deployment
cannot express that: the pods of a replica must start together, know each other's addresses,
land in one place, and fail together. LeaderWorkerSet (kubernetes-sigs/lws) does exactly that,
and it is what vLLM documents for multi-node serving on Kubernetes (vLLM docs,
deployment/frameworks/lws.md): one group per replica, a leader and `size - 1` workers,
`LWS_LEADER_ADDRESS` and `LWS_GROUP_SIZE` injected into every pod, and the whole group
recreated when any of its pods restarts.

The launch is vLLM's documented one (examples/online_serving/multi-node-serving.sh): the leader
starts a Ray head, waits until every node of the group has joined, then runs `vllm serve` with
the Ray executor; each worker joins the leader's Ray cluster and blocks. It is written out
here rather than calling that script, so the pod does not depend on where an image keeps
vLLM's examples (`spec.engine.image` may name any vLLM image, as for the Deployment) and does
not give up after the script's five minutes while a worker's node is still being bought.

The pods are built from the same pieces as the Deployment's (pod.py): labels, owner, node
affinity, tolerations, secrets, volumes, probes, drain and security settings. The cluster must
have LWS installed; the operator does not install it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from gpupool.serving.inputs import RenderError, ServingInput
from gpupool.serving.pod import (
    NODE_LABEL_PROVIDER,
    NODE_LABEL_REGION,
    SPEC_HASH_ANNOTATION,
    metadata,
    object_labels,
    selector_labels,
    serving_probes,
    spec_hash,
    vllm_container,
    vllm_env,
    vllm_pod_spec,
)
from gpupool.serving.sizing import STARTUP_PERIOD_SECONDS, startup_budget_seconds
from gpupool.serving.validate import validate
from gpupool.serving.vllm_args import vllm_args

LWS_API_VERSION = "leaderworkerset.x-k8s.io/v1"
LWS_KIND = "LeaderWorkerSet"
#: LWS labels every pod of a group with its index in the group; the leader's is "0".
LWS_WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
#: LWS labels every pod of a group with one hash unique to that group.
LWS_GROUP_KEY_LABEL = "leaderworkerset.sigs.k8s.io/group-key"

#: The Ray head's port on the leader (Ray's default, as in vLLM's script).
RAY_PORT = 6379
# Ray, like vLLM, reports usage to a third party unless told not to.
_RAY_ENV = (("RAY_USAGE_STATS_ENABLED", "0"),)

# The leader's startup probe starts counting when its own container starts, but vLLM can only
# load once every worker has joined. A worker's node is bought in the same batch as the
# leader's, yet may come up later (a failover to the next offer after a capacity error) and
# then pulls its own ~10 GB image: 10 min on top of the single-node budget.
_GROUP_JOIN_SECONDS = 600

# vLLM's Ray executor gives up on a shape that needs more GPUs than the Ray cluster has (at
# once in older releases, after PG_WAIT_TIMEOUT, 30 min, in newer ones: vllm/executor/
# ray_utils.py), so the leader starts it only once every pod of the group has joined, as
# vLLM's script does. No deadline of its own: the startup probe bounds the wait, and a leader
# restart recreates the whole group.
_GROUP_JOINED = (
    'import os, ray; ray.init(address="auto", logging_level="ERROR"); '
    'raise SystemExit(sum(n["Alive"] for n in ray.nodes()) < int(os.environ["LWS_GROUP_SIZE"]))'
)
# The vLLM arguments come after the script as "$@", never spliced into it: a model id or an
# extra argument can hold nothing the shell would interpret.
LEADER_SCRIPT = (
    "set -eu\n"
    ': "${LWS_GROUP_SIZE:?is set by the LeaderWorkerSet controller}"\n'
    f"ray start --head --port={RAY_PORT}\n"
    f"until python3 -c '{_GROUP_JOINED}'; do\n"
    '  echo "waiting for the $LWS_GROUP_SIZE nodes of the group to join the Ray cluster"; sleep 5\n'
    "done\n"
    'exec vllm serve "$@"\n'
)
# A worker may start before the leader's Ray head listens (its node came up first): retry
# until it joins, rather than exit and have the restart recreate the whole group.
WORKER_SCRIPT = (
    "set -eu\n"
    ': "${LWS_LEADER_ADDRESS:?is set by the LeaderWorkerSet controller}"\n'
    f'until ray start --address="$LWS_LEADER_ADDRESS:{RAY_PORT}" --block; do\n'
    f'  echo "waiting for the Ray head at $LWS_LEADER_ADDRESS:{RAY_PORT}"; sleep 5\n'
    "done\n"
)


def render_leader_worker_set(inp: ServingInput) -> dict[str, Any]:
    """The LeaderWorkerSet of a model whose replicas span `inp.nodes_per_replica` nodes.

    One group per replica; each pod requests `inp.tensor_parallel_size` GPUs. Raises
    RenderError if the input cannot make a valid one (or is a single-node shape).
    """
    validate(inp)
    if inp.nodes_per_replica < 2:
        raise RenderError(
            "status.placement",
            "a replica on one node is a Deployment (render_deployment), not a LeaderWorkerSet",
        )
    leader, worker = _leader_pod_spec(inp), _worker_pod_spec(inp)
    # One hash for the group, on both templates: LWS rolls a group as a whole when either
    # template changes, so every pod shows the revision of the group it belongs to.
    group_hash = spec_hash({"leader": leader, "worker": worker})
    return {
        "apiVersion": LWS_API_VERSION,
        "kind": LWS_KIND,
        "metadata": metadata(inp),
        "spec": {
            "replicas": inp.replicas,
            "leaderWorkerTemplate": {
                "size": inp.nodes_per_replica,
                # The group shares one engine: a lost pod (worker or leader) leaves the others
                # with a broken pipeline, so any pod restart recreates the whole group.
                # vLLM's documented policy, and LWS's default.
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": _template(inp, leader, group_hash),
                "workerTemplate": _template(inp, worker, group_hash),
            },
            # As the Deployment: a new group comes up before an old one goes, so serving
            # capacity never drops, at the price of one extra group's nodes for the rollout.
            "rolloutStrategy": {
                "type": "RollingUpdate",
                "rollingUpdateConfiguration": {"maxUnavailable": 0, "maxSurge": 1},
            },
            # Workers are created with their leader, not once it is ready: it is ready only
            # after they joined. The whole group is pending at once, so the pool controller
            # buys its nodes in one batch.
            "startupPolicy": "LeaderCreated",
            # `Shared` would make LWS create a headless Service named after the set, which is
            # the name of the model's own Service; one per group is named `<name>-<group>`.
            "networkConfig": {"subdomainPolicy": "UniquePerReplica"},
        },
    }


def leader_selector_labels(inp: ServingInput) -> dict[str, str]:
    """The labels of this model's group leaders: the pods that serve, one per replica."""
    return {**selector_labels(inp), LWS_WORKER_INDEX_LABEL: "0"}


def _template(inp: ServingInput, pod_spec: dict[str, Any], group_hash: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": object_labels(inp), "annotations": {SPEC_HASH_ANNOTATION: group_hash}},
        "spec": pod_spec,
    }


def _node_share(inp: ServingInput) -> ServingInput:
    """The input as one pod of the group sees it: one node's GPUs, the tensor-parallel ranks.

    The pod pieces size CPU, memory and the GPU request from `gpus_per_replica`; for a pod of
    a group that is its node's share, not the whole replica's.
    """
    return dataclasses.replace(inp, gpus_per_replica=inp.tensor_parallel_size)


def _leader_pod_spec(inp: ServingInput) -> dict[str, Any]:
    node = _node_share(inp)
    budget = startup_budget_seconds(inp.model_size_gib) + _GROUP_JOIN_SECONDS
    container = vllm_container(
        node,
        # `sh -c SCRIPT NAME ARGS...`: NAME is the script's $0, the vLLM arguments its "$@".
        command=["sh", "-c", LEADER_SCRIPT, "gpupool-leader"],
        args=vllm_args(inp),
        env=vllm_env(node, extra=_RAY_ENV),
        probes=serving_probes(startup_failures=math.ceil(budget / STARTUP_PERIOD_SECONDS)),
    )
    return vllm_pod_spec(node, container, pod_affinity=_group_affinity(inp))


def _worker_pod_spec(inp: ServingInput) -> dict[str, Any]:
    node = _node_share(inp)
    container = vllm_container(
        node,
        command=["sh", "-c", WORKER_SCRIPT],
        args=["gpupool-worker"],
        # A worker serves no HTTP: the API key stays with the leader. It still needs the
        # Hugging Face token, to download the weights of its own pipeline stage.
        env=vllm_env(node, api_key=False, extra=_RAY_ENV),
        # No probes: a worker has no endpoint of its own. If it dies, the leader's engine
        # fails its /health, and the group is recreated.
        probes=None,
    )
    # Workers keep the leader's preStop drain: the leader serves the requests it already
    # accepted for 30 s after a scale-down or rollout begins, and needs its pipeline
    # stages for that.
    return vllm_pod_spec(node, container, pod_affinity=_group_affinity(inp))


def _group_affinity(inp: ServingInput) -> dict[str, Any]:
    """Required pod affinity: every pod of a group on nodes of one provider and one region.

    LWS documents `leaderworkerset.sigs.k8s.io/exclusive-topology` for keeping a group in one
    topology domain, but that placement is exclusive: with the affinity it injects comes an
    anti-affinity that keeps every other group (of any LeaderWorkerSet in the namespace) out of
    the domain. The domain here is a provider's region, so a second replica could never share
    the cheapest region with the first. This is the same affinity without the exclusivity.
    `matchLabelKeys` narrows the selector to the pod's own group: the API server adds the
    pod's value of LWS's group-key label (set on every pod of a group at creation) when the
    pod is created. The first pod of a group matches its own terms, so it may go wherever
    the node affinity allows; the others follow it. Provider and region are two terms (both
    must hold) because a region's name is only the provider's (us-east-1 at AWS and at
    Lambda are not one place).
    """
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {
                "labelSelector": {"matchLabels": selector_labels(inp)},
                "matchLabelKeys": [LWS_GROUP_KEY_LABEL],
                "topologyKey": key,
            }
            for key in (NODE_LABEL_PROVIDER, NODE_LABEL_REGION)
        ]
    }
