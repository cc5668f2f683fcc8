"""`flotilla-actor --atari`: Atari games of ale-py with the standard DQN/PPO
preprocessing (`flotilla.atari.make_atari_env`), on the real Arcade Learning
Environment: frame stacks of (4, 84, 84) uint8, declared as a uint8 Box and
packed into chunks as bytes; episodic life that ends the training episode
without resetting the game, FIRE at reset, clipped rewards with the game's
score reported, reproducible no-op resets; the actor's episode statistics
over lives; and a short run of the actor against the real learner with the
Nature CNN, whose chunks of bytes it accepts.

They need ale-py and OpenCV (`pip install "./python[atari]"`, part of the
`test` extra): without them they are skipped as stage "atari" (a failure
under FLOTILLA_ALLOW_SKIP unless it lists "atari", see harness.skip)."""

from __future__ import annotations

import numpy as np
import pytest
from chunk_check import decode
from harness import BAD_DROP_REASONS, dropped, run_actor, skip, start_actor, stop_process
from safetensors.numpy import save

from flotilla.chunk import max_encoded_len
from flotilla.envs import EnvError, EnvFactory, VectorRunner, probe
from flotilla.metrics import ActorMetrics
from flotilla.policy import ModelSpec, zero_parameters
from flotilla.spaces import Discrete
from flotilla.v1 import flotilla_pb2 as pb
from flotilla.worker import EnvWorker, Snapshot, SnapshotBox, WorkerSpec

BREAKOUT = "ALE/Breakout-v5"
NOBODY = "http://127.0.0.1:1"  # nothing listens there


@pytest.fixture(scope="module", autouse=True)
def ale():
    try:
        import ale_py  # noqa: F401
        import cv2  # noqa: F401
    except ImportError as e:
        skip("atari", f"ale-py or OpenCV is not installed ({e}): pip install './python[atari]'")


def make(env_id: str = BREAKOUT, **kwargs):
    """The environment as the actor builds it (`--atari`)."""
    return EnvFactory(env_id, kwargs=kwargs, atari=True)()


def newest(obs) -> np.ndarray:
    return np.asarray(obs)[-1]


def step_until_life_lost(env, action: int = 0, limit: int = 2000):
    """Steps `action` until an episode ends; every step's result, in order."""
    out = []
    for _ in range(limit):
        out.append(env.step(action))
        if out[-1][2] or out[-1][3]:
            return out
    raise AssertionError(f"no episode ended in {limit} steps")


def test_observations_are_stacks_of_four_84x84_uint8_frames():
    env = make()
    try:
        space = env.observation_space
        assert space.shape == (4, 84, 84) and space.dtype == np.uint8
        assert (space.low == 0).all() and (space.high == 255).all()
        obs, _ = env.reset(seed=0)
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8 and obs in space
        # A reset fills the stack with copies of its frame.
        assert all((obs[i] == obs[3]).all() for i in range(3))
        assert obs.max() > obs.min(), "a blank frame"
        info = probe(EnvFactory(BREAKOUT, atari=True))
        box = info.observation.space
        assert box.shape == (4, 84, 84) and info.observation.dim == 4 * 84 * 84
        assert (box.low == 0).all() and (box.high == 255).all()
        # Declared uint8: the frames travel as bytes, a quarter of f32.
        assert box.dtype == "uint8" and info.observation.dtype == np.uint8
        assert repr(box) == "Box(shape=[4, 84, 84], uint8)"
        assert env.action_space.n == 4 and env.unwrapped.get_action_meanings() == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    finally:
        env.close()


def test_the_stack_shifts_by_one_frame_per_step():
    env = make()
    try:
        prev, _ = env.reset(seed=1)
        rng = np.random.default_rng(1)
        changed = 0
        for _ in range(20):
            obs, _, terminated, truncated, _ = env.step(int(rng.integers(4)))
            assert not (terminated or truncated)
            np.testing.assert_array_equal(obs[:3], prev[1:])
            changed += int((obs[3] != prev[3]).any())
            prev = obs
        assert changed >= 15, "the newest frame hardly ever changes"
    finally:
        env.close()


def test_breakout_is_served_at_reset():
    """FIRE is pressed at reset: with no-ops only, the ball flies (the
    frames change); without the FIRE the same game stands still."""
    import gymnasium
    from gymnasium.wrappers import AtariPreprocessing

    env = make()
    bare = AtariPreprocessing(gymnasium.make(BREAKOUT, frameskip=1))
    try:
        for e, served in ((env, True), (bare, False)):
            obs, _ = e.reset(seed=2)
            moves = 0
            for _ in range(8):
                nxt, *_ = e.step(0)
                moves += int((newest(nxt) != newest(obs)).any())
                obs = nxt
            assert (moves == 8) if served else (moves == 0), (served, moves)
    finally:
        env.close()
        bare.close()


