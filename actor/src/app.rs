//! The actor program: the `actor` binary's whole `main`, and the same program
//! for an environment of your own.
//!
//! tracing → flags → metrics → connect, act and stream until SIGTERM/SIGINT.
//!
//! A custom Rust environment trains with the real actor in three lines: a
//! binary whose `main` is
//!
//! ```no_run
//! # use flotilla_common::{Env, Space, Step, ActionRef};
//! # struct MyEnv;
//! # impl Env for MyEnv {
//! #     fn id(&self) -> &'static str { "MyEnv-v0" }
//! #     fn observation_space(&self) -> &Space { unimplemented!() }
//! #     fn action_space(&self) -> &Space { unimplemented!() }
//! #     fn reset(&mut self, _: Option<u64>, _: &mut [f32]) {}
//! #     fn step(&mut self, _: ActionRef<'_>, _: &mut [f32]) -> Step { unimplemented!() }
//! # }
//! fn main() -> std::process::ExitCode {
//!     flotilla_actor::app::main_with_env(|| Box::new(MyEnv))
//! }
//! ```
//!
//! takes every flag of `actor` (`--learner`, `--num-envs`, `--name`, TLS,
//! token, metrics) and declares `MyEnv-v0` with its spaces at `Hello`; the
//! learner trains it with `[env] id = "MyEnv-v0"` and `source = "external"`.
//! `rollout` plays it too.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use flotilla_common::auth::AuthToken;
use flotilla_common::cli::{self, EXIT_USAGE};
use flotilla_common::metrics as m;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing::{info, warn};

use crate::{rollout, ActorError, ActorOptions, OwnEnv};

/// Flotilla actor: steps environments and streams trajectories to a learner.
///
/// Without a subcommand it connects to the learner and acts. Every flag can
/// also be given as an environment variable (FLOTILLA_LEARNER, ...).
#[derive(Debug, Parser)]
#[command(name = "actor", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Learner URL.
    #[arg(
        long,
        env = "FLOTILLA_LEARNER",
        default_value = "http://127.0.0.1:50051"
    )]
    learner: String,
    /// Environments to step in this actor [default: the run's rollout.num_envs].
    #[arg(long, env = "FLOTILLA_NUM_ENVS")]
    num_envs: Option<u32>,
    /// Name reported to the learner; the actor's seeds derive from it, so
    /// two actors of one run need different names [default: <host name>-<pid>].
    #[arg(long, env = "FLOTILLA_NAME")]
    name: Option<String>,
    /// Prometheus metrics listen address (none: no metrics endpoint).
    #[arg(long, env = "FLOTILLA_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Act at most this many env steps per second (all envs together), e.g.
    /// to simulate a slow actor [default: as fast as it can].
    #[arg(long, env = "FLOTILLA_MAX_STEPS_PER_SECOND", value_parser = cli::positive_rate)]
    max_steps_per_second: Option<f64>,
    /// File holding the learner's shared token (or give the token itself in
    /// FLOTILLA_AUTH_TOKEN).
    #[arg(long, env = "FLOTILLA_AUTH_TOKEN_FILE")]
    auth_token_file: Option<std::path::PathBuf>,
    /// PEM CA that signed the learner's certificate (for https:// URLs).
    #[arg(long, env = "FLOTILLA_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate for mutual TLS (with --tls-key).
    #[arg(long, env = "FLOTILLA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FLOTILLA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Name expected in the learner's certificate [default: the URL's host].
    #[arg(long, env = "FLOTILLA_TLS_DOMAIN")]
    tls_domain: Option<String>,
    /// After SIGTERM/SIGINT, exit anyway (code 75) if the actor has not
    /// stopped within this many seconds.
    #[arg(long, env = "FLOTILLA_SHUTDOWN_GRACE_SECONDS", default_value = "10", value_parser = cli::grace_seconds)]
    shutdown_grace_seconds: std::time::Duration,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play episodes locally and write a JSON Lines trace (one object per step).
    Rollout(rollout::RolloutArgs),
}

