"""The Python actor against the real `learner` binary (separate processes,
real gRPC): its chunks pass the learner's validation for every kind of space
(uint8 images as bytes included), a declaration that differs from the run's
is refused with exit code 64 (and so is a chunk the learner refuses), a token
and TLS are spoken, connections lost are found again, and the numpy network
computes the learner's log-probabilities, also over observations normalized
with the statistics the snapshots carry, and over uint8 observations, which
both read as their values 0..=255.

Each test reads the learner's own account, its Prometheus metrics
(`flotilla_chunks_received_total`, `flotilla_chunks_dropped_total{reason}`)
and its `--summary-json`."""

import json
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
from harness import BAD_DROP_REASONS, dropped, free_port, parse_metrics, run_actor, skip, start_actor, stop_process


def external_config(env_id: str, extra: str = "", rollout: str = "") -> str:
    return f"""
[run]
total_env_steps = 100_000_000
seed = 11
checkpoint_every = 1000

[env]
id = "{env_id}"
source = "external"

[model]
hidden_sizes = [16]

[rollout]
chunk_len = 16
num_envs = 4
behavior_values = true
{rollout}

[ppo]
batch_size = 256
num_minibatches = 2
update_epochs = 1
{extra}
"""


def accepted(m) -> float:
    return m.get("flotilla_chunks_received_total", 0.0)


def assert_nothing_refused(m, log: str = ""):
    bad = {r: dropped(m, r) for r in BAD_DROP_REASONS if dropped(m, r)}
    assert not bad, f"the learner dropped chunks: {bad}\n{log}"


def scrape(port: int) -> dict[str, float]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return parse_metrics(r.read().decode())


