"""The actor's environment thread: steps the environments, runs the policy,
packs one chunk every T steps and hands it to the network side.

New weights are picked up between chunks, so every chunk is acted with one
policy version, which it carries. Flow control keeps the actor from running
far ahead of the learner (see `FlowControl`). This is the Python counterpart
of `actor/src/worker.rs`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from .chunk import ChunkBuilder
from .envs import EnvFactory, EnvInfo, VectorRunner
from .metrics import ActorMetrics
from .policy import ModelSpec, Policy, PolicyError
from .seeds import sampling_seed
from .spaces import Space, dtype_of

log = logging.getLogger("flotilla.actor")

#: How long an actor that has acted its share of chunks with one version
#: waits for a new one before acting on anyway (the Rust actor's).
AHEAD_PATIENCE = 5.0


@dataclass(frozen=True)
class WorkerSpec:
    """What the environment thread needs to know about the run. Two equal
    specs (same run) let a reconnecting actor keep its environments."""

    env_id: str
    model: ModelSpec
    chunk_len: int
    num_envs: int
    observation_space: Space
    action_space: Space
    behavior_values: bool
    sync: bool
    batch_samples: int
    seed: int
    max_steps_per_second: float | None = None


@dataclass(frozen=True)
class Snapshot:
    """A published policy: its version, safetensors bytes, and the learner's
    advice on how many samples one actor should act with it
    (`PolicySnapshot.samples_per_version`; 0: no advice)."""

    version: int
    safetensors: bytes
    samples_per_version: int = 0


class SnapshotBox:
    """The newest policy snapshot, shared by the subscription (writer) and
    the environment thread (reader); like a watch channel, only the newest
    value is kept."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._snapshot: Snapshot | None = None
        self._generation = 0

    def publish(self, snapshot: Snapshot | None) -> None:
        with self._cond:
            self._snapshot = snapshot
            self._generation += 1
            self._cond.notify_all()

    def latest(self) -> tuple[int, Snapshot | None]:
        """The newest snapshot and its generation (bumped by every publish)."""
        with self._cond:
            return self._generation, self._snapshot

    def wait_for_change(self, version: int, stop: threading.Event, patience: float | None) -> bool:
        """Blocks until the newest snapshot is another version than
        `version` (True), or `stop` is set or `patience` seconds have passed
        (False). Any other version counts, not only a newer one: a learner
        restarted from an older checkpoint publishes lower versions."""
        deadline = None if patience is None else time.monotonic() + patience
        with self._cond:
            while not stop.is_set():
                s = self._snapshot
                if s is not None and s.version != version:
                    return True
                wait = 0.05
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    wait = min(wait, left)
                self._cond.wait(wait)
        return False


