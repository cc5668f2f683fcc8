"""Chunk packing: the exact wire layout, the size bound, and the vector
environment semantics behind it (autoreset in the same step, true final
observations, episode statistics, seeds)."""

import gymnasium
import numpy as np
import pytest
from chunk_check import decode
from flotilla_test_envs import CounterEnv

from flotilla.chunk import ChunkBuilder, max_encoded_len
from flotilla.envs import EnvFactory, VectorRunner, probe
from flotilla.spaces import Box, Discrete
from flotilla.v1 import flotilla_pb2 as pb


def test_discrete_chunk_layout_is_exact():
    b = ChunkBuilder(chunk_len=3, num_envs=2, obs_dim=2, action_space=Discrete(3))
    obs0 = np.array([[0, 1], [2, 3]], np.float32)
    b.begin(obs0)
    steps = [
        # actions, next obs, rewards, terminated, truncated, final envs, final obs, episodes
        ([0, 2], [[4, 5], [6, 7]], [1, 2], [0, 0], [0, 0], [], None, []),
        ([1, 1], [[8, 9], [10, 11]], [3, 4], [1, 0], [0, 1], [0, 1], [[40, 41], [42, 43]], [(4.0, 2), (6.0, 2)]),
        ([2, 0], [[12, 13], [14, 15]], [5, 6], [0, 1], [0, 0], [1], [[50, 51]], [(6.0, 1)]),
    ]
    for t, (a, nxt, r, te, tr, fe, fo, eps) in enumerate(steps):
        b.push(
            np.array(a), np.full(2, -0.5 - t, np.float32), None, np.array(r, np.float32),
            np.array(te, bool), np.array(tr, bool), np.array(nxt, np.float32),
            fe, None if fo is None else np.array(fo, np.float32), eps,
        )  # fmt: skip
    assert b.is_full()
    c = b.finish("Grid-v0", policy_version=7)
    assert (c.t, c.n, c.policy_version, c.env_id) == (3, 2, 7, "Grid-v0")
    d = decode(c, 2, Discrete(3), behavior_values=False)
    np.testing.assert_array_equal(d.obs.reshape(-1), np.arange(16))
    assert d.actions.tolist() == [[0, 2], [1, 1], [2, 0]]
    assert d.rewards.tolist() == [[1, 2], [3, 4], [5, 6]]
    assert d.terminated.tolist() == [[0, 0], [1, 0], [0, 1]]
    assert d.truncated.tolist() == [[0, 0], [0, 1], [0, 0]]
    np.testing.assert_allclose(d.logp, [[-0.5, -0.5], [-1.5, -1.5], [-2.5, -2.5]])
    # t * N + n of every ended episode, with its true last observation.
    assert d.final_index == [2, 3, 5]
    assert d.final_obs.tolist() == [[40, 41], [42, 43], [50, 51]]
    assert d.returns == [4.0, 6.0, 6.0] and d.lengths == [2, 2, 1]
    assert c.behavior_value == b""
    # Packed little-endian bytes, exactly sized.
    assert len(c.actions) == 3 * 2 * 8 and c.actions[:8] == (0).to_bytes(8, "little")
    assert len(c.terminated) == 6 and c.terminated[2:3] == b"\x01"

    # The next chunk starts from the last observation row: chunks tile.
    b.push(np.array([0, 0]), np.zeros(2, np.float32), np.array([0.5, 1.5], np.float32),
           np.zeros(2, np.float32), np.zeros(2, bool), np.zeros(2, bool),
           np.array([[16, 17], [18, 19]], np.float32))  # fmt: skip
    c2 = b.finish("Grid-v0", policy_version=8)
    d2 = decode(c2, 2, Discrete(3), behavior_values=True)
    assert c2.t == 1  # a partial chunk
    np.testing.assert_array_equal(d2.obs.reshape(-1), np.arange(12, 20))
    assert d2.value.tolist() == [[0.5, 1.5]]
    assert d2.final_index == [] and c2.final_obs == b""


