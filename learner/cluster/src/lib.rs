//! The local cluster: a learner and in-process actors in one process, joined
//! by real gRPC over loopback exactly as remote actors join.
//!
//! This is the only code that depends on both the learner and the actor
//! crates; `flotilla-learner` itself knows actors only through the wire.

pub mod health;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use flotilla_actor::{ActorError, ActorOptions, ActorSummary};
use flotilla_common::auth::AuthToken;
use flotilla_learner::run::{self, RunError, RunOptions, RunSummary, StopHandle};
use flotilla_learner::server::loopback;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

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
    #[error("--local-actors: environment `{0}` is external (source = \"external\"), and local actors run only the built-in environments; start the actors that bring it (the Python actor, or your Rust actor built on flotilla_actor::app) against this learner instead")]
    ExternalWithLocalActors(String),
    #[error("local actor {name} failed, so the run was stopped (its last checkpoint is written): {error}")]
    LocalActor {
        name: String,
        usage: bool,
        error: String,
    },
    #[error(transparent)]
    Run(#[from] RunError),
}

impl ClusterError {
    /// Whether the error is about how the cluster was invoked (exit code 64).
    pub fn is_usage(&self) -> bool {
        match self {
            ClusterError::TlsWithLocalActors
            | ClusterError::SyncBatchSize { .. }
            | ClusterError::Pace(_)
            | ClusterError::ExternalWithLocalActors(_) => true,
            ClusterError::LocalActor { usage, .. } => *usage,
            ClusterError::Run(e) => e.is_usage(),
        }
    }
}

impl LocalActors {
    /// Checks the actors against the run before anything starts.
    pub fn check(&self, opts: &RunOptions) -> Result<(), ClusterError> {
        if let Some(p) = self.max_steps_per_second {
            if !(p.is_finite() && p > 0.0) {
                return Err(ClusterError::Pace(p));
            }
        }
        if self.count == 0 {
            return Ok(());
        }
        if opts.tls.is_some() {
            return Err(ClusterError::TlsWithLocalActors);
        }
        let cfg = &opts.config;
        if cfg.env.is_external() {
            return Err(ClusterError::ExternalWithLocalActors(cfg.env.id.clone()));
        }
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

    /// Starts the actors against the learner listening on `learner`. The
    /// first actor that fails (the learner refused it, its environment
    /// failed) stops the run through `stop_run`: without its actors a local
    /// cluster would wait for data forever. [`Running::failure`] says which.
    pub fn spawn(
        &self,
        learner: SocketAddr,
        auth_token: Option<AuthToken>,
        stop_run: StopHandle,
    ) -> Running {
        let (stop, stop_rx) = watch::channel(false);
        let failure = Arc::new(Mutex::new(None));
        let url = format!("http://{}", loopback(learner));
        let tasks = (0..self.count)
            .map(|i| {
                let name = format!("local-{i}");
                let actor = ActorOptions {
                    learner: url.clone(),
                    num_envs: self.num_envs,
                    name: name.clone(),
                    max_steps_per_second: self.max_steps_per_second,
                    auth_token: auth_token.clone(),
                    tls: None,
                    env: None,
                };
                let (stop_rx, stop_run, failure) =
                    (stop_rx.clone(), stop_run.clone(), failure.clone());
                tokio::spawn(async move {
                    let r = flotilla_actor::run(actor, stop_rx).await;
                    if let Err(e) = &r {
                        error!(actor = %name, error = %e, "local actor failed: stopping the run");
                        let usage =
                            matches!(e, ActorError::Refused { .. } | ActorError::BadUrl { .. });
                        let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                        f.get_or_insert(ClusterError::LocalActor {
                            name,
                            usage,
                            error: e.to_string(),
                        });
                        stop_run.stop();
                    }
                    r
                })
            })
            .collect();
        if self.count > 0 {
            info!(actors = self.count, learner = %url, "started local actors");
        }
        Running {
            stop,
            tasks,
            failure,
        }
    }
}

/// Running local actors.
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<ActorSummary, ActorError>>>,
    failure: Arc<Mutex<Option<ClusterError>>>,
}

