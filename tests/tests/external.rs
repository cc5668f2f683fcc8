//! An environment Flotilla does not ship: `dial-actor` (examples/dial) runs
//! a custom Rust environment with the real actor program, declares its id
//! and spaces at `Hello`, and trains a learner whose `[env]` says
//! `source = "external"` — separate processes, real gRPC. The built-in
//! actor is refused by such a run, and a resumed run knows its spaces
//! from its checkpoint without waiting for a declaration.

use std::process::{Child, Command, Stdio};

use flotilla_tests::{
    bin, free_port, learner_command_on, summary, summary_final_checkpoint, summary_mean_return,
    wait_for_exit, TempDir,
};

fn learner(run: &std::path::Path, port: u16, extra: &[&str]) -> Child {
    learner_command_on("dial.toml", run, port)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("learner starts")
}

fn dial_actor(port: u16, name: &str) -> Child {
    Command::new(bin("dial-actor"))
        .args([
            "--learner",
            &format!("http://127.0.0.1:{port}"),
            "--name",
            name,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dial-actor starts")
}

fn finish(mut learner: Child, secs: u64) -> (bool, String) {
    let status = wait_for_exit(&mut learner, secs);
    if status.is_none() {
        let _ = learner.kill();
    }
    let out = learner.wait_with_output().expect("learner output");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (status.is_some_and(|s| s.success()), text)
}

fn stop(mut actors: Vec<Child>) {
    for a in &mut actors {
        let _ = a.kill();
        let _ = a.wait();
    }
}

#[test]
fn a_custom_rust_environment_trains_through_the_real_actor() {
    let dir = TempDir::new("external");
    let run = dir.path().join("run");
    let port = free_port();
    let l = learner(&run, port, &[]);

    // The built-in actor cannot run Dial-v0: refused with the reason.
    let out = Command::new(bin("actor"))
        .args(["--learner", &format!("http://127.0.0.1:{port}")])
        .output()
        .expect("actor runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("`Dial-v0`") && err.contains("external") && err.contains("declares none"),
        "{err}"
    );

    let actors = vec![dial_actor(port, "a"), dial_actor(port, "b")];
    let (ok, text) = finish(l, 600);
    stop(actors);
    assert!(ok, "learner failed:\n{text}");
    assert!(
        text.contains("the first actor declared the environment's spaces"),
        "{text}"
    );
    // Standing still scores about -7 per episode; heading for the target
    // and staying there about -1.7.
    let ret = summary_mean_return(&run).expect("a mean return");
    assert!(ret > -2.5, "Dial-v0 not learned: mean return {ret}\n{text}");
    let steps = summary(&run).unwrap()["env_steps"].as_u64().unwrap();

    // The checkpoint plays in the actor that brings the environment.
    let ckpt = summary_final_checkpoint(&run).expect("final checkpoint");
    let trace = dir.path().join("greedy.jsonl");
    let out = Command::new(bin("dial-actor"))
        .args(["rollout", "--greedy", "--episodes", "20", "--checkpoint"])
        .arg(&ckpt)
        .arg("--out")
        .arg(&trace)
        .output()
        .unwrap();
    let played = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{played}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mean: f64 = played
        .split("return mean ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no mean in {played}"));
    assert!(mean > -2.5, "greedy Dial-v0 mean {mean}");
    // The built-in rollout cannot build it and says why.
    let out = Command::new(bin("actor"))
        .args(["rollout", "--episodes", "1", "--checkpoint"])
        .arg(&ckpt)
        .arg("--out")
        .arg(dir.path().join("x.jsonl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is external"));

    // Resumed, the run knows its spaces at once: a learner with no actor
    // yet is ready (it does not wait for a declaration), then trains on.
    let port = free_port();
    let total = (steps + 20_000).to_string();
    let l = learner(&run, port, &["--resume", "--total-env-steps", &total]);
    let actors = vec![dial_actor(port, "a")];
    let (ok, text) = finish(l, 300);
    stop(actors);
    assert!(ok, "resumed learner failed:\n{text}");
    assert!(text.contains("resumed from checkpoint"), "{text}");
    assert!(
        !text.contains("waiting for the first actor"),
        "a resumed run must not wait for a declaration:\n{text}"
    );
    let resumed = summary(&run).unwrap()["env_steps"].as_u64().unwrap();
    assert!(resumed > steps, "{resumed} <= {steps}");
}
