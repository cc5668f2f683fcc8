//! `Pendulum-v1`: swing a torque-limited pendulum up and hold it upright (the
//! classic inverted-pendulum swing-up problem).
//!
//! A port of Gymnasium 1.x's `gymnasium/envs/classic_control/pendulum.py`
//! (`PendulumEnv`) plus the `TimeLimit` wrapper that `gymnasium.make` adds.
//!
//! # Dynamics
//!
//! State `[θ, θ̇]` in `f64`, θ measured from upright (θ = 0 is the goal). Mass
//! 1, length 1, `dt = 0.05`, gravity `g` (default 10.0, Gymnasium's constructor
//! argument). The action is a torque `u`, clipped to `[−2, 2]`. One step
//! (semi-implicit Euler):
//!
//! ```text
//! cost  = angle_normalize(θ)² + 0.1·θ̇² + 0.001·u²
//! θ̇'   = clip(θ̇ + (3g/(2l)·sin θ + 3/(m·l²)·u)·dt, −8, 8)
//! θ'    = θ + θ̇'·dt
//! ```
//!
//! where `angle_normalize(x) = ((x + π) mod 2π) − π` (floored modulo, into
//! `[−π, π)`); θ itself is never wrapped. The reward is `−cost`, at most 0 and
//! at least about −16.27. As in Gymnasium under NumPy 2, the terms in `u` are
//! computed in `f32` (the action's dtype) before joining the `f64` sums.
//!
//! # Episode
//!
//! * Reset: θ uniform in `[−π, π)`, θ̇ uniform in `[−1, 1)`.
//! * Termination: never.
//! * Truncation: `truncated = elapsed >= max_episode_steps` (default 200), as the
//!   `TimeLimit` wrapper.
//!
//! # Spaces
//!
//! Actions `Box(−2, 2, (1,))`, clipped in `step` (a NaN stays NaN, as with
//! `np.clip`). Observations `[cos θ, sin θ, θ̇]` as `f32`, in
//! `Box([−1, −1, −8], [1, 1, 8])`.
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
//! id = "Pendulum-v1"
//! max_episode_steps = 200   # >= 1
//! g = 10.0                  # gravity, finite and > 0
//! ```

use std::f64::consts::PI;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Deserialize;

use super::{config_error, Env, EnvError, Step};
use crate::render::{Colour, Frame};
use crate::space::{ActionRef, Space};

pub const ID: &str = "Pendulum-v1";

/// Seed of the random stream of a newly built environment.
pub const DEFAULT_SEED: u64 = 0;

/// Bound of the angular velocity.
pub const MAX_SPEED: f64 = 8.0;
/// Bound of the torque (the action).
pub const MAX_TORQUE: f32 = 2.0;
const DT: f64 = 0.05;
const MASS: f64 = 1.0;
const LENGTH: f64 = 1.0;
/// Half-widths of the reset distribution of θ and θ̇.
const RESET_HIGH: [f64; 2] = [PI, 1.0];

/// Configuration of `Pendulum-v1` (see the module documentation).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PendulumConfig {
    /// Time limit in steps (Gymnasium's registration: 200); at least 1.
    pub max_episode_steps: u32,
    /// Gravitational acceleration (Gymnasium's `g`, default 10.0); finite and > 0.
    pub g: f64,
}

impl Default for PendulumConfig {
    fn default() -> Self {
        PendulumConfig {
            max_episode_steps: 200,
            g: 10.0,
        }
    }
}

/// The pendulum environment.
#[derive(Debug, Clone)]
pub struct Pendulum {
    state: [f64; 2],
    g: f64,
    elapsed: u32,
    max_episode_steps: u32,
    rng: Pcg64Mcg,
    observation_space: Space,
    action_space: Space,
}

