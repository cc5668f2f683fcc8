//! The policy network on libtorch, built from the shared [`ModelSpec`].
//!
//! Parameter names and shapes come from [`ModelSpec::parameter_shapes`], the
//! same list the actors' ndarray network loads, so a snapshot written here is
//! read there without any mapping. Initialization follows common PPO practice:
//! orthogonal weights (gain √2 in the torso, 0.01 for the policy head, 1 for
//! the value head), zero biases.
//!
//! All parameters live in one contiguous leaf tensor; each named parameter is
//! a view into it. The optimizer then updates one tensor with a handful of
//! kernels instead of a handful per parameter, and the gradient-norm clip is
//! one reduction: on a small MLP this is what keeps an update as fast as
//! PyTorch's fused multi-tensor Adam.

use flotilla_common::model::{Activation, ModelSpec, ObservationLayout};
use flotilla_common::Space;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_pcg::Pcg64Mcg;
use tch::{Device, Kind, Tensor};

/// Policy and value network.
pub struct Policy {
    /// Every parameter, flattened and concatenated in spec order: the one
    /// trainable leaf.
    flat: Tensor,
    /// Name, shape and offset into `flat` of each parameter, in spec order.
    layout: Vec<(String, Vec<i64>, i64)>,
    spec: ModelSpec,
    obs_dim: usize,
    /// `[C, H, W]` of the image a convolutional torso reads.
    image: Option<[i64; 3]>,
    action_space: Space,
    /// Untracked views into `flat`, for reading and loading.
    params: Vec<(String, Tensor)>,
}

/// Tracked views of a policy's parameters for one forward pass.
struct Views<'a> {
    layout: &'a [(String, Vec<i64>, i64)],
    parts: Vec<Tensor>,
}

impl Views<'_> {
    fn get(&self, name: &str) -> &Tensor {
        // Names are generated from the spec in `new`; a miss is a bug here.
        let i = self
            .layout
            .iter()
            .position(|(n, _, _)| n == name)
            .unwrap_or_else(|| panic!("parameter {name} is part of every policy of this spec"));
        &self.parts[i]
    }
}

/// Errors loading parameters into a policy.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("parameter `{0}` is missing")]
    Missing(String),
    #[error("parameter `{name}` has shape {actual:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<i64>,
        actual: Vec<i64>,
    },
    #[error("parameter `{0}` holds non-finite values")]
    NonFinite(String),
    #[error("normalization statistics: {0}")]
    Statistics(String),
}

impl Policy {
    /// A freshly initialized policy over observations of shape `obs_shape`;
    /// `seed` fixes the initialization.
    ///
    /// # Panics
    ///
    /// If the spec does not fit the observations
    /// ([`ModelSpec::problems_with`] is not empty): check it first.
    pub fn new(
        spec: &ModelSpec,
        obs_shape: &[usize],
        action_space: &Space,
        device: Device,
        seed: u64,
    ) -> Self {
        if let Some((key, msg)) = spec.problems_with(obs_shape).first() {
            panic!("model spec does not fit observations {obs_shape:?}: {key}: {msg}");
        }
        let obs_dim = obs_shape.iter().product();
        let image = spec.is_convolutional().then(|| {
            let [c, h, w] = spec
                .image_shape(obs_shape)
                .expect("problems_with checked the image shape");
            [c as i64, h as i64, w as i64]
        });
        // Initial values come from our own seeded stream, not libtorch's global
        // generator, so a seed fixes the network whatever else the process does.
        let mut rng = Pcg64Mcg::seed_from_u64(seed);
        let shapes = spec.parameter_shapes(obs_shape, action_space);
        let mut inits = Vec::with_capacity(shapes.len());
        let mut layout = Vec::with_capacity(shapes.len());
        let mut offset = 0i64;
        for (name, shape) in &shapes {
            let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            let init = if name == "log_std" {
                Tensor::full(
                    &dims,
                    f64::from(spec.init_log_std),
                    (Kind::Float, Device::Cpu),
                )
            } else if name.ends_with(".bias") {
                Tensor::zeros(&dims, (Kind::Float, Device::Cpu))
            } else {
                let gain = match name.as_str() {
                    "actor.head.weight" => 0.01,
                    "critic.head.weight" => 1.0,
                    _ => std::f64::consts::SQRT_2,
                };
                // A convolution's kernel is orthogonal as a [out, in*k*k]
                // matrix, as torch.nn.init.orthogonal_ treats it.
                let fan_in = shape[1..].iter().product();
                orthogonal(shape[0], fan_in, gain, &mut rng).view(dims.as_slice())
            };
            inits.push(init.flatten(0, -1));
            layout.push((name.clone(), dims.clone(), offset));
            offset += dims.iter().product::<i64>();
        }
        let flat = Tensor::cat(&inits, 0)
            .to_device(device)
            .set_requires_grad(true);
        let params = tch::no_grad(|| {
            layout
                .iter()
                .map(|(n, dims, off)| {
                    let numel: i64 = dims.iter().product();
                    (n.clone(), flat.narrow(0, *off, numel).view(dims.as_slice()))
                })
                .collect()
        });
        Policy {
            flat,
            layout,
            spec: spec.clone(),
            obs_dim,
            image,
            action_space: action_space.clone(),
            params,
        }
    }

