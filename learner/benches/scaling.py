"""Actor replicas on one host: in-process, separate processes, compose.

Trains the same run (default configs/cartpole.toml, 500k env steps, seed 1)
once per layout, with every binary at its default flags, and prints one
Markdown table:

- trained/s and acted/s: env steps trained and received per second over the
  second half of the run (metrics.jsonl; the steady state, after start-up);
- stale: samples dropped as too old / samples received, the whole run;
- busy: the learner's update time / its wall time, from its first update on;
- actor CPU: cores the actors used on average over the learner's wall time
  (in-process: the learner's `env` threads only, whose async side shares the
  learner's runtime; separate processes: the whole actor processes;
  compose: the actor containers' cgroups);
- wall: the learner's seconds from start to exit (compose: its container's,
  which includes waiting for its health check before the actors start).

    deploy/local.sh cargo build --release --bin learner --bin actor
    python3 learner/benches/scaling.py                          # in-process 2 and 4, processes 1 2 4 8
    python3 learner/benches/scaling.py --compose 2 4 8          # also compose (builds images first)
    python3 learner/benches/scaling.py --python 2               # also Python actors (needs `pip install ./python`)
    python3 learner/benches/scaling.py --repeat 3               # each layout 3 times, interleaved; medians
    python3 learner/benches/scaling.py --split 4 --no-build     # which side of compose costs: a learner
                                                                # container with actor processes, and
                                                                # the reverse (host network, images of --tag)

Layouts run interleaved when repeated (all layouts once, then again), so a
slow patch of a shared machine does not land on one layout only. The ratio
column divides each row's trained/s by the in-process row with the same
actor count (or the nearest one).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICK = os.sysconf("SC_CLK_TCK")
COMPOSE_FILE = os.path.join(ROOT, "deploy", "docker-compose.yml")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu(pid, tid=None):
    """utime + stime of a process (or one of its threads), seconds; None once gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def env_threads_cpu(pid):
    """CPU seconds of the threads named `env` in `pid`, by thread id."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != "env":
                    continue
        except OSError:
            continue
        c = proc_cpu(pid, tid)
        if c is not None:
            out[tid] = c
    return out


def summarize(rows, wall, actor_cpu_s):
    if len(rows) < 4:
        raise SystemExit(f"too few updates logged ({len(rows)}) to measure")
    half, last = rows[len(rows) // 2], rows[-1]
    dt = last["wall_seconds"] - half["wall_seconds"]
    received = last["samples_received"]
    return {
        "trained": (last["env_steps"] - half["env_steps"]) / dt,
        "acted": (last["samples_received"] - half["samples_received"]) / dt,
        "stale": last["stale_samples"] / received if received else float("nan"),
        # From the first update on: a compose learner waits for its health
        # check before any actor starts, which is not the learner's fault.
        "busy": (last["busy_seconds"] - rows[0]["busy_seconds"])
        / (last["wall_seconds"] - rows[0]["wall_seconds"]),
        "actor_cpu": actor_cpu_s / wall if wall > 0 else float("nan"),
        "wall": wall,
        "return": last.get("episode_return_mean") or float("nan"),
    }


def read_rows(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def finish(learner, run_dir, wall, actor_cpu_s):
    """The row of a learner that exited after `wall` seconds; its run folder goes."""
    if learner.returncode != 0:
        with open(os.path.join(run_dir, "learner.log")) as f:
            raise SystemExit(f"learner failed ({learner.returncode}):\n{f.read()[-3000:]}")
    rows = read_rows(os.path.join(run_dir, "metrics.jsonl"))
    shutil.rmtree(run_dir, ignore_errors=True)
    return summarize(rows, wall, actor_cpu_s)


def learner_cmd(args, run_dir, extra):
    return [
        args.learner, "--config", args.config, "--run-dir", run_dir,
        "--seed", str(args.seed), "--total-env-steps", str(args.steps),
        "--device", "cpu", "--metrics-listen", "127.0.0.1:0", *extra,
    ]


def run_inproc(args, n):
    run_dir = tempfile.mkdtemp(prefix="flotilla-scaling-")
    cmd = learner_cmd(args, run_dir, ["--listen", "127.0.0.1:0", "--local-actors", str(n)])
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(run_dir, "learner.log"), "w"))
    seen = {}
    while p.poll() is None:
        seen.update(env_threads_cpu(p.pid))
        time.sleep(0.2)
    wall = time.monotonic() - t0
    return finish(p, run_dir, wall, sum(seen.values()))


def actor_command(args, kind, url):
    if kind == "rust":
        return [args.actor, "--learner", url]
    return [args.python_actor, "--learner", url, "--env", "CartPole-v1"]


def run_procs(args, n, kind="rust"):
    run_dir = tempfile.mkdtemp(prefix="flotilla-scaling-")
    port = free_port()
    config = args.config if kind == "rust" else args.python_config
    cmd = learner_cmd(args, run_dir, ["--listen", f"127.0.0.1:{port}"])
    cmd[cmd.index("--config") + 1] = config
    t0 = time.monotonic()
    learner = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(run_dir, "learner.log"), "w"))
    url = f"http://127.0.0.1:{port}"
    actors = [
        subprocess.Popen(actor_command(args, kind, url), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, cwd=run_dir)
        for _ in range(n)
    ]
    cpu = {}
    while learner.poll() is None:
        for a in actors:
            c = proc_cpu(a.pid)
            if c is not None:
                cpu[a.pid] = c
        time.sleep(0.2)
    wall = time.monotonic() - t0
    for a in actors:
        c = proc_cpu(a.pid)
        if c is not None:
            cpu[a.pid] = c
        a.send_signal(signal.SIGTERM)
    reap(actors)
    return finish(learner, run_dir, wall, sum(cpu.values()))


def reap(procs):
    """Waits for processes told to stop; kills those still there after 30 s."""
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def docker_run(args, image, name, argv, run_dir=None):
    """`docker run` of one of our images on the host's network, as this user
    (so the run folder, mounted when given, stays ours)."""
    cmd = ["docker", "run", "--rm", "--name", name, "--network", "host",
           "--user", f"{os.getuid()}:{os.getgid()}"]
    if run_dir:
        cmd += ["-v", f"{run_dir}:/run-dir"]
    return cmd + [f"flotilla/{image}:{args.tag}", *argv]


def run_split(args, n, learner_in_container):
    """A learner container with n actor processes, or a learner process with
    n actor containers; both on the host's network, as processes are."""
    run_dir = tempfile.mkdtemp(prefix="flotilla-scaling-")
    os.chmod(run_dir, 0o777)
    port = free_port()
    tag = f"flotilla-scaling-{os.getpid()}"
    if learner_in_container:
        config = "/etc/flotilla/configs/" + os.path.basename(args.config)
        cmd = learner_cmd(args, "/run-dir", ["--listen", f"127.0.0.1:{port}"])
        cmd[cmd.index("--config") + 1] = config
        cmd = docker_run(args, "learner", f"{tag}-learner", cmd[1:], run_dir)
    else:
        cmd = learner_cmd(args, run_dir, ["--listen", f"127.0.0.1:{port}"])
    t0 = time.monotonic()
    learner = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                               stderr=open(os.path.join(run_dir, "learner.log"), "w"))
    url = f"http://127.0.0.1:{port}"
    if learner_in_container:
        actors = [subprocess.Popen(actor_command(args, "rust", url), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, cwd=run_dir) for _ in range(n)]
    else:
        # Their metrics on ports of their own, as in compose (the image's
        # 9100 would collide on the host's network).
        actors = [subprocess.Popen(docker_run(args, "actor", f"{tag}-actor-{i}",
                                              ["--learner", url, "--metrics-listen", "127.0.0.1:0"]),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                  for i in range(n)]
    cpu, ids = {}, {}
    while learner.poll() is None:
        for i, a in enumerate(actors):
            if learner_in_container:
                c = proc_cpu(a.pid)
            else:
                # Read while they run: actors exit when the run ends.
                ids[i] = ids.get(i) or container_id(f"{tag}-actor-{i}")
                c = container_cpu_s(None, ids[i]) if ids[i] else None
            if c is not None and c == c:
                cpu[i] = c
        time.sleep(0.2)
    wall = time.monotonic() - t0
    if learner_in_container:
        for a in actors:
            a.send_signal(signal.SIGTERM)
    else:
        subprocess.run(["docker", "stop", "-t", "15"] + [f"{tag}-actor-{i}" for i in range(n)],
                       capture_output=True)
    reap(actors)
    return finish(learner, run_dir, wall, sum(cpu.values()))


def compose_command():
    """`docker compose` when the plugin is there, else `docker-compose`."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"]


def container_id(name):
    """A running container's full id ("" when there is none)."""
    return subprocess.run(["docker", "inspect", "-f", "{{.Id}}", name], capture_output=True,
                          text=True).stdout.strip()


def container_cpu_s(cid, full=None):
    """CPU seconds a container used, from its cgroup (v2 or v1); NaN once it is gone."""
    full = full or container_id(cid)
    if not full:
        return float("nan")
    for path in (f"/sys/fs/cgroup/system.slice/docker-{full}.scope/cpu.stat",
                 f"/sys/fs/cgroup/docker/{full}/cpu.stat"):
        try:
            with open(path) as f:
                for line in f:
                    k, v = line.split()
                    if k == "usage_usec":
                        return int(v) / 1e6
        except OSError:
            pass
    try:
        with open(f"/sys/fs/cgroup/cpuacct/docker/{full}/cpuacct.usage") as f:
            return int(f.read()) / 1e9
    except OSError:
        return float("nan")


def run_compose(args, n):
    project = f"flotilla-scaling-{os.getpid()}-{n}"
    env = dict(os.environ,
               FLOTILLA_LEARNER_IMAGE=f"flotilla/learner:{args.tag}",
               FLOTILLA_ACTOR_IMAGE=f"flotilla/actor:{args.tag}",
               FLOTILLA_GRPC_PORT=str(free_port()),
               FLOTILLA_LEARNER_METRICS_PORT=str(free_port()),
               FLOTILLA_TOTAL_ENV_STEPS=str(args.steps),
               FLOTILLA_SET=f"run.seed={args.seed}",
               FLOTILLA_RUN_NAME="scaling")
    base = compose_command() + ["-p", project, "-f", COMPOSE_FILE]

    def compose(*a, check=True):
        return subprocess.run(base + list(a), env=env, capture_output=True, text=True, check=check)

    try:
        compose("up", "-d", "--scale", f"actor={n}", "learner", "actor")
        learner = compose("ps", "-q", "learner").stdout.strip()
        started = subprocess.run(["docker", "inspect", "-f", "{{.State.StartedAt}}", learner],
                                 capture_output=True, text=True).stdout.strip()
        subprocess.run(["docker", "wait", learner], capture_output=True, check=True)
        actors = compose("ps", "-q", "actor").stdout.split()
        cpu = sum(container_cpu_s(a) for a in actors)
        info = json.loads(subprocess.run(["docker", "inspect", learner], capture_output=True,
                                         text=True).stdout)[0]["State"]
        if info["ExitCode"] != 0:
            raise SystemExit(f"compose learner exited {info['ExitCode']}:\n"
                             + compose("logs", "learner", check=False).stdout[-3000:])
        wall = iso_seconds(info["FinishedAt"]) - iso_seconds(started)
        tmp = tempfile.mkdtemp(prefix="flotilla-scaling-")
        subprocess.run(["docker", "cp", f"{learner}:/runs/scaling/metrics.jsonl", tmp],
                       capture_output=True, check=True)
        rows = read_rows(os.path.join(tmp, "metrics.jsonl"))
        shutil.rmtree(tmp, ignore_errors=True)
        return summarize(rows, wall, cpu)
    finally:
        compose("down", "-v", "--remove-orphans", check=False)


def iso_seconds(s):
    """Docker's RFC 3339 time with nanoseconds, as epoch seconds."""
    from datetime import datetime
    date, frac = s.rstrip("Z").split(".") if "." in s else (s.rstrip("Z"), "0")
    base = datetime.strptime(date, "%Y-%m-%dT%H:%M:%S").timestamp()
    return base + float("0." + frac)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "cartpole.toml"))
    ap.add_argument("--python-config", default=os.path.join(ROOT, "configs", "gym-cartpole.toml"))
    ap.add_argument("--steps", type=int, default=500_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--inproc", type=int, nargs="*", default=[2, 4])
    ap.add_argument("--procs", type=int, nargs="*", default=[1, 2, 4, 8])
    ap.add_argument("--compose", type=int, nargs="*", default=[])
    ap.add_argument("--python", type=int, nargs="*", default=[])
    ap.add_argument("--split", type=int, nargs="*", default=[],
                    help="learner container + actor processes, and learner process + actor containers")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--tag", default="scaling", help="image tag for --compose (built here)")
    ap.add_argument("--no-build", action="store_true", help="use existing flotilla/*:TAG images")
    ap.add_argument("--learner", default=os.path.join(ROOT, "target", "release", "learner"))
    ap.add_argument("--actor", default=os.path.join(ROOT, "target", "release", "actor"))
    ap.add_argument("--python-actor", default=shutil.which("flotilla-actor") or "flotilla-actor")
    args = ap.parse_args()

    layouts = [("in-process", n) for n in args.inproc] + [("processes", n) for n in args.procs]
    layouts += [("python processes", n) for n in args.python]
    layouts += [("compose", n) for n in args.compose]
    layouts += [("learner container, actor processes", n) for n in args.split]
    layouts += [("learner process, actor containers", n) for n in args.split]
    if (args.compose or args.split) and not args.no_build:
        subprocess.run([os.path.join(ROOT, "deploy", "build-images.sh"), args.tag, "actor", "learner"],
                       check=True)
    runners = {
        "in-process": lambda n: run_inproc(args, n),
        "processes": lambda n: run_procs(args, n),
        "python processes": lambda n: run_procs(args, n, kind="python"),
        "compose": lambda n: run_compose(args, n),
        "learner container, actor processes": lambda n: run_split(args, n, True),
        "learner process, actor containers": lambda n: run_split(args, n, False),
    }
    results = {l: [] for l in layouts}
    for r in range(args.repeat):
        for layout in layouts:
            res = runners[layout[0]](layout[1])
            results[layout].append(res)
            print(f"# round {r + 1}: {layout[0]} × {layout[1]}: {res['trained']:.0f} trained/s, "
                  f"busy {res['busy']:.0%}, actor CPU {res['actor_cpu']:.2f}", file=sys.stderr, flush=True)

    med = {l: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for l, rs in results.items()}
    inproc = {n: med[("in-process", n)]["trained"] for n in args.inproc}

    def ratio(n):
        if not inproc:
            return "—"
        near = min(inproc, key=lambda k: (abs(k - n), k))
        return f"{m['trained'] / inproc[near]:.2f} (vs {near})"

    print(f"\nsteps {args.steps}, seed {args.seed}, {args.repeat} run(s) per row (medians), "
          f"{os.cpu_count()} CPUs\n")
    print("| actors | how | trained/s | acted/s | stale | learner busy | actor CPU (cores) | wall s | / in-process | final return |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for layout in layouts:
        m = med[layout]
        print(f"| {layout[1]} | {layout[0]} | {m['trained']:,.0f} | {m['acted']:,.0f} | {m['stale']:.1%} | "
              f"{m['busy']:.0%} | {m['actor_cpu']:.2f} | {m['wall']:.1f} | {ratio(layout[1])} | {m['return']:.0f} |")


if __name__ == "__main__":
    main()
