//! Checkpoints and `--resume` with the real binary: a second run continues the
//! first one's version and step counters, skipping a torn newest checkpoint.

use std::process::Command;

use flotilla_tests::{bin, configs, learner_command, summary_version_and_steps, TempDir};

fn train(run_dir: &std::path::Path, total: u64, resume: bool) -> (String, String) {
    let mut cmd = learner_command("cartpole.toml", run_dir);
    cmd.args([
        "--local-actors",
        "1",
        "--total-env-steps",
        &total.to_string(),
        "--set",
        "run.checkpoint_every=5",
        // 20 updates in the first run, checkpoints every 5
        "--set",
        "ppo.batch_size=1024",
    ]);
    if resume {
        cmd.arg("--resume");
    }
    let out = cmd.output().expect("learner runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "learner failed\n{stdout}\n{stderr}");
    (stdout, stderr)
}

#[test]
fn resume_continues_counters_and_skips_a_torn_checkpoint() {
    let dir = TempDir::new("resume");
    let run = dir.path().join("run");
    let (first, _) = train(&run, 20_480, false);
    let (v1, s1) = summary_version_and_steps(&run).expect("summary");
    assert!(v1 >= 10 && s1 >= 20_480, "{first}");

    // Without --resume the run directory is refused, and nothing is touched.
    let out = Command::new(bin("learner"))
        .arg("--config")
        .arg(configs().join("cartpole.toml"))
        .arg("--run-dir")
        .arg(&run)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));

    // A torn file that claims to be newer than every real checkpoint.
    let ckpts = run.join("checkpoints");
    let newest = std::fs::read_dir(&ckpts)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .max()
        .unwrap();
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(
        ckpts.join("ckpt-9999999999.safetensors"),
        &bytes[..bytes.len() / 3],
    )
    .unwrap();

    let (_, log) = train(&run, 40_960, true);
    assert!(log.contains("skipping unusable checkpoint"), "{log}");
    assert!(log.contains("resumed from checkpoint"), "{log}");
    let (v2, s2) = summary_version_and_steps(&run).expect("summary");
    assert!(v2 > v1, "version went from {v1} to {v2}");
    assert!(
        (40_960..40_960 + 20_480).contains(&s2),
        "steps {s2} should continue from {s1}"
    );
    // the metrics log of both runs is one continuous curve: one line per
    // version, versions 1, 2, 3, ... and env steps rising throughout, also
    // where the second run began (a step counter that restarted at 0 while
    // the version carried on breaks the rise there)
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len() as u64, v2, "one metrics line per update");
    let versions: Vec<u64> = rows
        .iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (1..=v2).collect::<Vec<_>>());
    let steps: Vec<u64> = rows
        .iter()
        .map(|r| r["env_steps"].as_u64().unwrap())
        .collect();
    for (i, w) in steps.windows(2).enumerate() {
        assert!(
            w[1] > w[0],
            "env steps fall after version {}: {steps:?}",
            i + 1
        );
    }
    assert!(steps[v1 as usize - 1] >= s1 - 2048, "{steps:?}");
}