def test_a_lost_life_ends_the_episode_but_not_the_game():
    env = make()
    try:
        env.reset(seed=3)
        ale = env.unwrapped.ale
        assert ale.lives() == 5
        steps = step_until_life_lost(env)
        final_obs, reward, terminated, truncated, info = steps[-1]
        assert terminated and not truncated and info["lives"] == 4
        assert all(not s[2] for s in steps[:-1])
        frame = ale.getEpisodeFrameNumber()
        assert frame == info["episode_frame_number"] > 0
        # The reset that follows (the actor's autoreset) carries on with
        # the game: same lives, the frame count goes on (one no-op step,
        # FIRE and action 2: 3 x 4 frames), no game over.
        obs, info = env.reset()
        assert ale.lives() == 4 and info["lives"] == 4 and not ale.game_over()
        assert ale.getEpisodeFrameNumber() == frame + 12
        assert all((obs[i] == obs[3]).all() for i in range(3))
        assert not (obs[3] == final_obs[3]).all()
        # Four more lives; the last one ends the game, and only then is the
        # game itself reset (to 5 lives, its frame count from the start).
        for lives in (3, 2, 1, 0):
            *_, (_, _, terminated, truncated, info) = step_until_life_lost(env)
            assert terminated and info["lives"] == lives
            if lives:
                env.reset()
        assert ale.game_over()
        env.reset()
        assert ale.lives() == 5 and ale.getEpisodeFrameNumber() <= 30 + 8
    finally:
        env.close()


def test_rewards_are_clipped_and_the_score_kept():
    """Space Invaders pays 5 to 30 points an invader: trained on 1."""
    env = make("ALE/SpaceInvaders-v5")
    try:
        env.reset(seed=4)
        raw, clipped = [], []
        for _ in range(400):
            _, reward, terminated, truncated, info = env.step(1)  # FIRE
            raw.append(info["raw_reward"])
            clipped.append(reward)
            if terminated or truncated:
                env.reset()
        raw, clipped = np.array(raw), np.array(clipped)
        assert (raw >= 5).sum() >= 2, raw[raw != 0]
        np.testing.assert_array_equal(clipped, np.sign(raw))
        assert set(np.unique(clipped)) <= {-1.0, 0.0, 1.0}
    finally:
        env.close()


def test_the_actor_reports_the_score_and_trains_on_clipped_rewards():
    """The returns the actor reports sum the game's points, the chunk's
    rewards are the clipped ones (Space Invaders, whose invaders are worth 5
    to 30 points; its games cut short at 800 frames, 200 steps, by the ALE's
    own time limit, so that an episode surely ends)."""
    kwargs = {"max_num_frames_per_episode": 800}
    factory = EnvFactory("ALE/SpaceInvaders-v5", kwargs=kwargs, atari=True)
    runner = VectorRunner(factory, probe(factory), 1, 8)
    rng = np.random.default_rng(8)
    actions, clipped = [], 0.0
    try:
        for _ in range(400):
            actions.append(int(rng.integers(6)))
            r = runner.step(np.array(actions[-1:]))
            clipped += float(r.rewards.sum())
            if r.episodes:
                break
    finally:
        runner.close()
    ((ret, length),) = r.episodes
    assert length == len(actions) <= 200
    env = make("ALE/SpaceInvaders-v5", **kwargs)
    try:
        env.reset(seed=8)
        score = sum(env.step(a)[4]["raw_reward"] for a in actions)
    finally:
        env.close()
    assert ret == score > clipped > 0, (ret, score, clipped)


def test_seeds_make_the_noop_reset_reproducible():
    env = make()
    try:

        def start(seed):
            obs, _ = env.reset(seed=seed)
            # No-ops, then FIRE and action 2 (4 frames each).
            return env.unwrapped.ale.getEpisodeFrameNumber() - 8, obs

        noops = {}
        for seed in range(8):
            n, obs = start(seed)
            again, obs2 = start(seed)
            assert n == again and (obs == obs2).all()
            assert 1 <= n <= 30
            noops[seed] = n
        assert len(set(noops.values())) >= 3, noops
        # The same seed plays the same game (sticky actions included).
        runs = []
        for _ in range(2):
            env.reset(seed=5)
            rng = np.random.default_rng(5)
            runs.append([env.step(int(rng.integers(4)))[0] for _ in range(30)])
        assert all((a == b).all() for a, b in zip(*runs))
    finally:
        env.close()


def _run(mode: str, steps: int, num_envs: int = 2, seed: int = 7, env_id: str = BREAKOUT, **kwargs):
    factory = EnvFactory(env_id, kwargs=kwargs, atari=True)
    info = probe(factory)
    runner = VectorRunner(factory, info, num_envs, seed, mode)
    rng = np.random.default_rng(seed)
    out = []
    try:
        first = runner.obs.copy()
        for _ in range(steps):
            out.append(runner.step(rng.integers(0, info.action.space.n, num_envs)))
    finally:
        runner.close()
    return first, out


