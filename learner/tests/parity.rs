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
//!
//! A convolution is a dot product of `C·k·k` terms plus a bias per output,
//! so it carries the same bound; the observation scale is one f32 product
//! (relative error u).

use std::collections::HashMap;

use flotilla_common::model::{Activation, ConvLayer, ModelSpec, ObservationLayout};
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

/// One convolution plus ReLU over NCHW images `x` `[b, c, h, w]` carrying
/// the error bound `e`; returns the output and its `[c, h, w]`.
fn conv(
    p: &Params,
    name: &str,
    stride: usize,
    (x, e): (&[f64], &[f64]),
    b: usize,
    [c, h, w]: [usize; 3],
) -> (Vec<f64>, Vec<f64>, [usize; 3]) {
    let (shape, wt) = &p[&format!("{name}.weight")];
    let (_, bias) = &p[&format!("{name}.bias")];
    let (o, k) = (shape[0], shape[2]);
    assert_eq!((shape[1], shape[3]), (c, k), "{name}: weight shape");
    let (oh, ow) = ((h - k) / stride + 1, (w - k) / stride + 1);
    let g = gamma(c * k * k + 1);
    let (mut y, mut ye) = (vec![0.0; b * o * oh * ow], vec![0.0; b * o * oh * ow]);
    for n in 0..b {
        for oc in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let bo = f64::from(bias[oc]);
                    let (mut s, mut mag, mut prop) = (bo, bo.abs(), 0.0);
                    for ci in 0..c {
                        for ki in 0..k {
                            for kj in 0..k {
                                let wi = f64::from(wt[((oc * c + ci) * k + ki) * k + kj]);
                                let at = ((n * c + ci) * h + i * stride + ki) * w + j * stride + kj;
                                s += wi * x[at];
                                mag += wi.abs() * (x[at].abs() + e[at]);
                                prop += wi.abs() * e[at];
                            }
                        }
                    }
                    let out = ((n * o + oc) * oh + i) * ow + j;
                    // relu is exact and moves no error up
                    y[out] = s.max(0.0);
                    ye[out] = prop + g * mag;
                }
            }
        }
    }
    (y, ye, [o, oh, ow])
}

/// The network's input in f64: observations `[b, obs_dim]` scaled (one f32
/// product each) and, for a convolutional torso, reordered to NCHW.
fn network_input(spec: &ModelSpec, obs_shape: &[usize], obs: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let scale = f64::from(spec.observation_scale);
    let (mut x, mut e): (Vec<f64>, Vec<f64>) = if spec.observation_scale == 1.0 {
        (obs.to_vec(), vec![0.0; obs.len()])
    } else {
        obs.iter()
            .map(|&v| (v * scale, (v * scale).abs() * U))
            .unzip()
    };
    if spec.is_convolutional() && spec.observation_layout == ObservationLayout::Hwc {
        let [c, h, w] = spec.image_shape(obs_shape).unwrap();
        let d = c * h * w;
        let (mut xc, mut ec) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        for n in 0..x.len() / d {
            for y in 0..h {
                for z in 0..w {
                    for ch in 0..c {
                        let from = n * d + (y * w + z) * c + ch;
                        let to = n * d + (ch * h + y) * w + z;
                        (xc[to], ec[to]) = (x[from], e[from]);
                    }
                }
            }
        }
        (x, e) = (xc, ec);
    }
    (x, e)
}

