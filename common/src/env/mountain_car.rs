//! `MountainCar-v0`: drive an underpowered car up a hill (Moore 1990,
//! "Efficient memory-based learning for robot control", PhD thesis, University
//! of Cambridge; the version of Sutton & Barto's book).
//!
//! A port of Gymnasium 1.x's `gymnasium/envs/classic_control/mountain_car.py`
//! (`MountainCarEnv`) plus the `TimeLimit` wrapper that `gymnasium.make` adds.
//!
//! # Dynamics
//!
//! State `[position, velocity]` in `f64`, on the curve `y = sin(3x)`. Action
//! `a ∈ {0, 1, 2}` accelerates left, not at all, or right. One step:
//!
//! ```text
//! velocity += (a − 1)·0.001 + cos(3·position)·(−0.0025)
//! velocity  = clip(velocity, −0.07, 0.07)
//! position += velocity
//! position  = clip(position, −1.2, 0.6)
//! if position == −1.2 and velocity < 0: velocity = 0     (inelastic left wall)
//! ```
//!
//! # Episode
//!
//! * Reset: position uniform in `[−0.6, −0.4)`, velocity 0.
//! * Termination: `position >= 0.5 && velocity >= goal_velocity` (Gymnasium's
//!   constructor argument, default 0), on the new state.
//! * Reward: `−1.0` on every step, the terminating one included.
//! * Truncation: `truncated = elapsed >= max_episode_steps` (default 200), as the
//!   `TimeLimit` wrapper; it can coincide with `terminated`.
//!
//! # Spaces
//!
//! Actions `Discrete(3)`. Observations `[position, velocity]` as `f32`, in
//! `Box([−1.2, −0.07], [0.6, 0.07])` (bounds as `f32`).
//!
//! # Randomness
//!
//! `reset(Some(seed))` re-seeds a `Pcg64Mcg` with `seed_from_u64(seed)`; a new
//! environment starts from [`DEFAULT_SEED`], so `reset(None)` is deterministic
//! even before any seed is given. The stream differs from NumPy's, so seeded
//! episodes are not bit-identical to Gymnasium's; a step from a given state is.
//!
//! # Configuration
//!
//! ```toml
//! [env]
//! id = "MountainCar-v0"
//! max_episode_steps = 200   # >= 1
//! goal_velocity = 0.0       # finite
//! ```

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Deserialize;

use super::{config_error, Env, EnvError, Step};
use crate::render::{Colour, Frame};
use crate::space::{ActionRef, Space};

pub const ID: &str = "MountainCar-v0";

/// Seed of the random stream of a newly built environment.
pub const DEFAULT_SEED: u64 = 0;

pub const MIN_POSITION: f64 = -1.2;
pub const MAX_POSITION: f64 = 0.6;
pub const MAX_SPEED: f64 = 0.07;
pub const GOAL_POSITION: f64 = 0.5;
const FORCE: f64 = 0.001;
const GRAVITY: f64 = 0.0025;
/// Range of the reset position.
const RESET_LOW: f64 = -0.6;
const RESET_HIGH: f64 = -0.4;

/// Configuration of `MountainCar-v0` (see the module documentation).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MountainCarConfig {
    /// Time limit in steps (Gymnasium's registration: 200); at least 1.
    pub max_episode_steps: u32,
    /// Least velocity at the goal position that terminates (Gymnasium's
    /// `goal_velocity`, default 0); finite.
    pub goal_velocity: f64,
}

impl Default for MountainCarConfig {
    fn default() -> Self {
        MountainCarConfig {
            max_episode_steps: 200,
            goal_velocity: 0.0,
        }
    }
}

/// The mountain-car environment.
#[derive(Debug, Clone)]
pub struct MountainCar {
    state: [f64; 2],
    goal_velocity: f64,
    elapsed: u32,
    max_episode_steps: u32,
    rng: Pcg64Mcg,
    observation_space: Space,
    action_space: Space,
}

