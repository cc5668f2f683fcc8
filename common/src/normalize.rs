//! Observation normalization and the running statistics behind it.
//!
//! The learner owns the statistics: it keeps a [`RunningMeanStd`] of every
//! observation it trained on and ships its mean and variance with each policy
//! snapshot (`obs_norm.mean`, `obs_norm.var`, f32 `[obs_dim]`). Every party
//! that runs the network — the learner (libtorch), the Rust actors
//! ([`crate::policy::CpuPolicy`]) and the Python actor (numpy) — turns them
//! into an [`ObsNormalizer`] the same way and computes, in f32,
//!
//! ```text
//! std = sqrt(var + 1e-8)                     once per snapshot
//! x   = clamp((obs - mean) / std, -clip, clip)
//! ```
//!
//! Subtraction, division and square root are correctly rounded IEEE
//! operations, so the three give the same bits for the same snapshot.
//! Actors send raw observations; see `docs/algorithms.md` (Normalization)
//! for why that keeps the learning correct when actors lag.

use serde::{Deserialize, Serialize};

/// Name of the mean tensor in snapshots and checkpoints.
pub const MEAN: &str = "obs_norm.mean";
/// Name of the variance tensor in snapshots and checkpoints.
pub const VAR: &str = "obs_norm.var";
/// Added to the variance before its square root (as SB3's `VecNormalize`
/// and Gymnasium's `NormalizeObservation` do).
pub const EPSILON: f64 = 1e-8;
/// The count a fresh [`RunningMeanStd`] starts with: a tiny prior at mean 0,
/// variance 1, so the first batch all but replaces it.
pub const PRIOR_COUNT: f64 = 1e-4;

/// Mean and (population) variance of a stream of vectors, merged batch by
/// batch (Chan, Golub and LeVeque's parallel update), in f64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningMeanStd {
    pub count: f64,
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
}

/// Moments of one batch, to be merged into a [`RunningMeanStd`].
#[derive(Debug, Clone, PartialEq)]
pub struct Moments {
    pub count: f64,
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
}

impl Moments {
    /// Moments of `rows` (each of `dim` values), two-pass in f64.
    pub fn of_rows<'a>(dim: usize, rows: impl Iterator<Item = &'a [f32]> + Clone) -> Self {
        let mut count = 0usize;
        let mut sum = vec![0.0f64; dim];
        for row in rows.clone() {
            for (s, &x) in sum.iter_mut().zip(row) {
                *s += f64::from(x);
            }
            count += 1;
        }
        let n = count.max(1) as f64;
        let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
        let mut sq = vec![0.0f64; dim];
        for row in rows {
            for ((q, &x), m) in sq.iter_mut().zip(row).zip(&mean) {
                let d = f64::from(x) - m;
                *q += d * d;
            }
        }
        Moments {
            count: count as f64,
            var: sq.iter().map(|q| q / n).collect(),
            mean,
        }
    }

    /// Moments of scalar values.
    pub fn of_values(values: &[f64]) -> Self {
        let n = values.len().max(1) as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        Moments {
            count: values.len() as f64,
            mean: vec![mean],
            var: vec![var],
        }
    }
}

impl RunningMeanStd {
    /// Statistics of `dim`-vectors before any data: mean 0, variance 1,
    /// weight [`PRIOR_COUNT`].
    pub fn new(dim: usize) -> Self {
        RunningMeanStd {
            count: PRIOR_COUNT,
            mean: vec![0.0; dim],
            var: vec![1.0; dim],
        }
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Merges a batch's moments (an empty batch changes nothing).
    pub fn merge(&mut self, batch: &Moments) {
        if batch.count == 0.0 {
            return;
        }
        let total = self.count + batch.count;
        for i in 0..self.mean.len() {
            let delta = batch.mean[i] - self.mean[i];
            let m2 = self.var[i] * self.count
                + batch.var[i] * batch.count
                + delta * delta * self.count * batch.count / total;
            self.mean[i] += delta * batch.count / total;
            self.var[i] = m2 / total;
        }
        self.count = total;
    }

    /// The statistics as snapshots carry them: f32 mean and variance,
    /// saturated at f32's largest finite value (observations near f32's
    /// limit have a variance f32 cannot hold; actors refuse non-finite
    /// statistics).
    pub fn to_f32(&self) -> (Vec<f32>, Vec<f32>) {
        let max = f64::from(f32::MAX);
        (
            self.mean
                .iter()
                .map(|&m| m.clamp(-max, max) as f32)
                .collect(),
            self.var.iter().map(|&v| v.min(max) as f32).collect(),
        )
    }

    /// Problems that make a stored state unusable (from a checkpoint).
    pub fn check(&self, dim: usize) -> Result<(), String> {
        if self.mean.len() != dim || self.var.len() != dim {
            return Err(format!(
                "{} means and {} variances for {dim} values",
                self.mean.len(),
                self.var.len()
            ));
        }
        if !(self.count.is_finite() && self.count > 0.0) {
            return Err(format!("count {} is not a positive number", self.count));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err("a mean is not finite".into());
        }
        if self.var.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err("a variance is negative or not finite".into());
        }
        Ok(())
    }
}

/// What a checkpoint keeps of a run's normalization, exactly (f64).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NormalizationState {
    /// Statistics of the observations trained on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observations: Option<RunningMeanStd>,
    /// Statistics of the discounted returns (one value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returns: Option<RunningMeanStd>,
}

