//! The Flotilla learner: the only crate that links libtorch.
//!
//! Stages (docs/architecture.md has the picture): [`server`] (gRPC edge and
//! ingest gate) → [`train`] (batcher, learning, publisher, recorder) on the
//! trainer thread; [`algo`] holds the pure tensor functions of the
//! policy-gradient family; [`run`] composes one run.

pub mod algo;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod live;
pub mod model;
pub mod plot;
pub mod run;
pub mod server;
pub mod tensorboard;
#[cfg(test)]
mod test_util;
pub mod testing;
pub mod train;
