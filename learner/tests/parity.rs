//! The same weights in libtorch (learner) and ndarray (actor) give the same
//! logits, log-probabilities and values.
//!
//! "The same" has a measured meaning: both are checked against a slow f64
//! forward pass over the same weights, each within a bound on what f32
//! arithmetic may lose on the way. The bound is carried layer by layer
//! (standard forward error analysis): a dot product of n terms plus a bias,
//! summed in any order and with or without fused multiply-adds, is within
//! γ(n+1)·(Σ|w||h| + |b|) of the exact value, γ(k) = k·u/(1 − k·u) with
//! u = 2⁻²⁴; an input already off by e moves it by at most |W|·e; tanh moves
//! an error e by at most its slope there times e plus 0.385·e² (|tanh''| ≤
//! 0.77), and each side's tanh is within 4·10⁻⁷ of the exact one (the
//! actor's own is within 3·10⁻⁷, libtorch's within an ulp); relu is exact.
//! The two sides agreeing to a fixed 1e-5 was a guess about summation order
//! that one CPU's kernels broke; the bound holds on every CPU, and a wrong
//! weight, layout or activation still misses it by orders of magnitude.

use std::collections::HashMap;

use flotilla_common::model::{Activation, ModelSpec};
use flotilla_common::policy::CpuPolicy;
use flotilla_common::Space;
use flotilla_learner::algo::distributions::{Categorical, DiagGaussian};
use flotilla_learner::model::{tensor_to_vec, Policy};
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

/// Unit roundoff of f32.
const U: f64 = 1.0 / (1u64 << 24) as f64;
/// How far either side's tanh may be from the exact one.
const TANH_ERR: f64 = 4e-7;

fn gamma(k: usize) -> f64 {
    let ku = k as f64 * U;
    ku / (1.0 - ku)
}

/// Exact (f64) outputs and how far an f32 evaluation may be from them.
struct Reference {
    head: Vec<f64>,
    head_err: Vec<f64>,
    value: Vec<f64>,
    value_err: Vec<f64>,
}

type Params = HashMap<String, (Vec<usize>, Vec<f32>)>;

/// One linear layer over rows `x` `[b, n]` carrying the error bound `e`.
fn linear(p: &Params, name: &str, x: &[f64], e: &[f64], b: usize) -> (Vec<f64>, Vec<f64>) {
    let (shape, w) = &p[&format!("{name}.weight")];
    let (_, bias) = &p[&format!("{name}.bias")];
    let (out, n) = (shape[0], shape[1]);
    assert_eq!(x.len(), b * n, "{name}: input width");
    let g = gamma(n + 1);
    let (mut y, mut ye) = (vec![0.0; b * out], vec![0.0; b * out]);
    for r in 0..b {
        for o in 0..out {
            let (mut s, mut mag, mut prop) = (f64::from(bias[o]), f64::from(bias[o]).abs(), 0.0);
            for i in 0..n {
                let wi = f64::from(w[o * n + i]);
                let (xi, ei) = (x[r * n + i], e[r * n + i]);
                s += wi * xi;
                // The computed input is within ei of xi: bound its size too.
                mag += wi.abs() * (xi.abs() + ei);
                prop += wi.abs() * ei;
            }
            y[r * out + o] = s;
            ye[r * out + o] = prop + g * mag;
        }
    }
    (y, ye)
}

fn torso(
    p: &Params,
    spec: &ModelSpec,
    prefix: &str,
    obs: &[f64],
    b: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (mut x, mut e) = (obs.to_vec(), vec![0.0; obs.len()]);
    for i in 0..spec.hidden_sizes.len() {
        (x, e) = linear(p, &format!("{prefix}.{i}"), &x, &e, b);
        for (v, err) in x.iter_mut().zip(e.iter_mut()) {
            match spec.activation {
                Activation::Tanh => {
                    // tanh' = 1 − tanh² at the exact point, |tanh''| ≤ 0.77:
                    // an input off by e moves the output by at most
                    // (1 − t²)·e + 0.385·e².
                    *v = v.tanh();
                    *err = ((1.0 - *v * *v) + 0.385 * *err) * *err + TANH_ERR;
                }
                Activation::Relu => *v = v.max(0.0),
            }
        }
    }
    (x, e)
}

