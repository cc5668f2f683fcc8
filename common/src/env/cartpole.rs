//! `CartPole-v1`: balance a pole on a cart (Barto, Sutton & Anderson 1983,
//! "Neuronlike adaptive elements that can solve difficult learning control
//! problems", IEEE Trans. SMC 13(5)).
//!
//! A port of Gymnasium 1.x's `gymnasium/envs/classic_control/cartpole.py`
//! (`CartPoleEnv`) plus the `TimeLimit` wrapper that `gymnasium.make` adds.
//!
//! # Dynamics
//!
//! State `[x, ẋ, θ, θ̇]` (cart position in m, velocity, pole angle in rad from
//! upright, angular velocity), kept in `f64` as Gymnasium's float64 array.
//! Gravity 9.8, cart mass 1.0, pole mass 0.1, pole half-length 0.5, force
//! magnitude 10.0, τ = 0.02 s. Action `0` pushes the cart left (force −10),
//! `1` right (+10). The accelerations are
//!
//! ```text
//! temp   = (F + m_p·l·θ̇²·sin θ) / (m_c + m_p)
//! θ̈      = (g·sin θ − cos θ·temp) / (l·(4/3 − m_p·cos²θ / (m_c + m_p)))
//! ẍ      = temp − m_p·l·θ̈·cos θ / (m_c + m_p)
//! ```
//!
//! integrated with explicit Euler (Gymnasium's default `kinematics_integrator =
//! "euler"`: positions advance with the *old* velocities) or, when configured,
//! `"semi-implicit euler"` (velocities first, then positions with the new
//! velocities). The floating-point operations are evaluated in Gymnasium's
//! order.
//!
//! # Episode
//!
//! * Reset: all four state values uniform in `[-0.05, 0.05)`.
//! * Termination: `x < -2.4 || x > 2.4 || θ < -12° || θ > 12°`
//!   (`12·2π/360` rad), checked on the new state.
//! * Reward: `1.0` on every step, the terminating step included. With
//!   `sutton_barto_reward = true` (Gymnasium's constructor argument) it is
//!   `0.0` on non-terminating steps and `-1.0` on the terminating one.
//!   Stepping on after termination (undefined in Gymnasium, which warns) keeps
//!   integrating and returns Gymnasium's `0.0` (`-1.0` with
//!   `sutton_barto_reward`) with `terminated = true`; Flotilla's vector
//!   environment always resets instead.
//! * Truncation: `truncated = elapsed >= max_episode_steps` (default 500), as the
//!   `TimeLimit` wrapper; it can coincide with `terminated`.
//!
//! # Spaces
//!
//! Actions `Discrete(2)`. Observations `Box(-high, high, (4,), float32)` with
//! `high = [4.8, f32::MAX, 0.41887903, f32::MAX]` (twice the termination
//! thresholds). Gymnasium 1.x declares the two velocity bounds as `±inf`;
//! Flotilla uses the finite `f32::MAX` (what `gym` did before 0.26) so that
//! every bound survives text formats such as JSON. Observations are the state
//! cast to `f32`.
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
//! id = "CartPole-v1"
//! max_episode_steps = 500                # >= 1
//! kinematics_integrator = "euler"        # or "semi-implicit euler"
//! sutton_barto_reward = false
//! ```

use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Deserialize;

use super::{config_error, Env, EnvError, Step};
use crate::render::{Colour, Frame};
use crate::space::{ActionRef, Space};

pub const ID: &str = "CartPole-v1";

/// Seed of the random stream of a newly built environment.
pub const DEFAULT_SEED: u64 = 0;

const GRAVITY: f64 = 9.8;
const MASSCART: f64 = 1.0;
const MASSPOLE: f64 = 0.1;
const TOTAL_MASS: f64 = MASSPOLE + MASSCART;
/// Half the pole's length.
const LENGTH: f64 = 0.5;
const POLEMASS_LENGTH: f64 = MASSPOLE * LENGTH;
const FORCE_MAG: f64 = 10.0;
/// Seconds between state updates.
const TAU: f64 = 0.02;
/// Pole angle at which the episode terminates: 12 degrees.
pub const THETA_THRESHOLD_RADIANS: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
/// Cart position at which the episode terminates.
pub const X_THRESHOLD: f64 = 2.4;
/// Half-width of the reset distribution of each state value.
const RESET_BOUND: f64 = 0.05;

