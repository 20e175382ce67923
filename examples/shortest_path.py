"""Shortest path with STM: read a weighted graph and a query, then point at the path's edges.

Task (STM paper, graph reasoning). The authors' repository has no code for
it and the paper's appendix with the details could not be read, so the protocol is ours, made to
match the geometric tasks: `docs/tasks/graph_protocol.md` explains it,
`keras_stm.experiments.tasks.graphs`
implements it (generation, Dijkstra, encoding, files, decoding, metrics). An example is a connected
simple graph (default 8-10 nodes, 15-20 edges, weights uniform in [0, 1)) and a query
(source, target); the answer is the cheapest path's edges in order from source to target, then an
end token. The model reads one row per edge (endpoints, weight, one-hot edge label), the query row
and one all-zero row, then, on all-zero decoding rows, emits the label of the next edge of the
path or the end token (22 classes, the convex-hull head; `examples/convex_hull.py` provides the
model builder and the evaluation wrapper). Edge labels are a random permutation at training and
the position at test. `examples/minimum_spanning_tree.py` reuses the functions below.

Training: fresh random graphs, one (N, E) per batch, N from `--n-nodes`, E from `--n-edges`, or a
graph-task file (`--train-file`, format in the protocol page). Masked sparse cross-entropy on the
output steps. STM nq 8, d 128, r 96, Adam 1e-4, clipping to [-10, 10] and 1,000,000 iterations
(`keras_stm.experiments.models.task_configs.TASK_CONFIGS["shortest_path"]`, the convex hull / TSP
settings:
our choice); batch 128.

Evaluation (of `best.keras`, lowest validation loss): decoded answers (`graphs.decode_predictions`:
each step points at an edge present in the example, or ends) scored by
`graphs.shortest_path_metrics` on a fixed-seed generated test set of `--test-size` graphs of the
training sizes (written to `<output_dir>/test.txt`) or on `--test-file`: `optimal_fraction`
(primary: a valid path as cheap as the optimum, ties count), `exact_match` (the reference edge
sequence), `valid_fraction` (edges chaining from the source to the target, no node twice),
`mean_cost_ratio` (cost / optimum over valid answers only: an invalid answer is never counted
cheap, it is counted in `num_invalid`), and the masked test `loss` and per-step accuracy; the
exact answers come from Dijkstra's algorithm. Each example is decoded over N output steps: the
plain greedy figures, plus (`--decoding masked`, default, or `beam`) the prefixed figures of
paths decoded under `graphs.path_rule` (each edge leaves the node reached, no node twice, end at
the target). Batches are padded to at most `--step-buckets` lengths; `--evaluate [NAME_OR_PATH]`
(default `pretrained/shortest_path`) evaluates a pretrained model, writing nothing.

Command lines (from the repository root):

    KERAS_BACKEND=jax python examples/shortest_path.py                    # STM
    KERAS_BACKEND=jax python examples/shortest_path.py --model lstm       # LSTM baseline
    KERAS_BACKEND=jax python examples/shortest_path.py --n-nodes 10 --n-edges 20
    KERAS_BACKEND=torch python examples/shortest_path.py --quick          # CPU smoke run

An interrupted run resumes from `runs/shortest_path-<model>/backup` (`--fresh` starts over); the
best model, `history.csv`, `results.json` and `learning_curve.png` go to the same folder.
"""

import argparse
import os
import tempfile

try:  # run as a script (python examples/shortest_path.py): examples/ is on sys.path
    from convex_hull import add_decoding_arguments
    from convex_hull import bucket_lengths
    from convex_hull import build_model
    from convex_hull import check_decoding_args
    from convex_hull import decode_options
    from convex_hull import for_fit
    from convex_hull import make_evaluator
except ModuleNotFoundError as error:  # loaded from the repository root, as the tests do
    if error.name != "convex_hull":
        raise
    from examples.convex_hull import add_decoding_arguments
    from examples.convex_hull import bucket_lengths
    from examples.convex_hull import build_model
    from examples.convex_hull import check_decoding_args
    from examples.convex_hull import decode_options
    from examples.convex_hull import for_fit
    from examples.convex_hull import make_evaluator
from keras_stm.experiments import training
from keras_stm.experiments.models import task_configs
from keras_stm.experiments.tasks import geometry
from keras_stm.experiments.tasks import graphs

TASK = "shortest_path"
DATA_TASKS = {"shortest_path": "shortest_path", "minimum_spanning_tree": "mst"}
"""dict: script task name -> task name of `keras_stm.experiments.tasks.graphs`."""
QUICK = {
    "iterations": 2,
    "steps_per_epoch": 1,
    "batch_size": 8,
    "n_nodes": "5",
    "n_edges": "6",
    "test_size": 8,
    "validation_batches": 1,
    **task_configs.QUICK_MODEL,
}


