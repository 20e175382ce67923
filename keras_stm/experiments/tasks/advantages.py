"""Discounted returns and generalised advantage estimates over batched rollouts.

The reinforcement-learning task (spec section 4.9) trains an actor-critic on rollouts of 20 steps
with gamma 0.99 and a GAE coefficient ("tau") of 0.92. The reference A3C computes, walking backwards
through a rollout that is bootstrapped with the critic's value of the state after the last step
(0 when the last step ended the episode):

* value targets: the n-step discounted return `R_t = r_t + gamma * R_{t+1}`; the value loss is
  `sum 0.5 * (R_t - V_t)^2`;
* policy weights: the GAE `A_t = delta_t + gamma * lam * A_{t+1}` with
  `delta_t = r_t + gamma * V_{t+1} - V_t`.

Here a rollout is collected from `num_envs` environments at once, so an episode can end in the
middle
of it. Arrays are laid out `(T, num_envs)` (time first); `dones[t, i]` is True when the transition
taken at step `t` in environment `i` ended that environment's (training) episode. Nothing is
propagated across such a step: both the bootstrap term `V_{t+1}` / `R_{t+1}` and the GAE recursion
are multiplied by `1 - dones[t]`.

References:
    Schulman et al., "High-Dimensional Continuous Control Using Generalized Advantage
    Estimation", ICLR 2016. Mnih et al., "Asynchronous Methods for Deep Reinforcement Learning",
    ICML 2016.
"""

import numpy as np


def _check_rollout(rewards, dones, bootstrap_value, values=None):
    """Validates and converts rollout arrays to float64 `(T, N)` / `(N,)` arrays.

    Args:
        rewards: array-like `(T, N)` or `(T,)`.
        dones: array-like of the same shape as `rewards`.
        bootstrap_value: array-like `(N,)`, or a scalar when the rollout is 1-D.
        values: optional array-like of the same shape as `rewards`.

    Returns:
        `(rewards, not_done, bootstrap, values, squeeze)` where `squeeze` says the input was 1-D.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    if rewards.ndim not in (1, 2) or rewards.shape[0] == 0:
        raise ValueError(
            "`rewards` must have shape (T, num_envs) or (T,) with T >= 1, "
            f"got shape {rewards.shape}."
        )
    squeeze = rewards.ndim == 1
    if squeeze:
        rewards = rewards[:, None]
    dones = np.asarray(dones)
    if squeeze and dones.ndim == 1:
        dones = dones[:, None]
    if dones.shape != rewards.shape:
        raise ValueError(
            f"`dones` must have the shape of `rewards` {rewards.shape}, got {dones.shape}."
        )
    bootstrap = np.asarray(bootstrap_value, dtype=np.float64)
    if squeeze and bootstrap.ndim == 0:
        bootstrap = bootstrap[None]
    if bootstrap.shape != rewards.shape[1:]:
        raise ValueError(
            f"`bootstrap_value` must have shape {rewards.shape[1:]} (one value per "
            f"environment), got {bootstrap.shape}."
        )
    if values is not None:
        values = np.asarray(values, dtype=np.float64)
        if squeeze and values.ndim == 1:
            values = values[:, None]
        if values.shape != rewards.shape:
            raise ValueError(
                f"`values` must have the shape of `rewards` {rewards.shape}, got {values.shape}."
            )
    not_done = 1.0 - dones.astype(bool).astype(np.float64)
    return rewards, not_done, bootstrap, values, squeeze


def _check_coefficient(name, value):
    """Raises a ValueError unless `value` is a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"`{name}` must be a number in [0, 1], got {value!r}.")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1], got {value}.")
    return float(value)


