//! One training run, composed from its stages: the state (fresh or resumed),
//! the trainer thread, the gRPC server and the progress line — and an orderly
//! end.
//!
//! The learner knows nothing of actors beyond the wire: in-process actors (the
//! local cluster) are composed outside this crate and connect over loopback
//! like any other. The caller installs the Prometheus exporter and passes the
//! shutdown signal.

use std::fmt;
use std::fs::OpenOptions;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_common::auth::AuthToken;
use flotilla_common::chunk::{ChunkExpectations, ValueBounds};
use flotilla_common::metrics as m;
use flotilla_common::space::Dtype;
use flotilla_common::{EnvError, RunSpec, Snapshot, Space, Spaces};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tonic::transport::ServerTlsConfig;
use tracing::{info, warn};

use crate::algo::episodes::EpisodeStitcher;
use crate::algo::KlController;
use crate::checkpoint::{self, CheckpointData};
use crate::config::{Algo, ConfigError, IngestSection, RunConfig};
use crate::device::{DeviceChoice, DeviceError};
use crate::live::{Live, LiveRun};
use crate::model::{ModelError, Policy};
use crate::server::{
    self, Admitted, IngestGate, LearnerService, ServerOptions, ServerTask, ServiceLimits,
    SessionLimits,
};
use crate::tensorboard::EventWriter;
use crate::train::batcher::{Batcher, StalenessRule};
use crate::train::eval;
use crate::train::learn::{KlPenalty, Learning};
use crate::train::publisher::Pacing;
use crate::train::publisher::Publisher;
use crate::train::recorder::{self, Counters, Recorder};
use crate::train::threads::TorchThreads;
use crate::train::{self, Checkpoints, TrainError, TrainSummary, Trainer};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: RunConfig,
    pub run_dir: PathBuf,
    pub listen: SocketAddr,
    pub device: DeviceChoice,
    pub resume: bool,
    /// Start a new run even though the run directory holds checkpoints that
    /// cannot be resumed: they (and `metrics.jsonl`) are moved aside first.
    pub force_new: bool,
    /// Serve off-loopback without a shared token (otherwise refused).
    pub insecure: bool,
    /// Shared token every gRPC call must carry (`None`: no authentication).
    pub auth_token: Option<AuthToken>,
    /// Serve gRPC over TLS (`None`: plaintext).
    pub tls: Option<ServerTlsConfig>,
    /// libtorch intra-op threads of the trainer (`None`: measured over the
    /// first updates, see [`crate::train::threads`]).
    pub torch_threads: Option<usize>,
    /// The live page's handle, filled in once the run has started.
    pub live: Option<Arc<Live>>,
}

/// Errors that end a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Env(#[from] EnvError),
    #[error("run directory {0} already holds checkpoints; pass --resume to continue it, --force-new to set them aside and start over, or choose another --run-dir")]
    RunDirInUse(PathBuf),
    #[error("--resume: no checkpoint in {} can be resumed with this config:\n{}\npass --force-new to set them aside and start a new run, or fix the config (the run's own is in its config.toml)", run_dir.display(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    NothingToResume {
        run_dir: PathBuf,
        problems: Vec<String>,
    },
    #[error("--listen {0} is reachable from other machines and no shared token is set, so anyone who reaches it could join the run and feed it data: set FLOTILLA_AUTH_TOKEN or --auth-token-file, listen on 127.0.0.1, or pass --insecure (FLOTILLA_INSECURE=true) to accept that")]
    OpenWithoutToken(SocketAddr),
    #[error("checkpoint's config: {0}")]
    CheckpointConfig(ConfigError),
    #[error(
        "the checkpoint was trained with a different [env] or [model]; resume with the same config"
    )]
    ConfigMismatch,
    #[error("[model] does not fit the environment's observations: {0}")]
    ModelDoesNotFit(ConfigError),
    #[error("kl.reference: {0}")]
    KlReference(checkpoint::CheckpointError),
    #[error("kl.reference {path}: {source}")]
    KlReferenceModel { path: String, source: ModelError },
    #[error("checkpoint {path}: {source}")]
    Restore { path: PathBuf, source: ModelError },
    #[error("TLS (--tls-cert, --tls-key, --tls-client-ca): {}", flotilla_common::cli::error_chain(.0))]
    Tls(tonic::transport::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("gRPC server: {0}")]
    Server(tonic::transport::Error),
    #[error("the trainer thread panicked")]
    TrainerPanicked,
    #[error("stopped before the run started: no actor declared the external environment's spaces, so no checkpoint was written")]
    StoppedBeforeStart,
}