impl MountainCar {
    pub fn new(cfg: MountainCarConfig) -> Result<Self, EnvError> {
        if cfg.max_episode_steps == 0 {
            return Err(config_error(
                ID,
                "max_episode_steps must be at least 1, got 0",
            ));
        }
        if !cfg.goal_velocity.is_finite() {
            return Err(config_error(
                ID,
                format!(
                    "goal_velocity must be a finite number, got {}",
                    cfg.goal_velocity
                ),
            ));
        }
        Ok(MountainCar {
            state: [0.0; 2],
            goal_velocity: cfg.goal_velocity,
            elapsed: 0,
            max_episode_steps: cfg.max_episode_steps,
            rng: Pcg64Mcg::seed_from_u64(DEFAULT_SEED),
            observation_space: Space::bounded_box(
                vec![MIN_POSITION as f32, -MAX_SPEED as f32],
                vec![MAX_POSITION as f32, MAX_SPEED as f32],
            ),
            action_space: Space::Discrete { n: 3 },
        })
    }

    /// The physical state `[position, velocity]`.
    pub fn state(&self) -> [f64; 2] {
        self.state
    }

    /// Puts the car in state `[position, velocity]`, as assigning Gymnasium's
    /// `env.unwrapped.state` (no clipping until the next step). The elapsed
    /// step count is kept (see [`MountainCar::set_elapsed_steps`]).
    pub fn set_state(&mut self, s: [f64; 2]) {
        self.state = s;
    }

    /// Steps taken since the last reset (the `TimeLimit` wrapper's count).
    pub fn elapsed_steps(&self) -> u32 {
        self.elapsed
    }

    /// Sets the elapsed step count, e.g. to test truncation: the next step is
    /// truncated when `n + 1 >= max_episode_steps`.
    pub fn set_elapsed_steps(&mut self, n: u32) {
        self.elapsed = n;
    }

    pub fn max_episode_steps(&self) -> u32 {
        self.max_episode_steps
    }

    fn write_obs(&self, obs: &mut [f32]) {
        obs[0] = self.state[0] as f32;
        obs[1] = self.state[1] as f32;
    }
}

impl Env for MountainCar {
    /// Gymnasium's picture: the hill height(x) = 0.45·sin(3x) + 0.55 over
    /// [−1.2, 0.6], the flag at the goal and the car on the slope.
    fn render(&self) -> Option<Frame> {
        let (w, h) = (300.0, 220.0);
        let scale = w / (MAX_POSITION - MIN_POSITION);
        let mut f = Frame::new(w as usize, h as usize);
        let height = |x: f64| 0.45 * (3.0 * x).sin() + 0.55;
        let at = |x: f64| ((x - MIN_POSITION) * scale, h - 10.0 - height(x) * scale);
        let n = 100;
        for i in 0..n {
            let x0 = MIN_POSITION + (MAX_POSITION - MIN_POSITION) * i as f64 / n as f64;
            let x1 = MIN_POSITION + (MAX_POSITION - MIN_POSITION) * (i + 1) as f64 / n as f64;
            f.line(at(x0), at(x1), 2.0, Colour::Track);
        }
        let flag = at(GOAL_POSITION);
        f.line(flag, (flag.0, flag.1 - 25.0), 1.5, Colour::Ink);
        f.rect(
            flag.0,
            flag.1 - 25.0,
            flag.0 + 12.0,
            flag.1 - 18.0,
            Colour::Goal,
        );
        let (cx, cy) = at(self.state[0]);
        f.disc((cx, cy - 7.0), 7.0, Colour::Cart);
        Some(f)
    }

    fn id(&self) -> &'static str {
        ID
    }

    fn observation_space(&self) -> &Space {
        &self.observation_space
    }

    fn action_space(&self) -> &Space {
        &self.action_space
    }

    fn reset(&mut self, seed: Option<u64>, obs: &mut [f32]) {
        if let Some(seed) = seed {
            self.rng = Pcg64Mcg::seed_from_u64(seed);
        }
        self.state = [self.rng.random_range(RESET_LOW..RESET_HIGH), 0.0];
        self.elapsed = 0;
        self.write_obs(obs);
    }

    fn step(&mut self, action: ActionRef<'_>, obs: &mut [f32]) -> Step {
        let direction = match action {
            ActionRef::Discrete(a) if a < 3 => a as f64 - 1.0,
            other => invalid_action(other),
        };
        let [mut position, mut velocity] = self.state;
        velocity += direction * FORCE + (3.0 * position).cos() * (-GRAVITY);
        velocity = velocity.clamp(-MAX_SPEED, MAX_SPEED);
        position += velocity;
        position = position.clamp(MIN_POSITION, MAX_POSITION);
        if position == MIN_POSITION && velocity < 0.0 {
            velocity = 0.0;
        }
        self.state = [position, velocity];
        let terminated = position >= GOAL_POSITION && velocity >= self.goal_velocity;
        self.elapsed = self.elapsed.saturating_add(1);
        self.write_obs(obs);
        Step {
            reward: -1.0,
            terminated,
            truncated: self.elapsed >= self.max_episode_steps,
        }
    }
}

