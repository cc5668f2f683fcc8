//! Observations per second of the Nature CNN torso on the CPU, as an actor
//! runs it: three convolutions with ReLU (32 8x8 stride 4, 64 4x4 stride 2,
//! 64 3x3 stride 1) on 4x84x84, flatten to 3136, a 512 linear layer with ReLU.
//! Single-threaded; random weights with a fixed seed.
//!
//! `cargo bench -p flotilla-common --bench conv`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use flotilla_common::conv::{flatten, Conv2d};
use ndarray::{Array, Array1, Array2, Array4, Axis};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64;

const BATCHES: [usize; 2] = [8, 32];

struct Torso {
    convs: Vec<Conv2d>,
    /// `[512, 3136]`, `y = x Wᵀ + b`.
    fc_weight: Array2<f32>,
    fc_bias: Array1<f32>,
}

impl Torso {
    fn new(rng: &mut Pcg64) -> Self {
        // PyTorch's default init scale: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        let mut uniform = |fan_in: usize, n: usize| -> Vec<f32> {
            let b = 1.0 / (fan_in as f32).sqrt();
            (0..n).map(|_| rng.random_range(-b..b)).collect()
        };
        let convs = [(32, 4, 8, 4), (64, 32, 4, 2), (64, 64, 3, 1)]
            .iter()
            .map(|&(o, c, k, s)| {
                let fan_in = c * k * k;
                let weight = Array::from_shape_vec((o, c, k, k), uniform(fan_in, o * fan_in));
                let bias = Array1::from(uniform(fan_in, o));
                Conv2d::new(weight.unwrap(), bias, s).unwrap()
            })
            .collect();
        let fc_weight = Array::from_shape_vec((512, 3136), uniform(3136, 512 * 3136)).unwrap();
        let fc_bias = Array1::from(uniform(3136, 512));
        Torso {
            convs,
            fc_weight,
            fc_bias,
        }
    }

    fn forward(&self, obs: &Array4<f32>) -> Array2<f32> {
        let mut x = self.convs[0].forward(obs.view(), true);
        for conv in &self.convs[1..] {
            x = conv.forward(x.view(), true);
        }
        let mut y = flatten(x).dot(&self.fc_weight.t());
        y += &self.fc_bias.view().insert_axis(Axis(0));
        y.mapv_inplace(|v| v.max(0.0));
        y
    }
}

fn nature_cnn(c: &mut Criterion) {
    let mut rng = Pcg64::seed_from_u64(0x5eed);
    let torso = Torso::new(&mut rng);
    let mut group = c.benchmark_group("nature_cnn_torso");
    for batch in BATCHES {
        // Frames scaled to [0, 1] as the policy sees them.
        let obs = Array::from_shape_simple_fn((batch, 4, 84, 84), || rng.random_range(0.0..1.0));
        assert_eq!(torso.forward(&obs).dim(), (batch, 512));
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter(|| torso.forward(&obs))
        });
    }
    group.finish();
}

criterion_group!(benches, nature_cnn);
criterion_main!(benches);
