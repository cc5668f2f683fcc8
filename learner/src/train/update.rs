//! One update of any algorithm of the family on one device batch: the
//! minibatch loop of policy loss, value loss and entropy bonus, gradient
//! clipping and Adam (see [`crate::algo`] for what each algorithm changes).

use tch::{Kind, Tensor};

use crate::algo::adam::Adam;
use crate::algo::distributions::{Categorical, DiagGaussian};
use crate::algo::{self, ppo, PolicyLoss, UpdatePlan};
use crate::config::PpoSection;
use crate::model::Policy;

/// Statistics of one update.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct UpdateStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    pub approx_kl: f64,
    pub clip_fraction: f64,
    pub explained_variance: f64,
    pub grad_norm: f64,
    pub learning_rate: f64,
    /// Mean per-step log π − log π_ref of the batch (KL penalty runs; else 0).
    pub kl_reference: f64,
    /// KL penalty coefficient used for the batch (0 without a penalty).
    pub kl_coef: f64,
    pub epochs: usize,
    pub samples: usize,
    pub seconds: f64,
}

/// A batch on the device, flattened to `[B, ...]`.
pub struct Batch {
    pub obs: Tensor,
    /// `[B]` i64 for Discrete, `[B, A]` f32 for Box.
    pub actions: Tensor,
    pub old_logp: Tensor,
    pub old_values: Tensor,
    pub advantages: Tensor,
    pub returns: Tensor,
    pub len: i64,
}

/// Log-probabilities, entropies and values of `actions` under `policy`.
pub fn evaluate(policy: &Policy, obs: &Tensor, actions: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (out, value, log_std) = policy.forward_all(obs);
    match log_std {
        None => {
            let dist = Categorical::new(&out);
            (dist.log_prob(actions), dist.entropy(), value)
        }
        Some(log_std) => {
            let dist = DiagGaussian::new(&out, &log_std);
            (dist.log_prob(actions), dist.entropy(), value)
        }
    }
}

/// PPO-clip on one batch: `update_epochs` passes of `num_minibatches`
/// minibatches, with per-minibatch advantage normalization, optional value
/// clipping, entropy bonus, global grad-norm clipping and an optional
/// target-KL early stop. Statistics are the last epoch's minibatch means.
pub fn ppo_update(
    policy: &Policy,
    adam: &mut Adam,
    batch: &Batch,
    p: &PpoSection,
    lr: f64,
) -> UpdateStats {
    policy_update(policy, adam, batch, &UpdatePlan::ppo(p), lr)
}

/// One update of any algorithm on one batch, following `plan`: `epochs`
/// passes of `minibatches` minibatches of policy loss + `vf_coef`·value loss
/// − `ent_coef`·entropy, global grad-norm clipping (`max_grad_norm`) and an
/// Adam step per minibatch. Statistics are the last epoch's minibatch means.
pub fn policy_update(
    policy: &Policy,
    adam: &mut Adam,
    batch: &Batch,
    plan: &UpdatePlan,
    lr: f64,
) -> UpdateStats {
    let params = policy.trainable();
    let b = batch.len;
    let mb = (b / plan.minibatches as i64).max(1);
    let device = policy.device();
    let mut stats = UpdateStats {
        learning_rate: lr,
        samples: b as usize,
        explained_variance: ppo::explained_variance(&batch.old_values, &batch.returns),
        ..Default::default()
    };
    for epoch in 0..plan.epochs {
        let perm = Tensor::randperm(b, (Kind::Int64, device));
        let (mut kl_sum, mut cf_sum, mut n_mb) = (0.0, 0.0, 0.0);
        let (mut pl_sum, mut vl_sum, mut ent_sum) = (0.0, 0.0, 0.0);
        for k in 0..plan.minibatches as i64 {
            let start = k * mb;
            if start >= b {
                break;
            }
            let size = if k == plan.minibatches as i64 - 1 {
                b - start
            } else {
                mb
            };
            let idx = perm.narrow(0, start, size);
            let (logp, entropy, value) = evaluate(
                policy,
                &batch.obs.index_select(0, &idx),
                &batch.actions.index_select(0, &idx),
            );
            let old_logp = batch.old_logp.index_select(0, &idx);
            let mut adv = batch.advantages.index_select(0, &idx);
            if plan.norm_adv && size > 1 {
                adv = ppo::normalize_advantages(&adv);
            }
            let (pg_loss, clip_eps) = match plan.loss {
                PolicyLoss::Clipped { eps } => {
                    (ppo::policy_loss(&logp, &old_logp, &adv, eps).0, Some(eps))
                }
                PolicyLoss::Vanilla => (algo::vanilla_policy_loss(&logp, &adv), None),
            };
            let ent = entropy.mean(Kind::Float);
            // Pure REINFORCE has no critic to train.
            let v_loss = (plan.vf_coef > 0.0).then(|| {
                ppo::value_loss(
                    &value,
                    &batch.old_values.index_select(0, &idx),
                    &batch.returns.index_select(0, &idx),
                    plan.vf_clip,
                )
            });
            let loss = match &v_loss {
                Some(v) => &pg_loss + v * plan.vf_coef - &ent * plan.ent_coef,
                None => &pg_loss - &ent * plan.ent_coef,
            };
            Adam::zero_grad(&params);
            loss.backward();
            stats.grad_norm = Adam::clip_grad_norm(&params, plan.max_grad_norm);
            adam.step(&params, lr);
            tch::no_grad(|| {
                let logratio = &logp - &old_logp;
                kl_sum += ppo::approx_kl(&logratio);
                if let Some(eps) = clip_eps {
                    cf_sum += ppo::clip_fraction(&logratio.exp(), eps);
                }
            });
            pl_sum += pg_loss.double_value(&[]);
            vl_sum += v_loss.as_ref().map_or(0.0, |v| v.double_value(&[]));
            ent_sum += ent.double_value(&[]);
            n_mb += 1.0;
        }
        stats.epochs = epoch + 1;
        stats.approx_kl = kl_sum / n_mb;
        stats.clip_fraction = cf_sum / n_mb;
        stats.policy_loss = pl_sum / n_mb;
        stats.value_loss = vl_sum / n_mb;
        stats.entropy = ent_sum / n_mb;
        if let Some(target) = plan.target_kl {
            if stats.approx_kl > target {
                break;
            }
        }
    }
    stats
}
