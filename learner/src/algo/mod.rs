//! What distinguishes the algorithms of the policy-gradient family inside the
//! one training loop of [`crate::train`]: an advantage estimator, a policy
//! loss and an update schedule.
//!
//! | `algo`      | advantages                          | policy loss                  | schedule                      |
//! |-------------|-------------------------------------|------------------------------|-------------------------------|
//! | `reinforce` | Monte-Carlo G_t (− V(s) w/ baseline)| −mean(log π · A)             | 1 step on the whole batch     |
//! | `a2c`       | GAE(γ, λ) or V-trace                | −mean(log π · A)             | 1 step on the whole batch     |
//! | `ppo`       | GAE(γ, λ) or V-trace                | clipped surrogate            | epochs × minibatches          |
//! | `vtrace`    | V-trace, weighted by ρ_t (IMPALA)   | −mean(log π · ρ_t·A)         | 1 step on the whole batch     |
//!
//! The value loss (½ squared error to the estimator's targets), the entropy
//! bonus, gradient clipping and Adam are shared. Optionally, a per-step KL
//! penalty against a frozen reference policy is subtracted from the rewards
//! before any estimator runs ([`kl_penalty`], [`KlController`]).

pub mod adam;
pub mod distributions;
pub mod episodes;
pub mod gae;
pub mod ppo;
pub mod vtrace;

use tch::{Kind, Tensor};

use crate::config::{AdvantageEstimator, Algo, PpoSection, RunConfig, VtraceSection};

/// How advantages and value targets are computed from a batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Estimator {
    /// GAE(γ, λ) ([`gae::gae`]).
    Gae,
    /// Discounted returns over complete episodes
    /// ([`episodes::EpisodeStitcher`]); with `baseline` the advantage
    /// is G_t − V(s_t), without it G_t itself and no critic is used.
    MonteCarlo { baseline: bool },
    /// V-trace ([`vtrace::vtrace`]); `weighted` multiplies the
    /// advantages by the truncated importance weights ρ_t (IMPALA's policy
    /// gradient) — on for IMPALA and A2C, off inside PPO, whose ratio
    /// already corrects for the behavior policy.
    Vtrace { weighted: bool },
}

/// The policy term of the loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PolicyLoss {
    /// PPO's clipped surrogate ([`ppo::policy_loss`]).
    Clipped { eps: f64 },
    /// The score-function estimator −mean(log π(a|s) · A).
    Vanilla,
}

/// Everything about an update that depends on the algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdatePlan {
    pub estimator: Estimator,
    pub loss: PolicyLoss,
    pub epochs: usize,
    pub minibatches: usize,
    pub norm_adv: bool,
    /// Weight of the value loss; 0 when there is no critic to train.
    pub vf_coef: f64,
    pub vf_clip: Option<f64>,
    pub target_kl: Option<f64>,
    /// Weight of the entropy bonus.
    pub ent_coef: f64,
    /// Global gradient-norm limit.
    pub max_grad_norm: f64,
    /// Discount γ of every estimator.
    pub gamma: f64,
    /// GAE's λ (Monte-Carlo returns use 1).
    pub gae_lambda: f64,
    /// V-trace's ρ̄ and c̄.
    pub rho_bar: f64,
    pub c_bar: f64,
    /// Adam's learning rate at the start of the run.
    pub learning_rate: f64,
    /// Anneal the learning rate linearly to 0 over this many env steps.
    pub anneal_over: Option<u64>,
}

impl UpdatePlan {
    /// PPO-clip with GAE, as configured by `[ppo]`.
    pub fn ppo(p: &PpoSection) -> Self {
        UpdatePlan {
            estimator: Estimator::Gae,
            loss: PolicyLoss::Clipped { eps: p.clip_eps },
            epochs: p.update_epochs,
            minibatches: p.num_minibatches,
            norm_adv: p.norm_adv,
            vf_coef: p.vf_coef,
            vf_clip: (p.vf_clip > 0.0).then_some(p.vf_clip),
            target_kl: p.target_kl,
            ent_coef: p.ent_coef,
            max_grad_norm: p.max_grad_norm,
            gamma: p.gamma,
            gae_lambda: p.gae_lambda,
            rho_bar: VtraceSection::default().rho_bar,
            c_bar: VtraceSection::default().c_bar,
            learning_rate: p.learning_rate,
            anneal_over: None,
        }
    }

