#!/usr/bin/env python3
"""The compose cluster, tested for real on this machine.

Builds the images locally (deploy/build-images.sh), starts the learner, two
actors and Prometheus with deploy/docker-compose.yml, and checks that:

1. training progresses: the policy version advances and the mean return rises;
   learner and actors run with no capabilities and no-new-privileges, the
   learner requires the shared token (from the `secrets` volume), and an
   actor without it is refused with exit code 64;
2. scaling to four actors needs no config edit: Prometheus finds four actor
   targets up through Docker DNS and the summed env steps/s goes up;
3. a network partition heals itself: an actor cut off from the network for a
   while reconnects on its own once it is back;
4. a learner restart heals itself: the learner resumes from its checkpoint
   (its version does not go back to 0) and all four actors reconnect;
5. every query of the Grafana dashboard names a metric the running system
   exports;
6. the `gymnasium` profile trains: a learner with configs/gym-cartpole.toml
   (source = "external") and two Python actors (flotilla/actor-python, with
   Gymnasium's CartPole-v1) start in a project of their own; the policy
   version advances, the env steps grow, the mean return rises, both actors
   serve their metrics, the containers run hardened, and a Python actor
   without the token is refused with exit code 64.
7. a Swarm stack trains and scales: deploy/docker-stack.yml deployed with
   `docker stack deploy` on a single-node swarm (initialized for the test
   when the engine is in none, and left again) runs the learner, two actors
   and Prometheus on an overlay network with the token as a Swarm secret;
   the version advances and the return rises, the containers are hardened,
   and after `docker service scale` to four actors Prometheus discovers four
   actor targets and the env steps/s go up. Where a swarm cannot start it
   says why and skips (stage "swarm", under the same FLOTILLA_ALLOW_SKIP rule).

Then it removes every container, network, volume and image it created. Without
a usable Docker engine it prints why and exits 0 (skipped), unless
FLOTILLA_ALLOW_SKIP is set without "compose" in it (as CI sets it): then it
exits 1.

    python3 deploy/compose-test.py [--keep] [--only cluster|gymnasium|swarm]

The cluster runs with shared-token authentication on. Actors are paced (FLOTILLA_MAX_STEPS_PER_SECOND) so that they, not the learner,
bound the throughput on a 2-core machine; otherwise more actors could not go
faster and step 2 would measure the learner instead of the scaling.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPOSE_FILE = os.path.join(ROOT, "deploy", "docker-compose.yml")
TAG = "compose-test"
STEPS_PER_ACTOR = 1500
IMAGES = ("actor", "learner", "prometheus", "actor-python")


def log(msg):
    print(f"compose-test: {msg}", flush=True)


def fail(msg):
    raise SystemExit(f"compose-test: FAILED: {msg}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def compose_command():
    """`docker compose` when the plugin is there, else `docker-compose`."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def skip_reason():
    if not shutil.which("docker"):
        return "no docker command"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True)
    if info.returncode != 0:
        return "the Docker engine does not answer: " + info.stderr.strip().splitlines()[-1]
    if compose_command() is None:
        return "neither `docker compose` nor `docker-compose` is installed"
    return None


