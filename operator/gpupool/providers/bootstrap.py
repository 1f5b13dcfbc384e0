"""The node bootstrap: the user data that turns a rented machine into a Node of this cluster.

A GpuProvider carries `bootstrap.userDataTemplate`; the claim controller renders it once per claim
and passes the result as `LaunchRequest.user_data`, which each cloud runs at first boot (Lambda:
cloud-init user data; RunPod: the container command; simcloud: stored, since simcloud registers the
Node itself). Rendering is pure and uses `string.Template` with `${GPUPOOL_*}` names only, so the
`$VARS` of the shell script itself pass through untouched and an unknown placeholder stays visible
instead of silently becoming empty.

Variables: GPUPOOL_CLUSTER_NAME, GPUPOOL_CLAIM_NAME, GPUPOOL_CLAIM_UID, GPUPOOL_NODE_LABELS
(`k=v,k=v`), GPUPOOL_NODE_TAINTS (`k=v:Effect,...`), GPUPOOL_INSTANCE_TYPE, GPUPOOL_REGION, plus
whatever the caller adds (the join endpoint and credentials: GPUPOOL_API_SERVER, GPUPOOL_JOIN_TOKEN,
GPUPOOL_CA_CERT_HASH in the default template). The rendered script holds a join token: it is a
secret, and LaunchRequest's repr never prints it.
"""

from __future__ import annotations

from collections.abc import Mapping
from string import Template

from gpupool.planner.scheduling import node_taints
from gpupool.providers.base import LaunchRequest

DEFAULT_USER_DATA_TEMPLATE = """#!/bin/bash
# gpupool node bootstrap: joins this machine to ${GPUPOOL_CLUSTER_NAME} as the node of claim
# ${GPUPOOL_CLAIM_NAME} (${GPUPOOL_INSTANCE_TYPE} in ${GPUPOOL_REGION}).
set -euo pipefail
cat > /etc/kubernetes/gpupool-join.yaml <<'YAML'
apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: "${GPUPOOL_API_SERVER}"
    token: "${GPUPOOL_JOIN_TOKEN}"
    caCertHashes: ["${GPUPOOL_CA_CERT_HASH}"]
nodeRegistration:
  kubeletExtraArgs:
    - name: node-labels
      value: "${GPUPOOL_NODE_LABELS}"
    - name: register-with-taints
      value: "${GPUPOOL_NODE_TAINTS}"
YAML
kubeadm join --config /etc/kubernetes/gpupool-join.yaml
"""


def bootstrap_variables(request: LaunchRequest) -> dict[str, str]:
    """The template variables that come from the claim itself."""
    all_taints = node_taints(request.taints)
    return {
        "GPUPOOL_CLUSTER_NAME": request.cluster_name,
        "GPUPOOL_CLAIM_NAME": request.claim_name,
        "GPUPOOL_CLAIM_UID": request.claim_uid,
        "GPUPOOL_INSTANCE_TYPE": request.instance_type,
        "GPUPOOL_REGION": request.region,
        "GPUPOOL_NODE_LABELS": ",".join(f"{k}={v}" for k, v in sorted(request.tags().items())),
        "GPUPOOL_NODE_TAINTS": ",".join(f"{k}={v}:{e}" for k, v, e in all_taints),
    }


def render_user_data(
    template: str,
    request: LaunchRequest,
    *,
    extra: Mapping[str, str] | None = None,
) -> str:
    """The template with the claim's variables and `extra` filled in; unknown `${...}` are kept."""
    variables = {**bootstrap_variables(request), **dict(extra or {})}
    return Template(template).safe_substitute(variables)
