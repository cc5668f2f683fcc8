//! The checkpoint file format, in one place: the learner writes and resumes
//! from it, `actor rollout` plays the policy it holds, and Python reads it
//! with `safetensors`.
//!
//! A checkpoint is one safetensors file named `ckpt-<version, 10 digits>.safetensors`
//! in a run's `checkpoints/` folder. Its tensors are f32, in sections named by
//! a prefix: `model/<param>` (the policy), `adam.m/<param>` and
//! `adam.v/<param>` (the optimizer's moments). Its string metadata holds
//! [`FORMAT`] under `format`, the run's identity and counters, and the
//! effective run configuration as TOML under `config` (see [`key`]).
//!
//! This module only encodes and decodes; what is checked against a model, and
//! how files are written atomically and pruned, is the learner's business.

use std::collections::HashMap;
use std::path::Path;

use crate::policy::{read_safetensors, write_safetensors, NamedTensors, PolicyError};

/// Value of the `format` metadata key.
pub const FORMAT: &str = "flotilla-checkpoint-v1";
const PREFIX: &str = "ckpt-";
const SUFFIX: &str = ".safetensors";

/// Tensor section of the policy's parameters.
pub const MODEL: &str = "model";
/// Tensor section of Adam's first moments.
pub const ADAM_M: &str = "adam.m";
/// Tensor section of Adam's second moments.
pub const ADAM_V: &str = "adam.v";

/// Metadata keys.
pub mod key {
    pub const FORMAT: &str = "format";
    pub const RUN_ID: &str = "run_id";
    pub const VERSION: &str = "version";
    pub const ADAM_STEP: &str = "adam_step";
    pub const ENV_STEPS: &str = "env_steps";
    pub const SAMPLES_RECEIVED: &str = "samples_received";
    pub const EPISODES: &str = "episodes";
    /// The effective run configuration, TOML.
    pub const CONFIG: &str = "config";
    /// The adaptive KL controller's coefficient (KL-penalty runs only).
    pub const KL_COEF: &str = "kl_coef";
    /// The run's observation and action spaces, JSON (`crate::Spaces`);
    /// what an external environment's run resumes with.
    pub const SPACES: &str = "spaces";
    /// The running statistics of observation and reward normalization, JSON
    /// (`crate::normalize::NormalizationState`, exact f64); the model
    /// section also carries the observation statistics as f32 tensors, the
    /// way snapshots do.
    pub const NORMALIZATION: &str = "normalization";
}

/// The file name of the checkpoint of `version`.
pub fn file_name(version: u64) -> String {
    format!("{PREFIX}{version:010}{SUFFIX}")
}

/// The version in a checkpoint's file name; `None` for any other file.
pub fn parse_file_name(name: &str) -> Option<u64> {
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// A temporary name for `version` while it is being written; never matched by
/// [`parse_file_name`].
pub fn temp_file_name(version: u64) -> String {
    format!(".{PREFIX}{version:010}.{}.tmp", std::process::id())
}

/// Why a file is not a usable checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a valid safetensors file: {0}")]
    Safetensors(String),
    #[error("tensor `{0}` is not f32")]
    NotF32(String),
    #[error("metadata `{0}` missing")]
    Missing(&'static str),
    #[error("metadata `{key}` is not a number: {value:?}")]
    NotANumber { key: &'static str, value: String },
    #[error("format is {found:?}, expected {FORMAT}")]
    WrongFormat { found: String },
    #[error("{len} bytes, more than the {max} a checkpoint may have here")]
    TooLarge { len: u64, max: u64 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Longest safetensors header [`read_metadata`] reads (names, shapes and the
/// run config; far below this for any real policy).
pub const MAX_HEADER_BYTES: u64 = 16 << 20;

/// Reads only the string metadata of the checkpoint at `path`: the 8-byte
/// header length and the JSON header, not the tensors. Cheap enough to
/// identify every file of a folder (pruning matches run ids with it).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>, FormatError> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(FormatError::TooLarge {
            len,
            max: MAX_HEADER_BYTES,
        });
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)?;
    let bad = |m: String| FormatError::Safetensors(format!("header: {m}"));
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
    let metadata: HashMap<String, String> = match json.get("__metadata__") {
        Some(m) => serde_json::from_value(m.clone()).map_err(|e| bad(e.to_string()))?,
        None => HashMap::new(),
    };
    match metadata.get(key::FORMAT) {
        None => Err(FormatError::Missing(key::FORMAT)),
        Some(f) if f != FORMAT => Err(FormatError::WrongFormat { found: f.clone() }),
        Some(_) => Ok(metadata),
    }
}

/// A decoded checkpoint: metadata and every tensor, not yet checked against a model.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointFile {
    pub metadata: HashMap<String, String>,
    /// All tensors, full names (`model/...`), sorted by name.
    pub tensors: NamedTensors,
}

impl CheckpointFile {
    /// Reads `path` when it is at most `max_bytes` long, then [`CheckpointFile::decode`]s it.
    pub fn read(path: &Path, max_bytes: u64) -> Result<Self, FormatError> {
        let len = std::fs::metadata(path)?.len();
        if len > max_bytes {
            return Err(FormatError::TooLarge {
                len,
                max: max_bytes,
            });
        }
        Self::decode(&std::fs::read(path)?)
    }

