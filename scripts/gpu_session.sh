#!/usr/bin/env bash
# Train the runs listed in a spec file side by side on one GPU for MINUTES, then pack what the
# device tool brings back (at most 4 parts of 15 MiB) into DEST.
# Usage: bash scripts/gpu_session.sh SPEC MINUTES DEST
#   SPEC: one run a line, `NAME [VAR=VALUE...] SCRIPT ARGS...` (e.g. `rar-stm rar.py --model
#   stm`; `copy-stm XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 copy_task.py` gives that run its own
#   environment); `#` starts a comment. Each run writes to $RUNS/NAME (default runs/gpu/NAME)
#   and its log to NAME.log; the same command later resumes every run from its checkpoint. A
#   run still going HARD_SECONDS (default: MINUTES + 2 minutes) after its start is killed; its
#   last finished epoch's checkpoint is kept (checkpoints are written atomically).
#   DEST gets, in the SPEC's order while they fit in BUDGET_MB (default 58): every run's records
#   (json, csv, png, md, log), then every run's newest checkpoint, then every best.keras, then
#   jax's compilation cache (PACK_CACHE=0: not); the rest is listed in $RUNS/left_out.txt.
#   Unpack here with
#   `cat DEST/runs.tgz.part* | tar -xz -C $RUNS`.
set -u
spec=${1:?spec file}; minutes=${2:?minutes}; dest=${3:?destination}
root=${RUNS:-runs/gpu}; mkdir -p "$root" "$dest"
export XLA_PYTHON_CLIENT_PREALLOCATE=false KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
# The scripts import the installed keras_stm; on a machine without `pip install -e .` (the GPU
# machine) the checkout itself, from the repository root.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Each process's jax allocator gets a share of the card (default 0.8 / number of runs, at most
# 0.75), so that XLA's command buffers (CUDA graphs) still find driver memory: without a cap,
# three of four runs stopped at their first step with CUDA_ERROR_OUT_OF_MEMORY (session 11).
runs=$(grep -cvE '^[[:space:]]*(#|$)' "$spec")
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-$(python3 -c \
  "print(f'{min(0.75, 0.8 / max(1, $runs)):.2f}')")}
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$root/jax_cache}
hard=${HARD_SECONDS:-$(python3 -c "print(int(60 * $minutes + 120))")}
names=(); pids=()
while read -r name script args; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  names+=("$name")
  # Leading VAR=VALUE words set that run's environment (e.g. its XLA_PYTHON_CLIENT_MEM_FRACTION).
  envs=()
  while [[ "$script" == *=* ]]; do envs+=("$script"); read -r script args <<< "$args"; done
  # shellcheck disable=SC2086  # ARGS is a word list on purpose
  env "${envs[@]}" timeout -k 10 "$hard" python3 "examples/$script" --output-dir "$root/$name" \
    --max-minutes "$minutes" --verbose 2 $args > "$root/$name.log" 2>&1 &
  pids+=($!)
done < "$spec"
for pid in "${pids[@]}"; do wait "$pid"; done
for name in "${names[@]}"; do echo "== $name"; tail -n 4 "$root/$name.log"; done

# What comes back: records first, then checkpoints in the SPEC's order within the budget.
list=$(mktemp); budget=$(( ${BUDGET_MB:-58} * 1024 * 1024 )); total=0
add() { local size; size=$(stat -c %s "$root/$1"); total=$((total + size)); echo "$1" >> "$list"; }
for name in "${names[@]}"; do
  add "$name.log"
  for f in "$root/$name"/*.json "$root/$name"/*.csv "$root/$name"/*.png "$root/$name"/*.md \
           "$root/$name"/backup/*.json; do
    [ -f "$f" ] && add "${f#"$root"/}"
  done
done
# Checkpoints first (a run resumes from them on a fresh machine), then the best.keras files;
# what does not fit is listed in $RUNS/left_out.txt, for a later call on the same machine:
#   tar -czf - -C $RUNS -T $RUNS/left_out.txt | split -b 15m -d - $OUT/more.tgz.part
# (the device tool brings back about 60 MiB a call: split the list if it is longer).
left_out="$root/left_out.txt"; : > "$left_out"
pack() {  # pack RUN_RELATIVE_PATH if the budget has room, else list it as left out
  local size; size=$(stat -c %s "$root/$1")
  if (( total + size < budget )); then add "$1"; else echo "left out: $1"; echo "$1" >> "$left_out"; fi
}
for name in "${names[@]}"; do
  newest=$(python3 - "$root/$name/backup/training_metadata.json" <<'EOF'
import json, sys
try:
    meta = json.load(open(sys.argv[1]))
    print((meta.get("checkpoints") or [{"weights": "latest.weights.h5"}])[0]["weights"])
except (OSError, ValueError):
    pass
EOF
)
  [ -n "$newest" ] && [ -f "$root/$name/backup/$newest" ] && pack "$name/backup/$newest"
done
for name in "${names[@]}"; do
  [ -f "$root/$name/best.keras" ] && pack "$name/best.keras"
done
# Last, jax's compilation cache (when the budget has room): carried to the next call or session
# (as $RUNS/jax_cache), a run on the same kind of card and jax finds its programs compiled.
cache="$root/jax_cache"
if [ -d "$cache" ] && [ "${PACK_CACHE:-1}" = 1 ]; then
  size=$(du -sb "$cache" | cut -f1)
  if (( total + size < budget )); then
    total=$((total + size)); echo "jax_cache" >> "$list"
  else
    echo "left out: jax_cache ($((size / 1048576)) MiB)"
  fi
fi
tar -czf - -C "$root" -T "$list" | split -b 15m -d - "$dest/runs.tgz.part"
echo "packed $((total / 1048576)) MiB (before compression)"; ls -la "$dest"