class Cluster:
    def __init__(self, project, profile=None):
        self.ports = {
            "FLOTILLA_GRPC_PORT": free_port(),
            "FLOTILLA_LEARNER_METRICS_PORT": free_port(),
            "FLOTILLA_PROMETHEUS_PORT": free_port(),
            "FLOTILLA_GRAFANA_PORT": free_port(),
        }
        self.env = dict(
            os.environ,
            COMPOSE_PROJECT_NAME=project,
            FLOTILLA_LEARNER_IMAGE=f"flotilla/learner:{TAG}",
            FLOTILLA_ACTOR_IMAGE=f"flotilla/actor:{TAG}",
            FLOTILLA_PROMETHEUS_IMAGE=f"flotilla/prometheus:{TAG}",
            FLOTILLA_ACTOR_PYTHON_IMAGE=f"flotilla/actor-python:{TAG}",
            FLOTILLA_TOTAL_ENV_STEPS="100000000",
            FLOTILLA_NUM_ENVS="4",
            FLOTILLA_MAX_STEPS_PER_SECOND=str(STEPS_PER_ACTOR),
            FLOTILLA_AUTH_TOKEN="compose-test-" + os.urandom(12).hex(),
            **{k: str(v) for k, v in self.ports.items()},
        )
        self.project = project
        self.compose = compose_command() + ["-f", COMPOSE_FILE]
        if profile:
            self.compose += ["--profile", profile]

    def run(self, *args, check=True, capture=False):
        p = subprocess.run(self.compose + list(args), env=self.env, text=True,
                           capture_output=capture)
        if check and p.returncode != 0:
            fail(f"`compose {' '.join(args)}` exited {p.returncode}: {p.stderr or ''}")
        return p

    def up(self, actors):
        self.run("up", "-d", "--no-recreate", "--scale", f"actor={actors}",
                 "learner", "actor", "prometheus")

    def containers(self, service):
        out = subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={self.project}",
             "--filter", f"label=com.docker.compose.service={service}"],
            capture_output=True, text=True, check=True).stdout
        return out.split()

    def logs(self, service):
        return self.run("logs", "--no-color", service, check=False, capture=True).stdout

    def learner_metrics(self):
        url = f"http://127.0.0.1:{self.ports['FLOTILLA_LEARNER_METRICS_PORT']}/metrics"
        return parse_metrics(http_get(url))

    def prom(self, query):
        """The value of an instant Prometheus query that returns one number (None if empty)."""
        port = self.ports["FLOTILLA_PROMETHEUS_PORT"]
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query})
        body = json.loads(http_get(url))
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else None


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def parse_metrics(text):
    """Prometheus text format → {name: summed value over label sets}."""
    out = {}
    for line in text.splitlines():
        m = METRIC_LINE.match(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def wait_for(what, probe, timeout):
    """Polls `probe` until it returns a truthy value; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except (OSError, ValueError, KeyError) as e:
            last_error = e
        time.sleep(2)
    fail(f"timed out after {timeout} s waiting for {what}" +
         (f" (last error: {last_error})" if last_error else ""))


def steps_per_second(cluster, window_s=20):
    return cluster.prom(f"sum(rate(flotilla_actor_env_steps_total[{window_s}s]))") or 0.0


def dashboard_metric_names():
    sys.path.insert(0, os.path.join(ROOT, "deploy"))
    from check_dashboard import dashboard_metrics  # noqa: E402
    return dashboard_metrics(os.path.join(ROOT, "deploy", "grafana", "dashboards", "flotilla.json"))


def exported_names(text):
    return {m.group(1) for m in map(METRIC_LINE.match, text.splitlines()) if m}


def check_hardening(cluster, learner="learner", actor="actor", image="actor",
                    refused="token", *actor_args):
    """Learner and actors run without capabilities or privilege escalation
    (no-new-privileges, no set-user-ID programs), on a read-only root, the
    learner requires the token, and a client
    without it (an `image` container; `refused` in its output) is refused."""
    for service in (learner, actor):
        for cid in cluster.containers(service):
            host = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True,
                                             text=True, check=True).stdout)[0]["HostConfig"]
            if "ALL" not in (host.get("CapDrop") or []):
                fail(f"{service} {cid[:12]} keeps capabilities: CapDrop={host.get('CapDrop')}")
            # Swarm ignores security_opt; there the images' lack of
            # set-user-ID programs (checked below) stands in for it.
            if not isinstance(cluster, Stack) and not any(
                    "no-new-privileges" in o for o in host.get("SecurityOpt") or []):
                fail(f"{service} {cid[:12]} lacks no-new-privileges: {host.get('SecurityOpt')}")
            setid = subprocess.run(["docker", "exec", cid, "find", "/", "-xdev", "-perm", "/6000",
                                    "-type", "f"], capture_output=True, text=True).stdout.split()
            if setid:
                fail(f"{service} {cid[:12]} holds set-user/group-ID programs: {setid}")
            if not host.get("ReadonlyRootfs"):
                fail(f"{service} {cid[:12]} has a writable root file system")
    if "every gRPC call must carry the shared token" not in cluster.logs(learner):
        fail("the learner does not require the shared token")
    p = subprocess.run(["docker", "run", "--rm", "--network", f"{cluster.project}_default",
                        f"flotilla/{image}:{TAG}", "--learner", "http://learner:50051",
                        "--name", "no-token", *actor_args],
                       capture_output=True, text=True, timeout=120)
    if p.returncode != 64 or refused not in p.stdout + p.stderr:
        fail(f"an actor ({image}) without the token was not refused (exit {p.returncode}): "
             f"{(p.stdout + p.stderr)[-1000:]}")
    log(f"{learner} and {actor} run hardened; an actor without the token is refused (exit 64)")


def scenario(cluster):
    log("starting learner, 2 actors and Prometheus")
    cluster.up(2)
    first = wait_for("policy version >= 3",
                     lambda: (lambda m: m if m.get("flotilla_policy_version", 0) >= 3 else None)(
                         cluster.learner_metrics()), 180)
    log(f"training: version {first['flotilla_policy_version']:.0f}, "
        f"return {first['flotilla_episode_return_mean']:.1f}")
    check_hardening(cluster)
    time.sleep(40)
    later = cluster.learner_metrics()
    log(f"40 s later: version {later['flotilla_policy_version']:.0f}, "
        f"return {later['flotilla_episode_return_mean']:.1f}")
    if later["flotilla_policy_version"] <= first["flotilla_policy_version"]:
        fail("the policy version did not advance")
    if later["flotilla_episode_return_mean"] <= first["flotilla_episode_return_mean"] + 10:
        fail("the mean return did not rise by more than 10")

    wait_for("2 actor targets up in Prometheus", lambda: cluster.prom('sum(up{job="actor"})') == 2, 60)
    two = steps_per_second(cluster)
    log(f"2 actors: {two:.0f} env steps/s (Prometheus)")

    log("scaling to 4 actors")
    cluster.up(4)
    wait_for("4 actor targets up in Prometheus", lambda: cluster.prom('sum(up{job="actor"})') == 4, 90)
    time.sleep(30)
    four = steps_per_second(cluster)
    log(f"4 actors: {four:.0f} env steps/s (Prometheus), ratio {four / max(two, 1e-9):.2f}")
    if four < 1.5 * two:
        fail(f"env steps/s did not go up with 4 actors: {two:.0f} -> {four:.0f}")

    # A network partition: one actor cut off for 20 s, then back with its alias.
    victim = cluster.containers("actor")[0]
    network = f"{cluster.project}_default"
    reconnects = cluster.prom("sum(flotilla_actor_reconnects_total)") or 0.0
    log(f"cutting actor {victim[:12]} off the network for 20 s")
    subprocess.run(["docker", "network", "disconnect", network, victim], check=True)
    wait_for("the learner to notice the partition", lambda: cluster.learner_metrics()
             .get("flotilla_actors_connected", 0) == 3, 90)
    time.sleep(20)
    subprocess.run(["docker", "network", "connect", "--alias", "actor", network, victim], check=True)
    wait_for("the cut-off actor to reconnect", lambda: cluster.learner_metrics()
             .get("flotilla_actors_connected", 0) == 4, 120)
    wait_for("its reconnect counted", lambda: (cluster.prom(
        "sum(flotilla_actor_reconnects_total)") or 0.0) > reconnects, 60)
    log("the cut-off actor reconnected by itself")

    before = cluster.learner_metrics()
    if before.get("flotilla_checkpoints_written_total", 0) < 1:
        wait_for("a checkpoint", lambda: cluster.learner_metrics()
                 .get("flotilla_checkpoints_written_total", 0) >= 1, 120)
    before = cluster.learner_metrics()
    log(f"restarting the learner at version {before['flotilla_policy_version']:.0f}")
    cluster.run("restart", "learner")
    # Ready = its second "learner ready" line (metrics are served a moment earlier).
    wait_for("the restarted learner to be ready",
             lambda: cluster.logs("learner").count("learner ready") >= 2, 120)
    m = re.search(r"resumed from checkpoint.*?version=(\d+)", cluster.logs("learner"))
    if not m:
        fail("the learner's log does not say it resumed from a checkpoint")
    resumed_version = int(m.group(1))
    resumed = cluster.learner_metrics()
    log(f"restarted learner resumed at version {resumed_version} "
        f"(metrics: {resumed['flotilla_policy_version']:.0f})")
    if resumed_version < 1 or resumed["flotilla_policy_version"] < resumed_version:
        fail("the learner started over instead of resuming")
    wait_for("4 actors reconnected", lambda: cluster.learner_metrics()
             .get("flotilla_actors_connected", 0) == 4, 120)
    after = wait_for("training after the restart", lambda: (lambda m: m if m[
        "flotilla_policy_version"] > resumed["flotilla_policy_version"] + 2 else None)(
        cluster.learner_metrics()), 120)
    log(f"4 actors reconnected; version {after['flotilla_policy_version']:.0f}")

    exported = exported_names(http_get(
        f"http://127.0.0.1:{cluster.ports['FLOTILLA_LEARNER_METRICS_PORT']}/metrics"))
    exported |= set(json.loads(http_get(
        f"http://127.0.0.1:{cluster.ports['FLOTILLA_PROMETHEUS_PORT']}/api/v1/label/__name__/values"
    ))["data"])
    missing = sorted(n for n in dashboard_metric_names() if n not in exported)
    if missing:
        fail(f"dashboard queries name metrics nobody exports: {missing}")
    log("every dashboard query names an exported metric")


def actor_metrics(cid):
    """The metrics a Python actor serves inside its container, read there."""
    p = subprocess.run(["docker", "exec", cid, "python3", "-c",
                        "import urllib.request as u; "
                        "print(u.urlopen('http://127.0.0.1:9100/metrics', timeout=5).read().decode())"],
                       capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        fail(f"reading the metrics of Python actor {cid[:12]}: {p.stderr[-1000:]}")
    return parse_metrics(p.stdout)


def gymnasium_scenario(cluster):
    """The `gymnasium` profile: learner on configs/gym-cartpole.toml, two
    Python actors bringing Gymnasium's CartPole-v1."""
    log("gymnasium profile: starting the learner and 2 Python actors (Gymnasium's CartPole-v1)")
    cluster.run("up", "-d", "--scale", "gym-actor=2", "gym-actor")
    first = wait_for("policy version >= 3 with 2 Python actors",
                     lambda: (lambda m: m if m.get("flotilla_policy_version", 0) >= 3
                              and m.get("flotilla_actors_connected", 0) == 2 else None)(
                         cluster.learner_metrics()), 240)
    log(f"training: version {first['flotilla_policy_version']:.0f}, "
        f"{first['flotilla_learner_samples_received_total']:.0f} env steps, "
        f"return {first['flotilla_episode_return_mean']:.1f}")
    check_hardening(cluster, "gym-learner", "gym-actor", "actor-python", "UNAUTHENTICATED",
                    "--env", "CartPole-v1")
    for cid in cluster.containers("gym-actor"):
        user = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True,
                                         text=True, check=True).stdout)[0]["Config"]["User"]
        if user != "10001":
            fail(f"Python actor {cid[:12]} runs as user {user!r}, not 10001")
        steps = actor_metrics(cid).get("flotilla_actor_env_steps_total", 0)
        if steps <= 0:
            fail(f"Python actor {cid[:12]} reports no env steps")
    later = wait_for("the mean return to rise by more than 10", lambda: (lambda m: m if m[
        "flotilla_episode_return_mean"] > first["flotilla_episode_return_mean"] + 10 else None)(
        cluster.learner_metrics()), 120)
    log(f"later: version {later['flotilla_policy_version']:.0f}, "
        f"{later['flotilla_learner_samples_received_total']:.0f} env steps, "
        f"return {later['flotilla_episode_return_mean']:.1f}")
    if later["flotilla_policy_version"] <= first["flotilla_policy_version"]:
        fail("the policy version did not advance")
    if later["flotilla_learner_samples_received_total"] <= first["flotilla_learner_samples_received_total"]:
        fail("the env steps did not grow")
    log("the gymnasium profile trains: 2 Python actors, version and env steps up, return up")


