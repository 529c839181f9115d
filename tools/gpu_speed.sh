#!/usr/bin/env bash
# The speed measurements on a bare GPU machine, in one call of at most BUDGET
# seconds: installs Keras from local wheels (tools/gpu_setup.sh), then, in the
# order STEPS gives, each step under its own time limit (cut to what is left of
# the budget; skipped under 20 s) and carrying on when one fails:
#
#   1. benchmarks/loss_overhead.py: every loss next to CE, on JAX and on eager
#      PyTorch (one report each), at C = 1000, 8142, 100000 (the CPU table's
#      settings), tensors on the GPU;
#   2. benchmarks/train_step.py --quick: ResNet-32 training-step images/s per loss;
#   3. one training run of the fast path: ResNet-32, CIFAR-10-LT, EPOCHS epochs of
#      RECIPE on JAX with the augmentation inside the compiled step
#      (--pipeline device), bfloat16 mixed precision and steps_per_execution 8,
#      timed (its summary.json holds train_seconds and the accuracy);
#   4. benchmarks/loss_overhead.py --torch-compile for COMPILE_LOSSES (inductor's
#      Triton kernels; seconds of compilation per loss and C, so a few losses).
#
# Everything lands in RESULTS and in ONE archive, OUT/speed-results.tar.gz; the
# tables are printed at the end. The side-by-side table with the CPU report:
#
#   python benchmarks/loss_overhead.py --table benchmarks/results/loss_overhead_quick.json \
#       RESULTS/loss_overhead_gpu_jax.json RESULTS/loss_overhead_gpu_torch.json \
#       RESULTS/loss_overhead_gpu_compiled.json --summary
#
# Settings (environment variables, defaults in brackets):
#   RECIPE    [ce]           EPOCHS [200; 1 with SMOKE=1]
#   TRAIN_ARGS [--pipeline device --dtype-policy mixed_bfloat16 --steps-per-execution 8]
#   COMPILE_LOSSES [LDAMLoss ArcFaceLoss MaxMarginLoss ClassBalancedLoss[focal] EqualizationLossV2]
#   STEPS     [1 3 2 4]      which of the steps above to run, in this order
#   LIMIT_OVERHEAD [120] (per backend)  LIMIT_TRAIN [240]  LIMIT_TRAIN_STEP [60]
#   LIMIT_COMPILE [90]       seconds each step may take
#   BUDGET    [540]          seconds for the whole script (the steps, then packing)
#   RESULTS   [results/gpu-speed]   OUT [./out]   DATA_DIR, SITE, PYTHON: as in gpu_setup.sh
#   SMOKE     [0]            1: tiny settings (C = 16, two losses, a smoke run): tests the
#                            script in a minute on a CPU
set -euo pipefail
START=$(date +%s)
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python3}
SMOKE=${SMOKE:-0}
RECIPE=${RECIPE:-ce}
if [ "$SMOKE" = 1 ]; then EPOCHS=${EPOCHS:-1}; else EPOCHS=${EPOCHS:-200}; fi
TRAIN_ARGS=${TRAIN_ARGS:-"--pipeline device --dtype-policy mixed_bfloat16 --steps-per-execution 8"}
COMPILE_LOSSES=${COMPILE_LOSSES:-"LDAMLoss ArcFaceLoss MaxMarginLoss ClassBalancedLoss[focal] EqualizationLossV2"}
STEPS=${STEPS:-"1 3 2 4"}
LIMIT_OVERHEAD=${LIMIT_OVERHEAD:-120}
LIMIT_TRAIN_STEP=${LIMIT_TRAIN_STEP:-60}
LIMIT_TRAIN=${LIMIT_TRAIN:-240}
LIMIT_COMPILE=${LIMIT_COMPILE:-90}
BUDGET=${BUDGET:-540}
RESERVE=10    # seconds kept for packing
RESULTS=${RESULTS:-results/gpu-speed}
OUT=${OUT:-./out}
export KERAS_BACKEND=${KERAS_BACKEND:-jax}         # the benchmarks pick theirs per subprocess
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # the steps' processes share the GPU