def test_the_actor_reports_lives_as_episodes_with_the_true_final_observation():
    """What the actor packs into chunks (`VectorRunner`): each lost life is an
    episode that ends `terminated`, with its true last frame stack as the
    final observation; the next observation is the same game's; the
    episode's return counts the game's points and its length the steps of
    that life, so over a game the returns add up to the score."""
    num_envs, seed, steps = 2, 7, 300
    first, results = _run("sync", steps, num_envs, seed)
    assert first.shape == (num_envs, 4 * 84 * 84) and first.dtype == np.uint8

    # The same games, one environment at a time, as Gymnasium steps them.
    rng = np.random.default_rng(seed)
    actions = [rng.integers(0, 4, num_envs) for _ in range(steps)]
    for i in range(num_envs):
        env = make()
        try:
            obs, _ = env.reset(seed=seed + i)
            np.testing.assert_array_equal(first[i], obs.reshape(-1))
            score = length = lives_lost = 0
            game_score, game_returns = 0.0, []
            for t, r in enumerate(results):
                obs, reward, terminated, truncated, info = env.step(int(actions[t][i]))
                score += info["raw_reward"]
                game_score += info["raw_reward"]
                length += 1
                assert r.rewards[i] == reward and r.terminated[i] == terminated and r.truncated[i] == truncated
                if terminated or truncated:
                    k = list(r.final_envs).index(i)
                    np.testing.assert_array_equal(r.final_obs[k], obs.reshape(-1))
                    assert r.episodes[k] == (score, length)
                    game_returns.append(score)
                    score = length = 0
                    lives_lost += 1
                    game_over = env.unwrapped.ale.game_over()
                    obs, _ = env.reset()
                    if game_over:
                        assert sum(game_returns) == game_score
                        game_score, game_returns = 0.0, []
                else:
                    assert i not in r.final_envs
                np.testing.assert_array_equal(r.obs[i], obs.reshape(-1))
            assert lives_lost >= 5, "no game over in the run"
        finally:
            env.close()
    assert sum(r.rewards.sum() for r in results) > 0, "no point scored"


def test_scores_are_read_from_the_step_infos_and_the_final_infos():
    """The vector environment's infos, as Gymnasium's SAME_STEP autoreset
    lays them out: an ended episode's last step infos under "final_info",
    the next episode's reset infos (no score) at the top."""
    from flotilla.envs import _raw_rewards

    rewards = np.array([1.0, 1.0, 0.0, 1.0])
    done = np.array([True, False, False, False])
    infos = {
        "raw_reward": np.array([0.0, 4.0, 0.0, 0.0]),
        "_raw_reward": np.array([False, True, True, False]),  # env 3 says nothing: its reward counts
        "final_info": {
            "raw_reward": np.array([7.0, 0.0, 0.0, 0.0]),
            "_raw_reward": np.array([True, False, False, False]),
        },
        "_final_info": done,
    }
    np.testing.assert_array_equal(_raw_rewards(infos, done, rewards), [7.0, 4.0, 0.0, 1.0])
    np.testing.assert_array_equal(rewards, [1.0, 1.0, 0.0, 1.0])
    assert _raw_rewards({}, done, rewards) is rewards


def test_async_environments_report_the_same():
    """Environments in worker processes report the same episodes, their
    scores included (which reach the actor in another way there)."""
    game = {"env_id": "ALE/SpaceInvaders-v5", "max_num_frames_per_episode": 400}
    _, sync = _run("sync", 120, **game)
    _, asyn = _run("async", 120, **game)
    episodes = [e for r in sync for e in r.episodes]
    assert len(episodes) >= 2 and max(ret for ret, _ in episodes) >= 5, episodes
    for a, b in zip(sync, asyn):
        assert a.episodes == b.episodes
        np.testing.assert_array_equal(a.final_envs, b.final_envs)
        np.testing.assert_array_equal(a.obs, b.obs)


