#!/usr/bin/env bash
# Installs the pinned development set into .venv (once) and runs the whole test
# suite on the TensorFlow, JAX and PyTorch backends: one pytest process per
# backend, run side by side (most of a run is single-threaded compilation), each
# log printed when all are done, after building the documentation site with
# mkdocs build --strict. Exit status is non-zero if any backend or the docs fail.
# Usage: bash tools/test_all_backends.sh [extra pytest args]
#        BACKENDS="jax" bash tools/test_all_backends.sh tests/losses/test_ldam.py
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
BACKENDS=${BACKENDS:-"tensorflow jax torch"}
set -e
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements/dev.txt
.venv/bin/python -m pip install -q --no-deps -e .
set +e
# The documentation site (mkdocs.yml, docs/) must build with no warning. Not -q:
# mkdocs' --quiet drops warnings before --strict counts them.
docs_log=$(mktemp)
docs_site=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --strict -d "$docs_site" > "$docs_log" 2>&1
docs_status=$?
if [ $docs_status -eq 0 ]; then
  docs_summary="mkdocs build --strict: ok"
else
  cat "$docs_log"
  docs_summary="mkdocs build --strict: FAILED (exit $docs_status, log above)"
fi
echo "$docs_summary"
rm -rf "$docs_site" "$docs_log"
logs=$(mktemp -d)
start=$(date +%s)
for backend in $BACKENDS; do
  ( backend_start=$(date +%s)
    KERAS_BACKEND=$backend .venv/bin/python -m pytest -q -p no:cacheprovider "$@" \
      > "$logs/$backend.log" 2>&1
    code=$?
    echo "=== $backend: exit $code after $(( $(date +%s) - backend_start )) s ===" >> "$logs/$backend.log"
    exit $code ) &
  eval "pid_$backend=$!"
done
status=0
for backend in $BACKENDS; do
  pid_var="pid_$backend"
  wait "${!pid_var}" || status=1
done
for backend in $BACKENDS; do
  echo "=================== KERAS_BACKEND=$backend ==================="
  cat "$logs/$backend.log"
done
[ $docs_status -eq 0 ] || status=1
echo "$docs_summary"
echo "all backends: $(( $(date +%s) - start )) s, status $status"
passed=0; failed=0
for backend in $BACKENDS; do
  summary=$(grep -E "^[=]* ?[0-9]+ (passed|failed)|^[0-9]+ (passed|failed)" "$logs/$backend.log" | tail -n 1)
  p=$(echo "$summary" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+" || true)
  f=$(echo "$summary" | grep -oE "[0-9]+ failed" | grep -oE "[0-9]+" || true)
  e=$(echo "$summary" | grep -oE "[0-9]+ error" | grep -oE "[0-9]+" || true)
  passed=$(( passed + ${p:-0} )); failed=$(( failed + ${f:-0} + ${e:-0} ))
  [ -n "$summary" ] || failed=$(( failed + 1 ))  # a backend that never reported
done
echo "$passed passed, $failed failed"
exit $status
