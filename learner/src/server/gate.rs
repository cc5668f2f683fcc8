//! The ingest gate: what a chunk from the wire must pass before it may queue
//! for the trainer — the session it arrives on, validation against the run,
//! the staleness rule and the session's sequence — and the one mapping of
//! every refusal to a gRPC status.
//!
//! Sessions bind identity: `Hello` hands out an actor id with a secret
//! credential, the trajectory stream carrying that credential is bound to the
//! id, and a chunk claiming another id is refused. A session ends with its
//! stream (its sequence record goes with it), and one never streamed on
//! expires; the table is capped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use flotilla_common::chunk::{self, Chunk, ChunkError, ChunkExpectations};
use flotilla_common::metrics::{self as m, DropReason};
use flotilla_common::{proto, Snapshot};
use rand::Rng;
use tokio::sync::watch;
use tonic::{Code, Status};

use crate::train::batcher::StalenessRule;
use crate::train::recorder::Counters;

/// Why the learner refuses a call or ends a stream.
#[derive(Debug, thiserror::Error)]
pub enum LearnerError {
    #[error("field `protocol_version`: this learner speaks protocol {expected}, the actor {actual}; run an actor of the same Flotilla release")]
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
    #[error("metadata `{}`: missing or not text; send the session credential from Hello (RunSpec.session)", proto::SESSION_METADATA)]
    NoSession,
    #[error("unknown session (it expired unused, already ended, or the learner restarted): call Hello again")]
    UnknownSession,
    #[error(
        "this session already has a trajectory stream (one per session; call Hello for another)"
    )]
    SessionBusy,
    #[error("field `actor_id`: this session is actor {session}, got {claimed}")]
    WrongActor { session: u32, claimed: u32 },
    #[error("{sessions} actor sessions are open (ingest.max_actors); retry later")]
    TooManySessions { sessions: usize },
    /// A Hello whose environment declaration is malformed.
    #[error("{0}")]
    Declaration(String),
    /// A Hello whose environment is not the run's.
    #[error("{0}")]
    EnvMismatch(String),
    /// The run has not started: it waits for its first actor's spaces.
    #[error("the learner's run has not started yet (a run of an external environment waits for an actor that declares its spaces); retry")]
    Starting,
}

impl From<LearnerError> for Status {
    fn from(e: LearnerError) -> Status {
        let message = e.to_string();
        match e {
            LearnerError::ProtocolVersion { .. } | LearnerError::EnvMismatch(_) => {
                Status::failed_precondition(message)
            }
            LearnerError::Starting => Status::unavailable(message),
            LearnerError::NumEnvs { .. }
            | LearnerError::ActorName { .. }
            | LearnerError::Declaration(_)
            | LearnerError::NoSession
            | LearnerError::Chunk(_) => Status::invalid_argument(message),
            LearnerError::TooLarge(_) | LearnerError::TooManySessions { .. } => {
                Status::resource_exhausted(message)
            }
            LearnerError::Inbound(status) => status,
            LearnerError::Idle(_) => Status::deadline_exceeded(message),
            LearnerError::ShuttingDown => Status::unavailable(message),
            LearnerError::UnknownSession => Status::aborted(message),
            LearnerError::SessionBusy => Status::already_exists(message),
            LearnerError::WrongActor { .. } => Status::permission_denied(message),
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
            LearnerError::WrongActor { .. } => Some(DropReason::WrongActor),
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
            | LearnerError::NoSession
            | LearnerError::UnknownSession
            | LearnerError::SessionBusy
            | LearnerError::TooManySessions { .. }
            | LearnerError::Declaration(_)
            | LearnerError::EnvMismatch(_)
            | LearnerError::Starting => None,
        }
    }
}

/// Limits of the session table.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Most open sessions (`ingest.max_actors`).
    pub max_sessions: usize,
    /// A session no stream has used for this long is forgotten.
    pub unused_ttl: Duration,
}

/// A session `Hello` handed out: the actor id, and the secret credential
/// its trajectory stream must carry.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub actor_id: u32,
    pub session: String,
}