def discounted_returns(rewards, dones, bootstrap_value, gamma=0.99):
    """n-step discounted returns of a rollout, cut at episode ends (the value-head targets).

    `R_{T} = bootstrap_value` and, backwards, `R_t = r_t + gamma * (1 - done_t) * R_{t+1}`.

    Args:
        rewards: float array `(T, num_envs)` (or `(T,)`), the (clipped) reward of each step.
        dones: bool array, same shape: True where the step ended the training episode
            (game over, life loss under `EpisodicLifeEnv`, or the time limit).
        bootstrap_value: float array `(num_envs,)` (a scalar for a 1-D rollout), the critic's
            value of the observation that follows the last step. It is ignored (multiplied by 0)
            for environments whose last step is done.
        gamma: float in [0, 1], discount factor. Defaults to 0.99 (the reference value).

    Returns:
        float32 array of the shape of `rewards`: the return from each step.

    Example:

    >>> import numpy as np
    >>> discounted_returns(np.array([1.0, 0.0, 2.0]), np.array([0, 1, 0]), 4.0, gamma=0.9)
    array([1. , 0. , 5.6], dtype=float32)
    """
    gamma = _check_coefficient("gamma", gamma)
    rewards, not_done, bootstrap, _, squeeze = _check_rollout(rewards, dones, bootstrap_value)
    returns = np.empty_like(rewards)
    running = bootstrap
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * not_done[t] * running
        returns[t] = running
    returns = returns.astype(np.float32)
    return returns[:, 0] if squeeze else returns


def generalized_advantage_estimates(
    rewards, values, dones, bootstrap_value, gamma=0.99, lam=0.92, returns="discounted"
):
    """GAE advantages of a rollout, cut at episode ends, and the value-head targets.

    With `V_T = bootstrap_value`:
    `delta_t = r_t + gamma * (1 - done_t) * V_{t+1} - V_t` and, backwards,
    `A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}` (`A_T = 0`).

    Args:
        rewards: float array `(T, num_envs)` (or `(T,)`), the (clipped) reward of each step.
        values: float array, same shape: the critic's value `V(s_t)` of the observation each
            action was chosen from.
        dones: bool array, same shape: True where the step ended the training episode.
        bootstrap_value: float array `(num_envs,)` (a scalar for a 1-D rollout): `V(s_T)`,
            the value of the observation after the last step (ignored where that step is done).
        gamma: float in [0, 1], discount factor. Defaults to 0.99.
        lam: float in [0, 1], the GAE coefficient (`tau` in the reference). Defaults to 0.92.
        returns: str, which value targets to return. `"discounted"` (default, the reference
            A3C): the n-step discounted returns of `discounted_returns`. `"lambda"`: the
            lambda-returns `A_t + V_t`.

    Returns:
        Tuple `(advantages, targets)` of float32 arrays of the shape of `rewards`.

    Example:

    >>> import numpy as np
    >>> adv, ret = generalized_advantage_estimates(
    ...     np.array([1.0, 0.0, 2.0]), np.array([0.5, 1.0, 2.0]), np.array([0, 1, 0]),
    ...     4.0, gamma=0.9, lam=0.5)
    >>> adv
    array([ 0.95, -1.  ,  3.6 ], dtype=float32)
    >>> ret
    array([1. , 0. , 5.6], dtype=float32)
    """
    gamma = _check_coefficient("gamma", gamma)
    lam = _check_coefficient("lam", lam)
    if returns not in ("discounted", "lambda"):
        raise ValueError(f"`returns` must be 'discounted' or 'lambda', got {returns!r}.")
    rewards, not_done, bootstrap, values, squeeze = _check_rollout(
        rewards, dones, bootstrap_value, values
    )
    next_values = np.concatenate([values[1:], bootstrap[None]], axis=0)
    deltas = rewards + gamma * not_done * next_values - values
    advantages = np.empty_like(rewards)
    running = np.zeros_like(bootstrap)
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * lam * not_done[t] * running
        advantages[t] = running
    if returns == "lambda":
        targets = (advantages + values).astype(np.float32)
    else:
        targets = discounted_returns(rewards, 1.0 - not_done, bootstrap, gamma)
    advantages = advantages.astype(np.float32)
    if squeeze:
        return advantages[:, 0], targets[:, 0]
    return advantages, targets
