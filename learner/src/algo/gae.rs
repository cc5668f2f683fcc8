//! Generalized Advantage Estimation.
//!
//! Schulman, Moritz, Levine, Jordan, Abbeel, "High-Dimensional Continuous
//! Control Using Generalized Advantage Estimation", ICLR 2016,
//! arXiv:1506.02438, equations (11)–(16):
//!
//! ```text
//! δ_t = r_t + γ·V(s_{t+1}) − V(s_t)
//! Â_t = Σ_l (γλ)^l δ_{t+l}  =  δ_t + γλ·Â_{t+1}
//! ```
//!
//! with the episode structure of Gymnasium's `step` API, which separates two
//! ways an episode can end:
//!
//! - `terminated`: the MDP reached a terminal state; its value is 0 by
//!   definition, so nothing is bootstrapped.
//! - `truncated`: the episode was cut short (a time limit) in a state that
//!   still has a future; the return is bootstrapped from V of the *true* final
//!   observation. Treating truncation like termination biases values
//!   downwards near the time limit (Pardo et al. 2018, "Time Limits in
//!   Reinforcement Learning", arXiv:1712.00378).
//!
//! Vectorized environments reset automatically, so the observation that
//! follows an episode's last step in a rollout belongs to the *next* episode;
//! that is why V of the true final observation comes in a separate tensor.
//!
//! The recursion runs backwards over time with every environment of the
//! batch in one tensor operation per step, on the tensors' own device,
//! without copying anything to the host.

use tch::{Kind, Tensor};

/// GAE(γ, λ) advantages and λ-returns of a rollout of `T` steps in `N`
/// environments.
///
/// Inputs (float32; flags 0/1, any float or bool kind is accepted):
///
/// - `rewards` `[T, N]`: r_t, the reward of step t.
/// - `values` `[T+1, N]`: V(s_t) of the observation acted on at step t for
///   t < T; row T is V of the observation after the last step (the tail
///   bootstrap).
/// - `terminated` `[T, N]`: 1 where the episode reached a terminal state at
///   step t.
/// - `truncated` `[T, N]`: 1 where the episode was cut short at step t. Where
///   both flags are set, `terminated` wins (no bootstrap).
/// - `final_values` `[T, N]`: V of the true final observation where an episode
///   ended at step t; ignored elsewhere (any value, even NaN, is fine there).
///
/// Semantics, with done_t = terminated_t ∨ truncated_t:
///
/// ```text
/// next_t = 0                 if terminated_t
///        = final_values[t]   else if truncated_t
///        = values[t+1]       otherwise
/// δ_t    = r_t + γ·next_t − V(s_t)
/// A_t    = δ_t + γλ·(1 − done_t)·A_{t+1},   A_T := 0
/// ```
///
/// `A_T := 0` because the unfinished tail is already bootstrapped through
/// `values[T]` in δ_{T−1}. λ = 1 gives Monte-Carlo returns minus V (bootstrapped
/// at the end of the rollout), λ = 0 one-step TD errors.
///
/// Returns `(advantages [T, N], returns [T, N])` with returns = advantages +
/// V(s_t), both float32 on the inputs' device. They are computed without
/// autograd: PPO treats them as constant targets.
///
/// Panics with a message naming the argument if a shape does not match.
pub fn gae(
    rewards: &Tensor,
    values: &Tensor,
    terminated: &Tensor,
    truncated: &Tensor,
    final_values: &Tensor,
    gamma: f64,
    lambda: f64,
) -> (Tensor, Tensor) {
    check_shapes(
        "gae",
        rewards,
        values,
        &[
            ("terminated", terminated),
            ("truncated", truncated),
            ("final_values", final_values),
        ],
    );
    tch::no_grad(|| {
        let r = Rollout::new(rewards, values, terminated, truncated, final_values);
        let deltas = &r.rewards + &r.next * gamma - &r.current;
        // γλ where the episode continues into step t+1, 0 where it ended at t.
        let advantages = backward_scan(&deltas, &(&r.continues * (gamma * lambda)));
        let returns = &advantages + &r.current;
        (advantages, returns)
    })
}

