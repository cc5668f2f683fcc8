//! The `flotilla.v1.Learner` gRPC service: the network edge of the learner.
//!
//! tokio handles the network only. Chunks are decoded and validated here
//! (cheap, proportional to the payload) and cross a bounded crossbeam channel
//! to the trainer thread; when that channel is full the stream waits, which is
//! back-pressure all the way to the actors' sockets. Policy snapshots flow the
//! other way through a `tokio::sync::watch`: every subscriber sees the newest
//! version and never a backlog.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};
use flotilla_common::chunk::{self, Chunk, ChunkExpectations};
use flotilla_common::env::EnvSpec;
use flotilla_common::metrics as m;
use flotilla_common::model::ModelSpec;
use flotilla_common::proto::{self, learner_server::Learner};
use flotilla_common::Space;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

/// A published policy: its version and its safetensors bytes, serialized once
/// and shared by every subscriber.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    pub safetensors: Bytes,
}

/// What the learner tells every actor at `Hello`.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub run_id: String,
    pub env: EnvSpec,
    pub model: ModelSpec,
    pub chunk_len: u32,
    pub observation_space: Space,
    pub action_space: Space,
    pub behavior_values: bool,
    /// Actors act one chunk per policy version (synchronous mode).
    pub sync: bool,
    /// Samples per update; actors act at most a batch's worth of chunks per
    /// policy version (0: no limit).
    pub batch_samples: u64,
    pub seed: u64,
    pub max_chunk_bytes: u64,
    pub max_envs_per_actor: u32,
    pub max_policy_lag: u64,
    pub default_num_envs: u32,
    /// A trajectory stream silent this long is ended.
    pub stream_idle_timeout: Duration,
    /// Transitions of chunks dropped as stale (shared with the trainer).
    pub stale_samples: Arc<AtomicU64>,
}

/// A validated chunk on its way to the trainer.
#[derive(Debug)]
pub struct Ingested {
    /// Boxed: the struct travels through channels by value.
    pub chunk: Box<Chunk>,
    pub received: Instant,
}

/// State shared by all connections.
pub struct LearnerService {
    info: RunInfo,
    obs_dim: usize,
    /// Newest policy version (written by the trainer).
    version: Arc<AtomicU64>,
    next_actor_id: AtomicU32,
    /// Highest sequence number accepted per actor id.
    last_sequence: Mutex<HashMap<u32, u64>>,
    tx: Sender<Ingested>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

impl LearnerService {
    pub fn new(
        info: RunInfo,
        version: Arc<AtomicU64>,
        tx: Sender<Ingested>,
        snapshots: watch::Receiver<Arc<Snapshot>>,
    ) -> Self {
        let obs_dim = info.observation_space.flat_dim();
        LearnerService {
            info,
            obs_dim,
            version,
            next_actor_id: AtomicU32::new(1),
            last_sequence: Mutex::new(HashMap::new()),
            tx,
            snapshots,
        }
    }

    fn expectations(&self) -> ChunkExpectations {
        ChunkExpectations {
            run_id: self.info.run_id.clone(),
            env_id: self.info.env.id.clone(),
            obs_dim: self.obs_dim,
            action_space: self.info.action_space.clone(),
            chunk_len: self.info.chunk_len as usize,
            max_envs: self.info.max_envs_per_actor as usize,
            max_bytes: self.info.max_chunk_bytes,
            newest_version: self.version.load(Ordering::Acquire),
            require_behavior_value: self.info.behavior_values,
        }
    }

    fn run_spec(&self, actor_id: u32) -> proto::RunSpec {
        let i = &self.info;
        proto::RunSpec {
            run_id: i.run_id.clone(),
            env_id: i.env.id.clone(),
            env_config_toml: i.env.config_toml(),
            model: Some((&i.model).into()),
            chunk_len: i.chunk_len,
            observation_space: Some((&i.observation_space).into()),
            action_space: Some((&i.action_space).into()),
            policy_version: self.version.load(Ordering::Acquire),
            protocol_version: proto::PROTOCOL_VERSION,
            actor_id,
            send_behavior_values: i.behavior_values,
            seed: i.seed,
            max_chunk_bytes: i.max_chunk_bytes,
            default_num_envs: i.default_num_envs,
            sync: i.sync,
            batch_samples: i.batch_samples,
        }
    }

    /// Hands a chunk to the trainer, waiting (off the async workers) while the
    /// queue is full.
    async fn enqueue(&self, item: Ingested) -> Result<(), Status> {
        let gone = || Status::unavailable("the learner is shutting down");
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(TrySendError::Full(item)) => {
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || tx.send(item))
                    .await
                    .map_err(|_| gone())?
                    .map_err(|_| gone())?;
            }
            Err(TrySendError::Disconnected(_)) => return Err(gone()),
        }
        metrics::gauge!(m::INGEST_QUEUE_DEPTH).set(self.tx.len() as f64);
        Ok(())
    }
}

/// Decrements the connected-actors gauge when a stream ends, however it ends.
struct Connected;

