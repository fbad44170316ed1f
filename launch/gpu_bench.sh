#!/usr/bin/env bash
# The GPU benchmark round in one call (docs/benchmarks.md, "GPU figures"): the full-size unCLIP sampler at 768 px
# against diffusers' PyTorch pipeline (eager, then torch.compile), ResNet-50 training in bf16, and the sampler at
# 512 px. Stages run in order of importance, each under its own time limit, so a slow compile costs only the
# stages after it; every stage appends to $OUT/log as it goes and writes its JSON to $OUT.
#
#   OUT=/tmp/gpu launch/gpu_bench.sh core       # env, 768 px vs PyTorch eager (cuDNN attention), training, 768 px xla
#   OUT=/tmp/gpu launch/gpu_bench.sh extra      # 768 px at batch 16, and with xla attention
#   OUT=/tmp/gpu launch/gpu_bench.sh small      # 512 px, batched training (the experiment grid), scoring
#   OUT=/tmp/gpu launch/gpu_bench.sh compile    # PyTorch under torch.compile at 768 px
#   OUT=/tmp/gpu launch/gpu_bench.sh profile    # where the 768 px UNet call and sampling step spend device time
#
# On the first lease (one H200) each sampler point took about 2 minutes (a 66 s XLA compile of the step, the UNet
# alone compiled and timed, weights loaded): the stage limits below fit that, and each group's limits (env
# included) fit in one 600 s call of the device tool (tests/test_bench.py checks the sums).
#
# Wheels in .whl/ (diffusers, grain, ...) are installed first.
# Limits are seconds per stage; BENCH_SCALE=0.5 halves them all. A plumbing check on a CPU:
#   BENCH_MODEL=tiny HI=64 LO=32 STEPS=2 BENCH_SCALE=3 ATTN=xla launch/gpu_bench.sh core
set -uo pipefail
group=${1:-core}
case "$group" in core|extra|small|compile|profile) ;; *) echo "usage: $0 [core|extra|small|compile|profile]" >&2; exit 2 ;; esac
OUT=${OUT:-/tmp/jaxaug-gpu-bench}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
scale=${BENCH_SCALE:-1}
log="$OUT/log"

stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit
  limit=$(python3 -c "print(max(5, int($2 * $scale)))")
  shift 2
  echo "=== $name (limit ${limit}s) $(date -u +%T): $*" | tee -a "$log"
  local start=$SECONDS
  timeout -s INT -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start))s" | tee -a "$log"
}

stage env 60 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv;
  python3 -c "import sys, jax, jaxlib, flax, torch, diffusers; print(sys.version.split()[0], \"jax\", jax.__version__,
  \"jaxlib\", jaxlib.__version__, \"flax\", flax.__version__, \"torch\", torch.__version__, \"diffusers\",
  diffusers.__version__); print(jax.devices())"' 
cp "$log" "$OUT/env.txt"

bench="python3 -m jaxaug.bench"
model=${BENCH_MODEL:-random-sd21-unclip} hi=${HI:-768} lo=${LO:-512} steps=${STEPS:-30} attn=${ATTN:-cudnn}
common="--model=$model --steps=$steps"
case "$group" in
  core)
    stage sampler768 300 $bench sampler $common --resolution=$hi --batch=4,8 --attention=$attn --vs-torch \
      --json="$OUT/sampler768.json"
    stage train 100 $bench train --json="$OUT/train.json"
    stage sampler768_xla 70 $bench sampler $common --resolution=$hi --batch=8 --attention=xla \
      --json="$OUT/sampler768_xla.json"
    ;;
  extra)  # what the first H200 lease (2026-12-04) had no time left for
    stage sampler768_b16 200 $bench sampler $common --resolution=$hi --batch=16 --attention=$attn \
      --json="$OUT/sampler768_b16.json"
    stage sampler768_xla 200 $bench sampler $common --resolution=$hi --batch=8 --attention=xla \
      --json="$OUT/sampler768_xla.json"
    ;;
  small)  # the 512 px point and the two other benches
    stage sampler512 150 $bench sampler $common --resolution=$lo --batch=8 --json="$OUT/sampler512.json"
    stage experiment 120 $bench experiment --json="$OUT/experiment.json"
    stage score 120 $bench score --model=$model --json="$OUT/score.json"
    ;;
  profile)  # the UNet loop's own rate against the 60%-of-peak target, and which kind of work holds it back
    stage profile768 300 $bench sampler $common --resolution=$hi --batch=8 --attention=$attn --repeats=2 \
      --profile="$OUT/profile" --json="$OUT/profile768.json"
    ;;
  compile)  # PyTorch's UNet under torch.compile at the largest batch (its figure is in docs/benchmarks.md)
    stage torch_compile768 150 bash -c "JAX_PLATFORMS=cpu python3 -m jaxaug.models.torch_reference '{\"model\": \"$model\",
      \"batches\": [8], \"resolution\": $hi, \"steps\": $steps, \"guidance\": 2.0, \"scheduler\": \"\", \"repeats\": 3,
      \"compile\": true}' > $OUT/torch_compile768.json"
    ;;
esac
echo "=== done $(date -u +%T)" | tee -a "$log"
