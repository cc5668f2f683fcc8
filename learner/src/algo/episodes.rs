//! Monte-Carlo returns over complete episodes, for REINFORCE.
//!
//! An actor's chunks cut its episodes at arbitrary steps, so the return
//! G_t = Σ_k γ^k r_{t+k} of a step near a chunk's end needs rewards from later
//! chunks of the same actor. [`EpisodeStitcher`] holds each actor's chunks
//! (in `sequence` order) until every environment's episode that runs past a
//! chunk's end has finished, then releases the chunk with, per environment,
//! the discounted return from the *next* chunk's first step to that episode's
//! end. Used as the bootstrap row of GAE with λ = 1, that gives exactly
//!
//! ```text
//! G_t = r_t + γ·(1 − done_t)·G_{t+1},   G_T = tail return
//! ```
//!
//! the return of the rewards actually received until the episode ended,
//! whether it terminated or was truncated (nothing is bootstrapped from a
//! critic: that is what makes it Monte Carlo).
//!
//! A gap in an actor's sequence numbers (a dropped or lost chunk, a
//! reconnect) makes the held episodes unfinishable: they are discarded and
//! counted. So is the oldest held chunk when an actor holds more than
//! `max_held` chunks (an episode that never ends), so are the chunks of an
//! actor that has sent nothing for [`IDLE_EVICTION`] (gone, or reconnected
//! under a new id), and so are the chunks of the least recently active
//! actors while all actors together hold more than `max_total`.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// An actor silent this long has its held chunks discarded.
pub const IDLE_EVICTION: Duration = Duration::from_secs(120);

use flotilla_common::chunk::Chunk;

/// A chunk whose every step belongs to an episode that has finished.
#[derive(Debug)]
pub struct Released {
    pub chunk: Chunk,
    /// `[N]`: discounted return from the next chunk's first step to the end of
    /// the episode running at this chunk's last step. Where an episode ended
    /// on the last step it is unused (the done flag cuts the recursion) and
    /// holds the next episode's partial return or 0.
    pub tail_returns: Vec<f32>,
}

/// Chunks discarded because their episodes could not be completed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Discarded {
    pub chunks: usize,
    pub samples: usize,
}

/// Per-actor buffers of chunks with unfinished episodes.
#[derive(Debug)]
pub struct EpisodeStitcher {
    gamma: f64,
    max_held: usize,
    max_total: usize,
    /// Per actor: its held chunks and when it last sent one.
    held: HashMap<u32, (VecDeque<Chunk>, Instant)>,
    last_sweep: Instant,
}

impl EpisodeStitcher {
    pub fn new(gamma: f64, max_held: usize) -> Self {
        Self {
            gamma,
            max_held: max_held.max(1),
            max_total: usize::MAX,
            held: HashMap::new(),
            last_sweep: Instant::now(),
        }
    }

    /// Caps the chunks held over all actors (the current actor's newest
    /// chunk is always kept).
    pub fn with_max_total(mut self, max_total: usize) -> Self {
        self.max_total = max_total.max(1);
        self
    }

    /// Chunks held, over all actors.
    pub fn held_chunks(&self) -> usize {
        self.held.values().map(|(q, _)| q.len()).sum()
    }

    /// Adds a chunk; returns the chunks that became complete (oldest first)
    /// and what had to be discarded.
    pub fn push(&mut self, chunk: Chunk) -> (Vec<Released>, Discarded) {
        let now = Instant::now();
        let mut discarded = self.sweep(now);
        let (queue, last) = self
            .held
            .entry(chunk.actor_id)
            .or_insert_with(|| (VecDeque::new(), now));
        *last = now;
        if let Some(last) = queue.back() {
            if last.sequence.checked_add(1) != Some(chunk.sequence) || chunk.n != last.n {
                for c in queue.drain(..) {
                    discarded.chunks += 1;
                    discarded.samples += c.num_samples();
                }
            }
        }
        let actor = chunk.actor_id;
        queue.push_back(chunk);
        let released = release(queue, self.gamma);
        if queue.len() > self.max_held {
            if let Some(c) = queue.pop_front() {
                discarded.chunks += 1;
                discarded.samples += c.num_samples();
            }
        }
        self.enforce_total(actor, &mut discarded);
        (released, discarded)
    }

    /// While more than `max_total` chunks are held, discards the queue of the
    /// least recently active other actor, then the oldest of `current`'s own.
    fn enforce_total(&mut self, current: u32, d: &mut Discarded) {
        let mut total = self.held_chunks();
        while total > self.max_total {
            let oldest = self
                .held
                .iter()
                .filter(|(&id, (q, _))| id != current && !q.is_empty())
                .min_by_key(|(_, (_, last))| *last)
                .map(|(&id, _)| id);
            let dropped: Vec<Chunk> = match oldest {
                Some(id) => self
                    .held
                    .remove(&id)
                    .map(|(q, _)| q.into())
                    .unwrap_or_default(),
                None => match self.held.get_mut(&current) {
                    Some((q, _)) if q.len() > 1 => q.pop_front().into_iter().collect(),
                    _ => return,
                },
            };
            for c in &dropped {
                d.chunks += 1;
                d.samples += c.num_samples();
            }
            total -= dropped.len();
        }
    }

