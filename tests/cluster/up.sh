#!/usr/bin/env bash
# Starts the local test cluster (or reuses the one already up) and prints the
# path of its kubeconfig. The cluster is real: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler as local processes, and KWOK as the
# kubelet of every node, all run by kwokctl's binary runtime on 127.0.0.1.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
CACHE=${GPUPOOL_CACHE:-$HOME/.cache/gpupool}
NAME=${GPUPOOL_CLUSTER:-gpupool}
BIN=$("$here/build.sh")
export KWOK_WORKDIR="$CACHE/kwok" PATH="$BIN:$PATH"
KUBECONFIG_PATH="$KWOK_WORKDIR/clusters/$NAME/kubeconfig.yaml"
KCM_QPS=${GPUPOOL_KCM_QPS:-20}
# kube-controller-manager's own defaults (20, burst 30) unless GPUPOOL_KCM_QPS is set (burst 2x).
KCM_BURST=30
[ -n "${GPUPOOL_KCM_QPS:-}" ] && KCM_BURST=$(( KCM_QPS * 2 ))

log() { printf '[cluster %s] %s\n' "$(date +%T)" "$*" >&2; }

healthy() {
  [ -f "$KUBECONFIG_PATH" ] && kubectl --kubeconfig "$KUBECONFIG_PATH" --request-timeout=5s \
    get --raw='/readyz' >/dev/null 2>&1
}

if healthy; then
  log "reusing cluster $NAME"
  echo "$KUBECONFIG_PATH"
  exit 0
fi

# A cluster whose processes died (a reboot, a killed session) leaves its
# workdir behind; kwokctl would refuse to create over it.
if [ -d "$KWOK_WORKDIR/clusters/$NAME" ]; then
  log "removing stale cluster $NAME"
  kwokctl delete cluster --name "$NAME" >/dev/null 2>&1 || rm -rf "$KWOK_WORKDIR/clusters/$NAME"
fi

mkdir -p "$KWOK_WORKDIR"
config="$KWOK_WORKDIR/kwok-$NAME.yaml"
# YAML does not expand variables, so the binary paths are written out here. No
# KwokConfiguration document: kwok v0.8.0 does not default the fields one leaves
# out (nodeLeaseParallelism 0 makes it exit), and its defaults suit us.
cat > "$config" <<YAML
kind: KwokctlConfiguration
apiVersion: config.kwok.x-k8s.io/v1alpha1
options:
  runtime: binary
  kubeVersion: $K8S_VERSION
  bindAddress: 127.0.0.1
  kubeApiserverBinary: $BIN/kube-apiserver
  kubeControllerManagerBinary: $BIN/kube-controller-manager
  kubeSchedulerBinary: $BIN/kube-scheduler
  kwokControllerBinary: $BIN/kwok
  etcdBinary: $BIN/etcd
  kubectlBinary: $BIN/kubectl
componentsPatches:
- name: kube-apiserver
  extraArgs:
  - key: advertise-address
    value: 127.0.0.1
  # Room for thousands of Services (bench/scale runs a thousand ModelDeployments; the default
  # range is a /24), apart from KWOK's pod range.
  - key: service-cluster-ip-range
    value: 10.96.0.0/16
- name: kube-controller-manager
  extraArgs:
  # GPUPOOL_KCM_QPS: the controller manager's client rate limit (see KCM_BURST above). Its default,
  # 20 QPS, is what a thousand new nodes wait on (bench/scale --kcm-qps; docs/control-loop.md).
  - key: kube-api-qps
    value: "$KCM_QPS"
  - key: kube-api-burst
    value: "$KCM_BURST"
- name: etcd
  extraArgs:
  - key: unsafe-no-fsync
    value: "true"
YAML

start=$(date +%s)
log "creating cluster $NAME"
# GPUPOOL_AUDIT_POLICY: an audit policy file for kube-apiserver (bench/scale counts each
# client's requests in the audit log, <workdir>/clusters/<name>/logs/audit.log).
audit=()
[ -n "${GPUPOOL_AUDIT_POLICY:-}" ] && audit=(--kube-audit-policy "$GPUPOOL_AUDIT_POLICY")
kwokctl create cluster --name "$NAME" --config "$config" --kubeconfig= --wait 180s "${audit[@]}" >&2
for _ in $(seq 1 60); do
  healthy && break
  sleep 1
done
healthy || { log "cluster $NAME did not become ready"; exit 1; }
log "cluster $NAME ready in $(( $(date +%s) - start ))s"
echo "$KUBECONFIG_PATH"
