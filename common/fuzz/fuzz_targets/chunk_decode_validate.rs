//! Arbitrary bytes -> `proto::Chunk` (prost) -> `chunk::validate`.
//!
//! Validation must never panic, whatever arrives on the wire. Each decoded
//! message is checked against a discrete run (CartPole-v1: obs dim 4,
//! Discrete(2)) and a continuous one (Pendulum-v1: obs dim 3, Box of dim 1,
//! behavior values required). A chunk that passes must survive the round trip
//! `validate(chunk.to_proto()) == chunk`; an error must render its message,
//! field and reason.
#![no_main]

use std::sync::OnceLock;

use flotilla_common::chunk::{self, ChunkExpectations, ValueBounds};
use flotilla_common::proto;
use flotilla_common::Space;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn expectations() -> &'static [ChunkExpectations; 2] {
    static EXP: OnceLock<[ChunkExpectations; 2]> = OnceLock::new();
    EXP.get_or_init(|| {
        [
            ChunkExpectations {
                run_id: "fuzz-run".into(),
                env_id: "CartPole-v1".into(),
                obs_dim: 4,
                action_space: Space::Discrete { n: 2 },
                chunk_len: 64,
                max_envs: 8,
                max_bytes: 1 << 20,
                newest_version: 10,
                require_behavior_value: false,
                bounds: ValueBounds::defaults(&Space::bounded_box(
                    vec![-4.8, f32::NEG_INFINITY, -0.42, f32::NEG_INFINITY],
                    vec![4.8, f32::INFINITY, 0.42, f32::INFINITY],
                )),
            },
            ChunkExpectations {
                run_id: "fuzz-run".into(),
                env_id: "Pendulum-v1".into(),
                obs_dim: 3,
                action_space: Space::uniform_box(-2.0, 2.0, 1),
                chunk_len: 64,
                max_envs: 8,
                max_bytes: 1 << 20,
                newest_version: 10,
                require_behavior_value: true,
                bounds: ValueBounds::defaults(&Space::bounded_box(
                    vec![-1.0, -1.0, -8.0],
                    vec![1.0, 1.0, 8.0],
                )),
            },
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = proto::Chunk::decode(data) else {
        return;
    };
    for exp in expectations() {
        match chunk::validate(msg.clone(), exp) {
            Ok(c) => {
                let again = chunk::validate(c.to_proto(), exp)
                    .expect("a validated chunk's to_proto() must validate again");
                assert_eq!(again, c, "validate(to_proto()) must give the chunk back");
            }
            Err(e) => {
                let _ = e.to_string();
                let _ = (e.field(), e.reason());
            }
        }
    }
});