impl NormalizationState {
    /// The f32 observation statistics as snapshots carry them.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let Some(obs) = &self.observations else {
            return Vec::new();
        };
        let (mean, var) = obs.to_f32();
        vec![
            (MEAN.to_owned(), vec![obs.dim()], mean),
            (VAR.to_owned(), vec![obs.dim()], var),
        ]
    }
}

/// Observation statistics as the network applies them: the mean and
/// `sqrt(var + ε)` in f32, and the clip.
#[derive(Debug, Clone, PartialEq)]
pub struct ObsNormalizer {
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub clip: f32,
}

impl ObsNormalizer {
    /// From a snapshot's f32 mean and variance (checked by the caller:
    /// equal lengths, finite, variance ≥ 0).
    pub fn new(mean: &[f32], var: &[f32], clip: f32) -> Self {
        ObsNormalizer {
            mean: mean.to_vec(),
            std: var.iter().map(|&v| (v + EPSILON as f32).sqrt()).collect(),
            clip,
        }
    }

    /// Normalizes observation rows of `mean.len()` values in place.
    pub fn apply(&self, rows: &mut [f32]) {
        let d = self.mean.len();
        for row in rows.chunks_exact_mut(d) {
            for ((x, &m), &s) in row.iter_mut().zip(&self.mean).zip(&self.std) {
                *x = ((*x - m) / s).clamp(-self.clip, self.clip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean and population variance the slow way.
    fn reference(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
        let n = rows.len() as f64;
        let d = rows[0].len();
        let mean: Vec<f64> = (0..d)
            .map(|i| rows.iter().map(|r| r[i]).sum::<f64>() / n)
            .collect();
        let var = (0..d)
            .map(|i| rows.iter().map(|r| (r[i] - mean[i]).powi(2)).sum::<f64>() / n)
            .collect();
        (mean, var)
    }

    #[test]
    fn merged_batches_give_the_statistics_of_all_rows() {
        // Rows with a large offset and uneven batch sizes: the merge must
        // match one pass over everything (the prior's weight aside).
        let rows: Vec<Vec<f32>> = (0..1000)
            .map(|i| {
                let t = i as f32;
                vec![1000.0 + (t * 0.37).sin() * 3.0, (t * 0.11).cos() - 5.0, t]
            })
            .collect();
        let mut rms = RunningMeanStd::new(3);
        rms.count = 0.0; // no prior: exact comparison
        let mut start = 0;
        for size in [1, 7, 300, 2, 190, 500] {
            let batch = &rows[start..start + size];
            rms.merge(&Moments::of_rows(3, batch.iter().map(|r| r.as_slice())));
            start += size;
        }
        assert_eq!(start, 1000);
        let wide: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| r.iter().map(|&x| f64::from(x)).collect())
            .collect();
        let (mean, var) = reference(&wide);
        assert_eq!(rms.count, 1000.0);
        for i in 0..3 {
            assert!((rms.mean[i] - mean[i]).abs() < 1e-9 * mean[i].abs().max(1.0));
            assert!((rms.var[i] - var[i]).abs() < 1e-9 * var[i].max(1.0), "{i}");
        }
    }

    #[test]
    fn the_prior_barely_counts_and_empty_batches_change_nothing() {
        let mut rms = RunningMeanStd::new(1);
        let before = rms.clone();
        rms.merge(&Moments::of_rows(1, std::iter::empty()));
        assert_eq!(rms, before);
        rms.merge(&Moments::of_values(&[4.0, 6.0]));
        // mean = 5·2/(2 + 1e-4), var ≈ 1 (spread) + prior's 1e-4 weight
        assert!((rms.mean[0] - 5.0).abs() < 1e-3);
        assert!((rms.var[0] - 1.0).abs() < 2e-3);
        assert!((rms.count - 2.0001).abs() < 1e-12);
    }

    #[test]
    fn hand_worked_normalization() {
        // (3 − 1)/√4 = 1; (−100 − 0)/√1 = −100 → clipped to −10; var 0 → std √1e-8
        let n = ObsNormalizer::new(&[1.0, 0.0, 2.0], &[4.0, 1.0, 0.0], 10.0);
        let mut rows = vec![3.0, -100.0, 2.0, 1.0, 0.5, 2.0 + 1e-5];
        n.apply(&mut rows);
        assert_eq!(&rows[..3], &[1.0, -10.0, 0.0]);
        assert_eq!(rows[3], 0.0);
        assert_eq!(rows[4], 0.5);
        assert!((rows[5] - 0.1).abs() < 5e-3, "{}", rows[5]);
    }

    #[test]
    fn huge_observations_give_finite_f32_statistics() {
        let mut rms = RunningMeanStd::new(1);
        rms.merge(&Moments::of_values(&[-3e38, 3e38]));
        assert!(rms.var[0] > f64::from(f32::MAX));
        let (mean, var) = rms.to_f32();
        assert!(mean[0].is_finite() && var[0] == f32::MAX);
    }

    #[test]
    fn stored_states_are_checked() {
        let mut s = RunningMeanStd::new(2);
        assert!(s.check(2).is_ok());
        assert!(s.check(3).unwrap_err().contains("for 3 values"));
        s.var[1] = -1.0;
        assert!(s.check(2).unwrap_err().contains("negative"));
        s.var[1] = 1.0;
        s.count = f64::NAN;
        assert!(s.check(2).unwrap_err().contains("count"));
    }
}
