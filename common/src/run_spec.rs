//! What the learner tells an actor at `Hello`, as a domain type.
//!
//! The learner builds a [`RunSpec`] and converts it to the wire message in one
//! place ([`From<RunSpec> for proto::RunSpec`]); the actor converts the wire
//! message back with [`TryFrom<proto::RunSpec>`], which destructures every
//! field (a new field fails to compile until it is handled here) and names the
//! field of any problem.

use crate::env::EnvSpec;
use crate::model::ModelSpec;
use crate::proto;
use crate::space::Space;

/// The run as an actor needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub run_id: String,
    pub env: EnvSpec,
    pub model: ModelSpec,
    /// T: steps per chunk.
    pub chunk_len: u32,
    pub observation_space: Space,
    pub action_space: Space,
    /// The learner's newest policy version at the handshake.
    pub policy_version: u64,
    /// Identity the learner assigned to this session.
    pub actor_id: u32,
    /// The session credential the trajectory stream must carry.
    pub session: String,
    /// Chunks must carry behavior values (the actor runs the critic too).
    pub behavior_values: bool,
    /// The run's seed; actors derive theirs with [`RunSpec::actor_seed`].
    pub seed: u64,
    /// Largest chunk payload the learner accepts, in bytes.
    pub max_chunk_bytes: u64,
    /// Environments per actor when the actor asks for none.
    pub default_num_envs: u32,
    /// Act one chunk per policy version (synchronous mode).
    pub sync: bool,
    /// Samples per update; an actor acts at most a batch's worth of chunks per
    /// policy version (0: no limit).
    pub batch_samples: u64,
}

/// Longest chunk an actor accepts to act (`chunk_len`).
pub const MAX_CHUNK_LEN: u32 = 1 << 16;
/// Most environments per actor (`default_num_envs`).
pub const MAX_ENVS: u32 = 1 << 16;
/// Largest observation or action space (flat values, or discrete actions).
pub const MAX_SPACE_SIZE: usize = 1 << 24;
/// Longest session credential.
pub const MAX_SESSION_LEN: usize = 128;

/// A run spec from the learner that this actor cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("run spec field `{field}`: {message}")]
pub struct RunSpecError {
    pub field: &'static str,
    pub message: String,
}

impl RunSpec {
    /// The seed of the actor called `actor_name` in this run: the same name
    /// gets the same seed (a reconnecting actor reproduces its streams), and
    /// different names get unrelated ones.
    pub fn actor_seed(&self, actor_name: &str) -> u64 {
        actor_seed(self.seed, actor_name)
    }
}

