//! The policy network's specification, shared by the learner (libtorch) and
//! the actors (ndarray), and the one place where parameter names and shapes
//! are decided.
//!
//! Layout (all linear layers are `y = x Wᵀ + b`, `W` of shape `[out, in]`):
//!
//! | torso | parameters |
//! | --- | --- |
//! | separate (default) | `actor.{i}.weight/bias`, `critic.{i}.weight/bias` for each hidden layer `i` |
//! | shared | `torso.{i}.weight/bias` |
//!
//! With a convolutional torso (`conv` not empty) each torso starts with its
//! convolutions, `{torso}.conv.{j}.weight` (`[out_channels, in_channels, k, k]`)
//! and `{torso}.conv.{j}.bias`, each followed by a ReLU; their output is
//! flattened in channel, row, column order (PyTorch's `flatten(1)`) and feeds
//! the hidden layers above. The observation is an image: its shape is read as
//! `[C, H, W]` (`observation_layout = "chw"`, the default and the layout of
//! Gymnasium's frame stacks) or `[H, W, C]` (`"hwc"`, the layout of rendered
//! RGB frames); a two-dimensional `[H, W]` observation is one channel. The
//! network first multiplies observations by `observation_scale` (1/255 for
//! u8 pixels).
//!
//! Heads: `actor.head.weight/bias` (`[A, h]`: logits for `Discrete(A)`, the
//! Gaussian mean for a `Box` of `A` dims), `critic.head.weight/bias` (`[1, h]`),
//! and `log_std` (`[A]`, state-independent) for `Box` actions only.
//!
//! With `normalize_observations` a snapshot also carries the observation
//! statistics `obs_norm.mean` and `obs_norm.var` (`[obs_dim]`, see
//! [`crate::normalize`]); they are not trained, so they are not parameters.

use serde::{Deserialize, Serialize};

use crate::proto;
use crate::space::{Dtype, Space};

/// Hidden-layer nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Tanh,
    Relu,
}

/// One convolution of a convolutional torso: `channels` output channels, a
/// square `kernel` x `kernel` window moved by `stride`, no padding (PyTorch's
/// `nn.Conv2d(in, channels, kernel, stride)`), then a ReLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvLayer {
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
}

/// The convolutions of the Nature DQN torso (Mnih et al. 2015), which
/// `[model] preset = "nature"` selects together with one hidden layer of
/// 512 ReLU units, a shared torso and inputs scaled by 1/255.
pub const NATURE_CONV: [ConvLayer; 3] = [
    ConvLayer {
        channels: 32,
        kernel: 8,
        stride: 4,
    },
    ConvLayer {
        channels: 64,
        kernel: 4,
        stride: 2,
    },
    ConvLayer {
        channels: 64,
        kernel: 3,
        stride: 1,
    },
];

/// How an image observation's axes are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ObservationLayout {
    /// `[channels, height, width]`.
    #[default]
    Chw,
    /// `[height, width, channels]`.
    Hwc,
}

/// The network architecture as configured (`[model]` in a run config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSpec {
    pub hidden_sizes: Vec<usize>,
    pub activation: Activation,
    /// One torso for both heads instead of separate actor and critic torsos.
    pub shared_torso: bool,
    /// Initial log standard deviation of the Gaussian policy (Box actions).
    pub init_log_std: f32,
    /// Normalize observations by the learner's running mean and variance
    /// before the network (see [`crate::normalize`]).
    pub normalize_observations: bool,
    /// Clip of normalized observations.
    pub observation_clip: f32,
    /// Convolutions at the start of each torso (empty: an MLP).
    pub conv: Vec<ConvLayer>,
    /// Axis order of image observations (convolutional torsos only).
    pub observation_layout: ObservationLayout,
    /// Factor applied to observations first thing in the network (after
    /// normalization, when that is on): 1/255 maps u8 pixels to [0, 1].
    pub observation_scale: f32,
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            hidden_sizes: vec![64, 64],
            activation: Activation::Tanh,
            shared_torso: false,
            init_log_std: 0.0,
            normalize_observations: false,
            observation_clip: 10.0,
            conv: Vec::new(),
            observation_layout: ObservationLayout::Chw,
            observation_scale: 1.0,
        }
    }
}

