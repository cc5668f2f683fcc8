//! A vector of N environments stepped together, with auto-reset.
//!
//! When an episode ends at step `t`, the environment is reset in the same call
//! and the returned observation is the first one of the next episode, as in
//! Gymnasium's `SAME_STEP` autoreset mode. The true last observation of the
//! finished episode is kept in [`VecEnv::final_observations`]: learners need it
//! to bootstrap episodes that were truncated rather than terminated.

use crate::env::{Env, EnvError, EnvSpec};
use crate::space::{ActionRef, Space};

/// Statistics of one finished episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeStats {
    /// Index of the environment within the vector.
    pub env: usize,
    /// Undiscounted sum of rewards.
    pub ret: f64,
    pub length: u32,
    pub terminated: bool,
}

/// N environments of one kind, stepped in lockstep.
pub struct VecEnv {
    envs: Vec<Box<dyn Env>>,
    obs_dim: usize,
    action_space: Space,
    observation_space: Space,
    obs: Vec<f32>,
    rewards: Vec<f32>,
    terminated: Vec<bool>,
    truncated: Vec<bool>,
    final_obs: Vec<f32>,
    final_env: Vec<usize>,
    finished: Vec<EpisodeStats>,
    returns: Vec<f64>,
    lengths: Vec<u32>,
}

impl VecEnv {
    /// Builds `n` environments from `spec` and resets environment `i` with
    /// seed `seed + i`.
    pub fn new(spec: &EnvSpec, n: usize, seed: u64) -> Result<Self, EnvError> {
        assert!(n > 0, "a VecEnv needs at least one environment");
        let envs = (0..n).map(|_| spec.make()).collect::<Result<Vec<_>, _>>()?;
        Ok(Self::from_envs(envs, seed))
    }

    /// Wraps already-built environments (all of the same id) and resets them.
    pub fn from_envs(mut envs: Vec<Box<dyn Env>>, seed: u64) -> Self {
        let observation_space = envs[0].observation_space().clone();
        let action_space = envs[0].action_space().clone();
        let obs_dim = observation_space.flat_dim();
        let n = envs.len();
        let mut obs = vec![0.0; n * obs_dim];
        for (i, (env, o)) in envs
            .iter_mut()
            .zip(obs.chunks_exact_mut(obs_dim))
            .enumerate()
        {
            env.reset(Some(seed.wrapping_add(i as u64)), o);
        }
        VecEnv {
            envs,
            obs_dim,
            action_space,
            observation_space,
            obs,
            rewards: vec![0.0; n],
            terminated: vec![false; n],
            truncated: vec![false; n],
            final_obs: Vec::with_capacity(n * obs_dim),
            final_env: Vec::with_capacity(n),
            finished: Vec::with_capacity(n),
            returns: vec![0.0; n],
            lengths: vec![0; n],
        }
    }

    pub fn num_envs(&self) -> usize {
        self.envs.len()
    }

    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    pub fn observation_space(&self) -> &Space {
        &self.observation_space
    }

    pub fn action_space(&self) -> &Space {
        &self.action_space
    }

    /// Current observations, `[N, obs_dim]` row-major.
    pub fn observations(&self) -> &[f32] {
        &self.obs
    }

    /// Steps every environment with discrete actions (`actions[i]` for env i).
    pub fn step_discrete(&mut self, actions: &[usize]) {
        assert_eq!(actions.len(), self.envs.len(), "one action per environment");
        self.begin_step();
        for (i, &a) in actions.iter().enumerate() {
            self.step_one(i, ActionRef::Discrete(a));
        }
    }

    /// Steps every environment with continuous actions, `[N, act_dim]` row-major.
    pub fn step_continuous(&mut self, actions: &[f32]) {
        let n = self.envs.len();
        assert_eq!(actions.len() % n, 0, "actions must be [N, act_dim]");
        let act_dim = actions.len() / n;
        self.begin_step();
        for (i, a) in actions.chunks_exact(act_dim).enumerate() {
            self.step_one(i, ActionRef::Continuous(a));
        }
    }

    fn begin_step(&mut self) {
        self.final_obs.clear();
        self.final_env.clear();
        self.finished.clear();
    }

    fn step_one(&mut self, i: usize, action: ActionRef<'_>) {
        let d = self.obs_dim;
        let obs = &mut self.obs[i * d..(i + 1) * d];
        let step = self.envs[i].step(action, obs);
        self.rewards[i] = step.reward;
        self.terminated[i] = step.terminated;
        self.truncated[i] = step.truncated;
        self.returns[i] += f64::from(step.reward);
        self.lengths[i] += 1;
        if step.done() {
            self.final_obs.extend_from_slice(obs);
            self.final_env.push(i);
            self.finished.push(EpisodeStats {
                env: i,
                ret: self.returns[i],
                length: self.lengths[i],
                terminated: step.terminated,
            });
            self.returns[i] = 0.0;
            self.lengths[i] = 0;
            self.envs[i].reset(None, obs);
        }
    }

