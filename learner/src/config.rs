//! The run configuration: one TOML file per run (see `configs/`), every value
//! overridable with `--set key.path=value`, checked at start-up.
//!
//! Unknown keys and wrong types are rejected by serde (`deny_unknown_fields`)
//! with the key's name and the accepted keys; impossible values are collected
//! by [`RunConfig::validate`], which reports all of them at once.

use std::path::Path;

use flotilla_common::env::EnvSpec;
use flotilla_common::model::ModelSpec;
use serde::{Deserialize, Serialize};

/// A whole run: the top-level `algo` and `sync` keys, then `[run]`, `[env]`,
/// `[model]`, `[rollout]`, `[ppo]`, `[vtrace]`, `[reinforce]`, `[kl]`,
/// `[ingest]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// The policy-gradient algorithm (see [`Algo`]).
    #[serde(default)]
    pub algo: Algo,
    /// Synchronous, repeatable mode: the learner trains only on chunks acted
    /// with its current version, and every actor acts one chunk per version.
    #[serde(default)]
    pub sync: bool,
    #[serde(default)]
    pub run: RunSection,
    pub env: EnvSpec,
    #[serde(default)]
    pub model: ModelSpec,
    #[serde(default)]
    pub rollout: RolloutSection,
    #[serde(default)]
    pub ppo: PpoSection,
    #[serde(default)]
    pub vtrace: VtraceSection,
    #[serde(default)]
    pub reinforce: ReinforceSection,
    #[serde(default)]
    pub kl: KlSection,
    #[serde(default)]
    pub ingest: IngestSection,
    #[serde(default)]
    pub eval: EvalSection,
}

/// Evaluation episodes on the current policy, next to training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSection {
    /// Evaluate every this many policy versions (0: never).
    pub every_updates: u64,
    /// Episodes per evaluation.
    pub episodes: u64,
    /// The most likely action (the Gaussian mean) instead of a sample.
    pub greedy: bool,
    /// Seed of every evaluation's first reset (and of its sampling): each
    /// evaluation plays the same start states, so versions compare.
    pub seed: u64,
}

impl Default for EvalSection {
    fn default() -> Self {
        EvalSection {
            every_updates: 0,
            episodes: 10,
            greedy: true,
            seed: 1_000_000,
        }
    }
}

/// The algorithms of the policy-gradient family. They share one training
/// loop; each picks an advantage estimator, a policy loss and an update
/// schedule (see `docs/algorithms.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    /// Monte-Carlo returns over complete episodes, optional learned baseline,
    /// one gradient step per batch.
    Reinforce,
    /// Advantage actor-critic: GAE advantages (`ppo.gae_lambda`; 1 gives
    /// n-step returns), one gradient step on the whole batch, no clipping.
    A2c,
    /// PPO-clip, with GAE or V-trace advantages (`ppo.advantage`).
    #[default]
    Ppo,
    /// IMPALA: V-trace targets and ρ-weighted policy gradient, one gradient
    /// step per batch.
    Vtrace,
}

impl Algo {
    pub fn as_str(self) -> &'static str {
        match self {
            Algo::Reinforce => "reinforce",
            Algo::A2c => "a2c",
            Algo::Ppo => "ppo",
            Algo::Vtrace => "vtrace",
        }
    }
}

/// How advantages are estimated for `ppo` and `a2c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdvantageEstimator {
    /// GAE(γ, λ) from values recomputed with the current critic.
    #[default]
    Gae,
    /// V-trace (`[vtrace]` section), correcting for stale behavior policies.
    Vtrace,
}

/// V-trace truncation levels (IMPALA's ρ̄ and c̄).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VtraceSection {
    /// ρ̄: truncation of the importance weight in the TD errors and the
    /// policy gradient (sets the fixed point between μ's and π's values).
    pub rho_bar: f64,
    /// c̄: truncation of the trace coefficients (sets the contraction speed).
    pub c_bar: f64,
}

impl Default for VtraceSection {
    fn default() -> Self {
        VtraceSection {
            rho_bar: 1.0,
            c_bar: 1.0,
        }
    }
}

/// REINFORCE options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReinforceSection {
    /// Subtract a learned V(s) from the returns (and train it); `false` is
    /// pure REINFORCE (no critic, no advantage normalization).
    pub baseline: bool,
    /// Chunks an actor may hold while its episodes are unfinished; beyond
    /// that the oldest is discarded (`incomplete_episode`).
    pub max_held_chunks: usize,
    /// Chunks all actors together may hold; beyond that the least recently
    /// active actor's are discarded (`incomplete_episode`).
    pub max_held_chunks_total: usize,
}

impl Default for ReinforceSection {
    fn default() -> Self {
        ReinforceSection {
            baseline: true,
            max_held_chunks: 256,
            max_held_chunks_total: 4096,
        }
    }
}

