//! V-trace off-policy targets.
//!
//! Espeholt et al., "IMPALA: Scalable Distributed Deep-RL with Importance
//! Weighted Actor-Learner Architectures", ICML 2018, arXiv:1802.01561,
//! section 4.1. For a trajectory acted with a behavior policy μ and a target
//! (current) policy π, with truncated importance weights
//!
//! ```text
//! ρ_t = min(ρ̄, π(a_t|x_t) / μ(a_t|x_t))        c_t = min(c̄, π(a_t|x_t) / μ(a_t|x_t))
//! δ_t = ρ_t · (r_t + γ·V(x_{t+1}) − V(x_t))
//! v_s = V(x_s) + Σ_{t≥s} γ^{t−s} (Π_{i=s}^{t−1} c_i) δ_t
//!     = V(x_s) + δ_s + γ·c_s·(v_{s+1} − V(x_{s+1}))          (the recursion, Remark 1)
//! ```
//!
//! `v_s` is the value target; the policy gradient uses the advantage
//! `ρ_s·(r_s + γ·v_{s+1} − V(x_s))`. With π = μ and ρ̄, c̄ ≥ 1 every weight is
//! 1 and `v_s` is the Monte-Carlo return bootstrapped at the end of the
//! rollout, i.e. the GAE(λ = 1) return (the paper's on-policy remark; tested
//! below against [`super::gae::gae`]).
//!
//! Episode boundaries follow [`super::gae`] exactly: at a terminated step the
//! next value is 0, at a truncated step it is V of the true final observation,
//! and the recursion does not carry across either.

use tch::{Kind, Tensor};

use super::gae::{backward_scan, check_shapes, Rollout};

/// V-trace outputs for a `[T, N]` rollout, all float32 on the inputs' device.
#[derive(Debug)]
pub struct Vtrace {
    /// `v_s`: value targets.
    pub targets: Tensor,
    /// `r_s + γ·v_{s+1} − V(x_s)` (with the episode-boundary rules for the
    /// next value): the advantage *before* the importance weight ρ_s.
    pub advantages: Tensor,
    /// ρ_s = min(ρ̄, π/μ), the weight IMPALA's policy gradient applies to
    /// [`Vtrace::advantages`].
    pub clipped_rhos: Tensor,
}

