//! The batcher: decides which chunks are trained on and when a batch is full.
//!
//! A chunk acted with a policy too far behind the newest one is stale: the
//! [`StalenessRule`] says which, and it is applied twice with the same
//! meaning — at ingest, to drop early what is stale on arrival, and here, at
//! admission, because a chunk can age while it waits in the queue. REINFORCE
//! holds chunks in the [`EpisodeStitcher`] until their episodes end. In
//! synchronous mode a batch is ordered by (actor name, actor id, sequence),
//! which arrival order is not — and neither are actor ids, which follow the
//! order of `Hello`s, while actor seeds follow names — so a seeded run repeats.

use std::sync::Arc;

use flotilla_common::chunk::Chunk;
use flotilla_common::metrics::DropReason;
use tracing::warn;

use super::batch::Item;
use super::recorder::Counters;
use crate::algo::episodes::EpisodeStitcher;
use crate::server::Admitted;

/// Which policy lags are too old to train on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StalenessRule {
    /// `ingest.max_policy_lag`.
    pub max_lag: u64,
    /// Synchronous mode trains only on the newest policy's chunks.
    pub sync: bool,
}

impl StalenessRule {
    /// Whether a chunk acted `lag` versions behind the newest is stale.
    pub fn is_stale(&self, lag: u64) -> bool {
        lag > self.max_lag || (self.sync && lag > 0)
    }
}

/// Gathers admitted chunks into batches of at least `batch_size` transitions.
pub struct Batcher {
    rule: StalenessRule,
    batch_size: usize,
    stitcher: Option<EpisodeStitcher>,
    pending: Vec<Item>,
    pending_samples: usize,
    counters: Arc<Counters>,
}

impl Batcher {
    pub fn new(
        rule: StalenessRule,
        batch_size: usize,
        stitcher: Option<EpisodeStitcher>,
        counters: Arc<Counters>,
    ) -> Self {
        Batcher {
            rule,
            batch_size,
            stitcher,
            pending: Vec::new(),
            pending_samples: 0,
            counters,
        }
    }

    /// Samples admitted into the pending batch so far.
    pub fn pending_samples(&self) -> usize {
        self.pending_samples
    }

    /// Admits a chunk when the newest policy version is `newest`; returns a
    /// batch when one is full.
    pub fn push(&mut self, admitted: Admitted, newest: u64) -> Option<Vec<Item>> {
        // The chunk leaves the queue: its byte budget goes back (drop).
        let Admitted {
            chunk, actor_name, ..
        } = admitted;
        self.counters.dequeued(chunk.num_samples() as u64);
        let lag = newest.saturating_sub(chunk.policy_version);
        if self.rule.is_stale(lag) {
            self.counters
                .dropped(DropReason::Stale, chunk.num_samples() as u64);
            return None;
        }
        if !self.rule.sync {
            self.counters.record_episodes(&chunk);
        }
        for item in self.stitch(chunk, actor_name) {
            self.pending_samples += item.chunk.num_samples();
            self.pending.push(item);
        }
        if self.pending_samples < self.batch_size {
            return None;
        }
        let mut batch = std::mem::take(&mut self.pending);
        self.pending_samples = 0;
        if self.rule.sync {
            // Arrival order and actor ids vary between runs; names do not.
            batch.sort_by(|a, b| {
                (&a.actor_name, a.chunk.actor_id, a.chunk.sequence).cmp(&(
                    &b.actor_name,
                    b.chunk.actor_id,
                    b.chunk.sequence,
                ))
            });
            for i in &batch {
                self.counters.record_episodes(&i.chunk);
            }
        }
        Some(batch)
    }