/// A per-step KL penalty against a frozen reference policy, added to the
/// reward as in RLHF-style PPO: `r'_t = r_t − coef·(log π(a_t|s_t) − log π_ref(a_t|s_t))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KlSection {
    /// Penalty coefficient (the adaptive controller's starting value); 0
    /// disables the penalty.
    pub coef: f64,
    /// Adaptive controller (Ziegler et al. 2019): steer the batch's mean KL
    /// to this value; omit for a fixed `coef`.
    pub target: Option<f64>,
    /// Horizon of the adaptive controller, in samples.
    pub horizon: f64,
    /// Checkpoint whose policy is the reference; omitted: the run's initial
    /// policy (rebuilt from `run.seed`, so it survives a resume).
    pub reference: Option<String>,
}

impl Default for KlSection {
    fn default() -> Self {
        KlSection {
            coef: 0.0,
            target: None,
            horizon: 10_000.0,
            reference: None,
        }
    }
}

impl KlSection {
    /// Whether the penalty is in use.
    pub fn enabled(&self) -> bool {
        self.coef > 0.0
    }
}

/// Run control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    /// The run ends cleanly after this many environment steps have been trained on.
    pub total_env_steps: u64,
    /// Seed of the learner's initialization; actors derive theirs from it.
    pub seed: u64,
    /// Write a checkpoint every this many updates (and at the end of the run).
    pub checkpoint_every: u64,
    /// How many checkpoints to keep in the run directory.
    pub keep_checkpoints: usize,
    /// Seconds between progress lines.
    pub progress_every_seconds: f64,
    /// Write TensorBoard event files under `<run dir>/tensorboard/`.
    pub tensorboard: bool,
    /// Frames the environment renders per env step (Atari's frame skip: 4),
    /// for the frames/s of pixel runs.
    pub frames_per_step: u32,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            total_env_steps: 1_000_000,
            seed: 1,
            checkpoint_every: 50,
            keep_checkpoints: 3,
            progress_every_seconds: 5.0,
            tensorboard: true,
            frames_per_step: 1,
        }
    }
}

/// What actors do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutSection {
    /// T: environment steps per chunk.
    pub chunk_len: u32,
    /// Environments per actor when the actor does not choose.
    pub num_envs: u32,
    /// Actors also run the critic and send behavior values.
    pub behavior_values: bool,
}

impl Default for RolloutSection {
    fn default() -> Self {
        RolloutSection {
            chunk_len: 32,
            num_envs: 8,
            behavior_values: false,
        }
    }
}

/// PPO-clip hyper-parameters (defaults are CleanRL's `ppo.py`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoSection {
    pub gamma: f64,
    pub gae_lambda: f64,
    /// Transitions per update.
    pub batch_size: usize,
    pub update_epochs: usize,
    pub num_minibatches: usize,
    pub clip_eps: f64,
    /// Clip the value update to ±this around the value before the update; 0 disables.
    pub vf_clip: f64,
    pub vf_coef: f64,
    pub ent_coef: f64,
    pub max_grad_norm: f64,
    pub learning_rate: f64,
    /// Anneal the learning rate linearly to 0 over `run.total_env_steps`.
    pub anneal_lr: bool,
    pub norm_adv: bool,
    /// Stop an update's epochs early when the approximate KL exceeds this.
    pub target_kl: Option<f64>,
    pub adam_eps: f64,
    /// Advantage estimator of `ppo` and `a2c`: `gae` or `vtrace`.
    pub advantage: AdvantageEstimator,
    /// Divide rewards by the running standard deviation of the discounted
    /// return (γ = `ppo.gamma`) before estimating advantages, as SB3's
    /// `VecNormalize` and Gymnasium's `NormalizeReward` do.
    pub normalize_rewards: bool,
    /// Clip of scaled rewards.
    pub reward_clip: f64,
}

impl Default for PpoSection {
    fn default() -> Self {
        PpoSection {
            gamma: 0.99,
            gae_lambda: 0.95,
            batch_size: 512,
            update_epochs: 4,
            num_minibatches: 4,
            clip_eps: 0.2,
            vf_clip: 0.2,
            vf_coef: 0.5,
            ent_coef: 0.01,
            max_grad_norm: 0.5,
            learning_rate: 2.5e-4,
            anneal_lr: true,
            norm_adv: true,
            target_kl: None,
            adam_eps: 1e-5,
            advantage: AdvantageEstimator::Gae,
            normalize_rewards: false,
            reward_clip: 10.0,
        }
    }
}

