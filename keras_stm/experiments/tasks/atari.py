"""Atari environments for the reinforcement-learning task, preprocessed as in the reference A3C.

Spec section 4.9: the reference trains on gym `PongNoFrameskip-v4` through, from the emulator
outwards,

    NoopResetEnv (1..30 no-ops on reset)
    -> MaxAndSkipEnv (repeat the action `frame_skip` times, sum the rewards, observation = max over
       the last 3 raw frames)
    -> EpisodicLifeEnv (a lost life ends the training episode; the game is only reset on game over)
    -> FireResetEnv (press FIRE after every reset, when the game has a FIRE action)
    -> AtariRescaleEnv (crop rows 34:194 and columns :160, mean over RGB, /255, resize to 80 x 80)
    -> NormalizedEnv (running mean/std normalisation, decay 0.9999, bias-corrected)

with training rewards clipped to [-1, 1] and episodes cut at 10,000 agent steps. `make_env` builds
exactly this chain with gymnasium 1.x (`pip install gymnasium ale-py`; `ale-py` ships the ROMs) and
`make_vector_env` batches several copies with gymnasium's vector API so a GPU learner sees
`(num_envs, 80, 80, 1)` observations.

Layout decisions of this port:

* Observations are **channels-last** float32 `(80, 80, 1)` (Keras' default `Conv2D` layout); the
  reference used `(1, 80, 80)`.
* Life loss reads `info["lives"]` (ale-py reports it on every `reset` and `step`). Pong has no
  lives (always 0), so there a training episode is a whole game, as in the reference.
* `EpisodicLifeEnv` adds `info["game_over"]` (True only on a real game end). Real game statistics
  come from gymnasium's `RecordEpisodeStatistics`, placed below `EpisodicLifeEnv`, so
  `info["episode"] = {"r": unclipped game score, "l": agent steps, "t": seconds}` appears only on
  game over; `completed_episode_returns` collects it from single or vector infos.
* `ClipRewardEnv` keeps the unclipped reward in `info["raw_reward"]`.
* The time limit counts agent steps (after frame skipping) over a whole game, including the 2
  steps `FireResetEnv` takes after each reset and the no-op step of each life-loss reset; its
  truncation is a real game end (the next reset is a real one).
* Vector environments use gymnasium's `SAME_STEP` autoreset: the observation returned with a done
  flag is already the first observation of the next episode (the last one is in
  `info["final_obs"]`, the step's info in `info["final_info"]`), which is what a rollout of fixed
  length needs.

`TinyPongEnv` (registered as `TINY_ENV_ID`) is a tiny pure-numpy stand-in with Atari-like frames
(210 x 160 x 3 uint8, a ball, a paddle, lives, the six Pong actions) for tests and `--quick` CPU
smoke runs: it goes through the same wrappers without loading a ROM.

References:
    Mnih et al., "Human-level control through deep reinforcement learning", Nature 2015 (the
    wrappers); Mnih et al., "Asynchronous Methods for Deep Reinforcement Learning", ICML 2016.
"""

import collections
import contextlib
import functools
import numbers
import os

import numpy as np

from keras_stm.experiments._optional import install_hint
from keras_stm.experiments._optional import require

gym = require("gymnasium", "atari", "keras_stm.experiments.tasks.atari")
from gymnasium import spaces  # noqa: E402

TINY_ENV_ID = "keras_stm/TinyPongNoFrameskip-v0"
"""Gymnasium id of `TinyPongEnv`; `make_env(TINY_ENV_ID, ...)` applies the Atari wrappers to it."""

OBSERVATION_SHAPE = (80, 80, 1)
"""Shape of one preprocessed observation: 80 x 80 pixels, one (grey) channel, channels-last."""

PONG_ACTION_MEANINGS = ("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE")
"""Action names of Pong's minimal action set, also used by `TinyPongEnv`."""


def _check_int(name, value, minimum):
    """Returns `value` as an int, or raises a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


# ------------------------------------------------------------------------------------------------
# Frame preprocessing (numpy only).
# ------------------------------------------------------------------------------------------------


def _channel_mean(image):
    """`image.astype(float32).mean(axis=2)`, bit for bit, faster for uint8 images: the channel
    sum is exact in uint16, then divided by the channel count as numpy's mean does."""
    if image.dtype != np.uint8:
        return image.astype(np.float32).mean(axis=2)
    grey = image.sum(axis=2, dtype=np.uint16).astype(np.float32)
    np.true_divide(grey, np.intp(image.shape[2]), out=grey, casting="unsafe")
    return grey


