//! `Acrobot-v1`: swing a two-link underactuated pendulum up (Sutton 1996,
//! "Generalization in reinforcement learning: successful examples using sparse
//! coarse coding", NIPS 8; dynamics of Sutton & Barto, *Reinforcement
//! Learning: An Introduction*, 1998, §11.3).
//!
//! A port of Gymnasium 1.x's `gymnasium/envs/classic_control/acrobot.py`
//! (`AcrobotEnv`, itself from RLPy) plus the `TimeLimit` wrapper that
//! `gymnasium.make` adds.
//!
//! # Dynamics
//!
//! State `[θ₁, θ₂, θ̇₁, θ̇₂]`: the angle of the first link from hanging straight
//! down, the angle of the second link relative to the first, and their angular
//! velocities, kept in `f64`. Both links have length 1, mass 1, centre of mass
//! at 0.5 and moment of inertia 1; g = 9.8. Action `a ∈ {0, 1, 2}` applies
//! torque `a − 1 ∈ {−1, 0, +1}` at the joint between the links (no torque
//! noise: Gymnasium's `torque_noise_max = 0`).
//!
//! The equations of motion are the "book" variant (Gymnasium's default
//! `book_or_nips = "book"`, which includes the `θ̇₁²·sin θ₂` term in `θ̈₂`),
//! integrated over one step of `dt = 0.2` s by a single classic fourth-order
//! Runge–Kutta step, exactly as Gymnasium's `rk4(_dsdt, s, [0, dt])`. Then, as
//! Gymnasium, the angles are wrapped into `[−π, π]` by adding or subtracting 2π
//! until they fit (`wrap`) and the velocities are clipped to `[−4π, 4π]` and
//! `[−9π, 9π]` (`bound`). The floating-point operations follow Gymnasium's
//! order.
//!
//! # Episode
//!
//! * Reset: the four state values uniform in `[−0.1, 0.1)`, rounded to `f32`
//!   as Gymnasium does (`.astype(np.float32)`; the state becomes float64 again
//!   on the first step).
//! * Termination: the free end is more than one link length above the pivot,
//!   `−cos θ₁ − cos(θ₂ + θ₁) > 1`, on the new state.
//! * Reward: `−1.0` on every step that does not terminate, `0.0` on the step
//!   that does.
//! * Truncation: `truncated = elapsed >= max_episode_steps` (default 500), as the
//!   `TimeLimit` wrapper; it can coincide with `terminated`.
//!
//! # Spaces
//!
//! Actions `Discrete(3)`. Observations
//! `[cos θ₁, sin θ₁, cos θ₂, sin θ₂, θ̇₁, θ̇₂]` as `f32`, in
//! `Box([−1, −1, −1, −1, −4π, −9π], [1, 1, 1, 1, 4π, 9π])` (bounds as `f32`).
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
//! id = "Acrobot-v1"
//! max_episode_steps = 500   # >= 1
//! ```

use std::f64::consts::PI;

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Deserialize;

use super::{config_error, Env, EnvError, Step};
use crate::render::{Colour, Frame};
use crate::space::{ActionRef, Space};

pub const ID: &str = "Acrobot-v1";

/// Seed of the random stream of a newly built environment.
pub const DEFAULT_SEED: u64 = 0;

/// Integration time step in seconds.
const DT: f64 = 0.2;
const LINK_LENGTH_1: f64 = 1.0;
const LINK_MASS_1: f64 = 1.0;
const LINK_MASS_2: f64 = 1.0;
/// Position of the centre of mass of link 1.
const LINK_COM_POS_1: f64 = 0.5;
/// Position of the centre of mass of link 2.
const LINK_COM_POS_2: f64 = 0.5;
/// Moment of inertia of both links.
const LINK_MOI: f64 = 1.0;
const GRAVITY: f64 = 9.8;
/// Velocity bound of the first joint.
pub const MAX_VEL_1: f64 = 4.0 * PI;
/// Velocity bound of the second joint.
pub const MAX_VEL_2: f64 = 9.0 * PI;
/// Torque for each action.
const AVAIL_TORQUE: [f64; 3] = [-1.0, 0.0, 1.0];
/// Half-width of the reset distribution of each state value.
const RESET_BOUND: f64 = 0.1;

