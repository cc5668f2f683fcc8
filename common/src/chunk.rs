//! Trajectory chunks: the domain type, its strict validation from the wire,
//! and the actors' packing side.
//!
//! A chunk is T steps of N environments. On the wire ([`proto::Chunk`]) its
//! arrays travel as packed little-endian `bytes` whose shapes are implied by
//! `t`, `n` and the run's spaces; nothing in the message itself can be trusted.
//! [`validate`] is the only way in: it destructures every field of the wire
//! message (adding a field to the proto fails to compile here until it is
//! handled), checks every shape, value and cross-field invariant, and returns
//! an owned [`Chunk`] whose invariants the learner can rely on without
//! re-checking. Errors name the offending field, what was expected and what
//! arrived, and carry a low-cardinality [`ChunkError::reason`] for metrics.
//!
//! [`ChunkBuilder`] is the other end: the actor's environment thread records
//! one [`VecEnv`] step at a time into pre-allocated buffers (no per-step
//! allocation) and serializes one message every T steps.

use bytes::Bytes;

use crate::metrics::DropReason;
use crate::proto;
use crate::space::{Dtype, Space};
use crate::vec_env::VecEnv;

/// What the learner expects of every chunk of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkExpectations {
    pub run_id: String,
    pub env_id: String,
    /// Flat observation size.
    pub obs_dim: usize,
    /// Element type of `obs` and `final_obs` (the observation space's).
    pub obs_dtype: Dtype,
    pub action_space: Space,
    /// Largest T; shorter chunks (`1..=chunk_len`) are accepted.
    pub chunk_len: usize,
    /// Largest N.
    pub max_envs: usize,
    /// Largest encoded message size, in bytes.
    pub max_bytes: u64,
    /// The learner's newest policy version: a chunk may not claim a newer one.
    pub newest_version: u64,
    /// Whether `behavior_value` must be present.
    pub require_behavior_value: bool,
    /// Limits on the values themselves.
    pub bounds: ValueBounds,
}

/// Values no sane actor produces, refused as `out_of_bounds`: finite but
/// absurd numbers (a log-probability of -1e30, a reward of 3e38) pass every
/// shape check and would turn the next update's loss into NaN or infinity.
/// The learner builds these from `[ingest]` (docs/configuration.md).
#[derive(Debug, Clone, PartialEq)]
pub struct ValueBounds {
    /// Largest |x| of `obs` and `final_obs`.
    pub max_abs_observation: f32,
    /// Per-dimension bounds of the observation space (`[obs_dim]` each, or
    /// empty to check none); infinite bounds are not checked.
    pub observation_low: Vec<f32>,
    pub observation_high: Vec<f32>,
    /// Largest |x| of `rewards`; an episode's return is at most this times
    /// its length.
    pub max_abs_reward: f32,
    /// Largest |x| of `behavior_value`.
    pub max_abs_value: f32,
    /// Largest |x| of a continuous action.
    pub max_abs_action: f32,
    /// Smallest `behavior_logp` per action dimension (negative): a discrete
    /// log-probability lies in `[min_logp, 0]`, a Gaussian one of `act_dim`
    /// dimensions is at least `min_logp * act_dim`.
    pub min_logp: f32,
}

impl ValueBounds {
    /// Finiteness only: every finite value passes.
    pub fn unbounded() -> Self {
        ValueBounds {
            max_abs_observation: f32::MAX,
            observation_low: Vec::new(),
            observation_high: Vec::new(),
            max_abs_reward: f32::MAX,
            max_abs_value: f32::MAX,
            max_abs_action: f32::MAX,
            min_logp: f32::MIN,
        }
    }

    /// The defaults of `[ingest]`, with the observation space's own bounds.
    pub fn defaults(observation_space: &Space) -> Self {
        let (observation_low, observation_high) = match observation_space {
            Space::Box { low, high, .. } => (low.clone(), high.clone()),
            Space::Discrete { .. } => (Vec::new(), Vec::new()),
        };
        ValueBounds {
            max_abs_observation: 1e6,
            observation_low,
            observation_high,
            max_abs_reward: 1e6,
            max_abs_value: 1e9,
            max_abs_action: 1e6,
            min_logp: -1e3,
        }
    }
}

/// Slack above 0 for a discrete log-probability: a log-softmax computed in
/// f32 (and the actors' fast exp/log) can round a hair above 0.
const LOGP_ROUNDING: f32 = 1e-3;

/// Actions of a chunk, `[T, N]` (Discrete) or `[T, N, act_dim]` (Box), row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Actions {
    /// Indices, each in `0..n` of the action space.
    Discrete(Vec<i64>),
    /// Finite values, not necessarily within the box bounds (Gaussian samples
    /// are sent unclipped: they are what the log-probabilities refer to).
    Continuous(Vec<f32>),
}

/// Observations of a chunk in their wire type, flat and row-major.
///
/// Pixels stay bytes all the way to the learner's device, where they become
/// f32 (a quarter of the memory and of the host-to-device copy).
#[derive(Debug, Clone, PartialEq)]
pub enum Observations {
    F32(Vec<f32>),
    /// Integers `0..=255`, from a `uint8` observation space.
    U8(Vec<u8>),
}

impl From<Vec<f32>> for Observations {
    fn from(v: Vec<f32>) -> Self {
        Observations::F32(v)
    }
}

impl From<Vec<u8>> for Observations {
    fn from(v: Vec<u8>) -> Self {
        Observations::U8(v)
    }
}

impl Observations {
    /// No values, room for `capacity`.
    pub fn with_capacity(dtype: Dtype, capacity: usize) -> Self {
        match dtype {
            Dtype::Float32 => Observations::F32(Vec::with_capacity(capacity)),
            Dtype::Uint8 => Observations::U8(Vec::with_capacity(capacity)),
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Observations::F32(v) => v.len(),
            Observations::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> Dtype {
        match self {
            Observations::F32(_) => Dtype::Float32,
            Observations::U8(_) => Dtype::Uint8,
        }
    }

    /// The values, when they are f32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            Observations::F32(v) => Some(v),
            Observations::U8(_) => None,
        }
    }

    /// Values `range` as f32 (borrowed when they are f32 already).
    ///
    /// # Panics
    /// If `range` is out of bounds.
    pub fn f32s(&self, range: std::ops::Range<usize>) -> std::borrow::Cow<'_, [f32]> {
        match self {
            Observations::F32(v) => std::borrow::Cow::Borrowed(&v[range]),
            Observations::U8(v) => v[range].iter().map(|&x| f32::from(x)).collect(),
        }
    }

    /// Appends values `range` of `other`.
    ///
    /// # Panics
    /// If `other` has another dtype (a run has one) or `range` is out of bounds.
    pub fn extend_from(&mut self, other: &Observations, range: std::ops::Range<usize>) {
        match (self, other) {
            (Observations::F32(out), Observations::F32(v)) => out.extend_from_slice(&v[range]),
            (Observations::U8(out), Observations::U8(v)) => out.extend_from_slice(&v[range]),
            (out, _) => panic!(
                "observations of {} appended to {}",
                other.dtype().name(),
                out.dtype().name()
            ),
        }
    }

    /// The packed little-endian wire bytes.
    fn to_bytes(&self) -> Bytes {
        match self {
            Observations::F32(v) => f32_bytes(v),
            Observations::U8(v) => Bytes::copy_from_slice(v),
        }
    }
}

/// A validated chunk of T steps of N environments.
///
/// Every array is row-major with the layout of the wire message; after
/// [`validate`] all floats are finite, all shapes agree with `t`, `n` and the
/// run's spaces, and `final_obs_index` lists exactly the positions where an
/// episode ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub run_id: String,
    pub env_id: String,
    pub actor_id: u32,
    pub sequence: u64,
    pub policy_version: u64,
    /// T: steps.
    pub t: usize,
    /// N: environments.
    pub n: usize,
    /// `[T+1, N, obs_dim]`; row T is the observation after the last step.
    pub obs: Observations,
    pub actions: Actions,
    /// `[T, N]`.
    pub rewards: Vec<f32>,
    /// `[T, N]`.
    pub terminated: Vec<bool>,
    /// `[T, N]`.
    pub truncated: Vec<bool>,
    /// `[T, N]`: log-probability of each action under the acting policy.
    pub behavior_logp: Vec<f32>,
    /// `[T, N]` when the actor ran the critic.
    pub behavior_value: Option<Vec<f32>>,
    /// Strictly increasing flat positions `t * N + n` where an episode ended.
    pub final_obs_index: Vec<usize>,
    /// `[K, obs_dim]`: the true last observation of each ended episode.
    pub final_obs: Observations,
    /// Returns of the episodes that finished in this chunk.
    pub episode_returns: Vec<f32>,
    /// Lengths (>= 1) of the episodes that finished in this chunk.
    pub episode_lengths: Vec<u32>,
}

impl Chunk {
    /// Transitions in the chunk: `t * n`.
    pub fn num_samples(&self) -> usize {
        self.t.saturating_mul(self.n)
    }

    /// Flat observation size.
    pub fn obs_dim(&self) -> usize {
        let rows = self.t.saturating_add(1).saturating_mul(self.n);
        self.obs.len().checked_div(rows).unwrap_or(0)
    }

    /// Values per action: 1 for Discrete, the box's flat size for Box.
    pub fn act_dim(&self) -> usize {
        match &self.actions {
            Actions::Discrete(_) => 1,
            Actions::Continuous(a) => a.len().checked_div(self.num_samples()).unwrap_or(0),
        }
    }

    /// Whether the episode of env `i % n` ended at step `i / n` (`i = t * N + n`).
    pub fn done(&self, i: usize) -> bool {
        self.terminated.get(i).copied().unwrap_or(false)
            || self.truncated.get(i).copied().unwrap_or(false)
    }

    /// The wire form of this chunk; [`validate`] of the result gives it back.
    pub fn to_proto(&self) -> proto::Chunk {
        let Chunk {
            run_id,
            env_id,
            actor_id,
            sequence,
            policy_version,
            t,
            n,
            obs,
            actions,
            rewards,
            terminated,
            truncated,
            behavior_logp,
            behavior_value,
            final_obs_index,
            final_obs,
            episode_returns,
            episode_lengths,
        } = self;
        proto::Chunk {
            run_id: run_id.clone(),
            actor_id: *actor_id,
            sequence: *sequence,
            policy_version: *policy_version,
            t: u32::try_from(*t).unwrap_or(u32::MAX),
            n: u32::try_from(*n).unwrap_or(u32::MAX),
            obs: obs.to_bytes(),
            actions: match actions {
                Actions::Discrete(a) => i64_bytes(a),
                Actions::Continuous(a) => f32_bytes(a),
            },
            rewards: f32_bytes(rewards),
            terminated: flag_bytes(terminated),
            truncated: flag_bytes(truncated),
            behavior_logp: f32_bytes(behavior_logp),
            behavior_value: behavior_value.as_deref().map(f32_bytes).unwrap_or_default(),
            final_obs_index: final_obs_index
                .iter()
                .map(|&i| u32::try_from(i).unwrap_or(u32::MAX))
                .collect(),
            final_obs: final_obs.to_bytes(),
            episode_returns: episode_returns.clone(),
            episode_lengths: episode_lengths.clone(),
            env_id: env_id.clone(),
            obs_dtype: proto::Dtype::from(obs.dtype()).into(),
        }
    }
}

