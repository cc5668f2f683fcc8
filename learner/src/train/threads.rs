//! How many libtorch threads the trainer uses when nobody said.
//!
//! libtorch's own default, one thread per core, is right for a learner alone
//! on its host and wrong for one that shares it with actors: its threads
//! spin between parallel regions and take the cores the actors step their
//! environments on (2.3× fewer trained steps/s on two cores with two actor
//! processes, docs/benchmarks.md). The learner cannot know what shares its
//! host, so it measures: the first updates run in blocks with each candidate
//! thread count, twice round, and the one that trains the most samples per
//! second of wall time wins. Wall time from one update's end to the next
//! includes waiting for data, so a thread count that slows the actors loses
//! even when it makes the update itself faster.

use std::time::Instant;

use flotilla_common::metrics as m;
use tracing::info;

/// Updates per candidate per round; the first cycle of each block is not
/// scored (its data was acted while the previous count trained).
const BLOCK: usize = 3;
/// Rounds over the candidates, so a slow patch of the machine does not pick
/// for us.
const ROUNDS: usize = 2;
/// Fewer threads win unless more are at least this much faster: spare cores
/// are worth more to whatever else runs on the host than a few percent here.
const MARGIN: f64 = 0.05;

/// The trainer's libtorch thread count: fixed, or being measured.
#[derive(Debug)]
pub enum TorchThreads {
    Fixed(usize),
    Tuning(Tuner),
}

impl TorchThreads {
    /// `requested` threads, or a tuner over the candidates for `cpus` cores
    /// (on `cuda`, where the math runs on the GPU, only 1 and 2: the CPU
    /// threads then run host-side glue and the cores are better left to
    /// actors). In `sync` mode nothing is measured, as the choice would
    /// depend on timing and a seeded synchronous run must repeat exactly;
    /// the largest candidate is taken, because there the actors wait while
    /// the learner trains and do not compete with it for cores.
    pub fn new(requested: Option<usize>, cpus: usize, cuda: bool, sync: bool) -> Self {
        match requested {
            Some(n) => TorchThreads::Fixed(n),
            None => {
                let cpus = if cuda { cpus.min(2) } else { cpus };
                let c = candidates(cpus);
                if c.len() == 1 || sync {
                    TorchThreads::Fixed(cpus.max(1))
                } else {
                    TorchThreads::Tuning(Tuner::new(c))
                }
            }
        }
    }

    /// Applies the count (on the calling thread: libtorch's OpenMP setting
    /// is per thread) and exports it.
    pub fn start(&self) {
        let n = match self {
            TorchThreads::Fixed(n) => *n,
            TorchThreads::Tuning(t) => t.current(),
        };
        tch::set_num_threads(n as i32);
        metrics::gauge!(m::TORCH_THREADS).set(n as f64);
    }

    /// Before an update: the count that update runs with.
    pub fn before_update(&self) {
        if let TorchThreads::Tuning(t) = self {
            tch::set_num_threads(t.current() as i32);
        }
    }

    /// After a kept update of `samples` samples; settles the count once
    /// every block has run.
    pub fn after_update(&mut self, samples: usize, now: Instant) {
        let TorchThreads::Tuning(t) = self else {
            return;
        };
        if let Some(chosen) = t.record(samples, now) {
            info!(
                torch_threads = chosen,
                tried = %t.describe(),
                "libtorch threads chosen by measurement (override with --torch-threads)"
            );
            tch::set_num_threads(chosen as i32);
            metrics::gauge!(m::TORCH_THREADS).set(chosen as f64);
            *self = TorchThreads::Fixed(chosen);
        } else {
            metrics::gauge!(m::TORCH_THREADS).set(t.current() as f64);
        }
    }
}

/// 1, 2, 4, … up to `cpus`, and `cpus` itself.
pub fn candidates(cpus: usize) -> Vec<usize> {
    let cpus = cpus.max(1);
    let mut c: Vec<usize> = std::iter::successors(Some(1usize), |n| Some(n * 2))
        .take_while(|&n| n < cpus)
        .collect();
    c.push(cpus);
    c
}

/// Scores candidate thread counts by trained samples per wall second.
#[derive(Debug)]
pub struct Tuner {
    candidates: Vec<usize>,
    /// Updates recorded so far.
    step: usize,
    last_end: Option<Instant>,
    /// Samples per second of each scored cycle, per candidate.
    rates: Vec<Vec<f64>>,
}

impl Tuner {
    pub fn new(candidates: Vec<usize>) -> Self {
        let rates = vec![Vec::new(); candidates.len()];
        Tuner {
            candidates,
            step: 0,
            last_end: None,
            rates,
        }
    }

