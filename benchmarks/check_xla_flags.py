"""Check that XLA flags leave a jax training step's numbers unchanged, on the GPU (or CPU).

The fastest jax settings in docs/performance.md set `XLA_FLAGS`: command buffers (CUDA graphs)
with `--xla_gpu_command_buffer_scheduling_mode=CONCURRENT`, which lets independent kernels of
the step (the weight gradients, beside the recurrent chain) run at the same time. The flags
change how XLA schedules the step, not what it computes. This script checks that: for each
configuration it runs the same `keras_stm.STM` training step (`unroll=True`, true float32,
Keras' stateless API in one `jax.jit`, as `cell_throughput.py --train-step stateless`) in
processes of their own, one with `--flags`, one with `XLA_FLAGS` empty, and a float64 one (no
flags) from the same initial weights, and compares

* the gradient of every weight at the initial weights. Two float32 programs that fuse and
  order their sums differently need not agree bit for bit, so each is measured against the
  float64 gradient: the check asks that the flagged step's error be at most `--error-ratio`
  times the unflagged one's (plus 1e-7 of the tensor's largest entry);
* the loss, and the losses of `--steps` Adam steps that follow, to `--tolerance`.

It prints one JSON line per configuration (errors relative to each tensor's largest entry)
and exits with status 1 on a failure. XLA flags are read when jax starts, hence the separate
processes. On a CPU the GPU flags have no effect and the script checks its own plumbing.

Example (GPU machine):
  python benchmarks/check_xla_flags.py --configs nth_farthest,copy --timesteps 12
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from configs import CONFIGS

CONCURRENT_COMMAND_BUFFERS = (
    "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,WHILE,CONDITIONAL "
    "--xla_gpu_graph_min_graph_size=1 --xla_gpu_command_buffer_scheduling_mode=CONCURRENT"
)


def run_child(config, batch, timesteps, steps, path, float64=False, weights=None):
    """One process: the loss and gradients at the initial weights, then `steps` Adam steps
    (float32), saved to `path` with the initial weights. `float64=True` computes the loss and
    gradients in float64 from the initial weights saved at `weights`, with no Adam steps."""
    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    if float64:
        jax.config.update("jax_enable_x64", True)
    import keras
    import numpy as np
    from cell_throughput import stateless_trainer
    from configs import stm_arguments

    import keras_stm

    jax.config.update("jax_default_matmul_precision", "highest")
    dtype = "float64" if float64 else "float32"
    keras.config.set_floatx(dtype)
    keras.utils.set_random_seed(0)
    d_in, d_out = CONFIGS[config][:2]
    timesteps = timesteps or CONFIGS[config][5]
    inputs = keras.Input(batch_shape=(batch, timesteps, d_in), dtype=dtype)
    outputs = keras_stm.STM(**stm_arguments(config), unroll=True, name="stm", dtype=dtype)(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    if weights is not None:
        saved = np.load(weights)
        for i, variable in enumerate(model.trainable_variables):
            variable.assign(saved[f"weight_{i}"].astype(dtype))
    initial = [np.asarray(v.value) for v in model.trainable_variables]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, timesteps, d_in)).astype(dtype)
    y = rng.standard_normal((batch, d_out)).astype(dtype)
    loss_fn = keras.losses.MeanSquaredError(dtype=dtype)

    def loss(trainable):
        prediction, _ = model.stateless_call(
            trainable, [v.value for v in model.non_trainable_variables], x, training=True
        )
        return loss_fn(y, prediction)

    value, grads = jax.jit(jax.value_and_grad(loss))([v.value for v in model.trainable_variables])
    losses = []
    if not float64:
        step = stateless_trainer(model, x, y)
        losses = [step() for _ in range(steps)]
    np.savez(
        path,
        loss=np.asarray(value),
        losses=np.asarray(losses, dtype="float64"),
        **{f"grad_{i}": np.asarray(g) for i, g in enumerate(grads)},
        **{f"weight_{i}": w for i, w in enumerate(initial)},
    )
    return jax.devices()[0].device_kind


def relative_difference(a, b):
    """max |a - b| over the largest magnitude of `b` (0 when both are zero)."""
    import numpy as np

    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    difference = float(np.max(np.abs(a - b))) if b.size else 0.0
    return difference / scale if scale > 0 else difference


def judge(flagged, plain, reference, error_ratio, tolerance):
    """The row's verdict from the three runs' arrays (see the module docstring)."""
    import numpy as np

    names = sorted(k for k in plain if k.startswith("grad_"))
    flagged_error = {k: relative_difference(flagged[k], reference[k]) for k in names}
    plain_error = {k: relative_difference(plain[k], reference[k]) for k in names}
    worst = max(names, key=lambda k: flagged_error[k] - error_ratio * plain_error[k])
    row = {
        "gradients": len(names),
        "gradient_max_rel_diff": max(relative_difference(flagged[k], plain[k]) for k in names),
        "flagged_vs_float64": max(flagged_error.values()),
        "plain_vs_float64": max(plain_error.values()),
        "worst_gradient": {
            "index": int(worst[5:]),
            "flagged_vs_float64": flagged_error[worst],
            "plain_vs_float64": plain_error[worst],
        },
        "loss_rel_diff": relative_difference(flagged["loss"], plain["loss"]),
        "adam_losses_max_rel_diff": relative_difference(flagged["losses"], plain["losses"]),
        "error_ratio": error_ratio,
        "tolerance": tolerance,
    }
    gradients_ok = all(flagged_error[k] <= error_ratio * plain_error[k] + 1e-7 for k in names)
    row["ok"] = bool(
        gradients_ok
        and row["loss_rel_diff"] <= tolerance
        and row["adam_losses_max_rel_diff"] <= tolerance
        and np.all(np.isfinite(flagged["losses"]))
    )
    return row


def compare(config, batch, timesteps, steps, flags, error_ratio, tolerance):
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        results, device = {}, None
        plain_path = os.path.join(tmp, "plain.npz")
        for name, xla_flags, extra in (
            ("plain", "", []),
            ("flagged", flags, []),
            ("float64", "", ["--float64", "--weights", plain_path]),
        ):
            path = os.path.join(tmp, f"{name}.npz")
            env = dict(os.environ, XLA_FLAGS=xla_flags, KERAS_BACKEND="jax")
            command = [
                sys.executable,
                os.path.abspath(__file__),
                "--child",
                path,
                "--configs",
                config,
                "--batch",
                str(batch),
                "--timesteps",
                str(timesteps),
                "--steps",
                str(steps),
                *extra,
            ]
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(
                    f"{config}, {name} run (XLA_FLAGS={xla_flags!r}) failed:\n{done.stderr[-3000:]}"
                )
            device = done.stdout.strip().splitlines()[-1]
            results[name] = dict(np.load(path))
    flagged, plain = results["flagged"], results["plain"]
    same_start = all(np.array_equal(flagged[k], plain[k]) for k in plain if k.startswith("weight_"))
    if not same_start:
        raise RuntimeError(f"{config}: the two float32 runs did not start from the same weights.")
    row = {
        "config": config,
        "device": device,
        "batch": batch,
        "timesteps": timesteps or CONFIGS[config][5],
        "xla_flags": flags,
    }
    row.update(judge(flagged, plain, results["float64"], error_ratio, tolerance))
    return row


def positive_int(text):
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--configs", default="nth_farthest,copy", help="Comma list of " + ", ".join(CONFIGS)
    )
    parser.add_argument(
        "--flags", default=CONCURRENT_COMMAND_BUFFERS, help="The XLA_FLAGS to check."
    )
    parser.add_argument("--batch", type=positive_int, default=32)
    parser.add_argument(
        "--timesteps",
        type=int,
        default=0,
        help="Steps per sequence (0: the configuration's own T).",
    )
    parser.add_argument(
        "--steps", type=positive_int, default=3, help="Adam steps after the gradient check."
    )
    parser.add_argument(
        "--error-ratio",
        type=float,
        default=2.0,
        help="How much larger than the unflagged step's error (against float64) the "
        "flagged step's gradient error may be.",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-5,
        help="Relative tolerance of the loss and of the Adam steps' losses.",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--float64", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [c for c in args.configs.split(",") if c not in CONFIGS]
    if unknown:
        parser.error(f"--configs: unknown {unknown}; choose from {sorted(CONFIGS)}")
    if args.timesteps < 0:
        parser.error(
            f"--timesteps must be 0 (the configuration's T) or positive, got {args.timesteps}"
        )
    if not args.tolerance > 0:
        parser.error(f"--tolerance must be positive, got {args.tolerance}")
    if not args.error_ratio >= 1:
        parser.error(f"--error-ratio must be at least 1, got {args.error_ratio}")
    return args


def main(argv=None):
    args = parse(argv)
    if args.child:
        print(
            run_child(
                args.configs,
                args.batch,
                args.timesteps,
                args.steps,
                args.child,
                args.float64,
                args.weights,
            )
        )
        return 0
    ok = True
    for config in args.configs.split(","):
        row = compare(
            config,
            args.batch,
            args.timesteps,
            args.steps,
            args.flags,
            args.error_ratio,
            args.tolerance,
        )
        print(json.dumps(row), flush=True)
        ok = ok and row["ok"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
