"""Packing trajectory chunks: T steps of N environments in one message.

The layout is the wire contract's (`proto/flotilla/v1/flotilla.proto`,
message `Chunk`); every array is packed little-endian, row-major:

    obs            O   [T+1, N, obs_dim]  (row T: the observation after the last step)
    actions        i64 [T, N] (Discrete) or f32 [T, N, act_dim] (Box, unclipped)
    rewards        f32 [T, N]
    terminated     u8  [T, N]
    truncated      u8  [T, N]
    behavior_logp  f32 [T, N]
    behavior_value f32 [T, N]  (only when the run asks for it)
    final_obs      O   [K, obs_dim] with final_obs_index[k] = t * N + n: the true
                   last observation of each episode that ended inside the chunk
                   (obs[t+1, n] already holds the next episode's first one)
    episode_returns / episode_lengths: one per episode that ended in the chunk
    obs_dtype      O, the run's observation dtype: f32, or u8 (one byte per
                   value, integers 0..=255) for a uint8 observation Box

Pixels take a quarter of their f32 size: a chunk of 32 steps of 8 Atari frame
stacks ([4, 84, 84] u8) encodes to at most 7.7 MB, one episode ending per
environment included (31 MB in f32).

`ChunkBuilder` mirrors the Rust actor's (`common/src/chunk.rs`): buffers are
allocated once, one step is recorded at a time, and `finish` serializes the
chunk and starts the next one from the last observation row, so consecutive
chunks tile the trajectory.
"""

from __future__ import annotations

import numpy as np

from .spaces import DTYPES, FLOAT32, NUMPY_DTYPES, UINT8, Discrete, Space, as_uint8
from .v1 import flotilla_pb2 as pb

_F32 = np.dtype("<f4")
_I64 = np.dtype("<i8")
_OBS_DTYPE_PROTO = {FLOAT32: pb.DTYPE_FLOAT32, UINT8: pb.DTYPE_UINT8}


class ChunkBuilder:
    """Packs steps of `num_envs` environments into chunks of `chunk_len` steps.

    `obs_dtype` is the run's observation dtype (`flotilla.spaces.dtype_of`
    of its observation space): with "uint8" the observations are kept and
    sent as bytes; uint8 arrays are copied as they are, any other must hold
    integers in 0..=255 only (`ValueError` otherwise)."""

    def __init__(
        self, chunk_len: int, num_envs: int, obs_dim: int, action_space: Space, *, obs_dtype: str = FLOAT32
    ):
        if chunk_len < 1 or num_envs < 1:
            raise ValueError("a chunk needs T >= 1 and N >= 1")
        if chunk_len * num_envs >= 1 << 32:
            raise ValueError("T * N must fit in u32")
        if obs_dtype not in DTYPES:
            raise ValueError(f'obs_dtype must be "float32" or "uint8", got {obs_dtype!r}')
        t, n = chunk_len, num_envs
        self.t, self.n, self.obs_dim = t, n, obs_dim
        self.obs_dtype = obs_dtype
        self.action_space = action_space
        self.discrete = isinstance(action_space, Discrete)
        self.act_dim = action_space.flat_dim
        self._obs = np.zeros((t + 1, n, obs_dim), NUMPY_DTYPES[obs_dtype])
        if self.discrete:
            self._actions = np.zeros((t, n), _I64)
        else:
            self._actions = np.zeros((t, n, self.act_dim), _F32)
        self._rewards = np.zeros((t, n), _F32)
        self._terminated = np.zeros((t, n), np.uint8)
        self._truncated = np.zeros((t, n), np.uint8)
        self._logp = np.zeros((t, n), _F32)
        self._values = np.zeros((t, n), _F32)
        self._with_values: bool | None = None
        self._final_index: list[int] = []
        self._final_obs: list[np.ndarray] = []
        self._returns: list[float] = []
        self._lengths: list[int] = []
        self.steps = 0
        self._started = False

    def begin(self, first_obs: np.ndarray) -> None:
        """Starts a chunk from the observations `[N, obs_dim]` the first
        actions are chosen from (after the environments' reset), discarding
        any steps recorded since the last `finish`."""
        self._obs[0] = self._rows(first_obs, self.n)
        self._clear()
        self._started = True

    def is_full(self) -> bool:
        return self.steps == self.t

    def push(
        self,
        actions: np.ndarray,
        logp: np.ndarray,
        value: np.ndarray | None,
        rewards: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        next_obs: np.ndarray,
        final_envs: list[int] | np.ndarray = (),
        final_obs: np.ndarray | None = None,
        episodes: list[tuple[float, int]] = (),
    ) -> None:
        """Records one step of every environment.

        `actions` are what the policy chose (`[N]` indices, or `[N, act_dim]`
        unclipped samples), `logp` and `value` (or None) their `[N]`
        log-probabilities and values; `rewards`, `terminated` and `truncated`
        are the `[N]` outcomes; `next_obs` `[N, obs_dim]` the observations
        after the step (a new episode's first one where an episode ended).
        `final_envs` lists, in increasing order, the environments whose
        episode ended in this step, `final_obs` `[K, obs_dim]` their true last
        observations, and `episodes` the `(return, length)` of each.
        """
        if not self._started:
            raise RuntimeError("begin() must be called before the first step")
        if self.steps >= self.t:
            raise RuntimeError("the chunk is full: call finish()")
        with_values = value is not None
        if self._with_values is None:
            self._with_values = with_values
        elif self._with_values != with_values:
            raise ValueError("behavior values must be given on every step of a chunk or on none")
        s, n = self.steps, self.n
        if self.discrete:
            self._actions[s] = np.asarray(actions).reshape(n)
        else:
            self._actions[s] = np.asarray(actions, dtype=np.float32).reshape(n, self.act_dim)
        self._logp[s] = np.asarray(logp).reshape(n)
        if with_values:
            self._values[s] = np.asarray(value).reshape(n)
        self._rewards[s] = np.asarray(rewards).reshape(n)
        self._terminated[s] = np.asarray(terminated, dtype=bool).reshape(n)
        self._truncated[s] = np.asarray(truncated, dtype=bool).reshape(n)
        self._obs[s + 1] = self._rows(next_obs, n)
        k = len(final_envs)
        if k:
            base = s * n
            self._final_index.extend(base + int(e) for e in final_envs)
            self._final_obs.append(np.array(self._rows(final_obs, k)))  # a copy, as obs rows are
        for ret, length in episodes:
            self._returns.append(float(ret))
            self._lengths.append(int(length))
        self.steps += 1

    def finish(self, env_id: str, policy_version: int) -> pb.Chunk:
        """Serializes the steps recorded so far (1..=T) and begins the next
        chunk with the current observations. The run id, actor id and
        sequence number are stamped by the connection that sends it."""
        if self.steps == 0:
            raise RuntimeError("finish() needs at least one recorded step")
        s = self.steps
        final = np.concatenate(self._final_obs).tobytes() if self._final_obs else b""
        chunk = pb.Chunk(
            policy_version=policy_version,
            t=s,
            n=self.n,
            obs=self._obs[: s + 1].tobytes(),
            actions=self._actions[:s].tobytes(),
            rewards=self._rewards[:s].tobytes(),
            terminated=self._terminated[:s].tobytes(),
            truncated=self._truncated[:s].tobytes(),
            behavior_logp=self._logp[:s].tobytes(),
            behavior_value=self._values[:s].tobytes() if self._with_values else b"",
            final_obs_index=self._final_index,
            final_obs=final,
            episode_returns=self._returns,
            episode_lengths=self._lengths,
            env_id=env_id,
            obs_dtype=_OBS_DTYPE_PROTO[self.obs_dtype],
        )
        self._obs[0] = self._obs[s]
        self._clear()
        return chunk

    def _rows(self, obs: np.ndarray, rows: int) -> np.ndarray:
        """`rows` observations `[rows, obs_dim]` in the chunk's dtype (not
        necessarily a copy)."""
        if self.obs_dtype == UINT8:
            a = as_uint8(obs)
        else:
            a = np.asarray(obs, dtype=_F32)
        return a.reshape(rows, self.obs_dim)

    def _clear(self) -> None:
        self.steps = 0
        self._with_values = None
        self._final_index = []
        self._final_obs = []
        self._returns = []
        self._lengths = []


