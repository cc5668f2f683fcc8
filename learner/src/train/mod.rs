//! The trainer thread and its stages.
//!
//! ```text
//! ingest channel ─► Batcher ─► Learning::update ─► Recorder ─────► Publisher ─► checkpoint
//!  (admitted         admit,      batch assembly,     Prometheus +    version+1,    every K
//!   chunks)          stitch,     values, advantages, metrics.jsonl   safetensors   versions
//!                    order       epochs×minibatches  (before actors  once
//!                                                     see the version)
//! ```
//!
//! Each stage owns its state: the [`batcher::Batcher`] the pending chunks,
//! [`learn::Learning`] the policy, optimizer and KL penalty (all libtorch,
//! hence one thread), the [`publisher::Publisher`] the policy version, the
//! [`recorder::Counters`] every count the outside world reads.

pub mod batch;
pub mod batcher;
pub mod eval;
pub mod learn;
pub mod normalize;
pub mod publisher;
pub mod recorder;
pub mod threads;
pub mod update;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use flotilla_common::metrics as m;
use tracing::{info, warn};

use crate::checkpoint::{self, CheckpointData, CheckpointMeta};
use crate::server::Admitted;
use batch::Item;
use batcher::Batcher;
use learn::Learning;
use publisher::{Pacing, Publisher};
use recorder::{Counters, Recorder};
use threads::TorchThreads;

pub use update::{evaluate, policy_update, ppo_update, Batch, UpdateStats};

/// How the run ended.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub version: u64,
    pub env_steps: u64,
    pub final_checkpoint: Option<PathBuf>,
    pub reached_total: bool,
}

/// Errors that end training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("metrics log: {0}")]
    Log(#[from] std::io::Error),
}

/// Where and how often checkpoints are written, and what identifies them.
pub struct Checkpoints {
    pub run_dir: PathBuf,
    pub run_id: String,
    pub config_toml: String,
    /// The run's spaces, recorded in every checkpoint.
    pub spaces: flotilla_common::Spaces,
    /// Every this many versions.
    pub every: u64,
    pub keep: usize,
}

/// The trainer thread's state, one owner per stage.
pub struct Trainer {
    pub(crate) rx: Receiver<Box<Admitted>>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) batcher: Batcher,
    pub(crate) learning: Learning,
    pub(crate) publisher: Publisher,
    pub(crate) counters: Arc<Counters>,
    pub(crate) recorder: Recorder,
    pub(crate) checkpoints: Checkpoints,
    pub(crate) total_env_steps: u64,
    pub(crate) threads: TorchThreads,
    pub(crate) pacing: Pacing,
    /// `counters.stale_samples` at the last update.
    pub(crate) stale_seen: u64,
    /// `[eval]`: every this many versions, the snapshot goes to the
    /// evaluator (skipped while it is [`eval::BACKLOG`] behind).
    pub(crate) evaluations: Option<(u64, crossbeam_channel::Sender<flotilla_common::Snapshot>)>,
}

impl Trainer {
    /// Trains until the step budget is spent or `stop` is raised; writes a final checkpoint.
    pub fn run(mut self) -> Result<TrainSummary, TrainError> {
        let mut reached_total = false;
        self.threads.start();
        metrics::gauge!(m::LAST_UPDATE_TIME).set(m::unix_now());
        while !self.stop.load(Ordering::Relaxed) {
            if self.env_steps() >= self.total_env_steps {
                reached_total = true;
                break;
            }
            let admitted = match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(c) => c,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            metrics::gauge!(m::INGEST_QUEUE_DEPTH).set(self.rx.len() as f64);
            if let Some(batch) = self.batcher.push(*admitted, self.publisher.version()) {
                self.pacing.batch_ready(std::time::Instant::now());
                if let Some(version) = self.update(batch)? {
                    if version.is_multiple_of(self.checkpoints.every) {
                        self.checkpoint()?;
                    }
                }
            }
        }
        let path = self.checkpoint()?;
        self.recorder.flush()?;
        Ok(TrainSummary {
            version: self.publisher.version(),
            env_steps: self.env_steps(),
            final_checkpoint: Some(path),
            reached_total,
        })
    }

    /// Whether samples were dropped as stale since the last call.
    fn stale_grew(&mut self) -> bool {
        let now = self.counters.stale_samples.load(Ordering::Relaxed);
        let grew = now > self.stale_seen;
        self.stale_seen = now;
        grew
    }