impl RunError {
    /// Whether the run could not start because of how it was invoked: its
    /// config, flags or files (exit code 64) rather than the machine or a bug.
    pub fn is_usage(&self) -> bool {
        match self {
            RunError::Device(_)
            | RunError::Env(_)
            | RunError::RunDirInUse(_)
            | RunError::NothingToResume { .. }
            | RunError::OpenWithoutToken(_)
            | RunError::CheckpointConfig(_)
            | RunError::ConfigMismatch
            | RunError::ModelDoesNotFit(_)
            | RunError::KlReference(_)
            | RunError::KlReferenceModel { .. }
            | RunError::Restore { .. }
            | RunError::Tls(_) => true,
            RunError::Listen { .. }
            | RunError::Io { .. }
            | RunError::Train(_)
            | RunError::Server(_)
            | RunError::TrainerPanicked
            | RunError::StoppedBeforeStart => false,
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let context = context.into();
    move |source| RunError::Io { context, source }
}

/// The end of a run.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub train: TrainSummary,
    pub wall_seconds: f64,
    pub episodes: u64,
    /// Transitions of every valid, new chunk received (trained, stale or
    /// still pending when the run ended).
    pub samples_received: u64,
    pub mean_return: Option<f64>,
    /// `learning_curve.png` in the run directory, when there was a curve to draw.
    pub learning_curve: Option<PathBuf>,
}

impl RunSummary {
    /// The summary as one JSON object (`--summary-json`): the same facts as
    /// the text, for scripts and tests.
    pub fn to_json(&self) -> serde_json::Value {
        let t = &self.train;
        let path = |p: &Path| p.display().to_string();
        serde_json::json!({
            "finished": t.reached_total,
            "env_steps": t.env_steps,
            "policy_version": t.version,
            "wall_seconds": self.wall_seconds,
            "episodes": self.episodes,
            "samples_received": self.samples_received,
            "mean_return": self.mean_return,
            "run_dir": path(&self.run_dir),
            "learning_curve": self.learning_curve.as_deref().map(path),
            "final_checkpoint": t.final_checkpoint.as_deref().map(path),
        })
    }
}

impl fmt::Display for RunSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.train;
        writeln!(
            f,
            "run {}: {} env steps trained in {:.1}s ({:.0}/s), policy version {}, {} episodes",
            if t.reached_total {
                "finished"
            } else {
                "stopped"
            },
            t.env_steps,
            self.wall_seconds,
            t.env_steps as f64 / self.wall_seconds.max(1e-9),
            t.version,
            self.episodes
        )?;
        match self.mean_return {
            Some(r) => writeln!(f, "mean return of the last 100 episodes: {r:.2}")?,
            None => writeln!(f, "no episode finished")?,
        }
        writeln!(f, "run directory: {}", self.run_dir.display())?;
        if let Some(p) = &self.learning_curve {
            writeln!(f, "learning curve: {}", p.display())?;
        }
        match &t.final_checkpoint {
            Some(p) => write!(f, "final checkpoint: {}", p.display()),
            None => write!(f, "no checkpoint written"),
        }
    }
}

type TrainerResult = std::thread::Result<Result<TrainSummary, TrainError>>;

/// Stops a [`Learner`] from anywhere: see [`Learner::stop_handle`].
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A learner that is serving and training.
pub struct Learner {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    run_dir: PathBuf,
    title: String,
    started: Instant,
    trainer_done: oneshot::Receiver<TrainerResult>,
    server: ServerTask,
    server_stop: watch::Sender<bool>,
    printer: tokio::task::JoinHandle<()>,
}

impl Learner {
    /// The gRPC address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Asks the trainer to stop after its current update (it then checkpoints).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// A handle that stops this learner as [`Learner::stop`] does, for code
    /// that does not hold the learner (e.g. a failing in-process actor).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Waits for the trainer to finish (budget spent or stopped), then drains
    /// the server for at most a few seconds.
    pub async fn wait(self) -> Result<RunSummary, RunError> {
        self.wait_then(async {}).await
    }

    /// Like [`Learner::wait`], but runs `before_drain` between the end of
    /// training and the server's drain: the place to stop in-process actors,
    /// whose streams would otherwise hold the drain open.
    pub async fn wait_then(
        self,
        before_drain: impl Future<Output = ()>,
    ) -> Result<RunSummary, RunError> {
        let result = self
            .trainer_done
            .await
            .map_err(|_| RunError::TrainerPanicked)?;
        before_drain.await;
        let _ = self.server_stop.send(true);
        match tokio::time::timeout(Duration::from_secs(5), self.server).await {
            Ok(Ok(r)) => r.map_err(RunError::Server)?,
            Ok(Err(_)) => warn!("server task ended abnormally"),
            Err(_) => warn!("open streams did not close within 5s; leaving them"),
        }
        self.printer.abort();
        let train = result.map_err(|_| RunError::TrainerPanicked)??;
        let learning_curve = match crate::plot::plot_run(&self.run_dir, &self.title) {
            Ok(p) => Some(p),
            Err(e) => {
                warn!(error = %e, "no learning curve drawn");
                None
            }
        };
        Ok(RunSummary {
            learning_curve,
            run_dir: self.run_dir,
            train,
            wall_seconds: self.started.elapsed().as_secs_f64(),
            episodes: self.counters.episodes.load(Ordering::Relaxed),
            samples_received: self.counters.samples_received.load(Ordering::Relaxed),
            mean_return: self.counters.mean_return(),
        })
    }
}

