//! One training run: state (fresh or resumed), the trainer thread, the gRPC
//! server, progress lines, and an orderly end.

use std::fmt;
use std::fs::OpenOptions;
use std::io::BufWriter;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_common::auth::{AuthToken, RequireToken};
use flotilla_common::metrics as m;
use flotilla_common::proto::learner_server::LearnerServer;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::ServerTlsConfig;
use tracing::{info, warn};

use crate::adam::Adam;
use crate::algo::{KlController, UpdatePlan};
use crate::checkpoint;
use crate::config::{Algo, RunConfig};
use crate::device::DeviceChoice;
use crate::episodes::EpisodeStitcher;
use crate::model::Policy;
use crate::service::{LearnerService, RunInfo, Snapshot};
use crate::trainer::{device_name, Progress, TrainError, TrainSummary, Trainer};

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: RunConfig,
    pub run_dir: PathBuf,
    pub listen: SocketAddr,
    /// Where to serve Prometheus metrics; `None` installs no exporter.
    pub metrics_listen: Option<SocketAddr>,
    pub device: DeviceChoice,
    pub resume: bool,
    /// Stop on SIGTERM/SIGINT (the binary); tests stop through [`Learner::stop`].
    pub install_signal_handlers: bool,
    /// Actors to run inside this process, connected over loopback gRPC
    /// exactly as remote actors are (the local cluster).
    pub local_actors: usize,
    /// Environments per local actor (`None`: the run's `rollout.num_envs`).
    pub local_num_envs: Option<u32>,
    /// Pace each local actor to at most this many env steps per second
    /// (`None`: as fast as it can), e.g. to study policy lag.
    pub local_max_steps_per_second: Option<f64>,
    /// Shared token every gRPC call must carry (`None`: no authentication).
    pub auth_token: Option<AuthToken>,
    /// Serve gRPC over TLS (`None`: plaintext).
    pub tls: Option<ServerTlsConfig>,
    /// libtorch intra-op threads of the trainer (`None`: with local actors and
    /// a CPU learner, the CPUs left after one per local actor, at least 1;
    /// else libtorch's default, one per physical core).
    pub torch_threads: Option<usize>,
}

/// Errors that end a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A problem with how the learner was invoked (exit code 64).
    #[error("{0}")]
    Usage(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
    #[error("the trainer thread panicked")]
    TrainerPanicked,
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
    pub mean_return: Option<f64>,
    /// `learning_curve.png` in the run directory, when there was a curve to draw.
    pub learning_curve: Option<PathBuf>,
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

/// A learner that is serving and training.
pub struct Learner {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    progress: Arc<Progress>,
    run_dir: PathBuf,
    title: String,
    started: Instant,
    trainer_done: oneshot::Receiver<std::thread::Result<Result<TrainSummary, TrainError>>>,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    server_stop: watch::Sender<bool>,
    printer: tokio::task::JoinHandle<()>,
    actors_stop: watch::Sender<bool>,
    actors: Vec<
        tokio::task::JoinHandle<Result<flotilla_actor::ActorSummary, flotilla_actor::ActorError>>,
    >,
}

impl Learner {
    /// The gRPC address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn progress(&self) -> &Arc<Progress> {
        &self.progress
    }

    pub fn run_dir(&self) -> &PathBuf {
        &self.run_dir
    }

    /// Asks the trainer to stop after its current update (it then checkpoints).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// A handle that can stop the run from elsewhere.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Waits for the trainer to finish (budget spent or stopped), then drains
    /// the server for at most a few seconds.
    pub async fn wait(self) -> Result<RunSummary, RunError> {
        let result = self
            .trainer_done
            .await
            .map_err(|_| RunError::TrainerPanicked)?;
        let _ = self.actors_stop.send(true);
        for a in self.actors {
            match tokio::time::timeout(Duration::from_secs(10), a).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "local actor failed"),
                Ok(Err(e)) => warn!(error = %e, "local actor task failed"),
                Err(_) => warn!("local actor did not stop within 10s"),
            }
        }
        let _ = self.server_stop.send(true);
        match tokio::time::timeout(Duration::from_secs(5), self.server).await {
            Ok(Ok(r)) => r?,
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
        let recent = self.progress.recent.lock().ok();
        Ok(RunSummary {
            learning_curve,
            run_dir: self.run_dir,
            train,
            wall_seconds: self.started.elapsed().as_secs_f64(),
            episodes: self.progress.episodes.load(Ordering::Relaxed),
            mean_return: recent.and_then(|r| r.mean_return()),
        })
    }
}

