"""`flotilla-actor` processes against a scripted learner (fake_learner.py),
for what the real learner cannot be made to do on cue: stopping within the
grace while the learner's ingest pushes back and the environment is slow, an
environment that fails while the learner is away, a built-in run's `[env]`
settings."""

import json
import signal
import time
import urllib.request

from fake_learner import FakeLearner
from harness import free_port, parse_metrics, start_actor

SLOW_ENV = ["--env", "Slow-v0", "--make", "flotilla_test_envs:make_slow"]


def wait_until(predicate, timeout: float, what: str, log=None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{log.read_text() if log else ''}")
        time.sleep(0.05)


def actor_metrics(port: int) -> dict[str, float]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            return parse_metrics(r.read().decode())
    except OSError:
        return {}


def test_sigterm_while_the_learner_pushes_back_exits_0_well_within_the_grace(tmp_path):
    # Chunks of 9 observations of 128 KiB that the learner never reads: the
    # first one fills the stream's window, the second waits in the actor's
    # one-chunk slot, so the end of the stream cannot even be queued. The
    # environment takes 0.1 s a step, 0.8 s a chunk.
    grace = 6.0
    learner = FakeLearner(chunk_len=8, read_chunks=0)
    metrics_port = free_port()
    log = tmp_path / "actor.log"
    kwargs = json.dumps({"delay": 0.1, "size": 32768})
    p = start_actor(learner.url, *SLOW_ENV, "--env-kwargs", kwargs, "--metrics-listen", f"127.0.0.1:{metrics_port}",
                    "--shutdown-grace-seconds", str(grace), log=log)  # fmt: skip
    try:

        def pushed_back() -> bool:
            m = actor_metrics(metrics_port)
            return m.get("flotilla_actor_chunk_send_duration_seconds_count", 0) >= 2

        wait_until(pushed_back, 60, "two chunks handed to a stream that is not read", log)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        code = p.wait(3 * grace)
        took = time.monotonic() - t0
        text = log.read_text()
        assert code == 0, text
        # Closing the stream gets half the grace (3 s) in all; the
        # environments stop within a step, dropping the chunk in hand.
        assert took < grace - 1.0, f"stopping took {took:.1f} s\n{text}"
        assert "actor stopped" in text, text
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        learner.stop()


def test_an_environment_that_fails_while_the_learner_is_away_ends_the_actor(tmp_path):
    learner = FakeLearner(chunk_len=4)
    flag = tmp_path / "explode"
    log = tmp_path / "actor.log"
    # One chunk a second: the chunks queued while the learner is away take
    # seconds to fill the queue, so the environment still steps then.
    kwargs = json.dumps({"delay": 0.0, "explode_when": str(flag)})
    p = start_actor(learner.url, *SLOW_ENV, "--env-kwargs", kwargs, "--max-steps-per-second", "4", log=log)
    try:
        wait_until(lambda: learner.chunks >= 1, 60, "a first chunk", log)
        learner.stop()
        wait_until(lambda: "learner unreachable" in log.read_text(), 30, "the outage", log)
        flag.touch()
        code = p.wait(30)
        text = log.read_text()
        assert code == 1, text
        assert "error: environment thread: RuntimeError: the environment exploded" in text, text
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_builtin_runs_env_settings_are_warned_about_once(tmp_path):
    # The learner ends every stream after two chunks: the actor reconnects
    # to the same run, and says once that it does not apply the settings.
    learner = FakeLearner(chunk_len=4, end_stream_after=2, env_config_toml="max_episode_steps = 200\n")
    log = tmp_path / "actor.log"
    p = start_actor(learner.url, *SLOW_ENV, "--env-kwargs", '{"delay": 0.0}', log=log)
    try:
        wait_until(lambda: learner.hellos >= 3, 60, "three sessions", log)
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0, log.read_text()
        text = log.read_text()
        assert text.count("the environments carry on") >= 2, text
        assert text.count("the run's [env] settings are not applied") == 1, text
        assert "max_episode_steps = 200" in text, text
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        learner.stop()