impl ModelSpec {
    /// The Nature DQN network (`[model] preset = "nature"`): [`NATURE_CONV`],
    /// one hidden layer of 512 ReLU units, one torso for both heads, inputs
    /// scaled by 1/255.
    pub fn nature() -> Self {
        ModelSpec {
            conv: NATURE_CONV.to_vec(),
            hidden_sizes: vec![512],
            activation: Activation::Relu,
            shared_torso: true,
            observation_scale: 1.0 / 255.0,
            ..Default::default()
        }
    }
}

/// Largest hidden layer accepted from configs and the wire.
pub const MAX_HIDDEN: usize = 8192;
/// Most hidden layers accepted (and most convolutions).
pub const MAX_LAYERS: usize = 16;
/// Most output channels of one convolution.
pub const MAX_CHANNELS: usize = 1024;
/// Largest convolution kernel side and stride.
pub const MAX_KERNEL: usize = 32;

impl ModelSpec {
    /// Problems with the spec, as `(key, message)` pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.hidden_sizes.is_empty() || self.hidden_sizes.len() > MAX_LAYERS {
            p.push((
                "model.hidden_sizes",
                format!(
                    "must list 1 to {MAX_LAYERS} layer sizes, got {}",
                    self.hidden_sizes.len()
                ),
            ));
        }
        if let Some(h) = self
            .hidden_sizes
            .iter()
            .find(|&&h| h == 0 || h > MAX_HIDDEN)
        {
            p.push((
                "model.hidden_sizes",
                format!("every size must be in 1..={MAX_HIDDEN}, got {h}"),
            ));
        }
        if !self.init_log_std.is_finite() || self.init_log_std.abs() > 20.0 {
            p.push((
                "model.init_log_std",
                format!("must be finite and within ±20, got {}", self.init_log_std),
            ));
        }
        if self.normalize_observations
            && !(self.observation_clip.is_finite() && self.observation_clip > 0.0)
        {
            p.push((
                "model.observation_clip",
                format!("must be finite and above 0, got {}", self.observation_clip),
            ));
        }
        if self.conv.len() > MAX_LAYERS {
            p.push((
                "model.conv",
                format!(
                    "must list at most {MAX_LAYERS} convolutions, got {}",
                    self.conv.len()
                ),
            ));
        }
        if let Some((j, l)) = self.conv.iter().enumerate().find(|(_, l)| {
            !(1..=MAX_CHANNELS).contains(&l.channels)
                || !(1..=MAX_KERNEL).contains(&l.kernel)
                || !(1..=MAX_KERNEL).contains(&l.stride)
        }) {
            p.push((
                "model.conv",
                format!(
                    "convolution {j} has channels {}, kernel {}, stride {}: channels must be in 1..={MAX_CHANNELS}, kernel and stride in 1..={MAX_KERNEL}",
                    l.channels, l.kernel, l.stride
                ),
            ));
        }
        if !(self.observation_scale.is_finite() && self.observation_scale > 0.0) {
            p.push((
                "model.observation_scale",
                format!("must be finite and above 0, got {}", self.observation_scale),
            ));
        }
        p
    }

    /// Whether the torso starts with convolutions.
    pub fn is_convolutional(&self) -> bool {
        !self.conv.is_empty()
    }

    /// The image `[C, H, W]` a convolutional torso reads from observations
    /// of shape `obs_shape`, per [`Self::observation_layout`].
    pub fn image_shape(&self, obs_shape: &[usize]) -> Result<[usize; 3], String> {
        match (obs_shape, self.observation_layout) {
            (&[h, w], _) => Ok([1, h, w]),
            (&[c, h, w], ObservationLayout::Chw) => Ok([c, h, w]),
            (&[h, w, c], ObservationLayout::Hwc) => Ok([c, h, w]),
            _ => Err(format!(
                "a convolutional torso needs image observations of 2 or 3 dimensions, the observation space has shape {obs_shape:?}"
            )),
        }
    }

    /// The `[C, H, W]` shape after each convolution for observations of
    /// shape `obs_shape`, or why they do not fit (an image smaller than a
    /// kernel), naming the key.
    pub fn conv_shapes(&self, obs_shape: &[usize]) -> Result<Vec<[usize; 3]>, (String, String)> {
        let key = |k: &str| k.to_owned();
        let [mut c, mut h, mut w] = self
            .image_shape(obs_shape)
            .map_err(|m| (key("model.conv"), m))?;
        let mut out = Vec::with_capacity(self.conv.len());
        for (j, l) in self.conv.iter().enumerate() {
            if h < l.kernel || w < l.kernel || l.stride == 0 {
                return Err((
                    key("model.conv"),
                    format!(
                        "convolution {j} ({}x{} kernel) does not fit its {c}x{h}x{w} input (observations of shape {obs_shape:?})",
                        l.kernel, l.kernel
                    ),
                ));
            }
            (c, h, w) = (
                l.channels,
                (h - l.kernel) / l.stride + 1,
                (w - l.kernel) / l.stride + 1,
            );
            out.push([c, h, w]);
        }
        Ok(out)
    }

    /// Problems of this spec with observations of shape `obs_shape` (a
    /// convolutional torso needs an image its kernels fit), as
    /// `(key, message)`; [`Self::problems`] first.
    pub fn problems_with(&self, obs_shape: &[usize]) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = self
            .problems()
            .into_iter()
            .map(|(k, m)| (k.to_owned(), m))
            .collect();
        if p.is_empty() && self.is_convolutional() {
            if let Err(e) = self.conv_shapes(obs_shape) {
                p.push(e);
            }
        }
        p
    }

    /// Inputs of the first hidden layer: the flattened output of the last
    /// convolution, or the observation's size.
    fn torso_features(&self, obs_shape: &[usize]) -> usize {
        match self.conv_shapes(obs_shape) {
            Ok(shapes) => shapes
                .last()
                .map_or_else(|| obs_shape.iter().product(), |s| s.iter().product()),
            // Callers check `problems_with` first; keep the shapes well defined.
            Err(_) => obs_shape.iter().product(),
        }
    }

    /// Every parameter's name and shape, in a fixed order, for a policy over
    /// observations of shape `obs_shape` and `action_space`. For a
    /// convolutional spec whose kernels do not fit the observations
    /// ([`Self::problems_with`] says so) the convolutions are listed but the
    /// first hidden layer reads the raw observation.
    pub fn parameter_shapes(
        &self,
        obs_shape: &[usize],
        action_space: &Space,
    ) -> Vec<(String, Vec<usize>)> {
        let act_dim = action_outputs(action_space);
        let mut out = Vec::new();
        let torsos: &[&str] = if self.shared_torso {
            &["torso"]
        } else {
            &["actor", "critic"]
        };
        let features = self.torso_features(obs_shape);
        let image_channels = self.image_shape(obs_shape).map_or(1, |[c, _, _]| c);
        for torso in torsos {
            let mut channels = image_channels;
            for (j, l) in self.conv.iter().enumerate() {
                out.push((
                    format!("{torso}.conv.{j}.weight"),
                    vec![l.channels, channels, l.kernel, l.kernel],
                ));
                out.push((format!("{torso}.conv.{j}.bias"), vec![l.channels]));
                channels = l.channels;
            }
            let mut input = features;
            for (i, &h) in self.hidden_sizes.iter().enumerate() {
                out.push((format!("{torso}.{i}.weight"), vec![h, input]));
                out.push((format!("{torso}.{i}.bias"), vec![h]));
                input = h;
            }
        }
        let last = self.hidden_sizes.last().copied().unwrap_or(features);
        out.push(("actor.head.weight".into(), vec![act_dim, last]));
        out.push(("actor.head.bias".into(), vec![act_dim]));
        out.push(("critic.head.weight".into(), vec![1, last]));
        out.push(("critic.head.bias".into(), vec![1]));
        if matches!(action_space, Space::Box { .. }) {
            out.push(("log_std".into(), vec![act_dim]));
        }
        out
    }
}

