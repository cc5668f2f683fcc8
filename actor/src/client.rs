//! The actor's network side: handshake, trajectory stream, policy
//! subscription, and reconnection with exponential backoff and jitter.
//!
//! Status codes are classified (a learner that says our input is wrong will
//! say it again): `InvalidArgument`, `FailedPrecondition`, `Unauthenticated`
//! and `PermissionDenied` end the actor; everything else — the learner
//! restarting, a network blip — is retried.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_common::auth::{AttachToken, AuthToken};
use flotilla_common::chunk::{max_encoded_len, ChunkShape};
use flotilla_common::cli::error_chain;
use flotilla_common::metrics as m;
use flotilla_common::proto::{self, learner_client::LearnerClient};
use flotilla_common::{Env, RunSpec, Snapshot, Spaces};
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};
use tracing::{debug, info, warn};

use crate::worker::{self, WorkerError, WorkerSpec};

/// Builds one environment of the actor's own kind.
pub type MakeEnv = Arc<dyn Fn() -> Box<dyn Env> + Send + Sync>;

/// An environment the actor brings, rather than one the learner names: the
/// actor declares its id and spaces at `Hello`, and steps environments made
/// by `make`. Trains with a learner whose `[env]` has this `id` and
/// `source = "external"` (or a built-in id whose spaces are the same).
#[derive(Clone)]
pub struct OwnEnv {
    make: MakeEnv,
    id: String,
    spaces: Spaces,
}

impl OwnEnv {
    /// Wraps a constructor; one environment is built here to read its id
    /// and spaces.
    pub fn new(make: impl Fn() -> Box<dyn Env> + Send + Sync + 'static) -> Self {
        let probe = make();
        let id = probe.id().to_owned();
        let spaces = Spaces {
            observation: probe.observation_space().clone(),
            action: probe.action_space().clone(),
        };
        OwnEnv {
            make: Arc::new(make),
            id,
            spaces,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn spaces(&self) -> &Spaces {
        &self.spaces
    }

    /// A new environment.
    pub fn make(&self) -> Box<dyn Env> {
        (self.make)()
    }

    /// The constructor, for the environment thread.
    pub(crate) fn maker(&self) -> MakeEnv {
        self.make.clone()
    }
}

impl std::fmt::Debug for OwnEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnEnv")
            .field("id", &self.id)
            .field("spaces", &self.spaces)
            .finish_non_exhaustive()
    }
}

/// How to run an actor.
#[derive(Debug, Clone)]
pub struct ActorOptions {
    /// Learner URL, e.g. `http://127.0.0.1:50051`.
    pub learner: String,
    /// Environments to run; `None` takes the learner's default.
    pub num_envs: Option<u32>,
    pub name: String,
    /// Pace the env thread to at most this many env steps per second
    /// (summed over its envs); `None` runs flat out.
    pub max_steps_per_second: Option<f64>,
    /// Shared token the learner requires, if any.
    pub auth_token: Option<AuthToken>,
    /// TLS to the learner (`https://` URLs); `None` for plaintext.
    pub tls: Option<ClientTlsConfig>,
    /// The actor's own environment; `None` runs the built-in environment
    /// the learner names.
    pub env: Option<OwnEnv>,
}

/// Errors that end an actor.
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error("invalid learner URL {url}: {message}")]
    BadUrl { url: String, message: String },
    #[error("the learner refused this actor ({code:?}): {message}")]
    Refused { code: Code, message: String },
    #[error("environment thread: {0}")]
    Worker(#[from] WorkerError),
    #[error("environment thread: {0}")]
    Thread(String),
}

/// What an actor did before it stopped.
#[derive(Debug, Clone, Default)]
pub struct ActorSummary {
    pub chunks_sent: u64,
    pub reconnects: u64,
}

fn fatal(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::Unauthenticated
            | Code::PermissionDenied
    )
}

/// Exponential backoff with jitter (each delay 50–100% of its step), capped.
struct Backoff {
    next: Duration,
    base: Duration,
    cap: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: Duration::from_millis(100),
            base: Duration::from_millis(100),
            cap: Duration::from_secs(10),
        }
    }

    fn reset(&mut self) {
        self.next = self.base;
    }

    fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.cap);
        d.mul_f64(rand::rng().random_range(0.5..1.0))
    }
}

struct Session {
    client: LearnerClient<InterceptedService<Channel, AttachToken>>,
    run_id: String,
    actor_id: u32,
    /// The credential this session's trajectory stream carries.
    credential: String,
    /// The learner's policy version at the handshake.
    version: u64,
    /// Largest chunk message the learner accepts.
    max_chunk_bytes: u64,
    spec: WorkerSpec,
}