def size_range(text, low=1, high=graphs.EDGE_MAX):
    """Parses `--n-nodes` / `--n-edges`: one number (`10`) or an inclusive range (`8-10`).

    Args:
        text: str.
        low, high: ints, the allowed bounds.

    Returns:
        `(low, high)` tuple of ints.

    Raises:
        argparse.ArgumentTypeError: on anything else (argparse reports it as a flag error).

    Example:

    >>> size_range("8-10"), size_range("6")
    ((8, 10), (6, 6))
    """
    try:
        first, _, last = str(text).strip().partition("-")
        first, last = int(first), int(last or first)
        if not low <= first <= last <= high:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or a range like '8-10' within [{low}, {high}], got {text!r}"
        ) from None
    return first, last


def _node_range(text):
    return size_range(text, 2, graphs.NODE_MAX)


def _edge_range(text):
    return size_range(text, 1, graphs.EDGE_MAX)


def graph_parser(task, description):
    """The flags of a graph example: the shared ones, model sizes and the data flags.

    Args:
        task: str, `"shortest_path"` or `"minimum_spanning_tree"` (a `TASK_CONFIGS` key).
        description: str, the script's docstring.

    Returns:
        `argparse.ArgumentParser` with the task's defaults.
    """
    parser = training.argument_parser(description, **task_configs.training_defaults(task))
    task_configs.add_model_arguments(parser, task)
    nodes, edges = graphs.DEFAULT_N_NODES, graphs.DEFAULT_N_EDGES
    parser.add_argument(
        "--n-nodes",
        type=_node_range,
        default=f"{nodes[0]}-{nodes[1]}",
        help=f"Nodes per graph, a number or a range (at most {graphs.NODE_MAX}); one per batch.",
    )
    parser.add_argument(
        "--n-edges",
        type=_edge_range,
        default=f"{edges[0]}-{edges[1]}",
        help=f"Edges per graph, a number or a range (at most {graphs.EDGE_MAX}); one per batch.",
    )
    parser.add_argument(
        "--train-file", default=None, help="Train on a graph-task file instead of random graphs."
    )
    parser.add_argument(
        "--test-file",
        default=None,
        help="Evaluate on a graph-task file instead of the generated set.",
    )
    parser.add_argument(
        "--test-size", type=int, default=1000, help="Examples of the generated test set."
    )
    parser.add_argument(
        "--test-seed",
        type=int,
        default=task_configs.TEST_SEED,
        help="Seed of the generated test and validation sets.",
    )
    parser.add_argument(
        "--validation-batches",
        type=int,
        default=4,
        help="Fixed batches evaluated after every epoch to keep the best model.",
    )
    add_decoding_arguments(parser)
    return parser


def parse_graph_args(parser, argv=None):
    """Parses and checks the flags (`--quick` applies `QUICK`); creates the output folder."""
    args = training.parse_args(parser, argv, quick_overrides=QUICK)
    for name, parse in (("n_nodes", _node_range), ("n_edges", _edge_range)):
        value = getattr(args, name)
        if isinstance(value, (list, tuple)):  # default, or from an --hparams file
            value = "-".join(str(v) for v in value)
        try:
            setattr(args, name, parse(value))
        except argparse.ArgumentTypeError as error:
            parser.error(f"--{name.replace('_', '-')}: {error}")
    for name in ("test_size", "validation_batches"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    check_decoding_args(parser, args)
    for name in ("train_file", "test_file"):
        path = getattr(args, name)
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"--{name.replace('_', '-')}: data file not found: {path!r}")
    if not args.evaluate:
        os.makedirs(args.output_dir, exist_ok=True)
    return args


def evaluation_sets(task, args):
    """The test set as `{"": ordered file dataset}`: `--test-file`, or one generated set.

    The generated set (seed `--test-seed`, the training sizes) is written to
    `<output_dir>/test.txt` in the graph-task file format (under `--evaluate`, to a temporary
    folder: nothing is written).
    """
    if args.test_file:
        return {"": graphs.file_dataset(args.test_file, args.batch_size, shuffle=False)}
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch if args.evaluate else args.output_dir, "test.txt")
        graphs.generate(
            path,
            DATA_TASKS[task],
            args.test_size,
            n_nodes=args.n_nodes,
            n_edges=args.n_edges,
            seed=args.test_seed,
        )
        return {"": graphs.file_dataset(path, args.batch_size, shuffle=False)}