@functools.lru_cache(maxsize=16)
def _linear_taps(in_size, out_size):
    """Source indices and weights of 1-D linear interpolation with half-pixel centres.

    Returns `(low, high, 1 - weight, weight)`; evenly spaced indices (an exact 2x reduction:
    0, 2, 4, ...) come as slices, which select the same pixels faster than index arrays.
    Cached: the arrays must not be modified.
    """
    scale = in_size / out_size
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
    src = np.clip(src, 0.0, in_size - 1)
    low = np.floor(src).astype(np.int64)
    high = np.minimum(low + 1, in_size - 1)
    weight = (src - low).astype(np.float32)
    return _as_slice(low), _as_slice(high), 1.0 - weight, weight


def _as_slice(index):
    """`index` (increasing int array) as an equivalent slice when evenly spaced, else as is."""
    if len(index) > 1:
        steps = np.diff(index)
        if steps[0] > 0 and (steps == steps[0]).all():
            return slice(int(index[0]), int(index[-1]) + 1, int(steps[0]))
    return index


def resize_bilinear(image, size):
    """Resizes a 2-D image by bilinear interpolation with half-pixel centres.

    This is the convention of OpenCV's `cv2.resize(..., interpolation=INTER_LINEAR)` (which the
    reference used, with OpenCV's `(width, height)` argument order) away from the borders; source
    coordinates are clamped to the image. For an exact 2x reduction every output pixel is the
    mean of a 2 x 2 block, so 160 x 160 -> 80 x 80 is area averaging.

    Args:
        image: array `(height, width)`, any real dtype.
        size: tuple `(out_height, out_width)` of positive ints.

    Returns:
        float32 array `(out_height, out_width)`.

    Example:

    >>> import numpy as np
    >>> resize_bilinear(np.arange(16.0).reshape(4, 4), (2, 2))
    array([[ 2.5,  4.5],
           [10.5, 12.5]], dtype=float32)
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2 or min(image.shape) == 0:
        raise ValueError(f"`image` must be a non-empty 2-D array, got shape {image.shape}.")
    if not (isinstance(size, (tuple, list)) and len(size) == 2):
        raise ValueError(f"`size` must be a tuple (out_height, out_width), got {size!r}.")
    out_h = _check_int("size[0]", size[0], 1)
    out_w = _check_int("size[1]", size[1], 1)
    if (out_h, out_w) == image.shape:
        return image.copy()
    r0, r1, keep_r, wr = _linear_taps(image.shape[0], out_h)
    c0, c1, keep_c, wc = _linear_taps(image.shape[1], out_w)
    rows = image[r0] * keep_r[:, None] + image[r1] * wr[:, None]
    return rows[:, c0] * keep_c + rows[:, c1] * wc


def preprocess_frame(
    frame, crop_top=34, crop_bottom=194, crop_width=160, size=(80, 80), intermediate_size=None
):
    """Turns one raw Atari RGB frame into a grey `(80, 80, 1)` float32 observation in [0, 1].

    Steps (reference `AtariRescale`): crop rows `crop_top:crop_bottom` and columns
    `:crop_width`, average the three colour channels, divide by 255, resize (bilinear, see
    `resize_bilinear`) to `intermediate_size` if given and then to `size`, add a channel axis.
    The defaults are the Pong crop (rows 34:194, a 160 x 160 square).

    Args:
        frame: uint8 array `(210, 160, 3)` (any `(H, W, 3)` large enough for the crop).
        crop_top: int, first kept row. Defaults to 34.
        crop_bottom: int, one past the last kept row. Defaults to 194.
        crop_width: int, number of kept columns from the left. Defaults to 160.
        size: tuple `(height, width)`, final size. Defaults to (80, 80).
        intermediate_size: optional tuple `(height, width)` of a first resize. The reference
            resizes to 80 x `dimension2` first (`dimension2` is 80 for Pong, making it a
            no-op). Defaults to None (one resize).

    Returns:
        float32 array `(height, width, 1)` with values in [0, 1].

    Example:

    >>> import numpy as np
    >>> obs = preprocess_frame(np.full((210, 160, 3), 255, np.uint8))
    >>> obs.shape, float(obs.min()), float(obs.max())
    ((80, 80, 1), 1.0, 1.0)
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"`frame` must be an RGB image (H, W, 3), got shape {frame.shape}.")
    crop_top = _check_int("crop_top", crop_top, 0)
    crop_bottom = _check_int("crop_bottom", crop_bottom, crop_top + 1)
    crop_width = _check_int("crop_width", crop_width, 1)
    if crop_bottom > frame.shape[0] or crop_width > frame.shape[1]:
        raise ValueError(
            f"crop rows {crop_top}:{crop_bottom}, columns :{crop_width} do not fit a frame of "
            f"shape {frame.shape} (check `crop_bottom` / `crop_width`)."
        )
    grey = _channel_mean(frame[crop_top:crop_bottom, :crop_width])
    grey *= np.float32(1.0 / 255.0)
    if intermediate_size is not None:
        grey = resize_bilinear(grey, intermediate_size)
    return resize_bilinear(grey, size)[:, :, None]


