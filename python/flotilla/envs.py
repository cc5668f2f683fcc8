"""Gymnasium environments as an actor steps them.

`EnvFactory` builds one environment: `gymnasium.make(id, **kwargs)`, or a
callable of your own named `module:callable` (called with the same kwargs),
or with `atari=True` an Atari game with the standard preprocessing
(`flotilla.atari.make_atari_env`).
It is a plain picklable object, so asynchronous vector environments can build
environments in their worker processes.

`VectorRunner` steps `N` of them in lockstep with Gymnasium's vector
environments in the `SAME_STEP` autoreset mode, the semantics of the Rust
`VecEnv`: when an episode ends, the environment is reset within the same step,
the returned observation is the next episode's first one, and the true last
observation of the finished episode is kept for the chunk (the learner needs
it to bootstrap truncated episodes).

The episode returns the actor reports sum the rewards it trains on, or, for
an environment whose step infos carry `RAW_REWARD_KEY` ("raw_reward"), those
instead: the Atari wrappers train on clipped rewards and report the game's
score that way.
"""

from __future__ import annotations

import importlib
import multiprocessing
import signal
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .seeds import env_seeds
from .spaces import ActionAdapter, ObservationAdapter


class EnvError(RuntimeError):
    """An environment that cannot be built, or misbehaves."""


#: Step-info key of the reward an episode's reported return counts, where an
#: environment trains on another one (`flotilla.atari.ClipReward`).
RAW_REWARD_KEY = "raw_reward"


def resolve_callable(spec: str) -> Callable[..., Any]:
    """The callable named by `module:attr` (`attr` may be dotted)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise EnvError(f"expected module:callable, got {spec!r}")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise EnvError(f"cannot import module {module_name!r} (from {spec!r}): {e}") from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise EnvError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise EnvError(f"{spec!r} is not callable")
    return obj


@dataclass(frozen=True)
class EnvFactory:
    """Builds one environment of the actor's kind."""

    env_id: str
    make: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Build `env_id` as an Atari game with the standard preprocessing
    #: (`flotilla.atari.make_atari_env`); not with `make`.
    atari: bool = False

    def __post_init__(self) -> None:
        if self.atari and self.make:
            raise EnvError("--atari builds the environment itself: it does not go with --make")

    def describe(self) -> str:
        """How the environment is built, for error messages."""
        if self.make:
            return self.make
        if self.atari:
            return f"flotilla.atari.make_atari_env({self.env_id!r})"
        return f"gymnasium.make({self.env_id!r})"

    def __call__(self) -> Any:
        if self.make:
            return resolve_callable(self.make)(**self.kwargs)
        if self.atari:
            from .atari import make_atari_env

            return make_atari_env(self.env_id, **self.kwargs)
        import gymnasium

        return gymnasium.make(self.env_id, **self.kwargs)


@dataclass(frozen=True)
class _InWorkerProcess:
    """Builds an environment in an asynchronous vector environment's worker
    process, which first stops listening to SIGINT: a Ctrl-C in a terminal
    reaches the whole process group, and it is the actor's to act on (it
    closes the workers itself)."""

    factory: EnvFactory

    def __call__(self) -> Any:
        # The vector environment also builds one in the actor's process (to
        # read the spaces), from its environment thread: leave that one be.
        if multiprocessing.parent_process() is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        return self.factory()


@dataclass(frozen=True)
class EnvInfo:
    """What an actor declares of its environment: the id and both spaces,
    with the conversions between Gymnasium's values and Flotilla's."""

    env_id: str
    observation: ObservationAdapter
    action: ActionAdapter


def probe(factory: EnvFactory) -> EnvInfo:
    """Builds one environment to read its spaces, then closes it."""
    try:
        env = factory()
    except EnvError:
        raise
    except Exception as e:
        raise EnvError(f"cannot build the environment with {factory.describe()}: {type(e).__name__}: {e}") from e
    try:
        return EnvInfo(
            factory.env_id,
            ObservationAdapter(env.observation_space),
            ActionAdapter(env.action_space),
        )
    finally:
        try:
            env.close()
        except Exception:
            pass