impl Connected {
    fn new() -> Self {
        metrics::gauge!(m::ACTORS_CONNECTED).increment(1.0);
        Connected
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        metrics::gauge!(m::ACTORS_CONNECTED).decrement(1.0);
    }
}

fn drop_chunk(reason: &'static str) {
    metrics::counter!(m::CHUNKS_DROPPED, "reason" => reason).increment(1);
}

type SnapshotStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<proto::PolicySnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl Learner for LearnerService {
    #[tracing::instrument(skip_all, fields(actor = %request.get_ref().actor_name))]
    async fn hello(
        &self,
        request: Request<proto::HelloRequest>,
    ) -> Result<Response<proto::RunSpec>, Status> {
        let proto::HelloRequest {
            actor_name,
            num_envs,
            protocol_version,
        } = request.into_inner();
        if protocol_version != proto::PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "field `protocol_version`: expected {}, got {protocol_version}",
                proto::PROTOCOL_VERSION
            )));
        }
        if num_envs > self.info.max_envs_per_actor {
            return Err(Status::invalid_argument(format!(
                "field `num_envs`: expected 0 (the run's default) to {}, got {num_envs}",
                self.info.max_envs_per_actor
            )));
        }
        if actor_name.len() > 256 {
            return Err(Status::invalid_argument(format!(
                "field `actor_name`: expected at most 256 bytes, got {}",
                actor_name.len()
            )));
        }
        let actor_id = self.next_actor_id.fetch_add(1, Ordering::Relaxed);
        info!(actor_id, num_envs, "actor joined");
        Ok(Response::new(self.run_spec(actor_id)))
    }

    async fn stream_trajectories(
        &self,
        request: Request<Streaming<proto::Chunk>>,
    ) -> Result<Response<proto::IngestSummary>, Status> {
        let mut stream = request.into_inner();
        let _connected = Connected::new();
        let mut summary = proto::IngestSummary::default();
        loop {
            let next = tokio::time::timeout(self.info.stream_idle_timeout, stream.message()).await;
            let msg = match next {
                Ok(Ok(Some(msg))) => msg,
                Ok(Ok(None)) => break,
                Ok(Err(status)) => return Err(inbound_error(status)),
                Err(_) => {
                    warn!(
                        idle_seconds = self.info.stream_idle_timeout.as_secs_f64(),
                        "ending a silent trajectory stream"
                    );
                    return Err(Status::deadline_exceeded(format!(
                        "no chunk for {:.0} s (ingest.stream_idle_timeout_seconds); reconnect",
                        self.info.stream_idle_timeout.as_secs_f64()
                    )));
                }
            };
            let received = Instant::now();
            let payload = prost::Message::encoded_len(&msg) as u64;
            let chunk = match chunk::validate(msg, &self.expectations()) {
                Ok(c) => c,
                Err(e) => {
                    drop_chunk(e.reason());
                    warn!(error = %e, "rejected chunk");
                    return Err(Status::invalid_argument(e.to_string()));
                }
            };
            let newest = self.version.load(Ordering::Acquire);
            let lag = newest.saturating_sub(chunk.policy_version);
            metrics::histogram!(m::POLICY_LAG).record(lag as f64);
            if lag > self.info.max_policy_lag {
                drop_chunk("stale");
                self.info
                    .stale_samples
                    .fetch_add(chunk.num_samples() as u64, Ordering::Relaxed);
                continue;
            }
            {
                let mut seen = self
                    .last_sequence
                    .lock()
                    .map_err(|_| Status::internal("sequence table poisoned"))?;
                let last = seen.entry(chunk.actor_id).or_insert(0);
                if chunk.sequence != 0 && chunk.sequence <= *last {
                    drop_chunk("duplicate");
                    continue;
                }
                *last = chunk.sequence;
            }
            let samples = chunk.num_samples() as u64;
            metrics::counter!(m::CHUNKS_RECEIVED).increment(1);
            metrics::counter!(m::LEARNER_SAMPLES_RECEIVED).increment(samples);
            metrics::counter!(m::BYTES_RECEIVED).increment(payload);
            self.enqueue(Ingested {
                chunk: Box::new(chunk),
                received,
            })
            .await?;
            summary.chunks_accepted += 1;
            summary.samples_accepted += samples;
        }
        Ok(Response::new(summary))
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
                })
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// An error reading the inbound stream. A message over the size limit is the
/// sender's fault and is counted (`too_large`); tonic reports it as
/// `OUT_OF_RANGE`, which is answered as `RESOURCE_EXHAUSTED` with the limit
/// named. A message that does not parse is counted as `invalid`.
fn inbound_error(status: Status) -> Status {
    if status.code() == tonic::Code::OutOfRange && status.message().contains("too large") {
        drop_chunk("too_large");
        warn!(error = status.message(), "rejected an oversized message");
        return Status::resource_exhausted(format!(
            "chunk message too large (ingest.max_chunk_bytes): {}",
            status.message()
        ));
    }
    if status.code() == tonic::Code::InvalidArgument {
        // A message that is not protobuf at all (see flotilla_common::codec).
        drop_chunk("invalid");
        warn!(error = status.message(), "rejected a malformed message");
    }
    status
}
