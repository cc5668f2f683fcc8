//! The proof: the real `learner` binary with two local actors (real gRPC over
//! loopback) solves CartPole-v1 — mean return ≥ 475 over the last 100
//! episodes — within a bounded step budget.

use std::process::Command;

use flotilla_tests::{
    bin, learner_command, summary_final_checkpoint, summary_mean_return as mean_return, TempDir,
};

#[test]
fn cartpole_is_solved_by_the_local_cluster() {
    let dir = TempDir::new("cartpole");
    let out = learner_command("cartpole.toml", &dir.path().join("run"))
        .args(["--local-actors", "2", "--seed", "1"])
        .output()
        .expect("learner runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "learner failed\n{stdout}\n{stderr}");
    let run = dir.path().join("run");
    let ret = mean_return(&run).unwrap_or_else(|| panic!("no summary in\n{stdout}"));
    assert!(
        ret >= 475.0,
        "CartPole not solved: mean return {ret}\n{stdout}"
    );
    assert!(stdout.contains("final checkpoint: "), "{stdout}");
    // the run directory holds the metrics log and a checkpoint
    assert!(run.join("metrics.jsonl").exists());
    assert!(std::fs::read_dir(run.join("checkpoints")).unwrap().count() >= 1);
    assert!(run.join("learning_curve.png").exists());

    // The final checkpoint plays greedily at the top of the scale.
    let ckpt = summary_final_checkpoint(&run).expect("final checkpoint path");
    let trace = dir.path().join("greedy.jsonl");
    let out = Command::new(bin("actor"))
        .args([
            "rollout",
            "--checkpoint",
            ckpt.to_str().expect("UTF-8 path"),
            "--greedy",
            "--episodes",
            "5",
            "--seed",
            "9",
            "--out",
        ])
        .arg(&trace)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mean: f64 = text
        .split("return mean ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no mean in {text}"));
    assert!(
        mean >= 475.0,
        "greedy rollout of the trained policy: {text}"
    );
}
