#!/usr/bin/env bash
# Flotilla's local entry point: installs what the build needs, then runs cargo.
#
#   deploy/local.sh train [learner flags...]   build and run a training (the local cluster)
#   deploy/local.sh test  [cargo test flags...] run every test: the workspace, then python/tests
#   deploy/local.sh cargo ARGS...              any cargo command with libtorch set up
#   deploy/local.sh env                        print the exports, for `eval "$(deploy/local.sh env)"`
#
# libtorch comes from PyPI's torch==2.13.0 (the version tch 0.26 expects),
# installed once into a cache folder shared by every clone:
#   ${FLOTILLA_CACHE:-${XDG_CACHE_HOME:-~/.cache}/flotilla}/torch-2.13.0
# Set LIBTORCH yourself to use another libtorch (e.g. one unpacked from
# pytorch.org); then nothing is installed. The learner records libtorch's folder
# as an rpath, so the binaries run without LD_LIBRARY_PATH.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TORCH_VERSION=2.13.0
CACHE=${FLOTILLA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}
VENV=${FLOTILLA_TORCH_VENV:-$CACHE/torch-$TORCH_VERSION}
PYTHON=${PYTHON:-python3}

log() { printf 'flotilla: %s\n' "$*" >&2; }

torch_ok() {
  [ -x "$VENV/bin/python" ] &&
    "$VENV/bin/python" - "$TORCH_VERSION" >/dev/null 2>&1 <<'PY'
import sys, importlib.metadata as m
sys.exit(0 if m.version("torch").split("+")[0] == sys.argv[1] else 1)
PY
}

install_torch() {
  mkdir -p "$CACHE"
  # One installer at a time across clones and CI runs.
  exec 9>"$CACHE/.install.lock"
  flock 9
  if torch_ok; then return; fi
  log "installing torch==$TORCH_VERSION from PyPI into $VENV (once; about 4.8 GB)"
  rm -rf "$VENV.partial"
  "$PYTHON" -m venv "$VENV.partial"
  "$VENV.partial/bin/pip" install --disable-pip-version-check --no-input -q "torch==$TORCH_VERSION"
  # Only `bin/python` and site-packages are used, and both survive the rename
  # (pip's own script shebangs would not, and are not needed).
  rm -rf "$VENV"
  mv "$VENV.partial" "$VENV"
  torch_ok || { log "torch install in $VENV failed"; exit 1; }
}

setup_libtorch() {
  if [ -n "${LIBTORCH:-}" ]; then
    [ -d "$LIBTORCH/lib" ] || { log "LIBTORCH=$LIBTORCH has no lib/ folder"; exit 1; }
    return
  fi
  torch_ok || install_torch
  # Small extras the tests use to read our files the way users do.
  if ! "$VENV/bin/python" -c 'import safetensors, numpy' >/dev/null 2>&1; then
    log "installing safetensors and numpy into $VENV"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q safetensors numpy
  fi
  export VIRTUAL_ENV="$VENV"
  export PATH="$VENV/bin:$PATH"
  export LIBTORCH_USE_PYTORCH=1
}

# The Python actor (python/) and its tests: a venv of their own, shared by
# every clone, made once and again when python/pyproject.toml changes. The
# package itself is reinstalled from this tree each time (checking that
# `pip install ./python` works); the tests import the tree directly.
PY_VENV=${FLOTILLA_PYTHON_VENV:-$CACHE/python-actor}

# Debian packages some checks use: promtool (package `prometheus`) checks
# every exported series in tests/tests/metrics.rs, headless chromium looks at
# the live page in python/tests/test_live_page.py. Installed when this is a
# Debian machine we may change; otherwise those checks say they skipped.
apt_tool() { # COMMAND PACKAGE WHAT-FOR
  command -v "$1" >/dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing $1 (Debian's $2 package) for $3"
    { apt-get install -y -q --no-install-recommends "$2" ||
      { apt-get update -q && apt-get install -y -q --no-install-recommends "$2"; }; } >/dev/null 2>&1 ||
      log "could not install $1; $3 will skip it"
  fi
}

setup_python_actor() {
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.python-actor.lock"
  flock 8
  local stamp
  stamp=$(sha256sum "$ROOT/python/pyproject.toml" | cut -d' ' -f1)
  if [ "$(cat "$PY_VENV/.flotilla-deps" 2>/dev/null)" != "$stamp" ]; then
    log "installing the Python actor's dependencies into $PY_VENV (once)"
    rm -rf "$PY_VENV"
    "$PYTHON" -m venv "$PY_VENV"
    "$PY_VENV/bin/pip" install --disable-pip-version-check --no-input -q "setuptools>=77"
    "$PY_VENV/bin/pip" install --disable-pip-version-check --no-input -q "$ROOT/python[test]"
    echo "$stamp" >"$PY_VENV/.flotilla-deps"
  fi
  "$PY_VENV/bin/pip" install --disable-pip-version-check --no-input -q \
    --no-deps --no-build-isolation --force-reinstall "$ROOT/python"
  flock -u 8
}

cmd=${1:-help}
[ $# -gt 0 ] && shift
case "$cmd" in
  train)
    setup_libtorch
    cd "$ROOT"
    cargo build --release --bin learner --bin actor
    if [ $# -eq 0 ]; then set -- --config configs/cartpole.toml --local-actors 2; fi
    exec "$ROOT/target/release/learner" "$@"
    ;;
  test)
    setup_libtorch
    cd "$ROOT"
    # The end-to-end tests run the real binaries: build them first.
    cargo build --workspace --bins
    setup_python_actor
    apt_tool promtool prometheus "the metrics check"
    apt_tool chromium chromium "the live page check"
    status=0
    cargo test --workspace --all-targets "$@" || status=$?
    log "Python actor tests (python/tests, against target/debug/learner)"
    FLOTILLA_BIN_DIR="$ROOT/target/debug" "$PY_VENV/bin/python" -m pytest -q -p no:cacheprovider "$ROOT/python/tests" || status=$?
    exit "$status"
    ;;
  cargo)
    setup_libtorch
    cd "$ROOT"
    exec cargo "$@"
    ;;
  env)
    setup_libtorch >&2
    if [ -z "${LIBTORCH:-}" ]; then
      printf 'export VIRTUAL_ENV=%q\nexport PATH=%q\nexport LIBTORCH_USE_PYTORCH=1\n' "$VIRTUAL_ENV" "$PATH"
    fi
    ;;
  help|-h|--help)
    sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    ;;
  *)
    log "unknown command '$cmd' (train, test, cargo, env, help)"
    exit 64
    ;;
esac