/// `<host name>-<pid>`: unique per process on a host, so actors started
/// side by side without `--name` get different seeds.
fn default_name() -> String {
    let pid = std::process::id();
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .map_or_else(|| format!("actor-{pid}"), |h| format!("{h}-{pid}"))
}

/// The `actor` binary: runs the built-in environment the learner names.
pub fn main() -> ExitCode {
    run_main(None)
}

/// The actor program for an environment of your own: every flag and
/// subcommand of `actor`, with environments built by `make` (see the
/// module's documentation).
pub fn main_with_env(
    make: impl Fn() -> Box<dyn flotilla_common::Env> + Send + Sync + 'static,
) -> ExitCode {
    run_main(Some(OwnEnv::new(make)))
}

fn run_main(own: Option<OwnEnv>) -> ExitCode {
    cli::init_tracing();
    cli::exit_on_panic("actor");
    let parsed = cli::parse_args::<Cli>();
    match parsed.command {
        Some(Command::Rollout(args)) => rollout_main(&args, own.as_ref()),
        None => act_main(parsed.run, own),
    }
}

fn rollout_main(args: &rollout::RolloutArgs, own: Option<&OwnEnv>) -> ExitCode {
    match rollout::run_with(args, own) {
        Ok(summaries) => {
            let (mean, std) = rollout::mean_std(&summaries);
            let steps: u64 = summaries.iter().map(|s| s.length).sum();
            println!(
                "{} episodes, {} steps, return mean {:.3} std {:.3}, trace written to {}",
                summaries.len(),
                steps,
                mean,
                std,
                args.out.display()
            );
            if let Some(video) = &args.video {
                println!("video written to {}", video.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

impl RunArgs {
    fn into_options(self, env: Option<OwnEnv>) -> anyhow::Result<ActorOptions> {
        let args = self;
        let auth_token = AuthToken::load(args.auth_token_file.as_deref())?;
        let tls = match &args.tls_ca {
            Some(ca) => {
                let identity = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
                Some(flotilla_common::tls::client_config(
                    ca,
                    identity,
                    args.tls_domain.as_deref(),
                )?)
            }
            None if args.tls_cert.is_some() || args.tls_domain.is_some() => {
                anyhow::bail!("--tls-cert and --tls-domain need --tls-ca")
            }
            None => None,
        };
        Ok(ActorOptions {
            learner: args.learner,
            num_envs: args.num_envs,
            name: args.name.unwrap_or_else(default_name),
            max_steps_per_second: args.max_steps_per_second,
            auth_token,
            tls,
            env,
        })
    }
}

fn install_metrics(addr: SocketAddr) -> Result<(), metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Prefix("flotilla_actor_".into()),
            m::ACTOR_LATENCY_BUCKETS,
        )
        .and_then(|b| b.install())?;
    info!(%addr, "serving prometheus metrics");
    Ok(())
}

fn act_main(args: RunArgs, own: Option<OwnEnv>) -> ExitCode {
    let metrics_listen = args.metrics_listen;
    let grace = args.shutdown_grace_seconds;
    let opts = match args.into_options(own) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match cli::current_thread_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        if let Some(addr) = metrics_listen {
            if let Err(e) = install_metrics(addr) {
                eprintln!("error: cannot serve metrics on {addr}: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
        m::describe_actor();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            cli::shutdown_signal(grace).await;
            info!("stopping");
            let _ = stop_tx.send(true);
        });
        match crate::run(opts, stop_rx).await {
            Ok(s) => {
                info!(
                    chunks = s.chunks_sent,
                    reconnects = s.reconnects,
                    "actor stopped"
                );
                ExitCode::SUCCESS
            }
            Err(e @ (ActorError::BadUrl { .. } | ActorError::Refused { .. })) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_USAGE)
            }
            Err(e) => {
                warn!(error = %e, "actor failed");
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
