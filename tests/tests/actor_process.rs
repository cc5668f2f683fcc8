//! Separate `actor` processes against a separate `learner` process: they
//! train it, survive a `kill -9` of the learner by reconnecting to its
//! resumed successor, and exit 0 promptly on SIGTERM.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flotilla_tests::{
    bin, configs, free_port, signal, summary_path, summary_version_and_steps, wait_for_exit,
    wait_until, TempDir,
};

fn learner(run: &std::path::Path, port: u16, total: u64, resume: bool) -> Child {
    let mut cmd = Command::new(bin("learner"));
    cmd.arg("--config")
        .arg(configs().join("cartpole.toml"))
        .arg("--run-dir")
        .arg(run)
        .arg("--summary-json")
        .arg(summary_path(run))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--metrics-listen",
            "127.0.0.1:0",
            "--device",
            "cpu",
            "--total-env-steps",
            &total.to_string(),
            "--set",
            "run.checkpoint_every=2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if resume {
        cmd.arg("--resume");
    }
    cmd.spawn().expect("learner starts")
}

fn actor(port: u16, name: &str) -> Child {
    Command::new(bin("actor"))
        .args([
            "--learner",
            &format!("http://127.0.0.1:{port}"),
            "--name",
            name,
            "--num-envs",
            "4",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("actor starts")
}

fn checkpoints(run: &std::path::Path) -> usize {
    std::fs::read_dir(run.join("checkpoints"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn actors_reconnect_to_a_restarted_learner_and_stop_on_sigterm() {
    let dir = TempDir::new("actors");
    let run = dir.path().join("run");
    let port = free_port();
    let mut l1 = learner(&run, port, 10_000_000, false);
    let mut actors = vec![actor(port, "a"), actor(port, "b")];

    // Wait until training produced checkpoints, then kill the learner hard.
    wait_until("two checkpoints", 120, || {
        (checkpoints(&run) >= 2).then_some(())
    });
    signal(&l1, "KILL");
    let _ = l1.wait();
    std::thread::sleep(Duration::from_secs(1));
    for a in &mut actors {
        assert!(
            a.try_wait().unwrap().is_none(),
            "actors keep retrying while the learner is away"
        );
    }

    // The newest checkpoint the resumed learner can start from.
    let resumed_from = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_prefix("ckpt-")?
                .strip_suffix(".safetensors")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .expect("a checkpoint");

    // A resumed learner on the same address: the same actors finish its budget.
    let l2 = learner(&run, port, 60_000, true);
    let pid = l2.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(l2.wait_with_output()));
    let out = rx
        .recv_timeout(Duration::from_secs(300))
        .unwrap_or_else(|_| {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the resumed learner did not finish its budget within 300 s")
        })
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("resumed from checkpoint"), "{stderr}");
    let (version, steps) = summary_version_and_steps(&run).expect("summary");
    assert!(
        stderr.contains(&format!("version={resumed_from} ")),
        "resumed from the newest checkpoint, {resumed_from}: {stderr}"
    );
    assert!(
        steps >= 60_000 && version > resumed_from,
        "version {version} after resuming from {resumed_from}: {stdout}"
    );

    for mut a in actors {
        signal(&a, "TERM");
        let status = wait_for_exit(&mut a, 10).expect("actor exits within 10s of SIGTERM");
        let mut err = String::new();
        if let Some(mut e) = a.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut err);
        }
        assert!(status.success(), "actor exit {status:?}\n{err}");
        assert!(
            err.contains("connection to learner lost") || err.contains("learner unreachable"),
            "{err}"
        );
    }
}

/// An actor whose chunks could never fit the learner's
/// `ingest.max_chunk_bytes` stops at once (exit 64) saying how many envs
/// would fit, instead of retrying a refused chunk forever; with that many
/// envs it trains.
#[test]
fn an_actor_sizes_its_chunks_to_the_learners_limit() {
    let dir = TempDir::new("actor-chunk-size");
    let run = dir.path().join("run");
    let (port, metrics) = (free_port(), free_port());
    let mut learner = Command::new(bin("learner"))
        .arg("--config")
        .arg(configs().join("cartpole.toml"))
        .arg("--run-dir")
        .arg(&run)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(["--device", "cpu", "--set", "ingest.max_chunk_bytes=8192"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("learner starts");
    let url = format!("http://127.0.0.1:{port}");
    let actor = |envs: &str, name: &str| {
        Command::new(bin("actor"))
            .args(["--learner", &url, "--name", name, "--num-envs", envs])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("actor starts")
    };
    let mut big = actor("8", "big");
    let status = wait_for_exit(&mut big, 60).expect("the actor stops by itself");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut big.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(64), "{err}");
    assert!(err.contains("ingest.max_chunk_bytes = 8192"), "{err}");
    let fits: String = err
        .split("--num-envs ")
        .nth(1)
        .expect("advice names --num-envs")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let n: usize = fits.parse().expect("a number of envs");
    assert!((1..8).contains(&n), "{err}");

    let mut small = actor(&fits, "small");
    let scraped = wait_until("chunks from the smaller actor", 60, || {
        let s = flotilla_tests::scrape(metrics);
        (s.get("flotilla_chunks_received_total")
            .copied()
            .unwrap_or(0.0)
            >= 5.0)
            .then_some(s)
    });
    assert_eq!(
        scraped
            .get("flotilla_chunks_dropped_total{reason=\"too_large\"}")
            .copied()
            .unwrap_or(0.0),
        0.0
    );
    assert!(
        small.try_wait().unwrap().is_none(),
        "the smaller actor runs on"
    );
    let _ = small.kill();
    let _ = learner.kill();
    let _ = small.wait();
    let _ = learner.wait();
}

/// A learner started without `--torch-threads`, with separate actor
/// processes (it cannot know what shares its host), measures its libtorch
/// thread count over its first updates and says what it chose. (That the
/// actors' pacing advice arrives is tested over gRPC in
/// `learner/tests/grpc.rs`; its effect on throughput is a benchmark,
/// `learner/benches/scaling.py`.)
#[test]
fn a_learner_with_actor_processes_measures_its_threads() {
    let dir = TempDir::new("actors-threads");
    let run = dir.path().join("run");
    let port = free_port();
    let l = learner(&run, port, 100_000, false);
    let mut actors: Vec<Child> = (0..4)
        .map(|i| {
            Command::new(bin("actor"))
                .args([
                    "--learner",
                    &format!("http://127.0.0.1:{port}"),
                    "--name",
                    &format!("p{i}"),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("actor starts")
        })
        .collect();
    let pid = l.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(l.wait_with_output()));
    let out = rx.recv_timeout(Duration::from_secs(300));
    for a in &mut actors {
        let _ = a.kill();
        let _ = a.wait();
    }
    let out = out
        .unwrap_or_else(|_| {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("the learner did not finish 100k steps within 300 s")
        })
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("torch_threads=measuring"),
        "no measurement announced: {stderr}"
    );
    let chosen = stderr
        .lines()
        .find(|l| l.contains("libtorch threads chosen by measurement"))
        .unwrap_or_else(|| panic!("no choice logged: {stderr}"));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n: usize = chosen
        .split("torch_threads=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {chosen}"));
    assert!((1..=cpus).contains(&n), "{chosen}");
    for c in (1..=cpus).filter(|c| c.is_power_of_two() || *c == cpus) {
        assert!(
            chosen.contains(&format!("{c}: ")),
            "candidate {c} not measured: {chosen}"
        );
    }
}