fn new_run_id(seed: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ seed.rotate_left(32) ^ u64::from(std::process::id());
    // splitmix64 finalizer: spreads the bits of the mix above
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", x ^ (x >> 31))
}

/// What a run starts from: its spaces, a fresh or restored learning state and
/// its identity.
struct Prepared {
    observation_space: Space,
    action_space: Space,
    run_id: String,
    learning: Learning,
    counters: Counters,
    /// The version to publish first (the checkpoint's, or 0).
    version: u64,
}

/// The run's spaces when they are known before any actor says `Hello`: a
/// built-in environment's, or those an external environment's checkpoints
/// recorded when resuming. `None`: the first declaring actor tells them.
fn known_spaces(opts: &RunOptions) -> Result<Option<Spaces>, RunError> {
    let env = &opts.config.env;
    if !env.is_external() {
        let e = env.make()?;
        return Ok(Some(Spaces {
            observation: e.observation_space().clone(),
            action: e.action_space().clone(),
        }));
    }
    Ok(opts
        .resume
        .then(|| checkpoint::recorded_spaces(&opts.run_dir))
        .flatten())
}

/// Creates the learning state for `spaces`, resuming from the newest usable
/// checkpoint when asked to.
fn prepare(opts: &RunOptions, device: tch::Device, spaces: Spaces) -> Result<Prepared, RunError> {
    let cfg = &opts.config;
    let Spaces {
        observation: observation_space,
        action: action_space,
    } = spaces;
    let obs_shape = observation_space.shape();
    let expected = cfg.model.parameter_shapes(&obs_shape, &action_space);
    let resumed = find_resume_point(opts, &expected)?;
    let run_id = resumed
        .as_ref()
        .map(|(_, d)| d.meta.run_id.clone())
        .unwrap_or_else(|| new_run_id(cfg.run.seed));
    std::fs::write(opts.run_dir.join("config.toml"), cfg.to_toml())
        .map_err(io_err("writing config.toml"))?;
    tch::manual_seed(cfg.run.seed as i64);
    let policy = Policy::new(&cfg.model, &obs_shape, &action_space, device, cfg.run.seed);
    let kl = kl_penalty(
        cfg,
        &obs_shape,
        &action_space,
        device,
        &expected,
        resumed.as_ref(),
    )?;
    let mut learning = Learning::new(policy, kl, cfg);
    let counters = Counters::default();
    let mut version = 0;
    if resumed.is_none() {
        // A new run: rows left by one that crashed before its first
        // checkpoint would be logged again with the same versions.
        let dropped = trim_metrics_log(&opts.run_dir.join("metrics.jsonl"), 0)
            .map_err(io_err("trimming metrics.jsonl"))?;
        if dropped > 0 {
            info!(
                dropped_log_rows = dropped,
                "metrics.jsonl: dropped the rows of a run that ended before its first checkpoint"
            );
        }
    }
    if let Some((path, data)) = &resumed {
        train::restore(&mut learning, &counters, &run_id, data).map_err(|source| {
            RunError::Restore {
                path: path.clone(),
                source,
            }
        })?;
        version = data.meta.version;
        let dropped = trim_metrics_log(&opts.run_dir.join("metrics.jsonl"), version)
            .map_err(io_err("trimming metrics.jsonl to the resumed version"))?;
        info!(
            path = %path.display(),
            version,
            env_steps = data.meta.env_steps,
            dropped_log_rows = dropped,
            "resumed from checkpoint"
        );
    }
    Ok(Prepared {
        observation_space,
        action_space,
        run_id,
        learning,
        counters,
        version,
    })
}

