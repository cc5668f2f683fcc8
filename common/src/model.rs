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
//! Heads: `actor.head.weight/bias` (`[A, h]`: logits for `Discrete(A)`, the
//! Gaussian mean for a `Box` of `A` dims), `critic.head.weight/bias` (`[1, h]`),
//! and `log_std` (`[A]`, state-independent) for `Box` actions only.
//!
//! With `normalize_observations` a snapshot also carries the observation
//! statistics `obs_norm.mean` and `obs_norm.var` (`[obs_dim]`, see
//! [`crate::normalize`]); they are not trained, so they are not parameters.

use serde::{Deserialize, Serialize};

use crate::proto;
use crate::space::Space;

/// Hidden-layer nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Tanh,
    Relu,
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
        }
    }
}

/// Largest hidden layer accepted from configs and the wire.
pub const MAX_HIDDEN: usize = 8192;
/// Most hidden layers accepted.
pub const MAX_LAYERS: usize = 16;

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
        p
    }

    /// Every parameter's name and shape, in a fixed order, for a policy over
    /// `obs_dim` observations and `action_space`.
    pub fn parameter_shapes(
        &self,
        obs_dim: usize,
        action_space: &Space,
    ) -> Vec<(String, Vec<usize>)> {
        let act_dim = action_outputs(action_space);
        let mut out = Vec::new();
        let torsos: &[&str] = if self.shared_torso {
            &["torso"]
        } else {
            &["actor", "critic"]
        };
        for torso in torsos {
            let mut input = obs_dim;
            for (i, &h) in self.hidden_sizes.iter().enumerate() {
                out.push((format!("{torso}.{i}.weight"), vec![h, input]));
                out.push((format!("{torso}.{i}.bias"), vec![h]));
                input = h;
            }
        }
        let last = self.hidden_sizes.last().copied().unwrap_or(obs_dim);
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
        let spec = ModelSpec {
            hidden_sizes: m.hidden_sizes.iter().map(|&h| h as usize).collect(),
            activation,
            shared_torso: m.shared_torso,
            init_log_std: m.init_log_std,
            normalize_observations: m.normalize_observations,
            observation_clip: m.observation_clip,
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
            Space::Box { low, high, shape } => proto::space::Kind::Box(proto::BoxSpace {
                low: low.clone(),
                high: high.clone(),
                shape: shape.iter().map(|&d| d as u32).collect(),
            }),
        };
        proto::Space { kind: Some(kind) }
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
                Ok(Space::Box {
                    low: b.low.clone(),
                    high: b.high.clone(),
                    shape: b.shape.iter().map(|&d| d as usize).collect(),
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
            .parameter_shapes(4, &Space::Discrete { n: 2 })
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
        let shapes = spec.parameter_shapes(3, &Space::uniform_box(-2.0, 2.0, 1));
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
    fn spec_and_spaces_round_trip_through_proto() {
        let spec = ModelSpec {
            hidden_sizes: vec![8, 16],
            activation: Activation::Relu,
            shared_torso: true,
            init_log_std: -0.5,
            normalize_observations: true,
            observation_clip: 5.0,
        };
        assert_eq!(
            ModelSpec::try_from(&proto::ModelSpec::from(&spec)).unwrap(),
            spec
        );
        for s in [
            Space::Discrete { n: 3 },
            Space::bounded_box(vec![-1.0, 0.0], vec![1.0, 2.0]),
        ] {
            assert_eq!(Space::try_from(&proto::Space::from(&s)).unwrap(), s);
        }
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
