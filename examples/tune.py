"""Hyper-parameter search with KerasTuner for any task, resumable, one process or distributed.

What is searched (`keras_stm.experiments.tuning.SEARCH_SPACES`, around the paper's values of
`keras_stm.experiments.models.task_configs.TASK_CONFIGS`): number of queries, memory size, relation
size,
read-out size, gated or additive write, each mixing coefficient learned or fixed (0 or 1), the
learning rate, gradient clipping, and the batch size for associative retrieval (the task with a
fixed training set). `--model lstm` searches the LSTM baseline's width instead. Every trial
trains the example's model (same builder, loss, metric and optimiser) for `--epochs` epochs of
`--steps-per-epoch` fresh batches and is scored on fixed validation batches (seed
`tuning.VALIDATION_SEED`; the test sets are never seen): bit error per sequence (copy, priority
sort, RAR), accuracy (Nth-farthest, associative retrieval) or the masked validation loss
(convex hull, TSP, shortest path, minimum spanning tree).

Results go to `--output-dir` (default `runs/tune/<task>-<model>-<tuner>`):
KerasTuner's `oracle.json`, `tuner0.json` and `trial_*/`, plus

* `best_trials.json`: objective, trial counts and the best `--num-best` trials;
* `best_hparams.json`: the best trial as a file the task's training script reads, e.g.
  `python examples/copy_task.py --hparams runs/tune/copy-stm-random/best_hparams.json`
  (keys are the script's flags, plus `stm_config` for tuned STM arguments without a flag).

Started again with the same command, a search resumes (KerasTuner's `overwrite=False`): finished
trials are kept, an interrupted trial is run again, and the search goes on up to `--max-trials`
in total (raise it to search further). `--overwrite` starts over.

Distributed tuning (KerasTuner's chief/worker mode, docs/tuning.md): start the same command in
several processes that share `--output-dir`, with `KERASTUNER_ORACLE_IP`,
`KERASTUNER_ORACLE_PORT` and `KERASTUNER_TUNER_ID` (`chief` for the oracle, `tuner0`,
`tuner1`, ... for the workers) in their environment; the chief runs no trial, serves the oracle
over gRPC, and writes the result files when all trials are done.

Command lines (from the repository root):

    KERAS_BACKEND=jax python examples/tune.py --task nth_farthest --tuner bayesian --max-trials 30
    KERAS_BACKEND=jax python examples/tune.py --task copy --tuner hyperband --max-epochs 9
    KERAS_BACKEND=jax python examples/tune.py --task rar --tuner random --max-trials 20 \\
        --epochs 10 --data-parallel                       # every trial on all local GPUs
    KERAS_BACKEND=torch python examples/tune.py --task copy --quick   # CPU smoke run, seconds
"""

import argparse
import json
import os

import keras

from keras_stm.experiments import training
from keras_stm.experiments import tuning


