//! `learner`: the Flotilla learner binary.
//!
//! tracing → flags → options → Prometheus exporter → run (the learner, plus
//! local actors when asked) until the step budget is spent or SIGTERM/SIGINT
//! → summary. Exit codes: 0 done, 2 unparsable command line (clap), 64 usage
//! (config, files, options that do not fit together), 1 other.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use flotilla_cluster::{ClusterError, LocalActors};
use flotilla_common::auth::AuthToken;
use flotilla_common::cli::{self, EXIT_USAGE};
use flotilla_common::metrics as m;
use flotilla_learner::config::RunConfig;
use flotilla_learner::device::DeviceChoice;
use flotilla_learner::live::{self, Live};
use flotilla_learner::run::{RunError, RunOptions, RunSummary};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tracing::{info, warn};

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
    /// gRPC listen address. Loopback by default; an address other machines
    /// can reach needs a shared token (or --insecure).
    #[arg(long, env = "FLOTILLA_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Address of Prometheus's `/metrics` and the live page `/` (loopback by
    /// default; port 0 picks a free one, printed at start).
    #[arg(
        long,
        env = "FLOTILLA_METRICS_LISTEN",
        default_value = "127.0.0.1:9000"
    )]
    metrics_listen: SocketAddr,
    /// Serve gRPC off loopback without a shared token: anyone who reaches
    /// the address can join the run. Refused without this flag.
    #[arg(long, env = "FLOTILLA_INSECURE")]
    insecure: bool,
    /// Training device.
    #[arg(long, env = "FLOTILLA_DEVICE", value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Continue from the newest valid checkpoint in the run directory. When
    /// it holds checkpoints and none can be resumed, the learner refuses to
    /// start (exit 64) and names each file and why.
    #[arg(long, env = "FLOTILLA_RESUME")]
    resume: bool,
    /// Start a new run in a run directory whose checkpoints cannot be (or,
    /// without --resume, are not to be) resumed: they and metrics.jsonl are
    /// moved aside to `checkpoints.replaced-<time>/` first.
    #[arg(long, env = "FLOTILLA_FORCE_NEW")]
    force_new: bool,
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
    #[arg(long, env = "FLOTILLA_LOCAL_MAX_STEPS_PER_SECOND", value_parser = cli::positive_rate)]
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
    /// Override any config value: `--set ppo.batch_size=4096` (repeatable;
    /// one value may also hold several assignments, `a=1,b=2`: a comma
    /// starts a new one only where a `key=` follows, so lists and strings
    /// with commas pass whole: `--set model.hidden_sizes=[128,128]`).
    #[arg(long = "set", value_name = "KEY=VALUE", env = "FLOTILLA_SET")]
    set: Vec<String>,
    /// After SIGTERM/SIGINT the learner finishes the current update and
    /// writes a checkpoint; if that takes longer than this many seconds it
    /// exits anyway with code 75 (the last complete checkpoint stays valid).
    /// A second signal exits at once.
    #[arg(long, env = "FLOTILLA_SHUTDOWN_GRACE_SECONDS", default_value = "25", value_parser = cli::grace_seconds)]
    shutdown_grace_seconds: std::time::Duration,
    /// Also write the end-of-run summary as one JSON object to this file.
    #[arg(long, env = "FLOTILLA_SUMMARY_JSON")]
    summary_json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Liveness check: exit 1 when actors are connected but the learner has
    /// not updated for too long (a wedged trainer), or its metrics endpoint
    /// does not answer; exit 0 otherwise.
    Health {
        /// The learner's Prometheus endpoint.
        #[arg(long, default_value = "http://127.0.0.1:9000/metrics")]
        metrics_url: String,
        /// Longest time without an update while actors are connected.
        #[arg(long, default_value_t = 600.0)]
        max_update_age_seconds: f64,
    },
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
    cli::init_tracing();
    cli::exit_on_panic("learner");
    let args = cli::parse_args::<Cli>();
    match &args.command {
        Some(Command::Compare { out, title, runs }) => compare_main(out, title, runs),
        Some(Command::Plot { run_dir }) => plot_main(run_dir),
        Some(Command::Health {
            metrics_url,
            max_update_age_seconds,
        }) => health_main(metrics_url, *max_update_age_seconds),
        None => match Options::try_from(args) {
            Ok(options) => train_main(options),
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
    }
}