CASES = {
    # id: (env id, actor flags)
    "cartpole-truncated": ("CartPole-v1", ["--env-kwargs", '{"max_episode_steps": 9}']),
    "pendulum-box-actions": ("Pendulum-v1", []),
    "frozenlake-one-hot": ("FrozenLake-v1", []),
    "grid-2x3-obs-start-actions": (
        "Grid-v0",
        ["--make", "flotilla_test_envs:make_grid", "--env-kwargs", '{"horizon": 7}'],
    ),
    "square-2x2-actions-async": (
        "Square-v0",
        ["--make", "flotilla_test_envs:make_square", "--vector", "async", "--num-envs", "3"],
    ),
    # uint8 images, sent as bytes (obs_dtype uint8): the full 0..=255, and
    # a space of 0..=15 whose bounds the learner checks byte by byte.
    "pixels-uint8": ("Pixels-v0", ["--make", "flotilla_test_envs:make_pixels"]),
    "pixels-uint8-0-15-async": (
        "Pixels-v0",
        ["--make", "flotilla_test_envs:make_pixels", "--env-kwargs", '{"high": 15}', "--vector", "async"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_chunks_are_accepted_by_the_learner(case, start_learner, tmp_path):
    env_id, flags = CASES[case]
    learner = start_learner(external_config(env_id))
    metrics_port = free_port()
    log = tmp_path / "actor.log"
    actor = start_actor(learner.port, "--env", env_id, "--metrics-listen", f"127.0.0.1:{metrics_port}", *flags, log=log)
    try:
        m = learner.wait_for(
            lambda m: accepted(m) >= 40 and m.get("flotilla_learner_updates_total", 0) >= 3,
            what="40 chunks and 3 updates",
        )
        assert_nothing_refused(m, learner.log())
        assert m.get("flotilla_episodes_total", 0) > 0, "no episode reported"
        assert "the first actor declared the environment's spaces" in learner.log()
        mine = scrape(metrics_port)
        assert mine["flotilla_actor_env_steps_total"] > 0 and mine["flotilla_actor_policy_version"] >= 1
        assert mine["flotilla_actor_episodes_total"] > 0
        assert mine["flotilla_actor_inference_duration_seconds_count"] > 0
        # SIGTERM: the actor closes its stream and exits 0.
        assert stop_process(actor) == 0, log.read_text()
    finally:
        stop_process(actor)
    text = log.read_text()
    assert "connected to learner" in text and "actor stopped" in text, text
    m = learner.metrics()
    assert_nothing_refused(m, learner.log())
    learner.process.send_signal(signal.SIGTERM)
    assert learner.wait(60) == 0, learner.log()
    s = learner.summary()
    assert s["env_steps"] > 0 and s["episodes"] > 0 and s["policy_version"] >= 3


def test_a_declaration_that_differs_from_the_run_is_refused(start_learner, actors, tmp_path):
    learner = start_learner(external_config("CartPole-v1"))
    actors.append(start_actor(learner.port, "--env", "CartPole-v1", name="first", log=tmp_path / "first.log"))
    learner.wait_for(lambda m: accepted(m) >= 1, what="the first actor's chunks")

    # Other observations under the same id: refused, naming the difference.
    code, err = run_actor(
        learner.port, "--env", "CartPole-v1", "--make", "flotilla_test_envs:make_wide_cartpole", name="wide"
    )
    assert code == 64, err
    assert "error: the learner refused this actor (FAILED_PRECONDITION)" in err, err
    assert "observation_space: the run has a Box of shape [4], the actor declared shape [5]" in err, err

    # Another environment id.
    code, err = run_actor(learner.port, "--env", "Acrobot-v1", name="acrobot")
    assert code == 64, err
    assert "error: " in err and "Acrobot-v1" in err and "CartPole-v1" in err, err

    # The first actor is unaffected.
    time.sleep(0.5)
    assert actors[0].poll() is None
    assert_nothing_refused(learner.metrics(), learner.log())


def test_a_pixel_run_refuses_the_same_images_declared_as_floats(start_learner, actors, tmp_path):
    """The run's observations are what its first actor declared, dtype
    included: uint8 images, sent as bytes. The same Box of float32 is
    another declaration, refused naming the dtypes."""
    pixels = ["--env", "Pixels-v0", "--make", "flotilla_test_envs:make_pixels"]
    learner = start_learner(external_config("Pixels-v0"))
    actors.append(start_actor(learner.port, *pixels, name="bytes", log=tmp_path / "bytes.log"))
    learner.wait_for(lambda m: accepted(m) >= 1, what="the first actor's chunks")
    assert "Box(shape [2, 4, 4], uint8)" in learner.log()
    code, err = run_actor(learner.port, *pixels, "--env-kwargs", '{"dtype": "float32"}', name="floats")
    assert code == 64, err
    assert "error: the learner refused this actor (FAILED_PRECONDITION)" in err, err
    assert "observation_space: the run has a Box of uint8, the actor declared float32" in err, err
    time.sleep(0.5)
    assert actors[0].poll() is None
    assert_nothing_refused(learner.metrics(), learner.log())


def test_a_chunk_the_learner_refuses_ends_the_actor_with_64(start_learner):
    # Observations outside the declared bounds: the learner ends the stream
    # with INVALID_ARGUMENT, which a retry would meet again.
    learner = start_learner(external_config("Liar-v0"))
    code, err = run_actor(learner.port, "--env", "Liar-v0", "--make", "flotilla_test_envs:make_liar")
    assert code == 64, err
    assert "error: the learner refused this actor (INVALID_ARGUMENT): field `obs`" in err, err
    assert "observation space" in err, err


def test_a_learner_with_a_token_admits_only_actors_that_carry_it(start_learner, actors, tmp_path):
    token = "s3cret-token-of-32-characters-xx"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    learner = start_learner(external_config("CartPole-v1"), "--auth-token-file", str(token_file))

    code, err = run_actor(learner.port, "--env", "CartPole-v1", name="tokenless")
    assert code == 64, err
    assert "UNAUTHENTICATED" in err, err

    code, err = run_actor(learner.port, "--env", "CartPole-v1", name="wrong", env={"FLOTILLA_AUTH_TOKEN": "x" * 32})
    assert code == 64 and "UNAUTHENTICATED" in err, err

    actors.append(start_actor(learner.port, "--env", "CartPole-v1", "--auth-token-file", str(token_file), name="file"))
    actors.append(start_actor(learner.port, "--env", "CartPole-v1", name="env", env={"FLOTILLA_AUTH_TOKEN": token}))
    m = learner.wait_for(lambda m: accepted(m) >= 20 and m.get("flotilla_actors_connected", 0) >= 2, what="two actors")
    assert_nothing_refused(m, learner.log())
    assert m.get("flotilla_auth_failures_total", 0) >= 2


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(folder, name: str, server_san: str) -> None:
    """A CA `<name>-ca.pem`, a server certificate for `server_san` and a
    client certificate, all signed by that CA."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} CA",
             "-keyout", f"{name}-ca.key", "-out", f"{name}-ca.pem", cwd=folder)  # fmt: skip
    for leaf, ext in (("server", f"subjectAltName={server_san}"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name} {leaf}",
                 "-keyout", f"{name}-{leaf}.key", "-out", f"{name}-{leaf}.csr", cwd=folder)  # fmt: skip
        (folder / f"{name}-{leaf}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", f"{name}-{leaf}.csr", "-CA", f"{name}-ca.pem", "-CAkey", f"{name}-ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", f"{name}-{leaf}.ext", "-out", f"{name}-{leaf}.pem",
                 cwd=folder)  # fmt: skip


def test_mutual_tls_with_the_expected_name(start_learner, actors, tmp_path):
    if shutil.which("openssl") is None:
        skip("openssl", "the openssl command makes the test's certificates")
    pki = tmp_path / "pki"
    pki.mkdir()
    _make_pki(pki, "run", "DNS:learner.test")
    _make_pki(pki, "other", "DNS:learner.test")
    p = lambda f: str(pki / f)  # noqa: E731
    learner = start_learner(
        external_config("CartPole-v1"),
        "--tls-cert", p("run-server.pem"), "--tls-key", p("run-server.key"), "--tls-client-ca", p("run-ca.pem"),
    )  # fmt: skip
    url = f"https://127.0.0.1:{learner.port}"
    client = ["--tls-cert", p("run-client.pem"), "--tls-key", p("run-client.key")]

    # A CA that did not sign the learner's certificate: refused, not retried.
    code, err = run_actor(url, "--env", "CartPole-v1", "--tls-ca", p("other-ca.pem"), "--tls-domain", "learner.test",
                          *client, name="wrong-ca")  # fmt: skip
    assert code == 64 and "TLS handshake" in err, err
    # No client certificate for a learner that requires one.
    code, err = run_actor(url, "--env", "CartPole-v1", "--tls-ca", p("run-ca.pem"), "--tls-domain", "learner.test",
                          name="anonymous")  # fmt: skip
    assert code == 64, err
    # The right CA and identity, with the name in the learner's certificate.
    actors.append(start_actor(url, "--env", "CartPole-v1", "--tls-ca", p("run-ca.pem"), "--tls-domain", "learner.test",
                              *client, name="tls"))  # fmt: skip
    m = learner.wait_for(lambda m: accepted(m) >= 10, what="chunks over mutual TLS")
    assert_nothing_refused(m, learner.log())


def test_a_silent_stream_ended_by_the_learner_reconnects_to_the_same_run_keeping_its_envs(start_learner, tmp_path):
    # A slow actor (a chunk of 4 x 16 steps every 3.2 s) against a learner
    # that ends streams silent for 1.5 s: every session ends with
    # DEADLINE_EXCEEDED, and the actor carries on in the same run.
    learner = start_learner(external_config("CartPole-v1", extra="[ingest]\nstream_idle_timeout_seconds = 1.5"))
    log = tmp_path / "actor.log"
    actor = start_actor(learner.port, "--env", "CartPole-v1", "--max-steps-per-second", "20", log=log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and log.read_text().count("carry on") < 2:
            time.sleep(0.2)
        text = log.read_text()
        assert text.count("the environments carry on") >= 2, text
        assert "DEADLINE_EXCEEDED" in text, text
        m = learner.wait_for(lambda m: accepted(m) >= 2, what="chunks of later sessions")
        assert_nothing_refused(m, learner.log())
        assert stop_process(actor) == 0
    finally:
        stop_process(actor)


def test_a_restarted_learner_is_found_again(start_learner, tmp_path):
    first = start_learner(external_config("CartPole-v1"))
    log = tmp_path / "actor.log"
    actor = start_actor(first.port, "--env", "CartPole-v1", log=log)
    try:
        first.wait_for(lambda m: accepted(m) >= 5, what="chunks before the restart")
        first.close()
        time.sleep(1.0)  # the actor backs off meanwhile
        # A new run on the same port: the actor reconnects, starts over with
        # the new run's seeds and weights, and its chunks are accepted.
        second = start_learner(external_config("CartPole-v1"), port=first.port)
        m = second.wait_for(lambda m: accepted(m) >= 5, what="chunks after the restart")
        assert_nothing_refused(m, second.log())
        text = log.read_text()
        assert text.count("connected to learner") >= 2, text
        assert "connection to learner lost" in text, text
    finally:
        stop_process(actor)


SYNC_CONFIG = """
sync = true

[run]
total_env_steps = 1280
seed = 5

[env]
id = "CartPole-v1"
source = "external"

[model]
hidden_sizes = [16]

[rollout]
chunk_len = 16
num_envs = 4

[ppo]
batch_size = 64
num_minibatches = 2
update_epochs = 2
"""


def _sync_run(start_learner, tmp_path, tag: str):
    learner = start_learner(SYNC_CONFIG)
    log = tmp_path / f"{tag}.log"
    actor = start_actor(learner.port, "--env", "CartPole-v1", name="sync-0", log=log)
    last: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 120
        while learner.process.poll() is None and time.monotonic() < deadline:
            try:
                last = learner.metrics()
            except OSError:
                pass
            time.sleep(0.2)
        assert learner.wait(30) == 0, learner.log()
    finally:
        assert stop_process(actor) == 0, log.read_text()
    return learner.summary(), last


def test_sync_mode_acts_one_chunk_per_version_and_is_repeatable(start_learner, tmp_path):
    """In synchronous mode the learner trains only on chunks of its current
    version: an actor that acted more than one chunk per version would see
    them dropped as stale. And with the seeds derived from the run and the
    actor's name, two runs are the same run, bit for bit."""
    from safetensors.numpy import load_file

    first, m = _sync_run(start_learner, tmp_path, "first")
    assert first["finished"] and first["policy_version"] == 1280 // 64
    assert_nothing_refused(m)
    assert dropped(m, "stale") == 0, m
    second, _ = _sync_run(start_learner, tmp_path, "second")
    for key in ("env_steps", "episodes", "mean_return", "policy_version"):
        assert first[key] == second[key], (key, first, second)
    a, b = load_file(first["final_checkpoint"]), load_file(second["final_checkpoint"])
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].tobytes() == b[name].tobytes(), f"{name} differs between two runs of one seed"


def cross_check_config(env_id: str, model: str) -> str:
    # One actor of 4 envs x 16 steps: a batch is exactly its one chunk per
    # version, trained in one epoch of one minibatch.
    return f"""
sync = true

[run]
total_env_steps = 256
seed = 3
checkpoint_every = 1000

[env]
id = "{env_id}"
source = "external"

[model]
{model}

[rollout]
chunk_len = 16
num_envs = 4
behavior_values = true

[ppo]
batch_size = 64
num_minibatches = 1
update_epochs = 1
"""


#: Learner flags of a run that normalizes observations.
NORMALIZE = ("--set", "model.normalize_observations=true")

CROSS_CHECKS = {
    # id: (env id, actor flags, [model], learner flags)
    "box-actions": ("Pendulum-v1", [], "hidden_sizes = [16, 16]", ()),
    "discrete-start-actions": (
        "Grid-v0",
        ["--make", "flotilla_test_envs:make_grid"],
        'hidden_sizes = [16]\nactivation = "relu"\nshared_torso = true',
        (),
    ),
    "one-hot-observations": (
        "Square-v0",
        ["--make", "flotilla_test_envs:make_square"],
        "hidden_sizes = [8, 8]\ninit_log_std = -0.5",
        (),
    ),
    # With observation normalization the actor applies the statistics of
    # its snapshot: the learner holds them fixed during an update, so the
    # KL stays zero only if both compute the same bits. A clip of 1.5 clips
    # some of Pendulum's observations, and Square's one-hot ones (a position
    # seen a quarter of the time normalizes to 1.73); Square's last position
    # (4) is only ever an episode's final observation, of variance 0.
    "box-normalized": ("Pendulum-v1", [], "hidden_sizes = [16, 16]", NORMALIZE),
    "box-normalized-clipped": (
        "Pendulum-v1",
        [],
        "hidden_sizes = [16]",
        (*NORMALIZE, "--set", "model.observation_clip=1.5"),
    ),
    "discrete-normalized": (
        "Grid-v0",
        ["--make", "flotilla_test_envs:make_grid"],
        'hidden_sizes = [16]\nactivation = "relu"\nshared_torso = true',
        NORMALIZE,
    ),
    "one-hot-normalized-clipped": (
        "Square-v0",
        ["--make", "flotilla_test_envs:make_square"],
        "hidden_sizes = [8, 8]",
        (*NORMALIZE, "--set", "model.observation_clip=1.5"),
    ),
    # Bytes on the wire, read as their values 0..=255 by both networks:
    # scaled by 1/255, or normalized with the statistics of those values.
    "uint8-pixels-scaled": (
        "Pixels-v0",
        ["--make", "flotilla_test_envs:make_pixels"],
        "hidden_sizes = [16]\nobservation_scale = 0.00392156862745098",
        (),
    ),
    "uint8-pixels-normalized": (
        "Pixels-v0",
        ["--make", "flotilla_test_envs:make_pixels"],
        "hidden_sizes = [16]",
        NORMALIZE,
    ),
}

#: Bound on an update's approx_kl when actor and learner agree. Rounding
#: alone (a few ulps of log-probability) gives below 1e-12 (0.0 on the
#: machines measured), while these runs' small networks barely depend on
#: their input at first: an actor that skipped the normalization, or its
#: clip, measured 6e-8 to 1.3e-5, so a looser bound would not notice.
KL_BOUND = 1e-9


@pytest.mark.parametrize("case", list(CROSS_CHECKS))
def test_the_numpy_policy_is_the_learners_policy(case, start_learner, tmp_path):
    """The log-probabilities the actor computes with its numpy network are
    the learner's (libtorch): in synchronous mode with one epoch of one
    minibatch, the learner evaluates each batch with exactly the weights the
    actor acted with, so every update's KL between the two (measured against
    the chunks' `behavior_logp`) is zero up to rounding, and no ratio is
    clipped."""
    env_id, flags, model, learner_flags = CROSS_CHECKS[case]
    learner = start_learner(cross_check_config(env_id, model), *learner_flags)
    log = tmp_path / "actor.log"
    actor = start_actor(learner.port, "--env", env_id, *flags, name="check-0", log=log)
    try:
        assert learner.wait(120) == 0, learner.log()
    finally:
        assert stop_process(actor) == 0, log.read_text()
    rows = [json.loads(line) for line in (learner.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 4, rows
    for row in rows:
        u = row["update"]
        assert row["policy_lags"] == [0], row
        assert u["epochs"] == 1 and u["samples"] == 64, row
        assert abs(u["approx_kl"]) < KL_BOUND, f"the actor's log-probabilities are not the learner's: {row}"
        assert u["clip_fraction"] == 0.0, row


class SnapshotWatcher(threading.Thread):
    """Follows `SubscribePolicy` as an actor does (no `Hello` needed),
    retrying while the run has not started, and keeps every snapshot's
    tensors by version."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.target = url.removeprefix("http://")
        self.snapshots: dict[int, dict] = {}
        self._done = threading.Event()
        self._call = None

    def run(self) -> None:
        import grpc
        from safetensors.numpy import load

        from flotilla.v1 import flotilla_pb2 as pb
        from flotilla.v1 import flotilla_pb2_grpc as pb_grpc

        with grpc.insecure_channel(self.target) as channel:
            stub = pb_grpc.LearnerStub(channel)
            while not self._done.is_set():
                self._call = stub.SubscribePolicy(pb.SubscribeRequest(actor_name="watcher"))
                if self._done.is_set():  # stopped before the call could be cancelled
                    self._call.cancel()
                    break
                try:
                    for snap in self._call:
                        self.snapshots[snap.version] = load(snap.safetensors)
                except grpc.RpcError:
                    pass  # not started yet (UNAVAILABLE), or gone
                self._done.wait(0.05)

    def stop(self) -> None:
        self._done.set()
        if self._call is not None:
            self._call.cancel()
        self.join(10)


def test_snapshots_carry_the_learners_observation_statistics(start_learner, tmp_path):
    """Every snapshot of a normalizing run, from the first, carries
    `obs_norm.mean` and `obs_norm.var` ([obs_dim] f32), they change with
    every update (the statistics are shipped, not only kept), and they are
    the statistics of the learner's checkpoint of the same version."""
    from safetensors.numpy import load_file

    import flotilla
    from flotilla.policy import ModelSpec, Policy
    from flotilla.spaces import Box

    learner = start_learner(
        cross_check_config("Pendulum-v1", "hidden_sizes = [16]"),
        *NORMALIZE,
        "--set", "run.checkpoint_every=1",
        "--set", "run.keep_checkpoints=100",
    )  # fmt: skip
    watcher = SnapshotWatcher(learner.url)
    watcher.start()
    log = tmp_path / "actor.log"
    # Paced to a chunk (64 steps) every 2 s: the watcher, retrying every
    # 50 ms until the run starts, sees the first snapshot before an update.
    actor = start_actor(learner.port, "--env", "Pendulum-v1", "--max-steps-per-second", "32", name="n-0", log=log)
    try:
        assert learner.wait(120) == 0, learner.log()
    finally:
        assert stop_process(actor) == 0, log.read_text()
        watcher.stop()
    snaps = watcher.snapshots
    versions = sorted(snaps)
    model = ModelSpec(hidden_sizes=(16,), normalize_observations=True)
    torque = Box(np.full(1, -2.0, np.float32), np.full(1, 2.0, np.float32), (1,))
    # Version 0 (the new run's weights, before any update) and at least
    # three of the four updates' (the last may come as the run ends).
    assert versions[0] == 0 and len(versions) >= 4, f"snapshots of versions {versions}"
    stats = {}
    for v in versions:
        t = snaps[v]
        assert "obs_norm.mean" in t and "obs_norm.var" in t, f"version {v} carries {sorted(t)}"
        mean, var = t["obs_norm.mean"], t["obs_norm.var"]
        assert mean.dtype == var.dtype == np.float32 and mean.shape == var.shape == (3,), (v, mean, var)
        assert np.isfinite(mean).all() and np.isfinite(var).all() and (var >= 0).all(), (v, mean, var)
        stats[v] = (mean, var)
        Policy(model, 3, torque, t)  # as the actor loads it
    for before, after in zip(versions, versions[1:]):
        assert not np.array_equal(stats[before][0], stats[after][0]), (
            f"the mean did not change from version {before} to {after}: {stats[before]} {stats[after]}"
        )
        assert not np.array_equal(stats[before][1], stats[after][1]), (before, after, stats)
    # Pendulum observes (cos, sin, angular velocity): the means of the
    # first two lie in [-1, 1], their variances at most 1.
    mean, var = stats[versions[-1]]
    assert (np.abs(mean[:2]) <= 1).all() and (var[:2] <= 1 + 1e-6).all(), stats[versions[-1]]

    folder = learner.run_dir / "checkpoints"
    compared = 0
    for path in folder.glob("ckpt-*.safetensors"):
        version = int(path.stem.removeprefix("ckpt-"))
        if version in snaps:
            tensors = load_file(str(path))
            for name in ("obs_norm.mean", "obs_norm.var"):
                assert tensors[f"model/{name}"].tobytes() == snaps[version][name].tobytes(), (path, name)
            compared += 1
    assert compared >= 2, f"snapshots {versions}, checkpoints {sorted(p.name for p in folder.iterdir())}"

    # The final checkpoint plays with its statistics (its run config, as the
    # learner writes it, names the normalization).
    path = learner.summary()["final_checkpoint"]
    policy = flotilla.load_policy(path)
    assert policy.network.model == model
    tensors = load_file(path)
    for name in ("obs_norm.mean", "obs_norm.var"):
        assert policy.network.statistics[name].tobytes() == tensors[f"model/{name}"].tobytes(), name
    assert np.isfinite(policy(np.array([1.0, 0.0, 9.0]))).all()
