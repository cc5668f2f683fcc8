//! Observation and action spaces, after Gymnasium's `Discrete` and `Box`.

use serde::{Deserialize, Serialize};

/// A Gymnasium-style space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Space {
    /// Integers `0..n`.
    Discrete { n: usize },
    /// Real vectors with per-dimension bounds; `low.len() == high.len() == shape.iter().product()`.
    /// Serialized bounds are numbers, or the strings `"inf"` and `"-inf"`
    /// for unbounded dimensions (JSON has no infinity).
    Box {
        #[serde(with = "bounds")]
        low: Vec<f32>,
        #[serde(with = "bounds")]
        high: Vec<f32>,
        shape: Vec<usize>,
        /// How the values travel in chunks: f32, or one byte each for
        /// pixels (observation spaces only). Left out of the JSON form when
        /// f32, so spaces written before dtypes existed read back unchanged.
        #[serde(default, skip_serializing_if = "Dtype::is_float32")]
        dtype: Dtype,
    },
}

/// Element type of a `Box` on the wire (Gymnasium's `Box.dtype`, for the two
/// kinds chunks carry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// 4-byte IEEE floats: every action Box and most observations.
    #[default]
    Float32,
    /// Integers `0..=255` in one byte: image observations.
    Uint8,
}

impl Dtype {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Dtype::Float32 => 4,
            Dtype::Uint8 => 1,
        }
    }

    /// The name used in errors and configs: `float32`, `uint8`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::Float32 => "float32",
            Dtype::Uint8 => "uint8",
        }
    }

    /// Whether this is the default, f32.
    pub fn is_float32(&self) -> bool {
        *self == Dtype::Float32
    }
}

/// Box bounds with infinities: finite values as numbers, the rest as the
/// strings `"inf"`, `"-inf"` and `"nan"` (also read back case-insensitively,
/// with `"infinity"` and a leading `+`).
mod bounds {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Bound {
        Number(f32),
        Word(String),
    }

    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let words: Vec<Bound> = v
            .iter()
            .map(|&x| match x {
                x if x.is_finite() => Bound::Number(x),
                x if x.is_nan() => Bound::Word("nan".into()),
                x if x > 0.0 => Bound::Word("inf".into()),
                _ => Bound::Word("-inf".into()),
            })
            .collect();
        words.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        Vec::<Bound>::deserialize(d)?
            .into_iter()
            .map(|b| match b {
                Bound::Number(x) => Ok(x),
                Bound::Word(w) => match w.to_ascii_lowercase().trim_start_matches('+') {
                    "inf" | "infinity" => Ok(f32::INFINITY),
                    "-inf" | "-infinity" => Ok(f32::NEG_INFINITY),
                    "nan" => Ok(f32::NAN),
                    _ => Err(D::Error::custom(format!(
                        "bound {w:?}: expected a number, \"inf\" or \"-inf\""
                    ))),
                },
            })
            .collect()
    }
}

impl Space {
    /// A box with the same bounds in every dimension.
    pub fn uniform_box(low: f32, high: f32, dim: usize) -> Self {
        Space::Box {
            low: vec![low; dim],
            high: vec![high; dim],
            shape: vec![dim],
            dtype: Dtype::Float32,
        }
    }

    /// A box of pixels, `0..=255` in every dimension, sent as bytes.
    pub fn pixels(shape: Vec<usize>) -> Self {
        let dim = shape.iter().product();
        Space::Box {
            low: vec![0.0; dim],
            high: vec![255.0; dim],
            shape,
            dtype: Dtype::Uint8,
        }
    }

    /// The wire type of an element: a `Box`'s dtype; f32 for `Discrete`
    /// (an index as an action, one-hot as an observation).
    pub fn dtype(&self) -> Dtype {
        match self {
            Space::Box { dtype, .. } => *dtype,
            Space::Discrete { .. } => Dtype::Float32,
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
            dtype: Dtype::Float32,
        }
    }

    /// A short description for logs: `Discrete(3)`, `Box(shape [84, 84, 4])`
    /// (the bounds are left out: an image space has thousands).
    pub fn summary(&self) -> String {
        match self {
            Space::Discrete { n } => format!("Discrete({n})"),
            Space::Box {
                shape,
                dtype: Dtype::Float32,
                ..
            } => format!("Box(shape {shape:?})"),
            Space::Box { shape, dtype, .. } => {
                format!("Box(shape {shape:?}, {})", dtype.name())
            }
        }
    }

