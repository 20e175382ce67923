#!/usr/bin/env bash
# The GPU benchmark run recorded in docs/performance.md: the authors'-style baseline and keras-stm
# under jax and torch, in one session on one card. Writes JSON lines to ${OUT:-runs/bench}/bench.jsonl.
# Usage (GPU machine, keras wheels installed): bash benchmarks/run_gpu.sh [configs]
set -u
out=${OUT:-runs/bench}; mkdir -p "$out"; log="$out/bench.jsonl"
configs=${1:-associative_retrieval,copy,nth_farthest,rar,babi}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
python3 benchmarks/official_style_torch.py --configs "$configs" --output "$log"
KERAS_BACKEND=jax python3 benchmarks/cell_throughput.py --configs "$configs" --impl stm --precision highest,tf32,bf16 --output "$log"
KERAS_BACKEND=torch python3 benchmarks/cell_throughput.py --configs "$configs" --impl stm --precision highest,tf32 --output "$log"
KERAS_BACKEND=jax python3 benchmarks/cell_throughput.py --configs copy --impl rnn --precision highest --output "$log"
