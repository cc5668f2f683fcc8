//! PPO update and GAE throughput on the CPU, side by side with the same update
//! in plain PyTorch (learner/benches/ppo_torch.py) in the same run.
//!
//! `deploy/local.sh cargo bench -p flotilla-learner --bench ppo`
//! (`-- --quick` for a short run, `-- --batch N` for another batch size,
//! `-- --repeats N` for another number of timed updates). Prints a table; results in docs/benchmarks.md.

use std::process::Command;
use std::time::Instant;

use flotilla_common::model::ModelSpec;
use flotilla_common::Space;
use flotilla_learner::algo::adam::Adam;
use flotilla_learner::algo::gae::gae;
use flotilla_learner::config::PpoSection;
use flotilla_learner::model::Policy;
use flotilla_learner::train::{ppo_update, Batch};
use tch::{Device, Kind, Tensor};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `cargo test --all-targets` runs benches with `--bench` absent: keep it tiny then.
    let as_test = !std::env::args().any(|a| a == "--bench");
    let arg = |name: &str| {
        std::env::args()
            .skip_while(|a| a != name)
            .nth(1)
            .map(|v| v.parse::<i64>().expect("takes a positive integer"))
    };
    let repeats = if as_test {
        1
    } else if let Some(r) = arg("--repeats") {
        r as usize
    } else if quick {
        5
    } else {
        20
    };
    tch::manual_seed(0);
    let b: i64 = if as_test {
        256
    } else {
        arg("--batch").unwrap_or(8192)
    };
    let policy = Policy::new(
        &ModelSpec::default(),
        &[4],
        &Space::Discrete { n: 2 },
        Device::Cpu,
        0,
    );
    let params = policy.trainable();
    let mut adam = Adam::new(&params, 1e-5);
    let batch = Batch {
        obs: Tensor::randn([b, 4], (Kind::Float, Device::Cpu)),
        actions: Tensor::randint(2, [b], (Kind::Int64, Device::Cpu)),
        old_logp: Tensor::full([b], -0.69, (Kind::Float, Device::Cpu)),
        old_values: Tensor::randn([b], (Kind::Float, Device::Cpu)),
        advantages: Tensor::randn([b], (Kind::Float, Device::Cpu)),
        returns: Tensor::randn([b], (Kind::Float, Device::Cpu)),
        len: b,
    };
    let cfg = PpoSection {
        update_epochs: 4,
        num_minibatches: 4,
        ent_coef: 0.0,
        ..PpoSection::default()
    };
    ppo_update(&policy, &mut adam, &batch, &cfg, 2.5e-4); // warm-up
    let mut times = Vec::new();
    for _ in 0..repeats {
        let t0 = Instant::now();
        ppo_update(&policy, &mut adam, &batch, &cfg, 2.5e-4);
        times.push(t0.elapsed().as_secs_f64());
    }
    let rust_update = median(times);

    // GAE over [T=128, N=64] (8192 transitions), with terminations and truncations.
    let (t, n) = (128i64, 64i64);
    let opts = (Kind::Float, Device::Cpu);
    let rewards = Tensor::randn([t, n], opts);
    let values = Tensor::randn([t + 1, n], opts);
    let term = Tensor::rand([t, n], opts).lt(0.02).to_kind(Kind::Float);
    let trunc = Tensor::rand([t, n], opts).lt(0.01).to_kind(Kind::Float);
    let fin = Tensor::randn([t, n], opts);
    let _ = gae(&rewards, &values, &term, &trunc, &fin, 0.99, 0.95);
    let mut gtimes = Vec::new();
    for _ in 0..repeats.max(5) {
        let t0 = Instant::now();
        let (adv, _) = gae(&rewards, &values, &term, &trunc, &fin, 0.99, 0.95);
        let _ = adv.sum(Kind::Float).double_value(&[]);
        gtimes.push(t0.elapsed().as_secs_f64());
    }
    let gae_s = median(gtimes);

    println!("| measurement | median | throughput |");
    println!("| --- | --- | --- |");
    println!(
        "| Flotilla PPO update (batch {b}, 4 epochs x 4 minibatches, MLP 64x64) | {:.1} ms | {:.0} samples/s |",
        rust_update * 1e3,
        b as f64 / rust_update
    );
    println!(
        "| Flotilla GAE [T={t}, N={n}] | {:.3} ms | {:.0} transitions/s |",
        gae_s * 1e3,
        (t * n) as f64 / gae_s
    );
    if as_test {
        return;
    }
    let python = std::env::var("VIRTUAL_ENV")
        .map(|v| format!("{v}/bin/python"))
        .unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/ppo_torch.py");
    match Command::new(&python)
        .args([
            script,
            "--repeats",
            &repeats.to_string(),
            "--batch",
            &b.to_string(),
        ])
        .output()
    {
        Ok(out) if out.status.success() => {
            let line = String::from_utf8_lossy(&out.stdout);
            let torch_s = line
                .split("\"update_seconds_median\": ")
                .nth(1)
                .and_then(|r| r.split([',', '}']).next())
                .and_then(|x| x.trim().parse::<f64>().ok());
            match torch_s {
                Some(ts) => {
                    println!(
                        "| PyTorch PPO update (same) | {:.1} ms | {:.0} samples/s |",
                        ts * 1e3,
                        b as f64 / ts
                    );
                    println!(
                        "| ratio Flotilla / PyTorch (samples/s) | {:.2} | |",
                        ts / rust_update
                    );
                }
                None => println!("PyTorch output not understood: {line}"),
            }
        }
        Ok(out) => println!(
            "PyTorch reference failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => println!("PyTorch reference not run ({python}: {e})"),
    }
}