    /// Decodes safetensors bytes, requiring the `format` key to be
    /// [`FORMAT`] (checked from the header, before any tensor is copied).
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| FormatError::Safetensors(e.to_string()))?;
        let metadata = header.metadata().clone().unwrap_or_default();
        match metadata.get(key::FORMAT) {
            None => return Err(FormatError::Missing(key::FORMAT)),
            Some(f) if f != FORMAT => return Err(FormatError::WrongFormat { found: f.clone() }),
            Some(_) => {}
        }
        let tensors = read_safetensors(bytes).map_err(|e| match e {
            PolicyError::Dtype(name) => FormatError::NotF32(name),
            PolicyError::Format(message) => FormatError::Safetensors(message),
            other => FormatError::Safetensors(other.to_string()),
        })?;
        Ok(CheckpointFile { metadata, tensors })
    }

    /// Encodes metadata (the `format` key is added) and tensor sections.
    pub fn encode(
        mut metadata: HashMap<String, String>,
        sections: &[(&str, &NamedTensors)],
    ) -> Vec<u8> {
        metadata.insert(key::FORMAT.to_owned(), FORMAT.to_owned());
        let named: Vec<(String, &[usize], &[f32])> = sections
            .iter()
            .flat_map(|(prefix, list)| {
                list.iter()
                    .map(move |(n, s, d)| (format!("{prefix}/{n}"), s.as_slice(), d.as_slice()))
            })
            .collect();
        write_safetensors(
            named.iter().map(|(n, s, d)| (n.as_str(), *s, *d)),
            Some(metadata),
        )
    }

    /// A metadata value.
    pub fn get(&self, key: &'static str) -> Result<&str, FormatError> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or(FormatError::Missing(key))
    }

    /// A numeric metadata value.
    pub fn number<T: std::str::FromStr>(&self, key: &'static str) -> Result<T, FormatError> {
        let v = self.get(key)?;
        v.parse().map_err(|_| FormatError::NotANumber {
            key,
            value: v.to_owned(),
        })
    }

    /// The tensors of one section, named without the section prefix.
    pub fn section<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a [usize], &'a [f32])> + 'a {
        self.tensors.iter().filter_map(move |(n, s, d)| {
            let param = n.strip_prefix(prefix)?.strip_prefix('/')?;
            Some((param, s.as_slice(), d.as_slice()))
        })
    }

    /// The policy alone as safetensors bytes under its parameter names: what
    /// the learner publishes to actors and what [`crate::policy::CpuPolicy`] loads.
    pub fn policy_safetensors(&self) -> Vec<u8> {
        write_safetensors(self.section(MODEL), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensors(x: f32) -> NamedTensors {
        vec![
            ("a.bias".into(), vec![2], vec![x, -x]),
            ("a.weight".into(), vec![1, 2], vec![x, 2.0 * x]),
        ]
    }

    #[test]
    fn names_round_trip_and_other_files_are_ignored() {
        assert_eq!(file_name(42), "ckpt-0000000042.safetensors");
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name(&temp_file_name(42)), None);
        assert_eq!(parse_file_name("ckpt-12.json"), None);
        assert_eq!(parse_file_name("notes.txt"), None);
    }

    #[test]
    fn metadata_reads_from_the_header_alone() {
        let dir = crate::testing::TempDir::new("ckpt-meta");
        let meta = HashMap::from([(key::RUN_ID.to_owned(), "r7".to_owned())]);
        let bytes = CheckpointFile::encode(meta, &[(MODEL, &tensors(1.0))]);
        let path = dir.join("c.safetensors");
        // Only the header is needed: a file cut after it still answers.
        let header_len = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        std::fs::write(&path, &bytes[..header_len]).unwrap();
        let m = read_metadata(&path).unwrap();
        assert_eq!(m[key::RUN_ID], "r7");
        assert_eq!(m[key::FORMAT], FORMAT);
        std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\x7fgarbage").unwrap();
        assert!(matches!(
            read_metadata(&path),
            Err(FormatError::TooLarge { .. })
        ));
        std::fs::write(&path, b"\x02\0\0\0\0\0\0\0{}").unwrap();
        assert!(matches!(read_metadata(&path), Err(FormatError::Missing(_))));
        std::fs::write(&path, b"abc").unwrap();
        assert!(read_metadata(&path).is_err());
    }

    #[test]
    fn sections_and_metadata_round_trip() {
        let meta = HashMap::from([(key::VERSION.to_owned(), "5".to_owned())]);
        let bytes =
            CheckpointFile::encode(meta, &[(MODEL, &tensors(1.0)), (ADAM_M, &tensors(0.5))]);
        let file = CheckpointFile::decode(&bytes).unwrap();
        assert_eq!(file.get(key::FORMAT).unwrap(), FORMAT);
        assert_eq!(file.number::<u64>(key::VERSION).unwrap(), 5);
        let model: Vec<_> = file
            .section(MODEL)
            .map(|(n, _, d)| (n, d.to_vec()))
            .collect();
        assert_eq!(
            model,
            [("a.bias", vec![1.0, -1.0]), ("a.weight", vec![1.0, 2.0])]
        );
        assert_eq!(file.section(ADAM_M).count(), 2);
        assert_eq!(file.section("adam").count(), 0);
        let policy = read_safetensors(&file.policy_safetensors()).unwrap();
        assert_eq!(policy, tensors(1.0));
        assert!(matches!(
            file.number::<u64>(key::RUN_ID),
            Err(FormatError::Missing("run_id"))
        ));
    }

    #[test]
    fn files_of_another_format_are_refused() {
        let plain = write_safetensors(
            tensors(1.0)
                .iter()
                .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())),
            Some(HashMap::from([("format".to_owned(), "other".to_owned())])),
        );
        let e = CheckpointFile::decode(&plain).unwrap_err();
        assert!(
            e.to_string().contains("expected flotilla-checkpoint-v1"),
            "{e}"
        );
        let none = write_safetensors(std::iter::empty(), None);
        assert!(matches!(
            CheckpointFile::decode(&none),
            Err(FormatError::Missing("format"))
        ));
        assert!(CheckpointFile::decode(b"garbage").is_err());
    }
}
