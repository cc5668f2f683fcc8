//! Helpers shared by the learner's unit tests.

use tch::{Kind, Tensor};

/// A tensor's elements, row-major, as f64 host values.
pub fn host(x: &Tensor) -> Vec<f64> {
    Vec::<f32>::try_from(x.to_kind(Kind::Float).flatten(0, -1))
        .expect("float tensor")
        .into_iter()
        .map(f64::from)
        .collect()
}
