//! CPU inference for actors: the [`ModelSpec`] network on ndarray, loaded from
//! the learner's safetensors snapshots, batched over an actor's environments.
//!
//! The learner's libtorch network and this one share parameter names and
//! shapes; a parity test in the learner crate holds them to 1e-5.

use ndarray::{Array1, Array2, Array4, ArrayView2, Axis};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::conv::{self, Conv2d};
use crate::fastmath;
use crate::model::{action_outputs, Activation, ModelSpec, ObservationLayout};
use crate::normalize::ObsNormalizer;
use crate::space::Space;

/// Errors loading a snapshot.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    #[error("snapshot is not a valid safetensors file: {0}")]
    Format(String),
    #[error("snapshot lacks parameter `{0}`")]
    Missing(String),
    #[error("parameter `{name}` has shape {actual:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("parameter `{0}` is not f32")]
    Dtype(String),
    #[error("parameter `{0}` holds non-finite values")]
    NonFinite(String),
    #[error("`{0}` holds a negative variance")]
    NegativeVariance(String),
    #[error("model does not fit the observations: {0}")]
    Spec(String),
}

struct Linear {
    w: Array2<f32>, // [out, in]
    b: Array1<f32>,
}

impl Linear {
    fn forward(&self, x: &Array2<f32>) -> Array2<f32> {
        let mut y = x.dot(&self.w.t());
        y += &self.b;
        y
    }
}

/// Output of one batched forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// Logits (Discrete) or Gaussian means (Box), `[N, A]`.
    pub head: Array2<f32>,
    /// Values `[N]` (computed only when asked for).
    pub value: Option<Array1<f32>>,
}

/// Sampled actions with their log-probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// Discrete: one index per env. Empty for Box.
    pub discrete: Vec<usize>,
    /// Box: `[N, A]` row-major, unclipped samples. Empty for Discrete.
    pub continuous: Vec<f32>,
    pub logp: Vec<f32>,
    pub value: Option<Vec<f32>>,
}

/// One torso: convolutions (possibly none), then linear layers.
#[derive(Default)]
struct Torso {
    conv: Vec<Conv2d>,
    linear: Vec<Linear>,
}

/// The policy network on the CPU.
pub struct CpuPolicy {
    spec: ModelSpec,
    action_space: Space,
    obs_dim: usize,
    /// `[C, H, W]` of the image a convolutional torso reads.
    image: Option<[usize; 3]>,
    actor: Torso,
    critic: Torso,
    shared: bool,
    actor_head: Linear,
    critic_head: Linear,
    log_std: Option<Array1<f32>>,
    obs_norm: Option<ObsNormalizer>,
}

