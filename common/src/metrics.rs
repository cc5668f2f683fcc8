//! Metric names: one place for the contract shared by the code, the Grafana
//! dashboard, the docs and the tests (docs/metrics.md). Libraries only emit;
//! the binaries install the Prometheus exporter and call `describe_*` once, so
//! counters and gauges are exported (at zero) before their first event;
//! histograms appear with their first observation.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

pub const LEARNER_SAMPLES_RECEIVED: &str = "flotilla_learner_samples_received_total";
pub const LEARNER_SAMPLES_TRAINED: &str = "flotilla_learner_samples_trained_total";
pub const LEARNER_UPDATES: &str = "flotilla_learner_updates_total";
pub const POLICY_VERSION: &str = "flotilla_policy_version";
pub const POLICY_LAG: &str = "flotilla_policy_lag";
pub const CHUNKS_RECEIVED: &str = "flotilla_chunks_received_total";
pub const CHUNKS_DROPPED: &str = "flotilla_chunks_dropped_total";
pub const INGEST_QUEUE_DEPTH: &str = "flotilla_ingest_queue_depth";
pub const UPDATE_DURATION: &str = "flotilla_update_duration_seconds";
pub const LOSS: &str = "flotilla_loss";
pub const APPROX_KL: &str = "flotilla_approx_kl";
pub const CLIP_FRACTION: &str = "flotilla_clip_fraction";
pub const EXPLAINED_VARIANCE: &str = "flotilla_explained_variance";
pub const GRAD_NORM: &str = "flotilla_grad_norm";
pub const LEARNING_RATE: &str = "flotilla_learning_rate";
pub const ACTORS_CONNECTED: &str = "flotilla_actors_connected";
pub const BYTES_RECEIVED: &str = "flotilla_bytes_received_total";
pub const EPISODES: &str = "flotilla_episodes_total";
pub const EPISODE_RETURN_MEAN: &str = "flotilla_episode_return_mean";
pub const EPISODE_LENGTH_MEAN: &str = "flotilla_episode_length_mean";
pub const CHECKPOINTS_WRITTEN: &str = "flotilla_checkpoints_written_total";
pub const AUTH_FAILURES: &str = "flotilla_auth_failures_total";
pub const KL_REFERENCE: &str = "flotilla_kl_reference";
pub const KL_COEF: &str = "flotilla_kl_coef";
pub const RETURN_STD: &str = "flotilla_return_std";
pub const UPDATES_SKIPPED: &str = "flotilla_updates_skipped_total";
pub const LAST_UPDATE_TIME: &str = "flotilla_last_update_timestamp_seconds";
pub const TORCH_THREADS: &str = "flotilla_learner_torch_threads";
pub const FRAMES_PER_STEP: &str = "flotilla_learner_frames_per_step";
pub const EVAL_RETURN: &str = "flotilla_eval_return";

pub const ACTOR_ENV_STEPS: &str = "flotilla_actor_env_steps_total";
pub const ACTOR_EPISODES: &str = "flotilla_actor_episodes_total";
pub const ACTOR_INFERENCE_DURATION: &str = "flotilla_actor_inference_duration_seconds";
pub const ACTOR_CHUNK_SEND_DURATION: &str = "flotilla_actor_chunk_send_duration_seconds";
pub const ACTOR_POLICY_VERSION: &str = "flotilla_actor_policy_version";
pub const ACTOR_RECONNECTS: &str = "flotilla_actor_reconnects_total";
pub const ACTOR_POLICY_WAIT: &str = "flotilla_actor_policy_wait_seconds";

/// Why a chunk was not trained on: the `reason` label of [`CHUNKS_DROPPED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Failed validation, or not protobuf at all.
    Invalid,
    /// Acted with a policy older than `ingest.max_policy_lag` allows (or, in
    /// sync mode, any older policy).
    Stale,
    /// A sequence number not above the last one its session sent.
    Duplicate,
    /// Acted with a policy version the learner has not published.
    FutureVersion,
    /// Over `ingest.max_chunk_bytes`.
    TooLarge,
    /// Another run's chunk.
    WrongRun,
    /// REINFORCE: part of an episode that can no longer be completed.
    IncompleteEpisode,
    /// Well-formed, but with values outside the `[ingest]` bounds.
    OutOfBounds,
    /// Claims an actor id that is not its session's (`PERMISSION_DENIED`).
    WrongActor,
}

