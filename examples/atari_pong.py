"""Atari Pong with an STM agent: synchronous advantage actor-critic (A2C).

Agent (`keras_stm.experiments.models.actor_critic.ActorCritic`): the authors' A3C network, a CNN (4
conv +
max-pool + ReLU blocks -> 1024) feeding an LSTMCell(256) whose output drives the RL variant of
the STM (nq 8, d 96, r 96, head 256); actor and critic read concat[STM output, LSTM h]. With
`--model lstm` the STM is dropped (the A3C-LSTM baseline). Environment
(`keras_stm.experiments.tasks.atari.make_vector_env`): `PongNoFrameskip-v4` with no-op resets,
frame skip
(`--frame-skip`, 4; the authors' README uses 32), max over the last 3 frames, episodic life,
FIRE reset, 80 x 80 grey crop, running normalisation, rewards clipped to [-1, 1], games cut at
10,000 agent steps.

Protocol (the authors' `rl/train_sam.py`, with one substitution):

* rollouts of 20 steps; GAE with gamma 0.99 and lambda ("tau") 0.92; loss = sum over the rollout
  of `-log pi(a) * GAE - 0.01 * entropy`, plus 0.5 x sum of `0.5 (R - V)^2` (R: n-step returns
  bootstrapped with the critic, 0 after an episode end); Adam(lr 1e-4, amsgrad, eps 1e-3), no
  gradient clipping;
* the recurrent state (LSTM h, c and the STM item memory) persists across rollouts, detached at
  each rollout boundary, and is re-initialised per environment when its episode ends (a lost life
  or a game over; Pong has no lives, so a game);
* **A3C -> A2C**: the authors ran 32 asynchronous Hogwild CPU workers, each updating shared
  weights after its own 20-step rollout. Here `--num-envs` (16) environments step in lockstep and
  one learner applies one update per rollout of all of them (loss averaged over environments, so
  each environment weighs what one worker's update did). Same loss, rollout length and optimiser;
  no stale gradients, one GPU-friendly batch. Per frame there are 16x fewer updates than in
  A3C, each averaging 16 environments' losses (16 matches the 16 CPU cores of one GPU machine,
  one emulator each with `--async-envs`); `--learning-rate` is the knob if that is too slow.
  The learner re-runs the rollout from the states stored at its start (same weights, same
  resets), so it recomputes exactly what the actors saw and the update goes through Keras'
  `train_on_batch` under jax, torch and tensorflow.
* metric: the unclipped game score; progress lines and `results.json` give the mean over the
  last 100 finished training games (stochastic policy). The authors logged a separate greedy
  test worker; there is none here. Pong scores range from -21 to 21.

The paper shows RL learning curves (their figure numbers and values were not recovered);
`reward_curve.png` plots the same kind of curve: every game's score against frames, and the
100-game moving average.

Outputs in `--output-dir` (default `runs/atari_pong-<model>`): `history.csv` (one row per update),
`checkpoints/` (weights + optimiser in `model.keras`, counters, episode scores and the action
sampler's RNG in `state.json`, every `--steps-per-epoch` updates and at the end),
`results.json` (frames, games, mean of the last 100 games, frames per second and where the time
went, the seeds of every session), `episodes.csv` (frame and score of every finished game),
`reward_curve.png`. `scripts/export_pretrained.py RUN_DIR pong_stm ...` publishes the newest
checkpoint's weights with these files as `pretrained/pong_stm/`. Restarting the same command
resumes from the last checkpoint
(environments restart from fresh games with the recurrent state re-initialised; `--fresh` starts
over). `--max-minutes M` stops at the first update after M minutes of this session, writes the
checkpoint and `results.json` (`stopped_by_time_budget` true), and the same command resumes.
Frames count emulator frames (agent steps x frame skip), as in the Atari literature.

Command lines (from the repository root):

    KERAS_BACKEND=jax python examples/atari_pong.py                      # STM agent, 10M frames
    KERAS_BACKEND=jax python examples/atari_pong.py --model lstm         # LSTM-only baseline
    KERAS_BACKEND=jax python examples/atari_pong.py --frame-skip 32      # the README's setting
    KERAS_BACKEND=jax python examples/atari_pong.py --async-envs         # one process per env
    KERAS_BACKEND=jax python examples/atari_pong.py --quick              # CPU smoke run (TinyPong)
    python examples/atari_pong.py --evaluate pong_stm --episodes 10      # play a saved agent

`--evaluate [NAME_OR_PATH]` trains nothing and writes nothing: it plays the agent of a
pretrained folder (a name under `pretrained/`, default `pong_<model>`), a run folder (its newest
checkpoint) or a `.keras` file for `--episodes` games and prints the mean, spread, minimum and
maximum of the unclipped scores. The environment (`--env-id`, `--frame-skip`) is the agent's
own, read from its `results.json`, unless given; `--greedy` plays the most likely action
instead of sampling (the authors' test worker).

`--quick` uses `keras_stm.experiments.tasks.atari.TINY_ENV_ID` (a numpy Pong stand-in, no ROM) with
2
environments, one life per game, tiny network sizes (`actor_critic.SMOKE_CONFIG`) and a
few updates of 2-step rollouts.
"""