impl CpuPolicy {
    /// Loads parameters from safetensors bytes for observations of shape
    /// `obs_shape`, checking every name and shape.
    pub fn from_safetensors(
        spec: &ModelSpec,
        obs_shape: &[usize],
        action_space: &Space,
        bytes: &[u8],
    ) -> Result<Self, PolicyError> {
        if let Some((key, msg)) = spec.problems_with(obs_shape).first() {
            return Err(PolicyError::Spec(format!("{key}: {msg}")));
        }
        let obs_dim: usize = obs_shape.iter().product();
        let image = if spec.is_convolutional() {
            Some(spec.image_shape(obs_shape).map_err(PolicyError::Spec)?)
        } else {
            None
        };
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| PolicyError::Format(e.to_string()))?;
        let mut shapes = spec.parameter_shapes(obs_shape, action_space);
        shapes.extend(spec.statistics_shapes(obs_dim));
        let get = |name: &str| -> Result<Vec<f32>, PolicyError> {
            let expected = &shapes
                .iter()
                .find(|(n, _)| n == name)
                .ok_or_else(|| PolicyError::Missing(name.to_owned()))?
                .1;
            let view = st
                .tensor(name)
                .map_err(|_| PolicyError::Missing(name.to_owned()))?;
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(PolicyError::Dtype(name.to_owned()));
            }
            if view.shape() != expected.as_slice() {
                return Err(PolicyError::Shape {
                    name: name.to_owned(),
                    expected: expected.clone(),
                    actual: view.shape().to_vec(),
                });
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            if data.iter().any(|x| !x.is_finite()) {
                return Err(PolicyError::NonFinite(name.to_owned()));
            }
            Ok(data)
        };
        let linear = |prefix: &str| -> Result<Linear, PolicyError> {
            let wname = format!("{prefix}.weight");
            let (_, shape) = shapes
                .iter()
                .find(|(n, _)| *n == wname)
                .ok_or_else(|| PolicyError::Missing(wname.clone()))?;
            let w = Array2::from_shape_vec((shape[0], shape[1]), get(&wname)?)
                .map_err(|e| PolicyError::Format(e.to_string()))?;
            let b = Array1::from_vec(get(&format!("{prefix}.bias"))?);
            Ok(Linear { w, b })
        };
        let convolution = |prefix: &str, stride: usize| -> Result<Conv2d, PolicyError> {
            let wname = format!("{prefix}.weight");
            let (_, shape) = shapes
                .iter()
                .find(|(n, _)| *n == wname)
                .ok_or_else(|| PolicyError::Missing(wname.clone()))?;
            let w = Array4::from_shape_vec((shape[0], shape[1], shape[2], shape[3]), get(&wname)?)
                .map_err(|e| PolicyError::Format(e.to_string()))?;
            let b = Array1::from_vec(get(&format!("{prefix}.bias"))?);
            Conv2d::new(w, b, stride).map_err(PolicyError::Format)
        };
        let torso = |name: &str| -> Result<Torso, PolicyError> {
            Ok(Torso {
                conv: (spec.conv.iter().enumerate())
                    .map(|(j, l)| convolution(&format!("{name}.conv.{j}"), l.stride))
                    .collect::<Result<_, _>>()?,
                linear: (0..spec.hidden_sizes.len())
                    .map(|i| linear(&format!("{name}.{i}")))
                    .collect::<Result<_, _>>()?,
            })
        };
        let (actor, critic) = if spec.shared_torso {
            (torso("torso")?, Torso::default())
        } else {
            (torso("actor")?, torso("critic")?)
        };
        let log_std = match action_space {
            Space::Box { .. } => Some(Array1::from_vec(get("log_std")?)),
            Space::Discrete { .. } => None,
        };
        let obs_norm = if spec.normalize_observations {
            let mean = get(crate::normalize::MEAN)?;
            let var = get(crate::normalize::VAR)?;
            if var.iter().any(|&v| v < 0.0) {
                return Err(PolicyError::NegativeVariance(
                    crate::normalize::VAR.to_owned(),
                ));
            }
            Some(ObsNormalizer::new(&mean, &var, spec.observation_clip))
        } else {
            None
        };
        Ok(CpuPolicy {
            spec: spec.clone(),
            action_space: action_space.clone(),
            obs_dim,
            image,
            actor,
            critic,
            shared: spec.shared_torso,
            actor_head: linear("actor.head")?,
            critic_head: linear("critic.head")?,
            log_std,
            obs_norm,
        })
    }

    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    pub fn action_outputs(&self) -> usize {
        action_outputs(&self.action_space)
    }

    fn activate(&self, x: &mut Array2<f32>) {
        match self.spec.activation {
            Activation::Tanh => match x.as_slice_mut() {
                Some(s) => fastmath::tanh_in_place(s),
                None => x.mapv_inplace(fastmath::tanh),
            },
            Activation::Relu => x.mapv_inplace(|v| v.max(0.0)),
        }
    }

    fn torso(&self, torso: &Torso, obs: &Array2<f32>) -> Array2<f32> {
        let mut x = match self.image {
            None => obs.clone(),
            Some([c, h, w]) => {
                let n = obs.nrows();
                let flat = obs.view();
                let images = match self.spec.observation_layout {
                    ObservationLayout::Chw => flat.into_shape_with_order((n, c, h, w)),
                    ObservationLayout::Hwc => flat
                        .into_shape_with_order((n, h, w, c))
                        .map(|v| v.permuted_axes([0, 3, 1, 2])),
                }
                .expect("observations are [N, C*H*W] in standard layout");
                let mut maps: Option<Array4<f32>> = None;
                for layer in &torso.conv {
                    let out = match &maps {
                        None => layer.forward(images.view(), true),
                        Some(m) => layer.forward(m.view(), true),
                    };
                    maps = Some(out);
                }
                conv::flatten(maps.expect("a convolutional torso has a convolution"))
            }
        };
        for l in &torso.linear {
            x = l.forward(&x);
            self.activate(&mut x);
        }
        x
    }

    /// Batched forward pass over raw observations `obs` `[N, obs_dim]`
    /// (normalized here when the snapshot carries statistics).
    pub fn forward(&self, obs: ArrayView2<'_, f32>, with_value: bool) -> Forward {
        let mut obs = obs.as_standard_layout().into_owned();
        if let Some(norm) = &self.obs_norm {
            norm.apply(obs.as_slice_mut().expect("standard layout"));
        }
        if self.spec.observation_scale != 1.0 {
            let scale = self.spec.observation_scale;
            obs.mapv_inplace(|v| v * scale);
        }
        let h = self.torso(&self.actor, &obs);
        let head = self.actor_head.forward(&h);
        let value = with_value.then(|| {
            let c = if self.shared {
                h
            } else {
                self.torso(&self.critic, &obs)
            };
            self.critic_head
                .forward(&c)
                .index_axis(Axis(1), 0)
                .to_owned()
        });
        Forward { head, value }
    }

    /// Log-probabilities of given actions (for the parity test and diagnostics).
    pub fn log_prob_discrete(&self, head: &Array2<f32>, actions: &[usize]) -> Vec<f32> {
        head.outer_iter()
            .zip(actions)
            .map(|(row, &a)| {
                let r = row.to_vec();
                r[a] - log_sum_exp(&r)
            })
            .collect()
    }

    /// Log-density of unclipped continuous actions `[N, A]` under the Gaussian.
    pub fn log_prob_continuous(&self, mean: &Array2<f32>, actions: &[f32]) -> Vec<f32> {
        let log_std = self
            .log_std
            .as_ref()
            .map(|l| l.to_vec())
            .unwrap_or_default();
        let a = log_std.len();
        mean.outer_iter()
            .enumerate()
            .map(|(i, row)| {
                (0..a)
                    .map(|j| gaussian_log_prob(actions[i * a + j], row[j], log_std[j]))
                    .sum()
            })
            .collect()
    }

    /// Samples one action per observation (`greedy`: the mode), with log-probs.
    pub fn act<R: Rng>(
        &self,
        obs: ArrayView2<'_, f32>,
        with_value: bool,
        greedy: bool,
        rng: &mut R,
    ) -> Sampled {
        let f = self.forward(obs, with_value);
        let value = f.value.map(|v| v.to_vec());
        match &self.log_std {
            None => {
                let mut discrete = Vec::with_capacity(f.head.nrows());
                let mut logp = Vec::with_capacity(f.head.nrows());
                for row in f.head.outer_iter() {
                    let row = row.to_vec();
                    let lse = log_sum_exp(&row);
                    let a = if greedy {
                        argmax(&row)
                    } else {
                        // inverse-CDF sampling from the softmax
                        let u: f32 = rng.random();
                        let mut acc = 0.0f32;
                        let mut pick = row.len() - 1;
                        for (k, &l) in row.iter().enumerate() {
                            acc += (l - lse).exp();
                            if u < acc {
                                pick = k;
                                break;
                            }
                        }
                        pick
                    };
                    discrete.push(a);
                    logp.push(row[a] - lse);
                }
                Sampled {
                    discrete,
                    continuous: Vec::new(),
                    logp,
                    value,
                }
            }
            Some(log_std) => {
                let a = log_std.len();
                let n = f.head.nrows();
                let mut continuous = Vec::with_capacity(n * a);
                let mut logp = Vec::with_capacity(n);
                for row in f.head.outer_iter() {
                    let mut lp = 0.0;
                    for j in 0..a {
                        let x = if greedy {
                            row[j]
                        } else {
                            let z: f32 = rng.sample(StandardNormal);
                            row[j] + log_std[j].exp() * z
                        };
                        lp += gaussian_log_prob(x, row[j], log_std[j]);
                        continuous.push(x);
                    }
                    logp.push(lp);
                }
                Sampled {
                    discrete: Vec::new(),
                    continuous,
                    logp,
                    value,
                }
            }
        }
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (k, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = k;
        }
    }
    best
}

