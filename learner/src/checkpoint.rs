//! Checkpoints: the model, the optimizer state, counters and the run config in
//! one safetensors file, written atomically and loaded without trusting it.
//!
//! The file format (names, tensor sections, metadata keys) is
//! [`flotilla_common::checkpoint`]'s; this module adds what the learner needs:
//! `<run_dir>/checkpoints/`, atomic writes, pruning, and checks against the
//! model being trained (see [`CheckpointMeta`]). A write goes to a temporary file that is
//! fsynced, renamed over the final name and followed by an fsync of the folder,
//! so a crash leaves either the old set of checkpoints or the new one, never a
//! half-written file under a checkpoint name; a write that fails removes its
//! temporary file. Pruning reads each file's header and only ever deletes
//! older checkpoints of the same run id, never the file just written. Loading
//! checks the file size against what the model can need before reading it,
//! then every name, shape and value; [`find_latest`] reports every file it
//! had to skip, and why.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use flotilla_common::checkpoint::{self as format, key, CheckpointFile, FormatError};
use flotilla_common::normalize::NormalizationState;
use flotilla_common::Spaces;
use tracing::warn;

use crate::model::NamedTensors;

/// Counters and identity stored with a checkpoint.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CheckpointMeta {
    pub run_id: String,
    pub version: u64,
    pub adam_step: u64,
    /// Transitions trained on (the run's env-step clock).
    pub env_steps: u64,
    pub samples_received: u64,
    pub episodes: u64,
    /// The effective run configuration, TOML.
    pub config_toml: String,
    /// The adaptive KL controller's coefficient, when a KL penalty is on.
    pub kl_coef: Option<f64>,
    /// The run's spaces (absent in checkpoints written before they were
    /// recorded; a built-in environment's can be rebuilt from the config).
    pub spaces: Option<Spaces>,
    /// The running statistics of normalization, when the run normalizes.
    pub normalization: Option<NormalizationState>,
}

/// Host copies of everything a checkpoint holds.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointData {
    pub meta: CheckpointMeta,
    /// `(name, shape, values)` in spec order, for model and both Adam moments.
    pub model: Vec<(String, Vec<usize>, Vec<f32>)>,
    pub adam_m: Vec<(String, Vec<usize>, Vec<f32>)>,
    pub adam_v: Vec<(String, Vec<usize>, Vec<f32>)>,
}

/// Errors reading or writing checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint io on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is invalid: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("checkpoint {path} is invalid: {source}")]
    Format { path: PathBuf, source: FormatError },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The checkpoints folder of a run directory.
pub fn dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Path of the checkpoint of `version`.
pub fn path_for(run_dir: &Path, version: u64) -> PathBuf {
    dir(run_dir).join(format::file_name(version))
}

/// Writes a checkpoint atomically and keeps only the newest `keep`.
pub fn save(
    run_dir: &Path,
    data: &CheckpointData,
    keep: usize,
) -> Result<PathBuf, CheckpointError> {
    let folder = dir(run_dir);
    fs::create_dir_all(&folder).map_err(io(&folder))?;
    let m = &data.meta;
    let metadata: HashMap<String, String> = [
        (key::RUN_ID, m.run_id.clone()),
        (key::VERSION, m.version.to_string()),
        (key::ADAM_STEP, m.adam_step.to_string()),
        (key::ENV_STEPS, m.env_steps.to_string()),
        (key::SAMPLES_RECEIVED, m.samples_received.to_string()),
        (key::EPISODES, m.episodes.to_string()),
        (key::CONFIG, m.config_toml.clone()),
    ]
    .into_iter()
    .chain(m.kl_coef.map(|c| (key::KL_COEF, c.to_string())))
    .chain(m.spaces.as_ref().map(|s| {
        (
            key::SPACES,
            serde_json::to_string(s).expect("spaces always serialize"),
        )
    }))
    .chain(m.normalization.as_ref().map(|n| {
        (
            key::NORMALIZATION,
            serde_json::to_string(n).expect("finite statistics always serialize"),
        )
    }))
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // The observation statistics also sit beside the parameters, as in a
    // snapshot, so the model section is a loadable policy by itself.
    let mut model = data.model.clone();
    model.extend(m.normalization.iter().flat_map(|n| n.tensors()));
    let bytes = CheckpointFile::encode(
        metadata,
        &[
            (format::MODEL, &model),
            (format::ADAM_M, &data.adam_m),
            (format::ADAM_V, &data.adam_v),
        ],
    );
    let final_path = path_for(run_dir, m.version);
    let tmp = folder.join(format::temp_file_name(m.version));
    let written = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(&bytes)?;
            f.sync_all()
        })
        .map_err(io(&tmp))
        .and_then(|()| fs::rename(&tmp, &final_path).map_err(io(&final_path)));
    if let Err(e) = written {
        // A full disk must not also leave a partial file behind.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(&folder)
        .and_then(|d| d.sync_all())
        .map_err(io(&folder))?;
    prune(run_dir, keep, &m.run_id, m.version)?;
    Ok(final_path)
}

