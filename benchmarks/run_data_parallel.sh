#!/usr/bin/env bash
# Data-parallel speed-up under jax (keras.distribution.DataParallel), recorded in
# docs/performance.md: the same configuration on 1 and on N GPUs of one machine at the same
# global batch, in one session, then one task script trained with and without --data-parallel.
# JSON lines go to ${OUT:-runs/bench}/data_parallel.jsonl.
# Usage (machine of 2+ GPUs, keras wheels installed):
#   bash benchmarks/run_data_parallel.sh [config] [global batches] [devices]
set -u
out=${OUT:-runs/bench}; mkdir -p "$out"; log="$out/data_parallel.jsonl"
config=${1:-associative_retrieval}; batches=${2:-128,1024,4096}; devices=${3:-2}
export KERAS_BACKEND=jax XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
# The scripts import the installed keras_stm; on a machine without `pip install -e .` (the GPU
# machine) the checkout itself, from the repository root.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpus.txt" 2>&1
for batch in ${batches//,/ }; do
  for n in 1 "$devices"; do
    python3 benchmarks/cell_throughput.py --configs "$config" --batch "$batch" --devices "$n" \
      --repeats 10 --output "$log"
  done
done
# The task script itself: 1 GPU (only one visible) against --data-parallel over all of them.
steps=${STEPS:-200}
CUDA_VISIBLE_DEVICES=0 python3 "examples/$config.py" --iterations $((3 * steps)) \
  --steps-per-epoch "$steps" --output-dir "$out/example_1gpu" --fresh --verbose 2 > "$out/example_1gpu.log" 2>&1
python3 "examples/$config.py" --iterations $((3 * steps)) --steps-per-epoch "$steps" \
  --data-parallel --output-dir "$out/example_${devices}gpu" --fresh --verbose 2 > "$out/example_${devices}gpu.log" 2>&1
tail -n 4 "$out"/example_*gpu.log
exit 0
