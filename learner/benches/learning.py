"""Learning results over several seeds: every shipped config, the local cluster.

Runs the real `learner` binary (release build) with `--local-actors 2` once per
config and seed, each to its config's `run.total_env_steps`, and prints one
Markdown row per run and a summary per config: the median and range of the
final mean return (last 100 episodes, from the JSON summary), of the wall
time, and how many seeds reached the target.

    deploy/local.sh cargo build --release --bin learner --bin actor
    python3 learner/benches/learning.py [--seeds 1 2 3] [--configs acrobot textmatch ...]

Asynchronous runs differ from machine to machine (how the actors and the
trainer share the cores decides which data each update sees), so quote the
machine with the numbers.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# config -> (target on the final mean return, what it means)
TARGETS = {
    "cartpole": (475.0, "solved (Gymnasium's threshold)"),
    "acrobot": (-100.0, "Gymnasium's threshold"),
    "pendulum": (-250.0, "swings up and balances"),
    "mountaincar": (-110.0, "Gymnasium's threshold"),
    "maze": (0.55, "near the optimum 0.59"),
    "textmatch": (0.9, "mean similarity"),
}


def run(learner, config, seed):
    run_dir = tempfile.mkdtemp(prefix=f"flotilla-learning-{config}-{seed}-")
    summary = run_dir + ".summary.json"
    cmd = [
        learner,
        "--config", os.path.join(ROOT, "configs", f"{config}.toml"),
        "--run-dir", run_dir, "--seed", str(seed), "--summary-json", summary,
        "--local-actors", "2", "--device", "cpu",
        "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
    ]
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(f"{config} seed {seed}: learner failed:\n{out.stdout}\n{out.stderr}")
    s = json.load(open(summary))
    return {"env_steps": s["env_steps"], "wall": wall, "ret": s["mean_return"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--configs", nargs="+", default=list(TARGETS))
    p.add_argument("--learner", default=os.path.join(ROOT, "target", "release", "learner"))
    a = p.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}")
    print("\n| config | seed | env steps | wall s | final mean return |")
    print("| --- | --- | --- | --- | --- |")
    results = {}
    for config in a.configs:
        for seed in a.seeds:
            r = run(a.learner, config, seed)
            results.setdefault(config, []).append(r)
            print(f"| {config} | {seed} | {r['env_steps']:,} | {r['wall']:.1f} | {r['ret']:.3f} |",
                  flush=True)
    print("\n| config | seeds | final mean return: median (range) | wall s: median (range) | target | reached |")
    print("| --- | --- | --- | --- | --- | --- |")
    for config, rs in results.items():
        rets = [r["ret"] for r in rs]
        walls = [r["wall"] for r in rs]
        target, what = TARGETS.get(config, (float("nan"), ""))
        reached = sum(1 for x in rets if x >= target)
        print(f"| {config} | {len(rs)} | {statistics.median(rets):.3f} ({min(rets):.3f} to {max(rets):.3f}) "
              f"| {statistics.median(walls):.1f} ({min(walls):.1f} to {max(walls):.1f}) "
              f"| ≥ {target:g} ({what}) | {reached}/{len(rs)} |")


if __name__ == "__main__":
    main()
