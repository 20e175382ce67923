"""Kernel profile of keras-stm's jax training step on a GPU.

Times the stateless jitted training step of `cell_throughput.py` (`--train-step stateless`) for
each configuration, then records 3 iterations with CUPTI (through `torch.profiler`, so the GPU
machine's CUDA build of torch must be installed) and prints the GPU busy time per iteration
(the sum of kernel and copy durations), the number of kernels and copies per iteration, and the
kernels that take the most time. The full table of each configuration goes to
`OUTPUT_DIR/prof_<config>.txt`.

A GPU busy time well below the wall-clock time means the host (launching thousands of small
kernels) and not the GPU sets the pace.

Example (GPU machine):
  python benchmarks/profile_jax_step.py --configs copy,nth_farthest --unroll --output-dir runs/prof
  XLA_FLAGS="--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,WHILE,CONDITIONAL \
--xla_gpu_graph_min_graph_size=1" \
    python benchmarks/profile_jax_step.py --configs nth_farthest --unroll
"""

import argparse
import json
import os
import time


def parse(argv=None):
    from configs import CONFIGS

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default="copy,nth_farthest,associative_retrieval")
    parser.add_argument(
        "--unroll", action="store_true", help="Unroll the time loop (STM(unroll=True))."
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--output-dir", default=".")
    args = parser.parse_args(argv)
    for name in args.configs.split(","):
        if name not in CONFIGS:
            parser.error(f"unknown config {name!r}; choose from {sorted(CONFIGS)}")
    if args.batch <= 0:
        parser.error("--batch must be positive")
    return args


def main(argv=None):
    args = parse(argv)
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    os.environ["KERAS_BACKEND"] = "jax"
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile

    torch.zeros(1, device="cuda")  # CUPTI needs a CUDA context
    import cell_throughput
    import keras
    import numpy as np
    from configs import CONFIGS

    os.makedirs(args.output_dir, exist_ok=True)
    for name in args.configs.split(","):
        keras.utils.clear_session()
        cell_throughput.set_precision("highest")
        model = cell_throughput.build_model(name, "stm", args.batch, unroll=args.unroll)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
        d_in, d_out = CONFIGS[name][:2]
        steps = CONFIGS[name][5]
        rng = np.random.default_rng(0)
        x = rng.random((args.batch, steps, d_in)).astype("float32")
        y = rng.random((args.batch, d_out)).astype("float32")
        step = cell_throughput.stateless_trainer(model, x, y)
        start = time.perf_counter()
        step()
        compile_s = time.perf_counter() - start
        for _ in range(3):
            step()
        times = []
        for _ in range(10):
            start = time.perf_counter()
            step()
            times.append(1000 * (time.perf_counter() - start))
        times.sort()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                step()
        events = prof.key_averages()
        busy = sum(e.self_device_time_total for e in events) / 3 / 1000
        kernels = sum(e.count for e in events) / 3
        print(
            json.dumps(
                {
                    "config": name,
                    "unroll": args.unroll,
                    "stateless_ms": times[5],
                    "min_ms": times[0],
                    "gpu_busy_ms": busy,
                    "kernels_per_iteration": kernels,
                    "compile_s": compile_s,
                    "xla_flags": os.environ.get("XLA_FLAGS", ""),
                    "device": torch.cuda.get_device_name(0),
                }
            ),
            flush=True,
        )
        for e in sorted(events, key=lambda e: -e.self_device_time_total)[:15]:
            print(
                f"  {e.key[:60]:60s} {e.self_device_time_total / 3000:7.3f} ms  "
                f"n={e.count / 3:5.0f}  avg={e.self_device_time_total / max(e.count, 1):7.2f} us"
            )
        with open(os.path.join(args.output_dir, f"prof_{name}.txt"), "w") as f:
            f.write(
                events.table(sort_by="self_cuda_time_total", row_limit=40, max_name_column_width=70)
            )


if __name__ == "__main__":
    main()
