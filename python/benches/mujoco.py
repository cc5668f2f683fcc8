"""MuJoCo with Python actors: Flotilla against CleanRL's PPO, and actor scaling.

Three modes, each printing a Markdown table (and appending JSON lines to
--out when given):

  flotilla    the release learner on configs/<env>.toml (`source = "external"`,
              CleanRL's hyperparameters, both normalizations on, one libtorch
              thread) with N `flotilla-actor` processes (default 1, with the
              config's 2 envs) stepping Gymnasium's MuJoCo env; 1M env steps
              per seed. The learner advises one actor to act the next batch
              while it trains, so the two overlap, each on its core.
  cleanrl     CleanRL 1.2.0's `ppo_continuous_action.py` (its defaults: 1M
              steps, one env, CPU) on the same machine. CleanRL 1.2.0 predates
              Gymnasium 1.0, so it runs in its own venv with
              gymnasium[mujoco]==0.29.1 and numpy<2, on the v4 environments.
  throughput  env steps/s trained with 1, 2, 4 ... actor processes on a short
              run, and where the time goes (learner busy fraction).
  actor       one actor's environment loop alone, no learner: steps/s with
              --envs 1 2 4 ... environments, and the time per vector step
              spent in inference, in the environments and in packing chunks
              (what one actor process could feed a learner at most).

Both systems are timed from process launch to exit; the return is the mean of
the last 100 training episodes (raw, unnormalized returns in both).

    deploy/local.sh cargo build --release --bin learner
    python3 python/benches/mujoco.py flotilla --env HalfCheetah-v5 --seeds 1 2 3
    python3 python/benches/mujoco.py cleanrl --env HalfCheetah-v4 --seeds 1 2 3
    python3 python/benches/mujoco.py throughput --env HalfCheetah-v5 --actors 1 2 4
    python3 python/benches/mujoco.py actor --env HalfCheetah-v5 --envs 1 2 4 8

Venvs (made on first use, in Flotilla's cache folder): `mujoco-bench`
(gymnasium[mujoco] and ./python) and `cleanrl-mujoco` (CleanRL 1.2.0 with
torch borrowed from deploy/local.sh's install through a .pth file).
"""
import argparse
import collections
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CACHE = os.environ.get("FLOTILLA_CACHE") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "flotilla")
TORCH_VENV = os.environ.get("FLOTILLA_TORCH_VENV") or os.path.join(CACHE, "torch-2.13.0")
BENCH_VENV = os.path.join(CACHE, "mujoco-bench")
CLEANRL_VENV = os.path.join(CACHE, "cleanrl-mujoco")
CLEANRL_DEPS = ["gymnasium[mujoco]==0.29.1", "numpy<2", "tensorboard"]
EPISODE_LINE = re.compile(r"global_step=(\d+), episodic_return=\[?([-+.\deE]+)")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def site_packages(python):
    out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def make_venv(path, install):
    python = os.path.join(path, "bin", "python")
    if os.path.exists(python):
        return python
    log(f"making {path} (once)")
    partial = path + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", partial], check=True)
    install(os.path.join(partial, "bin", "python"))
    os.rename(partial, path)
    return python


def bench_python():
    def install(python):
        pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        # The package's own dependencies (grpcio, protobuf, safetensors ...)
        # come with it here; later runs refresh only the package itself.
        subprocess.run(pip + ["gymnasium[mujoco]>=1.1", os.path.join(ROOT, "python")], check=True)
    python = make_venv(BENCH_VENV, install)
    # The package from this tree, every time (it may have changed).
    subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "--no-deps", "--force-reinstall", os.path.join(ROOT, "python")], check=True)
    return python


def cleanrl_python():
    torch_python = os.path.join(TORCH_VENV, "bin", "python")
    if not os.path.exists(torch_python):
        sys.exit(f"no torch in {TORCH_VENV}: run `deploy/local.sh cargo build --release` first")

    def install(python):
        with open(os.path.join(site_packages(python), "flotilla-torch.pth"), "w") as f:
            f.write(site_packages(torch_python) + "\n")
        pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run(pip + ["--no-deps", "--ignore-requires-python", "cleanrl==1.2.0"], check=True)
        subprocess.run(pip + CLEANRL_DEPS, check=True)
    return make_venv(CLEANRL_VENV, install)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_for(env_id):
    name = env_id.split("-")[0].lower()
    path = os.path.join(ROOT, "configs", f"{name}.toml")
    if not os.path.exists(path):
        sys.exit(f"no config {path} for {env_id}")
    return path


