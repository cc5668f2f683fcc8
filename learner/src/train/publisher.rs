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
/// waits in the queue until it is too stale and is dropped, and acting it
/// takes CPU from the learner (87% dropped with 8 actors on two cores,
/// docs/benchmarks.md). Which chunks are dropped is not random either: the
/// learner takes the first batch of each version's chunks, so the last part
/// of every actor's share goes stale, and with a chunk length that divides an
/// episode's time limit the chunks holding the time limits are never trained.
///
/// While the learner is the bottleneck, measured as the next batch being
/// ready as soon as an update ends, or as chunks arriving too stale to train
/// on, the advice keeps the queue at the depth that keeps the learner busy
/// and no deeper. When an update ends with `q` samples queued (admitted, not
/// yet trained), the trainer takes a batch `B` from them, and the next batch
/// must be acted meanwhile: `B` to replace it plus half of what the queue
/// lacks of one batch, `(3B − q)/2` samples, shared among `N − 1` of the N
/// actors, so that the others still fill a batch without any one of them (a
/// crashed or slow actor costs no stall). At the fixed point the N actors act
/// one batch per version, with `q = B·(1 + 2/N)` queued: trained at a lag of
/// about two versions, and nothing dropped (a batch of fewer chunks than
/// there are actors still gets one chunk from each, and then some is). While
/// the learner waits for fresh data there is no advice for several actors,
/// and each acts up to a batch per version.
///
/// One actor is always advised `(3B − q)/2`, more than a batch while the
/// queue is short: with a batch per version it and the learner would take
/// turns, each idle while the other works (the actor waiting for the version
/// its batch trains into). With the advice it acts the next batch during the
/// update, and the queue settles at one batch when an update ends: a lag of
/// one version, nothing stale.
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
            // Advice from the first update on: before anything is measured,
            // every actor has acted up to a batch with the first version,
            // and the queue in the advice says how much of that is too much.
            // Actors slower than the learner are not held back by it (their
            // share is 3B/(2(N − 1)) and more while the queue is short), and
            // a learner that waits is seen within a few updates.
            idle: 0.0,
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

    /// The advice for the next version with `actors` streaming actors and
    /// `queued` samples admitted but not yet trained on (0: none).
    pub fn samples_per_version(&self, actors: u64, queued: u64) -> u64 {
        if self.batch == 0 || actors == 0 {
            return 0;
        }
        // B to replace the batch the learner takes next, plus half of what
        // the queue lacks of one batch: B + (B − q)/2. Closing the whole gap
        // at once (2B − q) overshoots, because the N/(N − 1) headroom
        // amplifies the correction: with 2 actors an error in the queue's
        // depth would come back each version with its sign flipped instead
        // of shrinking. With half, it is gone after one version with 2
        // actors and at least halves each version with more.
        let needed = (3 * self.batch).saturating_sub(queued) / 2;
        if actors == 1 {
            // One actor acts it all, whether or not the learner waits: a
            // batch per version would make the two take turns (the actor
            // waits for the version its batch is trained into, the learner
            // for the batch), while up to 1.5 batches let the actor act the
            // next batch during the update. The queue settles at one batch
            // when an update ends: a lag of one version and nothing stale.
            return needed.max(1);
        }
        if self.idle >= BOTTLENECK_IDLE {
            return 0;
        }
        // At least one sample: 0 would mean no advice, and an actor acts at
        // least one chunk per version anyway.
        needed.div_ceil(actors - 1).clamp(1, self.batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
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

    /// A learner that is always the bottleneck.
    fn busy(batch: usize) -> Pacing {
        let mut p = Pacing::new(Some(batch));
        cycles(&mut p, &mut Instant::now(), 30, 0.0005, 0.02);
        p
    }

    #[test]
    fn advice_only_while_the_learner_is_the_bottleneck() {
        let mut p = Pacing::new(Some(2048));
        let mut t = Instant::now();
        assert!(p.samples_per_version(8, 0) > 0, "from the first update");
        // Data always ready: the learner is the bottleneck.
        cycles(&mut p, &mut t, 30, 0.0005, 0.02);
        assert!(p.samples_per_version(8, 0) > 0);
        assert!(p.samples_per_version(2, 0) > 0);
        // The learner starts waiting for data half of each cycle: no advice.
        cycles(&mut p, &mut t, 30, 0.02, 0.02);
        assert_eq!(p.samples_per_version(8, 0), 0);
        assert_eq!(p.samples_per_version(2, 0), 0);
        // No actor streaming: nobody to advise.
        assert_eq!(p.samples_per_version(0, 0), 0);
        // No advice in sync mode or for REINFORCE.
        let mut off = Pacing::new(None);
        cycles(&mut off, &mut t, 30, 0.0, 0.02);
        assert_eq!(off.samples_per_version(8, 0), 0);
    }

    #[test]
    fn the_share_refills_the_queue_to_one_batch_ahead() {
        // (3B − q) / 2 shared by N − 1 actors, between 1 sample and a batch.
        let p = busy(2048);
        assert_eq!(p.samples_per_version(2, 0), 2048, "at most a batch each");
        assert_eq!(p.samples_per_version(2, 2048), 2048);
        assert_eq!(p.samples_per_version(2, 4096), 1024);
        assert_eq!(p.samples_per_version(2, 5000), 572);
        assert_eq!(p.samples_per_version(2, 6144), 1, "at least one sample");
        assert_eq!(p.samples_per_version(2, 100_000), 1);
        assert_eq!(p.samples_per_version(3, 4096), 512);
        assert_eq!(p.samples_per_version(8, 2048), 293);
    }

    #[test]
    fn one_actor_acts_the_next_batch_during_the_update() {
        // A learner that waits (for the actor, with a batch per version)
        // still advises one actor more than a batch: up to (3B − q)/2.
        let mut p = Pacing::new(Some(2048));
        let mut t = Instant::now();
        cycles(&mut p, &mut t, 30, 0.02, 0.02);
        assert_eq!(p.samples_per_version(1, 0), 3072);
        assert_eq!(p.samples_per_version(1, 2048), 2048);
        assert_eq!(p.samples_per_version(1, 6144), 1, "at least one sample");
        assert_eq!(busy(2048).samples_per_version(1, 1024), 2560);
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
        assert_eq!(p.samples_per_version(8, 2048), 293);
    }

    #[test]
    fn one_slow_cycle_does_not_flip_the_advice() {
        let mut p = Pacing::new(Some(1000));
        let mut t = Instant::now();
        cycles(&mut p, &mut t, 30, 0.0, 0.02);
        cycles(&mut p, &mut t, 1, 0.005, 0.02);
        assert_eq!(p.samples_per_version(5, 1000), 250);
    }

    /// What a learner that is the bottleneck trains when `actors` fast
    /// actors (`live` of them acting) follow the advice: each acts its share
    /// in whole chunks with every version while the learner trains, and the
    /// learner takes the oldest chunks first, dropping those more than
    /// `MAX_LAG` versions old. Returns (stale fraction, median lag, versions
    /// that found less than a batch queued).
    fn simulate(actors: u64, live: u64, batch_chunks: u64, rounds: u64) -> (f64, u64, u64) {
        const CHUNK: u64 = 512;
        const MAX_LAG: u64 = 4;
        let pacing = busy((batch_chunks * CHUNK) as usize);
        let mut queue = VecDeque::new();
        let (mut stale, mut trained, mut starved) = (0, 0, 0);
        let mut lags = Vec::new();
        let mut share = batch_chunks * CHUNK;
        for version in 0..rounds {
            for _ in 0..live {
                for _ in 0..share.div_ceil(CHUNK) {
                    queue.push_back(version);
                }
            }
            let mut taken = 0;
            while taken < batch_chunks {
                let Some(acted) = queue.pop_front() else {
                    break;
                };
                if version - acted > MAX_LAG {
                    stale += 1;
                } else {
                    lags.push(version - acted);
                    taken += 1;
                }
            }
            trained += taken;
            if taken < batch_chunks {
                starved += 1;
            }
            share = match pacing.samples_per_version(actors, queue.len() as u64 * CHUNK) {
                0 => batch_chunks * CHUNK,
                advice => advice,
            };
        }
        lags.sort_unstable();
        (
            stale as f64 / (stale + trained) as f64,
            lags[lags.len() / 2],
            starved,
        )
    }

    #[test]
    fn actors_act_about_one_batch_per_version_and_nothing_goes_stale() {
        // Without the queue in the advice (a batch, or batch / (N − 1) each),
        // 2, 3 and 4 actors left 49%, 32% and 49% stale at the largest lag.
        for actors in [1, 2, 3, 4] {
            let (stale, lag, starved) = simulate(actors, actors, 4, 400);
            assert_eq!(stale, 0.0, "{actors} actors");
            assert!(lag <= 3, "{actors} actors: median lag {lag}");
            assert_eq!(starved, 0, "{actors} actors");
        }
        // Eight actors with a batch of four chunks act at least a chunk each.
        let (stale, _, _) = simulate(8, 8, 4, 400);
        assert!(stale > 0.4, "{stale}");
    }

    #[test]
    fn the_others_fill_the_batch_when_one_actor_stops_acting() {
        // One of N actors is connected but sends nothing: the learner
        // never waits once the queue has settled.
        for actors in [2, 3, 4] {
            let (stale, _, starved) = simulate(actors, actors - 1, 4, 400);
            assert_eq!(stale, 0.0, "{actors} actors");
            assert_eq!(starved, 0, "{actors} actors");
        }
    }
}