/// Configuration of `CartPole-v1` (see the module documentation).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CartPoleConfig {
    /// Time limit in steps (Gymnasium's registration: 500); at least 1.
    pub max_episode_steps: u32,
    /// `"euler"` (Gymnasium's default) or `"semi-implicit euler"`.
    pub kinematics_integrator: String,
    /// Gymnasium's `sutton_barto_reward`: 0 per step, −1 on termination.
    pub sutton_barto_reward: bool,
}

impl Default for CartPoleConfig {
    fn default() -> Self {
        CartPoleConfig {
            max_episode_steps: 500,
            kinematics_integrator: "euler".to_owned(),
            sutton_barto_reward: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Integrator {
    Euler,
    SemiImplicitEuler,
}

/// The cart-pole environment.
#[derive(Debug, Clone)]
pub struct CartPole {
    state: [f64; 4],
    integrator: Integrator,
    sutton_barto_reward: bool,
    /// Gymnasium's `steps_beyond_terminated is not None`.
    past_terminal: bool,
    elapsed: u32,
    max_episode_steps: u32,
    rng: Pcg64Mcg,
    observation_space: Space,
    action_space: Space,
}

impl CartPole {
    pub fn new(cfg: CartPoleConfig) -> Result<Self, EnvError> {
        if cfg.max_episode_steps == 0 {
            return Err(config_error(
                ID,
                "max_episode_steps must be at least 1, got 0",
            ));
        }
        let integrator = match cfg.kinematics_integrator.as_str() {
            "euler" => Integrator::Euler,
            "semi-implicit euler" => Integrator::SemiImplicitEuler,
            other => {
                return Err(config_error(
                    ID,
                    format!(
                        "kinematics_integrator must be \"euler\" or \"semi-implicit euler\", got {other:?}"
                    ),
                ))
            }
        };
        let high = [
            (X_THRESHOLD * 2.0) as f32,
            f32::MAX,
            (THETA_THRESHOLD_RADIANS * 2.0) as f32,
            f32::MAX,
        ];
        Ok(CartPole {
            state: [0.0; 4],
            integrator,
            sutton_barto_reward: cfg.sutton_barto_reward,
            past_terminal: false,
            elapsed: 0,
            max_episode_steps: cfg.max_episode_steps,
            rng: Pcg64Mcg::seed_from_u64(DEFAULT_SEED),
            observation_space: Space::bounded_box(high.map(|h| -h).to_vec(), high.to_vec()),
            action_space: Space::Discrete { n: 2 },
        })
    }

    /// The physical state `[x, ẋ, θ, θ̇]`.
    pub fn state(&self) -> [f64; 4] {
        self.state
    }

    /// Puts the system in state `[x, ẋ, θ, θ̇]`, as assigning Gymnasium's
    /// `env.unwrapped.state`. The elapsed step count is kept (see
    /// [`CartPole::set_elapsed_steps`]); the record of having stepped past a
    /// terminal state is cleared, so the next step is rewarded normally.
    pub fn set_state(&mut self, s: [f64; 4]) {
        self.state = s;
        self.past_terminal = false;
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
        for (o, &s) in obs[..4].iter_mut().zip(&self.state) {
            *o = s as f32;
        }
    }
}

impl Env for CartPole {
    /// Gymnasium's scene at half size: the 4.8-wide track over 300 px, the
    /// cart, and the pole from its axle at angle θ from upright.
    fn render(&self) -> Option<Frame> {
        let (w, h) = (300.0, 200.0);
        let scale = w / (2.0 * X_THRESHOLD);
        let mut f = Frame::new(w as usize, h as usize);
        let cart_y = h - 50.0;
        let x = self.state[0] * scale + w / 2.0;
        f.line((0.0, cart_y), (w, cart_y), 1.0, Colour::Ink);
        f.rect(x - 12.5, cart_y - 7.5, x + 12.5, cart_y + 7.5, Colour::Cart);
        let axle = (x, cart_y - 7.5);
        let pole = 2.0 * LENGTH * scale;
        let theta = self.state[2];
        let tip = (axle.0 + pole * theta.sin(), axle.1 - pole * theta.cos());
        f.line(axle, tip, 5.0, Colour::Pole);
        f.disc(axle, 2.5, Colour::Axle);
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
            *v = self.rng.random_range(-RESET_BOUND..RESET_BOUND);
        }
        self.past_terminal = false;
        self.elapsed = 0;
        self.write_obs(obs);
    }

    fn step(&mut self, action: ActionRef<'_>, obs: &mut [f32]) -> Step {
        let push_right = match action {
            ActionRef::Discrete(0) => false,
            ActionRef::Discrete(1) => true,
            other => invalid_action(other),
        };
        let [mut x, mut x_dot, mut theta, mut theta_dot] = self.state;
        let force = if push_right { FORCE_MAG } else { -FORCE_MAG };
        let costheta = theta.cos();
        let sintheta = theta.sin();
        let temp = (force + POLEMASS_LENGTH * (theta_dot * theta_dot) * sintheta) / TOTAL_MASS;
        let thetaacc = (GRAVITY * sintheta - costheta * temp)
            / (LENGTH * (4.0 / 3.0 - MASSPOLE * (costheta * costheta) / TOTAL_MASS));
        let xacc = temp - POLEMASS_LENGTH * thetaacc * costheta / TOTAL_MASS;
        match self.integrator {
            Integrator::Euler => {
                x += TAU * x_dot;
                x_dot += TAU * xacc;
                theta += TAU * theta_dot;
                theta_dot += TAU * thetaacc;
            }
            Integrator::SemiImplicitEuler => {
                x_dot += TAU * xacc;
                x += TAU * x_dot;
                theta_dot += TAU * thetaacc;
                theta += TAU * theta_dot;
            }
        }
        self.state = [x, x_dot, theta, theta_dot];

        // Written as Gymnasium's comparisons (a NaN state does not terminate).
        #[allow(clippy::manual_range_contains)]
        let terminated = x < -X_THRESHOLD
            || x > X_THRESHOLD
            || theta < -THETA_THRESHOLD_RADIANS
            || theta > THETA_THRESHOLD_RADIANS;
        let reward = match (terminated, self.past_terminal, self.sutton_barto_reward) {
            (false, _, false) => 1.0,
            (false, _, true) => 0.0,
            (true, false, sb) => {
                self.past_terminal = true;
                if sb {
                    -1.0
                } else {
                    1.0
                }
            }
            (true, true, sb) => {
                if sb {
                    -1.0
                } else {
                    0.0
                }
            }
        };
        self.elapsed = self.elapsed.saturating_add(1);
        self.write_obs(obs);
        Step {
            reward,
            terminated,
            truncated: self.elapsed >= self.max_episode_steps,
        }
    }
}

#[cold]
#[inline(never)]
fn invalid_action(action: ActionRef<'_>) -> ! {
    panic!("{ID}: invalid action {action:?}; the action space is Discrete(2)")
}

#[cfg(test)]
mod tests {
    //! Expected values come from Gymnasium 1.4.0 (NumPy 2.4), run as
    //!
    //! ```python
    //! import numpy as np, gymnasium as gym
    //! env = gym.make("CartPole-v1")           # fresh env per case
    //! env.reset(seed=0)
    //! env.unwrapped.state = np.array(STATE, dtype=np.float64)
    //! for a in ACTIONS:
    //!     obs, r, term, trunc, _ = env.step(a)
    //!     print([str(v) for v in obs], r, term, trunc,
    //!           [float(v) for v in env.unwrapped.state])
    //! ```
    //!
    //! (for the semi-implicit case also `env.unwrapped.kinematics_integrator =
    //! "semi-implicit euler"`; for `sutton_barto_reward`,
    //! `gym.make("CartPole-v1", sutton_barto_reward=True)`).
    #![allow(clippy::needless_range_loop)] // several arrays indexed together

    use super::*;
    use crate::env::{make_env, parse};

    fn env() -> CartPole {
        CartPole::new(CartPoleConfig::default()).unwrap()
    }

    /// One step of a reference trajectory: action, then Gymnasium's float32
    /// observation, reward, terminated, truncated and float64 state.
    struct Expect {
        action: usize,
        obs: [f32; 4],
        reward: f32,
        terminated: bool,
        truncated: bool,
        state: [f64; 4],
    }

    fn check(env: &mut CartPole, start: [f64; 4], steps: &[Expect]) {
        env.set_state(start);
        env.set_elapsed_steps(0);
        let mut obs = [0.0f32; 4];
        for (t, e) in steps.iter().enumerate() {
            let step = env.step(ActionRef::Discrete(e.action), &mut obs);
            for i in 0..4 {
                let tol = 1e-6 * e.obs[i].abs().max(1e-2);
                assert!(
                    (obs[i] - e.obs[i]).abs() <= tol,
                    "step {t} obs[{i}]: got {}, Gymnasium {}",
                    obs[i],
                    e.obs[i]
                );
                let s = env.state()[i];
                assert!(
                    (s - e.state[i]).abs() <= 1e-12 * e.state[i].abs().max(1.0),
                    "step {t} state[{i}]: got {s}, Gymnasium {}",
                    e.state[i]
                );
            }
            assert_eq!(step.reward, e.reward, "step {t} reward");
            assert_eq!(step.terminated, e.terminated, "step {t} terminated");
            assert_eq!(step.truncated, e.truncated, "step {t} truncated");
        }
    }

    #[test]
    fn euler_steps_match_gymnasium() {
        check(
            &mut env(),
            [0.01, -0.02, 0.03, 0.04],
            &[
                Expect {
                    action: 1,
                    obs: [0.0096, 0.17467919, 0.0308, -0.24306872],
                    reward: 1.0,
                    terminated: false,
                    truncated: false,
                    state: [
                        0.009600000000000001,
                        0.17467919574755525,
                        0.030799999999999998,
                        -0.2430687179600081,
                    ],
                },
                Expect {
                    action: 0,
                    obs: [0.013093584, -0.020868849, 0.025938626, 0.059168],
                    reward: 1.0,
                    terminated: false,
                    truncated: false,
                    state: [
                        0.013093583914951107,
                        -0.020868848948191993,
                        0.025938625640799837,
                        0.0591679999394166,
                    ],
                },
                Expect {
                    action: 0,
                    obs: [0.012676207, -0.21635292, 0.027121985, 0.35992056],
                    reward: 1.0,
                    terminated: false,
                    truncated: false,
                    state: [
                        0.012676206935987267,
                        -0.21635292104612766,
                        0.02712198563958817,
                        0.3599205713784138,
                    ],
                },
            ],
        );
        check(
            &mut env(),
            [-0.5, 0.8, -0.1, 1.2],
            &[
                Expect {
                    action: 0,
                    obs: [-0.484, 0.60630363, -0.076, 1.459742],
                    reward: 1.0,
                    terminated: false,
                    truncated: false,
                    state: [
                        -0.484,
                        0.60630365670554,
                        -0.07600000000000001,
                        1.4597419780714977,
                    ],
                },
                Expect {
                    action: 1,
                    obs: [-0.47187394, 0.8022709, -0.046805162, 1.1443172],
                    reward: 1.0,
                    terminated: false,
                    truncated: false,
                    state: [
                        -0.4718739268658892,
                        0.8022708614265825,
                        -0.046805160438570054,
                        1.1443171959939935,
                    ],
                },
            ],
        );
    }

    #[test]
    fn semi_implicit_euler_steps_match_gymnasium() {
        let mut env = CartPole::new(CartPoleConfig {
            kinematics_integrator: "semi-implicit euler".into(),
            ..Default::default()
        })
        .unwrap();
        check(
            &mut env,
            [0.3, -0.4, 0.15, -0.6],
            &[
                Expect {
                    action: 1,
                    obs: [0.2958548, -0.20725961, 0.13316141, -0.8419294],
                    reward: 1.0,
                    terminated: false,
                    truncated: false,
                    state: [
                        0.2958548079385989,
                        -0.20725960307005217,
                        0.1331614123179174,
                        -0.8419293841041297,
                    ],
                },
                Expect {
                    action: 1,
                    obs: [0.29557118, -0.014182102, 0.11136246, -1.0899478],
                    reward: 1.0,
                    terminated: false,
                    truncated: false,
                    state: [
                        0.29557116589098786,
                        -0.014182102380551592,
                        0.11136245558424276,
                        -1.0899478366837319,
                    ],
                },
                Expect {
                    action: 0,
                    obs: [0.29135954, -0.21058169, 0.09607245, -0.7645004],
                    reward: 1.0,
                    terminated: false,
                    truncated: false,
                    state: [
                        0.29135953199755443,
                        -0.21058169467167284,
                        0.09607244796097224,
                        -0.7645003811635261,
                    ],
                },
            ],
        );
    }

    #[test]
    fn position_threshold_terminates_with_reward_one_then_zero() {
        // Gymnasium: reward 1.0 on the terminating step, 0.0 (with a warning) after.
        check(
            &mut env(),
            [2.39, 1.0, 0.0, 0.0],
            &[
                Expect {
                    action: 1,
                    obs: [2.41, 1.195122, 0.0, -0.29268292],
                    reward: 1.0,
                    terminated: true,
                    truncated: false,
                    state: [2.41, 1.1951219512195121, 0.0, -0.2926829268292683],
                },
                Expect {
                    action: 1,
                    obs: [2.4339025, 1.3902439, -0.0058536585, -0.58536583],
                    reward: 0.0,
                    terminated: true,
                    truncated: false,
                    state: [
                        2.4339024390243904,
                        1.3902439024390243,
                        -0.005853658536585366,
                        -0.5853658536585366,
                    ],
                },
            ],
        );
        check(
            &mut env(),
            [-2.39, -1.0, 0.0, 0.0],
            &[Expect {
                action: 0,
                obs: [-2.41, -1.195122, 0.0, 0.29268292],
                reward: 1.0,
                terminated: true,
                truncated: false,
                state: [-2.41, -1.1951219512195121, 0.0, 0.2926829268292683],
            }],
        );
        // Euler moves x with the old velocity: -2.39 - 0.02·0.4 = -2.398 stays inside.
        check(
            &mut env(),
            [-2.39, -0.4, 0.0, 0.0],
            &[Expect {
                action: 0,
                obs: [-2.398, -0.595122, 0.0, 0.29268292],
                reward: 1.0,
                terminated: false,
                truncated: false,
                state: [-2.398, -0.5951219512195123, 0.0, 0.2926829268292683],
            }],
        );
    }

    #[test]
    fn angle_threshold_terminates() {
        // θ = 0.2 + 0.02·0.5 = 0.21 > 0.20944: terminated.
        check(
            &mut env(),
            [0.0, 0.0, 0.2, 0.5],
            &[Expect {
                action: 1,
                obs: [0.0, 0.191824, 0.21, 0.27640834],
                reward: 1.0,
                terminated: true,
                truncated: false,
                state: [
                    0.0,
                    0.1918240025983404,
                    0.21000000000000002,
                    0.2764083425922006,
                ],
            }],
        );
        check(
            &mut env(),
            [0.0, 0.0, -0.2, -0.5],
            &[Expect {
                action: 0,
                obs: [0.0, -0.191824, -0.21, -0.27640834],
                reward: 1.0,
                terminated: true,
                truncated: false,
                state: [
                    0.0,
                    -0.1918240025983404,
                    -0.21000000000000002,
                    -0.2764083425922006,
                ],
            }],
        );
        // θ = 0.209 < 0.20944: not yet.
        check(
            &mut env(),
            [0.0, 0.0, 0.2, 0.45],
            &[Expect {
                action: 1,
                obs: [0.0, 0.19181482, 0.209, 0.22642183],
                reward: 1.0,
                terminated: false,
                truncated: false,
                state: [
                    0.0,
                    0.1918148224831025,
                    0.20900000000000002,
                    0.22642183827838874,
                ],
            }],
        );
    }

    #[test]
    fn sutton_barto_reward_matches_gymnasium() {
        let mut env = CartPole::new(CartPoleConfig {
            sutton_barto_reward: true,
            ..Default::default()
        })
        .unwrap();
        check(
            &mut env,
            [0.0, 0.0, 0.2, 0.5],
            &[
                Expect {
                    action: 1,
                    obs: [0.0, 0.191824, 0.21, 0.27640834],
                    reward: -1.0,
                    terminated: true,
                    truncated: false,
                    state: [
                        0.0,
                        0.1918240025983404,
                        0.21000000000000002,
                        0.2764083425922006,
                    ],
                },
                Expect {
                    action: 1,
                    obs: [0.00383648, 0.3834283, 0.21552816, 0.056603145],
                    reward: -1.0,
                    terminated: true,
                    truncated: false,
                    state: [
                        0.003836480051966808,
                        0.38342831218324364,
                        0.21552816685184403,
                        0.056603145894336154,
                    ],
                },
            ],
        );
        // A non-terminating step is worth 0.
        env.set_state([0.0; 4]);
        let step = env.step(ActionRef::Discrete(0), &mut [0.0; 4]);
        assert_eq!((step.reward, step.terminated), (0.0, false));
    }

    #[test]
    fn terminates_at_the_same_step_as_gymnasium() {
        // Python: env.unwrapped.state = np.array([0, 0, 0.01, 0]); step(1) until
        // terminated -> step 10, obs below.
        let mut env = env();
        env.set_state([0.0, 0.0, 0.01, 0.0]);
        let mut obs = [0.0f32; 4];
        let mut steps = 0;
        loop {
            steps += 1;
            let step = env.step(ActionRef::Discrete(1), &mut obs);
            if step.done() {
                assert!(step.terminated && !step.truncated);
                break;
            }
        }
        assert_eq!(steps, 10);
        let want = [0.17574406, 1.9552939, -0.257916, -3.097022];
        for i in 0..4 {
            assert!((obs[i] - want[i]).abs() <= 1e-6 * want[i].abs(), "{obs:?}");
        }
    }

    #[test]
    fn balancing_controller_is_truncated_at_500_as_in_gymnasium() {
        // Python: state = zeros; a = 1 if θ + 0.5θ̇ + 0.01x + 0.1ẋ > 0 else 0
        // -> truncated (not terminated) at step 500, obs below.
        let mut env = env();
        env.set_state([0.0; 4]);
        let mut obs = [0.0f32; 4];
        for t in 1..=500 {
            let [x, x_dot, th, th_dot] = env.state();
            let a = usize::from(th + 0.5 * th_dot + 0.01 * x + 0.1 * x_dot > 0.0);
            let step = env.step(ActionRef::Discrete(a), &mut obs);
            assert!(!step.terminated, "step {t}");
            assert_eq!(step.truncated, t == 500, "step {t}");
        }
        let want = [1.2878513e-06, -4.925447e-06, -2.8399414e-05, 0.00010865431];
        for i in 0..4 {
            assert!((obs[i] - want[i]).abs() <= 1e-9, "{obs:?}");
        }
    }

    #[test]
    fn truncation_counts_steps_since_reset() {
        let mut env = CartPole::new(CartPoleConfig {
            max_episode_steps: 3,
            ..Default::default()
        })
        .unwrap();
        let mut obs = [0.0f32; 4];
        for episode in 0..2 {
            env.reset(Some(episode), &mut obs);
            for t in 1..=3 {
                env.set_state([0.0; 4]); // stay far from termination
                let step = env.step(ActionRef::Discrete(t % 2), &mut obs);
                assert_eq!(step.truncated, t == 3, "episode {episode} step {t}");
                assert!(!step.terminated);
                assert_eq!(env.elapsed_steps(), t as u32);
            }
        }
        // Termination and truncation on the same step: both flags.
        let mut env = self::env();
        env.set_elapsed_steps(499);
        env.set_state([2.39, 1.0, 0.0, 0.0]);
        let step = env.step(ActionRef::Discrete(1), &mut obs);
        assert!(step.terminated && step.truncated);
        assert_eq!(step.reward, 1.0);
    }

    #[test]
    fn reset_is_uniform_in_plus_minus_005() {
        let mut env = env();
        let mut obs = [0.0f32; 4];
        let (mut lo, mut hi, mut sum) = ([f64::MAX; 4], [f64::MIN; 4], [0.0; 4]);
        let n = 2000;
        for seed in 0..n {
            env.reset(Some(seed), &mut obs);
            assert_eq!(env.elapsed_steps(), 0);
            let s = env.state();
            for i in 0..4 {
                assert!((-0.05..0.05).contains(&s[i]), "seed {seed}: {s:?}");
                assert_eq!(obs[i], s[i] as f32);
                lo[i] = lo[i].min(s[i]);
                hi[i] = hi[i].max(s[i]);
                sum[i] += s[i];
            }
        }
        for i in 0..4 {
            assert!(
                lo[i] < -0.049 && hi[i] > 0.049,
                "{i}: [{}, {}]",
                lo[i],
                hi[i]
            );
            assert!(
                (sum[i] / n as f64).abs() < 0.003,
                "{i}: mean {}",
                sum[i] / n as f64
            );
        }
    }

    fn trajectory(env: &mut CartPole, seed: Option<u64>) -> Vec<[f32; 4]> {
        let mut obs = [0.0f32; 4];
        env.reset(seed, &mut obs);
        let mut out = vec![obs];
        for t in 0..20 {
            env.step(ActionRef::Discrete(t % 2), &mut obs);
            out.push(obs);
        }
        out
    }

    #[test]
    fn seeding_is_deterministic() {
        let (mut a, mut b) = (env(), env());
        assert_eq!(trajectory(&mut a, Some(42)), trajectory(&mut b, Some(42)));
        assert_ne!(trajectory(&mut a, Some(42)), trajectory(&mut b, Some(43)));
        // Unseeded resets continue the stream: a new episode, the same in both.
        assert_eq!(trajectory(&mut a, Some(5)), trajectory(&mut b, Some(5)));
        let (ta, tb) = (trajectory(&mut a, None), trajectory(&mut b, None));
        assert_eq!(ta, tb);
        assert_ne!(ta, trajectory(&mut env(), Some(5)));
        // Before any seed: the default seed.
        assert_eq!(
            trajectory(&mut env(), None),
            trajectory(&mut env(), Some(DEFAULT_SEED))
        );
    }

    #[test]
    fn spaces_match_gymnasium() {
        // Python: env.observation_space.high -> [4.8, inf, 0.41887903, inf] (float32);
        // Flotilla writes f32::MAX for inf (see the module docs).
        let env = env();
        let high = vec![4.8f32, f32::MAX, 0.41887903, f32::MAX];
        let low: Vec<f32> = high.iter().map(|h| -h).collect();
        assert_eq!(
            env.observation_space(),
            &Space::Box {
                low,
                high,
                shape: vec![4],
                dtype: crate::space::Dtype::Float32,
            }
        );
        assert_eq!(env.action_space(), &Space::Discrete { n: 2 });
        assert_eq!(env.max_episode_steps(), 500);
        assert_eq!(env.id(), "CartPole-v1");
    }

    #[test]
    fn config_is_read_from_toml() {
        let t: toml::Table = toml::from_str(
            "max_episode_steps = 7\nkinematics_integrator = \"semi-implicit euler\"\nsutton_barto_reward = true",
        )
        .unwrap();
        let cfg: CartPoleConfig = parse(ID, &t).unwrap();
        assert_eq!(
            cfg,
            CartPoleConfig {
                max_episode_steps: 7,
                kinematics_integrator: "semi-implicit euler".into(),
                sutton_barto_reward: true
            }
        );
        assert_eq!(
            parse::<CartPoleConfig>(ID, &toml::Table::new()).unwrap(),
            CartPoleConfig::default()
        );
    }

    #[test]
    fn invalid_config_is_rejected_naming_the_key() {
        for (text, key) in [
            ("max_episode_steps = 0", "max_episode_steps"),
            ("kinematics_integrator = \"rk4\"", "kinematics_integrator"),
        ] {
            let t: toml::Table = toml::from_str(text).unwrap();
            let msg = make_env(ID, &t).err().unwrap().to_string();
            assert!(msg.contains(ID) && msg.contains(key), "{text}: {msg}");
        }
        // A value of the wrong type is rejected by serde (whose message, as
        // passed on by `env::parse`, does not name the key).
        let t: toml::Table = toml::from_str("max_episode_steps = -1").unwrap();
        assert!(make_env(ID, &t).is_err());
    }

    #[test]
    #[should_panic(expected = "invalid action")]
    fn out_of_range_action_panics() {
        env().step(ActionRef::Discrete(2), &mut [0.0; 4]);
    }

    #[test]
    #[should_panic(expected = "invalid action")]
    fn continuous_action_panics() {
        env().step(ActionRef::Continuous(&[1.0]), &mut [0.0; 4]);
    }
}
