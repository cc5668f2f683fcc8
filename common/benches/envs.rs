//! Steps per second of a 64-environment `VecEnv` with auto-reset, per env id.
//!
//! `cargo bench -p flotilla-common --bench envs`; results in docs/benchmarks.md.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flotilla_common::env::{EnvSpec, ENV_IDS};
use flotilla_common::rollout::{Action, RandomPolicy};
use flotilla_common::space::Space;
use flotilla_common::VecEnv;

const N: usize = 64;
const STEPS: usize = 256;

fn vec_env_steps(c: &mut Criterion) {
    let mut group = c.benchmark_group("vec_env_64");
    group.throughput(Throughput::Elements((N * STEPS) as u64));
    for id in ENV_IDS {
        let mut v = VecEnv::new(&EnvSpec::new(*id), N, 0).unwrap();
        // Pre-drawn random actions: the benchmark measures the environments,
        // not the random number generator.
        let mut pol = RandomPolicy::new(v.action_space().clone(), 1);
        let discrete = matches!(v.action_space(), Space::Discrete { .. });
        let mut d_actions = Vec::with_capacity(STEPS);
        let mut c_actions = Vec::with_capacity(STEPS);
        for _ in 0..STEPS {
            let mut d = Vec::with_capacity(N);
            let mut cont = Vec::new();
            for _ in 0..N {
                match pol.act(&[]) {
                    Action::Discrete(a) => d.push(a),
                    Action::Continuous(x) => cont.extend(x),
                }
            }
            d_actions.push(d);
            c_actions.push(cont);
        }
        group.bench_function(BenchmarkId::from_parameter(id), |b| {
            b.iter(|| {
                for t in 0..STEPS {
                    if discrete {
                        v.step_discrete(&d_actions[t]);
                    } else {
                        v.step_continuous(&c_actions[t]);
                    }
                }
                v.observations()[0]
            })
        });
    }
    group.finish();
}

criterion_group!(benches, vec_env_steps);
criterion_main!(benches);
