"""The policy-gradient family side by side: every algorithm, same cluster, 3 seeds.

Runs the real `learner` binary (release build, local cluster over loopback
gRPC) and reads each run's metrics.jsonl. Experiments:

- cartpole:  reinforce, a2c, ppo, vtrace on configs/cartpole.toml with the
             shared comparison settings (COMPARISON below; only `algo`
             changes between runs), 2 local actors;
- textmatch: the same four on configs/textmatch.toml, 2 local actors, plus
             PPO with a KL penalty to the initial policy (kl.coef 0.05);
- lag:       CartPole with 8 slow local actors (paced env steps/s, so every
             chunk is several versions old when it arrives): PPO dropping
             chunks older than 4 versions vs IMPALA (V-trace) and PPO with
             V-trace advantages keeping them (max_policy_lag 1000);
- sync:      PPO in synchronous mode with CleanRL's CartPole hyper-parameters
             (1 actor x 4 envs x 128 steps, 500k steps), plus a repeat of the
             first seed to check that a seeded run is repeatable.

Writes a Markdown table per experiment to stdout and to --results (a
fragment included in docs/algorithms.md), and PNGs of the learning curves via
`learner compare`.

    deploy/local.sh cargo build --release --bin learner
    python3 learner/benches/algorithms.py [--seeds 1 2 3] [--only cartpole lag]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LEARNER = os.path.join(ROOT, "target", "release", "learner")
ALGOS = ["reinforce", "a2c", "ppo", "vtrace"]

# The CartPole comparison's batch, epochs and step size, shared by every
# algorithm (configs/cartpole.toml itself is tuned for PPO's wall-clock time).
COMPARISON = ["ppo.batch_size=1024", "ppo.update_epochs=4", "ppo.learning_rate=1e-3"]

# CleanRL ppo.py defaults for CartPole-v1 (4 envs x 128 steps, 4 minibatches).
CLEANRL = [
    "sync=true", "rollout.num_envs=4", "rollout.chunk_len=128",
    "ppo.batch_size=512", "ppo.num_minibatches=4", "ppo.update_epochs=4",
    "ppo.learning_rate=2.5e-4", "ppo.anneal_lr=true", "ppo.gamma=0.99",
    "ppo.gae_lambda=0.95", "ppo.clip_eps=0.2", "ppo.vf_clip=0.2",
    "ppo.ent_coef=0.01", "ppo.vf_coef=0.5", "ppo.max_grad_norm=0.5",
    "ppo.norm_adv=true", "ppo.adam_eps=1e-5",
]


def run(config, seed, sets, steps, actors, extra=()):
    run_dir = tempfile.mkdtemp(prefix=f"flotilla-algo-{seed}-")
    cmd = [LEARNER, "--config", os.path.join(ROOT, "configs", config),
           "--run-dir", run_dir, "--seed", str(seed), "--total-env-steps", str(steps),
           "--local-actors", str(actors), "--device", "cpu",
           "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", *extra]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"learner failed: {' '.join(cmd)}\n{out.stdout}\n{out.stderr[-4000:]}")
    rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if l.strip()]
    return run_dir, rows, time.monotonic() - t0


def summarize(rows, target):
    hit = next((r for r in rows if (r.get("episode_return_mean") or float("-inf")) >= target), None)
    last = rows[-1]
    received = last.get("samples_received", 0)
    stale = last.get("stale_samples", 0)
    return {
        "steps": hit["env_steps"] if hit else None,
        "seconds": hit["wall_seconds"] if hit else None,
        "final": last.get("episode_return_mean"),
        "lag": statistics.median([l for r in rows for l in r.get("policy_lags", [])] or [0]),
        # received counts every valid chunk, the stale ones too
        "stale": stale / received if received else 0.0,
        "kl": last["update"].get("kl_reference") if last["update"].get("kl_coef") else None,
    }


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def table(title, results, target, budget, lag_columns=False):
    lines = [f"#### {title}", "",
             f"Target: mean return of the last 100 episodes ≥ {target}; budget {budget:,} env steps.", ""]
    head = "| algorithm | seeds reaching target | median env steps to target | median seconds to target | final return (per seed) |"
    sep = "|---|---|---|---|---|"
    if lag_columns:
        head += " median policy lag | stale data dropped |"
        sep += "---|---|"
    kl_column = any(r["kl"] is not None for runs in results.values() for r in runs)
    if kl_column:
        head += " final KL to reference (per step) |"
        sep += "---|"
    lines += [head, sep]
    for label, runs in results.items():
        hits = [r for r in runs if r["steps"] is not None]
        steps = statistics.median([r["steps"] for r in hits]) if hits else None
        secs = statistics.median([r["seconds"] for r in hits]) if hits else None
        finals = ", ".join(fmt(r["final"], ".2f") for r in runs)
        line = (f"| {label} | {len(hits)}/{len(runs)} | {fmt(steps, ',.0f')} | "
                f"{fmt(secs, '.1f')} | {finals} |")
        if lag_columns:
            lag = statistics.median([r["lag"] for r in runs])
            stale = statistics.median([r["stale"] for r in runs])
            line += f" {lag:.0f} | {stale:.0%} |"
        if kl_column:
            kls = [r["kl"] for r in runs if r["kl"] is not None]
            line += f" {statistics.median(kls):.4f} |" if kls else " — |"
        lines.append(line)
    lines.append("")
    return "\n".join(lines)


def compare(png, title, labelled_dirs):
    args = [LEARNER, "compare", "--out", png, "--title", title]
    args += [f"{label}={d}" for label, d in labelled_dirs]
    subprocess.run(args, check=True, capture_output=True)


def experiment(name, title, config, variants, seeds, steps, target, actors, out_dir,
               lag_columns=False):
    results, dirs = {}, []
    for label, sets, extra in variants:
        results[label] = []
        for seed in seeds:
            d, rows, wall = run(config, seed, sets, steps, actors, extra)
            s = summarize(rows, target)
            results[label].append(s)
            dirs.append((label, d))
            print(f"  {name} {label} seed {seed}: final {fmt(s['final'], '.2f')}, "
                  f"target at {fmt(s['steps'], ',.0f')} steps / {fmt(s['seconds'], '.1f')} s, "
                  f"wall {wall:.0f} s", file=sys.stderr, flush=True)
    png = os.path.join(out_dir, f"{name}.png")
    compare(png, title, dirs)
    return table(title, results, target, steps, lag_columns) + \
        f"\n![{title}](algorithms/{name}.png)\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--only", nargs="+", default=["cartpole", "textmatch", "lag", "sync"])
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "docs", "algorithms"))
    ap.add_argument("--results", default=None, help="also write the tables to this file")
    ap.add_argument("--cartpole-steps", type=int, default=500_000)
    ap.add_argument("--textmatch-steps", type=int, default=400_000)
    ap.add_argument("--lag-steps", type=int, default=400_000)
    ap.add_argument("--lag-actor-steps-per-second", type=float, default=1500)
    ap.add_argument("--sync-steps", type=int, default=500_000)
    a = ap.parse_args()
    if not os.path.exists(LEARNER):
        sys.exit("build first: deploy/local.sh cargo build --release --bin learner")
    os.makedirs(a.out_dir, exist_ok=True)
    out = []
    algo = lambda x: [(x, [f"algo={x}"], [])]  # noqa: E731
    compared = lambda x: [(x, [f"algo={x}", *COMPARISON], [])]  # noqa: E731
    if "cartpole" in a.only:
        out.append(experiment(
            "cartpole", "CartPole-v1, 2 actors", "cartpole.toml",
            [v for x in ALGOS for v in compared(x)], a.seeds, a.cartpole_steps, 475, 2, a.out_dir))
    if "textmatch" in a.only:
        out.append(experiment(
            "textmatch", "TextMatch-v0, 2 actors", "textmatch.toml",
            [v for x in ALGOS for v in algo(x)]
            + [("ppo + KL penalty (coef 0.05)", ["algo=ppo", "kl.coef=0.05"], [])],
            a.seeds, a.textmatch_steps, 0.9, 2, a.out_dir))
    if "lag" in a.only:
        pace = ["--local-max-steps-per-second", str(a.lag_actor_steps_per_second)]
        lag_sets = ["rollout.num_envs=4", "rollout.chunk_len=256", *COMPARISON]
        out.append(experiment(
            "lag", f"CartPole-v1, 8 slow actors ({a.lag_actor_steps_per_second:.0f} steps/s each)",
            "cartpole.toml",
            [("ppo, drops lag > 4", ["algo=ppo", "ingest.max_policy_lag=4", *lag_sets], pace),
             ("vtrace (IMPALA)", ["algo=vtrace", "ingest.max_policy_lag=1000", *lag_sets], pace),
             ("ppo + V-trace advantages", ["algo=ppo", "ppo.advantage=vtrace",
                                           "ingest.max_policy_lag=1000", *lag_sets], pace)],
            a.seeds, a.lag_steps, 475, 8, a.out_dir, lag_columns=True))
    if "sync" in a.only:
        results, dirs = {"ppo, sync = true, CleanRL hyper-parameters": []}, []
        finals = []
        for seed in a.seeds:
            d, rows, wall = run("cartpole.toml", seed, CLEANRL, a.sync_steps, 1)
            s = summarize(rows, 475)
            results["ppo, sync = true, CleanRL hyper-parameters"].append(s)
            dirs.append(("sync ppo", d))
            finals.append(rows)
            print(f"  sync seed {seed}: final {fmt(s['final'], '.2f')}, wall {wall:.0f} s",
                  file=sys.stderr, flush=True)
        _, again, _ = run("cartpole.toml", a.seeds[0], CLEANRL, a.sync_steps, 1)
        strip = lambda rows: [  # noqa: E731
            {k: v for k, v in r.items() if k not in ("wall_seconds", "busy_seconds")}
            | {"update": {k: v for k, v in r["update"].items() if k != "seconds"}}
            for r in rows]
        same = strip(again) == strip(finals[0])
        title = "CartPole-v1, synchronous PPO with CleanRL's hyper-parameters"
        compare(os.path.join(a.out_dir, "sync.png"), title, dirs)
        mean_final = statistics.mean(r["final"] for r in results["ppo, sync = true, CleanRL hyper-parameters"])
        out.append(table(title, results, 475, a.sync_steps)
                   + f"\nMean over seeds of the final mean return: {mean_final:.1f}. "
                   + f"Seed {a.seeds[0]} run twice: every update's statistics and returns "
                   + ("identical.\n" if same else "**differ**.\n")
                   + "\n![sync](algorithms/sync.png)\n")
    text = "\n".join(out)
    print(text)
    if a.results:
        with open(a.results, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
