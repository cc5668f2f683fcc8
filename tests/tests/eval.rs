//! `[eval]`: evaluation episodes next to training. A local cluster trains
//! CartPole with an evaluation every 2 versions; each `eval` line of
//! metrics.jsonl is then replayed independently by `actor rollout` on the
//! checkpoint of the same version with the same seed: the same returns,
//! episode by episode.

use std::process::Command;

use flotilla_tests::{bin, learner_command, TempDir};

#[test]
fn evaluations_are_what_a_rollout_of_the_same_version_plays() {
    let dir = TempDir::new("eval");
    let run = dir.path().join("run");
    let out = learner_command("cartpole.toml", &run)
        .args(["--local-actors", "1", "--total-env-steps", "20480"])
        .args(["--set", "eval.every_updates=2,eval.episodes=3,eval.seed=77"])
        .args(["--set", "run.checkpoint_every=2,run.keep_checkpoints=100"])
        .output()
        .expect("learner runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let evals: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|row| row.get("eval").is_some())
        .collect();
    assert!(evals.len() >= 2, "{evals:?}\n{log}");
    for e in &evals {
        let version = e["version"].as_u64().unwrap();
        assert_eq!(version % 2, 0, "{e}");
        assert_eq!(e["eval"]["episodes"], 3);
        assert_eq!(e["eval"]["greedy"], true);
    }
    // Replay each evaluation whose version has a checkpoint.
    let mut replayed = 0;
    for e in &evals {
        let version = e["version"].as_u64().unwrap();
        let checkpoint = run
            .join("checkpoints")
            .join(format!("ckpt-{version:010}.safetensors"));
        if !checkpoint.exists() {
            continue;
        }
        let trace = dir.path().join(format!("replay-{version}.jsonl"));
        let r = Command::new(bin("actor"))
            .args(["rollout", "--greedy", "--episodes", "3", "--seed", "77"])
            .arg("--checkpoint")
            .arg(&checkpoint)
            .arg("--out")
            .arg(&trace)
            .output()
            .unwrap();
        assert!(r.status.success(), "{r:?}");
        let mut returns = vec![0.0f64; 3];
        for line in std::fs::read_to_string(&trace).unwrap().lines() {
            let step: serde_json::Value = serde_json::from_str(line).unwrap();
            returns[step["episode"].as_u64().unwrap() as usize] += step["reward"].as_f64().unwrap();
        }
        let evaluated: Vec<f64> = e["eval"]["returns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_f64().unwrap())
            .collect();
        assert_eq!(evaluated, returns, "version {version}");
        let mean = returns.iter().sum::<f64>() / 3.0;
        assert!((e["eval"]["return_mean"].as_f64().unwrap() - mean).abs() < 1e-9);
        replayed += 1;
    }
    assert!(
        replayed >= 2,
        "only {replayed} evaluations had a checkpoint to replay"
    );
    assert!(log.contains("evaluation"), "{log}");
}
