"""Training-step time and peak memory of keras-stm for the paper's configurations.

Protocol (shared/docs/performance_notes.md): one iteration = batch 128, the cell run over T steps
from its initial state, a loss on the last step's output, backward through all steps, one Adam
update; median of `--repeats` timed iterations after warm-up, the device synchronised (the loss is
fetched) before each clock read. Runs under the current `KERAS_BACKEND`, on CPU or GPU.

Implementations:
  stm  `keras_stm.STM` (input projections hoisted out of the loop, read-out after it)
  rnn  `keras.layers.RNN(keras_stm.STMCell(...))`, the portable per-step cell
`--loop` passes the STM layer's `loop` (auto, dense, low_rank: how its time loop runs).

Synchronisation (`--sync`): `iteration` (default, the protocol above); `end` times the
iterations back to back and synchronises once at the end (pipelined throughput: the host
dispatches the next step while the device runs this one). `end` needs `--train-step stateless`;
`official_style_torch.py --sync end` times the baseline the same way, and
`summarize.py` compares each row with the baseline of its own `sync`.

Training step (`--train-step`):
  keras      `model.train_on_batch` (default): Keras' own step, with its per-call host work
             (input conversion, state sync, logs).
  fit        `model.fit`, the way users train: arrays of `--repeats` batches (one random batch
             repeated), one warm-up `fit` call over `max(1, --warmup)` batches (compilation;
             its time is `compile_s`), then `--fit-calls` timed calls
             `fit(x, y, batch_size=--batch, epochs=1, verbose=0, shuffle=False)` of `--repeats`
             steps each; `ms` = the median call's time / `--repeats` (`min_ms` the fastest
             call's). The host may run ahead of the device inside a call; the loss is fetched
             at its end. Rows record `"sync": "fit"`.
  stateless  jax only: Keras' stateless API in one `jax.jit` function (the pattern of Keras'
             "training loop from scratch in JAX" guide): `model.stateless_call`, `jax.grad`,
             `optimizer.stateless_apply`; the same model, loss and Adam update, inputs already
             on the device, state donated between steps.

Library version: every row records which `keras_stm` ran (`keras_stm_version`, `keras_stm_path`,
`keras_stm_commit`: `$KERAS_STM_COMMIT` if set, else the commit of a git checkout whose root holds
the package) and `--code-version LABEL` as `code_version`, so rows of two versions of the library
timed in one run can be told apart (`run_before_after.sh`). `--loop` reaches the STM only where
its constructor takes `loop` (since issue 22); an older library runs with its own loop defaults
(the row records `"loop": "n/a (library without loop=)"`).

Precision: `highest` = true float32 matmuls; `tf32` = TF32 allowed; `bf16` = mixed_bfloat16 policy.

Data parallelism (jax): `--devices N` replicates the model over the first N local accelerators
with `keras.distribution.DataParallel` and splits each batch of `--batch` (the global batch)
between them; run it with `--devices 1` and `--devices N` in one session for the speed-up at the
same global batch.

Example:
  KERAS_BACKEND=jax python benchmarks/cell_throughput.py --configs copy --impl stm \
      --precision highest
  KERAS_BACKEND=jax python benchmarks/cell_throughput.py --configs copy --batch 1024 --devices 2
  KERAS_BACKEND=torch python benchmarks/cell_throughput.py --configs copy --train-step fit \
      --repeats 20
"""

import argparse
import inspect
import json
import os
import platform
import resource
import subprocess
import time

PRECISIONS = ("highest", "tf32", "bf16")


def set_precision(precision):
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jax.config.update(
            "jax_default_matmul_precision", "highest" if precision == "highest" else "tensorfloat32"
        )
    elif backend == "torch":
        import torch

        torch.backends.cuda.matmul.allow_tf32 = precision != "highest"
        torch.backends.cudnn.allow_tf32 = precision != "highest"
    elif backend == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(precision != "highest")
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bf16" else "float32")


def device_info():
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        return {"device": dev.device_kind, "platform": dev.platform, "jax": jax.__version__}
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return {
                "device": torch.cuda.get_device_name(0),
                "platform": "gpu",
                "torch": torch.__version__,
            }
        return {
            "device": platform.processor() or "cpu",
            "platform": "cpu",
            "torch": torch.__version__,
        }
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return {
        "device": gpus[0].name if gpus else "cpu",
        "platform": "gpu" if gpus else "cpu",
        "tensorflow": tf.__version__,
    }


