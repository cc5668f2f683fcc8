//! Rollout traces: play episodes and write one JSON object per step.
//!
//! The JSON Lines format is a user-facing contract (people feed it to their own
//! analysis tools); keep it stable. Each line has exactly these keys:
//!
//! | key | type | meaning |
//! | --- | --- | --- |
//! | `episode` | int | 0-based episode index |
//! | `step` | int | 0-based step within the episode |
//! | `obs` | list of floats | observation the action was chosen from |
//! | `action` | int or list of floats | int for `Discrete`, list for `Box` |
//! | `reward` | float | reward of this step |
//! | `next_obs` | list of floats | the true next observation, also on the last step |
//! | `terminated` | bool | the episode reached a terminal state |
//! | `truncated` | bool | the episode was cut by the time limit |

use std::io::Write;

use ndarray::ArrayView2;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Serialize;

use crate::env::Env;
use crate::policy::CpuPolicy;
use crate::space::{ActionRef, Space};

/// An action chosen by a policy, owned.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Action {
    Discrete(usize),
    Continuous(Vec<f32>),
}

impl Action {
    pub fn as_ref(&self) -> ActionRef<'_> {
        match self {
            Action::Discrete(a) => ActionRef::Discrete(*a),
            Action::Continuous(v) => ActionRef::Continuous(v),
        }
    }
}

/// One line of a trace.
#[derive(Debug, Serialize)]
pub struct TraceStep<'a> {
    pub episode: u64,
    pub step: u64,
    pub obs: &'a [f32],
    pub action: &'a Action,
    pub reward: f32,
    pub next_obs: &'a [f32],
    pub terminated: bool,
    pub truncated: bool,
}

/// Summary of one played episode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeSummary {
    pub ret: f64,
    pub length: u64,
    pub terminated: bool,
}

/// A policy that samples uniformly from the action space.
pub struct RandomPolicy {
    space: Space,
    rng: Pcg64Mcg,
}

impl RandomPolicy {
    pub fn new(space: Space, seed: u64) -> Self {
        RandomPolicy {
            space,
            rng: Pcg64Mcg::seed_from_u64(seed),
        }
    }

    pub fn act(&mut self, _obs: &[f32]) -> Action {
        match &self.space {
            Space::Discrete { n } => Action::Discrete(self.rng.random_range(0..*n)),
            Space::Box { low, high, .. } => Action::Continuous(
                low.iter()
                    .zip(high)
                    .map(|(&lo, &hi)| lo + (hi - lo) * self.rng.random::<f32>())
                    .collect(),
            ),
        }
    }
}

/// A trained policy as [`play`] calls it: one observation in, its action
/// out, sampled (or, `greedy`, the most likely) with its own random stream
/// from `seed`. `actor rollout --seed S` and `[eval] seed = S` act alike.
pub fn policy_player(policy: CpuPolicy, greedy: bool, seed: u64) -> impl FnMut(&[f32]) -> Action {
    let mut rng = Pcg64Mcg::seed_from_u64(seed ^ 0x5eed_5eed);
    move |o: &[f32]| {
        let obs = ArrayView2::from_shape((1, o.len()), o).expect("one observation row");
        let s = policy.act(obs, false, greedy, &mut rng);
        if s.discrete.is_empty() {
            Action::Continuous(s.continuous)
        } else {
            Action::Discrete(s.discrete[0])
        }
    }
}

/// Plays `episodes` episodes of `env` with `policy`, writing the trace to `out`.
/// The first episode starts from `reset(Some(seed))`, later ones continue the
/// environment's random stream, so a run is reproducible from its seed.
pub fn play(
    env: &mut dyn Env,
    episodes: u64,
    seed: u64,
    policy: &mut dyn FnMut(&[f32]) -> Action,
    out: &mut dyn Write,
) -> std::io::Result<Vec<EpisodeSummary>> {
    play_watched(env, episodes, seed, policy, out, &mut |_| {})
}