def test_box_actions_are_f32_rows_and_values_all_or_nothing():
    b = ChunkBuilder(2, 1, 1, Box(-np.ones(3), np.ones(3), (3,)))
    b.begin(np.zeros((1, 1)))
    a = np.array([[5.0, -5.0, 0.25]], np.float32)  # unclipped samples
    args = (np.zeros(1, np.float32), np.zeros(1, bool), np.zeros(1, bool), np.ones((1, 1)))
    b.push(a, np.array([-3.0], np.float32), np.array([0.1], np.float32), *args)
    with pytest.raises(ValueError, match="every step"):
        b.push(a, np.array([-3.0], np.float32), None, *args)
    b.push(a, np.array([-3.0], np.float32), np.array([0.2], np.float32), *args)
    c = b.finish("X", 1)
    d = decode(c, 1, Box(-np.ones(3), np.ones(3), (3,)), behavior_values=True)
    assert d.actions.shape == (2, 1, 3) and d.actions[1, 0].tolist() == [5.0, -5.0, 0.25]
    np.testing.assert_allclose(d.value.reshape(-1), [0.1, 0.2])


def test_builder_misuse_is_refused():
    b = ChunkBuilder(1, 1, 1, Discrete(2))
    args = (np.zeros(1), np.zeros(1), None, np.zeros(1), np.zeros(1, bool), np.zeros(1, bool), np.zeros((1, 1)))
    with pytest.raises(RuntimeError, match="begin"):
        b.push(*args)
    b.begin(np.zeros((1, 1)))
    with pytest.raises(RuntimeError, match="at least one"):
        b.finish("X", 0)
    b.push(*args)
    with pytest.raises(RuntimeError, match="full"):
        b.push(*args)
    with pytest.raises(ValueError):
        ChunkBuilder(0, 1, 1, Discrete(2))


@pytest.mark.parametrize("obs_dtype", ["float32", "uint8"])
@pytest.mark.parametrize("space", [Discrete(3), Box(-np.ones(2), np.ones(2), (2,))])
@pytest.mark.parametrize(
    "t,n,d,k,values", [(1, 1, 1, 0, False), (64, 8, 4, 8, True), (128, 16, 17, 300, False), (5, 3, 2000, 2, True)]
)
def test_max_encoded_len_is_the_widest_encoding(space, t, n, d, k, values, obs_dtype):
    zeros = lambda size: bytes(size)  # noqa: E731
    size = 1 if obs_dtype == "uint8" else 4
    widest = pb.Chunk(
        run_id="r" * 36,
        actor_id=2**32 - 1,
        sequence=2**64 - 1,
        policy_version=2**64 - 1,
        t=2**32 - 1,
        n=2**32 - 1,
        obs=zeros((t + 1) * n * d * size),
        actions=zeros(t * n * 8),  # one i64, or two f32
        rewards=zeros(t * n * 4),
        terminated=zeros(t * n),
        truncated=zeros(t * n),
        behavior_logp=zeros(t * n * 4),
        behavior_value=zeros(t * n * 4 if values else 0),
        final_obs_index=[2**32 - 1] * k,
        final_obs=zeros(k * d * size),
        episode_returns=[1.0] * k,
        episode_lengths=[2**32 - 1] * k,
        env_id="e" * 11,
        obs_dtype=pb.DTYPE_UINT8 if obs_dtype == "uint8" else pb.DTYPE_FLOAT32,
    )
    assert widest.ByteSize() == max_encoded_len(t, n, d, space, values, k, 36, 11, obs_dtype)
    if obs_dtype == "float32":  # the default
        assert widest.ByteSize() == max_encoded_len(t, n, d, space, values, k, 36, 11)


