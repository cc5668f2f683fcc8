//! Flotilla's shared ground: the generated wire types, the environments and
//! their spaces, and the pieces both the actor and the learner need.
//!
//! Nothing here links libtorch: the actor depends on this crate and stays small.

pub mod auth;
pub mod checkpoint;
pub mod chunk;
pub mod cli;
pub mod codec;
pub mod conv;
pub mod env;
pub mod fastmath;
pub mod metrics;
pub mod model;
pub mod normalize;
pub mod policy;
pub mod proto;
pub mod render;
pub mod rollout;
pub mod run_spec;
pub mod space;
pub mod testing;
pub mod tls;
pub mod vec_env;

pub use env::{make_env, Env, EnvError, EnvSpec, Step};
pub use policy::Snapshot;
pub use run_spec::RunSpec;
pub use space::{ActionRef, Space, Spaces};
pub use vec_env::VecEnv;