def reset_peak():
    import keras

    if keras.backend.backend() == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()


def peak_memory_gib():
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            stats = jax.devices()[0].memory_stats()
            if stats and "peak_bytes_in_use" in stats:
                return stats["peak_bytes_in_use"] / 2**30
        if backend == "torch":
            import torch

            if torch.cuda.is_available():
                return torch.cuda.max_memory_allocated() / 2**30
    except Exception:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS


IMPLS = ("stm", "rnn")


def stm_takes_loop():
    """Whether this `keras_stm.STM` takes `loop` (the library since issue 22; before it, the
    loop had several options of its own, left at their defaults here)."""
    import keras_stm

    return "loop" in inspect.signature(keras_stm.STM.__init__).parameters


def build_model(name, impl, batch, unroll=False, loop="auto"):
    import keras
    from configs import CONFIGS
    from configs import stm_arguments

    import keras_stm

    d_in, d_out, *_ = CONFIGS[name]
    steps = CONFIGS[name][5]
    inputs = keras.Input(batch_shape=(batch, steps, d_in))
    if impl == "stm":
        arguments = dict(stm_arguments(name), unroll=unroll, name="stm")
        if stm_takes_loop():
            arguments["loop"] = loop
        elif loop != "auto":
            raise ValueError(
                f"loop={loop!r}: the STM of {keras_stm.__file__} takes no `loop` argument."
            )
        outputs = keras_stm.STM(**arguments)(inputs)
    else:
        outputs = keras.layers.RNN(
            keras_stm.STMCell(**stm_arguments(name)), unroll=unroll, name="rnn"
        )(inputs)
    outputs = keras.layers.Activation("linear", dtype="float32")(outputs)
    return keras.Model(inputs, outputs)


def library_info():
    """Which `keras_stm` was imported: version, source folder and commit where known."""
    import keras_stm

    package = os.path.dirname(os.path.abspath(keras_stm.__file__))
    commit = os.environ.get("KERAS_STM_COMMIT") or git_commit(os.path.dirname(package))
    return {
        "keras_stm_version": keras_stm.__version__,
        "keras_stm_path": package,
        "keras_stm_commit": commit,
    }


def git_commit(root):
    """The HEAD commit of the git checkout rooted at `root` (with `+uncommitted` when its
    `keras_stm/` differs from it), or None: not a checkout's root (an extracted copy inside
    another checkout must not take that checkout's commit), or no git."""

    def git(*args):
        result = subprocess.run(
            ["git", "-C", root, *args], capture_output=True, text=True, timeout=30
        )
        return result.stdout.strip() if result.returncode == 0 else None

    try:
        top = git("rev-parse", "--show-toplevel")
        if not top or os.path.realpath(top) != os.path.realpath(root):
            return None
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--", "keras_stm")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}+uncommitted" if commit and changed else commit


def set_devices(devices):
    """Data-parallel over the first `devices` accelerators (jax); None leaves the default."""
    import keras

    if devices is None:
        return
    if keras.backend.backend() != "jax":
        raise ValueError(
            "--devices uses keras.distribution, which Keras 3.15 implements for the "
            f"jax backend only, not {keras.backend.backend()!r}."
        )
    available = keras.distribution.list_devices()
    if devices > len(available):
        raise ValueError(f"--devices {devices}: only {len(available)} devices ({available}).")
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=available[:devices])
    )


