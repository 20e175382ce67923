"""Check the fastest torch setting against the eager one, on the GPU (or CPU).

`keras_stm.STM(torch_compile="loop", torch_compile_mode="reduce-overhead")` compiles the whole
time loop (`--torch-compile layer`: the layer's whole computation) and replays it as CUDA graphs, whose outputs live in a memory pool that the next replay
overwrites. This script compares it with the eager `STM` (same weights, true float32):

* `predict` over three batches, with the returned memories (states kept across replays);
* the gradients of one batch;
* two epochs of `fit` (same data order): the losses.

It prints one JSON line and exits with status 1 on a mismatch. CUDA graphs only exist on a GPU;
on a CPU torch.compile ignores the mode and the script checks the compiled loop alone.

Example:
  python benchmarks/check_torch_cuda_graphs.py
"""

import argparse
import json
import os
import sys

os.environ["KERAS_BACKEND"] = "torch"

import keras
import numpy as np
import torch

import keras_stm

TOLERANCE = 1e-4


def build(**options):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 10))
    outputs, _, item, relational = keras_stm.STM(
        num_queries=4, memory_size=16, relation_size=16, readout_size=16, head_units=5,
        return_state=True, name="stm", **options)(inputs)
    return keras.Model(inputs, [outputs, item, relational])


def gradients(model, x):
    for weight in model.trainable_weights:
        weight.value.grad = None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    outputs = model(torch.tensor(x, device=device))[0]
    torch.sum(outputs**2).backward()
    return [w.value.grad.detach().cpu().numpy() for w in model.trainable_weights]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", default="reduce-overhead", help="torch.compile mode to check.")
    parser.add_argument("--torch-compile", default="loop", choices=("step", "loop", "layer"),
                        help="What STM compiles (its torch_compile argument).")
    args = parser.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = False
    eager = build()
    fast = build(torch_compile=args.torch_compile, torch_compile_mode=args.mode)
    fast.set_weights(eager.get_weights())
    x = np.random.default_rng(0).normal(size=(96, 12, 10)).astype("float32")
    result = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
              "torch": torch.__version__, "mode": args.mode, "torch_compile": args.torch_compile}
    predicted = [m.predict(x, batch_size=32, verbose=0) for m in (eager, fast)]
    result["predict_max_abs_diff"] = max(float(np.abs(a - b).max()) for a, b in zip(*predicted))
    grads = [gradients(m, x[:32]) for m in (eager, fast)]
    result["gradient_max_rel_diff"] = max(
        float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12)) for a, b in zip(*grads))
    losses = []
    for model in (eager, fast):
        model.compile(optimizer="adam", loss=["mse", None, None])
        history = model.fit(x, [np.zeros((96, 5), "float32")], batch_size=32, epochs=2,
                            shuffle=False, verbose=0)
        losses.append(history.history["loss"])
    result["fit_losses"] = losses
    result["ok"] = bool(
        result["predict_max_abs_diff"] < TOLERANCE
        and result["gradient_max_rel_diff"] < TOLERANCE
        and np.allclose(losses[0], losses[1], rtol=TOLERANCE, atol=1e-7))
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