def test_uint8_chunks_carry_the_observation_bytes():
    """A pixel run's chunk: `obs` and `final_obs` are the observations'
    bytes, one per value, in the layout of f32 chunks, and `obs_dtype` says
    so."""
    rng = np.random.default_rng(3)
    t, n, dim = 3, 2, 5
    b = ChunkBuilder(t, n, dim, Discrete(2), obs_dtype="uint8")
    rows = rng.integers(0, 256, (t + 1, n, dim), dtype=np.uint8)
    rows[0, 0, :2] = [0, 255]  # the ends of the range
    finals = rng.integers(0, 256, (2, dim), dtype=np.uint8)
    b.begin(rows[0])
    for s in range(t):
        ended = [1] if s == 1 else []
        nxt = rows[s + 1].copy()
        b.push(np.zeros(n, np.int64), np.full(n, -0.7, np.float32), None, np.ones(n, np.float32),
               np.array([False, s == 1]), np.zeros(n, bool), nxt,
               ended, finals[:1] if ended else None, [(2.0, 2)] if ended else [])  # fmt: skip
        nxt[:] = 7  # the builder copied the step's observations
    c = b.finish("Pixels-v0", 1)
    assert c.obs_dtype == pb.DTYPE_UINT8
    assert c.obs == rows.tobytes() and len(c.obs) == (t + 1) * n * dim
    assert c.final_obs == finals[:1].tobytes() and list(c.final_obs_index) == [1 * n + 1]
    got = decode(c, dim, Discrete(2), behavior_values=False, obs_dtype="uint8")
    assert got.obs.dtype == np.uint8
    np.testing.assert_array_equal(got.obs, rows)
    # The next chunk starts from the last row; integral values of other
    # dtypes are taken as the bytes they are.
    b.push(np.zeros(n, np.int64), np.zeros(n, np.float32), None, np.zeros(n, np.float32),
           np.zeros(n, bool), np.zeros(n, bool), np.array([[0.0, 1, 2, 254, 255]] * n))  # fmt: skip
    c2 = b.finish("Pixels-v0", 2)
    assert c2.obs == rows[t].tobytes() + bytes([0, 1, 2, 254, 255] * n)
    assert c2.final_obs == b"" and c2.obs_dtype == pb.DTYPE_UINT8
    # A float32 builder of the same values: four times the bytes, and
    # obs_dtype left at its default (not even encoded).
    f = ChunkBuilder(1, n, dim, Discrete(2))
    f.begin(rows[0])
    f.push(np.zeros(n, np.int64), np.zeros(n, np.float32), None, np.zeros(n, np.float32),
           np.zeros(n, bool), np.zeros(n, bool), rows[1])  # fmt: skip
    cf = f.finish("Pixels-v0", 1)
    assert cf.obs_dtype == pb.DTYPE_FLOAT32 and len(cf.obs) == 4 * 2 * n * dim
    np.testing.assert_array_equal(decode(cf, dim, Discrete(2), False).obs, rows[:2].astype(np.float32))
    # The same step: 3 bytes a value more, less the 3 bytes of obs_dtype.
    assert cf.ByteSize() == c2.ByteSize() + 3 * len(c2.obs) - 3


@pytest.mark.parametrize("bad", [2.5, -1.0, 256.0, np.nan, np.inf, -1, 300])
def test_a_uint8_builder_refuses_values_that_are_not_bytes(bad):
    b = ChunkBuilder(2, 1, 3, Discrete(2), obs_dtype="uint8")
    obs = np.array([[0, bad, 255]], np.float64 if isinstance(bad, float) else np.int64)
    with pytest.raises(ValueError, match=r"\(at flat index 1\) is not a uint8 value, an integer in 0..=255"):
        b.begin(obs)
    b.begin(np.zeros((1, 3), np.uint8))
    args = (np.zeros(1, np.int64), np.zeros(1), None, np.zeros(1), np.ones(1, bool), np.zeros(1, bool))
    with pytest.raises(ValueError, match="is not a uint8 value"):
        b.push(*args, obs)
    with pytest.raises(ValueError, match="is not a uint8 value"):
        b.push(*args, np.zeros((1, 3)), [0], obs, [(0.0, 1)])
    with pytest.raises(ValueError, match='obs_dtype must be "float32" or "uint8"'):
        ChunkBuilder(1, 1, 1, Discrete(2), obs_dtype="float64")


def test_pixel_chunks_from_a_vector_environment_tile_and_hold_its_bytes():
    """PixelEnv's uint8 images through `VectorRunner` and a uint8 builder:
    every chunk decodes, its rows are the environments' observations byte
    for byte, final observations where episodes ended, and chunks tile."""
    factory = EnvFactory("Pixels-v0", "flotilla_test_envs:make_pixels", {"horizon": 5})
    info = probe(factory)
    assert info.observation.space.dtype == "uint8" and info.observation.dim == 32
    r = VectorRunner(factory, info, 3, seed=9)
    assert r.obs.dtype == np.uint8 and r.obs.shape == (3, 32)
    b = ChunkBuilder(8, 3, 32, info.action.space, obs_dtype="uint8")
    b.begin(r.obs)
    rng = np.random.default_rng(1)
    prev_last, episodes = None, 0
    for _ in range(6):
        seen = [r.obs.copy()]
        for _ in range(8):
            a = rng.integers(0, 3, 3)
            s = r.step(info.action.to_env_batch(a))
            assert s.obs.dtype == s.final_obs.dtype == np.uint8
            seen.append(s.obs.copy())
            b.push(a, np.full(3, -1.1, np.float32), None, s.rewards, s.terminated, s.truncated,
                   s.obs, s.final_envs, s.final_obs, s.episodes)  # fmt: skip
        c = b.finish("Pixels-v0", 1)
        assert len(c.obs) == 9 * 3 * 32 and len(c.final_obs) == 32 * len(c.final_obs_index)
        d = decode(c, 32, info.action.space, False, obs_dtype="uint8")
        np.testing.assert_array_equal(d.obs, np.stack(seen))
        if prev_last is not None:
            np.testing.assert_array_equal(d.obs[0], prev_last)
        prev_last = d.obs[-1]
        episodes += len(d.returns)
        for k, i in enumerate(d.final_index):
            t, n = divmod(i, 3)
            assert not np.array_equal(d.final_obs[k], d.obs[t + 1, n])
    assert episodes >= 6
    r.close()


