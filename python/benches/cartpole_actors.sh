#!/usr/bin/env bash
# Python actors against Rust actors on CartPole-v1, side by side: for each
# seed, the release learner on configs/cartpole.toml with two separate `actor`
# processes, then the same config with `source = "external"` and two
# `flotilla-actor` processes stepping Gymnasium's CartPole-v1. Prints one row
# per run: actors, seed, wall seconds, env steps trained, trained/s, mean return.
#
#   deploy/local.sh cargo build --release --bin learner --bin actor
#   deploy/local.sh test   # once: makes the Python actor's venv
#   python/benches/cartpole_actors.sh 1 2 3
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
PY_VENV=${FLOTILLA_PYTHON_VENV:-${FLOTILLA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flotilla}/python-actor}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
sed 's/^id = "CartPole-v1"$/id = "CartPole-v1"\nsource = "external"/' configs/cartpole.toml >"$WORK/external.toml"
grep -q '^source = "external"' "$WORK/external.toml"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() {
  local kind=$1 seed=$2 cfg=configs/cartpole.toml port dir pids=()
  [ "$kind" = python ] && cfg=$WORK/external.toml
  port=$(free_port)
  dir=$WORK/$kind-$seed
  target/release/learner --config "$cfg" --run-dir "$dir" --listen "127.0.0.1:$port" \
    --metrics-listen 127.0.0.1:0 --seed "$seed" --summary-json "$dir.json" >"$dir.log" 2>&1 &
  local learner=$!
  for name in a b; do
    if [ "$kind" = rust ]; then
      target/release/actor --learner "http://127.0.0.1:$port" --name "$name" 2>/dev/null &
    else
      "$PY_VENV/bin/flotilla-actor" --learner "http://127.0.0.1:$port" --env CartPole-v1 --name "$name" 2>/dev/null &
    fi
    pids+=($!)
  done
  wait "$learner"
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  python3 - "$dir.json" "$kind" "$seed" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {d['wall_seconds']:.1f} | {d['env_steps']} | {d['env_steps'] / d['wall_seconds']:.0f} | {d['mean_return']:.1f} |")
PY
}

echo "| actors | seed | wall s | env steps | trained/s | mean return |"
echo "| --- | --- | --- | --- | --- | --- |"
for seed in "${@:-1}"; do
  run rust "$seed"
  run python "$seed"
done