STACK_FILE = os.path.join(ROOT, "deploy", "docker-stack.yml")


def docker(*args, check=True, timeout=120):
    p = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        fail(f"`docker {' '.join(args)}` exited {p.returncode}: {p.stderr.strip()}")
    return p


def swarm_state():
    """(LocalNodeState, is a manager, node id) of this engine."""
    out = docker("info", "--format",
                 "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.NodeID}}").stdout
    state, manager, *node = out.split() + [""]
    return state, manager == "true", node[0]


class Stack:
    """deploy/docker-stack.yml deployed as stack `name` on this engine's
    swarm, which it initializes (single node, loopback only) when the engine
    is in none and leaves again in close(). The same probes as Cluster."""

    def __init__(self, name):
        self.project = name
        self.ports = {
            "FLOTILLA_GRPC_PORT": free_port(),
            "FLOTILLA_LEARNER_METRICS_PORT": free_port(),
            "FLOTILLA_PROMETHEUS_PORT": free_port(),
            "FLOTILLA_GRAFANA_PORT": free_port(),
        }
        # The stack's two external secrets, made (and removed) by the test.
        self.secrets = {"FLOTILLA_TOKEN_SECRET": f"{name}-token",
                        "FLOTILLA_GRAFANA_PASSWORD_SECRET": f"{name}-grafana-password"}
        self.initialized = False
        self.deployed = False

    def start_swarm(self):
        """None when this engine can run the stack, else why not."""
        state, manager, node = swarm_state()
        if state == "inactive":
            # Joining a swarm makes the bridge docker_gwbridge; leaving keeps it.
            self.had_gwbridge = docker("network", "inspect", "docker_gwbridge",
                                       check=False).returncode == 0
            p = docker("swarm", "init", "--advertise-addr", "127.0.0.1",
                       "--listen-addr", f"127.0.0.1:{free_port()}", check=False)
            if p.returncode != 0:
                return f"`docker swarm init` failed: {p.stderr.strip()}"
            self.initialized = True
            log("initialized a single-node swarm (it is left again at the end)")
            state, manager, node = swarm_state()
        elif state == "active":
            log("using the engine's active swarm (it is left as it is)")
        if state != "active" or not manager:
            return f"this engine is not a swarm manager (swarm state {state!r})"
        self.node = node
        return None

    def deploy(self, actors):
        # Every task on this machine: the images exist only here.
        here = f"node.id == {self.node}"
        self.env = dict(
            os.environ,
            FLOTILLA_LEARNER_IMAGE=f"flotilla/learner:{TAG}",
            FLOTILLA_ACTOR_IMAGE=f"flotilla/actor:{TAG}",
            FLOTILLA_PROMETHEUS_IMAGE=f"flotilla/prometheus:{TAG}",
            FLOTILLA_GRAFANA_REPLICAS="0",
            FLOTILLA_ACTORS=str(actors),
            FLOTILLA_LEARNER_CONSTRAINT=here,
            FLOTILLA_PROMETHEUS_CONSTRAINT=here,
            FLOTILLA_ACTOR_CONSTRAINT=here,
            **self.secrets,
            FLOTILLA_TOTAL_ENV_STEPS="100000000",
            FLOTILLA_NUM_ENVS="4",
            FLOTILLA_MAX_STEPS_PER_SECOND=str(STEPS_PER_ACTOR),
            **{k: str(v) for k, v in self.ports.items()},
        )
        self.deployed = True
        for secret in self.secrets.values():
            p = subprocess.run(["docker", "secret", "create", secret, "-"],
                               input="swarm-test-" + os.urandom(12).hex(),
                               capture_output=True, text=True)
            if p.returncode != 0:
                fail(f"`docker secret create` exited {p.returncode}: {p.stderr.strip()}")
        p = subprocess.run(["docker", "stack", "deploy", "--resolve-image", "never",
                            "-c", STACK_FILE, self.project], env=self.env,
                           capture_output=True, text=True, timeout=300)
        if p.returncode != 0:
            fail(f"`docker stack deploy` exited {p.returncode}: {p.stderr.strip()}")
        if "Ignoring unsupported options" in p.stdout + p.stderr:
            fail(f"`docker stack deploy` ignored part of the stack file: {p.stdout}{p.stderr}")

    def containers(self, service):
        return docker("ps", "-q", "--filter",
                      f"label=com.docker.swarm.service.name={self.project}_{service}").stdout.split()

    def logs(self, service):
        p = docker("service", "logs", "--raw", f"{self.project}_{service}", check=False)
        return p.stdout + p.stderr

    learner_metrics = Cluster.learner_metrics
    prom = Cluster.prom

    def close(self):
        if self.deployed:
            docker("stack", "rm", self.project, check=False)
            # The network, volumes and secret go once the tasks are gone.
            deadline = time.monotonic() + 120
            label = f"label=com.docker.stack.namespace={self.project}"
            while time.monotonic() < deadline and (
                    docker("ps", "-aq", "--filter", label).stdout.strip()
                    or docker("network", "ls", "-q", "--filter", label).stdout.strip()):
                time.sleep(2)
            volumes = set(docker("volume", "ls", "-q", "--filter", label).stdout.split())
            volumes |= {v for v in docker("volume", "ls", "-q").stdout.split()
                        if v.startswith(f"{self.project}_")}
            for volume in sorted(volumes):
                docker("volume", "rm", volume, check=False)
            for secret in self.secrets.values():
                docker("secret", "rm", secret, check=False)
        if self.initialized:
            docker("swarm", "leave", "--force", check=False)
            if not self.had_gwbridge:
                docker("network", "rm", "docker_gwbridge", check=False)
            log("left the swarm again")


