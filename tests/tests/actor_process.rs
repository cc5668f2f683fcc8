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

    // A resumed learner on the same address: the same actors finish its budget.
    let l2 = learner(&run, port, 60_000, true);
    let out = l2.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("resumed from checkpoint"), "{stderr}");
    let (version, steps) = summary_version_and_steps(&run).expect("summary");
    assert!(steps >= 60_000 && version > 2, "{stdout}");

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
