//! Action distributions of the policy head: a categorical over logits for
//! discrete action spaces and a diagonal Gaussian with a state-independent
//! log standard deviation for continuous ones (the parameterization of
//! Schulman et al. 2017, "Proximal Policy Optimization Algorithms",
//! arXiv:1707.06347, §6.1, and of Duan et al. 2016, arXiv:1604.06778).
//!
//! Only what the PPO loss needs lives here: log-probabilities of given
//! actions, entropies and the mode. Sampling happens in the actors, on the
//! ndarray forward pass (`flotilla_common::policy`), whose formulas these must
//! match (the model parity test compares them).
//!
//! Formulas (natural logarithms):
//!
//! ```text
//! Categorical(p = softmax(z)):  log p(a) = z_a − log Σ_j exp z_j
//!                               H = −Σ_a p_a log p_a
//! N(μ, diag σ²), σ = exp(s):    log p(x) = Σ_d [−(x_d − μ_d)²/(2σ_d²) − s_d − ½ ln 2π]
//!                               H = Σ_d [½ + ½ ln 2π + s_d]
//! ```

use tch::{Kind, Tensor};

/// ½ ln 2π.
const HALF_LN_2PI: f64 = 0.918_938_533_204_672_8;

/// Categorical distribution over `A` actions for each of `B` samples.
pub struct Categorical {
    /// Normalized log-probabilities `[B, A]`, float32.
    log_probs: Tensor,
}

impl Categorical {
    /// From unnormalized logits `[B, A]` (any float kind; computed in
    /// float32). `-inf` logits (masked actions) are allowed.
    pub fn new(logits: &Tensor) -> Self {
        assert_eq!(
            logits.dim(),
            2,
            "Categorical: logits must be [B, A], got {:?}",
            logits.size()
        );
        Categorical {
            log_probs: logits.log_softmax(-1, Kind::Float),
        }
    }

    /// Normalized log-probabilities `[B, A]`.
    pub fn log_probs(&self) -> &Tensor {
        &self.log_probs
    }

    /// Probabilities `[B, A]`.
    pub fn probs(&self) -> Tensor {
        self.log_probs.exp()
    }

    /// log p(a_b) for actions `[B]` (integer kind; other kinds are converted
    /// to i64), giving `[B]`. Actions must lie in `[0, A)`: chunk validation
    /// guarantees it for training data.
    pub fn log_prob(&self, actions: &Tensor) -> Tensor {
        let b = self.log_probs.size()[0];
        assert_eq!(
            actions.size(),
            [b],
            "Categorical::log_prob: actions must be [B] = [{b}]"
        );
        self.log_probs
            .gather(-1, &actions.to_kind(Kind::Int64).unsqueeze(-1), false)
            .squeeze_dim(-1)
    }

    /// Entropy −Σ_a p_a log p_a per sample, `[B]`. Actions with probability 0
    /// (logit −inf) contribute 0, as in `torch.distributions.Categorical`.
    pub fn entropy(&self) -> Tensor {
        // 0·(−inf) would be NaN: clamp log p to the smallest finite float first.
        let logp = self.log_probs.clamp_min(f32::MIN as f64);
        -(self.log_probs.exp() * logp).sum_dim_intlist(-1, false, Kind::Float)
    }

    /// The most likely action per sample, `[B]` i64 (the first on ties).
    pub fn mode(&self) -> Tensor {
        self.log_probs.argmax(-1, false)
    }
}

/// Diagonal Gaussian over `D` dimensions for each of `B` samples.
pub struct DiagGaussian {
    /// Means `[B, D]`.
    mean: Tensor,
    /// Log standard deviations `[D]` (state-independent) or `[B, D]`.
    log_std: Tensor,
}

impl DiagGaussian {
    /// From means `[B, D]` and log standard deviations `log_std` `[D]` (the
    /// learnable state-independent parameter; a per-sample `[B, D]` also
    /// works). Both keep their autograd graphs.
    pub fn new(mean: &Tensor, log_std: &Tensor) -> Self {
        let shape = mean.size();
        assert_eq!(
            shape.len(),
            2,
            "DiagGaussian: mean must be [B, D], got {shape:?}"
        );
        let ls = log_std.size();
        assert!(
            ls == [shape[1]] || ls == shape,
            "DiagGaussian: log_std must be [D] = [{}] or [B, D] = {shape:?}, got {ls:?}",
            shape[1]
        );
        DiagGaussian {
            mean: mean.to_kind(Kind::Float),
            log_std: log_std.to_kind(Kind::Float),
        }
    }