def counter_runner(num_envs: int, seed: int) -> VectorRunner:
    factory = EnvFactory("Counter-v0", "flotilla_test_envs:make_counter")
    return VectorRunner(factory, probe(factory), num_envs, seed)


def test_autoreset_in_the_same_step_with_true_final_observations():
    r = counter_runner(2, seed=100)
    # Both envs start episode 0: [0, 0, u_i], u_i from seed 100 + i.
    assert r.obs[:, :2].tolist() == [[0, 0], [0, 0]]
    for i in range(2):
        env = CounterEnv()
        first, _ = env.reset(seed=100 + i)
        np.testing.assert_array_equal(r.obs[i], first)
    # Episode 0 lasts 2 steps (terminated), episode 1 lasts 3 (truncated).
    s = r.step(np.array([1, 0]))
    assert s.final_envs.tolist() == [] and s.obs[:, :2].tolist() == [[0, 1], [0, 1]]
    s = r.step(np.array([1, 1]))
    assert s.terminated.tolist() == [True, True] and s.truncated.tolist() == [False, False]
    assert s.final_envs.tolist() == [0, 1]
    # The true last observations of episode 0, and the first of episode 1.
    assert s.final_obs[:, :2].tolist() == [[0, 2], [0, 2]]
    assert s.obs[:, :2].tolist() == [[1, 0], [1, 0]]
    assert s.episodes == [(4.0, 2), (3.0, 2)]  # rewards 1 + action
    for _ in range(2):
        s = r.step(np.array([0, 0]))
    s = r.step(np.array([0, 0]))
    assert s.truncated.tolist() == [True, True] and s.terminated.tolist() == [False, False]
    assert s.final_obs[:, :2].tolist() == [[1, 3], [1, 3]]
    assert s.episodes == [(3.0, 3), (3.0, 3)]
    r.close()


def test_gymnasium_envs_are_reset_with_seed_plus_i():
    factory = EnvFactory("CartPole-v1")
    r = VectorRunner(factory, probe(factory), 3, seed=2**64 - 2)
    for i, seed in enumerate([2**64 - 2, 2**64 - 1, 0]):
        first, _ = gymnasium.make("CartPole-v1").reset(seed=seed)
        np.testing.assert_array_equal(r.obs[i], first)
    r.close()


def test_cartpole_chunks_pass_the_checks_and_tile():
    """A few hundred CartPole steps with random actions and short episodes
    (truncated at 7 steps): every chunk decodes, final observations are
    where episodes ended, and consecutive chunks tile."""
    factory = EnvFactory("CartPole-v1", kwargs={"max_episode_steps": 7})
    info = probe(factory)
    r = VectorRunner(factory, info, 3, seed=5)
    b = ChunkBuilder(8, 3, 4, info.action.space)
    b.begin(r.obs)
    rng = np.random.default_rng(0)
    prev_last = None
    episodes = 0
    for _ in range(10):
        for _ in range(8):
            a = rng.integers(0, 2, 3)
            s = r.step(info.action.to_env_batch(a))
            b.push(a, np.full(3, -0.69, np.float32), None, s.rewards, s.terminated, s.truncated,
                   s.obs, s.final_envs, s.final_obs, s.episodes)  # fmt: skip
        d = decode(b.finish("CartPole-v1", 1), 4, info.action.space, False)
        if prev_last is not None:
            np.testing.assert_array_equal(d.obs[0], prev_last)
        prev_last = d.obs[-1]
        episodes += len(d.returns)
        # A final observation is not the next episode's first one.
        for k, i in enumerate(d.final_index):
            t, n = divmod(i, 3)
            assert not np.array_equal(d.final_obs[k], d.obs[t + 1, n])
        assert all(1 <= length <= 7 for length in d.lengths)
        assert d.returns == [float(length) for length in d.lengths]  # reward 1 per step
    assert episodes >= 30
    r.close()