def test_breakout_chunks_carry_the_frames_as_bytes():
    """The environment thread with the Nature network: each chunk's `obs`
    is the frame stacks' bytes, one per value ([T+1, N, 28,224] u8), with
    `obs_dtype` uint8, starting from the environments' first frames."""
    factory = EnvFactory(BREAKOUT, atari=True)
    info = probe(factory)
    model = ModelSpec.nature()
    seed, t, n, dim = 5, 8, 2, 4 * 84 * 84
    spec = WorkerSpec(BREAKOUT, model, t, n, info.observation.space, Discrete(4), False, False, 0, seed)
    box = SnapshotBox()
    box.publish(Snapshot(1, save(zero_parameters(model, (4, 84, 84), Discrete(4)))))
    worker = EnvWorker(spec, "run", factory, info, "sync", box, ActorMetrics())
    worker.start()
    try:
        chunks = [worker.chunks.get(timeout=60) for _ in range(2)]
    finally:
        worker.shut_down()
    assert worker.error is None, worker.error
    for c in chunks:
        assert c.obs_dtype == pb.DTYPE_UINT8 and len(c.obs) == (t + 1) * n * dim
        assert len(c.final_obs) == len(c.final_obs_index) * dim
    d = decode(chunks[0], dim, Discrete(4), False, obs_dtype="uint8")
    for i in range(n):
        env = make()
        try:
            obs, _ = env.reset(seed=seed + i)
        finally:
            env.close()
        assert d.obs[0, i].tobytes() == obs.tobytes()
    assert chunks[1].obs[: n * dim] == chunks[0].obs[-n * dim :], "chunks tile"


def test_bad_atari_options_are_refused():
    with pytest.raises(EnvError, match="not one"):
        EnvFactory("CartPole-v1", atari=True)()
    with pytest.raises(EnvError, match="no registered environment"):
        EnvFactory("ALE/NoSuchGame-v5", atari=True)()
    with pytest.raises(EnvError, match="leave frameskip out"):
        EnvFactory(BREAKOUT, kwargs={"frameskip": 4}, atari=True)()
    with pytest.raises(EnvError, match="does not go with --make"):
        EnvFactory(BREAKOUT, make="x:y", atari=True)
    # Other keyword arguments reach gymnasium.make: no sticky actions.
    env = make(repeat_action_probability=0.0)
    try:
        assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.0
    finally:
        env.close()
    env = make()
    try:
        assert env.unwrapped.ale.getFloat("repeat_action_probability") == 0.25  # v5's default
    finally:
        env.close()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--env", "CartPole-v1", "--atari"], "needs an Atari game of the Arcade Learning Environment"),
        (["--env", BREAKOUT, "--atari", "--make", "x:y"], "does not go with --make"),
        (["--env", BREAKOUT, "--atari", "--env-kwargs", '{"frameskip": 4}'], "leave frameskip out"),
    ],
)
def test_the_actor_refuses_bad_atari_options(args, needle):
    code, err = run_actor(NOBODY, *args, timeout=60)
    assert code == 64 and "error: " in err and needle in err, err


def test_breakout_chunks_are_accepted_by_the_learner(start_learner, tmp_path):
    """A short run: the actor with --atari against a learner that trains
    the Nature CNN on what it declares; its chunks (lives ended included)
    pass the learner's checks."""
    config = f"""
[run]
total_env_steps = 100_000_000
seed = 3

[env]
id = "{BREAKOUT}"
source = "external"

[model]
preset = "nature"

[rollout]
chunk_len = 32
num_envs = 2

[ppo]
batch_size = 64
update_epochs = 1
num_minibatches = 1
"""
    learner = start_learner(config)
    log = tmp_path / "actor.log"
    actor = start_actor(learner.port, "--env", BREAKOUT, "--atari", name="atari-0", log=log)
    try:
        m = learner.wait_for(
            lambda m: m.get("flotilla_chunks_received_total", 0) >= 4
            and m.get("flotilla_learner_updates_total", 0) >= 2
            and m.get("flotilla_episodes_total", 0) >= 2,
            timeout=120,
            what="4 chunks, 2 updates and 2 episodes (lives)",
        )
        bad = {r: dropped(m, r) for r in BAD_DROP_REASONS if dropped(m, r)}
        assert not bad, f"the learner dropped chunks: {bad}\n{learner.log()}"
        # Points per life of a random policy: a few at most, never negative.
        assert 0 <= m["flotilla_episode_return_mean"] < 50, m
        assert stop_process(actor) == 0, log.read_text()
    finally:
        stop_process(actor)
    text = log.read_text()
    assert "connected to learner" in text and "Box(shape=[4, 84, 84], uint8)" in text, text
    assert "the first actor declared the environment's spaces" in learner.log()
    assert "Box(shape [4, 84, 84], uint8)" in learner.log()
    # The chunks' frames travelled as bytes: every accepted chunk is at most
    # the widest uint8 chunk (every step ending a life), less than a chunk
    # of the same frames in f32 could ever be.
    m = learner.metrics()
    chunks, received = m["flotilla_chunks_received_total"], m["flotilla_bytes_received_total"]
    rows, frame = 33 * 2, 4 * 84 * 84
    widest = max_encoded_len(32, 2, frame, Discrete(4), False, 64, 64, len(BREAKOUT), "uint8")
    assert widest < rows * frame * 4
    assert chunks * rows * frame <= received <= chunks * widest, (chunks, received)
