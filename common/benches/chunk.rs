//! Pixel chunks on the wire: what an Atari-shaped chunk (T = 32 steps of
//! N = 8 environments, observations a [4, 84, 84] frame stack) costs as f32
//! and as u8, on each side of the connection, and what rebuilding the
//! frame stack on the learner would cost if actors sent only each new frame.
//!
//! - `pack/*`: the actor's side, per chunk: T steps recorded by the
//!   `ChunkBuilder` (the environment copies a prepared frame stack into the
//!   `VecEnv`'s buffer, the same work for both), `finish`, and the protobuf
//!   encoding gRPC sends.
//! - `ingest/*`: the learner's side, per chunk: decoding the message and
//!   `validate` (every check the ingest gate runs), giving the learner's
//!   in-memory chunk.
//! - `rebuild_stack`: turning T + 4 single frames per environment back into
//!   the T + 1 stacks of 4 that a frames-only wire would leave to the learner.
//!
//! Throughput is in samples (steps x environments) per second, one thread.
//! The encoded sizes are printed first.
//!
//! `cargo bench -p flotilla-common --bench chunk`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use flotilla_common::chunk::{validate, ChunkBuilder, ChunkExpectations, ValueBounds};
use flotilla_common::env::{Env, Step};
use flotilla_common::proto;
use flotilla_common::space::{ActionRef, Dtype, Space};
use flotilla_common::VecEnv;
use prost::Message;

const T: usize = 32;
const N: usize = 8;
const STACK: usize = 4;
const FRAME: usize = 84 * 84;
const OBS: usize = STACK * FRAME;
/// Distinct frames the synthetic game cycles through.
const BANK: usize = 64;

/// A game whose screen is a shifting stack of prepared 84x84 frames of
/// bytes; episodes last 200 steps.
struct Frames {
    space: Space,
    actions: Space,
    bank: std::sync::Arc<Vec<f32>>,
    t: usize,
    offset: usize,
}

impl Frames {
    fn write(&self, obs: &mut [f32]) {
        for k in 0..STACK {
            let f = (self.offset + self.t + k) % BANK;
            obs[k * FRAME..(k + 1) * FRAME].copy_from_slice(&self.bank[f * FRAME..(f + 1) * FRAME]);
        }
    }
}

impl Env for Frames {
    fn id(&self) -> &'static str {
        "Frames-v0"
    }
    fn observation_space(&self) -> &Space {
        &self.space
    }
    fn action_space(&self) -> &Space {
        &self.actions
    }
    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(s) = seed {
            self.offset = (s % BANK as u64) as usize;
        }
        self.t = 0;
        self.write(obs);
    }
    fn step(&mut self, _: ActionRef<'_>, obs: &mut [f32]) -> Step {
        self.t += 1;
        self.write(obs);
        Step {
            reward: 0.0,
            terminated: self.t == 200,
            truncated: false,
        }
    }
}

fn frames(n: usize) -> VecEnv {
    // Screen-like bytes: flat areas with edges, not noise.
    let bank: Vec<f32> = (0..BANK * FRAME)
        .map(|i| {
            let (f, p) = (i / FRAME, i % FRAME);
            let (r, c) = (p / 84, p % 84);
            (((r / 6 + c / 4 + f) % 7) * 36) as f32
        })
        .collect();
    let bank = std::sync::Arc::new(bank);
    let envs = (0..n)
        .map(|_| {
            Box::new(Frames {
                space: Space::pixels(vec![STACK, 84, 84]),
                actions: Space::Discrete { n: 4 },
                bank: bank.clone(),
                t: 0,
                offset: 0,
            }) as Box<dyn Env>
        })
        .collect();
    VecEnv::from_envs(envs, 1)
}

/// Records T steps and encodes the chunk.
fn pack(envs: &mut VecEnv, b: &mut ChunkBuilder, sequence: u64) -> Vec<u8> {
    let actions = [1usize; N];
    let logp = [-1.386f32; N];
    for _ in 0..T {
        envs.step_discrete(&actions);
        b.push_discrete(&actions, &logp, None, envs);
    }
    b.finish("run", "Frames-v0", 1, sequence, 0).encode_to_vec()
}

fn expectations(dtype: Dtype) -> ChunkExpectations {
    let space = Space::pixels(vec![STACK, 84, 84]);
    ChunkExpectations {
        run_id: "run".into(),
        env_id: "Frames-v0".into(),
        obs_dim: OBS,
        obs_dtype: dtype,
        action_space: Space::Discrete { n: 4 },
        chunk_len: T,
        max_envs: N,
        max_bytes: 1 << 28,
        newest_version: 0,
        require_behavior_value: false,
        bounds: ValueBounds::defaults(&space),
    }
}

/// The stacks `[T+1, N, 4, FRAME]` from single frames `[T+4, N, FRAME]`
/// (the 3 frames before the chunk's first observation, then one per row).
fn rebuild_stack(frames: &[u8], out: &mut Vec<u8>) {
    out.clear();
    for s in 0..=T {
        for e in 0..N {
            for k in 0..STACK {
                let f = ((s + k) * N + e) * FRAME;
                out.extend_from_slice(&frames[f..f + FRAME]);
            }
        }
    }
}

fn bench(c: &mut Criterion) {
    let mut chunks = Vec::new();
    for dtype in [Dtype::Float32, Dtype::Uint8] {
        let mut envs = frames(N);
        let mut b = ChunkBuilder::new(T, N, OBS, Space::Discrete { n: 4 }).with_obs_dtype(dtype);
        b.begin(envs.observations());
        let bytes = pack(&mut envs, &mut b, 1);
        validate(
            proto::Chunk::decode(&bytes[..]).unwrap(),
            &expectations(dtype),
        )
        .unwrap();
        chunks.push((dtype, Bytes::from(bytes), envs, b));
    }
    let frames_only = (T + STACK) * N * FRAME + (chunks[1].1.len() - (T + 1) * N * OBS);
    println!(
        "chunk of T={T} x N={N} [4, 84, 84]: f32 {:.2} MB, u8 {:.2} MB, u8 new frames only {:.2} MB",
        chunks[0].1.len() as f64 / 1e6,
        chunks[1].1.len() as f64 / 1e6,
        frames_only as f64 / 1e6
    );

    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Elements((T * N) as u64));
    g.sample_size(20);
    for (dtype, bytes, envs, b) in &mut chunks {
        let name = dtype.name();
        let mut seq = 1;
        g.bench_function(format!("pack/{name}"), |bench| {
            bench.iter(|| {
                seq += 1;
                pack(envs, b, seq)
            })
        });
        let exp = expectations(*dtype);
        g.bench_function(format!("ingest/{name}"), |bench| {
            bench.iter(|| {
                let msg = proto::Chunk::decode(bytes.clone()).unwrap();
                validate(msg, &exp).unwrap()
            })
        });
    }
    let single: Vec<u8> = (0..(T + STACK) * N * FRAME)
        .map(|i| (i % 251) as u8)
        .collect();
    let mut out = Vec::with_capacity((T + 1) * N * OBS);
    g.bench_function("rebuild_stack", |bench| {
        bench.iter(|| rebuild_stack(&single, &mut out))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