/// Limits of the trajectory ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestSection {
    /// Chunks acted with a policy more than this many versions old are dropped (`stale`).
    pub max_policy_lag: u64,
    /// Chunks waiting for the trainer before ingest applies back-pressure.
    pub queue_capacity: usize,
    /// Bytes of chunks waiting for the trainer, over all streams, before
    /// ingest applies back-pressure.
    pub max_queued_bytes: u64,
    /// Most open client connections; more are closed at once.
    pub max_connections: usize,
    /// Largest accepted chunk payload, in bytes.
    pub max_chunk_bytes: u64,
    /// Most environments one actor may run.
    pub max_envs_per_actor: u32,
    /// Most open actor sessions (one per `Hello` until its stream ends);
    /// `Hello` beyond it is refused with `RESOURCE_EXHAUSTED`.
    pub max_actors: usize,
    /// Most concurrent gRPC streams on one connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keep-alive ping interval, seconds.
    pub keepalive_interval_seconds: f64,
    /// A connection whose keep-alive ping is not answered within this many
    /// seconds is closed.
    pub keepalive_timeout_seconds: f64,
    /// A trajectory stream that delivers no chunk for this many seconds is
    /// ended (`DEADLINE_EXCEEDED`); the actor reconnects.
    pub stream_idle_timeout_seconds: f64,
    /// Largest |x| of an observation (`obs`, `final_obs`); beyond it a chunk
    /// is refused as `out_of_bounds`.
    pub max_abs_observation: f32,
    /// Refuse observations outside the observation space's finite bounds.
    pub check_observation_space: bool,
    /// Largest |x| of a reward (and |return| <= this x episode length).
    pub max_abs_reward: f32,
    /// Largest |x| of a behavior value estimate.
    pub max_abs_value: f32,
    /// Largest |x| of a continuous action (Gaussian samples are unclipped).
    pub max_abs_action: f32,
    /// Smallest behavior log-probability per action dimension.
    pub min_behavior_logp: f32,
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            max_policy_lag: 4,
            queue_capacity: 64,
            max_queued_bytes: 256 << 20,
            max_connections: 1024,
            max_chunk_bytes: 16 << 20,
            max_envs_per_actor: 4096,
            max_actors: 1024,
            max_concurrent_streams: 64,
            keepalive_interval_seconds: 20.0,
            keepalive_timeout_seconds: 20.0,
            stream_idle_timeout_seconds: 300.0,
            max_abs_observation: 1e6,
            check_observation_space: true,
            max_abs_reward: 1e6,
            max_abs_value: 1e9,
            max_abs_action: 1e6,
            min_behavior_logp: -1e3,
        }
    }
}

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("--set {entry}: {message}")]
    Override { entry: String, message: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|(k, m)| format!("  {k}: {m}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<(String, String)>),
}

/// Model presets: `[model] preset = "<name>"` fills the `[model]` keys the
/// config leaves unset from the named network.
const MODEL_PRESETS: &[(&str, Preset)] = &[("nature", ModelSpec::nature)];

/// Builds a preset's network.
type Preset = fn() -> ModelSpec;

/// Replaces `model.preset` by the keys of its network that the table does
/// not set itself.
fn expand_model_preset(table: &mut toml::Table) -> Result<(), String> {
    let Some(toml::Value::Table(model)) = table.get_mut("model") else {
        return Ok(());
    };
    let Some(preset) = model.remove("preset") else {
        return Ok(());
    };
    let names = || {
        MODEL_PRESETS
            .iter()
            .map(|(n, _)| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some(name) = preset.as_str() else {
        return Err(format!("expected one of {}, got {preset}", names()));
    };
    let Some((_, make)) = MODEL_PRESETS.iter().find(|(n, _)| *n == name) else {
        return Err(format!(
            "unknown preset \"{name}\"; expected one of {}",
            names()
        ));
    };
    let spec = toml::Table::try_from(make()).map_err(|e| e.to_string())?;
    let default = toml::Table::try_from(ModelSpec::default()).map_err(|e| e.to_string())?;
    for (key, value) in spec {
        // Only what the preset changes: the other keys keep their defaults.
        if default.get(&key) != Some(&value) {
            model.entry(key).or_insert(value);
        }
    }
    Ok(())
}

impl RunConfig {
    /// Reads `path`, applies `--set` overrides, parses and validates.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string(), overrides)
    }

    /// Parses TOML text (named `origin` in errors), applies overrides, validates.
    pub fn from_toml(text: &str, origin: &str, overrides: &[String]) -> Result<Self, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: origin.to_owned(),
            message,
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        for entry in overrides {
            apply_override(&mut table, entry)?;
        }
        expand_model_preset(&mut table)
            .map_err(|m| ConfigError::Invalid(vec![("model.preset".to_owned(), m)]))?;
        // Re-serialize so serde's errors point at a line of the effective config.
        let effective = toml::to_string(&table).map_err(|e| parse_err(e.to_string()))?;
        let config: RunConfig = toml::from_str(&effective).map_err(|e| parse_err(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// A short name of the algorithm, for titles.
    pub fn algo_name(&self) -> &'static str {
        match (self.algo, self.ppo.advantage) {
            (Algo::Reinforce, _) if self.reinforce.baseline => "REINFORCE with baseline",
            (Algo::Reinforce, _) => "REINFORCE",
            (Algo::A2c, AdvantageEstimator::Gae) => "A2C",
            (Algo::A2c, AdvantageEstimator::Vtrace) => "A2C + V-trace",
            (Algo::Ppo, AdvantageEstimator::Gae) => "PPO",
            (Algo::Ppo, AdvantageEstimator::Vtrace) => "PPO + V-trace",
            (Algo::Vtrace, _) => "IMPALA (V-trace)",
        }
    }

    /// The effective configuration as TOML (stored in checkpoints).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a RunConfig always serializes")
    }

    /// Checks every value; reports all problems at once, each with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut bad = |k: &str, m: String| p.push((k.to_owned(), m));
        if self.eval.every_updates > 0 {
            if self.eval.episodes == 0 {
                bad(
                    "eval.episodes",
                    "must be at least 1 when eval.every_updates is set".into(),
                );
            }
            if self.env.is_external() {
                bad(
                    "eval.every_updates",
                    "evaluation plays a built-in environment in the learner; an external environment lives only in its actors".into(),
                );
            }
        }
        if self.env.is_external() {
            // The actors configure what they bring; a key here would be
            // silently ignored.
            if let Some(key) = self.env.config.keys().next() {
                bad(
                    &format!("env.{key}"),
                    "an external environment (source = \"external\") takes only `id` and `source`; configure it where the actors build it (e.g. the Python actor's --env-kwargs)".into(),
                );
            }
            if self.env.id.is_empty() || self.env.id.len() > 256 {
                bad("env.id", "must be 1 to 256 bytes".into());
            }
        } else if let Err(e) = self.env.make() {
            bad("env", e.to_string());
        }
        for (k, m) in self.model.problems() {
            bad(k, m);
        }
        let r = &self.run;
        if r.total_env_steps == 0 {
            bad("run.total_env_steps", "must be at least 1".into());
        }
        if r.checkpoint_every == 0 {
            bad(
                "run.checkpoint_every",
                "must be at least 1 (updates)".into(),
            );
        }
        if r.keep_checkpoints == 0 {
            bad("run.keep_checkpoints", "must be at least 1".into());
        }
        if r.frames_per_step == 0 {
            bad("run.frames_per_step", "must be at least 1".into());
        }
        if !(r.progress_every_seconds > 0.0 && r.progress_every_seconds.is_finite()) {
            bad(
                "run.progress_every_seconds",
                format!("must be > 0, got {}", r.progress_every_seconds),
            );
        }
        let ro = &self.rollout;
        if !(1..=4096).contains(&ro.chunk_len) {
            bad(
                "rollout.chunk_len",
                format!("must be in 1..=4096, got {}", ro.chunk_len),
            );
        }
        if ro.num_envs == 0 || ro.num_envs > self.ingest.max_envs_per_actor {
            bad(
                "rollout.num_envs",
                format!(
                    "must be in 1..=ingest.max_envs_per_actor ({}), got {}",
                    self.ingest.max_envs_per_actor, ro.num_envs
                ),
            );
        }
        let o = &self.ppo;
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        if !unit(o.gamma) {
            bad("ppo.gamma", format!("must be in [0, 1], got {}", o.gamma));
        }
        if !unit(o.gae_lambda) {
            bad(
                "ppo.gae_lambda",
                format!("must be in [0, 1], got {}", o.gae_lambda),
            );
        }
        if o.batch_size == 0 {
            bad("ppo.batch_size", "must be at least 1".into());
        }
        if o.num_minibatches == 0 || o.num_minibatches > o.batch_size {
            bad(
                "ppo.num_minibatches",
                format!(
                    "must be in 1..=ppo.batch_size ({}), got {}",
                    o.batch_size, o.num_minibatches
                ),
            );
        }
        if o.update_epochs == 0 {
            bad("ppo.update_epochs", "must be at least 1".into());
        }
        if !(o.clip_eps > 0.0 && o.clip_eps < 1.0) {
            bad(
                "ppo.clip_eps",
                format!("must be in (0, 1), got {}", o.clip_eps),
            );
        }
        if o.normalize_rewards && !(o.reward_clip > 0.0 && o.reward_clip.is_finite()) {
            bad(
                "ppo.reward_clip",
                format!("must be finite and above 0, got {}", o.reward_clip),
            );
        }
        if !(o.vf_clip >= 0.0 && o.vf_clip.is_finite()) {
            bad(
                "ppo.vf_clip",
                format!("must be >= 0 (0 disables), got {}", o.vf_clip),
            );
        }
        for (k, v) in [("ppo.vf_coef", o.vf_coef), ("ppo.ent_coef", o.ent_coef)] {
            if !(v >= 0.0 && v.is_finite()) {
                bad(k, format!("must be >= 0, got {v}"));
            }
        }
        if !(o.max_grad_norm > 0.0 && o.max_grad_norm.is_finite()) {
            bad(
                "ppo.max_grad_norm",
                format!("must be > 0, got {}", o.max_grad_norm),
            );
        }
        if !(o.learning_rate > 0.0 && o.learning_rate < 1.0) {
            bad(
                "ppo.learning_rate",
                format!("must be in (0, 1), got {}", o.learning_rate),
            );
        }
        if let Some(kl) = o.target_kl {
            if !(kl > 0.0 && kl.is_finite()) {
                bad(
                    "ppo.target_kl",
                    format!("must be > 0 (omit it to disable), got {kl}"),
                );
            }
        }
        if !(o.adam_eps > 0.0 && o.adam_eps < 1.0) {
            bad(
                "ppo.adam_eps",
                format!("must be in (0, 1), got {}", o.adam_eps),
            );
        }
        let v = &self.vtrace;
        for (k, x) in [("vtrace.rho_bar", v.rho_bar), ("vtrace.c_bar", v.c_bar)] {
            if !(x > 0.0 && x.is_finite()) {
                bad(k, format!("must be > 0, got {x}"));
            }
        }
        if self.reinforce.max_held_chunks == 0 {
            bad("reinforce.max_held_chunks", "must be at least 1".into());
        }
        if self.reinforce.max_held_chunks_total < self.reinforce.max_held_chunks {
            bad(
                "reinforce.max_held_chunks_total",
                format!(
                    "must be at least reinforce.max_held_chunks ({}), got {}",
                    self.reinforce.max_held_chunks, self.reinforce.max_held_chunks_total
                ),
            );
        }
        let kl = &self.kl;
        if !(kl.coef >= 0.0 && kl.coef.is_finite()) {
            bad(
                "kl.coef",
                format!("must be >= 0 (0 disables), got {}", kl.coef),
            );
        }
        if let Some(t) = kl.target {
            if !(t > 0.0 && t.is_finite()) {
                bad(
                    "kl.target",
                    format!("must be > 0 (omit it for a fixed coef), got {t}"),
                );
            }
            if kl.coef == 0.0 {
                bad(
                    "kl.coef",
                    "must be > 0 when kl.target is set (the controller scales it)".into(),
                );
            }
        }
        if !(kl.horizon >= 1.0 && kl.horizon.is_finite()) {
            bad(
                "kl.horizon",
                format!("must be >= 1 (samples), got {}", kl.horizon),
            );
        }
        if self.sync && self.algo == Algo::Reinforce {
            // REINFORCE holds a chunk until the actor's next chunks finish its
            // episodes, and a synchronous actor acts the next chunk only after
            // an update: the run would wait forever.
            bad(
                "sync",
                "cannot be combined with algo = \"reinforce\" (it holds chunks across versions until their episodes end)".into(),
            );
        }
        if self.kl.enabled() && self.model.normalize_observations {
            // The frozen reference would see observations normalized with
            // statistics it was not trained with.
            bad(
                "model.normalize_observations",
                "cannot be combined with a KL penalty (kl.coef > 0) yet: the reference policy has no statistics of its own".into(),
            );
        }
        if self.ppo.normalize_rewards && self.algo == Algo::Reinforce {
            // Its returns from after a chunk are summed from raw rewards
            // when the episode ends, after the chunk's scale was chosen.
            bad(
                "ppo.normalize_rewards",
                "cannot be combined with algo = \"reinforce\" (its Monte-Carlo returns span chunks scaled at different times)".into(),
            );
        }
        let i = &self.ingest;
        if i.queue_capacity == 0 {
            bad("ingest.queue_capacity", "must be at least 1".into());
        }
        if i.max_chunk_bytes < 1024 {
            bad(
                "ingest.max_chunk_bytes",
                format!("must be at least 1024, got {}", i.max_chunk_bytes),
            );
        }
        for (key, v) in [
            ("ingest.max_abs_observation", i.max_abs_observation),
            ("ingest.max_abs_reward", i.max_abs_reward),
            ("ingest.max_abs_value", i.max_abs_value),
            ("ingest.max_abs_action", i.max_abs_action),
        ] {
            if !(v > 0.0 && v.is_finite()) {
                bad(key, format!("must be a finite number > 0, got {v}"));
            }
        }
        if !(i.min_behavior_logp < 0.0 && i.min_behavior_logp.is_finite()) {
            bad(
                "ingest.min_behavior_logp",
                format!("must be a finite number < 0, got {}", i.min_behavior_logp),
            );
        }
        if i.max_envs_per_actor == 0 {
            bad("ingest.max_envs_per_actor", "must be at least 1".into());
        }
        if i.max_actors == 0 {
            bad("ingest.max_actors", "must be at least 1".into());
        }
        if i.max_connections == 0 {
            bad("ingest.max_connections", "must be at least 1".into());
        }
        if i.max_queued_bytes < i.max_chunk_bytes || i.max_queued_bytes > 1 << 40 {
            bad(
                "ingest.max_queued_bytes",
                format!(
                    "must be in ingest.max_chunk_bytes ({})..=2^40, got {}",
                    i.max_chunk_bytes, i.max_queued_bytes
                ),
            );
        }
        if i.max_concurrent_streams < 2 {
            bad(
                "ingest.max_concurrent_streams",
                format!(
                    "must be at least 2 (an actor opens 2), got {}",
                    i.max_concurrent_streams
                ),
            );
        }
        for (key, v) in [
            (
                "ingest.keepalive_interval_seconds",
                i.keepalive_interval_seconds,
            ),
            (
                "ingest.keepalive_timeout_seconds",
                i.keepalive_timeout_seconds,
            ),
            (
                "ingest.stream_idle_timeout_seconds",
                i.stream_idle_timeout_seconds,
            ),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 86_400.0) {
                bad(key, format!("must be in (0, 86400] seconds, got {v}"));
            }
        }
        if p.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p))
        }
    }
}

