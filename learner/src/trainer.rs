//! The trainer thread: owns the policy, the optimizer and all libtorch state.
//!
//! It gathers validated chunks until a batch of `ppo.batch_size` transitions is
//! ready, recomputes values with the current critic (also for the true final
//! observations of finished episodes), computes the algorithm's advantages on
//! the device (GAE, V-trace or Monte-Carlo returns; see [`crate::algo`]), runs
//! its update schedule, then publishes the new version once as safetensors
//! bytes. It also writes checkpoints and the metrics log.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use flotilla_common::chunk::{Actions, Chunk};
use flotilla_common::metrics as m;
use tch::{Device, Kind, Tensor};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::adam::Adam;
use crate::algo::{self, Estimator, KlController, PolicyLoss, UpdatePlan};
use crate::checkpoint::{self, CheckpointData, CheckpointMeta};
use crate::config::{PpoSection, RunConfig};
use crate::distributions::{Categorical, DiagGaussian};
use crate::episodes::EpisodeStitcher;
use crate::gae::gae;
use crate::model::Policy;
use crate::ppo;
use crate::service::{Ingested, Snapshot};
use crate::vtrace::vtrace;

/// Counters shared with the progress printer and the service.
#[derive(Default)]
pub struct Progress {
    pub version: Arc<AtomicU64>,
    pub env_steps: AtomicU64,
    pub episodes: AtomicU64,
    pub updates: AtomicU64,
    pub samples_received: AtomicU64,
    /// Transitions of chunks dropped as stale (ingest or trainer).
    pub stale_samples: Arc<AtomicU64>,
    /// Seconds spent training (f64 bits), for the learner-idle fraction.
    pub busy_seconds_bits: AtomicU64,
    pub recent: Mutex<Recent>,
}

/// Windows over recent events.
#[derive(Default)]
pub struct Recent {
    /// (return, length) of the last 100 finished episodes.
    pub episodes: VecDeque<(f32, u32)>,
    /// Policy lag of the chunks in the last batch.
    pub lags: Vec<u64>,
    pub last_update: Option<UpdateStats>,
}

impl Recent {
    pub fn mean_return(&self) -> Option<f64> {
        (!self.episodes.is_empty()).then(|| {
            self.episodes
                .iter()
                .map(|&(r, _)| f64::from(r))
                .sum::<f64>()
                / self.episodes.len() as f64
        })
    }

    pub fn mean_length(&self) -> Option<f64> {
        (!self.episodes.is_empty()).then(|| {
            self.episodes
                .iter()
                .map(|&(_, l)| f64::from(l))
                .sum::<f64>()
                / self.episodes.len() as f64
        })
    }

    pub fn median_lag(&self) -> Option<u64> {
        let mut l = self.lags.clone();
        l.sort_unstable();
        l.get(l.len() / 2).copied()
    }
}

impl Progress {
    pub fn busy_seconds(&self) -> f64 {
        f64::from_bits(self.busy_seconds_bits.load(Ordering::Relaxed))
    }

    fn add_busy(&self, s: f64) {
        let v = self.busy_seconds() + s;
        self.busy_seconds_bits.store(v.to_bits(), Ordering::Relaxed);
    }
}

/// Statistics of one update.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct UpdateStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    pub approx_kl: f64,
    pub clip_fraction: f64,
    pub explained_variance: f64,
    pub grad_norm: f64,
    pub learning_rate: f64,
    /// Mean per-step log π − log π_ref of the batch (KL penalty runs; else 0).
    pub kl_reference: f64,
    /// KL penalty coefficient used for the batch (0 without a penalty).
    pub kl_coef: f64,
    pub epochs: usize,
    pub samples: usize,
    pub seconds: f64,
}

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
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Everything the trainer thread owns.
pub struct Trainer {
    pub cfg: RunConfig,
    pub run_id: String,
    pub run_dir: PathBuf,
    pub policy: Policy,
    pub adam: Adam,
    pub rx: Receiver<Ingested>,
    pub snapshots: watch::Sender<Arc<Snapshot>>,
    pub progress: Arc<Progress>,
    pub stop: Arc<AtomicBool>,
    pub started: Instant,
    pub log: Option<BufWriter<File>>,
    /// Estimator, loss and schedule of the configured algorithm.
    pub plan: UpdatePlan,
    /// Frozen reference policy and controller of the KL penalty, if enabled.
    pub kl: Option<(Policy, KlController)>,
    /// REINFORCE's per-actor buffers of unfinished episodes.
    pub stitcher: Option<EpisodeStitcher>,
}