fn install_metrics(addr: SocketAddr) {
    let builder = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full(m::UPDATE_DURATION.into()),
            m::UPDATE_DURATION_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(m::POLICY_LAG.into()), m::POLICY_LAG_BUCKETS)
        });
    match builder.and_then(|b| b.install()) {
        Ok(()) => info!(%addr, "serving prometheus metrics"),
        Err(e) => warn!(error = %e, "prometheus exporter not installed"),
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

/// Starts a learner: binds the listener, restores or creates the state,
/// starts the trainer thread and the server.
pub async fn start(opts: RunOptions) -> Result<Learner, RunError> {
    if opts.tls.is_some() && opts.local_actors > 0 {
        return Err(RunError::Usage(
            "local actors connect over plaintext loopback: use them without TLS, or run remote actors against a TLS learner".into(),
        ));
    }
    let cfg = opts.config.clone();
    let device = opts
        .device
        .resolve()
        .map_err(|e| RunError::Usage(e.to_string()))?;
    if let Some(addr) = opts.metrics_listen {
        install_metrics(addr);
    }
    m::describe_learner();
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|e| RunError::Usage(format!("cannot listen on {}: {e}", opts.listen)))?;
    let addr = listener.local_addr().map_err(io_err("listener address"))?;

    let env = cfg.env.make().map_err(|e| RunError::Usage(e.to_string()))?;
    let observation_space = env.observation_space().clone();
    let action_space = env.action_space().clone();
    let obs_dim = observation_space.flat_dim();
    let expected = cfg.model.parameter_shapes(obs_dim, &action_space);

    std::fs::create_dir_all(&opts.run_dir)
        .map_err(io_err(format!("creating {}", opts.run_dir.display())))?;
    let existing = checkpoint::list(&opts.run_dir);
    if !opts.resume && !existing.is_empty() {
        return Err(RunError::Usage(format!(
            "run directory {} already holds checkpoints; pass --resume to continue it or choose another --run-dir",
            opts.run_dir.display()
        )));
    }
    let resumed = if opts.resume {
        let found = checkpoint::load_latest(&opts.run_dir, &expected);
        if found.is_none() {
            info!(run_dir = %opts.run_dir.display(), "no usable checkpoint; starting a new run");
        }
        found
    } else {
        None
    };
    if let Some((_, data)) = &resumed {
        let old = RunConfig::from_toml(&data.meta.config_toml, "checkpoint", &[])
            .map_err(|e| RunError::Usage(format!("checkpoint's config: {e}")))?;
        if old.env != cfg.env || old.model != cfg.model {
            return Err(RunError::Usage(
                "the checkpoint was trained with a different [env] or [model]; resume with the same config".into(),
            ));
        }
    }
    let run_id = resumed
        .as_ref()
        .map(|(_, d)| d.meta.run_id.clone())
        .unwrap_or_else(|| new_run_id(cfg.run.seed));
    std::fs::write(opts.run_dir.join("config.toml"), cfg.to_toml())
        .map_err(io_err("writing config.toml"))?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(opts.run_dir.join("metrics.jsonl"))
        .map_err(io_err("opening metrics.jsonl"))?;

    tch::manual_seed(cfg.run.seed as i64);
    let policy = Policy::new(&cfg.model, obs_dim, &action_space, device, cfg.run.seed);
    let params: Vec<tch::Tensor> = policy.trainable();
    let adam = Adam::new(&params, cfg.ppo.adam_eps);
    let kl = if cfg.kl.enabled() {
        // The reference: a checkpoint's policy, or the initial policy rebuilt
        // from the seed (the same after a resume).
        let mut reference = Policy::new(&cfg.model, obs_dim, &action_space, device, cfg.run.seed);
        if let Some(path) = &cfg.kl.reference {
            let data = checkpoint::load(std::path::Path::new(path), &expected)
                .map_err(|e| RunError::Usage(format!("kl.reference: {e}")))?;
            reference
                .load_parameters(&data.model)
                .map_err(|e| RunError::Usage(format!("kl.reference {path}: {e}")))?;
        }
        // An adaptive coefficient continues where it was; a fixed one is
        // the config's (which may have been changed for the resumed run).
        let coef = resumed
            .as_ref()
            .and_then(|(_, d)| d.meta.kl_coef)
            .filter(|_| cfg.kl.target.is_some())
            .unwrap_or(cfg.kl.coef);
        Some((
            reference,
            KlController {
                coef,
                target: cfg.kl.target,
                horizon: cfg.kl.horizon,
            },
        ))
    } else {
        None
    };
    if cfg.sync && opts.local_actors > 0 {
        let envs = opts.local_num_envs.unwrap_or(cfg.rollout.num_envs) as usize;
        let per_version = opts.local_actors * envs * cfg.rollout.chunk_len as usize;
        if cfg.ppo.batch_size != per_version {
            return Err(RunError::Usage(format!(
                "ppo.batch_size: with sync = true it must equal local actors × envs × rollout.chunk_len = {} × {envs} × {} = {per_version}, got {}",
                opts.local_actors, cfg.rollout.chunk_len, cfg.ppo.batch_size
            )));
        }
    }
    let (tx, rx) = crossbeam_channel::bounded(cfg.ingest.queue_capacity);
    let (snap_tx, snap_rx) = watch::channel(Arc::new(Snapshot {
        version: 0,
        safetensors: bytes::Bytes::new(),
    }));
    let version = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Progress {
        version: version.clone(),
        ..Default::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut trainer = Trainer {
        cfg: cfg.clone(),
        run_id: run_id.clone(),
        run_dir: opts.run_dir.clone(),
        policy,
        adam,
        rx,
        snapshots: snap_tx,
        progress: progress.clone(),
        stop: stop.clone(),
        started,
        log: Some(BufWriter::new(log)),
        plan: UpdatePlan::from_config(&cfg),
        kl,
        stitcher: (cfg.algo == Algo::Reinforce)
            .then(|| EpisodeStitcher::new(cfg.ppo.gamma, cfg.reinforce.max_held_chunks)),
    };
    if let Some((path, data)) = &resumed {
        trainer
            .restore(data)
            .map_err(|e| RunError::Usage(format!("checkpoint {}: {e}", path.display())))?;
        info!(
            path = %path.display(),
            version = data.meta.version,
            env_steps = data.meta.env_steps,
            "resumed from checkpoint"
        );
    }
    // Local actors each keep a core busy; the trainer takes the rest. On two
    // cores that is one thread, which also suits minibatches of a few
    // hundred samples best (docs/benchmarks.md).
    let torch_threads = opts.torch_threads.or_else(|| {
        (opts.local_actors > 0 && device == tch::Device::Cpu).then(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            cpus.saturating_sub(opts.local_actors).max(1)
        })
    });
    trainer.publish(version.load(Ordering::Acquire));
    info!(
        run_id = %run_id,
        env = %cfg.env.id,
        device = %device_name(device),
        torch_threads = torch_threads.map_or_else(|| "default".to_owned(), |n| n.to_string()),
        %addr,
        run_dir = %opts.run_dir.display(),
        "learner ready"
    );
    if opts.auth_token.is_some() {
        info!("every gRPC call must carry the shared token");
    } else if !addr.ip().is_loopback() {
        warn!(
            %addr,
            "no shared token: any client that reaches this address can join the run (set FLOTILLA_AUTH_TOKEN or --auth-token-file)"
        );
    }

    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("trainer".into())
        .spawn(move || {
            if let Some(n) = torch_threads {
                // Per thread under OpenMP: set where the work runs.
                tch::set_num_threads(n as i32);
            }
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trainer.run()));
            let _ = done_tx.send(r);
        })
        .map_err(io_err("spawning the trainer thread"))?;

    let service = LearnerService::new(
        RunInfo {
            run_id,
            env: cfg.env.clone(),
            model: cfg.model.clone(),
            chunk_len: cfg.rollout.chunk_len,
            observation_space,
            action_space,
            behavior_values: cfg.rollout.behavior_values,
            sync: cfg.sync,
            // REINFORCE holds an actor's chunks until its episodes end, and
            // may need more chunks of one version than a batch holds.
            batch_samples: if cfg.algo == Algo::Reinforce {
                0
            } else {
                cfg.ppo.batch_size as u64
            },
            seed: cfg.run.seed,
            max_chunk_bytes: cfg.ingest.max_chunk_bytes,
            max_envs_per_actor: cfg.ingest.max_envs_per_actor,
            max_policy_lag: cfg.ingest.max_policy_lag,
            default_num_envs: cfg.rollout.num_envs,
            stream_idle_timeout: Duration::from_secs_f64(cfg.ingest.stream_idle_timeout_seconds),
            stale_samples: progress.stale_samples.clone(),
        },
        version,
        tx,
        snap_rx,
    );
    // Room for protobuf framing around the largest accepted payload.
    let max_message = (cfg.ingest.max_chunk_bytes as usize).saturating_add(64 << 10);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = opts.tls.clone() {
        builder = builder
            .tls_config(tls)
            .map_err(|e| RunError::Usage(format!("TLS: {e}")))?;
    }
    let (server_stop, mut server_stop_rx) = watch::channel(false);
    // Without TCP_NODELAY a small frame (a chunk's end, a snapshot) can wait
    // for the peer's delayed ACK (~40 ms): visible in synchronous mode, where
    // every version is a round trip.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(c) = &conn {
            if let Err(e) = c.set_nodelay(true) {
                warn!(error = %e, "cannot set TCP_NODELAY");
            }
        }
        conn
    });
    let server = tokio::spawn(
        builder
            .http2_keepalive_interval(Some(Duration::from_secs_f64(
                cfg.ingest.keepalive_interval_seconds,
            )))
            .http2_keepalive_timeout(Some(Duration::from_secs_f64(
                cfg.ingest.keepalive_timeout_seconds,
            )))
            .max_concurrent_streams(cfg.ingest.max_concurrent_streams)
            .add_service(InterceptedService::new(
                LearnerServer::new(service)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(usize::MAX),
                RequireToken(opts.auth_token.clone()),
            ))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = server_stop_rx.wait_for(|&s| s).await;
            }),
    );
    let printer = tokio::spawn(print_progress(
        progress.clone(),
        Duration::from_secs_f64(cfg.run.progress_every_seconds),
        cfg.run.total_env_steps,
    ));
    let (actors_stop, actors_stop_rx) = watch::channel(false);
    let loopback = SocketAddr::new(
        if addr.ip().is_unspecified() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            addr.ip()
        },
        addr.port(),
    );
    let actors = (0..opts.local_actors)
        .map(|i| {
            let actor = flotilla_actor::ActorOptions {
                learner: format!("http://{loopback}"),
                num_envs: opts.local_num_envs,
                name: format!("local-{i}"),
                max_steps_per_second: opts.local_max_steps_per_second,
                auth_token: opts.auth_token.clone(),
                tls: None,
            };
            tokio::spawn(flotilla_actor::run(actor, actors_stop_rx.clone()))
        })
        .collect();
    if opts.local_actors > 0 {
        info!(actors = opts.local_actors, learner = %loopback, "started local actors");
    }
    let learner = Learner {
        actors_stop,
        actors,
        addr,
        stop,
        progress,
        run_dir: opts.run_dir,
        title: format!("{} — {}", cfg.env.id, cfg.algo_name()),
        started,
        trainer_done: done_rx,
        server,
        server_stop,
        printer,
    };
    if opts.install_signal_handlers {
        let stop = learner.stop_handle();
        tokio::spawn(async move {
            shutdown_signal().await;
            info!("stopping: finishing the current update and writing a checkpoint");
            stop.store(true, Ordering::Relaxed);
        });
    }
    Ok(learner)
}

/// Starts a learner and waits for the end of the run.
pub async fn run(opts: RunOptions) -> Result<RunSummary, RunError> {
    start(opts).await?.wait().await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn print_progress(progress: Arc<Progress>, every: Duration, total: u64) {
    let start = Instant::now();
    let mut last = (Instant::now(), 0u64, 0u64);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let steps = progress.samples_received.load(Ordering::Relaxed);
        let trained = progress.env_steps.load(Ordering::Relaxed);
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let (ret, lag) = progress
            .recent
            .lock()
            .map(|r| (r.mean_return(), r.median_lag()))
            .unwrap_or((None, None));
        println!(
            "[{:>7.1}s] env steps {:>10} ({:>7.0}/s) | trained {:>7.0}/s | return {} | version {:>5} | lag p50 {} | {:.0}% of budget",
            start.elapsed().as_secs_f64(),
            steps,
            (steps - last.1) as f64 / dt,
            (trained - last.2) as f64 / dt,
            ret.map(|r| format!("{r:>8.2}")).unwrap_or_else(|| "       -".into()),
            progress.version.load(Ordering::Relaxed),
            lag.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
            100.0 * trained as f64 / total.max(1) as f64,
        );
        last = (now, steps, trained);
    }
}