    /// Discards the chunks of actors idle for [`IDLE_EVICTION`] (checked at
    /// most every few seconds).
    fn sweep(&mut self, now: Instant) -> Discarded {
        let mut d = Discarded::default();
        if now.duration_since(self.last_sweep) < Duration::from_secs(5) {
            return d;
        }
        self.last_sweep = now;
        self.held.retain(|_, (q, last)| {
            let keep = now.duration_since(*last) < IDLE_EVICTION;
            if !keep {
                d.chunks += q.len();
                d.samples += q.iter().map(Chunk::num_samples).sum::<usize>();
            }
            keep
        });
        d
    }
}

/// Pops the prefix of `queue` whose episodes have all finished.
fn release(queue: &mut VecDeque<Chunk>, gamma: f64) -> Vec<Released> {
    let Some(n) = queue.front().map(|c| c.n) else {
        return Vec::new();
    };
    // Walk backwards from the newest chunk: `start[e]` is the return from the
    // first step of the chunk after the current one to its episode's end, if
    // that episode has ended within the held chunks.
    let mut start: Vec<Option<f64>> = vec![None; n];
    let mut tails: Vec<Vec<Option<f64>>> = vec![Vec::new(); queue.len()];
    for (j, c) in queue.iter().enumerate().rev() {
        tails[j] = start.clone();
        for (e, s) in start.iter_mut().enumerate() {
            let mut g = *s;
            for t in (0..c.t).rev() {
                let k = t * n + e;
                let r = f64::from(c.rewards[k]);
                g = if c.terminated[k] || c.truncated[k] {
                    Some(r)
                } else {
                    g.map(|g| r + gamma * g)
                };
            }
            *s = g;
        }
    }
    // Chunk j is complete when every env's last step ends its episode or the
    // episode's return from the next chunk on is known.
    let complete = |j: usize| {
        let c = &queue[j];
        (0..n).all(|e| {
            let k = (c.t - 1) * n + e;
            c.terminated[k] || c.truncated[k] || tails[j][e].is_some()
        })
    };
    let ready = (0..queue.len()).take_while(|&j| complete(j)).count();
    let mut out = Vec::with_capacity(ready);
    for tail in tails.into_iter().take(ready) {
        let chunk = queue.pop_front().expect("ready chunks are held");
        let tail_returns = tail.iter().map(|g| g.unwrap_or(0.0) as f32).collect();
        out.push(Released {
            chunk,
            tail_returns,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_common::chunk::Actions;

    /// A one-env-or-more chunk with the given rewards and episode ends `[T, N]`.
    fn chunk(seq: u64, n: usize, rewards: &[f32], ends: &[bool]) -> Chunk {
        let t = rewards.len() / n;
        Chunk {
            run_id: "r".into(),
            env_id: "e".into(),
            actor_id: 1,
            sequence: seq,
            policy_version: 0,
            t,
            n,
            obs: vec![0.0f32; (t + 1) * n].into(),
            actions: Actions::Discrete(vec![0; t * n]),
            rewards: rewards.to_vec(),
            terminated: ends.to_vec(),
            truncated: vec![false; t * n],
            behavior_logp: vec![0.0; t * n],
            behavior_value: None,
            final_obs_index: Vec::new(),
            final_obs: Vec::<f32>::new().into(),
            episode_returns: Vec::new(),
            episode_lengths: Vec::new(),
        }
    }

    /// Monte-Carlo returns of a released chunk, from its tail returns.
    fn returns(r: &Released, gamma: f64) -> Vec<f64> {
        let c = &r.chunk;
        let mut g: Vec<f64> = r.tail_returns.iter().map(|&x| f64::from(x)).collect();
        let mut out = vec![0.0; c.t * c.n];
        for t in (0..c.t).rev() {
            for (e, g) in g.iter_mut().enumerate() {
                let k = t * c.n + e;
                let done = c.terminated[k] || c.truncated[k];
                *g = f64::from(c.rewards[k]) + if done { 0.0 } else { gamma * *g };
                out[k] = *g;
            }
        }
        out
    }

    #[test]
    fn the_seed_text_example() {
        // γ = 0.9, one episode of two steps with rewards 1, 0: G_0 = 1 + 0.9·0 = 1, G_1 = 0.
        let mut s = EpisodeStitcher::new(0.9, 16);
        let (out, d) = s.push(chunk(0, 1, &[1.0, 0.0], &[false, true]));
        assert_eq!(d, Discarded::default());
        assert_eq!(out.len(), 1);
        assert_eq!(returns(&out[0], 0.9), vec![1.0, 0.0]);
    }

    #[test]
    fn holds_a_chunk_until_its_episode_ends_in_a_later_one() {
        let gamma = 0.9;
        let mut s = EpisodeStitcher::new(gamma, 16);
        // Episode: rewards 1, 2 | 3, 4 | 5 (ends). Hand-computed:
        // G_4 = 5, G_3 = 4 + 0.9·5 = 8.5, G_2 = 3 + 0.9·8.5 = 10.65,
        // G_1 = 2 + 0.9·10.65 = 11.585, G_0 = 1 + 0.9·11.585 = 11.4265.
        let (out, _) = s.push(chunk(0, 1, &[1.0, 2.0], &[false, false]));
        assert!(out.is_empty());
        let (out, _) = s.push(chunk(1, 1, &[3.0, 4.0], &[false, false]));
        assert!(out.is_empty());
        assert_eq!(s.held_chunks(), 2);
        // The last chunk ends the episode at its first step and starts another.
        let (out, _) = s.push(chunk(2, 1, &[5.0, 7.0], &[true, false]));
        assert_eq!(out.len(), 2, "the two older chunks are complete");
        assert_eq!(s.held_chunks(), 1, "the new episode's step waits");
        let g0 = returns(&out[0], gamma);
        let g1 = returns(&out[1], gamma);
        for (got, want) in g0.iter().chain(&g1).zip([11.4265, 11.585, 10.65, 8.5]) {
            assert!((got - want).abs() < 1e-5, "got {got}, want {want}");
        }
    }

    #[test]
    fn waits_for_every_environment() {
        // Two envs: env 0 ends in chunk 0, env 1 runs on into chunk 1.
        let mut s = EpisodeStitcher::new(1.0, 16);
        let (out, _) = s.push(chunk(
            0,
            2,
            &[1.0, 1.0, 1.0, 1.0],
            &[false, false, true, false],
        ));
        assert!(out.is_empty());
        let (out, _) = s.push(chunk(
            1,
            2,
            &[2.0, 2.0, 2.0, 2.0],
            &[false, true, false, false],
        ));
        assert_eq!(out.len(), 1);
        // γ = 1: env 0: 2, 1; env 1: 1 + 1 + 2 = 4, 1 + 2 = 3.
        assert_eq!(returns(&out[0], 1.0), vec![2.0, 4.0, 1.0, 3.0]);
        assert_eq!(s.held_chunks(), 1);
    }

    #[test]
    fn a_sequence_gap_discards_unfinishable_episodes() {
        let mut s = EpisodeStitcher::new(0.9, 16);
        let _ = s.push(chunk(0, 1, &[1.0, 1.0], &[false, false]));
        let (out, d) = s.push(chunk(5, 1, &[1.0, 1.0], &[false, true]));
        assert_eq!(
            d,
            Discarded {
                chunks: 1,
                samples: 2
            }
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].chunk.sequence, 5);
    }

    #[test]
    fn an_episode_that_never_ends_is_bounded() {
        let mut s = EpisodeStitcher::new(0.9, 3);
        let mut discarded = 0;
        for seq in 0..10 {
            let (out, d) = s.push(chunk(seq, 1, &[1.0], &[false]));
            assert!(out.is_empty());
            discarded += d.chunks;
        }
        assert_eq!(s.held_chunks(), 3);
        assert_eq!(discarded, 7);
    }

    #[test]
    fn all_actors_together_hold_at_most_max_total() {
        let mut s = EpisodeStitcher::new(0.9, 100).with_max_total(5);
        let mut discarded = 0;
        // Ten actors, each with an episode that never ends in its 2 chunks.
        for actor in 1..=10u32 {
            for seq in 1..=2 {
                let mut c = chunk(seq, 1, &[1.0], &[false]);
                c.actor_id = actor;
                let (out, d) = s.push(c);
                assert!(out.is_empty());
                discarded += d.chunks;
                assert!(s.held_chunks() <= 5, "{}", s.held_chunks());
            }
        }
        assert_eq!(discarded + s.held_chunks(), 20);
        // The newest actor's chunks are the ones kept.
        assert!(s.held.contains_key(&10));
        // A sequence of u64::MAX followed by anything is a gap, not an overflow.
        let mut c = chunk(u64::MAX, 1, &[1.0], &[false]);
        c.actor_id = 10;
        let _ = s.push(c);
        let mut c = chunk(1, 1, &[1.0], &[false]);
        c.actor_id = 10;
        let (_, d) = s.push(c);
        assert_eq!(d.chunks, 1, "the u64::MAX chunk is discarded by the gap");
    }
}
