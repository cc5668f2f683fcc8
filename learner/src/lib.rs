//! The Flotilla learner: the only crate that links libtorch.

pub mod adam;
pub mod algo;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod distributions;
pub mod episodes;
pub mod gae;
pub mod model;
pub mod plot;
pub mod ppo;
pub mod run;
pub mod service;
#[cfg(test)]
mod test_util;
pub mod trainer;
pub mod vtrace;