    /// Rewards of the last step, one per environment.
    pub fn rewards(&self) -> &[f32] {
        &self.rewards
    }

    pub fn terminated(&self) -> &[bool] {
        &self.terminated
    }

    pub fn truncated(&self) -> &[bool] {
        &self.truncated
    }

    /// Environments whose episode ended in the last step, in increasing order,
    /// with their true final observations (`[K, obs_dim]`, same order).
    pub fn final_observations(&self) -> (&[usize], &[f32]) {
        (&self.final_env, &self.final_obs)
    }

    /// Episodes that finished in the last step.
    pub fn finished_episodes(&self) -> &[EpisodeStats] {
        &self.finished
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::make_env;

    fn cartpole(max_steps: u32) -> Box<dyn Env> {
        let mut t = toml::Table::new();
        t.insert(
            "max_episode_steps".into(),
            toml::Value::Integer(max_steps.into()),
        );
        make_env("CartPole-v1", &t).unwrap()
    }

    fn cartpoles(n: usize, max_steps: u32) -> VecEnv {
        VecEnv::from_envs((0..n).map(|_| cartpole(max_steps)).collect(), 7)
    }

    #[test]
    fn env_i_is_seeded_with_seed_plus_i() {
        let v = cartpoles(3, 500);
        for i in 0..3 {
            let mut env = make_env("CartPole-v1", &toml::Table::new()).unwrap();
            let mut o = [0.0; 4];
            env.reset(Some(7 + i as u64), &mut o);
            assert_eq!(&v.observations()[i * 4..(i + 1) * 4], &o);
        }
    }

    #[test]
    fn auto_reset_reports_the_true_final_observation() {
        // A single environment stepped next to a VecEnv with the same seed:
        // the VecEnv must report exactly the single env's last observation,
        // then continue from a fresh reset.
        let mut v = cartpoles(1, 5);
        let mut env = cartpole(5);
        let mut o = [0.0f32; 4];
        env.reset(Some(7), &mut o);
        for t in 0..5 {
            let step = env.step(ActionRef::Discrete(t % 2), &mut o);
            v.step_discrete(&[t % 2]);
            assert_eq!(v.truncated()[0], step.truncated);
            if t < 4 {
                assert_eq!(v.observations(), &o);
                assert!(v.final_observations().0.is_empty());
            } else {
                assert!(step.truncated && !step.terminated);
                let (idx, fin) = v.final_observations();
                assert_eq!(idx, &[0]);
                assert_eq!(fin, &o);
                // the vector env already holds the next episode's first observation
                let mut first = [0.0f32; 4];
                env.reset(None, &mut first);
                assert_eq!(v.observations(), &first);
                let ep = v.finished_episodes()[0];
                assert_eq!((ep.length, ep.ret, ep.terminated), (5, 5.0, false));
            }
        }
        v.step_discrete(&[0]);
        assert!(v.final_observations().0.is_empty());
        assert!(v.finished_episodes().is_empty());
    }

    #[test]
    fn terminated_episode_is_reported_with_its_stats() {
        let mut v = cartpoles(2, 500);
        // always pushing right topples the pole within a few dozen steps
        let mut steps = 0;
        loop {
            v.step_discrete(&[1, 1]);
            steps += 1;
            if !v.finished_episodes().is_empty() {
                break;
            }
            assert!(steps < 200);
        }
        for ep in v.finished_episodes() {
            assert!(ep.terminated);
            assert_eq!(ep.length, steps);
            assert_eq!(ep.ret, f64::from(steps));
            assert!(v.terminated()[ep.env]);
        }
        let (idx, fin) = v.final_observations();
        assert_eq!(fin.len(), idx.len() * 4);
        for (k, _) in idx.iter().enumerate() {
            let o = &fin[k * 4..(k + 1) * 4];
            assert!(
                o[0].abs() > 2.4 || o[2].abs() > 0.2094,
                "{o:?} should be terminal"
            );
        }
    }

    #[test]
    fn same_seed_same_trajectory() {
        let spec = EnvSpec::new("Pendulum-v1");
        let mut a = VecEnv::new(&spec, 4, 11).unwrap();
        let mut b = VecEnv::new(&spec, 4, 11).unwrap();
        let acts = [0.5f32, -1.0, 2.0, 0.0];
        for _ in 0..300 {
            a.step_continuous(&acts);
            b.step_continuous(&acts);
            assert_eq!(a.observations(), b.observations());
            assert_eq!(a.rewards(), b.rewards());
        }
    }
}