impl ModelSpec {
    /// Names and shapes of the observation statistics a snapshot carries
    /// (none without `normalize_observations`).
    pub fn statistics_shapes(&self, obs_dim: usize) -> Vec<(String, Vec<usize>)> {
        if !self.normalize_observations {
            return Vec::new();
        }
        vec![
            (crate::normalize::MEAN.to_owned(), vec![obs_dim]),
            (crate::normalize::VAR.to_owned(), vec![obs_dim]),
        ]
    }
}

/// Number of policy-head outputs: logits for `Discrete`, means for `Box`.
pub fn action_outputs(space: &Space) -> usize {
    match space {
        Space::Discrete { n } => *n,
        Space::Box { .. } => space.flat_dim(),
    }
}

impl From<&ModelSpec> for proto::ModelSpec {
    fn from(m: &ModelSpec) -> Self {
        proto::ModelSpec {
            hidden_sizes: m.hidden_sizes.iter().map(|&h| h as u32).collect(),
            activation: match m.activation {
                Activation::Tanh => proto::Activation::Tanh,
                Activation::Relu => proto::Activation::Relu,
            } as i32,
            shared_torso: m.shared_torso,
            init_log_std: m.init_log_std,
            normalize_observations: m.normalize_observations,
            observation_clip: m.observation_clip,
            conv: m
                .conv
                .iter()
                .map(|l| proto::ConvLayer {
                    channels: l.channels as u32,
                    kernel: l.kernel as u32,
                    stride: l.stride as u32,
                })
                .collect(),
            observation_layout: match m.observation_layout {
                ObservationLayout::Chw => proto::ObservationLayout::Chw,
                ObservationLayout::Hwc => proto::ObservationLayout::Hwc,
            } as i32,
            observation_scale: m.observation_scale,
        }
    }
}