impl DropReason {
    /// Every reason, in the order the docs list them.
    pub const ALL: [DropReason; 9] = [
        DropReason::Invalid,
        DropReason::Stale,
        DropReason::Duplicate,
        DropReason::FutureVersion,
        DropReason::TooLarge,
        DropReason::WrongRun,
        DropReason::IncompleteEpisode,
        DropReason::OutOfBounds,
        DropReason::WrongActor,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Invalid => "invalid",
            DropReason::Stale => "stale",
            DropReason::Duplicate => "duplicate",
            DropReason::FutureVersion => "future_version",
            DropReason::TooLarge => "too_large",
            DropReason::WrongRun => "wrong_run",
            DropReason::IncompleteEpisode => "incomplete_episode",
            DropReason::OutOfBounds => "out_of_bounds",
            DropReason::WrongActor => "wrong_actor",
        }
    }

    /// Counts `chunks` dropped chunks under this reason.
    pub fn count(self, chunks: u64) {
        metrics::counter!(CHUNKS_DROPPED, "reason" => self.as_str()).increment(chunks);
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Buckets of [`UPDATE_DURATION`], seconds.
pub const UPDATE_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of [`POLICY_LAG`], versions.
pub const POLICY_LAG_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0];
/// Buckets of the actor's histograms (inference, send, policy wait), seconds.
pub const ACTOR_LATENCY_BUCKETS: &[f64] = &[
    1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0,
];

/// Describes every learner metric and registers the labelled series at zero.
pub fn describe_learner() {
    describe_counter!(
        LEARNER_SAMPLES_RECEIVED,
        Unit::Count,
        "transitions accepted from actors"
    );
    describe_counter!(
        LEARNER_SAMPLES_TRAINED,
        Unit::Count,
        "transitions used in an update"
    );
    describe_counter!(
        LEARNER_UPDATES,
        Unit::Count,
        "optimizer updates (policy versions produced)"
    );
    describe_gauge!(POLICY_VERSION, "newest policy version");
    describe_gauge!(
        FRAMES_PER_STEP,
        "frames the environment renders per env step (run.frames_per_step; 4 for Atari): frames/s = env steps/s x this"
    );
    describe_gauge!(
        LAST_UPDATE_TIME,
        Unit::Seconds,
        "unix time of the newest update (the trainer's start before the first); `learner health` reads it"
    );
    describe_histogram!(
        POLICY_LAG,
        "versions between the acting policy and the learner, per chunk"
    );
    describe_counter!(CHUNKS_RECEIVED, Unit::Count, "chunks accepted");
    describe_counter!(
        CHUNKS_DROPPED,
        Unit::Count,
        "chunks rejected or discarded, by reason"
    );
    describe_gauge!(INGEST_QUEUE_DEPTH, "chunks waiting for the trainer");
    describe_histogram!(UPDATE_DURATION, Unit::Seconds, "wall time of one update");
    describe_gauge!(
        TORCH_THREADS,
        "libtorch threads of the trainer (while the first updates measure the candidates, the one in use)"
    );
    describe_gauge!(
        LOSS,
        "loss terms of the last update: policy, value, entropy"
    );
    describe_gauge!(
        APPROX_KL,
        "approximate KL between the actors' behaviour policy and the updated policy (includes policy lag)"
    );
    describe_gauge!(
        CLIP_FRACTION,
        "fraction of samples whose ratio was clipped in the last update"
    );
    describe_gauge!(
        EXPLAINED_VARIANCE,
        "explained variance of the value function in the last batch"
    );
    describe_gauge!(
        GRAD_NORM,
        "global gradient norm before clipping, last minibatch"
    );
    describe_gauge!(LEARNING_RATE, "learning rate of the last update");
    describe_gauge!(
        EVAL_RETURN,
        "mean return of the last evaluation ([eval]: episodes played with the policy of every eval.every_updates-th version)"
    );
    describe_gauge!(ACTORS_CONNECTED, "open trajectory streams");
    describe_counter!(
        BYTES_RECEIVED,
        Unit::Bytes,
        "trajectory payload bytes accepted"
    );
    describe_counter!(
        EPISODES,
        Unit::Count,
        "finished episodes reported by actors"
    );
    describe_gauge!(
        EPISODE_RETURN_MEAN,
        "mean return over the last 100 finished episodes"
    );
    describe_gauge!(
        EPISODE_LENGTH_MEAN,
        "mean length over the last 100 finished episodes"
    );
    describe_counter!(CHECKPOINTS_WRITTEN, Unit::Count, "checkpoints written");
    describe_counter!(
        AUTH_FAILURES,
        Unit::Count,
        "gRPC calls refused for a missing or wrong token"
    );
    describe_gauge!(
        KL_REFERENCE,
        "mean per-step log π − log π_ref of the last batch (KL penalty runs)"
    );
    describe_gauge!(
        KL_COEF,
        "KL penalty coefficient of the last batch (KL penalty runs)"
    );
    describe_gauge!(
        RETURN_STD,
        "sqrt(var + 1e-8) of the discounted returns that scaled the last batch's rewards (ppo.normalize_rewards runs)"
    );
    describe_counter!(
        UPDATES_SKIPPED,
        Unit::Count,
        "updates undone because their loss, gradient or parameters were not finite (the policy stays as it was)"
    );
    metrics::counter!(UPDATES_SKIPPED, "reason" => "non_finite").increment(0);
    for reason in DropReason::ALL {
        reason.count(0);
    }
    for name in [
        LEARNER_SAMPLES_RECEIVED,
        LEARNER_SAMPLES_TRAINED,
        LEARNER_UPDATES,
        CHUNKS_RECEIVED,
        BYTES_RECEIVED,
        EPISODES,
        CHECKPOINTS_WRITTEN,
        AUTH_FAILURES,
    ] {
        metrics::counter!(name).increment(0);
    }
    for term in ["policy", "value", "entropy"] {
        metrics::gauge!(LOSS, "term" => term).set(0.0);
    }
    for name in [
        POLICY_VERSION,
        INGEST_QUEUE_DEPTH,
        APPROX_KL,
        CLIP_FRACTION,
        EXPLAINED_VARIANCE,
        GRAD_NORM,
        LEARNING_RATE,
        ACTORS_CONNECTED,
        EPISODE_RETURN_MEAN,
        EPISODE_LENGTH_MEAN,
        KL_REFERENCE,
        KL_COEF,
    ] {
        metrics::gauge!(name).set(0.0);
    }
}