/// Checks the shapes of a `[T, N]` rollout (named `what` in the panic):
/// `values` `[T+1, N]`, every one of `others` `[T, N]` like `rewards`.
pub(crate) fn check_shapes(
    what: &str,
    rewards: &Tensor,
    values: &Tensor,
    others: &[(&str, &Tensor)],
) {
    let shape = rewards.size();
    assert_eq!(
        shape.len(),
        2,
        "{what}: rewards must be [T, N], got {shape:?}"
    );
    let (t_len, n) = (shape[0], shape[1]);
    assert_eq!(
        values.size(),
        [t_len + 1, n],
        "{what}: values must be [T+1, N] = [{}, {n}]",
        t_len + 1
    );
    for (name, x) in others {
        assert_eq!(
            x.size(),
            shape,
            "{what}: {name} must be [T, N] = {shape:?} like rewards"
        );
    }
}

/// A rollout's tensors as float32, with the episode-boundary rules applied.
pub(crate) struct Rollout {
    pub rewards: Tensor,
    /// V(s_t), `[T, N]`.
    pub current: Tensor,
    /// V(s_{t+1}): 0 where terminated, V(final observation) where
    /// truncated, `values[t+1]` otherwise.
    pub next: Tensor,
    /// 1 where the episode continues into step t+1, 0 where it ended at t.
    pub continues: Tensor,
}

impl Rollout {
    pub fn new(
        rewards: &Tensor,
        values: &Tensor,
        terminated: &Tensor,
        truncated: &Tensor,
        final_values: &Tensor,
    ) -> Self {
        let f = |x: &Tensor| x.to_kind(Kind::Float);
        let t_len = rewards.size()[0];
        let values = f(values);
        let term = f(terminated).gt(0.5);
        let trunc = f(truncated).gt(0.5);
        // `where` (not arithmetic masking) so that garbage in `final_values`
        // where no episode ended cannot leak in, not even NaN.
        let next = f(final_values).where_self(&trunc, &values.narrow(0, 1, t_len));
        let next = next.zeros_like().where_self(&term, &next);
        Rollout {
            rewards: f(rewards),
            current: values.narrow(0, 0, t_len),
            next,
            continues: term.logical_or(&trunc).logical_not().to_kind(Kind::Float),
        }
    }
}

