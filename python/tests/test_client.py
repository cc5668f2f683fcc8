"""The network side without a network: backoff, URLs, tokens, and the
checks of the learner's run spec."""

import queue
import random
import time
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from flotilla.client import (
    HELLO_TIMEOUT,
    ActorOptions,
    Backoff,
    Status,
    TlsOptions,
    UsageError,
    check_token,
    hello_request,
    is_loopback_host,
    parse_learner_url,
    _Subscription,
    _Upload,
    session_from_run_spec,
)
from flotilla.envs import EnvFactory, probe
from flotilla.seeds import actor_seed
from flotilla.spaces import to_proto
from flotilla.v1 import PROTOCOL_VERSION
from flotilla.v1 import flotilla_pb2 as pb
from flotilla.worker import Snapshot, SnapshotBox

INFO = probe(EnvFactory("CartPole-v1"))


def opts(**kw) -> ActorOptions:
    return ActorOptions(learner="http://127.0.0.1:50051", env=EnvFactory("CartPole-v1"), name="py-0", **kw)


def run_spec(**kw) -> pb.RunSpec:
    rs = pb.RunSpec(
        run_id="r1",
        env_id="CartPole-v1",
        model=pb.ModelSpec(
            hidden_sizes=[64, 64], activation=pb.ACTIVATION_TANH, observation_clip=10.0, observation_scale=1.0
        ),
        chunk_len=64,
        observation_space=to_proto(INFO.observation.space),
        action_space=to_proto(INFO.action.space),
        policy_version=7,
        protocol_version=PROTOCOL_VERSION,
        actor_id=3,
        send_behavior_values=True,
        seed=42,
        max_chunk_bytes=1 << 20,
        default_num_envs=8,
        sync=False,
        batch_samples=2048,
        session="0123-abcd",
    )
    for k, v in kw.items():
        if v is None:
            rs.ClearField(k)
        else:
            setattr(rs, k, v) if not isinstance(v, (pb.Space, pb.ModelSpec)) else getattr(rs, k).CopyFrom(v)
    return rs


def test_backoff_doubles_to_its_cap_with_jitter():
    b = Backoff(rng=random.Random(1))
    delays = [b.delay() for _ in range(10)]
    steps = [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0]
    for d, step in zip(delays, steps):
        assert step * 0.5 <= d <= step
    b.reset()
    assert 0.05 <= b.delay() <= 0.1


def test_learner_urls():
    assert parse_learner_url("http://127.0.0.1:50051", None) == ("127.0.0.1:50051", "127.0.0.1")
    assert parse_learner_url("http://[::1]:7/", None) == ("[::1]:7", "::1")
    tls = TlsOptions(ca=b"x")
    assert parse_learner_url("https://learner.example", tls) == ("learner.example:443", "learner.example")
    for bad, tls_opt, needle in [
        ("127.0.0.1:50051", None, "expected http"),
        ("grpc://h:1", None, "expected http"),
        ("https://h:1", None, "--tls-ca"),
        ("http://h:1", tls, "https://"),
        ("http://h:1/path", None, "no path"),
    ]:
        with pytest.raises(UsageError, match=needle):
            parse_learner_url(bad, tls_opt)
    assert is_loopback_host("localhost") and is_loopback_host("127.3.2.1") and is_loopback_host("::1")
    assert not is_loopback_host("10.0.0.5") and not is_loopback_host("learner")


def test_tokens_are_checked_like_the_learner_does():
    assert check_token("a" * 16, "t") == "a" * 16
    with pytest.raises(UsageError, match="16 to 4096"):
        check_token("short", "t")
    with pytest.raises(UsageError, match="visible ASCII"):
        check_token("with a space inside it", "t")


def test_hello_declares_the_environment():
    req = hello_request(opts(num_envs=3), INFO)
    assert (req.actor_name, req.num_envs, req.protocol_version, req.env_id) == ("py-0", 3, 6, "CartPole-v1")
    assert list(req.observation_space.box.shape) == [4]
    assert req.observation_space.box.low[1] == -np.inf
    assert req.action_space.discrete.n == 2
    assert hello_request(opts(), INFO).num_envs == 0  # the run's default


