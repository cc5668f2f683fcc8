//! The run's counters and what reads them: Prometheus, `metrics.jsonl` and
//! the progress line all see the same numbers, because each count reported
//! in more than one place (received, stale, episodes, env steps trained,
//! busy time) is bumped once, here, together with its Prometheus series.
//! Drops for other reasons are counted where they happen, through
//! [`DropReason::count`].

use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla_common::chunk::Chunk;
use flotilla_common::metrics::{self as m, DropReason};
use flotilla_common::Snapshot;
use tokio::sync::watch;
use tracing::warn;

use super::update::UpdateStats;
use crate::live::Board;
use crate::tensorboard::EventWriter;

/// Counters of one run, shared by the ingest gate, the trainer and the
/// progress printer. Restored from a checkpoint on resume.
#[derive(Default)]
pub struct Counters {
    /// Transitions trained on: the run's env-step clock.
    pub env_steps: AtomicU64,
    /// Episodes finished (reported by actors in accepted chunks).
    pub episodes: AtomicU64,
    /// Transitions of every valid, non-duplicate chunk that reached the
    /// learner, counted at ingest (`flotilla_learner_samples_received_total`).
    pub samples_received: AtomicU64,
    /// The part of them dropped as stale, at ingest or before training:
    /// received = trained + pending + stale (+ REINFORCE's discarded
    /// incomplete episodes, and what is still queued when a run ends).
    pub stale_samples: AtomicU64,
    /// Transitions admitted at ingest that the batcher has not taken yet
    /// (queued, or waiting for the queue's byte budget): what the learner
    /// has to train on before it needs the actors (see
    /// [`super::publisher::Pacing`]).
    pub queued_samples: AtomicU64,
    /// Actors with an open trajectory stream.
    pub streaming_actors: AtomicU64,
    /// Seconds spent training (f64 bits), for the learner-idle fraction.
    busy_seconds_bits: AtomicU64,
    /// Windows over recent events.
    pub recent: Mutex<Recent>,
    /// Per-actor rows, the learning curve and the last checkpoint, for the
    /// live page.
    pub board: Board,
}

/// Windows over recent events.
#[derive(Default)]
pub struct Recent {
    /// (return, length) of the last 100 finished episodes.
    pub episodes: VecDeque<(f32, u32)>,
    /// Policy lag of the chunks in the last batch.
    pub lags: Vec<u64>,
}

impl Recent {
    pub fn mean_return(&self) -> Option<f64> {
        self.mean(|&(r, _)| f64::from(r))
    }

    pub fn mean_length(&self) -> Option<f64> {
        self.mean(|&(_, l)| f64::from(l))
    }

    fn mean(&self, f: impl Fn(&(f32, u32)) -> f64) -> Option<f64> {
        (!self.episodes.is_empty())
            .then(|| self.episodes.iter().map(f).sum::<f64>() / self.episodes.len() as f64)
    }

    pub fn median_lag(&self) -> Option<u64> {
        let mut l = self.lags.clone();
        l.sort_unstable();
        l.get(l.len() / 2).copied()
    }
}

impl Counters {
    /// A valid, new chunk of `samples` transitions and `bytes` payload bytes at ingest.
    pub fn received(&self, samples: u64, bytes: u64) {
        self.samples_received.fetch_add(samples, Ordering::Relaxed);
        metrics::counter!(m::CHUNKS_RECEIVED).increment(1);
        metrics::counter!(m::LEARNER_SAMPLES_RECEIVED).increment(samples);
        metrics::counter!(m::BYTES_RECEIVED).increment(bytes);
    }

    /// A chunk of `samples` transitions admitted for the trainer's queue.
    pub fn queued(&self, samples: u64) {
        self.queued_samples.fetch_add(samples, Ordering::Relaxed);
    }

