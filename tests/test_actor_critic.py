"""Tests of the RL agent (`keras_stm.experiments.models.actor_critic`) and of
`examples/atari_pong.py`.

The loss is checked against an independent numpy transcription of the reference worker's
backward loop (`rl/train_sam.py`: `R = gamma R + r`, `gae = gae gamma tau + delta`, one
rollout segment per episode piece) and against a value computed by hand; the model's rollout
call is checked against step-by-step acting and against fresh starts for reset environments.
"""

import csv
import importlib.util
import json
import math
import os
import shutil

import keras
import numpy as np
import pytest

from keras_stm.experiments.models import actor_critic
from keras_stm.experiments.models.actor_critic import ActorCritic
from keras_stm.experiments.tasks import advantages

OBS = (80, 80, 1)


def tiny_model(core="stm", num_actions=6, **kwargs):
    return ActorCritic(num_actions, core=core, **actor_critic.SMOKE_CONFIG, **kwargs)


def random_states(model, n, rng):
    return [rng.normal(size=(n, size)).astype(np.float32) for size in model.state_sizes]


def rollout_inputs(model, n, steps, rng, resets=None):
    return {
        "observations": rng.normal(size=(n, steps) + OBS).astype(np.float32),
        "resets": np.zeros((n, steps), np.float32) if resets is None else resets,
        "states": random_states(model, n, rng),
    }


