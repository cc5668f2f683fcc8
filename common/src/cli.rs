//! Plumbing both binaries share: logging, the shutdown signal, exit codes,
//! and the guarantees that a process never outlives its own failure: a
//! panicking thread ends it ([`exit_on_panic`]) and a shutdown that does not
//! finish in time ends it too ([`shutdown_signal`]).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// Exit code for a usage error: bad flags, config or input files (sysexits' `EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// Exit code when a thread panicked (sysexits' `EX_SOFTWARE`): a bug, and the
/// process ends rather than run on without the thread.
pub const EXIT_PANIC: i32 = 70;

/// Exit code when a shutdown did not finish within its grace period.
pub const EXIT_SHUTDOWN_TIMEOUT: i32 = 75;

/// Ends the process right away with `code`: no destructors and no atexit
/// handlers, which could wait on (or free memory under) the threads still
/// running. stderr is unbuffered, so what was printed has been written.
#[allow(unsafe_code)] // the one libc call: std has no exit without atexit handlers
pub fn hard_exit(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and takes no pointers.
    unsafe { libc::_exit(code) }
}

/// Makes a panic on any thread (an environment, the trainer, an async task)
/// end the whole process with [`EXIT_PANIC`] after printing the panic as
/// usual and a line saying so. Without it a panicking worker thread dies
/// alone and the rest of the process waits on it forever.
pub fn exit_on_panic(program: &'static str) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current();
        eprintln!(
            "error: {program}: thread '{}' panicked (a bug; please report it with the message above); exiting with code {EXIT_PANIC}",
            thread.name().unwrap_or("unnamed")
        );
        hard_exit(EXIT_PANIC);
    }));
}

/// Parses the command line of `P` with every environment variable that is
/// set but empty treated as unset (compose files pass every variable, set or
/// not), on the command and all its subcommands. Exits as clap does (code 2)
/// when the line does not parse.
pub fn parse_args<P: clap::Parser>() -> P {
    fn forget_empty(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|arg| {
            let empty = arg
                .get_env()
                .and_then(std::env::var_os)
                .is_some_and(|v| v.is_empty());
            if empty {
                arg.env(None::<&str>)
            } else {
                arg
            }
        })
        .mut_subcommands(forget_empty)
    }
    let matches = forget_empty(P::command()).get_matches();
    P::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// An error and its sources, `: `-separated, each source's text once
/// (tonic's transport errors say little at the top: "transport error").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = s.source();
    }
    out
}

/// Parses a rate (steps per second): a finite number above zero.
pub fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!(
            "expected a positive number of steps per second, got {s:?}"
        )),
    }
}

/// Parses a grace period in seconds: finite, above zero, at most a day.
pub fn grace_seconds(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(Duration::from_secs_f64(v)),
        _ => Err(format!(
            "expected a number of seconds in (0, 86400], got {s:?}"
        )),
    }
}

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

/// A tokio runtime on the calling thread alone, every driver enabled: for
/// processes whose async side is light (the actor's connection, its policy
/// subscription and uploads) next to a thread that does the work. Extra
/// worker threads there only add wake-ups that preempt the work.
pub fn current_thread_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C), and from then on
/// guarantees the process ends: a second signal ends it at once (exit 130),
/// and if it is still running `grace` later it prints so and exits with
/// [`EXIT_SHUTDOWN_TIMEOUT`]. The deadline runs on its own OS thread, so a
/// wedged runtime or a thread that never returns cannot hold it up.
pub async fn shutdown_signal(grace: Duration) {
    first_signal().await;
    let _ = std::thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            std::thread::sleep(grace);
            eprintln!(
                "error: still running {:.1} s after the stop signal (the grace period); exiting with code {EXIT_SHUTDOWN_TIMEOUT}",
                grace.as_secs_f64()
            );
            hard_exit(EXIT_SHUTDOWN_TIMEOUT);
        });
    tokio::spawn(async {
        first_signal().await;
        eprintln!("error: second stop signal; exiting now without a final checkpoint");
        hard_exit(130);
    });
}

async fn first_signal() {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Run in a child process (this test executable again): a panic on a
    /// worker thread must end the whole process with EXIT_PANIC while the
    /// main thread is still busy.
    #[test]
    fn a_panicking_thread_ends_the_process() {
        const CHILD: &str = "FLOTILLA_TEST_PANIC_CHILD";
        if std::env::var_os(CHILD).is_some() {
            exit_on_panic("test");
            std::thread::Builder::new()
                .name("env-0".into())
                .spawn(|| panic!("boom"))
                .unwrap();
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        let started = std::time::Instant::now();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "cli::tests::a_panicking_thread_ends_the_process"])
            .args(["--nocapture", "--test-threads", "1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_PANIC), "{err}");
        assert!(err.contains("boom"), "the panic itself is printed: {err}");
        assert!(
            err.contains("thread 'env-0' panicked") && err.contains("exiting with code 70"),
            "{err}"
        );
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn rates_and_grace_periods_must_be_positive_and_finite() {
        assert_eq!(positive_rate("2.5"), Ok(2.5));
        for bad in ["0", "-1", "inf", "NaN", "", "x"] {
            assert!(positive_rate(bad).unwrap_err().contains(bad), "{bad}");
            assert!(grace_seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(grace_seconds("0.5"), Ok(Duration::from_millis(500)));
        assert!(grace_seconds("1e9").is_err());
    }
}