struct Session {
    actor_id: u32,
    name: Arc<str>,
    opened: Instant,
    streaming: bool,
}

struct Sessions {
    by_credential: HashMap<String, Session>,
    next_actor_id: u32,
}

/// The checks every chunk passes, shared by all streams.
pub struct IngestGate {
    /// What chunks must look like; `newest_version` is filled in per chunk.
    expected: ChunkExpectations,
    staleness: StalenessRule,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    sessions: Mutex<Sessions>,
    limits: SessionLimits,
    counters: Arc<Counters>,
}

/// A trajectory stream bound to its session: the identity every chunk must
/// claim, and the last sequence number accepted. Dropping it ends the session.
pub struct BoundStream<'g> {
    gate: &'g IngestGate,
    credential: String,
    pub actor_id: u32,
    pub actor_name: Arc<str>,
    last_sequence: u64,
}

impl Drop for BoundStream<'_> {
    fn drop(&mut self) {
        self.gate.sessions().by_credential.remove(&self.credential);
    }
}

/// A chunk that passed the gate, with the name its actor gave at `Hello`.
#[derive(Debug)]
pub struct Admitted {
    pub chunk: Chunk,
    pub actor_name: Arc<str>,
    /// Its encoded size on the wire.
    pub payload_bytes: u64,
    /// Its share of the queue's byte budget (`ingest.max_queued_bytes`),
    /// given back when the trainer takes the chunk.
    pub budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl IngestGate {
    pub fn new(
        expected: ChunkExpectations,
        staleness: StalenessRule,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        limits: SessionLimits,
        counters: Arc<Counters>,
    ) -> Self {
        IngestGate {
            expected,
            staleness,
            snapshots,
            sessions: Mutex::new(Sessions {
                by_credential: HashMap::new(),
                next_actor_id: 1,
            }),
            limits,
            counters,
        }
    }

    /// The table; a panic elsewhere while it was held leaves it usable.
    fn sessions(&self) -> MutexGuard<'_, Sessions> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for the actor called `name` (`Hello`): forgets the
    /// sessions that expired unused, makes room by forgetting the oldest
    /// unused one when the table is full (a client that only says `Hello`
    /// cannot lock others out), then hands out a fresh actor id and
    /// credential. Refused only when every session has a live stream.
    pub fn open_session(&self, name: &str) -> Result<Credentials, LearnerError> {
        let mut s = self.sessions();
        let ttl = self.limits.unused_ttl;
        s.by_credential
            .retain(|_, x| x.streaming || x.opened.elapsed() < ttl);
        if s.by_credential.len() >= self.limits.max_sessions {
            let oldest_unused = s
                .by_credential
                .iter()
                .filter(|(_, x)| !x.streaming)
                .min_by_key(|(_, x)| x.opened)
                .map(|(k, _)| k.clone());
            match oldest_unused {
                Some(k) => {
                    s.by_credential.remove(&k);
                }
                None => {
                    return Err(LearnerError::TooManySessions {
                        sessions: s.by_credential.len(),
                    })
                }
            }
        }
        // Ids wrap after 2^32 - 1 sessions, skipping 0 and ids still in use.
        let actor_id = loop {
            let id = s.next_actor_id;
            s.next_actor_id = s.next_actor_id.checked_add(1).unwrap_or(1);
            if id != 0 && !s.by_credential.values().any(|x| x.actor_id == id) {
                break id;
            }
        };
        let session = format!("{:032x}", rand::rng().random::<u128>());
        s.by_credential.insert(
            session.clone(),
            Session {
                actor_id,
                name: name.into(),
                opened: Instant::now(),
                streaming: false,
            },
        );
        Ok(Credentials { actor_id, session })
    }

    /// Binds a trajectory stream to the session whose credential it carries.
    pub fn bind(&self, credential: Option<&str>) -> Result<BoundStream<'_>, LearnerError> {
        let credential = credential.ok_or(LearnerError::NoSession)?;
        let mut s = self.sessions();
        let session = s
            .by_credential
            .get_mut(credential)
            .ok_or(LearnerError::UnknownSession)?;
        if session.streaming {
            return Err(LearnerError::SessionBusy);
        }
        session.streaming = true;
        Ok(BoundStream {
            gate: self,
            credential: credential.to_owned(),
            actor_id: session.actor_id,
            actor_name: session.name.clone(),
            last_sequence: 0,
        })
    }