def stateless_trainer(model, x, y, fetch=True):
    """A jitted jax training step on Keras' stateless API; returns `step()` -> the loss, fetched
    to the host (a float: the device is synchronised), or with `fetch=False` the device array
    (the host may run ahead; `jax.block_until_ready` on it waits for the step)."""
    import jax
    import keras

    optimizer = model.optimizer
    loss_fn = keras.losses.MeanSquaredError()
    optimizer.build(model.trainable_variables)

    def compute_loss(trainable, non_trainable, x, y):
        prediction, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss_fn(y, prediction), non_trainable

    gradient_fn = jax.value_and_grad(compute_loss, has_aux=True)

    def train_step(state, x, y):
        trainable, non_trainable, optimizer_variables = state
        (loss, non_trainable), grads = gradient_fn(trainable, non_trainable, x, y)
        trainable, optimizer_variables = optimizer.stateless_apply(
            optimizer_variables, grads, trainable
        )
        return loss, (trainable, non_trainable, optimizer_variables)

    train_step = jax.jit(train_step, donate_argnums=0)
    state = [
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        [v.value for v in optimizer.variables],
    ]
    x, y = jax.device_put(x), jax.device_put(y)

    def step():
        nonlocal state
        loss, state = train_step(state, x, y)
        return float(loss) if fetch else loss  # float(): fetched, the device is synchronised

    return step


def time_fit(model, x, y, batch, repeats, warmup, calls):
    """`model.fit` over arrays of `repeats` copies of the batch `(x, y)`: one warm-up call over
    `max(1, warmup)` batches (compilation), then `calls` timed calls of `repeats` steps.

    Returns `(compile_s, [seconds per step of each timed call], the last loss)`.
    """
    import numpy as np

    copies = max(repeats, warmup, 1)
    xs, ys = np.concatenate([x] * copies), np.concatenate([y] * copies)

    def fit(steps):  # returns once the last loss is on the host: the device has finished
        history = model.fit(
            xs[: steps * batch],
            ys[: steps * batch],
            batch_size=batch,
            epochs=1,
            verbose=0,
            shuffle=False,
        )
        return history.history["loss"][-1]

    start = time.perf_counter()
    fit(max(1, warmup))
    compile_s = time.perf_counter() - start
    reset_peak()
    times, loss = [], None
    for _ in range(calls):
        start = time.perf_counter()
        loss = fit(repeats)
        times.append((time.perf_counter() - start) / repeats)
    return compile_s, times, loss