impl Pendulum {
    pub fn new(cfg: PendulumConfig) -> Result<Self, EnvError> {
        if cfg.max_episode_steps == 0 {
            return Err(config_error(
                ID,
                "max_episode_steps must be at least 1, got 0",
            ));
        }
        if !(cfg.g.is_finite() && cfg.g > 0.0) {
            return Err(config_error(
                ID,
                format!("g must be a finite number > 0, got {}", cfg.g),
            ));
        }
        let high = [1.0, 1.0, MAX_SPEED as f32];
        Ok(Pendulum {
            state: [0.0; 2],
            g: cfg.g,
            elapsed: 0,
            max_episode_steps: cfg.max_episode_steps,
            rng: Pcg64Mcg::seed_from_u64(DEFAULT_SEED),
            observation_space: Space::bounded_box(high.map(|h| -h).to_vec(), high.to_vec()),
            action_space: Space::uniform_box(-MAX_TORQUE, MAX_TORQUE, 1),
        })
    }

    /// The physical state `[θ, θ̇]`.
    pub fn state(&self) -> [f64; 2] {
        self.state
    }

    /// Puts the pendulum in state `[θ, θ̇]`, as assigning Gymnasium's
    /// `env.unwrapped.state` (no clipping until the next step). The elapsed
    /// step count is kept (see [`Pendulum::set_elapsed_steps`]).
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
        let [th, thdot] = self.state;
        obs[0] = th.cos() as f32;
        obs[1] = th.sin() as f32;
        obs[2] = thdot as f32;
    }
}

/// Gymnasium's `angle_normalize`: `((x + π) % 2π) − π` with Python's floored
/// modulo, so the result lies in `[−π, π)`.
pub fn angle_normalize(x: f64) -> f64 {
    (x + PI).rem_euclid(2.0 * PI) - PI
}

impl Env for Pendulum {
    /// Gymnasium's picture: the rod from the pivot at angle θ from upright
    /// (counter-clockwise positive).
    fn render(&self) -> Option<Frame> {
        let size = 200.0;
        let mut f = Frame::new(size as usize, size as usize);
        let c = (size / 2.0, size / 2.0);
        let len = 0.4 * size;
        let theta = self.state[0];
        let end = (c.0 - len * theta.sin(), c.1 - len * theta.cos());
        f.line(c, end, 16.0, Colour::Pole);
        f.disc(c, 4.0, Colour::Ink);
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
        for (v, high) in self.state.iter_mut().zip(RESET_HIGH) {
            *v = self.rng.random_range(-high..high);
        }
        self.elapsed = 0;
        self.write_obs(obs);
    }

    fn step(&mut self, action: ActionRef<'_>, obs: &mut [f32]) -> Step {
        let u = match action {
            ActionRef::Continuous(&[u]) => u.clamp(-MAX_TORQUE, MAX_TORQUE),
            other => invalid_action(other),
        };
        let [th, thdot] = self.state;
        let g = self.g;
        // NumPy 2 keeps `u` (float32) in float32 when scaled by a Python float.
        let an = angle_normalize(th);
        let costs = an * an + 0.1 * (thdot * thdot) + f64::from(0.001f32 * (u * u));
        let u_acc = f64::from((3.0 / (MASS * LENGTH * LENGTH)) as f32 * u);
        let newthdot = thdot + (3.0 * g / (2.0 * LENGTH) * th.sin() + u_acc) * DT;
        let newthdot = newthdot.clamp(-MAX_SPEED, MAX_SPEED);
        let newth = th + newthdot * DT;
        self.state = [newth, newthdot];
        self.elapsed = self.elapsed.saturating_add(1);
        self.write_obs(obs);
        Step {
            reward: (-costs) as f32,
            terminated: false,
            truncated: self.elapsed >= self.max_episode_steps,
        }
    }
}

#[cold]
#[inline(never)]
fn invalid_action(action: ActionRef<'_>) -> ! {
    panic!("{ID}: invalid action {action:?}; the action space is Box(-2, 2, (1,))")
}