/// `x_t = a_t + b_t·x_{t+1}` backwards over the rows of `[T, N]` tensors,
/// with `x_T = 0`: one fused kernel per step, all columns at once.
pub(crate) fn backward_scan(a: &Tensor, b: &Tensor) -> Tensor {
    let (t_len, n) = (a.size()[0], a.size()[1]);
    let mut rows: Vec<Tensor> = Vec::with_capacity(t_len as usize);
    let mut last = Tensor::zeros([n], (Kind::Float, a.device()));
    for t in (0..t_len).rev() {
        last = a.get(t).addcmul(&b.get(t), &last);
        rows.push(last.shallow_clone());
    }
    rows.reverse();
    if rows.is_empty() {
        a.zeros_like()
    } else {
        Tensor::stack(&rows, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use tch::Device;

    fn t2(rows: &[&[f32]]) -> Tensor {
        let n = rows[0].len() as i64;
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([rows.len() as i64, n])
    }

    fn host(x: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(x.to_kind(Kind::Float).flatten(0, -1)).expect("float tensor to vec")
    }

    fn assert_close(got: &Tensor, want: &[f64], tol: f64, what: &str) {
        let got = host(got);
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (*g as f64 - w).abs() <= tol,
                "{what}[{i}]: got {g}, want {w}"
            );
        }
    }

    /// Plain scalar GAE, written straight from the definition, in f64.
    /// Arrays are row-major: `r[t*n + i]`, `v[t*n + i]` with t ≤ T.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        t_len: usize,
        n: usize,
        r: &[f64],
        v: &[f64],
        term: &[bool],
        trunc: &[bool],
        fin: &[f64],
        gamma: f64,
        lambda: f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut adv = vec![0.0; t_len * n];
        for i in 0..n {
            let mut next_adv = 0.0;
            for t in (0..t_len).rev() {
                let k = t * n + i;
                let next_value = if term[k] {
                    0.0
                } else if trunc[k] {
                    fin[k]
                } else {
                    v[(t + 1) * n + i]
                };
                let delta = r[k] + gamma * next_value - v[k];
                let continues = if term[k] || trunc[k] { 0.0 } else { 1.0 };
                adv[k] = delta + gamma * lambda * continues * next_adv;
                next_adv = adv[k];
            }
        }
        let ret = adv.iter().enumerate().map(|(k, a)| a + v[k]).collect();
        (adv, ret)
    }

    fn run(
        r: &[&[f32]],
        v: &[&[f32]],
        term: &[&[f32]],
        trunc: &[&[f32]],
        fin: &[&[f32]],
        gamma: f64,
        lambda: f64,
    ) -> (Tensor, Tensor) {
        gae(
            &t2(r),
            &t2(v),
            &t2(term),
            &t2(trunc),
            &t2(fin),
            gamma,
            lambda,
        )
    }

    #[test]
    fn matches_the_scalar_reference_on_random_rollouts() {
        let (t_len, n) = (37usize, 5usize);
        let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
        for trial in 0..20 {
            let gamma: f64 = rng.random_range(0.8..1.0);
            let lambda: f64 = if trial == 0 {
                1.0
            } else {
                rng.random_range(0.0..1.0)
            };
            let r: Vec<f32> = (0..t_len * n)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let v: Vec<f32> = (0..(t_len + 1) * n)
                .map(|_| rng.random_range(-3.0..3.0))
                .collect();
            let mut term: Vec<bool> = (0..t_len * n).map(|_| rng.random_bool(0.1)).collect();
            let mut trunc: Vec<bool> = (0..t_len * n).map(|_| rng.random_bool(0.1)).collect();
            // Make sure every kind of step occurs: terminated only, truncated
            // only, both at once, and an end on the very last step.
            (term[3], trunc[3]) = (true, false);
            (term[11], trunc[11]) = (false, true);
            (term[17], trunc[17]) = (true, true);
            (term[(t_len - 1) * n + 2], trunc[(t_len - 1) * n + 2]) = (false, true);
            // Final values only where an episode ended; NaN elsewhere must not leak.
            let fin: Vec<f32> = (0..t_len * n)
                .map(|k| {
                    if term[k] || trunc[k] {
                        rng.random_range(-3.0..3.0)
                    } else {
                        f32::NAN
                    }
                })
                .collect();
            let flags = |b: &[bool]| {
                b.iter()
                    .map(|&x| if x { 1.0f32 } else { 0.0 })
                    .collect::<Vec<_>>()
            };
            let shape = [t_len as i64, n as i64];
            let (adv, ret) = gae(
                &Tensor::from_slice(&r).view(shape),
                &Tensor::from_slice(&v).view([t_len as i64 + 1, n as i64]),
                &Tensor::from_slice(&flags(&term)).view(shape),
                &Tensor::from_slice(&flags(&trunc)).view(shape),
                &Tensor::from_slice(&fin).view(shape),
                gamma,
                lambda,
            );
            assert_eq!(adv.size(), shape);
            assert_eq!(adv.kind(), Kind::Float);
            let d = |x: &[f32]| x.iter().map(|&y| y as f64).collect::<Vec<_>>();
            let (want_adv, want_ret) = reference(
                t_len,
                n,
                &d(&r),
                &d(&v),
                &term,
                &trunc,
                &d(&fin),
                gamma,
                lambda,
            );
            assert_close(&adv, &want_adv, 1e-5, &format!("trial {trial} advantages"));
            assert_close(&ret, &want_ret, 1e-5, &format!("trial {trial} returns"));
        }
    }

    /// Golden values from an independent implementation: PyTorch (float64)
    /// running CleanRL's GAE loop verbatim (vwxyzjn/cleanrl `cleanrl/ppo.py`),
    /// with truncation handled the Stable-Baselines3 way (`collect_rollouts`
    /// folds γ·V(terminal_observation) into the reward of a timed-out step and
    /// then treats it as done). Script (torch 2.13):
    ///
    /// ```text
    /// import torch
    /// torch.set_default_dtype(torch.float64)
    /// gamma, gae_lambda = 0.99, 0.95
    /// rewards = torch.tensor([[1.0, 0.5], [2.0, -1.0], [0.0, 1.5], [-0.5, 0.25], [1.0, 2.0]])
    /// values = torch.tensor([[0.3, -0.2], [0.8, 0.1], [-0.4, 0.7], [1.2, 0.0], [0.5, -0.6], [0.9, 0.4]])
    /// term = torch.tensor([[0, 0], [1, 0], [0, 1], [0, 0], [0, 0]], dtype=torch.float64)
    /// trunc = torch.tensor([[0, 0], [0, 0], [0, 1], [1, 0], [0, 0]], dtype=torch.float64)
    /// final = torch.tensor([[9, 9], [7.0, 9], [9, 5.0], [2.5, 9], [9, 9]])  # 9 = not an episode end
    /// T = rewards.shape[0]
    /// rewards = rewards + gamma * final * trunc * (1 - term)            # SB3 timeout bootstrap
    /// done = torch.clamp(term + trunc, max=1)
    /// dones = torch.cat([torch.zeros(1, 2), done[:-1]])                # CleanRL: obs[t] starts an episode
    /// next_done, next_value = done[-1], values[-1]
    /// values = values[:-1]
    /// advantages = torch.zeros_like(rewards)
    /// lastgaelam = 0
    /// for t in reversed(range(T)):
    ///     if t == T - 1:
    ///         nextnonterminal = 1.0 - next_done
    ///         nextvalues = next_value
    ///     else:
    ///         nextnonterminal = 1.0 - dones[t + 1]
    ///         nextvalues = values[t + 1]
    ///     delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
    ///     advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
    /// returns = advantages + values
    /// ```
    ///
    /// Output:
    ///
    /// ```text
    /// advantages [[2.6206, 1.1238487], [1.2, 0.3454], [2.3168875, 0.8], [0.775, 2.473738], [1.391, 2.996]]
    /// returns [[2.9206, 0.9238487], [2.0, 0.4454], [1.9168875, 1.5], [1.975, 2.473738], [1.891, 2.396]]
    /// ```
    #[test]
    fn matches_cleanrl_and_sb3_golden_values() {
        let (adv, ret) = run(
            &[
                &[1.0, 0.5],
                &[2.0, -1.0],
                &[0.0, 1.5],
                &[-0.5, 0.25],
                &[1.0, 2.0],
            ],
            &[
                &[0.3, -0.2],
                &[0.8, 0.1],
                &[-0.4, 0.7],
                &[1.2, 0.0],
                &[0.5, -0.6],
                &[0.9, 0.4],
            ],
            &[
                &[0.0, 0.0],
                &[1.0, 0.0],
                &[0.0, 1.0],
                &[0.0, 0.0],
                &[0.0, 0.0],
            ],
            &[
                &[0.0, 0.0],
                &[0.0, 0.0],
                &[0.0, 1.0],
                &[1.0, 0.0],
                &[0.0, 0.0],
            ],
            &[
                &[9.0, 9.0],
                &[7.0, 9.0],
                &[9.0, 5.0],
                &[2.5, 9.0],
                &[9.0, 9.0],
            ],
            0.99,
            0.95,
        );
        let want_adv = [
            2.6206, 1.1238487, 1.2, 0.3454, 2.3168875, 0.8, 0.775, 2.473738, 1.391, 2.996,
        ];
        let want_ret = [
            2.9206, 0.9238487, 2.0, 0.4454, 1.9168875, 1.5, 1.975, 2.473738, 1.891, 2.396,
        ];
        assert_close(&adv, &want_adv, 1e-5, "advantages");
        assert_close(&ret, &want_ret, 1e-5, "returns");
    }

    /// Two states, γ = 0.9, λ = 0.5, V ≡ 0; rewards 1 then 0, and the episode
    /// terminates after the second step.
    ///
    /// ```text
    /// δ_1 = 0 + 0.9·0 − 0 = 0                  (terminated: no bootstrap)
    /// A_1 = δ_1 = 0
    /// δ_0 = 1 + 0.9·V(s_1) − V(s_0) = 1
    /// A_0 = δ_0 + 0.9·0.5·A_1 = 1
    /// ```
    #[test]
    fn hand_worked_two_state_episode() {
        let (adv, ret) = run(
            &[&[1.0], &[0.0]],
            &[&[0.0], &[0.0], &[0.0]],
            &[&[0.0], &[1.0]],
            &[&[0.0], &[0.0]],
            &[&[0.0], &[0.0]],
            0.9,
            0.5,
        );
        assert_close(&adv, &[1.0, 0.0], 1e-6, "advantages");
        assert_close(&ret, &[1.0, 0.0], 1e-6, "returns");
    }

    /// λ = 1 on a terminated episode gives discounted Monte-Carlo returns.
    /// Rewards 1, 2, 3, γ = 0.5, V ≡ 0, terminated at the last step:
    ///
    /// ```text
    /// G_2 = 3
    /// G_1 = 2 + 0.5·3 = 3.5
    /// G_0 = 1 + 0.5·2 + 0.25·3 = 2.75
    /// ```
    ///
    /// With a non-zero V the returns stay the same (the V terms telescope)
    /// and the advantages are G_t − V(s_t).
    #[test]
    fn lambda_one_gives_monte_carlo_returns() {
        for v in [[0.0f32, 0.0, 0.0], [0.4, -1.0, 2.0]] {
            let (adv, ret) = run(
                &[&[1.0], &[2.0], &[3.0]],
                &[&[v[0]], &[v[1]], &[v[2]], &[123.0]],
                &[&[0.0], &[0.0], &[1.0]],
                &[&[0.0], &[0.0], &[0.0]],
                &[&[0.0], &[0.0], &[0.0]],
                0.5,
                1.0,
            );
            assert_close(&ret, &[2.75, 3.5, 3.0], 1e-6, "returns");
            let want: Vec<f64> = [2.75, 3.5, 3.0]
                .iter()
                .zip(v)
                .map(|(g, v)| g - v as f64)
                .collect();
            assert_close(&adv, &want, 1e-6, "advantages");
        }
    }

    /// λ = 0 gives one-step TD errors. Rewards 1, 2, 3, γ = 0.5,
    /// V = 0.4, −1, 2 and V(s_3) = 4 (not terminated: the tail bootstraps):
    ///
    /// ```text
    /// δ_0 = 1 + 0.5·(−1) − 0.4 = 0.1
    /// δ_1 = 2 + 0.5·2 − (−1) = 4
    /// δ_2 = 3 + 0.5·4 − 2 = 3
    /// ```
    #[test]
    fn lambda_zero_gives_td_errors() {
        let (adv, ret) = run(
            &[&[1.0], &[2.0], &[3.0]],
            &[&[0.4], &[-1.0], &[2.0], &[4.0]],
            &[&[0.0], &[0.0], &[0.0]],
            &[&[0.0], &[0.0], &[0.0]],
            &[&[0.0], &[0.0], &[0.0]],
            0.5,
            0.0,
        );
        assert_close(&adv, &[0.1, 4.0, 3.0], 1e-6, "advantages");
        assert_close(&ret, &[0.5, 3.0, 5.0], 1e-6, "returns");
    }

    /// One step ending an episode, γ = 0.9, λ = 0.8, r = 1, V(s_0) = 0.5,
    /// V(final obs) = 10, and row 1 of `values` = 100 (the next episode's first
    /// observation, which must not be used):
    ///
    /// ```text
    /// truncated:  A_0 = 1 + 0.9·10 − 0.5 = 9.5
    /// terminated: A_0 = 1 + 0.9·0 − 0.5 = 0.5
    /// both:       terminated wins, 0.5
    /// ```
    #[test]
    fn truncation_bootstraps_from_the_final_value_termination_does_not() {
        for (term, trunc, want) in [(0.0, 1.0, 9.5), (1.0, 0.0, 0.5), (1.0, 1.0, 0.5)] {
            let (adv, _) = run(
                &[&[1.0]],
                &[&[0.5], &[100.0]],
                &[&[term]],
                &[&[trunc]],
                &[&[10.0]],
                0.9,
                0.8,
            );
            assert_close(
                &adv,
                &[want],
                1e-5,
                &format!("terminated {term} truncated {trunc}"),
            );
        }
    }

    /// Nothing flows backwards across an episode end: changing anything after
    /// the end leaves the advantages before it unchanged, for both kinds of
    /// end, while without an end it does change them.
    #[test]
    fn advantages_do_not_leak_across_episode_ends() {
        let values: &[&[f32]] = &[&[0.1], &[0.2], &[0.3], &[0.4], &[0.5]];
        let fin: &[&[f32]] = &[&[0.0], &[-2.0], &[0.0], &[0.0]];
        let zeros: &[&[f32]] = &[&[0.0], &[0.0], &[0.0], &[0.0]];
        let ended: &[&[f32]] = &[&[0.0], &[1.0], &[0.0], &[0.0]];
        let a: &[&[f32]] = &[&[1.0], &[1.0], &[1.0], &[1.0]];
        let b: &[&[f32]] = &[&[1.0], &[1.0], &[-50.0], &[30.0]];
        for (term, trunc) in [(ended, zeros), (zeros, ended)] {
            let (adv_a, _) = run(a, values, term, trunc, fin, 0.99, 0.95);
            let (adv_b, _) = run(b, values, term, trunc, fin, 0.99, 0.95);
            let (ha, hb) = (host(&adv_a), host(&adv_b));
            assert_eq!(
                ha[..2],
                hb[..2],
                "steps 0 and 1 belong to the first episode"
            );
            assert_ne!(ha[2], hb[2]);
        }
        let (adv_a, _) = run(a, values, zeros, zeros, fin, 0.99, 0.95);
        let (adv_b, _) = run(b, values, zeros, zeros, fin, 0.99, 0.95);
        assert_ne!(
            host(&adv_a)[1],
            host(&adv_b)[1],
            "without an end the future does flow back"
        );
    }

    #[test]
    fn empty_rollout_and_no_autograd() {
        let v = Tensor::zeros([1, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let e = Tensor::zeros([0, 3], (Kind::Float, Device::Cpu));
        let (adv, ret) = gae(&e, &v, &e, &e, &e, 0.99, 0.95);
        assert_eq!(adv.size(), [0, 3]);
        assert_eq!(ret.size(), [0, 3]);
        assert!(!ret.requires_grad());
    }

    /// The same numbers on a GPU, computed there (skipped without CUDA).
    #[test]
    fn runs_on_the_inputs_device() {
        if !tch::Cuda::is_available() {
            flotilla_common::testing::skip("cuda", "no CUDA device");
            return;
        }
        let cuda = Device::Cuda(0);
        tch::manual_seed(11);
        let o = (Kind::Float, Device::Cpu);
        let (t_len, n) = (64, 16);
        let r = Tensor::randn([t_len, n], o);
        let v = Tensor::randn([t_len + 1, n], o);
        let term = Tensor::rand([t_len, n], o).lt(0.05).to_kind(Kind::Float);
        let trunc = Tensor::rand([t_len, n], o).lt(0.05).to_kind(Kind::Float);
        let fin = Tensor::randn([t_len, n], o);
        let (adv_cpu, _) = gae(&r, &v, &term, &trunc, &fin, 0.99, 0.95);
        let on = |x: &Tensor| x.to_device(cuda);
        let (adv, ret) = gae(
            &on(&r),
            &on(&v),
            &on(&term),
            &on(&trunc),
            &on(&fin),
            0.99,
            0.95,
        );
        assert_eq!((adv.device(), ret.device()), (cuda, cuda));
        let diff = (adv.to_device(Device::Cpu) - adv_cpu)
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-5, "cuda vs cpu: {diff}");
    }

    #[test]
    #[should_panic(expected = "values must be [T+1, N]")]
    fn rejects_values_without_the_bootstrap_row() {
        let x = Tensor::zeros([4, 2], (Kind::Float, Device::Cpu));
        let _ = gae(&x, &x, &x, &x, &x, 0.99, 0.95);
    }
}
