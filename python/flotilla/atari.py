"""Atari 2600 games of the Arcade Learning Environment (`ale-py`) with the
standard DQN/PPO preprocessing: what `flotilla-actor --atari` builds.

`make_atari_env("ALE/Breakout-v5")` wraps `gymnasium.make(id, frameskip=1)`
in, from the inside out:

1. `gymnasium.wrappers.AtariPreprocessing(noop_max=30, frame_skip=4,
   screen_size=84, grayscale_obs=True, terminal_on_life_loss=False)`: at each
   real reset 1 to 30 no-ops (drawn from the environment's own generator, so
   seeded by `reset(seed=...)`); each step repeats the action on 4 frames and
   max-pools the last two; the frame is turned to grayscale and resized to
   84x84 (`cv2.INTER_AREA`), uint8.
2. `EpisodicLife`: a lost life ends the episode for training (`terminated`),
   but the game itself is only reset at a real game over (or a truncation):
   the `reset()` that follows a lost life takes one no-op step and carries on
   with the same game.
3. `FireReset` (only for games whose action meanings include FIRE): every
   reset, a life-loss one included, presses FIRE and then action 2, as
   baselines' `FireResetEnv` does (Breakout waits for FIRE to serve the ball).
4. `ClipReward`: the reward is `sign(r)`; the game's own reward is kept in
   `info["raw_reward"]`, which the actor's episode returns sum (see
   `flotilla.envs.RAW_REWARD_KEY`).
5. `gymnasium.wrappers.FrameStackObservation(4)`: the last 4 frames, oldest
   first: observations of shape (4, 84, 84), uint8 in [0, 255], channels
   first (the learner's `[model] preset = "nature"`, `observation_layout =
   "chw"`, `observation_scale = 1/255`). A reset fills the stack with copies
   of its frame. The actor declares them as a uint8 Box, so they travel to
   the learner as bytes (28,224 a frame stack).

The environments keep Gymnasium's v5 defaults otherwise, sticky actions
included (`repeat_action_probability = 0.25`); `--env-kwargs` can change
them, except `frameskip`, which the preprocessing does.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

from .envs import RAW_REWARD_KEY, EnvError

#: How to get what `--atari` needs.
INSTALL_HINT = 'pip install "flotilla[atari]" (or, from a checkout, pip install "./python[atari]")'

NOOP_MAX = 30
FRAME_SKIP = 4
SCREEN_SIZE = 84
STACK = 4


def require() -> None:
    """Imports the Arcade Learning Environment and registers its games in
    Gymnasium, and checks that OpenCV (which the resize needs) is there:
    `EnvError` saying how to install them when either is missing."""
    missing = []
    try:
        import ale_py
    except ImportError:
        missing.append("ale-py")
    try:
        import cv2  # noqa: F401
    except ImportError:
        missing.append("opencv-python-headless")
    if missing:
        raise EnvError(f"--atari needs {' and '.join(missing)}, which are not installed: {INSTALL_HINT}")
    gymnasium.register_envs(ale_py)


def _is_ale_entry_point(entry_point: Any) -> bool:
    if isinstance(entry_point, str):
        module = entry_point.partition(":")[0]
    else:
        module = getattr(entry_point, "__module__", "") or ""
    return module == "ale_py" or module.startswith("ale_py.")


def check_env_id(env_id: str) -> None:
    """`EnvError` unless `env_id` is a game of the Arcade Learning
    Environment registered in Gymnasium (after `require`)."""
    require()
    example = "e.g. ALE/Breakout-v5"
    try:
        spec = gymnasium.spec(env_id)
    except Exception as e:  # gymnasium.error.NameNotFound, VersionNotFound, ...
        raise EnvError(
            f"--atari needs an Atari game of the Arcade Learning Environment ({example}); "
            f"{env_id!r} is no registered environment: {e}"
        ) from None
    if not _is_ale_entry_point(spec.entry_point):
        raise EnvError(
            f"--atari needs an Atari game of the Arcade Learning Environment ({example}); "
            f"{env_id!r} is not one (its entry point is {spec.entry_point!r})"
        )


def make_atari_env(env_id: str, **kwargs: Any) -> Any:
    """The Atari game `env_id` (an `ALE/...` id) with the preprocessing of
    this module's docstring; `kwargs` go to `gymnasium.make` (everything but
    `frameskip`, which must be absent or 1)."""
    check_env_id(env_id)
    if kwargs.get("frameskip", 1) != 1:
        raise EnvError(
            f"--atari skips {FRAME_SKIP} frames per step itself (max-pooling the last two): "
            f"leave frameskip out of the environment's keyword arguments (got {kwargs['frameskip']!r})"
        )
    from gymnasium.wrappers import AtariPreprocessing, FrameStackObservation

    env = gymnasium.make(env_id, **{**kwargs, "frameskip": 1})
    env = AtariPreprocessing(
        env,
        noop_max=NOOP_MAX,
        frame_skip=FRAME_SKIP,
        screen_size=SCREEN_SIZE,
        terminal_on_life_loss=False,
        grayscale_obs=True,
        grayscale_newaxis=False,
        scale_obs=False,
    )
    env = EpisodicLife(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireReset(env)
    env = ClipReward(env)
    return FrameStackObservation(env, STACK)


class EpisodicLife(gymnasium.Wrapper):
    """A lost life ends the episode (`terminated`), the usual
    `EpisodicLifeEnv`: the `reset()` that follows resets the game only after
    a real game over or a truncation (or when given a seed or options);
    after a lost life it takes one no-op step instead and the same game goes
    on, lives, score and all."""

    def __init__(self, env: Any):
        super().__init__(env)
        self.lives = 0
        #: Whether the last step ended the game itself (not just a life).
        self.game_over = True

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = bool(terminated or truncated)
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if self.game_over or seed is not None or options:
            obs, info = self.env.reset(seed=seed, options=options)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:
                obs, info = self.env.reset()
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireReset(gymnasium.Wrapper):
    """Presses FIRE, then action 2, after every reset (baselines'
    `FireResetEnv`; a game of two actions gets FIRE only): games such as
    Breakout wait for FIRE to start, also after a lost life. A step that ends
    the episode meanwhile resets again. Rewards of these steps are not
    reported (as in baselines; they are 0 in practice)."""

    def __init__(self, env: Any):
        super().__init__(env)
        meanings = env.unwrapped.get_action_meanings()
        if "FIRE" not in meanings:
            raise EnvError(f"FireReset needs a game with a FIRE action, got {meanings}")
        self.actions = (meanings.index("FIRE"), 2) if len(meanings) >= 3 else (meanings.index("FIRE"),)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        for action in self.actions:
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset()
        return obs, info


class ClipReward(gymnasium.Wrapper):
    """Trains on `sign(reward)` (-1, 0 or 1) and keeps the game's reward in
    `info["raw_reward"]`, so that the actor reports the game's score."""

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info = dict(info)
        info[RAW_REWARD_KEY] = float(reward)
        return obs, float(np.sign(reward)), terminated, truncated, info