/// Why a chunk was rejected. The `Display` form names the field, what was
/// expected and what arrived; it goes back to the actor verbatim.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChunkError {
    /// The encoded message exceeds the run's `max_chunk_bytes`.
    #[error("chunk: expected at most {max} bytes (max_chunk_bytes), got {actual}")]
    TooLarge { max: u64, actual: u64 },
    /// `run_id` or `env_id` is not this run's.
    #[error("field `{field}`: expected {expected:?}, got {actual:?}")]
    WrongRun {
        field: &'static str,
        expected: String,
        actual: String,
    },
    /// The chunk claims a policy version the learner has not published.
    #[error(
        "field `policy_version`: expected at most {newest} (the learner's newest), got {actual}"
    )]
    FutureVersion { newest: u64, actual: u64 },
    /// `t` or `n` outside its allowed range.
    #[error("field `{field}`: expected {min}..={max} ({limit}), got {actual}")]
    OutOfRange {
        field: &'static str,
        min: u64,
        max: u64,
        limit: &'static str,
        actual: u64,
    },
    /// A packed array of the wrong byte length.
    #[error("field `{field}`: expected {expected} bytes ({shape}), got {actual}")]
    Size {
        field: &'static str,
        expected: u64,
        actual: u64,
        shape: String,
    },
    /// The size implied by the shape does not fit in 64 bits.
    #[error("field `{field}`: the size of {shape} overflows")]
    SizeOverflow { field: &'static str, shape: String },
    /// A repeated field with the wrong number of entries.
    #[error("field `{field}`: expected {expected} values ({what}), got {actual}")]
    Count {
        field: &'static str,
        expected: u64,
        actual: u64,
        what: &'static str,
    },
    /// NaN or an infinity where finite floats are required.
    #[error("field `{field}`: expected finite values, got {value} at index {index}")]
    NotFinite {
        field: &'static str,
        index: usize,
        value: f32,
    },
    /// A finite value outside what the run accepts (`[ingest]` bounds).
    #[error("field `{field}`: expected {expected}, got {value:e} at index {index}")]
    OutOfBounds {
        field: &'static str,
        index: usize,
        value: f32,
        expected: String,
    },
    /// A discrete action outside the action space.
    #[error("field `actions`: expected values in 0..{n}, got {value} at index {index}")]
    ActionOutOfRange { index: usize, value: i64, n: usize },
    /// A done flag that is neither 0 nor 1.
    #[error("field `{field}`: expected 0 or 1, got {value} at index {index}")]
    NotAFlag {
        field: &'static str,
        index: usize,
        value: u8,
    },
    /// Any other broken invariant (final observation indices, episode lengths).
    #[error("field `{field}`: expected {expected}, got {actual}")]
    Invalid {
        field: &'static str,
        expected: String,
        actual: String,
    },
}

impl ChunkError {
    /// The offending field of [`proto::Chunk`] (`"chunk"` for the whole message).
    pub fn field(&self) -> &'static str {
        match self {
            ChunkError::TooLarge { .. } => "chunk",
            ChunkError::FutureVersion { .. } => "policy_version",
            ChunkError::ActionOutOfRange { .. } => "actions",
            ChunkError::WrongRun { field, .. }
            | ChunkError::OutOfRange { field, .. }
            | ChunkError::Size { field, .. }
            | ChunkError::SizeOverflow { field, .. }
            | ChunkError::Count { field, .. }
            | ChunkError::NotFinite { field, .. }
            | ChunkError::OutOfBounds { field, .. }
            | ChunkError::NotAFlag { field, .. }
            | ChunkError::Invalid { field, .. } => field,
        }
    }

    /// Why the chunk is dropped: `too_large`, `wrong_run`, `future_version`,
    /// `out_of_bounds` or `invalid`.
    pub fn drop_reason(&self) -> DropReason {
        match self {
            ChunkError::OutOfBounds { .. } => DropReason::OutOfBounds,
            ChunkError::TooLarge { .. } => DropReason::TooLarge,
            ChunkError::WrongRun { .. } => DropReason::WrongRun,
            ChunkError::FutureVersion { .. } => DropReason::FutureVersion,
            ChunkError::OutOfRange { .. }
            | ChunkError::Size { .. }
            | ChunkError::SizeOverflow { .. }
            | ChunkError::Count { .. }
            | ChunkError::NotFinite { .. }
            | ChunkError::ActionOutOfRange { .. }
            | ChunkError::NotAFlag { .. }
            | ChunkError::Invalid { .. } => DropReason::Invalid,
        }
    }

    /// The label of [`ChunkError::drop_reason`] for
    /// `flotilla_chunks_dropped_total{reason}`.
    pub fn reason(&self) -> &'static str {
        self.drop_reason().as_str()
    }
}

/// The shape of an actor's chunks, for [`max_encoded_len`].
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkShape<'a> {
    /// T and N.
    pub chunk_len: usize,
    pub num_envs: usize,
    pub obs_dim: usize,
    pub obs_dtype: Dtype,
    pub action_space: &'a Space,
    pub behavior_values: bool,
    /// Episodes that end inside the chunk (K).
    pub episodes: usize,
    pub run_id_len: usize,
    pub env_id_len: usize,
}

/// The largest encoded size of a [`proto::Chunk`] of this shape, whatever
/// its values: every varint counted at its widest. The actor compares it
/// with the learner's `max_chunk_bytes` before acting.
pub fn max_encoded_len(s: &ChunkShape) -> u64 {
    fn varint(v: u64) -> u64 {
        u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
    }
    // A length-delimited field with a one-byte tag (fields 1..=15) or a
    // two-byte one (16..); absent when empty.
    let field = |tag: u64, len: u64| if len == 0 { 0 } else { tag + varint(len) + len };
    let (t, n, d, k) = (
        s.chunk_len as u64,
        s.num_envs as u64,
        s.obs_dim as u64,
        s.episodes as u64,
    );
    let tn = t * n;
    let obs_bytes = s.obs_dtype.size() as u64;
    let action_bytes = match s.action_space {
        Space::Discrete { .. } => 8,
        space => 4 * space.flat_dim() as u64,
    };
    field(1, s.run_id_len as u64)
        + (1 + 5) // actor_id
        + 2 * (1 + 10) // sequence, policy_version
        + 2 * (1 + 5) // t, n
        + field(1, (t + 1) * n * d * obs_bytes)
        + field(1, tn * action_bytes)
        + field(1, tn * 4) // rewards
        + 2 * field(1, tn) // terminated, truncated
        + field(1, tn * 4) // behavior_logp
        + field(1, if s.behavior_values { tn * 4 } else { 0 })
        + field(1, k * 5) // final_obs_index
        + field(1, k * d * obs_bytes)
        + field(2, k * 4) // episode_returns
        + field(2, k * 5) // episode_lengths
        + field(2, s.env_id_len as u64)
        + if s.obs_dtype == Dtype::Float32 { 0 } else { 2 + 1 } // obs_dtype
}

/// Validates a chunk from the wire against what the run expects.
///
/// Checks, in this order, stopping at the first failure: the encoded size;
/// `run_id` and `env_id`; `sequence` at least 1; `policy_version` not newer
/// than the learner's; `t` in `1..=chunk_len` and `n` in `1..=max_envs`;
/// then, field by field, each array's exact byte length from T, N and the
/// spaces, finite floats within the [`ValueBounds`], discrete actions in
/// `0..n`, done flags 0 or 1, `final_obs_index` strictly increasing, below
/// `T*N` and exactly the positions whose `terminated` or `truncated` is set,
/// `final_obs` of `[K, obs_dim]`, and one return (bounded by the length) and
/// one length (>= 1) per ended episode. Never panics, whatever the input.
pub fn validate(chunk: proto::Chunk, exp: &ChunkExpectations) -> Result<Chunk, ChunkError> {
    let encoded = prost::Message::encoded_len(&chunk) as u64;
    if encoded > exp.max_bytes {
        return Err(ChunkError::TooLarge {
            max: exp.max_bytes,
            actual: encoded,
        });
    }
    // Every field by name: a new proto field fails to compile until handled.
    let proto::Chunk {
        run_id,
        actor_id,
        sequence,
        policy_version,
        t,
        n,
        obs,
        actions,
        rewards,
        terminated,
        truncated,
        behavior_logp,
        behavior_value,
        final_obs_index,
        final_obs,
        episode_returns,
        episode_lengths,
        env_id,
        obs_dtype,
    } = chunk;

    if run_id != exp.run_id {
        return Err(wrong_run("run_id", &exp.run_id, &run_id));
    }
    if env_id != exp.env_id {
        return Err(wrong_run("env_id", &exp.env_id, &env_id));
    }
    if sequence == 0 {
        return Err(ChunkError::OutOfRange {
            field: "sequence",
            min: 1,
            max: u64::MAX,
            limit: "sequence numbers start at 1",
            actual: 0,
        });
    }
    if policy_version > exp.newest_version {
        return Err(ChunkError::FutureVersion {
            newest: exp.newest_version,
            actual: policy_version,
        });
    }
    let wanted = proto::Dtype::from(exp.obs_dtype);
    if obs_dtype != i32::from(wanted) {
        let actual = proto::Dtype::try_from(obs_dtype).map_or_else(
            |_| format!("unknown dtype {obs_dtype}"),
            |d| Dtype::from(d).name().into(),
        );
        return Err(ChunkError::Invalid {
            field: "obs_dtype",
            expected: format!("{} (the run's observation space)", exp.obs_dtype.name()),
            actual,
        });
    }
    let t = in_range("t", t, exp.chunk_len, "chunk_len")?;
    let n = in_range("n", n, exp.max_envs, "max envs per actor")?;
    let (t64, n64) = (t as u64, n as u64);
    let t1 = t64 + 1; // t <= u32::MAX: no overflow
    let d = exp.obs_dim as u64;

    let b = &exp.bounds;
    let obs = observations(
        "obs",
        &obs,
        exp.obs_dtype,
        &[("T+1", t1), ("N", n64), ("obs_dim", d)],
        b,
    )?;

    let actions = match &exp.action_space {
        Space::Discrete { n: num_actions } => {
            check_size("actions", actions.len(), I64, &[("T", t64), ("N", n64)])?;
            let a = le_i64s(&actions);
            let bad = a
                .iter()
                .position(|&x| usize::try_from(x).map_or(true, |x| x >= *num_actions));
            if let Some(index) = bad {
                return Err(ChunkError::ActionOutOfRange {
                    index,
                    value: a[index],
                    n: *num_actions,
                });
            }
            Actions::Discrete(a)
        }
        space @ Space::Box { .. } => {
            let act_dim = space.flat_dim() as u64;
            let dims = [("T", t64), ("N", n64), ("act_dim", act_dim)];
            check_size("actions", actions.len(), F32, &dims)?;
            let a = finite_f32s("actions", &actions)?;
            abs_within("actions", &a, b.max_abs_action, "ingest.max_abs_action")?;
            Actions::Continuous(a)
        }
    };

    let tn_dims = [("T", t64), ("N", n64)];
    check_size("rewards", rewards.len(), F32, &tn_dims)?;
    let rewards = finite_f32s("rewards", &rewards)?;
    abs_within(
        "rewards",
        &rewards,
        b.max_abs_reward,
        "ingest.max_abs_reward",
    )?;
    check_size("terminated", terminated.len(), U8, &tn_dims)?;
    let terminated = flags("terminated", &terminated)?;
    check_size("truncated", truncated.len(), U8, &tn_dims)?;
    let truncated = flags("truncated", &truncated)?;
    check_size("behavior_logp", behavior_logp.len(), F32, &tn_dims)?;
    let behavior_logp = finite_f32s("behavior_logp", &behavior_logp)?;
    logp_within(&behavior_logp, &exp.action_space, b.min_logp)?;
    let behavior_value = if exp.require_behavior_value || !behavior_value.is_empty() {
        let note = if exp.require_behavior_value {
            "required by the run"
        } else {
            "or empty"
        };
        check_size_noted("behavior_value", behavior_value.len(), F32, &tn_dims, note)?;
        let v = finite_f32s("behavior_value", &behavior_value)?;
        abs_within(
            "behavior_value",
            &v,
            b.max_abs_value,
            "ingest.max_abs_value",
        )?;
        Some(v)
    } else {
        None
    };

    let final_obs_index = check_final_index(&final_obs_index, &terminated, &truncated, n)?;
    let k = final_obs_index.len() as u64;
    let final_obs = observations(
        "final_obs",
        &final_obs,
        exp.obs_dtype,
        &[("K", k), ("obs_dim", d)],
        b,
    )?;

    let what = "one per episode that ended in the chunk";
    for (field, actual) in [
        ("episode_returns", episode_returns.len()),
        ("episode_lengths", episode_lengths.len()),
    ] {
        if actual as u64 != k {
            return Err(ChunkError::Count {
                field,
                expected: k,
                actual: actual as u64,
                what,
            });
        }
    }
    if let Some(index) = episode_returns.iter().position(|x| !x.is_finite()) {
        return Err(ChunkError::NotFinite {
            field: "episode_returns",
            index,
            value: episode_returns[index],
        });
    }
    if let Some(index) = episode_lengths.iter().position(|&l| l == 0) {
        return Err(ChunkError::Invalid {
            field: "episode_lengths",
            expected: "lengths of at least 1".into(),
            actual: format!("0 at index {index}"),
        });
    }
    // A return is a sum of at most `length` rewards, each within the bound.
    let longest_sum = |len: u32| f64::from(b.max_abs_reward) * f64::from(len);
    let too_big = episode_returns
        .iter()
        .zip(&episode_lengths)
        .position(|(&r, &len)| f64::from(r).abs() > longest_sum(len));
    if let Some(index) = too_big {
        return Err(ChunkError::OutOfBounds {
            field: "episode_returns",
            index,
            value: episode_returns[index],
            expected: format!(
                "|x| <= {:e} (ingest.max_abs_reward x episode length {})",
                longest_sum(episode_lengths[index]),
                episode_lengths[index]
            ),
        });
    }

    Ok(Chunk {
        run_id,
        env_id,
        actor_id,
        sequence,
        policy_version,
        t,
        n,
        obs,
        actions,
        rewards,
        terminated,
        truncated,
        behavior_logp,
        behavior_value,
        final_obs_index,
        final_obs,
        episode_returns,
        episode_lengths,
    })
}

