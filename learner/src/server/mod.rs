//! The `flotilla.v1.Learner` gRPC service: the network edge of the learner.
//!
//! tokio handles the network only. Chunks are decoded here and pass the
//! [`gate::IngestGate`] (cheap, proportional to the payload), then cross a
//! bounded crossbeam channel to the trainer thread; when that channel is full
//! the stream waits, which is back-pressure all the way to the actors'
//! sockets. Policy snapshots flow the other way through a `tokio::sync::watch`
//! owned by the trainer's publisher: every subscriber sees the newest version
//! and never a backlog.

pub mod gate;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use flotilla_common::auth::{AuthToken, RequireToken};
use flotilla_common::metrics as m;
use flotilla_common::proto::{self, learner_server::LearnerServer};
use flotilla_common::{EnvSpec, RunSpec, Snapshot, Space, Spaces};
use tokio::net::TcpListener;

use crate::train::recorder::Counters;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::{TcpListenerStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::ServerTlsConfig;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

pub use gate::{Admitted, BoundStream, IngestGate, LearnerError, SessionLimits};

/// Longest `actor_name` (and declared `env_id`) accepted at `Hello`.
const MAX_ACTOR_NAME: usize = 256;

/// The checks of a `Hello` that hold whatever the run: protocol, sizes, and
/// a well-formed environment declaration. Returns the declaration: `None`
/// when the actor declares no environment of its own.
pub fn check_hello(
    req: &proto::HelloRequest,
    max_envs_per_actor: u32,
) -> Result<Option<(String, Spaces)>, LearnerError> {
    if req.protocol_version != proto::PROTOCOL_VERSION {
        return Err(LearnerError::ProtocolVersion {
            expected: proto::PROTOCOL_VERSION,
            actual: req.protocol_version,
        });
    }
    if req.num_envs > max_envs_per_actor {
        return Err(LearnerError::NumEnvs {
            max: max_envs_per_actor,
            actual: req.num_envs,
        });
    }
    if req.actor_name.len() > MAX_ACTOR_NAME {
        return Err(LearnerError::ActorName {
            max: MAX_ACTOR_NAME,
            actual: req.actor_name.len(),
        });
    }
    declared_env(req)
}

fn declared_env(req: &proto::HelloRequest) -> Result<Option<(String, Spaces)>, LearnerError> {
    let bad = |m: String| LearnerError::Declaration(m);
    let (obs, act) = match (&req.observation_space, &req.action_space, req.env_id.is_empty()) {
        (None, None, true) => return Ok(None),
        (Some(o), Some(a), false) => (o, a),
        _ => {
            return Err(bad(
                "fields `env_id`, `observation_space`, `action_space`: an actor declares all three (its own environment) or none".into(),
            ))
        }
    };
    if req.env_id.len() > MAX_ACTOR_NAME {
        return Err(bad(format!(
            "field `env_id`: expected at most {MAX_ACTOR_NAME} bytes, got {}",
            req.env_id.len()
        )));
    }
    let space = |s: &proto::Space, field: &str| {
        Space::try_from(s).map_err(|m| bad(format!("field `{field}`: {m}")))
    };
    let spaces = Spaces {
        observation: space(obs, "observation_space")?,
        action: space(act, "action_space")?,
    };
    spaces
        .check_declared()
        .map_err(|m| bad(format!("declared spaces: {m}")))?;
    Ok(Some((req.env_id.clone(), spaces)))
}

/// Whether an actor's declaration (or its absence) fits the run's
/// environment and, once they are known, its spaces.
fn check_env(
    env: &EnvSpec,
    spaces: Option<&Spaces>,
    declared: Option<&(String, Spaces)>,
) -> Result<(), LearnerError> {
    let id = &env.id;
    match declared {
        None if env.is_external() => Err(LearnerError::EnvMismatch(format!(
            "this run trains `{id}`, an environment its actors bring (source = \"external\"), and this actor declares none: run an actor with its own environment (the Python actor, or a Rust one through flotilla_actor::app); the built-in actor runs only the built-in environments"
        ))),
        None => Ok(()),
        Some((declared, _)) if declared != id => Err(LearnerError::EnvMismatch(format!(
            "field `env_id`: this run trains `{id}`, the actor declared `{declared}`"
        ))),
        Some((_, theirs)) => match spaces.and_then(|s| s.difference(theirs)) {
            Some(d) => Err(LearnerError::EnvMismatch(format!(
                "environment `{id}` differs: {d}"
            ))),
            None => Ok(()),
        },
    }
}

/// State shared by all connections.
pub struct LearnerService {
    /// What every actor is told at `Hello` (actor id and version filled in per call).
    spec: RunSpec,
    /// The run's spaces, as declarations are compared with them.
    spaces: Spaces,
    max_envs_per_actor: u32,
    /// A trajectory stream silent this long is ended.
    stream_idle_timeout: Duration,
    gate: IngestGate,
    tx: Sender<Box<Admitted>>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// A client that sends nothing but bad chunks (or says nothing but
    /// Hello) must not flood the log.
    rejections: LogLimiter,
    joins: LogLimiter,
    /// The queue's byte budget, in KiB (`ingest.max_queued_bytes`).
    queued: Arc<Semaphore>,
    queued_kib: u32,
}

/// Lets at most `per_window` log lines through per window; counts the rest.
struct LogLimiter {
    per_window: u32,
    window: Duration,
    /// Window start, lines logged in it, lines suppressed since the last one logged.
    state: std::sync::Mutex<(Instant, u32, u64)>,
}

impl LogLimiter {
    fn new(per_window: u32, window: Duration) -> Self {
        LogLimiter {
            per_window,
            window,
            state: std::sync::Mutex::new((Instant::now(), 0, 0)),
        }
    }

    /// `Some(n)` when this event may be logged (`n` events were suppressed
    /// since the last logged one), `None` when it is suppressed.
    fn admit(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0.elapsed() >= self.window {
            s.0 = Instant::now();
            s.1 = 0;
        }
        if s.1 < self.per_window {
            s.1 += 1;
            Some(std::mem::take(&mut s.2))
        } else {
            s.2 += 1;
            None
        }
    }
}

impl LearnerService {
    pub fn new(
        spec: RunSpec,
        limits: ServiceLimits,
        gate: IngestGate,
        tx: Sender<Box<Admitted>>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
    ) -> Self {
        let ServiceLimits {
            max_envs_per_actor,
            stream_idle_timeout,
            max_queued_bytes,
        } = limits;
        let queued_kib = u32::try_from(max_queued_bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        LearnerService {
            spaces: Spaces {
                observation: spec.observation_space.clone(),
                action: spec.action_space.clone(),
            },
            spec,
            max_envs_per_actor,
            stream_idle_timeout,
            gate,
            tx,
            snapshots,
            rejections: LogLimiter::new(10, Duration::from_secs(10)),
            joins: LogLimiter::new(50, Duration::from_secs(10)),
            queued: Arc::new(Semaphore::new(queued_kib as usize)),
            queued_kib,
        }
    }

    /// Hands a chunk to the trainer, waiting while the queue's byte budget
    /// is spent, then (off the async workers) while the queue is full.
    async fn enqueue(&self, mut chunk: Box<Admitted>) -> Result<(), LearnerError> {
        let kib = u32::try_from(chunk.payload_bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.queued_kib);
        let budget = self
            .queued
            .clone()
            .acquire_many_owned(kib)
            .await
            .map_err(|_| LearnerError::ShuttingDown)?;
        chunk.budget = Some(budget);
        match self.tx.try_send(chunk) {
            Ok(()) => {}
            Err(TrySendError::Full(chunk)) => {
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(chunk))
                    .await
                    .map_err(|_| LearnerError::ShuttingDown)?
                    .map_err(|_| LearnerError::ShuttingDown)?;
            }
            Err(TrySendError::Disconnected(_)) => return Err(LearnerError::ShuttingDown),
        }
        metrics::gauge!(m::INGEST_QUEUE_DEPTH).set(self.tx.len() as f64);
        Ok(())
    }

    /// Reads one stream of the session `bound` until the actor closes it:
    /// `Ok` with what was accepted.
    async fn ingest(
        &self,
        bound: &mut BoundStream<'_>,
        stream: &mut Streaming<proto::Chunk>,
    ) -> Result<proto::IngestSummary, LearnerError> {
        let mut summary = proto::IngestSummary::default();
        loop {
            let next = tokio::time::timeout(self.stream_idle_timeout, stream.message()).await;
            let msg = match next {
                Ok(Ok(Some(msg))) => msg,
                Ok(Ok(None)) => return Ok(summary),
                Ok(Err(status)) => return Err(LearnerError::inbound(status)),
                Err(_) => return Err(LearnerError::Idle(self.stream_idle_timeout.as_secs_f64())),
            };
            if let Some(admitted) = self.gate.admit(bound, msg)? {
                let samples = admitted.chunk.num_samples() as u64;
                self.enqueue(Box::new(admitted)).await?;
                summary.chunks_accepted += 1;
                summary.samples_accepted += samples;
            }
        }
    }
}

/// Limits of one learner service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceLimits {
    pub max_envs_per_actor: u32,
    /// A trajectory stream silent this long is ended.
    pub stream_idle_timeout: Duration,
    /// Bytes of chunks the trainer's queue may hold, all streams together.
    pub max_queued_bytes: u64,
}

