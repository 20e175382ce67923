#!/usr/bin/env bash
# The GPU benchmark runs recorded in docs/performance.md, in one session on one card:
# the authors'-style baseline, then keras-stm under jax (and torch). JSON lines go to
# ${OUT:-runs/bench}/bench.jsonl. Usage (GPU machine, keras wheels installed):
#   bash benchmarks/run_gpu.sh [configs] [phases]
# phases: comma list of baseline,jax,jaxunroll,jaxstateless,jaxunrollstateless,jaxdense,jaxgraph,
#         jaxconcurrent,pipelined,torch,rnn
# PHASE_TIMEOUT=S stops a phase after S seconds (default: no limit): compiles are long (jax
# unrolled 30-90 s per config), and a stopped phase
# loses only its unfinished rows. JAX_COMPILATION_CACHE_DIR=DIR (jax's own setting) keeps jax
# executables across processes and machines of the same kind: carry DIR to the next call.
set -u
# The benchmarks import the installed keras_stm; on a machine without `pip install -e .` (the GPU
# machine) the checkout itself, from the repository root.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
out=${OUT:-runs/bench}; mkdir -p "$out"; log="$out/bench.jsonl"
configs=${1:-associative_retrieval,copy,nth_farthest,rar,babi}
phases=${2:-baseline,jax,torch,rnn}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
has() { [[ ",$phases," == *",$1,"* ]]; }
t() { timeout "${PHASE_TIMEOUT:-0}" "$@"; }
has baseline && t python3 benchmarks/official_style_torch.py --configs "$configs" --output "$log"
has jax && KERAS_BACKEND=jax t python3 benchmarks/cell_throughput.py --configs "$configs" --impl stm --precision ${JAX_PRECISIONS:-highest,tf32,bf16} --output "$log"
# The time loop unrolled (STM(unroll=True)): no while loop, longer compiles.
has jaxunroll && KERAS_BACKEND=jax t python3 benchmarks/cell_throughput.py --configs "$configs" --impl stm --unroll --precision highest --output "$log"
# Keras' stateless API in one jitted jax step (no train_on_batch host work per call).
has jaxstateless && KERAS_BACKEND=jax t python3 benchmarks/cell_throughput.py --configs "$configs" --impl stm --train-step stateless --precision highest --output "$log"
has jaxunrollstateless && KERAS_BACKEND=jax t python3 benchmarks/cell_throughput.py --configs "$configs" --impl stm --unroll --train-step stateless --precision highest --output "$log"
# The dense relational-memory loop (Mr carried in the loop), for the gain of the low-rank loop.
has jaxdense && KERAS_BACKEND=jax t python3 benchmarks/cell_throughput.py --configs "$configs" --impl stm --loop dense --precision highest --output "$log"
# XLA runs the whole time loop as CUDA graphs (fewer kernel launches); recorded as its own variant.
COMMAND_BUFFERS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,WHILE,CONDITIONAL --xla_gpu_graph_min_graph_size=1"
has jaxgraph && XLA_FLAGS="$COMMAND_BUFFERS" \
  KERAS_BACKEND=jax t python3 benchmarks/cell_throughput.py --configs "$configs" --impl stm --precision highest,bf16 --output "$log"
# The fastest jax setting measured (session 8): the unrolled stateless step, as CUDA graphs whose
# independent kernels run concurrently (benchmarks/check_xla_flags.py checks these flags).
has jaxconcurrent && XLA_FLAGS="$COMMAND_BUFFERS --xla_gpu_command_buffer_scheduling_mode=CONCURRENT" KERAS_BACKEND=jax t python3 benchmarks/cell_throughput.py --configs "$configs" --impl stm --unroll --train-step stateless --precision highest --output "$log"
# Pipelined throughput (--sync end: iterations back to back, one synchronisation), the baseline
# and jax's unrolled stateless step timed the same way; summarize.py pairs rows by sync mode.
has pipelined && t python3 benchmarks/official_style_torch.py --configs "$configs" --sync end --output "$log"
has pipelined && KERAS_BACKEND=jax t python3 benchmarks/cell_throughput.py --configs "$configs" --impl stm --unroll --train-step stateless --sync end --precision highest --output "$log"
has torch && KERAS_BACKEND=torch t python3 benchmarks/cell_throughput.py --configs "$configs" --impl stm --precision highest,tf32 --output "$log"
has rnn && KERAS_BACKEND=jax t python3 benchmarks/cell_throughput.py --configs copy --impl rnn --precision highest --output "$log"
exit 0
