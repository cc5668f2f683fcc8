"""Playing a trained policy from a learner checkpoint, in numpy.

A checkpoint (`runs/<run>/checkpoints/ckpt-<version>.safetensors`) is one
safetensors file (`common/src/checkpoint.rs`): the policy's f32 tensors under
`model/<param>` (next to the optimizer's `adam.m/...` and `adam.v/...`), and
string metadata: `format` (`flotilla-checkpoint-v1`), `run_id`, `version`,
the run configuration as TOML under `config` (its `[model]` gives the
network, its `[env]` the environment id) and, in checkpoints of current
learners, the run's spaces as JSON under `spaces` (a pixel run's
observation Box with `"dtype": "uint8"`). A run with `[model]
normalize_observations` also has its observation statistics in `model/`
(`obs_norm.mean`, `obs_norm.var`): the policy applies them to the raw
observations it is given, as the actors' network does. A run with a
convolutional torso (`[model] conv`, or `preset = "nature"`) plays image
observations of its declared shape (`[C, H, W]` or `[H, W, C]`, per
`observation_layout`), in numpy like the rest (no torch).

    policy = flotilla.load_policy("runs/cartpole/checkpoints/ckpt-0000000244.safetensors")
    obs, _ = env.reset(seed=0)
    action = policy(obs)            # the most likely action
    action = policy(obs, greedy=False)  # sampled, as the actors act
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

from .policy import ModelSpec, Policy, PolicyError
from .spaces import ActionAdapter, Box, Discrete, ObservationAdapter, Space, SpaceError, from_json

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: The `format` metadata of a checkpoint.
FORMAT = "flotilla-checkpoint-v1"
#: Tensor section of the policy's parameters.
MODEL_SECTION = "model/"


class CheckpointError(ValueError):
    """A file that is not a usable Flotilla checkpoint."""


class LoadedPolicy:
    """A trained policy: `policy(obs, greedy=True)` returns the action(s).

    `obs` is one observation or a batch of them. Observations are what the
    actors send: vectors of the run's observation space, of any numeric
    dtype, read as float32 (a uint8 run's frames as they come; any array
    whose trailing dimensions hold `obs_dim` values: the declared shape or
    the flat vector; for a one-value space, also a scalar, and an `(N,)`
    array as a batch). Pass the environment's Gymnasium spaces to
    `load_policy` to feed raw observations of other kinds (a `Discrete`
    observation is one-hot encoded) and get actions in the environment's
    terms (a `Discrete` with a `start`, a `Box` of its dtype and shape).

    Discrete actions come back as an int (one observation) or an int64 array
    (a batch); continuous ones as arrays clipped to the action box, which is
    what an environment receives: with the environment's action space given,
    exactly as the actor hands them over (cast to the space's dtype, integer
    dtypes rounded, then clipped to the space's own bounds); without it,
    float32 clipped to the run's (f32) bounds. Set `clip=False` for the raw
    float32 Gaussian samples.
    """

    def __init__(
        self,
        policy: Policy,
        observation_space: Space,
        action_space: Space,
        env_id: str,
        metadata: dict[str, str],
        config: dict[str, Any],
        observation_adapter: ObservationAdapter | None = None,
        action_adapter: ActionAdapter | None = None,
        seed: int | None = None,
    ):
        self.network = policy
        self.observation_space = observation_space
        self.action_space = action_space
        self.env_id = env_id
        self.metadata = metadata
        self.config = config
        self.run_id = metadata.get("run_id")
        self.version = int(metadata["version"]) if metadata.get("version", "").isdigit() else None
        self._obs = observation_adapter
        self._act = action_adapter
        self.rng = np.random.default_rng(seed)

    @property
    def obs_dim(self) -> int:
        return self.network.obs_dim

    def _encode(self, obs: Any) -> tuple[np.ndarray, bool]:
        """`[N, obs_dim]` float32 and whether `obs` was one observation."""
        if self._obs is not None and self._obs.one_hot is not None:
            a = np.asarray(obs)
            single = a.ndim == 0
            return self._obs.encode_batch(a.reshape(-1)), single
        a = np.asarray(obs, dtype=np.float32)
        d = self.obs_dim
        shape = self.observation_space.shape if isinstance(self.observation_space, Box) else (d,)
        if d == 1:
            # A scalar Box (Gymnasium shape (), declared as (1,)): one scalar
            # is one observation and an `(N,)` array a batch of them (a
            # `(1,)` array is one observation of the declared shape, unless
            # the environment's space says its observations are scalars).
            scalar_space = self._obs is not None and tuple(self._obs.gym_space.shape) == ()
            if a.ndim == 0:
                return a.reshape(1, 1), True
            if a.ndim == 1 and (scalar_space or a.shape[0] != 1):
                return a.reshape(-1, 1), False
        if a.shape == tuple(shape) or a.shape == (d,):
            return a.reshape(1, d), True
        if a.ndim >= 1 and a.size % d == 0 and (a.shape[1:] == tuple(shape) or a.shape[-1:] == (d,)):
            return a.reshape(-1, d), False
        raise ValueError(
            f"observation of shape {list(a.shape)} does not fit the policy's observations "
            f"(shape {list(shape)}, {d} values, optionally batched)"
        )

    def __call__(self, obs: Any, greedy: bool = True, clip: bool = True) -> Any:
        x, single = self._encode(obs)
        s = self.network.act(x, self.rng, greedy=greedy)
        if isinstance(self.action_space, Discrete):
            actions = s.actions
            if self._act is not None:
                actions = actions + self._act.start
            return int(actions[0]) if single else actions
        actions = s.actions
        if self._act is not None:
            # As the actor hands them to the environment: cast to the
            # space's dtype and clipped to its own bounds (not the f32
            # rounding of them in the checkpoint).
            if clip:
                actions = self._act.box_to_env(actions)
            else:
                actions = actions.reshape((actions.shape[0], *self._act.shape))
            # `[0, ...]`: an array also for a space of shape () (as the actor
            # hands it over), not a numpy scalar.
            return actions[0, ...] if single else actions
        if clip:
            actions = np.clip(actions, self.action_space.low, self.action_space.high)
        if len(self.action_space.shape) > 1:
            actions = actions.reshape((actions.shape[0], *self.action_space.shape))
        return actions[0] if single else actions

    def act(self, obs: np.ndarray, greedy: bool = False, with_value: bool = False):
        """The network's raw output for `[N, obs_dim]` flat observations:
        actions (unclipped), log-probabilities and, when asked, values."""
        return self.network.act(np.asarray(obs, dtype=np.float32), self.rng, greedy=greedy, with_value=with_value)

    def value(self, obs: Any) -> np.ndarray:
        """The critic's value estimate(s)."""
        x, single = self._encode(obs)
        _, v = self.network.forward(x, with_value=True)
        return v[0] if single else v

    def __repr__(self) -> str:
        return (
            f"LoadedPolicy(env={self.env_id!r}, version={self.version}, "
            f"observations={self.observation_space!r}, actions={self.action_space!r})"
        )


def _spaces_from_tensors(tensors: dict[str, np.ndarray], model: ModelSpec) -> tuple[Space, Space]:
    """Spaces of a checkpoint that records none (written before spaces were
    recorded): the observation size from the first layer, the action space
    from the head, unbounded (continuous actions are then not clipped)."""
    if model.is_convolutional():
        # Convolutional torsos are younger than the `spaces` metadata: the
        # image shape cannot be told from the tensors.
        raise CheckpointError("the checkpoint records no spaces and its [model] is convolutional")
    first = "torso.0.weight" if model.shared_torso else "actor.0.weight"
    if first not in tensors or "actor.head.weight" not in tensors:
        raise CheckpointError("the checkpoint records no spaces and its model tensors are incomplete")
    obs_dim = int(tensors[first].shape[1])
    act = int(tensors["actor.head.weight"].shape[0])
    inf = np.full(obs_dim, np.inf, np.float32)
    observation = Box(-inf, inf, (obs_dim,))
    if "log_std" in tensors:
        a_inf = np.full(act, np.inf, np.float32)
        return observation, Box(-a_inf, a_inf, (act,))
    return observation, Discrete(act)


def load_policy(
    path: str | os.PathLike,
    observation_space: Any = None,
    action_space: Any = None,
    seed: int | None = None,
) -> LoadedPolicy:
    """Reads a learner checkpoint and returns its policy as a callable.

    `observation_space` and `action_space` are optional Gymnasium spaces of
    the environment the policy will play: given, they must be the spaces the
    run was trained with (as an actor declares them), and observations and
    actions are converted as the actor converts them. `seed` seeds the
    sampling of `greedy=False` actions.
    """
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            tensors = {
                key[len(MODEL_SECTION) :]: f.get_tensor(key) for key in f.keys() if key.startswith(MODEL_SECTION)
            }
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file: {e}") from None
    found = metadata.get("format")
    if found != FORMAT:
        raise CheckpointError(f"{path}: format is {found!r}, expected {FORMAT!r}")
    if "config" not in metadata:
        raise CheckpointError(f"{path}: no run config in its metadata")
    try:
        config = tomllib.loads(metadata["config"])
    except tomllib.TOMLDecodeError as e:
        raise CheckpointError(f"{path}: the run config is not TOML: {e}") from None
    env_id = str(config.get("env", {}).get("id", ""))
    try:
        model = ModelSpec.from_config(config.get("model"))
    except (PolicyError, TypeError) as e:
        raise CheckpointError(f"{path}: [model]: {e}") from None
    if "spaces" in metadata:
        try:
            spaces = json.loads(metadata["spaces"])
            obs_space = from_json(spaces["observation"], "observation")
            act_space = from_json(spaces["action"], "action")
        except (json.JSONDecodeError, KeyError, TypeError, SpaceError) as e:
            raise CheckpointError(f"{path}: metadata `spaces`: {e}") from None
    else:
        obs_space, act_space = _spaces_from_tensors(tensors, model)
    if not isinstance(obs_space, Box):
        raise CheckpointError(f"{path}: the observation space is {obs_space!r}; runs observe a Box")

    obs_adapter = act_adapter = None
    if observation_space is not None:
        obs_adapter = ObservationAdapter(observation_space)
        if not _same_shape_and_bounds(obs_adapter.space, obs_space):
            raise ValueError(f"observation space {observation_space} is not the run's ({obs_space!r}, as declared)")
    if action_space is not None:
        act_adapter = ActionAdapter(action_space)
        if not _same_shape_and_bounds(act_adapter.space, act_space):
            raise ValueError(f"action space {action_space} is not the run's ({act_space!r})")
    try:
        policy = Policy(model, obs_space.shape, act_space, tensors)
    except PolicyError as e:
        raise CheckpointError(f"{path}: the policy does not fit its own spaces and [model]: {e}") from None
    return LoadedPolicy(
        policy,
        obs_space,
        act_space,
        env_id,
        metadata,
        config,
        obs_adapter,
        act_adapter,
        seed,
    )


def _same_shape_and_bounds(a: Space, b: Space) -> bool:
    """Equal spaces, comparing bounds by value (so -0.0 equals 0.0) and not
    the dtype: how observations travelled does not change the policy, and a
    pixel environment's uint8 space plays the checkpoints of runs from
    before uint8 observations too (declared float32 then)."""
    if isinstance(a, Discrete) or isinstance(b, Discrete):
        return a == b
    return a.shape == b.shape and np.array_equal(a.low, b.low) and np.array_equal(a.high, b.high)