/// Configuration of `Acrobot-v1` (see the module documentation).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcrobotConfig {
    /// Time limit in steps (Gymnasium's registration: 500); at least 1.
    pub max_episode_steps: u32,
}

impl Default for AcrobotConfig {
    fn default() -> Self {
        AcrobotConfig {
            max_episode_steps: 500,
        }
    }
}

/// The acrobot environment.
#[derive(Debug, Clone)]
pub struct Acrobot {
    state: [f64; 4],
    elapsed: u32,
    max_episode_steps: u32,
    rng: Pcg64Mcg,
    observation_space: Space,
    action_space: Space,
}

impl Acrobot {
    pub fn new(cfg: AcrobotConfig) -> Result<Self, EnvError> {
        if cfg.max_episode_steps == 0 {
            return Err(config_error(
                ID,
                "max_episode_steps must be at least 1, got 0",
            ));
        }
        let high = [1.0, 1.0, 1.0, 1.0, MAX_VEL_1 as f32, MAX_VEL_2 as f32];
        Ok(Acrobot {
            state: [0.0; 4],
            elapsed: 0,
            max_episode_steps: cfg.max_episode_steps,
            rng: Pcg64Mcg::seed_from_u64(DEFAULT_SEED),
            observation_space: Space::bounded_box(high.map(|h| -h).to_vec(), high.to_vec()),
            action_space: Space::Discrete { n: 3 },
        })
    }

    /// The physical state `[θ₁, θ₂, θ̇₁, θ̇₂]`.
    pub fn state(&self) -> [f64; 4] {
        self.state
    }

    /// Puts the system in state `[θ₁, θ₂, θ̇₁, θ̇₂]`, as assigning Gymnasium's
    /// `env.unwrapped.state` (no wrapping or clipping is applied until the next
    /// step). The elapsed step count is kept (see [`Acrobot::set_elapsed_steps`]).
    pub fn set_state(&mut self, s: [f64; 4]) {
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
        let [t1, t2, dt1, dt2] = self.state;
        let o = [t1.cos(), t1.sin(), t2.cos(), t2.sin(), dt1, dt2];
        for (o, v) in obs[..6].iter_mut().zip(o) {
            *o = v as f32;
        }
    }
}

/// Gymnasium's `_dsdt` without the constant torque component: the time
/// derivative of `[θ₁, θ₂, θ̇₁, θ̇₂]` under torque `a` ("book" dynamics).
#[inline]
fn dsdt(s: [f64; 4], a: f64) -> [f64; 4] {
    let m1 = LINK_MASS_1;
    let m2 = LINK_MASS_2;
    let l1 = LINK_LENGTH_1;
    let lc1 = LINK_COM_POS_1;
    let lc2 = LINK_COM_POS_2;
    let i1 = LINK_MOI;
    let i2 = LINK_MOI;
    let g = GRAVITY;
    let [theta1, theta2, dtheta1, dtheta2] = s;
    let (sin2, cos2) = (theta2.sin(), theta2.cos());
    let d1 = m1 * (lc1 * lc1) + m2 * (l1 * l1 + lc2 * lc2 + 2.0 * l1 * lc2 * cos2) + i1 + i2;
    let d2 = m2 * (lc2 * lc2 + l1 * lc2 * cos2) + i2;
    let phi2 = m2 * lc2 * g * (theta1 + theta2 - PI / 2.0).cos();
    let phi1 = -m2 * l1 * lc2 * (dtheta2 * dtheta2) * sin2
        - 2.0 * m2 * l1 * lc2 * dtheta2 * dtheta1 * sin2
        + (m1 * lc1 + m2 * l1) * g * (theta1 - PI / 2.0).cos()
        + phi2;
    let ddtheta2 = (a + d2 / d1 * phi1 - m2 * l1 * lc2 * (dtheta1 * dtheta1) * sin2 - phi2)
        / (m2 * (lc2 * lc2) + i2 - (d2 * d2) / d1);
    let ddtheta1 = -(d2 * ddtheta2 + phi1) / d1;
    [dtheta1, dtheta2, ddtheta1, ddtheta2]
}

