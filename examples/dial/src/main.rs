//! `dial-actor`: Flotilla's actor with an environment of its own.
//!
//! `Dial-v0` is a dial with 21 positions and a target position, both drawn
//! at random when an episode starts. Each step the agent turns the dial one
//! position down, leaves it, or turns it one up, and is charged the distance
//! still to go: reward `-|position - target| / 20`. Episodes last 20 steps
//! (truncated, never terminated). Standing still scores about -7 on average,
//! a random policy about as badly; turning straight to the target and
//! staying there scores about -1.7.
//!
//! The whole program is the environment and one line of `main`:
//! [`flotilla_actor::app::main_with_env`] gives it every flag of the
//! `actor` binary. Train it with a learner whose config says
//!
//! ```toml
//! [env]
//! id = "Dial-v0"
//! source = "external"
//! ```
//!
//! (`configs/dial.toml`), then start as many `dial-actor --learner URL` as
//! you like.

use flotilla_common::{ActionRef, Env, Space, Step};
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;

/// The environment's id, as the run config names it.
pub const ID: &str = "Dial-v0";
const POSITIONS: i32 = 21;
const EPISODE_STEPS: u32 = 20;

struct Dial {
    observation_space: Space,
    action_space: Space,
    rng: Pcg64Mcg,
    position: i32,
    target: i32,
    steps: u32,
}

impl Dial {
    fn new() -> Self {
        Dial {
            // Position and target, each scaled to [0, 1].
            observation_space: Space::uniform_box(0.0, 1.0, 2),
            // 0: one down, 1: stay, 2: one up.
            action_space: Space::Discrete { n: 3 },
            rng: Pcg64Mcg::seed_from_u64(0),
            position: 0,
            target: 0,
            steps: 0,
        }
    }

    fn observe(&self, obs: &mut [f32]) {
        let scale = (POSITIONS - 1) as f32;
        obs[0] = self.position as f32 / scale;
        obs[1] = self.target as f32 / scale;
    }
}

impl Env for Dial {
    fn id(&self) -> &'static str {
        ID
    }

    fn observation_space(&self) -> &Space {
        &self.observation_space
    }

    fn action_space(&self) -> &Space {
        &self.action_space
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(seed) = seed {
            self.rng = Pcg64Mcg::seed_from_u64(seed);
        }
        self.position = self.rng.random_range(0..POSITIONS);
        self.target = self.rng.random_range(0..POSITIONS);
        self.steps = 0;
        self.observe(obs);
    }

    fn step(&mut self, action: ActionRef<'_>, obs: &mut [f32]) -> Step {
        let ActionRef::Discrete(a) = action else {
            panic!("Dial-v0 takes discrete actions, got {action:?}");
        };
        assert!(a < 3, "Dial-v0 has 3 actions, got {a}");
        self.position = (self.position + a as i32 - 1).clamp(0, POSITIONS - 1);
        self.steps += 1;
        self.observe(obs);
        Step {
            reward: -((self.position - self.target).abs() as f32) / 20.0,
            terminated: false,
            truncated: self.steps >= EPISODE_STEPS,
        }
    }
}

fn main() -> std::process::ExitCode {
    flotilla_actor::app::main_with_env(|| Box::new(Dial::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turning_toward_the_target_beats_standing_still() {
        let mut env = Dial::new();
        let mut obs = [0.0; 2];
        let (mut toward, mut still) = (0.0, 0.0);
        for seed in 0..50 {
            for (policy, total) in [(true, &mut toward), (false, &mut still)] {
                env.reset(Some(seed), &mut obs);
                loop {
                    let a = match (policy, env.position.cmp(&env.target)) {
                        (false, _) | (true, std::cmp::Ordering::Equal) => 1,
                        (true, std::cmp::Ordering::Less) => 2,
                        (true, std::cmp::Ordering::Greater) => 0,
                    };
                    let s = env.step(ActionRef::Discrete(a), &mut obs);
                    *total += f64::from(s.reward);
                    assert!(!s.terminated);
                    if s.truncated {
                        assert_eq!(env.steps, EPISODE_STEPS);
                        break;
                    }
                }
            }
        }
        let (toward, still) = (toward / 50.0, still / 50.0);
        assert!(
            toward > -2.0 && still < -5.0,
            "toward {toward}, still {still}"
        );
        assert!(obs.iter().all(|x| (0.0..=1.0).contains(x)));
    }
}
