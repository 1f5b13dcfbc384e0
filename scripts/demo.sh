#!/usr/bin/env bash
# `make demo`: the whole story on the local cluster. Starts the cluster, the simulated
# cloud and the operator; applies a simulated provider, a pool and a Llama-3.1-8B
# deployment; waits until it serves; prints what `kubectl get gpupool` shows. Everything
# keeps running afterwards so you can look around; `make demo-down` stops it all.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${GPUPOOL_CACHE:-$HOME/.cache/gpupool}
RUN="$CACHE/demo"
mkdir -p "$RUN"
VENV=.venv

KUBECONFIG=$(tests/cluster/up.sh)
export KUBECONFIG PATH="$(tests/cluster/env.sh bin):$PATH"
echo "== cluster: $(kubectl version -o json | python3 -c 'import json,sys;print(json.load(sys.stdin)["serverVersion"]["gitVersion"])') at $KUBECONFIG"

kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
echo "== CRDs installed"

start_bg() { # name, command...
  local name=$1; shift
  if [ -f "$RUN/$name.pid" ] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
    echo "== $name already running (pid $(cat "$RUN/$name.pid"))"
    return
  fi
  nohup "$@" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  echo "== $name started (pid $!, log $RUN/$name.log)"
}

start_bg simcloud "$VENV/bin/simcloud" --port 8788 --db "$RUN/simcloud.sqlite" \
  --kubeconfig "$KUBECONFIG" --boot-delay "${SIMCLOUD_BOOT_DELAY:-3}"
for _ in $(seq 1 50); do curl -sf http://127.0.0.1:8788/healthz >/dev/null && break; sleep 0.2; done
# The demo machine may have no internet: models come from the built-in table (GPUPOOL_HF_ENDPOINT=off);
# with a Hub reachable, leave it out and any Hugging Face model resolves (a gated one needs a token).
start_bg operator env GPUPOOL_CLUSTER_NAME=demo GPUPOOL_HF_ENDPOINT=off "$VENV/bin/gpupool" run --liveness-port 0

kubectl apply -f examples/00-namespace.yaml -f examples/10-provider-sim.yaml \
  -f examples/20-pool-default.yaml -f examples/30-llama-3.1-8b.yaml
start=$(date +%s)
echo "== waiting for the ModelDeployment to serve (the pool buys a node from simcloud first)"
kubectl wait --for=condition=Ready modeldeployment/llama-3-1-8b -n default --timeout=300s >/dev/null
# Ready comes from the Deployment; the node's price reaches the model and the pool a moment after.
for _ in $(seq 1 120); do
  cost=$(kubectl get modeldeployment/llama-3-1-8b -n default -o jsonpath='{.status.costPerHour}')
  nodes=$(kubectl get gpupool/default -o jsonpath='{.status.nodes}')
  [ "${cost:-0}" != "0" ] && [ "${nodes:-0}" != "0" ] && break
  sleep 0.5
done
echo "== Ready in $(( $(date +%s) - start ))s"
echo
echo "\$ kubectl get gpupool"
kubectl get gpupool
echo
echo "\$ kubectl get nodes -L gpupool.dev/gpu,node.kubernetes.io/instance-type"
kubectl get nodes -L gpupool.dev/gpu,node.kubernetes.io/instance-type
echo
echo "The plan behind it: $VENV/bin/gpupool plan -f examples/30-llama-3.1-8b.yaml"
echo "Everything is still running: export KUBECONFIG=$KUBECONFIG; stop it all with: make demo-down"
