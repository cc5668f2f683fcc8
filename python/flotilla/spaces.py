"""Observation and action spaces: Flotilla's two kinds, and the mapping from
Gymnasium's spaces to them.

Flotilla knows `Discrete(n)` (integers `0..n`) and `Box(low, high, shape,
dtype)` (values flattened row-major on the wire, as float32, or as one byte
each for a `uint8` Box), as `common/src/space.rs` does. An actor that brings
its own environment declares both spaces at `Hello`:

* observations are always a `Box`: a Gymnasium `Box` of dtype uint8 (pixels:
  integers 0..=255, Atari frames among them) is declared as a `uint8` Box and
  sent flattened as bytes; a `Box` of any other dtype is sent flattened as
  float32, and a `Discrete(n)` observation is sent one-hot, as a float32
  `Box` of `n` values in `[0, 1]`;
* actions are a `Discrete(n)` (a Gymnasium `Discrete` with any `start`; the
  policy picks `0..n` and the environment receives `start + k`) or a `Box`
  of any shape (the policy samples flat f32 vectors; the environment receives
  them reshaped, cast to the space's dtype and clipped to the space's own
  bounds); action Boxes are always float32.

`ObservationAdapter` and `ActionAdapter` hold these conversions; the actor and
`flotilla.load_policy` share them.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .v1 import flotilla_pb2 as pb


class SpaceError(ValueError):
    """A space Flotilla cannot represent, or a malformed one."""


#: Element types of a `Box` on the wire (`Dtype` of the contract), by name.
FLOAT32 = "float32"
UINT8 = "uint8"
DTYPES = (FLOAT32, UINT8)
_DTYPE_TO_PROTO = {FLOAT32: pb.DTYPE_FLOAT32, UINT8: pb.DTYPE_UINT8}
_DTYPE_FROM_PROTO = {v: k for k, v in _DTYPE_TO_PROTO.items()}
#: The numpy dtype of each (little-endian, as packed in chunks).
NUMPY_DTYPES = {FLOAT32: np.dtype("<f4"), UINT8: np.dtype(np.uint8)}


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
    float32 arrays of `prod(shape)` values), whose values travel as `dtype`:
    "float32" (the default), or "uint8" for observations that are integers
    in 0..=255 (pixels), one byte each. Equality compares the dtype and the
    bounds' f32 bit patterns, as the learner does (`space_difference`): -0.0
    and 0.0 differ, a NaN equals a NaN of the same bits."""

    low: np.ndarray
    high: np.ndarray
    shape: tuple[int, ...]
    dtype: str = FLOAT32

    def __post_init__(self) -> None:
        dtype = self.dtype
        if not isinstance(dtype, str):  # np.uint8, np.dtype("float32"), ...
            try:
                dtype = np.dtype(dtype).name
            except TypeError:
                pass
        if dtype not in DTYPES:
            raise SpaceError(f'a Box\'s dtype is "float32" or "uint8", got {self.dtype!r}')
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
        object.__setattr__(self, "dtype", dtype)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Box) and space_difference(self, other) is None

    def __hash__(self) -> int:
        return hash(("Box", self.shape, self.dtype, self.low.tobytes(), self.high.tobytes()))

    @property
    def flat_dim(self) -> int:
        """Values in one element: the product of the shape."""
        return math.prod(self.shape)

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype values travel as: `<f4` or `uint8`."""
        return NUMPY_DTYPES[self.dtype]

    def __repr__(self) -> str:
        # The learner's summary adds the dtype only when it is not f32.
        if self.dtype == FLOAT32:
            return f"Box(shape={list(self.shape)})"
        return f"Box(shape={list(self.shape)}, {self.dtype})"


Space = Discrete | Box


def dtype_of(space: Space) -> str:
    """The wire type of a space's elements: a `Box`'s dtype; "float32" for
    `Discrete` (an index as an action, one-hot as an observation). A chunk's
    `obs_dtype` is its run's observation space's."""
    return space.dtype if isinstance(space, Box) else FLOAT32


def as_uint8(values: Any, what: str = "observation") -> np.ndarray:
    """`values` as a uint8 array of the same shape: the array itself when it
    is uint8 already (no copy, no float round trip), else checked to hold
    integers in 0..=255 only (`ValueError` naming the first other value: an
    environment that declared a uint8 space and broke it)."""
    a = np.asarray(values)
    if a.dtype == np.uint8:
        return a
    if a.dtype.kind == "b":
        return a.astype(np.uint8)
    if a.dtype.kind in "iu":
        ok = (a >= 0) & (a <= 255)
    else:
        f = a.astype(np.float64)
        ok = (f >= 0) & (f <= 255) & (np.floor(f) == f)  # NaN: False
    if not ok.all():
        i = int(np.flatnonzero(~ok.reshape(-1))[0])
        x = a.reshape(-1)[i]
        raise ValueError(
            f"{what} value {x} (at flat index {i}) is not a uint8 value, an integer in 0..=255, "
            "but the observation space is uint8"
        )
    return a.astype(np.uint8)


def action_outputs(space: Space) -> int:
    """Outputs of the policy head: logits for `Discrete`, means for `Box`."""
    return space.n if isinstance(space, Discrete) else space.flat_dim


def _f32_text(x: np.floating) -> str:
    """An f32 as Rust's `Display` writes it: the shortest text that reads
    back to the same f32, never in exponent form (`-1`, `0.41887903`, `inf`,
    `NaN`)."""
    if np.isnan(x):
        return "NaN"
    return np.format_float_positional(np.float32(x), unique=True, trim="-")


def space_difference(run: Space, got: Space) -> str | None:
    """The first difference between the run's space and a declared one, in
    the words of the learner (`space_difference` in `common/src/space.rs`),
    or None when they are equal. Bounds are compared as the learner compares
    them: by the bit patterns of their f32 values."""
    if isinstance(run, Discrete) and isinstance(got, Discrete):
        return None if run.n == got.n else f"Discrete({run.n}), the actor declared Discrete({got.n})"
    if isinstance(run, Discrete):
        return f"Discrete({run.n}), the actor declared a Box of shape {list(got.shape)}"
    if isinstance(got, Discrete):
        return f"a Box of shape {list(run.shape)}, the actor declared Discrete({got.n})"
    if run.shape != got.shape:
        return f"a Box of shape {list(run.shape)}, the actor declared shape {list(got.shape)}"
    if run.dtype != got.dtype:
        return f"a Box of {run.dtype}, the actor declared {got.dtype}"
    for name, ours, theirs in (("low", run.low, got.low), ("high", run.high, got.high)):
        differs = np.flatnonzero(ours.view(np.uint32) != theirs.view(np.uint32))
        if differs.size:
            i = int(differs[0])
            return f"{name}[{i}] = {_f32_text(ours[i])}, the actor declared {_f32_text(theirs[i])}"
    return None


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
            dtype=_DTYPE_TO_PROTO[space.dtype],
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
        dtype = _DTYPE_FROM_PROTO.get(b.dtype)
        if dtype is None:
            raise SpaceError(
                f"{field}: field `box.dtype`: unknown value {b.dtype} (expected DTYPE_FLOAT32 or DTYPE_UINT8)"
            )
        try:
            return Box(
                np.array(b.low, dtype=np.float32),
                np.array(b.high, dtype=np.float32),
                tuple(b.shape),
                dtype,
            )
        except SpaceError as e:
            raise SpaceError(f"{field}: {e}") from None
    raise SpaceError(f"{field}: space has no kind")


def from_json(value: Any, field: str = "space") -> Space:
    """A space from its JSON form in a checkpoint's `spaces` metadata, serde's
    externally tagged enum: `{"Discrete": {"n": 2}}` or
    `{"Box": {"low": [...], "high": [...], "shape": [4]}}`. A Box of pixels
    adds `"dtype": "uint8"` (the learner writes the key only then; without
    it, as in checkpoints written before dtypes existed, a Box is float32);
    any other dtype than "float32" or "uint8" is a `SpaceError`.

    JSON has no infinity, so the learner writes a bound that is not finite as
    a string: `"inf"`, `"-inf"` or `"nan"`. A bound is read exactly as the
    learner reads it back (`common/src/space.rs`): a JSON number (as f32), or
    one of the words `inf`, `infinity`, `-inf`, `-infinity`, `nan`, in any
    case and with any leading `+`. Anything else, `null` included (the learner
    never writes it and refuses it), is a `SpaceError` naming the bound.
    """
    if not isinstance(value, dict) or len(value) != 1:
        raise SpaceError(f'{field}: expected {{"Discrete": ...}} or {{"Box": ...}}, got {value!r}')
    ((kind, body),) = value.items()
    if not isinstance(body, dict):
        raise SpaceError(f"{field}: {kind}: expected an object, got {body!r}")
    if kind == "Discrete":
        n = body.get("n")
        if not _is_json_int(n) or n < 1:
            raise SpaceError(f"{field}: Discrete n must be an integer of at least 1, got {n!r}")
        return Discrete(n)
    if kind == "Box":
        for key in ("low", "high", "shape"):
            if not isinstance(body.get(key), list):
                raise SpaceError(f"{field}: Box {key} must be a list, got {body.get(key)!r}")
        shape = body["shape"]
        if not all(_is_json_int(d) and d >= 0 for d in shape):
            raise SpaceError(f"{field}: Box shape must list non-negative integers, got {shape!r}")
        low = np.array([_json_bound(x, f"{field}: Box low[{i}]") for i, x in enumerate(body["low"])], np.float32)
        high = np.array([_json_bound(x, f"{field}: Box high[{i}]") for i, x in enumerate(body["high"])], np.float32)
        dtype = body.get("dtype", FLOAT32)
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise SpaceError(f'{field}: Box dtype must be "float32" or "uint8", got {json.dumps(dtype)}')
        try:
            return Box(low, high, tuple(shape), dtype)
        except SpaceError as e:
            raise SpaceError(f"{field}: {e}") from None
    raise SpaceError(f"{field}: unknown space kind {kind!r}")


def _is_json_int(x: Any) -> bool:
    # JSON's true and false are Python ints too; serde reads them as no number.
    return isinstance(x, int) and not isinstance(x, bool)


#: The words a bound may be (after lower-casing and dropping leading `+`).
_BOUND_WORDS = {
    "inf": np.inf,
    "infinity": np.inf,
    "-inf": -np.inf,
    "-infinity": -np.inf,
    "nan": np.nan,
}


def _json_bound(x: Any, where: str) -> float:
    """One Box bound of a checkpoint's JSON (see `from_json`), as an f32 value."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        try:
            v = float(x)
        except OverflowError:  # an integer beyond f64: serde reads it as ±inf
            v = math.inf if x > 0 else -math.inf
        with np.errstate(over="ignore"):  # beyond f32: ±inf, as Rust's `as f32`
            return float(np.float32(v))
    if isinstance(x, str):
        word = x.lower().lstrip("+")
        if word in _BOUND_WORDS:
            return float(_BOUND_WORDS[word])
    raise SpaceError(f'{where}: {json.dumps(x)}: expected a number, "inf" or "-inf"')


