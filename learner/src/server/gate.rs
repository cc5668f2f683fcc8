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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use flotilla_common::chunk::ChunkBuilder;
    use flotilla_common::{EnvSpec, Space, VecEnv};

    use super::*;

    const T: usize = 4;
    const N: usize = 2;

    fn gate(newest: u64, sync: bool) -> (IngestGate, watch::Sender<Arc<Snapshot>>, Arc<Counters>) {
        let (tx, rx) = watch::channel(Arc::new(Snapshot {
            version: newest,
            safetensors: bytes::Bytes::new(),
        }));
        let counters = Arc::new(Counters::default());
        let expected = ChunkExpectations {
            run_id: "run".into(),
            env_id: "CartPole-v1".into(),
            obs_dim: 4,
            action_space: Space::Discrete { n: 2 },
            chunk_len: T,
            max_envs: 8,
            max_bytes: 1 << 20,
            newest_version: 0,
            require_behavior_value: false,
        };
        let rule = StalenessRule { max_lag: 1, sync };
        (
            IngestGate::new(expected, rule, rx, counters.clone()),
            tx,
            counters,
        )
    }

    fn chunk(actor_id: u32, sequence: u64, version: u64) -> proto::Chunk {
        let mut envs = VecEnv::new(&EnvSpec::new("CartPole-v1"), N, 7).unwrap();
        let mut b = ChunkBuilder::new(T, N, 4, Space::Discrete { n: 2 });
        b.begin(envs.observations());
        for _ in 0..T {
            envs.step_discrete(&[0, 1]);
            b.push_discrete(&[0, 1], &[0.5f32.ln(); N], None, &envs);
        }
        b.finish("run", "CartPole-v1", actor_id, sequence, version)
    }

    fn count(x: &std::sync::atomic::AtomicU64) -> u64 {
        x.load(Ordering::Relaxed)
    }

    #[test]
    fn a_chunk_passes_with_its_actors_name_and_counts_as_received_once() {
        let (gate, _tx, counters) = gate(3, false);
        gate.register(1, "alpha").unwrap();
        let a = gate.admit(chunk(1, 1, 3)).unwrap().expect("admitted");
        assert_eq!(&*a.actor_name, "alpha");
        assert_eq!(a.chunk.num_samples(), T * N);
        assert_eq!(count(&counters.samples_received), (T * N) as u64);
        assert_eq!(count(&counters.stale_samples), 0);
    }

    #[test]
    fn stale_chunks_are_received_and_dropped_as_stale() {
        let (gate, tx, counters) = gate(5, false);
        // Lag 1 is allowed (max_lag 1), lag 2 is not.
        assert!(gate.admit(chunk(1, 1, 4)).unwrap().is_some());
        assert!(gate.admit(chunk(1, 2, 3)).unwrap().is_none());
        let samples = (T * N) as u64;
        assert_eq!(count(&counters.samples_received), 2 * samples);
        assert_eq!(count(&counters.stale_samples), samples);
        // The newest version is read from the publisher's watch.
        tx.send_replace(Arc::new(Snapshot {
            version: 9,
            safetensors: bytes::Bytes::new(),
        }));
        assert!(gate.admit(chunk(1, 3, 5)).unwrap().is_none());
        assert_eq!(count(&counters.stale_samples), 2 * samples);
    }

    #[test]
    fn sync_mode_admits_only_the_newest_version() {
        let (gate, _tx, counters) = gate(5, true);
        assert!(gate.admit(chunk(1, 1, 4)).unwrap().is_none());
        assert!(gate.admit(chunk(1, 2, 5)).unwrap().is_some());
        assert_eq!(count(&counters.stale_samples), (T * N) as u64);
    }

    #[test]
    fn a_repeated_sequence_is_a_duplicate_and_not_received() {
        let (gate, _tx, counters) = gate(0, false);
        assert!(gate.admit(chunk(1, 2, 0)).unwrap().is_some());
        assert!(gate.admit(chunk(1, 2, 0)).unwrap().is_none());
        assert!(gate.admit(chunk(1, 1, 0)).unwrap().is_none());
        // Another actor's sequence numbers are its own.
        assert!(gate.admit(chunk(2, 1, 0)).unwrap().is_some());
        assert_eq!(count(&counters.samples_received), 2 * (T * N) as u64);
    }

    #[test]
    fn an_invalid_chunk_is_an_error_with_its_drop_reason_and_status() {
        let (gate, _tx, counters) = gate(0, false);
        let mut bad = chunk(1, 1, 0);
        bad.rewards.truncate(3);
        let e = gate.admit(bad).unwrap_err();
        assert_eq!(e.drop_reason(), Some(DropReason::Invalid));
        let status = Status::from(e);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("rewards"), "{}", status.message());
        let future = gate.admit(chunk(1, 2, 7)).unwrap_err();
        assert_eq!(future.drop_reason(), Some(DropReason::FutureVersion));
        assert_eq!(count(&counters.samples_received), 0);
    }

    #[test]
    fn refusals_map_to_their_status_codes() {
        let cases = [
            (
                LearnerError::ProtocolVersion {
                    expected: 1,
                    actual: 2,
                },
                Code::FailedPrecondition,
            ),
            (LearnerError::TooLarge("x".into()), Code::ResourceExhausted),
            (LearnerError::Idle(5.0), Code::DeadlineExceeded),
            (LearnerError::ShuttingDown, Code::Unavailable),
            (
                LearnerError::inbound(Status::out_of_range("message too large")),
                Code::ResourceExhausted,
            ),
            (
                LearnerError::inbound(Status::invalid_argument("not protobuf")),
                Code::InvalidArgument,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(Status::from(e).code(), code);
        }
        assert_eq!(
            LearnerError::inbound(Status::invalid_argument("x")).drop_reason(),
            Some(DropReason::Invalid)
        );
        assert_eq!(LearnerError::Idle(1.0).drop_reason(), None);
    }
}