def numpy_loss(logits, values, actions, adv, returns, entropy_coef=0.01, value_coef=0.5):
    """The loss written directly with numpy, one environment at a time."""
    total = []
    for i in range(logits.shape[0]):
        z = logits[i] - logits[i].max(axis=-1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        entropy = -(np.exp(log_p) * log_p).sum(axis=-1)
        taken = log_p[np.arange(len(actions[i])), actions[i]]
        policy = np.sum(-taken * adv[i] - entropy_coef * entropy)
        value = np.sum(0.5 * (returns[i] - values[i]) ** 2)
        total.append(policy + value_coef * value)
    return float(np.mean(total))


# ---------------------------------------------------------------------------------- the loss
def test_loss_hand_computed_single_step():
    # One step, two actions, uniform policy, V = 0.5, reward 1 then episode end:
    # R = 1, GAE = 1 - 0.5 = 0.5;
    # loss = -log(1/2) * 0.5 - 0.01 * log 2 + 0.5 * (0.5 * 0.5^2) = 0.40214...
    adv, ret = advantages.generalized_advantage_estimates(
        np.array([[1.0]]), np.array([[0.5]]), np.array([[True]]), np.array([7.0])
    )
    assert adv[0, 0] == pytest.approx(0.5) and ret[0, 0] == pytest.approx(1.0)
    loss, parts = actor_critic.actor_critic_loss(
        np.zeros((1, 1, 2), np.float32),
        np.full((1, 1), 0.5, np.float32),
        np.zeros((1, 1), np.int32),
        adv,
        ret,
    )
    expected = math.log(2) * 0.5 - 0.01 * math.log(2) + 0.5 * 0.5 * 0.25
    assert float(loss) == pytest.approx(0.402142, rel=1e-5)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(parts["entropy"]) == pytest.approx(math.log(2), rel=1e-6)
    assert float(parts["value_loss"]) == pytest.approx(0.125, rel=1e-6)


def reference_worker_loss(logits, values, actions, rewards, dones, bootstrap, gamma, tau):
    """The authors' worker loop, per environment and per episode piece of the rollout."""
    losses = []
    for i in range(logits.shape[0]):
        z = logits[i] - logits[i].max(axis=-1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        entropy = -(np.exp(log_p) * log_p).sum(axis=-1)
        total, start = 0.0, 0
        ends = [t for t in range(len(rewards[i])) if dones[i, t]]
        pieces = [(s, e) for s, e in zip([0] + [t + 1 for t in ends], ends + [len(rewards[i]) - 1])]
        for start, end in pieces:
            if start > end:
                continue
            # The worker appends R (0 after a done, else the critic's value) to its values.
            last = (
                0.0
                if dones[i, end]
                else (values[i, end + 1] if end + 1 < len(rewards[i]) else bootstrap[i])
            )
            seg_values = list(values[i, start : end + 1]) + [last]
            big_r, gae, policy_loss, value_loss = last, 0.0, 0.0, 0.0
            for k in reversed(range(end + 1 - start)):
                t = start + k
                big_r = gamma * big_r + rewards[i, t]
                value_loss += 0.5 * (big_r - seg_values[k]) ** 2
                delta = rewards[i, t] + gamma * seg_values[k + 1] - seg_values[k]
                gae = gae * gamma * tau + delta
                policy_loss += -log_p[t, actions[i, t]] * gae - 0.01 * entropy[t]
            total += policy_loss + 0.5 * value_loss
        losses.append(total)
    return float(np.mean(losses))


def test_loss_matches_reference_worker_loop():
    rng = np.random.default_rng(3)
    n, steps, actions_n = 3, 5, 4
    logits = rng.normal(size=(n, steps, actions_n)).astype(np.float32)
    values = rng.normal(size=(n, steps)).astype(np.float32)
    actions = rng.integers(0, actions_n, size=(n, steps))
    rewards = rng.choice([-1.0, 0.0, 1.0], size=(n, steps))
    dones = np.zeros((n, steps), bool)
    dones[0, 1] = True  # an episode ends mid-rollout
    dones[1, 4] = True  # ... at the last step (bootstrap ignored)
    dones[2, 0] = dones[2, 2] = True
    bootstrap = rng.normal(size=(n,))
    adv, ret = advantages.generalized_advantage_estimates(
        rewards.T, values.T, dones.T, bootstrap, gamma=0.99, lam=0.92
    )
    loss, _ = actor_critic.actor_critic_loss(logits, values, actions, adv.T, ret.T)
    expected = reference_worker_loss(logits, values, actions, rewards, dones, bootstrap, 0.99, 0.92)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(loss) == pytest.approx(numpy_loss(logits, values, actions, adv.T, ret.T), rel=1e-5)


@pytest.mark.parametrize("core", ["stm", "lstm"])
def test_train_on_batch_reports_the_numpy_loss_and_improves_the_policy(core):
    rng = np.random.default_rng(0)
    model = tiny_model(core)
    model.compile(optimizer=actor_critic.a2c_optimizer(learning_rate=1e-2))
    n, steps = 2, 3
    x = rollout_inputs(model, n, steps, rng, resets=np.array([[0, 1, 0], [0, 0, 0]], np.float32))
    before = model.predict_on_batch(x)
    assert before["logits"].shape == (n, steps, 6) and before["values"].shape == (n, steps)
    y = {
        "actions": np.zeros((n, steps), np.int32),  # action 0 had a positive advantage
        "advantages": np.ones((n, steps), np.float32),
        "returns": rng.normal(size=(n, steps)).astype(np.float32),
    }
    expected = numpy_loss(
        before["logits"], before["values"], y["actions"], y["advantages"], y["returns"]
    )
    logs = model.train_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss", "policy_loss", "value_loss", "entropy"}
    assert logs["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    after = model.predict_on_batch(x)

    def log_p0(out):
        z = out["logits"]
        return (z[..., 0] - np.log(np.exp(z).sum(-1))).mean()

    assert log_p0(after) > log_p0(before)


# ---------------------------------------------------------------------- states and resets
def test_rollout_call_equals_step_by_step_acting():
    rng = np.random.default_rng(1)
    model = tiny_model()
    n, steps = 2, 4
    resets = np.array([[1, 0, 0, 1], [0, 0, 1, 0]], np.float32)
    x = rollout_inputs(model, n, steps, rng, resets=resets)
    full = model.predict_on_batch(x)
    states = x["states"]
    for t in range(steps):
        logits, values, states = model.step(x["observations"][:, t], states, resets[:, t])
        np.testing.assert_allclose(logits, full["logits"][:, t], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(values, full["values"][:, t], rtol=1e-4, atol=1e-5)
    for mine, theirs in zip(states, full["states"]):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)


def test_reset_reinitialises_only_the_done_environment():
    rng = np.random.default_rng(2)
    model = tiny_model()
    n, steps = 3, 2
    x = rollout_inputs(model, n, steps, rng, resets=np.array([[0, 0], [0, 1], [0, 0]], np.float32))
    with_reset = model.predict_on_batch(x)
    no_reset = model.predict_on_batch({**x, "resets": np.zeros((n, steps), np.float32)})
    # Environments 0 and 2 are untouched by environment 1's reset.
    for key in ("logits", "values"):
        np.testing.assert_allclose(with_reset[key][[0, 2]], no_reset[key][[0, 2]], atol=1e-6)
        np.testing.assert_allclose(with_reset[key][1, 0], no_reset[key][1, 0], atol=1e-6)
        assert not np.allclose(with_reset[key][1, 1], no_reset[key][1, 1], atol=1e-4)
    # Environment 1's step 1 is a fresh start: the same as from `initial_states`.
    fresh = model.predict_on_batch(
        {
            "observations": x["observations"][1:2, 1:],
            "resets": np.zeros((1, 1), np.float32),
            "states": model.initial_states(1),
        }
    )
    np.testing.assert_allclose(with_reset["logits"][1, 1], fresh["logits"][0, 0], atol=1e-5)
    for a, b in zip(with_reset["states"], fresh["states"]):
        np.testing.assert_allclose(a[1], b[0], rtol=1e-4, atol=1e-5)


def test_initial_states_are_zero_except_the_learned_item_memory():
    model = tiny_model()
    h, c, y, item = model.initial_states(4)
    assert (h.shape, c.shape, y.shape, item.shape) == ((4, 6), (4, 6), (4, 5), (4, 9))
    assert model.state_names == ["lstm_h", "lstm_c", "stm_output", "stm_item_memory"]
    assert not h.any() and not c.any() and not y.any()
    learned = keras.ops.convert_to_numpy(model.stm_cell.initial_item_memory).reshape(-1)
    assert np.abs(learned).max() > 0
    np.testing.assert_array_equal(item, np.tile(learned, (4, 1)))
    lstm_only = tiny_model("lstm")
    assert [s.shape for s in lstm_only.initial_states(2)] == [(2, 6), (2, 6)]
    assert not any(s.any() for s in lstm_only.initial_states(2))


# ---------------------------------------------------------------------- structure, config
def test_reference_parameter_count_and_no_unused_weights():
    # Spec 3.2: the authors' whole A3C net for Pong has 2,652,412 parameters; this port has no
    # alpha1 / alpha2, read / slot projectors (256 -> 96, 256 -> 8) and initial relational
    # memory (8 x 96 x 96), all unused with Mr = None, and one LSTM bias instead of PyTorch's two.
    with keras.StatelessScope(initialize_variables=False):  # shapes only, no initialisation
        model = ActorCritic(6)
        lstm_only = ActorCritic(6, core="lstm")
    unused = 2 + (256 * 96 + 96) + (256 * 8 + 8) + 8 * 96 * 96
    assert model.count_params() == 2_652_412 - unused - 1024
    # Without the STM: 4 convs + LSTM (1024 + 256 + 1) * 4 * 256 + actor and critic (256 + 1) * 7.
    convs = (25 * 1 + 1) * 32 + (25 * 32 + 1) * 32 + (16 * 32 + 1) * 64 + (9 * 64 + 1) * 64
    assert lstm_only.count_params() == convs + 1_281 * 1_024 + 257 * 7
    assert not model.non_trainable_weights
    assert model.feature_size == 1024
    tiny = tiny_model()
    actor = keras.ops.convert_to_numpy(tiny.actor.kernel)
    np.testing.assert_allclose(np.linalg.norm(actor, axis=0), 0.01, rtol=1e-4)
    critic = keras.ops.convert_to_numpy(tiny.critic.kernel)
    np.testing.assert_allclose(np.linalg.norm(critic, axis=0), 1.0, rtol=1e-4)


def test_config_round_trip_and_save_load(tmp_path):
    rng = np.random.default_rng(4)
    model = tiny_model(entropy_coef=0.02)
    clone = ActorCritic.from_config(model.get_config())
    assert clone.count_params() == model.count_params() and clone.entropy_coef == 0.02
    path = str(tmp_path / "agent.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    x = rollout_inputs(model, 2, 1, rng)
    np.testing.assert_allclose(
        loaded.predict_on_batch(x)["logits"], model.predict_on_batch(x)["logits"], atol=1e-6
    )
    assert len(loaded.trainable_weights) == len(model.trainable_weights)


def test_bad_arguments_raise_value_errors():
    with pytest.raises(ValueError, match="core"):
        ActorCritic(6, core="gru")
    with pytest.raises(ValueError, match="stm_config"):
        ActorCritic(6, stm_config={"slots": 3})
    with pytest.raises(ValueError, match="observation_shape"):
        ActorCritic(6, observation_shape=(20, 20, 1), conv_filters=(2, 2, 2, 2))
    model = tiny_model()
    rng = np.random.default_rng(0)
    x = rollout_inputs(model, 2, 1, rng)
    with pytest.raises(ValueError, match="observations"):
        model({**x, "observations": x["observations"][:, :, :40]})
    with pytest.raises(ValueError, match="states"):
        model({**x, "states": x["states"][:2]})
    with pytest.raises(ValueError, match="targets"):
        model.compute_loss(x, {"actions": np.zeros((2, 1), np.int32)}, model(x))
    with pytest.raises(ValueError, match="logits"):
        actor_critic.sample_actions(np.zeros(3), np.random.default_rng(0))


def test_sample_actions_follows_the_softmax():
    logits = np.log(np.array([0.2, 0.5, 0.3]))
    draws = actor_critic.sample_actions(np.tile(logits, (40000, 1)), np.random.default_rng(5))
    freq = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=0.01)
    again = actor_critic.sample_actions(np.tile(logits, (40000, 1)), np.random.default_rng(5))
    np.testing.assert_array_equal(draws, again)


# ------------------------------------------------------------------------------ the example
def load_example():
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "atari_pong.py")
    spec = importlib.util.spec_from_file_location("atari_pong_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """The example's quick run in three sessions (one update; one more under --max-minutes;
    the rest), trained once for the tests of this module that check a finished run folder.
    Returns the folder and each session's results."""
    example = load_example()
    out = str(tmp_path_factory.mktemp("pong_run") / "run")
    per_update = example.QUICK["num_envs"] * example.QUICK["rollout_length"] * 4
    first = example.main(
        ["--quick", "--output-dir", out, "--frames", str(per_update), "--verbose", "0"]
    )
    # --max-minutes: resumes, stops after its first update, says so, and keeps the checkpoint
    timed = example.main(
        ["--quick", "--output-dir", out, "--max-minutes", "1e-9", "--verbose", "0"]
    )
    second = example.main(["--quick", "--output-dir", out, "--verbose", "0"])
    return out, (first, timed, second)


@pytest.mark.large
def test_quick_run_writes_results_and_resumes(quick_run):
    example = load_example()
    out, (first, timed, second) = quick_run
    quick = example.QUICK
    per_update = quick["num_envs"] * quick["rollout_length"] * 4
    assert first["updates"] == 1 and first["frames"] == per_update
    assert first["updates_planned"] == 1 and first["stopped_by_time_budget"] is False
    assert timed["updates"] == 2 and timed["frames"] == 2 * per_update
    assert timed["updates_planned"] == quick["iterations"] > 2
    assert timed["stopped_by_time_budget"] is True
    assert second["stopped_by_time_budget"] is False
    assert second["updates"] == quick["iterations"]
    assert second["frames"] == quick["iterations"] * per_update
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    for key in (
        "mean_reward_last_100",
        "best_mean_reward_100",
        "frames_per_second",
        "train_seconds",
        "parameters",
        "episodes",
    ):
        assert math.isfinite(results[key]), key
    assert results["episodes"] >= 1 and results["model"] == "stm"
    with open(os.path.join(out, "history.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["update"]) for r in rows] == list(range(1, quick["iterations"] + 1))
    assert all(math.isfinite(float(r["loss"])) for r in rows)
    assert os.path.getsize(os.path.join(out, "reward_curve.png")) > 0
    with open(os.path.join(out, "checkpoints", "latest.json")) as f:
        latest = json.load(f)["checkpoint"]
    assert os.path.exists(os.path.join(out, "checkpoints", latest, "model.keras"))
    with pytest.raises(ValueError, match="checkpoint"):  # a different core cannot resume it
        example.main(["--quick", "--output-dir", out, "--model", "lstm", "--verbose", "0"])


def _export(run_dir, dest):
    from keras_stm.experiments import pretrained

    return pretrained.export(
        str(run_dir), str(dest), {"commit": "test", "gpu_minutes": 0.0, "command": "--quick"}
    )


@pytest.mark.large
def test_export_of_a_run_folder_then_evaluate_writes_nothing(quick_run, tmp_path):
    """A quick run exports (newest checkpoint, reward curve, episodes.csv, results.json) and
    `--evaluate` plays it: same scores from the export and from the run folder itself."""
    example = load_example()
    run_dir = tmp_path / "run"
    shutil.copytree(quick_run[0], run_dir)  # the module's finished quick run (trained once)
    results = quick_run[1][-1]
    assert results["seed"] == 0 and results["sessions"][0]["env_seeds"] == [0, 1]
    assert set(results["seconds_split"]) == {"environment", "acting", "learning"}
    with open(run_dir / "episodes.csv", newline="") as f:
        games = list(csv.DictReader(f))
    assert len(games) == results["episodes"] >= 1
    dest = tmp_path / "pretrained" / "pong_quick"
    path = _export(run_dir, dest)
    for name in ("results.json", "reward_curve.png", "episodes.csv", "history.csv"):
        assert os.path.exists(dest / name), name
    with open(dest / "results.json") as f:
        exported = json.load(f)
    for key in ("frames", "episodes", "mean_reward_last_100", "seed", "sessions", "commit"):
        assert key in exported, key
    argv = [
        "--episodes",
        "3",
        "--max-episode-steps",
        "4",
        "--verbose",
        "0",
        "--output-dir",
        str(tmp_path / "unused"),
    ]
    report = example.main(["--evaluate", str(dest)] + argv)
    assert report["evaluated"] == path and report["episodes"] == 3
    assert report["env_id"] == example.atari.TINY_ENV_ID and report["frame_skip"] == 4
    assert report["model"] == "stm" and report["policy"] == "sampled"
    assert np.isclose(report["mean_score"], np.mean(report["scores"]))
    assert report["std_score"] >= 0 and report["min_score"] <= report["max_score"]
    again = example.main(["--evaluate", str(run_dir)] + argv)  # the run's checkpoint
    assert again["scores"] == report["scores"]
    greedy = example.main(["--evaluate", str(dest), "--greedy"] + argv)
    assert greedy["policy"] == "greedy" and len(greedy["scores"]) == 3
    assert not os.path.exists(tmp_path / "unused")
    with pytest.raises(FileNotFoundError, match="No pretrained model"):
        example.main(["--evaluate", str(tmp_path / "nothing")] + argv)
    # --continue-from: the exported weights and counters go on elsewhere (fresh optimizer)
    assert os.path.exists(dest / "checkpoint_state.json")
    more = example.main(
        [
            "--quick",
            "--output-dir",
            str(tmp_path / "more"),
            "--verbose",
            "0",
            "--continue-from",
            str(dest),
            "--iterations",
            "4",
        ]
    )
    assert more["updates"] == 4 and more["frames"] == 4 * results["frames"] // 3
    assert more["episodes"] >= results["episodes"]
    assert more["sessions"][-1]["continued_from"] == str(dest)
    assert more["sessions"][-1]["optimizer"] == "fresh"
    assert more["learning_rate_warmup_steps"] == 100  # fresh moments on trained weights
    with open(tmp_path / "more" / "history.csv", newline="") as f:
        assert [int(r["update"]) for r in csv.DictReader(f)] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="continue-from"):  # another core: refused
        example.main(
            [
                "--quick",
                "--output-dir",
                str(tmp_path / "other"),
                "--verbose",
                "0",
                "--continue-from",
                str(dest),
                "--model",
                "lstm",
            ]
        )


def test_real_pong_tiny_agent_export_and_evaluate(tmp_path):
    """A tiny agent trained for one update on Pong at frame skip 32, exported and played."""
    from keras_stm.experiments.tasks import atari

    try:
        atari.make_env("PongNoFrameskip-v4").close()
    except (ImportError, ValueError, OSError) as error:
        pytest.skip(f"the Atari Pong environment is not available here: {error}")
    example = load_example()
    run_dir = tmp_path / "run"
    results = example.main(
        [
            "--quick",
            "--env-id",
            "PongNoFrameskip-v4",
            "--frame-skip",
            "32",
            "--iterations",
            "1",
            "--max-episode-steps",
            "3",
            "--output-dir",
            str(run_dir),
            "--verbose",
            "0",
        ]
    )
    assert results["frames"] == 2 * 2 * 32 and results["a2c"]["frame_skip"] == 32
    dest = tmp_path / "pong_tiny"
    _export(run_dir, dest)
    report = example.main(
        [
            "--evaluate",
            str(dest),
            "--episodes",
            "2",
            "--max-episode-steps",
            "3",
            "--verbose",
            "0",
            "--output-dir",
            str(tmp_path / "unused"),
        ]
    )
    assert report["env_id"] == "PongNoFrameskip-v4" and report["frame_skip"] == 32
    assert report["episodes"] == 2 and all(-21 <= s <= 21 for s in report["scores"])
    assert not os.path.exists(tmp_path / "unused")


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="torch runs eagerly (no trace)")
def test_acting_step_is_traced_once():
    """`step` (acting and bootstrapping, fixed shapes) compiles one function, traced once."""
    model = tiny_model()
    calls = []
    original = model.call

    def counting_call(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model.call = counting_call
    rng = np.random.default_rng(0)
    states = model.initial_states(3)
    for t in range(4):
        _, _, states = model.step(
            rng.normal(size=(3,) + OBS).astype(np.float32),
            states,
            np.array([t == 2, 0, 0], np.float32),
        )
    traced = len(calls)
    for _ in range(3):
        model.step(rng.normal(size=(3,) + OBS).astype(np.float32), states)
    assert 1 <= traced <= 2 and len(calls) == traced
