#!/usr/bin/env bash
# What `make test` and CI run: lint, then every test (unit and cluster) in one
# pytest run against a real API server. With KUBECONFIG set, the tests use that
# cluster (kind, or any other) and nothing is started or stopped here. Without
# it, the local cluster is built if needed, started if not up, and stopped at
# the end if this script started it, so no process is left behind.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
start=$(date +%s)

"$VENV/bin/ruff" check operator tests bench
"$VENV/bin/ruff" format --check operator tests bench
"$VENV/bin/mypy"
"$VENV/bin/lint-imports"

started_here=0
if [ -z "${KUBECONFIG:-}" ]; then
  kc=$(tests/cluster/env.sh kubeconfig)
  bin=$(tests/cluster/env.sh bin)
  if ! { [ -f "$kc" ] && [ -x "$bin/kubectl" ] && "$bin/kubectl" --kubeconfig "$kc" --request-timeout=5s get --raw=/readyz >/dev/null 2>&1; }; then
    started_here=1
  fi
  KUBECONFIG=$(tests/cluster/up.sh)
  export KUBECONFIG
  export PATH="$(tests/cluster/env.sh bin):$PATH"
  if [ "$started_here" = 1 ]; then
    trap 'tests/cluster/down.sh' EXIT
  fi
fi

"$VENV/bin/pytest" "$@"
echo "make test: $(( $(date +%s) - start ))s in all"
