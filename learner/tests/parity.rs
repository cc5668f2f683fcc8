//! The same weights in libtorch (learner) and ndarray (actor) give the same
//! logits, log-probabilities and values, within 1e-5.

use flotilla_common::model::{Activation, ModelSpec};
use flotilla_common::policy::CpuPolicy;
use flotilla_common::Space;
use flotilla_learner::algo::distributions::{Categorical, DiagGaussian};
use flotilla_learner::model::{tensor_to_vec, Policy};
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

fn close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
            "{what}[{i}]: libtorch {x} vs ndarray {y}"
        );
    }
}

fn check(spec: &ModelSpec, obs_dim: usize, space: &Space, seed: u64) {
    let mut torch = Policy::new(spec, obs_dim, space, Device::Cpu, seed);
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
    // Initial weights hide mismatches (zero biases, a 0.01 head gain, one
    // log-std for all dims): move every parameter by a sizeable amount first.
    let mut params = torch.host_parameters();
    for (_, _, data) in &mut params {
        for x in data.iter_mut() {
            *x += rng.random_range(-0.5..0.5);
        }
    }
    torch.load_parameters(&params).unwrap();
    assert_eq!(
        torch.host_parameters(),
        params,
        "the perturbed weights are in"
    );
    let cpu = CpuPolicy::from_safetensors(spec, obs_dim, space, &torch.to_safetensors()).unwrap();
    let b = 37;
    let obs: Vec<f32> = (0..b * obs_dim)
        .map(|_| rng.random_range(-3.0..3.0))
        .collect();
    let obs_t = Tensor::from_slice(&obs).view([b as i64, obs_dim as i64]);
    let obs_a = ndarray::Array2::from_shape_vec((b, obs_dim), obs.clone()).unwrap();

    let (head_t, value_t) = tch::no_grad(|| torch.forward(&obs_t));
    let f = cpu.forward(obs_a.view(), true);
    close(&tensor_to_vec(&head_t), f.head.as_slice().unwrap(), "head");
    close(
        &tensor_to_vec(&value_t),
        f.value.as_ref().unwrap().as_slice().unwrap(),
        "value",
    );

    // log-probs of sampled actions, through each side's own distribution code
    let s = cpu.act(obs_a.view(), false, false, &mut rng);
    let logp_t = tch::no_grad(|| match torch.log_std() {
        None => {
            let a: Vec<i64> = s.discrete.iter().map(|&a| a as i64).collect();
            Categorical::new(&head_t).log_prob(&Tensor::from_slice(&a))
        }
        Some(log_std) => {
            let a = Tensor::from_slice(&s.continuous).view([b as i64, -1]);
            DiagGaussian::new(&head_t, &log_std).log_prob(&a)
        }
    });
    close(&tensor_to_vec(&logp_t), &s.logp, "logp");
    assert_eq!(logp_t.kind(), Kind::Float);
}

#[test]
fn discrete_separate_torsos() {
    for seed in 0..3 {
        check(&ModelSpec::default(), 4, &Space::Discrete { n: 2 }, seed);
    }
}

#[test]
fn discrete_shared_relu_torso() {
    let spec = ModelSpec {
        hidden_sizes: vec![32, 16, 8],
        activation: Activation::Relu,
        shared_torso: true,
        init_log_std: 0.0,
        ..Default::default()
    };
    check(&spec, 6, &Space::Discrete { n: 5 }, 11);
}

#[test]
fn continuous_gaussian() {
    let spec = ModelSpec {
        init_log_std: -0.7,
        ..Default::default()
    };
    check(&spec, 3, &Space::uniform_box(-2.0, 2.0, 1), 5);
    check(&spec, 8, &Space::uniform_box(-1.0, 1.0, 3), 6);
}

/// With observation normalization the actor loads the statistics from the
/// learner's snapshot and feeds raw observations; the learner normalizes the
/// same raw observations with its own copy: same outputs.
#[test]
fn normalized_observations() {
    use flotilla_common::normalize::Moments;
    use flotilla_learner::config::RunConfig;
    use flotilla_learner::train::learn::Learning;

    let cfg = RunConfig::from_toml(
        "[env]\nid = \"Pendulum-v1\"\n",
        "test",
        &[
            "model.normalize_observations=true".into(),
            "model.observation_clip=5".into(),
        ],
    )
    .unwrap();
    let space = Space::uniform_box(-2.0, 2.0, 1);
    let policy = Policy::new(&cfg.model, 3, &space, Device::Cpu, 9);
    let mut learning = Learning::new(policy, None, &cfg);
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(9);
    let seen: Vec<f32> = (0..300)
        .map(|k| 50.0 * (k % 3) as f32 + rng.random_range(-2.0..2.0))
        .collect();
    learning
        .norm
        .merge_observations(&Moments::of_rows(3, seen.chunks_exact(3)));
    let cpu = CpuPolicy::from_safetensors(&cfg.model, 3, &space, &learning.snapshot()).unwrap();
    let raw: Vec<f32> = (0..40 * 3)
        .map(|k| 50.0 * (k % 3) as f32 + rng.random_range(-30.0..30.0))
        .collect();
    let raw_t = Tensor::from_slice(&raw).view([40, 3]);
    let (head_t, value_t) = tch::no_grad(|| {
        learning
            .policy
            .forward(&learning.norm.observations(raw_t, Device::Cpu))
    });
    let f = cpu.forward(
        ndarray::ArrayView2::from_shape((40, 3), &raw).unwrap(),
        true,
    );
    close(&tensor_to_vec(&head_t), f.head.as_slice().unwrap(), "head");
    close(
        &tensor_to_vec(&value_t),
        f.value.as_ref().unwrap().as_slice().unwrap(),
        "value",
    );
    // And the statistics matter: without them the outputs differ.
    let (plain, _) = tch::no_grad(|| {
        learning
            .policy
            .forward(&Tensor::from_slice(&raw).view([40, 3]))
    });
    assert!(tensor_to_vec(&plain) != tensor_to_vec(&head_t));
}
