//! `learner`: the Flotilla learner binary.
//!
//! tracing → config → metrics → state (fresh or resumed) → trainer thread →
//! gRPC server → drain on SIGTERM/SIGINT or when the step budget is spent.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use flotilla_common::auth::AuthToken;
use flotilla_learner::config::RunConfig;
use flotilla_learner::device::DeviceChoice;
use flotilla_learner::run::{self, RunOptions};

/// Flotilla learner: trains a policy from the trajectories actors stream to it.
#[derive(Debug, Parser)]
#[command(name = "learner", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Run configuration (TOML; see configs/ and docs/configuration.md).
    #[arg(long, env = "FLOTILLA_CONFIG", required = true)]
    config: Option<PathBuf>,
    /// Run directory for checkpoints, the metrics log and the learning curve
    /// [default: runs/<config name>-<unix time>].
    #[arg(long, env = "FLOTILLA_RUN_DIR")]
    run_dir: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, env = "FLOTILLA_LISTEN", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// Prometheus metrics listen address.
    #[arg(long, env = "FLOTILLA_METRICS_LISTEN", default_value = "0.0.0.0:9000")]
    metrics_listen: SocketAddr,
    /// Training device.
    #[arg(long, env = "FLOTILLA_DEVICE", value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Continue from the newest valid checkpoint in the run directory.
    #[arg(long, env = "FLOTILLA_RESUME")]
    resume: bool,
    /// Seed (overrides run.seed).
    #[arg(long, env = "FLOTILLA_SEED")]
    seed: Option<u64>,
    /// Environment steps to train on (overrides run.total_env_steps).
    #[arg(long, env = "FLOTILLA_TOTAL_ENV_STEPS")]
    total_env_steps: Option<u64>,
    /// Run this many actors inside the learner process, connected over
    /// loopback gRPC like remote actors (the local cluster).
    #[arg(long, env = "FLOTILLA_LOCAL_ACTORS", default_value_t = 0)]
    local_actors: usize,
    /// Environments per local actor [default: the config's rollout.num_envs].
    #[arg(long, env = "FLOTILLA_LOCAL_NUM_ENVS")]
    local_num_envs: Option<u32>,
    /// Pace every local actor to at most this many env steps per second
    /// (slow actors: a way to study policy lag) [default: unpaced].
    #[arg(long, env = "FLOTILLA_LOCAL_MAX_STEPS_PER_SECOND")]
    local_max_steps_per_second: Option<f64>,
    /// File holding the shared token every gRPC call must carry (or give the
    /// token itself in FLOTILLA_AUTH_TOKEN) [default: no authentication].
    #[arg(long, env = "FLOTILLA_AUTH_TOKEN_FILE")]
    auth_token_file: Option<PathBuf>,
    /// Serve gRPC over TLS with this PEM certificate chain (with --tls-key).
    #[arg(long, env = "FLOTILLA_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "FLOTILLA_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this PEM CA (mutual TLS).
    #[arg(long, env = "FLOTILLA_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// libtorch threads for the trainer's math [default: with --local-actors
    /// on the CPU, the CPUs left after one per local actor (at least 1), else
    /// libtorch's default (one per core)].
    #[arg(long, env = "FLOTILLA_TORCH_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    torch_threads: Option<u16>,
    /// Override any config value: `--set ppo.batch_size=4096` (repeatable).
    #[arg(
        long = "set",
        value_name = "KEY=VALUE",
        env = "FLOTILLA_SET",
        value_delimiter = ','
    )]
    set: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Draw `learning_curve.png` from a run directory's `metrics.jsonl`.
    Plot {
        /// The run directory.
        run_dir: PathBuf,
    },
    /// Draw several runs into one PNG: `LABEL=RUN_DIR` per run; runs with
    /// the same label (e.g. seeds of one algorithm) share a color.
    Compare {
        /// Output PNG.
        #[arg(long)]
        out: PathBuf,
        /// Title of the picture.
        #[arg(long, default_value = "")]
        title: String,
        /// `LABEL=RUN_DIR`, repeatable.
        #[arg(required = true)]
        runs: Vec<String>,
    },
}

/// `learner compare`: groups runs by label, in first-seen order.
fn compare(out: &std::path::Path, title: &str, runs: &[String]) -> Result<(), String> {
    let mut groups: Vec<(String, Vec<Vec<flotilla_learner::plot::Point>>)> = Vec::new();
    for entry in runs {
        let (label, dir) = entry
            .split_once('=')
            .ok_or_else(|| format!("{entry}: expected LABEL=RUN_DIR"))?;
        let points = flotilla_learner::plot::read_points(&PathBuf::from(dir).join("metrics.jsonl"))
            .map_err(|e| e.to_string())?;
        match groups.iter_mut().find(|(l, _)| l == label) {
            Some((_, v)) => v.push(points),
            None => groups.push((label.to_owned(), vec![points])),
        }
    }
    flotilla_learner::plot::draw_many(&groups, title, out).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    if let Some(Command::Compare { out, title, runs }) = &cli.command {
        return match compare(out, title, runs) {
            Ok(()) => {
                println!("comparison: {}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Plot { run_dir }) = &cli.command {
        let title = run_dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        return match flotilla_learner::plot::plot_run(run_dir, &title) {
            Ok(p) => {
                println!("learning curve: {}", p.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let Some(config_path) = cli.config.clone() else {
        eprintln!("error: --config is required");
        return ExitCode::from(64);
    };
    // An empty FLOTILLA_SET (as a compose file may pass) means no overrides.
    let mut overrides: Vec<String> = cli
        .set
        .iter()
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .collect();
    if let Some(seed) = cli.seed {
        overrides.push(format!("run.seed={seed}"));
    }
    if let Some(steps) = cli.total_env_steps {
        overrides.push(format!("run.total_env_steps={steps}"));
    }
    let config = match RunConfig::load(&config_path, &overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(64);
        }
    };
    let auth_token = match AuthToken::load(cli.auth_token_file.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(64);
        }
    };
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => {
            match flotilla_common::tls::server_config(cert, key, cli.tls_client_ca.as_deref()) {
                Ok(c) => Some(c),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(64);
                }
            }
        }
        _ => None,
    };
    let run_dir = cli.run_dir.clone().unwrap_or_else(|| {
        let stem = config_path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from("runs").join(format!("{stem}-{now}"))
    });
    let options = RunOptions {
        config,
        run_dir,
        listen: cli.listen,
        metrics_listen: Some(cli.metrics_listen),
        device: cli.device,
        resume: cli.resume,
        install_signal_handlers: true,
        local_actors: cli.local_actors,
        local_num_envs: cli.local_num_envs,
        local_max_steps_per_second: cli.local_max_steps_per_second,
        auth_token,
        tls,
        torch_threads: cli.torch_threads.map(usize::from),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(options)) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(run::RunError::Usage(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(64)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
