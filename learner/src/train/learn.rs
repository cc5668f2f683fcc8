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
use super::normalize::Normalization;
use super::update::{evaluate, policy_update, Batch, UpdateStats};
use crate::algo::adam::Adam;
use crate::algo::gae::gae;
use crate::algo::vtrace::vtrace;
use crate::algo::{self, Estimator, KlController, UpdatePlan};
use crate::config::RunConfig;
use crate::model::Policy;

/// An update that produced non-finite numbers and was undone.
#[derive(Debug, Clone, Copy)]
pub struct NonFinite {
    /// What the undone update measured (where the non-finite values show).
    pub stats: UpdateStats,
}

/// Frozen reference policy and controller of the KL penalty.
pub struct KlPenalty {
    pub reference: Policy,
    pub controller: KlController,
}

/// The policy and everything that updates it.
pub struct Learning {
    pub policy: Policy,
    pub adam: Adam,
    /// Observation and reward statistics (see [`super::normalize`]).
    pub norm: Normalization,
    plan: UpdatePlan,
    kl: Option<KlPenalty>,
}

impl Learning {
    pub fn new(policy: Policy, kl: Option<KlPenalty>, cfg: &RunConfig) -> Self {
        let adam = Adam::new(&policy.trainable(), cfg.ppo.adam_eps);
        Learning {
            norm: Normalization::new(cfg, policy.obs_dim()),
            policy,
            adam,
            plan: UpdatePlan::from_config(cfg),
            kl,
        }
    }

    /// The KL penalty's current coefficient, when there is a penalty.
    pub fn kl_coef(&self) -> Option<f64> {
        self.kl.as_ref().map(|k| k.controller.coef)
    }

    /// One update on `items`, `env_steps` transitions into the run. An
    /// update whose losses, gradient norm, parameters or optimizer moments
    /// come out non-finite (one poisoned chunk is enough) is undone: the
    /// policy, Adam and the normalization statistics are left exactly as
    /// they were, and `Err` says so.
    pub fn update(&mut self, items: Vec<Item>, env_steps: u64) -> Result<UpdateStats, NonFinite> {
        let t0 = Instant::now();
        let saved_norm = self.norm.is_on().then(|| self.norm.clone());
        self.norm.observe_rewards(&items);
        let observed = self.norm.observation_moments(&items);
        let (batch, kl_mean) = self.batch(&items);
        // The device batch holds everything now; free the host chunks.
        drop(items);
        let lr = self.plan.learning_rate_at(env_steps);
        let saved = self.save();
        let mut stats = policy_update(&self.policy, &mut self.adam, &batch, &self.plan, lr);
        stats.seconds = t0.elapsed().as_secs_f64();
        if !self.all_finite(&stats) {
            self.restore(saved);
            if let Some(norm) = saved_norm {
                self.norm = norm;
            }
            return Err(NonFinite { stats });
        }
        // Trained with the statistics the actors acted with; the next
        // snapshot carries these observations too.
        if let Some(moments) = &observed {
            self.norm.merge_observations(moments);
        }
        if let Some(std) = self.norm.return_std() {
            metrics::gauge!(flotilla_common::metrics::RETURN_STD).set(std);
        }
        if let Some(kl) = self.kl.as_mut() {
            stats.kl_reference = kl_mean;
            stats.kl_coef = kl.controller.coef;
            kl.controller.update(kl_mean, batch.len as usize);
        }
        Ok(stats)
    }

