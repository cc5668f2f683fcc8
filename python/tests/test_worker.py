"""The environment thread's flow control, against snapshots published by
hand: at most a batch's worth of chunks per policy version (or the share its
snapshot advises), exactly one in synchronous mode, acting on after the
patience runs out; and stopping halfway through a chunk."""

import queue
import time

import numpy as np
import pytest
from chunk_check import decode
from safetensors.numpy import save

from flotilla.envs import EnvFactory, probe
from flotilla.metrics import ActorMetrics
from flotilla.policy import ModelSpec, zero_parameters
from flotilla.spaces import Discrete
from flotilla.worker import EnvWorker, FlowControl, Pacer, Snapshot, SnapshotBox, WorkerSpec, chunks_per_version

MODEL = ModelSpec(hidden_sizes=(4,))
FACTORY = EnvFactory("CartPole-v1")
INFO = probe(FACTORY)


def snapshot(version: int, samples_per_version: int = 0) -> Snapshot:
    return Snapshot(version, save(zero_parameters(MODEL, 4, Discrete(2))), samples_per_version)


def spec(batch_samples: int, sync: bool = False) -> WorkerSpec:
    # 2 envs x 8 steps = 16 samples per chunk.
    return WorkerSpec(
        env_id="CartPole-v1",
        model=MODEL,
        chunk_len=8,
        num_envs=2,
        observation_space=INFO.observation.space,
        action_space=Discrete(2),
        behavior_values=True,
        sync=sync,
        batch_samples=batch_samples,
        seed=1,
    )


class Running:
    def __init__(self, s: WorkerSpec, version: int | None, patience: float = 5.0):
        self.box = SnapshotBox()
        if version is not None:
            self.box.publish(snapshot(version))
        self.worker = EnvWorker(s, "run", FACTORY, INFO, "sync", self.box, ActorMetrics(), patience)
        self.worker.start()

    def next_chunks(self, n: int, timeout: float = 20.0):
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            try:
                out.append(self.worker.chunks.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"only {len(out)} of {n} chunks in {timeout} s") from None
        return out

    def next_versions(self, n: int):
        return [c.policy_version for c in self.next_chunks(n)]

    def quiet_for(self, seconds: float) -> bool:
        """Whether no chunk arrives for `seconds` (a lower bound on a wait:
        a busy machine can only make the worker later, never earlier)."""
        time.sleep(seconds)
        return self.worker.chunks.empty()

    def drain(self) -> None:
        while not self.worker.chunks.empty():
            self.worker.chunks.get()

    def finish(self):
        self.worker.shut_down()
        assert not self.worker.is_alive()
        assert self.worker.error is None, self.worker.error


def test_chunks_per_version_fills_a_batch():
    assert chunks_per_version(2048, 2, 64) == 16
    assert chunks_per_version(2049, 2, 64) == 17
    assert chunks_per_version(100, 2, 64) == 1
    assert chunks_per_version(0, 2, 64) is None


def test_acts_at_most_a_batch_per_version():
    w = Running(spec(40), version=1)  # 40 samples: 3 chunks of 16
    chunks = w.next_chunks(3)
    assert [c.policy_version for c in chunks] == [1, 1, 1]
    for c in chunks:
        d = decode(c, 4, Discrete(2), behavior_values=True)
        np.testing.assert_allclose(d.logp, np.log(0.5), rtol=1e-6)
        assert c.env_id == "CartPole-v1" and (c.t, c.n) == (8, 2)
    assert w.quiet_for(0.4)
    w.box.publish(snapshot(2))
    assert w.next_versions(3) == [2, 2, 2]
    assert w.quiet_for(0.4)
    w.finish()


def test_acts_on_after_patience_and_on_any_version_change():
    patience = 1.5
    t0 = time.monotonic()
    w = Running(spec(40), version=5, patience=patience)
    assert w.next_versions(3) == [5, 5, 5]
    assert w.quiet_for(patience / 2), "acted on before its patience ran out"
    # The patience runs out: a batch's worth more, not one chunk.
    assert w.next_versions(3) == [5, 5, 5]
    assert time.monotonic() - t0 >= patience
    # A lower version (a learner restarted from an older checkpoint) counts.
    w.box.publish(snapshot(2))
    assert w.next_versions(3) == [2, 2, 2]
    w.finish()