def swarm_scenario(stack):
    """deploy/docker-stack.yml on a single-node swarm: learner, 2 actors and
    Prometheus on an overlay network; training progresses; `docker service
    scale` to 4 actors, which Prometheus discovers."""
    log("swarm: deploying the stack (learner, 2 actors, Prometheus)")
    stack.deploy(2)
    first = wait_for("policy version >= 3 on the swarm",
                     lambda: (lambda m: m if m.get("flotilla_policy_version", 0) >= 3 else None)(
                         stack.learner_metrics()), 240)
    log(f"training: version {first['flotilla_policy_version']:.0f}, "
        f"{first['flotilla_learner_samples_received_total']:.0f} env steps, "
        f"return {first['flotilla_episode_return_mean']:.1f}")
    network = json.loads(docker("network", "inspect", f"{stack.project}_default").stdout)[0]
    if network["Driver"] != "overlay" or network["Scope"] != "swarm":
        fail(f"the stack's network is {network['Driver']}/{network['Scope']}, not overlay/swarm")
    for service in ("learner", "actor", "prometheus"):
        for cid in stack.containers(service):
            nets = json.loads(docker("inspect", cid).stdout)[0]["NetworkSettings"]["Networks"]
            if f"{stack.project}_default" not in nets:
                fail(f"{service} {cid[:12]} is not on the overlay network: {sorted(nets)}")
    log("learner, actors and Prometheus run on the overlay network")
    check_hardening(stack)
    wait_for("2 actor targets up in Prometheus", lambda: stack.prom('sum(up{job="actor"})') == 2, 90)
    later = wait_for("the mean return to rise by more than 10", lambda: (lambda m: m if m[
        "flotilla_episode_return_mean"] > first["flotilla_episode_return_mean"] + 10 else None)(
        stack.learner_metrics()), 120)
    if later["flotilla_policy_version"] <= first["flotilla_policy_version"]:
        fail("the policy version did not advance")
    log(f"later: version {later['flotilla_policy_version']:.0f}, "
        f"return {later['flotilla_episode_return_mean']:.1f}")
    time.sleep(20)
    two = steps_per_second(stack)
    log(f"2 actors: {two:.0f} env steps/s (Prometheus)")

    log("docker service scale actor=4")
    docker("service", "scale", "--detach", f"{stack.project}_actor=4")
    wait_for("4 actor targets up in Prometheus", lambda: stack.prom('sum(up{job="actor"})') == 4, 120)
    wait_for("4 actors connected to the learner", lambda: stack.learner_metrics()
             .get("flotilla_actors_connected", 0) == 4, 60)
    time.sleep(30)
    four = steps_per_second(stack)
    log(f"4 actors: {four:.0f} env steps/s (Prometheus), ratio {four / max(two, 1e-9):.2f}")
    if four < 1.5 * two:
        fail(f"env steps/s did not go up with 4 actors: {two:.0f} -> {four:.0f}")
    log("the swarm trains and scales: Prometheus discovered the new actors")


