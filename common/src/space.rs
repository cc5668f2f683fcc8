//! Observation and action spaces, after Gymnasium's `Discrete` and `Box`.

use serde::{Deserialize, Serialize};

/// A Gymnasium-style space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Space {
    /// Integers `0..n`.
    Discrete { n: usize },
    /// Real vectors with per-dimension bounds; `low.len() == high.len() == shape.iter().product()`.
    Box {
        low: Vec<f32>,
        high: Vec<f32>,
        shape: Vec<usize>,
    },
}

impl Space {
    /// A box with the same bounds in every dimension.
    pub fn uniform_box(low: f32, high: f32, dim: usize) -> Self {
        Space::Box {
            low: vec![low; dim],
            high: vec![high; dim],
            shape: vec![dim],
        }
    }

    /// A box with the given per-dimension bounds (one-dimensional shape).
    pub fn bounded_box(low: Vec<f32>, high: Vec<f32>) -> Self {
        assert_eq!(low.len(), high.len(), "box bounds differ in length");
        let dim = low.len();
        Space::Box {
            low,
            high,
            shape: vec![dim],
        }
    }

    /// Number of f32 values in one element: 1 for `Discrete`, the flat size for `Box`.
    pub fn flat_dim(&self) -> usize {
        match self {
            Space::Discrete { .. } => 1,
            Space::Box { shape, .. } => shape.iter().product(),
        }
    }

    /// Whether `x` lies in the space (bounds inclusive).
    pub fn contains(&self, x: ActionRef<'_>) -> bool {
        match (self, x) {
            (Space::Discrete { n }, ActionRef::Discrete(a)) => a < *n,
            (Space::Box { low, high, .. }, ActionRef::Continuous(v)) => {
                v.len() == low.len()
                    && v.iter()
                        .zip(low.iter().zip(high))
                        .all(|(x, (lo, hi))| x >= lo && x <= hi)
            }
            _ => false,
        }
    }
}

/// One action, borrowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ActionRef<'a> {
    Discrete(usize),
    Continuous(&'a [f32]),
}