# ------------------------------------------------------------------------------------------------
# Wrappers.
# ------------------------------------------------------------------------------------------------


class NoopResetEnv(gym.Wrapper):
    """On reset, takes a random number of no-op actions, uniform in `1..noop_max`.

    The count is drawn from the environment's own `np_random` (seeded by `reset(seed=...)`).
    If a no-op ends the episode, the environment is reset again.

    Args:
        env: gymnasium.Env with frame skip 1 (a `NoFrameskip` Atari game).
        noop_max: int >= 1, largest number of no-ops. Defaults to 30.
        noop_action: int, the no-op action. Defaults to 0.

    Example:

    >>> env = NoopResetEnv(TinyPongEnv(), noop_max=30)
    >>> obs, info = env.reset(seed=0)
    >>> 1 <= info["frame_number"] <= 30
    True
    """

    def __init__(self, env, noop_max=30, noop_action=0):
        super().__init__(env)
        self.noop_max = _check_int("noop_max", noop_max, 1)
        self.noop_action = noop_action

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        kwargs.pop("seed", None)
        noops = int(self.np_random.integers(1, self.noop_max + 1))
        for _ in range(noops):
            obs, _, terminated, truncated, info = self.env.step(self.noop_action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


class MaxAndSkipEnv(gym.Wrapper):
    """Repeats each action `skip` times; sums the rewards; returns the max of the last frames.

    Raw frames go into a buffer of the last `pool_frames` frames that persists across agent
    steps and is emptied (then filled with the first frame) on reset, as in the reference. The
    observation is the element-wise max over the buffer (removes Atari sprite flicker). When
    `pool_frames > skip` the max therefore also covers frames of the previous agent step; when
    an episode ends in the middle of a skip, the loop stops there.

    Args:
        env: gymnasium.Env with frame skip 1.
        skip: int >= 1, raw frames per agent step. Defaults to 4 (the reference's README uses 32).
        pool_frames: int >= 1, how many of the last raw frames are max-pooled. Defaults to 3
            (the reference); 2 is the common DQN choice.
        fast_emulator: bool. When the wrapped env is an ale-py `AtariEnv` with frame skip 1
            under only `NoopResetEnv` / gymnasium's order and passive checkers, the first
            `skip - pool_frames` raw frames of each agent step call the emulator directly
            (`ale.act`) without rendering a screen: only the pooled frames are drawn. The
            observations, rewards and flags are the same as frame by frame, except the (unused)
            observation of a step whose game ends within those first frames: it pools that last
            frame with the previous step's last frames. At frame skip 32 this skips 29 of 32
            screen copies. Defaults to True; other envs always go frame by frame.

    Example:

    >>> env = MaxAndSkipEnv(TinyPongEnv(), skip=4)
    >>> _ = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(0)
    >>> info["frame_number"]
    4
    """

    _TRANSPARENT_WRAPPERS = ("NoopResetEnv", "OrderEnforcing", "PassiveEnvChecker")

    def __init__(self, env, skip=4, pool_frames=3, fast_emulator=True):
        super().__init__(env)
        self.skip = _check_int("skip", skip, 1)
        self.pool_frames = _check_int("pool_frames", pool_frames, 1)
        self._frames = collections.deque(maxlen=self.pool_frames)
        self._ale_env = self._direct_emulator(env) if fast_emulator else None

    @classmethod
    def _direct_emulator(cls, env):
        """The ale-py `AtariEnv` under `env` if only transparent wrappers stand between."""
        while isinstance(env, gym.Wrapper):
            if type(env).__name__ not in cls._TRANSPARENT_WRAPPERS:
                return None
            env = env.env
        if (
            hasattr(env, "ale")
            and hasattr(env, "_action_set")
            and hasattr(env, "_get_obs")
            and getattr(env, "_frameskip", None) == 1
            and not getattr(env, "continuous", False)
        ):
            return env
        return None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._frames.clear()
        self._frames.append(obs)
        return obs, info

    def step(self, action):
        total_reward = 0.0
        terminated = truncated = False
        info = {}
        direct = self._ale_env
        blind = max(0, self.skip - self.pool_frames) if direct is not None else 0
        for i in range(self.skip):
            if i < blind:  # a frame that is not pooled: no screen needed
                total_reward += float(direct.ale.act(direct._action_set[action], 1.0))
                if not direct.ale.game_over():
                    continue
                obs, info = direct._get_obs(), direct._get_info()
                terminated = direct.ale.game_over(with_truncation=False)
                truncated = direct.ale.game_truncated()
                self._frames.append(obs)
                break
            obs, reward, terminated, truncated, info = self.env.step(action)
            self._frames.append(obs)
            total_reward += float(reward)
            if terminated or truncated:
                break
        pooled = functools.reduce(np.maximum, self._frames)
        return pooled, total_reward, terminated, truncated, info


class EpisodicLifeEnv(gym.Wrapper):
    """Ends the training episode when a life is lost; resets the game only on game over.

    Lives are read from `info["lives"]`. A step that loses a life (and leaves at least one)
    returns `terminated=True`; the following `reset()` then only takes a no-op step (action 0)
    instead of restarting the game. Every step's info gets `info["game_over"]`, True only when
    the underlying game really ended (terminated or truncated).

    Args:
        env: gymnasium.Env whose `reset`/`step` infos hold `"lives"`.

    Example:

    >>> env = EpisodicLifeEnv(TinyPongEnv(lives=3))
    >>> obs, info = env.reset(seed=0)
    >>> info["lives"]
    3
    """

    def __init__(self, env):
        super().__init__(env)
        self._lives = 0
        self._real_done = True

    @staticmethod
    def _lives_of(info):
        if "lives" not in info:
            raise ValueError("EpisodicLifeEnv needs the wrapped env to report info['lives'].")
        return int(info["lives"])

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._real_done = bool(terminated or truncated)
        lives = self._lives_of(info)
        if 0 < lives < self._lives:
            terminated = True
        self._lives = lives
        info = dict(info)
        info["game_over"] = self._real_done
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs):
        if self._real_done:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        self._real_done = False
        self._lives = self._lives_of(info)
        return obs, info


