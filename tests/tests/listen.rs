//! Fail-closed listening: the learner binds loopback unless told otherwise,
//! and refuses an address other machines can reach without a shared token.

use flotilla_tests::TempDir;

/// The defaults bind gRPC and metrics to loopback: nothing on the network
/// can join a local-cluster run.
#[test]
fn the_local_cluster_binds_loopback_by_default() {
    let dir = TempDir::new("listen-default");
    let run = dir.path().join("run");
    let out = std::process::Command::new(flotilla_tests::bin("learner"))
        .arg("--config")
        .arg(flotilla_tests::configs().join("cartpole.toml"))
        .arg("--run-dir")
        .arg(&run)
        .args([
            "--local-actors",
            "1",
            "--total-env-steps",
            "1024",
            "--device",
            "cpu",
        ])
        .env_remove("FLOTILLA_LISTEN")
        .env_remove("FLOTILLA_METRICS_LISTEN")
        .output()
        .expect("learner runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("addr=127.0.0.1:50051"),
        "gRPC on loopback: {log}"
    );
    assert!(
        log.contains("addr=127.0.0.1:9000"),
        "metrics on loopback: {log}"
    );
    assert!(!log.contains("0.0.0.0"), "{log}");
}

/// Off loopback without a token: exit 64 naming the fix; `--insecure` (or
/// a token) lets it start.
#[test]
fn an_open_address_needs_a_token_or_insecure() {
    let dir = TempDir::new("listen-open");
    let run = dir.path().join("run");
    let open = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(flotilla_tests::bin("learner"));
        cmd.arg("--config")
            .arg(flotilla_tests::configs().join("cartpole.toml"))
            .arg("--run-dir")
            .arg(&run)
            .args(["--listen", "0.0.0.0:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--device", "cpu", "--local-actors", "1"])
            .args(["--total-env-steps", "1024"])
            .args(extra)
            .env_remove("FLOTILLA_AUTH_TOKEN")
            .env_remove("FLOTILLA_INSECURE");
        cmd.output().expect("learner runs")
    };
    let out = open(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    for fix in ["FLOTILLA_AUTH_TOKEN", "--insecure", "127.0.0.1"] {
        assert!(stderr.contains(fix), "names {fix}: {stderr}");
    }
    assert!(!run.join("checkpoints").exists(), "nothing was started");

    let out = open(&["--insecure"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("--insecure: no shared token"), "{stderr}");

    let token = dir.path().join("token");
    std::fs::write(&token, "a-shared-token-of-flotilla").unwrap();
    let out = open(&["--force-new", "--auth-token-file", token.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
