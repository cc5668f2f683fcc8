"""Shared fixtures.

The tests import `flotilla` from this working tree (python/), not from an
installed copy, and start actors as `python -m flotilla` with the same tree
first on PYTHONPATH (see harness.py).

Tests that use the `learner_bin` fixture (directly or through
`start_learner`) run the real `learner` binary. Its folder comes from
FLOTILLA_BIN_DIR (default: <repo>/target/debug); when the binary is absent
those tests are skipped and say where they looked (or fail, when
FLOTILLA_ALLOW_SKIP is set without `learner`: see harness.skip).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(_TESTS.parent))
sys.path.insert(1, str(_TESTS))

from harness import Learner, bin_dir, skip  # noqa: E402


@pytest.fixture(scope="session")
def learner_bin() -> Path:
    path = bin_dir() / "learner"
    if not path.exists():
        skip(
            "learner",
            f"the learner binary is not at {path}: build it (cargo build --bin learner) "
            "or point FLOTILLA_BIN_DIR at its folder",
        )
    return path


@pytest.fixture
def start_learner(learner_bin, tmp_path):
    """`start_learner(config_toml, *extra_flags)` -> a running `Learner`,
    stopped at the end of the test."""
    started: list[Learner] = []

    def start(config: str, *extra: str, port: int | None = None) -> Learner:
        f = tmp_path / f"learner{len(started)}"
        f.mkdir(parents=True, exist_ok=True)
        learner = Learner(learner_bin, f, config, *extra, port=port)
        started.append(learner)
        return learner

    yield start
    for learner in started:
        learner.close()


@pytest.fixture
def actors():
    """A list to put actor processes in; each is stopped at the end of the test."""
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
