//! The learning state: the policy, its optimizer, the algorithm's plan and
//! the optional KL penalty — everything that is libtorch, owned by the
//! trainer thread.
//!
//! [`Learning::update`] turns assembled chunks into a device batch (values
//! from the current critic, also for the true final observations of finished
//! episodes; the algorithm's advantages and value targets) and runs the
//! update schedule on it.

use std::time::Instant;

use tch::{Kind, Tensor};

use super::batch::{assemble, GroupTensors, Item};
use super::update::{evaluate, policy_update, Batch, UpdateStats};
use crate::algo::adam::Adam;
use crate::algo::gae::gae;
use crate::algo::vtrace::vtrace;
use crate::algo::{self, Estimator, KlController, UpdatePlan};
use crate::config::{PpoSection, RunConfig, VtraceSection};
use crate::model::Policy;

/// Frozen reference policy and controller of the KL penalty.
pub struct KlPenalty {
    pub reference: Policy,
    pub controller: KlController,
}

/// The policy and everything that updates it.
pub struct Learning {
    pub policy: Policy,
    pub adam: Adam,
    plan: UpdatePlan,
    kl: Option<KlPenalty>,
    ppo: PpoSection,
    vtrace: VtraceSection,
    total_env_steps: u64,
}

impl Learning {
    pub fn new(policy: Policy, kl: Option<KlPenalty>, cfg: &RunConfig) -> Self {
        let adam = Adam::new(&policy.trainable(), cfg.ppo.adam_eps);
        Learning {
            policy,
            adam,
            plan: UpdatePlan::from_config(cfg),
            kl,
            ppo: cfg.ppo.clone(),
            vtrace: cfg.vtrace.clone(),
            total_env_steps: cfg.run.total_env_steps,
        }
    }

    /// The KL penalty's current coefficient, when there is a penalty.
    pub fn kl_coef(&self) -> Option<f64> {
        self.kl.as_ref().map(|k| k.controller.coef)
    }

    /// One update on `items`, `env_steps` transitions into the run.
    pub fn update(&mut self, items: &[Item], env_steps: u64) -> UpdateStats {
        let t0 = Instant::now();
        let (batch, kl_mean) = self.batch(items);
        let p = &self.ppo;
        let lr = if p.anneal_lr {
            let frac = 1.0 - env_steps as f64 / self.total_env_steps as f64;
            p.learning_rate * frac.max(0.0)
        } else {
            p.learning_rate
        };
        let mut stats = policy_update(&self.policy, &mut self.adam, &batch, &self.plan, lr);
        if let Some(kl) = self.kl.as_mut() {
            stats.kl_reference = kl_mean;
            stats.kl_coef = kl.controller.coef;
            kl.controller.update(kl_mean, batch.len as usize);
        }
        stats.seconds = t0.elapsed().as_secs_f64();
        stats
    }