/// Keeps the rows of a metrics log up to `version`, in place (write aside,
/// then rename): rows past the resumed checkpoint, logged before a crash,
/// would otherwise appear twice once those versions are trained again. A
/// torn last line goes too. Returns how many rows were dropped.
fn trim_metrics_log(path: &Path, version: u64) -> std::io::Result<usize> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let keep = |line: &str| {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|row| row["version"].as_u64())
            .is_some_and(|v| v <= version)
    };
    let mut kept = String::with_capacity(text.len());
    let mut dropped = 0;
    for line in text.lines() {
        if keep(line) {
            kept.push_str(line);
            kept.push('\n');
        } else {
            dropped += 1;
        }
    }
    if dropped > 0 {
        use std::io::Write;
        let tmp = path.with_extension("jsonl.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(kept.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(dropped)
}

/// The checkpoint to resume from: `None` for a new run. A run directory with
/// checkpoints is only reused with `--resume`, and only with the same
/// `[env]` and `[model]`; when none of its checkpoints can be resumed the
/// run refuses to start (naming each file and why) unless `--force-new`
/// says to set them aside and start over.
fn find_resume_point(
    opts: &RunOptions,
    expected: &[(String, Vec<usize>)],
) -> Result<Option<(PathBuf, CheckpointData)>, RunError> {
    checkpoint::remove_temp_files(&opts.run_dir);
    let present = !checkpoint::list(&opts.run_dir).is_empty();
    if !opts.resume {
        if present && !opts.force_new {
            return Err(RunError::RunDirInUse(opts.run_dir.clone()));
        }
        set_aside(&opts.run_dir)?;
        return Ok(None);
    }
    let latest = checkpoint::find_latest(&opts.run_dir, expected);
    let mismatch = match latest.found {
        Some((path, data)) => {
            let old = RunConfig::from_toml(&data.meta.config_toml, "checkpoint", &[])
                .map_err(RunError::CheckpointConfig)?;
            if old.env == opts.config.env && old.model == opts.config.model {
                return Ok(Some((path, data)));
            }
            if !opts.force_new {
                return Err(RunError::ConfigMismatch);
            }
            format!(
                "{}: trained with a different [env] or [model]",
                path.display()
            )
        }
        None if latest.skipped.is_empty() => {
            info!(run_dir = %opts.run_dir.display(), "no checkpoint yet; starting a new run");
            return Ok(None);
        }
        None if !opts.force_new => {
            return Err(RunError::NothingToResume {
                run_dir: opts.run_dir.clone(),
                problems: latest.skipped.iter().map(|(_, e)| e.to_string()).collect(),
            });
        }
        None => format!("{} unusable checkpoint(s)", latest.skipped.len()),
    };
    warn!(run_dir = %opts.run_dir.display(), reason = %mismatch, "--force-new: starting a new run");
    set_aside(&opts.run_dir)?;
    Ok(None)
}

/// Moves an earlier run's checkpoints and metrics log out of the way
/// (`checkpoints.replaced-<unix time>/`, `metrics.replaced-<unix time>.jsonl`),
/// so the new run neither mixes with nor deletes them.
fn set_aside(run_dir: &Path) -> Result<(), RunError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let moves = [
        (
            checkpoint::dir(run_dir),
            format!("checkpoints.replaced-{stamp}"),
        ),
        (
            run_dir.join("metrics.jsonl"),
            format!("metrics.replaced-{stamp}.jsonl"),
        ),
        (
            run_dir.join("tensorboard"),
            format!("tensorboard.replaced-{stamp}"),
        ),
    ];
    for (from, to) in moves {
        if from.exists() {
            let to = run_dir.join(to);
            std::fs::rename(&from, &to)
                .map_err(io_err(format!("moving {} aside", from.display())))?;
            info!(from = %from.display(), to = %to.display(), "set an earlier run's files aside");
        }
    }
    Ok(())
}

/// The KL penalty's frozen reference (a checkpoint's policy, or the initial
/// policy rebuilt from the seed, the same after a resume) and controller.
fn kl_penalty(
    cfg: &RunConfig,
    obs_shape: &[usize],
    action_space: &Space,
    device: tch::Device,
    expected: &[(String, Vec<usize>)],
    resumed: Option<&(PathBuf, CheckpointData)>,
) -> Result<Option<KlPenalty>, RunError> {
    if !cfg.kl.enabled() {
        return Ok(None);
    }
    let mut reference = Policy::new(&cfg.model, obs_shape, action_space, device, cfg.run.seed);
    if let Some(path) = &cfg.kl.reference {
        let data = checkpoint::load(Path::new(path), expected).map_err(RunError::KlReference)?;
        reference
            .load_parameters(&data.model)
            .map_err(|source| RunError::KlReferenceModel {
                path: path.clone(),
                source,
            })?;
    }
    // An adaptive coefficient continues where it was; a fixed one is the
    // config's (which may have been changed for the resumed run).
    let coef = resumed
        .and_then(|(_, d)| d.meta.kl_coef)
        .filter(|_| cfg.kl.target.is_some())
        .unwrap_or(cfg.kl.coef);
    Ok(Some(KlPenalty {
        reference,
        controller: KlController {
            coef,
            target: cfg.kl.target,
            horizon: cfg.kl.horizon,
        },
    }))
}