def test_acts_the_learners_advice_per_version():
    # A batch's worth is 3 chunks of 16; the advice replaces it for its
    # version: 65 samples are 5 chunks, 17 are 2, 0 is a batch's worth again.
    w = Running(spec(40), version=None)
    w.box.publish(snapshot(1, samples_per_version=65))
    assert w.next_versions(5) == [1] * 5
    assert w.quiet_for(0.4)
    w.box.publish(snapshot(2, samples_per_version=17))
    assert w.next_versions(2) == [2, 2]
    assert w.quiet_for(0.4)
    w.box.publish(snapshot(3))
    assert w.next_versions(3) == [3, 3, 3]
    assert w.quiet_for(0.4)
    w.finish()


def test_sync_mode_ignores_the_learners_advice():
    w = Running(spec(4096, sync=True), version=None)
    w.box.publish(snapshot(1, samples_per_version=160))
    assert w.next_versions(1) == [1]
    assert w.quiet_for(0.4)
    w.finish()


def test_sync_mode_acts_one_chunk_per_version_and_waits_as_long_as_it_takes():
    w = Running(spec(4096, sync=True), version=1, patience=0.2)
    assert w.next_versions(1) == [1]
    assert w.quiet_for(0.8)  # well past the patience: sync mode waits
    w.box.publish(snapshot(2))
    assert w.next_versions(1) == [2]
    assert w.quiet_for(0.3)
    w.finish()


def test_no_batch_size_means_no_limit():
    w = Running(spec(0), version=1)
    assert w.next_versions(12) == [1] * 12
    w.finish()


def test_waits_for_a_first_policy_and_ignores_unusable_ones():
    w = Running(spec(0), version=None)
    assert w.quiet_for(0.3)
    w.box.publish(Snapshot(3, b"not safetensors"))
    assert w.quiet_for(0.3)
    w.box.publish(snapshot(4))
    assert w.next_versions(2) == [4, 4]
    w.box.publish(Snapshot(5, b"broken"))  # acts on with version 4
    versions = w.next_versions(6)
    assert set(versions) == {4}
    # A new run clears the box: no acting with the old run's weights.
    w.box.publish(None)
    cleared, _ = w.box.latest()
    # Once the thread has taken in the cleared box, the chunks acted before
    # are all in the queue (draining it meanwhile: a full queue holds the
    # thread at its hand-over).
    deadline = time.monotonic() + 20
    while w.worker.followed_generation != cleared:
        assert time.monotonic() < deadline, "the environment thread never took in the cleared box"
        w.drain()
        time.sleep(0.01)
    w.drain()
    assert w.quiet_for(0.3)
    w.finish()


def test_a_normalizing_run_sends_raw_observations_and_values_of_normalized_ones():
    # Statistics that put every CartPole observation (all within ±5) at
    # -3 after clipping; the critic's value is the sum of tanh of its input.
    model = ModelSpec(hidden_sizes=(4,), normalize_observations=True, observation_clip=3.0)
    params = zero_parameters(model, 4, Discrete(2))
    params["critic.0.weight"] = np.eye(4, dtype=np.float32)
    params["critic.head.weight"] = np.ones((1, 4), np.float32)
    params["obs_norm.mean"] = np.full(4, 1000.0, np.float32)
    params["obs_norm.var"] = np.ones(4, np.float32)
    s = WorkerSpec("CartPole-v1", model, 8, 2, INFO.observation.space, Discrete(2), True, False, 0, 1)
    w = Running(s, version=None)
    w.box.publish(Snapshot(1, save(params)))
    for c in w.next_chunks(2):
        d = decode(c, 4, Discrete(2), behavior_values=True)
        # Raw CartPole observations: small and varied. Normalized with mean
        # 1000 and clipped at 3 they would all be -3.
        assert np.abs(d.obs).max() < 5.0 and (d.obs != -3.0).any(), "the chunk carries normalized observations"
        np.testing.assert_allclose(d.value, 4 * np.tanh(-3.0), rtol=1e-6)
    # A snapshot without the statistics does not fit the run: it is ignored.
    del params["obs_norm.var"]
    w.box.publish(Snapshot(2, save(params)))
    broken, _ = w.box.latest()
    deadline = time.monotonic() + 20
    while w.worker.followed_generation != broken:
        assert time.monotonic() < deadline, "the environment thread never took in the snapshot"
        w.drain()
        time.sleep(0.01)
    w.drain()
    assert w.next_versions(2) == [1, 1]
    w.finish()


