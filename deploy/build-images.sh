#!/usr/bin/env bash
# Builds Flotilla's container images on a machine that cannot pull images.
#
#   deploy/build-images.sh [TAG]     (default TAG: dev)
#
# Produces flotilla/actor:TAG, flotilla/learner:TAG and flotilla/prometheus:TAG
# from a Debian base made locally (debootstrap + docker import) and binaries
# built on this host with deploy/local.sh. The images match what
# deploy/docker/Dockerfile builds from public images (same users, paths,
# entrypoints and defaults); this route only replaces the base and the builder.
# Needs: docker, debootstrap (apt-get install debootstrap), root or sudo for
# debootstrap, and network access to a Debian mirror.
#
# Environment:
#   FLOTILLA_BASE_IMAGE   base image name (default flotilla/base:bookworm; built when missing)
#   DEBIAN_MIRROR         mirror for debootstrap and apt (default http://deb.debian.org/debian)
#   CARGO_PROFILE         release (default) or dev
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "${1:-}" = "--base-only" ]; then TAG=; else TAG=${1:-dev}; fi
BASE=${FLOTILLA_BASE_IMAGE:-flotilla/base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PROFILE=${CARGO_PROFILE:-release}

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

stage_context() {
  CONTEXT=$(mktemp -d /var/tmp/flotilla-context.XXXXXX)
  trap 'rm -rf "$CONTEXT"' EXIT
  cp "$BIN_DIR/actor" "$BIN_DIR/learner" "$CONTEXT/"
  cp -r "$ROOT/configs" "$CONTEXT/configs"
  "$ROOT/deploy/docker/collect-libs.sh" "$BIN_DIR/learner" "$CONTEXT/lib"
  strip --strip-unneeded "$CONTEXT/actor" "$CONTEXT/learner" 2>/dev/null || true
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

if [ "${1:-}" = "--base-only" ]; then build_base; exit 0; fi
build_base
build_binaries
stage_context
for target in prometheus actor learner; do build_image "$target"; done
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep "^flotilla/.*:$TAG" >&2
