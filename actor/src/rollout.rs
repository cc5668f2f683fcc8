//! `actor rollout`: play episodes locally and write a JSON Lines trace.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use flotilla_common::env::{EnvSpec, ENV_IDS};
use flotilla_common::rollout::{play, EpisodeSummary, RandomPolicy};

/// Arguments of `actor rollout`.
#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    /// Environment id (one of the registry's ids, e.g. CartPole-v1). Overrides
    /// the id in --config.
    #[arg(long)]
    pub env: Option<String>,
    /// A run config (TOML with an `[env]` table) or a bare environment table.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Number of episodes to play.
    #[arg(long, default_value_t = 1)]
    pub episodes: u64,
    /// Seed of the environment and of the policy's sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the JSON Lines trace (one object per step).
    #[arg(long)]
    pub out: PathBuf,
}

/// Reads the environment spec from a config file: either a run config with an
/// `[env]` table or a file that is only the environment's table.
pub fn load_env_spec(path: &Path) -> anyhow::Result<EnvSpec> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
    let env = match table.remove("env") {
        Some(toml::Value::Table(t)) => t,
        Some(_) => bail!("{}: key `env` must be a table", path.display()),
        None => table,
    };
    env.try_into()
        .with_context(|| format!("{}: invalid `[env]` table", path.display()))
}

/// Runs `actor rollout` and returns the episode summaries.
pub fn run(args: &RolloutArgs) -> anyhow::Result<Vec<EpisodeSummary>> {
    let mut spec = match &args.config {
        Some(path) => load_env_spec(path)?,
        None => match &args.env {
            Some(id) => EnvSpec::new(id.clone()),
            None => bail!(
                "give --env ID or --config FILE; valid ids are: {}",
                ENV_IDS.join(", ")
            ),
        },
    };
    if let Some(id) = &args.env {
        spec.id = id.clone();
    }
    if args.episodes == 0 {
        bail!("--episodes must be at least 1");
    }
    let mut env = spec.make()?;
    let mut policy = RandomPolicy::new(env.action_space().clone(), args.seed ^ 0x5eed_5eed);
    let file = File::create(&args.out)
        .with_context(|| format!("creating trace file {}", args.out.display()))?;
    let mut out = BufWriter::new(file);
    let summaries = play(
        env.as_mut(),
        args.episodes,
        args.seed,
        &mut |o| policy.act(o),
        &mut out,
    )
    .with_context(|| format!("writing trace file {}", args.out.display()))?;
    Ok(summaries)
}

/// Mean and (population) standard deviation of the episode returns.
pub fn mean_std(summaries: &[EpisodeSummary]) -> (f64, f64) {
    let n = summaries.len() as f64;
    let mean = summaries.iter().map(|s| s.ret).sum::<f64>() / n;
    let var = summaries
        .iter()
        .map(|s| (s.ret - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}