/// An element type of a packed array: its name and size in bytes.
#[derive(Clone, Copy)]
struct Elem {
    name: &'static str,
    size: u64,
}

const F32: Elem = Elem {
    name: "f32",
    size: 4,
};
const I64: Elem = Elem {
    name: "i64",
    size: 8,
};
const U8: Elem = Elem {
    name: "u8",
    size: 1,
};

/// "f32 [T+1=33, N=2, obs_dim=4]".
fn shape_of(elem: Elem, dims: &[(&str, u64)]) -> String {
    let dims: Vec<String> = dims.iter().map(|(name, v)| format!("{name}={v}")).collect();
    format!("{} [{}]", elem.name, dims.join(", "))
}

/// Checks that a packed array holds exactly `product(dims)` elements.
fn check_size(
    field: &'static str,
    actual: usize,
    elem: Elem,
    dims: &[(&str, u64)],
) -> Result<(), ChunkError> {
    check_size_noted(field, actual, elem, dims, "")
}

/// [`check_size`] with a note appended to the shape in the message.
fn check_size_noted(
    field: &'static str,
    actual: usize,
    elem: Elem,
    dims: &[(&str, u64)],
    note: &str,
) -> Result<(), ChunkError> {
    let shape = || {
        let shape = shape_of(elem, dims);
        if note.is_empty() {
            shape
        } else {
            format!("{shape}, {note}")
        }
    };
    let expected = dims
        .iter()
        .try_fold(elem.size, |acc, &(_, v)| acc.checked_mul(v));
    match expected {
        Some(expected) if expected == actual as u64 => Ok(()),
        Some(expected) => Err(ChunkError::Size {
            field,
            expected,
            actual: actual as u64,
            shape: shape(),
        }),
        None => Err(ChunkError::SizeOverflow {
            field,
            shape: shape(),
        }),
    }
}

/// `value` in `1..=max`, as a `usize`.
fn in_range(
    field: &'static str,
    value: u32,
    max: usize,
    limit: &'static str,
) -> Result<usize, ChunkError> {
    match usize::try_from(value) {
        Ok(v) if (1..=max).contains(&v) => Ok(v),
        _ => Err(ChunkError::OutOfRange {
            field,
            min: 1,
            max: max as u64,
            limit,
            actual: u64::from(value),
        }),
    }
}

fn wrong_run(field: &'static str, expected: &str, actual: &str) -> ChunkError {
    // The actual value comes from the wire: keep error messages (and logs) short.
    const MAX_CHARS: usize = 64;
    let mut clipped: String = actual.chars().take(MAX_CHARS).collect();
    if clipped.len() < actual.len() {
        clipped.push('…');
    }
    ChunkError::WrongRun {
        field,
        expected: expected.to_owned(),
        actual: clipped,
    }
}

