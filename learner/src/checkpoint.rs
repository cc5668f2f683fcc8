//! Checkpoints: the model, the optimizer state, counters and the run config in
//! one safetensors file, written atomically and loaded without trusting it.
//!
//! Layout: `<run_dir>/checkpoints/ckpt-<version, 10 digits>.safetensors` with
//! tensors `model/<param>`, `adam.m/<param>`, `adam.v/<param>` (f32) and string
//! metadata (see [`CheckpointMeta`]). A write goes to a temporary file that is
//! fsynced, renamed over the final name and followed by an fsync of the folder,
//! so a crash leaves either the old set of checkpoints or the new one, never a
//! half-written file under a checkpoint name. Loading checks the file size
//! against what the model can need before reading it, then every name, shape
//! and value; a bad file is skipped with a warning and the next older one tried.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::model::{read_safetensors, write_safetensors, NamedTensors};

const FORMAT: &str = "flotilla-checkpoint-v1";
const PREFIX: &str = "ckpt-";
const SUFFIX: &str = ".safetensors";

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
    dir(run_dir).join(format!("{PREFIX}{version:010}{SUFFIX}"))
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
        ("format", FORMAT.to_owned()),
        ("run_id", m.run_id.clone()),
        ("version", m.version.to_string()),
        ("adam_step", m.adam_step.to_string()),
        ("env_steps", m.env_steps.to_string()),
        ("samples_received", m.samples_received.to_string()),
        ("episodes", m.episodes.to_string()),
        ("config", m.config_toml.clone()),
    ]
    .into_iter()
    .chain(m.kl_coef.map(|c| ("kl_coef", c.to_string())))
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let named: Vec<(String, &Vec<usize>, &Vec<f32>)> = [
        ("model", &data.model),
        ("adam.m", &data.adam_m),
        ("adam.v", &data.adam_v),
    ]
    .into_iter()
    .flat_map(|(prefix, list)| {
        list.iter()
            .map(move |(n, s, d)| (format!("{prefix}/{n}"), s, d))
    })
    .collect();
    let bytes = write_safetensors(
        named
            .iter()
            .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice())),
        Some(metadata),
    );
    let final_path = path_for(run_dir, m.version);
    let tmp = folder.join(format!(
        ".{PREFIX}{:010}.{}.tmp",
        m.version,
        std::process::id()
    ));
    {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(&bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    fs::rename(&tmp, &final_path).map_err(io(&final_path))?;
    File::open(&folder)
        .and_then(|d| d.sync_all())
        .map_err(io(&folder))?;
    prune(run_dir, keep)?;
    Ok(final_path)
}

/// Checkpoint files of a run, newest first.
pub fn list(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = fs::read_dir(dir(run_dir)) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let v = name
                .strip_prefix(PREFIX)?
                .strip_suffix(SUFFIX)?
                .parse()
                .ok()?;
            Some((v, e.path()))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found
}

fn prune(run_dir: &Path, keep: usize) -> Result<(), CheckpointError> {
    for (_, path) in list(run_dir).into_iter().skip(keep) {
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
    let max_len = (params * 3 * 4 + (1 << 20)) as u64;
    let len = fs::metadata(path).map_err(io(path))?.len();
    if len > max_len {
        return Err(invalid(format!(
            "{len} bytes, more than the {max_len} this model can need"
        )));
    }
    let bytes = fs::read(path).map_err(io(path))?;
    let (_, st_meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| invalid(e.to_string()))?;
    let md = st_meta.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        md.get(k)
            .cloned()
            .ok_or_else(|| invalid(format!("metadata `{k}` missing")))
    };
    let num = |k: &str| -> Result<u64, CheckpointError> {
        get(k)?
            .parse()
            .map_err(|_| invalid(format!("metadata `{k}` is not a number")))
    };
    if get("format")? != FORMAT {
        return Err(invalid(format!("format is not {FORMAT}")));
    }
    let meta = CheckpointMeta {
        run_id: get("run_id")?,
        version: num("version")?,
        adam_step: num("adam_step")?,
        env_steps: num("env_steps")?,
        samples_received: num("samples_received")?,
        episodes: num("episodes")?,
        config_toml: get("config")?,
        kl_coef: match get("kl_coef") {
            Ok(c) => Some(
                c.parse()
                    .map_err(|_| invalid("metadata `kl_coef` is not a number".into()))?,
            ),
            Err(_) => None,
        },
    };
    let all = read_safetensors(&bytes).map_err(|e| invalid(e.to_string()))?;
    let pick = |prefix: &str| -> Result<NamedTensors, CheckpointError> {
        expected
            .iter()
            .map(|(name, shape)| {
                let full = format!("{prefix}/{name}");
                let (_, s, d) = all
                    .iter()
                    .find(|(n, _, _)| *n == full)
                    .ok_or_else(|| invalid(format!("tensor `{full}` missing")))?;
                if s != shape {
                    return Err(invalid(format!(
                        "tensor `{full}` has shape {s:?}, expected {shape:?}"
                    )));
                }
                if d.iter().any(|x| !x.is_finite()) {
                    return Err(invalid(format!("tensor `{full}` holds non-finite values")));
                }
                Ok((name.clone(), s.clone(), d.clone()))
            })
            .collect()
    };
    Ok(CheckpointData {
        model: pick("model")?,
        adam_m: pick("adam.m")?,
        adam_v: pick("adam.v")?,
        meta,
    })
}

/// The newest checkpoint of the run that loads and checks out; torn or corrupt
/// files are skipped with a warning.
pub fn load_latest(
    run_dir: &Path,
    expected: &[(String, Vec<usize>)],
) -> Option<(PathBuf, CheckpointData)> {
    for (_, path) in list(run_dir) {
        match load(&path, expected) {
            Ok(data) => return Some((path, data)),
            Err(e) => warn!(error = %e, "skipping unusable checkpoint"),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("flotilla-ckpt-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        p
    }

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
        let d = tmpdir("rt");
        for v in 1..=5 {
            save(&d, &sample(v), 3).unwrap();
        }
        let versions: Vec<u64> = list(&d).into_iter().map(|(v, _)| v).collect();
        assert_eq!(versions, [5, 4, 3]);
        let (path, got) = load_latest(&d, &shapes()).unwrap();
        assert_eq!(path, path_for(&d, 5));
        assert_eq!(got, sample(5));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn torn_newest_file_falls_back_to_the_previous_one() {
        let d = tmpdir("torn");
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
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn wrong_shapes_or_oversized_files_are_rejected() {
        let d = tmpdir("shape");
        let p = save(&d, &sample(1), 3).unwrap();
        let other = vec![("a.weight".into(), vec![3, 2]), ("a.bias".into(), vec![2])];
        let e = load(&p, &other).unwrap_err().to_string();
        assert!(e.contains("a.weight") && e.contains("shape"), "{e}");
        let big = path_for(&d, 9);
        fs::write(&big, vec![0u8; 3 << 20]).unwrap();
        let e = load(&big, &shapes()).unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn empty_run_dir_has_nothing_to_resume() {
        let d = tmpdir("empty");
        assert!(load_latest(&d, &shapes()).is_none());
        fs::remove_dir_all(&d).unwrap();
    }
}