def test_a_good_spec_becomes_the_worker_spec():
    s = session_from_run_spec(run_spec(), opts(), INFO)
    assert (s.run_id, s.actor_id, s.credential, s.version) == ("r1", 3, "0123-abcd", 7)
    w = s.spec
    assert (w.num_envs, w.chunk_len, w.batch_samples, w.behavior_values) == (8, 64, 2048, True)
    assert w.seed == actor_seed(42, "py-0")
    assert w.model.hidden_sizes == (64, 64) and w.model.activation == "tanh"
    # The same run and name give an equal spec: a reconnect keeps the envs.
    again = session_from_run_spec(run_spec(actor_id=9, policy_version=30, session="x"), opts(), INFO)
    assert again.spec == s.spec
    assert session_from_run_spec(run_spec(), opts(num_envs=2), INFO).spec.num_envs == 2


@pytest.mark.parametrize(
    "change,field",
    [
        ({"protocol_version": 3}, "protocol_version"),
        ({"model": None}, "model"),
        ({"chunk_len": 0}, "chunk_len"),
        ({"chunk_len": 1 << 20}, "chunk_len"),
        ({"default_num_envs": 0}, "default_num_envs"),
        ({"max_chunk_bytes": 10}, "max_chunk_bytes"),
        ({"session": ""}, "session"),
        ({"session": "a\nb"}, "session"),
        ({"action_space": None}, "action_space"),
        ({"action_space": pb.Space(discrete=pb.DiscreteSpace(n=0))}, "action_space"),
        ({"observation_space": pb.Space(box=pb.BoxSpace(shape=[3]))}, "observation_space"),
    ],
)
def test_unusable_specs_are_refused_naming_the_field(change, field):
    with pytest.raises(Status) as e:
        session_from_run_spec(run_spec(**change), opts(), INFO)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION and e.value.fatal
    assert f"`{field}`" in e.value.message or e.value.message.startswith(field), e.value.message


def test_a_convolutional_run_needs_image_observations():
    conv = [pb.ConvLayer(channels=8, kernel=3, stride=1)]
    model = pb.ModelSpec(hidden_sizes=[8], activation=pb.ACTIVATION_RELU, conv=conv, observation_scale=1.0)
    # CartPole's observations are four values, not an image.
    with pytest.raises(Status) as e:
        session_from_run_spec(run_spec(model=model), opts(), INFO)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION and e.value.fatal
    assert e.value.message.startswith(
        "run spec field `model`: model.conv: a convolutional torso needs image observations of 2 or 3 dimensions"
    ), e.value.message
    # A bad convolution is refused before the observations are looked at.
    model.conv[0].stride = 0
    with pytest.raises(Status) as e:
        session_from_run_spec(run_spec(model=model), opts(), INFO)
    assert e.value.message.startswith("run spec field `model`: model.conv: convolution 0 has"), e.value.message


def test_a_normalizing_run_reaches_the_worker_and_a_bad_clip_is_refused():
    model = pb.ModelSpec(
        hidden_sizes=[8], activation=pb.ACTIVATION_TANH, normalize_observations=True, observation_scale=1.0
    )
    model.observation_clip = 5.0
    w = session_from_run_spec(run_spec(model=model), opts(), INFO).spec
    assert w.model.normalize_observations and w.model.observation_clip == 5.0
    model.observation_clip = 0.0
    with pytest.raises(Status) as e:
        session_from_run_spec(run_spec(model=model), opts(), INFO)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION and e.value.fatal
    assert e.value.message.startswith("run spec field `model`: model.observation_clip: "), e.value.message


def test_a_run_with_other_spaces_is_refused():
    other = pb.Space(discrete=pb.DiscreteSpace(n=3))
    with pytest.raises(Status, match="action_space: the learner's run has Discrete"):
        session_from_run_spec(run_spec(action_space=other), opts(), INFO)


def test_chunks_that_cannot_fit_the_learner_are_refused_with_advice():
    # 64 steps x 8 envs of CartPole with values: about 18 kB per chunk.
    with pytest.raises(Status, match=r"--num-envs \d+ or fewer"):
        session_from_run_spec(run_spec(max_chunk_bytes=8_000), opts(), INFO)
    with pytest.raises(Status, match="even one env is too many"):
        session_from_run_spec(run_spec(max_chunk_bytes=1_024), opts(), INFO)


