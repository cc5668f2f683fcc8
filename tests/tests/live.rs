//! The live page on the learner's metrics port, over real HTTP while a local
//! cluster trains: the page itself (self-contained: nothing fetched from
//! elsewhere), its `/api/status` (run, progress, rates, the connected actors,
//! a learning curve that grows, the evaluations, the last checkpoint),
//! `/metrics` beside it,
//! and clear answers to anything else. The local cluster prints the URL.
//! python/tests/test_live_page.py looks at the page in a real browser.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use flotilla_tests::{bin, configs, http, wait_until, TempDir};

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status(port: u16) -> Option<serde_json::Value> {
    match http(port, "GET", "/api/status")? {
        (200, body) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

#[test]
fn the_live_page_shows_a_training_run() {
    let dir = TempDir::new("live-page");
    let mut child = Command::new(bin("learner"))
        .arg("--config")
        .arg(configs().join("cartpole.toml"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--device", "cpu", "--local-actors", "1"])
        .args([
            "--total-env-steps",
            "100000000",
            "--set",
            "run.checkpoint_every=5,eval.every_updates=3,eval.episodes=2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("learner starts");
    let stdout = child.stdout.take().unwrap();
    let _learner = Killed(child);
    // The URL is the first thing the binary prints; the port was 0.
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    let url = first
        .strip_prefix("live page: ")
        .unwrap_or_else(|| panic!("no URL first: {first:?}"))
        .trim();
    let port: u16 = url
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("not a loopback URL: {url}"));

    let (code, page) = http(port, "GET", "/").expect("the page answers");
    assert_eq!(code, 200);
    assert!(page.contains("<svg id=\"curve\""), "{page}");
    assert!(page.contains("<g id=\"evals\""), "{page}");
    assert!(page.contains("fetch(\"/api/status\""), "{page}");
    for remote in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "@import",
        "url(",
    ] {
        assert!(
            !page.contains(remote),
            "the page fetches something from elsewhere: {remote}"
        );
    }

    let first = wait_until(
        "a run with an actor, a curve, an evaluation and a checkpoint",
        120,
        || {
            status(port).filter(|s| {
                s["state"] == "training"
                    && s["actors"].as_array().is_some_and(|a| !a.is_empty())
                    && s["curve"].as_array().is_some_and(|c| !c.is_empty())
                    && s["evals"].as_array().is_some_and(|e| !e.is_empty())
                    && !s["checkpoint"].is_null()
            })
        },
    );
    assert_eq!(first["env_id"], "CartPole-v1");
    assert_eq!(first["algo"], "PPO");
    assert_eq!(first["total_env_steps"], 100_000_000);
    assert_eq!(first["run_id"].as_str().map(str::len), Some(16));
    let actor = &first["actors"][0];
    assert_eq!(actor["name"], "local-0");
    assert_eq!(actor["connected"], true);
    assert!(actor["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1:")));
    assert!(first["checkpoint"]["path"]
        .as_str()
        .is_some_and(|p| p.ends_with(".safetensors")));
    let point = &first["curve"][0];
    assert!(point[0].as_f64().unwrap() > 0.0 && point[2].as_f64().is_some());
    let evals = first["evals"].as_array().unwrap();
    let last = &evals[evals.len() - 1];
    assert!(last[0].as_f64().unwrap() > 0.0, "{last}");
    assert_eq!(first["eval_return"], last[2], "{first}");

    // Rates need two looks a second apart; the curve grows between them.
    let later = wait_until("rates and a longer curve", 60, || {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        status(port).filter(|s| {
            s["env_steps_per_second"].as_f64().is_some_and(|r| r > 0.0)
                && s["samples_trained_per_second"]
                    .as_f64()
                    .is_some_and(|r| r > 0.0)
                && s["actors"][0]["env_steps_per_second"]
                    .as_f64()
                    .is_some_and(|r| r > 0.0)
                && s["curve"].as_array().unwrap().len() > first["curve"].as_array().unwrap().len()
        })
    });
    assert!(
        later["env_steps_trained"].as_u64() > first["env_steps_trained"].as_u64(),
        "{later}"
    );

    assert!(later["frames_per_second"].is_null(), "no images: {later}");

    let (code, metrics) = http(port, "GET", "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("flotilla_learner_updates_total"));
    assert!(metrics.contains("flotilla_learner_frames_per_step 1\n"));
    assert_eq!(http(port, "GET", "/nowhere").unwrap().0, 404);
    assert_eq!(http(port, "POST", "/").unwrap().0, 405);
    assert_eq!(http(port, "HEAD", "/").unwrap(), (200, String::new()));
}

/// A run on images reports frames/s: env steps/s times `run.frames_per_step`.
#[test]
fn a_run_on_images_shows_frames_per_second() {
    let dir = TempDir::new("live-pixels");
    let mut child = Command::new(bin("learner"))
        .arg("--config")
        .arg(configs().join("maze_pixels.toml"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .args(["--device", "cpu", "--local-actors", "1"])
        .args([
            "--total-env-steps",
            "100000000",
            "--set",
            "sync=false,eval.every_updates=0,run.frames_per_step=3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("learner starts");
    let stdout = child.stdout.take().unwrap();
    let _learner = Killed(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    let port: u16 = first
        .trim()
        .trim_start_matches("live page: http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .unwrap_or_else(|_| panic!("no URL first: {first:?}"));
    let s = wait_until("frames/s of a run on images", 120, || {
        std::thread::sleep(std::time::Duration::from_millis(1100));
        status(port).filter(|s| s["env_steps_per_second"].as_f64().is_some_and(|r| r > 0.0))
    });
    let (steps, frames) = (
        s["env_steps_per_second"].as_f64().unwrap(),
        s["frames_per_second"]
            .as_f64()
            .expect("frames/s of a run on images"),
    );
    assert!((frames - 3.0 * steps).abs() <= 1e-9 * frames, "{s}");
    let (_, metrics) = http(port, "GET", "/metrics").unwrap();
    assert!(
        metrics.contains("flotilla_learner_frames_per_step 3\n"),
        "{metrics}"
    );
}