def time_config(
    name,
    impl,
    precision,
    jit,
    batch,
    repeats,
    warmup,
    devices=None,
    unroll=False,
    loop="auto",
    train_step="keras",
    sync="iteration",
    fit_calls=3,
    code_version=None,
):
    import keras
    import numpy as np
    from configs import CONFIGS

    keras.utils.clear_session()
    set_precision(precision)
    set_devices(devices)
    keras.utils.set_random_seed(0)
    d_in, d_out = CONFIGS[name][:2]
    steps = CONFIGS[name][5]
    model = build_model(name, impl, batch, unroll, loop)
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse", jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, steps, d_in)).astype("float32")
    y = rng.standard_normal((batch, d_out)).astype("float32")
    if train_step == "stateless":
        step = stateless_trainer(model, x, y, fetch=sync == "iteration")
    else:

        def step():
            return model.train_on_batch(x, y)  # returns a host float: the device is synchronised

    times = []
    loss = None
    if train_step == "fit":
        sync = "fit"  # one synchronisation per fit call, at its end
        compile_s, times, loss = time_fit(model, x, y, batch, repeats, warmup, fit_calls)
    else:
        start = time.perf_counter()
        step()
        compile_s = time.perf_counter() - start
        for _ in range(warmup):
            step()
        reset_peak()
    if sync == "end":  # pipelined: back to back, one wait at the end (stateless step only)
        import jax

        start = time.perf_counter()
        for _ in range(repeats):
            loss = step()
        loss = float(jax.block_until_ready(loss))
        times = [(time.perf_counter() - start) / repeats]
    for _ in range(repeats if sync == "iteration" else 0):
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
    times.sort()
    if impl != "stm":
        loop = "cell"
    elif not stm_takes_loop():
        loop = "n/a (library without loop=)"
    extra = {"fit_calls": fit_calls, "steps_per_fit_call": repeats} if train_step == "fit" else {}
    if code_version is not None:
        extra["code_version"] = code_version
    return {
        "impl": impl,
        "config": name,
        "ms": 1000 * times[len(times) // 2],
        "min_ms": 1000 * times[0],
        "peak_gib": peak_memory_gib(),
        "compile_s": compile_s,
        "precision": precision,
        "jit_compile": jit,
        "timesteps": steps,
        "batch": batch,
        "loss_finite": bool(np.isfinite(loss)),
        "backend": keras.backend.backend(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "data_parallel_devices": devices,
        "unroll": unroll,
        "loop": loop,
        "train_step": train_step,
        "sync": sync,
        "keras": keras.__version__,
        **extra,
        **library_info(),
        **device_info(),
    }


def main(argv=None):
    import keras
    from configs import CONFIGS
    from configs import SYNC_HELP
    from configs import SYNC_MODES

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--impl", default="stm", help="Comma list of: stm, rnn.")
    parser.add_argument(
        "--precision", default="highest", help=f"Comma list of: {', '.join(PRECISIONS)}."
    )
    parser.add_argument("--jit-compile", default="auto", choices=("auto", "true", "false"))
    parser.add_argument(
        "--unroll", action="store_true", help="Unroll the time loop (the layer's `unroll=True`)."
    )
    parser.add_argument(
        "--loop",
        default="auto",
        choices=("auto", "dense", "low_rank"),
        help="The STM layer's `loop` (impl stm): how its time loop runs.",
    )
    parser.add_argument(
        "--train-step",
        default="keras",
        choices=("keras", "stateless", "fit"),
        help="keras: model.train_on_batch; stateless: a jitted jax step on "
        "Keras' stateless API (jax only); fit: model.fit calls of --repeats steps "
        "(ms = call time / --repeats).",
    )
    parser.add_argument(
        "--fit-calls",
        type=int,
        default=3,
        help="--train-step fit: timed fit calls after the warm-up call (median taken).",
    )
    parser.add_argument(
        "--code-version",
        default=None,
        help="A label recorded in each row as code_version (e.g. before, after).",
    )
    parser.add_argument(
        "--sync",
        default="iteration",
        choices=SYNC_MODES,
        help=SYNC_HELP + " end needs --train-step stateless (train_on_batch returns host floats).",
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--devices",
        type=int,
        default=None,
        help="jax: data-parallel over the first N accelerators (global batch --batch).",
    )
    parser.add_argument("--output", default=None, help="Append one JSON line per measurement here.")
    args = parser.parse_args(argv)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
    for name in args.configs.split(","):
        if name not in CONFIGS:
            parser.error(f"unknown config {name!r}; choose from {sorted(CONFIGS)}")
    for impl in args.impl.split(","):
        if impl not in IMPLS:
            parser.error(f"unknown --impl {impl!r}")
    for precision in args.precision.split(","):
        if precision not in PRECISIONS:
            parser.error(f"unknown --precision {precision!r}")
    if args.train_step == "stateless":
        if keras.backend.backend() != "jax":
            parser.error(
                f"--train-step stateless needs the jax backend, not {keras.backend.backend()!r}"
            )
        if args.devices is not None:
            parser.error("--train-step stateless does not combine with --devices")
    if args.sync == "end" and args.train_step != "stateless":
        parser.error("--sync end needs --train-step stateless (train_on_batch fetches the loss)")
    if args.batch <= 0 or args.repeats <= 0 or args.fit_calls <= 0:
        parser.error("--batch, --repeats and --fit-calls must be positive")
    if args.devices is not None and (args.devices <= 0 or args.batch % args.devices):
        parser.error(
            f"--devices must be positive and divide --batch {args.batch}, got {args.devices}"
        )
    for name in args.configs.split(","):
        for impl in args.impl.split(","):
            for precision in args.precision.split(","):
                try:
                    result = time_config(
                        name,
                        impl,
                        precision,
                        jit,
                        args.batch,
                        args.repeats,
                        args.warmup,
                        args.devices,
                        args.unroll,
                        args.loop,
                        args.train_step,
                        args.sync,
                        args.fit_calls,
                        args.code_version,
                    )
                except Exception as error:  # record and go on: one config must not lose the others
                    result = {
                        "impl": impl,
                        "config": name,
                        "precision": precision,
                        "train_step": args.train_step,
                        "backend": keras.backend.backend(),
                        "error": repr(error)[:500],
                    }
                    if args.code_version is not None:
                        result["code_version"] = args.code_version
                line = json.dumps(result)
                print(line, flush=True)
                if args.output:
                    with open(args.output, "a") as f:
                        f.write(line + "\n")


if __name__ == "__main__":
    main()
