//! Every series the binaries export is described: a learner with a local
//! actor (whose `/metrics` carries the actor's series beside its own) and a
//! separate actor process, both scraped while training, pass the same checks
//! as `promtool check metrics`, and promtool itself where it is installed.

use std::process::{Child, Command, Stdio};

use flotilla_common::testing::skip;
use flotilla_tests::{
    bin, configs, free_port, lint_exposition, promtool_check, scrape_text, wait_until, TempDir,
};

/// Kills its processes however the test ends.
struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn updates(text: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix("flotilla_learner_updates_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn every_exported_series_is_described_in_every_mode() {
    let dir = TempDir::new("metrics-lint");
    let (port, learner_metrics, actor_metrics) = (free_port(), free_port(), free_port());
    let learner = Command::new(bin("learner"))
        .arg("--config")
        .arg(configs().join("cartpole.toml"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{learner_metrics}")])
        .args(["--device", "cpu", "--local-actors", "1"])
        .args(["--total-env-steps", "100000000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("learner starts");
    let mut procs = Killed(vec![learner]);
    let actor = Command::new(bin("actor"))
        .args(["--learner", &format!("http://127.0.0.1:{port}")])
        .args(["--name", "external", "--num-envs", "4"])
        .args(["--metrics-listen", &format!("127.0.0.1:{actor_metrics}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("actor starts");
    procs.0.push(actor);

    // Histograms appear with their first observation: wait for training,
    // acting and sending on both endpoints.
    let (learner_text, actor_text) =
        wait_until("both endpoints exporting while training", 180, || {
            let l = scrape_text(learner_metrics)?;
            let a = scrape_text(actor_metrics)?;
            let acted = |t: &str| {
                t.contains("\nflotilla_actor_inference_duration_seconds")
                    && t.contains("\nflotilla_actor_chunk_send_duration_seconds")
            };
            (updates(&l) >= 3.0 && acted(&l) && acted(&a)).then_some((l, a))
        });
    drop(procs);

    for (what, text) in [
        ("the learner with a local actor", &learner_text),
        ("the actor process", &actor_text),
    ] {
        let problems = lint_exposition(text);
        assert!(
            problems.is_empty(),
            "{what} exports series that promtool would refuse:\n{}\n\n{text}",
            problems.join("\n")
        );
        match promtool_check(text) {
            Ok(Some(())) => {}
            Ok(None) => skip(
                "promtool",
                "promtool is not installed (Debian's prometheus package)",
            ),
            Err(e) => panic!("promtool check metrics refuses {what}'s /metrics:\n{e}\n\n{text}"),
        }
    }
    for family in [
        "flotilla_learner_updates_total",
        "flotilla_actor_env_steps_total",
        "flotilla_actor_inference_duration_seconds",
    ] {
        assert!(
            learner_text.contains(&format!("# HELP {family} ")),
            "the learner with a local actor does not describe {family}"
        );
    }
    assert!(
        !actor_text.contains("flotilla_learner_"),
        "an actor process exports only actor series"
    );
}