impl TryFrom<&proto::ModelSpec> for ModelSpec {
    type Error = String;

    fn try_from(m: &proto::ModelSpec) -> Result<Self, String> {
        let activation = match proto::Activation::try_from(m.activation) {
            Ok(proto::Activation::Tanh) => Activation::Tanh,
            Ok(proto::Activation::Relu) => Activation::Relu,
            _ => {
                return Err(format!(
                    "field `model.activation`: unknown value {}",
                    m.activation
                ))
            }
        };
        let observation_layout = match proto::ObservationLayout::try_from(m.observation_layout) {
            Ok(proto::ObservationLayout::Chw) => ObservationLayout::Chw,
            Ok(proto::ObservationLayout::Hwc) => ObservationLayout::Hwc,
            Err(_) => {
                return Err(format!(
                    "field `model.observation_layout`: unknown value {}",
                    m.observation_layout
                ))
            }
        };
        let spec = ModelSpec {
            hidden_sizes: m.hidden_sizes.iter().map(|&h| h as usize).collect(),
            activation,
            shared_torso: m.shared_torso,
            init_log_std: m.init_log_std,
            normalize_observations: m.normalize_observations,
            observation_clip: m.observation_clip,
            conv: m
                .conv
                .iter()
                .map(|l| ConvLayer {
                    channels: l.channels as usize,
                    kernel: l.kernel as usize,
                    stride: l.stride as usize,
                })
                .collect(),
            observation_layout,
            observation_scale: m.observation_scale,
        };
        match spec.problems().first() {
            Some((key, msg)) => Err(format!("field `{key}`: {msg}")),
            None => Ok(spec),
        }
    }
}

impl From<&Space> for proto::Space {
    fn from(s: &Space) -> Self {
        let kind = match s {
            Space::Discrete { n } => {
                proto::space::Kind::Discrete(proto::DiscreteSpace { n: *n as u32 })
            }
            Space::Box {
                low,
                high,
                shape,
                dtype,
            } => proto::space::Kind::Box(proto::BoxSpace {
                low: low.clone(),
                high: high.clone(),
                shape: shape.iter().map(|&d| d as u32).collect(),
                dtype: proto::Dtype::from(*dtype).into(),
            }),
        };
        proto::Space { kind: Some(kind) }
    }
}