def chunks_per_version(batch_samples: int, num_envs: int, chunk_len: int) -> int | None:
    """Chunks of `num_envs` x `chunk_len` samples that fill `batch_samples`:
    the most one actor acts with one policy version (None: no limit)."""
    per_chunk = num_envs * chunk_len
    if batch_samples <= 0 or per_chunk <= 0:
        return None
    return -(-batch_samples // per_chunk)


class FlowControl:
    """How many chunks are acted with one policy version before waiting for
    another: the share its snapshot advises (`samples_per_version`) or else a
    batch's worth (`RunSpec.batch_samples`), or exactly one in synchronous
    mode (where the wait has no time limit and the advice is ignored)."""

    def __init__(self, spec: WorkerSpec, patience: float = AHEAD_PATIENCE):
        self.sync = spec.sync
        self._num_envs = spec.num_envs
        self._chunk_len = spec.chunk_len
        #: The share of a version whose snapshot gives no advice (None: no limit).
        self.limit: int | None
        if spec.sync:
            self.limit = 1
            self.patience: float | None = None
        else:
            self.limit = chunks_per_version(spec.batch_samples, spec.num_envs, spec.chunk_len)
            self.patience = patience
        self._version: int | None = None
        self._count = 0
        self._warned: int | None = None

    def limit_for(self, samples_per_version: int) -> int | None:
        """The chunks acted with a version whose snapshot advised
        `samples_per_version` samples (0: no advice, `limit`), converted as
        `batch_samples` is; None: no limit."""
        if self.sync or samples_per_version <= 0:
            return self.limit
        return chunks_per_version(samples_per_version, self._num_envs, self._chunk_len)

    def after_chunk(
        self,
        acted_with: int,
        snapshots: SnapshotBox,
        stop: threading.Event,
        metrics: ActorMetrics,
        samples_per_version: int = 0,
    ) -> float | None:
        """Counts a chunk acted with `acted_with`, whose snapshot advised
        `samples_per_version`; when that version's share is used up, waits
        for another version and returns how long it waited."""
        if self._version == acted_with:
            self._count += 1
        else:
            self._version, self._count = acted_with, 1
        limit = self.limit_for(samples_per_version)
        if limit is None or self._count < limit:
            return None
        t0 = time.monotonic()
        changed = snapshots.wait_for_change(acted_with, stop, self.patience)
        waited = time.monotonic() - t0
        metrics.policy_wait.observe(waited)
        if not changed and not stop.is_set():
            # Our chunks of this version did not all reach the learner (a
            # reconnect, a restart): act a whole share again.
            self._count = 0
            if self._warned != acted_with:
                self._warned = acted_with
                log.warning("no new policy after %.0f s; acting on with version %d", self.patience or 0, acted_with)
        return waited


class Pacer:
    """Holds a thread to a mean rate of env steps per second, measured from
    its first call (to simulate a slow actor, or to spare a shared machine)."""

    def __init__(self, per_second: float):
        self.per_second = per_second
        self.started: float | None = None
        self.steps = 0

    def pause(self, seconds: float) -> None:
        """Moves the schedule on by time spent waiting for something else, so
        the steps not taken meanwhile are not made up at full speed."""
        if self.started is not None:
            self.started += seconds

    def wait_for(self, steps: int, stop: threading.Event) -> None:
        """Records `steps` more steps and sleeps until they are due."""
        if self.started is None:
            self.started = time.monotonic()
        self.steps += steps
        due = self.started + self.steps / self.per_second
        while not stop.is_set():
            left = due - time.monotonic()
            if left <= 0:
                break
            stop.wait(min(left, 0.1))


class EnvWorker(threading.Thread):
    """The environment thread of one run. Chunks come out of `chunks` (a
    small bounded queue: while the learner is away, a few chunks wait and the
    environments pause). An exception ends the thread and is kept in `error`."""

    def __init__(
        self,
        spec: WorkerSpec,
        run_id: str,
        factory: EnvFactory,
        info: EnvInfo,
        vector_mode: str,
        snapshots: SnapshotBox,
        metrics: ActorMetrics,
        patience: float = AHEAD_PATIENCE,
        stopping: threading.Event | None = None,
    ):
        super().__init__(name="env", daemon=True)
        self.spec = spec
        self.run_id = run_id
        self.factory = factory
        self.info = info
        self.vector_mode = vector_mode
        self.snapshots = snapshots
        self.metrics = metrics
        self.patience = patience
        self.chunks: queue.Queue = queue.Queue(maxsize=4)
        self.stop_event = threading.Event()
        #: The whole actor's stop: once it is set, a failing environment (an
        #: async worker process that got the terminal's Ctrl-C too) is not
        #: an error of the actor.
        self.stopping = stopping or threading.Event()
        self.error: BaseException | None = None
        #: The generation of the snapshot box (`SnapshotBox.latest`) that the
        #: thread has taken in: every chunk acted before it took in a newer
        #: one has been handed over by then.
        self.followed_generation = -1

    def shut_down(self, timeout: float = 30.0) -> None:
        """Stops the thread and waits for it (its environments are closed)."""
        self.stop_event.set()
        self.join(timeout)

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # handed to the network side, which ends the actor
            log.debug("environment thread failed", exc_info=True)
            if not self.stopping.is_set():
                self.error = e

    def _run(self) -> None:
        spec, stop = self.spec, self.stop_event
        runner = VectorRunner(self.factory, self.info, spec.num_envs, spec.seed, self.vector_mode)
        try:
            # Observations travel in the run's dtype: the bytes of a uint8
            # (pixel) space as they are, a quarter of f32.
            builder = ChunkBuilder(
                spec.chunk_len,
                spec.num_envs,
                self.info.observation.dim,
                spec.action_space,
                obs_dtype=dtype_of(spec.observation_space),
            )
            builder.begin(runner.obs)
            rng = np.random.Generator(np.random.PCG64(sampling_seed(spec.seed)))
            pacer = Pacer(spec.max_steps_per_second) if spec.max_steps_per_second else None
            flow = FlowControl(spec, self.patience)
            policy: tuple[int, Policy, int] | None = None
            seen_generation = -1
            while not stop.is_set():
                generation, snap = self.snapshots.latest()
                if generation != seen_generation:
                    seen_generation = generation
                    policy = self._follow(snap, policy)
                    self.followed_generation = generation
                if policy is None:
                    # Nothing to act with yet: wait for the first snapshot.
                    stop.wait(0.02)
                    continue
                version, p, samples_per_version = policy
                chunk = self._act_chunk(runner, builder, p, version, rng)
                if chunk is None:
                    break  # asked to stop halfway through a chunk
                if pacer is not None:
                    pacer.wait_for(spec.chunk_len * spec.num_envs, stop)
                if not self._hand_over(chunk):
                    break
                waited = flow.after_chunk(version, self.snapshots, stop, self.metrics, samples_per_version)
                if waited is not None and pacer is not None:
                    pacer.pause(waited)
        finally:
            runner.close()

    def _follow(
        self, snap: Snapshot | None, policy: tuple[int, Policy, int] | None
    ) -> tuple[int, Policy, int] | None:
        """The policy of the newest snapshot when its version is new to us,
        as (version, policy, the snapshot's advice `samples_per_version`); a
        snapshot that does not fit the spec is logged and ignored. A cleared
        box (a new run) forgets the old policy."""
        if snap is None:
            return None
        if policy is not None and policy[0] == snap.version:
            return policy
        spec = self.spec
        try:
            p = Policy.from_safetensors(
                spec.model, self.info.observation.space.shape, spec.action_space, snap.safetensors
            )
        except PolicyError as e:
            log.warning("ignoring unusable policy snapshot %d: %s", snap.version, e)
            return policy
        log.debug("policy updated to version %d", snap.version)
        self.metrics.policy_version.set(snap.version)
        return snap.version, p, snap.samples_per_version

    def _stopping(self) -> bool:
        """Whether this thread, or the whole actor, is asked to stop."""
        return self.stop_event.is_set() or self.stopping.is_set()

    def _act_chunk(self, runner: VectorRunner, builder: ChunkBuilder, policy: Policy, version: int, rng):
        """Acts `chunk_len` steps of every environment and packs them; None
        when asked to stop before the chunk is complete (the partial chunk is
        dropped: a slow environment must not hold up a stopping actor for a
        whole chunk, and nothing would send it anyway)."""
        spec, m = self.spec, self.metrics
        action_adapter = self.info.action
        for _ in range(spec.chunk_len):
            if self._stopping():
                return None
            t0 = time.perf_counter()
            # The network computes in f32 (uint8 pixels become their values
            # 0..=255, scaled by `model.observation_scale` inside it), while
            # the chunk keeps the observations as they travel.
            obs = np.asarray(runner.obs, dtype=np.float32)
            s = policy.act(obs, rng, greedy=False, with_value=spec.behavior_values)
            m.inference.observe(time.perf_counter() - t0)
            r = runner.step(action_adapter.to_env_batch(s.actions))
            builder.push(
                s.actions,
                s.logp,
                s.value,
                r.rewards,
                r.terminated,
                r.truncated,
                r.obs,
                r.final_envs,
                r.final_obs,
                r.episodes,
            )
            if r.episodes:
                m.episodes.inc(len(r.episodes))
        m.env_steps.inc(spec.chunk_len * spec.num_envs)
        return builder.finish(spec.env_id, version)

    def _hand_over(self, chunk) -> bool:
        """Puts a chunk in the outgoing queue, waiting while it is full;
        False when the thread is asked to stop meanwhile."""
        while not self.stop_event.is_set():
            try:
                self.chunks.put(chunk, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False