/// `final_obs_index` must be strictly increasing, below `T*N`, and list exactly
/// the positions whose `terminated` or `truncated` flag is set.
fn check_final_index(
    index: &[u32],
    terminated: &[bool],
    truncated: &[bool],
    n: usize,
) -> Result<Vec<usize>, ChunkError> {
    let field = "final_obs_index";
    let tn = terminated.len();
    let mut out = Vec::with_capacity(index.len());
    let mut prev: Option<usize> = None;
    for (k, &i) in index.iter().enumerate() {
        let i = match usize::try_from(i) {
            Ok(i) if i < tn => i,
            _ => {
                return Err(ChunkError::Invalid {
                    field,
                    expected: format!("entries below T*N = {tn}"),
                    actual: format!("{i} at index {k}"),
                })
            }
        };
        if let Some(p) = prev.filter(|&p| p >= i) {
            return Err(ChunkError::Invalid {
                field,
                expected: "strictly increasing entries".into(),
                actual: format!("{i} after {p} at index {k}"),
            });
        }
        prev = Some(i);
        out.push(i);
    }
    let at = |i: usize| format!("position {i} (t={}, n={})", i / n, i % n);
    let mut listed = out.iter().copied().enumerate().peekable();
    for (pos, (&term, &trunc)) in terminated.iter().zip(truncated).enumerate() {
        let entry = listed.next_if(|&(_, i)| i == pos);
        match (term || trunc, entry) {
            (true, None) => {
                let flag = if term { "terminated" } else { "truncated" };
                return Err(ChunkError::Invalid {
                    field,
                    expected: format!("an entry for {} where `{flag}` is 1", at(pos)),
                    actual: "none (a final observation is missing)".into(),
                });
            }
            (false, Some((k, _))) => {
                return Err(ChunkError::Invalid {
                    field,
                    expected: "entries only where `terminated` or `truncated` is 1".into(),
                    actual: format!("{} at index {k}, where no episode ended", at(pos)),
                });
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Decodes little-endian f32s and checks that all are finite.
fn finite_f32s(field: &'static str, bytes: &[u8]) -> Result<Vec<f32>, ChunkError> {
    let v = le_f32s(bytes);
    match v.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(ChunkError::NotFinite {
            field,
            index,
            value: v[index],
        }),
        None => Ok(v),
    }
}

/// Every |x| at most `max`.
fn abs_within(
    field: &'static str,
    values: &[f32],
    max: f32,
    key: &'static str,
) -> Result<(), ChunkError> {
    match values.iter().position(|x| x.abs() > max) {
        Some(index) => Err(ChunkError::OutOfBounds {
            field,
            index,
            value: values[index],
            expected: format!("|x| <= {max:e} ({key})"),
        }),
        None => Ok(()),
    }
}

/// Decodes packed observations of `dtype` and `dims` (checking the size),
/// finite (f32) and within the [`ValueBounds`].
fn observations(
    field: &'static str,
    bytes: &[u8],
    dtype: Dtype,
    dims: &[(&str, u64)],
    b: &ValueBounds,
) -> Result<Observations, ChunkError> {
    match dtype {
        Dtype::Float32 => {
            check_size(field, bytes.len(), F32, dims)?;
            let v = finite_f32s(field, bytes)?;
            abs_within(
                field,
                &v,
                b.max_abs_observation,
                "ingest.max_abs_observation",
            )?;
            observations_within(field, &v, b)?;
            Ok(Observations::F32(v))
        }
        Dtype::Uint8 => {
            check_size(field, bytes.len(), U8, dims)?;
            // Every byte is finite and at most 255; only a tighter bound
            // needs a look at the values.
            if b.max_abs_observation < 255.0 {
                if let Some(index) = bytes
                    .iter()
                    .position(|&x| f32::from(x) > b.max_abs_observation)
                {
                    let max = b.max_abs_observation;
                    return Err(ChunkError::OutOfBounds {
                        field,
                        index,
                        value: f32::from(bytes[index]),
                        expected: format!("|x| <= {max:e} (ingest.max_abs_observation)"),
                    });
                }
            }
            let full_range = b.observation_low.iter().all(|&lo| lo <= 0.0)
                && b.observation_high.iter().all(|&hi| hi >= 255.0);
            if !full_range {
                observations_within(field, bytes, b)?;
            }
            Ok(Observations::U8(bytes.to_vec()))
        }
    }
}

/// Observations (rows of `obs_dim`) within the observation space's finite
/// bounds. The space's bounds get a relative slack of 1e-5 for values an
/// environment rounds onto them.
fn observations_within<T: Copy + Into<f32>>(
    field: &'static str,
    values: &[T],
    b: &ValueBounds,
) -> Result<(), ChunkError> {
    let dim = b.observation_low.len();
    if dim == 0 || b.observation_high.len() != dim {
        return Ok(());
    }
    let slack = |x: f32| 1e-5 * x.abs().max(1.0);
    // The slackened bounds once per chunk, then row by row: no division or
    // slack per value (an image row holds tens of thousands).
    let lows: Vec<f32> = b.observation_low.iter().map(|&lo| lo - slack(lo)).collect();
    let highs: Vec<f32> = b
        .observation_high
        .iter()
        .map(|&hi| hi + slack(hi))
        .collect();
    for (r, row) in values.chunks(dim).enumerate() {
        let outside = row
            .iter()
            .zip(lows.iter().zip(&highs))
            .position(|(&x, (&lo, &hi))| {
                let x: f32 = x.into();
                x < lo || x > hi
            });
        if let Some(k) = outside {
            let (lo, hi) = (b.observation_low[k], b.observation_high[k]);
            return Err(ChunkError::OutOfBounds {
                field,
                index: r * dim + k,
                value: row[k].into(),
                expected: format!(
                    "values in the observation space, dimension {k}: [{lo}, {hi}] (ingest.check_observation_space)"
                ),
            });
        }
    }
    Ok(())
}

/// Behavior log-probabilities: a discrete one in `[min_logp, 0]`, a Gaussian
/// one of `act_dim` dimensions at least `min_logp * act_dim`.
fn logp_within(values: &[f32], action_space: &Space, min_logp: f32) -> Result<(), ChunkError> {
    let (lo, hi) = match action_space {
        Space::Discrete { .. } => (min_logp, LOGP_ROUNDING),
        space => (min_logp * space.flat_dim() as f32, f32::MAX),
    };
    match values.iter().position(|&x| x < lo || x > hi) {
        Some(index) => Err(ChunkError::OutOfBounds {
            field: "behavior_logp",
            index,
            value: values[index],
            expected: if hi < f32::MAX {
                format!("values in [{lo:e}, 0] (ingest.min_behavior_logp)")
            } else {
                format!("values >= {lo:e} (ingest.min_behavior_logp x act_dim)")
            },
        }),
        None => Ok(()),
    }
}

/// Decodes 0/1 bytes.
fn flags(field: &'static str, bytes: &[u8]) -> Result<Vec<bool>, ChunkError> {
    bytes
        .iter()
        .enumerate()
        .map(|(index, &b)| match b {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(ChunkError::NotAFlag {
                field,
                index,
                value,
            }),
        })
        .collect()
}

/// Little-endian f32s; a trailing partial element is ignored.
pub(crate) fn le_f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Little-endian i64s; a trailing partial element is ignored.
pub(crate) fn le_i64s(bytes: &[u8]) -> Vec<i64> {
    bytes
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect()
}

fn put_f32s(buf: &mut Vec<u8>, values: &[f32]) {
    for v in values {
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// Appends observations packed as `dtype`.
///
/// # Panics
/// For `Uint8`, on a value that is not an integer in `0..=255`: the
/// environment declared a uint8 space and broke it.
fn put_obs(buf: &mut Vec<u8>, values: &[f32], dtype: Dtype) {
    match dtype {
        Dtype::Float32 => put_f32s(buf, values),
        Dtype::Uint8 => buf.extend(values.iter().map(|&x| {
            let b = x as u8; // saturating; checked exact below
            assert!(
                f32::from(b) == x,
                "observation {x} is not a uint8 value, but the observation space is uint8"
            );
            b
        })),
    }
}

fn put_flags(buf: &mut Vec<u8>, values: &[bool]) {
    buf.extend(values.iter().map(|&b| u8::from(b)));
}

fn f32_bytes(values: &[f32]) -> Bytes {
    let mut buf = Vec::with_capacity(values.len() * 4);
    put_f32s(&mut buf, values);
    buf.into()
}

fn i64_bytes(values: &[i64]) -> Bytes {
    let mut buf = Vec::with_capacity(values.len() * 8);
    for v in values {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.into()
}

fn flag_bytes(values: &[bool]) -> Bytes {
    let mut buf = Vec::with_capacity(values.len());
    put_flags(&mut buf, values);
    buf.into()
}

/// Packs an actor's steps into wire chunks of T steps of N environments.
///
/// ```text
/// builder.begin(envs.observations());        // once, after the VecEnv's reset
/// loop {
///     for _ in 0..T {
///         envs.step_discrete(&actions);
///         builder.push_discrete(&actions, &logp, values, &envs);
///     }
///     send(builder.finish(run_id, env_id, actor_id, sequence, version));
/// }
/// ```
///
/// Buffers are allocated once per chunk (they become the message's `Bytes`);
/// pushing a step allocates nothing except when more episodes end within one
/// chunk than the final-observation buffers have room for. After
/// [`finish`](Self::finish) the next chunk starts with the last observation row
/// of the previous one, so consecutive chunks tile the trajectory.
#[derive(Debug)]
pub struct ChunkBuilder {
    t: usize,
    n: usize,
    obs_dim: usize,
    obs_dtype: Dtype,
    action_space: Space,
    act_dim: usize,
    /// Steps pushed into the current chunk.
    steps: usize,
    /// Whether the first observation row of the current chunk is in `obs`.
    started: bool,
    /// Whether this chunk's steps carry behavior values (fixed by the first push).
    with_values: Option<bool>,
    obs: Vec<u8>,
    actions: Vec<u8>,
    rewards: Vec<u8>,
    terminated: Vec<u8>,
    truncated: Vec<u8>,
    logp: Vec<u8>,
    values: Vec<u8>,
    final_obs_index: Vec<u32>,
    final_obs: Vec<u8>,
    episode_returns: Vec<f32>,
    episode_lengths: Vec<u32>,
}

impl ChunkBuilder {
    /// A builder of chunks of `chunk_len` steps of `num_envs` environments.
    ///
    /// # Panics
    /// If `chunk_len` or `num_envs` is 0, or `chunk_len * num_envs` does not
    /// fit the wire's `u32` indices.
    pub fn new(chunk_len: usize, num_envs: usize, obs_dim: usize, action_space: Space) -> Self {
        assert!(
            chunk_len > 0 && num_envs > 0,
            "a chunk needs T >= 1 and N >= 1"
        );
        assert!(
            chunk_len
                .checked_mul(num_envs)
                .is_some_and(|tn| u32::try_from(tn).is_ok()),
            "T * N must fit in u32"
        );
        let act_dim = action_space.flat_dim();
        let (t, n, d) = (chunk_len, num_envs, obs_dim);
        let action_bytes = match action_space {
            Space::Discrete { .. } => 8,
            Space::Box { .. } => 4 * act_dim,
        };
        ChunkBuilder {
            t,
            n,
            obs_dim,
            obs_dtype: Dtype::Float32,
            action_space,
            act_dim,
            steps: 0,
            started: false,
            with_values: None,
            obs: Vec::with_capacity((t + 1) * n * d * 4),
            actions: Vec::with_capacity(t * n * action_bytes),
            rewards: Vec::with_capacity(t * n * 4),
            terminated: Vec::with_capacity(t * n),
            truncated: Vec::with_capacity(t * n),
            logp: Vec::with_capacity(t * n * 4),
            values: Vec::with_capacity(t * n * 4),
            final_obs_index: Vec::with_capacity(n),
            final_obs: Vec::with_capacity(n * d * 4),
            episode_returns: Vec::with_capacity(n),
            episode_lengths: Vec::with_capacity(n),
        }
    }

    /// Packs observations as `dtype` (the observation space's; f32 unless
    /// set). For `Uint8` every observation must be an integer in `0..=255`.
    pub fn with_obs_dtype(mut self, dtype: Dtype) -> Self {
        self.obs_dtype = dtype;
        let d = self.obs_dim * dtype.size();
        self.obs = Vec::with_capacity((self.t + 1) * self.n * d);
        self.final_obs = Vec::with_capacity(self.n * d);
        self
    }

    /// T: steps per full chunk.
    pub fn chunk_len(&self) -> usize {
        self.t
    }

    /// N: environments.
    pub fn num_envs(&self) -> usize {
        self.n
    }

    /// Steps pushed into the current chunk so far.
    pub fn steps(&self) -> usize {
        self.steps
    }

    /// Whether the current chunk holds T steps (call [`finish`](Self::finish)).
    pub fn is_full(&self) -> bool {
        self.steps == self.t
    }

    /// Starts a chunk from the observations `[N, obs_dim]` the first actions
    /// will be chosen from, discarding any steps pushed since the last finish.
    /// Needed once, after the environments' reset (and after a reset outside
    /// the chunk protocol); [`finish`](Self::finish) begins the next chunk itself.
    ///
    /// # Panics
    /// If `first_obs` is not `[N, obs_dim]`.
    pub fn begin(&mut self, first_obs: &[f32]) {
        assert_eq!(
            first_obs.len(),
            self.n * self.obs_dim,
            "observations must be [N, obs_dim]"
        );
        self.clear();
        put_obs(&mut self.obs, first_obs, self.obs_dtype);
        self.started = true;
    }

    /// Records one step taken with discrete actions (one per environment),
    /// after `envs` was stepped with them.
    ///
    /// # Panics
    /// On a Box action space, arrays that are not `[N]`, before
    /// [`begin`](Self::begin), on a full chunk, or when behavior values are
    /// given on some steps of a chunk but not on others.
    pub fn push_discrete(
        &mut self,
        actions: &[usize],
        logp: &[f32],
        value: Option<&[f32]>,
        envs: &VecEnv,
    ) {
        assert!(
            matches!(self.action_space, Space::Discrete { .. }),
            "discrete actions pushed for a Box action space"
        );
        assert_eq!(actions.len(), self.n, "one action per environment");
        self.check_step(logp, value, envs);
        for &a in actions {
            let a = i64::try_from(a).unwrap_or(i64::MAX);
            self.actions.extend_from_slice(&a.to_le_bytes());
        }
        self.record(logp, value, envs);
    }

    /// Records one step taken with continuous actions `[N, act_dim]` (as
    /// sampled, unclipped), after `envs` was stepped with them.
    ///
    /// # Panics
    /// On a Discrete action space, arrays of the wrong shape, before
    /// [`begin`](Self::begin), on a full chunk, or when behavior values are
    /// given on some steps of a chunk but not on others.
    pub fn push_continuous(
        &mut self,
        actions: &[f32],
        logp: &[f32],
        value: Option<&[f32]>,
        envs: &VecEnv,
    ) {
        assert!(
            matches!(self.action_space, Space::Box { .. }),
            "continuous actions pushed for a Discrete action space"
        );
        assert_eq!(
            actions.len(),
            self.n * self.act_dim,
            "actions must be [N, act_dim]"
        );
        self.check_step(logp, value, envs);
        put_f32s(&mut self.actions, actions);
        self.record(logp, value, envs);
    }

    /// Serializes the steps pushed so far (1..=T of them) and begins the next
    /// chunk with the current observation row.
    ///
    /// # Panics
    /// If no step was pushed.
    pub fn finish(
        &mut self,
        run_id: &str,
        env_id: &str,
        actor_id: u32,
        sequence: u64,
        policy_version: u64,
    ) -> proto::Chunk {
        assert!(self.steps > 0, "finish() needs at least one pushed step");
        let (t, n, d) = (self.t, self.n, self.obs_dim * self.obs_dtype.size());
        let row = n * d;
        let mut next_obs = Vec::with_capacity((t + 1) * row);
        next_obs.extend_from_slice(&self.obs[self.obs.len() - row..]);
        let obs = std::mem::replace(&mut self.obs, next_obs);
        let take = |buf: &mut Vec<u8>, cap: usize| -> Bytes {
            std::mem::replace(buf, Vec::with_capacity(cap)).into()
        };
        let action_cap = self.actions.capacity();
        let behavior_value = if self.with_values == Some(true) {
            take(&mut self.values, t * n * 4)
        } else {
            Bytes::new()
        };
        let chunk = proto::Chunk {
            run_id: run_id.to_owned(),
            actor_id,
            sequence,
            policy_version,
            // new() checked that T * N fits in u32
            t: self.steps as u32,
            n: n as u32,
            obs: obs.into(),
            actions: take(&mut self.actions, action_cap),
            rewards: take(&mut self.rewards, t * n * 4),
            terminated: take(&mut self.terminated, t * n),
            truncated: take(&mut self.truncated, t * n),
            behavior_logp: take(&mut self.logp, t * n * 4),
            behavior_value,
            final_obs_index: std::mem::take(&mut self.final_obs_index),
            final_obs: take(&mut self.final_obs, n * d),
            episode_returns: std::mem::take(&mut self.episode_returns),
            episode_lengths: std::mem::take(&mut self.episode_lengths),
            env_id: env_id.to_owned(),
            obs_dtype: proto::Dtype::from(self.obs_dtype).into(),
        };
        self.steps = 0;
        self.with_values = None;
        chunk
    }

    /// Empties every buffer, keeping their capacity.
    fn clear(&mut self) {
        self.steps = 0;
        self.started = false;
        self.with_values = None;
        for buf in [
            &mut self.obs,
            &mut self.actions,
            &mut self.rewards,
            &mut self.terminated,
            &mut self.truncated,
            &mut self.logp,
            &mut self.values,
            &mut self.final_obs,
        ] {
            buf.clear();
        }
        self.final_obs_index.clear();
        self.episode_returns.clear();
        self.episode_lengths.clear();
    }

    fn check_step(&mut self, logp: &[f32], value: Option<&[f32]>, envs: &VecEnv) {
        assert!(self.started, "begin() must be called before the first step");
        assert!(self.steps < self.t, "the chunk is full: call finish()");
        assert_eq!(envs.num_envs(), self.n, "VecEnv has a different N");
        assert_eq!(
            envs.obs_dim(),
            self.obs_dim,
            "VecEnv has a different obs_dim"
        );
        assert_eq!(logp.len(), self.n, "one log-probability per environment");
        if let Some(v) = value {
            assert_eq!(v.len(), self.n, "one value per environment");
        }
        let with = *self.with_values.get_or_insert(value.is_some());
        assert_eq!(
            with,
            value.is_some(),
            "behavior values must be given on every step of a chunk or on none"
        );
    }

    fn record(&mut self, logp: &[f32], value: Option<&[f32]>, envs: &VecEnv) {
        put_f32s(&mut self.logp, logp);
        if let Some(v) = value {
            put_f32s(&mut self.values, v);
        }
        put_f32s(&mut self.rewards, envs.rewards());
        put_flags(&mut self.terminated, envs.terminated());
        put_flags(&mut self.truncated, envs.truncated());
        let (ended, final_obs) = envs.final_observations();
        let base = self.steps * self.n;
        // new() checked that T * N fits in u32, and every env index is below N.
        self.final_obs_index
            .extend(ended.iter().map(|&env| (base + env) as u32));
        put_obs(&mut self.final_obs, final_obs, self.obs_dtype);
        for ep in envs.finished_episodes() {
            self.episode_returns.push(ep.ret as f32);
            self.episode_lengths.push(ep.length);
        }
        put_obs(&mut self.obs, envs.observations(), self.obs_dtype);
        self.steps += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Env, EnvSpec, Step};
    use crate::space::ActionRef;
    use proptest::prelude::*;

    /// The bound is exact for a chunk whose every varint is at its widest,
    /// across sizes whose length prefixes take 1, 2 and 3 bytes.
    #[test]
    fn max_encoded_len_is_the_widest_encoding() {
        let spaces = [Space::Discrete { n: 3 }, Space::uniform_box(-1.0, 1.0, 2)];
        for space in &spaces {
            for (t, n, d, k, values, dtype) in [
                (1, 1, 1, 0, false, Dtype::Float32),
                (64, 8, 4, 8, true, Dtype::Float32),
                (128, 16, 17, 300, false, Dtype::Float32),
                (5, 3, 2000, 2, true, Dtype::Float32),
                (1, 1, 1, 0, false, Dtype::Uint8),
                (32, 8, 4 * 84 * 84, 8, true, Dtype::Uint8),
            ] {
                let shape = ChunkShape {
                    chunk_len: t,
                    num_envs: n,
                    obs_dim: d,
                    obs_dtype: dtype,
                    action_space: space,
                    behavior_values: values,
                    episodes: k,
                    run_id_len: 36,
                    env_id_len: 11,
                };
                let action_bytes = 8; // one i64, or two f32
                let zeros = |len: usize| Bytes::from(vec![0u8; len]);
                let widest = proto::Chunk {
                    run_id: "r".repeat(36),
                    actor_id: u32::MAX,
                    sequence: u64::MAX,
                    policy_version: u64::MAX,
                    t: u32::MAX,
                    n: u32::MAX,
                    obs: zeros((t + 1) * n * d * dtype.size()),
                    actions: zeros(t * n * action_bytes),
                    rewards: zeros(t * n * 4),
                    terminated: zeros(t * n),
                    truncated: zeros(t * n),
                    behavior_logp: zeros(t * n * 4),
                    behavior_value: zeros(if values { t * n * 4 } else { 0 }),
                    final_obs_index: vec![u32::MAX; k],
                    final_obs: zeros(k * d * dtype.size()),
                    episode_returns: vec![1.0; k],
                    episode_lengths: vec![u32::MAX; k],
                    env_id: "e".repeat(11),
                    obs_dtype: proto::Dtype::from(dtype).into(),
                };
                let exact = prost::Message::encoded_len(&widest) as u64;
                assert_eq!(max_encoded_len(&shape), exact, "{shape:?}");
                let small = proto::Chunk {
                    actor_id: 1,
                    sequence: 1,
                    policy_version: 0,
                    t: t as u32,
                    n: n as u32,
                    final_obs_index: vec![0; k],
                    episode_lengths: vec![1; k],
                    ..widest
                };
                assert!(prost::Message::encoded_len(&small) as u64 <= exact);
            }
        }
    }

    /// A tiny deterministic environment whose episodes last 1 to 4 steps and
    /// end terminated, truncated, or both. Observations are
    /// `[step, limit, action, kind]`.
    struct Toy {
        obs_space: Space,
        act_space: Space,
        state: u64,
        step: u32,
        limit: u32,
    }

    impl Toy {
        fn new(act_space: Space) -> Self {
            Toy {
                obs_space: Space::uniform_box(-100.0, 100.0, 4),
                act_space,
                state: 1,
                step: 0,
                limit: 1,
            }
        }

        fn kind(&self) -> u64 {
            (self.state >> 8) % 3
        }
    }

    impl Env for Toy {
        fn id(&self) -> &'static str {
            "Toy-v0"
        }
        fn observation_space(&self) -> &Space {
            &self.obs_space
        }
        fn action_space(&self) -> &Space {
            &self.act_space
        }
        fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
            if let Some(s) = seed {
                self.state = s.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            }
            // xorshift64
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            self.step = 0;
            self.limit = 1 + (self.state % 4) as u32;
            obs.copy_from_slice(&[0.0, self.limit as f32, 0.0, self.kind() as f32]);
        }
        fn step(&mut self, action: ActionRef<'_>, obs: &mut [f32]) -> Step {
            let a = match action {
                ActionRef::Discrete(a) => a as f32,
                ActionRef::Continuous(v) => v.iter().sum(),
            };
            self.step += 1;
            let done = self.step >= self.limit;
            obs.copy_from_slice(&[self.step as f32, self.limit as f32, a, self.kind() as f32]);
            Step {
                reward: 0.5 * a + self.step as f32,
                terminated: done && self.kind() != 1,
                truncated: done && self.kind() != 0,
            }
        }
    }

    const D: usize = 4;

    fn discrete() -> Space {
        Space::Discrete { n: 3 }
    }

    fn boxed() -> Space {
        Space::uniform_box(-1.0, 1.0, 2)
    }

    fn f32s_mut(o: &mut Observations) -> &mut Vec<f32> {
        match o {
            Observations::F32(v) => v,
            Observations::U8(_) => panic!("f32 observations expected"),
        }
    }

    fn toys(space: &Space, n: usize, seed: u64) -> VecEnv {
        let envs = (0..n)
            .map(|_| Box::new(Toy::new(space.clone())) as Box<dyn Env>)
            .collect();
        VecEnv::from_envs(envs, seed)
    }

    fn expectations(space: Space, t: usize, n: usize, values: bool) -> ChunkExpectations {
        ChunkExpectations {
            run_id: "run-a".into(),
            env_id: "Toy-v0".into(),
            obs_dim: D,
            obs_dtype: Dtype::Float32,
            action_space: space,
            chunk_len: t,
            max_envs: n,
            max_bytes: 1 << 20,
            newest_version: 5,
            require_behavior_value: values,
            bounds: ValueBounds::unbounded(),
        }
    }

    /// A simple deterministic stream of numbers for actions and log-probs.
    fn noise(seed: u64, i: usize) -> f32 {
        let x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add((i as u64).wrapping_mul(1442695040888963407));
        ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// Plays `chunks` chunks of `t` steps through a builder, recording the
    /// expected domain chunks independently of the builder.
    fn play(
        space: &Space,
        t: usize,
        n: usize,
        seed: u64,
        values: bool,
        chunks: usize,
    ) -> Vec<(proto::Chunk, Chunk)> {
        let mut envs = toys(space, n, seed);
        let mut b = ChunkBuilder::new(t, n, D, space.clone());
        b.begin(envs.observations());
        let mut out = Vec::new();
        let mut step = 0;
        for c in 0..chunks {
            let mut exp = Chunk {
                run_id: "run-a".into(),
                env_id: "Toy-v0".into(),
                actor_id: 7,
                sequence: c as u64 + 1,
                policy_version: 3,
                t,
                n,
                obs: envs.observations().to_vec().into(),
                actions: match space {
                    Space::Discrete { .. } => Actions::Discrete(vec![]),
                    Space::Box { .. } => Actions::Continuous(vec![]),
                },
                rewards: vec![],
                terminated: vec![],
                truncated: vec![],
                behavior_logp: vec![],
                behavior_value: values.then(Vec::new),
                final_obs_index: vec![],
                final_obs: Vec::<f32>::new().into(),
                episode_returns: vec![],
                episode_lengths: vec![],
            };
            for s in 0..t {
                step += 1;
                let logp: Vec<f32> = (0..n).map(|i| -noise(seed, step * 31 + i).abs()).collect();
                let value: Vec<f32> = (0..n).map(|i| noise(seed ^ 1, step * 31 + i)).collect();
                let value = values.then_some(&value[..]);
                match (space, &mut exp.actions) {
                    (Space::Discrete { n: k }, Actions::Discrete(acts)) => {
                        let a: Vec<usize> = (0..n).map(|i| (step + i) % k).collect();
                        envs.step_discrete(&a);
                        b.push_discrete(&a, &logp, value, &envs);
                        acts.extend(a.iter().map(|&x| x as i64));
                    }
                    (_, Actions::Continuous(acts)) => {
                        // unclipped samples, partly outside the [-1, 1] box
                        let a: Vec<f32> = (0..n * 2)
                            .map(|i| 3.0 * noise(seed, step * 17 + i))
                            .collect();
                        envs.step_continuous(&a);
                        b.push_continuous(&a, &logp, value, &envs);
                        acts.extend_from_slice(&a);
                    }
                    _ => unreachable!(),
                }
                exp.rewards.extend_from_slice(envs.rewards());
                exp.terminated.extend_from_slice(envs.terminated());
                exp.truncated.extend_from_slice(envs.truncated());
                exp.behavior_logp.extend_from_slice(&logp);
                if let (Some(v), Some(e)) = (value, exp.behavior_value.as_mut()) {
                    e.extend_from_slice(v);
                }
                let (ended, fin) = envs.final_observations();
                exp.final_obs_index.extend(ended.iter().map(|&e| s * n + e));
                f32s_mut(&mut exp.final_obs).extend_from_slice(fin);
                for ep in envs.finished_episodes() {
                    exp.episode_returns.push(ep.ret as f32);
                    exp.episode_lengths.push(ep.length);
                }
                f32s_mut(&mut exp.obs).extend_from_slice(envs.observations());
            }
            assert!(b.is_full());
            out.push((b.finish("run-a", "Toy-v0", 7, c as u64 + 1, 3), exp));
        }
        out
    }

    fn good(space: Space, t: usize, n: usize, values: bool) -> (proto::Chunk, ChunkExpectations) {
        let (p, _) = play(&space, t, n, 42, values, 1).remove(0);
        (p, expectations(space, t, n, values))
    }

    fn err(p: proto::Chunk, exp: &ChunkExpectations) -> ChunkError {
        match validate(p, exp) {
            Ok(_) => panic!("expected a rejection"),
            Err(e) => e,
        }
    }

    /// Asserts the error's field, reason and that its message names the field.
    fn assert_rejects(
        p: proto::Chunk,
        exp: &ChunkExpectations,
        field: &str,
        reason: &str,
    ) -> String {
        let e = err(p, exp);
        let msg = e.to_string();
        assert_eq!(e.field(), field, "{msg}");
        assert_eq!(e.reason(), reason, "{msg}");
        if field != "chunk" {
            assert!(msg.starts_with(&format!("field `{field}`: ")), "{msg}");
        }
        msg
    }

    fn set_f32(b: &Bytes, index: usize, v: f32) -> Bytes {
        let mut v8 = b.to_vec();
        v8[index * 4..index * 4 + 4].copy_from_slice(&v.to_le_bytes());
        v8.into()
    }

    fn set_byte(b: &Bytes, index: usize, v: u8) -> Bytes {
        let mut v8 = b.to_vec();
        v8[index] = v;
        v8.into()
    }

    // ---- round trips ----

    #[test]
    fn discrete_round_trip_gives_back_every_value() {
        let exp = expectations(discrete(), 6, 3, false);
        let chunks = play(&discrete(), 6, 3, 9, false, 3);
        let mut total_episodes = 0;
        for (i, (p, want)) in chunks.iter().enumerate() {
            assert_eq!(p.behavior_value.len(), 0);
            let got = validate(p.clone(), &exp).unwrap();
            assert_eq!(&got, want);
            assert_eq!(got.to_proto(), *p, "to_proto is the exact inverse");
            assert_eq!((got.t, got.n, got.obs_dim(), got.act_dim()), (6, 3, D, 1));
            assert_eq!(got.num_samples(), 18);
            total_episodes += got.episode_returns.len();
            for (k, &pos) in got.final_obs_index.iter().enumerate() {
                assert!(got.done(pos));
                // the final observation is the episode's last; obs[t+1] is the next's first
                let (s, e) = (pos / 3, pos % 3);
                let fin = &got.final_obs.as_f32().unwrap()[k * D..(k + 1) * D];
                let next =
                    &got.obs.as_f32().unwrap()[((s + 1) * 3 + e) * D..((s + 1) * 3 + e + 1) * D];
                assert_eq!(fin[0], fin[1], "the final observation has step == limit");
                assert_eq!(next[0], 0.0, "the next row starts a new episode");
            }
            if i > 0 {
                // consecutive chunks share the boundary observation row
                let prev = chunks[i - 1].1.obs.as_f32().unwrap();
                let got = got.obs.as_f32().unwrap();
                assert_eq!(&got[..3 * D], &prev[prev.len() - 3 * D..]);
            }
        }
        assert!(total_episodes > 5, "the toy env ends episodes often");
    }

    #[test]
    fn continuous_round_trip_with_values_keeps_unclipped_actions() {
        let exp = expectations(boxed(), 5, 2, true);
        for (p, want) in play(&boxed(), 5, 2, 3, true, 2) {
            let got = validate(p.clone(), &exp).unwrap();
            assert_eq!(got, want);
            assert_eq!(got.act_dim(), 2);
            assert!(got.behavior_value.as_ref().is_some_and(|v| v.len() == 10));
            let Actions::Continuous(a) = &got.actions else {
                panic!("continuous actions expected")
            };
            assert!(
                a.iter().any(|x| x.abs() > 1.0),
                "out-of-bounds samples are kept"
            );
            assert_eq!(got.to_proto(), p);
        }
    }

    #[test]
    fn optional_values_may_be_sent_anyway() {
        let (p, _) = good(discrete(), 4, 2, true);
        let exp = expectations(discrete(), 4, 2, false);
        assert!(validate(p, &exp).unwrap().behavior_value.is_some());
    }

    #[test]
    fn a_short_final_chunk_is_valid() {
        let space = discrete();
        let mut envs = toys(&space, 2, 1);
        let mut b = ChunkBuilder::new(8, 2, D, space.clone());
        b.begin(envs.observations());
        for _ in 0..3 {
            envs.step_discrete(&[1, 2]);
            b.push_discrete(&[1, 2], &[-0.5, -0.6], None, &envs);
        }
        assert_eq!((b.steps(), b.is_full()), (3, false));
        let p = b.finish("run-a", "Toy-v0", 1, 1, 0);
        let c = validate(p, &expectations(space, 8, 2, false)).unwrap();
        assert_eq!((c.t, c.n, c.obs.len()), (3, 2, 4 * 2 * D));
        assert_eq!(b.steps(), 0);
    }

    #[test]
    fn pushing_steps_does_not_reallocate_the_step_buffers() {
        let space = boxed();
        let mut envs = toys(&space, 3, 5);
        let mut b = ChunkBuilder::new(16, 3, D, space);
        for round in 0..2 {
            if round == 0 {
                b.begin(envs.observations());
            }
            let ptrs = |b: &ChunkBuilder| {
                [
                    b.obs.as_ptr(),
                    b.actions.as_ptr(),
                    b.rewards.as_ptr(),
                    b.logp.as_ptr(),
                ]
            };
            let before = ptrs(&b);
            for _ in 0..16 {
                let a = [0.1f32; 6];
                envs.step_continuous(&a);
                b.push_continuous(&a, &[0.0; 3], None, &envs);
            }
            assert_eq!(before, ptrs(&b));
            b.finish("r", "e", 0, 0, 0);
        }
    }

    #[test]
    fn cartpole_round_trip() {
        let spec = EnvSpec::new("CartPole-v1");
        assert_eq!(spec.make().unwrap().observation_space().flat_dim(), 4);
        let mut envs = VecEnv::new(&spec, 2, 3).unwrap();
        let mut b = ChunkBuilder::new(64, 2, 4, Space::Discrete { n: 2 });
        b.begin(envs.observations());
        for s in 0..64 {
            let a = [s % 2, 1];
            envs.step_discrete(&a);
            b.push_discrete(&a, &[-0.69; 2], Some(&[1.0, 2.0]), &envs);
        }
        let p = b.finish("run", "CartPole-v1", 1, 1, 0);
        let mut exp = expectations(Space::Discrete { n: 2 }, 64, 2, true);
        exp.run_id = "run".into();
        exp.env_id = "CartPole-v1".into();
        let c = validate(p.clone(), &exp).unwrap();
        assert!(
            !c.episode_returns.is_empty(),
            "pushing right topples the pole"
        );
        assert_eq!(c.to_proto(), p);
    }

    // ---- one test per rule ----

    #[test]
    fn too_large() {
        let (p, mut exp) = good(discrete(), 4, 2, false);
        exp.max_bytes = 100;
        let msg = assert_rejects(p, &exp, "chunk", "too_large");
        assert!(msg.contains("expected at most 100 bytes"), "{msg}");
    }

    #[test]
    fn wrong_run_id_and_env_id() {
        let (mut p, exp) = good(discrete(), 4, 2, false);
        p.run_id = "run-b".into();
        let msg = assert_rejects(p, &exp, "run_id", "wrong_run");
        assert_eq!(msg, r#"field `run_id`: expected "run-a", got "run-b""#);
        let (mut p, exp) = good(discrete(), 4, 2, false);
        p.env_id = "x".repeat(10_000);
        let msg = assert_rejects(p, &exp, "env_id", "wrong_run");
        assert!(msg.len() < 200, "wire strings are clipped: {msg}");
    }

    #[test]
    fn future_policy_version() {
        let (mut p, exp) = good(discrete(), 4, 2, false);
        p.policy_version = 6;
        let msg = assert_rejects(p, &exp, "policy_version", "future_version");
        assert!(msg.contains("at most 5") && msg.ends_with("got 6"), "{msg}");
        let (mut p, exp) = good(discrete(), 4, 2, false);
        p.policy_version = 5;
        validate(p, &exp).unwrap();
    }

    #[test]
    fn t_and_n_ranges() {
        for (t, n, field) in [
            (0, 2, "t"),
            (5, 2, "t"),
            (u32::MAX, 2, "t"),
            (4, 0, "n"),
            (4, 3, "n"),
        ] {
            let (mut p, exp) = good(discrete(), 4, 2, false);
            p.t = t;
            p.n = n;
            let msg = assert_rejects(p, &exp, field, "invalid");
            assert!(msg.contains("expected 1..="), "{msg}");
        }
    }

    #[test]
    fn obs_size_message_has_the_shape_formula() {
        let (mut p, exp) = good(discrete(), 32, 2, false);
        p.obs = p.obs.slice(..1000);
        let msg = assert_rejects(p, &exp, "obs", "invalid");
        assert_eq!(
            msg,
            "field `obs`: expected 1056 bytes (f32 [T+1=33, N=2, obs_dim=4]), got 1000"
        );
    }

    #[test]
    fn array_sizes() {
        type Cut = fn(&mut proto::Chunk);
        let cases: [(&str, Cut, &str); 7] = [
            (
                "actions",
                |p| p.actions = p.actions.slice(8..),
                "i64 [T=4, N=2]",
            ),
            (
                "rewards",
                |p| p.rewards = p.rewards.slice(1..),
                "f32 [T=4, N=2]",
            ),
            (
                "terminated",
                |p| p.terminated = Bytes::new(),
                "u8 [T=4, N=2]",
            ),
            (
                "truncated",
                |p| p.truncated = Bytes::from(vec![0u8; 9]),
                "u8 [T=4, N=2]",
            ),
            (
                "behavior_logp",
                |p| p.behavior_logp = Bytes::new(),
                "f32 [T=4, N=2]",
            ),
            (
                "final_obs",
                |p| p.final_obs = p.final_obs.slice(4..),
                "f32 [K=",
            ),
            (
                "behavior_value",
                |p| p.behavior_value = Bytes::from(vec![0u8; 4]),
                "or empty",
            ),
        ];
        for (field, cut, shape) in cases {
            let (mut p, exp) = good(discrete(), 4, 2, false);
            cut(&mut p);
            let msg = assert_rejects(p, &exp, field, "invalid");
            assert!(msg.contains(shape), "{msg}");
        }
        let (mut p, exp) = good(boxed(), 4, 2, false);
        p.actions = p.actions.slice(4..);
        let msg = assert_rejects(p, &exp, "actions", "invalid");
        assert!(
            msg.contains("expected 64 bytes (f32 [T=4, N=2, act_dim=2]), got 60"),
            "{msg}"
        );
    }

    #[test]
    fn required_behavior_values() {
        let (p, exp) = good(discrete(), 4, 2, true);
        validate(p.clone(), &exp).unwrap();
        let mut p = p;
        p.behavior_value = Bytes::new();
        let msg = assert_rejects(p, &exp, "behavior_value", "invalid");
        assert!(
            msg.contains("expected 32 bytes (f32 [T=4, N=2], required by the run), got 0"),
            "{msg}"
        );
    }

    #[test]
    fn non_finite_floats() {
        type Corrupt = fn(&mut proto::Chunk);
        let cases: [(&str, Corrupt); 7] = [
            ("obs", |p| p.obs = set_f32(&p.obs, 5, f32::NAN)),
            ("rewards", |p| {
                p.rewards = set_f32(&p.rewards, 5, f32::INFINITY)
            }),
            ("behavior_logp", |p| {
                p.behavior_logp = set_f32(&p.behavior_logp, 5, f32::NEG_INFINITY)
            }),
            ("behavior_value", |p| {
                p.behavior_value = set_f32(&p.behavior_value, 5, f32::NAN)
            }),
            ("final_obs", |p| {
                p.final_obs = set_f32(&p.final_obs, 5, f32::NAN)
            }),
            ("episode_returns", |p| p.episode_returns[1] = f32::NAN),
            ("actions", |p| {
                p.actions = set_f32(&p.actions, 5, f32::INFINITY)
            }),
        ];
        for (field, corrupt) in cases {
            let (mut p, exp) = good(boxed(), 4, 3, true);
            assert!(p.episode_returns.len() >= 2);
            corrupt(&mut p);
            let msg = assert_rejects(p, &exp, field, "invalid");
            let index = if field == "episode_returns" { 1 } else { 5 };
            assert!(msg.contains("expected finite values, got"), "{msg}");
            assert!(msg.ends_with(&format!("at index {index}")), "{msg}");
        }
    }

    /// Bounds every honest toy chunk passes: obs in [-10, 10]^4 (the toy's
    /// obs are small counts), |reward| <= 10, |value| <= 100, |action| <= 5,
    /// log-probs >= -2 per dimension.
    fn tight(space: Space, values: bool) -> ChunkExpectations {
        ChunkExpectations {
            bounds: ValueBounds {
                max_abs_observation: 10.0,
                observation_low: vec![-10.0; D],
                observation_high: vec![10.0; D],
                max_abs_reward: 10.0,
                max_abs_value: 100.0,
                max_abs_action: 5.0,
                min_logp: -2.0,
            },
            ..expectations(space, 4, 3, values)
        }
    }

    #[test]
    fn values_outside_the_bounds_are_out_of_bounds() {
        type Corrupt = fn(&mut proto::Chunk);
        let cases: [(&str, f32, Corrupt); 9] = [
            ("obs", 1e35, |p| p.obs = set_f32(&p.obs, 5, 1e35)),
            ("obs", -11.0, |p| p.obs = set_f32(&p.obs, 5, -11.0)),
            ("rewards", 3e38, |p| {
                p.rewards = set_f32(&p.rewards, 5, 3e38)
            }),
            ("behavior_logp", -1e30, |p| {
                p.behavior_logp = set_f32(&p.behavior_logp, 5, -1e30)
            }),
            ("behavior_value", -1e4, |p| {
                p.behavior_value = set_f32(&p.behavior_value, 5, -1e4)
            }),
            ("final_obs", 20.0, |p| {
                p.final_obs = set_f32(&p.final_obs, 5, 20.0)
            }),
            ("actions", 6.0, |p| p.actions = set_f32(&p.actions, 5, 6.0)),
            ("actions", -6.0, |p| {
                p.actions = set_f32(&p.actions, 5, -6.0)
            }),
            ("episode_returns", 1e9, |p| p.episode_returns[1] = 1e9),
        ];
        let honest = good(boxed(), 4, 3, true).0;
        validate(honest.clone(), &tight(boxed(), true)).expect("the honest chunk passes");
        for (field, value, corrupt) in cases {
            let mut p = honest.clone();
            corrupt(&mut p);
            // Finiteness alone lets it through; the bounds do not.
            validate(p.clone(), &expectations(boxed(), 4, 3, true)).expect("finite");
            let msg = assert_rejects(p, &tight(boxed(), true), field, "out_of_bounds");
            let index = if field == "episode_returns" { 1 } else { 5 };
            assert!(
                msg.ends_with(&format!("got {value:e} at index {index}")),
                "{msg}"
            );
        }
    }

    #[test]
    fn discrete_log_probs_lie_in_min_logp_to_0_and_gaussian_ones_scale_with_dims() {
        let (p, _) = good(discrete(), 4, 3, false);
        let exp = tight(discrete(), false);
        // The toy's noise makes log-probs in [-1, 1]: put honest ones in.
        let honest = |p: &proto::Chunk, v: f32| {
            let mut p = p.clone();
            p.behavior_logp = f32_bytes(&[v; 12]);
            p
        };
        validate(honest(&p, -1.5), &exp).unwrap();
        validate(honest(&p, 0.0), &exp).unwrap();
        validate(honest(&p, LOGP_ROUNDING), &exp).unwrap();
        let msg = assert_rejects(honest(&p, 0.01), &exp, "behavior_logp", "out_of_bounds");
        assert!(msg.contains("expected values in [-2e0, 0]"), "{msg}");
        assert_rejects(honest(&p, -2.5), &exp, "behavior_logp", "out_of_bounds");
        // Two Gaussian dimensions: the floor is -4, and positive densities pass.
        let (p, _) = good(boxed(), 4, 3, false);
        let exp = tight(boxed(), false);
        validate(honest(&p, -3.5), &exp).unwrap();
        validate(honest(&p, 7.0), &exp).unwrap();
        assert_rejects(honest(&p, -4.5), &exp, "behavior_logp", "out_of_bounds");
    }

    #[test]
    fn only_finite_observation_space_bounds_are_checked() {
        let (mut p, _) = good(discrete(), 4, 3, false);
        p.behavior_logp = f32_bytes(&[-0.5; 12]);
        let mut exp = tight(discrete(), false);
        exp.bounds.observation_low = vec![f32::NEG_INFINITY, -1.0, -10.0, -10.0];
        exp.bounds.observation_high = vec![f32::INFINITY, 0.5, 10.0, 10.0];
        // Dimension 1 is the toy's episode limit (1..=4): above its bound 0.5.
        let e = err(p.clone(), &exp);
        assert!(e.to_string().contains("dimension 1"), "{e}");
        exp.bounds.observation_high = vec![f32::INFINITY, 4.0, 2.0, 2.0];
        validate(p, &exp).unwrap();
    }

    /// Every shipped environment, driven by random actions for thousands of
    /// steps, stays inside the default bounds (its own observation space among
    /// them): the defaults refuse nothing an honest actor sends.
    #[test]
    fn shipped_environments_pass_the_default_bounds() {
        use crate::env::EnvSpec;
        let (t, n) = (64, 4);
        for (id, config) in [
            ("CartPole-v1", ""),
            ("Acrobot-v1", ""),
            ("MountainCar-v0", ""),
            ("Pendulum-v1", ""),
            ("Maze-v0", ""),
            ("Maze-v0", "observation = \"image\""),
            ("TextMatch-v0", ""),
        ] {
            let spec = EnvSpec::from_parts(id, config).unwrap();
            let mut envs = VecEnv::new(&spec, n, 3).unwrap();
            let (obs_space, act_space) = (
                envs.observation_space().clone(),
                envs.action_space().clone(),
            );
            let exp = ChunkExpectations {
                run_id: "run".into(),
                env_id: id.into(),
                obs_dim: envs.obs_dim(),
                obs_dtype: obs_space.dtype(),
                action_space: act_space.clone(),
                chunk_len: t,
                max_envs: n,
                max_bytes: 1 << 24,
                newest_version: 0,
                require_behavior_value: false,
                bounds: ValueBounds::defaults(&obs_space),
            };
            let mut b = ChunkBuilder::new(t, n, envs.obs_dim(), act_space.clone())
                .with_obs_dtype(obs_space.dtype());
            b.begin(envs.observations());
            let mut i = 0;
            for c in 0..40 {
                for _ in 0..t {
                    i += 1;
                    match &act_space {
                        Space::Discrete { n: k } => {
                            let a: Vec<usize> = (0..n)
                                .map(|e| (noise(c, i * n + e).abs() * *k as f32) as usize % k)
                                .collect();
                            envs.step_discrete(&a);
                            let logp = vec![-(*k as f32).ln(); n];
                            b.push_discrete(&a, &logp, None, &envs);
                        }
                        space => {
                            let d = space.flat_dim();
                            // Gaussian samples with std 1 around 0, unclipped.
                            let a: Vec<f32> =
                                (0..n * d).map(|j| 3.0 * noise(c, i * n * d + j)).collect();
                            envs.step_continuous(&a);
                            b.push_continuous(&a, &vec![-2.0 * d as f32; n], None, &envs);
                        }
                    }
                }
                let p = b.finish("run", id, 1, c + 1, 0);
                if let Err(e) = validate(p, &exp) {
                    panic!("{id}: chunk {c}: {e}");
                }
            }
        }
    }

    /// Plays `chunks` chunks of the maze drawn as pixels, packing the same
    /// steps as f32 and as u8 chunks.
    fn pixel_chunks(t: usize, n: usize, chunks: usize) -> Vec<(proto::Chunk, proto::Chunk)> {
        use crate::env::EnvSpec;
        let spec = EnvSpec::from_parts("Maze-v0", "observation = \"image\"").unwrap();
        let mut envs = VecEnv::new(&spec, n, 5).unwrap();
        let (d, act) = (envs.obs_dim(), envs.action_space().clone());
        let mut f = ChunkBuilder::new(t, n, d, act.clone());
        let mut u = ChunkBuilder::new(t, n, d, act).with_obs_dtype(Dtype::Uint8);
        f.begin(envs.observations());
        u.begin(envs.observations());
        (0..chunks as u64)
            .map(|c| {
                for s in 0..t {
                    let a: Vec<usize> = (0..n).map(|e| (s * 7 + e * 3 + c as usize) % 4).collect();
                    envs.step_discrete(&a);
                    f.push_discrete(&a, &vec![-1.0; n], None, &envs);
                    u.push_discrete(&a, &vec![-1.0; n], None, &envs);
                }
                (
                    f.finish("run-a", "Maze-v0", 7, c + 1, 3),
                    u.finish("run-a", "Maze-v0", 7, c + 1, 3),
                )
            })
            .collect()
    }

    fn pixel_expectations(dtype: Dtype, t: usize, n: usize) -> ChunkExpectations {
        let space = Space::pixels(vec![3, 17, 17]);
        ChunkExpectations {
            run_id: "run-a".into(),
            env_id: "Maze-v0".into(),
            obs_dim: space.flat_dim(),
            obs_dtype: dtype,
            action_space: Space::Discrete { n: 4 },
            chunk_len: t,
            max_envs: n,
            max_bytes: 1 << 24,
            newest_version: 5,
            require_behavior_value: false,
            bounds: ValueBounds::defaults(&space),
        }
    }

    #[test]
    fn pixel_chunks_travel_as_bytes_with_the_same_values() {
        let (t, n) = (32, 3);
        let (d, rows) = (3 * 17 * 17, (t + 1) * n);
        let mut episodes = 0;
        // 9 chunks of 32 steps pass the 8x8 maze's time limit of 256 steps
        for (f, u) in pixel_chunks(t, n, 9) {
            assert_eq!(f.obs.len(), rows * d * 4);
            assert_eq!(u.obs.len(), rows * d, "one byte per value");
            assert_eq!(u.obs_dtype, proto::Dtype::Uint8 as i32);
            assert_eq!(u.final_obs.len() * 4, f.final_obs.len());
            let (fv, uv) = (
                validate(f, &pixel_expectations(Dtype::Float32, t, n)).unwrap(),
                validate(u.clone(), &pixel_expectations(Dtype::Uint8, t, n)).unwrap(),
            );
            assert_eq!(uv.obs.dtype(), Dtype::Uint8);
            assert_eq!(uv.obs.f32s(0..rows * d), fv.obs.f32s(0..rows * d));
            let k = fv.final_obs.len();
            assert_eq!(uv.final_obs.f32s(0..k), fv.final_obs.f32s(0..k));
            assert_eq!(uv.obs_dim(), d);
            assert_eq!(uv.to_proto(), u, "to_proto is the exact inverse");
            // the pixels are the drawing's 0/255, walls and agent included
            let px = uv.obs.f32s(0..rows * d);
            assert!(px.iter().all(|&x| x == 0.0 || x == 255.0));
            assert!(px.iter().filter(|&&x| x == 255.0).count() > rows * 17);
            episodes += uv.final_obs_index.len();
        }
        assert!(
            episodes >= n,
            "every env's first episode ended, with its final observation"
        );
    }

    #[test]
    fn the_observation_dtype_must_be_the_runs() {
        let (t, n) = (4, 2);
        let (f, u) = pixel_chunks(t, n, 1).remove(0);
        let msg = assert_rejects(
            f,
            &pixel_expectations(Dtype::Uint8, t, n),
            "obs_dtype",
            "invalid",
        );
        assert_eq!(
            msg,
            "field `obs_dtype`: expected uint8 (the run's observation space), got float32"
        );
        let msg = assert_rejects(
            u.clone(),
            &pixel_expectations(Dtype::Float32, t, n),
            "obs_dtype",
            "invalid",
        );
        assert!(msg.ends_with("expected float32 (the run's observation space), got uint8"));
        let unknown = proto::Chunk {
            obs_dtype: 9,
            ..u.clone()
        };
        let msg = assert_rejects(
            unknown,
            &pixel_expectations(Dtype::Uint8, t, n),
            "obs_dtype",
            "invalid",
        );
        assert!(msg.ends_with("got unknown dtype 9"), "{msg}");
        // f32-sized bytes under a uint8 dtype: a size error in u8 terms
        let widened = proto::Chunk {
            obs: Bytes::from(vec![0u8; u.obs.len() * 4]),
            ..u.clone()
        };
        let msg = assert_rejects(
            widened,
            &pixel_expectations(Dtype::Uint8, t, n),
            "obs",
            "invalid",
        );
        assert!(msg.contains("u8 [T+1=5, N=2, obs_dim=867]"), "{msg}");
        let short = proto::Chunk {
            final_obs: Bytes::from(vec![0u8; 867 + 1]),
            final_obs_index: vec![0],
            terminated: set_byte(&u.terminated, 0, 1),
            episode_returns: vec![1.0],
            episode_lengths: vec![1],
            ..u
        };
        let msg = assert_rejects(
            short,
            &pixel_expectations(Dtype::Uint8, t, n),
            "final_obs",
            "invalid",
        );
        assert!(msg.contains("u8 [K=1, obs_dim=867]"), "{msg}");
    }

    #[test]
    fn pixel_bounds_tighter_than_a_byte_are_checked() {
        let (t, n) = (4, 2);
        let (_, u) = pixel_chunks(t, n, 1).remove(0);
        let mut exp = pixel_expectations(Dtype::Uint8, t, n);
        validate(u.clone(), &exp).unwrap();
        // a space of 0/1 pixels refuses the drawing's 255s
        exp.bounds.observation_high = vec![1.0; 867];
        let e = err(u.clone(), &exp);
        assert_eq!(e.field(), "obs");
        assert!(e.to_string().contains("[0, 1]"), "{e}");
        let mut exp = pixel_expectations(Dtype::Uint8, t, n);
        exp.bounds.max_abs_observation = 100.0;
        let e = err(u, &exp);
        assert!(e.to_string().contains("ingest.max_abs_observation"), "{e}");
    }

    #[test]
    #[should_panic(expected = "not a uint8 value")]
    fn a_uint8_builder_refuses_observations_that_are_no_bytes() {
        let mut b =
            ChunkBuilder::new(2, 1, 2, Space::Discrete { n: 2 }).with_obs_dtype(Dtype::Uint8);
        b.begin(&[3.0, 255.5]);
    }

    #[test]
    fn discrete_actions_in_range() {
        for bad in [3i64, -1, i64::MIN, i64::MAX] {
            let (mut p, exp) = good(discrete(), 4, 2, false);
            let mut a = p.actions.to_vec();
            a[16..24].copy_from_slice(&bad.to_le_bytes());
            p.actions = a.into();
            let msg = assert_rejects(p, &exp, "actions", "invalid");
            assert_eq!(
                msg,
                format!("field `actions`: expected values in 0..3, got {bad} at index 2")
            );
        }
    }

    #[test]
    fn done_flags_are_0_or_1() {
        let (mut p, exp) = good(discrete(), 4, 2, false);
        p.terminated = set_byte(&p.terminated, 3, 2);
        let msg = assert_rejects(p, &exp, "terminated", "invalid");
        assert_eq!(msg, "field `terminated`: expected 0 or 1, got 2 at index 3");
        let (mut p, exp) = good(discrete(), 4, 2, false);
        p.truncated = set_byte(&p.truncated, 0, 255);
        assert_rejects(p, &exp, "truncated", "invalid");
    }

    #[test]
    fn final_obs_index_rules() {
        let (p, exp) = good(discrete(), 4, 3, false);
        assert!(p.final_obs_index.len() >= 2, "{:?}", p.final_obs_index);

        // out of range
        let mut q = p.clone();
        q.final_obs_index.push(12);
        let msg = assert_rejects(q, &exp, "final_obs_index", "invalid");
        assert!(
            msg.contains("entries below T*N = 12, got 12 at index"),
            "{msg}"
        );

        // not strictly increasing
        let mut q = p.clone();
        q.final_obs_index.swap(0, 1);
        let msg = assert_rejects(q, &exp, "final_obs_index", "invalid");
        assert!(msg.contains("strictly increasing"), "{msg}");
        let mut q = p.clone();
        q.final_obs_index.insert(1, q.final_obs_index[0]);
        assert_rejects(q, &exp, "final_obs_index", "invalid");

        // a done flag without its final observation
        let mut q = p.clone();
        let free = (0..12)
            .find(|&i| q.terminated[i] == 0 && q.truncated[i] == 0)
            .unwrap();
        q.truncated = set_byte(&q.truncated, free, 1);
        let msg = assert_rejects(q, &exp, "final_obs_index", "invalid");
        assert!(
            msg.contains(&format!(
                "an entry for position {free} (t={}, n={})",
                free / 3,
                free % 3
            )),
            "{msg}"
        );
        assert!(msg.contains("`truncated` is 1"), "{msg}");

        // an entry where no episode ended
        let mut q = p.clone();
        let pos = q.final_obs_index[0] as usize;
        q.terminated = set_byte(&q.terminated, pos, 0);
        q.truncated = set_byte(&q.truncated, pos, 0);
        let msg = assert_rejects(q, &exp, "final_obs_index", "invalid");
        assert!(msg.contains("where no episode ended"), "{msg}");

        // a missing entry
        let mut q = p;
        q.final_obs_index.pop();
        assert_rejects(q, &exp, "final_obs_index", "invalid");
    }

    #[test]
    fn final_obs_matches_the_entries() {
        let (mut p, exp) = good(discrete(), 4, 3, false);
        let k = p.final_obs_index.len();
        p.final_obs = Bytes::from(vec![0u8; (k + 1) * D * 4]);
        let msg = assert_rejects(p, &exp, "final_obs", "invalid");
        assert!(msg.contains(&format!("(f32 [K={k}, obs_dim=4])")), "{msg}");
    }

    #[test]
    fn one_return_and_one_length_per_episode() {
        let (mut p, exp) = good(discrete(), 4, 3, false);
        let k = p.final_obs_index.len();
        p.episode_returns.pop();
        let msg = assert_rejects(p, &exp, "episode_returns", "invalid");
        assert!(msg.contains(&format!("expected {k} values")), "{msg}");
        let (mut p, exp) = good(discrete(), 4, 3, false);
        p.episode_lengths.push(3);
        assert_rejects(p, &exp, "episode_lengths", "invalid");
        let (mut p, exp) = good(discrete(), 4, 3, false);
        p.episode_lengths[0] = 0;
        let msg = assert_rejects(p, &exp, "episode_lengths", "invalid");
        assert_eq!(
            msg,
            "field `episode_lengths`: expected lengths of at least 1, got 0 at index 0"
        );
    }

    #[test]
    fn absurd_expectations_overflow_cleanly() {
        let (p, mut exp) = good(discrete(), 4, 2, false);
        exp.obs_dim = usize::MAX;
        let e = err(p, &exp);
        assert_eq!((e.field(), e.reason()), ("obs", "invalid"));
    }

    #[test]
    fn decoders() {
        assert_eq!(le_f32s(&[0, 0, 128, 63, 0, 0, 0, 192, 1]), vec![1.0, -2.0]);
        assert_eq!(le_i64s(&(-3i64).to_le_bytes()), vec![-3]);
        assert!(le_i64s(&[1, 2, 3]).is_empty());
    }

    // ---- properties ----

    fn bytes_strategy() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Bytes::from)
    }

    prop_compose! {
        fn arbitrary_chunk()(
            run in prop_oneof![Just("run-a".to_string()), ".{0,8}"],
            t in 0u32..8,
            n in 0u32..5,
            version in 0u64..8,
            arrays in proptest::collection::vec(bytes_strategy(), 8),
            final_obs_index in proptest::collection::vec(any::<u32>(), 0..6),
            episode_returns in proptest::collection::vec(any::<f32>(), 0..6),
            episode_lengths in proptest::collection::vec(any::<u32>(), 0..6),
        ) -> proto::Chunk {
            proto::Chunk {
                run_id: run,
                actor_id: 1,
                sequence: 1,
                policy_version: version,
                t,
                n,
                obs: arrays[0].clone(),
                actions: arrays[1].clone(),
                rewards: arrays[2].clone(),
                terminated: arrays[3].clone(),
                truncated: arrays[4].clone(),
                behavior_logp: arrays[5].clone(),
                behavior_value: arrays[6].clone(),
                final_obs_index,
                final_obs: arrays[7].clone(),
                episode_returns,
                episode_lengths,
                env_id: "Toy-v0".into(),
                obs_dtype: 0,
            }
        }
    }

    /// A chunk with the right sizes for its t and n but random contents
    /// (flags mostly 0), so that validation gets past the size checks.
    fn sized_chunk(continuous: bool) -> impl Strategy<Value = proto::Chunk> {
        (1usize..5, 1usize..4, 0usize..3).prop_flat_map(move |(t, n, k)| {
            let tn = t * n;
            let small_f32s = move |len: usize| {
                proptest::collection::vec(-10.0f32..10.0, len).prop_map(|v| f32_bytes(&v))
            };
            let actions = if continuous {
                // act_dim 2; some non-finite values
                proptest::collection::vec(prop_oneof![9 => -5.0f32..5.0, 1 => any::<f32>()], tn * 2)
                    .prop_map(|v| f32_bytes(&v))
                    .boxed()
            } else {
                proptest::collection::vec(-1i64..4, tn)
                    .prop_map(|v| i64_bytes(&v))
                    .boxed()
            };
            let flags = move || {
                proptest::collection::vec(
                    prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => any::<u8>()],
                    tn,
                )
                .prop_map(Bytes::from)
            };
            (
                small_f32s((t + 1) * n * D),
                actions,
                small_f32s(tn),
                flags(),
                flags(),
                small_f32s(tn),
                proptest::collection::vec(0u32..(tn as u32 + 1), k),
                small_f32s(k * D),
                proptest::collection::vec(0u32..5, k),
            )
                .prop_map(
                    move |(
                        obs,
                        actions,
                        rewards,
                        terminated,
                        truncated,
                        logp,
                        mut idx,
                        final_obs,
                        lengths,
                    )| {
                        idx.sort_unstable();
                        proto::Chunk {
                            run_id: "run-a".into(),
                            actor_id: 0,
                            sequence: 0,
                            policy_version: 0,
                            t: t as u32,
                            n: n as u32,
                            obs,
                            actions,
                            rewards,
                            terminated,
                            truncated,
                            behavior_logp: logp,
                            behavior_value: Bytes::new(),
                            final_obs_index: idx,
                            final_obs,
                            episode_returns: vec![1.0; lengths.len()],
                            episode_lengths: lengths,
                            env_id: "Toy-v0".into(),
                            obs_dtype: 0,
                        }
                    },
                )
        })
    }

    fn check_total(p: proto::Chunk, exp: &ChunkExpectations) {
        match validate(p, exp) {
            Ok(c) => {
                // whatever is accepted is self-consistent and round-trips
                assert!(c.t >= 1 && c.t <= exp.chunk_len && c.n >= 1 && c.n <= exp.max_envs);
                assert_eq!(c.obs.len(), (c.t + 1) * c.n * D);
                assert_eq!(c.final_obs.len(), c.final_obs_index.len() * D);
                assert_eq!(validate(c.to_proto(), exp).unwrap(), c);
            }
            Err(e) => {
                let msg = e.to_string();
                assert!(msg.contains(e.field()), "{msg}");
                assert!(
                    ["invalid", "too_large", "wrong_run", "future_version"].contains(&e.reason())
                );
            }
        }
    }

    /// One random corruption of a well-formed chunk and the field it must be
    /// reported under (`None` when this chunk offers nothing to corrupt).
    fn corrupt(
        p: &mut proto::Chunk,
        kind: u8,
        r: u64,
        continuous: bool,
        k_actions: i64,
    ) -> Option<&'static str> {
        let pick = |len: usize| (r % len.max(1) as u64) as usize;
        let tn = p.rewards.len() / 4;
        match kind {
            // a non-finite float at a random index of a random float field
            0 => {
                let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][(r % 3) as usize];
                let mut fields: Vec<&'static str> = vec!["obs", "rewards", "behavior_logp"];
                if !p.behavior_value.is_empty() {
                    fields.push("behavior_value");
                }
                if !p.final_obs.is_empty() {
                    fields.extend(["final_obs", "episode_returns"]);
                }
                if continuous {
                    fields.push("actions");
                }
                let field = fields[pick(fields.len() * 7) % fields.len()];
                let target = match field {
                    "obs" => &mut p.obs,
                    "rewards" => &mut p.rewards,
                    "behavior_logp" => &mut p.behavior_logp,
                    "behavior_value" => &mut p.behavior_value,
                    "final_obs" => &mut p.final_obs,
                    "actions" => &mut p.actions,
                    _ => {
                        let i = pick(p.episode_returns.len());
                        p.episode_returns[i] = bad;
                        return Some(field);
                    }
                };
                let i = (r >> 8) as usize % (target.len() / 4);
                *target = set_f32(target, i, bad);
                Some(field)
            }
            // an action out of range
            1 => {
                let i = pick(tn);
                if continuous {
                    p.actions = set_f32(&p.actions, i, f32::NAN);
                } else {
                    let bad = if r.is_multiple_of(2) {
                        k_actions + (r >> 4) as i64 % 1000
                    } else {
                        -1 - (r >> 4) as i64 % 1000
                    };
                    let mut a = p.actions.to_vec();
                    a[i * 8..i * 8 + 8].copy_from_slice(&bad.to_le_bytes());
                    p.actions = a.into();
                }
                Some("actions")
            }
            // a done flag flipped on without a final observation, or off under one
            2 => {
                let pos = pick(tn);
                let done = p.terminated[pos] == 1 || p.truncated[pos] == 1;
                if done {
                    p.terminated = set_byte(&p.terminated, pos, 0);
                    p.truncated = set_byte(&p.truncated, pos, 0);
                } else if r.is_multiple_of(2) {
                    p.terminated = set_byte(&p.terminated, pos, 1);
                } else {
                    p.truncated = set_byte(&p.truncated, pos, 1);
                }
                Some("final_obs_index")
            }
            // a truncated array
            3 => {
                let mut fields = vec![
                    "obs",
                    "actions",
                    "rewards",
                    "terminated",
                    "truncated",
                    "behavior_logp",
                ];
                if !p.behavior_value.is_empty() {
                    fields.push("behavior_value");
                }
                if !p.final_obs_index.is_empty() {
                    fields.extend([
                        "final_obs_index",
                        "final_obs",
                        "episode_returns",
                        "episode_lengths",
                    ]);
                }
                let field = fields[pick(fields.len() * 11) % fields.len()];
                let cut = |b: &mut Bytes| {
                    let keep = (r >> 16) as usize % b.len();
                    *b = b.slice(..keep);
                };
                match field {
                    "obs" => cut(&mut p.obs),
                    "actions" => cut(&mut p.actions),
                    "rewards" => cut(&mut p.rewards),
                    "terminated" => cut(&mut p.terminated),
                    "truncated" => cut(&mut p.truncated),
                    "behavior_logp" => cut(&mut p.behavior_logp),
                    "behavior_value" => cut(&mut p.behavior_value),
                    "final_obs" => cut(&mut p.final_obs),
                    "final_obs_index" => {
                        p.final_obs_index.remove(pick(p.final_obs_index.len()));
                    }
                    "episode_returns" => {
                        p.episode_returns.pop();
                    }
                    _ => {
                        p.episode_lengths.pop();
                    }
                }
                Some(field)
            }
            // a flag byte other than 0 or 1
            4 => {
                let v = 2 + (r % 254) as u8;
                if r.is_multiple_of(2) {
                    p.terminated = set_byte(&p.terminated, pick(tn), v);
                    Some("terminated")
                } else {
                    p.truncated = set_byte(&p.truncated, pick(tn), v);
                    Some("truncated")
                }
            }
            // an empty episode
            5 => {
                if p.episode_lengths.is_empty() {
                    return None;
                }
                let i = pick(p.episode_lengths.len());
                p.episode_lengths[i] = 0;
                Some("episode_lengths")
            }
            // a policy from the future
            _ => {
                p.policy_version = 6 + r % 1000;
                Some("policy_version")
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(p in arbitrary_chunk(), continuous in any::<bool>(), values in any::<bool>()) {
            let space = if continuous { boxed() } else { discrete() };
            check_total(p, &expectations(space, 6, 4, values));
        }

        #[test]
        fn sized_random_contents_never_panic(p in sized_chunk(false)) {
            check_total(p, &expectations(discrete(), 6, 4, false));
        }

        #[test]
        fn sized_random_continuous_contents_never_panic(p in sized_chunk(true)) {
            check_total(p, &expectations(boxed(), 6, 4, false));
        }

        #[test]
        fn every_single_corruption_is_rejected_naming_its_field(
            seed in any::<u64>(),
            t in 1usize..7,
            n in 1usize..5,
            continuous in any::<bool>(),
            values in any::<bool>(),
            kind in 0u8..7,
            r in any::<u64>(),
        ) {
            let space = if continuous { boxed() } else { discrete() };
            let exp = expectations(space.clone(), 6, 4, values);
            let (mut p, want) = play(&space, t, n, seed, values, 1).remove(0);
            prop_assert_eq!(&validate(p.clone(), &exp).unwrap(), &want);
            if let Some(field) = corrupt(&mut p, kind, r, continuous, 3) {
                match validate(p, &exp) {
                    Ok(_) => prop_assert!(false, "corruption {} of `{}` was accepted", kind, field),
                    Err(e) => {
                        prop_assert_eq!(e.field(), field, "{}", e);
                        let named = format!("field `{field}`");
                        prop_assert!(e.to_string().contains(&named), "{}", e);
                    }
                }
            }
        }
    }
}