def run_swarm(keep):
    stack = Stack(f"flotillaswarm{os.getpid()}")
    reason = stack.start_swarm()
    if reason:
        allowed = os.environ.get("FLOTILLA_ALLOW_SKIP")
        if allowed is not None and "swarm" not in [s.strip() for s in allowed.split(",")]:
            stack.close()
            fail(f"the swarm stage cannot run here ({reason}) and "
                 f"FLOTILLA_ALLOW_SKIP={allowed!r} does not allow skipping it")
        log(f"skipped (swarm): {reason}")
        stack.close()
        return
    ok = False
    try:
        swarm_scenario(stack)
        ok = True
    finally:
        if not ok:
            for service in ("learner", "actor", "prometheus"):
                print(stack.logs(service)[-4000:], file=sys.stderr)
            print(docker("stack", "ps", "--no-trunc", stack.project, check=False).stdout,
                  file=sys.stderr)
        if not keep:
            stack.close()


def run_cluster(cluster, scenario, services, keep):
    ok = False
    try:
        scenario(cluster)
        ok = True
    finally:
        if not ok:
            for service in services:
                print(cluster.logs(service)[-4000:], file=sys.stderr)
        if not keep:
            cluster.run("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--only", choices=("cluster", "gymnasium", "swarm"),
                        help="run one scenario: steps 1-5 (cluster), step 6 (gymnasium) "
                             "or step 7 (swarm)")
    args = parser.parse_args()
    reason = skip_reason()
    if reason:
        # Under CI (FLOTILLA_ALLOW_SKIP set) a skip must be allowed by name.
        allowed = os.environ.get("FLOTILLA_ALLOW_SKIP")
        if allowed is not None and "compose" not in [s.strip() for s in allowed.split(",")]:
            log(f"the compose stage cannot run here ({reason}) and "
                f"FLOTILLA_ALLOW_SKIP={allowed!r} does not allow skipping it")
            sys.exit(1)
        log(f"skipped (compose): {reason}")
        return
    log("building images")
    subprocess.run([os.path.join(ROOT, "deploy", "build-images.sh"), TAG], check=True)
    try:
        if args.only in (None, "cluster"):
            run_cluster(Cluster(f"flotillatest{os.getpid()}"), scenario,
                        ("learner", "actor", "prometheus"), args.keep)
        if args.only in (None, "gymnasium"):
            run_cluster(Cluster(f"flotillagym{os.getpid()}", profile="gymnasium"),
                        gymnasium_scenario, ("gym-learner", "gym-actor"), args.keep)
        if args.only in (None, "swarm"):
            run_swarm(args.keep)
    finally:
        if not args.keep:
            subprocess.run(["docker", "image", "rm", *(f"flotilla/{n}:{TAG}" for n in IMAGES)],
                           capture_output=True)
    log("passed")


if __name__ == "__main__":
    main()