/// The run as actors are told it at `Hello`.
fn run_spec(cfg: &RunConfig, p: &Prepared) -> RunSpec {
    RunSpec {
        run_id: p.run_id.clone(),
        env: cfg.env.clone(),
        model: cfg.model.clone(),
        chunk_len: cfg.rollout.chunk_len,
        observation_space: p.observation_space.clone(),
        action_space: p.action_space.clone(),
        policy_version: p.version,
        actor_id: 0,
        session: String::new(),
        behavior_values: cfg.rollout.behavior_values,
        seed: cfg.run.seed,
        max_chunk_bytes: cfg.ingest.max_chunk_bytes,
        default_num_envs: cfg.rollout.num_envs,
        sync: cfg.sync,
        // REINFORCE holds an actor's chunks until its episodes end, and may
        // need more chunks of one version than a batch holds.
        batch_samples: if cfg.algo == Algo::Reinforce {
            0
        } else {
            cfg.ppo.batch_size as u64
        },
    }
}

/// The run's TensorBoard event file, unless `run.tensorboard` is off; a
/// directory that cannot be written costs the charts, not the run.
fn tensorboard(cfg: &RunConfig, dir: &Path) -> Option<EventWriter> {
    if !cfg.run.tensorboard {
        return None;
    }
    match EventWriter::create(dir) {
        Ok(w) => {
            info!(path = %w.path().display(), "writing TensorBoard events");
            Some(w)
        }
        Err(e) => {
            warn!(error = %e, "cannot write TensorBoard events; training without them");
            None
        }
    }
}

/// The evaluator thread of `[eval]` (none when `eval.every_updates` is 0).
fn start_evaluator(
    opts: &RunOptions,
    trainer: &mut Trainer,
    stop: &Arc<AtomicBool>,
    started: Instant,
) -> Result<(), RunError> {
    let cfg = &opts.config;
    if cfg.eval.every_updates == 0 {
        return Ok(());
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(opts.run_dir.join("metrics.jsonl"))
        .map_err(io_err("opening metrics.jsonl for evaluations"))?;
    let (tx, due) = crossbeam_channel::bounded(eval::BACKLOG);
    eval::spawn(
        eval::Evaluator {
            settings: cfg.eval.clone(),
            env: cfg.env.clone(),
            model: cfg.model.clone(),
            counters: trainer.counters.clone(),
            log,
            started,
            stop: stop.clone(),
            tensorboard: tensorboard(cfg, &opts.run_dir.join("tensorboard").join("eval")),
        },
        due,
    )
    .map_err(io_err("spawning the evaluator thread"))?;
    trainer.evaluations = Some((cfg.eval.every_updates, tx));
    Ok(())
}

/// Starts the trainer thread; the receiver yields its result (or its panic).
fn spawn_trainer(trainer: Trainer) -> Result<oneshot::Receiver<TrainerResult>, RunError> {
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("trainer".into())
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trainer.run()));
            let _ = done_tx.send(r);
        })
        .map_err(io_err("spawning the trainer thread"))?;
    Ok(done_rx)
}

/// The trainer with its stages, and what the server and the progress line
/// read from them.
fn build_trainer(
    opts: &RunOptions,
    prepared: Prepared,
    rx: crossbeam_channel::Receiver<Box<Admitted>>,
    stop: Arc<AtomicBool>,
    started: Instant,
    threads: TorchThreads,
) -> Result<Trainer, RunError> {
    let cfg = &opts.config;
    let Prepared {
        learning,
        counters,
        version,
        run_id,
        observation_space,
        action_space,
    } = prepared;
    let counters = Arc::new(counters);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(opts.run_dir.join("metrics.jsonl"))
        .map_err(io_err("opening metrics.jsonl"))?;
    let stitcher = (cfg.algo == Algo::Reinforce).then(|| {
        EpisodeStitcher::new(cfg.ppo.gamma, cfg.reinforce.max_held_chunks)
            .with_max_total(cfg.reinforce.max_held_chunks_total)
    });
    Ok(Trainer {
        rx,
        stop,
        batcher: Batcher::new(
            staleness(cfg),
            cfg.ppo.batch_size,
            stitcher,
            counters.clone(),
        ),
        publisher: Publisher::new(learning.snapshot(), version),
        learning,
        recorder: Recorder::new(
            counters.clone(),
            log,
            tensorboard(cfg, &opts.run_dir.join("tensorboard")),
            started,
            cfg.kl.enabled(),
        ),
        counters,
        checkpoints: Checkpoints {
            run_dir: opts.run_dir.clone(),
            run_id,
            config_toml: cfg.to_toml(),
            spaces: Spaces {
                observation: observation_space,
                action: action_space,
            },
            every: cfg.run.checkpoint_every,
            keep: cfg.run.keep_checkpoints,
        },
        total_env_steps: cfg.run.total_env_steps,
        threads,
        pacing: Pacing::new(
            (cfg.algo != Algo::Reinforce && !cfg.sync).then_some(cfg.ppo.batch_size),
        ),
        stale_seen: 0,
        evaluations: None,
    })
}