/// V-trace targets of a rollout of `T` steps in `N` environments.
///
/// Inputs as in [`super::gae::gae`] (`rewards`, `terminated`, `truncated`,
/// `final_values` `[T, N]`, `values` `[T+1, N]` with the tail bootstrap in row
/// T) plus `log_rhos` `[T, N]` = log π(a_t|x_t) − log μ(a_t|x_t). `rho_bar`
/// and `c_bar` are the truncation levels ρ̄ and c̄ (the paper uses 1). No
/// autograd: the outputs are constants for the loss.
///
/// Panics with a message naming the argument if a shape does not match.
#[allow(clippy::too_many_arguments)]
pub fn vtrace(
    rewards: &Tensor,
    values: &Tensor,
    terminated: &Tensor,
    truncated: &Tensor,
    final_values: &Tensor,
    log_rhos: &Tensor,
    gamma: f64,
    rho_bar: f64,
    c_bar: f64,
) -> Vtrace {
    check_shapes(
        "vtrace",
        rewards,
        values,
        &[
            ("terminated", terminated),
            ("truncated", truncated),
            ("final_values", final_values),
            ("log_rhos", log_rhos),
        ],
    );
    let t_len = rewards.size()[0];
    tch::no_grad(|| {
        let r = Rollout::new(rewards, values, terminated, truncated, final_values);
        let ratio = log_rhos.to_kind(Kind::Float).exp();
        let rhos = ratio.clamp_max(rho_bar);
        let cs = ratio.clamp_max(c_bar);
        let deltas = &rhos * (&r.rewards + &r.next * gamma - &r.current);
        // v_s − V(x_s) = δ_s + γ·c_s·(v_{s+1} − V(x_{s+1})), zero past the tail.
        let diffs = backward_scan(&deltas, &(&cs * &r.continues * gamma));
        let targets = &diffs + &r.current;
        // v_{s+1}: the next row's target where the episode continues, the
        // boundary value where it ended, V(x_T) after the last row.
        let tail = values.to_kind(Kind::Float).narrow(0, t_len, 1);
        let next_targets = Tensor::cat(&[targets.narrow(0, 1, t_len - 1), tail], 0);
        let next_v = next_targets.where_self(&r.continues.gt(0.5), &r.next);
        let advantages = &r.rewards + next_v * gamma - &r.current;
        Vtrace {
            targets,
            advantages,
            clipped_rhos: rhos,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algo::gae::gae;
    use rand::{Rng, SeedableRng};

    use crate::test_util::host;

    fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
        }
    }

    /// The paper's definition of v_s as an explicit sum (not the recursion),
    /// in f64, one environment at a time; the sum stops at an episode end
    /// and bootstraps with V(x_T) at the rollout's end.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        t_len: usize,
        n: usize,
        r: &[f64],
        v: &[f64],
        term: &[bool],
        trunc: &[bool],
        fin: &[f64],
        log_rho: &[f64],
        gamma: f64,
        rho_bar: f64,
        c_bar: f64,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let k = |t: usize, i: usize| t * n + i;
        let next_value = |t: usize, i: usize| {
            if term[k(t, i)] {
                0.0
            } else if trunc[k(t, i)] {
                fin[k(t, i)]
            } else {
                v[k(t + 1, i)]
            }
        };
        let rho = |t: usize, i: usize| log_rho[k(t, i)].exp().min(rho_bar);
        let c = |t: usize, i: usize| log_rho[k(t, i)].exp().min(c_bar);
        let mut vs = vec![0.0; t_len * n];
        for i in 0..n {
            for s in 0..t_len {
                let mut sum = 0.0;
                let mut coef = 1.0; // γ^{t−s} Π_{i=s}^{t−1} c_i
                for t in s..t_len {
                    let delta = rho(t, i) * (r[k(t, i)] + gamma * next_value(t, i) - v[k(t, i)]);
                    sum += coef * delta;
                    if term[k(t, i)] || trunc[k(t, i)] {
                        break;
                    }
                    coef *= gamma * c(t, i);
                }
                vs[k(s, i)] = v[k(s, i)] + sum;
            }
        }
        let mut adv = vec![0.0; t_len * n];
        let mut pg = vec![0.0; t_len * n];
        for i in 0..n {
            for s in 0..t_len {
                let done = term[k(s, i)] || trunc[k(s, i)];
                let v_next = if done {
                    next_value(s, i)
                } else if s + 1 < t_len {
                    vs[k(s + 1, i)]
                } else {
                    v[k(t_len, i)]
                };
                adv[k(s, i)] = r[k(s, i)] + gamma * v_next - v[k(s, i)];
                pg[k(s, i)] = rho(s, i) * adv[k(s, i)];
            }
        }
        (vs, adv, pg)
    }

    struct Case {
        t_len: usize,
        n: usize,
        r: Vec<f32>,
        v: Vec<f32>,
        term: Vec<bool>,
        trunc: Vec<bool>,
        fin: Vec<f32>,
        log_rho: Vec<f32>,
    }

    fn random_case(rng: &mut impl Rng, t_len: usize, n: usize, log_rho_scale: f32) -> Case {
        let mut term: Vec<bool> = (0..t_len * n).map(|_| rng.random_bool(0.1)).collect();
        let mut trunc: Vec<bool> = (0..t_len * n).map(|_| rng.random_bool(0.1)).collect();
        (term[3], trunc[3]) = (true, false);
        (term[11], trunc[11]) = (false, true);
        (term[17], trunc[17]) = (true, true);
        (term[(t_len - 1) * n + 2], trunc[(t_len - 1) * n + 2]) = (false, true);
        let fin = (0..t_len * n)
            .map(|k| {
                if term[k] || trunc[k] {
                    rng.random_range(-3.0..3.0)
                } else {
                    f32::NAN
                }
            })
            .collect();
        Case {
            t_len,
            n,
            r: (0..t_len * n)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect(),
            v: (0..(t_len + 1) * n)
                .map(|_| rng.random_range(-3.0..3.0))
                .collect(),
            term,
            trunc,
            fin,
            log_rho: (0..t_len * n)
                .map(|_| {
                    if log_rho_scale > 0.0 {
                        rng.random_range(-log_rho_scale..log_rho_scale)
                    } else {
                        0.0
                    }
                })
                .collect(),
        }
    }

    fn flags(b: &[bool]) -> Vec<f32> {
        b.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect()
    }

    fn run(c: &Case, gamma: f64, rho_bar: f64, c_bar: f64) -> Vtrace {
        let shape = [c.t_len as i64, c.n as i64];
        vtrace(
            &Tensor::from_slice(&c.r).view(shape),
            &Tensor::from_slice(&c.v).view([c.t_len as i64 + 1, c.n as i64]),
            &Tensor::from_slice(&flags(&c.term)).view(shape),
            &Tensor::from_slice(&flags(&c.trunc)).view(shape),
            &Tensor::from_slice(&c.fin).view(shape),
            &Tensor::from_slice(&c.log_rho).view(shape),
            gamma,
            rho_bar,
            c_bar,
        )
    }

    #[test]
    fn matches_the_papers_sum_with_clipping_and_episode_ends() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(11);
        for trial in 0..12 {
            let c = random_case(&mut rng, 29, 4, 1.5);
            let gamma: f64 = rng.random_range(0.8..1.0);
            // ρ̄ and c̄ below, at and above 1, and ρ̄ ≠ c̄.
            let (rho_bar, c_bar) = [(1.0, 1.0), (0.5, 0.9), (2.0, 0.7), (1.3, 1.3)][trial % 4];
            let out = run(&c, gamma, rho_bar, c_bar);
            let d = |x: &[f32]| x.iter().map(|&y| f64::from(y)).collect::<Vec<_>>();
            let (vs, adv, pg) = reference(
                c.t_len,
                c.n,
                &d(&c.r),
                &d(&c.v),
                &c.term,
                &c.trunc,
                &d(&c.fin),
                &d(&c.log_rho),
                gamma,
                rho_bar,
                c_bar,
            );
            // The ratios really are clipped in these cases.
            let ratios: Vec<f64> = c.log_rho.iter().map(|&l| f64::from(l).exp()).collect();
            assert!(ratios.iter().any(|&r| r > rho_bar.min(c_bar)));
            let what = format!("trial {trial} (ρ̄ {rho_bar}, c̄ {c_bar})");
            assert_close(&host(&out.targets), &vs, 1e-4, &format!("{what} targets"));
            assert_close(
                &host(&out.advantages),
                &adv,
                1e-4,
                &format!("{what} advantages"),
            );
            let weighted = host(&(&out.advantages * &out.clipped_rhos));
            assert_close(&weighted, &pg, 1e-4, &format!("{what} pg advantages"));
        }
    }

    #[test]
    fn on_policy_targets_are_the_gae_lambda_one_returns() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(5);
        let c = random_case(&mut rng, 40, 6, 0.0);
        let shape = [c.t_len as i64, c.n as i64];
        let (adv, ret) = gae(
            &Tensor::from_slice(&c.r).view(shape),
            &Tensor::from_slice(&c.v).view([c.t_len as i64 + 1, c.n as i64]),
            &Tensor::from_slice(&flags(&c.term)).view(shape),
            &Tensor::from_slice(&flags(&c.trunc)).view(shape),
            &Tensor::from_slice(&c.fin).view(shape),
            0.97,
            1.0,
        );
        // Any ρ̄, c̄ ≥ 1 leaves on-policy weights at 1.
        for (rho_bar, c_bar) in [(1.0, 1.0), (3.0, 2.0)] {
            let out = run(&c, 0.97, rho_bar, c_bar);
            assert_close(&host(&out.targets), &host(&ret), 1e-5, "targets vs returns");
            assert_close(
                &host(&out.advantages),
                &host(&adv),
                1e-5,
                "advantages vs GAE(1)",
            );
            assert!(host(&out.clipped_rhos).iter().all(|&r| r == 1.0));
        }
    }

    #[test]
    fn hand_worked_two_steps() {
        // One env, γ = 0.9, V ≡ 0 (incl. the tail), rewards 1 then 0, no
        // episode end, π/μ = 2 at step 0 and 0.5 at step 1, ρ̄ = c̄ = 1:
        // ρ = c = (1, 0.5); δ = (1·1, 0.5·0) = (1, 0)
        // v_1 = 0 + 0 = 0;  v_0 = 0 + δ_0 + γ·c_0·(v_1 − V_1) = 1.
        // advantages: step 0: r_0 + γ·v_1 − V_0 = 1; step 1: r_1 + γ·V_2 − V_1 = 0.
        let z = Tensor::zeros([2, 1], (Kind::Float, tch::Device::Cpu));
        let out = vtrace(
            &Tensor::from_slice(&[1.0f32, 0.0]).view([2, 1]),
            &Tensor::zeros([3, 1], (Kind::Float, tch::Device::Cpu)),
            &z,
            &z,
            &z,
            &Tensor::from_slice(&[2.0f32.ln(), 0.5f32.ln()]).view([2, 1]),
            0.9,
            1.0,
            1.0,
        );
        assert_close(&host(&out.targets), &[1.0, 0.0], 1e-6, "targets");
        assert_close(&host(&out.advantages), &[1.0, 0.0], 1e-6, "advantages");
        assert_close(&host(&out.clipped_rhos), &[1.0, 0.5], 1e-6, "rhos");
    }
}