/// One classic Runge–Kutta step of length [`DT`], as Gymnasium's `rk4` over
/// `t = [0, dt]`.
#[inline]
fn rk4(y0: [f64; 4], a: f64) -> [f64; 4] {
    let dt = DT;
    let dt2 = dt / 2.0;
    let axpy = |y: [f64; 4], h: f64, k: [f64; 4]| std::array::from_fn(|i| y[i] + h * k[i]);
    let k1 = dsdt(y0, a);
    let k2 = dsdt(axpy(y0, dt2, k1), a);
    let k3 = dsdt(axpy(y0, dt2, k2), a);
    let k4 = dsdt(axpy(y0, dt, k3), a);
    std::array::from_fn(|i| y0[i] + dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]))
}

/// Gymnasium's `wrap(x, m, M)`: shifts `x` by multiples of `M − m` into
/// `[m, M]`, one period at a time. A non-finite or enormous `x` (reachable only
/// through [`Acrobot::set_state`]), on which those loops would never end, is
/// reduced in closed form instead.
fn wrap(mut x: f64, m: f64, big_m: f64) -> f64 {
    let diff = big_m - m;
    if x.is_nan() || x.abs() >= 1e6 {
        return (x - m).rem_euclid(diff) + m;
    }
    while x > big_m {
        x -= diff;
    }
    while x < m {
        x += diff;
    }
    x
}

/// Gymnasium's `bound(x, m, M)`: `min(max(x, m), M)` with Python's semantics
/// (a NaN `x` stays NaN).
fn bound(x: f64, m: f64, big_m: f64) -> f64 {
    let y = if m > x { m } else { x };
    if big_m < y {
        big_m
    } else {
        y
    }
}

impl Env for Acrobot {
    /// Gymnasium's picture: two links hanging from the pivot (θ₁ = 0 straight
    /// down, θ₂ relative to the first), the goal line one link above it.
    fn render(&self) -> Option<Frame> {
        // Gymnasium's LINK_LENGTH_2 (drawing only; the dynamics use the
        // centre of mass).
        const LINK_LENGTH_2: f64 = 1.0;
        let size = 250.0;
        let scale = size / (2.0 * (LINK_LENGTH_1 + LINK_LENGTH_2 + 0.2));
        let mut f = Frame::new(size as usize, size as usize);
        let c = (size / 2.0, size / 2.0);
        let goal = c.1 - scale * 1.0;
        f.line((0.0, goal), (size, goal), 1.0, Colour::Ink);
        let [t1, t2, _, _] = self.state;
        let p1 = (
            c.0 + scale * LINK_LENGTH_1 * t1.sin(),
            c.1 + scale * LINK_LENGTH_1 * t1.cos(),
        );
        let p2 = (
            p1.0 + scale * LINK_LENGTH_2 * (t1 + t2).sin(),
            p1.1 + scale * LINK_LENGTH_2 * (t1 + t2).cos(),
        );
        f.line(c, p1, 8.0, Colour::Cart);
        f.line(p1, p2, 8.0, Colour::Cart);
        f.disc(c, 4.0, Colour::Axle);
        f.disc(p1, 4.0, Colour::Axle);
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
        for v in &mut self.state {
            // Gymnasium draws float64 and stores the state as float32.
            *v = f64::from(self.rng.random_range(-RESET_BOUND..RESET_BOUND) as f32);
        }
        self.elapsed = 0;
        self.write_obs(obs);
    }