fn staleness(cfg: &RunConfig) -> StalenessRule {
    StalenessRule {
        max_lag: cfg.ingest.max_policy_lag,
        sync: cfg.sync,
    }
}

/// The run's gRPC service in front of the trainer's queue.
fn service(
    opts: &RunOptions,
    spec: RunSpec,
    tx: crossbeam_channel::Sender<Box<Admitted>>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    counters: Arc<Counters>,
) -> LearnerService {
    let cfg = &opts.config;
    let stream_idle_timeout = Duration::from_secs_f64(cfg.ingest.stream_idle_timeout_seconds);
    let gate = IngestGate::new(
        chunk_expectations(cfg, &spec),
        staleness(cfg),
        snapshots.clone(),
        SessionLimits {
            max_sessions: cfg.ingest.max_actors,
            unused_ttl: stream_idle_timeout,
        },
        counters,
    );
    LearnerService::new(
        spec,
        ServiceLimits {
            max_envs_per_actor: cfg.ingest.max_envs_per_actor,
            stream_idle_timeout,
            max_queued_bytes: cfg.ingest.max_queued_bytes,
        },
        gate,
        tx,
        snapshots,
    )
}

/// Waits for the first actor's declaration of the spaces, or for a stop.
async fn discover_spaces(
    opts: &RunOptions,
    addr: SocketAddr,
    first: oneshot::Receiver<Spaces>,
    stopping: &mut watch::Receiver<bool>,
) -> Result<Spaces, RunError> {
    info!(
        env = %opts.config.env.id,
        %addr,
        "external environment: waiting for the first actor to declare its spaces"
    );
    tokio::select! {
        spaces = first => spaces.map_err(|_| RunError::StoppedBeforeStart),
        _ = stopping.wait_for(|&s| s) => Err(RunError::StoppedBeforeStart),
    }
}

/// Starts a learner: [`bind`], then [`Starting::start`].
pub async fn start(
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Learner, RunError> {
    bind(opts, shutdown).await?.start().await
}

/// A learner that is listening (its address known) but whose run has not
/// started: [`Starting::start`] starts it. Dropping it stops the server.
pub struct Starting {
    opts: RunOptions,
    device: tch::Device,
    /// The spaces, when known without an actor (see `known_spaces`).
    known: Option<Spaces>,
    /// Where the first declaration of the spaces arrives, when not known.
    first: Option<oneshot::Receiver<Spaces>>,
    ready: server::FrontReady,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    stopping: watch::Receiver<bool>,
    server: ServerTask,
    server_stop: watch::Sender<bool>,
}

/// Checks the options, binds the listener and starts the gRPC server (a TLS
/// setup that cannot serve fails here, before anything is written); the
/// server answers once the run has started. `shutdown` resolving (e.g. on
/// SIGTERM) stops the run as [`Learner::stop`] does, or, before the run has
/// started, makes [`Starting::start`] return [`RunError::StoppedBeforeStart`].
pub async fn bind(
    opts: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Starting, RunError> {
    let cfg = &opts.config;
    if !opts.listen.ip().is_loopback() && opts.auth_token.is_none() && !opts.insecure {
        return Err(RunError::OpenWithoutToken(opts.listen));
    }
    let device = opts.device.resolve()?;
    m::describe_learner();
    let known = known_spaces(&opts)?;
    if let Some(spaces) = &known {
        let problems = cfg.model.problems_with(&spaces.observation.shape());
        if !problems.is_empty() {
            return Err(RunError::ModelDoesNotFit(ConfigError::Invalid(problems)));
        }
    }
    std::fs::create_dir_all(&opts.run_dir)
        .map_err(io_err(format!("creating {}", opts.run_dir.display())))?;
    if !opts.resume && !opts.force_new && !checkpoint::list(&opts.run_dir).is_empty() {
        // Said now, not after waiting for an actor.
        return Err(RunError::RunDirInUse(opts.run_dir.clone()));
    }
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(io_err("listener address"))?;
    let discover = known.is_none().then(|| {
        (
            cfg.env.id.clone(),
            cfg.ingest.max_envs_per_actor,
            cfg.model.clone(),
        )
    });
    let (front, first, ready) = server::Front::new(discover);
    let (server_stop, server_stop_rx) = watch::channel(false);
    let server = server::spawn(listener, front, server_options(&opts), server_stop_rx)
        .map_err(RunError::Tls)?;
    let stop = Arc::new(AtomicBool::new(false));
    let (stopping_tx, stopping) = watch::channel(false);
    let stop_on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        info!("stopping: finishing the current update and writing a checkpoint");
        stop_on_signal.store(true, Ordering::Relaxed);
        let _ = stopping_tx.send(true);
    });
    Ok(Starting {
        opts,
        device,
        known,
        first,
        ready,
        addr,
        stop,
        stopping,
        server,
        server_stop,
    })
}