def test_status_classification():
    assert Status(grpc.StatusCode.UNAUTHENTICATED, "x").fatal
    assert Status(grpc.StatusCode.PERMISSION_DENIED, "x").fatal
    assert Status(grpc.StatusCode.INVALID_ARGUMENT, "x").fatal
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED):
        assert not Status(code, "x").fatal


def test_a_run_whose_bounds_differ_names_the_first_bound():
    low = list(INFO.observation.space.low)
    low[2] = -0.5
    other = pb.Space(box=pb.BoxSpace(low=low, high=list(INFO.observation.space.high), shape=[4]))
    with pytest.raises(Status) as e:
        session_from_run_spec(run_spec(observation_space=other), opts(), INFO)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert e.value.message == (
        "observation_space: the learner's run has low[2] = -0.5, the actor declared -0.41887903 "
        "(environment CartPole-v1)"
    )


def test_the_run_spec_keeps_the_runs_env_settings():
    s = session_from_run_spec(run_spec(env_config_toml="max_episode_steps = 200\n"), opts(), INFO)
    assert s.env_config_toml == "max_episode_steps = 200\n"


def test_closing_the_stream_takes_at_most_half_the_grace():
    assert opts().close_timeout() == 5.0
    assert opts(shutdown_grace=4.0).close_timeout() == 2.0
    assert opts(shutdown_grace=60.0).close_timeout() == 5.0
    assert HELLO_TIMEOUT > 30.0  # the learner may hold a Hello 30 s while it starts


class _Call:
    """A `SubscribePolicy` call: yields what `feed` gets; `cancel` does not
    reach a message already on its way (as with a real call)."""

    def __init__(self):
        self.feed: queue.Queue = queue.Queue()

    def __iter__(self):
        while True:
            item = self.feed.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    def cancel(self):
        pass


class _Conn:
    def __init__(self, call):
        self.metadata = []
        self.stub = SimpleNamespace(SubscribePolicy=lambda request, metadata: call)


def test_no_snapshot_of_a_cancelled_subscription_is_published(monkeypatch):
    monkeypatch.setattr(_Subscription, "JOIN_TIMEOUT", 0.1)
    call, box = _Call(), SnapshotBox()
    sub = _Subscription(_Conn(call), box, 0)
    sub.start()
    call.feed.put(pb.PolicySnapshot(version=1, safetensors=b"a"))
    deadline = time.monotonic() + 10
    while box.latest()[1] is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    sub.cancel()
    box.publish(None)  # a new run
    call.feed.put(pb.PolicySnapshot(version=2, safetensors=b"b"))  # late, of the old session
    sub.join(10)
    assert not sub.is_alive()
    assert box.latest()[1] is None
    assert sub.known_version == 1


def test_a_subscription_publishes_the_learners_advice_with_the_snapshot(monkeypatch):
    monkeypatch.setattr(_Subscription, "JOIN_TIMEOUT", 0.1)
    call, box = _Call(), SnapshotBox()
    sub = _Subscription(_Conn(call), box, 0)
    sub.start()

    def published(version: int) -> Snapshot:
        deadline = time.monotonic() + 10
        while (s := box.latest()[1]) is None or s.version != version:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        return s

    call.feed.put(pb.PolicySnapshot(version=1, safetensors=b"a", samples_per_version=300))
    assert published(1) == Snapshot(1, b"a", 300)
    call.feed.put(pb.PolicySnapshot(version=2, safetensors=b"b"))
    assert published(2) == Snapshot(2, b"b", 0)
    sub.cancel()


