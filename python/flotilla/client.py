"""The actor's network side: handshake, policy subscription, trajectory
stream, and reconnection with exponential backoff and jitter. The Python
counterpart of `actor/src/client.rs`.

One connection (a *session*) is: `Hello` (declaring the environment, getting
the run's spec, an actor id and a session credential), then two calls side
by side: `SubscribePolicy`, read by a background thread that publishes each
snapshot to the environment thread, and `StreamTrajectories`, which carries
the session credential in its metadata and the chunks the environment thread
packs. Every call carries `authorization: Bearer <token>` when the actor has
a token.

Status codes are classified as the Rust actor does: a learner that says our
input is wrong will say it again, so `INVALID_ARGUMENT`,
`FAILED_PRECONDITION`, `UNAUTHENTICATED` and `PERMISSION_DENIED` end the
actor (`Refused`); everything else (the learner restarting, a network blip)
is retried after a delay that doubles from 100 ms to 10 s, each delay drawn
from 50-100% of its step. A reconnect to the same run with the same spec
keeps the environments running.
"""

from __future__ import annotations

import ipaddress
import logging
import queue
import random
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import grpc

from .chunk import max_encoded_len
from .envs import EnvFactory, EnvInfo
from .metrics import ActorMetrics
from .policy import ModelSpec, PolicyError
from .seeds import actor_seed
from .spaces import Discrete, SpaceError, dtype_of, from_proto, space_difference, to_proto
from .v1 import PROTOCOL_VERSION, SESSION_METADATA
from .v1 import flotilla_pb2 as pb
from .v1 import flotilla_pb2_grpc as pb_grpc
from .worker import EnvWorker, Snapshot, SnapshotBox, WorkerSpec

log = logging.getLogger("flotilla.actor")

#: Status codes that end the actor: retrying cannot help.
FATAL_CODES = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)

#: Limits on what a run spec may ask an actor to allocate (`common/src/run_spec.rs`).
MAX_CHUNK_LEN = 1 << 16
MAX_ENVS = 1 << 16
MAX_SPACE_SIZE = 1 << 24
MAX_SESSION_LEN = 128

#: Deadline of one `Hello`, connecting included. Longer than the 30 s a
#: learner that is starting up may hold a `Hello` before it answers, so that
#: a slow start is not taken for an unreachable learner.
HELLO_TIMEOUT = 45.0
#: The most a stopping actor waits to close its stream and for the learner to
#: acknowledge it (both together); at most half the shutdown grace.
CLOSE_TIMEOUT = 5.0


