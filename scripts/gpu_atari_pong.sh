#!/usr/bin/env bash
# Issue 21: the STM and LSTM Pong agents trained side by side at frame skip 32 on one GPU for
# MINUTES, then published (weights + counters) so that the next GPU session continues them.
# Usage, on the GPU machine from the repository root, `.whl_atari` carried
# (scripts/gpu_wheels_atari.sh downloads it here):
#   bash scripts/gpu_atari_pong.sh MINUTES DEST
#   - installs gymnasium / ale-py from .whl_atari when the machine lacks them;
#   - each agent resumes its checkpoint in $RUNS/pong_<model> (default runs/gpu; kept between
#     calls on a warm machine), or else continues the committed pretrained/pong_<model>
#     (--continue-from: weights, frame counter, games, fresh optimizer), or else starts;
#   - runs both through scripts/gpu_session.sh (hard stop at MINUTES + 2 minutes), which packs
#     the records (results.json, history.csv, episodes.csv, reward_curve.png, logs) into
#     DEST/runs.tgz.part*;
#   - exports both agents (scripts/export_pretrained.py) into DEST/pretrained.tgz.part*.
# Here: `cat DEST/pretrained.tgz.part* | tar -xz -C pretrained` (then commit pretrained/pong_*)
# and `cat DEST/runs.tgz.part* | tar -xz -C runs/gpu`.
# FRAMES (default 20000000) is each agent's frame budget; MODELS (default "stm lstm"); EXTRA:
# flags added to both runs (a CPU smoke test of this script:
# EXTRA="--quick --num-envs 2 --iterations 2" RUNS=/tmp/pong bash scripts/gpu_atari_pong.sh 0.1 /tmp/out).
set -u
minutes=${1:?minutes}; dest=${2:?destination}
mkdir -p "$dest"
if ! python3 -c "import gymnasium, ale_py" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl_atari/*.whl || { echo "no gymnasium/ale-py: carry .whl_atari" >&2; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export RUNS=${RUNS:-runs/gpu}
mkdir -p "$RUNS"
spec="$RUNS/atari_pong.spec"
: > "$spec"
for m in ${MODELS:-stm lstm}; do
  extra=""
  if [ ! -f "$RUNS/pong_$m/checkpoints/latest.json" ] \
     && [ -f "pretrained/pong_$m/checkpoint_state.json" ]; then
    extra="--continue-from pong_$m"
  fi
  echo "pong_$m atari_pong.py --model $m --frame-skip 32 --num-envs 16 --async-envs" \
       "--frames ${FRAMES:-20000000} $extra ${EXTRA:-}" >> "$spec"
done
cat "$spec"
bash scripts/gpu_session.sh "$spec" "$minutes" "$dest"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
published=$(mktemp -d)
for m in ${MODELS:-stm lstm}; do
  run="$RUNS/pong_$m"
  [ -f "$run/results.json" ] || { echo "pong_$m: no results.json, not exported"; continue; }
  minutes_so_far=$(python3 -c "import json; print(round(json.load(open('$run/results.json'))['train_seconds'] / 60, 1))")
  python3 scripts/export_pretrained.py "$run" "pong_$m" --root "$published" \
    --gpu-minutes "$minutes_so_far" --commit "$commit" \
    --command "bash scripts/gpu_atari_pong.sh $minutes DEST ($(grep "^pong_$m " "$spec" | cut -d' ' -f2-))" \
    --note "STM and LSTM agents trained side by side on one GPU (16 async envs each); gpu_minutes: training time of all sessions" \
    || echo "pong_$m: export failed"
done
tar -czf - -C "$published" . | split -b 15m -d - "$dest/pretrained.tgz.part"
ls -la "$dest"