class FireResetEnv(gym.Wrapper):
    """After every reset presses FIRE (action 1) then action 2, for games that wait for FIRE.

    Args:
        env: gymnasium.Env whose `unwrapped.get_action_meanings()` has `"FIRE"` at index 1
            and at least 3 actions.

    Example:

    >>> env = FireResetEnv(TinyPongEnv())
    >>> obs, info = env.reset(seed=0)
    >>> info["frame_number"]
    2
    """

    def __init__(self, env):
        super().__init__(env)
        meanings = list(env.unwrapped.get_action_meanings())
        if len(meanings) < 3 or meanings[1] != "FIRE":
            raise ValueError(
                f"FireResetEnv needs 'FIRE' as action 1 and >= 3 actions, got {meanings}."
            )

    def reset(self, **kwargs):
        self.env.reset(**kwargs)
        kwargs.pop("seed", None)
        obs, info = None, {}
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


class AtariRescaleEnv(gym.ObservationWrapper):
    """Crops, greys, scales to [0, 1] and resizes each frame to `(80, 80, 1)` float32.

    See `preprocess_frame` for the exact steps; the keyword arguments are passed to it.

    Args:
        env: gymnasium.Env with RGB uint8 frames `(210, 160, 3)`.
        crop_top: int, first kept row. Defaults to 34 (Pong).
        crop_bottom: int, one past the last kept row. Defaults to 194 (Pong).
        crop_width: int, kept columns from the left. Defaults to 160.
        intermediate_size: optional `(height, width)` of a first resize. Defaults to None.

    Example:

    >>> env = AtariRescaleEnv(TinyPongEnv())
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype
    ((80, 80, 1), dtype('float32'))
    """

    def __init__(self, env, crop_top=34, crop_bottom=194, crop_width=160, intermediate_size=None):
        super().__init__(env)
        self._kwargs = dict(
            crop_top=crop_top,
            crop_bottom=crop_bottom,
            crop_width=crop_width,
            size=OBSERVATION_SHAPE[:2],
            intermediate_size=intermediate_size,
        )
        shape = env.observation_space.shape
        if shape is None or len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"AtariRescaleEnv needs RGB frames (H, W, 3), got {shape}.")
        preprocess_frame(np.zeros(shape, np.uint8), **self._kwargs)  # validates the crop
        self.observation_space = spaces.Box(0.0, 1.0, OBSERVATION_SHAPE, np.float32)

    def observation(self, observation):
        return preprocess_frame(observation, **self._kwargs)