impl Starting {
    /// The gRPC address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the run: takes the spaces (waiting for the first declaring
    /// actor when they are not known yet), restores or creates the state,
    /// starts the trainer thread and opens the server to actors.
    pub async fn start(self) -> Result<Learner, RunError> {
        let Starting {
            opts,
            device,
            known,
            first,
            ready,
            addr,
            stop,
            mut stopping,
            server,
            server_stop,
        } = self;
        let cfg = &opts.config;
        let spaces = match (known, first) {
            (Some(spaces), _) => Ok(spaces),
            (None, Some(first)) => discover_spaces(&opts, addr, first, &mut stopping).await,
            (None, None) => unreachable!("a run without known spaces discovers them"),
        };
        let started = Instant::now();
        // A run on images reports frames/s (the live page, the dashboard).
        let pixels = spaces
            .as_ref()
            .is_ok_and(|s| cfg.model.is_convolutional() || s.observation.dtype() == Dtype::Uint8);
        metrics::gauge!(m::FRAMES_PER_STEP).set(f64::from(cfg.run.frames_per_step));
        let begun = spaces.and_then(|spaces| {
            let prepared = prepare(&opts, device, spaces)?;
            let spec = run_spec(cfg, &prepared);
            let (tx, rx) = crossbeam_channel::bounded(cfg.ingest.queue_capacity);
            let threads = TorchThreads::new(
                opts.torch_threads,
                std::thread::available_parallelism().map_or(1, |n| n.get()),
                device.is_cuda(),
                cfg.sync,
            );
            let trainer = build_trainer(&opts, prepared, rx, stop.clone(), started, threads)?;
            let snapshots = trainer.publisher.subscribe();
            let service = service(&opts, spec, tx, snapshots, trainer.counters.clone());
            Ok((trainer, service))
        });
        let (mut trainer, service) = match begun {
            Ok(b) => b,
            Err(e) => {
                let _ = server_stop.send(true);
                return Err(e);
            }
        };
        let counters = trainer.counters.clone();
        let snapshots = trainer.publisher.subscribe();
        let run_id = trainer.checkpoints.run_id.clone();
        if let Err(e) = start_evaluator(&opts, &mut trainer, &stop, started) {
            let _ = server_stop.send(true);
            return Err(e);
        }
        let torch_threads = match &trainer.threads {
            TorchThreads::Fixed(n) => n.to_string(),
            TorchThreads::Tuning(_) => "measuring".to_owned(),
        };
        let trainer_done = match spawn_trainer(trainer) {
            Ok(t) => t,
            Err(e) => {
                let _ = server_stop.send(true);
                return Err(e);
            }
        };
        ready.send_replace(Some(Arc::new(service)));
        info!(
            run_id = %run_id,
            env = %cfg.env.id,
            device = %device_name(device),
            device_reason = %opts.device.reason(device),
            %torch_threads,
            %addr,
            run_dir = %opts.run_dir.display(),
            "learner ready"
        );
        warn_if_open(&opts, addr);
        if let Some(live) = &opts.live {
            live.start(LiveRun {
                run_id: run_id.clone(),
                env_id: cfg.env.id.clone(),
                algo: cfg.algo_name().to_owned(),
                total_env_steps: cfg.run.total_env_steps,
                frames_per_step: pixels.then_some(cfg.run.frames_per_step),
                run_dir: opts.run_dir.clone(),
                started,
                counters: counters.clone(),
                snapshots: snapshots.clone(),
            });
        }
        let printer = tokio::spawn(recorder::print_progress(
            counters.clone(),
            snapshots,
            Duration::from_secs_f64(cfg.run.progress_every_seconds),
            cfg.run.total_env_steps,
        ));
        Ok(Learner {
            addr,
            stop,
            counters,
            title: format!("{} — {}", cfg.env.id, cfg.algo_name()),
            run_dir: opts.run_dir,
            started,
            trainer_done,
            server,
            server_stop,
            printer,
        })
    }
}