import argparse
import csv
import json
import math
import os
import shutil
import time

import keras
import numpy as np

from keras_stm.experiments import training
from keras_stm.experiments import visualize
from keras_stm.experiments.models import actor_critic
from keras_stm.experiments.tasks import advantages as advantages_lib
from keras_stm.experiments.tasks import atari

TASK = "atari_pong"
ENV_ID = "PongNoFrameskip-v4"
FRAMES = 10_000_000
"""int: default budget of emulator frames."""
MEAN_WINDOW = 100
"""int: games in the moving average reported as the score."""

QUICK = {
    "env_id": atari.TINY_ENV_ID,
    "num_envs": 2,
    "rollout_length": 2,
    "iterations": 3,
    "steps_per_epoch": 2,
    "log_every": 1,
    "max_episode_steps": 6,
}
"""dict: flag values of `--quick` (TinyPong, 2 envs, 3 updates of 2-step rollouts)."""
QUICK_ENV_KWARGS = {"lives": 1}
"""dict: TinyPong arguments of `--quick` (one life: short games)."""

HISTORY_FIELDS = (
    "update",
    "frames",
    "seconds",
    "frames_per_second",
    "loss",
    "policy_loss",
    "value_loss",
    "entropy",
    "episodes",
    "mean_reward_100",
)
"""tuple: columns of `history.csv`."""

_UNUSED_FLAGS = ("--batch-size", "--mixed-precision", "--data-parallel")
DEFAULT_FRAME_SKIP = 4
"""int: `--frame-skip` of a training run when not given (an evaluation takes the agent's)."""
EPISODES_FIELDS = ("frames", "score")
"""tuple: columns of `episodes.csv` (one row per finished training game)."""


def build_parser():
    """The shared training flags (paper defaults) plus the A2C / environment flags."""
    defaults = actor_critic.A2C_DEFAULTS
    parser = training.argument_parser(
        __doc__,
        task=TASK,
        learning_rate=defaults["learning_rate"],
        iterations=10**9,
        steps_per_epoch=100,
        optimizer="adam",
        adam_beta_2=0.999,
    )
    for action in parser._actions:  # flags of the shared parser that A2C does not use
        if set(action.option_strings) & set(_UNUSED_FLAGS):
            action.help = argparse.SUPPRESS
        if "--iterations" in action.option_strings:
            action.help = "Upper bound on A2C updates (the --frames budget normally stops first)."
        if "--steps-per-epoch" in action.option_strings:
            action.help = "A2C updates between two checkpoints."
        if "--evaluate" in action.option_strings:
            action.help = (
                "Train nothing, write nothing: play a saved agent (a name under "
                "pretrained/, no value for pong_<model>, a run folder or a .keras "
                "file) for --episodes games and print the mean and spread of the "
                "scores."
            )
        if "--max-minutes" in action.option_strings:
            action.help = (
                "Stop at the first update after this much training time (checkpoint "
                "written; the same command resumes)."
            )
    training.add_deprecated_alias(parser, "--core", "--model", choices=actor_critic.CORES)
    parser.add_argument(
        "--env-id",
        default=None,
        help=f"A NoFrameskip Atari id (training: {ENV_ID}; --evaluate: the agent's).",
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=FRAMES,
        help="Budget of emulator frames (agent steps x frame skip).",
    )
    parser.add_argument(
        "--num-envs",
        type=int,
        default=16,
        help="Environments stepped together (the authors: 32 A3C workers).",
    )
    parser.add_argument(
        "--frame-skip",
        type=int,
        default=None,
        help=f"Emulator frames per action (training: {DEFAULT_FRAME_SKIP}; the "
        "authors' README: 32; --evaluate: the agent's).",
    )
    for name, kind, text in (
        ("rollout_length", int, "Agent steps per environment between two updates."),
        ("gamma", float, "Discount factor of future rewards."),
        ("gae_lambda", float, "Lambda of the generalised advantage estimate (the authors' tau)."),
        ("entropy_coef", float, "Weight of the entropy bonus in the loss."),
        ("value_coef", float, "Weight of the critic's loss."),
        ("adam_epsilon", float, "Adam's epsilon."),
    ):
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=defaults[name], help=text
        )
    parser.add_argument(
        "--lstm-units",
        type=int,
        default=actor_critic.LSTM_UNITS,
        help="Width of the agent's LSTM cell.",
    )
    parser.add_argument(
        "--max-episode-steps",
        type=int,
        default=10000,
        help="Agent steps per game before it is cut.",
    )
    parser.add_argument(
        "--async-envs",
        action="store_true",
        help="Run each environment in its own process (forkserver).",
    )
    parser.add_argument(
        "--continue-from",
        default=None,
        metavar="NAME_OR_PATH",
        help="When --output-dir holds no checkpoint: continue the run a "
        "pretrained folder was exported from (its weights, frame and update "
        "counters, games, history and sampler; a fresh optimizer), e.g. on "
        "another machine where only the exported weights were carried.",
    )
    parser.add_argument(
        "--episodes",
        type=int,
        default=10,
        help="--evaluate: games to play (spread over --num-envs environments).",
    )
    parser.add_argument(
        "--greedy",
        action="store_true",
        help="--evaluate: play the most likely action instead of sampling.",
    )
    parser.add_argument(
        "--log-every",
        type=int,
        default=10,
        help="A2C updates between two progress lines (frames done of the total, ETA, mean score).",
    )
    return parser