impl From<Dtype> for proto::Dtype {
    fn from(d: Dtype) -> Self {
        match d {
            Dtype::Float32 => proto::Dtype::Float32,
            Dtype::Uint8 => proto::Dtype::Uint8,
        }
    }
}

impl From<proto::Dtype> for Dtype {
    fn from(d: proto::Dtype) -> Self {
        match d {
            proto::Dtype::Float32 => Dtype::Float32,
            proto::Dtype::Uint8 => Dtype::Uint8,
        }
    }
}

impl TryFrom<&proto::Space> for Space {
    type Error = String;

    fn try_from(s: &proto::Space) -> Result<Self, String> {
        match &s.kind {
            Some(proto::space::Kind::Discrete(d)) if d.n > 0 => {
                Ok(Space::Discrete { n: d.n as usize })
            }
            Some(proto::space::Kind::Discrete(_)) => Err("discrete space with n = 0".into()),
            Some(proto::space::Kind::Box(b)) => {
                let size = b
                    .shape
                    .iter()
                    .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
                let Some(size) = size.filter(|&s| s > 0) else {
                    return Err(format!("box space shape {:?} has no size", b.shape));
                };
                if b.shape.is_empty() || size != b.low.len() || size != b.high.len() {
                    return Err(format!(
                        "box space shape {:?} does not match {} low and {} high bounds",
                        b.shape,
                        b.low.len(),
                        b.high.len()
                    ));
                }
                let dtype = proto::Dtype::try_from(b.dtype)
                    .map_err(|_| format!("box space dtype {} is unknown", b.dtype))?;
                Ok(Space::Box {
                    low: b.low.clone(),
                    high: b.high.clone(),
                    shape: b.shape.iter().map(|&d| d as usize).collect(),
                    dtype: dtype.into(),
                })
            }
            None => Err("space has no kind".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separate_torsos_name_every_parameter() {
        let spec = ModelSpec::default();
        let names: Vec<_> = spec
            .parameter_shapes(&[4], &Space::Discrete { n: 2 })
            .into_iter()
            .map(|(n, s)| format!("{n}{s:?}"))
            .collect();
        assert_eq!(
            names,
            [
                "actor.0.weight[64, 4]",
                "actor.0.bias[64]",
                "actor.1.weight[64, 64]",
                "actor.1.bias[64]",
                "critic.0.weight[64, 4]",
                "critic.0.bias[64]",
                "critic.1.weight[64, 64]",
                "critic.1.bias[64]",
                "actor.head.weight[2, 64]",
                "actor.head.bias[2]",
                "critic.head.weight[1, 64]",
                "critic.head.bias[1]",
            ]
        );
    }

    #[test]
    fn shared_torso_and_gaussian_head() {
        let spec = ModelSpec {
            hidden_sizes: vec![32],
            shared_torso: true,
            ..Default::default()
        };
        let shapes = spec.parameter_shapes(&[3], &Space::uniform_box(-2.0, 2.0, 1));
        let names: Vec<_> = shapes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "torso.0.weight",
                "torso.0.bias",
                "actor.head.weight",
                "actor.head.bias",
                "critic.head.weight",
                "critic.head.bias",
                "log_std"
            ]
        );
        assert_eq!(shapes[6].1, vec![1]);
    }

    #[test]
    fn nature_torso_names_and_shapes() {
        let shapes = ModelSpec::nature().parameter_shapes(&[4, 84, 84], &Space::Discrete { n: 6 });
        let got: Vec<_> = shapes.iter().map(|(n, s)| format!("{n}{s:?}")).collect();
        assert_eq!(
            got,
            [
                "torso.conv.0.weight[32, 4, 8, 8]",
                "torso.conv.0.bias[32]",
                "torso.conv.1.weight[64, 32, 4, 4]",
                "torso.conv.1.bias[64]",
                "torso.conv.2.weight[64, 64, 3, 3]",
                "torso.conv.2.bias[64]",
                "torso.0.weight[512, 3136]",
                "torso.0.bias[512]",
                "actor.head.weight[6, 512]",
                "actor.head.bias[6]",
                "critic.head.weight[1, 512]",
                "critic.head.bias[1]",
            ]
        );
        assert_eq!(
            ModelSpec::nature().conv_shapes(&[4, 84, 84]).unwrap(),
            [[32, 20, 20], [64, 9, 9], [64, 7, 7]]
        );
    }

    #[test]
    fn image_layouts_and_fit() {
        let mut spec = ModelSpec {
            conv: vec![ConvLayer {
                channels: 2,
                kernel: 3,
                stride: 2,
            }],
            ..Default::default()
        };
        assert_eq!(spec.image_shape(&[5, 7]).unwrap(), [1, 5, 7]);
        assert_eq!(spec.image_shape(&[3, 5, 7]).unwrap(), [3, 5, 7]);
        assert!(spec.image_shape(&[35]).is_err());
        spec.observation_layout = ObservationLayout::Hwc;
        assert_eq!(spec.image_shape(&[5, 7, 3]).unwrap(), [3, 5, 7]);
        // (5 - 3) / 2 + 1 = 2 rows, (7 - 3) / 2 + 1 = 3 columns
        assert_eq!(spec.conv_shapes(&[5, 7, 3]).unwrap(), [[2, 2, 3]]);
        let shapes = spec.parameter_shapes(&[5, 7, 3], &Space::Discrete { n: 2 });
        assert_eq!(shapes[0], ("actor.conv.0.weight".into(), vec![2, 3, 3, 3]));
        assert_eq!(shapes[2], ("actor.0.weight".into(), vec![64, 12]));
        assert_eq!(shapes[6], ("critic.conv.0.weight".into(), vec![2, 3, 3, 3]));
        let keys = |p: Vec<(String, String)>| p.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys(spec.problems_with(&[2, 7, 3])), ["model.conv"]);
        assert_eq!(keys(spec.problems_with(&[12])), ["model.conv"]);
        assert!(spec.problems_with(&[3, 3, 1]).is_empty());
        assert!(ModelSpec::default().problems_with(&[12]).is_empty());
    }