def max_steps(task, args, examples=()):
    """The longest sequence (inputs, query, extra row, answer, end token) of a graph run.

    Args:
        task: str, `"shortest_path"` or `"minimum_spanning_tree"`.
        args: flags with `n_nodes` and `n_edges` ranges (random graphs; an answer has at most
            N - 1 edges).
        examples: `graphs.GraphExample`s of files.

    Returns:
        int.
    """
    query = 1 if task == "shortest_path" else 0
    lengths = [args.n_edges[1] + query + 1 + args.n_nodes[1]]
    lengths += [len(e.edges) + (e.query is not None) + len(e.output) + 2 for e in examples]
    return max(lengths)


def predict_answers(predict, data, options=None):
    """Decoded answers of a model for every example of an ordered graph file dataset.

    Args:
        predict: callable `x -> logits (B, T, 22)`, e.g. `model.predict_on_batch`.
        data: `geometry.GroupedFileDataset` from `graphs.file_dataset(..., shuffle=False)`.
        options: dict of `geometry.predict_and_decode` options (`convex_hull.decode_options`);
            None: the plain greedy decoding of the batches as they are.

    Returns:
        dict `{"": greedy answers, "masked_" or "beam_": answers under `graphs.example_rule`}`,
        lists of int arrays (0-based edge indices) aligned with `data.examples`.
    """
    return geometry.predict_and_decode(
        predict,
        data,
        lambda e: len(e.edges) + (2 if e.query is not None else 1),
        lambda e: e.num_nodes - 1,
        graphs.example_rule,
        end_token=graphs.END,
        **(options or {}),
    )


def path_scores(predict, data, options=None):
    """`graphs.shortest_path_metrics` of a model's decoded paths (every decoding)."""
    return graphs.scores("shortest_path", predict_answers(predict, data, options), data.examples)


def run_graph_task(task, args, scores, primary_metric):
    """Builds data and model, trains (resumable) and evaluates; see `training.run`.

    Args:
        task: str, `"shortest_path"` or `"minimum_spanning_tree"`.
        args: flags from `parse_graph_args`.
        scores: callable `(predict, data) -> dict`, the task metrics.
        primary_metric: str, recorded in `results.json`.

    Returns:
        The results dict.
    """
    data_task = DATA_TASKS[task]
    if args.train_file:
        train_data = graphs.file_dataset(
            args.train_file, args.batch_size, num_batches=args.steps_per_epoch, seed=args.seed
        )
    else:
        train_data = graphs.dataset(
            args.batch_size,
            args.steps_per_epoch,
            seed=args.seed,
            task=data_task,
            n_nodes=args.n_nodes,
            n_edges=args.n_edges,
        )
    validation_data = graphs.dataset(
        args.batch_size,
        args.validation_batches,
        seed=args.test_seed + 1000,
        fixed=True,
        task=data_task,
        n_nodes=args.n_nodes,
        n_edges=args.n_edges,
    )
    sets = evaluation_sets(task, args)
    examples = getattr(train_data, "examples", []) + [e for d in sets.values() for e in d.examples]
    query = 1 if data_task == "shortest_path" else 0
    possible = graphs.sequence_lengths(data_task, args.n_nodes, args.n_edges) + tuple(
        length
        for e in examples
        for length in (
            len(e.edges) + query + len(e.output) + 2,
            len(e.edges) + query + 1 + e.num_nodes,
        )
    )
    lengths = bucket_lengths(args, possible)
    model = build_model(args, task, graphs.INPUT_WIDTH, graphs.NUM_CLASSES)
    best = None if args.evaluate else os.path.join(args.output_dir, "best.keras")
    extra = {
        "evaluated": "best.keras (lowest validation loss)",
        "stm_config": task_configs.model_config_from_args(args, task)
        if args.model == "stm"
        else None,
        "n_nodes": list(args.n_nodes),
        "n_edges": list(args.n_edges),
        "padded_lengths": list(lengths),
        "primary_metric": primary_metric,
    }
    return training.run(
        model,
        for_fit(train_data, lengths, args.batch_size),
        args,
        validation_data=for_fit(validation_data, lengths, args.batch_size),
        evaluate=make_evaluator(sets, scores, best, lengths, decode_options(args, lengths)),
        extra_results=extra,
    )


def main(argv=None):
    """Trains and evaluates; returns the results dict (also in `<output_dir>/results.json`)."""
    parser = graph_parser(TASK, __doc__)
    args = parse_graph_args(parser, argv)
    return run_graph_task(TASK, args, path_scores, "optimal_fraction")


if __name__ == "__main__":
    main()
