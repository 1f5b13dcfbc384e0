#!/usr/bin/env bash
# Builds the real Kubernetes control plane the tests run on, from the Go module
# proxy, into a cache keyed by version outside the repo. There is no Docker here,
# so kind cannot run; these are the same binaries kind would run, and KWOK plays
# the kubelet. A warm cache (every binary present and stamped with the right
# version) builds nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

CACHE=${GPUPOOL_CACHE:-$HOME/.cache/gpupool}
BIN="$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-helm-$HELM_VERSION/bin"
WORK="$CACHE/build"
mkdir -p "$BIN" "$WORK"
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { printf '[build %s] %s\n' "$(date +%T)" "$*" >&2; }

have_version() { # binary, expected substring of its --version output
  local out
  [ -x "$BIN/$1" ] || return 1
  # Captured first: `grep -q` closing the pipe early would fail the pipeline under pipefail.
  out=$("$BIN/$1" ${3:---version} 2>&1) || return 1
  [[ "$out" == *"$2"* ]]
}

build_kubernetes() {
  if have_version kube-apiserver "$K8S_VERSION" && have_version kube-scheduler "$K8S_VERSION" \
     && have_version kube-controller-manager "$K8S_VERSION" && have_version kubectl "$K8S_VERSION" "version --client"; then
    return
  fi
  log "building kubernetes $K8S_VERSION (cold: tens of minutes on 2 cores)"
  local mod="$WORK/kubernetes-$K8S_VERSION" minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  mkdir -p "$mod"
  # k8s.io/kubernetes replaces every staging module with ./staging/...; a tool
  # module that pins each one to its published tag v0.<minor>.<patch> instead
  # is the way to build it from the module proxy. The list comes from the tag's
  # own go.mod so it never drifts.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" \
    | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
  {
    echo "module gpupool.local/k8stools"
    echo
    echo "go 1.26"
    echo
    echo "replace ("
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" \
      | awk -v v="v0.${K8S_VERSION#v1.}" '{printf "\t%s => %s %s\n",$1,$1,v}'
    echo ")"
  } > "$mod/go.mod"
  (
    cd "$mod"
    go get "k8s.io/kubernetes@$K8S_VERSION" >&2
    for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
      go get -tool "k8s.io/kubernetes/cmd/$c@$K8S_VERSION" >&2
    done
    local ldf="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    done
    go build -trimpath -ldflags "$ldf" -o "$BIN/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
  )
}

build_etcd() {
  have_version etcd "${ETCD_VERSION#v}" && return
  log "building etcd $ETCD_VERSION"
  local mod="$WORK/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  printf 'module gpupool.local/etcdtools\n\ngo 1.26\n' > "$mod/go.mod"
  (
    cd "$mod"
    go get -tool "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2
    # the package path ends in /v3: without -o the binary would be named v3
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
  )
}

build_kwok() {
  have_version kwok "$KWOK_VERSION" && have_version kwokctl "$KWOK_VERSION" && return
  log "building kwok $KWOK_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
}

build_helm() {
  have_version helm "$HELM_VERSION" version && return
  log "building helm $HELM_VERSION"
  local ldf="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "$ldf" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

start=$(date +%s)
# smallest first, so a failure in a small one shows before the long build
build_kwok
build_etcd
build_helm
build_kubernetes
log "binaries ready in $BIN ($(( $(date +%s) - start ))s)"
echo "$BIN"