/// The largest chunk these envs can produce with one episode ending per env
/// (the usual worst case of long episodes) must fit the learner's
/// `ingest.max_chunk_bytes`; else no chunk would ever be accepted, and the
/// error says how many envs would fit. A chunk in which more episodes end
/// than that may still be too large: [`serve`] checks each one.
fn check_chunk_size(spec: &WorkerSpec, run_id: &str, max_bytes: u64) -> Result<(), String> {
    let shape = |num_envs: usize| ChunkShape {
        chunk_len: spec.chunk_len,
        num_envs,
        obs_dim: spec.observation_space.flat_dim(),
        obs_dtype: spec.observation_space.dtype(),
        action_space: &spec.action_space,
        behavior_values: spec.behavior_values,
        episodes: num_envs,
        run_id_len: run_id.len(),
        env_id_len: spec.env.id.len(),
    };
    let bytes = max_encoded_len(&shape(spec.num_envs));
    if bytes <= max_bytes {
        return Ok(());
    }
    let fits = (1..spec.num_envs)
        .rev()
        .find(|&n| max_encoded_len(&shape(n)) <= max_bytes);
    let advice = match fits {
        Some(n) => {
            format!("run this actor with --num-envs {n} or fewer, or raise ingest.max_chunk_bytes")
        }
        None => "even one env is too many: raise ingest.max_chunk_bytes or lower rollout.chunk_len"
            .into(),
    };
    Err(format!(
        "chunks of {} envs x {} steps of {} encode to up to {bytes} bytes with one episode ending per env, over the learner's ingest.max_chunk_bytes = {max_bytes}: {advice} (a chunk in which more episodes end is larger still)",
        spec.num_envs, spec.chunk_len, spec.env.id
    ))
}

/// The `Hello` of this actor: its name, its envs and, when it brings its own
/// environment, the declaration of it.
fn hello_request(opts: &ActorOptions) -> proto::HelloRequest {
    let mut req = proto::HelloRequest {
        actor_name: opts.name.clone(),
        num_envs: opts.num_envs.unwrap_or(0),
        protocol_version: proto::PROTOCOL_VERSION,
        ..Default::default()
    };
    if let Some(own) = &opts.env {
        req.env_id = own.id.clone();
        req.observation_space = Some((&own.spaces.observation).into());
        req.action_space = Some((&own.spaces.action).into());
    }
    req
}

async fn hello(endpoint: &Endpoint, opts: &ActorOptions) -> Result<Session, Status> {
    let channel = endpoint.connect().await.map_err(|e| {
        let chain = error_chain(&e);
        if is_certificate_error(&chain) {
            // A certificate the other side refuses will be refused again.
            Status::failed_precondition(format!(
                "TLS handshake with {} failed: {chain} (check --tls-ca, --tls-cert and --tls-key)",
                opts.learner
            ))
        } else {
            Status::unavailable(format!("connecting to {}: {chain}", opts.learner))
        }
    })?;
    let mut client = LearnerClient::with_interceptor(channel, AttachToken(opts.auth_token.clone()))
        .max_decoding_message_size(usize::MAX);
    let rs = client.hello(hello_request(opts)).await?.into_inner();
    // A spec this actor cannot use will not improve on a retry.
    let rs = RunSpec::try_from(rs).map_err(|e| Status::failed_precondition(e.to_string()))?;
    let spec = WorkerSpec {
        num_envs: opts.num_envs.unwrap_or(rs.default_num_envs) as usize,
        max_steps_per_second: opts.max_steps_per_second,
        // One seed per actor name within a run: a reconnecting actor keeps
        // its streams (and its environment thread).
        seed: rs.actor_seed(&opts.name),
        env: rs.env,
        model: rs.model,
        chunk_len: rs.chunk_len as usize,
        observation_space: rs.observation_space,
        action_space: rs.action_space,
        behavior_values: rs.behavior_values,
        sync: rs.sync,
        batch_samples: rs.batch_samples as usize,
    };
    check_chunk_size(&spec, &rs.run_id, rs.max_chunk_bytes).map_err(Status::failed_precondition)?;
    Ok(Session {
        client,
        max_chunk_bytes: rs.max_chunk_bytes,
        run_id: rs.run_id,
        actor_id: rs.actor_id,
        credential: rs.session,
        version: rs.policy_version,
        spec,
    })
}

/// The running environment thread and its output.
struct Worker {
    spec: WorkerSpec,
    run_id: String,
    stop: Arc<AtomicBool>,
    chunks: mpsc::Receiver<proto::Chunk>,
    handle: std::thread::JoinHandle<Result<(), WorkerError>>,
}

