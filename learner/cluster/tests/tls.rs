//! The local cluster's parts over mutual TLS: a learner that admits only
//! clients with a certificate from its CA, and a real actor that trains it.

use std::time::Duration;

use flotilla_common::proto::{self, learner_client::LearnerClient};
use flotilla_common::testing::{eventually, TempDir};
use flotilla_learner::testing::{TestLearner, N};

/// PEM files of a test PKI: a CA, the learner's certificate for `localhost`,
/// a client certificate from the same CA, and one from a stranger's CA.
struct TestPki {
    dir: TempDir,
}

impl TestPki {
    fn new(tag: &str) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
            KeyPair, KeyUsagePurpose,
        };
        let dir = TempDir::new(&format!("pki-{tag}"));
        let ca = |name: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name
                .push(rcgen::DnType::CommonName, format!("{name} CA"));
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
        };
        let leaf = |issuer: &CertifiedIssuer<'_, KeyPair>, purpose, file: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            p.extended_key_usages = vec![purpose];
            let cert = p.signed_by(&key, issuer).unwrap();
            std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
        };
        let ours = ca("Flotilla");
        let theirs = ca("Stranger");
        std::fs::write(dir.join("ca.pem"), ours.pem()).unwrap();
        std::fs::write(dir.join("stranger-ca.pem"), theirs.pem()).unwrap();
        leaf(&ours, ExtendedKeyUsagePurpose::ServerAuth, "server");
        leaf(&ours, ExtendedKeyUsagePurpose::ClientAuth, "client");
        leaf(&theirs, ExtendedKeyUsagePurpose::ClientAuth, "stranger");
        TestPki { dir }
    }

    fn path(&self, file: &str) -> std::path::PathBuf {
        self.dir.join(file)
    }

    fn client(&self, identity: Option<&str>) -> tonic::transport::ClientTlsConfig {
        let id = identity.map(|n| {
            (
                self.path(&format!("{n}.pem")),
                self.path(&format!("{n}.key")),
            )
        });
        flotilla_common::tls::client_config(
            &self.path("ca.pem"),
            id.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            Some("localhost"),
        )
        .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_its_ca() {
    let pki = TestPki::new("mtls");
    let tls = flotilla_common::tls::server_config(
        &pki.path("server.pem"),
        &pki.path("server.key"),
        Some(&pki.path("ca.pem")),
    )
    .unwrap();
    let l = TestLearner::start("mtls", &[], None, Some(tls)).await;
    let port = l.local_addr().port();
    let hello_req = proto::HelloRequest {
        actor_name: "tls".into(),
        num_envs: N as u32,
        protocol_version: proto::PROTOCOL_VERSION,
        ..Default::default()
    };
    let try_hello = |url: String, tls: Option<tonic::transport::ClientTlsConfig>| {
        let req = hello_req.clone();
        async move {
            let mut ep = tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(5));
            if let Some(t) = tls {
                ep = ep.tls_config(t).unwrap();
            }
            let channel = ep.connect().await.map_err(|e| e.to_string())?;
            LearnerClient::new(channel)
                .hello(req)
                .await
                .map(|r| r.into_inner())
                .map_err(|s| s.to_string())
        }
    };
    let https = format!("https://127.0.0.1:{port}");
    // Each refusal comes at once from the TLS layer: not a timeout (the
    // calls give up after 5 s), and named as what it is.
    let refused = |what: &str, started: std::time::Instant, r: Result<proto::RunSpec, String>| {
        let e = r.expect_err(what);
        eprintln!("{what}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{what}: slow refusal: {e}"
        );
        assert!(
            !e.to_lowercase().contains("timed out") && !e.contains("Timeout"),
            "{what}: a timeout is not a refusal: {e}"
        );
    };
    let t = std::time::Instant::now();
    refused(
        "plaintext",
        t,
        try_hello(format!("http://127.0.0.1:{port}"), None).await,
    );
    let t = std::time::Instant::now();
    // Under TLS 1.3 the client learns of the server's certificate alert only
    // when it reads: hyper then reports the closed connection, so these two
    // are told apart from a timeout by being quick, not by their wording.
    refused(
        "no client certificate",
        t,
        try_hello(https.clone(), Some(pki.client(None))).await,
    );
    let t = std::time::Instant::now();
    refused(
        "a certificate from another CA",
        t,
        try_hello(https.clone(), Some(pki.client(Some("stranger")))).await,
    );
    let spec = try_hello(https.clone(), Some(pki.client(Some("client"))))
        .await
        .expect("a client certificate from the learner's CA gets in");
    assert_eq!(spec.env_id, "CartPole-v1");

    // A real actor over mutual TLS trains the policy.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let actor = tokio::spawn(flotilla_actor::run(
        flotilla_actor::ActorOptions {
            learner: https,
            num_envs: Some(N as u32),
            name: "tls-actor".into(),
            max_steps_per_second: None,
            auth_token: None,
            tls: Some(pki.client(Some("client"))),
            env: None,
        },
        stop_rx,
    ));
    let c = LearnerClient::new(
        tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
            .unwrap()
            .tls_config(pki.client(Some("client")))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let version = eventually("version 2 from the TLS actor's chunks", 30, || {
        let (mut c, req) = (c.clone(), hello_req.clone());
        async move {
            let v = c.hello(req).await.unwrap().into_inner().policy_version;
            (v >= 2).then_some(v)
        }
    })
    .await;
    assert!(version >= 2, "the TLS actor's chunks train the policy");
    stop_tx.send(true).unwrap();
    actor.await.unwrap().unwrap();

    // An actor that trusts the wrong CA is refused at once (a configuration
    // error: exit 64 from the binary), not retried forever.
    let wrong_ca = flotilla_common::tls::client_config(
        &pki.path("stranger-ca.pem"),
        Some((&pki.path("client.pem"), &pki.path("client.key"))),
        Some("localhost"),
    )
    .unwrap();
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let refused = tokio::time::timeout(
        Duration::from_secs(20),
        flotilla_actor::run(
            flotilla_actor::ActorOptions {
                learner: format!("https://127.0.0.1:{port}"),
                num_envs: Some(N as u32),
                name: "wrong-ca".into(),
                max_steps_per_second: None,
                auth_token: None,
                tls: Some(wrong_ca),
                env: None,
            },
            stop_rx,
        ),
    )
    .await
    .expect("a wrong CA ends the actor instead of retrying");
    match refused {
        Err(flotilla_actor::ActorError::Refused { code, message }) => {
            assert_eq!(code, tonic::Code::FailedPrecondition);
            assert!(message.contains("TLS handshake"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    l.stop();
    l.wait().await.unwrap();
}

/// Server-only TLS (no client certificates): an actor that trusts the CA
/// trains the learner; `--tls-domain` names what the certificate must say,
/// and a wrong name is refused at once as a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_tls_and_the_expected_name() {
    let pki = TestPki::new("server-only");
    let tls =
        flotilla_common::tls::server_config(&pki.path("server.pem"), &pki.path("server.key"), None)
            .unwrap();
    let l = TestLearner::start("server-only", &[], None, Some(tls)).await;
    let url = format!("https://127.0.0.1:{}", l.local_addr().port());
    let actor = |name: &str, domain: &str| flotilla_actor::ActorOptions {
        learner: url.clone(),
        num_envs: Some(N as u32),
        name: name.into(),
        max_steps_per_second: None,
        auth_token: None,
        tls: Some(
            flotilla_common::tls::client_config(&pki.path("ca.pem"), None, Some(domain)).unwrap(),
        ),
        env: None,
    };
    // The certificate is for `localhost`; the URL says 127.0.0.1.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let good = tokio::spawn(flotilla_actor::run(actor("good", "localhost"), stop_rx));
    let (_keep, stop_rx) = tokio::sync::watch::channel(false);
    let wrong = tokio::time::timeout(
        Duration::from_secs(20),
        flotilla_actor::run(actor("wrong-name", "learner.example"), stop_rx),
    )
    .await
    .expect("a wrong name ends the actor instead of retrying");
    match wrong {
        Err(flotilla_actor::ActorError::Refused { code, message }) => {
            assert_eq!(code, tonic::Code::FailedPrecondition);
            assert!(message.contains("TLS handshake"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let c = LearnerClient::new(
        tonic::transport::Endpoint::from_shared(url.clone())
            .unwrap()
            .tls_config(pki.client(None))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    eventually("version 2 from the server-only TLS actor", 30, || {
        let mut c = c.clone();
        async move {
            let v = c
                .hello(proto::HelloRequest {
                    actor_name: "probe".into(),
                    num_envs: N as u32,
                    protocol_version: proto::PROTOCOL_VERSION,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .policy_version;
            (v >= 2).then_some(v)
        }
    })
    .await;
    stop_tx.send(true).unwrap();
    good.await.unwrap().unwrap();
    l.stop();
    l.wait().await.unwrap();
}

/// TLS files that cannot serve stop the learner binary at start-up with
/// exit 64 naming the file: one that is not PEM, one that is missing, and a
/// key that does not belong to the certificate.
#[test]
fn tls_start_up_errors_name_the_file() {
    let pki = TestPki::new("startup");
    let junk = pki.path("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let start = |cert: &std::path::Path, key: &std::path::Path| {
        let run = pki.path("run");
        std::process::Command::new(env!("CARGO_BIN_EXE_learner"))
            .arg("--config")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../configs/cartpole.toml"
            ))
            .arg("--run-dir")
            .arg(&run)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--device", "cpu", "--total-env-steps", "1024"])
            .arg("--tls-cert")
            .arg(cert)
            .arg("--tls-key")
            .arg(key)
            .output()
            .unwrap()
    };
    for (cert, key, named) in [
        (junk.clone(), pki.path("server.key"), "junk.pem"),
        (
            pki.path("server.pem"),
            pki.path("missing.key"),
            "missing.key",
        ),
    ] {
        let out = start(&cert, &key);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{err}");
        assert!(err.contains(named), "names {named}: {err}");
    }
    // A key of another certificate: refused before the trainer starts, so
    // no checkpoint is written.
    let out = start(&pki.path("server.pem"), &pki.path("client.key"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("--tls-key") && err.contains("KeyMismatch"),
        "{err}"
    );
    assert!(!err.contains("learner ready"), "{err}");
    assert!(!pki.path("run").join("checkpoints").exists(), "{err}");
}