/// A chunk on its way into a batch.
pub struct Item {
    pub chunk: Chunk,
    /// `[N]` Monte-Carlo returns from the step after the chunk's end
    /// (REINFORCE only; see [`EpisodeStitcher`]).
    pub tail_returns: Option<Vec<f32>>,
}

impl Item {
    pub fn new(chunk: Chunk) -> Self {
        Item {
            chunk,
            tail_returns: None,
        }
    }
}

/// A batch on the device, flattened to `[B, ...]`.
pub struct Batch {
    pub obs: Tensor,
    /// `[B]` i64 for Discrete, `[B, A]` f32 for Box.
    pub actions: Tensor,
    pub old_logp: Tensor,
    pub old_values: Tensor,
    pub advantages: Tensor,
    pub returns: Tensor,
    pub len: i64,
}

impl Trainer {
    /// Publishes the current weights as `version` (used at start-up and after each update).
    pub fn publish(&self, version: u64) {
        let bytes = Bytes::from(self.policy.to_safetensors());
        self.progress.version.store(version, Ordering::Release);
        metrics::gauge!(m::POLICY_VERSION).set(version as f64);
        // send_replace never fails, even with no subscriber yet.
        self.snapshots.send_replace(Arc::new(Snapshot {
            version,
            safetensors: bytes,
        }));
    }