class Status(Exception):
    """A gRPC status: why a call or a session ended."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @property
    def fatal(self) -> bool:
        return self.code in FATAL_CODES

    @classmethod
    def of(cls, e: grpc.RpcError) -> "Status":
        code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
        details = e.details() if hasattr(e, "details") else str(e)
        return cls(code or grpc.StatusCode.UNKNOWN, details or "")


class ActorError(Exception):
    """Ends the actor with exit code 1 (its environment failed, ...)."""


class UsageError(ActorError):
    """Ends the actor with exit code 64: bad options."""


class Refused(UsageError):
    """The learner refused this actor (exit code 64)."""

    def __init__(self, status: Status):
        super().__init__(f"the learner refused this actor ({status.code.name}): {status.message}")
        self.status = status


class _Stopped(Exception):
    """The actor was asked to stop during a call."""


@dataclass(frozen=True)
class TlsOptions:
    """TLS to the learner: the CA that signed its certificate, an optional
    client identity for mutual TLS, and the name expected in the learner's
    certificate (default: the URL's host)."""

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = None
    domain: str | None = None


@dataclass
class ActorOptions:
    """How to run an actor."""

    learner: str
    env: EnvFactory
    name: str
    num_envs: int | None = None
    vector: str = "sync"
    max_steps_per_second: float | None = None
    auth_token: str | None = None
    tls: TlsOptions | None = None
    #: `--shutdown-grace-seconds`: how long stopping may take in all.
    shutdown_grace: float | None = None

    def close_timeout(self) -> float:
        """How long closing the stream may take when the actor stops: 5 s,
        or half the grace when that is shorter, which leaves the other half
        for stopping the environments."""
        if self.shutdown_grace is None:
            return CLOSE_TIMEOUT
        return min(CLOSE_TIMEOUT, self.shutdown_grace / 2)


@dataclass
class ActorSummary:
    """What an actor did before it stopped."""

    chunks_sent: int = 0
    reconnects: int = 0


class Backoff:
    """Exponential backoff with jitter (each delay 50-100% of its step), capped."""

    def __init__(self, base: float = 0.1, cap: float = 10.0, rng: random.Random | None = None):
        self.base, self.cap = base, cap
        self.next = base
        self._rng = rng or random.Random()

    def reset(self) -> None:
        self.next = self.base

    def delay(self) -> float:
        d = self.next
        self.next = min(self.next * 2, self.cap)
        return d * self._rng.uniform(0.5, 1.0)


def check_token(token: str, origin: str) -> str:
    """A shared token as the learner accepts it: 16 to 4096 visible ASCII
    characters."""
    if not 16 <= len(token) <= 4096:
        raise UsageError(f"{origin}: the token must be 16 to 4096 characters long, got {len(token)}")
    if not all(33 <= ord(c) <= 126 for c in token):
        raise UsageError(f"{origin}: the token may hold only visible ASCII characters (no spaces)")
    return token


def parse_learner_url(url: str, tls: TlsOptions | None) -> tuple[str, str]:
    """The gRPC target (`host:port`) and host of a learner URL; `http://` is
    plaintext, `https://` TLS (which needs the CA)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid learner URL {url}: expected http://HOST:PORT or https://HOST:PORT")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise UsageError(f"invalid learner URL {url}: {e}") from None
    if parts.path not in ("", "/"):
        raise UsageError(f"invalid learner URL {url}: a learner URL has no path")
    if parts.scheme == "https" and tls is None:
        raise UsageError(
            f"invalid learner URL {url}: an https:// learner needs --tls-ca (the CA that signed its certificate)"
        )
    if parts.scheme == "http" and tls is not None:
        raise UsageError(f"invalid learner URL {url}: TLS options need an https:// learner URL")
    host = parts.hostname
    target_host = f"[{host}]" if ":" in host else host
    return f"{target_host}:{port}", host


def is_loopback_host(host: str) -> bool:
    """Whether a URL host names this machine (`localhost`, 127.0.0.0/8, `::1`)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_certificate_error(message: str) -> bool:
    """Whether a failed connection is a TLS problem that a retry will meet
    again (an unknown CA, a refused or missing client certificate, a name
    mismatch, TLS against a plaintext port) rather than an absent learner."""
    m = message.lower()
    return any(
        needle in m for needle in ("certificate", "wrong_version_number", "peer name", "unknown_ca", "unknown ca")
    )


class Connection:
    """One channel to the learner and the metadata every call carries."""

    def __init__(self, opts: ActorOptions, target: str):
        options = [
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.enable_retries", 0),
            # The actor paces its own reconnects: a fresh channel per session.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 10_000),
        ]
        if opts.tls is not None:
            creds = grpc.ssl_channel_credentials(
                root_certificates=opts.tls.ca,
                private_key=opts.tls.key,
                certificate_chain=opts.tls.cert,
            )
            if opts.tls.domain:
                options.append(("grpc.ssl_target_name_override", opts.tls.domain))
            self.channel = grpc.secure_channel(target, creds, options)
        else:
            self.channel = grpc.insecure_channel(target, options)
        self.stub = pb_grpc.LearnerStub(self.channel)
        self.metadata: list[tuple[str, str]] = []
        if opts.auth_token:
            self.metadata.append(("authorization", f"Bearer {opts.auth_token}"))

    def close(self) -> None:
        self.channel.close()


@dataclass
class Session:
    """A successful `Hello`: the run as this actor must follow it."""

    run_id: str
    actor_id: int
    credential: str
    #: The learner's newest policy version at the handshake.
    version: int
    max_chunk_bytes: int
    spec: WorkerSpec
    #: The run's `[env]` settings (a built-in run's), as TOML; an actor with
    #: its own environment does not apply them.
    env_config_toml: str = ""
    started: float = field(default_factory=time.monotonic)


def hello_request(opts: ActorOptions, info: EnvInfo) -> pb.HelloRequest:
    """The `Hello` of this actor: its name, its number of environments and
    the declaration of its environment."""
    return pb.HelloRequest(
        actor_name=opts.name,
        num_envs=opts.num_envs or 0,
        protocol_version=PROTOCOL_VERSION,
        env_id=info.env_id,
        observation_space=to_proto(info.observation.space),
        action_space=to_proto(info.action.space),
    )


def _spec_error(field_name: str, message: str) -> Status:
    # A spec this actor cannot use will not improve on a retry.
    return Status(grpc.StatusCode.FAILED_PRECONDITION, f"run spec field `{field_name}`: {message}")


def session_from_run_spec(rs: pb.RunSpec, opts: ActorOptions, info: EnvInfo) -> Session:
    """Checks the learner's run spec as the Rust actor does (naming the field
    of any problem) and derives what the environment thread needs."""
    if rs.protocol_version != PROTOCOL_VERSION:
        raise _spec_error("protocol_version", f"expected {PROTOCOL_VERSION}, got {rs.protocol_version}")
    if not rs.HasField("model"):
        raise _spec_error("model", "missing")
    try:
        model = ModelSpec.from_proto(rs.model)
    except PolicyError as e:
        raise _spec_error("model", str(e)) from None
    for name, value, most in (
        ("chunk_len", rs.chunk_len, MAX_CHUNK_LEN),
        ("default_num_envs", rs.default_num_envs, MAX_ENVS),
    ):
        if not 1 <= value <= most:
            raise _spec_error(name, f"expected 1..={most}, got {value}")
    if rs.max_chunk_bytes < 1024:
        raise _spec_error("max_chunk_bytes", f"expected at least 1024, got {rs.max_chunk_bytes}")
    session = rs.session
    if not (1 <= len(session) <= MAX_SESSION_LEN and all(c.isascii() and (c.isalnum() or c == "-") for c in session)):
        raise _spec_error(
            "session", f"expected 1 to {MAX_SESSION_LEN} ASCII letters, digits or '-', got {len(session)} bytes"
        )
    spaces = {}
    for name in ("observation_space", "action_space"):
        if not rs.HasField(name):
            raise _spec_error(name, "missing")
        try:
            spaces[name] = from_proto(getattr(rs, name), name)
        except SpaceError as e:
            raise _spec_error(name, str(e)) from None
        s = spaces[name]
        size = s.n if isinstance(s, Discrete) else s.flat_dim
        if size > MAX_SPACE_SIZE:
            raise _spec_error(name, f"expected at most {MAX_SPACE_SIZE} values, got {size}")
    # The learner checked our declaration; a run that still differs (an
    # older learner, a built-in run) cannot be acted in with this env. The
    # comparison and its words are the learner's (f32 bit patterns).
    for name, ours in (("observation_space", info.observation.space), ("action_space", info.action.space)):
        difference = space_difference(spaces[name], ours)
        if difference is not None:
            raise Status(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{name}: the learner's run has {difference} (environment {info.env_id})",
            )
    # A convolutional torso needs image observations its kernels fit (the
    # learner checks this for its run; an older or broken one may not).
    problems = model.problems_with(info.observation.space.shape)
    if problems:
        raise _spec_error("model", "; ".join(f"{k}: {m}" for k, m in problems))
    spec = WorkerSpec(
        env_id=rs.env_id,
        model=model,
        chunk_len=rs.chunk_len,
        num_envs=opts.num_envs or rs.default_num_envs,
        observation_space=spaces["observation_space"],
        action_space=spaces["action_space"],
        behavior_values=rs.send_behavior_values,
        sync=rs.sync,
        batch_samples=rs.batch_samples,
        # One seed per actor name within a run: a reconnecting actor keeps
        # its streams (and its environments).
        seed=actor_seed(rs.seed, opts.name),
        max_steps_per_second=opts.max_steps_per_second,
    )
    check_chunk_size(spec, rs.run_id, rs.max_chunk_bytes, info.observation.dim)
    return Session(
        run_id=rs.run_id,
        actor_id=rs.actor_id,
        credential=session,
        version=rs.policy_version,
        max_chunk_bytes=rs.max_chunk_bytes,
        spec=spec,
        env_config_toml=rs.env_config_toml,
    )


def check_chunk_size(spec: WorkerSpec, run_id: str, max_bytes: int, obs_dim: int) -> None:
    """The largest chunk these environments produce with one episode ending
    per environment must fit the learner's `ingest.max_chunk_bytes`, else no
    chunk would ever be accepted; the error says how many envs would fit."""

    def size(num_envs: int) -> int:
        return max_encoded_len(
            spec.chunk_len,
            num_envs,
            obs_dim,
            spec.action_space,
            spec.behavior_values,
            num_envs,
            len(run_id.encode()),
            len(spec.env_id.encode()),
            dtype_of(spec.observation_space),
        )

    need = size(spec.num_envs)
    if need <= max_bytes:
        return
    fits = next((n for n in range(spec.num_envs - 1, 0, -1) if size(n) <= max_bytes), None)
    advice = (
        f"run this actor with --num-envs {fits} or fewer, or raise ingest.max_chunk_bytes"
        if fits
        else "even one env is too many: raise ingest.max_chunk_bytes or lower rollout.chunk_len"
    )
    raise Status(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"chunks of {spec.num_envs} envs x {spec.chunk_len} steps of {spec.env_id} encode to up to "
        f"{need} bytes with one episode ending per env, over the learner's ingest.max_chunk_bytes = "
        f"{max_bytes}: {advice} (a chunk in which more episodes end is larger still)",
    )


def _wait(future: grpc.Future, stop: threading.Event):
    """The result of a call, polling `stop` so a signal is not held up."""
    while True:
        try:
            return future.result(timeout=0.1)
        except grpc.FutureTimeoutError:
            if stop.is_set():
                future.cancel()
                raise _Stopped() from None


def hello(conn: Connection, opts: ActorOptions, info: EnvInfo, stop: threading.Event) -> Session:
    """Calls `Hello` and checks the answer; raises `Status` on failure."""
    future = conn.stub.Hello.future(hello_request(opts, info), timeout=HELLO_TIMEOUT, metadata=conn.metadata)
    try:
        rs = _wait(future, stop)
    except grpc.RpcError as e:
        status = Status.of(e)
        if status.code == grpc.StatusCode.UNAVAILABLE and opts.tls is not None:
            # A certificate the other side refuses will be refused again.
            if _is_certificate_error(status.message):
                raise Status(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"TLS handshake with {opts.learner} failed: {status.message} "
                    "(check --tls-ca, --tls-cert, --tls-key and --tls-domain)",
                ) from None
            if "TSI_DATA_CORRUPTED" in status.message:
                # TLS 1.3: a learner that refuses our client certificate (or
                # its absence) says so in an alert after the handshake, which
                # gRPC reports only as undecryptable data.
                raise Status(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"the learner at {opts.learner} closed the TLS connection right after the "
                    f"handshake ({status.message}): it requires a client certificate signed by its "
                    "client CA (check --tls-cert and --tls-key)",
                ) from None
        if status.code == grpc.StatusCode.UNAVAILABLE:
            raise Status(status.code, f"connecting to {opts.learner}: {status.message}") from None
        raise status from None
    return session_from_run_spec(rs, opts, info)


class _Subscription(threading.Thread):
    """Follows `SubscribePolicy` and publishes each snapshot; remembers the
    newest version this learner has shown, and why the stream ended
    (`status`, set before the thread ends, however it ends).

    Once `cancel` has returned, the thread publishes nothing more: a snapshot
    of this session that arrives late cannot land in the box after the actor
    has cleared it for a new run."""

    #: How long `cancel` waits for the thread to end.
    JOIN_TIMEOUT = 2.0

    def __init__(self, conn: Connection, snapshots: SnapshotBox, known_version: int):
        super().__init__(name="policy", daemon=True)
        self.snapshots = snapshots
        self.known_version = known_version
        self.status: Status | None = None
        # Held while publishing, and by `cancel` while it closes the gate.
        self._gate = threading.Lock()
        self._cancelled = False
        self.call = conn.stub.SubscribePolicy(
            pb.SubscribeRequest(actor_name="", have_version=0), metadata=conn.metadata
        )

    def run(self) -> None:
        try:
            for snap in self.call:
                with self._gate:
                    if self._cancelled:
                        break
                    # Known before published: a chunk acted with this version
                    # is never mistaken for one from a newer, unknown policy.
                    self.known_version = max(self.known_version, snap.version)
                    self.snapshots.publish(Snapshot(snap.version, snap.safetensors, snap.samples_per_version))
            self.status = Status(grpc.StatusCode.UNAVAILABLE, "policy subscription ended")
        except grpc.RpcError as e:
            self.status = Status.of(e)
        except Exception as e:  # a bug or a resource problem: end the session, not silently the thread
            log.debug("policy subscription failed", exc_info=True)
            self.status = Status(grpc.StatusCode.INTERNAL, f"policy subscription: {type(e).__name__}: {e}")
        finally:
            if self.status is None:  # a BaseException on its way out
                self.status = Status(grpc.StatusCode.INTERNAL, "policy subscription thread stopped")

    def cancel(self) -> None:
        """Ends the call; from its return on, nothing more is published."""
        with self._gate:
            self._cancelled = True
        self.call.cancel()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(self.JOIN_TIMEOUT)


class _Upload:
    """The session's `StreamTrajectories` call, fed from a one-slot queue."""

    _END = object()

    def __init__(self, conn: Connection, credential: str):
        self.queue: queue.Queue = queue.Queue(maxsize=1)
        self._abandoned = threading.Event()
        metadata = conn.metadata + [(SESSION_METADATA, credential)]
        self.future = conn.stub.StreamTrajectories.future(self._requests(), metadata=metadata)

    def _requests(self):
        while True:
            try:
                item = self.queue.get(timeout=0.1)
            except queue.Empty:
                if self._abandoned.is_set():
                    return
                continue
            if item is self._END:
                return
            yield item

    def send(self, chunk: pb.Chunk, stop: threading.Event, failed) -> bool:
        """Hands one chunk to the stream, waiting while the previous one is
        not taken yet; False when the actor stops or the session fails first."""
        while True:
            try:
                self.queue.put(chunk, timeout=0.05)
                return True
            except queue.Full:
                if stop.is_set() or self.future.done() or failed():
                    return False

    def close(self, timeout: float) -> None:
        """Ends the stream from our side and lets the learner acknowledge it,
        within `timeout` seconds for both: a learner that does not take the
        last chunk (its ingest pushing back) must not hold the actor for two
        timeouts."""
        deadline = time.monotonic() + timeout
        # A call that has ended (the learner closed the stream) takes
        # nothing more from the queue: stop waiting for room as soon as it
        # ends, not at the deadline.
        while not self.future.done() and time.monotonic() < deadline:
            try:
                self.queue.put(self._END, timeout=min(0.05, max(0.0, deadline - time.monotonic())))
            except queue.Full:
                continue
            try:
                self.future.result(timeout=max(0.0, deadline - time.monotonic()))
            except (grpc.RpcError, grpc.FutureTimeoutError, grpc.FutureCancelledError):
                pass
            break
        self.abandon()

    def abandon(self) -> None:
        self._abandoned.set()
        if not self.future.done():
            self.future.cancel()

    def outcome(self) -> Status:
        """Why the (finished) call ended, as a status."""
        try:
            self.future.result(timeout=0)
        except grpc.FutureCancelledError:
            return Status(grpc.StatusCode.CANCELLED, "trajectory stream cancelled")
        except grpc.RpcError as e:
            return Status.of(e)
        return Status(grpc.StatusCode.UNAVAILABLE, "trajectory stream closed by the learner")


def serve(
    conn: Connection,
    session: Session,
    worker: EnvWorker,
    snapshots: SnapshotBox,
    stop: threading.Event,
    summary: ActorSummary,
    metrics: ActorMetrics,
    close_timeout: float = CLOSE_TIMEOUT,
) -> int:
    """One session: follows snapshots and streams chunks until the actor is
    asked to stop (returns the number of chunks sent; closing the stream takes
    at most `close_timeout` seconds) or the session fails (raises `Status`).
    Once it returns, the session's policy subscription publishes nothing."""
    subscription = _Subscription(conn, snapshots, session.version)
    subscription.start()
    upload: _Upload | None = None
    sequence = 0
    try:
        upload = _Upload(conn, session.credential)
        while True:
            if stop.is_set():
                # Close our side of the stream and let the learner acknowledge.
                upload.close(close_timeout)
                return sequence
            if subscription.status is not None:
                raise subscription.status
            if not subscription.is_alive():
                # It sets its status before it ends; read it again to be sure.
                raise subscription.status or Status(grpc.StatusCode.INTERNAL, "policy subscription thread stopped")
            if upload.future.done():
                raise upload.outcome()
            if not worker.is_alive():
                raise Status(grpc.StatusCode.INTERNAL, "environment thread stopped")
            try:
                chunk = worker.chunks.get(timeout=0.05)
            except queue.Empty:
                continue
            if chunk.policy_version > subscription.known_version:
                # Acted before the learner restarted from an older checkpoint:
                # the learner no longer has that policy.
                log.debug(
                    "dropping a chunk acted with version %d, newer than the learner's %d",
                    chunk.policy_version,
                    subscription.known_version,
                )
                continue
            sequence += 1
            chunk.run_id = session.run_id
            chunk.actor_id = session.actor_id
            chunk.sequence = sequence
            size = chunk.ByteSize()
            if size > session.max_chunk_bytes:
                # The learner would refuse it, and every retry of it.
                raise Status(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"a chunk of {size} bytes ({len(chunk.episode_returns)} episodes ended in it) is over "
                    f"the learner's ingest.max_chunk_bytes = {session.max_chunk_bytes}: lower --num-envs "
                    "or raise ingest.max_chunk_bytes",
                )
            t0 = time.perf_counter()
            if not upload.send(chunk, stop, lambda: subscription.status is not None):
                continue  # the loop's checks say why
            metrics.chunk_send.observe(time.perf_counter() - t0)
            summary.chunks_sent += 1
    finally:
        subscription.cancel()
        if upload is not None:
            upload.abandon()


class _Outage:
    """Logs failed attempts to reach the learner without flooding the log: a
    warning for the first failure and whenever the reason changes, then one
    line every `every` seconds while it lasts."""

    def __init__(self, every: float = 30.0):
        self.every = every
        self.attempts = 0
        self.reason: str | None = None
        self.last_logged = 0.0

    def failed(self, status: Status, delay: float) -> None:
        self.attempts += 1
        now = time.monotonic()
        reason = str(status)
        if reason != self.reason:
            self.reason = reason
            self.last_logged = now
            log.warning("learner unreachable (%s); retrying in %.0f ms", reason, delay * 1000)
        elif now - self.last_logged >= self.every:
            self.last_logged = now
            log.warning("learner still unreachable after %d attempts (%s); retrying", self.attempts, reason)
        else:
            log.debug("learner unreachable (%s); retrying in %.0f ms", reason, delay * 1000)

    def ended(self) -> None:
        self.attempts = 0
        self.reason = None


def run(
    opts: ActorOptions,
    info: EnvInfo,
    stop: threading.Event,
    metrics: ActorMetrics | None = None,
) -> ActorSummary:
    """Runs an actor until `stop` is set (returns its summary) or it cannot
    go on: `Refused`/`UsageError` (exit 64), `ActorError` (exit 1)."""
    metrics = metrics or ActorMetrics()
    target, host = parse_learner_url(opts.learner, opts.tls)
    if opts.auth_token and opts.tls is None and not is_loopback_host(host):
        log.warning(
            "sending the shared token in plaintext to %s, a learner off this host: anyone on the "
            "path can read it (use an https:// learner with --tls-ca)",
            opts.learner,
        )
    snapshots = SnapshotBox()
    worker: EnvWorker | None = None
    backoff = Backoff()
    outage = _Outage()
    summary = ActorSummary()
    first = True
    warned_env_config = False
    try:
        while not stop.is_set():
            # An environment thread that failed ends the actor, also while
            # the learner is away (else it would only say "unreachable").
            _raise_worker_error(worker)
            if not first:
                summary.reconnects += 1
                metrics.reconnects.inc()
            first = False
            conn = Connection(opts, target)
            try:
                try:
                    session = hello(conn, opts, info, stop)
                except _Stopped:
                    break
                except Status as status:
                    if status.fatal:
                        raise Refused(status) from None
                    delay = backoff.delay()
                    outage.failed(status, delay)
                    stop.wait(delay)
                    continue
                outage.ended()
                log.info(
                    "connected to learner %s: run %s, actor id %d, env %s, %d envs",
                    opts.learner,
                    session.run_id,
                    session.actor_id,
                    session.spec.env_id,
                    session.spec.num_envs,
                )
                if session.env_config_toml.strip() and not warned_env_config:
                    # Only a built-in run has settings here (an external run
                    # refuses [env] keys); this actor builds its own env.
                    warned_env_config = True
                    log.warning(
                        "the run's [env] settings are not applied to this actor's environment %s "
                        "(give them to it with --env-kwargs if it needs them): %s",
                        info.env_id,
                        "; ".join(line.strip() for line in session.env_config_toml.splitlines() if line.strip()),
                    )
                same = (
                    worker is not None
                    and worker.is_alive()
                    and worker.spec == session.spec
                    and worker.run_id == session.run_id
                )
                if same:
                    log.info("same run and spec: the environments carry on")
                else:
                    if worker is not None:
                        _shut_down(worker)
                    # A new run: forget the old run's weights before acting again.
                    snapshots.publish(None)
                    worker = EnvWorker(
                        session.spec,
                        session.run_id,
                        opts.env,
                        info,
                        opts.vector,
                        snapshots,
                        metrics,
                        stopping=stop,
                    )
                    worker.start()
                sent_before = summary.chunks_sent
                try:
                    serve(conn, session, worker, snapshots, stop, summary, metrics, opts.close_timeout())
                    break
                except Status as status:
                    if status.fatal:
                        raise Refused(status) from None
                    if not worker.is_alive():
                        break
                    log.warning("connection to learner lost (%s); reconnecting", status)
                    if summary.chunks_sent > sent_before:
                        backoff.reset()
                    else:
                        # Nothing got through this session: do not hammer
                        # a learner that accepts Hello and then fails.
                        stop.wait(backoff.delay())
            finally:
                conn.close()
    except BaseException:
        if worker is not None:
            worker.shut_down()
        raise
    if worker is not None:
        _shut_down(worker)
    return summary


def _shut_down(worker: EnvWorker) -> None:
    """Stops the environment thread; its failure ends the actor."""
    worker.shut_down()
    _raise_worker_error(worker)


def _raise_worker_error(worker: EnvWorker | None) -> None:
    """Ends the actor (`ActorError`, exit 1) when its environment thread failed."""
    if worker is not None and worker.error is not None:
        e = worker.error
        raise ActorError(f"environment thread: {type(e).__name__}: {e}") from e
