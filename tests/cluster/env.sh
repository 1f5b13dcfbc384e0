#!/usr/bin/env bash
# Prints the bin directory and kubeconfig path of the local cluster without
# building or starting anything, for the Makefile and the test fixtures.
here=$(cd "$(dirname "$0")" && pwd)
source "$here/versions.env"
CACHE=${GPUPOOL_CACHE:-$HOME/.cache/gpupool}
NAME=${GPUPOOL_CLUSTER:-gpupool}
case "${1:-}" in
  bin) echo "$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION/bin" ;;
  kubeconfig) echo "$CACHE/kwok/clusters/$NAME/kubeconfig.yaml" ;;
  *) echo "usage: env.sh bin|kubeconfig" >&2; exit 2 ;;
esac
