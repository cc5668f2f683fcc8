//! The actor's environment thread: steps the `VecEnv`, runs CPU inference,
//! packs one chunk every T steps and hands it to the network side.
//!
//! New weights are picked up between chunks, so every chunk is acted with one
//! policy version, which it carries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use flotilla_common::chunk::ChunkBuilder;
use flotilla_common::env::EnvSpec;
use flotilla_common::metrics as m;
use flotilla_common::model::ModelSpec;
use flotilla_common::policy::CpuPolicy;
use flotilla_common::proto;
use flotilla_common::{Space, VecEnv};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::Snapshot;

/// What the worker needs to know about the run.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    pub env: EnvSpec,
    pub model: ModelSpec,
    pub chunk_len: usize,
    pub num_envs: usize,
    pub observation_space: Space,
    pub action_space: Space,
    pub behavior_values: bool,
    pub seed: u64,
}

/// Runs until `stop` is raised or the chunk receiver is gone.
pub fn run(
    spec: WorkerSpec,
    mut snapshots: watch::Receiver<Option<Snapshot>>,
    chunks: mpsc::Sender<proto::Chunk>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let obs_dim = spec.observation_space.flat_dim();
    let mut envs = VecEnv::new(&spec.env, spec.num_envs, spec.seed).map_err(|e| e.to_string())?;
    let mut rng = Pcg64Mcg::seed_from_u64(spec.seed ^ 0xac70_12ac_7012);
    let mut builder = ChunkBuilder::new(
        spec.chunk_len,
        spec.num_envs,
        obs_dim,
        spec.action_space.clone(),
    );
    let mut policy: Option<(u64, CpuPolicy)> = None;
    let n = spec.num_envs;
    builder.begin(envs.observations());
    while !stop.load(Ordering::Relaxed) {
        // Between chunks: take the newest snapshot, if any arrived.
        if snapshots.has_changed().unwrap_or(false) || policy.is_none() {
            let snap = snapshots.borrow_and_update().clone();
            if let Some(s) = snap {
                if policy.as_ref().map(|(v, _)| *v) != Some(s.version) {
                    match CpuPolicy::from_safetensors(
                        &spec.model,
                        obs_dim,
                        &spec.action_space,
                        &s.safetensors,
                    ) {
                        Ok(p) => {
                            debug!(version = s.version, "policy updated");
                            metrics::gauge!(m::ACTOR_POLICY_VERSION).set(s.version as f64);
                            policy = Some((s.version, p));
                        }
                        Err(e) => {
                            warn!(version = s.version, error = %e, "ignoring unusable policy snapshot")
                        }
                    }
                }
            }
        }
        let Some((version, p)) = policy.as_ref() else {
            // Nothing to act with yet: wait for the first snapshot.
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        };
        for _ in 0..spec.chunk_len {
            let t0 = Instant::now();
            let obs = ArrayView2::from_shape((n, obs_dim), envs.observations())
                .map_err(|e| format!("observation buffer: {e}"))?;
            let s = p.act(obs, spec.behavior_values, false, &mut rng);
            metrics::histogram!(m::ACTOR_INFERENCE_DURATION).record(t0.elapsed().as_secs_f64());
            if s.discrete.is_empty() {
                envs.step_continuous(&s.continuous);
                builder.push_continuous(&s.continuous, &s.logp, s.value.as_deref(), &envs);
            } else {
                envs.step_discrete(&s.discrete);
                builder.push_discrete(&s.discrete, &s.logp, s.value.as_deref(), &envs);
            }
            let finished = envs.finished_episodes().len() as u64;
            if finished > 0 {
                metrics::counter!(m::ACTOR_EPISODES).increment(finished);
            }
        }
        metrics::counter!(m::ACTOR_ENV_STEPS).increment((spec.chunk_len * n) as u64);
        // Identity (run, actor id, sequence) is stamped by the connection that sends it.
        let chunk = builder.finish("", &spec.env.id, 0, 0, *version);
        if chunks.blocking_send(chunk).is_err() {
            break;
        }
    }
    Ok(())
}
