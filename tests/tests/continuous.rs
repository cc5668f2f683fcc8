//! Continuous actions end to end: PPO with a Gaussian policy learns
//! Pendulum-v1 through the local cluster, and `actor rollout` plays the
//! trained checkpoint (sampled and greedy) and a random policy, writing Box
//! actions into its trace.

use flotilla_tests::{learner_command, summary_final_checkpoint, summary_mean_return, TempDir};

/// The mean return that `actor rollout` prints, and the trace's rows.
fn rollout(dir: &TempDir, tag: &str, args: &[&str]) -> (f64, Vec<serde_json::Value>) {
    let out_file = dir.path().join(format!("{tag}.jsonl"));
    let out = std::process::Command::new(flotilla_tests::bin("actor"))
        .arg("rollout")
        .args(args)
        .args(["--episodes", "3", "--seed", "5", "--out"])
        .arg(&out_file)
        .output()
        .expect("actor rollout runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{tag}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mean: f64 = stdout
        .split("return mean ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{tag}: no mean in {stdout}"));
    let rows = std::fs::read_to_string(&out_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (mean, rows)
}

/// 150k steps of configs/pendulum.toml, seed 1, local cluster of 2 actors.
fn train_pendulum(run: &std::path::Path, extra: &[&str]) {
    let out = learner_command("pendulum.toml", run)
        .args(["--local-actors", "2", "--seed", "1"])
        .args(["--total-env-steps", "150000"])
        .args(extra)
        .output()
        .expect("learner runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn pendulum_learns_and_its_checkpoint_plays() {
    let dir = TempDir::new("continuous");
    let run = dir.path().join("run");
    train_pendulum(&run, &[]);
    // A random policy scores about -1200. Seeds 1-3 measured -289.2 to
    // -249.9 at 150k steps (4 runs, seed 1 twice; 2-core machine,
    // 2026-12-02, debug build); the floor is 20% under the worst.
    let ret = summary_mean_return(&run).expect("a mean return");
    eprintln!("Pendulum-v1: mean return {ret:.1} after 150k steps");
    assert!(ret > -347.0, "{ret}");

    let ckpt = summary_final_checkpoint(&run).expect("a final checkpoint");
    let ckpt = ckpt.to_str().unwrap();
    let (random, rows) = rollout(&dir, "random", &["--env", "Pendulum-v1"]);
    let (sampled, _) = rollout(&dir, "sampled", &["--checkpoint", ckpt]);
    let (greedy, greedy_rows) = rollout(&dir, "greedy", &["--checkpoint", ckpt, "--greedy"]);
    eprintln!("rollout returns: random {random:.1}, sampled {sampled:.1}, greedy {greedy:.1}");
    assert!(random < -700.0, "{random}");
    assert!(sampled > random + 300.0 && greedy > random + 300.0);
    // Box actions: one float per step, 200 steps per episode (truncated).
    assert_eq!(rows.len(), 600);
    for r in rows.iter().chain(&greedy_rows) {
        let a = r["action"].as_array().expect("a list of floats");
        assert_eq!(a.len(), 1, "{r}");
        assert!(a[0].as_f64().unwrap().is_finite(), "{r}");
    }
    assert!(
        greedy_rows
            .iter()
            .filter(|r| r["truncated"] == true)
            .count()
            == 3
    );
    // The random policy samples inside the space's bounds.
    assert!(rows
        .iter()
        .all(|r| r["action"][0].as_f64().unwrap().abs() <= 2.0));
}

/// Observation and reward normalization end to end: the run learns, its
/// checkpoint carries the statistics beside the weights, and `actor rollout`
/// plays with them — a checkpoint stripped of them is refused, not played
/// with raw observations.
#[test]
fn pendulum_learns_with_normalization_and_rollout_uses_its_statistics() {
    use flotilla_common::checkpoint::{key, CheckpointFile, MODEL};
    use flotilla_common::normalize::{NormalizationState, MEAN, VAR};
    use flotilla_common::policy::NamedTensors;

    let dir = TempDir::new("continuous-norm");
    let run = dir.path().join("run");
    train_pendulum(
        &run,
        &[
            "--set",
            "model.normalize_observations=true",
            "--set",
            "ppo.normalize_rewards=true",
        ],
    );
    let ret = summary_mean_return(&run).expect("a mean return");
    eprintln!("Pendulum-v1 normalized: mean return {ret:.1} after 150k steps");
    assert!(ret > NORMALIZED_FLOOR, "{ret}");

    let ckpt = summary_final_checkpoint(&run).expect("a final checkpoint");
    let file = CheckpointFile::read(&ckpt, 1 << 30).unwrap();
    let state: NormalizationState =
        serde_json::from_str(file.get(key::NORMALIZATION).unwrap()).unwrap();
    let obs = state.observations.expect("observation statistics");
    // Every observation trained on was counted once (the prior weighs 1e-4).
    assert!((obs.count - 150_000.0).abs() < 4_000.0, "{}", obs.count);
    // cos θ, sin θ and θ̇ ∈ [−8, 8]: the angular velocity has the widest spread.
    assert!(
        obs.var[2] > obs.var[0] && obs.var[2] > obs.var[1],
        "{obs:?}"
    );
    assert!(state.returns.expect("return statistics").var[0] > 1.0);
    let names: Vec<&str> = file.section(MODEL).map(|(n, _, _)| n).collect();
    assert!(names.contains(&MEAN) && names.contains(&VAR), "{names:?}");

    let ckpt_s = ckpt.to_str().unwrap();
    let (random, _) = rollout(&dir, "random", &["--env", "Pendulum-v1"]);
    let (greedy, _) = rollout(&dir, "greedy", &["--checkpoint", ckpt_s, "--greedy"]);
    eprintln!("rollout returns: random {random:.1}, greedy {greedy:.1}");
    assert!(greedy > random + 300.0, "{greedy} vs {random}");

    // The same checkpoint without its statistics: refused, naming them.
    let stripped = dir.path().join("stripped.safetensors");
    let sections: Vec<(String, NamedTensors)> = file
        .tensors
        .iter()
        .filter(|(n, _, _)| !n.contains("obs_norm."))
        .map(|(n, s, d)| {
            let (section, name) = n.split_once('/').unwrap();
            (
                section.to_owned(),
                vec![(name.to_owned(), s.clone(), d.clone())],
            )
        })
        .collect();
    let refs: Vec<(&str, &NamedTensors)> = sections.iter().map(|(s, t)| (s.as_str(), t)).collect();
    std::fs::write(
        &stripped,
        CheckpointFile::encode(file.metadata.clone(), &refs),
    )
    .unwrap();
    let out = std::process::Command::new(flotilla_tests::bin("actor"))
        .args(["rollout", "--episodes", "1", "--checkpoint"])
        .arg(&stripped)
        .arg("--out")
        .arg(dir.path().join("never.jsonl"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(MEAN), "{stderr}");
}

/// Both normalizations, 150k steps, 2-core machine, 2026-12-03: seeds 1-3
/// gave -268.3, -255.4, -228.3 (release build) and seed 1 -316.9 (debug
/// build, as the tests run); the floor is 20% under the worst. A random
/// policy scores about -1200.
const NORMALIZED_FLOOR: f64 = -380.0;
