"""Tests of the Atari pipeline (`keras_stm.experiments.tasks.atari`) and of
`keras_stm.experiments.tasks.advantages`.

Frames of `TinyPongEnv` are rebuilt by hand here from its documented layout, so the wrappers are
checked against independent expectations rather than against the environment's own renderer.
"""

import os

import numpy as np
import pytest

from keras_stm.experiments.tasks import advantages
from keras_stm.experiments.tasks import atari

BACKGROUND = (144, 72, 17)
WHITE = (236, 236, 236)
GREEN = (92, 186, 92)
PADDLE_ROW = 106  # (34 + 194) // 2 - 16 // 2


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Overrides conftest's per-test Keras reset: nothing here touches Keras (saves ~0.4 s/test)."""
    yield


def hand_frame(balls, paddle_row=PADDLE_ROW):
    """A TinyPong frame drawn by hand: borders, paddle, and a 2x2 ball at each (row, col)."""
    frame = np.empty((210, 160, 3), np.uint8)
    frame[:] = BACKGROUND
    frame[24:34] = WHITE
    frame[194:] = WHITE
    frame[paddle_row : paddle_row + 16, 140:144] = GREEN
    for r, c in balls:
        frame[r : r + 2, c : c + 2] = WHITE
    return frame


# ---------------------------------------------------------------------------------------------
# Preprocessing.
# ---------------------------------------------------------------------------------------------