class NormalizedEnv(gym.ObservationWrapper):
    """Normalises observations with running (exponential) averages of the frame mean and std.

    For the n-th observation x (counted over the wrapper's life, across episodes):
    `m <- a m + (1 - a) mean(x)`, `s <- a s + (1 - a) std(x)` (both start at 0), and the output
    is `(x - m / (1 - a^n)) / (s / (1 - a^n) + 1e-8)` (bias-corrected), as in the reference.

    Args:
        env: gymnasium.Env with float observations.
        decay: float in (0, 1), `a` above. Defaults to 0.9999.
        epsilon: float > 0 added to the std. Defaults to 1e-8.

    Example:

    >>> env = NormalizedEnv(AtariRescaleEnv(TinyPongEnv()))
    >>> obs, info = env.reset(seed=0)
    >>> abs(float(obs.mean())) < 1e-4
    True
    """

    def __init__(self, env, decay=0.9999, epsilon=1e-8):
        super().__init__(env)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"`decay` must be in (0, 1), got {decay!r}.")
        if not epsilon > 0.0:
            raise ValueError(f"`epsilon` must be positive, got {epsilon!r}.")
        self.decay = float(decay)
        self.epsilon = float(epsilon)
        self.state_mean = 0.0
        self.state_std = 0.0
        self.num_steps = 0
        self.observation_space = spaces.Box(
            -np.inf, np.inf, env.observation_space.shape, np.float32
        )

    def observation(self, observation):
        self.num_steps += 1
        a = self.decay
        self.state_mean = a * self.state_mean + (1.0 - a) * float(observation.mean())
        self.state_std = a * self.state_std + (1.0 - a) * float(observation.std())
        correction = 1.0 - a**self.num_steps
        mean = self.state_mean / correction
        std = self.state_std / correction
        return ((observation - mean) / (std + self.epsilon)).astype(np.float32)


class ClipRewardEnv(gym.Wrapper):
    """Clips rewards to `[low, high]`; the unclipped reward goes to `info["raw_reward"]`.

    Args:
        env: gymnasium.Env.
        low: float, lower bound. Defaults to -1.0.
        high: float, upper bound. Defaults to 1.0.

    Example:

    >>> env = ClipRewardEnv(TinyPongEnv())
    >>> _ = env.reset(seed=0)
    >>> obs, reward, terminated, truncated, info = env.step(0)
    >>> -1.0 <= reward <= 1.0
    True
    """

    def __init__(self, env, low=-1.0, high=1.0):
        super().__init__(env)
        if not low <= high:
            raise ValueError(f"`low` must be <= `high`, got low={low!r}, high={high!r}.")
        self.low, self.high = float(low), float(high)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        info["raw_reward"] = float(reward)
        return obs, min(max(float(reward), self.low), self.high), terminated, truncated, info


class _SeedFirstReset(gym.Wrapper):
    """Uses `seed` for the first `reset()` that is not given a seed (`make_env`'s `seed`)."""

    def __init__(self, env, seed):
        super().__init__(env)
        self._pending_seed = seed

    def reset(self, **kwargs):
        if self._pending_seed is not None:
            if kwargs.get("seed") is None:
                kwargs["seed"] = self._pending_seed
            self._pending_seed = None
        return self.env.reset(**kwargs)


# ------------------------------------------------------------------------------------------------
# A tiny Atari-like environment for tests and smoke runs.
# ------------------------------------------------------------------------------------------------


