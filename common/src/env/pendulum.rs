//! Placeholder, replaced by the real environment.
use super::{Env, EnvError, Step};
use crate::space::{ActionRef, Space};
use serde::Deserialize;
pub const ID: &str = "Pendulum-v1";
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PendulumConfig {
    pub max_episode_steps: u32,
}
impl Default for PendulumConfig {
    fn default() -> Self {
        Self {
            max_episode_steps: 1,
        }
    }
}
pub struct Pendulum {
    space: Space,
}
impl Pendulum {
    pub fn new(_c: PendulumConfig) -> Result<Self, EnvError> {
        Ok(Self {
            space: Space::Discrete { n: 2 },
        })
    }
}
impl Env for Pendulum {
    fn id(&self) -> &'static str {
        ID
    }
    fn observation_space(&self) -> &Space {
        &self.space
    }
    fn action_space(&self) -> &Space {
        &self.space
    }
    fn reset(&mut self, _seed: Option<u64>, _obs: &mut [f32]) {
        todo!()
    }
    fn step(&mut self, _a: ActionRef<'_>, _obs: &mut [f32]) -> Step {
        todo!()
    }
}
