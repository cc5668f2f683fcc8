#!/usr/bin/env bash
# Validates the Kubernetes manifests offline against the bundled schemas of
# kubernetes-validate (strict: unknown fields are errors). Installs the
# validator once into ${FLOTILLA_CACHE:-~/.cache/flotilla}/tools.
#
#   deploy/k8s/validate.sh [KUBERNETES_VERSION]   (default 1.37.0)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${FLOTILLA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}
TOOLS=$CACHE/tools
if ! "$TOOLS/bin/kubernetes-validate" --version >/dev/null 2>&1; then
  echo "validate: installing kubernetes-validate into $TOOLS" >&2
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --disable-pip-version-check --no-input -q kubernetes-validate==1.37.0
fi
manifests=()
for f in "$HERE"/*.yaml; do
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
# Every manifest must be listed in the kustomization, and every listed one must exist.
for f in "${manifests[@]}"; do
  grep -q "^  - $(basename "$f")$" "$HERE/kustomization.yaml" ||
    { echo "validate: $(basename "$f") is not in kustomization.yaml" >&2; exit 1; }
done
"$TOOLS/bin/kubernetes-validate" --strict --quiet -k "${1:-1.37.0}" "${manifests[@]}"
echo "validate: ${#manifests[@]} manifests valid against Kubernetes ${1:-1.37.0}"
