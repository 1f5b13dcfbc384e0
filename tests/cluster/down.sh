#!/usr/bin/env bash
# Stops the local test cluster and removes its state. Its processes run
# detached from the shell that started them, so this is the only way they end.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
CACHE=${GPUPOOL_CACHE:-$HOME/.cache/gpupool}
NAME=${GPUPOOL_CLUSTER:-gpupool}
BIN="$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION/bin"
export KWOK_WORKDIR="$CACHE/kwok" PATH="$BIN:$PATH"
if [ -d "$KWOK_WORKDIR/clusters/$NAME" ] && [ -x "$BIN/kwokctl" ]; then
  kwokctl delete cluster --name "$NAME" >&2 || true
fi
rm -rf "${KWOK_WORKDIR:?}/clusters/$NAME"
