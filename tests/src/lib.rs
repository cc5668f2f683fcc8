//! Helpers for Flotilla's end-to-end tests.

use std::path::PathBuf;

/// Path of a workspace binary (`actor`, `learner`) next to the test executable.
///
/// `cargo test --workspace` builds every member's binaries into the same
/// target folder as the test executables (`target/<profile>/deps/..`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built; run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

pub use flotilla_common::testing::{wait_until, TempDir};

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Sends a signal (`TERM`, `KILL`, ...) to a child process.
pub fn signal(child: &std::process::Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {}", child.id());
}

/// Waits for a child to exit, at most `secs` seconds; `None` if it did not.
pub fn wait_for_exit(
    child: &mut std::process::Child,
    secs: u64,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    None
}

/// The configs/ folder of the repository.
pub fn configs() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// Where [`learner_command`] asks the learner to write its JSON summary
/// (`--summary-json`): next to the run directory, not in it.
pub fn summary_path(run_dir: &std::path::Path) -> PathBuf {
    run_dir.with_extension("summary.json")
}

/// The JSON summary of the last run in `run_dir` (see [`summary_path`]).
pub fn summary(run_dir: &std::path::Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(summary_path(run_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// The mean return of the last 100 episodes from a run's JSON summary.
pub fn summary_mean_return(run_dir: &std::path::Path) -> Option<f64> {
    summary(run_dir)?["mean_return"].as_f64()
}

/// The policy version and env steps trained from a run's JSON summary.
pub fn summary_version_and_steps(run_dir: &std::path::Path) -> Option<(u64, u64)> {
    let s = summary(run_dir)?;
    Some((s["policy_version"].as_u64()?, s["env_steps"].as_u64()?))
}

/// The final checkpoint named by a run's JSON summary.
pub fn summary_final_checkpoint(run_dir: &std::path::Path) -> Option<PathBuf> {
    summary(run_dir)?["final_checkpoint"]
        .as_str()
        .map(PathBuf::from)
}

/// The `learner` binary on `configs/<config>`, writing to `run_dir`, on the CPU,
/// with gRPC and metrics on ephemeral loopback ports, and its JSON summary at
/// [`summary_path`].
pub fn learner_command(config: &str, run_dir: &std::path::Path) -> std::process::Command {
    learner_command_on(config, run_dir, 0)
}

/// [`learner_command`] with gRPC on loopback port `port` (0: an ephemeral one),
/// for actor processes started beside it.
pub fn learner_command_on(
    config: &str,
    run_dir: &std::path::Path,
    port: u16,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin("learner"));
    cmd.arg("--config")
        .arg(configs().join(config))
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--summary-json")
        .arg(summary_path(run_dir))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            "127.0.0.1:0",
            "--device",
            "cpu",
        ]);
    cmd
}

/// One scrape of a Prometheus endpoint on loopback: metric name → value summed
/// over its label sets, and each labelled series as written
/// (`name{label="value"}`) → its value. Empty when nothing answers yet.
pub fn scrape(port: u16) -> std::collections::HashMap<String, f64> {
    use std::io::{Read, Write};
    let mut out = std::collections::HashMap::new();
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return out;
    };
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut body = String::new();
    if s.write_all(request.as_bytes()).is_err() || s.read_to_string(&mut body).is_err() {
        return out;
    }
    for line in body.lines().filter(|l| l.starts_with("flotilla_")) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if let Ok(v) = value.parse::<f64>() {
            *out.entry(name.to_owned()).or_insert(0.0) += v;
            if name != series {
                out.insert(series.to_owned(), v);
            }
        }
    }
    out
}

/// What `/proc` says about a process: resident memory, open files, threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessUsage {
    pub rss_kib: u64,
    pub open_fds: usize,
    pub threads: u64,
}

/// Reads [`ProcessUsage`] of `pid` (Linux).
pub fn process_usage(pid: u32) -> ProcessUsage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let field = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    ProcessUsage {
        rss_kib: field("VmRSS:"),
        open_fds,
        threads: field("Threads:"),
    }
}

/// Asserts that a process's open files, threads and resident memory did not
/// grow from `start` to `end` beyond a small allowance (a soak's verdict).
pub fn assert_flat(start: ProcessUsage, end: ProcessUsage) {
    assert!(
        end.open_fds <= start.open_fds + 4,
        "file descriptors leak: {start:?} -> {end:?}"
    );
    assert!(
        end.threads <= start.threads + 2,
        "threads leak: {start:?} -> {end:?}"
    );
    // Measured growth is well under 1 MiB over a minute of churn; 16 MiB
    // leaves room for allocator noise and still catches a per-actor leak.
    assert!(
        end.rss_kib <= start.rss_kib + 16 * 1024,
        "resident memory grows: {start:?} -> {end:?}"
    );
}