/// Removes temporary files a crashed write left in the checkpoints folder.
pub fn remove_temp_files(run_dir: &Path) {
    let Ok(entries) = fs::read_dir(dir(run_dir)) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".ckpt-") && name.ends_with(".tmp") {
            match fs::remove_file(e.path()) {
                Ok(()) => {
                    warn!(path = %e.path().display(), "removed a partial checkpoint left by a crash")
                }
                Err(err) => {
                    warn!(path = %e.path().display(), error = %err, "cannot remove a partial checkpoint")
                }
            }
        }
    }
}

/// Checkpoint files of a run, newest first.
pub fn list(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir(run_dir)) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = format::parse_file_name(e.file_name().to_str()?)?;
            Some((v, e.path()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found
}

/// Keeps the newest `keep` checkpoints of `run_id` up to `written` (the file
/// just written is always kept) and deletes that run's older ones; files of
/// other runs, newer files and files whose header cannot be read are left
/// alone.
fn prune(run_dir: &Path, keep: usize, run_id: &str, written: u64) -> Result<(), CheckpointError> {
    let ours = list(run_dir).into_iter().filter(|(v, path)| {
        *v <= written
            && format::read_metadata(path)
                .is_ok_and(|m| m.get(key::RUN_ID).is_some_and(|id| id == run_id))
    });
    for (_, path) in ours.skip(keep.max(1)) {
        fs::remove_file(&path).map_err(io(&path))?;
    }
    Ok(())
}

/// Reads and checks one checkpoint against the expected parameter shapes.
pub fn load(
    path: &Path,
    expected: &[(String, Vec<usize>)],
) -> Result<CheckpointData, CheckpointError> {
    let invalid = |reason: String| CheckpointError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let params: usize = expected
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum();
    // Three f32 copies of the parameters plus a generous allowance for the
    // JSON header (names, shapes, and the run config in the metadata).
    // Observation statistics add two f32 rows and their exact f64 values as
    // JSON text (under 64 bytes per observation value).
    let obs_dim = expected
        .first()
        .and_then(|(_, s)| s.get(1).copied())
        .unwrap_or(0);
    let max_len = (params * 3 * 4 + obs_dim * 64 + (1 << 20)) as u64;
    let file = CheckpointFile::read(path, max_len).map_err(|source| match source {
        FormatError::Io(source) => CheckpointError::Io {
            path: path.to_owned(),
            source,
        },
        source => CheckpointError::Format {
            path: path.to_owned(),
            source,
        },
    })?;
    let format_err = |source| CheckpointError::Format {
        path: path.to_owned(),
        source,
    };
    let meta = CheckpointMeta {
        run_id: file.get(key::RUN_ID).map_err(format_err)?.to_owned(),
        version: file.number(key::VERSION).map_err(format_err)?,
        adam_step: file.number(key::ADAM_STEP).map_err(format_err)?,
        env_steps: file.number(key::ENV_STEPS).map_err(format_err)?,
        samples_received: file.number(key::SAMPLES_RECEIVED).map_err(format_err)?,
        episodes: file.number(key::EPISODES).map_err(format_err)?,
        config_toml: file.get(key::CONFIG).map_err(format_err)?.to_owned(),
        kl_coef: match file.number(key::KL_COEF) {
            Ok(c) => Some(c),
            Err(FormatError::Missing(_)) => None,
            Err(e) => return Err(format_err(e)),
        },
        spaces: spaces_of(&file.metadata).map_err(invalid)?,
        normalization: file
            .metadata
            .get(key::NORMALIZATION)
            .map(|text| {
                serde_json::from_str(text)
                    .map_err(|e| invalid(format!("metadata `{}`: {e}", key::NORMALIZATION)))
            })
            .transpose()?,
    };
    let pick = |section: &str| -> Result<NamedTensors, CheckpointError> {
        expected
            .iter()
            .map(|(name, shape)| {
                let (_, s, d) = file
                    .section(section)
                    .find(|(n, _, _)| *n == name.as_str())
                    .ok_or_else(|| invalid(format!("tensor `{section}/{name}` missing")))?;
                if s != shape.as_slice() {
                    return Err(invalid(format!(
                        "tensor `{section}/{name}` has shape {s:?}, expected {shape:?}"
                    )));
                }
                if d.iter().any(|x| !x.is_finite()) {
                    return Err(invalid(format!(
                        "tensor `{section}/{name}` holds non-finite values"
                    )));
                }
                Ok((name.clone(), s.to_vec(), d.to_vec()))
            })
            .collect()
    };
    Ok(CheckpointData {
        model: pick(format::MODEL)?,
        adam_m: pick(format::ADAM_M)?,
        adam_v: pick(format::ADAM_V)?,
        meta,
    })
}

/// The spaces a checkpoint's metadata records (`None` when it records none).
pub fn spaces_of(metadata: &HashMap<String, String>) -> Result<Option<Spaces>, String> {
    metadata
        .get(key::SPACES)
        .map(|text| {
            let spaces: Spaces = serde_json::from_str(text)
                .map_err(|e| format!("metadata `{}`: {e}", key::SPACES))?;
            spaces
                .check_declared()
                .map_err(|e| format!("metadata `{}`: {e}", key::SPACES))?;
            Ok(spaces)
        })
        .transpose()
}

/// The spaces recorded by the newest checkpoint of `run_dir` that records
/// any (read from headers alone): what a run of an external environment
/// resumes with.
pub fn recorded_spaces(run_dir: &Path) -> Option<Spaces> {
    list(run_dir).into_iter().find_map(|(_, path)| {
        let metadata = format::read_metadata(&path).ok()?;
        spaces_of(&metadata).ok().flatten()
    })
}

/// What [`find_latest`] found in a run directory.
#[derive(Debug, Default)]
pub struct Latest {
    /// The newest checkpoint that loads and checks out.
    pub found: Option<(PathBuf, CheckpointData)>,
    /// Newer files that did not, each with the reason.
    pub skipped: Vec<(PathBuf, CheckpointError)>,
}

/// The newest checkpoint of the run directory that loads and checks out,
/// and every newer file skipped on the way (each also logged).
pub fn find_latest(run_dir: &Path, expected: &[(String, Vec<usize>)]) -> Latest {
    let mut latest = Latest::default();
    for (_, path) in list(run_dir) {
        match load(&path, expected) {
            Ok(data) => {
                latest.found = Some((path, data));
                break;
            }
            Err(e) => {
                warn!(error = %e, "skipping unusable checkpoint");
                latest.skipped.push((path, e));
            }
        }
    }
    latest
}

/// The newest usable checkpoint, if any (see [`find_latest`]).
pub fn load_latest(
    run_dir: &Path,
    expected: &[(String, Vec<usize>)],
) -> Option<(PathBuf, CheckpointData)> {
    find_latest(run_dir, expected).found
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_common::testing::TempDir;

    fn sample(version: u64) -> CheckpointData {
        let t = |x: f32| {
            vec![
                (
                    "a.weight".to_owned(),
                    vec![2, 3],
                    (0..6).map(|i| x + i as f32).collect(),
                ),
                ("a.bias".to_owned(), vec![2], vec![x, -x]),
            ]
        };
        CheckpointData {
            meta: CheckpointMeta {
                kl_coef: None,
                run_id: "r1".into(),
                version,
                adam_step: version * 4,
                env_steps: version * 512,
                samples_received: version * 600,
                episodes: 7,
                config_toml: "[env]\nid = \"CartPole-v1\"\n".into(),
                spaces: Some(Spaces {
                    observation: flotilla_common::Space::uniform_box(-1.0, f32::INFINITY, 3),
                    action: flotilla_common::Space::Discrete { n: 2 },
                }),
                normalization: None,
            },
            model: t(1.0),
            adam_m: t(0.1),
            adam_v: t(0.01),
        }
    }

    fn shapes() -> Vec<(String, Vec<usize>)> {
        vec![("a.weight".into(), vec![2, 3]), ("a.bias".into(), vec![2])]
    }

    #[test]
    fn round_trip_and_pruning() {
        let tmp = TempDir::new("ckpt-rt");
        let d = tmp.path().to_owned();
        for v in 1..=5 {
            save(&d, &sample(v), 3).unwrap();
        }
        let versions: Vec<u64> = list(&d).into_iter().map(|(v, _)| v).collect();
        assert_eq!(versions, [5, 4, 3]);
        let (path, got) = load_latest(&d, &shapes()).unwrap();
        assert_eq!(path, path_for(&d, 5));
        assert_eq!(got, sample(5));
    }

    /// Statistics come back exactly (f64), and the model section carries
    /// the f32 observation statistics beside the parameters.
    #[test]
    fn normalization_statistics_round_trip() {
        use flotilla_common::normalize::{RunningMeanStd, MEAN, VAR};
        let tmp = TempDir::new("ckpt-norm");
        let d = tmp.path().to_owned();
        let state = NormalizationState {
            observations: Some(RunningMeanStd {
                count: 12_345.000_1,
                // 130.65331632653061 is a value serde_json's default
                // parser reads back one unit off; float_roundtrip fixes it.
                mean: vec![0.1, -12_345.678_9, 1.0 / 3.0, 130.653_316_326_530_61],
                var: vec![2.0f64.sqrt(), 0.0, 1e-12, 7.0],
            }),
            returns: Some(RunningMeanStd {
                count: 3.5,
                mean: vec![7.25],
                var: vec![0.3],
            }),
        };
        let data = CheckpointData {
            meta: CheckpointMeta {
                normalization: Some(state.clone()),
                ..sample(2).meta
            },
            ..sample(2)
        };
        let path = save(&d, &data, 3).unwrap();
        let back = load(&path, &shapes()).unwrap();
        assert_eq!(back, data);
        let file = CheckpointFile::read(&path, 1 << 20).unwrap();
        let policy = flotilla_common::policy::read_safetensors(&file.policy_safetensors()).unwrap();
        let names: Vec<&str> = policy.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names, ["a.bias", "a.weight", MEAN, VAR]);
        assert_eq!(
            policy[2].2,
            vec![
                0.1f32,
                -12_345.679,
                1.0 / 3.0,
                130.653_316_326_530_61_f64 as f32
            ]
        );
    }

    #[test]
    fn spaces_round_trip_and_the_newest_recorded_ones_are_found() {
        let tmp = TempDir::new("ckpt-spaces");
        let d = tmp.path().to_owned();
        assert_eq!(recorded_spaces(&d), None, "no checkpoint");
        let old = CheckpointData {
            meta: CheckpointMeta {
                spaces: None,
                ..sample(1).meta
            },
            ..sample(1)
        };
        save(&d, &old, 5).unwrap();
        assert_eq!(
            recorded_spaces(&d),
            None,
            "an older checkpoint records none"
        );
        assert_eq!(load_latest(&d, &shapes()).unwrap().1.meta.spaces, None);
        save(&d, &sample(2), 5).unwrap();
        let want = sample(2).meta.spaces;
        assert_eq!(recorded_spaces(&d), want);
        assert_eq!(load_latest(&d, &shapes()).unwrap().1.meta.spaces, want);
        // Spaces that are not spaces make the file unusable, not a panic.
        let meta = HashMap::from([
            (key::RUN_ID.to_owned(), "r1".to_owned()),
            (key::SPACES.to_owned(), "{\"observation\":7}".to_owned()),
        ]);
        assert!(spaces_of(&meta).unwrap_err().contains("metadata `spaces`"));
    }

    #[test]
    fn torn_newest_file_falls_back_to_the_previous_one() {
        let tmp = TempDir::new("ckpt-torn");
        let d = tmp.path().to_owned();
        save(&d, &sample(1), 3).unwrap();
        let p2 = save(&d, &sample(2), 3).unwrap();
        let bytes = fs::read(&p2).unwrap();
        fs::write(&p2, &bytes[..bytes.len() / 2]).unwrap();
        let (path, got) = load_latest(&d, &shapes()).unwrap();
        assert_eq!(path, path_for(&d, 1));
        assert_eq!(got.meta.version, 1);
        // garbage and a stray temporary file are ignored too
        fs::write(path_for(&d, 3), b"garbage").unwrap();
        fs::write(dir(&d).join(".ckpt-0000000004.1.tmp"), b"partial").unwrap();
        assert_eq!(load_latest(&d, &shapes()).unwrap().1.meta.version, 1);
    }

    #[test]
    fn wrong_shapes_or_oversized_files_are_rejected() {
        let tmp = TempDir::new("ckpt-shape");
        let d = tmp.path().to_owned();
        let p = save(&d, &sample(1), 3).unwrap();
        let other = vec![("a.weight".into(), vec![3, 2]), ("a.bias".into(), vec![2])];
        let e = load(&p, &other).unwrap_err().to_string();
        assert!(e.contains("a.weight") && e.contains("shape"), "{e}");
        let big = path_for(&d, 9);
        fs::write(&big, vec![0u8; 3 << 20]).unwrap();
        let e = load(&big, &shapes()).unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
    }

    #[test]
    fn pruning_deletes_only_older_files_of_the_same_run() {
        let tmp = TempDir::new("ckpt-prune-run");
        let d = tmp.path().to_owned();
        // An earlier run left versions 10..=12 behind.
        for v in 10..=12 {
            save(&d, &sample(v), 3).unwrap();
        }
        // A new run in the same folder starts over at version 1.
        let new_run = |v: u64| CheckpointData {
            meta: CheckpointMeta {
                run_id: "r2".into(),
                ..sample(v).meta
            },
            ..sample(v)
        };
        for v in 1..=4 {
            let p = save(&d, &new_run(v), 2).unwrap();
            assert!(p.exists(), "the file just written is kept");
        }
        let versions: Vec<u64> = list(&d).into_iter().map(|(v, _)| v).collect();
        assert_eq!(versions, [12, 11, 10, 4, 3], "r1's files stay, r2 keeps 2");
        // keep = 0 still keeps the file just written.
        let p = save(&d, &new_run(5), 0).unwrap();
        assert!(p.exists());
        assert_eq!(list(&d).len(), 4);
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let tmp = TempDir::new("ckpt-fail");
        let d = tmp.path().to_owned();
        save(&d, &sample(1), 3).unwrap();
        // A directory where the checkpoint should go makes the rename fail.
        fs::create_dir_all(path_for(&d, 2).join("blocker")).unwrap();
        assert!(save(&d, &sample(2), 3).is_err());
        let names: Vec<String> = fs::read_dir(dir(&d))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
        // And a crash's leftovers are removed at start-up.
        fs::write(dir(&d).join(".ckpt-0000000009.77.tmp"), b"partial").unwrap();
        remove_temp_files(&d);
        assert!(!dir(&d).join(".ckpt-0000000009.77.tmp").exists());
    }

    #[test]
    fn find_latest_says_why_each_newer_file_was_skipped() {
        let tmp = TempDir::new("ckpt-why");
        let d = tmp.path().to_owned();
        save(&d, &sample(1), 3).unwrap();
        fs::write(path_for(&d, 2), b"garbage").unwrap();
        let latest = find_latest(&d, &shapes());
        assert_eq!(latest.found.unwrap().1.meta.version, 1);
        assert_eq!(latest.skipped.len(), 1);
        assert_eq!(latest.skipped[0].0, path_for(&d, 2));
        let other = vec![("a.weight".into(), vec![3, 2]), ("a.bias".into(), vec![2])];
        let latest = find_latest(&d, &other);
        assert!(latest.found.is_none());
        assert_eq!(latest.skipped.len(), 2);
        assert!(latest.skipped[1].1.to_string().contains("shape"));
    }

    #[test]
    fn empty_run_dir_has_nothing_to_resume() {
        let tmp = TempDir::new("ckpt-empty");
        let d = tmp.path().to_owned();
        assert!(load_latest(&d, &shapes()).is_none());
    }
}