    /// log p(x_b) for actions `[B, D]` (float), summed over the D independent
    /// dimensions: `[B]`.
    pub fn log_prob(&self, actions: &Tensor) -> Tensor {
        let shape = self.mean.size();
        assert_eq!(
            actions.size(),
            shape,
            "DiagGaussian::log_prob: actions must be [B, D] like the mean"
        );
        // z = (x − μ)/σ, written with exp(−s) to multiply rather than divide.
        let z = (actions.to_kind(Kind::Float) - &self.mean) * (-&self.log_std).exp();
        (z.square() * -0.5 - &self.log_std - HALF_LN_2PI).sum_dim_intlist(-1, false, Kind::Float)
    }

    /// Entropy Σ_d (½ + ½ ln 2π + log σ_d) per sample, `[B]`. With a
    /// state-independent `log_std` every sample has the same entropy, and its
    /// gradient flows to `log_std`.
    pub fn entropy(&self) -> Tensor {
        let per_dim = (&self.log_std + (0.5 + HALF_LN_2PI)).expand_as(&self.mean);
        per_dim.sum_dim_intlist(-1, false, Kind::Float)
    }

    /// The mean `[B, D]`.
    pub fn mode(&self) -> Tensor {
        self.mean.shallow_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::{LN_2, PI};

    fn host(x: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(x.to_kind(Kind::Double).flatten(0, -1)).expect("tensor to vec")
    }

    fn assert_close(got: &Tensor, want: &[f64], tol: f64, what: &str) {
        let got = host(got);
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
        }
    }