/// [`play`], showing `watch` the environment after every reset and every
/// step (to render a video of the episodes).
pub fn play_watched(
    env: &mut dyn Env,
    episodes: u64,
    seed: u64,
    policy: &mut dyn FnMut(&[f32]) -> Action,
    out: &mut dyn Write,
    watch: &mut dyn FnMut(&dyn Env),
) -> std::io::Result<Vec<EpisodeSummary>> {
    let dim = env.observation_space().flat_dim();
    let mut obs = vec![0.0f32; dim];
    let mut next = vec![0.0f32; dim];
    let mut summaries = Vec::with_capacity(episodes as usize);
    for episode in 0..episodes {
        env.reset((episode == 0).then_some(seed), &mut obs);
        watch(&*env);
        let mut ret = 0.0f64;
        let mut step = 0u64;
        loop {
            let action = policy(&obs);
            let s = env.step(action.as_ref(), &mut next);
            watch(&*env);
            let line = TraceStep {
                episode,
                step,
                obs: &obs,
                action: &action,
                reward: s.reward,
                next_obs: &next,
                terminated: s.terminated,
                truncated: s.truncated,
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.write_all(b"\n")?;
            ret += f64::from(s.reward);
            step += 1;
            std::mem::swap(&mut obs, &mut next);
            if s.done() {
                summaries.push(EpisodeSummary {
                    ret,
                    length: step,
                    terminated: s.terminated,
                });
                break;
            }
        }
    }
    out.flush()?;
    Ok(summaries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::make_env;

    fn trace(id: &str, seed: u64) -> (Vec<EpisodeSummary>, String) {
        let mut env = make_env(id, &toml::Table::new()).unwrap();
        let mut pol = RandomPolicy::new(env.action_space().clone(), seed);
        let mut buf = Vec::new();
        let s = play(env.as_mut(), 3, seed, &mut |o| pol.act(o), &mut buf).unwrap();
        (s, String::from_utf8(buf).unwrap())
    }

    #[test]
    fn lines_have_exactly_the_contract_keys() {
        for id in ["CartPole-v1", "Pendulum-v1"] {
            let (summaries, text) = trace(id, 3);
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let total: u64 = summaries.iter().map(|s| s.length).sum();
            assert_eq!(lines.len() as u64, total);
            let mut keys: Vec<_> = lines[0].as_object().unwrap().keys().cloned().collect();
            keys.sort();
            assert_eq!(
                keys,
                [
                    "action",
                    "episode",
                    "next_obs",
                    "obs",
                    "reward",
                    "step",
                    "terminated",
                    "truncated"
                ]
            );
            if id == "CartPole-v1" {
                assert!(lines[0]["action"].is_u64());
            } else {
                assert_eq!(lines[0]["action"].as_array().unwrap().len(), 1);
            }
        }
    }

    #[test]
    fn steps_chain_and_episodes_end_with_done() {
        let (summaries, text) = trace("CartPole-v1", 5);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut i = 0;
        for (ep, s) in summaries.iter().enumerate() {
            let mut ret = 0.0;
            for step in 0..s.length {
                let l = &lines[i];
                assert_eq!(l["episode"], ep as u64);
                assert_eq!(l["step"], step);
                ret += l["reward"].as_f64().unwrap();
                let last = step + 1 == s.length;
                let done = l["terminated"].as_bool().unwrap() || l["truncated"].as_bool().unwrap();
                assert_eq!(done, last);
                if !last {
                    assert_eq!(l["next_obs"], lines[i + 1]["obs"]);
                }
                i += 1;
            }
            assert_eq!(ret, s.ret);
        }
    }

    #[test]
    fn a_seed_reproduces_the_trace() {
        assert_eq!(trace("Acrobot-v1", 9).1, trace("Acrobot-v1", 9).1);
        assert_ne!(trace("Acrobot-v1", 9).1, trace("Acrobot-v1", 10).1);
    }
}
