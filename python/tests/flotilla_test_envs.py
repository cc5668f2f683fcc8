"""Small Gymnasium environments for the tests, built by actors through
`--make flotilla_test_envs:<name>` (this folder is on their PYTHONPATH)."""

from __future__ import annotations

import os
import time

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CounterEnv(gym.Env):
    """Observations `[episode, t, u]`: the episode's number since the last
    seeded reset, the step within it, and a uniform draw of the env's seeded
    stream at reset. Episode `e` lasts `2 + e % 3` steps and ends terminated
    when `e` is even, truncated when odd; the reward is `1 + action`. Every
    value of a trajectory is predictable, final observations included."""

    metadata = {"render_modes": []}

    def __init__(self):
        self.observation_space = spaces.Box(0.0, 1000.0, (3,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.episode = -1
        self.t = 0
        self.u = 0.0

    def _obs(self):
        return np.array([self.episode, self.t, self.u], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self.episode = -1
        self.episode += 1
        self.t = 0
        self.u = float(self.np_random.random())
        return self._obs(), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        self.t += 1
        done = self.t >= 2 + self.episode % 3
        terminated = done and self.episode % 2 == 0
        truncated = done and not terminated
        return self._obs(), 1.0 + float(action), terminated, truncated, {}


class GridEnv(gym.Env):
    """Observations of shape (2, 3) in float64, actions `Discrete(3, start=-1)`
    (the environment checks that it receives -1, 0 or 1); episodes end at
    random (terminated) or after 25 steps (truncated)."""

    def __init__(self, horizon: int = 25):
        self.observation_space = spaces.Box(-1.0, 1.0, (2, 3), np.float64)
        self.action_space = spaces.Discrete(3, start=-1)
        self.horizon = horizon
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, (2, 3)), {}

    def step(self, action):
        if action not in (-1, 0, 1):
            raise ValueError(f"GridEnv received action {action!r}")
        self.t += 1
        obs = self.np_random.uniform(-1, 1, (2, 3))
        terminated = bool(self.np_random.random() < 0.05)
        truncated = not terminated and self.t >= self.horizon
        return obs, float(action) * 0.5, terminated, truncated, {}


class SquareEnv(gym.Env):
    """Continuous actions of shape (2, 2) in [-1, 1] (the environment checks
    that it receives them clipped, shaped and typed); reward `-|a - 0.5|²`.
    Discrete observations (`Discrete(5)`, sent one-hot): a step counter."""

    def __init__(self):
        self.observation_space = spaces.Discrete(5)
        self.action_space = spaces.Box(-1.0, 1.0, (2, 2), np.float32)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return 0, {}

    def step(self, action):
        a = np.asarray(action)
        if a.shape != (2, 2) or a.dtype != np.float32 or a.min() < -1 or a.max() > 1:
            raise ValueError(f"SquareEnv received {a!r}")
        self.t += 1
        reward = -float(np.sum((a - 0.5) ** 2))
        return self.t % 5, reward, False, self.t >= 4, {}


class WideCartPole(gym.Env):
    """CartPole's actions, but five observations: the declaration of a
    CartPole-v1 run with other spaces."""

    def __init__(self):
        self.observation_space = spaces.Box(-1.0, 1.0, (5,), np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(5, np.float32), {}

    def step(self, action):
        return np.zeros(5, np.float32), 1.0, False, False, {}


class Exploding(gym.Env):
    """Raises on its third step: an environment that fails."""

    def __init__(self):
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t >= 3:
            raise RuntimeError("the environment exploded")
        return np.zeros(2, np.float32), 0.0, False, False, {}


class SlowEnv(gym.Env):
    """An environment that takes `delay` seconds per step, with `size`
    observations (large ones make large chunks). It raises on a step once the
    file `explode_when` exists, and calls `on_step` (in-process tests) after
    every step. Episodes are truncated after 50 steps."""

    def __init__(self, delay: float = 0.1, size: int = 2, explode_when: str | None = None, on_step=None):
        self.observation_space = spaces.Box(-1.0, 1.0, (size,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.delay, self.size = delay, size
        self.explode_when, self.on_step = explode_when, on_step
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(self.size, np.float32), {}

    def step(self, action):
        if self.explode_when is not None and os.path.exists(self.explode_when):
            raise RuntimeError("the environment exploded")
        time.sleep(self.delay)
        self.t += 1
        if self.on_step is not None:
            self.on_step()
        return np.zeros(self.size, np.float32), 0.0, False, self.t >= 50, {}


class Liar(gym.Env):
    """Declares observations in [-1, 1] and sends 5.0 from the second step."""

    def __init__(self):
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.full(2, 5.0, np.float32), 0.0, False, False, {}


class PixelEnv(gym.Env):
    """Images: observations of shape (2, 4, 4), channels first, uint8 in
    0..=`high` (a Box of pixels, sent as bytes), uniform draws of the env's
    seeded stream; `Discrete(3)` actions, reward 1 when the action is the
    first pixel modulo 3. Episodes end at random (terminated, 1 in 8) or after
    `horizon` steps (truncated). With `dtype="float32"` the same images are
    declared (and given) as float32: the same Box, sent as floats."""

    SHAPE = (2, 4, 4)

    def __init__(self, high: int = 255, horizon: int = 20, dtype: str = "uint8"):
        self.observation_space = spaces.Box(0, high, self.SHAPE, np.dtype(dtype))
        self.action_space = spaces.Discrete(3)
        self.high, self.horizon = high, horizon
        self.t = 0
        self.obs = np.zeros(self.SHAPE, np.uint8)

    def _draw(self):
        self.obs = self.np_random.integers(0, self.high, self.SHAPE, dtype=np.uint8, endpoint=True)
        return self.obs.astype(self.observation_space.dtype)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action):
        assert self.action_space.contains(action), action
        reward = float(int(action) == int(self.obs[0, 0, 0]) % 3)
        self.t += 1
        terminated = bool(self.np_random.random() < 0.125)
        truncated = not terminated and self.t >= self.horizon
        return self._draw(), reward, terminated, truncated, {}


def make_counter() -> gym.Env:
    return CounterEnv()


def make_grid(horizon: int = 25) -> gym.Env:
    return GridEnv(horizon)


def make_square() -> gym.Env:
    return SquareEnv()


def make_wide_cartpole() -> gym.Env:
    return WideCartPole()


def make_exploding() -> gym.Env:
    return Exploding()


def make_slow(**kwargs) -> gym.Env:
    return SlowEnv(**kwargs)


def make_liar() -> gym.Env:
    return Liar()


def make_pixels(high: int = 255, horizon: int = 20, dtype: str = "uint8") -> gym.Env:
    return PixelEnv(high, horizon, dtype)