    /// The plan of the configured algorithm.
    pub fn from_config(cfg: &RunConfig) -> Self {
        let p = &cfg.ppo;
        let chosen = match p.advantage {
            AdvantageEstimator::Gae => Estimator::Gae,
            AdvantageEstimator::Vtrace => Estimator::Vtrace { weighted: false },
        };
        // One gradient step on the whole batch, no clipping of any kind.
        let single = |estimator, norm_adv: bool, vf_coef: f64| UpdatePlan {
            estimator,
            loss: PolicyLoss::Vanilla,
            epochs: 1,
            minibatches: 1,
            norm_adv,
            vf_coef,
            vf_clip: None,
            target_kl: None,
            ..Self::ppo(p)
        };
        let plan = match cfg.algo {
            Algo::Ppo => UpdatePlan {
                estimator: chosen,
                ..Self::ppo(p)
            },
            // Without a ratio in its loss, A2C needs V-trace's ρ weights
            // on stale data: A2C + V-trace is IMPALA.
            Algo::A2c => single(
                match chosen {
                    Estimator::Vtrace { .. } => Estimator::Vtrace { weighted: true },
                    other => other,
                },
                p.norm_adv,
                p.vf_coef,
            ),
            Algo::Vtrace => single(Estimator::Vtrace { weighted: true }, p.norm_adv, p.vf_coef),
            Algo::Reinforce => {
                let baseline = cfg.reinforce.baseline;
                single(
                    Estimator::MonteCarlo { baseline },
                    // Centering the returns would itself be a baseline.
                    baseline && p.norm_adv,
                    if baseline { p.vf_coef } else { 0.0 },
                )
            }
        };
        UpdatePlan {
            rho_bar: cfg.vtrace.rho_bar,
            c_bar: cfg.vtrace.c_bar,
            anneal_over: p.anneal_lr.then_some(cfg.run.total_env_steps),
            ..plan
        }
    }

    /// The learning rate after `env_steps` steps of the run.
    pub fn learning_rate_at(&self, env_steps: u64) -> f64 {
        match self.anneal_over {
            Some(total) => {
                let frac = 1.0 - env_steps as f64 / total as f64;
                self.learning_rate * frac.max(0.0)
            }
            None => self.learning_rate,
        }
    }

    /// Whether the batch needs V(s) from the critic.
    pub fn needs_values(&self) -> bool {
        !matches!(self.estimator, Estimator::MonteCarlo { baseline: false })
    }
}

/// The score-function policy loss `−mean(log π(a|s) · A)` (REINFORCE, A2C,
/// IMPALA), for `logp` `[B]` with gradient and constant advantages `adv` `[B]`.
pub fn vanilla_policy_loss(logp: &Tensor, adv: &Tensor) -> Tensor {
    assert_eq!(
        logp.size(),
        adv.size(),
        "vanilla_policy_loss: adv must have the shape of logp"
    );
    -(logp * adv.detach()).mean(Kind::Float)
}

/// The per-step KL penalty of RLHF-style PPO, `coef · (log π(a_t|s_t) −
/// log π_ref(a_t|s_t))` for the sampled actions (a single-sample estimate of
/// KL(π ‖ π_ref) per step), to be subtracted from the rewards. Returns the
/// penalty (same shape as the inputs) and the batch mean of `logp − ref_logp`.
pub fn kl_penalty(logp: &Tensor, ref_logp: &Tensor, coef: f64) -> (Tensor, f64) {
    assert_eq!(
        logp.size(),
        ref_logp.size(),
        "kl_penalty: ref_logp must have the shape of logp"
    );
    tch::no_grad(|| {
        let kl = (logp - ref_logp).to_kind(Kind::Float);
        let mean = if kl.numel() == 0 {
            0.0
        } else {
            kl.mean(Kind::Float).double_value(&[])
        };
        (kl * coef, mean)
    })
}

/// The adaptive KL controller of Ziegler et al., "Fine-Tuning Language
/// Models from Human Preferences", 2019, arXiv:1909.08593, section 2.2:
///
/// ```text
/// e    = clip(KL / target − 1, −0.2, 0.2)
/// coef ← coef · (1 + e · min(n / horizon, 1))
/// ```
///
/// after each batch of `n` samples whose mean KL to the reference was `KL`.
/// The `min(·, 1)` is ours: without it a batch larger than the horizon
/// could move the coefficient by more than 20%, and one more than 5× the
/// horizon with KL below target would turn it negative (a KL bonus).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KlController {
    pub coef: f64,
    pub target: Option<f64>,
    pub horizon: f64,
}