    #[test]
    fn spec_and_spaces_round_trip_through_proto() {
        let spec = ModelSpec {
            hidden_sizes: vec![8, 16],
            activation: Activation::Relu,
            shared_torso: true,
            init_log_std: -0.5,
            normalize_observations: true,
            observation_clip: 5.0,
            conv: NATURE_CONV.to_vec(),
            observation_layout: ObservationLayout::Hwc,
            observation_scale: 0.25,
        };
        assert_eq!(
            ModelSpec::try_from(&proto::ModelSpec::from(&spec)).unwrap(),
            spec
        );
        let unscaled = proto::ModelSpec {
            observation_scale: 0.0,
            ..proto::ModelSpec::from(&spec)
        };
        assert!(ModelSpec::try_from(&unscaled)
            .unwrap_err()
            .contains("model.observation_scale"));
        for s in [
            Space::Discrete { n: 3 },
            Space::bounded_box(vec![-1.0, 0.0], vec![1.0, 2.0]),
            Space::pixels(vec![2, 3, 1]),
        ] {
            assert_eq!(Space::try_from(&proto::Space::from(&s)).unwrap(), s);
        }
        let mut unknown = proto::Space::from(&Space::pixels(vec![1]));
        if let Some(proto::space::Kind::Box(b)) = &mut unknown.kind {
            b.dtype = 7;
        }
        let e = Space::try_from(&unknown).unwrap_err();
        assert_eq!(e, "box space dtype 7 is unknown");
    }

    #[test]
    fn bad_specs_name_the_key() {
        let bad = ModelSpec {
            hidden_sizes: vec![],
            init_log_std: f32::NAN,
            ..Default::default()
        };
        let keys: Vec<_> = bad.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["model.hidden_sizes", "model.init_log_std"]);
        let unclipped = ModelSpec {
            normalize_observations: true,
            observation_clip: 0.0,
            ..Default::default()
        };
        let keys: Vec<_> = unclipped.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["model.observation_clip"]);
        let wire = proto::ModelSpec {
            hidden_sizes: vec![0],
            activation: 1,
            ..Default::default()
        };
        assert!(ModelSpec::try_from(&wire)
            .unwrap_err()
            .contains("model.hidden_sizes"));
    }
}
