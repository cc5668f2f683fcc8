//! Plumbing both binaries share: logging, the shutdown signal, exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

/// Exit code for a usage error: bad flags, config or input files (sysexits' `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// Structured logs to stderr, `info` unless `RUST_LOG` says otherwise;
/// colors only on a terminal.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// A multi-threaded tokio runtime with every driver enabled; `worker_threads`
/// `None` takes tokio's default (one per core). On failure the error has
/// been printed and the exit code to return is given.
pub fn runtime(worker_threads: Option<usize>) -> Result<tokio::runtime::Runtime, ExitCode> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = worker_threads {
        builder.worker_threads(n);
    }
    builder.enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
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
