//! A learner for tests in this crate and the crates above it: a small
//! CartPole run on the CPU, on an ephemeral loopback port, in a temporary run
//! directory that is removed with it.

use flotilla_common::auth::AuthToken;
use flotilla_common::testing::TempDir;
use tonic::transport::ServerTlsConfig;

use crate::config::RunConfig;
use crate::device::DeviceChoice;
use crate::run::{bind, start, Learner, RunError, RunOptions, RunSummary, Starting};

/// T of [`TestLearner`]'s run.
pub const T: usize = 8;
/// Default N of [`TestLearner`]'s run.
pub const N: usize = 4;

/// A running learner and its run directory.
pub struct TestLearner {
    learner: Learner,
    dir: TempDir,
}

impl TestLearner {
    /// CartPole-v1, batches of 64 in 2 minibatches, chunks of [`T`] steps of
    /// [`N`] envs, `extra` config overrides, optionally a token and TLS.
    pub async fn start(
        tag: &str,
        extra: &[&str],
        token: Option<AuthToken>,
        tls: Option<ServerTlsConfig>,
    ) -> Self {
        let (mut opts, dir) = options(tag, "id = \"CartPole-v1\"\n", extra);
        opts.auth_token = token;
        opts.tls = tls;
        let learner = start(opts, std::future::pending())
            .await
            .expect("test learner starts");
        TestLearner { learner, dir }
    }

    /// Like [`TestLearner::start`] with the `[env]` table `env_toml` and a
    /// checkpoint every update, but only bound: the run starts with
    /// [`Starting::start`] (for an external environment, once an actor
    /// declares its spaces). Keep the folder.
    pub async fn bind(tag: &str, env_toml: &str, extra: &[&str]) -> (Starting, TempDir) {
        let mut extra: Vec<&str> = extra.to_vec();
        extra.insert(0, "run.checkpoint_every=1");
        let (opts, dir) = options(tag, env_toml, &extra);
        let starting = bind(opts, std::future::pending())
            .await
            .expect("test learner binds");
        (starting, dir)
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.learner.local_addr()
    }

    pub fn stop(&self) {
        self.learner.stop();
    }

    /// Waits for the end of the run and keeps its folder (the run
    /// directory is `run` in it) for the caller to read.
    pub async fn wait_keeping_dir(self) -> (Result<RunSummary, RunError>, TempDir) {
        (self.learner.wait().await, self.dir)
    }

    /// Waits for the end of the run; the run directory goes afterwards.
    pub async fn wait(self) -> Result<RunSummary, RunError> {
        let summary = self.learner.wait().await;
        drop(self.dir);
        summary
    }
}

/// The test run's options (see [`TestLearner::start`]) in a new folder.
fn options(tag: &str, env_toml: &str, extra: &[&str]) -> (RunOptions, TempDir) {
    let mut set: Vec<String> = vec![
        "ppo.batch_size=64".into(),
        "ppo.num_minibatches=2".into(),
        format!("rollout.chunk_len={T}"),
        format!("rollout.num_envs={N}"),
        "run.total_env_steps=100000".into(),
        "run.progress_every_seconds=60".into(),
    ];
    set.extend(extra.iter().map(|s| s.to_string()));
    let config = RunConfig::from_toml(&format!("[env]\n{env_toml}"), "test", &set)
        .expect("test config is valid");
    let dir = TempDir::new(tag);
    let opts = RunOptions {
        config,
        run_dir: dir.join("run"),
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        device: DeviceChoice::Cpu,
        resume: false,
        force_new: false,
        insecure: false,
        auth_token: None,
        tls: None,
        torch_threads: None,
        live: None,
    };
    (opts, dir)
}
