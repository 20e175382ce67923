#!/usr/bin/env bash
# Session 15 on one GPU: scripts/gpu_specs/session15.txt's training runs (scripts/gpu_session.sh)
# and, side by side, Nth-farthest probes at the task's STM size (scripts/nth_farthest_probe.py,
# jax): V vectors x D dimensions for "V D [CURRICULUM]" in PROBES (';'-separated; CURRICULUM
# is --dims-curriculum's value). Curves go to DEST/probe/.
# Usage: RUNS=runs/g15 bash scripts/gpu_specs/session15.sh MINUTES DEST
set -u
minutes=${1:?minutes}; dest=${2:?destination}
mkdir -p "$dest/probe"
export XLA_PYTHON_CLIENT_PREALLOCATE=false KERAS_BACKEND=jax PYTHONUNBUFFERED=1
probe_pids=()
while read -r v d c; do
  [ -z "$v" ] && continue
  name="stm128_v${v}d${d}${c:+_curriculum}"
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.015 timeout -k 10 $(( ${minutes%.*} * 60 + 120 )) \
    python3 scripts/nth_farthest_probe.py --num-vectors "$v" --num-dims "$d" \
    --minutes "$minutes" --every 500 ${c:+--dims-curriculum "$c"} \
    --output "$dest/probe/$name.json" > "$dest/probe/$name.log" 2>&1 &
  probe_pids+=($!)
done <<< "$(echo "${PROBES:-8 2;8 4;4 16;8 16 2:8000,4:14000,8:20000}" | tr ';' '\n')"
bash scripts/gpu_session.sh scripts/gpu_specs/session15.txt "$minutes" "$dest"
for pid in "${probe_pids[@]}"; do wait "$pid"; done
for f in "$dest"/probe/*.log; do echo "== $f"; tail -n 2 "$f" | cut -c1-400; done