say() { echo "[gpu_speed $(( $(date +%s) - START )) s] $*"; }

# shellcheck source=tools/gpu_setup.sh
source "$REPO/tools/gpu_setup.sh"
mkdir -p "$RESULTS/logs" "$OUT"

if [ "$SMOKE" = 1 ]; then
  overhead_args=(--classes 16 --losses LDAMLoss FocalLoss --repeats 1 --min-time 0.001)
  compile_args=(--classes 16 --losses LDAMLoss --repeats 1 --min-time 0.001)
  step_args=(--losses LDAMLoss --batch-size 4 --steps 1 --repeats 1 --pipeline-seconds 0.2
             --no-check)
  train_args=(--smoke)
else
  overhead_args=(--classes 1000 8142 100000 --repeats 3 --min-time 0.02)
  read -r -a compile_losses <<< "$COMPILE_LOSSES"   # split on spaces, no globbing of [focal]
  compile_args=(--classes 8142 100000 --repeats 3 --min-time 0.02 --losses "${compile_losses[@]}")
  step_args=(--quick)
  train_args=()
fi

for step in $STEPS; do
  case $step in
    1|2|3|4) ;;
    *) echo "STEPS: unknown step $step (1-4)" >&2; exit 2 ;;
  esac
done

# run NAME LIMIT COMMAND...: the command under `timeout` (LIMIT, or what is left of
# the budget), its output in logs/NAME.log; a failure or a time-out is reported and
# the script goes on.
run() {
  local name=$1 limit=$2
  shift 2
  local left=$(( BUDGET - RESERVE - ($(date +%s) - START) ))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 20 ]; then
    say "$name: skipped, $left s left of the budget"
    return
  fi
  say "$name (at most $limit s): $*"
  local began status
  began=$(date +%s)
  set +e
  timeout -s TERM "$limit" "$@" > "$RESULTS/logs/$name.log" 2>&1
  status=$?
  set -e
  say "$name: exit status $status after $(( $(date +%s) - began )) s"
  [ "$status" -eq 0 ] || tail -n 20 "$RESULTS/logs/$name.log"
}

for step in $STEPS; do
  case $step in
    1) for backend in jax torch; do   # one report each: a time-out loses one backend only
         run "loss_overhead_$backend" "$LIMIT_OVERHEAD" "$PYTHON" benchmarks/loss_overhead.py \
           --backends "$backend" "${overhead_args[@]}" \
           --out "$RESULTS/loss_overhead_gpu_$backend.json" \
           --markdown "$RESULTS/loss_overhead_gpu_$backend.md"
       done ;;
    2) run train_step "$LIMIT_TRAIN_STEP" "$PYTHON" benchmarks/train_step.py \
         --backends jax torch "${step_args[@]}" --out "$RESULTS/train_step_gpu.json" \
         --markdown "$RESULTS/train_step_gpu.md" ;;
    3) # shellcheck disable=SC2086  # TRAIN_ARGS is a word list
       run train "$LIMIT_TRAIN" env KERAS_BACKEND=jax "$PYTHON" -m applications.train \
         --dataset cifar10-lt "${data_args[@]}" --recipe "$RECIPE" --epochs "$EPOCHS" \
         --seed 0 --no-validation --no-plots --no-save-model --verbose 2 \
         --results-dir "$RESULTS/train" "${train_args[@]}" $TRAIN_ARGS ;;
    4) run loss_overhead_compiled "$LIMIT_COMPILE" "$PYTHON" benchmarks/loss_overhead.py \
         --backends torch --torch-compile "${compile_args[@]}" \
         --out "$RESULTS/loss_overhead_gpu_compiled.json" \
         --markdown "$RESULTS/loss_overhead_gpu_compiled.md" ;;
  esac
done

archive="$OUT/speed-results.tar.gz"
tar -czf "$archive" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
say "$(du -h "$archive" | cut -f1) in $archive"
shopt -s nullglob
for table in "$RESULTS"/*.md; do
  echo; echo "== $table"; cat "$table"
done
for summary in "$RESULTS"/train/*/*/*/summary.json; do
  echo; echo "== $summary"; cat "$summary"; echo
done