def test_a_convolutional_run_acts_on_its_image_observations():
    """GridEnv's (2, 3) observations are one-channel images: a 2x2
    convolution of ones gives the two window sums, and the critic's value is
    what they give by hand, computed from the observations the chunk sends."""
    from flotilla.policy import ConvLayer

    factory = EnvFactory("Grid-v0", "flotilla_test_envs:make_grid")
    info = probe(factory)
    model = ModelSpec(conv=(ConvLayer(1, 2, 1),), hidden_sizes=(1,), observation_scale=0.5)
    params = zero_parameters(model, (2, 3), Discrete(3))
    assert params["critic.conv.0.weight"].shape == (1, 1, 2, 2) and params["critic.0.weight"].shape == (1, 2)
    params["critic.conv.0.weight"][:] = 1.0
    params["critic.0.weight"][:] = [[1.0, -2.0]]
    params["critic.head.weight"][:] = 1.0
    s = WorkerSpec("Grid-v0", model, 8, 2, info.observation.space, Discrete(3), True, False, 0, 1)
    box = SnapshotBox()
    box.publish(Snapshot(1, save(params)))
    w = EnvWorker(s, "run", factory, info, "sync", box, ActorMetrics())
    w.start()
    try:
        c = w.chunks.get(timeout=20)
    finally:
        w.shut_down()
    assert w.error is None, w.error
    d = decode(c, 6, Discrete(3), behavior_values=True)
    img = d.obs[:-1].reshape(8, 2, 2, 3) * np.float32(0.5)
    left = np.maximum(img[..., 0:2].sum(axis=(2, 3)), 0)
    right = np.maximum(img[..., 1:3].sum(axis=(2, 3)), 0)
    np.testing.assert_allclose(d.value, np.tanh(left - 2 * right), rtol=1e-5, atol=1e-6)


def test_a_pixel_run_sends_bytes_and_acts_on_their_values():
    """PixelEnv's uint8 images: the chunks carry them as bytes (obs_dtype
    uint8), while the network reads their values 0..=255 as f32, scaled by
    `observation_scale`: the critic's value, computed by hand from the bytes
    the chunk sends, is the one it carries."""
    factory = EnvFactory("Pixels-v0", "flotilla_test_envs:make_pixels")
    info = probe(factory)
    assert info.observation.space.dtype == "uint8"
    model = ModelSpec(hidden_sizes=(1,), observation_scale=1.0 / 255.0)
    params = zero_parameters(model, (2, 4, 4), Discrete(3))
    w = np.linspace(-0.1, 0.1, 32, dtype=np.float32)
    params["critic.0.weight"][:] = w
    params["critic.head.weight"][:] = 1.0
    s = WorkerSpec("Pixels-v0", model, 8, 2, info.observation.space, Discrete(3), True, False, 0, 1)
    box = SnapshotBox()
    box.publish(Snapshot(1, save(params)))
    worker = EnvWorker(s, "run", factory, info, "sync", box, ActorMetrics())
    worker.start()
    try:
        chunks = [worker.chunks.get(timeout=20) for _ in range(2)]
    finally:
        worker.shut_down()
    assert worker.error is None, worker.error
    for c in chunks:
        assert len(c.obs) == 9 * 2 * 32, "one byte per value"
        d = decode(c, 32, Discrete(3), behavior_values=True, obs_dtype="uint8")
        assert d.obs.dtype == np.uint8 and d.obs.max() > 200, "pixels, not [0, 1] values"
        x = d.obs[:-1].astype(np.float64) * float(np.float32(1.0 / 255.0))
        np.testing.assert_allclose(d.value, np.tanh(x @ w.astype(np.float64)), rtol=1e-5, atol=1e-6)
    assert chunks[1].obs[: 2 * 32] == chunks[0].obs[-2 * 32 :], "chunks tile"