/// Splits one `--set`/`FLOTILLA_SET` value into its assignments. A comma
/// starts a new assignment only outside brackets, braces and quotes and only
/// where a `key.path=` follows it, so `a=1,b=2` is two assignments while
/// `model.hidden_sizes=[128,128]` and `run.name=a,b` are one each. Blank
/// pieces (an empty `FLOTILLA_SET`) give nothing.
pub fn split_assignments(value: &str) -> Vec<String> {
    fn starts_assignment(rest: &str) -> bool {
        let rest = rest.trim_start();
        let key_len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            .unwrap_or(rest.len());
        key_len > 0
            && rest.as_bytes()[0].is_ascii_alphabetic()
            && rest[key_len..].trim_start().starts_with('=')
    }
    let mut out = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None::<char>, 0);
    // The last character outside whitespace: a quote opens a string only
    // where a TOML value starts (after `=`, `[`, `{` or `,`), so the
    // apostrophe of `run.name=don't` is just a character.
    let (mut last, mut escaped) = ('=', false);
    for (i, c) in value.char_indices() {
        match (quote, c) {
            (Some('"'), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if matches!(last, '=' | '[' | '{' | ',') => quote = Some(c),
            (None, '[' | '{') => depth += 1,
            (None, ']' | '}') => depth -= 1,
            (None, ',') if depth <= 0 && starts_assignment(&value[i + 1..]) => {
                out.push(value[start..i].to_owned());
                start = i + 1;
            }
            _ => {}
        }
        escaped = false;
        if !c.is_whitespace() {
            last = c;
        }
    }
    out.push(value[start..].to_owned());
    out.retain(|s| !s.trim().is_empty());
    out
}