impl KlController {
    /// Updates the coefficient after a batch (a no-op for a fixed coefficient).
    pub fn update(&mut self, kl: f64, samples: usize) {
        if let Some(target) = self.target {
            if kl.is_finite() {
                let e = (kl / target - 1.0).clamp(-0.2, 0.2);
                self.coef *= 1.0 + e * (samples as f64 / self.horizon).min(1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_util::host;

    #[test]
    fn kl_penalty_is_coef_times_the_log_ratio_per_step() {
        // Hand-made tokens: π gives the sampled tokens probabilities 0.5, 0.2,
        // 0.9; the reference 0.25, 0.4, 0.9. coef = 0.1:
        // 0.1·ln(0.5/0.25) = 0.0693147, 0.1·ln(0.2/0.4) = −0.0693147, 0.
        let logp = Tensor::from_slice(&[0.5f32.ln(), 0.2f32.ln(), 0.9f32.ln()]);
        let ref_logp = Tensor::from_slice(&[0.25f32.ln(), 0.4f32.ln(), 0.9f32.ln()]);
        let (pen, mean) = kl_penalty(&logp, &ref_logp, 0.1);
        let want = [0.1 * 2f64.ln(), -0.1 * 2f64.ln(), 0.0];
        for (g, w) in host(&pen).iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "got {g}, want {w}");
        }
        assert!(mean.abs() < 1e-6, "mean of ln2, −ln2, 0 is 0, got {mean}");
    }

    #[test]
    fn the_controller_moves_toward_the_target_and_is_bounded() {
        let mut c = KlController {
            coef: 0.2,
            target: Some(6.0),
            horizon: 10_000.0,
        };
        // KL far above target: e clips at +0.2; 1000 samples → ×1.02.
        c.update(60.0, 1000);
        assert!((c.coef - 0.204).abs() < 1e-12, "{}", c.coef);
        // KL below target: e = 3/6 − 1 = −0.5 → clipped to −0.2 → ×0.98.
        c.update(3.0, 1000);
        assert!((c.coef - 0.204 * 0.98).abs() < 1e-12, "{}", c.coef);
        // KL = 6.6: e = 0.1 → ×1.01.
        let before = c.coef;
        c.update(6.6, 1000);
        assert!((c.coef - before * 1.01).abs() < 1e-12);
        let mut fixed = KlController { target: None, ..c };
        fixed.update(100.0, 1000);
        assert_eq!(fixed.coef, c.coef);
    }

    #[test]
    fn a_batch_larger_than_the_horizon_moves_the_coefficient_at_most_20_percent() {
        let mut c = KlController {
            coef: 0.2,
            target: Some(6.0),
            horizon: 10_000.0,
        };
        // n = 6 horizons, KL far below target: uncapped, 1 − 0.2·6 = −0.2
        // would flip the sign; capped, ×0.8.
        c.update(0.1, 60_000);
        assert!((c.coef - 0.16).abs() < 1e-12, "{}", c.coef);
        c.update(600.0, 60_000);
        assert!((c.coef - 0.16 * 1.2).abs() < 1e-12, "{}", c.coef);
    }

    #[test]
    fn vanilla_loss_is_the_score_function() {
        // −mean(logp·A) with logp = (ln 0.5, ln 0.25), A = (2, −1):
        // −(2·ln 0.5 − ln 0.25)/2 = −(−1.386294 + 1.386294)/2 = 0.
        let logp = Tensor::from_slice(&[0.5f32.ln(), 0.25f32.ln()]).set_requires_grad(true);
        let adv = Tensor::from_slice(&[2.0f32, -1.0]);
        let loss = vanilla_policy_loss(&logp, &adv);
        assert!(loss.double_value(&[]).abs() < 1e-6);
        loss.backward();
        // ∂/∂logp_i = −A_i / B.
        assert_eq!(host(&logp.grad()), vec![-1.0, 0.5]);
    }

    #[test]
    fn plans_of_each_algorithm() {
        let mut cfg: RunConfig =
            RunConfig::from_toml("[env]\nid = \"CartPole-v1\"\n", "t", &[]).unwrap();
        let ppo = UpdatePlan::from_config(&cfg);
        assert_eq!(ppo.estimator, Estimator::Gae);
        assert_eq!(ppo.epochs, cfg.ppo.update_epochs);
        cfg.algo = Algo::A2c;
        let a2c = UpdatePlan::from_config(&cfg);
        assert_eq!((a2c.epochs, a2c.minibatches), (1, 1));
        assert_eq!(a2c.loss, PolicyLoss::Vanilla);
        cfg.algo = Algo::Vtrace;
        assert_eq!(
            UpdatePlan::from_config(&cfg).estimator,
            Estimator::Vtrace { weighted: true }
        );
        cfg.algo = Algo::Reinforce;
        cfg.reinforce.baseline = false;
        let pure = UpdatePlan::from_config(&cfg);
        assert!(!pure.needs_values() && !pure.norm_adv && pure.vf_coef == 0.0);
        cfg.algo = Algo::Ppo;
        cfg.ppo.advantage = AdvantageEstimator::Vtrace;
        let appo = UpdatePlan::from_config(&cfg);
        assert_eq!(appo.estimator, Estimator::Vtrace { weighted: false });
        assert!(matches!(appo.loss, PolicyLoss::Clipped { .. }));
    }
}