    fn t2(rows: &[&[f32]]) -> Tensor {
        let n = rows[0].len() as i64;
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, n])
    }

    /// Uniform over 4: H = ln 4. Logits [0, ln 3]: p = (1/4, 3/4), so
    /// H = −(¼ ln ¼ + ¾ ln ¾) = 0.5623351446, log p(0) = ln ¼, log p(1) = ln ¾.
    #[test]
    fn categorical_hand_computed() {
        let d = Categorical::new(&t2(&[&[0.0, 0.0, 0.0, 0.0], &[7.0, 7.0, 7.0, 7.0]]));
        assert_close(
            &d.entropy(),
            &[4f64.ln(), 4f64.ln()],
            1e-6,
            "uniform entropy",
        );
        assert_close(
            &d.log_prob(&Tensor::from_slice(&[3i64, 0])),
            &[-4f64.ln(); 2],
            1e-6,
            "uniform log_prob",
        );

        let d = Categorical::new(&t2(&[&[0.0, 3f32.ln()], &[0.0, 3f32.ln()]]));
        let h = -(0.25 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
        assert!((h - 0.562_335_144_6).abs() < 1e-9);
        assert_close(&d.entropy(), &[h, h], 1e-6, "entropy");
        assert_close(
            &d.log_prob(&Tensor::from_slice(&[0i64, 1])),
            &[0.25f64.ln(), 0.75f64.ln()],
            1e-6,
            "log_prob",
        );
        assert_close(&d.probs(), &[0.25, 0.75, 0.25, 0.75], 1e-6, "probs");
        assert_eq!(Vec::<i64>::try_from(d.mode()).expect("i64"), [1, 1]);
    }

    /// Golden values from `torch.distributions` (torch 2.13, float64; output
    /// rounded to 10 decimals):
    ///
    /// ```text
    /// >>> c = torch.distributions.Categorical(logits=torch.tensor([[1.0, -0.5, 2.0], [0.3, 0.2, -1.0]], dtype=torch.float64))
    /// >>> c.log_prob(torch.tensor([2, 1])).tolist(), c.entropy().tolist()
    /// ([-0.3715390319, -0.8781173641], [0.7667845441, 0.9823891388])
    /// >>> n = torch.distributions.Normal(torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=torch.float64), torch.tensor([0.3, -0.7], dtype=torch.float64).exp())
    /// >>> n.log_prob(torch.tensor([[0.2, 0.1], [1.0, -0.4]], dtype=torch.float64)).sum(-1).tolist(), n.entropy().sum(-1).tolist()
    /// ([-3.91596957, -2.0366988818], [2.4378770664, 2.4378770664])
    /// ```
    #[test]
    fn matches_torch_distributions() {
        let c = Categorical::new(&t2(&[&[1.0, -0.5, 2.0], &[0.3, 0.2, -1.0]]));
        assert_close(
            &c.log_prob(&Tensor::from_slice(&[2i64, 1])),
            &[-0.371_539_031_9, -0.878_117_364_1],
            1e-6,
            "categorical log_prob",
        );
        assert_close(
            &c.entropy(),
            &[0.766_784_544_1, 0.982_389_138_8],
            1e-6,
            "categorical entropy",
        );

        let g = DiagGaussian::new(
            &t2(&[&[0.5, -1.0], &[2.0, 0.0]]),
            &Tensor::from_slice(&[0.3f32, -0.7]),
        );
        assert_close(
            &g.log_prob(&t2(&[&[0.2, 0.1], &[1.0, -0.4]])),
            &[-3.915_969_57, -2.036_698_881_8],
            1e-5,
            "gaussian log_prob",
        );
        assert_close(
            &g.entropy(),
            &[2.437_877_066_4; 2],
            1e-6,
            "gaussian entropy",
        );
    }

    /// Masked actions (logit −inf) get probability 0 and add nothing to the
    /// entropy instead of NaN: [0, 0, −inf] has the entropy of a fair coin.
    #[test]
    fn categorical_entropy_with_masked_actions_is_finite() {
        let d = Categorical::new(&t2(&[&[0.0, 0.0, f32::NEG_INFINITY]]));
        assert_close(&d.entropy(), &[LN_2], 1e-6, "entropy");
    }

    /// One dimension, x = 1, μ = 0, σ = 2:
    /// log p = −(1−0)²/(2·4) − ln 2 − ½ ln 2π = −ln 2 − ½ ln 2π − 1/8.
    /// Two dimensions sum: adding x = 0, μ = 0, σ = 1 adds −½ ln 2π.
    /// Entropy per dimension ½ + ½ ln 2π + ln σ.
    #[test]
    fn gaussian_hand_computed() {
        let one = -LN_2 - 0.5 * (2.0 * PI).ln() - 0.125;
        let g = DiagGaussian::new(&t2(&[&[0.0]]), &Tensor::from_slice(&[2f32.ln()]));
        assert_close(&g.log_prob(&t2(&[&[1.0]])), &[one], 1e-6, "1-d log_prob");
        let h = |sigma: f64| 0.5 + 0.5 * (2.0 * PI).ln() + sigma.ln();
        assert_close(&g.entropy(), &[h(2.0)], 1e-6, "1-d entropy");

        let g = DiagGaussian::new(
            &t2(&[&[0.0, 0.0], &[5.0, -3.0]]),
            &Tensor::from_slice(&[2f32.ln(), 0.0]),
        );
        // Sample 1 is sample 0 shifted by its mean.
        let want = one - 0.5 * (2.0 * PI).ln();
        assert_close(
            &g.log_prob(&t2(&[&[1.0, 0.0], &[6.0, -3.0]])),
            &[want, want],
            1e-5,
            "2-d log_prob",
        );
        assert_close(&g.entropy(), &[h(2.0) + h(1.0); 2], 1e-6, "2-d entropy");
        assert_close(&g.mode(), &[0.0, 0.0, 5.0, -3.0], 0.0, "mode");
    }

    /// The same numbers as the scalar formula the actors use.
    #[test]
    fn gaussian_matches_the_actor_formula() {
        let (mean, log_std, x) = (
            [0.3f32, -1.2, 2.0],
            [-0.5f32, 0.1, 0.7],
            [0.0f32, -1.0, 3.5],
        );
        let want: f32 = (0..3)
            .map(|d| flotilla_common::policy::gaussian_log_prob(x[d], mean[d], log_std[d]))
            .sum();
        let g = DiagGaussian::new(&t2(&[&mean]), &Tensor::from_slice(&log_std));
        assert_close(&g.log_prob(&t2(&[&x])), &[want as f64], 1e-5, "log_prob");
    }

    /// Gradients reach the state-independent log_std through log_prob and
    /// entropy: d/ds Σ_b H = B·1 per dimension.
    #[test]
    fn gaussian_entropy_gradient_reaches_log_std() {
        let log_std = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let g = DiagGaussian::new(
            &Tensor::zeros([3, 2], (Kind::Float, tch::Device::Cpu)),
            &log_std,
        );
        g.entropy().sum(Kind::Float).backward();
        assert_close(&log_std.grad(), &[3.0, 3.0], 1e-6, "grad");
    }
}
