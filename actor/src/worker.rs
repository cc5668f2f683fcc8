//! The actor's environment thread: steps the `VecEnv`, runs CPU inference,
//! packs one chunk every T steps and hands it to the network side.
//!
//! New weights are picked up between chunks, so every chunk is acted with one
//! policy version, which it carries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_common::chunk::ChunkBuilder;
use flotilla_common::env::EnvSpec;
use flotilla_common::metrics as m;
use flotilla_common::model::ModelSpec;
use flotilla_common::policy::CpuPolicy;
use flotilla_common::proto;
use flotilla_common::{Snapshot, Space, VecEnv};
use ndarray::ArrayView2;
use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::client::MakeEnv;

/// What the worker needs to know about the run.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    pub env: EnvSpec,
    pub model: ModelSpec,
    pub chunk_len: usize,
    pub num_envs: usize,
    pub max_steps_per_second: Option<f64>,
    pub observation_space: Space,
    pub action_space: Space,
    pub behavior_values: bool,
    /// Act one chunk per policy version, then wait for the next version.
    pub sync: bool,
    /// Samples the learner trains on per version (0: no limit): the worker
    /// acts at most enough chunks with one version to fill that by itself,
    /// then waits for a newer version.
    pub batch_samples: usize,
    pub seed: u64,
}