    /// The run's counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Open sessions (streaming or not yet).
    pub fn open_sessions(&self) -> usize {
        self.sessions().by_credential.len()
    }

    /// The newest published policy version.
    pub fn newest_version(&self) -> u64 {
        self.snapshots.borrow().version
    }

    /// Checks a chunk from `stream` and decides whether it is trained on:
    /// `Ok(Some)` to queue it, `Ok(None)` when it is dropped (counted under
    /// its reason), `Err` when the stream must end. Every valid chunk that is
    /// not a duplicate counts as received, a stale one too.
    pub fn admit(
        &self,
        stream: &mut BoundStream<'_>,
        msg: proto::Chunk,
    ) -> Result<Option<Admitted>, LearnerError> {
        // Identity first: a spoofed chunk costs no validation.
        if msg.actor_id != stream.actor_id {
            return Err(LearnerError::WrongActor {
                session: stream.actor_id,
                claimed: msg.actor_id,
            });
        }
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
        if chunk.sequence <= stream.last_sequence {
            self.counters.dropped(DropReason::Duplicate, samples);
            return Ok(None);
        }
        stream.last_sequence = chunk.sequence;
        // Received: every valid, new chunk, stale or not (received = trained
        // + pending + stale, in Prometheus and metrics.jsonl alike).
        self.counters.received(samples, payload);
        self.counters
            .board
            .chunk(stream.actor_id, &stream.actor_name, samples, lag);
        if self.staleness.is_stale(lag) {
            self.counters.dropped(DropReason::Stale, samples);
            return Ok(None);
        }
        self.counters.queued(samples);
        Ok(Some(Admitted {
            chunk,
            actor_name: stream.actor_name.clone(),
            payload_bytes: payload,
            budget: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use flotilla_common::chunk::{ChunkBuilder, ValueBounds};
    use flotilla_common::space::Dtype;
    use flotilla_common::{EnvSpec, Space, VecEnv};

    use super::*;

    const T: usize = 4;
    const N: usize = 2;

    fn gate(newest: u64, sync: bool) -> (IngestGate, watch::Sender<Arc<Snapshot>>, Arc<Counters>) {
        let (tx, rx) = watch::channel(Arc::new(Snapshot {
            version: newest,
            safetensors: bytes::Bytes::new(),
            samples_per_version: 0,
        }));
        let counters = Arc::new(Counters::default());
        let expected = ChunkExpectations {
            run_id: "run".into(),
            env_id: "CartPole-v1".into(),
            obs_dim: 4,
            obs_dtype: Dtype::Float32,
            action_space: Space::Discrete { n: 2 },
            chunk_len: T,
            max_envs: 8,
            max_bytes: 1 << 20,
            newest_version: 0,
            require_behavior_value: false,
            bounds: ValueBounds::defaults(
                EnvSpec::new("CartPole-v1")
                    .make()
                    .unwrap()
                    .observation_space(),
            ),
        };
        let rule = StalenessRule { max_lag: 1, sync };
        let limits = SessionLimits {
            max_sessions: 3,
            unused_ttl: Duration::from_millis(200),
        };
        (
            IngestGate::new(expected, rule, rx, limits, counters.clone()),
            tx,
            counters,
        )
    }

    /// A session for `name`, bound to a stream.
    fn stream<'g>(gate: &'g IngestGate, name: &str) -> BoundStream<'g> {
        let c = gate.open_session(name).unwrap();
        gate.bind(Some(&c.session)).unwrap()
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
        let mut s = stream(&gate, "alpha");
        let id = s.actor_id;
        let a = gate
            .admit(&mut s, chunk(id, 1, 3))
            .unwrap()
            .expect("admitted");
        assert_eq!(&*a.actor_name, "alpha");
        assert_eq!(a.chunk.num_samples(), T * N);
        assert_eq!(count(&counters.samples_received), (T * N) as u64);
        assert_eq!(count(&counters.stale_samples), 0);
    }

    #[test]
    fn stale_chunks_are_received_and_dropped_as_stale() {
        let (gate, tx, counters) = gate(5, false);
        let mut s = stream(&gate, "a");
        let id = s.actor_id;
        // Lag 1 is allowed (max_lag 1), lag 2 is not.
        assert!(gate.admit(&mut s, chunk(id, 1, 4)).unwrap().is_some());
        assert!(gate.admit(&mut s, chunk(id, 2, 3)).unwrap().is_none());
        let samples = (T * N) as u64;
        assert_eq!(count(&counters.samples_received), 2 * samples);
        assert_eq!(count(&counters.stale_samples), samples);
        // The newest version is read from the publisher's watch.
        tx.send_replace(Arc::new(Snapshot {
            version: 9,
            safetensors: bytes::Bytes::new(),
            samples_per_version: 0,
        }));
        assert!(gate.admit(&mut s, chunk(id, 3, 5)).unwrap().is_none());
        assert_eq!(count(&counters.stale_samples), 2 * samples);
    }

    #[test]
    fn sync_mode_admits_only_the_newest_version() {
        let (gate, _tx, counters) = gate(5, true);
        let mut s = stream(&gate, "a");
        let id = s.actor_id;
        assert!(gate.admit(&mut s, chunk(id, 1, 4)).unwrap().is_none());
        assert!(gate.admit(&mut s, chunk(id, 2, 5)).unwrap().is_some());
        assert_eq!(count(&counters.stale_samples), (T * N) as u64);
    }

    #[test]
    fn a_sequence_not_above_the_last_is_a_duplicate_and_not_received() {
        let (gate, _tx, counters) = gate(0, false);
        let mut s = stream(&gate, "a");
        let id = s.actor_id;
        assert!(gate.admit(&mut s, chunk(id, 2, 0)).unwrap().is_some());
        assert!(gate.admit(&mut s, chunk(id, 2, 0)).unwrap().is_none());
        assert!(gate.admit(&mut s, chunk(id, 1, 0)).unwrap().is_none());
        // u64::MAX is the last sequence a session can send; no overflow.
        assert!(gate
            .admit(&mut s, chunk(id, u64::MAX, 0))
            .unwrap()
            .is_some());
        assert!(gate.admit(&mut s, chunk(id, 3, 0)).unwrap().is_none());
        // Another session's sequence numbers are its own.
        let mut other = stream(&gate, "b");
        let other_id = other.actor_id;
        assert!(gate
            .admit(&mut other, chunk(other_id, 1, 0))
            .unwrap()
            .is_some());
        assert_eq!(count(&counters.samples_received), 3 * (T * N) as u64);
        // Sequence 0 is not a sequence number.
        let e = gate.admit(&mut other, chunk(other_id, 0, 0)).unwrap_err();
        assert!(e.to_string().contains("field `sequence`"), "{e}");
    }

    #[test]
    fn a_chunk_claiming_another_actor_is_permission_denied_and_the_victim_goes_on() {
        let (gate, _tx, counters) = gate(0, false);
        let mut victim = stream(&gate, "victim");
        let mut spoofer = stream(&gate, "spoofer");
        let victim_id = victim.actor_id;
        assert_ne!(victim_id, spoofer.actor_id);
        let e = gate
            .admit(&mut spoofer, chunk(victim_id, u64::MAX, 0))
            .unwrap_err();
        assert_eq!(e.drop_reason(), Some(DropReason::WrongActor));
        let status = Status::from(e);
        assert_eq!(status.code(), Code::PermissionDenied);
        assert!(
            status.message().contains("field `actor_id`"),
            "{}",
            status.message()
        );
        // Nothing of the victim's record changed.
        assert!(gate
            .admit(&mut victim, chunk(victim_id, 1, 0))
            .unwrap()
            .is_some());
        assert_eq!(count(&counters.samples_received), (T * N) as u64);
    }

    #[test]
    fn sessions_bind_one_stream_end_with_it_expire_unused_and_are_capped() {
        let (gate, _tx, _counters) = gate(0, false);
        assert!(matches!(gate.bind(None), Err(LearnerError::NoSession)));
        assert!(matches!(
            gate.bind(Some("guessed")),
            Err(LearnerError::UnknownSession)
        ));
        let c = gate.open_session("a").unwrap();
        let bound = gate.bind(Some(&c.session)).unwrap();
        assert!(matches!(
            gate.bind(Some(&c.session)),
            Err(LearnerError::SessionBusy)
        ));
        // The stream ends: so does the session, and its credential is dead.
        drop(bound);
        assert_eq!(gate.open_sessions(), 0);
        assert!(matches!(
            gate.bind(Some(&c.session)),
            Err(LearnerError::UnknownSession)
        ));
        // A full table (max 3) forgets its oldest unused session for a new one ...
        let held: Vec<_> = (0..3).map(|_| gate.open_session("x").unwrap()).collect();
        let streaming = gate.bind(Some(&held[0].session)).unwrap();
        let fourth = gate.open_session("x").unwrap();
        assert_eq!(gate.open_sessions(), 3);
        assert!(matches!(
            gate.bind(Some(&held[1].session)),
            Err(LearnerError::UnknownSession)
        ));
        // ... and refuses only when every session streams.
        let b2 = gate.bind(Some(&held[2].session)).unwrap();
        let b4 = gate.bind(Some(&fourth.session)).unwrap();
        let e = gate.open_session("x").unwrap_err();
        assert_eq!(Status::from(e).code(), Code::ResourceExhausted);
        drop((b2, b4));
        // Unused sessions expire (ttl 200 ms); a streaming one stays.
        let unused = gate.open_session("y").unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let fresh = gate.open_session("z").unwrap();
        assert_eq!(gate.open_sessions(), 2);
        assert!(matches!(
            gate.bind(Some(&unused.session)),
            Err(LearnerError::UnknownSession)
        ));
        // Ids are never shared by two open sessions.
        assert_ne!(fresh.actor_id, streaming.actor_id);
        let statuses = [
            (LearnerError::NoSession, Code::InvalidArgument),
            (LearnerError::UnknownSession, Code::Aborted),
            (LearnerError::SessionBusy, Code::AlreadyExists),
        ];
        for (e, code) in statuses {
            assert_eq!(Status::from(e).code(), code);
        }
    }

    #[test]
    fn an_invalid_chunk_is_an_error_with_its_drop_reason_and_status() {
        let (gate, _tx, counters) = gate(0, false);
        let mut s = stream(&gate, "a");
        let id = s.actor_id;
        let mut bad = chunk(id, 1, 0);
        bad.rewards.truncate(3);
        let e = gate.admit(&mut s, bad).unwrap_err();
        assert_eq!(e.drop_reason(), Some(DropReason::Invalid));
        let status = Status::from(e);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("rewards"), "{}", status.message());
        let future = gate.admit(&mut s, chunk(id, 2, 7)).unwrap_err();
        assert_eq!(future.drop_reason(), Some(DropReason::FutureVersion));
        let mut poison = chunk(id, 3, 0);
        poison.behavior_logp = bytes::Bytes::from((-1e30f32).to_le_bytes().repeat(T * N));
        let e = gate.admit(&mut s, poison).unwrap_err();
        assert_eq!(e.drop_reason(), Some(DropReason::OutOfBounds));
        assert_eq!(Status::from(e).code(), Code::InvalidArgument);
        assert_eq!(count(&counters.samples_received), 0);
    }

    #[test]
    fn refusals_map_to_their_status_codes() {
        let cases = [
            (
                LearnerError::ProtocolVersion {
                    expected: 2,
                    actual: 1,
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
