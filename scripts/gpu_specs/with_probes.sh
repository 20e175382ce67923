#!/usr/bin/env bash
# One GPU call: a spec's training runs (scripts/gpu_session.sh) and, side by side, Nth-farthest
# probes at the task's STM size (scripts/nth_farthest_probe.py, jax): V vectors x D dimensions
# for each "V D [CURRICULUM [ADVANCE]]" in PROBES (';'-separated; CURRICULUM is
# --dims-curriculum's value, ADVANCE --advance-accuracy's; none by default). Curves and logs
# go to $RUNS/probe/, packed into DEST/probe.tgz (one file: the device tool brings back at most
# 8). Session 15 ran it with scripts/gpu_specs/session15.txt.
# Usage: RUNS=runs/g16 [PROBES=...] bash scripts/gpu_specs/with_probes.sh SPEC MINUTES DEST
set -u
spec=${1:?spec file}; minutes=${2:?minutes}; dest=${3:?destination}
probes="${RUNS:-runs/gpu}/probe"
mkdir -p "$dest" "$probes"
export XLA_PYTHON_CLIENT_PREALLOCATE=false KERAS_BACKEND=jax PYTHONUNBUFFERED=1
probe_pids=()
while read -r v d c a; do
  [ -z "$v" ] && continue
  name="stm128_v${v}d${d}${c:+_curriculum}${a:+_advance}"
  XLA_PYTHON_CLIENT_MEM_FRACTION=0.015 timeout -k 10 $(( ${minutes%.*} * 60 + 120 )) \
    python3 scripts/nth_farthest_probe.py --num-vectors "$v" --num-dims "$d" \
    --minutes "$minutes" --every 500 ${c:+--dims-curriculum "$c"} ${a:+--advance-accuracy "$a"} \
    --output "$probes/$name.json" > "$probes/$name.log" 2>&1 &
  probe_pids+=($!)
done <<< "$(echo "${PROBES:-}" | tr ";" "\n")"
bash scripts/gpu_session.sh "$spec" "$minutes" "$dest"
for pid in "${probe_pids[@]}"; do wait "$pid"; done
for f in "$probes"/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 2 "$f" | cut -c1-400; }; done
tar -czf "$dest/probe.tgz" -C "$probes" . 2>/dev/null