    pub fn device(&self) -> Device {
        self.flat.device()
    }

    /// The trainable leaf (all parameters, flattened): what the optimizer updates.
    pub fn trainable(&self) -> Tensor {
        self.flat.shallow_clone()
    }

    /// Splits a tensor laid out like the flat parameters (e.g. an Adam moment)
    /// into named host tensors.
    pub fn split_flat(&self, t: &Tensor) -> NamedTensors {
        let host = tensor_to_vec(t);
        self.layout
            .iter()
            .map(|(n, dims, off)| {
                let numel: i64 = dims.iter().product();
                let data = host[*off as usize..(*off + numel) as usize].to_vec();
                (n.clone(), dims.iter().map(|&d| d as usize).collect(), data)
            })
            .collect()
    }

    /// Joins named host tensors (spec names and shapes, as checked by
    /// [`Self::load_parameters`]) into one flat tensor on the policy's device.
    pub fn join_flat(
        &self,
        named: &[(String, Vec<usize>, Vec<f32>)],
    ) -> Result<Tensor, ModelError> {
        let mut out = Vec::with_capacity(self.flat.numel());
        for (name, dims, _) in &self.layout {
            let (_, shape, data) = named
                .iter()
                .find(|(n, _, _)| n == name)
                .ok_or_else(|| ModelError::Missing(name.clone()))?;
            let actual: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            if &actual != dims || data.len() as i64 != dims.iter().product::<i64>() {
                return Err(ModelError::Shape {
                    name: name.clone(),
                    expected: dims.clone(),
                    actual,
                });
            }
            out.extend_from_slice(data);
        }
        Ok(Tensor::from_slice(&out).to_device(self.device()))
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    pub fn action_space(&self) -> &Space {
        &self.action_space
    }

    pub fn is_continuous(&self) -> bool {
        matches!(self.action_space, Space::Box { .. })
    }

    /// Trainable parameters in spec order.
    pub fn parameters(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// Tracked views of every parameter (gradients flow into `flat`), cut
    /// by one `split_with_sizes`: its backward writes the flat gradient with
    /// one concatenation, where a `narrow` per parameter would scatter a
    /// full-size zero-filled gradient per parameter and add them all up.
    fn views(&self) -> Views<'_> {
        let sizes: Vec<i64> = self
            .layout
            .iter()
            .map(|(_, dims, _)| dims.iter().product())
            .collect();
        let parts = self
            .flat
            .split_with_sizes(sizes.as_slice(), 0)
            .into_iter()
            .zip(&self.layout)
            .map(|(t, (_, dims, _))| t.view(dims.as_slice()))
            .collect();
        Views {
            layout: &self.layout,
            parts,
        }
    }

    /// Observations `[B, obs_dim]` scaled, and for a convolutional torso
    /// viewed as NCHW images.
    fn input(&self, obs: &Tensor) -> Tensor {
        let x = if self.spec.observation_scale == 1.0 {
            obs.shallow_clone()
        } else {
            obs * f64::from(self.spec.observation_scale)
        };
        match (self.image, self.spec.observation_layout) {
            (None, _) => x,
            (Some([c, h, w]), ObservationLayout::Chw) => x.reshape([-1, c, h, w]),
            (Some([c, h, w]), ObservationLayout::Hwc) => {
                x.reshape([-1, h, w, c]).permute([0, 3, 1, 2])
            }
        }
    }

    fn torso(&self, w: &Views<'_>, prefix: &str, input: &Tensor) -> Tensor {
        let mut x = input.shallow_clone();
        if self.image.is_some() {
            for (j, l) in self.spec.conv.iter().enumerate() {
                let s = l.stride as i64;
                x = x
                    .conv2d(
                        w.get(&format!("{prefix}.conv.{j}.weight")),
                        Some(w.get(&format!("{prefix}.conv.{j}.bias"))),
                        [s, s],
                        [0, 0],
                        [1, 1],
                        1,
                    )
                    .relu();
            }
            x = x.flatten(1, -1);
        }
        for i in 0..self.spec.hidden_sizes.len() {
            x = x.linear(
                w.get(&format!("{prefix}.{i}.weight")),
                Some(w.get(&format!("{prefix}.{i}.bias"))),
            );
            x = match self.spec.activation {
                Activation::Tanh => x.tanh(),
                Activation::Relu => x.relu(),
            };
        }
        x
    }

    /// Policy-head output (logits for Discrete, Gaussian means for Box), `[B, A]`,
    /// and values `[B]`, for observations `[B, obs_dim]`.
    pub fn forward(&self, obs: &Tensor) -> (Tensor, Tensor) {
        let (out, v, _) = self.forward_all(obs);
        (out, v)
    }

    /// [`Self::forward`] plus the log standard deviation (Box actions), all
    /// from one set of views, so the backward pass meets one split.
    pub fn forward_all(&self, obs: &Tensor) -> (Tensor, Tensor, Option<Tensor>) {
        let w = self.views();
        let obs = &self.input(obs);
        let (a, c) = if self.spec.shared_torso {
            let h = self.torso(&w, "torso", obs);
            (h.shallow_clone(), h)
        } else {
            (self.torso(&w, "actor", obs), self.torso(&w, "critic", obs))
        };
        let out = a.linear(w.get("actor.head.weight"), Some(w.get("actor.head.bias")));
        let v = c
            .linear(w.get("critic.head.weight"), Some(w.get("critic.head.bias")))
            .squeeze_dim(-1);
        let log_std = self
            .is_continuous()
            .then(|| w.get("log_std").shallow_clone());
        (out, v, log_std)
    }

    /// Values `[B]` only.
    pub fn value(&self, obs: &Tensor) -> Tensor {
        let w = self.views();
        let obs = &self.input(obs);
        let c = if self.spec.shared_torso {
            self.torso(&w, "torso", obs)
        } else {
            self.torso(&w, "critic", obs)
        };
        c.linear(w.get("critic.head.weight"), Some(w.get("critic.head.bias")))
            .squeeze_dim(-1)
    }

    /// The state-independent log standard deviation `[A]` (Box actions only).
    pub fn log_std(&self) -> Option<Tensor> {
        self.is_continuous()
            .then(|| self.views().get("log_std").shallow_clone())
    }

    /// Current parameters as host f32 vectors, in spec order.
    pub fn host_parameters(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.params
            .iter()
            .map(|(n, t)| {
                let shape = t.size().iter().map(|&d| d as usize).collect();
                let data = tensor_to_vec(t);
                (n.clone(), shape, data)
            })
            .collect()
    }

    /// The parameters alone as a safetensors file (f32, spec names). A
    /// snapshot is [`crate::train::learn::Learning::snapshot`]: these plus
    /// the observation statistics of a normalizing run.
    pub fn to_safetensors(&self) -> Vec<u8> {
        let host = self.host_parameters();
        write_safetensors(
            host.iter()
                .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())),
            None,
        )
    }

    /// Copies named host parameters into this policy after checking every
    /// name, shape and value.
    pub fn load_parameters(
        &mut self,
        named: &[(String, Vec<usize>, Vec<f32>)],
    ) -> Result<(), ModelError> {
        let mut staged = Vec::with_capacity(self.params.len());
        for (name, t) in &self.params {
            let (_, shape, data) = named
                .iter()
                .find(|(n, _, _)| n == name)
                .ok_or_else(|| ModelError::Missing(name.clone()))?;
            let expected = t.size();
            let actual: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
            if expected != actual || data.len() != t.numel() {
                return Err(ModelError::Shape {
                    name: name.clone(),
                    expected,
                    actual,
                });
            }
            if data.iter().any(|x| !x.is_finite()) {
                return Err(ModelError::NonFinite(name.clone()));
            }
            staged.push(
                Tensor::from_slice(data)
                    .reshape(&expected)
                    .to_device(self.device()),
            );
        }
        tch::no_grad(|| {
            for ((_, t), src) in self.params.iter_mut().zip(&staged) {
                t.copy_(src);
            }
        });
        Ok(())
    }
}