@dataclass
class StepResult:
    """One step of `N` environments, in Flotilla's terms."""

    rewards: np.ndarray  # [N] float32
    terminated: np.ndarray  # [N] bool
    truncated: np.ndarray  # [N] bool
    obs: np.ndarray  # [N, obs_dim] after the step (and any reset): float32, or uint8 for a uint8 space
    final_envs: np.ndarray  # [K] environments whose episode ended, increasing
    final_obs: np.ndarray  # [K, obs_dim] their true last observations (same dtype)
    episodes: list[tuple[float, int]]  # (return, length) of each ended episode


def _raw_rewards(infos: dict, done: np.ndarray, rewards: np.ndarray) -> np.ndarray:
    """The rewards an episode's return counts: `infos[RAW_REWARD_KEY]` where
    the environments give it (in `infos["final_info"]` for those whose
    episode ended: their `infos` are the next episode's reset infos), the
    training rewards elsewhere."""
    out = rewards
    for where, envs in ((infos, ~done), (infos.get("final_info"), done)):
        if not isinstance(where, dict) or RAW_REWARD_KEY not in where:
            continue
        values = np.asarray(where[RAW_REWARD_KEY])
        mask = np.asarray(where.get("_" + RAW_REWARD_KEY, np.ones(done.shape, bool)), dtype=bool)
        take = mask.reshape(done.shape) & envs
        if take.any():
            if out is rewards:
                out = rewards.copy()
            out[take] = values.reshape(done.shape)[take].astype(np.float64)
    return out


class VectorRunner:
    """`N` environments of `factory`, stepped in lockstep with autoreset in
    the same step; environment `i` is reset with seed `seed + i`.

    `mode` is "sync" (all in this process) or "async" (one process each).
    """

    def __init__(self, factory: EnvFactory, info: EnvInfo, num_envs: int, seed: int, mode: str = "sync"):
        from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv

        self.info = info
        self.num_envs = num_envs
        if mode == "async":
            fns = [_InWorkerProcess(factory)] * num_envs
            # A fresh interpreter per worker (forkserver or spawn), never a
            # fork of this process: its gRPC threads do not survive a fork.
            methods = multiprocessing.get_all_start_methods()
            context = "forkserver" if "forkserver" in methods else "spawn"
            self.env = AsyncVectorEnv(fns, context=context, autoreset_mode=AutoresetMode.SAME_STEP)
        elif mode == "sync":
            self.env = SyncVectorEnv([factory] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        else:
            raise ValueError(f"vector mode must be sync or async, got {mode!r}")
        obs, _ = self.env.reset(seed=env_seeds(seed, num_envs))
        self.obs = info.observation.encode_batch(obs)
        self._returns = np.zeros(num_envs, np.float64)
        self._lengths = np.zeros(num_envs, np.int64)

    def step(self, env_actions: np.ndarray) -> StepResult:
        """Steps every environment with its action (as the env takes it)."""
        obs, rewards, terminated, truncated, infos = self.env.step(env_actions)
        rewards = np.asarray(rewards, dtype=np.float64).reshape(self.num_envs)
        terminated = np.asarray(terminated, dtype=bool).reshape(self.num_envs)
        truncated = np.asarray(truncated, dtype=bool).reshape(self.num_envs)
        self.obs = self.info.observation.encode_batch(obs)
        done = terminated | truncated
        self._returns += _raw_rewards(infos, done, rewards)
        self._lengths += 1
        final_envs = np.flatnonzero(done)
        dim = self.info.observation.dim
        episodes: list[tuple[float, int]] = []
        if final_envs.size:
            mask = infos.get("_final_obs")
            finals = infos.get("final_obs")
            if mask is None or finals is None or not np.all(np.asarray(mask)[final_envs]):
                raise EnvError(
                    "an episode ended without a final observation in infos['final_obs']: "
                    "the vector environment is not in the SAME_STEP autoreset mode"
                )
            final_obs = np.stack([self.info.observation.encode_one(finals[i]) for i in final_envs])
            for i in final_envs:
                episodes.append((float(self._returns[i]), int(self._lengths[i])))
            self._returns[final_envs] = 0.0
            self._lengths[final_envs] = 0
        else:
            final_obs = np.zeros((0, dim), self.info.observation.dtype)
        return StepResult(
            rewards.astype(np.float32),
            terminated,
            truncated,
            self.obs,
            final_envs,
            final_obs,
            episodes,
        )

    def close(self) -> None:
        try:
            self.env.close()
        except Exception:
            pass