#[cold]
#[inline(never)]
fn invalid_action(action: ActionRef<'_>) -> ! {
    panic!("{ID}: invalid action {action:?}; the action space is Discrete(3)")
}

#[cfg(test)]
mod tests {
    //! Expected values come from Gymnasium 1.4.0 (NumPy 2.4), run as
    //!
    //! ```python
    //! import numpy as np, gymnasium as gym
    //! env = gym.make("MountainCar-v0")        # fresh env per case
    //! env.reset(seed=0)
    //! env.unwrapped.state = np.array(STATE, dtype=np.float64)
    //! for a in ACTIONS:
    //!     obs, r, term, trunc, _ = env.step(a)
    //!     print([str(v) for v in obs], r, term, trunc,
    //!           [float(v) for v in env.unwrapped.state])
    //! ```
    //!
    //! (`gym.make("MountainCar-v0", goal_velocity=0.05)` for the goal-velocity case).
    #![allow(clippy::needless_range_loop)] // several arrays indexed together

    use super::*;
    use crate::env::{make_env, parse};

    fn env() -> MountainCar {
        MountainCar::new(MountainCarConfig::default()).unwrap()
    }

    /// One step of a reference trajectory: action, then Gymnasium's float32
    /// observation, terminated flag and float64 state (the reward is always −1).
    struct Expect {
        action: usize,
        obs: [f32; 2],
        terminated: bool,
        state: [f64; 2],
    }

    fn check(env: &mut MountainCar, start: [f64; 2], steps: &[Expect]) {
        env.set_state(start);
        let mut obs = [0.0f32; 2];
        for (t, e) in steps.iter().enumerate() {
            let step = env.step(ActionRef::Discrete(e.action), &mut obs);
            for i in 0..2 {
                let tol = 1e-6 * e.obs[i].abs().max(1e-3);
                assert!(
                    (obs[i] - e.obs[i]).abs() <= tol,
                    "{start:?} step {t} obs[{i}]: got {}, Gymnasium {}",
                    obs[i],
                    e.obs[i]
                );
                let s = env.state()[i];
                assert!(
                    (s - e.state[i]).abs() <= 1e-14,
                    "{start:?} step {t} state[{i}]: got {s}, Gymnasium {}",
                    e.state[i]
                );
            }
            assert_eq!(step.reward, -1.0);
            assert_eq!(
                step.terminated, e.terminated,
                "{start:?} step {t} terminated"
            );
            assert!(!step.truncated);
        }
    }

    #[test]
    fn steps_match_gymnasium_for_every_action() {
        check(
            &mut env(),
            [-0.5, 0.0],
            &[
                Expect {
                    action: 2,
                    obs: [-0.49917683, 0.000823157],
                    terminated: false,
                    state: [-0.49917684300416926, 0.0008231569958307428],
                },
                Expect {
                    action: 2,
                    obs: [-0.4975367, 0.0016401564],
                    terminated: false,
                    state: [-0.49753668667935325, 0.0016401563248160246],
                },
                Expect {
                    action: 1,
                    obs: [-0.49609178, 0.0014448897],
                    terminated: false,
                    state: [-0.4960917969323474, 0.0014448897470058627],
                },
            ],
        );
        check(
            &mut env(),
            [0.3, 0.05],
            &[
                Expect {
                    action: 0,
                    obs: [0.34744596, 0.047445975],
                    terminated: false,
                    state: [0.34744597507932334, 0.04744597507932334],
                },
                Expect {
                    action: 1,
                    obs: [0.39363146, 0.046185467],
                    terminated: false,
                    state: [0.39363144356117485, 0.04618546848185154],
                },
            ],
        );
    }

    #[test]
    fn velocity_and_position_are_clipped() {
        check(
            &mut env(),
            [-0.5, 0.0699],
            &[Expect {
                action: 2,
                obs: [-0.43, 0.07],
                terminated: false,
                state: [-0.43, 0.07],
            }],
        );
        check(
            &mut env(),
            [-0.2, -0.0699],
            &[Expect {
                action: 0,
                obs: [-0.27, -0.07],
                terminated: false,
                state: [-0.27, -0.07],
            }],
        );
        // Right end: position clipped to 0.6 (and the goal is reached).
        check(
            &mut env(),
            [0.59, 0.07],
            &[Expect {
                action: 2,
                obs: [0.6, 0.07],
                terminated: true,
                state: [0.6, 0.07],
            }],
        );
    }

