//! Placeholder, replaced by the real environment.
use super::{Env, EnvError, Step};
use crate::space::{ActionRef, Space};
use serde::Deserialize;
pub const ID: &str = "Acrobot-v1";
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcrobotConfig {
    pub max_episode_steps: u32,
}
impl Default for AcrobotConfig {
    fn default() -> Self {
        Self {
            max_episode_steps: 1,
        }
    }
}
pub struct Acrobot {
    space: Space,
}
impl Acrobot {
    pub fn new(_c: AcrobotConfig) -> Result<Self, EnvError> {
        Ok(Self {
            space: Space::Discrete { n: 2 },
        })
    }
}
impl Env for Acrobot {
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
