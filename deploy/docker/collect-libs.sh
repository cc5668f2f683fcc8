#!/usr/bin/env bash
# Copies the shared libraries BINARY needs that a plain Debian system lacks
# (libtorch and the libraries bundled with it) into DEST.
#
#   collect-libs.sh BINARY DEST
#
# Resolution follows the binary's rpath (set by the learner's build script) and
# LD_LIBRARY_PATH; libraries found under /lib, /usr/lib or /lib64 are left to
# the image's own Debian.
set -euo pipefail
bin=$1 dest=$2
mkdir -p "$dest"
missing=$(ldd "$bin" | awk '/not found/ {print $1}')
if [ -n "$missing" ]; then
  echo "collect-libs: $bin needs libraries that cannot be found: $missing" >&2
  exit 1
fi
ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | while read -r lib; do
  case "$(readlink -f "$lib")" in
    /lib/* | /usr/lib/* | /lib64/*) ;;
    *) cp -L "$lib" "$dest/" ;;
  esac
done