    /// The policy as actors load it: the parameters and, with observation
    /// normalization, the statistics (safetensors).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut tensors = self.policy.host_parameters();
        tensors.extend(self.norm.state().tensors());
        flotilla_common::policy::write_safetensors(
            tensors
                .iter()
                .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())),
            None,
        )
    }

    /// Copies of the parameters and Adam's state.
    fn save(&self) -> (Tensor, Tensor, Tensor, u64) {
        tch::no_grad(|| {
            (
                self.policy.trainable().detach().copy(),
                self.adam.m.copy(),
                self.adam.v.copy(),
                self.adam.step,
            )
        })
    }

    fn restore(&mut self, (params, m, v, step): (Tensor, Tensor, Tensor, u64)) {
        tch::no_grad(|| {
            self.policy.trainable().copy_(&params);
        });
        self.adam.m = m;
        self.adam.v = v;
        self.adam.step = step;
    }

    fn all_finite(&self, s: &UpdateStats) -> bool {
        let finite = |t: &Tensor| t.isfinite().all().int64_value(&[]) == 1;
        [s.policy_loss, s.value_loss, s.entropy, s.grad_norm]
            .iter()
            .all(|x| x.is_finite())
            && tch::no_grad(|| {
                finite(&self.policy.trainable()) && finite(&self.adam.m) && finite(&self.adam.v)
            })
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
                let mut g = g.to_device(device, d);
                g.obs = self.norm.observations(g.obs, device);
                g.final_obs = self.norm.observations(g.final_obs, device);
                g.rewards = self.norm.scale_rewards(g.rewards);
                let (part, kl) = self.targets(g);
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
        let (gamma, lambda) = (self.plan.gamma, self.plan.gae_lambda);
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
                    self.plan.rho_bar,
                    self.plan.c_bar,
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

#[cfg(test)]
mod tests {
    use flotilla_common::chunk::{Actions, Chunk};
    use flotilla_common::Space;
    use tch::Device;

    use super::*;
    use crate::test_util::host;

    const D: usize = 4;

    /// A chunk of `t` steps of `n` envs with distinct observations and
    /// rewards; `ends` are (step, env, terminated) with their final observation.
    fn chunk(a: u32, t: usize, n: usize, ends: &[(usize, usize, bool)]) -> Chunk {
        let val = |k: usize| ((a as usize * 97 + k * 31) % 17) as f32 / 17.0 - 0.5;
        let mut terminated = vec![false; t * n];
        let mut truncated = vec![false; t * n];
        let (mut final_obs_index, mut final_obs) = (Vec::new(), Vec::new());
        for &(s, e, term) in ends {
            let flat = s * n + e;
            if term {
                terminated[flat] = true;
            } else {
                truncated[flat] = true;
            }
            final_obs_index.push(flat);
            final_obs.extend((0..D).map(|k| val(1000 + flat * D + k)));
        }
        Chunk {
            run_id: "r".into(),
            env_id: "CartPole-v1".into(),
            actor_id: a,
            sequence: 1,
            policy_version: 0,
            t,
            n,
            obs: (0..(t + 1) * n * D).map(val).collect::<Vec<f32>>().into(),
            actions: Actions::Discrete(vec![1; t * n]),
            rewards: (0..t * n).map(|i| 1.0 + i as f32 / 10.0).collect(),
            terminated,
            truncated,
            behavior_logp: vec![0.5f32.ln(); t * n],
            behavior_value: None,
            final_obs_index,
            final_obs: final_obs.into(),
            episode_returns: vec![],
            episode_lengths: vec![],
        }
    }

    /// One well-formed but poisoned chunk (a behavior log-probability no
    /// policy gives) makes the ratio infinite: the update is undone and the
    /// policy and Adam stay bit for bit as they were; honest data then trains.
    #[test]
    fn a_non_finite_update_is_undone() {
        let cfg = RunConfig::from_toml(
            "[env]\nid = \"CartPole-v1\"\n",
            "test",
            &[
                "model.normalize_observations=true".into(),
                "ppo.normalize_rewards=true".into(),
            ],
        )
        .unwrap();
        let space = Space::Discrete { n: 2 };
        let policy = Policy::new(&cfg.model, &[D], &space, Device::Cpu, 3);
        let mut learning = Learning::new(policy, None, &cfg);
        let host_state = |l: &Learning| {
            (
                host(&l.policy.trainable()),
                host(&l.adam.m),
                host(&l.adam.v),
                l.adam.step,
                l.norm.state(),
            )
        };
        let before = host_state(&learning);
        let mut poisoned = chunk(1, 4, 2, &[]);
        poisoned.behavior_logp[3] = -1e30;
        let undone = learning
            .update(vec![Item::new(poisoned), Item::new(chunk(2, 4, 2, &[]))], 0)
            .expect_err("an infinite ratio cannot train");
        assert!(!undone.stats.policy_loss.is_finite(), "{:?}", undone.stats);
        assert_eq!(host_state(&learning), before);
        let stats = learning
            .update(vec![Item::new(chunk(2, 4, 2, &[]))], 0)
            .expect("honest data trains");
        assert!(stats.policy_loss.is_finite());
        assert_ne!(host_state(&learning).0, before.0);
        // The undone batch left no trace in the statistics (nor in the
        // streams' running returns): as if only the honest batch was seen.
        let mut fresh = super::Normalization::new(&cfg, D);
        fresh.observe_rewards(&[Item::new(chunk(2, 4, 2, &[]))]);
        fresh.merge_observations(
            &fresh
                .observation_moments(&[Item::new(chunk(2, 4, 2, &[]))])
                .unwrap(),
        );
        assert_eq!(learning.norm.state(), fresh.state());
        assert_ne!(learning.norm.state(), before.4);
    }

    /// With λ = 0 the value target of step t is the one-step TD target
    /// r + γ·V(next)·(1 − terminated), where `next` is the true final
    /// observation at a truncation: a direct check that the device side puts
    /// each chunk's final values at the right place of the group.
    #[test]
    fn value_targets_bootstrap_from_the_right_observation_in_every_chunk() {
        let gamma = 0.9;
        let cfg = RunConfig::from_toml(
            "[env]\nid = \"CartPole-v1\"\n",
            "test",
            &["ppo.gae_lambda=0".into(), format!("ppo.gamma={gamma}")],
        )
        .unwrap();
        let space = Space::Discrete { n: 2 };
        let policy = Policy::new(&cfg.model, &[D], &space, Device::Cpu, 3);
        let learning = Learning::new(policy, None, &cfg);
        let chunks = [
            chunk(1, 2, 2, &[(0, 1, false), (1, 0, true)]),
            chunk(2, 2, 1, &[(1, 0, false)]),
        ];
        let items: Vec<Item> = chunks.iter().cloned().map(Item::new).collect();
        let (batch, _) = learning.batch(&items);
        let returns = host(&batch.returns);
        let v = |o: &[f32]| {
            tch::no_grad(|| {
                learning
                    .policy
                    .value(&Tensor::from_slice(o).view([1, D as i64]))
                    .double_value(&[0])
            })
        };
        let total_n = 3;
        let mut col = 0;
        for c in &chunks {
            for e in 0..c.n {
                for s in 0..c.t {
                    let flat = s * c.n + e;
                    let r = f64::from(c.rewards[flat]);
                    let next_row = (s + 1) * c.n + e;
                    let next = match c.final_obs_index.iter().position(|&i| i == flat) {
                        Some(k) if c.truncated[flat] => {
                            &c.final_obs.as_f32().unwrap()[k * D..(k + 1) * D]
                        }
                        _ => &c.obs.as_f32().unwrap()[next_row * D..(next_row + 1) * D],
                    };
                    let expected = if c.terminated[flat] {
                        r
                    } else {
                        r + gamma * v(next)
                    };
                    let got = returns[s * total_n + col + e];
                    assert!(
                        (got - expected).abs() < 1e-5,
                        "actor {} step {s} env {e}: {got} vs {expected}",
                        c.actor_id
                    );
                }
            }
            col += c.n;
        }
    }

    /// A chunk acted by a lagging actor — older weights *and* older
    /// observation statistics — is trained on with the true ratio of the
    /// newest policy to the one it acted with, both over raw observations;
    /// a chunk acted with the newest snapshot starts at ratio 1.
    #[test]
    fn lagging_chunks_get_the_true_ratio_under_observation_normalization() {
        use flotilla_common::model::ModelSpec;
        use flotilla_common::policy::CpuPolicy;

        let cfg = RunConfig::from_toml(
            "[env]\nid = \"CartPole-v1\"\n",
            "test",
            &[
                "model.normalize_observations=true".into(),
                "ppo.update_epochs=1".into(),
                "ppo.num_minibatches=1".into(),
            ],
        )
        .unwrap();
        let space = Space::Discrete { n: 2 };
        let policy = Policy::new(&cfg.model, &[D], &space, Device::Cpu, 5);
        let mut learning = Learning::new(policy, None, &cfg);
        let actor = |bytes: &[u8], spec: &ModelSpec| {
            CpuPolicy::from_safetensors(spec, &[D], &space, bytes).unwrap()
        };
        // Raw observations far from the unit scale, so statistics matter.
        let raw = |a: u32| {
            let mut c = chunk(a, 8, 2, &[]);
            let obs: Vec<f32> = c.obs.as_f32().unwrap().to_vec();
            c.obs = obs
                .iter()
                .enumerate()
                .map(|(k, x)| x * 40.0 + [100.0, -3.0, 7.0, 0.5][k % D])
                .collect::<Vec<f32>>()
                .into();
            c.actions = Actions::Discrete((0..16).map(|i| i % 2).collect());
            c
        };
        // Behavior log-probabilities as an actor computes them.
        let acted = |mut c: Chunk, p: &CpuPolicy| {
            let rows = ndarray::ArrayView2::from_shape(
                (c.t * c.n, D),
                &c.obs.as_f32().unwrap()[..c.t * c.n * D],
            )
            .unwrap();
            let Actions::Discrete(a) = &c.actions else {
                unreachable!()
            };
            let a: Vec<usize> = a.iter().map(|&x| x as usize).collect();
            c.behavior_logp = p.log_prob_discrete(&p.forward(rows, false).head, &a);
            c
        };
        let old_bytes = learning.snapshot();
        let old = actor(&old_bytes, &cfg.model);
        let lagging = acted(raw(1), &old);
        // Two updates move the weights and the statistics on. Each trains
        // on a chunk acted with the newest snapshot, with that snapshot's
        // statistics: its one epoch starts exactly on-policy.
        for a in [2, 3] {
            let fresh = acted(raw(a), &actor(&learning.snapshot(), &cfg.model));
            let stats = learning.update(vec![Item::new(fresh)], 0).unwrap();
            assert!(stats.approx_kl.abs() < 1e-7, "update {a}: {stats:?}");
            assert_eq!(stats.clip_fraction, 0.0);
        }
        let now_bytes = learning.snapshot();
        let mean = |b: &[u8]| {
            flotilla_common::policy::read_safetensors(b)
                .unwrap()
                .into_iter()
                .find(|(n, _, _)| n == flotilla_common::normalize::MEAN)
                .unwrap()
                .2
        };
        assert_ne!(mean(&old_bytes), mean(&now_bytes), "the statistics moved");
        let now = actor(&now_bytes, &cfg.model);
        let ratio = |c: &Chunk| {
            let (batch, _) = learning.batch(&[Item::new(c.clone())]);
            let logp = tch::no_grad(|| evaluate(&learning.policy, &batch.obs, &batch.actions).0);
            host(&(logp - &batch.old_logp).exp())
        };
        // The learner's ratios against the two actors' own log-probabilities.
        let truth = |c: &Chunk| {
            let relogged = acted(c.clone(), &now);
            relogged
                .behavior_logp
                .iter()
                .zip(&c.behavior_logp)
                .map(|(n, b)| f64::from(n - b).exp())
                .collect::<Vec<_>>()
        };
        let got = ratio(&lagging);
        let want = truth(&lagging);
        assert!(
            want.iter().any(|r| (r - 1.0).abs() > 2e-3),
            "the lag must show in the ratio: {want:?}"
        );
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4 * w.max(1.0), "{got:?} vs {want:?}");
        }
        let current = acted(raw(4), &now);
        for r in ratio(&current) {
            assert!((r - 1.0).abs() < 1e-5, "on-policy ratio {r}");
        }
    }
}