/// Why the environment thread stopped early.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("environments: {0}")]
    Env(#[from] flotilla_common::EnvError),
    #[error("observation buffer: {0}")]
    Shape(#[from] ndarray::ShapeError),
}

/// Runs until `stop` is raised or the chunk receiver is gone.
/// Environments come from `own` when the actor brings its own, else from
/// the spec's built-in id.
pub fn run(
    spec: WorkerSpec,
    own: Option<MakeEnv>,
    snapshots: watch::Receiver<Option<Snapshot>>,
    chunks: mpsc::Sender<proto::Chunk>,
    stop: Arc<AtomicBool>,
) -> Result<(), WorkerError> {
    run_with_patience(spec, own, snapshots, chunks, stop, AHEAD_PATIENCE)
}

/// [`run`], waiting at most `patience` for a new policy after acting a
/// batch's worth of chunks with one version.
fn run_with_patience(
    spec: WorkerSpec,
    own: Option<MakeEnv>,
    mut snapshots: watch::Receiver<Option<Snapshot>>,
    chunks: mpsc::Sender<proto::Chunk>,
    stop: Arc<AtomicBool>,
    patience: Duration,
) -> Result<(), WorkerError> {
    let mut actor = Acting::new(&spec, own.as_ref())?;
    let mut policy: Option<(u64, CpuPolicy)> = None;
    let mut pace = spec.max_steps_per_second.map(Pacer::new);
    let mut flow = FlowControl::new(&spec, patience);
    while !stop.load(Ordering::Relaxed) {
        // Between chunks: take the newest snapshot, if any arrived.
        if snapshots.has_changed().unwrap_or(false) || policy.is_none() {
            follow(&mut snapshots, &mut policy, &spec, &mut flow);
        }
        let Some((version, p)) = policy.as_ref() else {
            // Nothing to act with yet: wait for the first snapshot.
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        };
        let chunk = actor.chunk(&spec, p, *version)?;
        if let Some(pace) = pace.as_mut() {
            pace.wait_for((spec.chunk_len * spec.num_envs) as u64, &stop);
        }
        if chunks.blocking_send(chunk).is_err() {
            break;
        }
        if let Some(waited) = flow.after_chunk(*version, &snapshots, &stop) {
            if let Some(pace) = pace.as_mut() {
                pace.pause(waited);
            }
        }
    }
    Ok(())
}

/// Loads the newest snapshot into `policy` when its version is new to us,
/// and takes its advice on how much to act with it; a snapshot that does not
/// fit the spec is logged and ignored.
fn follow(
    snapshots: &mut watch::Receiver<Option<Snapshot>>,
    policy: &mut Option<(u64, CpuPolicy)>,
    spec: &WorkerSpec,
    flow: &mut FlowControl,
) {
    let Some(s) = snapshots.borrow_and_update().clone() else {
        return;
    };
    if policy.as_ref().map(|(v, _)| *v) == Some(s.version) {
        return;
    }
    let obs_shape = spec.observation_space.shape();
    match CpuPolicy::from_safetensors(&spec.model, &obs_shape, &spec.action_space, &s.safetensors) {
        Ok(p) => {
            debug!(version = s.version, "policy updated");
            metrics::gauge!(m::ACTOR_POLICY_VERSION).set(s.version as f64);
            flow.advise(spec, s.samples_per_version);
            *policy = Some((s.version, p));
        }
        Err(e) => warn!(version = s.version, error = %e, "ignoring unusable policy snapshot"),
    }
}

/// The environments, the sampling stream and the chunk being packed.
struct Acting {
    envs: VecEnv,
    rng: Pcg64Mcg,
    builder: ChunkBuilder,
}

impl Acting {
    fn new(spec: &WorkerSpec, own: Option<&MakeEnv>) -> Result<Self, WorkerError> {
        let envs = match own {
            Some(make) => {
                VecEnv::from_envs((0..spec.num_envs).map(|_| make()).collect(), spec.seed)
            }
            None => VecEnv::new(&spec.env, spec.num_envs, spec.seed)?,
        };
        let mut builder = ChunkBuilder::new(
            spec.chunk_len,
            spec.num_envs,
            spec.observation_space.flat_dim(),
            spec.action_space.clone(),
        )
        .with_obs_dtype(spec.observation_space.dtype());
        builder.begin(envs.observations());
        Ok(Acting {
            envs,
            rng: Pcg64Mcg::seed_from_u64(spec.seed ^ 0xac70_12ac_7012),
            builder,
        })
    }

    /// Acts `chunk_len` steps of every env with `policy` (version `version`)
    /// and packs them. Identity (run, actor id, sequence) is stamped by the
    /// connection that sends the chunk.
    fn chunk(
        &mut self,
        spec: &WorkerSpec,
        policy: &CpuPolicy,
        version: u64,
    ) -> Result<proto::Chunk, WorkerError> {
        let (n, obs_dim) = (spec.num_envs, spec.observation_space.flat_dim());
        for _ in 0..spec.chunk_len {
            let t0 = Instant::now();
            let obs = ArrayView2::from_shape((n, obs_dim), self.envs.observations())?;
            let s = policy.act(obs, spec.behavior_values, false, &mut self.rng);
            metrics::histogram!(m::ACTOR_INFERENCE_DURATION).record(t0.elapsed().as_secs_f64());
            let (envs, b) = (&mut self.envs, &mut self.builder);
            if s.discrete.is_empty() {
                envs.step_continuous(&s.continuous);
                b.push_continuous(&s.continuous, &s.logp, s.value.as_deref(), envs);
            } else {
                envs.step_discrete(&s.discrete);
                b.push_discrete(&s.discrete, &s.logp, s.value.as_deref(), envs);
            }
            let finished = envs.finished_episodes().len() as u64;
            if finished > 0 {
                metrics::counter!(m::ACTOR_EPISODES).increment(finished);
            }
        }
        metrics::counter!(m::ACTOR_ENV_STEPS).increment((spec.chunk_len * n) as u64);
        Ok(self.builder.finish("", &spec.env.id, 0, 0, version))
    }
}

/// How many chunks are acted with one policy version before waiting for
/// another: a batch's worth (`RunSpec.batch_samples`) or the learner's
/// advice for the version (`PolicySnapshot.samples_per_version`), or one in
/// sync mode.
struct FlowControl {
    limit: Option<usize>,
    /// `None` in sync mode: wait as long as it takes.
    patience: Option<Duration>,
    /// (version, chunks acted with it so far)
    same_version: (u64, usize),
    warned_version: Option<u64>,
}

impl FlowControl {
    fn new(spec: &WorkerSpec, patience: Duration) -> Self {
        FlowControl {
            limit: if spec.sync {
                Some(1)
            } else {
                chunks_per_version(spec.batch_samples, spec.num_envs, spec.chunk_len)
            },
            patience: (!spec.sync).then_some(patience),
            same_version: (u64::MAX, 0),
            warned_version: None,
        }
    }

    /// Takes the learner's advice for the version about to be acted with:
    /// `samples` per version (0: none, a batch's worth). Sync mode keeps one
    /// chunk per version.
    fn advise(&mut self, spec: &WorkerSpec, samples: u64) {
        if spec.sync {
            return;
        }
        let share = if samples > 0 {
            usize::try_from(samples).unwrap_or(usize::MAX)
        } else {
            spec.batch_samples
        };
        self.limit = chunks_per_version(share, spec.num_envs, spec.chunk_len);
    }

    /// Counts a chunk acted with `acted_with`; when that version's share is
    /// used up, waits for another version and returns how long it waited.
    fn after_chunk(
        &mut self,
        acted_with: u64,
        snapshots: &watch::Receiver<Option<Snapshot>>,
        stop: &AtomicBool,
    ) -> Option<Duration> {
        self.same_version = if self.same_version.0 == acted_with {
            (acted_with, self.same_version.1 + 1)
        } else {
            (acted_with, 1)
        };
        if self.limit.is_none_or(|l| self.same_version.1 < l) {
            return None;
        }
        let t0 = Instant::now();
        let changed = wait_for_change(snapshots, acted_with, stop, self.patience);
        let waited = t0.elapsed();
        metrics::histogram!(m::ACTOR_POLICY_WAIT).record(waited.as_secs_f64());
        if !changed && !stop.load(Ordering::Relaxed) {
            // Our chunks of this version did not all reach the learner
            // (a reconnect, a restart): act a whole batch's worth again.
            self.same_version.1 = 0;
            if self.warned_version != Some(acted_with) {
                self.warned_version = Some(acted_with);
                warn!(
                    version = acted_with,
                    "no new policy after {} s; acting on with this one",
                    self.patience.unwrap_or_default().as_secs_f64()
                );
            }
        }
        Some(waited)
    }
}

/// How long an actor that has acted its share of chunks with one version
/// waits for a new one before acting on anyway. The share fills a batch by
/// itself, so the wait normally ends with the learner's next update; it runs
/// out when some of the actor's chunks never reached the learner (lost in a
/// reconnect, or the learner restarted from a checkpoint of that version).
const AHEAD_PATIENCE: Duration = Duration::from_secs(5);

/// Chunks of `num_envs` × `chunk_len` samples that fill `batch_samples`, the
/// most one actor acts with one policy version (`None`: no limit). One
/// actor alone can then complete a batch, so as long as its chunks reach the
/// learner the limit does not stall it, while actors cannot act far ahead.
pub fn chunks_per_version(
    batch_samples: usize,
    num_envs: usize,
    chunk_len: usize,
) -> Option<usize> {
    let per_chunk = num_envs * chunk_len;
    (batch_samples > 0 && per_chunk > 0).then(|| batch_samples.div_ceil(per_chunk))
}

/// Blocks until the newest snapshot is another version than `version`
/// (true), `stop` is raised or `patience` has passed (false). Any other
/// version counts, not only a newer one: a learner restarted from an older
/// checkpoint publishes lower versions, and the actor switches to them.
fn wait_for_change(
    snapshots: &watch::Receiver<Option<Snapshot>>,
    version: u64,
    stop: &AtomicBool,
    patience: Option<Duration>,
) -> bool {
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if snapshots
            .borrow()
            .as_ref()
            .is_some_and(|s| s.version != version)
        {
            return true;
        }
        if patience.is_some_and(|p| started.elapsed() >= p) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Holds a thread to a mean rate of env steps per second, measured from its
/// first call, so a slow actor can be simulated (or a shared machine spared).
struct Pacer {
    per_second: f64,
    started: Option<Instant>,
    steps: u64,
}

impl Pacer {
    fn new(per_second: f64) -> Self {
        Self {
            per_second,
            started: None,
            steps: 0,
        }
    }

    /// Moves the schedule on by `d` spent waiting for something else, so the
    /// steps not taken meanwhile are not made up afterwards at full speed.
    fn pause(&mut self, d: Duration) {
        if let Some(s) = self.started.as_mut() {
            *s += d;
        }
    }

    /// Records `steps` more steps and sleeps until they are due, waking early on `stop`.
    fn wait_for(&mut self, steps: u64, stop: &AtomicBool) {
        let started = *self.started.get_or_insert_with(Instant::now);
        self.steps += steps;
        let due = started + Duration::from_secs_f64(self.steps as f64 / self.per_second);
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(100)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_holds_the_mean_rate() {
        let stop = AtomicBool::new(false);
        let mut pacer = Pacer::new(2_000.0);
        let t0 = Instant::now();
        for _ in 0..5 {
            pacer.wait_for(100, &stop);
        }
        // 500 steps at 2000/s are due 250 ms after the first call.
        assert!(
            t0.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn chunks_per_version_fills_a_batch() {
        // 2 envs x 64 steps = 128 samples per chunk.
        assert_eq!(chunks_per_version(2048, 2, 64), Some(16));
        assert_eq!(chunks_per_version(2049, 2, 64), Some(17));
        assert_eq!(chunks_per_version(100, 2, 64), Some(1));
        assert_eq!(chunks_per_version(0, 2, 64), None);
    }

    /// Zero weights for every parameter of `spec`: a uniform policy.
    fn zero_snapshot(spec: &ModelSpec, obs_dim: usize, space: &Space, version: u64) -> Snapshot {
        let zeros: Vec<(String, Vec<usize>, Vec<f32>)> = spec
            .parameter_shapes(&[obs_dim], space)
            .into_iter()
            .map(|(n, s)| {
                let data = vec![0.0; s.iter().product()];
                (n, s, data)
            })
            .collect();
        let tensors = zeros
            .iter()
            .map(|(n, s, d)| (n.as_str(), s.as_slice(), d.as_slice()));
        Snapshot {
            version,
            safetensors: flotilla_common::policy::write_safetensors(tensors, None).into(),
            samples_per_version: 0,
        }
    }

    fn tiny_spec(batch_samples: usize) -> (WorkerSpec, ModelSpec, Space) {
        let model = ModelSpec {
            hidden_sizes: vec![4],
            ..ModelSpec::default()
        };
        let act = Space::Discrete { n: 2 };
        let spec = WorkerSpec {
            env: EnvSpec::new("CartPole-v1"),
            model: model.clone(),
            chunk_len: 8,
            num_envs: 2,
            max_steps_per_second: None,
            observation_space: Space::Box {
                low: vec![f32::NEG_INFINITY; 4],
                high: vec![f32::INFINITY; 4],
                shape: vec![4],
                dtype: flotilla_common::space::Dtype::Float32,
            },
            action_space: act.clone(),
            behavior_values: true,
            sync: false,
            batch_samples, // 16 samples per chunk
            seed: 1,
        };
        (spec, model, act)
    }

    /// A worker thread on [`tiny_spec`] with 3 chunks per version, acting
    /// with `version` until told otherwise through `snapshots`.
    struct Running {
        snapshots: watch::Sender<Option<Snapshot>>,
        chunks: mpsc::Receiver<proto::Chunk>,
        stop: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<Result<(), WorkerError>>,
        model: ModelSpec,
        act: Space,
    }

    impl Running {
        fn start(version: u64, patience: Duration) -> Self {
            let (spec, model, act) = tiny_spec(40); // 16 samples per chunk: 3 chunks
            let (snapshots, snap_rx) =
                watch::channel(Some(zero_snapshot(&model, 4, &act, version)));
            let (tx, chunks) = mpsc::channel(64);
            let stop = Arc::new(AtomicBool::new(false));
            let thread = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    run_with_patience(spec, None, snap_rx, tx, stop, patience)
                })
            };
            Running {
                snapshots,
                chunks,
                stop,
                thread,
                model,
                act,
            }
        }

        fn publish(&self, version: u64) {
            self.publish_advising(version, 0);
        }

        fn publish_advising(&self, version: u64, samples_per_version: u64) {
            let snap = Snapshot {
                samples_per_version,
                ..zero_snapshot(&self.model, 4, &self.act, version)
            };
            self.snapshots.send_replace(Some(snap));
        }

        /// Versions of the next `n` chunks, waiting at most 20 s for them.
        fn next_versions(&mut self, n: usize) -> Vec<u64> {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut v = Vec::new();
            while v.len() < n {
                match self.chunks.try_recv() {
                    Ok(c) => v.push(c.policy_version),
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => panic!("only {} of {n} chunks in 20 s: {v:?}", v.len()),
                }
            }
            v
        }

        /// Whether no chunk arrives for `d` (a lower bound on a wait: a
        /// busy machine can only make the worker later, never earlier).
        fn quiet_for(&mut self, d: Duration) -> bool {
            std::thread::sleep(d);
            self.chunks.try_recv().is_err()
        }

        fn finish(self) {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.join().unwrap().unwrap();
        }
    }

    /// No new version for `patience`: the worker acts another batch's
    /// worth, not one chunk per `patience`; a lower version (a learner
    /// restarted from an older checkpoint) ends the wait too.
    #[test]
    fn acts_on_after_patience_and_on_any_version_change() {
        let patience = Duration::from_secs(2);
        let t0 = Instant::now();
        let mut w = Running::start(5, patience);
        assert_eq!(w.next_versions(3), vec![5, 5, 5]);
        assert!(
            w.quiet_for(patience / 2),
            "acted on before its patience ran out"
        );
        // patience runs out: three more chunks, not one
        assert_eq!(w.next_versions(3), vec![5, 5, 5]);
        assert!(t0.elapsed() >= patience);
        w.publish(2);
        assert_eq!(w.next_versions(3), vec![2, 2, 2]);
        w.finish();
    }

    /// With a batch of 3 chunks' samples, the worker acts 3 chunks with
    /// version 1, waits, and acts 3 more once version 2 arrives.
    #[test]
    fn acts_at_most_a_batch_per_version() {
        let mut w = Running::start(1, AHEAD_PATIENCE);
        assert_eq!(w.next_versions(3), vec![1, 1, 1]);
        assert!(w.quiet_for(Duration::from_millis(300)));
        w.publish(2);
        assert_eq!(w.next_versions(3), vec![2, 2, 2]);
        assert!(w.quiet_for(Duration::from_millis(300)));
        w.finish();
    }

    /// The learner's advice replaces the batch's worth for its version:
    /// 17 samples are 2 chunks of 16; no advice is a batch's worth again.
    #[test]
    fn acts_the_learners_advice_per_version() {
        let mut w = Running::start(1, AHEAD_PATIENCE);
        assert_eq!(w.next_versions(3), vec![1, 1, 1]);
        w.publish_advising(2, 17);
        assert_eq!(w.next_versions(2), vec![2, 2]);
        assert!(w.quiet_for(Duration::from_millis(300)));
        w.publish_advising(3, 0);
        assert_eq!(w.next_versions(3), vec![3, 3, 3]);
        assert!(w.quiet_for(Duration::from_millis(300)));
        w.finish();
    }

    #[test]
    fn pacer_wakes_on_stop() {
        let stop = AtomicBool::new(true);
        let mut pacer = Pacer::new(1.0);
        let t0 = Instant::now();
        pacer.wait_for(1_000, &stop);
        assert!(t0.elapsed() < Duration::from_secs(1));
    }
}