/// Numerically stable log Σ exp.
pub fn log_sum_exp(row: &[f32]) -> f32 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    m + row.iter().map(|&x| (x - m).exp()).sum::<f32>().ln()
}

/// log N(x; μ, σ = exp(log_std)).
pub fn gaussian_log_prob(x: f32, mean: f32, log_std: f32) -> f32 {
    let z = (x - mean) / log_std.exp();
    -0.5 * z * z - log_std - 0.5 * (2.0 * std::f32::consts::PI).ln()
}

/// A published policy: its version and its safetensors bytes, serialized once
/// by the learner and shared by every subscriber (and every actor thread).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub version: u64,
    pub safetensors: bytes::Bytes,
    /// Samples one actor should act with this version (0: no advice; see
    /// `PolicySnapshot.samples_per_version` in the proto).
    pub samples_per_version: u64,
}

/// Host tensors: `(name, shape, values)`.
pub type NamedTensors = Vec<(String, Vec<usize>, Vec<f32>)>;

/// Parses the f32 tensors of safetensors bytes, sorted by name.
pub fn read_safetensors(bytes: &[u8]) -> Result<NamedTensors, PolicyError> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| PolicyError::Format(e.to_string()))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(PolicyError::Dtype(name));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.push((name, view.shape().to_vec(), data));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Serializes f32 tensors `(name, shape, data)` as safetensors, with optional metadata.
pub fn write_safetensors<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a [usize], &'a [f32])>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Vec<u8> {
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .map(|(n, s, d)| {
            (
                n.to_owned(),
                s.to_vec(),
                d.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .expect("shape and byte length agree by construction");
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize(views, metadata).expect("serializing in-memory f32 tensors cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// A tiny hand-made network: obs_dim 2, one hidden layer of 2, 2 actions.
    fn tiny_bytes(space: &Space) -> (ModelSpec, Vec<u8>) {
        let spec = ModelSpec {
            hidden_sizes: vec![2],
            activation: Activation::Relu,
            shared_torso: true,
            init_log_std: 0.0,
            ..Default::default()
        };
        let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![
            (
                "torso.0.weight".into(),
                vec![2, 2],
                vec![1.0, 0.0, 0.0, 1.0],
            ),
            ("torso.0.bias".into(), vec![2], vec![0.0, 0.0]),
            (
                "actor.head.weight".into(),
                vec![2, 2],
                vec![1.0, 0.0, 0.0, 2.0],
            ),
            ("actor.head.bias".into(), vec![2], vec![0.0, 0.0]),
            ("critic.head.weight".into(), vec![1, 2], vec![1.0, 1.0]),
            ("critic.head.bias".into(), vec![1], vec![0.5]),
        ];
        if matches!(space, Space::Box { .. }) {
            tensors.push(("log_std".into(), vec![2], vec![0.0, (2.0f32).ln()]));
        }
        let bytes = write_safetensors(
            tensors
                .iter()
                .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())),
            None,
        );
        (spec, bytes)
    }

    #[test]
    fn hand_worked_forward_pass() {
        let space = Space::Discrete { n: 2 };
        let (spec, bytes) = tiny_bytes(&space);
        let p = CpuPolicy::from_safetensors(&spec, &[2], &space, &bytes).unwrap();
        let obs = ndarray::arr2(&[[1.0f32, -3.0], [0.5, 0.25]]);
        let f = p.forward(obs.view(), true);
        // relu([1,-3]) = [1,0] -> logits [1,0], value 1.5; relu([.5,.25]) -> logits [.5,.5], value 1.25
        assert_eq!(f.head, ndarray::arr2(&[[1.0f32, 0.0], [0.5, 0.5]]));
        assert_eq!(f.value.unwrap().to_vec(), vec![1.5, 1.25]);
        let lp = p.log_prob_discrete(&ndarray::arr2(&[[1.0f32, 0.0], [0.5, 0.5]]), &[0, 1]);
        assert!((lp[0] - (1.0 - (1f32.exp() + 1.0).ln())).abs() < 1e-6);
        assert!((lp[1] - 0.5f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn gaussian_log_prob_matches_the_formula() {
        // x = 1, μ = 0, σ = 2: −ln 2 − ½ ln 2π − 1/8
        let want = -(2.0f32).ln() - 0.5 * (2.0 * std::f32::consts::PI).ln() - 0.125;
        assert!((gaussian_log_prob(1.0, 0.0, 2f32.ln()) - want).abs() < 1e-6);
        let space = Space::uniform_box(-1.0, 1.0, 2);
        let (spec, bytes) = tiny_bytes(&space);
        let p = CpuPolicy::from_safetensors(&spec, &[2], &space, &bytes).unwrap();
        let mean = ndarray::arr2(&[[0.0f32, 0.0]]);
        let lp = p.log_prob_continuous(&mean, &[0.0, 1.0]);
        let want = gaussian_log_prob(0.0, 0.0, 0.0) + want;
        assert!((lp[0] - want).abs() < 1e-6);
    }

    #[test]
    fn sampling_follows_the_softmax_and_greedy_takes_the_mode() {
        let space = Space::Discrete { n: 2 };
        let (spec, bytes) = tiny_bytes(&space);
        let p = CpuPolicy::from_safetensors(&spec, &[2], &space, &bytes).unwrap();
        // obs [2, 0] -> logits [2, 0]: P(action 0) = e²/(e²+1) ≈ 0.8808
        let obs = Array2::from_shape_fn((4000, 2), |(_, j)| if j == 0 { 2.0 } else { 0.0 });
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(1);
        let s = p.act(obs.view(), false, false, &mut rng);
        let frac = s.discrete.iter().filter(|&&a| a == 0).count() as f64 / 4000.0;
        assert!((frac - 0.8808).abs() < 0.02, "{frac}");
        let g = p.act(obs.view(), false, true, &mut rng);
        assert!(g.discrete.iter().all(|&a| a == 0));
        assert!((g.logp[0] - (2.0 - (2f32.exp() + 1.0).ln())).abs() < 1e-6);
    }

    #[test]
    fn loading_rejects_wrong_shapes_and_missing_names() {
        let space = Space::Discrete { n: 3 };
        let (spec, bytes) = tiny_bytes(&Space::Discrete { n: 2 });
        let e = CpuPolicy::from_safetensors(&spec, &[2], &space, &bytes)
            .err()
            .unwrap();
        assert!(
            matches!(e, PolicyError::Shape { ref name, .. } if name == "actor.head.weight"),
            "{e}"
        );
        let e = CpuPolicy::from_safetensors(&spec, &[2], &Space::uniform_box(-1.0, 1.0, 2), &bytes)
            .err()
            .unwrap();
        assert_eq!(e, PolicyError::Missing("log_std".into()));
        assert!(matches!(
            CpuPolicy::from_safetensors(&spec, &[2], &space, b"xx")
                .err()
                .unwrap(),
            PolicyError::Format(_)
        ));
    }

    /// The tiny network with observation statistics appended.
    fn with_statistics(bytes: &[u8], mean: &[f32], var: &[f32]) -> Vec<u8> {
        let mut named = read_safetensors(bytes).unwrap();
        named.push((crate::normalize::MEAN.into(), vec![2], mean.to_vec()));
        named.push((crate::normalize::VAR.into(), vec![2], var.to_vec()));
        write_safetensors(
            named
                .iter()
                .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())),
            None,
        )
    }

    #[test]
    fn snapshot_statistics_normalize_the_raw_observations() {
        let space = Space::Discrete { n: 2 };
        let (plain_spec, plain) = tiny_bytes(&space);
        let spec = ModelSpec {
            normalize_observations: true,
            observation_clip: 3.0,
            ..plain_spec.clone()
        };
        let bytes = with_statistics(&plain, &[1.0, -2.0], &[4.0, 0.25]);
        let p = CpuPolicy::from_safetensors(&spec, &[2], &space, &bytes).unwrap();
        // (5 − 1)/2 = 2; (−1 + 2)/0.5 = 2 → relu → logits [2, 4], value 4.5;
        // (−100 − 1)/2 → −3 (clip) → relu 0; (10 + 2)/0.5 = 24 → 3 (clip)
        let raw = ndarray::arr2(&[[5.0f32, -1.0], [-100.0, 10.0]]);
        let f = p.forward(raw.view(), true);
        assert_eq!(f.head, ndarray::arr2(&[[2.0f32, 4.0], [0.0, 6.0]]));
        assert_eq!(f.value.unwrap().to_vec(), vec![4.5, 3.5]);
        // The same as the plain network fed the normalized observations.
        let plain = CpuPolicy::from_safetensors(&plain_spec, &[2], &space, &plain).unwrap();
        let normalized = ndarray::arr2(&[[2.0f32, 2.0], [-3.0, 3.0]]);
        assert_eq!(plain.forward(normalized.view(), true).head, f.head);
        // A plain run ignores statistics; a normalized one needs both, sound.
        assert!(CpuPolicy::from_safetensors(&plain_spec, &[2], &space, &bytes).is_ok());
        let (_, no_stats) = tiny_bytes(&space);
        assert_eq!(
            CpuPolicy::from_safetensors(&spec, &[2], &space, &no_stats)
                .err()
                .unwrap(),
            PolicyError::Missing("obs_norm.mean".into())
        );
        let negative = with_statistics(&no_stats, &[0.0, 0.0], &[1.0, -0.5]);
        assert_eq!(
            CpuPolicy::from_safetensors(&spec, &[2], &space, &negative)
                .err()
                .unwrap(),
            PolicyError::NegativeVariance("obs_norm.var".into())
        );
    }
}
