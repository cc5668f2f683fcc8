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
    // the metrics log of both runs is one continuous curve
    let lines = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(
        lines.lines().count() as u64,
        v2,
        "one metrics line per update across both runs"
    );
}
