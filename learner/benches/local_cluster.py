"""Local-cluster benchmark on CartPole-v1: time and steps to solve, throughput, lag.

Runs the real `learner` binary with `--local-actors 2` (release build) once per
seed and reads each run's metrics.jsonl. Prints a Markdown table:

- seconds and env steps until the mean return of the last 100 episodes first
  reaches 475 (wall-clock from the learner's start);
- steady-state env steps/s and samples trained/s (second half of the run);
- median and p99 policy lag of the chunks trained on;
- learner-idle fraction (1 - time spent in updates / wall time).

    deploy/local.sh cargo build --release --bin learner
    python3 learner/benches/local_cluster.py [--seeds 1 2 3] [--config configs/cartpole.toml]

Before/after a change, side by side in one run (seed by seed, alternating):

    cp target/release/learner /tmp/learner-before   # built from the old commit
    python3 learner/benches/local_cluster.py --baseline /tmp/learner-before
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(round((len(v) - 1) * q)))]


def run(config, seed, actors, target, learner):
    run_dir = tempfile.mkdtemp(prefix=f"flotilla-bench-{seed}-")
    cmd = [
        learner,
        "--config", config, "--run-dir", run_dir, "--seed", str(seed),
        "--local-actors", str(actors), "--device", "cpu",
        "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"learner failed:\n{out.stdout}\n{out.stderr}")
    rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if l.strip()]
    solved = next((r for r in rows if (r.get("episode_return_mean") or 0) >= target), None)
    half = rows[len(rows) // 2]
    last = rows[-1]
    dt = last["wall_seconds"] - half["wall_seconds"]
    steps_per_s = (last["env_steps"] - half["env_steps"]) / dt if dt > 0 else float("nan")
    lags = [l for r in rows for l in r.get("policy_lags", [])]
    return {
        "seed": seed,
        "solved_s": solved["wall_seconds"] if solved else None,
        "solved_steps": solved["env_steps"] if solved else None,
        "steps_per_s": steps_per_s,
        "final_return": last.get("episode_return_mean"),
        "lag_p50": pct(lags, 0.5),
        "lag_p99": pct(lags, 0.99),
        "idle": 1.0 - last["busy_seconds"] / last["wall_seconds"],
    }


def table(results):
    print("| seed | s to 475 | env steps to 475 | env steps/s (= trained/s) | final return | lag p50 | lag p99 | learner idle |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        fmt = lambda x, f: "not reached" if x is None else format(x, f)
        print(f"| {r['seed']} | {fmt(r['solved_s'], '.1f')} | {fmt(r['solved_steps'], 'd')} | "
              f"{r['steps_per_s']:.0f} | {r['final_return']:.1f} | {r['lag_p50']} | {r['lag_p99']} | {r['idle']:.0%} |")
    solved = [r for r in results if r["solved_s"] is not None]
    if solved:
        print(f"\nmedian over {len(results)} seeds: {statistics.median(r['solved_s'] for r in solved):.1f} s and "
              f"{statistics.median(r['solved_steps'] for r in solved):.0f} env steps to 475 "
              f"({len(solved)}/{len(results)} solved); "
              f"{statistics.median(r['steps_per_s'] for r in results):.0f} env steps/s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "cartpole.toml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--target", type=float, default=475.0)
    ap.add_argument("--learner", default=os.path.join(ROOT, "target", "release", "learner"))
    ap.add_argument("--baseline", help="another learner binary, run seed by seed alternating with --learner")
    args = ap.parse_args()
    if not args.baseline:
        table([run(args.config, s, args.actors, args.target, args.learner) for s in args.seeds])
        return
    before, after = [], []
    for s in args.seeds:
        before.append(run(args.config, s, args.actors, args.target, args.baseline))
        after.append(run(args.config, s, args.actors, args.target, args.learner))
    print(f"### before: {args.baseline}\n")
    table(before)
    print(f"\n### after: {args.learner}\n")
    table(after)
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    print(f"\nafter / before, median env steps/s: {med(after, 'steps_per_s') / med(before, 'steps_per_s'):.3f}")


if __name__ == "__main__":
    main()