/// Applies one `key.path=value` override. The value is read as a TOML value
/// (`4`, `0.5`, `true`, `[64, 64]`, `"text"`); anything that is not valid TOML
/// is taken as a string, so `--set env.id=Acrobot-v1` works unquoted.
fn apply_override(table: &mut toml::Table, entry: &str) -> Result<(), ConfigError> {
    let err = |message: &str| ConfigError::Override {
        entry: entry.to_owned(),
        message: message.to_owned(),
    };
    let (path, raw) = entry
        .split_once('=')
        .ok_or_else(|| err("expected key.path=value"))?;
    let keys: Vec<&str> = path.trim().split('.').collect();
    if keys.iter().any(|k| k.is_empty()) {
        return Err(err("empty key in path"));
    }
    let raw = raw.trim();
    let value = format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()));
    let (last, parents) = keys.split_last().ok_or_else(|| err("empty key"))?;
    let mut cur = table;
    for k in parents {
        let entry = cur
            .entry((*k).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| err(&format!("`{k}` is not a table")))?;
    }
    cur.insert((*last).to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[env]\nid = \"CartPole-v1\"\n";

    #[test]
    fn a_comma_starts_a_new_assignment_only_before_a_key() {
        let split = |s: &str| split_assignments(s);
        assert_eq!(split("a=1,b.c=2"), ["a=1", "b.c=2"]);
        assert_eq!(split("a=1, b = 2"), ["a=1", " b = 2"]);
        assert_eq!(
            split("model.hidden_sizes=[128,128]"),
            ["model.hidden_sizes=[128,128]"]
        );
        assert_eq!(
            split("model.hidden_sizes=[128, 128],ppo.update_epochs=4"),
            ["model.hidden_sizes=[128, 128]", "ppo.update_epochs=4"]
        );
        assert_eq!(split("run.name=a,b"), ["run.name=a,b"]);
        assert_eq!(split("x=\"p,q=1\",y=2"), ["x=\"p,q=1\"", "y=2"]);
        assert_eq!(split("t={a=1,b=2}"), ["t={a=1,b=2}"]);
        // An apostrophe inside an unquoted value opens no string.
        assert_eq!(
            split("run.name=don't,ppo.update_epochs=2"),
            ["run.name=don't", "ppo.update_epochs=2"]
        );
        // An escaped quote does not close a string.
        assert_eq!(split(r#"x="a\",b=1",y=2"#), [r#"x="a\",b=1""#, "y=2"]);
        assert!(split("").is_empty() && split("  ").is_empty());
        let c = RunConfig::from_toml(
            MINIMAL,
            "t",
            &split("model.hidden_sizes=[128,128],ppo.update_epochs=3"),
        )
        .unwrap();
        assert_eq!(c.model.hidden_sizes, [128, 128]);
        assert_eq!(c.ppo.update_epochs, 3);
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let c = RunConfig::from_toml(MINIMAL, "t", &[]).unwrap();
        assert_eq!(c.ppo, PpoSection::default());
        assert_eq!(c.env.id, "CartPole-v1");
    }

    #[test]
    fn overrides_reach_nested_keys_with_typed_values() {
        let c = RunConfig::from_toml(
            MINIMAL,
            "t",
            &[
                "ppo.batch_size=1024".into(),
                "model.hidden_sizes=[32, 32]".into(),
                "env.id=Acrobot-v1".into(),
                "ppo.target_kl=0.02".into(),
            ],
        )
        .unwrap();
        assert_eq!(c.ppo.batch_size, 1024);
        assert_eq!(c.model.hidden_sizes, vec![32, 32]);
        assert_eq!(c.env.id, "Acrobot-v1");
        assert_eq!(c.ppo.target_kl, Some(0.02));
    }

    #[test]
    fn unknown_key_is_named_with_accepted_keys() {
        let e = RunConfig::from_toml(MINIMAL, "t", &["ppo.batchsize=3".into()]).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("batchsize") && m.contains("batch_size"), "{m}");
        let e = RunConfig::from_toml(&format!("{MINIMAL}[bogus]\nx = 1\n"), "t", &[]).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn wrong_type_names_the_key() {
        let e = RunConfig::from_toml(MINIMAL, "t", &["ppo.gamma=\"high\"".into()]).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("gamma"), "{m}");
    }

    #[test]
    fn impossible_values_are_all_reported() {
        let e = RunConfig::from_toml(
            MINIMAL,
            "t",
            &[
                "ppo.batch_size=2".into(),
                "ppo.num_minibatches=4".into(),
                "ppo.gamma=1.5".into(),
                "rollout.chunk_len=0".into(),
            ],
        )
        .unwrap_err();
        let m = e.to_string();
        for k in ["ppo.num_minibatches", "ppo.gamma", "rollout.chunk_len"] {
            assert!(m.contains(k), "{m} should name {k}");
        }
    }

    #[test]
    fn normalization_keys_are_checked() {
        let e = RunConfig::from_toml(
            MINIMAL,
            "t",
            &[
                "model.normalize_observations=true".into(),
                "model.observation_clip=0".into(),
                "ppo.normalize_rewards=true".into(),
                "ppo.reward_clip=-1".into(),
                "algo=\"reinforce\"".into(),
                "kl.coef=0.1".into(),
            ],
        )
        .unwrap_err();
        let m = e.to_string();
        for k in [
            "model.observation_clip",
            "ppo.reward_clip",
            "ppo.normalize_rewards",
            "model.normalize_observations",
        ] {
            assert!(m.contains(k), "{m} should name {k}");
        }
        let c = RunConfig::from_toml(MINIMAL, "t", &["model.normalize_observations=true".into()])
            .unwrap();
        let back = RunConfig::from_toml(&c.to_toml(), "t", &[]).unwrap();
        assert!(back.model.normalize_observations && back.model.observation_clip == 10.0);
    }

    #[test]
    fn eval_needs_episodes_and_a_builtin_environment() {
        let c = RunConfig::from_toml("[env]\nid = \"CartPole-v1\"\n", "t", &[]).unwrap();
        assert_eq!(c.eval.every_updates, 0, "off by default");
        let e = RunConfig::from_toml(
            "[env]\nid = \"CartPole-v1\"\n[eval]\nevery_updates = 5\nepisodes = 0\n",
            "t",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("eval.episodes"), "{e}");
        let e = RunConfig::from_toml(
            "[env]\nid = \"Gym-v0\"\nsource = \"external\"\n",
            "t",
            &["eval.every_updates=5".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("eval.every_updates") && e.contains("external"),
            "{e}"
        );
        let e = RunConfig::from_toml("[env]\nid = \"CartPole-v1\"\n[eval]\nevery = 5\n", "t", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("every"), "{e}");
    }

    #[test]
    fn an_external_env_takes_any_id_and_no_other_keys() {
        let c = RunConfig::from_toml(
            "[env]\nid = \"HalfCheetah-v5\"\nsource = \"external\"\n",
            "t",
            &[],
        )
        .unwrap();
        assert!(c.env.is_external());
        assert_eq!(c.env.id, "HalfCheetah-v5");
        let back = RunConfig::from_toml(&c.to_toml(), "t", &[]).unwrap();
        assert_eq!(back.env, c.env);
        let e = RunConfig::from_toml(
            "[env]\nid = \"HalfCheetah-v5\"\nsource = \"external\"\nmax_episode_steps = 9\n",
            "t",
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("env.max_episode_steps") && e.contains("--env-kwargs"),
            "{e}"
        );
        let e = RunConfig::from_toml("[env]\nid = \"X\"\nsource = \"plugin\"\n", "t", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("source"), "{e}");
    }

    #[test]
    fn unknown_env_id_lists_the_valid_ones() {
        let e = RunConfig::from_toml("[env]\nid = \"Pong-v5\"\n", "t", &[]).unwrap_err();
        let m = e.to_string();
        assert!(m.contains("Pong-v5") && m.contains("CartPole-v1"), "{m}");
    }

    #[test]
    fn config_round_trips_through_toml() {
        let c = RunConfig::from_toml(MINIMAL, "t", &["ppo.vf_clip=0.3".into()]).unwrap();
        let back = RunConfig::from_toml(&c.to_toml(), "t", &[]).unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn algorithm_keys_parse_round_trip_and_are_checked() {
        let text = "algo = \"vtrace\"\nsync = true\n[env]\nid = \"CartPole-v1\"\n[vtrace]\nrho_bar = 2.0\n[kl]\ncoef = 0.1\ntarget = 6.0\n";
        let c = RunConfig::from_toml(text, "t", &[]).unwrap();
        assert_eq!(
            (c.algo, c.sync, c.vtrace.rho_bar),
            (Algo::Vtrace, true, 2.0)
        );
        assert_eq!(c.algo_name(), "IMPALA (V-trace)");
        assert_eq!(RunConfig::from_toml(&c.to_toml(), "t", &[]).unwrap(), c);
        let c = RunConfig::from_toml(MINIMAL, "t", &["algo=a2c".into()]).unwrap();
        assert_eq!(c.algo, Algo::A2c);
        let bad = |sets: &[&str], key: &str| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let m = RunConfig::from_toml(MINIMAL, "t", &sets)
                .unwrap_err()
                .to_string();
            assert!(m.contains(key), "{m} should name {key}");
        };
        bad(&["algo=sarsa"], "algo");
        bad(&["ppo.advantage=retrace"], "advantage");
        bad(&["vtrace.c_bar=0"], "vtrace.c_bar");
        bad(&["kl.coef=-1"], "kl.coef");
        bad(&["kl.target=0.1"], "kl.coef");
        bad(&["kl.horizon=0"], "kl.horizon");
        bad(&["sync=true", "algo=reinforce"], "sync");
        bad(&["run.frames_per_step=0"], "run.frames_per_step");
        bad(
            &["reinforce.max_held_chunks=0"],
            "reinforce.max_held_chunks",
        );
    }

    #[test]
    fn the_nature_preset_fills_what_the_config_leaves_unset() {
        let c = RunConfig::from_toml(MINIMAL, "t", &["model.preset=\"nature\"".into()]).unwrap();
        assert_eq!(c.model, ModelSpec::nature());
        let text = "[env]\nid = \"CartPole-v1\"\n[model]\npreset = \"nature\"\nhidden_sizes = [256]\nconv = [{ channels = 8, kernel = 4, stride = 2 }]\n";
        let c = RunConfig::from_toml(text, "t", &[]).unwrap();
        assert_eq!(c.model.hidden_sizes, [256]);
        assert_eq!((c.model.conv.len(), c.model.conv[0].channels), (1, 8));
        assert!(c.model.shared_torso && c.model.observation_scale == 1.0 / 255.0);
        // The expanded config is what checkpoints store; it reads back alone.
        assert_eq!(RunConfig::from_toml(&c.to_toml(), "t", &[]).unwrap(), c);
        for (set, key) in [
            ("model.preset=\"impala\"", "model.preset"),
            ("model.preset=3", "model.preset"),
            ("model.observation_scale=0", "model.observation_scale"),
            ("model.conv=[{channels=0,kernel=3,stride=1}]", "model.conv"),
            ("model.conv=[{channels=4,kernel=3}]", "stride"),
        ] {
            let m = RunConfig::from_toml(MINIMAL, "t", &[set.into()])
                .unwrap_err()
                .to_string();
            assert!(m.contains(key), "{set}: {m} should name {key}");
        }
    }

    #[test]
    fn malformed_override_is_an_error() {
        assert!(RunConfig::from_toml(MINIMAL, "t", &["ppo.gamma".into()]).is_err());
        assert!(RunConfig::from_toml(MINIMAL, "t", &["env.id.x=1".into()]).is_err());
    }
}