def check_args(parser, args):
    """Rejects flag values the A2C loop cannot use (argparse errors name the flag)."""
    for name in (
        "frames",
        "num_envs",
        "frame_skip",
        "rollout_length",
        "lstm_units",
        "max_episode_steps",
        "log_every",
        "episodes",
    ):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("gamma", "gae_lambda"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            parser.error(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    for name in ("entropy_coef", "value_coef"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.adam_epsilon <= 0:
        parser.error(f"--adam-epsilon must be positive, got {args.adam_epsilon}")
    if args.mixed_precision or args.data_parallel:
        parser.error("--mixed-precision and --data-parallel are not supported by the A2C example")


def make_optimizer(args):
    """Adam(amsgrad, eps `--adam-epsilon`) as the authors, or the shared RMSprop flags."""
    if args.optimizer == "adam":
        return actor_critic.a2c_optimizer(
            learning_rate=args.learning_rate,
            epsilon=args.adam_epsilon,
            beta_2=args.adam_beta_2,
            clipnorm=args.clip_norm,
            clipvalue=args.clip_value,
        )
    return training.make_optimizer(args)


def build_model(args, num_actions):
    """The compiled `ActorCritic` of the flags."""
    sizes = actor_critic.SMOKE_CONFIG if args.quick else {"lstm_units": args.lstm_units}
    model = actor_critic.ActorCritic(
        num_actions,
        core=args.model,
        entropy_coef=args.entropy_coef,
        value_coef=args.value_coef,
        **sizes,
    )
    model.compile(optimizer=make_optimizer(args), jit_compile=training.jit_compile(args))
    return model


# ------------------------------------------------------------------------------ checkpoints
def _checkpoint_root(out):
    return os.path.join(out, "checkpoints")


def save_checkpoint(out, model, state):
    """Writes `checkpoints/update-<n>/{model.keras, state.json}`, then points `latest.json` at it.

    The pointer is replaced atomically once both files are complete, so an interruption never
    leaves a half-written checkpoint in use; older checkpoints are then removed.
    """
    root = _checkpoint_root(out)
    name = f"update-{state['updates']:09d}"
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    model.save(os.path.join(folder, "model.keras"))
    with open(os.path.join(folder, "state.json"), "w") as f:
        json.dump(state, f)
    pointer = os.path.join(root, "latest.json")
    with open(pointer + ".tmp", "w") as f:
        json.dump({"checkpoint": name}, f)
    os.replace(pointer + ".tmp", pointer)
    for other in os.listdir(root):
        if other.startswith("update-") and other != name:
            shutil.rmtree(os.path.join(root, other), ignore_errors=True)


def load_checkpoint_state(out):
    """`(state, model_path)` of the latest checkpoint in `out`, or `(None, None)` if none."""
    pointer = os.path.join(_checkpoint_root(out), "latest.json")
    if not os.path.exists(pointer):
        return None, None
    try:
        with open(pointer) as f:
            folder = os.path.join(_checkpoint_root(out), json.load(f)["checkpoint"])
        with open(os.path.join(folder, "state.json")) as f:
            state = json.load(f)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"checkpoint in {_checkpoint_root(out)!r} is unreadable ({error}); "
            "rerun with --fresh to start over"
        ) from error
    model_path = os.path.join(folder, "model.keras")
    if not os.path.exists(model_path):
        raise FileNotFoundError(
            f"checkpoint weights {model_path!r} are missing; rerun with --fresh to start over"
        )
    return state, model_path


def _read_history(path, last_update):
    """Rows of `history.csv` up to `last_update` (later rows were not checkpointed)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [row for row in csv.DictReader(f) if int(float(row["update"])) <= last_update]


def _write_history(path, rows):
    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(path + ".tmp", path)


def plot_rewards(episodes, path, title):
    """Plots every game's score against frames and the `MEAN_WINDOW`-game moving average."""
    fig = visualize.new_figure(figsize=(7, 4))
    ax = fig.subplots()
    if episodes:
        frames = np.array([e[0] for e in episodes], dtype=np.float64)
        scores = np.array([e[1] for e in episodes], dtype=np.float64)
        ax.plot(frames, scores, ".", alpha=0.3, markersize=3, label="game score")
        cumulative = np.concatenate([[0.0], np.cumsum(scores)])
        counts = np.minimum(np.arange(1, len(scores) + 1), MEAN_WINDOW)
        moving = (cumulative[1:] - cumulative[np.arange(1, len(scores) + 1) - counts]) / counts
        ax.plot(frames, moving, "-", label=f"mean of last {MEAN_WINDOW}")
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "no finished game yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("emulator frames")
    ax.set_ylabel("game score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _write_episodes(path, episodes):
    """Writes `episodes.csv` (frame and unclipped score of every finished game), atomically."""
    with open(path + ".tmp", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(EPISODES_FIELDS)
        writer.writerows((int(frame), float(score)) for frame, score in episodes)
    os.replace(path + ".tmp", path)


def _mean_last(episodes):
    if not episodes:
        return None
    return float(np.mean([e[1] for e in episodes[-MEAN_WINDOW:]]))


def _published_state(target, history_path):
    """`(state, model_path, folder)` of `--continue-from`: the counters, games and sampler of
    the checkpoint a pretrained folder was exported from (`checkpoint_state.json`) and its
    weights; its `history.csv` is copied to `history_path`."""
    from keras_stm.experiments import pretrained

    folder = pretrained.resolve(target)
    path = os.path.join(folder, pretrained.CHECKPOINT_STATE_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"--continue-from {folder}: no {pretrained.CHECKPOINT_STATE_FILE}"
            " (export the run with scripts/export_pretrained.py)"
        )
    with open(path) as f:
        state = json.load(f)
    if os.path.exists(os.path.join(folder, "history.csv")):
        shutil.copyfile(os.path.join(folder, "history.csv"), history_path)
    return state, os.path.join(folder, pretrained.MODEL_FILE), folder


# ------------------------------------------------------------------------------ evaluation
def resolve_agent(target, model_name):
    """`(model_path, results)` of `--evaluate`'s target: a pretrained name or folder, a run
    folder (its newest checkpoint, see `keras_stm.experiments.pretrained.run_model_path`) or a
    `.keras`
    file (with the `results.json` beside it, if any). `"auto"` is `pong_<model_name>`."""
    from keras_stm.experiments import pretrained

    target = f"pong_{model_name}" if target == "auto" else target
    if os.path.isfile(target):
        path, folder = target, os.path.dirname(os.path.abspath(target))
    elif os.path.isdir(target) and not os.path.exists(os.path.join(target, "model.keras")):
        path, folder = pretrained.run_model_path(target), target
    else:
        folder = pretrained.resolve(target)
        path = os.path.join(folder, pretrained.MODEL_FILE)
    results = {}
    if os.path.exists(os.path.join(folder, "results.json")):
        with open(os.path.join(folder, "results.json")) as f:
            results = json.load(f)
    return path, results


def play(model, envs, episodes, rng, greedy=False):
    """Plays `episodes` games with `envs` (environment i plays its share, so short games are
    not favoured) and returns their unclipped scores (float64 array, environment order)."""
    num_envs = envs.num_envs
    quota = [episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)]
    scores = [[] for _ in range(num_envs)]
    observations, _ = envs.reset()
    states = model.initial_states(num_envs)
    resets = np.zeros((num_envs,), np.float32)
    while any(len(s) < q for s, q in zip(scores, quota)):
        logits, _, states = model.step(observations, states, resets)
        actions = np.argmax(logits, axis=1) if greedy else actor_critic.sample_actions(logits, rng)
        observations, _, terminated, truncated, info = envs.step(actions)
        done = np.logical_or(terminated, truncated)
        final = info.get("final_info", {})
        if "episode" in final:
            finished = np.asarray(final.get("_episode", np.ones(num_envs, bool)), bool)
            for i in np.flatnonzero(finished):
                if len(scores[i]) < quota[i]:
                    scores[i].append(float(np.asarray(final["episode"]["r"])[i]))
        resets = done.astype(np.float32)
    return np.array([score for env_scores in scores for score in env_scores], np.float64)


def evaluate_agent(args):
    """`--evaluate`: plays a saved agent for `--episodes` games; prints and returns the scores.

    Nothing is trained or written. The environment is the agent's (`env_id` and frame skip from
    its `results.json`) unless `--env-id` / `--frame-skip` are given.
    """
    path, recorded = resolve_agent(args.evaluate, args.model)
    model = keras.saving.load_model(path, compile=False)
    if not isinstance(model, actor_critic.ActorCritic):
        raise ValueError(
            f"--evaluate: {path} holds a {type(model).__name__}, not an ActorCritic agent"
        )
    env_id = args.env_id or recorded.get("env_id", ENV_ID)
    frame_skip = args.frame_skip or recorded.get("a2c", {}).get("frame_skip", DEFAULT_FRAME_SKIP)
    quick = recorded.get("flags", {}).get("quick", False) or args.quick
    env_kwargs = QUICK_ENV_KWARGS if quick and env_id == atari.TINY_ENV_ID else {}
    num_envs = min(args.num_envs, args.episodes)
    envs = atari.make_vector_env(
        num_envs,
        env_id=env_id,
        seed=args.seed,
        asynchronous=args.async_envs,
        context="forkserver" if args.async_envs else None,
        frame_skip=frame_skip,
        max_episode_steps=args.max_episode_steps,
        **env_kwargs,
    )
    try:
        if int(envs.single_action_space.n) != model.num_actions:
            raise ValueError(
                f"--evaluate: the agent has {model.num_actions} actions, {env_id} "
                f"has {int(envs.single_action_space.n)}"
            )
        start = time.perf_counter()
        scores = play(
            model, envs, args.episodes, np.random.default_rng(args.seed), greedy=args.greedy
        )
        seconds = time.perf_counter() - start
    finally:
        envs.close()
    report = {
        "task": TASK,
        "evaluated": path,
        "model": model.core,
        "env_id": env_id,
        "frame_skip": int(frame_skip),
        "policy": "greedy" if args.greedy else "sampled",
        "episodes": int(len(scores)),
        "mean_score": float(scores.mean()),
        "std_score": float(scores.std()),
        "min_score": float(scores.min()),
        "max_score": float(scores.max()),
        "scores": scores.tolist(),
        "seed": args.seed,
        "max_episode_steps": args.max_episode_steps,
        "seconds": round(seconds, 2),
        "recorded": {k: recorded.get(k) for k in ("frames", "episodes", "mean_reward_last_100")},
    }
    print(
        f"{path}: {len(scores)} games of {env_id} (frame skip {frame_skip}, "
        f"{report['policy']} actions): score {report['mean_score']:.2f} +- "
        f"{report['std_score']:.2f} (min {report['min_score']:g}, max "
        f"{report['max_score']:g})"
    )
    print(json.dumps(report))
    return report


# ------------------------------------------------------------------------------ main loop
def main(argv=None):
    """Trains the agent (resuming if possible); returns the results dict (also results.json)."""
    parser = build_parser()
    args = training.parse_args(parser, argv, quick_overrides=QUICK)
    check_args(parser, args)
    if args.evaluate:
        return evaluate_agent(args)
    args.env_id = args.env_id or ENV_ID
    args.frame_skip = args.frame_skip or DEFAULT_FRAME_SKIP
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    history_path = os.path.join(out, "history.csv")
    if args.fresh:
        shutil.rmtree(_checkpoint_root(out), ignore_errors=True)
        if os.path.exists(history_path):
            os.remove(history_path)

    num_envs, steps = args.num_envs, args.rollout_length
    frames_per_update = num_envs * steps * args.frame_skip
    max_updates = min(args.iterations, math.ceil(args.frames / frames_per_update))
    run_config = {
        "core": args.model,
        "env_id": args.env_id,
        "num_envs": num_envs,
        "rollout_length": steps,
        "frame_skip": args.frame_skip,
        "quick": args.quick,
    }

    model = None
    warmup = None
    state, model_path = load_checkpoint_state(out)
    continued = None
    if state is None and args.continue_from:
        state, model_path, continued = _published_state(args.continue_from, history_path)
    if continued is not None:
        if state.get("config") != run_config:
            raise ValueError(
                f"--continue-from {continued}: the agent was trained with "
                f"{state.get('config')}, not {run_config}"
            )
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        print(
            f"Continuing {continued} from update {state['updates']} ({state['frames']:,} "
            "frames) with a fresh optimizer."
        )
    elif state is not None:
        if state.get("config") != run_config:
            raise ValueError(
                f"the checkpoint in {_checkpoint_root(out)!r} was made with "
                f"{state.get('config')}, not {run_config}; use another "
                "--output-dir or --fresh"
            )
        model = keras.saving.load_model(model_path)  # weights, optimiser state, compile args
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        print(f"Resuming from update {state['updates']} ({state['frames']:,} frames).")
    else:
        rng = np.random.default_rng(args.seed)
        state = {
            "updates": 0,
            "frames": 0,
            "train_seconds": 0.0,
            "episodes": [],
            "config": run_config,
        }
    for key in TIME_SPLIT:
        state.setdefault(key, 0.0)
    # Environment i of a session starting at update u is seeded `seed + num_envs * u + i`.
    env_seed = args.seed + num_envs * state["updates"]
    state.setdefault("sessions", []).append(
        {
            "update": state["updates"],
            "frames": state["frames"],
            "seed": args.seed,
            "env_seeds": [env_seed, env_seed + num_envs - 1],
            "async_envs": bool(args.async_envs),
            "optimizer": "restored" if model is not None else "fresh",
            **({"continued_from": continued} if continued else {}),
        }
    )
    episodes = [tuple(e) for e in state["episodes"]]
    history = _read_history(history_path, state["updates"])
    _write_history(history_path, history)

    env_kwargs = QUICK_ENV_KWARGS if args.quick and args.env_id == atari.TINY_ENV_ID else {}
    envs = atari.make_vector_env(
        num_envs,
        env_id=args.env_id,
        seed=args.seed + num_envs * state["updates"],
        asynchronous=args.async_envs,
        context="forkserver" if args.async_envs else None,
        frame_skip=args.frame_skip,
        max_episode_steps=args.max_episode_steps,
        **env_kwargs,
    )
    try:
        num_actions = int(envs.single_action_space.n)
        if model is None:
            model = build_model(args, num_actions)
            if continued is not None:
                training.load_weights_only(model, model_path, "--continue-from")
            elif args.initial_weights:
                training.load_weights_only(model, args.initial_weights, "--initial-weights")
            warmup = training.learning_rate_warmup(
                args, continued is not None or bool(args.initial_weights)
            )
        elif model.num_actions != num_actions:
            raise ValueError(
                f"the checkpoint's model has {model.num_actions} actions, "
                f"{args.env_id} has {num_actions}; use --fresh"
            )
        elif args.initial_weights:
            print(
                f"--initial-weights {args.initial_weights} ignored: resuming the checkpoint "
                f"of {out}."
            )
        if args.verbose:
            print(
                f"{args.env_id}: {num_envs} envs, core {args.model}, "
                f"{model.count_params():,} parameters, {frames_per_update} frames per update, "
                f"{max_updates} updates in total."
            )
        _train(
            args,
            model,
            envs,
            state,
            episodes,
            history,
            rng,
            max_updates,
            frames_per_update,
            out,
            history_path,
            warmup,
        )
    finally:
        envs.close()

    mean_100 = _mean_last(episodes)
    best_100 = None
    if episodes:
        scores = np.array([e[1] for e in episodes])
        windows = [scores[max(0, i + 1 - MEAN_WINDOW) : i + 1].mean() for i in range(len(scores))]
        best_100 = float(max(windows[min(MEAN_WINDOW, len(windows)) - 1 :]))
    results = {
        "task": TASK,
        "model": args.model,
        "env_id": args.env_id,
        "paper_metric": f"mean unclipped game score of the last {MEAN_WINDOW} training games",
        "updates": state["updates"],
        "updates_planned": max_updates,
        "stopped_by_time_budget": bool(state.get("stopped_by_time_budget", False)),
        "frames": state["frames"],
        "episodes": len(episodes),
        "mean_reward_last_100": mean_100,
        "best_mean_reward_100": best_100,
        "train_seconds": round(state["train_seconds"], 2),
        "frames_per_second": round(state["frames"] / max(state["train_seconds"], 1e-9), 1),
        "seconds_split": {key.replace("_seconds", ""): round(state[key], 2) for key in TIME_SPLIT},
        "seed": args.seed,
        "sessions": state["sessions"],
        "async_envs": bool(args.async_envs),
        "parameters": int(model.count_params()),
        "a2c": {
            "num_envs": num_envs,
            "rollout_length": steps,
            "frame_skip": args.frame_skip,
            "gamma": args.gamma,
            "gae_lambda": args.gae_lambda,
            "entropy_coef": args.entropy_coef,
            "value_coef": args.value_coef,
            "optimizer": args.optimizer,
            "learning_rate": args.learning_rate,
            "adam_epsilon": args.adam_epsilon,
            "amsgrad": True,
        },
        "stm_config": model.stm_config if args.model == "stm" else None,
        "flags": {
            k: v
            for k, v in vars(args).items()
            if isinstance(v, (int, float, str, bool, type(None)))
        },
        "environment": training.environment(),
    }
    if warmup is not None:
        results["learning_rate_warmup_steps"] = warmup.steps
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    training.plot_or_warn(
        plot_rewards,
        episodes,
        os.path.join(out, "reward_curve.png"),
        f"{args.env_id} ({args.model}, A2C x {num_envs})",
    )
    print(
        json.dumps(
            {
                "task": TASK,
                "model": args.model,
                "frames": state["frames"],
                "mean_reward_last_100": mean_100,
            }
        )
    )
    return results


TIME_SPLIT = ("environment_seconds", "acting_seconds", "learning_seconds")
"""tuple: where the training time goes (state and `results.json`'s `seconds_split`): stepping
the environments, the agent's forward steps (and sampling), the updates (GAE and
`train_on_batch`); the rest is bookkeeping."""


def _train(
    args,
    model,
    envs,
    state,
    episodes,
    history,
    rng,
    max_updates,
    frames_per_update,
    out,
    history_path,
    warmup=None,
):
    """The A2C loop: rollouts of all environments, one `train_on_batch` per rollout (the
    learning rate ramped up by `warmup`, a `training.LearningRateWarmup`, if given)."""
    num_envs, steps = args.num_envs, args.rollout_length
    obs_shape = model.observation_shape
    observations, _ = envs.reset()
    states = model.initial_states(num_envs)
    resets = np.ones((num_envs,), np.float32)  # the first step starts every episode
    session_start, session_frames = time.perf_counter(), 0
    last_saved = state["updates"]
    if warmup is not None:
        warmup.set_model(model)
        warmup.on_train_begin()
    while state["updates"] < max_updates:
        update_start = time.perf_counter()
        start_states = states
        obs_buf = np.empty((num_envs, steps) + obs_shape, np.float32)
        reset_buf = np.empty((num_envs, steps), np.float32)
        action_buf = np.empty((num_envs, steps), np.int32)
        reward_buf = np.empty((num_envs, steps), np.float32)
        done_buf = np.empty((num_envs, steps), bool)
        value_buf = np.empty((num_envs, steps), np.float32)
        acting = environment = 0.0
        for t in range(steps):
            obs_buf[:, t] = observations
            reset_buf[:, t] = resets
            tick = time.perf_counter()
            logits, values, states = model.step(observations, states, resets)
            actions = actor_critic.sample_actions(logits, rng)
            tock = time.perf_counter()
            observations, rewards, terminated, truncated, info = envs.step(actions)
            acting, environment = acting + tock - tick, environment + time.perf_counter() - tock
            done = np.logical_or(terminated, truncated)
            action_buf[:, t], reward_buf[:, t], done_buf[:, t] = actions, rewards, done
            value_buf[:, t] = values
            stamp = state["frames"] + (t + 1) * num_envs * args.frame_skip
            episodes.extend(
                (stamp, float(score)) for score in atari.completed_episode_returns(info)
            )
            resets = done.astype(np.float32)
        tick = time.perf_counter()
        _, bootstrap, _ = model.step(observations, states, resets)
        acting += time.perf_counter() - tick
        tick = time.perf_counter()
        advantages, returns = advantages_lib.generalized_advantage_estimates(
            reward_buf.T, value_buf.T, done_buf.T, bootstrap, gamma=args.gamma, lam=args.gae_lambda
        )
        if warmup is not None:
            warmup.on_train_batch_begin(0)
        logs = model.train_on_batch(
            {"observations": obs_buf, "resets": reset_buf, "states": start_states},
            {
                "actions": action_buf,
                "advantages": np.ascontiguousarray(advantages.T),
                "returns": np.ascontiguousarray(returns.T),
            },
            return_dict=True,
        )
        learning = time.perf_counter() - tick
        for key, seconds in zip(TIME_SPLIT, (environment, acting, learning)):
            state[key] += seconds
        state["updates"] += 1
        state["frames"] += frames_per_update
        state["train_seconds"] += time.perf_counter() - update_start
        session_frames += frames_per_update
        fps = session_frames / max(time.perf_counter() - session_start, 1e-9)
        mean_100 = _mean_last(episodes)
        history.append(
            {
                "update": state["updates"],
                "frames": state["frames"],
                "seconds": round(state["train_seconds"], 3),
                "frames_per_second": round(fps, 1),
                **{k: float(logs[k]) for k in ("loss", "policy_loss", "value_loss", "entropy")},
                "episodes": len(episodes),
                "mean_reward_100": "" if mean_100 is None else mean_100,
            }
        )
        if not all(math.isfinite(float(logs[k])) for k in ("loss", "value_loss")):
            raise FloatingPointError(f"non-finite loss at update {state['updates']}: {logs}")
        if args.verbose and (
            state["updates"] % args.log_every == 0 or state["updates"] == max_updates
        ):
            session = time.perf_counter() - session_start
            budget_left = 60.0 * args.max_minutes - session if args.max_minutes else None
            score = "n/a" if mean_100 is None else f"{mean_100:.2f}"
            print(
                training.progress_line(
                    state["frames"],
                    max_updates * frames_per_update,
                    state["train_seconds"],
                    session / session_frames,
                    unit="frames",
                    budget_left=budget_left,
                )
                + f" | update {state['updates']:,}/{max_updates:,}, {fps:,.0f} frames/s, "
                f"games {len(episodes)}, mean score (last {MEAN_WINDOW}) {score}, "
                f"loss {float(logs['loss']):.4f}, value {float(logs['value_loss']):.4f}, "
                f"entropy {float(logs['entropy']):.3f}, time env/act/learn "
                + "/".join(
                    f"{state[k] / max(state['train_seconds'], 1e-9):.0%}" for k in TIME_SPLIT
                ),
                flush=True,
            )
        if state["updates"] % args.steps_per_epoch == 0 or state["updates"] == max_updates:
            _checkpoint(out, model, state, episodes, rng, history, history_path)
            last_saved = state["updates"]
        if (
            args.max_minutes
            and state["updates"] < max_updates
            and time.perf_counter() - session_start >= 60.0 * args.max_minutes
        ):
            state["stopped_by_time_budget"] = True
            if args.verbose:
                print(
                    f"Stopping after {args.max_minutes} minutes (--max-minutes) at update "
                    f"{state['updates']}; the same command resumes.",
                    flush=True,
                )
            break
    else:
        state["stopped_by_time_budget"] = False
    if last_saved != state["updates"]:
        _checkpoint(out, model, state, episodes, rng, history, history_path)


def _checkpoint(out, model, state, episodes, rng, history, history_path):
    state["episodes"] = [list(e) for e in episodes]
    state["rng"] = rng.bit_generator.state
    _write_history(history_path, history)
    _write_episodes(os.path.join(out, "episodes.csv"), episodes)
    save_checkpoint(out, model, state)


if __name__ == "__main__":
    main()
