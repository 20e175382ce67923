"""Travelling salesman (planar, Euclidean) with STM: read the cities, then point at a tour.

Task (Vinyals et al. 2015, Pointer Networks; STM paper, geometric tasks).
Each example is a set of N cities uniform in the unit square; the answer is a shortest closed
tour, starting at city 1, in the direction whose second city has the lower index, then an end
token. The encoding, decoding and pointing are those of the convex hull (`examples/convex_hull.py`,
whose functions this script reuses; protocol in `keras_stm.experiments.tasks.geometry`): one row
per city
(coordinates and a one-hot label, random labels at training, position at test), one all-zero row,
then all-zero decoding rows on which the model emits the label of the next city or the end token.

Training: fresh random city sets, one N per batch, N drawn from `--train-points` (default 5,10:
the published training files `tsp5.txt` and `tsp_10_train_exact.txt`), with exact Held-Karp
tours (N <= 10; above, 2-opt tours, not guaranteed optimal and slower: about 0.4 s a batch at
N = 20), or a Pointer Networks file (`--train-file`). Masked sparse cross-entropy on the output
steps. STM sizes (nq 8, d 128, r 96), Adam 1e-4, clipping to [-10, 10] and the 1,000,000
iterations come from `keras_stm.experiments.models.task_configs.TASK_CONFIGS["tsp"]`; batch 128.

Evaluation (of `best.keras`, lowest validation loss): decoded tours (`geometry.decode_predictions`:
every step points at a city present in the example, or ends) scored by `geometry.tsp_metrics` on a
fixed-seed test set per N of `--n-points` (default 5 and 10, the reported settings; suffix `_n5`,
`_n10`; reference tours exact for N <= 10) or on `--test-file` (e.g. the published `tsp5_test.txt`,
as it is; its tours are the reference). Reported: `mean_length` (mean tour length, the paper's
metric, over valid tours only), `optimality_gap` (mean of length / reference length - 1 over valid
tours), `valid_fraction` (answers visiting every city exactly once). An invalid answer (a repeated
or missing city, or no end token) is never counted as a short tour: it is left out of the length
and the gap and counted in `num_invalid`; `mean_target_length` is the reference length on the same
valid examples, `mean_target_length_all` on all of them, `mean_invalid_length` the length of the
invalid answers, apart; `sequence_accuracy` (the reference tour, any start or direction). Also
the masked test `loss` and per-step accuracy. These are the plain greedy figures; `--decoding
masked` (default) or `beam` adds them, prefixed, for tours decoded under the tour rule (start at
city 1, every city once): 100% valid by construction. Shapes and `--evaluate` (default
`pretrained/tsp_<N>`, with `--test-file` any Pointer Networks file): see `examples/convex_hull.py`.

Command lines (from the repository root):

    KERAS_BACKEND=jax python examples/tsp.py                              # STM, paper settings
    KERAS_BACKEND=jax python examples/tsp.py --model lstm                 # LSTM baseline
    KERAS_BACKEND=jax python examples/tsp.py --train-points 5-10 --n-points 5,10
    KERAS_BACKEND=jax python examples/tsp.py --train-file tsp_10_train_exact.txt \\
        --test-file tsp5_test.txt
    KERAS_BACKEND=jax python examples/tsp.py --evaluate pretrained/tsp_5 --test-file tsp5_test.txt
    KERAS_BACKEND=torch python examples/tsp.py --quick                    # CPU smoke run

An interrupted run resumes from `runs/tsp-<model>/backup` (`--fresh` starts over); the best
model, `history.csv`, `results.json` and `learning_curve.png` go to the same folder.
"""

try:  # run as a script (python examples/tsp.py): examples/ is on sys.path
    from convex_hull import geometry_parser
    from convex_hull import parse_geometry_args
    from convex_hull import predict_answers
    from convex_hull import run_geometry_task
except ModuleNotFoundError as error:  # loaded from the repository root, as the tests do
    if error.name != "convex_hull":
        raise
    from examples.convex_hull import geometry_parser
    from examples.convex_hull import parse_geometry_args
    from examples.convex_hull import predict_answers
    from examples.convex_hull import run_geometry_task
from keras_stm.experiments.tasks import geometry

TASK = "tsp"


def tsp_scores(predict, data, options=None):
    """`geometry.tsp_scores` of a model's decoded tours on an ordered file dataset.

    Args:
        predict: callable `x -> logits (B, T, 22)`, e.g. `model.predict_on_batch`.
        data: `geometry.GroupedFileDataset` in ordered mode; its examples' outputs are the
            reference tours.
        options: decoding options (`convex_hull.decode_options`), or None for plain greedy.

    Returns:
        dict of `geometry.tsp_scores` (greedy keys, plus `masked_*` or `beam_*`).
    """
    return geometry.tsp_scores(predict_answers(predict, data, options, task=TASK), data.examples)


def main(argv=None):
    """Trains and evaluates; returns the results dict (also in `<output_dir>/results.json`)."""
    parser = geometry_parser(TASK, __doc__, train_points="5,10")
    args = parse_geometry_args(parser, argv)
    return run_geometry_task(TASK, args, tsp_scores, "mean_length")


if __name__ == "__main__":
    main()
