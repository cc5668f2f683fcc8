//! The ingest gate: what a chunk from the wire must pass before it may queue
//! for the trainer — validation against the run, the staleness rule, and the
//! per-actor sequence check — and the one mapping of every refusal to a gRPC
//! status.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use flotilla_common::chunk::{self, Chunk, ChunkError, ChunkExpectations};
use flotilla_common::metrics::{self as m, DropReason};
use flotilla_common::{proto, Snapshot};
use tokio::sync::watch;
use tonic::{Code, Status};

use crate::train::batcher::StalenessRule;
use crate::train::recorder::Counters;

/// Why the learner refuses a call or ends a stream.
#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    #[error("field `protocol_version`: expected {expected}, got {actual}")]
    ProtocolVersion { expected: u32, actual: u32 },
    #[error("field `num_envs`: expected 0 (the run's default) to {max}, got {actual}")]
    NumEnvs { max: u32, actual: u32 },
    #[error("field `actor_name`: expected at most {max} bytes, got {actual}")]
    ActorName { max: usize, actual: usize },
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// A message over the size limit (tonic's decoder said so).
    #[error("chunk message too large (ingest.max_chunk_bytes): {0}")]
    TooLarge(String),
    /// The inbound stream failed: a message that is not protobuf, or transport trouble.
    #[error("{}", .0.message())]
    Inbound(Status),
    #[error("no chunk for {0:.0} s (ingest.stream_idle_timeout_seconds); reconnect")]
    Idle(f64),
    #[error("the learner is shutting down")]
    ShuttingDown,
    #[error("sequence table poisoned")]
    Poisoned,
}

impl From<LearnerError> for Status {
    fn from(e: LearnerError) -> Status {
        let message = e.to_string();
        match e {
            LearnerError::ProtocolVersion { .. } => Status::failed_precondition(message),
            LearnerError::NumEnvs { .. }
            | LearnerError::ActorName { .. }
            | LearnerError::Chunk(_) => Status::invalid_argument(message),
            LearnerError::TooLarge(_) => Status::resource_exhausted(message),
            LearnerError::Inbound(status) => status,
            LearnerError::Idle(_) => Status::deadline_exceeded(message),
            LearnerError::ShuttingDown => Status::unavailable(message),
            LearnerError::Poisoned => Status::internal(message),
        }
    }
}

impl LearnerError {
    /// Classifies a failed read of the inbound stream. A message over the size
    /// limit is the sender's fault: tonic reports it as `OUT_OF_RANGE`, and it
    /// is answered `RESOURCE_EXHAUSTED` naming the limit.
    pub fn inbound(status: Status) -> Self {
        if status.code() == Code::OutOfRange && status.message().contains("too large") {
            return LearnerError::TooLarge(status.message().to_owned());
        }
        LearnerError::Inbound(status)
    }

    /// The drop reason this refusal counts under, if it refuses a chunk.
    pub fn drop_reason(&self) -> Option<DropReason> {
        match self {
            LearnerError::Chunk(e) => Some(e.drop_reason()),
            LearnerError::TooLarge(_) => Some(DropReason::TooLarge),
            // A message that is not protobuf at all (see flotilla_common::codec).
            LearnerError::Inbound(s) if s.code() == Code::InvalidArgument => {
                Some(DropReason::Invalid)
            }
            LearnerError::Inbound(_)
            | LearnerError::ProtocolVersion { .. }
            | LearnerError::NumEnvs { .. }
            | LearnerError::ActorName { .. }
            | LearnerError::Idle(_)
            | LearnerError::ShuttingDown
            | LearnerError::Poisoned => None,
        }
    }
}

/// The checks every chunk passes, shared by all streams.
pub struct IngestGate {
    /// What chunks must look like; `newest_version` is filled in per chunk.
    expected: ChunkExpectations,
    staleness: StalenessRule,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    /// Name (from `Hello`) and highest accepted sequence number per actor id.
    actors: Mutex<HashMap<u32, Actor>>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Actor {
    name: Arc<str>,
    last_sequence: u64,
}

/// A chunk that passed the gate, with the name its actor gave at `Hello`.
#[derive(Debug)]
pub struct Admitted {
    pub chunk: Chunk,
    pub actor_name: Arc<str>,
}

impl IngestGate {
    pub fn new(
        expected: ChunkExpectations,
        staleness: StalenessRule,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        counters: Arc<Counters>,
    ) -> Self {
        IngestGate {
            expected,
            staleness,
            snapshots,
            actors: Mutex::new(HashMap::new()),
            counters,
        }
    }

    /// Records the name of the actor that `Hello` gave `actor_id`.
    pub fn register(&self, actor_id: u32, name: &str) -> Result<(), LearnerError> {
        let mut actors = self.actors.lock().map_err(|_| LearnerError::Poisoned)?;
        actors.entry(actor_id).or_default().name = name.into();
        Ok(())
    }

    /// The newest published policy version.
    pub fn newest_version(&self) -> u64 {
        self.snapshots.borrow().version
    }

    /// Validates a chunk and decides whether it is trained on: `Ok(Some)` to
    /// queue it, `Ok(None)` when it is dropped (counted under its reason),
    /// `Err` when the stream must end. Every valid chunk that is not a
    /// duplicate counts as received, a stale one too.
    pub fn admit(&self, msg: proto::Chunk) -> Result<Option<Admitted>, LearnerError> {
        let payload = prost::Message::encoded_len(&msg) as u64;
        let newest = self.newest_version();
        let expected = ChunkExpectations {
            newest_version: newest,
            ..self.expected.clone()
        };
        let chunk = chunk::validate(msg, &expected)?;
        let lag = newest.saturating_sub(chunk.policy_version);
        metrics::histogram!(m::POLICY_LAG).record(lag as f64);
        let samples = chunk.num_samples() as u64;
        let actor_name = {
            let mut actors = self.actors.lock().map_err(|_| LearnerError::Poisoned)?;
            let actor = actors.entry(chunk.actor_id).or_default();
            if chunk.sequence != 0 && chunk.sequence <= actor.last_sequence {
                self.counters.dropped(DropReason::Duplicate, samples);
                return Ok(None);
            }
            actor.last_sequence = chunk.sequence;
            actor.name.clone()
        };
        // Received: every valid, new chunk, stale or not (received = trained
        // + pending + stale, in Prometheus and metrics.jsonl alike).
        self.counters.received(samples, payload);
        if self.staleness.is_stale(lag) {
            self.counters.dropped(DropReason::Stale, samples);
            return Ok(None);
        }
        Ok(Some(Admitted { chunk, actor_name }))
    }
}