    /// Passes a chunk on, or (REINFORCE) holds it until its episodes end and
    /// passes on what became complete.
    fn stitch(&mut self, c: Chunk, actor_name: Arc<str>) -> Vec<Item> {
        let Some(stitcher) = self.stitcher.as_mut() else {
            return vec![Item {
                chunk: c,
                tail_returns: None,
                actor_name,
            }];
        };
        let (released, discarded) = stitcher.push(c);
        if discarded.chunks > 0 {
            DropReason::IncompleteEpisode.count(discarded.chunks as u64);
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
                actor_name: actor_name.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_common::chunk::Actions;

    fn chunk(actor_id: u32, sequence: u64, policy_version: u64, episodes: usize) -> Admitted {
        Admitted {
            chunk: raw(actor_id, sequence, policy_version, episodes),
            actor_name: format!("actor-{actor_id}").into(),
            payload_bytes: 0,
            budget: None,
        }
    }

    fn raw(actor_id: u32, sequence: u64, policy_version: u64, episodes: usize) -> Chunk {
        let (t, n) = (2, 2);
        Chunk {
            run_id: "r".into(),
            env_id: "e".into(),
            actor_id,
            sequence,
            policy_version,
            t,
            n,
            obs: vec![0.0f32; (t + 1) * n].into(),
            actions: Actions::Discrete(vec![0; t * n]),
            rewards: vec![1.0; t * n],
            terminated: vec![false; t * n],
            truncated: vec![false; t * n],
            behavior_logp: vec![0.0; t * n],
            behavior_value: None,
            final_obs_index: vec![],
            final_obs: Vec::<f32>::new().into(),
            episode_returns: vec![actor_id as f32; episodes],
            episode_lengths: vec![1; episodes],
        }
    }

    fn batcher(max_lag: u64, sync: bool, batch_size: usize) -> (Batcher, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        let b = Batcher::new(
            StalenessRule { max_lag, sync },
            batch_size,
            None,
            counters.clone(),
        );
        (b, counters)
    }

    #[test]
    fn sync_batches_follow_actor_names_not_the_order_of_hellos() {
        // "b" said Hello first and got id 1; "a" got id 2.
        let (mut b, _) = batcher(8, true, 8);
        let named = |id: u32, name: &str| Admitted {
            chunk: raw(id, 1, 0, 0),
            actor_name: name.into(),
            payload_bytes: 0,
            budget: None,
        };
        assert!(b.push(named(1, "b"), 0).is_none());
        let batch = b.push(named(2, "a"), 0).expect("8 samples");
        let ids: Vec<u32> = batch.iter().map(|i| i.chunk.actor_id).collect();
        assert_eq!(ids, [2, 1]);
    }

    #[test]
    fn the_staleness_rule() {
        let rule = StalenessRule {
            max_lag: 2,
            sync: false,
        };
        assert!(!rule.is_stale(0) && !rule.is_stale(2) && rule.is_stale(3));
        let sync = StalenessRule {
            max_lag: 2,
            sync: true,
        };
        assert!(!sync.is_stale(0) && sync.is_stale(1));
    }

    #[test]
    fn a_batch_is_released_when_full_and_stale_chunks_are_counted() {
        let (mut b, counters) = batcher(1, false, 8);
        assert!(b.push(chunk(1, 1, 5, 1), 5).is_none());
        // Two versions behind: dropped, its 4 samples counted as stale.
        assert!(b.push(chunk(1, 2, 3, 0), 5).is_none());
        let batch = b.push(chunk(2, 1, 4, 0), 5).expect("8 samples");
        assert_eq!(batch.len(), 2);
        let c = |x: &std::sync::atomic::AtomicU64| x.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(c(&counters.stale_samples), 4);
        assert_eq!(c(&counters.episodes), 1);
        // The next batch starts empty.
        assert!(b.push(chunk(2, 2, 5, 0), 5).is_none());
    }

    #[test]
    fn sync_batches_are_ordered_by_actor_and_sequence() {
        let (mut b, counters) = batcher(8, true, 12);
        assert!(b.push(chunk(2, 1, 0, 1), 0).is_none());
        assert!(b.push(chunk(1, 2, 0, 1), 0).is_none());
        let batch = b.push(chunk(1, 1, 0, 1), 0).expect("12 samples");
        let order: Vec<(u32, u64)> = batch
            .iter()
            .map(|i| (i.chunk.actor_id, i.chunk.sequence))
            .collect();
        assert_eq!(order, [(1, 1), (1, 2), (2, 1)]);
        assert_eq!(&*batch[2].actor_name, "actor-2");
        // Episodes enter the recent window in that order too.
        let recent: Vec<f32> = counters
            .recent
            .lock()
            .unwrap()
            .episodes
            .iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(recent, [1.0, 1.0, 2.0]);
        // Any lag is stale in sync mode.
        assert!(b.push(chunk(1, 3, 0, 0), 1).is_none());
        assert_eq!(
            counters
                .stale_samples
                .load(std::sync::atomic::Ordering::Relaxed),
            4
        );
    }
}
