//! Environments: the [`Env`] trait, the registry of ids, and the suite.
//!
//! Classic-control environments follow Gymnasium 1.x exactly: same equations,
//! constants, integrators, reset distributions, termination rules and time
//! limits (the `TimeLimit` wrapper is built in, as `max_episode_steps`). Random
//! streams differ from NumPy's, so seeded episodes are reproducible within
//! Flotilla but not bit-identical to Gymnasium's; a step from a given state with
//! a given action is identical to float32 precision.
//!
//! Every environment is chosen by id and configured from a TOML table whose
//! keys are checked: an unknown key or id is an error naming it and listing
//! what is valid.

pub mod acrobot;
pub mod cartpole;
pub mod maze;
pub mod mountain_car;
pub mod pendulum;
pub mod text_match;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::space::{ActionRef, Space};

/// The outcome of one step, after Gymnasium's `(reward, terminated, truncated)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub reward: f32,
    /// The episode reached a terminal state of the MDP: do not bootstrap.
    pub terminated: bool,
    /// The episode was cut short (time limit): bootstrap from the final observation.
    pub truncated: bool,
}

impl Step {
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// A single environment: the built-in ones, and the public API for an
/// environment of your own (run it with `flotilla_actor::app::main_with_env`;
/// see docs/environments.md, "Your own environment").
///
/// Observations are written into a caller-provided buffer of
/// `observation_space().flat_dim()` floats, so stepping allocates nothing.
/// The contract, after Gymnasium's:
/// - the observation space is a `Box` (a discrete observation is written
///   one-hot); the action space is `Discrete` or `Box`; both stay the same
///   for the environment's life;
/// - an image observation may be declared as bytes, [`Space::pixels`] (a
///   `Box` of dtype `uint8`): the environment still writes f32s, each an
///   integer in `0..=255`, and chunks carry them as one byte each, a quarter
///   of the f32 size (anything else panics the actor's packing);
/// - [`Env::reset`] writes the first observation of an episode;
///   [`Env::step`] writes the next one and says whether the episode ended,
///   `terminated` for a terminal state of the task (no bootstrap) and
///   `truncated` for a cut (a time limit: the learner bootstraps from the
///   observation written). After either, the caller resets; `step` is not
///   called on a finished episode;
/// - the same seed gives the same episodes.
pub trait Env: Send {
    /// The id, e.g. `"CartPole-v1"`: what a run's `[env] id` names.
    fn id(&self) -> &'static str;
    fn observation_space(&self) -> &Space;
    fn action_space(&self) -> &Space;
    /// Starts a new episode. `Some(seed)` re-seeds the environment's random
    /// stream first; `None` continues it (Gymnasium's `reset(seed=None)`).
    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]);
    /// Advances one step. Continuous actions outside the bounds are clipped
    /// where Gymnasium clips them.
    ///
    /// # Panics
    /// On a discrete action outside the action space, or a continuous action of
    /// the wrong length (a caller bug, as Gymnasium's assertion).
    fn step(&mut self, action: ActionRef<'_>, obs: &mut [f32]) -> Step;
    /// A picture of the current state for videos (`actor rollout
    /// --video`); `None` for an environment that has none.
    fn render(&self) -> Option<crate::render::Frame> {
        None
    }
}

/// Errors from building an environment.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EnvError {
    #[error("unknown environment id `{id}`; valid ids are: {} (or set `source = \"external\"` in [env] to train an environment your actors bring)", ENV_IDS.join(", "))]
    UnknownId { id: String },
    #[error("environment `{id}` is external (`source = \"external\"`): only the actors that bring it can build it")]
    External { id: String },
    #[error("invalid configuration for {env}: {message}")]
    Config { env: &'static str, message: String },
}

/// Every registered environment id.
pub const ENV_IDS: &[&str] = &[
    cartpole::ID,
    acrobot::ID,
    mountain_car::ID,
    pendulum::ID,
    maze::ID,
    text_match::ID,
];

/// Where a run's environment comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvSource {
    /// One of [`ENV_IDS`], built by Flotilla's own actors (the default).
    #[default]
    Builtin,
    /// Any id: the actors bring the environment (a Gymnasium env through the
    /// Python actor, a custom [`Env`] through `flotilla_actor::app`) and
    /// declare its spaces at `Hello`; the first declaration fixes them.
    External,
}

impl EnvSource {
    pub fn is_builtin(&self) -> bool {
        *self == EnvSource::Builtin
    }
}

/// An environment id and its configuration, as written in a run config:
///
/// ```toml
/// [env]
/// id = "CartPole-v1"
/// max_episode_steps = 500   # every other key belongs to the environment
/// ```
///
/// or, for an environment the actors bring:
///
/// ```toml
/// [env]
/// id = "HalfCheetah-v5"
/// source = "external"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvSpec {
    pub id: String,
    #[serde(default, skip_serializing_if = "EnvSource::is_builtin")]
    pub source: EnvSource,
    #[serde(flatten)]
    pub config: toml::Table,
}

impl EnvSpec {
    pub fn new(id: impl Into<String>) -> Self {
        EnvSpec {
            id: id.into(),
            source: EnvSource::Builtin,
            config: toml::Table::new(),
        }
    }

    /// A spec of an environment the actors bring.
    pub fn external(id: impl Into<String>) -> Self {
        EnvSpec {
            source: EnvSource::External,
            ..EnvSpec::new(id)
        }
    }

    pub fn is_external(&self) -> bool {
        self.source == EnvSource::External
    }