    /// A queued chunk of `samples` transitions reached the batcher.
    pub fn dequeued(&self, samples: u64) {
        // Saturating: tests hand the batcher chunks that were never queued.
        let _ = self
            .queued_samples
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(samples))
            });
    }

    /// A chunk of `samples` transitions dropped for `reason`.
    pub fn dropped(&self, reason: DropReason, samples: u64) {
        reason.count(1);
        if reason == DropReason::Stale {
            self.stale_samples.fetch_add(samples, Ordering::Relaxed);
        }
    }

    /// Adds a chunk's finished episodes to the counters and the recent window.
    pub fn record_episodes(&self, c: &Chunk) {
        let n_eps = c.episode_returns.len();
        if n_eps == 0 {
            return;
        }
        self.episodes.fetch_add(n_eps as u64, Ordering::Relaxed);
        metrics::counter!(m::EPISODES).increment(n_eps as u64);
        if let Ok(mut r) = self.recent.lock() {
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

    pub fn busy_seconds(&self) -> f64 {
        f64::from_bits(self.busy_seconds_bits.load(Ordering::Relaxed))
    }

    fn add_busy(&self, s: f64) {
        // One writer (the trainer thread): load + store cannot lose an update.
        let v = self.busy_seconds() + s;
        self.busy_seconds_bits.store(v.to_bits(), Ordering::Relaxed);
    }

    /// Mean return of the last 100 episodes, if any finished.
    pub fn mean_return(&self) -> Option<f64> {
        self.recent.lock().ok().and_then(|r| r.mean_return())
    }
}

/// Writes what each update did: Prometheus gauges and one `metrics.jsonl` line.
pub struct Recorder {
    counters: Arc<Counters>,
    /// Unbuffered: each line is one write, so a crash keeps every line.
    log: File,
    /// The same scalars for TensorBoard; dropped (with a warning) after a
    /// write fails, since training matters more than its charts.
    tensorboard: Option<EventWriter>,
    started: Instant,
    kl_penalty: bool,
    /// Updates undone for non-finite numbers, and when that was last logged.
    skipped: u64,
    skip_logged: Option<Instant>,
    /// When the previous update was recorded, with the received and trained
    /// counts then: the rates TensorBoard charts are over that interval.
    last: (Instant, u64, u64),
}

impl Recorder {
    pub fn new(
        counters: Arc<Counters>,
        log: File,
        tensorboard: Option<EventWriter>,
        started: Instant,
        kl_penalty: bool,
    ) -> Self {
        let last = (
            started,
            counters.samples_received.load(Ordering::Relaxed),
            counters.env_steps.load(Ordering::Relaxed),
        );
        Recorder {
            counters,
            log,
            tensorboard,
            started,
            kl_penalty,
            skipped: 0,
            skip_logged: None,
            last,
        }
    }

    /// Records an update that was undone because its numbers were not
    /// finite; logs at most every 10 s, with the count so far.
    pub fn skipped(&mut self, s: &UpdateStats) {
        self.skipped += 1;
        metrics::counter!(m::UPDATES_SKIPPED, "reason" => "non_finite").increment(1);
        if self
            .skip_logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.skip_logged = Some(Instant::now());
            warn!(
                skipped = self.skipped,
                policy_loss = s.policy_loss,
                value_loss = s.value_loss,
                grad_norm = s.grad_norm,
                "update undone: non-finite loss, gradient or parameters (a poisoned batch); the policy stays as it was"
            );
        }
    }

    /// Records an update that trained on `s.samples` transitions and produced `version`.
    pub fn update(&mut self, s: &UpdateStats, lags: Vec<u64>, version: u64) -> std::io::Result<()> {
        let c = &self.counters;
        c.env_steps.fetch_add(s.samples as u64, Ordering::Relaxed);
        c.add_busy(s.seconds);
        metrics::counter!(m::LEARNER_UPDATES).increment(1);
        metrics::gauge!(m::LAST_UPDATE_TIME).set(m::unix_now());
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
        if self.kl_penalty {
            metrics::gauge!(m::KL_REFERENCE).set(s.kl_reference);
            metrics::gauge!(m::KL_COEF).set(s.kl_coef);
        }
        let lag_list = serde_json::json!(lags);
        let (ret, len, median_lag) = match c.recent.lock() {
            Ok(mut r) => {
                r.lags = lags;
                (r.mean_return(), r.mean_length(), r.median_lag())
            }
            Err(_) => (None, None, None),
        };
        let line = serde_json::json!({
            "version": version,
            "env_steps": c.env_steps.load(Ordering::Relaxed),
            "wall_seconds": self.started.elapsed().as_secs_f64(),
            "episodes": c.episodes.load(Ordering::Relaxed),
            "samples_received": c.samples_received.load(Ordering::Relaxed),
            "stale_samples": c.stale_samples.load(Ordering::Relaxed),
            "episode_return_mean": ret,
            "episode_length_mean": len,
            "policy_lags": lag_list,
            "busy_seconds": c.busy_seconds(),
            "update": s,
        });
        self.log.write_all(format!("{line}\n").as_bytes())?;
        c.board.point(
            c.env_steps.load(Ordering::Relaxed),
            self.started.elapsed().as_secs_f64(),
            ret,
        );
        self.tensorboard(s, ret, len, median_lag);
        Ok(())
    }

    /// The update's scalars as TensorBoard events, stepped by env steps
    /// trained (TensorBoard's x axis, as in CleanRL and Stable-Baselines3).
    fn tensorboard(
        &mut self,
        s: &UpdateStats,
        ret: Option<f64>,
        len: Option<f64>,
        lag: Option<u64>,
    ) {
        let Some(tb) = self.tensorboard.as_mut() else {
            return;
        };
        let c = &self.counters;
        let now = Instant::now();
        let (received, trained) = (
            c.samples_received.load(Ordering::Relaxed),
            c.env_steps.load(Ordering::Relaxed),
        );
        let dt = now.duration_since(self.last.0).as_secs_f64();
        let rate = |n: u64, then: u64| (dt > 0.0).then(|| n.saturating_sub(then) as f64 / dt);
        let mut values = vec![
            ("episode/return_mean", ret),
            ("episode/length_mean", len),
            ("loss/policy", Some(s.policy_loss)),
            ("loss/value", Some(s.value_loss)),
            ("loss/entropy", Some(s.entropy)),
            ("train/approx_kl", Some(s.approx_kl)),
            ("train/clip_fraction", Some(s.clip_fraction)),
            ("train/explained_variance", Some(s.explained_variance)),
            ("train/grad_norm", Some(s.grad_norm)),
            ("train/learning_rate", Some(s.learning_rate)),
            ("train/policy_lag_median", lag.map(|l| l as f64)),
            (
                "throughput/env_steps_per_second",
                rate(received, self.last.1),
            ),
            (
                "throughput/samples_trained_per_second",
                rate(trained, self.last.2),
            ),
        ];
        if self.kl_penalty {
            values.push(("train/kl_reference", Some(s.kl_reference)));
            values.push(("train/kl_coef", Some(s.kl_coef)));
        }
        self.last = (now, received, trained);
        if let Err(e) = tb.scalars(trained, &values) {
            warn!(error = %e, path = %tb.path().display(), "writing TensorBoard events failed; TensorBoard logging stops for this run (metrics.jsonl goes on)");
            self.tensorboard = None;
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.log.flush()
    }
}

/// Prints a progress line every `every` until the task is aborted.
pub async fn print_progress(
    counters: Arc<Counters>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    every: Duration,
    total: u64,
) {
    let start = Instant::now();
    let mut last = (Instant::now(), 0u64, 0u64);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let steps = counters.samples_received.load(Ordering::Relaxed);
        let trained = counters.env_steps.load(Ordering::Relaxed);
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let (ret, lag) = counters
            .recent
            .lock()
            .map(|r| (r.mean_return(), r.median_lag()))
            .unwrap_or((None, None));
        println!(
            "[{:>7.1}s] env steps {:>10} ({:>7.0}/s) | trained {:>7.0}/s | return {} | version {:>5} | lag p50 {} | {:.0}% of budget",
            start.elapsed().as_secs_f64(),
            steps,
            steps.saturating_sub(last.1) as f64 / dt,
            trained.saturating_sub(last.2) as f64 / dt,
            ret.map(|r| format!("{r:>8.2}")).unwrap_or_else(|| "       -".into()),
            snapshots.borrow().version,
            lag.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
            100.0 * trained as f64 / total.max(1) as f64,
        );
        last = (now, steps, trained);
    }
}