class TinyPongEnv(gym.Env):
    """A tiny numpy Pong-like game with Atari-shaped frames, for tests and `--quick` runs.

    Frames are uint8 `(210, 160, 3)`: brown background, white borders in rows 24:34 and
    194:210 (removed by the Pong crop), a 2 x 2 white ball and a 4 x 16 green paddle in columns
    140:144. Per raw frame: the paddle moves 4 rows up for RIGHT/RIGHTFIRE (actions 2, 4), down
    for LEFT/LEFTFIRE (3, 5); the ball moves by its velocity (rows, columns), bouncing off the
    borders. A ball reaching column 0 scores +1 and respawns; a ball reaching the paddle column
    bounces back if the paddle covers one of its rows, otherwise it scores -1, costs a life and
    respawns. The game ends (`terminated`) when no life is left. Infos hold `"lives"` and
    `"frame_number"` (raw frames since reset). Action meanings are Pong's six
    (`NOOP, FIRE, RIGHT, LEFT, RIGHTFIRE, LEFTFIRE`), so `FireResetEnv` applies.

    Args:
        lives: int >= 1, lives per game. Defaults to 3.
        ball_start: optional `(row, col)` of the ball's top-left pixel at (re)spawn. Defaults to
            None (the centre, (113, 79)).
        ball_velocity: optional `(rows, cols)` per frame at (re)spawn, `cols != 0`. Defaults to
            None (random: rows in {-2, -1, 1, 2}, cols in {-2, 2}).
        render_mode: None or "rgb_array".

    Example:

    >>> env = TinyPongEnv(ball_start=(100, 80), ball_velocity=(1, 2))
    >>> obs, info = env.reset(seed=0)
    >>> obs.shape, obs.dtype, info["lives"]
    ((210, 160, 3), dtype('uint8'), 3)
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 60}
    FRAME_SHAPE = (210, 160, 3)
    PLAY_TOP, PLAY_BOTTOM = 34, 194
    BALL_SIZE = 2
    PADDLE_COL, PADDLE_WIDTH, PADDLE_HEIGHT, PADDLE_SPEED = 140, 4, 16, 4
    BACKGROUND = (144, 72, 17)
    WHITE = (236, 236, 236)
    GREEN = (92, 186, 92)

    def __init__(self, lives=3, ball_start=None, ball_velocity=None, render_mode=None):
        self.lives = _check_int("lives", lives, 1)
        if ball_start is not None:
            if len(ball_start) != 2 or not (
                self.PLAY_TOP <= ball_start[0] <= self.PLAY_BOTTOM - self.BALL_SIZE
                and 0 < ball_start[1] < self.PADDLE_COL - self.BALL_SIZE
            ):
                raise ValueError(
                    f"`ball_start` must be (row, col) inside the court, got {ball_start!r}."
                )
        if ball_velocity is not None and (len(ball_velocity) != 2 or ball_velocity[1] == 0):
            raise ValueError(
                f"`ball_velocity` must be (rows, cols) with cols != 0, got {ball_velocity!r}."
            )
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"`render_mode` must be None or 'rgb_array', got {render_mode!r}.")
        self.render_mode = render_mode
        self.ball_start = tuple(ball_start) if ball_start is not None else (113, 79)
        self.ball_velocity = tuple(ball_velocity) if ball_velocity is not None else None
        self.observation_space = spaces.Box(0, 255, self.FRAME_SHAPE, np.uint8)
        self.action_space = spaces.Discrete(len(PONG_ACTION_MEANINGS))
        background = np.empty(self.FRAME_SHAPE, np.uint8)
        background[:] = self.BACKGROUND
        background[24 : self.PLAY_TOP] = self.WHITE
        background[self.PLAY_BOTTOM :] = self.WHITE
        self._background = background
        self._remaining = self.lives
        self._frame_number = 0
        self._ball = [0, 0]
        self._velocity = [0, 0]
        self._paddle = 0

    def get_action_meanings(self):
        """Returns the names of the six actions (Pong's minimal action set)."""
        return list(PONG_ACTION_MEANINGS)

    def _spawn(self):
        self._ball = list(self.ball_start)
        if self.ball_velocity is not None:
            self._velocity = list(self.ball_velocity)
        else:
            self._velocity = [
                int(self.np_random.choice([-2, -1, 1, 2])),
                int(self.np_random.choice([-2, 2])),
            ]

    def _frame(self):
        frame = self._background.copy()
        r, c = self._ball
        frame[r : r + self.BALL_SIZE, c : c + self.BALL_SIZE] = self.WHITE
        p = self._paddle
        frame[p : p + self.PADDLE_HEIGHT, self.PADDLE_COL : self.PADDLE_COL + self.PADDLE_WIDTH] = (
            self.GREEN
        )
        return frame

    def _info(self):
        return {"lives": self._remaining, "frame_number": self._frame_number}

    def reset(self, *, seed=None, options=None):
        """Starts a new game (all lives, paddle centred, ball at its spawn point)."""
        super().reset(seed=seed)
        self._remaining = self.lives
        self._frame_number = 0
        self._paddle = (self.PLAY_TOP + self.PLAY_BOTTOM) // 2 - self.PADDLE_HEIGHT // 2
        self._spawn()
        return self._frame(), self._info()

    def step(self, action):
        """Advances one raw frame; returns `(frame, reward, terminated, False, info)`."""
        if not self.action_space.contains(action):
            raise ValueError(f"`action` must be in 0..5, got {action!r}.")
        action = int(action)
        if action in (2, 4):
            self._paddle -= self.PADDLE_SPEED
        elif action in (3, 5):
            self._paddle += self.PADDLE_SPEED
        self._paddle = min(max(self._paddle, self.PLAY_TOP), self.PLAY_BOTTOM - self.PADDLE_HEIGHT)
        r = self._ball[0] + self._velocity[0]
        c = self._ball[1] + self._velocity[1]
        low, high = self.PLAY_TOP, self.PLAY_BOTTOM - self.BALL_SIZE
        if r < low:
            r, self._velocity[0] = 2 * low - r, -self._velocity[0]
        elif r > high:
            r, self._velocity[0] = 2 * high - r, -self._velocity[0]
        self._ball = [r, c]
        reward = 0.0
        if c <= 0:
            reward = 1.0
            self._spawn()
        elif c + self.BALL_SIZE > self.PADDLE_COL:
            if r < self._paddle + self.PADDLE_HEIGHT and self._paddle < r + self.BALL_SIZE:
                self._ball[1] = self.PADDLE_COL - self.BALL_SIZE
                self._velocity[1] = -abs(self._velocity[1])
            else:
                reward = -1.0
                self._remaining -= 1
                self._spawn()
        self._frame_number += 1
        terminated = self._remaining == 0
        return self._frame(), reward, terminated, False, self._info()

    def render(self):
        """Returns the current frame (uint8 `(210, 160, 3)`) when `render_mode="rgb_array"`."""
        return self._frame() if self.render_mode == "rgb_array" else None


if TINY_ENV_ID not in gym.registry:
    gym.register(id=TINY_ENV_ID, entry_point=TinyPongEnv)


# ------------------------------------------------------------------------------------------------
# Factories.
# ------------------------------------------------------------------------------------------------


def _make_base_env(env_id, env_kwargs):
    """`gym.make(env_id)`, registering ale-py's games first for non-tiny ids."""
    if env_id != TINY_ENV_ID:
        try:
            import ale_py
        except ImportError as error:  # pragma: no cover - depends on the installation
            raise ValueError(
                f"`env_id`={env_id!r} needs ale-py: {install_hint('atari')}."
            ) from error
        gym.register_envs(ale_py)
    try:
        return gym.make(env_id, **env_kwargs)
    except gym.error.Error as error:
        raise ValueError(f"`env_id`={env_id!r} cannot be made: {error}") from error


def make_env(
    env_id="PongNoFrameskip-v4",
    frame_skip=4,
    seed=None,
    max_episode_steps=10000,
    clip_rewards=True,
    noop_max=30,
    pool_frames=3,
    episodic_life=True,
    crop_top=34,
    crop_bottom=194,
    crop_width=160,
    intermediate_size=None,
    normalize=True,
    **env_kwargs,
):
    """Makes one Atari environment preprocessed as in the reference A3C (spec section 4.9).

    Wrapper chain, inside out: `gym.make(env_id)` -> `NoopResetEnv(noop_max)` ->
    `MaxAndSkipEnv(frame_skip, pool_frames)` -> `TimeLimit(max_episode_steps)` (agent steps)
    -> `RecordEpisodeStatistics` (real game score in `info["episode"]` on game over) ->
    `EpisodicLifeEnv` -> `FireResetEnv` (if the game has FIRE) -> `AtariRescaleEnv` ->
    `NormalizedEnv` -> `ClipRewardEnv` (if `clip_rewards`). Observations: float32 `(80, 80, 1)`.

    Args:
        env_id: str, a gymnasium id with frame skip 1 (`...NoFrameskip-v4`) or `TINY_ENV_ID`.
            Ids without "NoFrameskip" skip frames themselves: then no no-op reset and no frame
            skip are added and `frame_skip` must be 1. Defaults to "PongNoFrameskip-v4".
        frame_skip: int >= 1, raw frames per agent step. Defaults to 4 (the README uses 32).
        seed: optional int, used by the first `reset()` called without a seed (the game's
            randomness and the no-op count) and to seed the action space. Defaults to None.
        max_episode_steps: optional int >= 1, agent steps per game before truncation (the
            steps taken by `FireResetEnv` / `EpisodicLifeEnv` resets count too). Defaults to
            10000. None: no limit beyond the game's own.
        clip_rewards: bool, clip rewards to [-1, 1] (training). Defaults to True.
        noop_max: int >= 0, largest number of no-ops on reset; 0 disables it. Defaults to 30.
        pool_frames: int >= 1, raw frames max-pooled per observation. Defaults to 3.
        episodic_life: bool, a lost life ends the training episode. Defaults to True.
        crop_top: int, see `preprocess_frame`. Defaults to 34 (Pong).
        crop_bottom: int, see `preprocess_frame`. Defaults to 194 (Pong).
        crop_width: int, see `preprocess_frame`. Defaults to 160.
        intermediate_size: optional `(height, width)`, see `preprocess_frame`. Defaults to None.
        normalize: bool, apply `NormalizedEnv`. Defaults to True.
        **env_kwargs: forwarded to `gym.make` (e.g. `lives=2` for `TinyPongEnv`).

    Returns:
        gymnasium.Env with `Box(80, 80, 1)` float32 observations and the game's actions.

    Example:

    >>> env = make_env(TINY_ENV_ID, frame_skip=4, seed=0)
    >>> obs, info = env.reset()
    >>> obs.shape
    (80, 80, 1)
    """
    if not isinstance(env_id, str) or not env_id:
        raise ValueError(f"`env_id` must be a non-empty string, got {env_id!r}.")
    frame_skip = _check_int("frame_skip", frame_skip, 1)
    noop_max = _check_int("noop_max", noop_max, 0)
    pool_frames = _check_int("pool_frames", pool_frames, 1)
    if max_episode_steps is not None:
        max_episode_steps = _check_int("max_episode_steps", max_episode_steps, 1)
    if seed is not None:
        seed = _check_int("seed", seed, 0)
    raw_frames = "NoFrameskip" in env_id
    if not raw_frames and frame_skip != 1:
        raise ValueError(
            f"`frame_skip`={frame_skip} needs a NoFrameskip env id, got `env_id`={env_id!r} "
            "(which skips frames itself); pass frame_skip=1 or a NoFrameskip id."
        )
    env = _make_base_env(env_id, env_kwargs)
    if raw_frames:
        if noop_max > 0:
            env = NoopResetEnv(env, noop_max=noop_max)
        env = MaxAndSkipEnv(env, skip=frame_skip, pool_frames=pool_frames)
    if max_episode_steps is not None:
        env = gym.wrappers.TimeLimit(env, max_episode_steps=max_episode_steps)
    env = gym.wrappers.RecordEpisodeStatistics(env)
    if episodic_life:
        env = EpisodicLifeEnv(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireResetEnv(env)
    env = AtariRescaleEnv(
        env,
        crop_top=crop_top,
        crop_bottom=crop_bottom,
        crop_width=crop_width,
        intermediate_size=intermediate_size,
    )
    if normalize:
        env = NormalizedEnv(env)
    if clip_rewards:
        env = ClipRewardEnv(env)
    if seed is not None:
        env.action_space.seed(seed)
        env = _SeedFirstReset(env, seed)
    return env


def make_vector_env(
    num_envs,
    env_id="PongNoFrameskip-v4",
    seed=None,
    asynchronous=False,
    context=None,
    **make_env_kwargs,
):
    """Makes `num_envs` copies of `make_env(...)` behind gymnasium's vector API.

    Observations come batched as float32 `(num_envs, 80, 80, 1)`; rewards, `terminated` and
    `truncated` as `(num_envs,)` arrays. Autoreset mode is `SAME_STEP`: a sub-environment that
    finishes is reset inside the same `step` call, which returns the new episode's first
    observation (the final one is in `info["final_obs"]`, that step's info in
    `info["final_info"]`).

    Args:
        num_envs: int >= 1, number of environments.
        env_id: str, see `make_env`. Defaults to "PongNoFrameskip-v4".
        seed: optional int; environment `i` gets `seed + i`. Defaults to None.
        asynchronous: bool, run each environment in its own process (`AsyncVectorEnv`)
            instead of one after the other in this process (`SyncVectorEnv`); the workers
            see no GPU (`CUDA_VISIBLE_DEVICES=""`, `JAX_PLATFORMS=cpu`). Defaults to False.
        context: optional multiprocessing start method for `AsyncVectorEnv` ("spawn",
            "forkserver", "fork"). Defaults to None (Python's default). Prefer "forkserver" or
            "spawn" once jax/torch/tensorflow are imported (forking them can deadlock).
        **make_env_kwargs: forwarded to `make_env` (`frame_skip`, `max_episode_steps`, ...).

    Returns:
        gymnasium.vector.VectorEnv.

    Example:

    >>> envs = make_vector_env(2, env_id=TINY_ENV_ID, seed=0)
    >>> obs, info = envs.reset()
    >>> obs.shape
    (2, 80, 80, 1)
    >>> envs.close()
    """
    num_envs = _check_int("num_envs", num_envs, 1)
    if seed is not None:
        seed = _check_int("seed", seed, 0)
    env_fns = [
        functools.partial(
            make_env, env_id=env_id, seed=None if seed is None else seed + i, **make_env_kwargs
        )
        for i in range(num_envs)
    ]
    mode = gym.vector.AutoresetMode.SAME_STEP
    if asynchronous:
        with _without_accelerators():
            return gym.vector.AsyncVectorEnv(env_fns, context=context, autoreset_mode=mode)
    return gym.vector.SyncVectorEnv(env_fns, autoreset_mode=mode)


@contextlib.contextmanager
def _without_accelerators():
    """Hides GPUs from the processes started inside (the environment workers: they import
    keras_stm, hence a Keras backend, and need no GPU); the caller's environment is restored."""
    saved = {key: os.environ.get(key) for key in ("CUDA_VISIBLE_DEVICES", "JAX_PLATFORMS")}
    os.environ.update({"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def completed_episode_returns(info):
    """Unclipped scores of the games that ended in this step, from a step's `info`.

    Works with the info of one `make_env` environment and with the (`SAME_STEP`) info of a
    `make_vector_env`; life losses under `EpisodicLifeEnv` are not counted, only game overs
    (and time-limit truncations).

    Args:
        info: dict, the info returned by `step`.

    Returns:
        float64 array `(k,)` of the scores of the k games that ended (usually k = 0).

    Example:

    >>> completed_episode_returns({"episode": {"r": 21.0, "l": 800, "t": 3.2}})
    array([21.])
    """
    if not isinstance(info, dict):
        raise ValueError(f"`info` must be a dict, got {type(info).__name__}.")
    if "final_info" in info:
        return completed_episode_returns(info["final_info"])
    if "episode" not in info:
        return np.zeros((0,), np.float64)
    returns = np.atleast_1d(np.asarray(info["episode"]["r"], dtype=np.float64))
    if "_episode" in info:
        returns = returns[np.asarray(info["_episode"], dtype=bool)]
    return returns
