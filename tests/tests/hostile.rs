//! One bad actor must not ruin a run. A hostile client with the shared token
//! (a real gRPC client, next to two honest actor processes) sends each kind
//! of poisoned chunk, speaks for other actors, and churns sessions for
//! `FLOTILLA_SOAK_SECONDS` (default 30). The run must go on: every poison and
//! spoof is refused and counted, the published policy stays finite, the
//! honest actors' chunks all count, and the learner's memory, open files and
//! threads stay flat.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flotilla_common::auth::{AttachToken, AuthToken};
use flotilla_common::chunk::ChunkBuilder;
use flotilla_common::env::EnvSpec;
use flotilla_common::proto::{self, learner_client::LearnerClient};
use flotilla_common::{Space, VecEnv};
use flotilla_tests::{
    assert_flat, bin, configs, free_port, process_usage, scrape, signal, wait_for_exit, wait_until,
    TempDir,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

const TOKEN: &str = "flotilla-test-shared-token";
type Client = LearnerClient<InterceptedService<Channel, AttachToken>>;

/// The learner, its log in `dir/learner.log` (a pipe nobody reads while the
/// test runs could fill up and stall it).
fn learner(dir: &TempDir, grpc: u16, metrics: u16) -> Child {
    learner_with(dir, grpc, metrics, &[])
}

fn learner_with(dir: &TempDir, grpc: u16, metrics: u16, extra: &[&str]) -> Child {
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let log = std::fs::File::create(dir.path().join("learner.log")).unwrap();
    Command::new(bin("learner"))
        .arg("--config")
        .arg(configs().join("cartpole.toml"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .arg("--auth-token-file")
        .arg(&token_file)
        .args(["--listen", &format!("127.0.0.1:{grpc}")])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")])
        .args(["--device", "cpu", "--total-env-steps", "100000000"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("learner starts")
}

fn honest_actor(grpc: u16, name: &str) -> Child {
    Command::new(bin("actor"))
        .args(["--learner", &format!("http://127.0.0.1:{grpc}")])
        .args([
            "--name",
            name,
            "--num-envs",
            "4",
            "--max-steps-per-second",
            "4000",
        ])
        .env("FLOTILLA_AUTH_TOKEN", TOKEN)
        .env_remove("FLOTILLA_AUTH_TOKEN_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("actor starts")
}

async fn connect(grpc: u16) -> Client {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = AuthToken::new(TOKEN, "test").unwrap();
    LearnerClient::with_interceptor(channel, AttachToken(Some(token)))
}

async fn hello(c: &mut Client) -> proto::RunSpec {
    c.hello(proto::HelloRequest {
        actor_name: "hostile\n\u{1b}[31m".into(),
        num_envs: 4,
        protocol_version: proto::PROTOCOL_VERSION,
        ..Default::default()
    })
    .await
    .expect("the hostile client has the token")
    .into_inner()
}

/// A well-formed chunk of real CartPole steps for `spec`'s session.
fn chunk(spec: &proto::RunSpec, sequence: u64) -> proto::Chunk {
    let (t, n) = (spec.chunk_len as usize, 4);
    let mut envs = VecEnv::new(&EnvSpec::new("CartPole-v1"), n, sequence).unwrap();
    let mut b = ChunkBuilder::new(t, n, 4, Space::Discrete { n: 2 });
    b.begin(envs.observations());
    for i in 0..t {
        let a: Vec<usize> = (0..n).map(|e| (i + e) % 2).collect();
        envs.step_discrete(&a);
        b.push_discrete(&a, &[0.5f32.ln(); 4], None, &envs);
    }
    b.finish(
        &spec.run_id,
        &spec.env_id,
        spec.actor_id,
        sequence,
        spec.policy_version,
    )
}

fn set_f32(b: &bytes::Bytes, index: usize, v: f32) -> bytes::Bytes {
    let mut x = b.to_vec();
    x[index * 4..index * 4 + 4].copy_from_slice(&v.to_le_bytes());
    x.into()
}

/// Streams `chunks` in the session of `spec`; the call's status.
async fn stream(
    c: &mut Client,
    spec: &proto::RunSpec,
    chunks: Vec<proto::Chunk>,
) -> Result<proto::IngestSummary, tonic::Status> {
    let mut r = tonic::Request::new(tokio_stream::iter(chunks));
    r.metadata_mut()
        .insert(proto::SESSION_METADATA, spec.session.parse().unwrap());
    c.stream_trajectories(r).await.map(|r| r.into_inner())
}

type Poison = fn(&mut proto::Chunk);

/// Every poison kind: each passes the shape checks and would make the next
/// update's loss NaN or infinite.
const POISONS: [(&str, Poison); 7] = [
    ("behavior_logp", |c| {
        c.behavior_logp = set_f32(&c.behavior_logp, 3, -1e30)
    }),
    ("behavior_logp", |c| {
        c.behavior_logp = set_f32(&c.behavior_logp, 3, 1e30)
    }),
    ("rewards", |c| c.rewards = set_f32(&c.rewards, 3, 3e38)),
    ("obs", |c| c.obs = set_f32(&c.obs, 3, 1e35)),
    // CartPole's cart position lies in [-4.8, 4.8].
    ("obs", |c| c.obs = set_f32(&c.obs, 4, 100.0)),
    ("final_obs", |c| {
        if !c.final_obs.is_empty() {
            c.final_obs = set_f32(&c.final_obs, 1, -1e35);
        } else {
            c.rewards = set_f32(&c.rewards, 0, -3e38);
        }
    }),
    ("episode_returns", |c| {
        if let Some(r) = c.episode_returns.first_mut() {
            *r = 3e38;
        } else {
            c.rewards = set_f32(&c.rewards, 1, 1e7);
        }
    }),
];

/// One round of attacks; returns (poisons sent, spoofs sent).
async fn attack(c: &mut Client) -> (u64, u64) {
    let mut poisons = 0;
    for (field, poison) in POISONS {
        let spec = hello(c).await;
        let mut bad = chunk(&spec, 1);
        poison(&mut bad);
        let e = stream(c, &spec, vec![bad]).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().starts_with("field `"), "{e:?}");
        poisons += 1;
    }
    // Speak for the honest actors (ids below ours) with the last sequence
    // number: refused, and their record untouched.
    let mut spoofs = 0;
    let me = hello(c).await;
    for victim in 1..me.actor_id.min(6) {
        let spec = hello(c).await;
        let mut spoof = chunk(&spec, u64::MAX);
        spoof.actor_id = victim;
        let e = stream(c, &spec, vec![spoof]).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        spoofs += 1;
    }
    // A stream with no session, a guessed one, and a Hello never used.
    let mut r = tonic::Request::new(tokio_stream::iter(vec![chunk(&me, 1)]));
    r.metadata_mut()
        .insert(proto::SESSION_METADATA, "0".repeat(32).parse().unwrap());
    assert_eq!(
        c.stream_trajectories(r).await.unwrap_err().code(),
        Code::Aborted
    );
    let e = c
        .stream_trajectories(tokio_stream::iter(vec![chunk(&me, 1)]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    (poisons, spoofs)
}

#[test]
fn a_hostile_client_cannot_ruin_the_run() {
    let seconds: u64 = std::env::var("FLOTILLA_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let dir = TempDir::new("hostile");
    let (grpc, metrics) = (free_port(), free_port());
    let mut l = learner(&dir, grpc, metrics);
    let metric = |name: &str| scrape(metrics).get(name).copied().unwrap_or(0.0);
    let honest: Vec<Child> = (0..2)
        .map(|i| honest_actor(grpc, &format!("honest-{i}")))
        .collect();
    wait_until("2 honest actors streaming", 60, || {
        (metric("flotilla_actors_connected") == 2.0).then_some(())
    });
    wait_until("version 3", 120, || {
        (metric("flotilla_policy_version") >= 3.0).then_some(())
    });

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(connect(grpc));
    // First round, then warm-up, then the soak: rounds until the time is up.
    let (mut poisons, mut spoofs) = rt.block_on(attack(&mut c));
    std::thread::sleep(Duration::from_secs(3));
    let pid = l.id();
    let start = process_usage(pid);
    let (v0, received0) = (
        metric("flotilla_policy_version"),
        metric("flotilla_learner_samples_received_total"),
    );
    let t0 = Instant::now();
    let mut rounds = 1;
    while t0.elapsed() < Duration::from_secs(seconds) {
        let (p, s) = rt.block_on(attack(&mut c));
        poisons += p;
        spoofs += s;
        rounds += 1;
    }
    std::thread::sleep(Duration::from_secs(3));
    let end = process_usage(pid);
    let m = scrape(metrics);
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
    println!(
        "{rounds} attack rounds in {seconds} s ({poisons} poisoned chunks, {spoofs} spoofs): RSS {} -> {} KiB, fds {} -> {}, threads {} -> {}, version {v0} -> {}",
        start.rss_kib,
        end.rss_kib,
        start.open_fds,
        end.open_fds,
        start.threads,
        end.threads,
        get("flotilla_policy_version")
    );

    // Every attack refused and counted under its reason ...
    assert_eq!(
        get(r#"flotilla_chunks_dropped_total{reason="out_of_bounds"}"#),
        poisons as f64
    );
    assert_eq!(
        get(r#"flotilla_chunks_dropped_total{reason="wrong_actor"}"#),
        spoofs as f64
    );
    // ... nothing of the honest actors dropped as a duplicate or invalid,
    // no update had to be undone (the gate caught everything) ...
    assert_eq!(
        get(r#"flotilla_chunks_dropped_total{reason="duplicate"}"#),
        0.0
    );
    assert_eq!(
        get(r#"flotilla_chunks_dropped_total{reason="invalid"}"#),
        0.0
    );
    assert_eq!(get("flotilla_updates_skipped_total"), 0.0);
    // ... and training went on with the honest actors' chunks.
    assert_eq!(get("flotilla_actors_connected"), 2.0);
    assert!(get("flotilla_policy_version") >= v0 + 5.0, "{v0} -> {m:?}");
    assert!(get("flotilla_learner_samples_received_total") > received0);
    assert!(get("flotilla_loss").is_finite());

    // The published policy is finite.
    let snapshot = rt.block_on(async {
        use tokio_stream::StreamExt;
        let mut sub = c
            .subscribe_policy(proto::SubscribeRequest::default())
            .await
            .unwrap()
            .into_inner();
        sub.next().await.unwrap().unwrap()
    });
    let tensors = flotilla_common::policy::read_safetensors(&snapshot.safetensors).unwrap();
    assert!(!tensors.is_empty());
    for (name, _, values) in &tensors {
        assert!(values.iter().all(|x| x.is_finite()), "{name} is not finite");
    }

    // Flat resources: sessions end with their streams, nothing piles up.
    assert_flat(start, end);

    for mut a in honest {
        assert!(a.try_wait().unwrap().is_none(), "an honest actor exited");
        signal(&a, "TERM");
        let _ = wait_for_exit(&mut a, 15);
    }
    signal(&l, "TERM");
    let status = wait_for_exit(&mut l, 60).expect("learner exits after SIGTERM");
    let stderr = std::fs::read_to_string(dir.path().join("learner.log")).unwrap();
    assert!(status.success(), "{stderr}");
    // Rejections and joins are logged at a bounded rate, not one line each.
    let rejected_lines = stderr.matches("rejected a chunk").count() as u64;
    assert!(
        rejected_lines < (poisons + spoofs) / 2 + 20,
        "{rejected_lines} log lines for {} rejections",
        poisons + spoofs
    );
    let joined_lines = stderr.matches("actor joined").count() as u64;
    assert!(
        joined_lines < (poisons + spoofs) / 2 + 60,
        "{joined_lines} log lines for {} Hellos",
        poisons + spoofs
    );
    // The hostile name is logged escaped, never raw.
    assert!(stderr.contains(r"hostile\n\u{1b}[31m"), "{stderr}");
    assert!(
        !stderr.contains("hostile\n"),
        "a raw newline from the wire in the log"
    );
}

/// Each way a chunk can be turned away is counted under its own reason, once
/// per chunk, with the gRPC status the docs give (docs/metrics.md,
/// docs/architecture.md). REINFORCE's `incomplete_episode` is covered by the
/// episode stitcher's tests.
#[test]
fn every_drop_reason_is_counted_under_its_own_label() {
    let dir = TempDir::new("drop-reasons");
    let (grpc, metrics) = (free_port(), free_port());
    // One chunk (4 envs x 64 steps) per update; any lag is stale.
    let mut l = learner_with(
        &dir,
        grpc,
        metrics,
        &[
            "--set",
            "ppo.batch_size=256,ppo.num_minibatches=1,ingest.max_policy_lag=0",
        ],
    );
    wait_until("the metrics endpoint", 60, || {
        scrape(metrics)
            .contains_key("flotilla_actors_connected")
            .then_some(())
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(connect(grpc));
    let code = |spec: &proto::RunSpec, ch: proto::Chunk, c: &mut Client| {
        rt.block_on(stream(c, spec, vec![ch]))
            .map(|s| s.chunks_accepted)
    };
    let refused = |spec: &proto::RunSpec, ch: proto::Chunk, c: &mut Client| {
        code(spec, ch, c).unwrap_err().code()
    };

    // Each refusal ends its session: a fresh Hello per case.
    type Spoil = fn(&mut proto::Chunk, &proto::RunSpec);
    let cases: [(Spoil, Code); 6] = [
        (|ch, _| ch.t = 0, Code::InvalidArgument),
        (
            |ch, _| ch.rewards = set_f32(&ch.rewards, 0, 3e38),
            Code::InvalidArgument,
        ),
        (
            |ch, _| ch.run_id = "another-run".into(),
            Code::InvalidArgument,
        ),
        (|ch, _| ch.policy_version = 99, Code::InvalidArgument),
        (
            |ch, spec| ch.actor_id = spec.actor_id + 1000,
            Code::PermissionDenied,
        ),
        (
            |ch, _| ch.obs = vec![0u8; 17 << 20].into(),
            Code::ResourceExhausted,
        ),
    ];
    for (i, (spoil, expected)) in cases.iter().enumerate() {
        let spec = rt.block_on(hello(&mut c));
        let mut bad = chunk(&spec, 1);
        spoil(&mut bad, &spec);
        assert_eq!(refused(&spec, bad, &mut c), *expected, "case {i}");
    }

    // A good chunk, then the same sequence number again: a duplicate,
    // dropped without an error (the stream goes on).
    let spec = rt.block_on(hello(&mut c));
    let accepted = rt
        .block_on(stream(
            &mut c,
            &spec,
            vec![chunk(&spec, 1), chunk(&spec, 1)],
        ))
        .unwrap()
        .chunks_accepted;
    assert_eq!(accepted, 1);
    // That chunk was a whole batch: version 1. A chunk acted with version 0
    // is now stale (lag 1 > 0), also dropped without an error.
    wait_until("version 1", 60, || {
        (scrape(metrics).get("flotilla_policy_version").copied() >= Some(1.0)).then_some(())
    });
    let spec = rt.block_on(hello(&mut c));
    let mut old = chunk(&spec, 1);
    old.policy_version = 0;
    assert_eq!(code(&spec, old, &mut c).unwrap(), 0);

    let m = scrape(metrics);
    for reason in [
        "invalid",
        "out_of_bounds",
        "wrong_run",
        "future_version",
        "wrong_actor",
        "too_large",
        "duplicate",
        "stale",
    ] {
        let key = format!("flotilla_chunks_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(m.get(&key).copied(), Some(1.0), "{key}: {m:?}");
    }
    assert_eq!(
        m.get(r#"flotilla_chunks_dropped_total{reason="incomplete_episode"}"#)
            .copied(),
        Some(0.0)
    );
    signal(&l, "TERM");
    let status = wait_for_exit(&mut l, 60).expect("learner exits after SIGTERM");
    assert!(status.success());
}
