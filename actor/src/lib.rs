//! The Flotilla actor: steps environments with the newest policy and streams
//! trajectories to the learner. This crate never links libtorch.

pub mod app;
pub mod client;
pub mod rollout;
pub mod worker;

pub use client::{run, ActorError, ActorOptions, ActorSummary, MakeEnv, OwnEnv};
