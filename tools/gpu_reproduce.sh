#!/usr/bin/env bash
# Reproduces the CIFAR-10-LT comparison on a bare GPU machine in under 9 minutes:
# installs Keras from local wheels, runs `python -m applications.reproduce` with a
# deadline, packs every run folder and log into ONE archive and prints the table.
#
# The machine has Python 3.12 with JAX (CUDA) or PyTorch, NumPy and Pillow, but no
# Keras, no TensorFlow and no network: put the wheels Keras needs in the checkout's
# ignored folder .whl/ and the data in ../shared/datasets (or DATA_DIR, or the
# ignored folder .device_carry/datasets), as tools/gpu_setup.sh says. Then, from
# anywhere:
#
#   bash tools/gpu_reproduce.sh
#   RECIPES="ce ldam-drw" SEEDS="0 1" PARALLEL=4 BACKEND=torch bash tools/gpu_reproduce.sh
#
# Settings (environment variables, defaults in brackets):
#   RECIPES   [ce ldam-drw elm-drw mm-ldam-drw kps-ga la lm-softmax-zc ce-rsm]
#   SEEDS     [0 1 2]        priority: every recipe of the first seed, then the next
#   EPOCHS    [200; 2 with SMOKE=1]  PARALLEL [6]       BACKEND [jax]     DATASET [cifar10-lt]
#   DATA_DIR  [../shared/datasets, else .device_carry/datasets]
#   RESULTS   [results/gpu]  run folders, logs/, reproduce.json and reproduce.md
#   OUT       [./out]        where reproduce-results.tar.gz is written
#   BUDGET    [540]          seconds for the whole script (9 minutes)
#   RESERVE   [30]           seconds kept after the deadline for reports and packing
#   DEADLINE  [BUDGET - RESERVE - seconds spent installing]  the launcher's deadline
#   SMOKE     [0]            1: pass --smoke (2 tiny epochs)
#   TRAIN_ARGS []            more applications.train arguments, e.g. "--imbalance-ratio 50"
#   SITE      [a temporary folder]  where the wheels are installed
#   PYTHON    [python3]
# Relative paths are taken from the checkout's root. Exit status: the launcher's
# (0 if at least one run finished).
set -euo pipefail
START=$(date +%s)
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python3}
RECIPES=${RECIPES:-"ce ldam-drw elm-drw mm-ldam-drw kps-ga la lm-softmax-zc ce-rsm"}
SEEDS=${SEEDS:-"0 1 2"}
SMOKE=${SMOKE:-0}
if [ "$SMOKE" = 1 ]; then EPOCHS=${EPOCHS:-2}; else EPOCHS=${EPOCHS:-200}; fi
PARALLEL=${PARALLEL:-6}
BACKEND=${BACKEND:-jax}
DATASET=${DATASET:-cifar10-lt}
RESULTS=${RESULTS:-results/gpu}
OUT=${OUT:-./out}
BUDGET=${BUDGET:-540}
RESERVE=${RESERVE:-30}
TRAIN_ARGS=${TRAIN_ARGS:-}
export KERAS_BACKEND=$BACKEND

say() { echo "[gpu_reproduce $(( $(date +%s) - START )) s] $*"; }

# 1. Keras (from the wheels in .whl/) and the data: see tools/gpu_setup.sh.
# shellcheck source=tools/gpu_setup.sh
source "$REPO/tools/gpu_setup.sh"
if [ ${#data_args[@]} -eq 0 ] && [ "$DATASET" != "digits-lt" ]; then
  echo "No data: set DATA_DIR or put the datasets in ../shared/datasets or" \
       ".device_carry/datasets." >&2
  exit 2
fi

# 2. The runs, inside the deadline.
DEADLINE=${DEADLINE:-$(( BUDGET - RESERVE - ($(date +%s) - START) ))}
if [ "$DEADLINE" -le 0 ]; then
  echo "No time left for a deadline (BUDGET=$BUDGET, RESERVE=$RESERVE)." >&2
  exit 2
fi
smoke_args=()
[ "$SMOKE" = 1 ] && smoke_args=(--smoke)
say "deadline $DEADLINE s: $RECIPES x seeds $SEEDS, $EPOCHS epochs, $PARALLEL at a time, $BACKEND"
mkdir -p "$RESULTS" "$OUT"
guard=()   # a backstop only: the launcher ends its runs by the deadline itself
command -v timeout >/dev/null && guard=(timeout -s TERM $(( DEADLINE + RESERVE / 2 )))
set +e
# shellcheck disable=SC2086  # RECIPES, SEEDS and TRAIN_ARGS are word lists
"${guard[@]}" "$PYTHON" -m applications.reproduce --recipes $RECIPES --seeds $SEEDS \
  --epochs "$EPOCHS" --parallel "$PARALLEL" --deadline "$DEADLINE" --dataset "$DATASET" \
  --backend "$BACKEND" --results-dir "$RESULTS" "${data_args[@]}" "${smoke_args[@]}" \
  -- $TRAIN_ARGS
status=$?
set -e

# 3. One archive with every run folder, the logs and the reports.
archive="$OUT/reproduce-results.tar.gz"
tar -czf "$archive" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")"
say "launcher exit status $status; $(du -h "$archive" | cut -f1) in $archive"
if [ -f "$RESULTS/reproduce.md" ]; then
  echo
  cat "$RESULTS/reproduce.md"
fi
exit $status
