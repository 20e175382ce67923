"""Quickstart: a trained STM solving associative retrieval, then a small one trained from scratch.

The task (Ba et al. 2016, used by the SAM paper): a sequence of key-value pairs such as
`c 9 k 8 j 3 ? ? k` whose answer is the digit stored under the last key (`8`). The model embeds
the tokens, runs `keras_stm.STM` over them and classifies the digit from the final read-out.
Chance is 10%.

1. The committed pretrained model `pretrained/associative_retrieval_14/` (14 pairs, 31
   tokens, the paper's "length 30" setting, trained on a GPU with
   `examples/associative_retrieval.py`) answers a fresh test set it has never seen.
2. A small STM (4 pairs, a small memory) trains from scratch on the CPU for a few epochs,
   showing the layer learning (it is still short of solved when it stops).

    KERAS_BACKEND=jax python examples/quickstart.py            # about 3 minutes on 2 CPU cores
    KERAS_BACKEND=torch python examples/quickstart.py --epochs 2
    KERAS_BACKEND=jax python examples/quickstart.py --epochs 0 # the pretrained model only
"""

import argparse

import keras
import numpy as np

import keras_stm
from keras_stm.experiments import pretrained
from keras_stm.experiments import training
from keras_stm.experiments.tasks import associative_retrieval as task

DEFAULT_PRETRAINED = "associative_retrieval_14"


def evaluate_pretrained(name, test_size, seed):
    """Accuracy of a pretrained associative-retrieval model on a fresh test set."""
    model, results = pretrained.load(name)
    num_pairs = results["data"]["num_pairs"]
    x_test, y_test = task.generate(test_size, np.random.default_rng(seed), num_pairs=num_pairs)
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    _, accuracy = model.evaluate(x_test, y_test, batch_size=500, verbose=0)
    print(
        f"pretrained {name}: {num_pairs} pairs ({2 * num_pairs + 3} tokens), trained "
        f"{results['iterations']} iterations on {results['environment'].get('device')}; "
        f"test accuracy on {test_size} fresh sequences: {accuracy:.3f} (chance 0.100; "
        f"recorded {results['test']['accuracy']:.3f})",
        flush=True,
    )
    return accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=training.HelpFormatter)
    parser.add_argument(
        "--pretrained",
        default=DEFAULT_PRETRAINED,
        help="Pretrained model to evaluate first (a name under pretrained/ or "
        "a folder; 'none' to skip).",
    )
    parser.add_argument(
        "--test-size",
        type=int,
        default=2_000,
        help="Sequences in each fresh test set (of the pretrained model and of "
        "the model trained here).",
    )
    training.add_deprecated_alias(parser, "--pretrained-test-size", "--test-size", type=int)
    parser.add_argument(
        "--num-pairs",
        type=int,
        default=4,
        help="Key-value pairs per sequence of the model trained here.",
    )
    parser.add_argument(
        "--train-size",
        type=int,
        default=20_000,
        help="Training sequences of the model trained here.",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=6,
        help="Passes over the training sequences (0: only evaluate the pretrained model).",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="Examples per batch.")
    parser.add_argument(
        "--seed", type=int, default=0, help="Random seed of the weights and the data."
    )
    args = parser.parse_args(argv)
    if args.epochs < 0 or min(args.train_size, args.test_size, args.batch_size) <= 0:
        parser.error("--epochs must be >= 0, --train-size, --test-size and --batch-size positive")
    keras.utils.set_random_seed(args.seed)
    pretrained_accuracy = None
    if args.pretrained == DEFAULT_PRETRAINED and DEFAULT_PRETRAINED not in pretrained.available():
        print(f"(no committed pretrained/{DEFAULT_PRETRAINED}/ in this checkout: skipping it)")
    elif args.pretrained != "none":
        pretrained_accuracy = evaluate_pretrained(
            args.pretrained, args.test_size, seed=args.seed + 1
        )
    if args.epochs == 0:
        return pretrained_accuracy
    rng = np.random.default_rng(args.seed)
    x_train, y_train = task.generate(args.train_size, rng, num_pairs=args.num_pairs)
    x_test, y_test = task.generate(args.test_size, rng, num_pairs=args.num_pairs)

    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(task.VOCAB_SIZE, 32)(tokens)
    logits = keras_stm.STM(
        num_queries=2,
        memory_size=24,
        relation_size=24,
        readout_size=32,
        head_units=task.NUM_CLASSES,
        head_hidden_units=64,
    )(x)
    model = keras.Model(tokens, logits)
    model.compile(
        optimizer=keras.optimizers.Adam(2e-3, global_clipnorm=5.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(
        x_train,
        y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_split=0.05,
        verbose=2,
    )
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    print(
        f"backend={keras.backend.backend()} pairs={args.num_pairs} test accuracy: {accuracy:.3f} "
        f"(chance 0.100)"
    )
    return accuracy


if __name__ == "__main__":
    main()