/// Counts a streaming actor (the gauge and the trainer's count) until the
/// stream ends, however it ends.
struct Connected {
    counters: Arc<Counters>,
    actor_id: u32,
    name: Arc<str>,
}

impl Connected {
    fn new(counters: Arc<Counters>, actor_id: u32, name: Arc<str>) -> Self {
        metrics::gauge!(m::ACTORS_CONNECTED).increment(1.0);
        counters.streaming_actors.fetch_add(1, Ordering::Relaxed);
        counters.board.stream(actor_id, &name, true);
        Connected {
            counters,
            actor_id,
            name,
        }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics::gauge!(m::ACTORS_CONNECTED).decrement(1.0);
        self.counters
            .streaming_actors
            .fetch_sub(1, Ordering::Relaxed);
        self.counters.board.stream(self.actor_id, &self.name, false);
    }
}

type SnapshotStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<proto::PolicySnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl proto::learner_server::Learner for LearnerService {
    async fn hello(
        &self,
        request: Request<proto::HelloRequest>,
    ) -> Result<Response<proto::RunSpec>, Status> {
        let peer = request.remote_addr();
        let req = request.into_inner();
        let declared = check_hello(&req, self.max_envs_per_actor)?;
        check_env(&self.spec.env, Some(&self.spaces), declared.as_ref())?;
        let credentials = self.gate.open_session(&req.actor_name)?;
        self.gate
            .counters()
            .board
            .hello(credentials.actor_id, &req.actor_name, peer);
        // The name comes from the wire: bounded above, escaped here; and a
        // client saying nothing but Hello must not flood the log either.
        if let Some(unlogged) = self.joins.admit() {
            info!(
                actor = %req.actor_name.escape_debug(),
                actor_id = credentials.actor_id,
                num_envs = req.num_envs,
                unlogged,
                "actor joined"
            );
        }
        let spec = RunSpec {
            actor_id: credentials.actor_id,
            session: credentials.session,
            policy_version: self.gate.newest_version(),
            ..self.spec.clone()
        };
        Ok(Response::new(spec.into()))
    }

    async fn stream_trajectories(
        &self,
        request: Request<Streaming<proto::Chunk>>,
    ) -> Result<Response<proto::IngestSummary>, Status> {
        let credential = request
            .metadata()
            .get(proto::SESSION_METADATA)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut bound = self.gate.bind(credential.as_deref())?;
        let mut stream = request.into_inner();
        let _connected = Connected::new(
            self.gate.counters(),
            bound.actor_id,
            bound.actor_name.clone(),
        );
        match self.ingest(&mut bound, &mut stream).await {
            Ok(summary) => Ok(Response::new(summary)),
            Err(e) => {
                if let Some(reason) = e.drop_reason() {
                    reason.count(1);
                    if let Some(unlogged) = self.rejections.admit() {
                        warn!(actor_id = bound.actor_id, error = %e, %reason, unlogged, "rejected a chunk");
                    }
                } else if let LearnerError::Idle(seconds) = e {
                    warn!(idle_seconds = seconds, "ending a silent trajectory stream");
                }
                Err(e.into())
            }
        }
    }

    type SubscribePolicyStream = SnapshotStream;

    async fn subscribe_policy(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribePolicyStream>, Status> {
        let have = request.into_inner().have_version;
        // WatchStream yields the current value at once, then the newest value
        // after each change: a slow reader skips versions instead of queuing them.
        let stream = WatchStream::new(self.snapshots.clone()).filter_map(move |s| {
            (have == 0 || s.version > have).then(|| {
                Ok(proto::PolicySnapshot {
                    version: s.version,
                    safetensors: s.safetensors.clone(),
                    samples_per_version: s.samples_per_version,
                })
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// What the server serves: the run's [`LearnerService`] once the run has
/// started. The server starts first (so a TLS setup that cannot serve fails
/// before anything is written); until the run has started, `Hello` waits
/// for it (at most `STARTING_WAIT`) and the other calls are `UNAVAILABLE`.
/// A run of an external environment without a checkpoint starts only when
/// an actor has declared the spaces: the first valid declaration goes to the
/// run, which builds its model for them.
pub struct Front {
    ready: watch::Receiver<Option<Arc<LearnerService>>>,
    discovery: Option<Discovery>,
}

/// Where a run waiting for its spaces takes them from.
struct Discovery {
    env_id: String,
    max_envs_per_actor: u32,
    /// The run's network, which the declared observations must fit.
    model: flotilla_common::model::ModelSpec,
    first: std::sync::Mutex<Option<oneshot::Sender<Spaces>>>,
}

/// How long a `Hello` waits for the run to start before it is told to retry.
const STARTING_WAIT: Duration = Duration::from_secs(30);

/// Sets the service a [`Front`] serves, once the run has started.
pub type FrontReady = watch::Sender<Option<Arc<LearnerService>>>;

impl Front {
    /// A front whose run has not started yet. With `discover`
    /// (`(env_id, ingest.max_envs_per_actor, model)`) the run waits for the
    /// spaces of that external environment: the receiver yields the first
    /// valid declaration whose observations the model fits. Send the started
    /// run's service into the [`FrontReady`].
    pub fn new(
        discover: Option<(String, u32, flotilla_common::model::ModelSpec)>,
    ) -> (Self, Option<oneshot::Receiver<Spaces>>, FrontReady) {
        let (ready_tx, ready) = watch::channel(None);
        let (discovery, spaces) = match discover {
            Some((env_id, max_envs_per_actor, model)) => {
                let (first, spaces) = oneshot::channel();
                let d = Discovery {
                    env_id,
                    max_envs_per_actor,
                    model,
                    first: std::sync::Mutex::new(Some(first)),
                };
                (Some(d), Some(spaces))
            }
            None => (None, None),
        };
        (Front { ready, discovery }, spaces, ready_tx)
    }

    fn service(&self) -> Option<Arc<LearnerService>> {
        self.ready.borrow().clone()
    }

    /// The run's service for a `Hello`, starting the run if this is the
    /// first declaration of its spaces.
    async fn service_for_hello(
        &self,
        req: &proto::HelloRequest,
    ) -> Result<Arc<LearnerService>, LearnerError> {
        if let Some(s) = self.service() {
            return Ok(s);
        }
        if let Some(d) = &self.discovery {
            let declared = check_hello(req, d.max_envs_per_actor)?;
            match declared {
                Some((id, spaces)) if id == d.env_id => {
                    let obs_shape = spaces.observation.shape();
                    if let Some((key, msg)) = d.model.problems_with(&obs_shape).first() {
                        return Err(LearnerError::EnvMismatch(format!(
                            "field `observation_space`: the run's [model] does not fit this environment's observations: {key}: {msg}"
                        )));
                    }
                    let first = d.first.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Some(first) = first {
                        info!(
                            env = %id,
                            observation_space = %spaces.observation.summary(),
                            action_space = %spaces.action.summary(),
                            actor = %req.actor_name.escape_debug(),
                            "the first actor declared the environment's spaces"
                        );
                        let _ = first.send(spaces);
                    }
                }
                other => check_env(&EnvSpec::external(d.env_id.clone()), None, other.as_ref())?,
            }
        }
        let mut ready = self.ready.clone();
        let waited = tokio::time::timeout(STARTING_WAIT, async {
            ready
                .wait_for(Option::is_some)
                .await
                .map(|s| s.clone().expect("waited for Some"))
        })
        .await;
        match waited {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_)) => Err(LearnerError::ShuttingDown),
            Err(_) => Err(LearnerError::Starting),
        }
    }

    fn started(&self) -> Result<Arc<LearnerService>, Status> {
        self.service().ok_or_else(|| LearnerError::Starting.into())
    }
}

#[tonic::async_trait]
impl proto::learner_server::Learner for Front {
    async fn hello(
        &self,
        request: Request<proto::HelloRequest>,
    ) -> Result<Response<proto::RunSpec>, Status> {
        let service = self.service_for_hello(request.get_ref()).await?;
        proto::learner_server::Learner::hello(&*service, request).await
    }

    async fn stream_trajectories(
        &self,
        request: Request<Streaming<proto::Chunk>>,
    ) -> Result<Response<proto::IngestSummary>, Status> {
        let service = self.started()?;
        proto::learner_server::Learner::stream_trajectories(&*service, request).await
    }

    type SubscribePolicyStream = SnapshotStream;

    async fn subscribe_policy(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribePolicyStream>, Status> {
        let service = self.started()?;
        proto::learner_server::Learner::subscribe_policy(&*service, request).await
    }
}

/// Transport settings of the gRPC server.
pub struct ServerOptions {
    pub tls: Option<ServerTlsConfig>,
    pub auth_token: Option<AuthToken>,
    /// Largest chunk payload (`ingest.max_chunk_bytes`).
    pub max_chunk_bytes: u64,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub max_concurrent_streams: u32,
    /// Most open connections (`ingest.max_connections`); more are closed.
    pub max_connections: usize,
}

/// The server task: serves `service` on `listener` until `stop` turns true.
pub type ServerTask = tokio::task::JoinHandle<Result<(), tonic::transport::Error>>;

/// Starts serving; fails only on a TLS configuration tonic refuses.
pub fn spawn(
    listener: TcpListener,
    service: Front,
    opts: ServerOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<ServerTask, tonic::transport::Error> {
    // Room for protobuf framing around the largest accepted payload.
    let max_message = (opts.max_chunk_bytes as usize).saturating_add(64 << 10);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = opts.tls {
        builder = builder.tls_config(tls)?;
    }
    // Without TCP_NODELAY a small frame (a chunk's end, a snapshot) can wait
    // for the peer's delayed ACK (~40 ms): visible in synchronous mode, where
    // every version is a round trip.
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    let refused = LogLimiter::new(5, Duration::from_secs(10));
    let incoming = TcpListenerStream::new(listener).filter_map(move |conn| {
        let conn = match conn {
            Ok(c) => c,
            Err(e) => return Some(Err(e)),
        };
        // Over the cap: close it at once (the client retries with backoff).
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if let Some(unlogged) = refused.admit() {
                warn!(
                    unlogged,
                    "connection refused: ingest.max_connections reached"
                );
            }
            return None;
        };
        if let Err(e) = conn.set_nodelay(true) {
            warn!(error = %e, "cannot set TCP_NODELAY");
        }
        Some(Ok(Counted { conn, _slot: slot }))
    });
    Ok(tokio::spawn(
        builder
            .http2_keepalive_interval(Some(opts.keepalive_interval))
            .http2_keepalive_timeout(Some(opts.keepalive_timeout))
            .max_concurrent_streams(opts.max_concurrent_streams)
            .add_service(InterceptedService::new(
                LearnerServer::new(service)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(usize::MAX),
                RequireToken(opts.auth_token),
            ))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|&s| s).await;
            }),
    ))
}

/// A connection holding one of the `max_connections` slots until it closes.
struct Counted {
    conn: tokio::net::TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl tonic::transport::server::Connected for Counted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.conn.connect_info()
    }
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.conn).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.conn).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.conn).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.conn).poll_shutdown(cx)
    }
}

/// The loopback address of a server listening on `addr` (which may be the
/// unspecified address): where a client on this host connects.
pub fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_limiter_lets_a_few_through_per_window_and_counts_the_rest() {
        let l = LogLimiter::new(2, Duration::from_millis(100));
        assert_eq!(l.admit(), Some(0));
        assert_eq!(l.admit(), Some(0));
        assert_eq!(l.admit(), None);
        assert_eq!(l.admit(), None);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            l.admit(),
            Some(2),
            "the next logged line says how many were not"
        );
        assert_eq!(l.admit(), Some(0));
    }
}