def run_flotilla(python, env_id, seed, actors, steps=None, sets=(), torch_threads=None):
    learner = os.path.join(ROOT, "target", "release", "learner")
    if not os.path.exists(learner):
        sys.exit("no target/release/learner: run `deploy/local.sh cargo build --release --bin learner`")
    actor = os.path.join(os.path.dirname(python), "flotilla-actor")
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="flotilla-mujoco-") as work:
        run_dir = os.path.join(work, "run")
        summary = os.path.join(work, "summary.json")
        cmd = [learner, "--config", config_for(env_id), "--run-dir", run_dir,
               "--listen", f"127.0.0.1:{port}", "--metrics-listen", "127.0.0.1:0",
               "--seed", str(seed), "--summary-json", summary]
        if steps:
            cmd += ["--set", f"run.total_env_steps={steps}"]
        for kv in sets:
            cmd += ["--set", kv]
        if torch_threads:
            cmd += ["--torch-threads", str(torch_threads)]
        launched = time.monotonic()
        with open(os.path.join(work, "learner.log"), "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
            logs = [open(os.path.join(work, f"a{k}.log"), "w") for k in range(actors)]
            procs = [subprocess.Popen([actor, "--learner", f"http://127.0.0.1:{port}", "--env", env_id,
                                       "--name", f"a{k}"], stdout=subprocess.DEVNULL, stderr=logs[k],
                                      cwd=work)  # MuJoCo writes MUJOCO_LOG.TXT into its folder
                     for k in range(actors)]
            code = proc.wait()
            wall = time.monotonic() - launched
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
            for f in logs:
                f.close()
        if code != 0 or not os.path.exists(summary):
            sys.exit(f"learner exited with {code}:\n{open(os.path.join(work, 'learner.log')).read()[-3000:]}")
        s = json.load(open(summary))
        with open(os.path.join(run_dir, "metrics.jsonl")) as f:
            last = [json.loads(line) for line in f if line.strip()][-1]
    return {"system": "Flotilla", "env": env_id, "seed": seed, "actors": actors,
            "env_steps": s["env_steps"], "stepped": last["samples_received"], "stale": last["stale_samples"],
            "wall_s": wall, "steps_per_s": s["env_steps"] / wall,
            "return": s["mean_return"], "learner_busy": last["busy_seconds"] / last["wall_seconds"]}


def run_cleanrl(python, env_id, seed):
    cmd = [python, "-m", "cleanrl.ppo_continuous_action", "--env-id", env_id, "--seed", str(seed),
           "--cuda", "False"]
    episodes = []
    tail = collections.deque(maxlen=30)
    with tempfile.TemporaryDirectory(prefix=f"cleanrl-mujoco-{seed}-") as cwd:
        launched = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in proc.stdout:
            tail.append(line)
            if m := EPISODE_LINE.match(line):
                episodes.append((int(m[1]), float(m[2])))
        proc.wait()
        wall = time.monotonic() - launched
    if proc.returncode != 0 or not episodes:
        sys.exit(f"cleanrl failed:\n{''.join(tail)}")
    last = [r for _, r in episodes[-100:]]
    return {"system": "CleanRL", "env": env_id, "seed": seed, "actors": 1, "env_steps": episodes[-1][0],
            "stepped": episodes[-1][0], "stale": 0,
            "wall_s": wall, "steps_per_s": episodes[-1][0] / wall, "return": statistics.mean(last),
            "learner_busy": None}


# The actor's loop (flotilla.worker.EnvWorker._act_chunk) without a learner:
# a policy of small random weights with observation normalization, as the
# MuJoCo configs have; run in the bench venv, timed per part.
ACTOR_LOOP = r"""
import json, sys, time
import numpy as np
from flotilla.chunk import ChunkBuilder
from flotilla.envs import EnvFactory, VectorRunner, probe
from flotilla.policy import ModelSpec, Policy
from flotilla.spaces import dtype_of

env_id, num_envs, steps, chunk_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
factory = EnvFactory(env_id)
info = probe(factory)
model = ModelSpec(hidden_sizes=(64, 64), normalize_observations=True)
shape, space = info.observation.space.shape, info.action.space
rng = np.random.Generator(np.random.PCG64(0))
params = {k: (0.1 * rng.standard_normal(v)).astype(np.float32) for k, v in model.parameter_shapes(shape, space)}
params.update({k: np.ones(v, np.float32) for k, v in model.statistics_shapes(info.observation.dim)})
policy = Policy(model, shape, space, params)
runner = VectorRunner(factory, info, num_envs, 1, "sync")
builder = ChunkBuilder(chunk_len, num_envs, info.observation.dim, space, obs_dtype=dtype_of(info.observation.space))
builder.begin(runner.obs)
infer = env = pack = 0.0
vector_steps = steps // num_envs
start = time.perf_counter()
for t in range(1, vector_steps + 1):
    t0 = time.perf_counter()
    s = policy.act(np.asarray(runner.obs, dtype=np.float32), rng, with_value=True)
    t1 = time.perf_counter()
    r = runner.step(info.action.to_env_batch(s.actions))
    t2 = time.perf_counter()
    builder.push(s.actions, s.logp, s.value, r.rewards, r.terminated, r.truncated, r.obs,
                 r.final_envs, r.final_obs, r.episodes)
    if t % chunk_len == 0:
        builder.finish(env_id, 0)
    infer, env, pack = infer + t1 - t0, env + t2 - t1, pack + time.perf_counter() - t2
wall = time.perf_counter() - start
runner.close()
print(json.dumps({"envs": num_envs, "steps_per_s": vector_steps * num_envs / wall,
                  "infer_us": 1e6 * infer / vector_steps, "env_us": 1e6 * env / vector_steps,
                  "pack_us": 1e6 * pack / vector_steps}))
"""


def run_actor_alone(python, env_id, num_envs, steps):
    with tempfile.TemporaryDirectory(prefix="flotilla-actor-alone-") as cwd:
        out = subprocess.run([python, "-c", ACTOR_LOOP, env_id, str(num_envs), str(steps), "256"],
                             cwd=cwd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(results):
    print("| system | env | seed | actors | env steps trained | stepped (stale) | wall s | trained/s "
          "| mean return (last 100) | learner busy |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        busy = "" if r["learner_busy"] is None else f"{r['learner_busy']:.0%}"
        print(f"| {r['system']} | {r['env']} | {r['seed']} | {r['actors']} | {r['env_steps']:,} | "
              f"{r['stepped']:,} ({r['stale']:,}) | {r['wall_s']:.0f} | {r['steps_per_s']:,.0f} | "
              f"{r['return']:.0f} | {busy} |")
    returns = [r["return"] for r in results]
    walls = [r["wall_s"] for r in results]
    if len(results) > 1:
        print(f"\nmean return {statistics.mean(returns):.0f} ± {statistics.stdev(returns):.0f} "
              f"over {len(results)} runs; median wall {statistics.median(walls):.0f} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["flotilla", "cleanrl", "throughput", "actor"])
    ap.add_argument("--env", default="HalfCheetah-v5")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--actors", type=int, nargs="+", default=None,
                    help="actor processes (flotilla: one count, default 1; throughput: counts, default 1 2 4)")
    ap.add_argument("--envs", type=int, nargs="+", default=[1, 2, 4, 8],
                    help="actor: environments in the one process, one row each")
    ap.add_argument("--steps", type=int, default=None,
                    help="env steps per run (throughput default 200000, actor 50000; flotilla: the config's)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="learner config override (repeatable)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="the learner's libtorch threads (default 1: the actors keep the other cores; 0: libtorch's default)")
    ap.add_argument("--out", help="append each result as a JSON line to this file")
    args = ap.parse_args()

    results = []
    if args.mode == "actor":
        python = bench_python()
        print(f"one actor's loop alone on {args.env} (no learner)\n")
        print("| envs | env steps/s | per vector step: inference µs | environments µs | packing µs |")
        print("| --- | --- | --- | --- | --- |")
        for n in args.envs:
            r = run_actor_alone(python, args.env, n, args.steps or 50_000)
            print(f"| {n} | {r['steps_per_s']:,.0f} | {r['infer_us']:.0f} | {r['env_us']:.0f} | {r['pack_us']:.0f} |",
                  flush=True)
        return
    if args.mode == "cleanrl":
        python = cleanrl_python()
        for seed in args.seeds:
            log(f"CleanRL {args.env} seed {seed}")
            results.append(run_cleanrl(python, args.env, seed))
    else:
        python = bench_python()
        if args.mode == "flotilla":
            for seed in args.seeds:
                log(f"Flotilla {args.env} seed {seed}")
                results.append(run_flotilla(python, args.env, seed, (args.actors or [1])[0], args.steps,
                                            args.sets, args.torch_threads))
        else:
            for n in args.actors or [1, 2, 4]:
                log(f"Flotilla {args.env} with {n} actor processes")
                results.append(run_flotilla(python, args.env, args.seeds[0], n, args.steps or 200_000,
                                            args.sets, args.torch_threads))
    if args.out:
        with open(args.out, "a") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    table(results)


if __name__ == "__main__":
    main()