#[cfg(test)]
mod tests {
    //! Expected values come from Gymnasium 1.4.0 (NumPy 2.4), run as
    //!
    //! ```python
    //! import numpy as np, gymnasium as gym
    //! env = gym.make("Pendulum-v1")           # fresh env per case; g=9.81 for one
    //! env.reset(seed=0)
    //! env.unwrapped.state = np.array(STATE, dtype=np.float64)
    //! for u in ACTIONS:
    //!     obs, r, term, trunc, _ = env.step(np.array([u], dtype=np.float32))
    //!     print([str(v) for v in obs], repr(r), term, trunc,
    //!           [float(v) for v in env.unwrapped.state])
    //! ```
    #![allow(clippy::needless_range_loop)] // several arrays indexed together

    use super::*;
    use crate::env::{make_env, parse};

    fn env() -> Pendulum {
        Pendulum::new(PendulumConfig::default()).unwrap()
    }

    /// One step of a reference trajectory: action, then Gymnasium's float32
    /// observation, float64 reward and float64 state.
    struct Expect {
        u: f32,
        obs: [f32; 3],
        reward: f64,
        state: [f64; 2],
    }

    fn check(env: &mut Pendulum, start: [f64; 2], steps: &[Expect]) {
        env.set_state(start);
        let mut obs = [0.0f32; 3];
        for (t, e) in steps.iter().enumerate() {
            let step = env.step(ActionRef::Continuous(&[e.u]), &mut obs);
            for i in 0..3 {
                let tol = 1e-6 * e.obs[i].abs().max(1e-2);
                assert!(
                    (obs[i] - e.obs[i]).abs() <= tol,
                    "{start:?} step {t} obs[{i}]: got {}, Gymnasium {}",
                    obs[i],
                    e.obs[i]
                );
            }
            for i in 0..2 {
                let s = env.state()[i];
                assert!(
                    (s - e.state[i]).abs() <= 1e-12 * e.state[i].abs().max(1.0),
                    "{start:?} step {t} state[{i}]: got {s}, Gymnasium {}",
                    e.state[i]
                );
            }
            assert_eq!(step.reward, e.reward as f32, "{start:?} step {t} reward");
            assert!(!step.terminated && !step.truncated);
        }
    }

    #[test]
    fn steps_match_gymnasium() {
        check(
            &mut env(),
            [1.0, 0.5],
            &[
                Expect {
                    u: 1.5,
                    obs: [0.4820484, 0.8761446, 1.3561032],
                    reward: -1.027250000135973,
                    state: [1.0678051619302962, 1.3561032386059226],
                },
                Expect {
                    u: -0.25,
                    obs: [0.3932885, 0.9194151, 1.9757117],
                    reward: -1.3241719632237028,
                    state: [1.1665907462597302, 1.975711686588682],
                },
                Expect {
                    u: 0.0,
                    obs: [0.26763913, 0.9635192, 2.665273],
                    reward: -1.7512776361111448,
                    state: [1.2998543977122319, 2.6652730290500335],
                },
            ],
        );
    }

    #[test]
    fn gravity_is_configurable() {
        let mut env = Pendulum::new(PendulumConfig {
            g: 9.81,
            ..Default::default()
        })
        .unwrap();
        check(
            &mut env,
            [1.0, 0.5],
            &[Expect {
                u: 1.5,
                obs: [0.4825736, 0.87585545, 1.3441123],
                reward: -1.027250000135973,
                state: [1.0672056138536206, 1.3441122770724099],
            }],
        );
    }

