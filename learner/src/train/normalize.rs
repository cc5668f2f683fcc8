//! The learner's side of normalization: it owns the running statistics.
//!
//! **Observations** (`model.normalize_observations`). A batch is trained on
//! with the statistics of the newest snapshot — the very ones a current actor
//! acted with — and only after a kept update are the batch's observations
//! merged in; the next snapshot ships the new statistics. Chunks carry raw
//! observations, so a chunk acted with an older snapshot (other weights,
//! other statistics) is simply evaluated by the newest policy, statistics
//! included: `exp(log π_new(a|s) − behavior_logp)` is then the true ratio of
//! the two policies over raw observations, which is what PPO's clip and
//! V-trace's truncation correct for. In synchronous mode the ratio of the
//! first epoch is exactly 1 (checked end to end by the Python actor's tests).
//!
//! **Rewards** (`ppo.normalize_rewards`). Each environment stream (an
//! actor session's env column) keeps its discounted return
//! `R ← γ·R + r`, reset after the episode ends; the variance of those
//! returns scales the rewards, `clamp(r / sqrt(var + ε), ±clip)`, before
//! advantages and value targets. Rewards only reach the learner's
//! estimators, so lag does not enter: the batch's returns are merged first
//! and its rewards scaled with the result (as `VecNormalize` does step by
//! step). Episode returns reported to people stay raw.

use std::collections::HashMap;

use flotilla_common::chunk::Chunk;
use flotilla_common::model::ModelSpec;
use flotilla_common::normalize::{
    Moments, NormalizationState, ObsNormalizer, RunningMeanStd, EPSILON,
};
use tch::{Device, Tensor};

use super::batch::Item;
use crate::config::RunConfig;

/// Updates after which a stream not heard from is forgotten (its actor went away).
const STREAM_TTL_UPDATES: u64 = 256;

/// The running statistics of one run.
#[derive(Debug, Clone)]
pub struct Normalization {
    observations: Option<RunningMeanStd>,
    obs_clip: f32,
    returns: Option<Returns>,
}

/// Discounted returns per stream and their statistics.
#[derive(Debug, Clone)]
struct Returns {
    gamma: f64,
    clip: f64,
    stats: RunningMeanStd,
    /// Actor id → (the returns of its env columns, update last seen).
    streams: HashMap<u32, (Vec<f64>, u64)>,
    updates: u64,
}

impl Normalization {
    pub fn new(cfg: &RunConfig, obs_dim: usize) -> Self {
        Self::from_parts(&cfg.model, obs_dim, cfg)
    }

    fn from_parts(model: &ModelSpec, obs_dim: usize, cfg: &RunConfig) -> Self {
        Normalization {
            observations: model
                .normalize_observations
                .then(|| RunningMeanStd::new(obs_dim)),
            obs_clip: model.observation_clip,
            returns: cfg.ppo.normalize_rewards.then(|| Returns {
                gamma: cfg.ppo.gamma,
                clip: cfg.ppo.reward_clip,
                stats: RunningMeanStd::new(1),
                streams: HashMap::new(),
                updates: 0,
            }),
        }
    }

    /// Whether anything is normalized.
    pub fn is_on(&self) -> bool {
        self.observations.is_some() || self.returns.is_some()
    }

    /// Moments of the observations the actors acted on in `items` (each
    /// step's observation once; the bootstrap row and final observations
    /// are not acted on), to merge after the update.
    pub fn observation_moments(&self, items: &[Item]) -> Option<Moments> {
        let obs = self.observations.as_ref()?;
        let d = obs.dim();
        // Borrowed for f32 observations, widened for u8 ones.
        let acted: Vec<_> = items
            .iter()
            .map(|i| i.chunk.obs.f32s(0..i.chunk.t * i.chunk.n * d))
            .collect();
        let rows = acted.iter().flat_map(|o| o.chunks_exact(d));
        Some(Moments::of_rows(d, rows))
    }

    /// Merges observation moments (after an update that was kept).
    pub fn merge_observations(&mut self, moments: &Moments) {
        if let Some(obs) = self.observations.as_mut() {
            obs.merge(moments);
        }
    }

    /// Runs every stream's discounted return over `items` (in order) and
    /// merges the returns into the statistics that scale this batch.
    pub fn observe_rewards(&mut self, items: &[Item]) {
        let Some(r) = self.returns.as_mut() else {
            return;
        };
        r.updates += 1;
        let mut seen = Vec::new();
        for item in items {
            r.run(&item.chunk, &mut seen);
        }
        r.stats.merge(&Moments::of_values(&seen));
        let now = r.updates;
        r.streams
            .retain(|_, (_, last)| now - *last <= STREAM_TTL_UPDATES);
    }