fn health_main(url: &str, max_update_age: f64) -> ExitCode {
    use flotilla_cluster::health;
    let verdict = health::fetch(url, std::time::Duration::from_secs(3))
        .map(|body| health::parse(&body))
        .and_then(|r| health::judge(&r, m::unix_now(), max_update_age));
    match verdict {
        Ok(status) => {
            println!("{status}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

fn compare_main(out: &std::path::Path, title: &str, runs: &[String]) -> ExitCode {
    match compare(out, title, runs) {
        Ok(()) => {
            println!("comparison: {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn plot_main(run_dir: &std::path::Path) -> ExitCode {
    let title = run_dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match flotilla_learner::plot::plot_run(run_dir, &title) {
        Ok(p) => {
            println!("learning curve: {}", p.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Everything a training invocation needs, checked.
struct Options {
    run: RunOptions,
    local: LocalActors,
    metrics_listen: SocketAddr,
    summary_json: Option<PathBuf>,
    grace: std::time::Duration,
}

impl TryFrom<Cli> for Options {
    type Error = anyhow::Error;

    fn try_from(cli: Cli) -> anyhow::Result<Self> {
        let config_path = cli
            .config
            .ok_or_else(|| anyhow::anyhow!("--config is required"))?;
        let mut overrides: Vec<String> = cli
            .set
            .iter()
            .flat_map(|s| flotilla_learner::config::split_assignments(s))
            .collect();
        if let Some(seed) = cli.seed {
            overrides.push(format!("run.seed={seed}"));
        }
        if let Some(steps) = cli.total_env_steps {
            overrides.push(format!("run.total_env_steps={steps}"));
        }
        let config = RunConfig::load(&config_path, &overrides)?;
        let auth_token = AuthToken::load(cli.auth_token_file.as_deref())?;
        let tls = match (&cli.tls_cert, &cli.tls_key) {
            (Some(cert), Some(key)) => Some(flotilla_common::tls::server_config(
                cert,
                key,
                cli.tls_client_ca.as_deref(),
            )?),
            _ => None,
        };
        let run_dir = cli.run_dir.unwrap_or_else(|| default_run_dir(&config_path));
        Ok(Options {
            run: RunOptions {
                config,
                run_dir,
                listen: cli.listen,
                device: cli.device,
                resume: cli.resume,
                force_new: cli.force_new,
                insecure: cli.insecure,
                auth_token,
                tls,
                torch_threads: cli.torch_threads.map(usize::from),
                live: None,
            },
            local: LocalActors {
                count: cli.local_actors,
                num_envs: cli.local_num_envs,
                max_steps_per_second: cli.local_max_steps_per_second,
            },
            metrics_listen: cli.metrics_listen,
            summary_json: cli.summary_json,
            grace: cli.shutdown_grace_seconds,
        })
    }
}

/// `runs/<config name>-<unix time>`.
fn default_run_dir(config_path: &std::path::Path) -> PathBuf {
    let stem = config_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("runs").join(format!("{stem}-{now}"))
}

/// Serves `/metrics`, the live page (`/`) and its `/api/status` on `addr`;
/// returns the address bound (the port may have been 0). Local actors report
/// into the same registry, so with them the actor series are described and
/// bucketed as an actor process describes and buckets its own. A port that
/// cannot be bound costs the metrics, not the run.
async fn serve_metrics(
    addr: SocketAddr,
    local_actors: bool,
    live: Arc<Live>,
) -> Option<SocketAddr> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(m::UPDATE_DURATION.into()),
            m::UPDATE_DURATION_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(m::POLICY_LAG.into()), m::POLICY_LAG_BUCKETS)
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Prefix("flotilla_actor_".into()),
                m::ACTOR_LATENCY_BUCKETS,
            )
        });
    let handle = match builder.and_then(|b| b.install_recorder()) {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "prometheus exporter not installed");
            return None;
        }
    };
    if local_actors {
        m::describe_actor();
    }
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!(%addr, error = %e, "cannot serve metrics and the live page");
            return None;
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(live::serve(
        listener,
        live,
        Arc::new(move || handle.render()),
    ));
    info!(addr = %bound, "serving prometheus metrics (/metrics) and the live page (/)");
    Some(bound)
}

/// Where a browser on this machine finds a server bound to `addr`.
fn local_url(addr: SocketAddr) -> String {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "localhost".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}/", addr.port())
}

fn train_main(options: Options) -> ExitCode {
    let runtime = match cli::runtime(None) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let Options {
        mut run,
        local,
        metrics_listen,
        summary_json,
        grace,
    } = options;
    let live = Live::new();
    run.live = Some(live.clone());
    let result = runtime.block_on(async move {
        if let Some(addr) = serve_metrics(metrics_listen, local.count > 0, live).await {
            println!("live page: {}", local_url(addr));
        }
        flotilla_cluster::run(run, local, cli::shutdown_signal(grace)).await
    });
    match result {
        Ok(summary) => {
            println!("{summary}");
            write_summary_json(summary_json.as_deref(), &summary)
        }
        Err(e @ ClusterError::Run(RunError::StoppedBeforeStart)) => {
            eprintln!("{e}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            if e.is_usage() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn write_summary_json(path: Option<&std::path::Path>, summary: &RunSummary) -> ExitCode {
    let Some(path) = path else {
        return ExitCode::SUCCESS;
    };
    match std::fs::write(path, format!("{}\n", summary.to_json())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: writing the summary to {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}
