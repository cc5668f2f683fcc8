"""Helpers of the tests that run real processes: `python -m flotilla` actors
and the real `learner` binary, on free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PYTHON_DIR = Path(__file__).resolve().parent.parent
TESTS_DIR = Path(__file__).resolve().parent
REPO = PYTHON_DIR.parent


def skip(stage: str, reason: str) -> None:
    """Skips a test that cannot run its stage here (`"learner"`,
    `"grpcio-tools"`, `"openssl"`, `"atari"`), as the Rust tests do
    (`common/src/testing.rs`): when FLOTILLA_ALLOW_SKIP is set (CI sets it to
    the stages its machines may lack, comma-separated), a skip of any other
    stage fails the test instead, so a green run cannot hide a stage that did
    not run."""
    import pytest

    allowed = os.environ.get("FLOTILLA_ALLOW_SKIP")
    if allowed is not None and stage not in [s.strip() for s in allowed.split(",")]:
        pytest.fail(
            f"the {stage} stage cannot run here ({reason}) and FLOTILLA_ALLOW_SKIP={allowed!r} "
            "does not allow skipping it"
        )
    pytest.skip(f"skipped ({stage}): {reason}")


def bin_dir() -> Path:
    return Path(os.environ.get("FLOTILLA_BIN_DIR") or REPO / "target" / "debug")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def actor_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of an actor subprocess: this tree and the tests' helper
    environments importable, no FLOTILLA_* settings leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTILLA_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(PYTHON_DIR), str(TESTS_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start_actor(
    port: int | str, *args: str, name: str = "a", env: dict[str, str] | None = None, log: Path | None = None
):
    """A `python -m flotilla` actor process against the learner on `port`
    (or a full URL); stderr goes to `log` (or a pipe)."""
    url = port if isinstance(port, str) else f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "flotilla", "--learner", url, "--name", name, *args]
    stderr = open(log, "wb") if log else subprocess.PIPE
    return subprocess.Popen(cmd, env=actor_env(env), stdout=subprocess.DEVNULL, stderr=stderr)


def run_actor(port: int | str, *args: str, timeout: float = 60, name: str = "a", env=None):
    """Runs an actor to its end; returns (exit code, stderr)."""
    p = start_actor(port, *args, name=name, env=env)
    try:
        _, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
        raise AssertionError(f"actor still running after {timeout} s:\n{err.decode(errors='replace')}") from None
    return p.returncode, err.decode(errors="replace")


def stop_process(p: subprocess.Popen, timeout: float = 20) -> int | None:
    """SIGTERM, then SIGKILL if it lingers; the exit code of the first."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            return None
    return p.returncode


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format as {"name{labels}": value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            out[key] = float(value)
        except ValueError:
            pass
    return out


class Learner:
    """A real `learner` process on free loopback ports, in a temp folder."""

    def __init__(self, binary: Path, folder: Path, config: str, *extra: str, port: int | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.metrics_port = free_port()
        self.run_dir = folder / "run"
        self.summary_path = folder / "summary.json"
        self.log_path = folder / "learner.log"
        (folder / "config.toml").write_text(config)
        cmd = [
            str(binary),
            "--config", str(folder / "config.toml"),
            "--run-dir", str(self.run_dir),
            "--listen", f"127.0.0.1:{self.port}",
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--device", "cpu",
            "--summary-json", str(self.summary_path),
            *extra,
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOTILLA_")}
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        self._wait_listening()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_listening(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"learner exited with {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"learner not listening after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return parse_metrics(r.read().decode())

    def wait_for(self, predicate, timeout: float = 90, what: str = "a condition") -> dict[str, float]:
        """Polls the metrics until `predicate(metrics)` holds; returns them."""
        deadline = time.monotonic() + timeout
        m: dict[str, float] = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"learner exited while waiting for {what}:\n{self.log()}")
            try:
                m = self.metrics()
            except OSError:
                m = {}
            if m and predicate(m):
                return m
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}; last metrics {m}\n{self.log()}")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"learner still running after {timeout} s:\n{self.log()}") from None

    def summary(self) -> dict:
        return json.loads(self.summary_path.read_text())

    def close(self) -> None:
        stop_process(self.process, timeout=30)
        self._log.close()


def dropped(metrics: dict[str, float], reason: str) -> float:
    return metrics.get(f'flotilla_chunks_dropped_total{{reason="{reason}"}}', 0.0)


#: Drop reasons that mean an actor sent something wrong.
BAD_DROP_REASONS = ("invalid", "out_of_bounds", "too_large", "wrong_run", "future_version", "duplicate", "wrong_actor")
