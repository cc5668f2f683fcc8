//! `actor rollout`: the JSON Lines trace written by the real binary.

use std::process::Command;

use flotilla_common::testing::TempDir;

#[test]
fn rollout_writes_a_trace_with_the_contract_keys() {
    let dir = TempDir::new("rollout");
    let out = dir.path().join("trace.jsonl");
    let status = Command::new(env!("CARGO_BIN_EXE_actor"))
        .args([
            "rollout",
            "--env",
            "CartPole-v1",
            "--episodes",
            "3",
            "--seed",
            "4",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("3 episodes"), "{stdout}");
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let episodes: Vec<u64> = lines
        .iter()
        .map(|l| l["episode"].as_u64().unwrap())
        .collect();
    assert_eq!(episodes.first(), Some(&0));
    assert_eq!(episodes.last(), Some(&2));
    let ends = lines
        .iter()
        .filter(|l| l["terminated"].as_bool().unwrap() || l["truncated"].as_bool().unwrap())
        .count();
    assert_eq!(ends, 3);
    for l in &lines {
        assert_eq!(l.as_object().unwrap().len(), 8);
        assert_eq!(l["obs"].as_array().unwrap().len(), 4);
        assert_eq!(l["next_obs"].as_array().unwrap().len(), 4);
        assert!(l["action"].as_u64().unwrap() < 2);
    }
}

#[test]
fn rollout_reads_a_run_config_and_seeds_reproduce() {
    let dir = TempDir::new("rollout-cfg");
    let cfg = dir.path().join("run.toml");
    std::fs::write(
        &cfg,
        "[env]\nid = \"Pendulum-v1\"\nmax_episode_steps = 20\n",
    )
    .unwrap();
    let run = |name: &str| {
        let out = dir.path().join(name);
        let o = Command::new(env!("CARGO_BIN_EXE_actor"))
            .args(["rollout", "--episodes", "2", "--seed", "1", "--config"])
            .arg(&cfg)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        std::fs::read_to_string(out).unwrap()
    };
    let a = run("a.jsonl");
    assert_eq!(a.lines().count(), 40);
    assert_eq!(a, run("b.jsonl"));
    let first: serde_json::Value = serde_json::from_str(a.lines().next().unwrap()).unwrap();
    assert_eq!(first["action"].as_array().unwrap().len(), 1);
}

#[test]
fn rollout_rejects_unknown_env_and_bad_key_naming_them() {
    let dir = TempDir::new("rollout-bad");
    let out = dir.path().join("t.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_actor"))
        .args(["rollout", "--env", "Nope-v9", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Nope-v9") && err.contains("CartPole-v1"),
        "{err}"
    );

    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[env]\nid = \"Maze-v0\"\nsizee = 5\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_actor"))
        .args(["rollout", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sizee") && err.contains("size"), "{err}");
}

#[test]
fn rollout_refuses_a_file_that_is_not_a_flotilla_checkpoint() {
    let dir = TempDir::new("rollout-format");
    // A valid safetensors file of another format, with a run config.
    let metadata = std::collections::HashMap::from([
        ("format".to_owned(), "someone-elses-v3".to_owned()),
        (
            "config".to_owned(),
            "[env]\nid = \"CartPole-v1\"\n".to_owned(),
        ),
    ]);
    let bytes = flotilla_common::policy::write_safetensors(
        [("model/x", &[1usize][..], &[0.0f32][..])].into_iter(),
        Some(metadata),
    );
    let ckpt = dir.join("other.safetensors");
    std::fs::write(&ckpt, bytes).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_actor"))
        .args(["rollout", "--checkpoint"])
        .arg(&ckpt)
        .arg("--out")
        .arg(dir.join("t.jsonl"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("other.safetensors") && err.contains("flotilla-checkpoint-v1"),
        "{err}"
    );
}

/// `--video` writes an animated GIF: one frame per reset and per step, each
/// the environment's picture of that state, decoded here with the `gif`
/// crate's decoder. CartPole's state is in the trace, so each frame's pole
/// can be checked against the angle of its step.
#[test]
fn rollout_video_is_a_gif_of_every_step() {
    let dir = TempDir::new("rollout-video");
    let (out, video) = (dir.path().join("t.jsonl"), dir.path().join("v.gif"));
    let run = Command::new(env!("CARGO_BIN_EXE_actor"))
        .args([
            "rollout",
            "--env",
            "CartPole-v1",
            "--episodes",
            "2",
            "--seed",
            "7",
        ])
        .arg("--out")
        .arg(&out)
        .arg("--video")
        .arg(&video)
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    assert!(String::from_utf8_lossy(&run.stdout).contains("video written to"));
    let steps: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::Indexed);
    let mut decoder = options
        .read_info(std::fs::File::open(&video).unwrap())
        .unwrap();
    assert_eq!((decoder.width(), decoder.height()), (300, 200));
    let mut frames = Vec::new();
    while let Some(f) = decoder.read_next_frame().unwrap() {
        assert_eq!(f.delay, 2, "50 frames per second");
        frames.push(f.buffer.to_vec());
    }
    // A frame after each of the 2 resets and after every step.
    assert_eq!(frames.len(), steps.len() + 2);
    // The pole (palette colour 3) leans the way θ (obs[2]) says: count its
    // pixels left and right of the axle, in the frame after each step.
    let pole = 3u8;
    let mut checked = 0;
    let mut frame = 0;
    for s in &steps {
        frame += 1; // the step's own frame (after the reset's or the last step's)
        if s["step"] == 0 {
            frame += 1;
        }
        let theta = s["next_obs"][2].as_f64().unwrap();
        let x = s["next_obs"][0].as_f64().unwrap();
        let axle = (150.0 + x * 300.0 / 4.8).round() as usize;
        if theta.abs() < 0.05 || !(40..260).contains(&axle) {
            continue;
        }
        let pixels = &frames[frame - 1];
        let (mut left, mut right) = (0, 0);
        for (i, &p) in pixels.iter().enumerate() {
            if p == pole && i / 300 < 130 {
                if i % 300 < axle {
                    left += 1
                } else {
                    right += 1
                }
            }
        }
        assert!(
            (theta > 0.0 && right > 3 * left) || (theta < 0.0 && left > 3 * right),
            "step {s}: θ = {theta}, pole pixels left {left}, right {right}"
        );
        checked += 1;
    }
    assert!(
        checked >= 5,
        "only {checked} steps leaned far enough to check"
    );
}

/// Every built-in environment draws a picture; the video of each is written.
#[test]
fn every_builtin_environment_renders() {
    let dir = TempDir::new("rollout-video-all");
    for id in flotilla_common::env::ENV_IDS {
        let video = dir.path().join(format!("{id}.gif"));
        let run = Command::new(env!("CARGO_BIN_EXE_actor"))
            .args(["rollout", "--env", id, "--out"])
            .arg(dir.path().join("t.jsonl"))
            .arg("--video")
            .arg(&video)
            .output()
            .unwrap();
        assert!(run.status.success(), "{id}: {run:?}");
        let decoder = gif::DecodeOptions::new()
            .read_info(std::fs::File::open(&video).unwrap())
            .unwrap();
        assert!(decoder.width() >= 100 && decoder.height() >= 40, "{id}");
    }
}