# --- Gymnasium --------------------------------------------------------------


def _gym_spaces():
    import gymnasium.spaces as spaces

    return spaces


class ObservationAdapter:
    """Turns a Gymnasium environment's observations into Flotilla's flat
    vectors, and declares the matching `Box`.

    A Gymnasium `Box` of dtype uint8 (pixels) is declared as a `uint8` Box
    and its observations stay uint8 (they travel as bytes; its bounds must
    be integers in 0..=255, which a uint8 Gymnasium `Box` has, else
    `SpaceError`); every other `Box` is declared float32 and its observations
    are cast to float32; a `Discrete(n)` is one-hot float32.

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
            dtype = FLOAT32
            if np.dtype(gym_space.dtype) == np.uint8:
                dtype = UINT8
                _check_uint8_bounds(gym_space, low, high)
            self.space = Box(low, high, shape, dtype)
        else:
            raise SpaceError(
                f"observation space {gym_space} is not supported: Flotilla takes a Box "
                "(of any shape) or a Discrete observation; flatten others with a "
                "Gymnasium wrapper (e.g. gymnasium.wrappers.FlattenObservation)"
            )
        self.dim = self.space.flat_dim
        #: The dtype of the encoded observations: float32, or uint8 for a
        #: uint8 Box (`self.space.dtype`).
        self.dtype = self.space.numpy_dtype

    def encode_batch(self, obs: Any) -> np.ndarray:
        """`[N, dim]` of `N` observations: float32, or uint8 for a uint8 Box
        (`ValueError` on a value that is not an integer in 0..=255)."""
        if self.one_hot is not None:
            idx = np.asarray(obs, dtype=np.int64).reshape(-1) - self.start
            out = np.zeros((idx.size, self.one_hot), dtype=np.float32)
            out[np.arange(idx.size), idx] = 1.0
            return out
        if self.space.dtype == UINT8:
            a = as_uint8(obs)
        else:
            a = np.asarray(obs, dtype=np.float32)
        return a.reshape(a.shape[0] if a.ndim else 1, self.dim)

    def encode_one(self, obs: Any) -> np.ndarray:
        """`[dim]` of one observation (float32, or uint8 for a uint8 Box)."""
        return self.encode_batch(np.asarray(obs)[None, ...]).reshape(self.dim)


def _check_uint8_bounds(gym_space: Any, low: np.ndarray, high: np.ndarray) -> None:
    """`SpaceError` unless every bound of a uint8 observation space is an
    integer in 0..=255, as the learner requires of a uint8 Box (a float32
    declaration instead would quietly cost four times the bytes)."""
    ok = lambda x: np.isfinite(x) & (x >= 0) & (x <= 255) & (np.floor(x) == x)  # noqa: E731
    with np.errstate(invalid="ignore"):
        bad = np.flatnonzero(~(ok(low) & ok(high)))
    if bad.size:
        i = int(bad[0])
        raise SpaceError(
            f"observation space {gym_space} is uint8, sent as bytes, but its bound {i} has low "
            f"{_f32_text(low[i])} and high {_f32_text(high[i])}; a uint8 Box has integer bounds in "
            "0..=255 (give the space such bounds, or make it float32 to send floats)"
        )


class ActionAdapter:
    """Turns the policy's actions into what a Gymnasium environment takes,
    and declares the action space.

    Discrete: policy index `k` in `0..n` becomes `start + k`. Box: the flat
    f32 sample (what the chunk carries, unclipped, and what its
    log-probability refers to) is reshaped to the space's shape, cast to its
    dtype (rounded to the nearest integer for an integer dtype) and clipped
    to the space's own bounds in that dtype, so that the environment's
    `action_space.contains` holds: the declared bounds are rounded to f32,
    and an f32 sample clipped to those can lie outside a float64 box (a bound
    of -0.1 is -0.100000001 in f32).
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
            self.dtype = np.dtype(gym_space.dtype)
            self.shape = shape
            # The environment's own bounds, in its dtype, in its shape.
            self._low = np.asarray(gym_space.low, dtype=self.dtype).reshape(shape)
            self._high = np.asarray(gym_space.high, dtype=self.dtype).reshape(shape)
        else:
            raise SpaceError(
                f"action space {gym_space} is not supported: Flotilla takes a Discrete or a Box action space"
            )

    def box_to_env(self, actions: np.ndarray) -> np.ndarray:
        """Box actions `[N, act_dim]` (flat samples) as the environment takes
        them: `[N, *shape]` of the space's dtype, within its bounds."""
        a = np.asarray(actions).reshape((-1, *self.shape))
        if self.dtype.kind in "biu":  # bool and integer boxes
            # Round, then clip in float64 before the cast: casting a float
            # beyond the integer type's range is undefined.
            x = np.rint(a.astype(np.float64))
            x = np.clip(x, self._low.astype(np.float64), self._high.astype(np.float64))
            if self.dtype.kind != "b":
                info = np.iinfo(self.dtype)
                top = float(info.max)
                if top > info.max:  # int64/uint64: the largest float64 below the type's max
                    top = float(np.nextafter(top, 0.0))
                x = np.clip(x, float(info.min), top)
            with np.errstate(invalid="ignore"):  # NaN (a diverged policy) casts to some integer
                out = x.astype(self.dtype)
            if self.dtype.kind == "b":
                return out
        else:
            with np.errstate(over="ignore"):  # beyond a float16 box: inf, clipped next
                out = a.astype(self.dtype)
        return np.clip(out, self._low, self._high)

    def to_env_batch(self, actions: np.ndarray) -> np.ndarray:
        """Actions of `N` environments, as a vector environment takes them."""
        if isinstance(self.space, Discrete):
            return (np.asarray(actions, dtype=np.int64) + self.start).astype(self.dtype, copy=False)
        return self.box_to_env(actions)

    def to_env_one(self, action: np.ndarray | int) -> Any:
        """One action, as a single environment takes it."""
        if isinstance(self.space, Discrete):
            return int(action) + self.start
        return self.box_to_env(np.asarray(action).reshape(1, -1)).reshape(self.shape)
