#!/usr/bin/env bash
# Run the test suite once per Keras backend (one pytest process each), concurrently, and print
# each backend's log in full. Exits non-zero if any backend failed.
# Usage: scripts/test_all_backends.sh PYTHON [backends...]   (default: jax torch tensorflow)
# PYTEST_ARGS (optional) goes to every pytest process, e.g. PYTEST_ARGS="-m large --run-large"
# for the large tests alone (make test-large).
set -u
py=${1:?python}; shift
backends=("$@"); [ ${#backends[@]} -gt 0 ] || backends=(jax torch tensorflow)
logs=$(mktemp -d)
for b in "${backends[@]}"; do
  ( start=$(date +%s)
    KERAS_BACKEND=$b "$py" -m pytest -q --durations=10 ${PYTEST_ARGS:-} tests > "$logs/$b.log" 2>&1
    echo $? > "$logs/$b.rc"; echo $(( $(date +%s) - start )) > "$logs/$b.seconds" ) &
done
wait
status=0
for b in "${backends[@]}"; do
  echo "=== pytest, KERAS_BACKEND=$b ($(cat "$logs/$b.seconds") s)"
  cat "$logs/$b.log"
  rc=$(cat "$logs/$b.rc")
  [ "$rc" = 0 ] || { echo "=== KERAS_BACKEND=$b FAILED (pytest exit $rc)"; status=1; }
done
exit $status
