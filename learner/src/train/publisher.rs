//! The publisher: the one owner of the policy version.
//!
//! Each version's weights are serialized once and sent through a
//! `tokio::sync::watch`; every reader (the gRPC subscriptions, the ingest
//! gate's lag check, the progress line) borrows the newest [`Snapshot`] from
//! it, so the version lives in exactly one place.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use flotilla_common::metrics as m;
use flotilla_common::Snapshot;
use tokio::sync::watch;

/// Publishes policy versions.
pub struct Publisher {
    tx: watch::Sender<Arc<Snapshot>>,
}

impl Publisher {
    /// Publishes `safetensors` (see [`crate::train::learn::Learning::snapshot`])
    /// as `version` (the run's first snapshot).
    pub fn new(safetensors: Vec<u8>, version: u64) -> Self {
        let (tx, _) = watch::channel(Arc::new(snapshot(safetensors, version)));
        metrics::gauge!(m::POLICY_VERSION).set(version as f64);
        Publisher { tx }
    }

    /// The newest version.
    pub fn version(&self) -> u64 {
        self.tx.borrow().version
    }

    /// A reader of the newest snapshot.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// `safetensors` as the next version, to be [`Publisher::publish`]ed,
    /// advising actors to act `samples_per_version` samples with it (0: none).
    pub fn next(&self, safetensors: Vec<u8>, samples_per_version: u64) -> Snapshot {
        Snapshot {
            samples_per_version,
            ..snapshot(safetensors, self.version() + 1)
        }
    }

    /// Makes `snapshot` the newest version for every reader.
    pub fn publish(&self, snapshot: Snapshot) {
        let version = snapshot.version;
        // send_replace never fails, even with no subscriber.
        self.tx.send_replace(Arc::new(snapshot));
        metrics::gauge!(m::POLICY_VERSION).set(version as f64);
    }
}

fn snapshot(safetensors: Vec<u8>, version: u64) -> Snapshot {
    Snapshot {
        version,
        safetensors: Bytes::from(safetensors),
        samples_per_version: 0,
    }
}

/// Whether the learner is the bottleneck, and then how many samples each
/// actor should act per version.
///
/// Each actor may act a whole batch with one version (`RunSpec.batch_samples`)
/// so that one actor alone can fill a batch. With N actors and a learner
/// that cannot keep up, that is N batches acted per batch trained: the rest
/// waits in buffers until it is too stale and is dropped, and acting it
/// takes CPU from the learner (87% dropped with 8 actors on two cores,
/// docs/benchmarks.md). While the learner is the bottleneck, measured as the
/// next batch being ready as soon as an update ends, or as chunks arriving
/// too stale to train on (then the learner may wait for data, but only
/// because the actors' chunks queued behind each other until they were too
/// old), actors are told to act `ceil(batch / (N − 1))` each: the others
/// still fill a batch without any one of them, and N actors act about
/// N/(N − 1) batches per version (at least one chunk each, so more when a
/// batch is few chunks). While the learner waits for fresh data there is
/// no advice, and actors act as before.
#[derive(Debug)]
pub struct Pacing {
    batch: u64,
    /// Smoothed fraction of each update cycle the trainer waited for data.
    idle: f64,
    last_end: Option<Instant>,
    waited: Option<f64>,
}

/// Advice is given while the trainer waits for data less than this fraction
/// of its cycles (smoothed).
const BOTTLENECK_IDLE: f64 = 0.1;
/// Weight of the newest cycle in the smoothed idle fraction.
const IDLE_SMOOTHING: f64 = 0.2;

impl Pacing {
    /// `batch` samples per update; `None` (REINFORCE, sync mode) gives no advice.
    pub fn new(batch: Option<usize>) -> Self {
        Pacing {
            batch: batch.unwrap_or(0) as u64,
            idle: 1.0,
            last_end: None,
            waited: None,
        }
    }

    /// A batch became complete at `now`.
    pub fn batch_ready(&mut self, now: Instant) {
        if let Some(end) = self.last_end {
            self.waited = Some(now.saturating_duration_since(end).as_secs_f64());
        }
    }

    /// An update of `seconds` ended at `now`; `stale` when chunks were
    /// dropped as stale since the last one.
    pub fn update_done(&mut self, now: Instant, seconds: f64, stale: bool) {
        if let Some(w) = self.waited.take() {
            let w = if stale { 0.0 } else { w };
            let cycle = w + seconds;
            if cycle > 0.0 {
                self.idle = (1.0 - IDLE_SMOOTHING) * self.idle + IDLE_SMOOTHING * (w / cycle);
            }
        }
        self.last_end = Some(now);
    }

    /// The advice for the next version with `actors` streaming actors (0: none).
    pub fn samples_per_version(&self, actors: u64) -> u64 {
        if self.batch == 0 || actors < 3 || self.idle >= BOTTLENECK_IDLE {
            return 0;
        }
        self.batch.div_ceil(actors - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Runs `cycles` update cycles of `wait` then `update` seconds.
    fn cycles(p: &mut Pacing, start: &mut Instant, n: usize, wait: f64, update: f64) {
        for _ in 0..n {
            *start += Duration::from_secs_f64(wait);
            p.batch_ready(*start);
            *start += Duration::from_secs_f64(update);
            p.update_done(*start, update, false);
        }
    }

    #[test]
    fn advice_only_while_the_learner_is_the_bottleneck() {
        let mut p = Pacing::new(Some(2048));
        let mut t = Instant::now();
        assert_eq!(p.samples_per_version(8), 0, "nothing measured yet");
        // Data always ready: the learner is the bottleneck.
        cycles(&mut p, &mut t, 30, 0.0005, 0.02);
        assert_eq!(p.samples_per_version(8), 2048_u64.div_ceil(7));
        assert_eq!(p.samples_per_version(4), 683);
        // Two actors (or one) must each be able to fill a batch alone.
        assert_eq!(p.samples_per_version(2), 0);
        assert_eq!(p.samples_per_version(1), 0);
        // The learner starts waiting for data half of each cycle: no advice.
        cycles(&mut p, &mut t, 30, 0.02, 0.02);
        assert_eq!(p.samples_per_version(8), 0);
        // No advice in sync mode or for REINFORCE.
        let mut off = Pacing::new(None);
        cycles(&mut off, &mut t, 30, 0.0, 0.02);
        assert_eq!(off.samples_per_version(8), 0);
    }

    #[test]
    fn stale_chunks_mean_the_actors_act_too_much() {
        let mut p = Pacing::new(Some(2048));
        let mut t = Instant::now();
        for _ in 0..30 {
            t += Duration::from_millis(20);
            p.batch_ready(t);
            t += Duration::from_millis(20);
            p.update_done(t, 0.02, true);
        }
        assert_eq!(p.samples_per_version(8), 293);
    }

    #[test]
    fn one_slow_cycle_does_not_flip_the_advice() {
        let mut p = Pacing::new(Some(1000));
        let mut t = Instant::now();
        cycles(&mut p, &mut t, 30, 0.0, 0.02);
        cycles(&mut p, &mut t, 1, 0.005, 0.02);
        assert_eq!(p.samples_per_version(5), 250);
    }
}
