#!/usr/bin/env bash
# Short GPU training runs of the paper's tasks, recorded in docs/results.md.
# All runs of a group share one GPU at the same time (each step is latency-bound, so they fit
# side by side); each stops after MINUTES of training and can be resumed later with the same
# command (the checkpoint is in its output folder).
# Usage: bash scripts/gpu_task_runs.sh GROUP[,GROUP...] MINUTES
#   a GROUP may also be one task's run, TASK_MODEL (e.g. nth_farthest_stm, rar_lstm).
#   AR_RUNS (default "14:stm 14:lstm 24:stm 24:lstm") picks the associative_retrieval runs
#   (pairs:model).
#   GROUP: associative_retrieval | synthetic | geometry | hull_tsp | graphs_fixed | babi | atari
#   associative_retrieval: STM and LSTM at 14 pairs (31 tokens) and 24 pairs (51 tokens).
#   hull_tsp: convex hull and TSP trained on fixed point counts (TRAIN_POINTS, default 5,10).
#   hull_tsp_n: convex hull and TSP, STM and LSTM, one run per N of SIZES (default "5 10"),
#   trained and tested on that N (run folders <task>_<N>-<model>, exported as
#   pretrained/<task>_<N>). Every batch is padded to at most 4 lengths (--step-buckets), so a
#   run compiles at most 4 training programs whatever the point counts.
#   graphs_fixed: shortest path and MST on graphs of one size (N_NODES 10, N_EDGES 20 by
#   default: one compile instead of 18).
# STM_CONFIG='{"unroll": true}' (with XLA_FLAGS set for command buffers) gives the STM runs the
# fastest jax settings of docs/performance.md.
# jax keeps compiled steps in JAX_COMPILATION_CACHE_DIR (default $RUNS/jax_cache), so a resumed
# run on the same machine skips most compilation.
set -u
group=${1:?group}; minutes=${2:?minutes}
root=${RUNS:-runs/gpu}; mkdir -p "$root"
export XLA_PYTHON_CLIENT_PREALLOCATE=false KERAS_BACKEND=${KERAS_BACKEND:-jax} PYTHONUNBUFFERED=1
# The scripts import the installed keras_stm; on a machine without `pip install -e .` (the GPU
# machine) the checkout itself, from the repository root.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$root/jax_cache}
pids=()
launch() {  # name, script, extra args... (STM_CONFIG, a JSON object, goes to --model stm runs)
  local name=$1 script=$2; shift 2
  local extra=()
  [[ " $* " == *" --model stm "* && -n "${STM_CONFIG:-}" ]] && extra=(--stm-config "$STM_CONFIG")
  python3 "examples/$script" --output-dir "$root/$name" --max-minutes "$minutes" --verbose 2 "$@" "${extra[@]}" > "$root/$name.log" 2>&1 &
  pids+=($!)
}
for g in ${group//,/ }; do  # refuse an unknown group before anything starts
  case $g in associative_retrieval|synthetic|geometry|hull_tsp|hull_tsp_n|graphs_fixed|babi|atari|*_stm|*_lstm) ;;
    *) echo "unknown group $g" >&2; exit 2 ;; esac
done
for group in ${group//,/ }; do
case $group in
  associative_retrieval)
    for run in ${AR_RUNS:-14:stm 14:lstm 24:stm 24:lstm}; do
      pairs=${run%:*}; model=${run#*:}
      launch "associative_retrieval_$pairs-$model" associative_retrieval.py --model "$model" \
        --num-pairs "$pairs"
    done ;;
  synthetic)
    for model in stm lstm; do
      launch "associative_retrieval-$model" associative_retrieval.py --model $model
      launch "copy-$model" copy_task.py --model $model
      launch "priority_sort-$model" priority_sort.py --model $model
      launch "rar-$model" rar.py --model $model
      launch "nth_farthest-$model" nth_farthest.py --model $model
    done ;;
  geometry)
    for model in stm lstm; do
      launch "convex_hull-$model" convex_hull.py --model $model
      launch "tsp-$model" tsp.py --model $model
      launch "shortest_path-$model" shortest_path.py --model $model
      launch "minimum_spanning_tree-$model" minimum_spanning_tree.py --model $model
    done ;;
  hull_tsp)
    for model in stm lstm; do
      launch "convex_hull-$model" convex_hull.py --model $model --train-points "${TRAIN_POINTS:-5,10}"
      launch "tsp-$model" tsp.py --model $model --train-points "${TRAIN_POINTS:-5,10}"
    done ;;
  hull_tsp_n)
    for n in ${SIZES:-5 10}; do
      for model in stm lstm; do
        for task in convex_hull tsp; do
          launch "${task}_$n-$model" $task.py --model $model --train-points "$n" --n-points "$n"
        done
      done
    done ;;
  graphs_fixed)
    for model in stm lstm; do
      for task in shortest_path minimum_spanning_tree; do
        launch "$task-fixed-$model" $task.py --model $model --n-nodes "${N_NODES:-10}" \
          --n-edges "${N_EDGES:-20}"
      done
    done ;;
  babi)
    launch "babi-stm" babi.py --data "${BABI_DATA:-shared/data/babi/babi_tasks_1-20_v1-2.tar.gz}" --allow-partial ;;
  atari)
    for core in stm lstm; do launch "atari_pong-$core" atari_pong.py --model $core --frame-skip 32; done ;;
  *_stm|*_lstm)  # one task's run: e.g. nth_farthest_stm, priority_sort_lstm
    task=${group%_*}; model=${group##*_}
    launch "$task-$model" "$([ "$task" = copy ] && echo copy_task || echo "$task").py" --model "$model" ;;
  *) echo "unknown group $group" >&2; exit 2 ;;
esac
done
for pid in "${pids[@]}"; do wait "$pid"; done
for log in "$root"/*.log; do echo "== $log"; tail -n 3 "$log"; done
exit 0
