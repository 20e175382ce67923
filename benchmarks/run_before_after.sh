#!/usr/bin/env bash
# No GPU regression from issue 22 (docs/performance.md, "Before and after issue 22, through fit"):
# `benchmarks/cell_throughput.py --train-step fit` on the paper's five configurations
# (benchmarks/configs.py) with keras-stm as of BEFORE_COMMIT (default c3f2ca4, the library before
# the issue-22 refactor of STM's loop options) and as in this working tree, on one card in one
# run, under torch and jax. Each configuration and backend runs the two versions one after the
# other (the order alternating from pair to pair, so drift on the card falls on both alike), each
# in its own process under a timeout: a hang loses one row, not the rest.
#
# Step 1, here (needs the git history; runs/ is git-ignored):
#   bash benchmarks/run_before_after.sh --prepare [BEFORE_COMMIT]
# extracts BEFORE_COMMIT's keras_stm/ into runs/before_<BEFORE_COMMIT>/ (git archive, under 1 MB)
# with COMMIT (its full hash) and AFTER_COMMIT (this checkout's HEAD, "+uncommitted" when
# keras_stm/ differs from it). The GPU machine gets a copy of the working tree without the
# history: carry runs/before_<BEFORE_COMMIT> there.
# Step 2, on the GPU machine (keras importable, jax and torch with CUDA):
#   bash benchmarks/run_before_after.sh OUT_DIR [BEFORE_COMMIT]
# appends one JSON line per run to OUT_DIR/fit_before_after.jsonl (code_version before / after,
# keras_stm_path, keras_stm_commit), writes each process's stderr to OUT_DIR/logs/, and prints
# `summarize.py --before-after` (ms before, ms after, after / before) at the end.
#
# After the pairs, with STATELESS=1 (default), each configuration's jax row of this tree with
# `--train-step stateless --sync end` (Keras' stateless API in one jitted function, the steps
# back to back as fit runs them, otherwise the same flags), for
# issue 18's "fit within 1.5x of the stateless step, same card"; summarize.py prints that ratio.
#
# Environment: CONFIGS (comma list; default the five of configs.py, shortest T first), BACKENDS
# ("torch jax"), BATCH (128), REPEATS_JAX (50) and REPEATS_TORCH (20): steps per timed fit call
# (3 timed calls after a warm-up call of 2 steps), JAX_UNROLL (1: both versions with
# `unroll=True` under jax, as the examples' `--speed-settings auto` on a jax GPU, where the
# current STM's loop="auto" unrolls anyway; 0: each library's own default), CONFIG_TIMEOUT (300 s
# per process), DEADLINE (540 s after the start: a process gets at most the time left, none
# starts with under 20 s left, and the summary still prints inside a 10-minute call), PYTHON
# (python3). jax runs both versions with the same XLA_FLAGS: this tree's
# keras_stm.experiments.training.COMMAND_BUFFER_XLA_FLAGS (the examples' setting on a jax GPU)
# unless XLA_FLAGS is set. Leave JAX_COMPILATION_CACHE_DIR unset: compile_s would not compare.
#
# Time, one H100 (estimate from the train_on_batch compiles in docs/benchmarks/h100_run3.jsonl:
# unrolled jax 29-70 s per configuration, about 240 s for the five): jax about 2 x 240 s of
# compilation + 10 x ~10 s of process start + ~30 s timed; torch about 10 x ~6 s + 20-110 s;
# in all about 10-12 minutes for the five configurations, more than one 10-minute call. Run it
# as two calls on the same machine, CONFIGS=nth_farthest,rar,copy (about 6 min) and
# CONFIGS=associative_retrieval,babi (about 6 min), each plus 1-3 minutes for the stateless rows
# (cut by DEADLINE first: they run last), and summarise both files together.
set -u
cd "$(dirname "$0")/.." || exit 1
PYTHON=${PYTHON:-python3}

if [ "${1:-}" = --prepare ]; then
  before=${2:-c3f2ca4}
  prep=runs/before_$before
  full=$(git rev-parse --verify "$before^{commit}") || exit 1
  rm -rf "$prep" && mkdir -p "$prep" || exit 1
  git archive "$full" keras_stm | tar -x -C "$prep" || exit 1
  echo "$full" >"$prep/COMMIT"
  after=$(git rev-parse HEAD)
  [ -n "$(git status --porcelain -- keras_stm)" ] && after="$after+uncommitted"
  echo "$after" >"$prep/AFTER_COMMIT"
  echo "prepared $prep ($(du -sh "$prep" | cut -f1)): carry it to the GPU machine"
  exit 0
fi

if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  echo "usage: $0 --prepare [BEFORE_COMMIT] | $0 OUT_DIR [BEFORE_COMMIT]" >&2
  exit 2
