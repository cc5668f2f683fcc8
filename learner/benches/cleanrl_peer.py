"""Peer benchmark on CartPole-v1: Flotilla's local cluster against CleanRL's PPO.

For each seed, runs CleanRL 1.2.0's `cleanrl/ppo.py` with its default
hyperparameters (500k env steps, 4 envs, on the CPU) and then Flotilla's local
cluster (`local_cluster.py`: `configs/cartpole.toml`, 2 actors), on the same
machine, and times both the same way:

- seconds from process launch and env steps until the mean return of the last
  100 finished episodes first reaches 475;
- steady env steps/s over the second half of the run's env steps.

Prints a Markdown table, the medians over seeds and their ratios.

CleanRL is installed on first use into its own venv in Flotilla's cache
(`~/.cache/flotilla/cleanrl-1.2.0`), which borrows torch from the libtorch
install of `deploy/local.sh` through a .pth file. CleanRL 1.2.0 declares
Python < 3.11 and pins pygame 2.1.0 (no wheel for 3.11); `ppo.py` runs on 3.11
as is, and pygame is only imported by gym's CartPole for rendering, so the
newest pygame stands in.

    deploy/local.sh cargo build --release --bins
    python3 learner/benches/cleanrl_peer.py [--seeds 1 2 3]
"""
import argparse
import collections
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import local_cluster

