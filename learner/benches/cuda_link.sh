#!/usr/bin/env bash
# The cost of linking libtorch_cuda on a machine without a GPU: start-up time
# and peak resident memory of `learner --version` and of a short local-cluster
# run, for a build without CUDA (FLOTILLA_CUDA=0) and the default build,
# alternating. Build them first:
#
#   FLOTILLA_CUDA=0 deploy/local.sh cargo build --release --bin learner
#   cp target/release/learner /tmp/learner-cpu
#   deploy/local.sh cargo build --release --bin learner
#   cp target/release/learner /tmp/learner-cuda
#   learner/benches/cuda_link.sh
#
# Prints per run: build, `--version` wall s and max RSS KiB, training wall s
# and max RSS KiB (GNU time).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p /tmp/cudabench
for i in 1 2 3 4 5; do
  for b in cpu cuda; do
    v=$( { /usr/bin/time -f "%e %M" /tmp/learner-$b --version >/dev/null; } 2>&1 )
    rm -rf /tmp/cudabench/run-$b
    /usr/bin/time -o /tmp/cudabench/t -f "%e %M" /tmp/learner-$b --config configs/cartpole.toml --run-dir /tmp/cudabench/run-$b --local-actors 2 --total-env-steps 100000 --device auto >/dev/null 2>/tmp/cudabench/log-$b; t=$(cat /tmp/cudabench/t)
    echo "$b version: $v train: $t"
  done
done