def test_resize_halving_is_two_by_two_mean():
    x = np.random.default_rng(0).random((160, 160)).astype(np.float32)
    expected = x.reshape(80, 2, 80, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(atari.resize_bilinear(x, (80, 80)), expected, atol=1e-6)


def test_resize_linear_ramp_upsampling():
    # Half-pixel centres: output j of 2 -> 4 samples source (j + 0.5) / 2 - 0.5, clamped.
    out = atari.resize_bilinear(np.array([[0.0, 4.0]]), (1, 4))
    np.testing.assert_allclose(out, [[0.0, 1.0, 3.0, 4.0]])


def test_preprocess_frame_hand_computed_pixels():
    frame = np.zeros((210, 160, 3), np.uint8)
    frame[:34] = 255  # above the crop: must not leak in
    frame[194:] = 255  # below the crop
    frame[34, 0] = (30, 60, 90)  # grey 60
    frame[34, 1] = (255, 255, 255)  # grey 255
    frame[35, 0] = (0, 0, 3)  # grey 1
    obs = atari.preprocess_frame(frame)
    assert obs.shape == (80, 80, 1) and obs.dtype == np.float32
    assert obs[0, 0, 0] == pytest.approx((60 + 255 + 1 + 0) / 4 / 255, abs=1e-6)
    assert obs[0, 1, 0] == 0.0 and obs[79, 79, 0] == 0.0 and obs[1, 0, 0] == 0.0
    random_frame = np.random.default_rng(1).integers(0, 256, (210, 160, 3), dtype=np.uint8)
    obs = atari.preprocess_frame(random_frame)
    assert 0.0 <= obs.min() and obs.max() <= 1.0
    crop = random_frame[34:194, :160].astype(np.float64).mean(axis=2) / 255
    np.testing.assert_allclose(
        obs[:, :, 0], crop.reshape(80, 2, 80, 2).mean(axis=(1, 3)), atol=1e-6
    )


def test_preprocess_frame_is_bit_exact_against_the_plain_formula():
    """The uint16 channel sum and the strided 2x taps change no bit of the plain float
    formula (`astype(float32).mean(axis=2) / 255`, gathers with index arrays)."""
    rng = np.random.default_rng(0)

    def plain_resize(image, size):
        def taps(n, m):
            src = np.clip((np.arange(m, dtype=np.float64) + 0.5) * (n / m) - 0.5, 0.0, n - 1)
            low = np.floor(src).astype(np.int64)
            return low, np.minimum(low + 1, n - 1), (src - low).astype(np.float32)

        r0, r1, wr = taps(image.shape[0], size[0])
        c0, c1, wc = taps(image.shape[1], size[1])
        rows = image[r0] * (1.0 - wr)[:, None] + image[r1] * wr[:, None]
        return rows[:, c0] * (1.0 - wc) + rows[:, c1] * wc

    for _ in range(5):
        frame = rng.integers(0, 256, size=(210, 160, 3), dtype=np.uint8)
        grey = frame[34:194, :160].astype(np.float32).mean(axis=2)
        grey *= np.float32(1.0 / 255.0)
        expected = plain_resize(grey, (80, 80))[:, :, None]
        np.testing.assert_array_equal(
            atari.preprocess_frame(frame).view(np.uint32), expected.view(np.uint32)
        )
    for shape, size in (((37, 23), (80, 80)), ((160, 160), (33, 47)), ((5, 7), (5, 3))):
        image = rng.normal(size=shape).astype(np.float32)
        np.testing.assert_array_equal(
            atari.resize_bilinear(image, size).view(np.uint32),
            plain_resize(image, size).view(np.uint32),
        )


def test_preprocess_frame_rejects_bad_input():
    with pytest.raises(ValueError, match="frame"):
        atari.preprocess_frame(np.zeros((210, 160), np.uint8))
    with pytest.raises(ValueError, match="crop_bottom"):
        atari.preprocess_frame(np.zeros((210, 160, 3), np.uint8), crop_bottom=300)


def test_rescale_env_on_tiny_pong():
    env = atari.AtariRescaleEnv(atari.TinyPongEnv(ball_start=(100, 80), ball_velocity=(1, 2)))
    obs, _ = env.reset(seed=0)
    assert obs.shape == atari.OBSERVATION_SHAPE and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    # The ball covers rows 100:102, cols 80:82 -> exactly output pixel (33, 40) is all ball.
    ball, bg = np.mean(WHITE) / 255, np.mean(BACKGROUND) / 255
    assert obs[33, 40, 0] == pytest.approx(ball, abs=1e-6)
    assert obs[10, 10, 0] == pytest.approx(bg, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Wrappers.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("skip, expected_reward", [(4, 1.0), (32, 10.0)])
def test_frame_skip_sums_rewards_and_advances_k_frames(skip, expected_reward):
    # Ball at column 6 moving 2 columns left per frame scores +1 every 3rd frame (6, 4, 2, 0).
    kwargs = dict(ball_start=(100, 6), ball_velocity=(0, -2))
    env = atari.MaxAndSkipEnv(atari.TinyPongEnv(**kwargs), skip=skip)
    env.reset(seed=0)
    _, reward, terminated, _, info = env.step(0)
    assert info["frame_number"] == skip
    assert reward == expected_reward and not terminated
    twin = atari.TinyPongEnv(**kwargs)
    twin.reset(seed=0)
    assert reward == sum(twin.step(0)[1] for _ in range(skip))


def test_max_pooling_of_last_frames_hand_made():
    kwargs = dict(ball_start=(100, 80), ball_velocity=(1, 2))
    # Raw frames 1..4 have the ball at (101, 82), (102, 84), (103, 86), (104, 88).
    env = atari.MaxAndSkipEnv(atari.TinyPongEnv(**kwargs), skip=4, pool_frames=2)
    env.reset(seed=0)
    obs, *_ = env.step(0)
    np.testing.assert_array_equal(obs, hand_frame([(103, 86), (104, 88)]))
    env = atari.MaxAndSkipEnv(atari.TinyPongEnv(**kwargs), skip=4)  # reference: 3 frames
    env.reset(seed=0)
    obs, *_ = env.step(0)
    np.testing.assert_array_equal(obs, hand_frame([(102, 84), (103, 86), (104, 88)]))
    # The buffer persists across agent steps (and starts with the reset frame).
    env = atari.MaxAndSkipEnv(atari.TinyPongEnv(**kwargs), skip=1, pool_frames=3)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, hand_frame([(100, 80)]))
    obs, *_ = env.step(0)
    np.testing.assert_array_equal(obs, hand_frame([(100, 80), (101, 82)]))


def test_episodic_life_ends_on_life_loss_and_resets_only_on_game_over():
    # Ball in row 40 flies right past the paddle (rows 106:122): from column 130 it reaches the
    # paddle column (c + 2 > 140) after 5 frames and a life is lost.
    env = atari.EpisodicLifeEnv(
        atari.TinyPongEnv(lives=2, ball_start=(40, 130), ball_velocity=(0, 2))
    )
    _, info = env.reset(seed=0)
    assert info["lives"] == 2 and info["frame_number"] == 0
    for step in range(1, 6):
        _, reward, terminated, truncated, info = env.step(0)
        assert terminated == (step == 5) and not truncated
    assert reward == -1.0 and info["lives"] == 1 and info["game_over"] is False
    _, info = env.reset()  # not a real reset: one no-op frame, the game goes on
    assert info["frame_number"] == 6 and info["lives"] == 1
    for step in range(1, 5):  # respawned at frame 5, one frame already taken by the reset
        _, reward, terminated, _, info = env.step(0)
        assert terminated == (step == 4)
    assert info["lives"] == 0 and info["game_over"] is True
    _, info = env.reset()  # game over: real reset
    assert info["frame_number"] == 0 and info["lives"] == 2


def test_noop_reset_bounds():
    counts = [
        atari.NoopResetEnv(atari.TinyPongEnv(), noop_max=30).reset(seed=s)[1]["frame_number"]
        for s in range(150)
    ]
    assert min(counts) == 1 and max(counts) == 30
    counts = {
        atari.NoopResetEnv(atari.TinyPongEnv(), noop_max=3).reset(seed=s)[1]["frame_number"]
        for s in range(40)
    }
    assert counts == {1, 2, 3}
    with pytest.raises(ValueError, match="noop_max"):
        atari.NoopResetEnv(atari.TinyPongEnv(), noop_max=0)


def test_fire_reset_presses_fire_then_action_two():
    env = atari.FireResetEnv(atari.TinyPongEnv(ball_start=(100, 80), ball_velocity=(0, 2)))
    obs, info = env.reset(seed=0)
    assert info["frame_number"] == 2
    # FIRE leaves the paddle, action 2 (RIGHT) moves it up by 4 rows.
    np.testing.assert_array_equal(obs, hand_frame([(100, 84)], paddle_row=PADDLE_ROW - 4))

    class NoFire(atari.TinyPongEnv):
        def get_action_meanings(self):
            return ["NOOP", "UP", "DOWN"]

    with pytest.raises(ValueError, match="FIRE"):
        atari.FireResetEnv(NoFire())


def test_normalized_env_running_statistics():
    kwargs = dict(ball_start=(100, 80), ball_velocity=(1, 2))
    env = atari.NormalizedEnv(atari.AtariRescaleEnv(atari.TinyPongEnv(**kwargs)))
    raw = atari.AtariRescaleEnv(atari.TinyPongEnv(**kwargs))
    x1, _ = raw.reset(seed=0)
    x2, *_ = raw.step(0)
    y1, _ = env.reset(seed=0)
    y2, *_ = env.step(0)
    a = 0.9999
    # One observation: the bias-corrected averages are its own mean and std.
    np.testing.assert_allclose(y1, (x1 - x1.mean()) / (x1.std() + 1e-8), rtol=1e-5, atol=1e-5)
    mean = (a * (1 - a) * x1.mean() + (1 - a) * x2.mean()) / (1 - a**2)
    std = (a * (1 - a) * x1.std() + (1 - a) * x2.std()) / (1 - a**2)
    np.testing.assert_allclose(y2, (x2 - mean) / (std + 1e-8), rtol=1e-5, atol=1e-5)


def test_clip_reward_keeps_raw_reward():
    env = atari.ClipRewardEnv(
        atari.MaxAndSkipEnv(atari.TinyPongEnv(ball_start=(100, 6), ball_velocity=(0, -2)), skip=32)
    )
    env.reset(seed=0)
    _, reward, *_, info = env.step(0)
    assert reward == 1.0 and info["raw_reward"] == 10.0


# ---------------------------------------------------------------------------------------------
# Factories.
# ---------------------------------------------------------------------------------------------


def test_make_env_tiny_chain_seeding_and_time_limit():
    # No no-ops: the ball (from the centre, <= 2 columns a frame) cannot reach a side in the
    # 20 frames below. The time limit counts FireReset's 2 steps: 5 = 2 + 3 agent steps.
    kwargs = dict(frame_skip=4, seed=3, max_episode_steps=5, noop_max=0)
    env = atari.make_env(atari.TINY_ENV_ID, **kwargs)
    twin = atari.make_env(atari.TINY_ENV_ID, **kwargs)
    obs, info = env.reset()
    np.testing.assert_array_equal(obs, twin.reset()[0])
    assert obs.shape == (80, 80, 1) and obs.dtype == np.float32
    assert info["frame_number"] == 8  # FireReset: 2 agent steps of 4 frames
    raw_total = 0.0
    for step in range(1, 4):
        obs, reward, terminated, truncated, info = env.step(0)
        raw_total += info["raw_reward"]
        assert -1.0 <= reward <= 1.0
        assert truncated == (step == 3)
    assert info["game_over"] is True
    np.testing.assert_array_equal(atari.completed_episode_returns(info), [raw_total])
    with pytest.raises(ValueError, match="frame_skip"):
        atari.make_env(atari.TINY_ENV_ID, frame_skip=0)
    with pytest.raises(ValueError, match="env_id"):
        atari.make_env("NoSuchGameNoFrameskip-v4")


def test_make_vector_env_batches_and_autoresets():
    envs = atari.make_vector_env(
        2, env_id=atari.TINY_ENV_ID, seed=0, max_episode_steps=4, noop_max=0
    )  # 4 = FireReset's 2 steps + 2 agent steps
    obs, _ = envs.reset()
    assert obs.shape == (2, 80, 80, 1) and obs.dtype == np.float32
    obs, rewards, terminated, truncated, info = envs.step(np.zeros(2, np.int64))
    assert rewards.shape == (2,) and not truncated.any()
    assert atari.completed_episode_returns(info).shape == (0,)
    obs, rewards, terminated, truncated, info = envs.step(np.zeros(2, np.int64))
    assert truncated.all() and "final_obs" in info
    # Same-step autoreset: the returned observations start new games (FireReset: frame 8).
    np.testing.assert_array_equal(info["frame_number"], [8, 8])
    assert atari.completed_episode_returns(info).shape == (2,)
    envs.close()
    with pytest.raises(ValueError, match="num_envs"):
        atari.make_vector_env(0, env_id=atari.TINY_ENV_ID)


def pong_or_skip(**kwargs):
    """`make_env("PongNoFrameskip-v4", ...)`, or a skip saying why the game cannot be made."""
    try:
        return atari.make_env("PongNoFrameskip-v4", **kwargs)
    except (ImportError, ValueError, OSError) as error:
        pytest.skip(f"the Atari Pong environment is not available here: {error}")


def test_fast_emulator_frame_skip_matches_frame_by_frame():
    """At frame skip 32 the blind frames (`ale.act`, no screen) change nothing the agent sees."""
    pong_or_skip()  # skips without gymnasium / ale-py / the ROM
    import gymnasium as gym

    def make(fast):
        return atari.MaxAndSkipEnv(
            atari.NoopResetEnv(gym.make("PongNoFrameskip-v4")), skip=32, fast_emulator=fast
        )

    fast, slow = make(True), make(False)
    assert fast._ale_env is not None and slow._ale_env is None
    assert atari.MaxAndSkipEnv(atari.TinyPongEnv(), skip=32)._ale_env is None
    np.testing.assert_array_equal(fast.reset(seed=3)[0], slow.reset(seed=3)[0])
    rng, games = np.random.default_rng(0), 0
    for _ in range(300):
        action = int(rng.integers(6))
        a, b = fast.step(action), slow.step(action)
        assert a[1:4] == b[1:4]
        assert a[4]["frame_number"] == b[4]["frame_number"] and a[4]["lives"] == b[4]["lives"]
        if a[2] or a[3]:  # the game over's own observation may differ (it is never used)
            games += 1
            np.testing.assert_array_equal(fast.reset()[0], slow.reset()[0])
        else:
            np.testing.assert_array_equal(a[0], b[0])
    assert games >= 1  # random play loses a game in about 100 steps at frame skip 32


@pytest.mark.large
@pytest.mark.skipif(not os.path.exists("/proc/self/environ"), reason="reads /proc")
def test_async_workers_see_no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    jax_platforms = os.environ.get("JAX_PLATFORMS")
    envs = atari.make_vector_env(
        2, env_id=atari.TINY_ENV_ID, seed=0, asynchronous=True, context="spawn"
    )
    try:
        assert envs.reset()[0].shape == (2, 80, 80, 1)
        for process in envs.processes:
            with open(f"/proc/{process.pid}/environ", "rb") as f:
                variables = f.read().split(b"\0")
            assert b"CUDA_VISIBLE_DEVICES=" in variables and b"JAX_PLATFORMS=cpu" in variables
    finally:
        envs.close()
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    assert os.environ.get("JAX_PLATFORMS") == jax_platforms


def test_real_pong_reset_and_step():
    env = atari.make_env("PongNoFrameskip-v4", seed=0)
    obs, info = env.reset()
    assert obs.shape == (80, 80, 1) and obs.dtype == np.float32 and np.isfinite(obs).all()
    assert info["lives"] == 0 and env.action_space.n == 6
    start = info["episode_frame_number"]
    assert 1 + 8 <= start <= 30 + 8  # noops, then FIRE and RIGHT at 4 frames each
    obs, reward, terminated, truncated, info = env.step(0)
    assert info["episode_frame_number"] == start + 4
    assert obs.shape == (80, 80, 1) and np.isfinite(obs).all()
    assert reward in (-1.0, 0.0, 1.0) and not terminated and not truncated


# ---------------------------------------------------------------------------------------------
# Returns and advantages.
# ---------------------------------------------------------------------------------------------

# T = 3, 2 environments, gamma 0.9, lambda 0.5; environment 0 ends its episode at t = 1.
REWARDS = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
VALUES = np.array([[0.5, 1.0], [1.0, 1.0], [2.0, 1.0]])
DONES = np.array([[False, False], [True, False], [False, False]])
BOOTSTRAP = np.array([4.0, 2.0])


def test_discounted_returns_hand_computed():
    # env 0: R2 = 2 + .9*4 = 5.6; R1 = 0 (done: no bootstrap from 5.6); R0 = 1 + .9*0 = 1
    # env 1: R2 = 1 + .9*2 = 2.8; R1 = 1 + .9*2.8 = 3.52; R0 = 0 + .9*3.52 = 3.168
    returns = advantages.discounted_returns(REWARDS, DONES, BOOTSTRAP, gamma=0.9)
    np.testing.assert_allclose(returns, [[1.0, 3.168], [0.0, 3.52], [5.6, 2.8]], rtol=1e-6)
    assert returns.dtype == np.float32


def test_gae_hand_computed():
    # env 0: d2 = 2 + .9*4 - 2 = 3.6; d1 = 0 - 1 = -1 (done); d0 = 1 + .9*1 - .5 = 1.4
    #        A2 = 3.6; A1 = -1 (done); A0 = 1.4 + .45*(-1) = 0.95
    # env 1: d2 = 1 + 1.8 - 1 = 1.8; d1 = 1 + .9 - 1 = .9; d0 = 0 + .9 - 1 = -.1
    #        A2 = 1.8; A1 = .9 + .45*1.8 = 1.71; A0 = -.1 + .45*1.71 = .6695
    adv, targets = advantages.generalized_advantage_estimates(
        REWARDS, VALUES, DONES, BOOTSTRAP, gamma=0.9, lam=0.5
    )
    np.testing.assert_allclose(adv, [[0.95, 0.6695], [-1.0, 1.71], [3.6, 1.8]], rtol=1e-6)
    np.testing.assert_allclose(targets, [[1.0, 3.168], [0.0, 3.52], [5.6, 2.8]], rtol=1e-6)
    _, lam_targets = advantages.generalized_advantage_estimates(
        REWARDS, VALUES, DONES, BOOTSTRAP, gamma=0.9, lam=0.5, returns="lambda"
    )
    np.testing.assert_allclose(lam_targets, adv + VALUES, rtol=1e-6)


def test_gae_limits_against_brute_force():
    rng = np.random.default_rng(0)
    rewards, values = rng.normal(size=(2, 20, 5))
    dones = rng.random((20, 5)) < 0.2
    bootstrap = rng.normal(size=5)
    # lambda = 1: advantages are discounted returns minus values (telescoping deltas).
    adv, ret = advantages.generalized_advantage_estimates(
        rewards, values, dones, bootstrap, gamma=0.97, lam=1.0
    )
    np.testing.assert_allclose(adv, ret - values, atol=1e-5)
    # lambda = 0: advantages are the one-step TD errors, computed here with explicit loops.
    adv, _ = advantages.generalized_advantage_estimates(
        rewards, values, dones, bootstrap, gamma=0.97, lam=0.0
    )
    expected = np.zeros((20, 5))
    for t in range(20):
        for i in range(5):
            nxt = bootstrap[i] if t == 19 else values[t + 1, i]
            expected[t, i] = rewards[t, i] + 0.97 * nxt * (not dones[t, i]) - values[t, i]
    np.testing.assert_allclose(adv, expected, atol=1e-5)


def test_advantages_one_dimensional_and_validation():
    returns = advantages.discounted_returns([1.0, 1.0], [False, False], 1.0, gamma=0.5)
    np.testing.assert_allclose(returns, [1.75, 1.5])
    with pytest.raises(ValueError, match="dones"):
        advantages.discounted_returns(REWARDS, DONES[:2], BOOTSTRAP)
    with pytest.raises(ValueError, match="bootstrap_value"):
        advantages.discounted_returns(REWARDS, DONES, np.zeros(3))
    with pytest.raises(ValueError, match="gamma"):
        advantages.discounted_returns(REWARDS, DONES, BOOTSTRAP, gamma=1.5)
    with pytest.raises(ValueError, match="values"):
        advantages.generalized_advantage_estimates(REWARDS, VALUES[:, :1], DONES, BOOTSTRAP)
    with pytest.raises(ValueError, match="lam"):
        advantages.generalized_advantage_estimates(REWARDS, VALUES, DONES, BOOTSTRAP, lam=-0.1)