/// A `[rows, cols]` matrix with orthonormal rows or columns, times `gain`
/// (Saxe et al. 2014; the construction of `torch.nn.init.orthogonal_`: QR of
/// a Gaussian matrix, signs fixed by R's diagonal).
fn orthogonal(rows: usize, cols: usize, gain: f64, rng: &mut Pcg64Mcg) -> Tensor {
    let (r, c) = if rows < cols {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let normal: Vec<f32> = (0..r * c)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    let a = Tensor::from_slice(&normal)
        .reshape([r as i64, c as i64])
        .to_kind(Kind::Double);
    let (q, rr) = Tensor::linalg_qr(&a, "reduced");
    let q = q * rr.diagonal(0, 0, 1).sign().unsqueeze(0);
    let q = if rows < cols { q.tr() } else { q };
    (q * gain).to_kind(Kind::Float).contiguous()
}

/// Copies a tensor to a host `Vec<f32>` (any device, any float kind).
pub fn tensor_to_vec(t: &Tensor) -> Vec<f32> {
    let flat = t
        .detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .flatten(0, -1)
        .contiguous();
    // A contiguous f32 CPU tensor always converts.
    Vec::<f32>::try_from(&flat).expect("contiguous f32 CPU tensor converts to Vec<f32>")
}

/// Safetensors reading and writing, shared with the actor side.
pub use flotilla_common::policy::{read_safetensors, write_safetensors, NamedTensors};

#[cfg(test)]
mod tests {
    use super::*;

    fn cartpole_policy(seed: u64) -> Policy {
        Policy::new(
            &ModelSpec::default(),
            &[4],
            &Space::Discrete { n: 2 },
            Device::Cpu,
            seed,
        )
    }

    #[test]
    fn shapes_follow_the_spec() {
        let p = cartpole_policy(0);
        let obs = Tensor::zeros([5, 4], (Kind::Float, Device::Cpu));
        let (logits, v) = p.forward(&obs);
        assert_eq!(logits.size(), [5, 2]);
        assert_eq!(v.size(), [5]);
        assert_eq!(p.value(&obs).size(), [5]);
        let names: Vec<_> = p.parameters().iter().map(|(n, _)| n.clone()).collect();
        let spec_names: Vec<_> = ModelSpec::default()
            .parameter_shapes(&[4], &Space::Discrete { n: 2 })
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, spec_names);
    }

    #[test]
    fn initialization_is_orthogonal_and_seeded() {
        let p = cartpole_policy(3);
        let w = &p.parameters()[2].1; // actor.1.weight [64, 64], gain sqrt(2)
        let wwt = w.matmul(&w.tr()) / 2.0;
        let eye = Tensor::eye(64, (Kind::Float, Device::Cpu));
        assert!((wwt - eye).abs().max().double_value(&[]) < 1e-4);
        assert!(p.to_safetensors() == cartpole_policy(3).to_safetensors());
        assert!(p.to_safetensors() != cartpole_policy(4).to_safetensors());
        // [2, 64] head: orthonormal rows times 0.01
        let h = &p.parameters()[8].1;
        let hht = h.matmul(&h.tr()) / 1e-4;
        assert!(
            (hht - Tensor::eye(2, (Kind::Float, Device::Cpu)))
                .abs()
                .max()
                .double_value(&[])
                < 1e-3
        );
    }

    #[test]
    fn safetensors_round_trip_into_another_policy() {
        let a = cartpole_policy(1);
        let mut b = cartpole_policy(2);
        let named = read_safetensors(&a.to_safetensors()).unwrap();
        b.load_parameters(&named).unwrap();
        let obs = Tensor::randn([7, 4], (Kind::Float, Device::Cpu));
        let (la, va) = a.forward(&obs);
        let (lb, vb) = b.forward(&obs);
        assert!(la.equal(&lb) && va.equal(&vb));
    }

    #[test]
    fn loading_checks_names_shapes_and_values() {
        let mut p = cartpole_policy(1);
        let mut named = read_safetensors(&p.to_safetensors()).unwrap();
        named.retain(|(n, _, _)| n != "critic.head.bias");
        assert!(
            matches!(p.load_parameters(&named), Err(ModelError::Missing(n)) if n == "critic.head.bias")
        );
        let mut named = read_safetensors(&p.to_safetensors()).unwrap();
        named[0].1 = vec![4, 64];
        assert!(matches!(
            p.load_parameters(&named),
            Err(ModelError::Shape { .. })
        ));
        let mut named = read_safetensors(&p.to_safetensors()).unwrap();
        named[0].2[0] = f32::NAN;
        assert!(matches!(
            p.load_parameters(&named),
            Err(ModelError::NonFinite(_))
        ));
        assert!(read_safetensors(b"not a safetensors file").is_err());
    }

    #[test]
    fn nature_cnn_reads_frame_stacks_and_trains_its_kernels() {
        let p = Policy::new(
            &ModelSpec::nature(),
            &[4, 84, 84],
            &Space::Discrete { n: 6 },
            Device::Cpu,
            0,
        );
        let shapes: Vec<_> = p
            .parameters()
            .iter()
            .map(|(n, t)| (n.clone(), t.size()))
            .collect();
        assert_eq!(shapes[0], ("torso.conv.0.weight".into(), vec![32, 4, 8, 8]));
        assert_eq!(
            shapes[4],
            ("torso.conv.2.weight".into(), vec![64, 64, 3, 3])
        );
        assert_eq!(shapes[6], ("torso.0.weight".into(), vec![512, 3136]));
        // Kernels are orthogonal as [out, in*k*k] matrices, gain sqrt(2).
        let k = p.parameters()[0].1.view([32, 256]);
        let kkt = k.matmul(&k.tr()) / 2.0;
        assert!(
            (kkt - Tensor::eye(32, (Kind::Float, Device::Cpu)))
                .abs()
                .max()
                .double_value(&[])
                < 1e-4
        );
        let obs = Tensor::randint(256, [3, 4 * 84 * 84], (Kind::Float, Device::Cpu));
        let (logits, v) = p.forward(&obs);
        assert_eq!((logits.size(), v.size()), (vec![3, 6], vec![3]));
        // Gradients reach the first kernel.
        v.sum(Kind::Float).backward();
        let g = p.trainable().grad();
        assert!(
            g.narrow(0, 0, 32 * 4 * 8 * 8)
                .abs()
                .sum(Kind::Float)
                .double_value(&[])
                > 0.0
        );
    }

    #[test]
    #[should_panic(expected = "model.conv")]
    fn a_kernel_larger_than_the_image_is_refused() {
        Policy::new(
            &ModelSpec::nature(),
            &[4, 20, 20],
            &Space::Discrete { n: 2 },
            Device::Cpu,
            0,
        );
    }

    #[test]
    fn gaussian_policy_has_log_std_at_its_initial_value() {
        let spec = ModelSpec {
            init_log_std: -0.5,
            shared_torso: true,
            ..Default::default()
        };
        let p = Policy::new(
            &spec,
            &[3],
            &Space::uniform_box(-2.0, 2.0, 1),
            Device::Cpu,
            0,
        );
        assert_eq!(tensor_to_vec(&p.log_std().unwrap()), vec![-0.5]);
        let (mean, v) = p.forward(&Tensor::ones([2, 3], (Kind::Float, Device::Cpu)));
        assert_eq!((mean.size(), v.size()), (vec![2, 1], vec![2]));
    }
}