fn start_worker(
    spec: WorkerSpec,
    run_id: String,
    snapshots: watch::Receiver<Option<Snapshot>>,
    own: Option<MakeEnv>,
) -> Result<Worker, ActorError> {
    // A small bound: while the learner is away, at most this many chunks wait
    // (they go stale anyway) and the environments pause.
    let (tx, rx) = mpsc::channel(4);
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (spec.clone(), stop.clone());
    let handle = std::thread::Builder::new()
        .name("env".into())
        .spawn(move || worker::run(s, own, snapshots, tx, st))
        .map_err(|e| ActorError::Thread(format!("cannot start: {e}")))?;
    Ok(Worker {
        spec,
        run_id,
        stop,
        chunks: rx,
        handle,
    })
}

impl Worker {
    fn shut_down(self) -> Result<(), ActorError> {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.chunks);
        match self.handle.join() {
            Ok(r) => r.map_err(ActorError::Worker),
            Err(_) => Err(ActorError::Thread("panicked".into())),
        }
    }
}

/// The learner's endpoint: timeouts, keep-alive, TCP_NODELAY and TLS when
/// the URL is `https://` (which then needs a CA).
fn endpoint(opts: &ActorOptions) -> Result<Endpoint, ActorError> {
    let bad = |message: String| ActorError::BadUrl {
        url: opts.learner.clone(),
        message,
    };
    let endpoint = Endpoint::from_shared(opts.learner.clone())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(20))
        .tcp_nodelay(true);
    match (&opts.tls, opts.learner.starts_with("https://")) {
        (Some(tls), true) => endpoint
            .tls_config(tls.clone())
            .map_err(|e| bad(format!("TLS: {e}"))),
        (None, false) => Ok(endpoint),
        (Some(_), false) => Err(bad("TLS options need an https:// learner URL".into())),
        (None, true) => Err(bad(
            "an https:// learner needs --tls-ca (the CA that signed its certificate)".into(),
        )),
    }
}

/// Whether a failed connection is a certificate problem (rustls's wording:
/// an unknown issuer, a bad or missing certificate, a name mismatch) rather
/// than a learner that is not there yet.
fn is_certificate_error(chain: &str) -> bool {
    [
        "invalid peer certificate",
        "UnknownIssuer",
        "BadCertificate",
        "CertificateRequired",
        "UnknownCA",
        "NotValidForName",
    ]
    .iter()
    .any(|needle| chain.contains(needle))
}