    #[test]
    fn left_wall_stops_the_car() {
        // Position clipped to -1.2 with negative velocity: velocity reset to 0;
        // then the car moves off the wall normally.
        check(
            &mut env(),
            [-1.19, -0.05],
            &[
                Expect {
                    action: 0,
                    obs: [-1.2, 0.0],
                    terminated: false,
                    state: [-1.2, 0.0],
                },
                Expect {
                    action: 2,
                    obs: [-1.1967582, 0.003241896],
                    terminated: false,
                    state: [-1.1967581039591646, 0.0032418960408353683],
                },
            ],
        );
        let mut env = env();
        env.set_state([-1.19, -0.05]);
        env.step(ActionRef::Discrete(0), &mut [0.0; 2]);
        assert_eq!(env.state(), [MIN_POSITION, 0.0]);
    }

    #[test]
    fn goal_terminates_with_position_and_velocity_condition() {
        check(
            &mut env(),
            [0.49, 0.02],
            &[Expect {
                action: 2,
                obs: [0.51074845, 0.020748436],
                terminated: true,
                state: [0.5107484356665326, 0.020748435666532672],
            }],
        );
        // At the goal position but moving left: not terminal.
        check(
            &mut env(),
            [0.5, 0.0],
            &[Expect {
                action: 0,
                obs: [0.49882317, -0.001176843],
                terminated: false,
                state: [0.49882315699583074, -0.0011768430041692573],
            }],
        );
        // Gymnasium's goal_velocity = 0.05: the same step is not terminal.
        let mut goal_velocity = MountainCar::new(MountainCarConfig {
            goal_velocity: 0.05,
            ..Default::default()
        })
        .unwrap();
        check(
            &mut goal_velocity,
            [0.49, 0.02],
            &[Expect {
                action: 2,
                obs: [0.51074845, 0.020748436],
                terminated: false,
                state: [0.5107484356665326, 0.020748435666532672],
            }],
        );
        // The velocity condition is `>=`: a goal velocity equal to the velocity
        // reached terminates, the next float above it does not.
        let mut e = env();
        e.set_state([0.49, 0.02]);
        e.step(ActionRef::Discrete(2), &mut [0.0; 2]);
        let reached = e.state()[1];
        for (goal_velocity, want) in [(reached, true), (reached.next_up(), false)] {
            let mut e = MountainCar::new(MountainCarConfig {
                goal_velocity,
                ..Default::default()
            })
            .unwrap();
            e.set_state([0.49, 0.02]);
            let step = e.step(ActionRef::Discrete(2), &mut [0.0; 2]);
            assert_eq!(step.terminated, want, "goal_velocity {goal_velocity}");
        }
    }

    #[test]
    fn terminates_at_the_same_step_as_gymnasium() {
        // Python: state = [-0.5, 0]; a = 2 if velocity >= 0 else 0 until done
        // -> terminated at step 124, state below.
        let mut env = env();
        env.set_state([-0.5, 0.0]);
        let mut obs = [0.0f32; 2];
        for t in 1..=200 {
            let a = if env.state()[1] >= 0.0 { 2 } else { 0 };
            let step = env.step(ActionRef::Discrete(a), &mut obs);
            assert_eq!(step.reward, -1.0);
            if step.done() {
                assert_eq!(t, 124);
                assert!(step.terminated && !step.truncated);
                break;
            }
        }
        let want = [0.5349499825655736, 0.04819097792866507];
        for i in 0..2 {
            assert!(
                (env.state()[i] - want[i]).abs() < 1e-12,
                "{:?}",
                env.state()
            );
        }
    }

    #[test]
    fn truncates_at_200_steps_as_gymnasium() {
        // Python: state = [-0.5, 0]; step(1) 200 times -> truncated at step 200,
        // obs [-0.5215926170349121, 0.002043422544375062].
        let mut env = env();
        env.set_state([-0.5, 0.0]);
        let mut obs = [0.0f32; 2];
        for t in 1..=200 {
            let step = env.step(ActionRef::Discrete(1), &mut obs);
            assert!(!step.terminated);
            assert_eq!(step.truncated, t == 200, "step {t}");
        }
        assert!((obs[0] - -0.5215926).abs() < 1e-6, "{obs:?}");
        assert!((obs[1] - 0.0020434225).abs() < 1e-8, "{obs:?}");
        // Terminal and truncated on the same step.
        env.reset(Some(3), &mut obs);
        env.set_elapsed_steps(199);
        env.set_state([0.49, 0.02]);
        let step = env.step(ActionRef::Discrete(2), &mut obs);
        assert!(step.terminated && step.truncated);
    }

