//! `actor rollout`: play episodes locally, with a random policy or a trained
//! one from a learner checkpoint, and write a JSON Lines trace.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use flotilla_common::checkpoint::{self, CheckpointFile};
use flotilla_common::env::{EnvSpec, ENV_IDS};
use flotilla_common::model::ModelSpec;
use flotilla_common::policy::CpuPolicy;
use flotilla_common::render::{Frame, PALETTE};
use flotilla_common::rollout::{
    play, play_watched, policy_player, Action, EpisodeSummary, RandomPolicy,
};

use crate::OwnEnv;

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
    /// Play a trained policy from a learner checkpoint instead of a random
    /// policy; the environment comes from the checkpoint's run config unless
    /// --env or --config is given.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// With --checkpoint: take the most likely action (the Gaussian mean)
    /// instead of sampling.
    #[arg(long, requires = "checkpoint")]
    pub greedy: bool,
    /// Also write the episodes as an animated GIF (the built-in
    /// environments; TextMatch as text frames).
    #[arg(long)]
    pub video: Option<PathBuf>,
    /// Frames per second of --video (the environment's steps per second of
    /// real time: 50 for CartPole, 15 for Acrobot, 30 for MountainCar and
    /// Pendulum, 4 for Maze and TextMatch, as Gymnasium's render_fps).
    #[arg(long)]
    pub video_fps: Option<u16>,
}

/// A policy as the rollout loop calls it: observation in, action out.
type PolicyFn = dyn FnMut(&[f32]) -> Action;

/// A trained policy read from a learner checkpoint.
pub struct CheckpointPolicy {
    pub env: EnvSpec,
    pub model: ModelSpec,
    pub version: String,
    /// The `model/*` tensors re-serialized under their spec names.
    pub safetensors: Vec<u8>,
}

/// Largest checkpoint file read (a guard against reading arbitrary files whole).
const MAX_CHECKPOINT_BYTES: u64 = 2 << 30;

/// Reads the policy and its run's `[env]` and `[model]` from a checkpoint.
pub fn load_checkpoint(path: &Path) -> anyhow::Result<CheckpointPolicy> {
    let file = CheckpointFile::read(path, MAX_CHECKPOINT_BYTES)
        .with_context(|| format!("checkpoint {}", path.display()))?;
    let config = file.get(checkpoint::key::CONFIG).with_context(|| {
        format!(
            "checkpoint {} has no run config in its metadata",
            path.display()
        )
    })?;
    let mut table: toml::Table = toml::from_str(config).context("checkpoint's run config")?;
    let env: EnvSpec = match table.remove("env") {
        Some(v) => v.try_into().context("checkpoint's [env]")?,
        None => bail!("checkpoint's run config has no [env]"),
    };
    let model: ModelSpec = match table.remove("model") {
        Some(v) => v.try_into().context("checkpoint's [model]")?,
        None => ModelSpec::default(),
    };
    Ok(CheckpointPolicy {
        env,
        model,
        version: file
            .get(checkpoint::key::VERSION)
            .unwrap_or_default()
            .to_owned(),
        safetensors: file.policy_safetensors(),
    })
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
    run_with(args, None)
}

/// [`run`] for an actor that brings its own environment: without `--env`
/// or `--config`, episodes are played in `own`.
pub fn run_with(args: &RolloutArgs, own: Option<&OwnEnv>) -> anyhow::Result<Vec<EpisodeSummary>> {
    let trained = args
        .checkpoint
        .as_deref()
        .map(load_checkpoint)
        .transpose()?;
    if args.episodes == 0 {
        bail!("--episodes must be at least 1");
    }
    let own = own.filter(|_| args.config.is_none() && args.env.is_none());
    if let (Some(own), Some(t)) = (own, &trained) {
        if t.env.id != own.id() {
            bail!(
                "the checkpoint was trained on `{}`, this actor brings `{}`",
                t.env.id,
                own.id()
            );
        }
    }
    let mut spec = match (&args.config, &args.env, &trained) {
        (Some(path), _, _) => load_env_spec(path)?,
        (None, Some(id), _) => EnvSpec::new(id.clone()),
        (None, None, Some(t)) => t.env.clone(),
        (None, None, None) if own.is_some() => EnvSpec::external(own.map_or("", OwnEnv::id)),
        (None, None, None) => bail!(
            "give --env ID, --config FILE or --checkpoint FILE; valid ids are: {}",
            ENV_IDS.join(", ")
        ),
    };
    if let Some(id) = &args.env {
        spec.id = id.clone();
    }
    let mut env = match own {
        Some(own) => own.make(),
        None => spec.make()?,
    };
    let space = env.action_space().clone();
    let obs_shape = env.observation_space().shape();
    let mut act: Box<PolicyFn> = match trained {
        None => {
            let mut policy = RandomPolicy::new(space, args.seed ^ 0x5eed_5eed);
            Box::new(move |o: &[f32]| policy.act(o))
        }
        Some(t) => {
            let policy = CpuPolicy::from_safetensors(&t.model, &obs_shape, &space, &t.safetensors)
                .context("the checkpoint's policy does not fit this environment")?;
            Box::new(policy_player(policy, args.greedy, args.seed))
        }
    };
    let file = File::create(&args.out)
        .with_context(|| format!("creating trace file {}", args.out.display()))?;
    let mut out = BufWriter::new(file);
    let Some(video) = &args.video else {
        let summaries = play(env.as_mut(), args.episodes, args.seed, &mut act, &mut out)
            .with_context(|| format!("writing trace file {}", args.out.display()))?;
        return Ok(summaries);
    };
    if env.render().is_none() {
        bail!("`{}` has no pictures to make a video of", env.id());
    }
    let fps = args.video_fps.unwrap_or_else(|| default_fps(env.id()));
    let mut frames = Vec::new();
    let summaries = play_watched(
        env.as_mut(),
        args.episodes,
        args.seed,
        &mut act,
        &mut out,
        &mut |e| frames.extend(e.render()),
    )
    .with_context(|| format!("writing trace file {}", args.out.display()))?;
    write_gif(video, &frames, fps)?;
    Ok(summaries)
}

/// Gymnasium's `render_fps` of each built-in environment (4 for the two
/// that have none there).
fn default_fps(id: &str) -> u16 {
    match id {
        "CartPole-v1" => 50,
        "Acrobot-v1" => 15,
        "MountainCar-v0" | "Pendulum-v1" => 30,
        _ => 4,
    }
}

/// Writes `frames` as an animated GIF at `fps` (GIF delays are in 1/100 s),
/// looping forever, in the palette of [`flotilla_common::render`].
pub fn write_gif(path: &Path, frames: &[Frame], fps: u16) -> anyhow::Result<()> {
    let first = frames.first().context("no frames to write")?;
    let (w, h) = (
        u16::try_from(first.width).context("frame too wide for a GIF")?,
        u16::try_from(first.height).context("frame too tall for a GIF")?,
    );
    let palette: Vec<u8> = PALETTE.iter().flatten().copied().collect();
    let file = File::create(path).with_context(|| format!("creating video {}", path.display()))?;
    let mut encoder = gif::Encoder::new(BufWriter::new(file), w, h, &palette)
        .with_context(|| format!("writing video {}", path.display()))?;
    encoder.set_repeat(gif::Repeat::Infinite)?;
    let delay = (100 / fps.max(1)).max(2);
    for frame in frames {
        let mut f = gif::Frame::from_indexed_pixels(w, h, frame.pixels.clone(), None);
        f.delay = delay;
        encoder
            .write_frame(&f)
            .with_context(|| format!("writing video {}", path.display()))?;
    }
    Ok(())
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