fn chunk_expectations(cfg: &RunConfig, spec: &RunSpec) -> ChunkExpectations {
    ChunkExpectations {
        run_id: spec.run_id.clone(),
        env_id: spec.env.id.clone(),
        obs_dim: spec.observation_space.flat_dim(),
        obs_dtype: spec.observation_space.dtype(),
        action_space: spec.action_space.clone(),
        chunk_len: spec.chunk_len as usize,
        max_envs: cfg.ingest.max_envs_per_actor as usize,
        max_bytes: cfg.ingest.max_chunk_bytes,
        newest_version: 0,
        require_behavior_value: spec.behavior_values,
        bounds: value_bounds(&cfg.ingest, &spec.observation_space),
    }
}

fn value_bounds(ingest: &IngestSection, observation_space: &Space) -> ValueBounds {
    let (observation_low, observation_high) = match observation_space {
        Space::Box { low, high, .. } if ingest.check_observation_space => {
            (low.clone(), high.clone())
        }
        _ => (Vec::new(), Vec::new()),
    };
    ValueBounds {
        max_abs_observation: ingest.max_abs_observation,
        observation_low,
        observation_high,
        max_abs_reward: ingest.max_abs_reward,
        max_abs_value: ingest.max_abs_value,
        max_abs_action: ingest.max_abs_action,
        min_logp: ingest.min_behavior_logp,
    }
}

fn server_options(opts: &RunOptions) -> ServerOptions {
    let ingest = &opts.config.ingest;
    ServerOptions {
        tls: opts.tls.clone(),
        auth_token: opts.auth_token.clone(),
        max_chunk_bytes: ingest.max_chunk_bytes,
        keepalive_interval: Duration::from_secs_f64(ingest.keepalive_interval_seconds),
        keepalive_timeout: Duration::from_secs_f64(ingest.keepalive_timeout_seconds),
        max_concurrent_streams: ingest.max_concurrent_streams,
        max_connections: ingest.max_connections,
    }
}

fn warn_if_open(opts: &RunOptions, addr: SocketAddr) {
    if opts.auth_token.is_some() {
        info!("every gRPC call must carry the shared token");
    } else if !addr.ip().is_loopback() {
        warn!(
            %addr,
            "--insecure: no shared token, and any client that reaches this address can join the run"
        );
    }
}

/// A device's name as logs and docs write it.
pub fn device_name(d: tch::Device) -> String {
    match d {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_metrics_log_is_trimmed_to_the_resumed_version() {
        let dir = flotilla_common::testing::TempDir::new("trim-log");
        let path = dir.join("metrics.jsonl");
        assert_eq!(super::trim_metrics_log(&path, 3).unwrap(), 0, "no log yet");
        let rows: String = (1..=5)
            .map(|v| format!("{{\"version\":{v},\"env_steps\":{}}}\n", v * 10))
            .collect();
        std::fs::write(&path, format!("{rows}{{\"version\":6,\"env_st")).unwrap();
        assert_eq!(super::trim_metrics_log(&path, 3).unwrap(), 3);
        let left = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            left,
            "{\"version\":1,\"env_steps\":10}\n{\"version\":2,\"env_steps\":20}\n{\"version\":3,\"env_steps\":30}\n"
        );
        assert_eq!(super::trim_metrics_log(&path, 3).unwrap(), 0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), left);
    }

    use super::*;

    #[test]
    fn the_summary_says_the_same_in_text_and_json() {
        let summary = RunSummary {
            run_dir: "runs/cp".into(),
            train: TrainSummary {
                version: 12,
                env_steps: 4096,
                final_checkpoint: Some("runs/cp/checkpoints/ckpt-0000000012.safetensors".into()),
                reached_total: true,
            },
            wall_seconds: 2.0,
            episodes: 30,
            samples_received: 5000,
            mean_return: Some(475.5),
            learning_curve: None,
        };
        let text = summary.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "run finished: 4096 env steps trained in 2.0s (2048/s), policy version 12, 30 episodes",
                "mean return of the last 100 episodes: 475.50",
                "run directory: runs/cp",
                "final checkpoint: runs/cp/checkpoints/ckpt-0000000012.safetensors",
            ]
        );
        let json = summary.to_json();
        assert_eq!(json["finished"], true);
        assert_eq!(json["env_steps"], 4096);
        assert_eq!(json["policy_version"], 12);
        assert_eq!(json["samples_received"], 5000);
        assert_eq!(json["mean_return"], 475.5);
        assert_eq!(json["learning_curve"], serde_json::Value::Null);
        assert_eq!(
            json["final_checkpoint"],
            "runs/cp/checkpoints/ckpt-0000000012.safetensors"
        );
        let stopped = RunSummary {
            train: TrainSummary {
                reached_total: false,
                final_checkpoint: None,
                ..summary.train.clone()
            },
            mean_return: None,
            ..summary
        };
        let text = stopped.to_string();
        assert!(text.starts_with("run stopped: "), "{text}");
        assert!(text.contains("no episode finished") && text.ends_with("no checkpoint written"));
    }
}
