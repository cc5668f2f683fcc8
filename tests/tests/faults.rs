//! Faults survived with real processes: an actor killed mid-stream, actors
//! joining and leaving for a while (nothing leaks), and shared-token
//! authentication between separate learner and actor processes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_tests::{
    assert_flat, bin, configs, free_port, process_usage, scrape, signal, wait_for_exit, wait_until,
    TempDir,
};

const TOKEN: &str = "flotilla-test-shared-token";
/// Soak actors are paced so that the learner keeps up: a filling queue then
/// means something is stuck, not that the machine is busy.
const PACE: Option<u32> = Some(2_000);

struct Learner {
    child: Child,
    grpc: u16,
    metrics: u16,
}

impl Learner {
    fn start(dir: &TempDir, extra: &[&str]) -> Self {
        let (grpc, metrics) = (free_port(), free_port());
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let child = Command::new(bin("learner"))
            .arg("--config")
            .arg(configs().join("cartpole.toml"))
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .arg("--auth-token-file")
            .arg(&token_file)
            .args([
                "--listen",
                &format!("127.0.0.1:{grpc}"),
                "--metrics-listen",
                &format!("127.0.0.1:{metrics}"),
                "--device",
                "cpu",
                "--total-env-steps",
                "100000000",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("learner starts");
        Learner {
            child,
            grpc,
            metrics,
        }
    }

    fn metric(&self, name: &str) -> f64 {
        scrape(self.metrics).get(name).copied().unwrap_or(f64::NAN)
    }

    /// A metric that must be exported: a failed scrape or a missing series
    /// fails the test instead of reading as NaN (which `max` would ignore).
    fn required(&self, name: &str) -> f64 {
        let v = self.metric(name);
        assert!(v.is_finite(), "{name} not scraped from the learner: {v}");
        v
    }

    fn version(&self) -> f64 {
        self.metric("flotilla_policy_version")
    }

    /// Waits until the policy version reaches `at_least`.
    fn wait_version(&self, at_least: f64, secs: u64) -> f64 {
        wait_until(&format!("policy version {at_least}"), secs, || {
            let v = self.version();
            (v >= at_least).then_some(v)
        })
    }

    fn wait_connected(&self, n: f64, secs: u64) {
        wait_until(&format!("{n} connected actors"), secs, || {
            (self.metric("flotilla_actors_connected") == n).then_some(())
        })
    }

    /// SIGTERM, then the exit status and both outputs.
    fn stop(mut self) -> (std::process::ExitStatus, String, String) {
        signal(&self.child, "TERM");
        let status = wait_for_exit(&mut self.child, 60).expect("learner exits after SIGTERM");
        let out = self.child.wait_with_output().unwrap();
        (
            status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// An actor process; `pace` limits its env steps per second.
fn actor(learner: &Learner, name: &str, token: Option<&str>, pace: Option<u32>) -> Child {
    let mut cmd = Command::new(bin("actor"));
    cmd.args([
        "--learner",
        &format!("http://127.0.0.1:{}", learner.grpc),
        "--name",
        name,
        "--num-envs",
        "4",
    ])
    .env_remove("FLOTILLA_AUTH_TOKEN")
    .env_remove("FLOTILLA_AUTH_TOKEN_FILE")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("FLOTILLA_AUTH_TOKEN", t);
    }
    if let Some(p) = pace {
        cmd.arg("--max-steps-per-second").arg(p.to_string());
    }
    cmd.spawn().expect("actor starts")
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

#[test]
fn a_killed_actor_is_survived_and_a_restarted_one_rejoins() {
    let dir = TempDir::new("faults-kill-actor");
    let learner = Learner::start(&dir, &["--set", "run.checkpoint_every=5"]);

    // Without the token an actor is refused for good: exit 64, saying why.
    let mut stranger = actor(&learner, "stranger", None, None);
    let status = wait_for_exit(&mut stranger, 30).expect("a refused actor exits");
    let err = stderr_of(&mut stranger);
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(
        err.contains("Unauthenticated") && err.contains("token"),
        "{err}"
    );

    let mut a = actor(&learner, "a", Some(TOKEN), None);
    let b = actor(&learner, "b", Some(TOKEN), None);
    learner.wait_connected(2.0, 60);
    let v0 = learner.wait_version(5.0, 120);

    // kill -9 mid-stream: the learner notices the stream end and trains on.
    signal(&a, "KILL");
    let _ = a.wait();
    learner.wait_connected(1.0, 30);
    let v1 = learner.wait_version(v0 + 10.0, 120);

    // The same actor restarted rejoins.
    a = actor(&learner, "a", Some(TOKEN), None);
    learner.wait_connected(2.0, 60);
    learner.wait_version(v1 + 5.0, 120);
    // Fast actors may outrun the learner (chunks dropped as `stale`), but
    // the killed actor's cut-off stream left no bad chunk behind.
    assert_eq!(
        learner.metric(r#"flotilla_chunks_dropped_total{reason="invalid"}"#),
        0.0
    );
    assert!(learner.metric("flotilla_auth_failures_total") >= 1.0);

    for mut actor in [a, b] {
        signal(&actor, "TERM");
        let status = wait_for_exit(&mut actor, 15).expect("actor exits on SIGTERM");
        assert!(status.success(), "{}", stderr_of(&mut actor));
    }
    let (status, stdout, stderr) = learner.stop();
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Actors join and leave (half of them killed with SIGKILL) for
/// `FLOTILLA_SOAK_SECONDS` (default 60). The learner's resident memory, open
/// files and threads must not grow with the churn,
/// its queue must stay short (actors are paced below what the learner
/// trains), and its count of connected actors must match the live ones.
#[test]
fn actors_joining_and_leaving_leak_nothing() {
    let seconds: u64 = std::env::var("FLOTILLA_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let dir = TempDir::new("faults-soak");
    let learner = Learner::start(&dir, &[]);
    let mut live: Vec<Child> = (0..2)
        .map(|i| actor(&learner, &format!("soak-{i}"), Some(TOKEN), PACE))
        .collect();
    learner.wait_connected(2.0, 60);
    learner.wait_version(3.0, 120);
    // Warm-up: allocator pools, libtorch threads and buffers settle first.
    std::thread::sleep(Duration::from_secs(5));
    let pid = learner.child.id();
    let start = process_usage(pid);
    let start_version = learner.required("flotilla_policy_version");

    let t0 = Instant::now();
    let (mut joined, mut max_queue) = (2usize, 0.0f64);
    while t0.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs(2));
        let old = live.remove(0);
        signal(&old, if joined % 2 == 0 { "KILL" } else { "TERM" });
        let mut old = old;
        let _ = wait_for_exit(&mut old, 15);
        live.push(actor(
            &learner,
            &format!("soak-{joined}"),
            Some(TOKEN),
            PACE,
        ));
        joined += 1;
        max_queue = max_queue.max(learner.required("flotilla_ingest_queue_depth"));
    }
    learner.wait_connected(live.len() as f64, 60);
    std::thread::sleep(Duration::from_secs(3));
    let end = process_usage(pid);
    let version = learner.required("flotilla_policy_version");
    println!(
        "soak {seconds} s, {joined} actors joined: RSS {} -> {} KiB, fds {} -> {}, threads {} -> {}, max queue depth {max_queue}, version {version}",
        start.rss_kib, end.rss_kib, start.open_fds, end.open_fds, start.threads, end.threads
    );
    assert_flat(start, end);
    assert!(max_queue <= 8.0, "the ingest queue backs up: {max_queue}");
    // The trainer kept training through the churn (a stalled learner also
    // leaks nothing): two paced actors fill a batch in about half a second.
    assert!(
        version >= start_version + seconds as f64 / 10.0,
        "the learner stalled: version {start_version} -> {version} in {seconds} s"
    );

    for mut a in live {
        signal(&a, "TERM");
        let _ = wait_for_exit(&mut a, 15);
    }
    let (status, stdout, stderr) = learner.stop();
    assert!(status.success(), "{stdout}\n{stderr}");
}