    /// `sqrt(var + ε)` of the discounted returns, when rewards are scaled.
    pub fn return_std(&self) -> Option<f64> {
        self.returns
            .as_ref()
            .map(|r| (r.stats.var[0] + EPSILON).sqrt())
    }

    /// Scales `[t, n]` rewards (unchanged without reward normalization).
    pub fn scale_rewards(&self, rewards: Tensor) -> Tensor {
        match (&self.returns, self.return_std()) {
            (Some(r), Some(std)) => (rewards / std).clamp(-r.clip, r.clip),
            _ => rewards,
        }
    }

    /// Normalizes raw observations `[..., obs_dim]` on `device` with the
    /// newest snapshot's statistics (unchanged without).
    pub fn observations(&self, obs: Tensor, device: Device) -> Tensor {
        let Some(n) = self.normalizer() else {
            return obs;
        };
        let mean = Tensor::from_slice(&n.mean).to_device(device);
        let std = Tensor::from_slice(&n.std).to_device(device);
        ((obs - mean) / std).clamp(-f64::from(n.clip), f64::from(n.clip))
    }

    /// The observation statistics as every actor applies them.
    pub fn normalizer(&self) -> Option<ObsNormalizer> {
        self.observations.as_ref().map(|o| {
            let (mean, var) = o.to_f32();
            ObsNormalizer::new(&mean, &var, self.obs_clip)
        })
    }

    /// What a checkpoint keeps.
    pub fn state(&self) -> NormalizationState {
        NormalizationState {
            observations: self.observations.clone(),
            returns: self.returns.as_ref().map(|r| r.stats.clone()),
        }
    }

    /// Continues from a checkpoint's statistics. Observation statistics must
    /// be there when observations are normalized (they are part of the
    /// policy); return statistics are taken when present (a run that turns
    /// reward scaling on when resuming starts them afresh).
    pub fn restore(&mut self, state: Option<&NormalizationState>) -> Result<(), String> {
        if let Some(obs) = self.observations.as_mut() {
            let saved = state
                .and_then(|s| s.observations.as_ref())
                .ok_or("the checkpoint has no observation statistics")?;
            saved.check(obs.dim())?;
            *obs = saved.clone();
        }
        if let (Some(r), Some(saved)) = (
            self.returns.as_mut(),
            state.and_then(|s| s.returns.as_ref()),
        ) {
            saved
                .check(1)
                .map_err(|e| format!("return statistics: {e}"))?;
            r.stats = saved.clone();
        }
        Ok(())
    }
}