    #[test]
    fn actions_are_clipped_to_plus_minus_2() {
        // u = 5 behaves exactly as u = 2 (same Gymnasium output for both).
        for u in [5.0, 2.0, f32::INFINITY] {
            check(
                &mut env(),
                [-3.0, -7.9],
                &[Expect {
                    u,
                    obs: [-0.970452, 0.24129431, -7.70584],
                    reward: -15.24500000018999,
                    state: [-3.385292000302245, -7.705840006044901],
                }],
            );
        }
        check(
            &mut env(),
            [0.4, 7.95],
            &[Expect {
                u: -3.0,
                obs: [0.69878185, 0.71533483, 7.942064],
                reward: -6.4842500001899905,
                state: [0.7971031878365744, 7.942063756731488],
            }],
        );
        assert!(!env().action_space().contains(ActionRef::Continuous(&[2.5])));
    }

    #[test]
    fn angular_velocity_is_clipped_to_plus_minus_8() {
        check(
            &mut env(),
            [-2.0, -7.9],
            &[Expect {
                u: -2.0,
                obs: [-0.73739374, -0.6754632, -8.0],
                reward: -10.24500000018999,
                state: [-2.4, -8.0],
            }],
        );
        check(
            &mut env(),
            [2.0, 7.9],
            &[Expect {
                u: 2.0,
                obs: [-0.73739374, 0.6754632, 8.0],
                reward: -10.24500000018999,
                state: [2.4, 8.0],
            }],
        );
    }

    #[test]
    fn reward_normalizes_the_angle_but_the_state_keeps_it() {
        // θ = 7 ≡ 0.7168; θ = -10 ≡ 2.5664; θ = π ≡ -π (cost π²).
        check(
            &mut env(),
            [7.0, 0.3],
            &[Expect {
                u: 0.7,
                obs: [0.7236626, 0.6901539, 0.89773995],
                reward: -0.5233133038490356,
                state: [7.044886997213536, 0.8977399442707203],
            }],
        );
        check(
            &mut env(),
            [-10.0, -1.0],
            &[Expect {
                u: -1.1,
                obs: [-0.81788474, 0.5753821, -0.7569842],
                reward: -6.6874681303794175,
                state: [-10.037849208818486, -0.7569841763697158],
            }],
        );
        let mut env = env();
        env.set_state([PI, 0.0]);
        let mut obs = [0.0f32; 3];
        let step = env.step(ActionRef::Continuous(&[0.0]), &mut obs);
        assert_eq!(step.reward, -9.869604401089358f64 as f32);
        assert_eq!(obs[0], -1.0);
        assert!(obs[1].abs() < 1e-15 && obs[2].abs() < 1e-15, "{obs:?}");
        // The normalization itself, against Python's ((x + pi) % (2*pi)) - pi.
        for (x, want) in [
            (0.0, 0.0),
            (PI, -PI),
            (-PI, -PI),
            (7.0, 0.7168146928204138),
            (-10.0, 2.5663706143591725),
            (3.0 * PI, -PI),
            (-0.5, -0.5),
        ] {
            assert!(
                (angle_normalize(x) - want).abs() < 1e-15,
                "{x}: {}",
                angle_normalize(x)
            );
        }
    }

    #[test]
    fn never_terminates_and_truncates_at_200() {
        // Python: reset(seed=0), step([0.0]) -> truncated exactly at step 200.
        let mut env = env();
        let mut obs = [0.0f32; 3];
        env.reset(Some(0), &mut obs);
        for t in 1..=200 {
            let step = env.step(ActionRef::Continuous(&[((t % 5) as f32 - 2.0)]), &mut obs);
            assert!(!step.terminated);
            assert_eq!(step.truncated, t == 200, "step {t}");
            assert!(step.reward <= 0.0 && step.reward >= -16.3);
            assert!(obs[2].abs() <= 8.0);
        }
        env.reset(None, &mut obs);
        env.set_elapsed_steps(198);
        assert!(!env.step(ActionRef::Continuous(&[0.0]), &mut obs).truncated);
        assert!(env.step(ActionRef::Continuous(&[0.0]), &mut obs).truncated);
    }