    fn env_steps(&self) -> u64 {
        self.counters.env_steps.load(Ordering::Relaxed)
    }

    /// Trains on one batch, records and publishes the new version; `None`
    /// when the update was undone for non-finite numbers (nothing is
    /// published or counted as trained then).
    fn update(&mut self, items: Vec<Item>) -> Result<Option<u64>, TrainError> {
        let acting = self.publisher.version();
        let lags: Vec<u64> = items
            .iter()
            .map(|i| acting.saturating_sub(i.chunk.policy_version))
            .collect();
        self.threads.before_update();
        let mut stats = match self.learning.update(items, self.env_steps()) {
            Ok(stats) => stats,
            Err(undone) => {
                let stale = self.stale_grew();
                self.pacing
                    .update_done(std::time::Instant::now(), undone.stats.seconds, stale);
                self.recorder.skipped(&undone.stats);
                return Ok(None);
            }
        };
        let t0 = std::time::Instant::now();
        let stale = self.stale_grew();
        self.pacing.update_done(t0, stats.seconds, stale);
        let queued = self.counters.queued_samples.load(Ordering::Relaxed)
            + self.batcher.pending_samples() as u64;
        let advice = self.pacing.samples_per_version(
            self.counters.streaming_actors.load(Ordering::Relaxed),
            queued,
        );
        let snapshot = self.publisher.next(self.learning.snapshot(), advice);
        stats.seconds += t0.elapsed().as_secs_f64();
        let version = snapshot.version;
        // Recorded before actors can see the version: in sync mode nothing
        // arrives between the two, so a seeded run's log repeats exactly.
        self.recorder.update(&stats, lags, version)?;
        if let Some((every, tx)) = &self.evaluations {
            if version.is_multiple_of(*every) {
                let _ = tx.try_send(snapshot.clone());
            }
        }
        self.publisher.publish(snapshot);
        self.threads
            .after_update(stats.samples, std::time::Instant::now());
        Ok(Some(version))
    }

    /// Host copy of the full training state.
    pub fn checkpoint_data(&self) -> CheckpointData {
        let c = &self.counters;
        let l = &self.learning;
        CheckpointData {
            meta: CheckpointMeta {
                run_id: self.checkpoints.run_id.clone(),
                version: self.publisher.version(),
                adam_step: l.adam.step,
                env_steps: c.env_steps.load(Ordering::Relaxed),
                samples_received: c.samples_received.load(Ordering::Relaxed),
                episodes: c.episodes.load(Ordering::Relaxed),
                config_toml: self.checkpoints.config_toml.clone(),
                kl_coef: l.kl_coef(),
                spaces: Some(self.checkpoints.spaces.clone()),
                normalization: l.norm.is_on().then(|| l.norm.state()),
            },
            model: l.policy.host_parameters(),
            adam_m: l.policy.split_flat(&l.adam.m),
            adam_v: l.policy.split_flat(&l.adam.v),
        }
    }

    fn checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        let path = checkpoint::save(
            &self.checkpoints.run_dir,
            &self.checkpoint_data(),
            self.checkpoints.keep,
        )?;
        metrics::counter!(m::CHECKPOINTS_WRITTEN).increment(1);
        self.counters
            .board
            .checkpoint(&path, self.publisher.version());
        info!(path = %path.display(), "checkpoint written");
        Ok(path)
    }
}

/// Restores the policy, the optimizer and the counters from a checkpoint;
/// the version is the publisher's to take (see [`Publisher::new`]).
pub fn restore(
    learning: &mut Learning,
    counters: &Counters,
    run_id: &str,
    data: &CheckpointData,
) -> Result<(), crate::model::ModelError> {
    learning.policy.load_parameters(&data.model)?;
    learning.adam.m = learning.policy.join_flat(&data.adam_m)?;
    learning.adam.v = learning.policy.join_flat(&data.adam_v)?;
    learning.adam.step = data.meta.adam_step;
    learning
        .norm
        .restore(data.meta.normalization.as_ref())
        .map_err(crate::model::ModelError::Statistics)?;
    counters
        .env_steps
        .store(data.meta.env_steps, Ordering::Relaxed);
    counters
        .samples_received
        .store(data.meta.samples_received, Ordering::Relaxed);
    counters
        .episodes
        .store(data.meta.episodes, Ordering::Relaxed);
    if data.meta.run_id != run_id {
        warn!(checkpoint = %data.meta.run_id, "checkpoint run id differs");
    }
    Ok(())
}
