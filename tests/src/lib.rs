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

/// The raw text of one scrape of `/metrics` on loopback `port`; `None` while
/// nothing answers.
pub fn scrape_text(port: u16) -> Option<String> {
    match http(port, "GET", "/metrics")? {
        (200, body) => Some(body),
        _ => None,
    }
}

/// One plain HTTP/1.1 request to loopback `port`: the status code and the
/// body; `None` while nothing answers.
pub fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let request =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// What `promtool check metrics` objects to in a Prometheus text exposition,
/// checked here so the rule holds where promtool is not installed: every
/// family with samples has a `# HELP` with text and a `# TYPE`; counters end
/// in `_total` and nothing else does; only histograms and summaries have
/// `_bucket`, `_sum` and `_count` series; names are snake_case. One line per
/// problem, naming the family.
pub fn lint_exposition(text: &str) -> Vec<String> {
    use std::collections::BTreeMap;
    let mut help: BTreeMap<&str, &str> = BTreeMap::new();
    let mut kind: BTreeMap<&str, &str> = BTreeMap::new();
    let mut sampled: BTreeMap<String, ()> = BTreeMap::new();
    let mut problems = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, doc) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(name, doc.trim());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').unwrap_or((rest, ""));
            kind.insert(name, t.trim());
        } else if !line.starts_with('#') {
            let series = line.split([' ', '{']).next().unwrap_or(line);
            sampled.insert(series.to_owned(), ());
        }
    }
    let family_of = |series: &str| -> String {
        if kind.contains_key(series) {
            return series.to_owned();
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = series.strip_suffix(suffix) {
                if matches!(kind.get(base), Some(&"histogram") | Some(&"summary")) {
                    return base.to_owned();
                }
            }
        }
        series.to_owned()
    };
    let families: std::collections::BTreeSet<String> =
        sampled.keys().map(|s| family_of(s)).collect();
    for f in &families {
        let snake = f
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':')
            && !f.starts_with(|c: char| c.is_ascii_digit());
        if !snake {
            problems.push(format!("{f}: not a snake_case metric name"));
        }
        match help.get(f.as_str()) {
            None => problems.push(format!("{f}: no HELP text")),
            Some(&"") => problems.push(format!("{f}: empty HELP text")),
            Some(_) => {}
        }
        match kind.get(f.as_str()).copied() {
            None => problems.push(format!("{f}: no TYPE")),
            Some("counter") if !f.ends_with("_total") => {
                problems.push(format!("{f}: a counter whose name does not end in _total"))
            }
            Some(t) if t != "counter" && f.ends_with("_total") => {
                problems.push(format!("{f}: a {t} whose name ends in _total"))
            }
            Some(t)
                if t != "histogram"
                    && t != "summary"
                    && ["_bucket", "_sum", "_count"].iter().any(|s| f.ends_with(s)) =>
            {
                problems.push(format!("{f}: a {t} named like a histogram series"))
            }
            _ => {}
        }
    }
    problems
}

/// Runs `promtool check metrics` on `text` when promtool is installed
/// (Debian's `prometheus` package); `Ok(None)` when it is not. `Err` holds
/// what promtool printed when it refused the text.
pub fn promtool_check(text: &str) -> Result<Option<()>, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("promtool does not start: {e}")),
    };
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .map_err(|e| format!("writing to promtool: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool: {e}"))?;
    if out.status.success() {
        Ok(Some(()))
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
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

#[cfg(test)]
mod tests {
    use super::lint_exposition;

    #[test]
    fn the_lint_passes_a_described_exposition() {
        let ok = "# HELP a_total things\n# TYPE a_total counter\na_total 3\n\
                  # HELP d_seconds waits\n# TYPE d_seconds histogram\n\
                  d_seconds_bucket{le=\"+Inf\"} 1\nd_seconds_sum 0.5\nd_seconds_count 1\n";
        assert_eq!(lint_exposition(ok), Vec::<String>::new());
    }

    #[test]
    fn the_lint_names_each_problem() {
        let bad = "# TYPE a_total counter\na_total 3\n\
                   # HELP b things\n# TYPE b counter\nb 1\n\
                   # HELP c_total level\n# TYPE c_total gauge\nc_total 2\n\
                   # HELP e_count n\n# TYPE e_count gauge\ne_count 1\n\
                   # HELP Fast x\n# TYPE Fast gauge\nFast 1\n\
                   # HELP g \n# TYPE g gauge\ng 1\nh 4\n";
        assert_eq!(
            lint_exposition(bad),
            [
                "Fast: not a snake_case metric name",
                "a_total: no HELP text",
                "b: a counter whose name does not end in _total",
                "c_total: a gauge whose name ends in _total",
                "e_count: a gauge named like a histogram series",
                "g: empty HELP text",
                "h: no HELP text",
                "h: no TYPE",
            ]
        );
    }
}
