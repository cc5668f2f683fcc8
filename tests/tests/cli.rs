//! The learner's command line as users type it: flags through clap, empty
//! environment variables, and the guarantee that a stop signal ends the
//! process within its grace period.

use std::time::{Duration, Instant};

use flotilla_tests::{learner_command, scrape, wait_for_exit, TempDir};

/// The learner on CartPole with the given device and metrics port (0: any).
fn bare_learner(run: &std::path::Path, device: &str, metrics_port: u16) -> std::process::Command {
    let mut cmd = std::process::Command::new(flotilla_tests::bin("learner"));
    cmd.arg("--config")
        .arg(flotilla_tests::configs().join("cartpole.toml"))
        .arg("--run-dir")
        .arg(run)
        .args(["--listen", "127.0.0.1:0", "--device", device])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")]);
    cmd
}

/// `--set` takes lists and several assignments as docs/configuration.md
/// shows; the run's checkpoint holds what was set.
#[test]
fn set_passes_lists_and_several_assignments_whole() {
    let dir = TempDir::new("cli-set");
    let run = dir.path().join("run");
    let out = learner_command("cartpole.toml", &run)
        .args(["--local-actors", "1", "--total-env-steps", "2048"])
        .args(["--set", "model.hidden_sizes=[24,40]"])
        .args(["--set", "ppo.update_epochs=1,ppo.num_minibatches=2"])
        .env_remove("FLOTILLA_SET")
        .output()
        .expect("learner runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let checkpoint = flotilla_tests::summary_final_checkpoint(&run).expect("summary");
    let meta = flotilla_common::checkpoint::read_metadata(&checkpoint).unwrap();
    let config: toml::Table = meta["config"].parse().unwrap();
    assert_eq!(
        config["model"]["hidden_sizes"],
        toml::Value::Array(vec![24.into(), 40.into()])
    );
    assert_eq!(config["ppo"]["update_epochs"].as_integer(), Some(1));
    assert_eq!(config["ppo"]["num_minibatches"].as_integer(), Some(2));
}

/// Compose passes every variable, set or not: an empty `FLOTILLA_*` counts
/// as unset, while a bad non-empty one is still a usage error naming it.
#[test]
fn empty_environment_variables_count_as_unset() {
    let dir = TempDir::new("cli-env");
    let run = dir.path().join("run");
    let empty = [
        "FLOTILLA_SEED",
        "FLOTILLA_TOTAL_ENV_STEPS",
        "FLOTILLA_LOCAL_NUM_ENVS",
        "FLOTILLA_LOCAL_MAX_STEPS_PER_SECOND",
        "FLOTILLA_TORCH_THREADS",
        "FLOTILLA_SET",
        "FLOTILLA_AUTH_TOKEN_FILE",
        "FLOTILLA_TLS_CERT",
        "FLOTILLA_RESUME",
        "FLOTILLA_INSECURE",
        "FLOTILLA_SHUTDOWN_GRACE_SECONDS",
    ];
    let mut cmd = learner_command("cartpole.toml", &run);
    cmd.args(["--local-actors", "1", "--total-env-steps", "1024"]);
    for k in empty {
        cmd.env(k, "");
    }
    let out = cmd.output().expect("learner runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = learner_command("cartpole.toml", &run)
        .env("FLOTILLA_LOCAL_MAX_STEPS_PER_SECOND", "0")
        .args(["--local-actors", "1"])
        .output()
        .expect("learner runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("--local-max-steps-per-second"), "{log}");
}

/// SIGTERM asks for a last update and checkpoint; when that update cannot
/// finish within `--shutdown-grace-seconds`, the learner still exits, with
/// code 75 and a line saying why.
#[test]
fn sigterm_ends_the_learner_within_its_grace_period() {
    let dir = TempDir::new("cli-grace");
    let run = dir.path().join("run");
    let port = flotilla_tests::free_port();
    let log_path = dir.path().join("learner.log");
    // Updates of many seconds each: wide layers, a big batch, many epochs.
    let mut child = bare_learner(&run, "cpu", port)
        .args(["--local-actors", "1", "--shutdown-grace-seconds", "2"])
        .args(["--torch-threads", "1"])
        .args(["--set", "model.hidden_sizes=[1024,1024]"])
        .args(["--set", "ppo.batch_size=4096,ppo.update_epochs=1000"])
        .args(["--set", "ppo.num_minibatches=16"])
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .expect("learner starts");
    // Wait until a full batch has arrived: the first update is then running.
    let started = Instant::now();
    loop {
        let received = scrape(port)
            .get("flotilla_learner_samples_received_total")
            .copied()
            .unwrap_or(0.0);
        if received >= 4096.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no batch after 60 s"
        );
        if let Ok(Some(status)) = child.try_wait() {
            panic!("learner exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let signalled = Instant::now();
    flotilla_tests::signal(&child, "TERM");
    let status = wait_for_exit(&mut child, 20).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("learner still running 20 s after SIGTERM with a 2 s grace period")
    });
    let took = signalled.elapsed();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(75), "{log}");
    assert!(log.contains("grace period"), "{log}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

/// `--device cuda` where CUDA is not usable is a usage error that says so;
/// where it is, the run trains on it.
#[test]
fn device_cuda_trains_there_or_says_why_not() {
    let dir = TempDir::new("cli-cuda");
    let run = dir.path().join("run");
    let out = bare_learner(&run, "cuda", 0)
        .args(["--local-actors", "1"])
        .args(["--total-env-steps", "2048"])
        .output()
        .expect("learner runs");
    let log = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(64) => assert!(
            log.contains("--device cuda was requested but CUDA is not available"),
            "{log}"
        ),
        Some(0) => assert!(log.contains("device=cuda"), "{log}"),
        other => panic!("exit {other:?}: {log}"),
    }
}

/// `learner plot` and `learner compare` as docs/benchmarks.md uses them.
#[test]
fn plot_and_compare_draw_pngs_from_run_directories() {
    let dir = TempDir::new("cli-plot");
    let runs: Vec<_> = ["a", "b"]
        .iter()
        .enumerate()
        .map(|(k, name)| {
            let run = dir.path().join(name);
            std::fs::create_dir_all(&run).unwrap();
            let log: String = (0..30)
                .map(|i| {
                    format!(
                        "{{\"version\":{},\"env_steps\":{},\"wall_seconds\":{},\"episode_return_mean\":{}}}\n",
                        i + 1,
                        i * 2048,
                        i as f64 * 0.5,
                        (i * (k + 1) * 5) as f64
                    )
                })
                .collect();
            std::fs::write(run.join("metrics.jsonl"), log).unwrap();
            run
        })
        .collect();
    let learner = || std::process::Command::new(flotilla_tests::bin("learner"));
    let out = learner().arg("plot").arg(&runs[0]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let png = runs[0].join("learning_curve.png");
    assert!(String::from_utf8_lossy(&out.stdout).contains(&*png.to_string_lossy()));
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");

    let cmp = dir.path().join("cmp.png");
    let out = learner()
        .args(["compare", "--title", "two runs", "--out"])
        .arg(&cmp)
        .arg(format!("one={}", runs[0].display()))
        .arg(format!("two={}", runs[1].display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(&std::fs::read(&cmp).unwrap()[..4], b"\x89PNG");

    let out = learner()
        .args(["compare", "--out"])
        .arg(&cmp)
        .arg(runs[0].as_os_str())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected LABEL=RUN_DIR"));
    let out = learner()
        .arg("plot")
        .arg(dir.path().join("none"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

/// A local actor the learner refuses for good (here: its chunks cannot fit
/// `ingest.max_chunk_bytes`) ends the local cluster with exit 64 naming it,
/// instead of a learner waiting for data forever.
#[test]
fn a_failing_local_actor_ends_the_run() {
    let dir = TempDir::new("cli-local-fail");
    let run = dir.path().join("run");
    let mut child = learner_command("cartpole.toml", &run)
        .args([
            "--local-actors",
            "2",
            "--set",
            "ingest.max_chunk_bytes=8192",
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("learner starts");
    let status = wait_for_exit(&mut child, 60).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the learner still waits for its refused local actors after 60 s")
    });
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert_eq!(status.code(), Some(64), "{log}");
    assert!(
        log.contains("local actor local-") && log.contains("ingest.max_chunk_bytes"),
        "{log}"
    );
}

/// A convolutional torso on observations it cannot read (CartPole's four
/// numbers are no image) fails at start-up, exit 64, naming `model.conv`;
/// the same run on Maze-v0's image observation starts.
#[test]
fn a_conv_torso_needs_image_observations() {
    let dir = TempDir::new("cli-conv");
    let out = learner_command("cartpole.toml", &dir.path().join("flat"))
        .args(["--set", "model.conv=[{channels=4,kernel=3,stride=1}]"])
        .output()
        .expect("learner runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{log}");
    assert!(
        log.contains("model.conv") && log.contains("shape [4]"),
        "{log}"
    );
    let out = learner_command("maze.toml", &dir.path().join("image"))
        .args(["--local-actors", "1", "--total-env-steps", "1024"])
        .args([
            "--set",
            "env.observation=\"image\",model.conv=[{channels=4,kernel=3,stride=2}]",
        ])
        .output()
        .expect("learner runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
}