impl Running {
    /// The first actor failure, if one stopped the run.
    pub fn failure(&self) -> Arc<Mutex<Option<ClusterError>>> {
        self.failure.clone()
    }

    /// Asks every actor to stop and waits (at most 10 s each) for it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for a in self.tasks {
            match tokio::time::timeout(std::time::Duration::from_secs(10), a).await {
                Ok(Ok(Ok(_))) => {}
                Ok(Ok(Err(_))) => {} // logged when it failed
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
    if opts.torch_threads.is_none() && local.count > 0 {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let device = opts.device.resolve().map_err(RunError::from)?;
        opts.torch_threads = local.torch_threads(device, cpus);
    }
    let token = opts.auth_token.clone();
    let learner = run::start(opts, shutdown).await?;
    let actors = local.spawn(learner.local_addr(), token, learner.stop_handle());
    let failure = actors.failure();
    let summary = learner.wait_then(actors.stop()).await?;
    let failed = failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    match failed {
        Some(e) => Err(e),
        None => Ok(summary),
    }
}

#[cfg(test)]
mod tests {
    use flotilla_learner::config::RunConfig;
    use flotilla_learner::device::DeviceChoice;

    use super::*;

    fn options(sets: &[&str]) -> RunOptions {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        RunOptions {
            config: RunConfig::from_toml("[env]\nid = \"CartPole-v1\"\n", "test", &sets).unwrap(),
            run_dir: "unused".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            device: DeviceChoice::Cpu,
            resume: false,
            force_new: false,
            insecure: false,
            auth_token: None,
            tls: None,
            torch_threads: None,
            live: None,
        }
    }

    fn actors(count: usize) -> LocalActors {
        LocalActors {
            count,
            ..LocalActors::default()
        }
    }

    #[test]
    fn sync_needs_one_chunk_per_actor_per_batch() {
        let sets = [
            "sync=true",
            "rollout.num_envs=4",
            "rollout.chunk_len=64",
            "ppo.batch_size=512",
        ];
        assert!(actors(2).check(&options(&sets)).is_ok());
        let e = actors(3).check(&options(&sets)).unwrap_err();
        assert!(e.is_usage());
        let msg = e.to_string();
        assert!(
            msg.contains("ppo.batch_size") && msg.contains("= 768, got 512"),
            "{msg}"
        );
        // Without local actors the learner cannot know how many will come.
        assert!(actors(0).check(&options(&sets)).is_ok());
    }

    #[test]
    fn a_pace_must_be_positive_with_or_without_actors() {
        for bad in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            for count in [0, 2] {
                let local = LocalActors {
                    max_steps_per_second: Some(bad),
                    ..actors(count)
                };
                let e = local.check(&options(&[])).unwrap_err();
                assert!(matches!(e, ClusterError::Pace(_)) && e.is_usage(), "{e}");
            }
        }
        let paced = LocalActors {
            max_steps_per_second: Some(70_000.0),
            ..actors(2)
        };
        assert!(paced.check(&options(&[])).is_ok());
    }

    #[test]
    fn local_actors_cannot_use_tls() {
        let mut opts = options(&[]);
        opts.tls = Some(tonic::transport::ServerTlsConfig::new());
        assert!(matches!(
            actors(1).check(&opts),
            Err(ClusterError::TlsWithLocalActors)
        ));
        assert!(actors(0).check(&opts).is_ok());
    }

    #[test]
    fn the_trainer_gets_the_cpus_the_actors_leave() {
        assert_eq!(actors(2).torch_threads(tch::Device::Cpu, 2), Some(1));
        assert_eq!(actors(2).torch_threads(tch::Device::Cpu, 16), Some(14));
        assert_eq!(actors(0).torch_threads(tch::Device::Cpu, 16), None);
        assert_eq!(actors(2).torch_threads(tch::Device::Cuda(0), 16), None);
    }
}