fn torso(
    p: &Params,
    spec: &ModelSpec,
    obs_shape: &[usize],
    prefix: &str,
    input: &(Vec<f64>, Vec<f64>),
    b: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (mut x, mut e) = input.clone();
    if spec.is_convolutional() {
        let mut chw = spec.image_shape(obs_shape).unwrap();
        for (j, l) in spec.conv.iter().enumerate() {
            (x, e, chw) = conv(p, &format!("{prefix}.conv.{j}"), l.stride, (&x, &e), b, chw);
        }
    }
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

fn reference(
    p: &Params,
    spec: &ModelSpec,
    obs_shape: &[usize],
    obs: &[f32],
    b: usize,
) -> Reference {
    let obs: Vec<f64> = obs.iter().map(|&x| f64::from(x)).collect();
    let input = network_input(spec, obs_shape, &obs);
    let ((a, ae), (c, ce)) = if spec.shared_torso {
        let t = torso(p, spec, obs_shape, "torso", &input, b);
        (t.clone(), t)
    } else {
        (
            torso(p, spec, obs_shape, "actor", &input, b),
            torso(p, spec, obs_shape, "critic", &input, b),
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

/// A policy whose every parameter is moved by up to ±0.5 (less for wide
/// fan-ins) from its
/// initialization: initial weights hide mismatches (zero biases, a 0.01 head
/// gain, one log-std for all dims).
fn perturbed(
    spec: &ModelSpec,
    obs_shape: &[usize],
    space: &Space,
    seed: u64,
) -> (Policy, rand_pcg::Pcg64Mcg) {
    let mut torch = Policy::new(spec, obs_shape, space, Device::Cpu, seed);
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
    let mut params = torch.host_parameters();
    for (_, shape, data) in &mut params {
        // ±0.5, narrowed for fan-ins above 64 (convolutions, wide layers)
        // so activations stay O(1) and the bounds stay tight; the MLPs'
        // fan-ins are at most 64.
        let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
        let amp = 0.5 * (64.0 / fan_in as f32).sqrt().min(1.0);
        for x in data.iter_mut() {
            *x += rng.random_range(-amp..amp);
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
    check_batch(spec, &[obs_dim], space, seed, 37, -3.0..3.0);
}

/// [`check`] over `b` observations of shape `obs_shape` drawn from `range`.
fn check_batch(
    spec: &ModelSpec,
    obs_shape: &[usize],
    space: &Space,
    seed: u64,
    b: usize,
    range: std::ops::Range<f32>,
) {
    let obs_dim: usize = obs_shape.iter().product();
    let (torch, mut rng) = perturbed(spec, obs_shape, space, seed);
    let cpu = CpuPolicy::from_safetensors(spec, obs_shape, space, &torch.to_safetensors()).unwrap();
    let obs: Vec<f32> = (0..b * obs_dim)
        .map(|_| rng.random_range(range.clone()))
        .collect();
    let obs_t = Tensor::from_slice(&obs).view([b as i64, obs_dim as i64]);
    let obs_a = ndarray::Array2::from_shape_vec((b, obs_dim), obs.clone()).unwrap();

    let p = named(&torch);
    let exact = reference(&p, spec, obs_shape, &obs, b);
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
        let (torch, mut rng) = perturbed(&spec, &[4], &space, seed);
        let p = named(&torch);
        let obs: Vec<f32> = (0..37 * 4).map(|_| rng.random_range(-3.0..3.0)).collect();
        let exact = reference(&p, &spec, &[4], &obs, 37);
        for name in ["critic.head.weight", "actor.head.weight"] {
            let mut nudged = p.clone();
            nudged.get_mut(name).unwrap().1[0] += 1e-3;
            let r = reference(&nudged, &spec, &[4], &obs, 37);
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

/// The Nature CNN on a stack of four 84x84 frames, pixels 0..255 scaled by
/// 1/255: shared torso, ReLU everywhere. Through four layers with fan-ins of
/// 256 to 3136 the worst-case bound compounds (each layer multiplies an
/// incoming error by the l1 norm of its weight rows) into bounds wider than
/// the outputs, so here both sides must agree with the exact pass to
/// 1e-5 of the outputs' scale (the largest |exact| of each kind); the
/// small CNNs below hold the rigorous bound through the same code paths.
#[test]
fn nature_cnn_on_pixels() {
    let (spec, shape, space) = (ModelSpec::nature(), [4, 84, 84], Space::Discrete { n: 4 });
    let (torch, mut rng) = perturbed(&spec, &shape, &space, 21);
    let cpu = CpuPolicy::from_safetensors(&spec, &shape, &space, &torch.to_safetensors()).unwrap();
    let (b, d) = (3, 4 * 84 * 84);
    let obs: Vec<f32> = (0..b * d).map(|_| rng.random_range(0.0..255.0)).collect();
    let exact = reference(&named(&torch), &spec, &shape, &obs, b);
    let (head_t, value_t) =
        tch::no_grad(|| torch.forward(&Tensor::from_slice(&obs).view([b as i64, d as i64])));
    let f = cpu.forward(ndarray::ArrayView2::from_shape((b, d), &obs).unwrap(), true);
    let relative = |what: &str, exact: &[f64], torch: &[f32], cpu: &[f32]| {
        let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let mut worst = 0.0f64;
        for (i, &x) in exact.iter().enumerate() {
            for (side, got) in [("libtorch", torch[i]), ("ndarray", cpu[i])] {
                let off = (f64::from(got) - x).abs() / scale;
                assert!(
                    off <= 1e-5,
                    "{what}[{i}]: {side} {got} vs exact {x}: {off:.2e} of the scale {scale:.3e}"
                );
                worst = worst.max(off);
            }
        }
        eprintln!("{what}: worst error {worst:.2e} of the scale {scale:.3e}");
    };
    relative(
        "head",
        &exact.head,
        &tensor_to_vec(&head_t),
        f.head.as_slice().unwrap(),
    );
    let v = f.value.unwrap();
    relative(
        "value",
        &exact.value,
        &tensor_to_vec(&value_t),
        v.as_slice().unwrap(),
    );
}

/// A small convolutional torso of every kind: separate actor and critic
/// torsos, tanh hidden layers, `[H, W, C]` observations with an odd
/// stride that drops a row, and a Gaussian head; and a one-channel `[H, W]`
/// observation.
#[test]
fn small_cnns_in_both_layouts() {
    let hwc = ModelSpec {
        conv: vec![
            ConvLayer {
                channels: 6,
                kernel: 3,
                stride: 2,
            },
            ConvLayer {
                channels: 5,
                kernel: 2,
                stride: 1,
            },
        ],
        observation_layout: ObservationLayout::Hwc,
        hidden_sizes: vec![16],
        init_log_std: -0.3,
        ..Default::default()
    };
    check_batch(
        &hwc,
        &[10, 9, 3],
        &Space::uniform_box(-1.0, 1.0, 2),
        4,
        5,
        -3.0..3.0,
    );
    let gray = ModelSpec {
        conv: vec![ConvLayer {
            channels: 4,
            kernel: 3,
            stride: 1,
        }],
        hidden_sizes: vec![8, 8],
        activation: Activation::Relu,
        shared_torso: true,
        observation_scale: 0.5,
        ..Default::default()
    };
    check_batch(&gray, &[7, 6], &Space::Discrete { n: 3 }, 8, 6, 0.0..4.0);
}

/// The checks are not vacuous: the Nature CNN with its first kernels
/// transposed (rows read as columns, the slip an im2col index makes) moves
/// its outputs far beyond 1e-5 of their scale, and one kernel weight of a
/// small CNN off by 10⁻³ beyond the rigorous bound.
#[test]
fn the_checks_catch_a_transposed_kernel_and_a_weight_off_by_a_thousandth() {
    let outputs = |spec: &ModelSpec, shape: &[usize], edit: &dyn Fn(&mut Vec<f32>)| {
        let (torch, mut rng) = perturbed(spec, shape, &Space::Discrete { n: 4 }, 2);
        let p = named(&torch);
        let d: usize = shape.iter().product();
        let obs: Vec<f32> = (0..2 * d).map(|_| rng.random_range(0.0..255.0)).collect();
        let exact = reference(&p, spec, shape, &obs, 2);
        let mut edited = p.clone();
        edit(&mut edited.get_mut("torso.conv.0.weight").unwrap().1);
        (exact, reference(&edited, spec, shape, &obs, 2))
    };
    let (exact, r) = outputs(&ModelSpec::nature(), &[4, 84, 84], &|w| {
        // [32, 4, 8, 8]: swap the two kernel axes
        let orig = w.clone();
        for oc in 0..32 * 4 {
            for i in 0..8 {
                for j in 0..8 {
                    w[oc * 64 + i * 8 + j] = orig[oc * 64 + j * 8 + i];
                }
            }
        }
    });
    let scale = exact.value.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let moved = (0..r.value.len()).fold(0.0f64, |m, i| m.max((r.value[i] - exact.value[i]).abs()));
    assert!(
        moved > 1e-3 * scale,
        "transposed kernels move the value by only {moved:.2e} (scale {scale:.2e})"
    );
    let small = ModelSpec {
        conv: vec![ConvLayer {
            channels: 4,
            kernel: 3,
            stride: 1,
        }],
        hidden_sizes: vec![8],
        shared_torso: true,
        observation_scale: 1.0 / 255.0,
        ..Default::default()
    };
    let (exact, r) = outputs(&small, &[2, 6, 6], &|w| w[0] += 1e-3);
    let caught = (0..r.value.len())
        .any(|i| (r.value[i] - exact.value[i]).abs() > exact.value_err[i])
        || (0..r.head.len()).any(|i| (r.head[i] - exact.head[i]).abs() > exact.head_err[i]);
    assert!(
        caught,
        "a kernel weight off by 1e-3 stays within the bounds"
    );
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
    let policy = Policy::new(&cfg.model, &[3], &space, Device::Cpu, 9);
    let mut learning = Learning::new(policy, None, &cfg);
    let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(9);
    let seen: Vec<f32> = (0..300)
        .map(|k| 50.0 * (k % 3) as f32 + rng.random_range(-2.0..2.0))
        .collect();
    learning
        .norm
        .merge_observations(&Moments::of_rows(3, seen.chunks_exact(3)));
    let cpu = CpuPolicy::from_safetensors(&cfg.model, &[3], &space, &learning.snapshot()).unwrap();
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
        &[3],
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
