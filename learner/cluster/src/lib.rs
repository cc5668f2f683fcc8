//! The local cluster: a learner and in-process actors in one process, joined
//! by real gRPC over loopback exactly as remote actors join.
//!
//! This is the only code that depends on both the learner and the actor
//! crates; `flotilla-learner` itself knows actors only through the wire.

use std::future::Future;
use std::net::SocketAddr;

use flotilla_actor::{ActorError, ActorOptions, ActorSummary};
use flotilla_common::auth::AuthToken;
use flotilla_learner::run::{self, RunError, RunOptions, RunSummary};
use flotilla_learner::server::loopback;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// Actors to run inside the learner's process.
#[derive(Debug, Clone, Default)]
pub struct LocalActors {
    pub count: usize,
    /// Environments per actor (`None`: the run's `rollout.num_envs`).
    pub num_envs: Option<u32>,
    /// Pace each actor to at most this many env steps per second (`None`:
    /// as fast as it can), e.g. to study policy lag.
    pub max_steps_per_second: Option<f64>,
}

/// Why a local cluster cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("local actors connect over plaintext loopback: use them without TLS, or run remote actors against a TLS learner")]
    TlsWithLocalActors,
    #[error("ppo.batch_size: with sync = true it must equal local actors × envs × rollout.chunk_len = {actors} × {envs} × {chunk_len} = {expected}, got {actual}")]
    SyncBatchSize {
        actors: usize,
        envs: u32,
        chunk_len: u32,
        expected: usize,
        actual: usize,
    },
    #[error("--local-max-steps-per-second: expected a positive number, got {0}")]
    Pace(f64),
    #[error(transparent)]
    Run(#[from] RunError),
}

impl ClusterError {
    /// Whether the error is about how the cluster was invoked (exit code 64).
    pub fn is_usage(&self) -> bool {
        match self {
            ClusterError::TlsWithLocalActors
            | ClusterError::SyncBatchSize { .. }
            | ClusterError::Pace(_) => true,
            ClusterError::Run(e) => e.is_usage(),
        }
    }
}

impl LocalActors {
    /// Checks the actors against the run before anything starts.
    pub fn check(&self, opts: &RunOptions) -> Result<(), ClusterError> {
        if self.count == 0 {
            return Ok(());
        }
        if opts.tls.is_some() {
            return Err(ClusterError::TlsWithLocalActors);
        }
        if let Some(p) = self.max_steps_per_second {
            if !(p.is_finite() && p > 0.0) {
                return Err(ClusterError::Pace(p));
            }
        }
        let cfg = &opts.config;
        if cfg.sync {
            let envs = self.num_envs.unwrap_or(cfg.rollout.num_envs);
            let expected = self.count * envs as usize * cfg.rollout.chunk_len as usize;
            if cfg.ppo.batch_size != expected {
                return Err(ClusterError::SyncBatchSize {
                    actors: self.count,
                    envs,
                    chunk_len: cfg.rollout.chunk_len,
                    expected,
                    actual: cfg.ppo.batch_size,
                });
            }
        }
        Ok(())
    }

    /// libtorch threads for a CPU trainer sharing the host with these actors:
    /// each actor keeps a core busy and the trainer takes the rest, at least
    /// one. On two cores that is one thread, which also suits minibatches of
    /// a few hundred samples best (docs/benchmarks.md).
    pub fn torch_threads(&self, device: tch::Device, cpus: usize) -> Option<usize> {
        (self.count > 0 && device == tch::Device::Cpu)
            .then(|| cpus.saturating_sub(self.count).max(1))
    }

    /// Starts the actors against the learner listening on `learner`.
    pub fn spawn(&self, learner: SocketAddr, auth_token: Option<AuthToken>) -> Running {
        let (stop, stop_rx) = watch::channel(false);
        let url = format!("http://{}", loopback(learner));
        let tasks = (0..self.count)
            .map(|i| {
                let actor = ActorOptions {
                    learner: url.clone(),
                    num_envs: self.num_envs,
                    name: format!("local-{i}"),
                    max_steps_per_second: self.max_steps_per_second,
                    auth_token: auth_token.clone(),
                    tls: None,
                };
                tokio::spawn(flotilla_actor::run(actor, stop_rx.clone()))
            })
            .collect();
        if self.count > 0 {
            info!(actors = self.count, learner = %url, "started local actors");
        }
        Running { stop, tasks }
    }
}

/// Running local actors.
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<ActorSummary, ActorError>>>,
}

impl Running {
    /// Asks every actor to stop and waits (at most 10 s each) for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for a in self.tasks {
            match tokio::time::timeout(std::time::Duration::from_secs(10), a).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "local actor failed"),
                Ok(Err(e)) => warn!(error = %e, "local actor task failed"),
                Err(_) => warn!("local actor did not stop within 10s"),
            }
        }
    }
}

/// Runs a learner with `local` in-process actors until the run ends.
pub async fn run(
    mut opts: RunOptions,
    local: LocalActors,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunSummary, ClusterError> {
    local.check(&opts)?;
    if opts.torch_threads.is_none() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        opts.torch_threads =
            local.torch_threads(opts.device.resolve().map_err(RunError::from)?, cpus);
    }
    let token = opts.auth_token.clone();
    let learner = run::start(opts, shutdown).await?;
    let actors = local.spawn(learner.local_addr(), token);
    Ok(learner.wait_then(actors.stop()).await?)
}