fn reference(p: &Params, spec: &ModelSpec, obs: &[f32], b: usize) -> Reference {
    let obs: Vec<f64> = obs.iter().map(|&x| f64::from(x)).collect();
    let ((a, ae), (c, ce)) = if spec.shared_torso {
        let t = torso(p, spec, "torso", &obs, b);
        (t.clone(), t)
    } else {
        (
            torso(p, spec, "actor", &obs, b),
            torso(p, spec, "critic", &obs, b),
        )
    };
    let (head, head_err) = linear(p, "actor.head", &a, &ae, b);
    let (value, value_err) = linear(p, "critic.head", &c, &ce, b);
    Reference {
        head,
        head_err,
        value,
        value_err,
    }
}

/// Each side within its bound of the exact value.
fn within(what: &str, exact: &[f64], err: &[f64], torch: &[f32], cpu: &[f32]) {
    assert_eq!(torch.len(), exact.len(), "{what}: libtorch length");
    assert_eq!(cpu.len(), exact.len(), "{what}: ndarray length");
    let (mut worst, mut widest) = (0.0f64, 0.0f64);
    for i in 0..exact.len() {
        widest = widest.max(err[i]);
        for (side, got) in [("libtorch", torch[i]), ("ndarray", cpu[i])] {
            let off = (f64::from(got) - exact[i]).abs();
            assert!(
                off <= err[i],
                "{what}[{i}]: {side} {got} is {off:.3e} from the exact {} (bound {:.3e}; \
                 libtorch {} vs ndarray {})",
                exact[i],
                err[i],
                torch[i],
                cpu[i]
            );
            worst = worst.max(off / err[i]);
        }
    }
    eprintln!(
        "{what}: worst error {:.1}% of its bound; bounds up to {widest:.2e}",
        100.0 * worst
    );
}

/// Both sides' heads and values each within their bounds of the exact pass.
fn forward_within(
    exact: &Reference,
    head_t: &Tensor,
    value_t: &Tensor,
    f: &flotilla_common::policy::Forward,
) {
    within(
        "head",
        &exact.head,
        &exact.head_err,
        &tensor_to_vec(head_t),
        f.head.as_slice().unwrap(),
    );
    within(
        "value",
        &exact.value,
        &exact.value_err,
        &tensor_to_vec(value_t),
        f.value.as_ref().unwrap().as_slice().unwrap(),
    );
}

fn named(policy: &Policy) -> Params {
    policy
        .host_parameters()
        .into_iter()
        .map(|(n, s, d)| (n, (s, d)))
        .collect()
}

/// Exact log-probabilities of the sampled actions and their bounds, from the
/// exact head and its bound: log-softmax moves by at most the largest logit
/// error plus the chosen one's; a Gaussian term by |a − μ|/σ² per unit of
/// mean error; f32 rounding of the few operations after that adds a few u
/// of each term's size.
fn reference_logp(
    r: &Reference,
    log_std: Option<&[f32]>,
    discrete: &[usize],
    continuous: &[f32],
    b: usize,
) -> (Vec<f64>, Vec<f64>) {
    let k = r.head.len() / b;
    let (mut logp, mut err) = (Vec::with_capacity(b), Vec::with_capacity(b));
    for row in 0..b {
        let z = &r.head[row * k..(row + 1) * k];
        let e = &r.head_err[row * k..(row + 1) * k];
        match log_std {
            None => {
                let a = discrete[row];
                let max = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let lse = max + z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
                let worst = e.iter().cloned().fold(0.0, f64::max);
                logp.push(z[a] - lse);
                err.push(
                    e[a] + worst
                        + 8.0 * U * (z[a].abs() + max.abs() + lse.abs())
                        + (k + 8) as f64 * U,
                );
            }
            Some(ls) => {
                let (mut lp, mut bound) = (0.0, 0.0);
                for i in 0..k {
                    let s = f64::from(ls[i]);
                    let sigma2 = (2.0 * s).exp();
                    let d = f64::from(continuous[row * k + i]) - z[i];
                    let term = -0.5 * d * d / sigma2 - s - 0.5 * (2.0 * std::f64::consts::PI).ln();
                    lp += term;
                    bound += (d.abs() + e[i]) / sigma2 * e[i]
                        + 16.0 * U * (0.5 * d * d / sigma2 + s.abs() + 1.0);
                }
                logp.push(lp);
                err.push(bound);
            }
        }
    }
    (logp, err)
}