def test_an_environment_that_raises_ends_the_thread_with_its_error():
    factory = EnvFactory("Exploding-v0", "flotilla_test_envs:make_exploding")
    info = probe(factory)
    s = WorkerSpec("Exploding-v0", MODEL, 8, 2, info.observation.space, Discrete(2), False, False, 0, 1)
    box = SnapshotBox()
    box.publish(Snapshot(1, save(zero_parameters(MODEL, 2, Discrete(2)))))
    w = EnvWorker(s, "run", factory, info, "sync", box, ActorMetrics())
    w.start()
    w.join(20)
    assert not w.is_alive()
    assert isinstance(w.error, RuntimeError) and "exploded" in str(w.error)


def _slow_worker(stopping=None):
    """A worker whose chunks take 20 s (400 steps of 50 ms), and an event set
    at its first step."""
    import threading

    stepped = threading.Event()
    factory = EnvFactory("Slow-v0", "flotilla_test_envs:make_slow", {"delay": 0.05, "on_step": stepped.set})
    info = probe(factory)
    s = WorkerSpec("Slow-v0", MODEL, 400, 1, info.observation.space, Discrete(2), False, False, 0, 1)
    box = SnapshotBox()
    box.publish(Snapshot(1, save(zero_parameters(MODEL, 2, Discrete(2)))))
    w = EnvWorker(s, "run", factory, info, "sync", box, ActorMetrics(), stopping=stopping)
    w.start()
    assert stepped.wait(20), "the environment never stepped"
    return w


def test_a_stop_halfway_through_a_chunk_drops_it_at_once():
    w = _slow_worker()
    t0 = time.monotonic()
    w.shut_down()
    assert not w.is_alive() and time.monotonic() - t0 < 2.0
    assert w.chunks.empty() and w.error is None


def test_the_actors_stop_ends_the_environment_thread_within_a_step():
    import threading

    stopping = threading.Event()
    w = _slow_worker(stopping)
    stopping.set()
    w.join(2.0)
    assert not w.is_alive()
    assert w.chunks.empty() and w.error is None


def test_pacer_holds_the_mean_rate():
    import threading

    stop = threading.Event()
    pacer = Pacer(2000.0)
    t0 = time.monotonic()
    for _ in range(5):
        pacer.wait_for(100, stop)
    # 500 steps at 2000/s are due 250 ms after the first call.
    assert time.monotonic() - t0 >= 0.25 - 1e-3
    stop.set()
    t0 = time.monotonic()
    Pacer(1.0).wait_for(1000, stop)
    assert time.monotonic() - t0 < 1.0


@pytest.mark.parametrize("sync,limit", [(True, 1), (False, 3)])
def test_flow_control_limits(sync, limit):
    assert FlowControl(spec(40, sync=sync)).limit == limit


@pytest.mark.parametrize(
    "batch_samples,sync,advice,limit",
    [
        # ceil(advice / (2 envs x 8 steps)) replaces ceil(batch_samples / 16).
        (40, False, 65, 5),
        (40, False, 16, 1),
        (40, False, 17, 2),
        (4096, False, 100, 7),
        (0, False, 33, 3),
        # No advice: a batch's worth (none without a batch size).
        (40, False, 0, 3),
        (0, False, 0, None),
        # Sync mode: exactly one chunk per version, whatever the advice.
        (40, True, 160, 1),
        (40, True, 0, 1),
    ],
)
def test_flow_control_takes_the_learners_advice(batch_samples, sync, advice, limit):
    assert FlowControl(spec(batch_samples, sync=sync)).limit_for(advice) == limit


def test_flow_control_waits_after_the_advised_share():
    import threading

    class NoChange(SnapshotBox):
        def wait_for_change(self, version, stop, patience):
            return True

    flow, box, stop, metrics = FlowControl(spec(40)), NoChange(), threading.Event(), ActorMetrics()
    # Advice of 33 samples: 3 chunks of 16 (a batch's worth, 40, is also 3).
    assert [flow.after_chunk(1, box, stop, metrics, 33) is not None for _ in range(3)] == [False, False, True]
    # Advice of 17 samples: 2 chunks, counted afresh for the new version.
    assert [flow.after_chunk(2, box, stop, metrics, 17) is not None for _ in range(2)] == [False, True]
    # No advice: a batch's worth.
    assert [flow.after_chunk(3, box, stop, metrics, 0) is not None for _ in range(3)] == [False, False, True]
    sync = FlowControl(spec(40, sync=True))
    assert sync.after_chunk(4, box, stop, metrics, 160) is not None