    /// Builds one environment; also the way to validate a spec at start-up.
    /// An external environment cannot be built here ([`EnvError::External`]).
    pub fn make(&self) -> Result<Box<dyn Env>, EnvError> {
        if self.is_external() {
            return Err(EnvError::External {
                id: self.id.clone(),
            });
        }
        make_env(&self.id, &self.config)
    }

    /// The configuration block as TOML text (what the `RunSpec` carries).
    pub fn config_toml(&self) -> String {
        toml::to_string(&self.config).expect("a toml::Table always serializes")
    }

    /// Parses the configuration block from TOML text.
    pub fn from_parts(id: &str, config_toml: &str) -> Result<Self, EnvError> {
        let config: toml::Table =
            config_toml
                .parse()
                .map_err(|e: toml::de::Error| EnvError::Config {
                    env: "env",
                    message: format!("env_config is not valid TOML: {}", e.message()),
                })?;
        Ok(EnvSpec {
            id: id.to_owned(),
            source: EnvSource::Builtin,
            config,
        })
    }
}

/// Builds the environment `id` from its TOML configuration table.
pub fn make_env(id: &str, config: &toml::Table) -> Result<Box<dyn Env>, EnvError> {
    Ok(match id {
        cartpole::ID => Box::new(cartpole::CartPole::new(parse(cartpole::ID, config)?)?),
        acrobot::ID => Box::new(acrobot::Acrobot::new(parse(acrobot::ID, config)?)?),
        mountain_car::ID => Box::new(mountain_car::MountainCar::new(parse(
            mountain_car::ID,
            config,
        )?)?),
        pendulum::ID => Box::new(pendulum::Pendulum::new(parse(pendulum::ID, config)?)?),
        maze::ID => Box::new(maze::Maze::new(parse(maze::ID, config)?)?),
        text_match::ID => Box::new(text_match::TextMatch::new(parse(text_match::ID, config)?)?),
        other => {
            return Err(EnvError::UnknownId {
                id: other.to_owned(),
            })
        }
    })
}

/// Deserializes an environment's config struct, turning serde's messages
/// ("unknown field `x`, expected one of `a`, `b`") into an [`EnvError`].
pub(crate) fn parse<T: DeserializeOwned>(
    env: &'static str,
    table: &toml::Table,
) -> Result<T, EnvError> {
    serde_path_to_error::deserialize(toml::Value::Table(table.clone())).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path.is_empty() || path == "." {
            inner.message().to_owned()
        } else {
            format!("key `{path}`: {}", inner.message())
        };
        EnvError::Config { env, message }
    })
}

/// Shorthand for a config validation error.
pub(crate) fn config_error(env: &'static str, message: impl Into<String>) -> EnvError {
    EnvError::Config {
        env,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_builds_with_defaults_and_reports_its_id() {
        for id in ENV_IDS {
            let env = make_env(id, &toml::Table::new()).unwrap();
            assert_eq!(env.id(), *id);
        }
    }

    #[test]
    fn unknown_id_lists_valid_ids() {
        let err = make_env("CartPole-v0", &toml::Table::new()).err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("`CartPole-v0`"), "{msg}");
        for id in ENV_IDS {
            assert!(msg.contains(id), "{msg} should list {id}");
        }
    }

    #[test]
    fn unknown_key_is_named_with_the_valid_keys() {
        for id in ENV_IDS {
            let mut t = toml::Table::new();
            t.insert("no_such_key".into(), toml::Value::Integer(1));
            let msg = make_env(id, &t).err().unwrap().to_string();
            assert!(msg.contains("no_such_key"), "{id}: {msg}");
            assert!(msg.contains("max_episode_steps"), "{id}: {msg}");
        }
    }

    #[test]
    fn wrong_type_is_an_error() {
        let spec: EnvSpec =
            toml::from_str("id = \"CartPole-v1\"\nmax_episode_steps = \"long\"").unwrap();
        let msg = spec.make().err().unwrap().to_string();
        assert!(
            msg.contains("CartPole-v1") && msg.contains("`max_episode_steps`"),
            "{msg}"
        );
    }

    #[test]
    fn an_external_spec_parses_serializes_and_is_not_built_here() {
        let spec: EnvSpec =
            toml::from_str("id = \"HalfCheetah-v5\"\nsource = \"external\"").unwrap();
        assert_eq!(spec, EnvSpec::external("HalfCheetah-v5"));
        assert!(spec.config.is_empty(), "source is not an env key");
        let text = toml::to_string(&spec).unwrap();
        assert!(text.contains("source = \"external\""), "{text}");
        assert_eq!(
            spec.make().err(),
            Some(EnvError::External {
                id: "HalfCheetah-v5".into()
            })
        );
        // The default stays unwritten, so existing configs read back equal.
        let builtin: EnvSpec = toml::from_str("id = \"CartPole-v1\"").unwrap();
        assert_eq!(builtin.source, EnvSource::Builtin);
        assert!(!toml::to_string(&builtin).unwrap().contains("source"));
        assert!(toml::from_str::<EnvSpec>("id = \"X\"\nsource = \"python\"").is_err());
    }

    #[test]
    fn spec_round_trips_through_toml_text() {
        let spec: EnvSpec = toml::from_str("id = \"Maze-v0\"\nsize = 6\nstep_cost = 0.01").unwrap();
        let back = EnvSpec::from_parts(&spec.id, &spec.config_toml()).unwrap();
        assert_eq!(spec, back);
        back.make().unwrap();
    }
}
