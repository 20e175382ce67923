"""Minimum spanning tree with STM: read a weighted graph, then point at the tree's edges.

Task (STM paper, graph reasoning). As for shortest path, the authors'
repository has no code for it and the paper's appendix could not be read: the protocol is ours
(`docs/tasks/graph_protocol.md`, implemented in `keras_stm.experiments.tasks.graphs`; this script
reuses the
functions of `examples/shortest_path.py`). An example is a connected simple graph (default 8-10
nodes, 15-20 edges, weights uniform in [0, 1)); the answer is the N - 1 edges of its minimum
spanning tree in Kruskal order (increasing weight), then an end token. The model reads one row per
edge (endpoints, weight, one-hot edge label) and one all-zero row, then emits the label of the next
tree edge, or the end token, on all-zero decoding rows. Edge labels are a random permutation at
training and the position at test. Sorting the weights is not enough: the N - 1 lightest edges
are the tree in only about 18 % of the graphs, so the model has to detect cycles.

Training: fresh random graphs, one (N, E) per batch (`--n-nodes`, `--n-edges`), or a graph-task
file (`--train-file`). Masked sparse cross-entropy on the output steps. STM nq 8, d 128, r 96,
Adam 1e-4, clipping to [-10, 10], 1,000,000 iterations
(`keras_stm.experiments.models.task_configs.TASK_CONFIGS["minimum_spanning_tree"]`, our choice);
batch 128.

Evaluation (of `best.keras`, lowest validation loss): decoded answers (`graphs.decode_predictions`)
scored by `graphs.mst_metrics` on a fixed-seed generated test set of `--test-size` graphs (distinct
weights, so the tree is unique; written to `<output_dir>/test.txt`) or on `--test-file`:
`optimal_fraction` (primary: a spanning tree of optimal weight; equals `exact_match` when the
weights are distinct), `exact_match` (the reference edge set), `sequence_accuracy` (the same edges
in Kruskal order), `valid_fraction` (N - 1 distinct edges without a cycle), `mean_cost_ratio`
(weight / optimum over valid answers only: an invalid answer is never counted cheap, it is counted
in `num_invalid`), and the masked test `loss` and per-step accuracy. Decoding, padding and
`--evaluate` (default `pretrained/minimum_spanning_tree`) as in `examples/shortest_path.py`; the
masked rule (`graphs.tree_rule`): distinct edges closing no cycle, N - 1 of them.

Command lines (from the repository root):

    KERAS_BACKEND=jax python examples/minimum_spanning_tree.py                # STM
    KERAS_BACKEND=jax python examples/minimum_spanning_tree.py --model lstm   # LSTM baseline
    KERAS_BACKEND=torch python examples/minimum_spanning_tree.py --quick      # CPU smoke run

An interrupted run resumes from `runs/minimum_spanning_tree-<model>/backup` (`--fresh` starts
over); the best model, `history.csv`, `results.json` and `learning_curve.png` go to the same
folder.
"""

try:  # run as a script (python examples/minimum_spanning_tree.py): examples/ is on sys.path
    from shortest_path import graph_parser
    from shortest_path import parse_graph_args
    from shortest_path import predict_answers
    from shortest_path import run_graph_task
except ModuleNotFoundError as error:  # loaded from the repository root, as the tests do
    if error.name != "shortest_path":
        raise
    from examples.shortest_path import graph_parser
    from examples.shortest_path import parse_graph_args
    from examples.shortest_path import predict_answers
    from examples.shortest_path import run_graph_task
from keras_stm.experiments.tasks import graphs

TASK = "minimum_spanning_tree"


def tree_scores(predict, data, options=None):
    """`graphs.mst_metrics` of a model's decoded trees on an ordered file dataset.

    Args:
        predict: callable `x -> logits (B, T, 22)`, e.g. `model.predict_on_batch`.
        data: ordered dataset from `graphs.file_dataset(..., shuffle=False)`.
        options: decoding options (`convex_hull.decode_options`), or None for plain greedy.

    Returns:
        dict of `graphs.mst_metrics` (greedy keys, plus `masked_*` or `beam_*`).
    """
    return graphs.scores("mst", predict_answers(predict, data, options), data.examples)


def main(argv=None):
    """Trains and evaluates; returns the results dict (also in `<output_dir>/results.json`)."""
    parser = graph_parser(TASK, __doc__)
    args = parse_graph_args(parser, argv)
    return run_graph_task(TASK, args, tree_scores, "optimal_fraction")


if __name__ == "__main__":
    main()