    #[test]
    fn reset_position_is_uniform_in_range_with_zero_velocity() {
        let mut env = env();
        let mut obs = [0.0f32; 2];
        let (mut lo, mut hi, mut sum) = (f64::MAX, f64::MIN, 0.0);
        let n = 2000;
        for seed in 0..n {
            env.reset(Some(seed), &mut obs);
            assert_eq!(env.elapsed_steps(), 0);
            let [p, v] = env.state();
            assert!((-0.6..-0.4).contains(&p), "seed {seed}: {p}");
            assert_eq!(v, 0.0);
            assert_eq!(obs, [p as f32, 0.0]);
            lo = lo.min(p);
            hi = hi.max(p);
            sum += p;
        }
        assert!(lo < -0.599 && hi > -0.401, "[{lo}, {hi}]");
        assert!(
            (sum / n as f64 + 0.5).abs() < 0.003,
            "mean {}",
            sum / n as f64
        );
    }

    fn trajectory(env: &mut MountainCar, seed: Option<u64>) -> Vec<[f32; 2]> {
        let mut obs = [0.0f32; 2];
        env.reset(seed, &mut obs);
        let mut out = vec![obs];
        for t in 0..20 {
            env.step(ActionRef::Discrete(t % 3), &mut obs);
            out.push(obs);
        }
        out
    }

    #[test]
    fn seeding_is_deterministic() {
        let (mut a, mut b) = (env(), env());
        assert_eq!(trajectory(&mut a, Some(42)), trajectory(&mut b, Some(42)));
        assert_ne!(trajectory(&mut a, Some(42)), trajectory(&mut b, Some(43)));
        assert_eq!(trajectory(&mut a, Some(5)), trajectory(&mut b, Some(5)));
        let (ta, tb) = (trajectory(&mut a, None), trajectory(&mut b, None));
        assert_eq!(ta, tb);
        assert_ne!(ta, trajectory(&mut env(), Some(5)));
        assert_eq!(
            trajectory(&mut env(), None),
            trajectory(&mut env(), Some(DEFAULT_SEED))
        );
    }

    #[test]
    fn spaces_match_gymnasium() {
        // Python: env.observation_space -> low [-1.2, -0.07], high [0.6, 0.07] (float32)
        let env = env();
        assert_eq!(
            env.observation_space(),
            &Space::Box {
                low: vec![-1.2, -0.07],
                high: vec![0.6, 0.07],
                shape: vec![2],
                dtype: crate::space::Dtype::Float32,
            }
        );
        assert_eq!(env.action_space(), &Space::Discrete { n: 3 });
        assert_eq!(env.max_episode_steps(), 200);
        assert_eq!(env.id(), "MountainCar-v0");
    }

    #[test]
    fn config_is_read_from_toml_and_validated() {
        let t: toml::Table = toml::from_str("max_episode_steps = 9\ngoal_velocity = 0.01").unwrap();
        assert_eq!(
            parse::<MountainCarConfig>(ID, &t).unwrap(),
            MountainCarConfig {
                max_episode_steps: 9,
                goal_velocity: 0.01
            }
        );
        assert_eq!(
            parse::<MountainCarConfig>(ID, &toml::Table::new()).unwrap(),
            MountainCarConfig::default()
        );
        for (text, key) in [
            ("max_episode_steps = 0", "max_episode_steps"),
            ("goal_velocity = nan", "goal_velocity"),
            ("goal_velocity = inf", "goal_velocity"),
        ] {
            let t: toml::Table = toml::from_str(text).unwrap();
            let msg = make_env(ID, &t).err().unwrap().to_string();
            assert!(msg.contains(ID) && msg.contains(key), "{text}: {msg}");
        }
    }

    #[test]
    #[should_panic(expected = "invalid action")]
    fn out_of_range_action_panics() {
        env().step(ActionRef::Discrete(3), &mut [0.0; 2]);
    }
}
