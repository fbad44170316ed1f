#!/usr/bin/env bash
# N processes on this machine joined by jax.distributed over localhost: the multi-host code path without a
# cluster. Each process takes its share of the units (generate) or of the batch (train).
#
#   launch/local.sh N MODULE [flags...]
#   launch/local.sh 2 jaxaug.generate --config=demo --config.output.dir=out/demo2
#
# The first process to fail stops the others; the exit status is the first failure's.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: launch/local.sh N MODULE [flags...]" >&2
  exit 2
fi
n=$1
module=$2
shift 2
port=${JAXAUG_PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}
pids=()
for ((i = 0; i < n; i++)); do
  python -m "$module" "$@" --config.mesh.coordinator="localhost:$port" --config.mesh.num_processes="$n" \
    --config.mesh.process_id="$i" &
  pids+=($!)
done
status=0
for ((i = 0; i < n; i++)); do
  wait -n || {
    status=$?
    kill "${pids[@]}" 2>/dev/null || true
    break
  }
done
wait || true
exit "$status"
