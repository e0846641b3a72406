#!/usr/bin/env bash
# GPU benchmarks in priority order, each result written as soon as it exists.
#
#   benchmarks/gpu_suite.sh OUTDIR [WHEELS_DIR] [--budget-s S]
#
# For a machine with a CUDA GPU and no network: installs what the image lacks from
# WHEELS_DIR (pip download grain ml-collections pycocotools faster-coco-eval
# tensorboardX flatbuffers orbax-checkpoint absl-py -d WHEELS_DIR on a machine with a
# network; jax[cuda] and torch are expected on the image or in WHEELS_DIR too), then runs
#   1. EFAFNet R50 256x192 bf16 train step, JAX vs PyTorch (AMP bf16, channels_last)
#   2. EFAFNet inference with flip test, bf16
#   3. SBN train step bf16, then both variants in fp32
#   4. input pipeline (host)
# Each benchmark's JSON goes to OUTDIR/<name>.json, its log to OUTDIR/<name>.log.
# The suite stops cleanly when the budget (default 540 s) is spent: a benchmark
# gets the time that is left and is killed past it; the rest are listed as skipped.
set -u
OUT=${1:?usage: gpu_suite.sh OUTDIR [WHEELS_DIR] [--budget-s S]}
shift
WHEELS=""
BUDGET=540
while [ $# -gt 0 ]; do
  case "$1" in
    --budget-s) BUDGET=$2; shift 2 ;;
    --budget-s=*) BUDGET=${1#*=}; shift ;;
    *) WHEELS=$1; shift ;;
  esac
done
mkdir -p "$OUT"
START=$(date +%s)
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

if [ -n "$WHEELS" ] && [ -d "$WHEELS" ]; then
  python -m pip install --no-index --find-links "$WHEELS" -q \
    grain ml-collections pycocotools faster-coco-eval tensorboardX flatbuffers \
    orbax-checkpoint absl-py 2>&1 | tail -3 > "$OUT/install.log"
fi
python -m pip install --no-deps --no-build-isolation -q -e . >> "$OUT/install.log" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python -c "import jax; print(jax.devices())" >> "$OUT/gpu.txt" 2>&1

run() {  # run NAME COMMAND...: JSON (last stdout line) to OUT/NAME.json
  local name=$1; shift
  local budget; budget=$(left)
  if [ "$budget" -lt 30 ]; then
    echo "skipped (budget spent): $name" | tee -a "$OUT/skipped.txt"
    return
  fi
  echo "== $name ($budget s left)"
  timeout "$budget" "$@" --json > "$OUT/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then
    tail -n 1 "$OUT/$name.log" > "$OUT/$name.json"
    grep -v '^{' "$OUT/$name.log" | tail -n 8
  else
    echo "failed or timed out (rc $rc): $name" | tee -a "$OUT/skipped.txt"
    tail -n 5 "$OUT/$name.log"
  fi
}

R50=256x192
run train_efafnet_bf16 python benchmarks/train_step.py --config "coco:efafnet,r50,$R50" --batch 128 --dtype bfloat16
run inference_efafnet_bf16 python benchmarks/inference.py --config "coco:efafnet,r50,$R50" --batch 256 --dtype bfloat16
run train_sbn_bf16 python benchmarks/train_step.py --config "coco:sbn,r50,$R50" --batch 128 --dtype bfloat16
run train_efafnet_fp32 python benchmarks/train_step.py --config "coco:efafnet,r50,$R50" --batch 64 --dtype float32
run train_sbn_fp32 python benchmarks/train_step.py --config "coco:sbn,r50,$R50" --batch 64 --dtype float32
run input_pipeline python benchmarks/input_pipeline.py
echo "done in $(( $(date +%s) - START )) s; results in $OUT"
