#!/usr/bin/env bash
# Installs the pinned development set into .venv (once) and runs the whole test
# suite on the TensorFlow, JAX and PyTorch backends, one process each.
# Usage: bash tools/test_all_backends.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements/dev.txt
.venv/bin/python -m pip install -q --no-deps -e .
status=0
for backend in tensorflow jax torch; do
  echo "=== KERAS_BACKEND=$backend ==="
  start=$(date +%s)
  KERAS_BACKEND=$backend .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests || status=1
  echo "=== $backend: $(( $(date +%s) - start )) s ==="
done
exit $status