/// A policy whose every parameter is moved by up to ±0.5 from its
/// initialization: initial weights hide mismatches (zero biases, a 0.01 head
/// gain, one log-std for all dims).
fn perturbed(
    spec: &ModelSpec,
    obs_dim: usize,
    space: &Space,
    seed: u64,
) -> (Policy, rand_pcg::Pcg64Mcg) {
    let mut torch = Policy::new(spec, obs_dim, space, Device::Cpu, seed);
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
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
    (torch, rng)
}

fn check(spec: &ModelSpec, obs_dim: usize, space: &Space, seed: u64) {
    let (torch, mut rng) = perturbed(spec, obs_dim, space, seed);
    let cpu = CpuPolicy::from_safetensors(spec, obs_dim, space, &torch.to_safetensors()).unwrap();
    let b = 37;
    let obs: Vec<f32> = (0..b * obs_dim)
        .map(|_| rng.random_range(-3.0..3.0))
        .collect();
    let obs_t = Tensor::from_slice(&obs).view([b as i64, obs_dim as i64]);
    let obs_a = ndarray::Array2::from_shape_vec((b, obs_dim), obs.clone()).unwrap();

    let p = named(&torch);
    let exact = reference(&p, spec, &obs, b);
    let (head_t, value_t) = tch::no_grad(|| torch.forward(&obs_t));
    let f = cpu.forward(obs_a.view(), true);
    forward_within(&exact, &head_t, &value_t, &f);

    // log-probs of sampled actions, through each side's own distribution code
    let s = cpu.act(obs_a.view(), false, false, &mut rng);
    let log_std = p.get("log_std").map(|(_, d)| d.as_slice());
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
    let (logp, logp_err) = reference_logp(&exact, log_std, &s.discrete, &s.continuous, b);
    within("logp", &logp, &logp_err, &tensor_to_vec(&logp_t), &s.logp);
    assert_eq!(logp_t.kind(), Kind::Float);
}

/// The bounds are worst cases (every rounding error of every term aligned),
/// a few hundred times the errors either side shows, yet small enough to
/// mean something: one output weight of the checked networks off by 10⁻³
/// already breaks them.
#[test]
fn the_bound_catches_a_weight_off_by_a_thousandth() {
    let (spec, space) = (ModelSpec::default(), Space::Discrete { n: 2 });
    for seed in 0..3 {
        let (torch, mut rng) = perturbed(&spec, 4, &space, seed);
        let p = named(&torch);
        let obs: Vec<f32> = (0..37 * 4).map(|_| rng.random_range(-3.0..3.0)).collect();
        let exact = reference(&p, &spec, &obs, 37);
        for name in ["critic.head.weight", "actor.head.weight"] {
            let mut nudged = p.clone();
            nudged.get_mut(name).unwrap().1[0] += 1e-3;
            let r = reference(&nudged, &spec, &obs, 37);
            let (got, want, err) = if name.starts_with("critic") {
                (&r.value, &exact.value, &exact.value_err)
            } else {
                (&r.head, &exact.head, &exact.head_err)
            };
            let caught = (0..got.len()).any(|i| (got[i] - want[i]).abs() > err[i]);
            assert!(
                caught,
                "seed {seed}: {name} off by 1e-3 stays within the bounds"
            );
        }
    }
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
    let normalized = learning.norm.observations(raw_t, Device::Cpu);
    let (head_t, value_t) = tch::no_grad(|| learning.policy.forward(&normalized));
    let f = cpu.forward(
        ndarray::ArrayView2::from_shape((40, 3), &raw).unwrap(),
        true,
    );
    // Both sides normalize with the same f32 operations, so the exact pass
    // starts from the learner's normalized observations.
    let exact = reference(
        &named(&learning.policy),
        &cfg.model,
        &tensor_to_vec(&normalized),
        40,
    );
    forward_within(&exact, &head_t, &value_t, &f);
    // And the statistics matter: without them the outputs differ.
    let (plain, _) = tch::no_grad(|| {
        learning
            .policy
            .forward(&Tensor::from_slice(&raw).view([40, 3]))
    });
    assert!(tensor_to_vec(&plain) != tensor_to_vec(&head_t));
}
