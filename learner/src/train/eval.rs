//! Evaluation episodes next to training (`[eval]`): the trainer hands every
//! `eval.every_updates`-th version to a thread of its own, which plays
//! `eval.episodes` episodes of the run's (built-in) environment with the
//! published policy, the same snapshot actors act with, on the CPU, and
//! reports the mean return as `flotilla_eval_return` and as an `eval` line
//! in `metrics.jsonl`. Each evaluation starts from `eval.seed`, so versions
//! are compared on the same start states; `actor rollout --checkpoint …
//! --seed <eval.seed> --episodes <eval.episodes> --greedy` of a checkpoint of
//! the same version plays the very same episodes.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use flotilla_common::env::EnvSpec;
use flotilla_common::metrics as m;
use flotilla_common::model::ModelSpec;
use flotilla_common::policy::CpuPolicy;
use flotilla_common::rollout::{play, policy_player, EpisodeSummary};
use flotilla_common::Snapshot;
use tracing::{info, warn};

use super::recorder::Counters;
use crate::config::EvalSection;
use crate::tensorboard::EventWriter;

/// What an evaluation needs besides the policy.
pub struct Evaluator {
    pub settings: EvalSection,
    pub env: EnvSpec,
    pub model: ModelSpec,
    pub counters: Arc<Counters>,
    /// `metrics.jsonl`, opened for appending: each line is one write.
    pub log: File,
    pub started: Instant,
    pub stop: Arc<AtomicBool>,
    /// TensorBoard events of the evaluations (`<run dir>/tensorboard/eval`,
    /// a run of its own next to training's), unless `run.tensorboard` is off.
    pub tensorboard: Option<EventWriter>,
}

/// One evaluation's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub version: u64,
    pub returns: Vec<f64>,
    pub lengths: Vec<u64>,
}

impl Evaluation {
    pub fn mean_return(&self) -> f64 {
        self.returns.iter().sum::<f64>() / self.returns.len().max(1) as f64
    }

    fn std_return(&self) -> f64 {
        let mean = self.mean_return();
        (self.returns.iter().map(|r| (r - mean).powi(2)).sum::<f64>()
            / self.returns.len().max(1) as f64)
            .sqrt()
    }
}

/// Plays `settings.episodes` episodes of `env` with the policy of
/// `snapshot`, as `actor rollout` plays a checkpoint (same seeds).
pub fn evaluate(
    settings: &EvalSection,
    env: &EnvSpec,
    model: &ModelSpec,
    snapshot: &Snapshot,
) -> anyhow::Result<Evaluation> {
    let mut env = env.make()?;
    let space = env.action_space().clone();
    let obs_shape = env.observation_space().shape();
    let policy = CpuPolicy::from_safetensors(model, &obs_shape, &space, &snapshot.safetensors)?;
    let mut act = policy_player(policy, settings.greedy, settings.seed);
    let episodes: Vec<EpisodeSummary> = play(
        env.as_mut(),
        settings.episodes,
        settings.seed,
        &mut act,
        &mut std::io::sink(),
    )?;
    Ok(Evaluation {
        version: snapshot.version,
        returns: episodes.iter().map(|e| e.ret).collect(),
        lengths: episodes.iter().map(|e| e.length).collect(),
    })
}

/// Due snapshots waiting for the evaluator before the trainer skips one.
pub const BACKLOG: usize = 4;

impl Evaluator {
    /// Evaluates each due version the trainer sends, until the run stops or
    /// the trainer is gone.
    pub fn run(mut self, due: Receiver<Snapshot>) {
        while !self.stop.load(Ordering::Relaxed) {
            let snapshot = match due.recv_timeout(Duration::from_millis(100)) {
                Ok(s) => s,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let t0 = Instant::now();
            match evaluate(&self.settings, &self.env, &self.model, &snapshot) {
                Ok(e) => self.report(&e, t0.elapsed()),
                Err(e) => {
                    warn!(error = %e, "evaluation failed; evaluation stops for this run");
                    return;
                }
            }
        }
    }

    fn report(&mut self, e: &Evaluation, took: Duration) {
        let mean = e.mean_return();
        let std = e.std_return();
        let length = e.lengths.iter().sum::<u64>() as f64 / e.lengths.len().max(1) as f64;
        let env_steps = self.counters.env_steps.load(Ordering::Relaxed);
        let wall_seconds = self.started.elapsed().as_secs_f64();
        metrics::gauge!(m::EVAL_RETURN).set(mean);
        self.counters
            .board
            .evaluation(env_steps, wall_seconds, mean);
        if let Some(tb) = self.tensorboard.as_mut() {
            let values = [
                ("eval/return_mean", Some(mean)),
                ("eval/return_std", Some(std)),
                ("eval/length_mean", Some(length)),
            ];
            if let Err(err) = tb.scalars(env_steps, &values) {
                warn!(error = %err, "writing evaluation events failed; TensorBoard stops for evaluations");
                self.tensorboard = None;
            }
        }
        let line = serde_json::json!({
            "version": e.version,
            "env_steps": env_steps,
            "wall_seconds": wall_seconds,
            "eval": {
                "episodes": e.returns.len(),
                "greedy": self.settings.greedy,
                "seed": self.settings.seed,
                "return_mean": mean,
                "return_std": std,
                "length_mean": length,
                "returns": e.returns,
                "seconds": took.as_secs_f64(),
            },
        });
        if let Err(err) = self.log.write_all(format!("{line}\n").as_bytes()) {
            warn!(error = %err, "writing the evaluation to metrics.jsonl failed");
        }
        info!(
            version = e.version,
            return_mean = format!("{mean:.2}"),
            episodes = e.returns.len(),
            "evaluation"
        );
    }
}

/// Starts the evaluator thread on the due snapshots.
pub fn spawn(
    evaluator: Evaluator,
    due: Receiver<Snapshot>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("evaluator".into())
        .spawn(move || evaluator.run(due))
}
