"""Observation and action spaces: Flotilla's two kinds, and the mapping from
Gymnasium's spaces to them.

Flotilla knows `Discrete(n)` (integers `0..n`) and `Box(low, high, shape)`
(f32 values, flattened row-major on the wire), as `common/src/space.rs` does.
An actor that brings its own environment declares both spaces at `Hello`:

* observations are always a `Box`: a Gymnasium `Box` of any shape is sent
  flattened as float32, and a `Discrete(n)` observation is sent one-hot, as a
  `Box` of `n` values in `[0, 1]`;
* actions are a `Discrete(n)` (a Gymnasium `Discrete` with any `start`; the
  policy picks `0..n` and the environment receives `start + k`) or a `Box`
  of any shape (the policy samples flat f32 vectors; the environment receives
  them clipped to the box, reshaped and cast to the space's dtype).

`ObservationAdapter` and `ActionAdapter` hold these conversions; the actor and
`flotilla.load_policy` share them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .v1 import flotilla_pb2 as pb


class SpaceError(ValueError):
    """A space Flotilla cannot represent, or a malformed one."""


@dataclass(frozen=True, eq=False)
class Discrete:
    """Integers `0..n`."""

    n: int

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Discrete) and other.n == self.n

    def __hash__(self) -> int:
        return hash(("Discrete", self.n))

    @property
    def flat_dim(self) -> int:
        """Values in one element: 1."""
        return 1

    def __repr__(self) -> str:
        return f"Discrete({self.n})"


@dataclass(frozen=True, eq=False)
class Box:
    """Real arrays of `shape` with per-value bounds (`low`, `high`: flat
    float32 arrays of `prod(shape)` values). Equality compares the bounds bit
    for bit, as the learner does."""

    low: np.ndarray
    high: np.ndarray
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        low = np.ascontiguousarray(self.low, dtype=np.float32).reshape(-1)
        high = np.ascontiguousarray(self.high, dtype=np.float32).reshape(-1)
        shape = tuple(int(d) for d in self.shape)
        size = math.prod(shape)
        if not shape or size <= 0:
            raise SpaceError(f"a Box needs a non-empty shape of positive size, got {list(shape)}")
        if low.size != size or high.size != size:
            raise SpaceError(f"Box shape {list(shape)} does not match {low.size} low and {high.size} high bounds")
        low.flags.writeable = False
        high.flags.writeable = False
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "shape", shape)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Box)
            and other.shape == self.shape
            and other.low.tobytes() == self.low.tobytes()
            and other.high.tobytes() == self.high.tobytes()
        )

    def __hash__(self) -> int:
        return hash(("Box", self.shape, self.low.tobytes(), self.high.tobytes()))

    @property
    def flat_dim(self) -> int:
        """Values in one element: the product of the shape."""
        return math.prod(self.shape)

    def __repr__(self) -> str:
        return f"Box(shape={list(self.shape)})"


Space = Discrete | Box


def action_outputs(space: Space) -> int:
    """Outputs of the policy head: logits for `Discrete`, means for `Box`."""
    return space.n if isinstance(space, Discrete) else space.flat_dim


# --- the wire ---------------------------------------------------------------


def to_proto(space: Space) -> pb.Space:
    """The wire form of a space."""
    if isinstance(space, Discrete):
        return pb.Space(discrete=pb.DiscreteSpace(n=space.n))
    return pb.Space(
        box=pb.BoxSpace(
            low=space.low.tolist(),
            high=space.high.tolist(),
            shape=list(space.shape),
        )
    )


def from_proto(space: pb.Space, field: str = "space") -> Space:
    """A space from the wire; `SpaceError` names `field` on a malformed one."""
    kind = space.WhichOneof("kind")
    if kind == "discrete":
        if space.discrete.n == 0:
            raise SpaceError(f"{field}: discrete space with n = 0")
        return Discrete(int(space.discrete.n))
    if kind == "box":
        b = space.box
        try:
            return Box(
                np.array(b.low, dtype=np.float32),
                np.array(b.high, dtype=np.float32),
                tuple(b.shape),
            )
        except SpaceError as e:
            raise SpaceError(f"{field}: {e}") from None
    raise SpaceError(f"{field}: space has no kind")


def from_json(value: Any, field: str = "space") -> Space:
    """A space from its JSON form in a checkpoint's `spaces` metadata, serde's
    externally tagged enum: `{"Discrete": {"n": 2}}` or
    `{"Box": {"low": [...], "high": [...], "shape": [4]}}`.

    JSON has no infinity: a `null` bound is read as unbounded (-inf in `low`,
    +inf in `high`), which is how serde_json writes an infinite f32; bounds
    written as strings ("inf", "-inf") are read too.
    """
    if not isinstance(value, dict) or len(value) != 1:
        raise SpaceError(f'{field}: expected {{"Discrete": ...}} or {{"Box": ...}}, got {value!r}')
    ((kind, body),) = value.items()
    if kind == "Discrete":
        return Discrete(int(body["n"]))
    if kind == "Box":

        def bounds(key: str, missing: float) -> np.ndarray:
            return np.array([missing if x is None else float(x) for x in body[key]], dtype=np.float32)

        return Box(bounds("low", -np.inf), bounds("high", np.inf), tuple(body["shape"]))
    raise SpaceError(f"{field}: unknown space kind {kind!r}")


# --- Gymnasium --------------------------------------------------------------


def _gym_spaces():
    import gymnasium.spaces as spaces

    return spaces


class ObservationAdapter:
    """Turns a Gymnasium environment's observations into Flotilla's flat
    float32 vectors, and declares the matching `Box`.

    `encode_batch` takes a vector environment's batched observations
    (`[N, *shape]`, or `[N]` for `Discrete`), `encode_one` one observation.
    """

    def __init__(self, gym_space: Any):
        spaces = _gym_spaces()
        self.gym_space = gym_space
        if isinstance(gym_space, spaces.Discrete):
            n = int(gym_space.n)
            self.one_hot: int | None = n
            self.start = int(gym_space.start)
            self.space: Box = Box(np.zeros(n, np.float32), np.ones(n, np.float32), (n,))
        elif isinstance(gym_space, spaces.Box):
            self.one_hot = None
            self.start = 0
            shape = tuple(gym_space.shape) or (1,)
            low = np.asarray(gym_space.low, dtype=np.float64).astype(np.float32).reshape(-1)
            high = np.asarray(gym_space.high, dtype=np.float64).astype(np.float32).reshape(-1)
            self.space = Box(low, high, shape)
        else:
            raise SpaceError(
                f"observation space {gym_space} is not supported: Flotilla takes a Box "
                "(of any shape) or a Discrete observation; flatten others with a "
                "Gymnasium wrapper (e.g. gymnasium.wrappers.FlattenObservation)"
            )
        self.dim = self.space.flat_dim

    def encode_batch(self, obs: Any) -> np.ndarray:
        """`[N, dim]` float32 of `N` observations."""
        if self.one_hot is not None:
            idx = np.asarray(obs, dtype=np.int64).reshape(-1) - self.start
            out = np.zeros((idx.size, self.one_hot), dtype=np.float32)
            out[np.arange(idx.size), idx] = 1.0
            return out
        a = np.asarray(obs, dtype=np.float32)
        return a.reshape(a.shape[0] if a.ndim else 1, self.dim)

    def encode_one(self, obs: Any) -> np.ndarray:
        """`[dim]` float32 of one observation."""
        return self.encode_batch(np.asarray(obs)[None, ...]).reshape(self.dim)


class ActionAdapter:
    """Turns the policy's actions into what a Gymnasium environment takes,
    and declares the action space.

    Discrete: policy index `k` in `0..n` becomes `start + k`. Box: the flat
    f32 sample is clipped to the box (the unclipped sample is what the chunk
    carries and what its log-probability refers to), reshaped to the space's
    shape and cast to its dtype.
    """

    def __init__(self, gym_space: Any):
        spaces = _gym_spaces()
        self.gym_space = gym_space
        if isinstance(gym_space, spaces.Discrete):
            self.space: Space = Discrete(int(gym_space.n))
            self.start = int(gym_space.start)
            self.dtype = gym_space.dtype
            self.shape: tuple[int, ...] = ()
        elif isinstance(gym_space, spaces.Box):
            shape = tuple(gym_space.shape)
            low = np.asarray(gym_space.low, dtype=np.float64).astype(np.float32).reshape(-1)
            high = np.asarray(gym_space.high, dtype=np.float64).astype(np.float32).reshape(-1)
            self.space = Box(low, high, shape or (1,))
            self.start = 0
            self.dtype = gym_space.dtype
            self.shape = shape
        else:
            raise SpaceError(
                f"action space {gym_space} is not supported: Flotilla takes a Discrete or a Box action space"
            )

    def clip(self, actions: np.ndarray) -> np.ndarray:
        """Box actions `[..., act_dim]` clipped to the bounds (float32)."""
        assert isinstance(self.space, Box)
        return np.clip(actions, self.space.low, self.space.high)

    def to_env_batch(self, actions: np.ndarray) -> np.ndarray:
        """Actions of `N` environments, as a vector environment takes them."""
        if isinstance(self.space, Discrete):
            return (np.asarray(actions, dtype=np.int64) + self.start).astype(self.dtype, copy=False)
        n = actions.shape[0]
        return self.clip(actions).reshape((n, *self.shape)).astype(self.dtype, copy=False)

    def to_env_one(self, action: np.ndarray | int) -> Any:
        """One action, as a single environment takes it."""
        if isinstance(self.space, Discrete):
            return int(action) + self.start
        return self.clip(np.asarray(action)).reshape(self.shape).astype(self.dtype, copy=False)