    fn plan_len(&self) -> usize {
        self.candidates.len() * BLOCK * ROUNDS
    }

    fn index(&self) -> usize {
        (self.step / BLOCK) % self.candidates.len()
    }

    /// The count the next update runs with.
    pub fn current(&self) -> usize {
        self.candidates[self.index()]
    }

    /// Records an update that ended at `now`; `Some(count)` once decided.
    pub fn record(&mut self, samples: usize, now: Instant) -> Option<usize> {
        if let Some(prev) = self.last_end {
            let dt = now.saturating_duration_since(prev).as_secs_f64();
            if !self.step.is_multiple_of(BLOCK) && dt > 0.0 {
                let i = self.index();
                self.rates[i].push(samples as f64 / dt);
            }
        }
        self.last_end = Some(now);
        self.step += 1;
        (self.step >= self.plan_len()).then(|| self.choose())
    }

    /// Median rate per candidate.
    pub fn medians(&self) -> Vec<Option<f64>> {
        self.rates.iter().map(|r| median(r)).collect()
    }

    /// The fewest threads within [`MARGIN`] of the best median rate.
    pub fn choose(&self) -> usize {
        let medians = self.medians();
        let best = medians.iter().flatten().copied().fold(0.0, f64::max);
        self.candidates
            .iter()
            .zip(&medians)
            .find(|(_, m)| m.is_some_and(|m| m >= best * (1.0 - MARGIN)))
            .map_or(self.candidates[0], |(c, _)| *c)
    }

    /// `1: 51200/s, 2: 23000/s` for the log.
    pub fn describe(&self) -> String {
        self.candidates
            .iter()
            .zip(self.medians())
            .map(|(c, m)| match m {
                Some(m) => format!("{c}: {m:.0} samples/s"),
                None => format!("{c}: not measured"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn candidates_double_up_to_the_core_count() {
        assert_eq!(candidates(1), vec![1]);
        assert_eq!(candidates(2), vec![1, 2]);
        assert_eq!(candidates(6), vec![1, 2, 4, 6]);
        assert_eq!(candidates(16), vec![1, 2, 4, 8, 16]);
    }

    #[test]
    fn a_single_core_a_request_or_sync_mode_is_not_measured() {
        assert!(matches!(
            TorchThreads::new(None, 1, false, false),
            TorchThreads::Fixed(1)
        ));
        assert!(matches!(
            TorchThreads::new(Some(3), 16, false, false),
            TorchThreads::Fixed(3)
        ));
        assert!(matches!(
            TorchThreads::new(None, 16, false, true),
            TorchThreads::Fixed(16)
        ));
        let TorchThreads::Tuning(t) = TorchThreads::new(None, 16, true, false) else {
            panic!("expected tuning");
        };
        assert_eq!(t.candidates, vec![1, 2]);
    }

    /// Feeds a tuner cycles whose length depends on the thread count the
    /// update ran with; returns its choice and how many updates it took.
    fn run(cands: Vec<usize>, mut cycle: impl FnMut(usize, usize) -> f64) -> (usize, usize) {
        let mut t = Tuner::new(cands);
        let mut now = Instant::now();
        t.record(1000, now); // an update before the first scored cycle
        for k in 1.. {
            let n = t.current();
            now += Duration::from_secs_f64(cycle(n, k));
            if let Some(c) = t.record(1000, now) {
                return (c, k + 1);
            }
        }
        unreachable!()
    }

    #[test]
    fn the_fastest_count_wins_and_a_block_boundary_is_not_scored() {
        // 2 threads: 10 ms cycles; 1 thread: 20 ms, except that the first
        // cycle after a switch is made 100× slower, which must not count.
        let mut last = 1;
        let (chosen, updates) = run(vec![1, 2], |n, _| {
            let switched = n != last;
            last = n;
            let base = if n == 2 { 0.010 } else { 0.020 };
            if switched {
                base * 100.0
            } else {
                base
            }
        });
        assert_eq!(chosen, 2);
        assert_eq!(updates, 2 * BLOCK * ROUNDS);
    }

    #[test]
    fn fewer_threads_win_within_the_margin_and_an_outlier_does_not_decide() {
        // 4 threads 3% faster than 1: not worth the cores.
        let (chosen, _) = run(vec![1, 2, 4], |n, _| match n {
            1 => 0.0100,
            2 => 0.0150,
            _ => 0.0097,
        });
        assert_eq!(chosen, 1);
        // One very fast cycle for 2 threads among slow ones loses to the
        // steadily faster count.
        let (chosen, _) = run(vec![1, 2], |n, k| match n {
            2 if k == 4 => 0.001,
            2 => 0.030,
            _ => 0.010,
        });
        assert_eq!(chosen, 1);
    }
}