def test_a_subscription_that_fails_ends_its_session_with_internal():
    class Broken(SnapshotBox):
        def publish(self, snapshot):
            raise RuntimeError("no room")

    call = _Call()
    sub = _Subscription(_Conn(call), Broken(), 0)
    sub.start()
    call.feed.put(pb.PolicySnapshot(version=1, safetensors=b"a"))
    sub.join(10)
    assert not sub.is_alive()
    assert sub.status is not None and sub.status.code == grpc.StatusCode.INTERNAL and not sub.status.fatal
    assert "RuntimeError: no room" in sub.status.message

    # The call's own error is kept as the status.
    class Gone(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.UNAVAILABLE

        def details(self):
            return "learner gone"

    call = _Call()
    sub = _Subscription(_Conn(call), SnapshotBox(), 0)
    sub.start()
    call.feed.put(Gone())
    sub.join(10)
    assert (sub.status.code, sub.status.message) == (grpc.StatusCode.UNAVAILABLE, "learner gone")


class _EndedCall:
    """A `StreamTrajectories` call the learner has already ended."""

    def done(self):
        return True

    def cancel(self):
        return False

    def result(self, timeout=None):
        return pb.IngestSummary()


def test_closing_a_stream_the_learner_ended_does_not_wait():
    stream = SimpleNamespace(future=lambda requests, metadata: _EndedCall())
    conn = SimpleNamespace(metadata=[], stub=SimpleNamespace(StreamTrajectories=stream))
    upload = _Upload(conn, "session")
    upload.queue.put(pb.Chunk())  # the slot is full and nobody takes from it
    t0 = time.monotonic()
    upload.close(5.0)
    assert time.monotonic() - t0 < 1.0


PIXELS = probe(EnvFactory("Pixels-v0", "flotilla_test_envs:make_pixels"))


def pixel_run_spec(**kw) -> pb.RunSpec:
    """A run of PixelEnv: uint8 observations of shape (2, 4, 4)."""
    spaces = {"observation_space": to_proto(PIXELS.observation.space), "action_space": to_proto(PIXELS.action.space)}
    return run_spec(**{"env_id": "Pixels-v0", **spaces, **kw})


def test_a_pixel_environment_declares_uint8_observations_and_packs_bytes():
    px_opts = ActorOptions(
        learner="http://127.0.0.1:50051", env=EnvFactory("Pixels-v0", "flotilla_test_envs:make_pixels"), name="px"
    )
    req = hello_request(px_opts, PIXELS)
    assert req.observation_space.box.dtype == pb.DTYPE_UINT8 and list(req.observation_space.box.shape) == [2, 4, 4]
    assert req.action_space.discrete.n == 3
    s = session_from_run_spec(pixel_run_spec(), px_opts, PIXELS)
    assert s.spec.observation_space.dtype == "uint8" and s.spec.observation_space == PIXELS.observation.space
    # The size check counts a byte per value: 64 steps x 8 envs fit in a
    # limit that the same chunks in f32 would not.
    from flotilla.chunk import max_encoded_len

    sizes = {
        dtype: max_encoded_len(64, 8, 32, PIXELS.action.space, True, 8, 2, len("Pixels-v0"), dtype)
        for dtype in ("float32", "uint8")
    }
    assert sizes["uint8"] < 40_000 < sizes["float32"], sizes
    session_from_run_spec(pixel_run_spec(max_chunk_bytes=40_000), px_opts, PIXELS)
    with pytest.raises(Status, match=r"encode to up to \d+ bytes"):
        session_from_run_spec(pixel_run_spec(max_chunk_bytes=sizes["uint8"] - 1), px_opts, PIXELS)
    session_from_run_spec(pixel_run_spec(max_chunk_bytes=sizes["uint8"]), px_opts, PIXELS)

    # A run of the same Box in f32 (a learner of protocol 5's spaces) is not
    # this actor's.
    f32 = to_proto(PIXELS.observation.space)
    f32.box.dtype = pb.DTYPE_FLOAT32
    with pytest.raises(Status) as e:
        session_from_run_spec(pixel_run_spec(observation_space=f32), px_opts, PIXELS)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert e.value.message == (
        "observation_space: the learner's run has a Box of float32, the actor declared uint8 (environment Pixels-v0)"
    )
    # A dtype this actor does not know.
    f32.box.dtype = 5
    with pytest.raises(Status) as e:
        session_from_run_spec(pixel_run_spec(observation_space=f32), px_opts, PIXELS)
    assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION and e.value.fatal
    assert e.value.message.startswith("run spec field `observation_space`: "), e.value.message
    assert "field `box.dtype`: unknown value 5" in e.value.message, e.value.message
