#!/usr/bin/env bash
# Builds Flotilla's container images on a machine that cannot pull images.
#
#   deploy/build-images.sh [TAG [TARGET...]]   (default TAG: dev; default: every target)
#   deploy/build-images.sh --base-only
#
# Produces flotilla/TARGET:TAG for each TARGET of actor-python, prometheus,
# actor and learner, from a Debian base made locally (debootstrap + docker
# import), binaries built on this host with deploy/local.sh, and the Python
# actor's wheels (./python and its dependencies) downloaded on this host with
# pip. The images match what deploy/docker/Dockerfile builds from public
# images (same users, paths, entrypoints and defaults); this route only
# replaces the base and the builder. `deploy/build-images.sh dev actor-python`
# builds the Python actor alone, without building any Rust.
# Needs: docker, debootstrap (apt-get install debootstrap), root or sudo for
# debootstrap, network access to a Debian mirror, and a Python 3 with pip (or
# venv) that reaches PyPI.
#
# Environment:
#   FLOTILLA_BASE_IMAGE   base image name (default flotilla/base:bookworm; built when missing)
#   DEBIAN_MIRROR         mirror for debootstrap and apt (default http://deb.debian.org/debian)
#   CARGO_PROFILE         release (default) or dev
#   PYTHON                the host's Python for pip (default python3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE_ONLY=false
if [ "${1:-}" = "--base-only" ]; then BASE_ONLY=true; shift; fi
TAG=${1:-dev}
if [ $# -gt 0 ]; then shift; fi
# Build order matters to the classic builder (see local.Dockerfile).
ALL_TARGETS=(actor-python prometheus actor learner)
TARGETS=()
for t in "${ALL_TARGETS[@]}"; do
  if [ $# -eq 0 ] || [[ " $* " == *" $t "* ]]; then TARGETS+=("$t"); fi
done
for t in "$@"; do
  case " ${ALL_TARGETS[*]} " in
    *" $t "*) ;;
    *) printf 'build-images: unknown target %s (known: %s)\n' "$t" "${ALL_TARGETS[*]}" >&2; exit 2 ;;
  esac
done
BASE=${FLOTILLA_BASE_IMAGE:-flotilla/base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PROFILE=${CARGO_PROFILE:-release}
PYTHON=${PYTHON:-python3}

log() { printf 'build-images: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

build_base() {
  if docker image inspect "$BASE" >/dev/null 2>&1; then
    log "base $BASE present"
    return
  fi
  if ! command -v debootstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      log "installing debootstrap"
      apt-get install -y -qq debootstrap >&2 || { apt-get update -qq && apt-get install -y -qq debootstrap >&2; }
    else
      log "debootstrap is missing: apt-get install debootstrap"; exit 1
    fi
  fi
  local rootfs
  rootfs=$(mktemp -d /var/tmp/flotilla-rootfs.XXXXXX)
  log "debootstrap bookworm into $rootfs (a few minutes, once)"
  as_root debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$MIRROR" >&2
  as_root chroot "$rootfs" apt-get clean
  as_root rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin
  log "importing $BASE"
  as_root tar -C "$rootfs" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["/bin/bash"]' - "$BASE" >/dev/null
  as_root rm -rf "$rootfs"
}

build_binaries() {
  local flag=--release dir=release
  if [ "$PROFILE" = dev ]; then flag= dir=debug; fi
  # These images are CPU images: FLOTILLA_CUDA=0 leaves libtorch_cuda (and
  # the gigabytes of CUDA libraries it pulls in) out of the learner.
  log "building actor and learner ($PROFILE, CPU only)"
  FLOTILLA_CUDA=0 "$ROOT/deploy/local.sh" cargo build $flag --bin actor --bin learner >&2
  BIN_DIR="$ROOT/target/$dir"
}

wants() { [[ " ${TARGETS[*]} " == *" $1 "* ]]; }

stage_context() {
  CONTEXT=$(mktemp -d /var/tmp/flotilla-context.XXXXXX)
  trap 'rm -rf "$CONTEXT"' EXIT
  if wants actor || wants learner; then
    cp "$BIN_DIR/actor" "$BIN_DIR/learner" "$CONTEXT/"
    cp -r "$ROOT/configs" "$CONTEXT/configs"
    "$ROOT/deploy/docker/collect-libs.sh" "$BIN_DIR/learner" "$CONTEXT/lib"
    strip --strip-unneeded "$CONTEXT/actor" "$CONTEXT/learner" 2>/dev/null || true
  fi
}

# wheels/ of the context: ./python as a wheel and every dependency as a
# binary wheel for the base's Python (Debian bookworm: CPython 3.11, glibc
# 2.36), so that the image build installs with --no-index. Every target needs
# them: the classic builder builds the actor-python stages before the others.
stage_wheels() {
  local pip=("$PYTHON" -m pip) src="$CONTEXT/python-src" arch platforms=() y
  if ! "${pip[@]}" --version >/dev/null 2>&1; then
    log "no pip for $PYTHON: making a venv for it"
    "$PYTHON" -m venv "$CONTEXT/pip-venv" >&2
    pip=("$CONTEXT/pip-venv/bin/python" -m pip)
  fi
  arch=$(uname -m)
  for y in $(seq 36 -1 17); do platforms+=(--platform "manylinux_2_${y}_$arch"); done
  platforms+=(--platform "manylinux2014_$arch")
  log "downloading the Python actor's wheels (CPython 3.11, $arch)"
  # A copy, so the build leaves nothing in python/; a fixed date, so the same
  # sources give the same wheel (and the image build its cached layers).
  mkdir -p "$src" "$CONTEXT/wheels"
  tar -C "$ROOT/python" --exclude=__pycache__ --exclude=build --exclude='*.egg-info' \
    --exclude=.venv --exclude=.pytest_cache -cf - . | tar -C "$src" -xf -
  SOURCE_DATE_EPOCH=315532800 "${pip[@]}" wheel --disable-pip-version-check --no-input -q \
    --no-deps -w "$CONTEXT/wheels" "$src" >&2
  "${pip[@]}" download --disable-pip-version-check --no-input -q -d "$CONTEXT/wheels" \
    --only-binary=:all: --implementation cp --python-version 3.11 "${platforms[@]}" \
    "$CONTEXT"/wheels/flotilla-*.whl >&2
  rm -rf "$src" "$CONTEXT/pip-venv"
}

build_image() {
  local target=$1
  log "image flotilla/$target:$TAG"
  if ! docker build -f "$ROOT/deploy/docker/local.Dockerfile" --build-arg "BASE=$BASE" \
    --target "$target" -t "flotilla/$target:$TAG" "$CONTEXT" >"$CONTEXT/build.log" 2>&1; then
    cat "$CONTEXT/build.log" >&2
    log "building flotilla/$target:$TAG failed"
    exit 1
  fi
}

if $BASE_ONLY; then build_base; exit 0; fi
build_base
if wants actor || wants learner; then build_binaries; fi
stage_context
stage_wheels
for target in "${TARGETS[@]}"; do build_image "$target"; done
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep "^flotilla/.*:$TAG" >&2