def _varint_len(v: int) -> int:
    return max(1, (max(v, 1).bit_length() + 6) // 7)


def max_encoded_len(
    chunk_len: int,
    num_envs: int,
    obs_dim: int,
    action_space: Space,
    behavior_values: bool,
    episodes: int,
    run_id_len: int,
    env_id_len: int,
    obs_dtype: str = FLOAT32,
) -> int:
    """The largest encoded size of a chunk of this shape, whatever its values
    (every varint counted at its widest), with observations of `obs_dtype`
    (4 bytes a value for "float32", 1 for "uint8"): what an actor compares
    with the learner's `max_chunk_bytes` before acting. Mirrors
    `max_encoded_len` in `common/src/chunk.rs`."""

    def field(tag: int, length: int) -> int:
        return 0 if length == 0 else tag + _varint_len(length) + length

    t, n, d, k = chunk_len, num_envs, obs_dim, episodes
    tn = t * n
    if obs_dtype not in DTYPES:
        raise ValueError(f'obs_dtype must be "float32" or "uint8", got {obs_dtype!r}')
    obs_bytes = NUMPY_DTYPES[obs_dtype].itemsize
    action_bytes = 8 if isinstance(action_space, Discrete) else 4 * action_space.flat_dim
    return (
        field(1, run_id_len)
        + (1 + 5)  # actor_id
        + 2 * (1 + 10)  # sequence, policy_version
        + 2 * (1 + 5)  # t, n
        + field(1, (t + 1) * n * d * obs_bytes)
        + field(1, tn * action_bytes)
        + field(1, tn * 4)  # rewards
        + 2 * field(1, tn)  # terminated, truncated
        + field(1, tn * 4)  # behavior_logp
        + field(1, tn * 4 if behavior_values else 0)
        + field(1, k * 5)  # final_obs_index
        + field(1, k * d * obs_bytes)
        + field(2, k * 4)  # episode_returns
        + field(2, k * 5)  # episode_lengths
        + field(2, env_id_len)
        + (0 if obs_dtype == FLOAT32 else 2 + 1)  # obs_dtype (field 19: a 2-byte tag)
    )