fi
mkdir -p "$1/logs" || exit 1
out=$(cd "$1" && pwd)
before=${2:-c3f2ca4}
prep=$PWD/runs/before_$before
if [ ! -f "$prep/keras_stm/__init__.py" ]; then
  echo "no $prep/keras_stm: run '$0 --prepare $before' where the git history is," \
    "and carry runs/before_$before" >&2
  exit 1
fi
log=$out/fit_before_after.jsonl
before_commit=$(cat "$prep/COMMIT" 2>/dev/null || echo "$before")
after_commit=$(cat "$prep/AFTER_COMMIT" 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo unknown)
configs=${CONFIGS:-$(cd benchmarks && $PYTHON -c \
  'from configs import CONFIGS; print(",".join(sorted(CONFIGS, key=lambda n: CONFIGS[n][5])))')}
backends=${BACKENDS:-torch jax}
deadline=${DEADLINE:-540}
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# Read without importing keras_stm (no backend needed): the value of this tree.
command_buffers=$($PYTHON - <<'EOF'
import ast

tree = ast.parse(open("keras_stm/experiments/training.py").read())
for node in tree.body:
    names = [getattr(target, "id", None) for target in getattr(node, "targets", [])]
    if "COMMAND_BUFFER_XLA_FLAGS" in names:
        print(ast.literal_eval(node.value))
EOF
)
[ -n "$command_buffers" ] || { echo "COMMAND_BUFFER_XLA_FLAGS not found" >&2; exit 1; }
xla_flags=${XLA_FLAGS:-$command_buffers}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$out/gpu.txt" 2>&1
echo "configs $configs; backends $backends; before $before_commit; after $after_commit"
echo "jax XLA_FLAGS: $xla_flags"

record() {  # backend version config commit error step: a row for a run that wrote none
  local row='{"impl": "stm", "config": "%s", "precision": "highest", "train_step": "%s", '
  row+='"backend": "%s", "code_version": "%s", "keras_stm_commit": "%s", "error": "%s"}\n'
  # shellcheck disable=SC2059
  printf "$row" "$3" "${6:-fit}" "$1" "$2" "$4" "$5" | tee -a "$log"
}

run_one() {  # backend version config [train step: fit (default) or stateless]
  local backend=$1 version=$2 config=$3 step=${4:-fit} root commit repeats limit rc lines why
  local flags=(--train-step "$step" --configs "$config" --batch "${BATCH:-128}" --code-version "$version")
  # The stateless step timed back to back, synchronised once at the end: as fit runs its steps.
  [ "$step" = stateless ] && flags+=(--sync end)
  if [ "$version" = before ]; then root=$prep commit=$before_commit; else root=$PWD commit=$after_commit; fi
  if [ "$backend" = jax ]; then
    repeats=${REPEATS_JAX:-50}
    [ "${JAX_UNROLL:-1}" = 1 ] && flags+=(--unroll)
  else
    repeats=${REPEATS_TORCH:-20}
  fi
  limit=$((deadline - SECONDS))
  if ((limit < 20)); then
    record "$backend" "$version" "$config" "$commit" "not run: the ${deadline} s deadline" "$step"
    return
  fi
  ((limit > ${CONFIG_TIMEOUT:-300})) && limit=${CONFIG_TIMEOUT:-300}
  lines=$(cat "$log" 2>/dev/null | wc -l)
  local xla=()
  [ "$backend" = jax ] && xla=(XLA_FLAGS="$xla_flags")
  env PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" KERAS_BACKEND="$backend" \
    KERAS_STM_COMMIT="$commit" ${xla[@]+"${xla[@]}"} timeout -k 10 "$limit" \
    "$PYTHON" benchmarks/cell_throughput.py "${flags[@]}" --repeats "$repeats" --output "$log" \
    >/dev/null 2>"$out/logs/${backend}_${version}_${config}_$step.err"
  rc=$?
  if (($(cat "$log" 2>/dev/null | wc -l) == lines)); then
    why="exit status $rc"
    ((rc == 124 || rc == 137)) && why="timeout after $limit s"
    record "$backend" "$version" "$config" "$commit" "$why" "$step"
    tail -n 3 "$out/logs/${backend}_${version}_${config}_$step.err"
  fi
  echo "[${SECONDS} s] $backend $version $config $step: $(tail -n 1 "$log" |
    grep -o '"ms": [0-9.]*\|"compile_s": [0-9.]*\|"error": .\{0,100\}' | tr '\n' ' ')"
}

pair=0
for config in ${configs//,/ }; do
  for backend in $backends; do
    if ((pair % 2 == 0)); then order="before after"; else order="after before"; fi
    pair=$((pair + 1))
    for version in $order; do run_one "$backend" "$version" "$config"; done
  done
done
if [ "${STATELESS:-1}" = 1 ] && [[ " $backends " == *" jax "* ]]; then
  for config in ${configs//,/ }; do run_one jax after "$config" stateless; done
fi
echo "total ${SECONDS} s"
(cd benchmarks && "$PYTHON" summarize.py --before-after "$log")
exit 0