/// `--resume` with checkpoints the config cannot use refuses to start (exit
/// 64, naming each file and why) instead of silently starting over; with
/// `--force-new` the old files are set aside and a new run starts.
#[test]
fn resume_with_a_changed_model_refuses_unless_force_new() {
    let dir = TempDir::new("resume-mismatch");
    let run = dir.path().join("run");
    train(&run, 4096, false);
    let old: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!old.is_empty());
    let old_lines = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count();

    let changed = |extra: &[&str]| {
        let mut cmd = learner_command("cartpole.toml", &run);
        cmd.args([
            "--local-actors",
            "1",
            "--total-env-steps",
            "2048",
            "--resume",
            "--set",
            "model.hidden_sizes=[32]",
        ]);
        cmd.args(extra);
        cmd.output().expect("learner runs")
    };
    let out = changed(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for name in &old {
        assert!(stderr.contains(name.as_str()), "names {name}: {stderr}");
    }
    assert!(stderr.contains("shape"), "says why: {stderr}");
    assert!(
        stderr.contains("--force-new"),
        "names the way out: {stderr}"
    );
    // Nothing was touched.
    assert_eq!(
        std::fs::read_dir(run.join("checkpoints")).unwrap().count(),
        old.len()
    );

    let out = changed(&["--force-new"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let aside: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("checkpoints.replaced-") || n.starts_with("metrics.replaced-"))
        .collect();
    assert_eq!(aside.len(), 2, "{aside:?}");
    let kept = aside
        .iter()
        .find(|n| n.starts_with("checkpoints."))
        .unwrap();
    assert_eq!(
        std::fs::read_dir(run.join(kept)).unwrap().count(),
        old.len()
    );
    // The new run's log and checkpoints are its own, and the summary names a
    // file that exists.
    let (v, _) = summary_version_and_steps(&run).unwrap();
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(
        lines.lines().count() as u64,
        v,
        "{old_lines} old lines gone"
    );
    let last = flotilla_tests::summary_final_checkpoint(&run).unwrap();
    assert!(last.exists(), "{}", last.display());
}

/// `--resume` in an empty run directory starts a new run (compose and
/// Kubernetes always pass it); in one whose every checkpoint is corrupt it
/// refuses (exit 64) naming each file.
#[test]
fn resume_on_an_empty_or_all_corrupt_run_directory() {
    let dir = TempDir::new("resume-empty");
    let run = dir.path().join("run");
    let (_, log) = train(&run, 2048, true);
    assert!(!log.contains("resumed from checkpoint"), "{log}");
    assert!(summary_version_and_steps(&run).is_some());

    let ckpts = run.join("checkpoints");
    let names: Vec<_> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!names.is_empty());
    for p in &names {
        std::fs::write(p, b"not a checkpoint").unwrap();
    }
    let out = learner_command("cartpole.toml", &run)
        .args(["--local-actors", "1", "--resume"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for p in &names {
        let name = p.file_name().unwrap().to_string_lossy();
        assert!(stderr.contains(name.as_ref()), "names {name}: {stderr}");
    }
}

/// After a kill -9 between checkpoints, the resumed run trains the lost
/// versions again, and the metrics log holds each version once: the rows
/// logged past the checkpoint before the crash are dropped on resume.
#[test]
fn resume_after_kill_9_logs_each_version_once() {
    let dir = TempDir::new("resume-kill");
    let run = dir.path().join("run");
    let mut child = learner_command("cartpole.toml", &run)
        .args(["--local-actors", "1", "--total-env-steps", "10000000"])
        .args([
            "--set",
            "run.checkpoint_every=4",
            "--set",
            "ppo.batch_size=1024",
        ])
        // about four updates a second: time to kill between checkpoints
        .args(["--local-max-steps-per-second", "4096"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let log = run.join("metrics.jsonl");
    // Kill between two checkpoints: at least one written, and the log two
    // versions past it.
    flotilla_tests::wait_until("6 updates", 120, || {
        let rows = std::fs::read_to_string(&log).ok()?.lines().count();
        (rows >= 6 && rows % 4 >= 2).then_some(())
    });
    flotilla_tests::signal(&child, "KILL");
    let _ = child.wait();
    let before = std::fs::read_to_string(&log).unwrap().lines().count() as u64;

    let (_, stderr) = train(&run, 40_960, true);
    assert!(stderr.contains("resumed from checkpoint"), "{stderr}");
    // Killed between checkpoints: the rows past the last one are dropped.
    assert!(
        stderr.contains("dropped_log_rows=") && !stderr.contains("dropped_log_rows=0 "),
        "{stderr}"
    );
    let (v2, _) = summary_version_and_steps(&run).expect("summary");
    let versions: Vec<u64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(v2 > before, "{v2} {before}");
    assert_eq!(versions, (1..=v2).collect::<Vec<_>>(), "each version once");
}

/// A resumed run continues the optimizer and the adaptive KL controller,
/// not only the counters: Adam's step count goes on from the checkpoint's
/// (2 epochs x 4 minibatches = 8 steps per update, so 8 x version when it
/// was never reset), and the KL coefficient goes on from where it was.
#[test]
fn resume_restores_adam_and_the_kl_coefficient() {
    let dir = TempDir::new("resume-state");
    let run = dir.path().join("run");
    let go = |total: &str, resume: bool| {
        let mut cmd = learner_command("cartpole.toml", &run);
        cmd.args(["--local-actors", "1", "--total-env-steps", total])
            .args(["--set", "ppo.batch_size=1024,run.checkpoint_every=5"])
            // a controller target far below any KL: the coefficient only grows
            .args(["--set", "kl.coef=0.05,kl.target=1e-7"]);
        if resume {
            cmd.arg("--resume");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ckpt = flotilla_tests::summary_final_checkpoint(&run).unwrap();
        let meta = flotilla_common::checkpoint::read_metadata(&ckpt).unwrap();
        let num = |k: &str| meta[k].parse::<f64>().unwrap();
        (num("version"), num("adam_step"), num("kl_coef"))
    };
    let (v1, adam1, kl1) = go("10240", false);
    assert_eq!(adam1, 8.0 * v1);
    assert!(kl1 > 0.05, "{kl1}");
    let (v2, adam2, kl2) = go("20480", true);
    assert!(v2 > v1);
    assert_eq!(adam2, 8.0 * v2, "Adam's step went on from {adam1}");
    assert!(kl2 > kl1, "the coefficient went on from {kl1}: {kl2}");
    // The first update after the resume used the restored coefficient (a
    // row logs the coefficient its update used).
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first_resumed = rows[v1 as usize]["update"]["kl_coef"].as_f64().unwrap();
    assert!(
        (first_resumed - kl1).abs() <= 1e-9 * kl1,
        "{first_resumed} vs {kl1}"
    );
}

/// A run that crashed before its first checkpoint left rows in
/// metrics.jsonl; the next run in that directory (with `--resume`, as
/// compose and Kubernetes start it) starts over and logs each version once.
#[test]
fn a_run_without_a_checkpoint_leaves_no_rows_behind() {
    let dir = TempDir::new("resume-no-ckpt");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let stale: String = (1..=3)
        .map(|v| format!("{{\"version\":{v},\"env_steps\":{}}}\n", v * 1024))
        .collect();
    std::fs::write(run.join("metrics.jsonl"), stale).unwrap();
    let (_, stderr) = train(&run, 4096, true);
    assert!(stderr.contains("dropped_log_rows=3"), "{stderr}");
    let (v, _) = summary_version_and_steps(&run).expect("summary");
    let versions: Vec<u64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(versions, (1..=v).collect::<Vec<_>>(), "each version once");
}
