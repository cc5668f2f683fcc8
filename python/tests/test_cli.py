"""`flotilla-actor` as a program: usage errors, signals and the metrics
endpoint, without a learner."""

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from harness import actor_env, free_port, parse_metrics, start_actor

NOBODY = "http://127.0.0.1:1"  # nothing listens there


def actor(*args, env=None, timeout=60):
    p = subprocess.run(
        [sys.executable, "-m", "flotilla", *args],
        env=actor_env(env),
        capture_output=True,
        timeout=timeout,
    )
    return p.returncode, p.stderr.decode(errors="replace"), p.stdout.decode(errors="replace")


def test_help_and_version():
    code, _, out = actor("--help")
    assert code == 0 and "--make MODULE:CALLABLE" in out and "FLOTILLA_LEARNER" in out
    assert "--atari" in out and "FLOTILLA_ATARI" in out
    code, _, out = actor("--version")
    assert code == 0 and "flotilla-actor" in out


def test_the_environment_is_required():
    code, err, _ = actor("--learner", NOBODY)
    assert code == 2 and "--env" in err


@pytest.mark.parametrize(
    "args,env,needle",
    [
        (["--env", "CartPole-v1", "--env-kwargs", "{nope"], None, "--env-kwargs is not JSON"),
        (["--env", "CartPole-v1", "--env-kwargs", "[1]"], None, "must be a JSON object"),
        (["--env", "NoSuchEnv-v0"], None, "cannot build the environment"),
        (["--env", "X", "--make", "no_such_module:make"], None, "cannot import module"),
        (["--env", "X", "--make", "flotilla_test_envs:missing"], None, "has no attribute"),
        (["--env", "Blackjack-v1"], None, "not supported"),
        (["--env", "CartPole-v1", "--learner", "https://127.0.0.1:1"], None, "needs --tls-ca"),
        (["--env", "CartPole-v1", "--learner", "127.0.0.1:50051"], None, "invalid learner URL"),
        (["--env", "CartPole-v1", "--tls-domain", "x"], None, "need --tls-ca"),
        (["--env", "CartPole-v1", "--tls-cert", "c.pem"], None, "go together"),
        (
            ["--env", "CartPole-v1", "--tls-ca", "/nonexistent/ca.pem", "--learner", "https://h:1"],
            None,
            "cannot read CA file",
        ),
        (["--env", "CartPole-v1", "--auth-token-file", "/nonexistent/token"], None, "cannot read token file"),
        (["--env", "CartPole-v1"], {"FLOTILLA_AUTH_TOKEN": "short"}, "16 to 4096"),
        (["--env", "CartPole-v1", "--metrics-listen", "nonsense"], None, "cannot serve metrics"),
    ],
)
def test_usage_errors_exit_64_and_say_why(args, env, needle):
    code, err, _ = actor("--learner", NOBODY, *args, env=env) if "--learner" not in args else actor(*args, env=env)
    assert code == 64, err
    assert "error: " in err and needle in err, err


def test_atari_without_ale_py_says_how_to_install_it(tmp_path):
    # An ale_py that cannot be imported, first on PYTHONPATH.
    (tmp_path / "ale_py").mkdir()
    (tmp_path / "ale_py" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    path = os.pathsep.join([str(tmp_path), actor_env()["PYTHONPATH"]])
    code, err, _ = actor("--learner", NOBODY, "--env", "ALE/Breakout-v5", "--atari", env={"PYTHONPATH": path})
    assert code == 64, err
    assert "error: --atari needs ale-py" in err and 'pip install "flotilla[atari]"' in err, err


def test_bad_flag_values_are_refused_by_the_parser():
    code, err, _ = actor("--env", "CartPole-v1", "--num-envs", "0")
    assert code == 2 and "--num-envs" in err
    code, err, _ = actor("--env", "CartPole-v1", env={"FLOTILLA_MAX_STEPS_PER_SECOND": "-1"})
    assert code == 2 and "FLOTILLA_MAX_STEPS_PER_SECOND" in err
    code, err, _ = actor("--env", "CartPole-v1", env={"FLOTILLA_ATARI": "maybe"})
    assert code == 2 and "FLOTILLA_ATARI" in err


def test_sigterm_while_the_learner_is_away_exits_0_and_metrics_are_served():
    port = free_port()
    # Settings from the environment; an empty variable counts as unset.
    env = {"FLOTILLA_ENV": "CartPole-v1", "FLOTILLA_METRICS_LISTEN": f"127.0.0.1:{port}", "FLOTILLA_NUM_ENVS": ""}
    p = start_actor(NOBODY, env=env)
    try:
        deadline = time.monotonic() + 30
        text = None
        while time.monotonic() < deadline and text is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                time.sleep(0.2)
        assert text is not None, "no metrics endpoint"
        m = parse_metrics(text)
        assert m["flotilla_actor_env_steps_total"] == 0
        assert "flotilla_actor_reconnects_total" in m and "flotilla_actor_policy_version" in m
        assert "# TYPE flotilla_actor_episodes_total counter" in text
        time.sleep(0.5)
        p.send_signal(signal.SIGTERM)
        code = p.wait(20)
        err = p.stderr.read().decode()
        assert code == 0, err
        assert "learner unreachable" in err and "actor stopped" in err
    finally:
        if p.poll() is None:
            p.kill()