def build_parser():
    """The flags of the search."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=training.HelpFormatter)
    parser.add_argument(
        "--task",
        required=True,
        choices=sorted(tuning.TASK_DATA),
        help="The task whose example model is tuned.",
    )
    parser.add_argument(
        "--model", choices=training.MODELS, default="stm", help="Search STM or the LSTM baseline."
    )
    parser.add_argument(
        "--tuner", choices=tuning.TUNERS, default="random", help="KerasTuner's search algorithm."
    )
    parser.add_argument(
        "--max-trials",
        type=int,
        default=None,
        help="Trials in total, resumed ones included (default 10; Hyperband: "
        "its own schedule unless given).",
    )
    parser.add_argument(
        "--epochs", type=int, default=5, help="Epochs per trial (random and Bayesian search)."
    )
    parser.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="Hyperband: most epochs of one model (default --epochs).",
    )
    parser.add_argument("--factor", type=int, default=3, help="Hyperband reduction factor.")
    parser.add_argument(
        "--hyperband-iterations",
        type=int,
        default=1,
        help="Hyperband: times the whole Hyperband schedule is run.",
    )
    parser.add_argument(
        "--fix",
        default="",
        help="Comma-separated parameters to keep at the paper's value instead "
        "of searching them, e.g. gated_write,relational_carry (default: "
        "search them all).",
    )
    parser.add_argument(
        "--steps-per-epoch",
        type=int,
        default=None,
        help="Training batches per epoch (default: the task's, 200; --quick 2).",
    )
    parser.add_argument(
        "--validation-batches",
        type=int,
        default=None,
        help="Fixed validation batches that score a trial (default 4; --quick 1).",
    )
    parser.add_argument(
        "--executions-per-trial",
        type=int,
        default=1,
        help="Models trained per trial (their scores averaged).",
    )
    parser.add_argument(
        "--output-dir",
        default=None,
        help="Folder of this search (default runs/tune/<task>-<model>-<tuner>, "
        "with -quick under --quick).",
    )
    training.add_deprecated_alias(parser, "--directory", "--output-dir", dest="directory")
    training.add_deprecated_alias(parser, "--project-name", "--output-dir", dest="project_name")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="Delete an existing search of the same project and start over.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the oracle, weights, data.")
    parser.add_argument("--num-best", type=int, default=3, help="Trials in the summary.")
    parser.add_argument(
        "--data-dir",
        default=os.path.join("runs", "data"),
        help="Folder of the associative-retrieval data file.",
    )
    parser.add_argument(
        "--data-parallel",
        action="store_true",
        help="Every trial data-parallel over all local accelerators "
        "(keras.distribution, jax backend).",
    )
    parser.add_argument(
        "--jit-compile",
        default="auto",
        choices=("auto", "true", "false"),
        help="Compile the training step with XLA (Keras' jit_compile); auto: "
        "Keras decides for the backend.",
    )
    parser.add_argument(
        "--verbose",
        type=int,
        default=None,
        choices=(0, 1, 2),
        help="0 silent, 1 progress bar, 2 one line per epoch (default: 1 on a "
        "terminal, 2 when the output goes to a file).",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="A tiny search of a few seconds on a CPU, to check the set-up "
        "(small search space and data).",
    )
    return parser


def main(argv=None):
    """Runs (or resumes) the search; returns the summary dict (None in a worker process)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose is None:
        args.verbose = training.progress_verbosity()
    if args.output_dir is not None and {"directory", "project_name"} & set(vars(args)):
        parser.error("--output-dir replaces --directory and --project-name: give only it")
    if args.output_dir is not None:
        directory, project_name = os.path.split(os.path.normpath(args.output_dir))
        directory = directory or os.curdir
    else:
        directory = getattr(args, "directory", os.path.join("runs", "tune"))
        project_name = getattr(args, "project_name", None)
    for name in (
        "max_trials",
        "epochs",
        "max_epochs",
        "steps_per_epoch",
        "validation_batches",
        "executions_per_trial",
        "num_best",
        "hyperband_iterations",
    ):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {value}")
    if args.factor < 2:
        parser.error(f"--factor must be at least 2, got {args.factor}")
    if args.data_parallel:
        try:
            training.enable_data_parallel()
        except ValueError as error:
            parser.error(str(error))
    keras.utils.set_random_seed(args.seed)
    space = tuning.search_space(args.task, args.model, args.quick)
    fixed = [name.strip() for name in args.fix.split(",") if name.strip()]
    try:
        space = tuning.fix_params(space, fixed)
    except ValueError as error:
        parser.error(f"--fix: {error}")
    hypermodel = tuning.TaskHyperModel(
        args.task,
        model=args.model,
        quick=args.quick,
        space=space,
        steps_per_epoch=args.steps_per_epoch,
        validation_batches=args.validation_batches,
        seed=args.seed,
        data_dir=args.data_dir,
        data_parallel=args.data_parallel,
        jit_compile={"auto": "auto", "true": True, "false": False}[args.jit_compile],
    )
    tuner = tuning.make_tuner(
        args.tuner,
        hypermodel,
        max_trials=args.max_trials,
        directory=directory,
        project_name=project_name,
        overwrite=args.overwrite,
        seed=args.seed,
        executions_per_trial=args.executions_per_trial,
        max_epochs=args.max_epochs or args.epochs,
        factor=args.factor,
        hyperband_iterations=args.hyperband_iterations,
    )
    role = tuning.distributed_role()
    search = {"verbose": args.verbose}
    if args.tuner != "hyperband":
        search["epochs"] = args.epochs
    tuner.search(**search)
    if role == "worker":  # the chief holds the oracle and writes the results
        print(f"worker {os.environ.get('KERASTUNER_TUNER_ID')}: no trial left, exiting")
        return None
    tuner.results_summary(num_trials=args.num_best)
    summary = tuning.write_results(tuner, hypermodel, num_best=args.num_best)
    print(
        f"\n{summary['num_completed']} of {summary['num_trials']} trials completed; best "
        f"{summary['objective']['name']} = {summary['best_trials'][0]['score']}"
    )
    print(f"Best hyper-parameters: {summary['best_hparams_path']}")
    print(json.dumps(summary["best_hparams"]))
    print(
        "Train with them:\n  KERAS_BACKEND="
        + keras.backend.backend()
        + " "
        + tuning.training_command(args.task, summary["best_hparams_path"], args.model)
    )
    summary["role"] = role
    return summary


if __name__ == "__main__":
    main()
