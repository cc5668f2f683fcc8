//! The learner over real gRPC on loopback: handshake, ingest, training,
//! snapshot publishing, and the rejection of every kind of bad chunk.

use std::net::SocketAddr;
use std::time::Duration;

use flotilla_common::auth::{AttachToken, AuthToken};
use flotilla_common::chunk::ChunkBuilder;
use flotilla_common::env::EnvSpec;
use flotilla_common::model::ModelSpec;
use flotilla_common::policy::CpuPolicy;
use flotilla_common::proto::{self, learner_client::LearnerClient};
use flotilla_common::space::Dtype;
use flotilla_common::testing::eventually;
use flotilla_common::{Space, VecEnv};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::Code;

use flotilla_learner::testing::{TestLearner, N, T};

async fn learner(tag: &str, extra: &[&str]) -> TestLearner {
    TestLearner::start(tag, extra, None, None).await
}

async fn client(addr: SocketAddr) -> LearnerClient<Channel> {
    LearnerClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

async fn hello(c: &mut LearnerClient<Channel>) -> proto::RunSpec {
    c.hello(proto::HelloRequest {
        actor_name: "test".into(),
        num_envs: N as u32,
        protocol_version: proto::PROTOCOL_VERSION,
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

/// A well-formed chunk of real CartPole steps with uniform random actions.
fn good_chunk(spec: &proto::RunSpec, seq: u64, version: u64) -> proto::Chunk {
    let mut envs = VecEnv::new(&EnvSpec::new("CartPole-v1"), N, seq).unwrap();
    let mut b = ChunkBuilder::new(T, N, 4, Space::Discrete { n: 2 });
    b.begin(envs.observations());
    for t in 0..T {
        let actions: Vec<usize> = (0..N).map(|i| (t + i + (seq % 2) as usize) % 2).collect();
        envs.step_discrete(&actions);
        b.push_discrete(&actions, &[0.5f32.ln(); N], None, &envs);
    }
    b.finish(&spec.run_id, &spec.env_id, spec.actor_id, seq, version)
}

/// A request carrying the session credential of `spec`.
fn with_session<T>(spec: &proto::RunSpec, body: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.metadata_mut().insert(
        proto::SESSION_METADATA,
        spec.session
            .parse()
            .expect("a credential is valid metadata"),
    );
    r
}

/// Streams `chunks` in a session of their own (a fresh `Hello`; their actor
/// id becomes the session's).
async fn send(
    c: &mut LearnerClient<Channel>,
    chunks: Vec<proto::Chunk>,
) -> Result<proto::IngestSummary, tonic::Status> {
    let spec = c
        .hello(proto::HelloRequest {
            actor_name: "test".into(),
            num_envs: N as u32,
            protocol_version: proto::PROTOCOL_VERSION,
            ..Default::default()
        })
        .await?
        .into_inner();
    let chunks: Vec<_> = chunks
        .into_iter()
        .map(|mut ch| {
            ch.actor_id = spec.actor_id;
            ch
        })
        .collect();
    send_in(c, &spec, chunks).await
}

/// Streams `chunks` as they are, in the session of `spec`.
async fn send_in(
    c: &mut LearnerClient<Channel>,
    spec: &proto::RunSpec,
    chunks: Vec<proto::Chunk>,
) -> Result<proto::IngestSummary, tonic::Status> {
    c.stream_trajectories(with_session(spec, tokio_stream::iter(chunks)))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_train_the_policy_and_subscribers_get_the_new_version() {
    let l = learner("train", &[]).await;
    let mut c = client(l.local_addr()).await;
    let spec = hello(&mut c).await;
    assert_eq!(spec.env_id, "CartPole-v1");
    assert_eq!(spec.chunk_len as usize, T);
    assert_eq!(spec.policy_version, 0);
    let mut sub = c
        .subscribe_policy(proto::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = sub.next().await.unwrap().unwrap();
    assert_eq!(first.version, 0);
    let model = ModelSpec::try_from(spec.model.as_ref().unwrap()).unwrap();
    let p0 =
        CpuPolicy::from_safetensors(&model, &[4], &Space::Discrete { n: 2 }, &first.safetensors)
            .unwrap();

    // 2 chunks x 8 steps x 4 envs = 64 samples = one batch
    let summary = send(
        &mut c,
        vec![good_chunk(&spec, 1, 0), good_chunk(&spec, 2, 0)],
    )
    .await
    .unwrap();
    assert_eq!((summary.chunks_accepted, summary.samples_accepted), (2, 64));
    let next = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("a new snapshot within 30s")
        .unwrap()
        .unwrap();
    assert_eq!(next.version, 1);
    let p1 =
        CpuPolicy::from_safetensors(&model, &[4], &Space::Discrete { n: 2 }, &next.safetensors)
            .unwrap();
    let obs = ndarray::Array2::from_elem((1, 4), 0.1f32);
    assert_ne!(
        p0.forward(obs.view(), true),
        p1.forward(obs.view(), true),
        "an update changes the weights"
    );
    assert_eq!(hello(&mut c).await.policy_version, 1);
    l.stop();
    let s = l.wait().await.unwrap();
    assert_eq!(s.train.version, 1);
    assert_eq!(s.train.env_steps, 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_chunk_is_rejected_naming_its_field_and_the_learner_carries_on() {
    let l = learner("bad", &[]).await;
    let mut c = client(l.local_addr()).await;
    let spec = hello(&mut c).await;
    type Corrupt = Box<dyn Fn(&mut proto::Chunk)>;
    let cases: Vec<(&str, Corrupt)> = vec![
        ("run_id", Box::new(|ch| ch.run_id = "other-run".into())),
        ("env_id", Box::new(|ch| ch.env_id = "Acrobot-v1".into())),
        ("t", Box::new(|ch| ch.t = 0)),
        ("t", Box::new(|ch| ch.t = T as u32 + 1)),
        ("n", Box::new(|ch| ch.n = 0)),
        ("obs", Box::new(|ch| ch.obs = ch.obs.slice(4..))),
        (
            "obs",
            Box::new(|ch| {
                let mut v = ch.obs.to_vec();
                v[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
                ch.obs = v.into();
            }),
        ),
        (
            "actions",
            Box::new(|ch| {
                let mut v = ch.actions.to_vec();
                v[0..8].copy_from_slice(&7i64.to_le_bytes());
                ch.actions = v.into();
            }),
        ),
        (
            "rewards",
            Box::new(|ch| {
                let mut v = ch.rewards.to_vec();
                v[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes());
                ch.rewards = v.into();
            }),
        ),
        (
            "terminated",
            Box::new(|ch| {
                let mut v = ch.terminated.to_vec();
                v[0] = 2;
                ch.terminated = v.into();
            }),
        ),
        (
            "truncated",
            Box::new(|ch| ch.truncated = ch.truncated.slice(1..)),
        ),
        (
            "behavior_logp",
            Box::new(|ch| ch.behavior_logp = bytes::Bytes::new()),
        ),
        ("policy_version", Box::new(|ch| ch.policy_version = 99)),
        (
            "final_obs_index",
            Box::new(|ch| {
                // a done flag without its final observation
                let mut v = ch.terminated.to_vec();
                let i = v.iter().position(|&x| x == 0).unwrap();
                v[i] = 1;
                ch.terminated = v.into();
            }),
        ),
    ];
    for (field, corrupt) in &cases {
        let mut ch = good_chunk(&spec, 1, 0);
        corrupt(&mut ch);
        let err = send(&mut c, vec![ch]).await.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().contains(&format!("`{field}`")),
            "message for {field} should name it: {}",
            err.message()
        );
    }
    // The learner is unharmed: a good chunk still goes through.
    let ok = send(&mut c, vec![good_chunk(&spec, 1, 0)]).await.unwrap();
    assert_eq!(ok.chunks_accepted, 1);
    l.stop();
    l.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_rejects_bad_requests() {
    let l = learner("hello", &[]).await;
    let mut c = client(l.local_addr()).await;
    let err = c
        .hello(proto::HelloRequest {
            actor_name: "x".into(),
            num_envs: 1,
            protocol_version: 99,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("protocol_version"),
        "{}",
        err.message()
    );
    let err = c
        .hello(proto::HelloRequest {
            actor_name: "x".into(),
            num_envs: 1 << 30,
            protocol_version: proto::PROTOCOL_VERSION,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("num_envs"), "{}", err.message());
    let err = c
        .hello(proto::HelloRequest {
            actor_name: "x".repeat(257),
            num_envs: 1,
            protocol_version: proto::PROTOCOL_VERSION,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("actor_name"), "{}", err.message());
    // An actor of protocol 3 (no observation statistics) is told both versions.
    let err = c
        .hello(proto::HelloRequest {
            actor_name: "old".into(),
            num_envs: 1,
            protocol_version: 3,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains(&format!("protocol {}", proto::PROTOCOL_VERSION))
            && err.message().contains("the actor 3"),
        "{}",
        err.message()
    );
    l.stop();
    l.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_duplicate_chunks_are_dropped_not_trained_on() {
    let l = learner("stale", &["ingest.max_policy_lag=0"]).await;
    let mut c = client(l.local_addr()).await;
    let spec = hello(&mut c).await;
    send(
        &mut c,
        vec![good_chunk(&spec, 1, 0), good_chunk(&spec, 2, 0)],
    )
    .await
    .unwrap();
    eventually("version 1", 30, || {
        let mut c = c.clone();
        async move { (hello(&mut c).await.policy_version >= 1).then_some(()) }
    })
    .await;
    assert_eq!(hello(&mut c).await.policy_version, 1);
    // acted with version 0 while the learner is at 1, lag 1 > 0: dropped, not an error
    let s = send(&mut c, vec![good_chunk(&spec, 3, 0)]).await.unwrap();
    assert_eq!(s.chunks_accepted, 0);
    // within a session, a sequence number not above the last is a duplicate
    let s = send(
        &mut c,
        vec![
            good_chunk(&spec, 3, 1),
            good_chunk(&spec, 2, 1),
            good_chunk(&spec, 3, 1),
        ],
    )
    .await
    .unwrap();
    assert_eq!(s.chunks_accepted, 1);
    l.stop();
    let summary = l.wait().await.unwrap();
    assert_eq!(
        summary.train.env_steps, 64,
        "only the first batch was trained on"
    );
    assert_eq!(summary.samples_received, 64 + 32 + 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_every_call_without_it_is_unauthenticated() {
    let token = AuthToken::new("a-shared-token-of-flotilla", "test").unwrap();
    let l = TestLearner::start("auth", &[], Some(token.clone()), None).await;
    let addr = l.local_addr();

    let mut anonymous = client(addr).await;
    let hello_req = proto::HelloRequest {
        actor_name: "anonymous".into(),
        num_envs: N as u32,
        protocol_version: proto::PROTOCOL_VERSION,
        ..Default::default()
    };
    let err = anonymous.hello(hello_req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("token"), "{err:?}");
    let err = anonymous
        .subscribe_policy(proto::SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = anonymous
        .stream_trajectories(tokio_stream::iter(vec![proto::Chunk::default()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let wrong = AuthToken::new("a-shared-token-of-flotillA", "test").unwrap();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut impostor = LearnerClient::with_interceptor(channel.clone(), AttachToken(Some(wrong)));
    let err = impostor.hello(hello_req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let mut member = LearnerClient::with_interceptor(channel, AttachToken(Some(token)));
    let spec = member.hello(hello_req).await.unwrap().into_inner();
    let summary = member
        .stream_trajectories(with_session(
            &spec,
            tokio_stream::iter(vec![good_chunk(&spec, 1, 0)]),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(summary.chunks_accepted, 1);
    l.stop();
    l.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_resource_exhausted_and_the_learner_carries_on() {
    // Limit: 4096 payload bytes plus 64 KiB of framing room.
    let l = learner("oversized", &["ingest.max_chunk_bytes=4096"]).await;
    let mut c = client(l.local_addr()).await;
    let spec = hello(&mut c).await;
    let mut big = good_chunk(&spec, 1, 0);
    big.obs = vec![0u8; 200 << 10].into();
    let err = send(&mut c, vec![big]).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("max_chunk_bytes"), "{err:?}");
    let summary = send(&mut c, vec![good_chunk(&spec, 2, 0)]).await.unwrap();
    assert_eq!(summary.chunks_accepted, 1);
    l.stop();
    l.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_ended_and_a_stalled_subscriber_blocks_no_one() {
    let l = learner("stalled", &["ingest.stream_idle_timeout_seconds=1"]).await;
    let addr = l.local_addr();
    let mut c = client(addr).await;
    let spec = hello(&mut c).await;

    // A subscriber that never reads, and a stream that never sends.
    let mut stalled = client(addr).await;
    let _unread = stalled
        .subscribe_policy(proto::SubscribeRequest::default())
        .await
        .unwrap();
    let (_keep_open, silent) = tokio::sync::mpsc::channel::<proto::Chunk>(1);
    let silent_call = tokio::spawn(async move {
        let mut s = client(addr).await;
        let spec = hello(&mut s).await;
        s.stream_trajectories(with_session(
            &spec,
            tokio_stream::wrappers::ReceiverStream::new(silent),
        ))
        .await
    });

    // Training and publishing go on for everyone else.
    let mut sub = c
        .subscribe_policy(proto::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut seq = 0;
    for version in 0..3u64 {
        seq += 2;
        send(
            &mut c,
            vec![
                good_chunk(&spec, seq - 1, version),
                good_chunk(&spec, seq, version),
            ],
        )
        .await
        .unwrap();
        loop {
            let snap = tokio::time::timeout(Duration::from_secs(30), sub.next())
                .await
                .expect("publishing is not blocked")
                .unwrap()
                .unwrap();
            if snap.version == version + 1 {
                break;
            }
        }
    }

    let err = tokio::time::timeout(Duration::from_secs(10), silent_call)
        .await
        .expect("the silent stream is ended")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains("stream_idle_timeout_seconds"),
        "{err:?}"
    );
    l.stop();
    let summary = l.wait().await.unwrap();
    assert_eq!(summary.train.version, 3);
}

/// Sends raw bytes as the messages of a trajectory stream.
#[derive(Clone, Default)]
struct RawChunks;

struct RawEncoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Codec for RawChunks {
    type Encode = Vec<u8>;
    type Decode = proto::IngestSummary;
    type Encoder = RawEncoder;
    type Decoder = tonic_prost::ProstDecoder<proto::IngestSummary>;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<(), proto::IngestSummary>::raw_decoder(Default::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_on_the_wire_are_invalid_argument_every_time() {
    use rand::{Rng, SeedableRng};
    let l = learner("raw", &[]).await;
    let addr = l.local_addr();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(7);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/flotilla.v1.Learner/StreamTrajectories",
    );
    let mut codes = std::collections::BTreeMap::new();
    let mut c = client(addr).await;
    for case in 0..300 {
        let len = rng.random_range(0..2048);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let spec = hello(&mut c).await;
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let err = grpc
            .client_streaming(
                with_session(&spec, tokio_stream::iter(vec![bytes])),
                path.clone(),
                RawChunks,
            )
            .await
            .expect_err("random bytes are never a valid chunk");
        assert_eq!(err.code(), Code::InvalidArgument, "case {case}: {err:?}");
        *codes
            .entry(err.message().split(':').next().unwrap_or("").to_owned())
            .or_insert(0) += 1;
    }
    // Random bytes fail at protobuf parsing; well-formed chunks with wrong
    // contents are covered by the bad-chunk test above and the chunk
    // property tests.
    assert!(
        codes.keys().any(|k| k.starts_with("malformed protobuf")),
        "{codes:?}"
    );
    // The learner is unharmed: a real chunk still trains.
    let spec = hello(&mut c).await;
    let s = send(&mut c, vec![good_chunk(&spec, 1, 0)]).await.unwrap();
    assert_eq!(s.chunks_accepted, 1);
    l.stop();
    l.wait().await.unwrap();
}

/// A port in use is the machine's state, not a usage error (exit 1, not 64).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_in_use_is_not_a_usage_error() {
    use flotilla_common::testing::TempDir;
    use flotilla_learner::config::RunConfig;
    use flotilla_learner::device::DeviceChoice;
    use flotilla_learner::run::{start, RunError, RunOptions};

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = TempDir::new("port-in-use");
    let config = RunConfig::from_toml("[env]\nid = \"CartPole-v1\"\n", "test", &[]).unwrap();
    let result = start(
        RunOptions {
            config,
            run_dir: dir.join("run"),
            listen: taken.local_addr().unwrap(),
            device: DeviceChoice::Cpu,
            resume: false,
            force_new: false,
            insecure: false,
            auth_token: None,
            tls: None,
            torch_threads: None,
            live: None,
        },
        std::future::pending(),
    )
    .await;
    let Err(e) = result else {
        panic!("a second learner bound the same port")
    };
    assert!(matches!(e, RunError::Listen { .. }), "{e}");
    assert!(!e.is_usage());
    assert!(e.to_string().contains("cannot listen on"), "{e}");
}

/// Sessions bind a stream to the actor id `Hello` gave it: a client cannot
/// speak for another actor, stream without a session, reuse one, or start at
/// sequence 0; the victim of a spoof goes on unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_speaks_only_for_its_own_session() {
    let l = learner("sessions", &[]).await;
    let mut c = client(l.local_addr()).await;
    let victim = hello(&mut c).await;
    let spoofer = hello(&mut c).await;
    assert_ne!(victim.actor_id, spoofer.actor_id);
    assert_ne!(victim.session, spoofer.session);

    // The spoofer claims the victim's id with the highest sequence number.
    let mut spoof = good_chunk(&victim, u64::MAX, 0);
    spoof.actor_id = victim.actor_id;
    let err = send_in(&mut c, &spoofer, vec![spoof]).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("field `actor_id`"), "{err:?}");

    // No session, a guessed one, or one already used up.
    let err = c
        .stream_trajectories(tokio_stream::iter(vec![good_chunk(&victim, 1, 0)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(proto::SESSION_METADATA), "{err:?}");
    let guessed = proto::RunSpec {
        session: "0".repeat(32),
        ..victim.clone()
    };
    let err = send_in(&mut c, &guessed, vec![good_chunk(&victim, 1, 0)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    // The spoofer's stream ended, and its session with it.
    let err = send_in(&mut c, &spoofer, vec![good_chunk(&spoofer, 1, 0)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");

    // The victim's chunks, from sequence 1, all count.
    let s = send_in(
        &mut c,
        &victim,
        vec![good_chunk(&victim, 1, 0), good_chunk(&victim, 2, 0)],
    )
    .await
    .unwrap();
    assert_eq!((s.chunks_accepted, s.samples_accepted), (2, 64));

    // Sequence 0 is refused, naming the field.
    let zero = hello(&mut c).await;
    let err = send_in(&mut c, &zero, vec![good_chunk(&zero, 0, 0)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("field `sequence`"), "{err:?}");

    // One stream per session: a second one while the first is open is refused.
    let busy = hello(&mut c).await;
    let (keep_open, first) = tokio::sync::mpsc::channel::<proto::Chunk>(1);
    let mut c1 = c.clone();
    let spec1 = busy.clone();
    let first_call = tokio::spawn(async move {
        c1.stream_trajectories(with_session(
            &spec1,
            tokio_stream::wrappers::ReceiverStream::new(first),
        ))
        .await
    });
    // The second send waits until the client took the first chunk: the
    // call is under way; a moment later the learner has bound it.
    keep_open.send(good_chunk(&busy, 1, 0)).await.unwrap();
    keep_open.send(good_chunk(&busy, 2, 0)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = send_in(&mut c, &busy, vec![good_chunk(&busy, 3, 0)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(
        err.message().contains("already has a trajectory stream"),
        "{err:?}"
    );
    drop(keep_open);
    let s = first_call.await.unwrap().unwrap().into_inner();
    assert_eq!(s.chunks_accepted, 2);

    l.stop();
    let summary = l.wait().await.unwrap();
    assert_eq!(summary.samples_received, 64 + 64);
}

/// Defense in depth: with the bounds opened wide, a poisoned chunk reaches
/// the trainer; the update it spoils is undone and counted, nothing is
/// published, and honest chunks afterwards train a finite policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poisoned_batch_past_loose_bounds_is_undone_not_published() {
    let l = learner("undo", &["ingest.min_behavior_logp=-3e38"]).await;
    let mut c = client(l.local_addr()).await;
    let spec = hello(&mut c).await;
    let mut poison = good_chunk(&spec, 1, 0);
    poison.behavior_logp = bytes::Bytes::from((-1e30f32).to_le_bytes().repeat(T * N));
    let s = send_in(&mut c, &spec, vec![poison, good_chunk(&spec, 2, 0)])
        .await
        .unwrap();
    assert_eq!(s.chunks_accepted, 2, "the loose bounds let it in");
    // Two honest chunks train version 1 once the poisoned batch is undone.
    let mut sub = c
        .subscribe_policy(proto::SubscribeRequest {
            actor_name: String::new(),
            have_version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sub.next().await.unwrap().unwrap().version, 0);
    send(
        &mut c,
        vec![good_chunk(&spec, 1, 0), good_chunk(&spec, 2, 0)],
    )
    .await
    .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("a version from the honest batch")
        .unwrap()
        .unwrap();
    assert_eq!(next.version, 1, "the poisoned batch published nothing");
    let tensors = flotilla_common::policy::read_safetensors(&next.safetensors).unwrap();
    for (name, _, values) in &tensors {
        assert!(values.iter().all(|x| x.is_finite()), "{name}");
    }
    l.stop();
    let summary = l.wait().await.unwrap();
    assert_eq!(summary.train.version, 1);
    assert_eq!(
        summary.train.env_steps, 64,
        "only the honest batch counts as trained"
    );
}

/// `ingest.max_connections`: connections over the cap are closed at once,
/// and a slot frees when a connection closes. A byte budget as small as one
/// chunk (`ingest.max_queued_bytes`) still trains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_and_a_tiny_byte_budget_still_trains() {
    let l = learner(
        "caps",
        &[
            "ingest.max_connections=2",
            "ingest.max_chunk_bytes=4096",
            "ingest.max_queued_bytes=4096",
        ],
    )
    .await;
    let addr = l.local_addr();
    let mut a = client(addr).await;
    let mut b = client(addr).await;
    hello(&mut a).await;
    hello(&mut b).await;
    let third = async {
        let mut c = LearnerClient::new(
            Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?,
        );
        c.hello(proto::HelloRequest {
            actor_name: "third".into(),
            num_envs: 1,
            protocol_version: proto::PROTOCOL_VERSION,
            ..Default::default()
        })
        .await
    };
    let err = tokio::time::timeout(Duration::from_secs(10), third)
        .await
        .expect("refused at once, not hung")
        .unwrap_err();
    // A transport error (the connection closed under it: unavailable,
    // cancelled or unknown, by timing): actors retry those.
    assert!(
        matches!(
            err.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ),
        "{err:?}"
    );
    drop(b);
    let mut c = eventually("a slot after one connection closed", 10, || async {
        let mut c = LearnerClient::connect(format!("http://{addr}"))
            .await
            .ok()?;
        let spec = c
            .hello(proto::HelloRequest {
                actor_name: "again".into(),
                num_envs: N as u32,
                protocol_version: proto::PROTOCOL_VERSION,
                ..Default::default()
            })
            .await
            .ok()?;
        drop(spec);
        Some(c)
    })
    .await;
    // Two chunks through a budget of one chunk's size: a batch, version 1.
    let spec = hello(&mut c).await;
    let s = send_in(
        &mut c,
        &spec,
        vec![good_chunk(&spec, 1, 0), good_chunk(&spec, 2, 0)],
    )
    .await
    .unwrap();
    assert_eq!(s.chunks_accepted, 2);
    eventually("version 1", 30, || {
        let mut c = c.clone();
        async move { (hello(&mut c).await.policy_version >= 1).then_some(()) }
    })
    .await;
    drop(a);
    l.stop();
    let summary = l.wait().await.unwrap();
    assert_eq!(summary.train.version, 1);
}

/// A `Hello` declaring the environment `id` with `spaces`.
fn declaring(name: &str, id: &str, spaces: &flotilla_common::Spaces) -> proto::HelloRequest {
    proto::HelloRequest {
        actor_name: name.into(),
        num_envs: N as u32,
        protocol_version: proto::PROTOCOL_VERSION,
        env_id: id.into(),
        observation_space: Some((&spaces.observation).into()),
        action_space: Some((&spaces.action).into()),
    }
}

/// MountainCar-v0's spaces: a 2-dim box and 3 actions.
fn mountain_car() -> flotilla_common::Spaces {
    let env = EnvSpec::new("MountainCar-v0").make().unwrap();
    flotilla_common::Spaces {
        observation: env.observation_space().clone(),
        action: env.action_space().clone(),
    }
}

/// A chunk of real MountainCar steps (an environment the learner of the
/// test does not build: it is declared external there).
fn mountain_car_chunk(spec: &proto::RunSpec, seq: u64) -> proto::Chunk {
    let mut envs = VecEnv::new(&EnvSpec::new("MountainCar-v0"), N, seq).unwrap();
    let mut b = ChunkBuilder::new(T, N, 2, Space::Discrete { n: 3 });
    b.begin(envs.observations());
    for t in 0..T {
        let actions: Vec<usize> = (0..N).map(|i| (t + i) % 3).collect();
        envs.step_discrete(&actions);
        b.push_discrete(&actions, &[(1.0f32 / 3.0).ln(); N], None, &envs);
    }
    b.finish(
        &spec.run_id,
        &spec.env_id,
        spec.actor_id,
        seq,
        spec.policy_version,
    )
}

/// An external run with a convolutional torso refuses a first actor whose
/// observations are no image its kernels fit, naming `model.conv`, and
/// starts with the first one whose observations fit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_conv_run_refuses_observations_its_kernels_do_not_fit() {
    let (starting, _dir) = TestLearner::bind(
        "external-conv",
        "id = \"Pixels-v0\"\nsource = \"external\"\n",
        &["model.conv=[{channels=4,kernel=3,stride=1}]"],
    )
    .await;
    let addr = starting.local_addr();
    let start = tokio::spawn(starting.start());
    let mut c = client(addr).await;
    let e = c
        .hello(declaring("flat", "Pixels-v0", &mountain_car()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("model.conv") && e.message().contains("shape [2]"),
        "{}",
        e.message()
    );
    let small = flotilla_common::Spaces {
        observation: Space::Box {
            low: vec![0.0; 4],
            high: vec![1.0; 4],
            shape: vec![1, 2, 2],
            dtype: Dtype::Float32,
        },
        action: Space::Discrete { n: 3 },
    };
    let e = c
        .hello(declaring("small", "Pixels-v0", &small))
        .await
        .unwrap_err();
    assert!(e.message().contains("does not fit"), "{}", e.message());
    let image = flotilla_common::Spaces {
        observation: Space::Box {
            low: vec![0.0; 2 * 5 * 5],
            high: vec![255.0; 2 * 5 * 5],
            shape: vec![2, 5, 5],
            dtype: Dtype::Float32,
        },
        action: Space::Discrete { n: 3 },
    };
    let spec = c
        .hello(declaring("image", "Pixels-v0", &image))
        .await
        .expect("an image the kernels fit starts the run")
        .into_inner();
    let model = spec.model.unwrap();
    assert_eq!((model.conv.len(), model.conv[0].channels), (1, 4));
    let learner = start.await.unwrap().expect("the run starts");
    learner.stop();
    learner.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_run_takes_its_spaces_from_the_first_declaring_actor() {
    let (starting, dir) = TestLearner::bind(
        "external",
        "id = \"MountainCar-v0\"\nsource = \"external\"\n",
        &[],
    )
    .await;
    let addr = starting.local_addr();
    let start = tokio::spawn(starting.start());
    let mut c = client(addr).await;
    let spaces = mountain_car();

    // Before the run has started nothing but a declaring Hello is served.
    let e = c
        .subscribe_policy(proto::SubscribeRequest::default())
        .await
        .expect_err("no policy before the run starts");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    let e = c
        .hello(proto::HelloRequest {
            actor_name: "builtin".into(),
            protocol_version: proto::PROTOCOL_VERSION,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("`MountainCar-v0`") && e.message().contains("declares none"),
        "{}",
        e.message()
    );
    let e = c
        .hello(declaring("other", "Pong-v5", &spaces))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains(
            "field `env_id`: this run trains `MountainCar-v0`, the actor declared `Pong-v5`"
        ),
        "{}",
        e.message()
    );
    let mut half = declaring("half", "MountainCar-v0", &spaces);
    half.action_space = None;
    let e = c.hello(half).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("`action_space`"), "{}", e.message());
    let discrete_obs = flotilla_common::Spaces {
        observation: Space::Discrete { n: 5 },
        ..spaces.clone()
    };
    let e = c
        .hello(declaring("onehot", "MountainCar-v0", &discrete_obs))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("one-hot"), "{}", e.message());
    let e = c
        .hello(proto::HelloRequest {
            protocol_version: 2,
            ..declaring("old", "MountainCar-v0", &spaces)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message()
            .contains(&format!("protocol {}", proto::PROTOCOL_VERSION)),
        "{}",
        e.message()
    );

    // The first declaration starts the run with its spaces.
    let spec = c
        .hello(declaring("first", "MountainCar-v0", &spaces))
        .await
        .unwrap()
        .into_inner();
    let learner = start.await.unwrap().expect("the run starts");
    assert_eq!(spec.env_id, "MountainCar-v0");
    assert_eq!(
        Space::try_from(spec.observation_space.as_ref().unwrap()).unwrap(),
        spaces.observation
    );
    assert_eq!(
        Space::try_from(spec.action_space.as_ref().unwrap()).unwrap(),
        spaces.action
    );

    // Fixed from now on: other spaces are refused, naming the difference.
    let wider = flotilla_common::Spaces {
        action: Space::Discrete { n: 4 },
        ..spaces.clone()
    };
    let e = c
        .hello(declaring("wider", "MountainCar-v0", &wider))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message()
            .contains("action_space: the run has Discrete(3), the actor declared Discrete(4)"),
        "{}",
        e.message()
    );
    let e = c
        .hello(proto::HelloRequest {
            actor_name: "builtin".into(),
            protocol_version: proto::PROTOCOL_VERSION,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // The same declaration joins, and its chunks train.
    let mut sub = c
        .subscribe_policy(proto::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sub.next().await.unwrap().unwrap().version, 0);
    let chunks: Vec<_> = (1..=2).map(|s| mountain_car_chunk(&spec, s)).collect();
    let summary = send_in(&mut c, &spec, chunks).await.unwrap();
    assert_eq!(summary.chunks_accepted, 2, "64 samples: one batch");
    let v1 = sub.next().await.unwrap().unwrap();
    assert_eq!(v1.version, 1);
    let model = ModelSpec::try_from(spec.model.as_ref().unwrap()).unwrap();
    CpuPolicy::from_safetensors(&model, &[2], &spaces.action, &v1.safetensors)
        .expect("the published policy fits the declared spaces");

    // Its checkpoints record the spaces: a resumed run knows them at once.
    learner.stop();
    let summary = learner.wait().await.unwrap();
    let ckpt = summary.train.final_checkpoint.expect("a final checkpoint");
    let meta = flotilla_common::checkpoint::read_metadata(&ckpt).unwrap();
    let recorded: flotilla_common::Spaces =
        serde_json::from_str(&meta[flotilla_common::checkpoint::key::SPACES]).unwrap();
    assert_eq!(recorded, spaces);
    drop(dir);
}

/// A chunk of real steps of the maze drawn as pixels, packed as `dtype`.
fn maze_pixel_chunk(spec: &proto::RunSpec, seq: u64, dtype: Dtype) -> proto::Chunk {
    let maze = EnvSpec::from_parts("Maze-v0", "observation = \"image\"").unwrap();
    let mut envs = VecEnv::new(&maze, N, seq).unwrap();
    let mut b =
        ChunkBuilder::new(T, N, 3 * 17 * 17, Space::Discrete { n: 4 }).with_obs_dtype(dtype);
    b.begin(envs.observations());
    for t in 0..T {
        let actions: Vec<usize> = (0..N).map(|i| (t + i) % 4).collect();
        envs.step_discrete(&actions);
        b.push_discrete(&actions, &[0.25f32.ln(); N], None, &envs);
    }
    b.finish(
        &spec.run_id,
        &spec.env_id,
        spec.actor_id,
        seq,
        spec.policy_version,
    )
}

/// An external run declared with uint8 image observations takes chunks of
/// bytes and trains on them; a declaration of the same image as float32 and
/// a chunk of f32 observations are refused, naming the difference; the
/// checkpoint records the dtype.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_pixel_run_trains_on_bytes_and_refuses_floats() {
    let (starting, dir) = TestLearner::bind(
        "external-pixels",
        "id = \"MazePixels-v0\"\nsource = \"external\"\n",
        &[
            "model.conv=[{channels=4,kernel=3,stride=2}]",
            "model.observation_scale=0.00392156862745098",
        ],
    )
    .await;
    let addr = starting.local_addr();
    let start = tokio::spawn(starting.start());
    let mut c = client(addr).await;
    let pixels = flotilla_common::Spaces {
        observation: Space::pixels(vec![3, 17, 17]),
        action: Space::Discrete { n: 4 },
    };
    let spec = c
        .hello(declaring("bytes", "MazePixels-v0", &pixels))
        .await
        .expect("a uint8 image starts the run")
        .into_inner();
    let learner = start.await.unwrap().expect("the run starts");
    let declared = Space::try_from(spec.observation_space.as_ref().unwrap()).unwrap();
    assert_eq!(declared.dtype(), Dtype::Uint8);

    let floats = flotilla_common::Spaces {
        observation: Space::Box {
            low: vec![0.0; 3 * 17 * 17],
            high: vec![255.0; 3 * 17 * 17],
            shape: vec![3, 17, 17],
            dtype: Dtype::Float32,
        },
        action: Space::Discrete { n: 4 },
    };
    let e = c
        .hello(declaring("floats", "MazePixels-v0", &floats))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message()
            .contains("observation_space: the run has a Box of uint8, the actor declared float32"),
        "{}",
        e.message()
    );

    // f32 observations in a chunk of the bytes run: INVALID_ARGUMENT.
    let e = send_in(
        &mut c,
        &spec,
        vec![maze_pixel_chunk(&spec, 1, Dtype::Float32)],
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("field `obs_dtype`"), "{}", e.message());

    // Bytes train: two chunks are one batch.
    let spec = c
        .hello(declaring("bytes", "MazePixels-v0", &pixels))
        .await
        .unwrap()
        .into_inner();
    let mut sub = c
        .subscribe_policy(proto::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sub.next().await.unwrap().unwrap().version, 0);
    let chunks: Vec<_> = (1..=2)
        .map(|s| maze_pixel_chunk(&spec, s, Dtype::Uint8))
        .collect();
    assert_eq!(
        chunks[0].obs.len(),
        (T + 1) * N * 3 * 17 * 17,
        "one byte a pixel"
    );
    let summary = send_in(&mut c, &spec, chunks).await.unwrap();
    assert_eq!(summary.chunks_accepted, 2);
    let v1 = sub.next().await.unwrap().unwrap();
    assert_eq!(v1.version, 1);
    let model = ModelSpec::try_from(spec.model.as_ref().unwrap()).unwrap();
    CpuPolicy::from_safetensors(&model, &[3, 17, 17], &pixels.action, &v1.safetensors)
        .expect("the published policy fits the declared image");

    learner.stop();
    let summary = learner.wait().await.unwrap();
    let ckpt = summary.train.final_checkpoint.expect("a final checkpoint");
    let meta = flotilla_common::checkpoint::read_metadata(&ckpt).unwrap();
    let recorded: flotilla_common::Spaces =
        serde_json::from_str(&meta[flotilla_common::checkpoint::key::SPACES]).unwrap();
    assert_eq!(recorded, pixels);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builtin_run_accepts_only_its_own_spaces_declared() {
    let l = learner("declared-builtin", &[]).await;
    let mut c = client(l.local_addr()).await;
    let cartpole = {
        let env = EnvSpec::new("CartPole-v1").make().unwrap();
        flotilla_common::Spaces {
            observation: env.observation_space().clone(),
            action: env.action_space().clone(),
        }
    };
    let spec = c
        .hello(declaring("same", "CartPole-v1", &cartpole))
        .await
        .expect("the built-in environment's own spaces are welcome")
        .into_inner();
    assert_eq!(spec.env_id, "CartPole-v1");
    let mut other = cartpole.clone();
    if let Space::Box { high, .. } = &mut other.observation {
        high[0] = 5.0;
    }
    let e = c
        .hello(declaring("other", "CartPole-v1", &other))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message()
            .contains("observation_space: the run has high[0] = 4.8, the actor declared 5"),
        "{}",
        e.message()
    );
    l.stop();
    l.wait().await.unwrap();
}

/// Keeps one actor's stream full: chunks acted with the newest version the
/// subscription has shown, as fast as the learner takes them, until `stop`.
fn flood(
    mut c: LearnerClient<Channel>,
    spec: proto::RunSpec,
    version: tokio::sync::watch::Receiver<u64>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (tx, rx) = tokio::sync::mpsc::channel::<proto::Chunk>(2);
        let s = spec.clone();
        let producer = tokio::spawn(async move {
            for seq in 1.. {
                if *stop.borrow() {
                    break;
                }
                let v = *version.borrow();
                if tx.send(good_chunk(&s, seq, v)).await.is_err() {
                    break;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let _ = c.stream_trajectories(with_session(&spec, stream)).await;
        producer.abort();
    })
}

/// Acts like a real actor on the learner's advice: with each new version
/// (`version` carries it and its `samples_per_version`), sends that many
/// samples in whole chunks (a batch's worth without advice), then waits for
/// the next version.
fn obey(
    mut c: LearnerClient<Channel>,
    spec: proto::RunSpec,
    mut version: tokio::sync::watch::Receiver<(u64, u64)>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (tx, rx) = tokio::sync::mpsc::channel::<proto::Chunk>(2);
        let s = spec.clone();
        let per_chunk = (N * T) as u64;
        let producer = tokio::spawn(async move {
            let mut seq = 0;
            loop {
                let (v, advice) = *version.borrow_and_update();
                let share = if advice > 0 { advice } else { s.batch_samples };
                for _ in 0..share.div_ceil(per_chunk) {
                    seq += 1;
                    if *stop.borrow() || tx.send(good_chunk(&s, seq, v)).await.is_err() {
                        return;
                    }
                }
                if version.changed().await.is_err() {
                    return;
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let _ = c.stream_trajectories(with_session(&spec, stream)).await;
        producer.abort();
    })
}

/// The batch of `slow_learner`.
const BATCH: u64 = 256;

/// A learner slower than the test's actors (16 epochs of a batch of
/// `BATCH`), a client and its policy subscription.
async fn slow_learner(
    name: &str,
) -> (
    TestLearner,
    LearnerClient<Channel>,
    tonic::Streaming<proto::PolicySnapshot>,
) {
    let l = learner(
        name,
        &[
            &format!("ppo.batch_size={BATCH}"),
            "ppo.update_epochs=16",
            "run.total_env_steps=100000000",
        ],
    )
    .await;
    let mut c = client(l.local_addr()).await;
    let sub = c
        .subscribe_policy(proto::SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    (l, c, sub)
}

/// Reads snapshots until `n` more versions arrived, passing each on to the
/// actors that follow `version` (version, advice) and `flood` (version);
/// returns (version, advice) of each.
async fn advice(
    sub: &mut tonic::Streaming<proto::PolicySnapshot>,
    version: &tokio::sync::watch::Sender<(u64, u64)>,
    flood: &tokio::sync::watch::Sender<u64>,
    n: usize,
) -> Vec<(u64, u64)> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let s = tokio::time::timeout(Duration::from_secs(60), sub.next())
            .await
            .expect("a new version within 60 s")
            .unwrap()
            .unwrap();
        // A repeat of the version the actors act with (the subscription's
        // first message) is no news to them: it must not start another share.
        version.send_if_modified(|v| {
            let news = v.0 != s.version;
            *v = (s.version, s.samples_per_version);
            news
        });
        flood.send_replace(s.version);
        seen.push((s.version, s.samples_per_version));
    }
    seen
}

/// While the learner is the bottleneck it advises each of A actors to act
/// (3B − q) / (2(A − 1)) samples per version, q being what is queued when
/// an update ends, so that it keeps about a batch ahead
/// (`learner::train::publisher::Pacing`). Two actors that follow the advice
/// act one batch per version between them, and nothing they act goes stale
/// (with a share of a batch each, half of it did); actors that ignore it
/// and fill the queue are advised the least.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_behind_its_actors_advises_shares_that_keep_its_queue_short() {
    let (l, mut c, mut sub) = slow_learner("advice").await;
    let (version_tx, version_rx) = tokio::sync::watch::channel((0u64, 0u64));
    let (flood_tx, flood_rx) = tokio::sync::watch::channel(0u64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut actors = Vec::new();
    for _ in 0..2 {
        let spec = hello(&mut c).await;
        assert_eq!(spec.batch_samples, BATCH);
        actors.push(obey(c.clone(), spec, version_rx.clone(), stop_rx.clone()));
    }
    let obeyed = advice(&mut sub, &version_tx, &flood_tx, 60).await;
    let settled: Vec<u64> = obeyed.iter().rev().take(20).map(|&(_, a)| a).collect();
    // The fixed point with 2 actors: 2B queued when an update ends, B/2 each.
    assert!(
        settled.iter().all(|&a| a == BATCH / 2),
        "advice to two actors that follow it: {obeyed:?}"
    );
    let (last_obeyed, _) = *obeyed.last().unwrap();
    // Two more actors send as fast as the learner takes chunks.
    for _ in 0..2 {
        let spec = hello(&mut c).await;
        actors.push(flood(c.clone(), spec, flood_rx.clone(), stop_rx.clone()));
    }
    let flooded = advice(&mut sub, &version_tx, &flood_tx, 40).await;
    assert!(
        flooded.iter().rev().take(10).all(|&(_, a)| a == 1),
        "advice with a queue far more than a batch deep: {flooded:?}"
    );
    stop_tx.send_replace(true);
    l.stop();
    let (summary, dir) = l.wait_keeping_dir().await;
    summary.unwrap();
    for a in actors {
        let _ = tokio::time::timeout(Duration::from_secs(10), a).await;
    }
    // Up to the last version the two actors alone acted with: every
    // chunk trained, at a lag of at most 3.
    let log = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let mut checked = 0;
    for line in log.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        if r["version"].as_u64().unwrap() > last_obeyed {
            break;
        }
        assert_eq!(r["stale_samples"], 0, "{r}");
        let lags = r["policy_lags"].as_array().unwrap();
        assert!(lags.iter().all(|l| l.as_u64().unwrap() <= 3), "{r}");
        checked += 1;
    }
    assert!(checked >= 59, "{checked} updates in metrics.jsonl");
}

/// One actor is advised (3B − q)/2 whether or not the learner waits for it:
/// more than a batch while the queue is short, so that it acts the next batch
/// during the update and its chunks are trained one version after they were
/// acted. With a batch per version (no advice) the actor and the learner took
/// turns: every chunk trained at lag 0, each side idle while the other worked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_actor_is_advised_to_act_the_next_batch_during_the_update() {
    let (l, mut c, mut sub) = slow_learner("advice-one").await;
    let (version_tx, version_rx) = tokio::sync::watch::channel((0u64, 0u64));
    let (flood_tx, _) = tokio::sync::watch::channel(0u64);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let spec = hello(&mut c).await;
    let actor = obey(c.clone(), spec, version_rx, stop_rx);
    let seen = advice(&mut sub, &version_tx, &flood_tx, 30).await;
    // An empty queue when the first update ends: a batch and a half.
    let first = seen.iter().find(|&&(v, _)| v == 1);
    assert_eq!(first, Some(&(1, 3 * BATCH / 2)), "{seen:?}");
    // Then a batch each version, with one batch queued when an update ends.
    assert!(
        seen.iter().rev().take(10).all(|&(_, a)| a == BATCH),
        "{seen:?}"
    );
    let (last, _) = *seen.last().unwrap();
    stop_tx.send_replace(true);
    l.stop();
    let (summary, dir) = l.wait_keeping_dir().await;
    summary.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), actor).await;
    let log = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    let mut settled = 0;
    for line in log.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let version = r["version"].as_u64().unwrap();
        if version > last {
            break;
        }
        assert_eq!(r["stale_samples"], 0, "{r}");
        if version > 10 {
            // Acted during the previous update (with a batch per version:
            // after it, at lag 0).
            let lags = r["policy_lags"].as_array().unwrap();
            assert!(
                lags.iter().all(|l| matches!(l.as_u64(), Some(1..=2))),
                "{r}"
            );
            settled += 1;
        }
    }
    assert!(settled >= 15, "{settled} settled updates in metrics.jsonl");
}