    fn step(&mut self, action: ActionRef<'_>, obs: &mut [f32]) -> Step {
        let torque = match action {
            ActionRef::Discrete(a) if a < 3 => AVAIL_TORQUE[a],
            other => invalid_action(other),
        };
        let mut ns = rk4(self.state, torque);
        ns[0] = wrap(ns[0], -PI, PI);
        ns[1] = wrap(ns[1], -PI, PI);
        ns[2] = bound(ns[2], -MAX_VEL_1, MAX_VEL_1);
        ns[3] = bound(ns[3], -MAX_VEL_2, MAX_VEL_2);
        self.state = ns;
        let terminated = -ns[0].cos() - (ns[1] + ns[0]).cos() > 1.0;
        self.elapsed = self.elapsed.saturating_add(1);
        self.write_obs(obs);
        Step {
            reward: if terminated { 0.0 } else { -1.0 },
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
    //! env = gym.make("Acrobot-v1")            # fresh env per case
    //! env.reset(seed=0)
    //! env.unwrapped.state = np.array(STATE, dtype=np.float64)
    //! for a in ACTIONS:
    //!     obs, r, term, trunc, _ = env.step(a)
    //!     print([str(v) for v in obs], r, term, trunc,
    //!           [float(v) for v in env.unwrapped.state])
    //! ```
    #![allow(clippy::needless_range_loop)] // several arrays indexed together

    use super::*;
    use crate::env::{make_env, parse};

    fn env() -> Acrobot {
        Acrobot::new(AcrobotConfig::default()).unwrap()
    }

    /// One step of a reference trajectory: action, then Gymnasium's float32
    /// observation, reward, terminated and float64 state.
    struct Expect {
        action: usize,
        obs: [f32; 6],
        reward: f32,
        terminated: bool,
        state: [f64; 4],
    }

    fn check(start: [f64; 4], steps: &[Expect]) {
        let mut env = env();
        env.set_state(start);
        let mut obs = [0.0f32; 6];
        for (t, e) in steps.iter().enumerate() {
            let step = env.step(ActionRef::Discrete(e.action), &mut obs);
            for i in 0..6 {
                let tol = 1e-6 * e.obs[i].abs().max(1e-2);
                assert!(
                    (obs[i] - e.obs[i]).abs() <= tol,
                    "{start:?} step {t} obs[{i}]: got {}, Gymnasium {}",
                    obs[i],
                    e.obs[i]
                );
            }
            for i in 0..4 {
                let s = env.state()[i];
                assert!(
                    (s - e.state[i]).abs() <= 1e-12 * e.state[i].abs().max(1.0),
                    "{start:?} step {t} state[{i}]: got {s}, Gymnasium {}",
                    e.state[i]
                );
            }
            assert_eq!(step.reward, e.reward, "step {t} reward");
            assert_eq!(step.terminated, e.terminated, "step {t} terminated");
            assert!(!step.truncated);
        }
    }

    #[test]
    fn steps_match_gymnasium_for_every_action() {
        check(
            [0.1, -0.2, 0.3, -0.4],
            &[
                Expect {
                    action: 0,
                    obs: [
                        0.9880997,
                        0.15381499,
                        0.96114427,
                        -0.27604663,
                        0.23102745,
                        -0.37533176,
                    ],
                    reward: -1.0,
                    terminated: false,
                    state: [
                        0.1544280535176176,
                        -0.2796784625217692,
                        0.23102745634235644,
                        -0.37533176739803126,
                    ],
                },
                Expect {
                    action: 1,
                    obs: [
                        0.9847681,
                        0.17387308,
                        0.95274967,
                        -0.30375665,
                        -0.03209535,
                        0.09251118,
                    ],
                    reward: -1.0,
                    terminated: false,
                    state: [
                        0.17476130637958853,
                        -0.3086331379543368,
                        -0.03209535091066923,
                        0.09251117624787841,
                    ],
                },
                Expect {
                    action: 2,
                    obs: [
                        0.9916716,
                        0.12879226,
                        0.9779827,
                        -0.20868592,
                        -0.41244295,
                        0.8695975,
                    ],
                    reward: -1.0,
                    terminated: false,
                    state: [
                        0.1291510032834246,
                        -0.2102311031930728,
                        -0.41244295495431427,
                        0.8695974722035973,
                    ],
                },
            ],
        );
        check(
            [-1.0, 2.0, 1.5, -3.0],
            &[
                Expect {
                    action: 2,
                    obs: [
                        0.82633066, -0.5631853, 0.3298425, 0.944036, 2.4949543, -4.698176,
                    ],
                    reward: -1.0,
                    terminated: false,
                    state: [
                        -0.5982354747625038,
                        1.2346596001631958,
                        2.4949544546729943,
                        -4.698175923155825,
                    ],
                },
                Expect {
                    action: 0,
                    obs: [
                        0.9999999,
                        0.00045379152,
                        0.99732953,
                        0.07303328,
                        3.3391683,
                        -6.616851,
                    ],
                    reward: -1.0,
                    terminated: false,
                    state: [
                        0.0004537915506750423,
                        0.07309836210677334,
                        3.339168218670835,
                        -6.616850645858139,
                    ],
                },
            ],
        );
    }

    #[test]
    fn velocities_are_bounded_as_gymnasium() {
        // θ̇₁ ends at exactly ±4π; θ̇₂ starts beyond 9π.
        check(
            [0.5, 0.5, 12.0, 27.0],
            &[Expect {
                action: 2,
                obs: [
                    0.5808299, -0.8140249, -0.7319528, 0.68135536, 12.566371, -14.248787,
                ],
                reward: -1.0,
                terminated: false,
                state: [
                    -0.9510484676539308,
                    2.391979905056904,
                    12.566370614359172,
                    -14.248787104512303,
                ],
            }],
        );
        check(
            [0.0, 0.0, -12.5, -28.0],
            &[Expect {
                action: 0,
                obs: [
                    -0.5615386, 0.8274506, -0.6546165, 0.7559611, -12.566371, -24.141296,
                ],
                reward: -1.0,
                terminated: false,
                state: [
                    2.1670403520433723,
                    2.2844715212555875,
                    -12.566370614359172,
                    -24.14129592326819,
                ],
            }],
        );
        let mut env = env();
        env.set_state([0.5, 0.5, 12.0, 27.0]);
        env.step(ActionRef::Discrete(2), &mut [0.0; 6]);
        assert_eq!(env.state()[2], MAX_VEL_1);
    }

    #[test]
    fn angles_are_wrapped_as_gymnasium() {
        check(
            [3.1, 3.1, 3.0, 4.0],
            &[Expect {
                action: 2,
                obs: [
                    -0.868258,
                    -0.49611297,
                    -0.7072878,
                    -0.7069257,
                    2.4480784,
                    4.306274,
                ],
                reward: -1.0,
                terminated: false,
                state: [
                    -2.622476435634894,
                    -2.356450541195446,
                    2.4480783779781286,
                    4.306274141663911,
                ],
            }],
        );
        check(
            [-3.1, -3.1, -3.0, -4.0],
            &[Expect {
                action: 0,
                obs: [
                    -0.868258, 0.49611297, -0.7072878, 0.7069257, -2.4480784, -4.306274,
                ],
                reward: -1.0,
                terminated: false,
                state: [
                    2.6224764356348946,
                    2.356450541195446,
                    -2.448078377978128,
                    -4.306274141663911,
                ],
            }],
        );
    }

    #[test]
    fn wrap_and_bound_follow_gymnasium_helpers() {
        assert_eq!(wrap(PI, -PI, PI), PI);
        assert_eq!(wrap(-PI, -PI, PI), -PI);
        assert_eq!(wrap(3.5, -PI, PI), 3.5 - 2.0 * PI);
        assert_eq!(
            wrap(-3.5 - 4.0 * PI, -PI, PI),
            -3.5 - 4.0 * PI + 2.0 * PI + 2.0 * PI + 2.0 * PI
        );
        assert_eq!(wrap(1.0, -PI, PI), 1.0);
        let far = wrap(1e300, -PI, PI);
        assert!((-PI..=PI).contains(&far), "{far}");
        assert!(wrap(f64::NAN, -PI, PI).is_nan());
        assert!(wrap(f64::INFINITY, -PI, PI).is_nan());
        assert_eq!(bound(5.0, -1.0, 1.0), 1.0);
        assert_eq!(bound(-5.0, -1.0, 1.0), -1.0);
        assert_eq!(bound(0.5, -1.0, 1.0), 0.5);
        assert!(bound(f64::NAN, -1.0, 1.0).is_nan());
    }

    #[test]
    fn height_condition_terminates_with_reward_zero() {
        // -cos(2.424) - cos(2.483) ≈ 1.545 > 1
        check(
            [2.5, 0.0, 0.0, 0.0],
            &[Expect {
                action: 1,
                obs: [
                    -0.75355995,
                    0.6573792,
                    0.9982644,
                    0.058891818,
                    -0.7706911,
                    0.60548127,
                ],
                reward: 0.0,
                terminated: true,
                state: [
                    2.424257084451645,
                    0.05892591298519179,
                    -0.7706910842441369,
                    0.6054812510144124,
                ],
            }],
        );
        // -cos(0.897) - cos(0.975) ≈ -1.19: not terminal
        check(
            [1.0, 0.0, 0.0, 0.0],
            &[Expect {
                action: 1,
                obs: [
                    0.6241263, 0.7813235, 0.9969076, 0.07858246, -1.017686, 0.7668128,
                ],
                reward: -1.0,
                terminated: false,
                state: [
                    0.8967835330838541,
                    0.07866355896269346,
                    -1.0176860121267755,
                    0.7668128190609068,
                ],
            }],
        );
    }

    #[test]
    fn terminates_at_the_same_step_as_gymnasium() {
        // Python: state = [0.05]*4; a = 2 if θ̇₂ >= 0 else 0 until done
        // -> terminated at step 67 with reward 0, final state below.
        let mut env = env();
        env.set_state([0.05; 4]);
        let mut obs = [0.0f32; 6];
        let mut rewards = 0.0;
        for t in 1..=500 {
            let a = if env.state()[3] >= 0.0 { 2 } else { 0 };
            let step = env.step(ActionRef::Discrete(a), &mut obs);
            rewards += step.reward;
            if step.done() {
                assert_eq!(t, 67);
                assert!(step.terminated && !step.truncated);
                assert_eq!(step.reward, 0.0);
                break;
            }
        }
        assert_eq!(rewards, -66.0);
        // 67 chaotic steps amplify last-bit differences of sin/cos: compare loosely.
        let want = [
            1.7733154338362493,
            0.7318693703128556,
            0.7550034952964622,
            -2.3528923007809084,
        ];
        for i in 0..4 {
            assert!((env.state()[i] - want[i]).abs() < 1e-6, "{:?}", env.state());
        }
    }

    #[test]
    fn truncates_at_max_episode_steps() {
        let mut env = env();
        let mut obs = [0.0f32; 6];
        env.reset(Some(1), &mut obs);
        for t in 1..=500u32 {
            env.set_state([0.0; 4]); // hanging at rest: never terminal
            let step = env.step(ActionRef::Discrete(1), &mut obs);
            assert!(!step.terminated);
            assert_eq!(step.truncated, t == 500, "step {t}");
            assert_eq!(step.reward, -1.0);
        }
        env.reset(None, &mut obs);
        assert_eq!(env.elapsed_steps(), 0);
        // Terminal and truncated on the same step.
        env.set_elapsed_steps(499);
        env.set_state([2.5, 0.0, 0.0, 0.0]);
        let step = env.step(ActionRef::Discrete(1), &mut obs);
        assert!(step.terminated && step.truncated);
        // A custom limit.
        let mut env = Acrobot::new(AcrobotConfig {
            max_episode_steps: 2,
        })
        .unwrap();
        env.reset(Some(0), &mut obs);
        assert!(!env.step(ActionRef::Discrete(0), &mut obs).truncated);
        assert!(env.step(ActionRef::Discrete(0), &mut obs).truncated);
    }

    #[test]
    fn reset_is_uniform_in_plus_minus_01_rounded_to_f32() {
        let mut env = env();
        let mut obs = [0.0f32; 6];
        let (mut lo, mut hi, mut sum) = ([f64::MAX; 4], [f64::MIN; 4], [0.0; 4]);
        let n = 2000;
        for seed in 0..n {
            env.reset(Some(seed), &mut obs);
            let s = env.state();
            for i in 0..4 {
                assert!((-0.1..=0.1).contains(&s[i]), "seed {seed}: {s:?}");
                assert_eq!(f64::from(s[i] as f32), s[i], "stored as float32");
                lo[i] = lo[i].min(s[i]);
                hi[i] = hi[i].max(s[i]);
                sum[i] += s[i];
            }
            let want = [s[0].cos(), s[0].sin(), s[1].cos(), s[1].sin(), s[2], s[3]];
            for i in 0..6 {
                assert_eq!(obs[i], want[i] as f32);
            }
        }
        for i in 0..4 {
            assert!(
                lo[i] < -0.098 && hi[i] > 0.098,
                "{i}: [{}, {}]",
                lo[i],
                hi[i]
            );
            assert!(
                (sum[i] / n as f64).abs() < 0.006,
                "{i}: mean {}",
                sum[i] / n as f64
            );
        }
    }

    fn trajectory(env: &mut Acrobot, seed: Option<u64>) -> Vec<[f32; 6]> {
        let mut obs = [0.0f32; 6];
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
        // Python: env.observation_space.high
        // -> [1, 1, 1, 1, 12.566370964050293, 28.274333953857422] (float32)
        let env = env();
        let high = vec![1.0f32, 1.0, 1.0, 1.0, 12.566371, 28.274334];
        let low: Vec<f32> = high.iter().map(|h| -h).collect();
        assert_eq!(
            env.observation_space(),
            &Space::Box {
                low,
                high,
                shape: vec![6],
                dtype: crate::space::Dtype::Float32,
            }
        );
        assert_eq!(env.action_space(), &Space::Discrete { n: 3 });
        assert_eq!(env.max_episode_steps(), 500);
        assert_eq!(env.id(), "Acrobot-v1");
    }

    #[test]
    fn config_is_read_from_toml_and_validated() {
        let t: toml::Table = toml::from_str("max_episode_steps = 9").unwrap();
        assert_eq!(
            parse::<AcrobotConfig>(ID, &t).unwrap(),
            AcrobotConfig {
                max_episode_steps: 9
            }
        );
        assert_eq!(
            parse::<AcrobotConfig>(ID, &toml::Table::new()).unwrap(),
            AcrobotConfig::default()
        );
        let t: toml::Table = toml::from_str("max_episode_steps = 0").unwrap();
        let msg = make_env(ID, &t).err().unwrap().to_string();
        assert!(
            msg.contains(ID) && msg.contains("max_episode_steps"),
            "{msg}"
        );
    }

    #[test]
    #[should_panic(expected = "invalid action")]
    fn out_of_range_action_panics() {
        env().step(ActionRef::Discrete(3), &mut [0.0; 6]);
    }
}