/// See [`RunSpec::actor_seed`]: FNV-1a of the name, mixed with the run seed
/// through the splitmix64 finalizer (stable across builds and platforms).
pub fn actor_seed(run_seed: u64, actor_name: &str) -> u64 {
    let name = actor_name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut x = run_seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ name;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl From<RunSpec> for proto::RunSpec {
    fn from(s: RunSpec) -> Self {
        proto::RunSpec {
            env_config_toml: s.env.config_toml(),
            env_id: s.env.id,
            run_id: s.run_id,
            model: Some((&s.model).into()),
            chunk_len: s.chunk_len,
            observation_space: Some((&s.observation_space).into()),
            action_space: Some((&s.action_space).into()),
            policy_version: s.policy_version,
            protocol_version: proto::PROTOCOL_VERSION,
            actor_id: s.actor_id,
            send_behavior_values: s.behavior_values,
            seed: s.seed,
            max_chunk_bytes: s.max_chunk_bytes,
            default_num_envs: s.default_num_envs,
            sync: s.sync,
            batch_samples: s.batch_samples,
            session: s.session,
        }
    }
}

impl TryFrom<proto::RunSpec> for RunSpec {
    type Error = RunSpecError;

    fn try_from(rs: proto::RunSpec) -> Result<Self, RunSpecError> {
        let proto::RunSpec {
            run_id,
            env_id,
            env_config_toml,
            model,
            chunk_len,
            observation_space,
            action_space,
            policy_version,
            protocol_version,
            actor_id,
            send_behavior_values,
            seed,
            max_chunk_bytes,
            default_num_envs,
            sync,
            batch_samples,
            session,
        } = rs;
        let err = |field: &'static str, message: String| RunSpecError { field, message };
        if protocol_version != proto::PROTOCOL_VERSION {
            return Err(err(
                "protocol_version",
                format!(
                    "expected {}, got {protocol_version}",
                    proto::PROTOCOL_VERSION
                ),
            ));
        }
        let env = EnvSpec::from_parts(&env_id, &env_config_toml)
            .map_err(|e| err("env_config_toml", e.to_string()))?;
        let model = ModelSpec::try_from(&model.ok_or_else(|| err("model", "missing".into()))?)
            .map_err(|m| err("model", m))?;
        let space = |s: Option<proto::Space>, field: &'static str| {
            Space::try_from(&s.ok_or_else(|| err(field, "missing".into()))?)
                .map_err(|m| err(field, m))
        };
        // Sizes the actor allocates for: refuse absurd ones instead of
        // failing to allocate (or overflowing) later.
        for (field, value, max) in [
            ("chunk_len", u64::from(chunk_len), u64::from(MAX_CHUNK_LEN)),
            (
                "default_num_envs",
                u64::from(default_num_envs),
                u64::from(MAX_ENVS),
            ),
        ] {
            if value == 0 || value > max {
                return Err(err(field, format!("expected 1..={max}, got {value}")));
            }
        }
        if max_chunk_bytes < 1024 {
            return Err(err(
                "max_chunk_bytes",
                format!("expected at least 1024, got {max_chunk_bytes}"),
            ));
        }
        let session_ok = |s: &str| {
            (1..=MAX_SESSION_LEN).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !session_ok(&session) {
            return Err(err(
                "session",
                format!(
                    "expected 1 to {MAX_SESSION_LEN} ASCII letters, digits or '-', got {} bytes",
                    session.len()
                ),
            ));
        }
        let observation_space = space(observation_space, "observation_space")?;
        let action_space = space(action_space, "action_space")?;
        for (field, s) in [
            ("observation_space", &observation_space),
            ("action_space", &action_space),
        ] {
            let size = match s {
                Space::Discrete { n } => *n,
                Space::Box { .. } => s.flat_dim(),
            };
            if size > MAX_SPACE_SIZE {
                return Err(err(
                    field,
                    format!("expected at most {MAX_SPACE_SIZE} values, got {size}"),
                ));
            }
        }
        Ok(RunSpec {
            run_id,
            env,
            model,
            chunk_len,
            observation_space,
            action_space,
            policy_version,
            actor_id,
            behavior_values: send_behavior_values,
            seed,
            max_chunk_bytes,
            default_num_envs,
            sync,
            batch_samples,
            session,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RunSpec {
        RunSpec {
            run_id: "r1".into(),
            env: EnvSpec::new("CartPole-v1"),
            model: ModelSpec::default(),
            chunk_len: 16,
            observation_space: Space::Box {
                low: vec![-1.0; 4],
                high: vec![1.0; 4],
                shape: vec![4],
                dtype: crate::space::Dtype::Float32,
            },
            action_space: Space::Discrete { n: 2 },
            policy_version: 7,
            actor_id: 3,
            behavior_values: true,
            seed: 42,
            max_chunk_bytes: 1 << 20,
            default_num_envs: 8,
            sync: false,
            batch_samples: 2048,
            session: "0123abcd".into(),
        }
    }

    #[test]
    fn wire_round_trip_keeps_every_field() {
        let wire = proto::RunSpec::from(spec());
        assert_eq!(wire.protocol_version, proto::PROTOCOL_VERSION);
        assert_eq!(RunSpec::try_from(wire).unwrap(), spec());
    }

    #[test]
    fn problems_name_the_field() {
        let mut wire = proto::RunSpec::from(spec());
        wire.model = None;
        assert_eq!(RunSpec::try_from(wire).unwrap_err().field, "model");
        let mut wire = proto::RunSpec::from(spec());
        wire.action_space = Some(proto::Space { kind: None });
        assert_eq!(RunSpec::try_from(wire).unwrap_err().field, "action_space");
        let mut wire = proto::RunSpec::from(spec());
        wire.protocol_version += 1;
        let e = RunSpec::try_from(wire).unwrap_err();
        assert_eq!(e.field, "protocol_version");
        assert!(e.to_string().contains("run spec field `protocol_version`"));
        let mut wire = proto::RunSpec::from(spec());
        wire.env_config_toml = "not = [toml".into();
        assert_eq!(
            RunSpec::try_from(wire).unwrap_err().field,
            "env_config_toml"
        );
    }

    /// A spec with absurd sizes is refused cleanly, naming the field, before
    /// the actor allocates anything for it.
    #[test]
    fn absurd_sizes_are_refused() {
        type Break = fn(&mut proto::RunSpec);
        let cases: [(&str, Break); 9] = [
            ("chunk_len", |w| w.chunk_len = 0),
            ("chunk_len", |w| w.chunk_len = u32::MAX),
            ("default_num_envs", |w| w.default_num_envs = 0),
            ("default_num_envs", |w| w.default_num_envs = u32::MAX),
            ("max_chunk_bytes", |w| w.max_chunk_bytes = 0),
            ("session", |w| w.session.clear()),
            ("session", |w| w.session = "a\nb".into()),
            ("action_space", |w| {
                w.action_space = Some(proto::Space {
                    kind: Some(proto::space::Kind::Discrete(proto::DiscreteSpace {
                        n: u32::MAX,
                    })),
                })
            }),
            ("observation_space", |w| {
                // 2^32 * 2^32 overflows a 64-bit product: no panic, an error.
                w.observation_space = Some(proto::Space {
                    kind: Some(proto::space::Kind::Box(proto::BoxSpace {
                        low: vec![],
                        high: vec![],
                        shape: vec![u32::MAX, u32::MAX, u32::MAX],
                        dtype: 0,
                    })),
                })
            }),
        ];
        for (field, break_it) in cases {
            let mut wire = proto::RunSpec::from(spec());
            break_it(&mut wire);
            let e = RunSpec::try_from(wire).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    #[test]
    fn an_actor_keeps_its_seed_across_connections_and_names_differ() {
        let first = spec();
        // A reconnect gets a new actor id and a newer policy version.
        let again = RunSpec {
            actor_id: 9,
            policy_version: 30,
            ..spec()
        };
        assert_eq!(first.actor_seed("local-0"), again.actor_seed("local-0"));
        assert_ne!(first.actor_seed("local-0"), first.actor_seed("local-1"));
        let other_run = RunSpec { seed: 43, ..spec() };
        assert_ne!(first.actor_seed("local-0"), other_run.actor_seed("local-0"));
        // Pinned (computed independently from the FNV-1a and splitmix64
        // definitions): seeds are part of a run's reproducibility.
        assert_eq!(actor_seed(1, "local-0"), 0x4d2b_c375_c091_31c3);
        assert_eq!(actor_seed(0, ""), 0xf52a_15e9_a9b5_e89b);
        // The Python actor (python/flotilla/seeds.py) pins the same values.
        assert_eq!(actor_seed(42, "a"), 0xdf36_8a75_d311_7dc0);
        assert_eq!(actor_seed(42, "b"), 0xff9e_ddc1_6e4d_fa9d);
        assert_eq!(actor_seed(u64::MAX, "actor-α"), 0x599a_5cc0_de37_ea89);
        assert_eq!(actor_seed(7, "host-1234"), 0x6946_fc61_d4b1_bad5);
        assert_eq!(actor_seed(123_456_789, "python-0"), 0xfc00_7065_33a3_8009);
    }
}
