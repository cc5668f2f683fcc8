//! Policy snapshots and checkpoints are plain safetensors: Python's
//! `safetensors` package reads them. Runs with the Python of the libtorch
//! environment that `deploy/local.sh` sets up (`VIRTUAL_ENV`); skipped, with
//! a message, when there is none.

use std::process::Command;

use flotilla_common::model::ModelSpec;
use flotilla_common::testing::TempDir;
use flotilla_common::Space;
use flotilla_learner::model::{tensor_to_vec, Policy};
use tch::Device;

#[test]
fn python_safetensors_reads_a_snapshot() {
    let Ok(venv) = std::env::var("VIRTUAL_ENV") else {
        flotilla_common::testing::skip(
            "python",
            "no VIRTUAL_ENV (run the tests through deploy/local.sh)",
        );
        return;
    };
    let python = format!("{venv}/bin/python");
    let p = Policy::new(
        &ModelSpec::default(),
        &[4],
        &Space::Discrete { n: 2 },
        Device::Cpu,
        3,
    );
    let dir = TempDir::new("snapshot");
    let path = dir.join("policy.safetensors");
    std::fs::write(&path, p.to_safetensors()).unwrap();
    let script = r#"
import sys
from safetensors.numpy import load_file
t = load_file(sys.argv[1])
for name in sorted(t):
    print(name, list(t[name].shape), str(t[name].dtype), repr(float(t[name].flatten()[0])))
"#;
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(&path)
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), p.parameters().len(), "{stdout}");
    for (name, t) in p.parameters() {
        let first = tensor_to_vec(t)[0];
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing in {stdout}"));
        let shape: Vec<String> = t.size().iter().map(|d| d.to_string()).collect();
        assert!(line.contains(&format!("[{}]", shape.join(", "))), "{line}");
        assert!(line.contains("float32"), "{line}");
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(value as f32, first, "{line}");
    }
}