/// Describes every actor metric.
pub fn describe_actor() {
    describe_counter!(ACTOR_ENV_STEPS, Unit::Count, "environment steps taken");
    describe_counter!(ACTOR_EPISODES, Unit::Count, "episodes finished");
    describe_histogram!(
        ACTOR_INFERENCE_DURATION,
        Unit::Seconds,
        "one batched forward pass"
    );
    describe_histogram!(
        ACTOR_CHUNK_SEND_DURATION,
        Unit::Seconds,
        "handing one chunk to the stream until accepted"
    );
    describe_gauge!(ACTOR_POLICY_VERSION, "policy version the actor acts with");
    describe_histogram!(
        ACTOR_POLICY_WAIT,
        Unit::Seconds,
        "waits for a newer policy after acting its share of chunks with one version (a batch's worth or the learner's advice; one in sync mode)"
    );
    describe_counter!(
        ACTOR_RECONNECTS,
        Unit::Count,
        "reconnections to the learner"
    );
    for name in [ACTOR_ENV_STEPS, ACTOR_EPISODES, ACTOR_RECONNECTS] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!(ACTOR_POLICY_VERSION).set(0.0);
}

/// Seconds since the Unix epoch, as the timestamp gauges hold them.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `flotilla_*` name a string constant of this file declares.
    fn declared() -> std::collections::BTreeSet<String> {
        include_str!("metrics.rs")
            .lines()
            .filter(|l| {
                l.trim_start().starts_with("pub const ") && l.contains(": &str = \"flotilla_")
            })
            .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
            .collect()
    }

    /// The metrics reference and the declarations cannot drift apart: every
    /// declared metric is documented, every documented `flotilla_*` name is
    /// declared, and every drop reason is listed.
    #[test]
    fn docs_metrics_md_matches_the_declarations() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md"),
        )
        .unwrap();
        let documented: std::collections::BTreeSet<String> = doc
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("flotilla_"))
            .map(str::to_owned)
            .collect();
        let declared = declared();
        assert!(declared.len() >= 30, "{declared:?}");
        let undocumented: Vec<_> = declared.difference(&documented).collect();
        assert!(
            undocumented.is_empty(),
            "not in docs/metrics.md: {undocumented:?}"
        );
        let undeclared: Vec<_> = documented.difference(&declared).collect();
        assert!(
            undeclared.is_empty(),
            "documented but not declared: {undeclared:?}"
        );
        let table_row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{CHUNKS_DROPPED}{{reason}}`")))
            .expect("a row for the dropped chunks");
        for r in DropReason::ALL {
            assert!(
                table_row.contains(&format!("`{}`", r.as_str())),
                "reason {} missing from docs/metrics.md",
                r.as_str()
            );
        }
    }
}