impl Returns {
    /// Runs the returns of `chunk`'s stream over its steps, pushing each
    /// step's return to `seen`.
    fn run(&mut self, chunk: &Chunk, seen: &mut Vec<f64>) {
        let (t, n) = (chunk.t, chunk.n);
        let (returns, last) = self
            .streams
            .entry(chunk.actor_id)
            .or_insert_with(|| (vec![0.0; n], 0));
        *last = self.updates;
        if returns.len() != n {
            *returns = vec![0.0; n];
        }
        for s in 0..t {
            for (e, ret) in returns.iter_mut().enumerate() {
                let i = s * n + e;
                *ret = self.gamma * *ret + f64::from(chunk.rewards[i]);
                seen.push(*ret);
                if chunk.terminated[i] || chunk.truncated[i] {
                    *ret = 0.0;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use flotilla_common::chunk::Actions;

    use super::*;

    fn cfg(extra: &[&str]) -> RunConfig {
        let sets: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        RunConfig::from_toml("[env]\nid = \"CartPole-v1\"\n", "test", &sets).unwrap()
    }

    /// `t` steps of `n` envs of actor `a`, reward `reward(step, env)`, the
    /// episode of env e ending at the steps in `ends`.
    fn chunk(
        a: u32,
        t: usize,
        n: usize,
        reward: impl Fn(usize, usize) -> f32,
        ends: &[(usize, usize)],
    ) -> Chunk {
        let mut done = vec![false; t * n];
        for &(s, e) in ends {
            done[s * n + e] = true;
        }
        Chunk {
            run_id: "r".into(),
            env_id: "CartPole-v1".into(),
            actor_id: a,
            sequence: 1,
            policy_version: 0,
            t,
            n,
            obs: (0..(t + 1) * n * 2)
                .map(|k| k as f32)
                .collect::<Vec<f32>>()
                .into(),
            actions: Actions::Discrete(vec![0; t * n]),
            rewards: (0..t * n).map(|i| reward(i / n, i % n)).collect(),
            terminated: done.clone(),
            truncated: vec![false; t * n],
            behavior_logp: vec![0.0; t * n],
            behavior_value: None,
            final_obs_index: vec![],
            final_obs: Vec::<f32>::new().into(),
            episode_returns: vec![],
            episode_lengths: vec![],
        }
    }

    /// The returns of every stream, continued across chunks and reset at
    /// episode ends, against a hand-run loop; the scale is their spread.
    #[test]
    fn returns_run_per_stream_across_chunks() {
        let c = cfg(&["ppo.normalize_rewards=true", "ppo.gamma=0.5"]);
        let mut norm = Normalization::new(&c, 2);
        // Actor 1, two envs: env 0 rewards 1, env 1 rewards 2 and ends at step 1.
        let first = chunk(1, 2, 2, |_, e| (e + 1) as f32, &[(1, 1)]);
        // Actor 2, one env, reward 4.
        let other = chunk(2, 2, 1, |_, _| 4.0, &[]);
        let second = chunk(1, 1, 2, |_, e| (e + 1) as f32, &[]);
        norm.observe_rewards(&[Item::new(first), Item::new(other)]);
        norm.observe_rewards(&[Item::new(second)]);
        // env 0: 1, 1.5, then 1.75; env 1: 2, 3 (ends), then 2 afresh;
        // actor 2: 4, 6.
        let all = [1.0, 2.0, 1.5, 3.0, 4.0, 6.0, 1.75, 2.0];
        let mut expected = RunningMeanStd::new(1);
        expected.merge(&Moments::of_values(&all[..6]));
        expected.merge(&Moments::of_values(&all[6..]));
        let got = norm.state().returns.unwrap();
        assert!((got.mean[0] - expected.mean[0]).abs() < 1e-12);
        assert!((got.var[0] - expected.var[0]).abs() < 1e-12);
        let n = all.len() as f64;
        let mean = all.iter().sum::<f64>() / n;
        let var = all.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        assert!((got.var[0] - var).abs() < 1e-3, "{} vs {var}", got.var[0]);
        let scaled = norm.scale_rewards(Tensor::from_slice(&[1.0f32, 100.0]));
        let std = (got.var[0] + EPSILON).sqrt();
        let host: Vec<f32> = Vec::try_from(scaled).unwrap();
        assert!((f64::from(host[0]) - 1.0 / std).abs() < 1e-6);
        assert_eq!(host[1], 10.0, "clipped at ppo.reward_clip");
    }

    #[test]
    fn observation_moments_count_each_acted_row_once() {
        let c = cfg(&["model.normalize_observations=true"]);
        let norm = Normalization::new(&c, 2);
        // t = 2, n = 1: rows 0 and 1 are acted on, row 2 is the bootstrap.
        let m = norm
            .observation_moments(&[Item::new(chunk(1, 2, 1, |_, _| 0.0, &[]))])
            .unwrap();
        assert_eq!(m.count, 2.0);
        assert_eq!(m.mean, vec![1.0, 2.0]); // rows [0, 1] and [2, 3]
        assert_eq!(m.var, vec![1.0, 1.0]);
    }

    /// The learner's libtorch normalization and the actors' give the same bits.
    #[test]
    fn the_learner_normalizes_as_the_actors_do() {
        let c = cfg(&[
            "model.normalize_observations=true",
            "model.observation_clip=4",
        ]);
        let mut norm = Normalization::new(&c, 3);
        let rows: Vec<f32> = (0..60)
            .map(|k| ((k * 37) % 23) as f32 * 0.7 - 3.0)
            .collect();
        norm.merge_observations(&Moments::of_rows(3, rows.chunks_exact(3)));
        let raw: Vec<f32> = (0..30)
            .map(|k| ((k * 11) % 29) as f32 * 1.3 - 15.0)
            .collect();
        let torch: Vec<f32> = Vec::try_from(
            norm.observations(Tensor::from_slice(&raw).view([10, 3]), Device::Cpu)
                .view([-1]),
        )
        .unwrap();
        let mut cpu = raw.clone();
        norm.normalizer().unwrap().apply(&mut cpu);
        assert_eq!(torch, cpu);
        assert!(cpu.iter().any(|&x| x == 4.0 || x == -4.0), "clip exercised");
    }

    #[test]
    fn restoring_needs_observation_statistics_and_checks_them() {
        let c = cfg(&["model.normalize_observations=true"]);
        let mut norm = Normalization::new(&c, 2);
        assert!(norm.restore(None).unwrap_err().contains("no observation"));
        let mut state = norm.state();
        state.observations.as_mut().unwrap().mean = vec![1.0];
        assert!(norm.restore(Some(&state)).is_err());
        let mut good = Normalization::new(&c, 2);
        good.merge_observations(&Moments::of_rows(
            2,
            [[3.0f32, 5.0]].iter().map(|r| r.as_slice()),
        ));
        assert!(norm.restore(Some(&good.state())).is_ok());
        assert_eq!(norm.state(), good.state());
    }
}