    /// Assembles `items` into one device batch with values, advantages and
    /// value targets; also returns the mean KL to the reference (0 without a
    /// KL penalty).
    pub fn batch(&self, items: &[Item]) -> (Batch, f64) {
        let device = self.policy.device();
        let d = self.policy.obs_dim();
        let (mut kl_sum, mut kl_n) = (0.0, 0i64);
        let mut parts: Vec<Batch> = assemble(items, d)
            .iter()
            .map(|g| {
                let (part, kl) = self.targets(g.to_device(device, d));
                kl_sum += kl * part.len as f64;
                kl_n += part.len;
                part
            })
            .collect();
        let kl_mean = if self.kl.is_some() && kl_n > 0 {
            kl_sum / kl_n as f64
        } else {
            0.0
        };
        if parts.len() == 1 {
            return (parts.pop().expect("one part"), kl_mean);
        }
        let cat = |f: &dyn Fn(&Batch) -> &Tensor| {
            Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0)
        };
        let batch = Batch {
            obs: cat(&|b| &b.obs),
            actions: cat(&|b| &b.actions),
            old_logp: cat(&|b| &b.old_logp),
            old_values: cat(&|b| &b.old_values),
            advantages: cat(&|b| &b.advantages),
            returns: cat(&|b| &b.returns),
            len: parts.iter().map(|b| b.len).sum(),
        };
        (batch, kl_mean)
    }

    /// `V(s)` for every observation row `[T+1, n]`, and `V` of the true final
    /// observations at their `[T, n]` positions (zeros elsewhere).
    fn values(&self, g: &GroupTensors) -> (Tensor, Tensor) {
        let (t, n) = (g.t, g.n);
        let options = (Kind::Float, self.policy.device());
        if !self.plan.needs_values() {
            return (
                Tensor::zeros([t + 1, n], options),
                Tensor::zeros([t, n], options),
            );
        }
        tch::no_grad(|| {
            let d = self.policy.obs_dim() as i64;
            let values = self.policy.value(&g.obs.view([-1, d])).view([t + 1, n]);
            let finals = Tensor::zeros([t * n], options);
            let finals = if g.final_index.numel() == 0 {
                finals
            } else {
                let fv = self.policy.value(&g.final_obs);
                finals.index_put(&[Some(g.final_index.shallow_clone())], &fv, false)
            };
            (values, finals.view([t, n]))
        })
    }

    /// The flat batch of one group, and its mean KL to the reference.
    fn targets(&self, g: GroupTensors) -> (Batch, f64) {
        let (t, n) = (g.t, g.n);
        let b = t * n;
        let d = self.policy.obs_dim() as i64;
        let (values, final_values) = self.values(&g);
        let act = if g.actions.dim() == 3 {
            g.actions.view([b, -1])
        } else {
            g.actions.view([b])
        };
        let obs_flat = g.obs.narrow(0, 0, t).reshape([b, d]);
        let mut rewards = g.rewards.shallow_clone();
        let mut kl_mean = 0.0;
        if let Some(kl) = &self.kl {
            let ref_logp = tch::no_grad(|| evaluate(&kl.reference, &obs_flat, &act).0);
            let (penalty, mean) =
                algo::kl_penalty(&g.behavior_logp, &ref_logp.view([t, n]), kl.controller.coef);
            rewards = &rewards - penalty;
            kl_mean = mean;
        }
        let (gamma, lambda) = (self.ppo.gamma, self.ppo.gae_lambda);
        let (adv, ret) = match self.plan.estimator {
            Estimator::Gae => gae(
                &rewards,
                &values,
                &g.terminated,
                &g.truncated,
                &final_values,
                gamma,
                lambda,
            ),
            Estimator::MonteCarlo { .. } => {
                // G_t = r_t + γ(1 − done_t)G_{t+1}, seeded with the return
                // from after the chunk; V(s_t) (or 0) as the baseline.
                let seeded = Tensor::cat(&[values.narrow(0, 0, t), g.tail_returns], 0);
                gae(
                    &rewards,
                    &seeded,
                    &g.terminated,
                    &g.truncated,
                    &final_values.zeros_like(),
                    gamma,
                    1.0,
                )
            }
            Estimator::Vtrace { weighted } => {
                let logp_now = tch::no_grad(|| evaluate(&self.policy, &obs_flat, &act).0);
                let out = vtrace(
                    &rewards,
                    &values,
                    &g.terminated,
                    &g.truncated,
                    &final_values,
                    &(logp_now.view([t, n]) - &g.behavior_logp),
                    gamma,
                    self.vtrace.rho_bar,
                    self.vtrace.c_bar,
                );
                let adv = if weighted {
                    &out.advantages * &out.clipped_rhos
                } else {
                    out.advantages
                };
                (adv, out.targets)
            }
        };
        let batch = Batch {
            obs: obs_flat,
            actions: act,
            old_logp: g.behavior_logp.reshape([b]),
            old_values: values.narrow(0, 0, t).reshape([b]),
            advantages: adv.reshape([b]),
            returns: ret.reshape([b]),
            len: b,
        };
        (batch, kl_mean)
    }
}