CACHE = os.environ.get("FLOTILLA_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "flotilla")
TORCH_VENV = os.environ.get("FLOTILLA_TORCH_VENV") or os.path.join(CACHE, "torch-2.13.0")
CLEANRL_VENV = os.path.join(CACHE, "cleanrl-1.2.0")
CLEANRL_DEPS = ["gym==0.23.1", "tensorboard==2.21.0", "pygame==2.6.1"]
EPISODE_LINE = re.compile(r"global_step=(\d+), episodic_return=\[?([-+.\deE]+)")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def site_packages(python):
    out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def install_cleanrl():
    python = os.path.join(CLEANRL_VENV, "bin", "python")
    if os.path.exists(python):
        return python
    torch_python = os.path.join(TORCH_VENV, "bin", "python")
    if not os.path.exists(torch_python):
        sys.exit(f"no torch in {TORCH_VENV}: run `deploy/local.sh cargo build --release --bins` first")
    log(f"installing cleanrl==1.2.0 into {CLEANRL_VENV}")
    partial = CLEANRL_VENV + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run([torch_python, "-m", "venv", partial], check=True)
    partial_python = os.path.join(partial, "bin", "python")
    with open(os.path.join(site_packages(partial_python), "flotilla-torch.pth"), "w") as f:
        f.write(site_packages(torch_python) + "\n")
    pip = [partial_python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run(pip + ["--no-deps", "--ignore-requires-python", "cleanrl==1.2.0"], check=True)
    subprocess.run(pip + CLEANRL_DEPS, check=True)
    os.rename(partial, CLEANRL_VENV)
    return python


def run_cleanrl(python, seed, target):
    cmd = [python, "-m", "cleanrl.ppo", "--env-id", "CartPole-v1", "--seed", str(seed), "--cuda", "False"]
    episodes = []  # (seconds since launch, global_step, return)
    tail = collections.deque(maxlen=30)
    with tempfile.TemporaryDirectory(prefix=f"cleanrl-peer-{seed}-") as cwd:
        launched = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in proc.stdout:
            now = time.monotonic() - launched
            tail.append(line)
            if m := EPISODE_LINE.match(line):
                episodes.append((now, int(m[1]), float(m[2])))
        proc.wait()
        wall = time.monotonic() - launched
    if proc.returncode != 0 or not episodes:
        sys.exit(f"cleanrl failed:\n{''.join(tail)}")

    window = collections.deque(maxlen=100)
    solved, best = None, float("-inf")
    for seconds, step, ret in episodes:
        window.append(ret)
        mean = sum(window) / len(window)
        best = max(best, mean)
        if solved is None and mean >= target:
            solved = (seconds, step)
    last = episodes[-1]
    half = next(e for e in episodes if e[1] >= last[1] / 2)
    return {
        "system": "CleanRL", "seed": seed,
        "solved_s": solved[0] if solved else None,
        "solved_steps": solved[1] if solved else None,
        "steps_per_s": (last[1] - half[1]) / (last[0] - half[0]),
        "final_return": sum(window) / len(window),
        "best_return": best,
        "wall_s": wall,
    }


def run_flotilla(config, seed, actors, target):
    with tempfile.TemporaryDirectory(prefix="flotilla-peer-") as parent:
        # local_cluster.run makes its run dir with mkdtemp; putting it here
        # lets us read when the learner wrote config.toml, just before its
        # clock (metrics' wall_seconds) starts.
        tempfile.tempdir = parent
        launched = time.time()
        try:
            r = local_cluster.run(config, seed, actors, target)
        finally:
            tempfile.tempdir = None
        wall = time.time() - launched
        (run_dir,) = glob.glob(os.path.join(parent, "flotilla-bench-*"))
        startup = os.stat(os.path.join(run_dir, "config.toml")).st_mtime - launched
    return {
        "system": "Flotilla", "seed": seed,
        "solved_s": startup + r["solved_s"] if r["solved_s"] is not None else None,
        "solved_steps": r["solved_steps"],
        "steps_per_s": r["steps_per_s"],
        "final_return": r["final_return"],
        "best_return": None,
        "wall_s": wall,
    }


def median_seconds(results):
    """Median seconds to the target and whether it is only a lower bound:
    a run that never reached the target counts with its whole duration."""
    seconds = [r["solved_s"] if r["solved_s"] is not None else r["wall_s"] for r in results]
    return statistics.median(seconds), any(r["solved_s"] is None for r in results)


def verdict(ratio, target, lower_bound=False):
    if ratio >= target:
        outcome = "met"
    else:
        outcome = "not established" if lower_bound else "not met"
    return f"{'>= ' if lower_bound else ''}{ratio:.1f}x (target >= {target}x: {outcome})"


def report(results, target):
    print(f"| system | seed | s to {target:g} | env steps to {target:g} | env steps/s | "
          f"final mean return (100 episodes) | process s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        reached = r["solved_s"] is not None
        best = f" (best {r['best_return']:.1f})" if r["best_return"] is not None and not reached else ""
        print(f"| {r['system']} | {r['seed']} | "
              f"{format(r['solved_s'], '.1f') if reached else 'not reached'} | "
              f"{format(r['solved_steps'], ',d') if reached else 'not reached'} | "
              f"{r['steps_per_s']:,.0f} | {r['final_return']:.1f}{best} | {r['wall_s']:.1f} |")

    medians = {}
    print()
    for system in ("CleanRL", "Flotilla"):
        runs = [r for r in results if r["system"] == system]
        seconds, bound = median_seconds(runs)
        steps_per_s = statistics.median(r["steps_per_s"] for r in runs)
        solved = sum(r["solved_s"] is not None for r in runs)
        medians[system] = (seconds, bound, steps_per_s)
        print(f"- {system}, median of {len(runs)} seeds: {'>= ' if bound else ''}{seconds:.1f} s to "
              f"{target:g} ({solved}/{len(runs)} reached), {steps_per_s:,.0f} env steps/s")
    (c_s, c_bound, c_sps), (f_s, f_bound, f_sps) = medians["CleanRL"], medians["Flotilla"]
    if f_bound:
        print(f"- time to {target:g}: no ratio, Flotilla did not reach {target:g} in every seed")
    else:
        print(f"- time to {target:g}, CleanRL / Flotilla: {verdict(c_s / f_s, 10, c_bound)}")
    print(f"- env steps/s, Flotilla / CleanRL: {verdict(f_sps / c_sps, 20)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=os.path.join(local_cluster.ROOT, "configs", "cartpole.toml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--target", type=float, default=475.0)
    args = ap.parse_args()
    python = install_cleanrl()
    results = []
    for seed in args.seeds:
        log(f"seed {seed}: CleanRL")
        results.append(run_cleanrl(python, seed, args.target))
        log(f"seed {seed}: Flotilla")
        results.append(run_flotilla(args.config, seed, args.actors, args.target))
    results.sort(key=lambda r: (r["system"], r["seed"]))
    report(results, args.target)


if __name__ == "__main__":
    main()
