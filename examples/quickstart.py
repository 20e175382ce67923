"""Quickstart: train a small STM on associative retrieval and print its test accuracy.

The task (Ba et al. 2016, used by the SAM paper): a sequence of key-value pairs such as
`c 9 k 8 j 3 ? ? k` whose answer is the digit stored under the last key (`8`). The model embeds
the tokens, runs `keras_stm.STM` over them and classifies the digit from the final read-out.
Chance is 10%. This run uses 4 pairs and a small memory so it finishes in a few minutes on a
laptop CPU; `examples/associative_retrieval.py` is the paper-sized version.

    KERAS_BACKEND=jax python examples/quickstart.py            # about 2-4 minutes on 2 CPU cores
    KERAS_BACKEND=torch python examples/quickstart.py --epochs 2
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_stm  # noqa: E402
from keras_stm.tasks import associative_retrieval as task  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-pairs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs <= 0 or args.train_size <= 0 or args.batch_size <= 0:
        parser.error("--epochs, --train-size and --batch-size must be positive")
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, y_train = task.generate(args.train_size, rng, num_pairs=args.num_pairs)
    x_test, y_test = task.generate(2_000, rng, num_pairs=args.num_pairs)

    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(task.VOCAB_SIZE, 32)(tokens)
    logits = keras_stm.STM(num_queries=2, memory_size=24, relation_size=24, readout_size=32,
                           head_units=task.NUM_CLASSES, head_hidden_units=64)(x)
    model = keras.Model(tokens, logits)
    model.compile(optimizer=keras.optimizers.Adam(2e-3, global_clipnorm=5.0),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs,
              validation_split=0.05, verbose=2)
    _, accuracy = model.evaluate(x_test, y_test, batch_size=256, verbose=0)
    print(f"backend={keras.backend.backend()} pairs={args.num_pairs} test accuracy: {accuracy:.3f} "
          f"(chance 0.100)")
    return accuracy


if __name__ == "__main__":
    main()