/// Whether a URL host names this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback_host(host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Runs an actor until `stop` turns true or the learner refuses it.
pub async fn run(
    opts: ActorOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<ActorSummary, ActorError> {
    let endpoint = endpoint(&opts)?;
    if opts.auth_token.is_some() && opts.tls.is_none() && !is_loopback_host(endpoint.uri().host()) {
        warn!(
            learner = %opts.learner,
            "sending the shared token in plaintext to a learner off this host: anyone on the path can read it (use an https:// learner with --tls-ca)"
        );
    }
    let (snap_tx, snap_rx) = watch::channel::<Option<Snapshot>>(None);
    let mut worker: Option<Worker> = None;
    let mut backoff = Backoff::new();
    let mut summary = ActorSummary::default();
    let mut first = true;
    let result = loop {
        if *stop.borrow() {
            break Ok(());
        }
        if !first {
            summary.reconnects += 1;
            metrics::counter!(m::ACTOR_RECONNECTS).increment(1);
        }
        first = false;
        let session = match hello(&endpoint, &opts).await {
            Ok(s) => s,
            Err(status) if fatal(&status) => {
                break Err(ActorError::Refused {
                    code: status.code(),
                    message: status.message().to_owned(),
                })
            }
            Err(status) => {
                let d = backoff.delay();
                warn!(error = %status.message(), retry_in_ms = d.as_millis() as u64, "learner unreachable");
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
        };
        backoff.reset();
        info!(actor_id = session.actor_id, run_id = %session.run_id, env = %session.spec.env.id, "connected to learner");
        let same = worker
            .as_ref()
            .is_some_and(|w| w.spec == session.spec && w.run_id == session.run_id);
        if !same {
            if let Some(w) = worker.take() {
                w.shut_down()?;
            }
            // A new run: forget the old run's weights before acting again.
            snap_tx.send_replace(None);
            worker = Some(start_worker(
                session.spec.clone(),
                session.run_id.clone(),
                snap_rx.clone(),
                opts.env.as_ref().map(OwnEnv::maker),
            )?);
        }
        let Some(w) = worker.as_mut() else {
            unreachable!("a worker was just started")
        };
        match serve(session, w, &snap_tx, &mut stop, &mut summary).await {
            Ok(()) => break Ok(()),
            Err(status) if fatal(&status) => {
                break Err(ActorError::Refused {
                    code: status.code(),
                    message: status.message().to_owned(),
                })
            }
            Err(status) => {
                warn!(code = ?status.code(), error = %status.message(), "connection to learner lost");
                if w.handle.is_finished() {
                    break Ok(());
                }
            }
        }
    };
    if let Some(w) = worker.take() {
        w.shut_down()?;
    }
    result.map(|()| summary)
}

/// One connection: follows snapshots and streams chunks until the connection
/// fails (`Err`) or the actor is asked to stop (`Ok`).
async fn serve(
    session: Session,
    worker: &mut Worker,
    snap_tx: &watch::Sender<Option<Snapshot>>,
    stop: &mut watch::Receiver<bool>,
    summary: &mut ActorSummary,
) -> Result<(), Status> {
    let Session {
        mut client,
        run_id,
        actor_id,
        credential,
        version,
        max_chunk_bytes,
        ..
    } = session;
    // Newest version this learner has shown us. A chunk acted with a newer one
    // was acted before the learner restarted from an older checkpoint: the
    // learner no longer has that policy, so the chunk is dropped here.
    let mut known_version = version;
    let mut snapshots = client
        .subscribe_policy(proto::SubscribeRequest {
            actor_name: String::new(),
            have_version: 0,
        })
        .await?
        .into_inner();
    let (out_tx, out_rx) = mpsc::channel::<proto::Chunk>(1);
    let mut request = tonic::Request::new(ReceiverStream::new(out_rx));
    let credential = MetadataValue::try_from(credential.as_str())
        .map_err(|_| Status::failed_precondition("the learner's session credential is not text"))?;
    request
        .metadata_mut()
        .insert(proto::SESSION_METADATA, credential);
    let mut upload = {
        let mut c = client.clone();
        tokio::spawn(async move { c.stream_trajectories(request).await })
    };
    let mut sequence = 0u64;
    let mut out_tx = Some(out_tx);
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => {
                // Close our side of the stream and let the learner acknowledge.
                out_tx = None;
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut upload).await;
                drop(out_tx);
                return Ok(());
            }
            snap = snapshots.next() => match snap {
                Some(Ok(s)) => {
                    known_version = known_version.max(s.version);
                    snap_tx.send_replace(Some(Snapshot {
                        version: s.version,
                        safetensors: s.safetensors,
                        samples_per_version: s.samples_per_version,
                    }));
                }
                Some(Err(status)) => return Err(status),
                None => return Err(Status::unavailable("policy subscription ended")),
            },
            done = &mut upload => {
                return match done {
                    Ok(Ok(_)) => Err(Status::unavailable("trajectory stream closed by the learner")),
                    Ok(Err(status)) => Err(status),
                    Err(e) => Err(Status::internal(format!("upload task: {e}"))),
                };
            }
            chunk = worker.chunks.recv() => {
                let Some(mut chunk) = chunk else {
                    return Err(Status::internal("environment thread stopped"));
                };
                if chunk.policy_version > known_version {
                    debug!(version = chunk.policy_version, learner = known_version, "dropping a chunk acted before the learner restarted");
                    continue;
                }
                sequence += 1;
                chunk.run_id.clone_from(&run_id);
                chunk.actor_id = actor_id;
                chunk.sequence = sequence;
                let bytes = prost::Message::encoded_len(&chunk) as u64;
                if bytes > max_chunk_bytes {
                    // The learner would refuse it, and every retry of it.
                    return Err(Status::failed_precondition(format!(
                        "a chunk of {bytes} bytes ({} episodes ended in it) is over the learner's ingest.max_chunk_bytes = {max_chunk_bytes}: lower --num-envs or raise ingest.max_chunk_bytes",
                        chunk.episode_returns.len()
                    )));
                }
                let t0 = Instant::now();
                let Some(tx) = out_tx.as_ref() else { return Ok(()) };
                if tx.send(chunk).await.is_err() {
                    // The upload task ended; its status arrives on the next turn.
                    continue;
                }
                metrics::histogram!(m::ACTOR_CHUNK_SEND_DURATION).record(t0.elapsed().as_secs_f64());
                summary.chunks_sent += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.3.2.1",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback_host(Some(host)), "{host}");
        }
        for host in ["learner", "10.0.0.5", "0.0.0.0", "[::]", "example.com"] {
            assert!(!is_loopback_host(Some(host)), "{host}");
        }
        assert!(!is_loopback_host(None));
    }

    #[test]
    fn certificate_problems_are_told_apart_from_absence() {
        assert!(is_certificate_error(
            "transport error: invalid peer certificate: UnknownIssuer"
        ));
        assert!(is_certificate_error(
            "received fatal alert: CertificateRequired"
        ));
        assert!(!is_certificate_error(
            "transport error: tcp connect error: Connection refused (os error 111)"
        ));
    }
}
