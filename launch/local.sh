#!/usr/bin/env bash
# N processes on this machine joined by jax.distributed over localhost: the multi-host code path without a
# cluster. Each process takes its share of the units (generate) or of the batch (train).
#
#   launch/local.sh N MODULE [flags...]
#   launch/local.sh 2 jaxaug.generate --config=demo --config.output.dir=out/demo2
#
# The first process to fail stops the others; the exit status is the first failure's. A SIGTERM to this script
# (a scheduler's pre-emption, `kill`) is passed to every process, which stops as docs/long-runs.md ("Trusting a
# long run") says, and the script exits 143 once all have; Ctrl-C in a terminal reaches every process by itself
# (they are in the script's process group), and the script exits 130 once all have stopped.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: launch/local.sh N MODULE [flags...]" >&2
  exit 2
fi
n=$1
module=$2
shift 2
port=${JAXAUG_PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}
# A script's background jobs start with SIGINT ignored (no job control), which Python and jaxaug keep. These
# processes are this script's own work, so they take Ctrl-C as the script does: at its default, or ignored if the
# script itself was started with SIGINT ignored (`trap -p INT` then shows it). Each becomes `python -m MODULE`
# with the same pid (execv), so that the signals sent to $! reach it.
if [ -n "$(trap -p INT)" ]; then sigint=SIG_IGN; else sigint=SIG_DFL; fi
start="import os, signal, sys; signal.signal(signal.SIGINT, signal.$sigint); \
os.execv(sys.executable, [sys.executable, '-m', *sys.argv[1:]])"
pids=()
stopping=""
trap 'stopping=143; kill -TERM "${pids[@]}" 2>/dev/null || true' TERM
trap 'stopping=130' INT  # the processes got the terminal's SIGINT themselves: a second one would cut their save short
for ((i = 0; i < n; i++)); do
  python -c "$start" "$module" "$@" --config.mesh.coordinator="localhost:$port" --config.mesh.num_processes="$n" \
    --config.mesh.process_id="$i" &
  pids+=($!)
done
status=0
for ((i = 0; i < n; i++)); do
  wait -n || {
    status=$?
    [ -n "$stopping" ] && break  # every process got the SIGTERM: a second one would make them give up their save
    kill "${pids[@]}" 2>/dev/null || true
    break
  }
done
while ! wait; do :; done  # (a trapped signal interrupts `wait`)
[ -n "$stopping" ] && status=$stopping
exit "$status"
