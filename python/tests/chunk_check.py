"""A Python reading of the learner's chunk validation (`validate` in
`common/src/chunk.rs`): decodes a wire chunk and checks every shape and
cross-field invariant, so packing is tested without a learner too. The tests
against the real learner are the authority; this gives readable failures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flotilla.spaces import Box, Discrete, Space
from flotilla.v1 import flotilla_pb2 as pb


@dataclass
class Decoded:
    t: int
    n: int
    obs: np.ndarray  # [T+1, N, D] float32, or uint8 for a uint8 run
    actions: np.ndarray  # [T, N] int64 or [T, N, A] float32
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    logp: np.ndarray
    value: np.ndarray | None
    final_index: list[int]
    final_obs: np.ndarray  # [K, D]
    returns: list[float]
    lengths: list[int]


def decode(chunk, obs_dim: int, action_space: Space, behavior_values: bool, obs_dtype: str = "float32") -> Decoded:
    """Decodes `chunk` of a run whose observations are `obs_dim` values of
    `obs_dtype` ("float32" or "uint8"), as the learner does."""
    t, n, d = chunk.t, chunk.n, obs_dim
    assert t >= 1 and n >= 1
    wire = {"float32": (pb.DTYPE_FLOAT32, "<f4"), "uint8": (pb.DTYPE_UINT8, "u1")}
    want_dtype, obs_type = wire[obs_dtype]
    assert chunk.obs_dtype == want_dtype, f"obs_dtype: {chunk.obs_dtype}, expected {want_dtype} ({obs_dtype})"

    def arr(field: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        data = getattr(chunk, field)
        want = int(np.prod(shape)) * np.dtype(dtype).itemsize
        assert len(data) == want, f"{field}: {len(data)} bytes, expected {want} for {dtype} {list(shape)}"
        return np.frombuffer(data, dtype=dtype).reshape(shape)

    obs = arr("obs", obs_type, (t + 1, n, d))
    if isinstance(action_space, Discrete):
        actions = arr("actions", "<i8", (t, n))
        assert ((actions >= 0) & (actions < action_space.n)).all(), "discrete action out of range"
    else:
        actions = arr("actions", "<f4", (t, n, action_space.flat_dim))
    rewards = arr("rewards", "<f4", (t, n))
    terminated = arr("terminated", "u1", (t, n))
    truncated = arr("truncated", "u1", (t, n))
    assert set(np.unique(terminated)) <= {0, 1} and set(np.unique(truncated)) <= {0, 1}
    logp = arr("behavior_logp", "<f4", (t, n))
    value = arr("behavior_value", "<f4", (t, n)) if behavior_values else None
    if not behavior_values:
        assert chunk.behavior_value == b""
    index = list(chunk.final_obs_index)
    assert index == sorted(set(index)), "final_obs_index must be strictly increasing"
    done = np.flatnonzero((terminated | truncated).reshape(-1))
    assert index == done.tolist(), f"final_obs_index {index} is not where episodes ended {done.tolist()}"
    final_obs = arr("final_obs", obs_type, (len(index), d))
    assert len(chunk.episode_returns) == len(index) == len(chunk.episode_lengths)
    assert all(length >= 1 for length in chunk.episode_lengths)
    for a in (obs, rewards, logp, final_obs) + ((value,) if value is not None else ()):
        assert np.isfinite(a).all()
    if isinstance(action_space, Discrete):
        assert (logp <= 1e-3).all()
    if isinstance(action_space, Box) and isinstance(actions, np.ndarray):
        assert np.isfinite(actions).all()
    return Decoded(
        t, n, obs, actions, rewards, terminated, truncated, logp, value, index, final_obs,
        list(chunk.episode_returns), list(chunk.episode_lengths),
    )  # fmt: skip