    /// Shape of one element as the network sees it: `[1]` for `Discrete`
    /// (the index), the declared shape for `Box`.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Space::Discrete { .. } => vec![1],
            Space::Box { shape, .. } => shape.clone(),
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

/// An environment's observation and action spaces together: what an actor
/// that brings its own environment declares at `Hello`, and what a run's
/// checkpoints record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spaces {
    pub observation: Space,
    pub action: Space,
}

/// Largest declared space, in flat values (or discrete actions).
pub const MAX_DECLARED_SIZE: usize = 1 << 24;

impl Spaces {
    /// Checks spaces an actor declared: observations a non-empty `Box` (a
    /// discrete observation is sent one-hot), actions `Discrete` with at
    /// least 2 actions or a `Box`; bounds not NaN with `low <= high`; no
    /// space over [`MAX_DECLARED_SIZE`]. `Err` names the space and the
    /// problem.
    pub fn check_declared(&self) -> Result<(), String> {
        if let Space::Discrete { n } = self.observation {
            return Err(format!(
                "observation_space: Discrete({n}) is not an observation space here; send it one-hot, declared as a Box of {n} values in [0, 1]"
            ));
        }
        for (name, s) in [
            ("observation_space", &self.observation),
            ("action_space", &self.action),
        ] {
            match s {
                Space::Discrete { n } if *n < 2 || *n > MAX_DECLARED_SIZE => {
                    return Err(format!(
                        "{name}: Discrete({n}) must have 2..={MAX_DECLARED_SIZE} actions"
                    ))
                }
                Space::Discrete { .. } => {}
                Space::Box {
                    low,
                    high,
                    shape,
                    dtype,
                } => {
                    let size = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
                    match size {
                        Some(n) if n > 0 && n <= MAX_DECLARED_SIZE => {}
                        _ => {
                            return Err(format!(
                                "{name}: shape {shape:?} must hold 1..={MAX_DECLARED_SIZE} values"
                            ))
                        }
                    }
                    if low.len() != s.flat_dim() || high.len() != s.flat_dim() {
                        return Err(format!(
                            "{name}: shape {shape:?} does not match {} low and {} high bounds",
                            low.len(),
                            high.len()
                        ));
                    }
                    if let Some(i) = (0..low.len())
                        .find(|&i| low[i].is_nan() || high[i].is_nan() || low[i] > high[i])
                    {
                        return Err(format!(
                            "{name}: bound {i} has low {} and high {} (low must be <= high, neither NaN)",
                            low[i], high[i]
                        ));
                    }
                    if *dtype == Dtype::Uint8 {
                        if name == "action_space" {
                            return Err(format!(
                                "{name}: a uint8 Box is an observation type; actions are float32"
                            ));
                        }
                        if let Some(i) = (0..low.len()).find(|&i| {
                            let int = |x: f32| x.fract() == 0.0 && (0.0..=255.0).contains(&x);
                            !int(low[i]) || !int(high[i])
                        }) {
                            return Err(format!(
                                "{name}: bound {i} has low {} and high {}; a uint8 Box has integer bounds in 0..=255",
                                low[i], high[i]
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The first difference between the run's spaces (`self`) and `other`,
    /// in words, or `None` when they are equal.
    pub fn difference(&self, other: &Spaces) -> Option<String> {
        [
            ("observation_space", &self.observation, &other.observation),
            ("action_space", &self.action, &other.action),
        ]
        .into_iter()
        .find_map(|(name, run, got)| {
            space_difference(run, got).map(|d| format!("{name}: the run has {d}"))
        })
    }
}

fn space_difference(run: &Space, got: &Space) -> Option<String> {
    match (run, got) {
        (Space::Discrete { n }, Space::Discrete { n: m }) if n != m => {
            Some(format!("Discrete({n}), the actor declared Discrete({m})"))
        }
        (Space::Discrete { .. }, Space::Discrete { .. }) => None,
        (
            Space::Box {
                low,
                high,
                shape,
                dtype,
            },
            Space::Box {
                low: l2,
                high: h2,
                shape: s2,
                dtype: d2,
            },
        ) => {
            if shape != s2 {
                return Some(format!(
                    "a Box of shape {shape:?}, the actor declared shape {s2:?}"
                ));
            }
            if dtype != d2 {
                return Some(format!(
                    "a Box of {}, the actor declared {}",
                    dtype.name(),
                    d2.name()
                ));
            }
            let differs = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .position(|(x, y)| x.to_bits() != y.to_bits())
            };
            if let Some(i) = differs(low, l2) {
                return Some(format!(
                    "low[{i}] = {}, the actor declared {}",
                    low[i], l2[i]
                ));
            }
            differs(high, h2)
                .map(|i| format!("high[{i}] = {}, the actor declared {}", high[i], h2[i]))
        }
        (Space::Discrete { n }, Space::Box { shape, .. }) => Some(format!(
            "Discrete({n}), the actor declared a Box of shape {shape:?}"
        )),
        (Space::Box { shape, .. }, Space::Discrete { n }) => Some(format!(
            "a Box of shape {shape:?}, the actor declared Discrete({n})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spaces(obs: Space, act: Space) -> Spaces {
        Spaces {
            observation: obs,
            action: act,
        }
    }

    #[test]
    fn declared_spaces_are_checked() {
        let ok = spaces(
            Space::Box {
                low: vec![f32::NEG_INFINITY; 6],
                high: vec![f32::INFINITY; 6],
                shape: vec![2, 3],
                dtype: Dtype::Float32,
            },
            Space::uniform_box(-1.0, 1.0, 2),
        );
        ok.check_declared().unwrap();
        assert_eq!(ok.observation.summary(), "Box(shape [2, 3])");
        assert_eq!(Space::Discrete { n: 3 }.summary(), "Discrete(3)");
        spaces(Space::uniform_box(0.0, 1.0, 4), Space::Discrete { n: 2 })
            .check_declared()
            .unwrap();
        let bad = [
            (
                spaces(Space::Discrete { n: 4 }, Space::Discrete { n: 2 }),
                "one-hot",
            ),
            (
                spaces(Space::uniform_box(0.0, 1.0, 4), Space::Discrete { n: 1 }),
                "Discrete(1)",
            ),
            (
                spaces(Space::uniform_box(1.0, 0.0, 4), Space::Discrete { n: 2 }),
                "bound 0",
            ),
            (
                spaces(
                    Space::uniform_box(f32::NAN, 0.0, 4),
                    Space::Discrete { n: 2 },
                ),
                "NaN",
            ),
            (
                spaces(
                    Space::Box {
                        low: vec![0.0; 3],
                        high: vec![1.0; 3],
                        shape: vec![4],
                        dtype: Dtype::Float32,
                    },
                    Space::Discrete { n: 2 },
                ),
                "does not match",
            ),
            (
                spaces(
                    Space::Box {
                        low: vec![],
                        high: vec![],
                        shape: vec![0],
                        dtype: Dtype::Float32,
                    },
                    Space::Discrete { n: 2 },
                ),
                "must hold",
            ),
            (
                spaces(
                    Space::uniform_box(0.0, 1.0, 4),
                    Space::Box {
                        low: vec![],
                        high: vec![],
                        shape: vec![1 << 31, 1 << 31],
                        dtype: Dtype::Float32,
                    },
                ),
                "action_space: shape",
            ),
        ];
        for (s, needle) in bad {
            let e = s.check_declared().unwrap_err();
            assert!(e.contains(needle), "{needle}: {e}");
        }
    }

    #[test]
    fn pixel_spaces_are_uint8_observations_only() {
        let px = Space::pixels(vec![4, 84, 84]);
        assert_eq!(px.dtype(), Dtype::Uint8);
        assert_eq!(px.summary(), "Box(shape [4, 84, 84], uint8)");
        spaces(px.clone(), Space::Discrete { n: 4 })
            .check_declared()
            .unwrap();
        let e = spaces(Space::uniform_box(0.0, 1.0, 2), Space::pixels(vec![2]))
            .check_declared()
            .unwrap_err();
        assert!(e.starts_with("action_space: a uint8 Box"), "{e}");
        for (low, high) in [
            (-1.0, 255.0),
            (0.0, 256.0),
            (0.5, 1.0),
            (0.0, f32::INFINITY),
        ] {
            let mut s = Space::pixels(vec![3]);
            if let Space::Box {
                low: l, high: h, ..
            } = &mut s
            {
                l[1] = low;
                h[1] = high;
            }
            let e = spaces(s, Space::Discrete { n: 2 })
                .check_declared()
                .unwrap_err();
            assert!(e.contains("bound 1") && e.contains("0..=255"), "{e}");
        }
        let floats = |mut s: Space| {
            if let Space::Box { dtype, .. } = &mut s {
                *dtype = Dtype::Float32;
            }
            s
        };
        let f32_px = floats(Space::pixels(vec![2, 2]));
        let run = spaces(px.clone(), Space::Discrete { n: 4 });
        let other = spaces(floats(px), Space::Discrete { n: 4 });
        assert_eq!(
            run.difference(&other).as_deref(),
            Some("observation_space: the run has a Box of uint8, the actor declared float32")
        );
        // JSON: the dtype appears only when it is not f32, and old text reads back as f32
        let text = serde_json::to_string(&Space::pixels(vec![1])).unwrap();
        assert_eq!(
            text,
            r#"{"Box":{"low":[0.0],"high":[255.0],"shape":[1],"dtype":"uint8"}}"#
        );
        assert_eq!(
            serde_json::from_str::<Space>(&text).unwrap(),
            Space::pixels(vec![1])
        );
        let old = serde_json::to_string(&f32_px).unwrap();
        assert!(!old.contains("dtype"), "{old}");
        assert_eq!(serde_json::from_str::<Space>(&old).unwrap(), f32_px);
    }

    #[test]
    fn infinite_bounds_survive_json() {
        let s = Spaces {
            observation: Space::bounded_box(
                vec![f32::NEG_INFINITY, -4.8],
                vec![f32::INFINITY, 4.8],
            ),
            action: Space::Discrete { n: 2 },
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(
            text,
            r#"{"observation":{"Box":{"low":["-inf",-4.8],"high":["inf",4.8],"shape":[2]}},"action":{"Discrete":{"n":2}}}"#
        );
        assert_eq!(serde_json::from_str::<Spaces>(&text).unwrap(), s);
        let loose = r#"{"observation":{"Box":{"low":["-Infinity",0],"high":["+INF",1],"shape":[2]}},"action":{"Discrete":{"n":2}}}"#;
        let back: Spaces = serde_json::from_str(loose).unwrap();
        assert_eq!(
            back.observation,
            Space::bounded_box(vec![f32::NEG_INFINITY, 0.0], vec![f32::INFINITY, 1.0])
        );
        let bad = r#"{"observation":{"Box":{"low":["big"],"high":[1],"shape":[1]}},"action":{"Discrete":{"n":2}}}"#;
        let e = serde_json::from_str::<Spaces>(bad).unwrap_err().to_string();
        assert!(e.contains("\"big\""), "{e}");
    }

    #[test]
    fn the_first_difference_is_named() {
        let run = spaces(Space::uniform_box(-1.0, 1.0, 3), Space::Discrete { n: 2 });
        assert_eq!(run.difference(&run.clone()), None);
        let cases = [
            (
                spaces(Space::uniform_box(-1.0, 1.0, 4), Space::Discrete { n: 2 }),
                "observation_space: the run has a Box of shape [3], the actor declared shape [4]",
            ),
            (
                spaces(
                    Space::bounded_box(vec![-1.0, -2.0, -1.0], vec![1.0; 3]),
                    Space::Discrete { n: 2 },
                ),
                "observation_space: the run has low[1] = -1, the actor declared -2",
            ),
            (
                spaces(Space::uniform_box(-1.0, 1.0, 3), Space::Discrete { n: 3 }),
                "action_space: the run has Discrete(2), the actor declared Discrete(3)",
            ),
            (
                spaces(
                    Space::uniform_box(-1.0, 1.0, 3),
                    Space::uniform_box(-1.0, 1.0, 2),
                ),
                "action_space: the run has Discrete(2), the actor declared a Box of shape [2]",
            ),
        ];
        for (other, want) in cases {
            assert_eq!(run.difference(&other).as_deref(), Some(want));
        }
    }
}