    /// Trains until the step budget is spent or `stop` is raised; writes a final checkpoint.
    pub fn run(mut self) -> Result<TrainSummary, TrainError> {
        let total = self.cfg.run.total_env_steps;
        let mut pending: Vec<Item> = Vec::new();
        let mut pending_samples = 0usize;
        let mut reached_total = false;
        while !self.stop.load(Ordering::Relaxed) {
            if self.progress.env_steps.load(Ordering::Relaxed) >= total {
                reached_total = true;
                break;
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(item) => {
                    metrics::gauge!(m::INGEST_QUEUE_DEPTH).set(self.rx.len() as f64);
                    if let Some(c) = self.admit(item) {
                        for it in self.stitch(c) {
                            pending_samples += it.chunk.num_samples();
                            pending.push(it);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if pending_samples >= self.cfg.ppo.batch_size {
                let mut chunks = std::mem::take(&mut pending);
                pending_samples = 0;
                if self.cfg.sync {
                    // Arrival order varies between runs; identity does not.
                    chunks.sort_by_key(|i| (i.chunk.actor_id, i.chunk.sequence));
                    for i in &chunks {
                        self.record_episodes(&i.chunk);
                    }
                }
                self.update(chunks)?;
                let version = self.progress.version.load(Ordering::Relaxed);
                if version.is_multiple_of(self.cfg.run.checkpoint_every) {
                    self.checkpoint()?;
                }
            }
        }
        let path = self.checkpoint()?;
        if let Some(log) = self.log.as_mut() {
            log.flush()?;
        }
        Ok(TrainSummary {
            version: self.progress.version.load(Ordering::Relaxed),
            env_steps: self.progress.env_steps.load(Ordering::Relaxed),
            final_checkpoint: Some(path),
            reached_total,
        })
    }

    /// Drops chunks that became too stale while queued; records episode stats.
    fn admit(&self, item: Ingested) -> Option<Chunk> {
        let c = *item.chunk;
        let version = self.progress.version.load(Ordering::Relaxed);
        let lag = version.saturating_sub(c.policy_version);
        if lag > self.cfg.ingest.max_policy_lag || (self.cfg.sync && lag > 0) {
            metrics::counter!(m::CHUNKS_DROPPED, "reason" => "stale").increment(1);
            self.progress
                .stale_samples
                .fetch_add(c.num_samples() as u64, Ordering::Relaxed);
            return None;
        }
        self.progress
            .samples_received
            .fetch_add(c.num_samples() as u64, Ordering::Relaxed);
        if !self.cfg.sync {
            self.record_episodes(&c);
        }
        Some(c)
    }

    /// Adds a chunk's finished episodes to the counters and the recent window.
    fn record_episodes(&self, c: &Chunk) {
        let n_eps = c.episode_returns.len();
        if n_eps > 0 {
            self.progress
                .episodes
                .fetch_add(n_eps as u64, Ordering::Relaxed);
            metrics::counter!(m::EPISODES).increment(n_eps as u64);
            if let Ok(mut r) = self.progress.recent.lock() {
                for (&ret, &len) in c.episode_returns.iter().zip(&c.episode_lengths) {
                    if r.episodes.len() == 100 {
                        r.episodes.pop_front();
                    }
                    r.episodes.push_back((ret, len));
                }
                metrics::gauge!(m::EPISODE_RETURN_MEAN).set(r.mean_return().unwrap_or(0.0));
                metrics::gauge!(m::EPISODE_LENGTH_MEAN).set(r.mean_length().unwrap_or(0.0));
            }
        }
    }

    /// Passes a chunk on, or (REINFORCE) holds it until its episodes end and
    /// passes on what became complete.
    fn stitch(&mut self, c: Chunk) -> Vec<Item> {
        let Some(stitcher) = self.stitcher.as_mut() else {
            return vec![Item::new(c)];
        };
        let (released, discarded) = stitcher.push(c);
        if discarded.chunks > 0 {
            metrics::counter!(m::CHUNKS_DROPPED, "reason" => "incomplete_episode")
                .increment(discarded.chunks as u64);
            warn!(
                chunks = discarded.chunks,
                samples = discarded.samples,
                "discarded chunks whose episodes cannot be completed"
            );
        }
        released
            .into_iter()
            .map(|r| Item {
                chunk: r.chunk,
                tail_returns: Some(r.tail_returns),
            })
            .collect()
    }

    /// Assembles chunks into device tensors with values, advantages and
    /// value targets; returns the batch and the mean KL to the reference
    /// (0 without a KL penalty).
    pub fn build_batch(&self, items: &[Item]) -> (Batch, f64) {
        let device = self.policy.device();
        let d = self.policy.obs_dim() as i64;
        let gamma = self.cfg.ppo.gamma;
        let lambda = self.cfg.ppo.gae_lambda;
        let v = &self.cfg.vtrace;
        let chunks: Vec<&Chunk> = items.iter().map(|i| &i.chunk).collect();
        let (mut kl_sum, mut kl_n) = (0.0, 0i64);
        // Chunks of equal length T are laid side by side along the env axis
        // and processed in one pass; a shorter (final) chunk forms its own group.
        let mut lens: Vec<usize> = chunks.iter().map(|c| c.t).collect();
        lens.sort_unstable();
        lens.dedup();
        let mut parts: Vec<Batch> = Vec::new();
        for t in lens {
            let group: Vec<&Chunk> = chunks.iter().copied().filter(|c| c.t == t).collect();
            let ti = t as i64;
            let host = |f: &dyn Fn(&Chunk) -> Tensor| -> Tensor {
                Tensor::cat(&group.iter().map(|c| f(c)).collect::<Vec<_>>(), 1).to_device(device)
            };
            let obs = host(&|c| Tensor::from_slice(&c.obs).view([ti + 1, c.n as i64, d]));
            let rewards = host(&|c| Tensor::from_slice(&c.rewards).view([ti, c.n as i64]));
            let flags = |v: &[bool]| {
                v.iter()
                    .map(|&b| if b { 1.0f32 } else { 0.0 })
                    .collect::<Vec<f32>>()
            };
            let terminated =
                host(&|c| Tensor::from_slice(&flags(&c.terminated)).view([ti, c.n as i64]));
            let truncated =
                host(&|c| Tensor::from_slice(&flags(&c.truncated)).view([ti, c.n as i64]));
            let old_logp = host(&|c| Tensor::from_slice(&c.behavior_logp).view([ti, c.n as i64]));
            let actions = host(&|c| match &c.actions {
                Actions::Discrete(a) => Tensor::from_slice(a).view([ti, c.n as i64]),
                Actions::Continuous(a) => Tensor::from_slice(a).view([ti, c.n as i64, -1]),
            });
            let total_n: i64 = group.iter().map(|c| c.n as i64).sum();
            // Final observations, placed at their flat [T, ΣN] positions.
            let mut fin_idx: Vec<i64> = Vec::new();
            let mut fin_obs: Vec<f32> = Vec::new();
            let mut offset = 0i64;
            for c in &group {
                for (k, &i) in c.final_obs_index.iter().enumerate() {
                    let (step, env) = (i as i64 / c.n as i64, i as i64 % c.n as i64);
                    fin_idx.push(step * total_n + offset + env);
                    fin_obs.extend_from_slice(&c.final_obs[k * d as usize..(k + 1) * d as usize]);
                }
                offset += c.n as i64;
            }
            let (values, final_values) = if !self.plan.needs_values() {
                (
                    Tensor::zeros([ti + 1, total_n], (Kind::Float, device)),
                    Tensor::zeros([ti, total_n], (Kind::Float, device)),
                )
            } else {
                tch::no_grad(|| {
                    let values = self
                        .policy
                        .value(&obs.view([-1, d]))
                        .view([ti + 1, total_n]);
                    let final_values = Tensor::zeros([ti * total_n], (Kind::Float, device));
                    let final_values = if fin_idx.is_empty() {
                        final_values
                    } else {
                        let fv = self
                            .policy
                            .value(&Tensor::from_slice(&fin_obs).view([-1, d]).to_device(device));
                        let idx = Tensor::from_slice(&fin_idx).to_device(device);
                        final_values.index_put(&[Some(idx)], &fv, false)
                    };
                    (values, final_values.view([ti, total_n]))
                })
            };
            let b = ti * total_n;
            let act = if actions.dim() == 3 {
                actions.view([b, -1])
            } else {
                actions.view([b])
            };
            let obs_flat = obs.narrow(0, 0, ti).reshape([b, d]);
            let mut rewards = rewards;
            if let Some((reference, ctl)) = &self.kl {
                let ref_logp = tch::no_grad(|| evaluate(reference, &obs_flat, &act).0);
                let (penalty, mean) =
                    algo::kl_penalty(&old_logp, &ref_logp.view([ti, total_n]), ctl.coef);
                rewards = &rewards - penalty;
                kl_sum += mean * b as f64;
                kl_n += b;
            }
            let (adv, ret) = match self.plan.estimator {
                Estimator::Gae => gae(
                    &rewards,
                    &values,
                    &terminated,
                    &truncated,
                    &final_values,
                    gamma,
                    lambda,
                ),
                Estimator::MonteCarlo { .. } => {
                    // G_t = r_t + γ(1 − done_t)G_{t+1}, seeded with the return
                    // from after the chunk; V(s_t) (or 0) as the baseline.
                    let tails: Vec<f32> = group
                        .iter()
                        .flat_map(|c| {
                            items
                                .iter()
                                .find(|i| std::ptr::eq(&i.chunk, *c))
                                .and_then(|i| i.tail_returns.clone())
                                .unwrap_or_else(|| vec![0.0; c.n])
                        })
                        .collect();
                    let tail = Tensor::from_slice(&tails)
                        .view([1, total_n])
                        .to_device(device);
                    let seeded = Tensor::cat(&[values.narrow(0, 0, ti), tail], 0);
                    gae(
                        &rewards,
                        &seeded,
                        &terminated,
                        &truncated,
                        &final_values.zeros_like(),
                        gamma,
                        1.0,
                    )
                }
                Estimator::Vtrace { weighted } => {
                    let logp_now = tch::no_grad(|| evaluate(&self.policy, &obs_flat, &act).0);
                    let out = vtrace(
                        &rewards,
                        &values,
                        &terminated,
                        &truncated,
                        &final_values,
                        &(logp_now.view([ti, total_n]) - &old_logp),
                        gamma,
                        v.rho_bar,
                        v.c_bar,
                    );
                    let adv = if weighted {
                        &out.advantages * &out.clipped_rhos
                    } else {
                        out.advantages
                    };
                    (adv, out.targets)
                }
            };
            parts.push(Batch {
                obs: obs_flat,
                actions: act,
                old_logp: old_logp.reshape([b]),
                old_values: values.narrow(0, 0, ti).reshape([b]),
                advantages: adv.reshape([b]),
                returns: ret.reshape([b]),
                len: b,
            });
        }
        let kl_mean = if kl_n > 0 { kl_sum / kl_n as f64 } else { 0.0 };
        if parts.len() == 1 {
            return (parts.pop().expect("one part"), kl_mean);
        }
        let cat = |f: &dyn Fn(&Batch) -> &Tensor| {
            Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0)
        };
        let batch = Batch {
            obs: cat(&|b| &b.obs),
            actions: cat(&|b| &b.actions),
            old_logp: cat(&|b| &b.old_logp),
            old_values: cat(&|b| &b.old_values),
            advantages: cat(&|b| &b.advantages),
            returns: cat(&|b| &b.returns),
            len: parts.iter().map(|b| b.len).sum(),
        };
        (batch, kl_mean)
    }

    fn update(&mut self, chunks: Vec<Item>) -> Result<(), TrainError> {
        let t0 = Instant::now();
        let version = self.progress.version.load(Ordering::Relaxed);
        let lags: Vec<u64> = chunks
            .iter()
            .map(|c| version.saturating_sub(c.chunk.policy_version))
            .collect();
        let (batch, kl_mean) = self.build_batch(&chunks);
        drop(chunks);
        let p = &self.cfg.ppo;
        let steps_before = self.progress.env_steps.load(Ordering::Relaxed);
        let lr = if p.anneal_lr {
            let frac = 1.0 - steps_before as f64 / self.cfg.run.total_env_steps as f64;
            p.learning_rate * frac.max(0.0)
        } else {
            p.learning_rate
        };
        let mut stats = policy_update(&self.policy, &mut self.adam, &batch, &self.plan, p, lr);
        if let Some((_, ctl)) = self.kl.as_mut() {
            stats.kl_reference = kl_mean;
            stats.kl_coef = ctl.coef;
            ctl.update(kl_mean, batch.len as usize);
        }
        let new_version = version + 1;
        self.publish(new_version);
        stats.seconds = t0.elapsed().as_secs_f64();
        self.progress
            .env_steps
            .fetch_add(batch.len as u64, Ordering::Relaxed);
        self.progress.updates.fetch_add(1, Ordering::Relaxed);
        self.progress.add_busy(stats.seconds);
        self.record(&stats, lags, new_version)?;
        Ok(())
    }

    fn record(&mut self, s: &UpdateStats, lags: Vec<u64>, version: u64) -> Result<(), TrainError> {
        metrics::counter!(m::LEARNER_UPDATES).increment(1);
        metrics::counter!(m::LEARNER_SAMPLES_TRAINED).increment(s.samples as u64);
        metrics::histogram!(m::UPDATE_DURATION).record(s.seconds);
        metrics::gauge!(m::LOSS, "term" => "policy").set(s.policy_loss);
        metrics::gauge!(m::LOSS, "term" => "value").set(s.value_loss);
        metrics::gauge!(m::LOSS, "term" => "entropy").set(s.entropy);
        metrics::gauge!(m::APPROX_KL).set(s.approx_kl);
        metrics::gauge!(m::CLIP_FRACTION).set(s.clip_fraction);
        metrics::gauge!(m::EXPLAINED_VARIANCE).set(s.explained_variance);
        metrics::gauge!(m::GRAD_NORM).set(s.grad_norm);
        metrics::gauge!(m::LEARNING_RATE).set(s.learning_rate);
        if self.kl.is_some() {
            metrics::gauge!(m::KL_REFERENCE).set(s.kl_reference);
            metrics::gauge!(m::KL_COEF).set(s.kl_coef);
        }
        let lag_list = serde_json::json!(lags);
        let (ret, len) = match self.progress.recent.lock() {
            Ok(mut r) => {
                r.lags = lags;
                r.last_update = Some(*s);
                (r.mean_return(), r.mean_length())
            }
            Err(_) => (None, None),
        };
        if let Some(log) = self.log.as_mut() {
            let line = serde_json::json!({
                "version": version,
                "env_steps": self.progress.env_steps.load(Ordering::Relaxed),
                "wall_seconds": self.started.elapsed().as_secs_f64(),
                "episodes": self.progress.episodes.load(Ordering::Relaxed),
                "samples_received": self.progress.samples_received.load(Ordering::Relaxed),
                "stale_samples": self.progress.stale_samples.load(Ordering::Relaxed),
                "episode_return_mean": ret,
                "episode_length_mean": len,
                "policy_lags": lag_list,
                "busy_seconds": self.progress.busy_seconds(),
                "update": s,
            });
            writeln!(log, "{line}")?;
        }
        Ok(())
    }

    /// Host copy of the full training state.
    pub fn checkpoint_data(&self) -> CheckpointData {
        CheckpointData {
            meta: CheckpointMeta {
                run_id: self.run_id.clone(),
                version: self.progress.version.load(Ordering::Relaxed),
                adam_step: self.adam.step,
                env_steps: self.progress.env_steps.load(Ordering::Relaxed),
                samples_received: self.progress.samples_received.load(Ordering::Relaxed),
                episodes: self.progress.episodes.load(Ordering::Relaxed),
                config_toml: self.cfg.to_toml(),
                kl_coef: self.kl.as_ref().map(|(_, c)| c.coef),
            },
            model: self.policy.host_parameters(),
            adam_m: self.policy.split_flat(&self.adam.m[0]),
            adam_v: self.policy.split_flat(&self.adam.v[0]),
        }
    }

    fn checkpoint(&mut self) -> Result<PathBuf, TrainError> {
        let path = checkpoint::save(
            &self.run_dir,
            &self.checkpoint_data(),
            self.cfg.run.keep_checkpoints,
        )?;
        metrics::counter!(m::CHECKPOINTS_WRITTEN).increment(1);
        info!(path = %path.display(), "checkpoint written");
        Ok(path)
    }

    /// Restores policy, optimizer and counters from a checkpoint.
    pub fn restore(&mut self, data: &CheckpointData) -> Result<(), crate::model::ModelError> {
        self.policy.load_parameters(&data.model)?;
        self.adam.m = vec![self.policy.join_flat(&data.adam_m)?];
        self.adam.v = vec![self.policy.join_flat(&data.adam_v)?];
        self.adam.step = data.meta.adam_step;
        let p = &self.progress;
        p.version.store(data.meta.version, Ordering::Release);
        p.env_steps.store(data.meta.env_steps, Ordering::Relaxed);
        p.samples_received
            .store(data.meta.samples_received, Ordering::Relaxed);
        p.episodes.store(data.meta.episodes, Ordering::Relaxed);
        if data.meta.run_id != self.run_id {
            warn!(checkpoint = %data.meta.run_id, "checkpoint run id differs");
        }
        Ok(())
    }
}

/// Device of a policy, for callers that only hold the config.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}"),
    }
}

/// Log-probabilities, entropies and values of `actions` under `policy`.
pub fn evaluate(policy: &Policy, obs: &Tensor, actions: &Tensor) -> (Tensor, Tensor, Tensor) {
    let (out, value, log_std) = policy.forward_all(obs);
    match log_std {
        None => {
            let dist = Categorical::new(&out);
            (dist.log_prob(actions), dist.entropy(), value)
        }
        Some(log_std) => {
            let dist = DiagGaussian::new(&out, &log_std);
            (dist.log_prob(actions), dist.entropy(), value)
        }
    }
}

/// PPO-clip on one batch: `update_epochs` passes of `num_minibatches`
/// minibatches, with per-minibatch advantage normalization, optional value
/// clipping, entropy bonus, global grad-norm clipping and an optional
/// target-KL early stop. Statistics are the last epoch's minibatch means.
pub fn ppo_update(
    policy: &Policy,
    adam: &mut Adam,
    batch: &Batch,
    p: &PpoSection,
    lr: f64,
) -> UpdateStats {
    policy_update(policy, adam, batch, &UpdatePlan::ppo(p), p, lr)
}

/// One update of any algorithm on one batch, following `plan`: `epochs`
/// passes of `minibatches` minibatches of policy loss + `vf_coef`·value loss
/// − `ent_coef`·entropy, global grad-norm clipping (`p.max_grad_norm`) and an
/// Adam step per minibatch. Statistics are the last epoch's minibatch means.
pub fn policy_update(
    policy: &Policy,
    adam: &mut Adam,
    batch: &Batch,
    plan: &UpdatePlan,
    p: &PpoSection,
    lr: f64,
) -> UpdateStats {
    let params: Vec<Tensor> = policy.trainable();
    let b = batch.len;
    let mb = (b / plan.minibatches as i64).max(1);
    let device = policy.device();
    let mut stats = UpdateStats {
        learning_rate: lr,
        samples: b as usize,
        explained_variance: ppo::explained_variance(&batch.old_values, &batch.returns),
        ..Default::default()
    };
    for epoch in 0..plan.epochs {
        let perm = Tensor::randperm(b, (Kind::Int64, device));
        let (mut kl_sum, mut cf_sum, mut n_mb) = (0.0, 0.0, 0.0);
        let (mut pl_sum, mut vl_sum, mut ent_sum) = (0.0, 0.0, 0.0);
        for k in 0..plan.minibatches as i64 {
            let start = k * mb;
            if start >= b {
                break;
            }
            let size = if k == plan.minibatches as i64 - 1 {
                b - start
            } else {
                mb
            };
            let idx = perm.narrow(0, start, size);
            let (logp, entropy, value) = evaluate(
                policy,
                &batch.obs.index_select(0, &idx),
                &batch.actions.index_select(0, &idx),
            );
            let old_logp = batch.old_logp.index_select(0, &idx);
            let mut adv = batch.advantages.index_select(0, &idx);
            if plan.norm_adv && size > 1 {
                adv = ppo::normalize_advantages(&adv);
            }
            let (pg_loss, clip_eps) = match plan.loss {
                PolicyLoss::Clipped { eps } => {
                    (ppo::policy_loss(&logp, &old_logp, &adv, eps).0, Some(eps))
                }
                PolicyLoss::Vanilla => (algo::vanilla_policy_loss(&logp, &adv), None),
            };
            let ent = entropy.mean(Kind::Float);
            // Pure REINFORCE has no critic to train.
            let v_loss = (plan.vf_coef > 0.0).then(|| {
                ppo::value_loss(
                    &value,
                    &batch.old_values.index_select(0, &idx),
                    &batch.returns.index_select(0, &idx),
                    plan.vf_clip,
                )
            });
            let loss = match &v_loss {
                Some(v) => &pg_loss + v * plan.vf_coef - &ent * p.ent_coef,
                None => &pg_loss - &ent * p.ent_coef,
            };
            Adam::zero_grad(&params);
            loss.backward();
            stats.grad_norm = Adam::clip_grad_norm(&params, p.max_grad_norm);
            adam.step(&params, lr);
            tch::no_grad(|| {
                let logratio = &logp - &old_logp;
                kl_sum += ppo::approx_kl(&logratio);
                if let Some(eps) = clip_eps {
                    cf_sum += ppo::clip_fraction(&logratio.exp(), eps);
                }
            });
            pl_sum += pg_loss.double_value(&[]);
            vl_sum += v_loss.as_ref().map_or(0.0, |v| v.double_value(&[]));
            ent_sum += ent.double_value(&[]);
            n_mb += 1.0;
        }
        stats.epochs = epoch + 1;
        stats.approx_kl = kl_sum / n_mb;
        stats.clip_fraction = cf_sum / n_mb;
        stats.policy_loss = pl_sum / n_mb;
        stats.value_loss = vl_sum / n_mb;
        stats.entropy = ent_sum / n_mb;
        if let Some(target) = plan.target_kl {
            if stats.approx_kl > target {
                break;
            }
        }
    }
    stats
}
