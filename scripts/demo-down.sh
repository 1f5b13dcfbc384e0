#!/usr/bin/env bash
# Stops what `make demo` started: the operator, simcloud, and the local cluster.
set -uo pipefail
cd "$(dirname "$0")/.."
RUN="${GPUPOOL_CACHE:-$HOME/.cache/gpupool}/demo"
for name in operator simcloud; do
  if [ -f "$RUN/$name.pid" ]; then
    kill "$(cat "$RUN/$name.pid")" 2>/dev/null && echo "stopped $name"
    rm -f "$RUN/$name.pid"
  fi
done
rm -f "$RUN/simcloud.sqlite"
tests/cluster/down.sh