    #[test]
    fn reset_is_uniform_in_range() {
        let mut env = env();
        let mut obs = [0.0f32; 3];
        let (mut lo, mut hi, mut sum) = ([f64::MAX; 2], [f64::MIN; 2], [0.0; 2]);
        let n = 2000;
        for seed in 0..n {
            env.reset(Some(seed), &mut obs);
            assert_eq!(env.elapsed_steps(), 0);
            let [th, thdot] = env.state();
            assert!((-PI..PI).contains(&th), "seed {seed}: {th}");
            assert!((-1.0..1.0).contains(&thdot), "seed {seed}: {thdot}");
            assert_eq!(obs, [th.cos() as f32, th.sin() as f32, thdot as f32]);
            for (i, v) in [th, thdot].into_iter().enumerate() {
                lo[i] = lo[i].min(v);
                hi[i] = hi[i].max(v);
                sum[i] += v;
            }
        }
        assert!(lo[0] < -3.1 && hi[0] > 3.1, "θ in [{}, {}]", lo[0], hi[0]);
        assert!(lo[1] < -0.99 && hi[1] > 0.99, "θ̇ in [{}, {}]", lo[1], hi[1]);
        assert!(
            (sum[0] / n as f64).abs() < 0.2,
            "mean θ {}",
            sum[0] / n as f64
        );
        assert!(
            (sum[1] / n as f64).abs() < 0.06,
            "mean θ̇ {}",
            sum[1] / n as f64
        );
    }

    fn trajectory(env: &mut Pendulum, seed: Option<u64>) -> Vec<[f32; 3]> {
        let mut obs = [0.0f32; 3];
        env.reset(seed, &mut obs);
        let mut out = vec![obs];
        for t in 0..20 {
            env.step(ActionRef::Continuous(&[(t % 5) as f32 - 2.0]), &mut obs);
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
        // Python: observation_space high [1, 1, 8]; action_space Box(-2.0, 2.0, (1,), float32)
        let env = env();
        assert_eq!(
            env.observation_space(),
            &Space::Box {
                low: vec![-1.0, -1.0, -8.0],
                high: vec![1.0, 1.0, 8.0],
                shape: vec![3],
                dtype: crate::space::Dtype::Float32,
            }
        );
        assert_eq!(
            env.action_space(),
            &Space::Box {
                low: vec![-2.0],
                high: vec![2.0],
                shape: vec![1],
                dtype: crate::space::Dtype::Float32,
            }
        );
        assert_eq!(env.max_episode_steps(), 200);
        assert_eq!(env.id(), "Pendulum-v1");
    }

    #[test]
    fn config_is_read_from_toml_and_validated() {
        let t: toml::Table = toml::from_str("max_episode_steps = 9\ng = 9.81").unwrap();
        assert_eq!(
            parse::<PendulumConfig>(ID, &t).unwrap(),
            PendulumConfig {
                max_episode_steps: 9,
                g: 9.81
            }
        );
        assert_eq!(
            parse::<PendulumConfig>(ID, &toml::Table::new()).unwrap(),
            PendulumConfig::default()
        );
        for (text, key) in [
            ("max_episode_steps = 0", "max_episode_steps"),
            ("g = 0.0", "g must"),
            ("g = -9.8", "g must"),
            ("g = nan", "g must"),
            ("g = inf", "g must"),
        ] {
            let t: toml::Table = toml::from_str(text).unwrap();
            let msg = make_env(ID, &t).err().unwrap().to_string();
            assert!(msg.contains(ID) && msg.contains(key), "{text}: {msg}");
        }
    }

    #[test]
    #[should_panic(expected = "invalid action")]
    fn wrong_action_length_panics() {
        env().step(ActionRef::Continuous(&[0.0, 1.0]), &mut [0.0; 3]);
    }

    #[test]
    #[should_panic(expected = "invalid action")]
    fn discrete_action_panics() {
        env().step(ActionRef::Discrete(0), &mut [0.0; 3]);
    }
}
