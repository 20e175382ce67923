"""Reproduce the memory figures of the documentation (docs/images/nfar_*.png).

Trains a deliberately small Nth-farthest STM on CPU for a few minutes, then plots its item
memory, relational memory and OPA scores over one test sequence with
`keras_stm.experiments.visualize`.

    KERAS_BACKEND=jax python docs/images/make_memory_plots.py            # train, then plot
    KERAS_BACKEND=jax python docs/images/make_memory_plots.py --plot-only

The model is far too small and too briefly trained to solve the task (see the captions in
docs/model.md); the figures show what the memories look like, not a solved task.
"""

import argparse
import json
import os
import time

import keras
import numpy as np

from keras_stm.experiments import visualize
from keras_stm.experiments.models import build_sequence_model
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import nth_farthest

HERE = os.path.dirname(os.path.abspath(__file__))
SMALL = dict(num_queries=4, memory_size=32, relation_size=32, readout_size=32, head_hidden_units=64)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", default=os.path.join("runs", "docs_nth_farthest_small"))
    parser.add_argument("--minutes", type=float, default=4.0, help="Training wall-clock budget.")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.run_dir, exist_ok=True)
    weights = os.path.join(args.run_dir, "model.weights.h5")
    keras.utils.set_random_seed(0)
    config = task_configs.stm_config("nth_farthest", **SMALL)
    model = build_sequence_model(
        nth_farthest.INPUT_SIZE, nth_farthest.OUTPUT_SIZE, stm_config=config
    )
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate, clipvalue=10.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    test = nth_farthest.dataset(
        batch_size=128, num_batches=4, seed=task_configs.TEST_SEED, fixed=True
    )
    if not args.plot_only:
        train = nth_farthest.dataset(batch_size=64, num_batches=100, seed=0)
        deadline = time.time() + 60 * args.minutes
        stop = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: setattr(model, "stop_training", time.time() > deadline)
        )
        model.fit(
            train,
            epochs=1000,
            callbacks=[stop, keras.callbacks.CSVLogger(os.path.join(args.run_dir, "history.csv"))],
            verbose=2,
        )
        model.save_weights(weights)
        scores = model.evaluate(test, return_dict=True, verbose=0)
        history = visualize.read_history(os.path.join(args.run_dir, "history.csv"))
        with open(os.path.join(args.run_dir, "summary.json"), "w") as f:
            json.dump(
                {
                    "stm_config": config,
                    "epochs": len(history.get("loss", [])),
                    "iterations": 100 * len(history.get("loss", [])),
                    "batch_size": 64,
                    "learning_rate": args.learning_rate,
                    "test": scores,
                    "backend": keras.backend.backend(),
                },
                f,
                indent=2,
            )
        print(json.dumps(scores))
    else:
        model.load_weights(weights)
    x, y = nth_farthest.make_batch(np.random.default_rng(7), 1)
    trace = visualize.trace_memories(model, x)
    prediction = int(np.argmax(trace["outputs"][0, -1]))
    title = f"target label {int(y[0])}, predicted {prediction}"
    visualize.plot_item_memory(trace, os.path.join(HERE, "nfar_item_memory.png"), title=title)
    visualize.plot_relational_memory(
        trace, os.path.join(HERE, "nfar_relational_memory.png"), title=title
    )
    visualize.plot_attention(trace, os.path.join(HERE, "nfar_attention.png"), title=title)
    visualize.plot_history(
        os.path.join(args.run_dir, "history.csv"),
        os.path.join(HERE, "nfar_learning_curve.png"),
        title="Nth-farthest, small STM (nq 4, d 32), CPU",
    )


if __name__ == "__main__":
    main()
