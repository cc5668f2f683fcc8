//! The PPO-clip loss, in pieces.
//!
//! Schulman, Wolski, Dhariwal, Radford, Klimov, "Proximal Policy Optimization
//! Algorithms", 2017, arXiv:1707.06347, equations (7) and (9):
//!
//! ```text
//! r_t(θ)   = π_θ(a_t|s_t) / π_θold(a_t|s_t)
//! L^CLIP   = Ê_t[ min(r_t·Â_t, clip(r_t, 1−ε, 1+ε)·Â_t) ]
//! L        = Ê_t[ L^CLIP − c1·L^VF + c2·S[π_θ](s_t) ]        (maximized)
//! ```
//!
//! Here everything is a loss to minimize, so signs flip:
//! `loss = −L^CLIP + vf_coef·L^VF − ent_coef·mean(entropy)`.
//!
//! Two refinements follow the common implementations rather than the paper:
//! Huang et al., "The 37 Implementation Details of Proximal Policy
//! Optimization" (ICLR blog track 2022), and CleanRL's `ppo.py` (Huang et al.
//! 2022, JMLR 23(274)), which the golden tests below are checked against:
//!
//! - per-minibatch advantage normalization (detail 7), and
//! - value-loss clipping around the behavior values (detail 9), with the
//!   ½·squared-error value loss.
//!
//! The statistics for monitoring are also CleanRL's: the k3 KL estimator of
//! Schulman's "Approximating KL Divergence" note
//! (<http://joschu.net/blog/kl-approx.html>), the clipped fraction, and the
//! explained variance of the value function.

use tch::{Kind, Tensor};

/// Guards the division in [`normalize_advantages`].
const NORM_EPS: f64 = 1e-8;

fn assert_same_shape(what: &str, tensors: &[(&str, &Tensor)]) {
    let (first_name, first) = tensors[0];
    for (name, t) in &tensors[1..] {
        // Catches e.g. a [B, 1] value head against [B] returns, which would
        // silently broadcast to [B, B].
        assert_eq!(
            t.size(),
            first.size(),
            "{what}: {name} must have the shape of {first_name}"
        );
    }
}

/// Advantages normalized to zero mean and unit standard deviation:
/// `(a − mean(a)) / (std(a) + 1e-8)`, over all elements of `adv` (any shape;
/// the result has the same shape, float32).
///
/// `std` is the *unbiased* (Bessel-corrected, n − 1) estimate: that is what
/// CleanRL and Stable-Baselines3 compute (`torch.Tensor.std()` defaults to
/// it), and matching them keeps their tuned hyper-parameters meaningful here.
/// The two differ by a factor √(n/(n−1)), under 0.2% for a minibatch of 256.
///
/// A single element (whose unbiased std is undefined) normalizes to 0
/// rather than NaN; constant advantages normalize to 0 as well.
pub fn normalize_advantages(adv: &Tensor) -> Tensor {
    let adv = adv.to_kind(Kind::Float);
    let centered = &adv - adv.mean(Kind::Float);
    if adv.numel() < 2 {
        return centered;
    }
    centered / (adv.std(true) + NORM_EPS)
}

/// The clipped surrogate policy loss, to minimize:
///
/// ```text
/// r    = exp(new_logp − old_logp)
/// loss = mean( max(−A·r, −A·clip(r, 1−ε, 1+ε)) )
/// ```
///
/// (the negated `min` of the paper's objective). Inputs are `[B]` (any
/// matching shapes): `new_logp` from the current policy, with gradient;
/// `old_logp` from the behavior policy and `adv` the (normalized) advantages,
/// both constants. Returns `(loss scalar, ratio r)`, the ratio keeping its
/// graph (detach it for statistics such as [`clip_fraction`]).
///
/// Where the clipped term is the larger loss, r is outside [1−ε, 1+ε] in the
/// direction the advantage pushes it, and that sample contributes no gradient.
pub fn policy_loss(
    new_logp: &Tensor,
    old_logp: &Tensor,
    adv: &Tensor,
    clip_eps: f64,
) -> (Tensor, Tensor) {
    assert_same_shape(
        "policy_loss",
        &[("new_logp", new_logp), ("old_logp", old_logp), ("adv", adv)],
    );
    let ratio = (new_logp - old_logp).exp();
    let unclipped = -adv * &ratio;
    let clipped = -adv * ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps);
    (unclipped.max_other(&clipped).mean(Kind::Float), ratio)
}

/// The value loss, to minimize. Without clipping `½·mean((v − R)²)`; with
/// `clip = Some(c)`:
///
/// ```text
/// v_clip = old_v + clamp(v − old_v, −c, c)
/// loss   = ½·mean( max((v − R)², (v_clip − R)²) )
/// ```
///
/// so the critic gains nothing from moving further than `c` from the value it
/// had when the data was collected. `new_v` `[B]` with gradient, `old_v` `[B]`
/// the behavior-time values, `returns` `[B]` the GAE returns; shapes must
/// match exactly (no broadcasting). Returns a scalar.
pub fn value_loss(new_v: &Tensor, old_v: &Tensor, returns: &Tensor, clip: Option<f64>) -> Tensor {
    assert_same_shape(
        "value_loss",
        &[("new_v", new_v), ("old_v", old_v), ("returns", returns)],
    );
    let unclipped = (new_v - returns).square();
    let per_sample = match clip {
        None => unclipped,
        Some(c) => {
            let v_clip = old_v + (new_v - old_v).clamp(-c, c);
            unclipped.max_other(&(v_clip - returns).square())
        }
    };
    per_sample.mean(Kind::Float) * 0.5
}

/// KL(π_old ‖ π_new) estimated from `logratio` = log r = new_logp − old_logp
/// (`[B]`) with Schulman's k3 estimator `mean((r − 1) − log r)`: unbiased,
/// and non-negative per sample unlike `mean(−log r)`. Computed without
/// autograd; one host synchronization. NaN for an empty batch.
pub fn approx_kl(logratio: &Tensor) -> f64 {
    tch::no_grad(|| {
        let logratio = logratio.to_kind(Kind::Float);
        ((logratio.exp() - 1.0) - &logratio)
            .mean(Kind::Float)
            .double_value(&[])
    })
}

/// Fraction of samples whose ratio was clipped, `mean(|r − 1| > ε)`, for
/// `ratio` `[B]`. Computed without autograd; NaN for an empty batch.
pub fn clip_fraction(ratio: &Tensor, eps: f64) -> f64 {
    tch::no_grad(|| {
        (ratio - 1.0)
            .abs()
            .gt(eps)
            .to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[])
    })
}

/// Explained variance of the value predictions, `1 − Var[R − V] / Var[R]`,
/// for `values` and `returns` of the same shape: 1 for perfect predictions,
/// 0 for predictions no better than a constant, negative for worse.
///
/// Returns **NaN** when `Var[R] = 0` (including an empty batch): the ratio is
/// undefined there, and NaN says so rather than posing as a score, as in
/// CleanRL and Stable-Baselines3. Population variances (the n vs n − 1
/// choice cancels in the ratio). Computed without autograd.
pub fn explained_variance(values: &Tensor, returns: &Tensor) -> f64 {
    assert_same_shape(
        "explained_variance",
        &[("values", values), ("returns", returns)],
    );
    if returns.numel() == 0 {
        return f64::NAN;
    }
    tch::no_grad(|| {
        let returns = returns.to_kind(Kind::Float);
        let var_r = returns.var(false).double_value(&[]);
        if var_r == 0.0 || var_r.is_nan() {
            return f64::NAN;
        }
        1.0 - (&returns - values.to_kind(Kind::Float))
            .var(false)
            .double_value(&[])
            / var_r
    })
}

/// Coefficients of the combined PPO loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PpoLossConfig {
    /// ε of the ratio clipping.
    pub clip_eps: f64,
    /// Value clipping range, or `None` for the plain squared error.
    pub vf_clip: Option<f64>,
    /// Weight of the value loss.
    pub vf_coef: f64,
    /// Weight of the entropy bonus.
    pub ent_coef: f64,
}

/// One minibatch's inputs to [`total_loss`], all `[B]`.
pub struct LossInputs<'a> {
    /// log π_θ(a|s) under the current policy (with gradient).
    pub new_logp: &'a Tensor,
    /// log π_θold(a|s) recorded by the actor.
    pub old_logp: &'a Tensor,
    /// Advantages, already normalized if that is wanted
    /// ([`normalize_advantages`]).
    pub advantages: &'a Tensor,
    /// V(s) under the current critic (with gradient).
    pub new_values: &'a Tensor,
    /// V(s) when the data was collected (for value clipping).
    pub old_values: &'a Tensor,
    /// GAE returns (value targets).
    pub returns: &'a Tensor,
    /// Entropy of the current policy per sample (with gradient).
    pub entropy: &'a Tensor,
}

/// Host copies of one minibatch's loss terms and statistics, for reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossStats {
    /// Clipped surrogate loss ([`policy_loss`]).
    pub policy: f64,
    /// Value loss ([`value_loss`]), before `vf_coef`.
    pub value: f64,
    /// Mean entropy, before `ent_coef`.
    pub entropy: f64,
    /// [`approx_kl`] of the minibatch.
    pub approx_kl: f64,
    /// [`clip_fraction`] of the minibatch.
    pub clip_fraction: f64,
}

/// The loss to minimize for one minibatch,
/// `policy_loss + vf_coef·value_loss − ent_coef·mean(entropy)`, as a scalar
/// with its graph, and its terms as detached host numbers.
///
/// The statistics cost one host synchronization per term; call it per
/// minibatch, not per sample.
pub fn total_loss(cfg: &PpoLossConfig, x: &LossInputs<'_>) -> (Tensor, LossStats) {
    assert_same_shape(
        "total_loss",
        &[("new_logp", x.new_logp), ("entropy", x.entropy)],
    );
    let (pg, ratio) = policy_loss(x.new_logp, x.old_logp, x.advantages, cfg.clip_eps);
    let v = value_loss(x.new_values, x.old_values, x.returns, cfg.vf_clip);
    let ent = x.entropy.mean(Kind::Float);
    let loss = &pg + &v * cfg.vf_coef - &ent * cfg.ent_coef;
    let stats = LossStats {
        policy: pg.double_value(&[]),
        value: v.double_value(&[]),
        entropy: ent.double_value(&[]),
        approx_kl: approx_kl(&(x.new_logp - x.old_logp)),
        clip_fraction: clip_fraction(&ratio, cfg.clip_eps),
    };
    (loss, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_slice(v)
    }

    fn leaf(v: &[f32]) -> Tensor {
        Tensor::from_slice(v).set_requires_grad(true)
    }

    fn host(x: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(x.to_kind(Kind::Double).flatten(0, -1)).expect("tensor to vec")
    }

    fn assert_close(got: &Tensor, want: &[f64], tol: f64, what: &str) {
        let got = host(got);
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol, "{what}[{i}]: got {g}, want {w}");
        }
    }

    fn close(got: f64, want: f64, tol: f64, what: &str) {
        assert!((got - want).abs() <= tol, "{what}: got {got}, want {want}");
    }

    /// ε = 0.2, old_logp = 0 so r = exp(new_logp). Per sample, the objective
    /// min(r·A, clip(r)·A) and the loss term (its negation):
    ///
    /// ```text
    /// r = 1.5, A = +1:  min(1.5, 1.2)   = 1.2  (clipped)    loss −1.2, grad 0
    /// r = 0.5, A = +1:  min(0.5, 0.8)   = 0.5  (unclipped)  loss −0.5, d/dlogp = −A·r = −0.5
    /// r = 0.5, A = −1:  min(−0.5, −0.8) = −0.8 (clipped)    loss +0.8, grad 0
    /// r = 1.5, A = −1:  min(−1.5, −1.2) = −1.5 (unclipped)  loss +1.5, d/dlogp = +1.5
    /// r = 1.1, A = +2:  inside [0.8, 1.2]: 2.2              loss −2.2, d/dlogp = −2.2
    /// r = 0.9, A = −3:  inside: −2.7                        loss +2.7, d/dlogp = +2.7
    /// mean loss = (−1.2 − 0.5 + 0.8 + 1.5 − 2.2 + 2.7) / 6 = 1.1 / 6
    /// ```
    ///
    /// (d r / d logp = r; the mean divides each gradient by 6.)
    #[test]
    fn policy_loss_clips_on_both_sides() {
        let r = [1.5f64, 0.5, 0.5, 1.5, 1.1, 0.9];
        let logp = leaf(&r.map(|x| x.ln() as f32));
        let adv = t(&[1.0, 1.0, -1.0, -1.0, 2.0, -3.0]);
        let (loss, ratio) = policy_loss(&logp, &t(&[0.0; 6]), &adv, 0.2);
        close(loss.double_value(&[]), 1.1 / 6.0, 1e-6, "loss");
        assert_close(&ratio, &r, 1e-6, "ratio");
        loss.backward();
        let want_grad = [0.0, -0.5, 0.0, 1.5, -2.2, 2.7].map(|g| g / 6.0);
        assert_close(&logp.grad(), &want_grad, 1e-6, "gradient");
        close(clip_fraction(&ratio, 0.2), 4.0 / 6.0, 1e-6, "clip fraction");
    }

    /// c = 0.2. Per sample, (v − R)², v_clip = old + clamp(v − old, ±0.2),
    /// (v_clip − R)², and which one the max picks:
    ///
    /// ```text
    /// v=1.0 old=0.5 R=2:   1     v_clip=0.7  1.69  → 1.69 clipped,   grad 0
    /// v=1.0 old=0.5 R=0:   1     v_clip=0.7  0.49  → 1    unclipped, d/dv ½·2(v−R)/4 = 0.25
    /// v=0.6 old=0.5 R=3:   5.76  v_clip=0.6  5.76  → 5.76 inside,    d/dv (0.6−3)/4 = −0.6
    /// v=0.0 old=0.5 R=−1:  1     v_clip=0.3  1.69  → 1.69 clipped,   grad 0
    /// clipped:   ½·(1.69 + 1 + 5.76 + 1.69)/4 = 1.2675
    /// unclipped: ½·(1 + 1 + 5.76 + 1)/4     = 1.095, d/dv = (v − R)/4 = (−0.25, 0.25, −0.6, 0.25)
    /// ```
    #[test]
    fn value_loss_clipped_and_unclipped() {
        let old = t(&[0.5, 0.5, 0.5, 0.5]);
        let ret = t(&[2.0, 0.0, 3.0, -1.0]);

        let v = leaf(&[1.0, 1.0, 0.6, 0.0]);
        let loss = value_loss(&v, &old, &ret, Some(0.2));
        close(loss.double_value(&[]), 1.2675, 1e-6, "clipped loss");
        loss.backward();
        assert_close(&v.grad(), &[0.0, 0.25, -0.6, 0.0], 1e-6, "clipped gradient");

        let v = leaf(&[1.0, 1.0, 0.6, 0.0]);
        let loss = value_loss(&v, &old, &ret, None);
        close(loss.double_value(&[]), 1.095, 1e-6, "unclipped loss");
        loss.backward();
        assert_close(
            &v.grad(),
            &[-0.25, 0.25, -0.6, 0.25],
            1e-6,
            "unclipped gradient",
        );
    }

    #[test]
    #[should_panic(expected = "returns must have the shape of new_v")]
    fn value_loss_refuses_to_broadcast() {
        let v = Tensor::zeros([4, 1], (Kind::Float, Device::Cpu));
        let r = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        let _ = value_loss(&v, &v, &r, None);
    }

    /// log r = ln 2, 0, ln ½: (r − 1) − log r = 1 − ln 2, 0, −½ + ln 2, so the
    /// mean is ½ / 3. Identical policies give exactly 0.
    #[test]
    fn approx_kl_on_known_ratios() {
        let lr = t(&[2f32.ln(), 0.0, 0.5f32.ln()]);
        close(approx_kl(&lr), 0.5 / 3.0, 1e-7, "k3");
        assert_eq!(approx_kl(&t(&[0.0; 5])), 0.0);
        // Positive for any change of policy, in either direction.
        assert!(approx_kl(&t(&[0.3])) > 0.0 && approx_kl(&t(&[-0.3])) > 0.0);
    }

    #[test]
    fn clip_fraction_counts_strictly_outside() {
        close(
            clip_fraction(&t(&[1.5, 0.5, 1.1, 0.9]), 0.2),
            0.5,
            1e-7,
            "half",
        );
        close(clip_fraction(&t(&[1.0, 1.0]), 0.2), 0.0, 0.0, "none");
    }

    /// R = 1, 2, 3, 4 (Var = 1.25).
    ///
    /// ```text
    /// V = R:            1
    /// V = 0:            1 − Var[R]/Var[R] = 0
    /// V = 7 (constant): Var[R − 7] = Var[R], so 0
    /// V = 1, 2, 3, 3:   R − V = 0, 0, 0, 1, Var = 0.1875, 1 − 0.1875/1.25 = 0.85
    /// V = −R:           Var[2R]/Var[R] = 4, so −3
    /// R constant:       NaN
    /// ```
    #[test]
    fn explained_variance_cases() {
        let r = t(&[1.0, 2.0, 3.0, 4.0]);
        close(explained_variance(&r, &r), 1.0, 1e-7, "perfect");
        close(explained_variance(&t(&[0.0; 4]), &r), 0.0, 1e-7, "zero");
        close(explained_variance(&t(&[7.0; 4]), &r), 0.0, 1e-6, "constant");
        close(
            explained_variance(&t(&[1.0, 2.0, 3.0, 3.0]), &r),
            0.85,
            1e-6,
            "partial",
        );
        close(explained_variance(&-&r, &r), -3.0, 1e-6, "anti");
        assert!(
            explained_variance(&r, &t(&[2.0; 4])).is_nan(),
            "constant returns"
        );
        assert!(explained_variance(&t(&[]), &t(&[])).is_nan(), "empty");
    }

    /// [1, 2, 3, 4]: mean 2.5, unbiased std √(5/3) = 1.2909944, so
    /// (a − 2.5)/1.2909944 = ∓1.1618950, ∓0.3872983.
    #[test]
    fn normalization_hand_computed_and_random() {
        let n = normalize_advantages(&t(&[1.0, 2.0, 3.0, 4.0]));
        assert_close(
            &n,
            &[-1.161_895, -0.387_298_3, 0.387_298_3, 1.161_895],
            1e-6,
            "hand",
        );

        tch::manual_seed(3);
        let a = Tensor::randn([1000], (Kind::Float, Device::Cpu)) * 7.0 + 3.0;
        let n = normalize_advantages(&a);
        close(n.mean(Kind::Float).double_value(&[]), 0.0, 1e-6, "mean");
        close(n.std(true).double_value(&[]), 1.0, 1e-5, "std");

        assert_close(
            &normalize_advantages(&t(&[5.0])),
            &[0.0],
            0.0,
            "single element",
        );
        assert_close(
            &normalize_advantages(&t(&[2.0; 3])),
            &[0.0; 3],
            0.0,
            "constant",
        );
    }

    /// Golden values from CleanRL's loss code (vwxyzjn/cleanrl `cleanrl/ppo.py`,
    /// the minibatch loop) run verbatim in PyTorch 2.13 (float64) with
    /// clip_coef = 0.2 (CleanRL clips the value with the same coefficient),
    /// vf_coef = 0.5, ent_coef = 0.01, norm_adv and clip_vloss on. The last
    /// two lines are CleanRL's `np.var` explained variance, in torch:
    ///
    /// ```text
    /// import torch
    /// torch.set_default_dtype(torch.float64)
    /// clip_coef, vf_coef, ent_coef = 0.2, 0.5, 0.01
    /// b_logprobs = torch.tensor([-0.7, -1.2, -0.3, -2.0, -0.9, -0.5])
    /// newlogprob = torch.tensor([-0.4, -1.3, -0.6, -1.5, -0.9, -0.45])
    /// mb_advantages = torch.tensor([1.5, -0.5, 2.0, -1.0, 0.3, -2.2])
    /// b_values = torch.tensor([0.5, 1.0, -0.2, 2.0, 0.0, 0.7])
    /// newvalue = torch.tensor([0.9, 0.95, -0.3, 1.6, 0.1, 1.2])
    /// b_returns = torch.tensor([1.4, 0.2, -0.25, 2.5, -0.3, 0.6])
    /// entropy = torch.tensor([0.69, 0.6, 0.5, 0.65, 0.4, 0.3])
    /// logratio = newlogprob - b_logprobs
    /// ratio = logratio.exp()
    /// approx_kl = ((ratio - 1) - logratio).mean()
    /// clipfrac = ((ratio - 1.0).abs() > clip_coef).float().mean()
    /// mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
    /// pg_loss1 = -mb_advantages * ratio
    /// pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
    /// pg_loss = torch.max(pg_loss1, pg_loss2).mean()
    /// v_loss_unclipped = (newvalue - b_returns) ** 2
    /// v_clipped = b_values + torch.clamp(newvalue - b_values, -clip_coef, clip_coef)
    /// v_loss_clipped = (v_clipped - b_returns) ** 2
    /// v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
    /// entropy_loss = entropy.mean()
    /// loss = pg_loss - ent_coef * entropy_loss + v_loss * vf_coef
    /// var_y = torch.var(b_returns, unbiased=False)
    /// explained_var = 1 - torch.var(b_returns - b_values, unbiased=False) / var_y
    /// r = lambda x: round(float(x), 9)
    /// print("normalized advantages", [r(a) for a in mb_advantages])
    /// print("pg_loss", r(pg_loss), "v_loss", r(v_loss), "entropy", r(entropy_loss), "loss", r(loss))
    /// print("approx_kl", r(approx_kl), "clipfrac", r(clipfrac), "explained_var", r(explained_var))
    /// ```
    ///
    /// Output:
    ///
    /// ```text
    /// normalized advantages [0.940843328, -0.327709474, 1.257981528, -0.644847674, 0.179711647, -1.405979355]
    /// pg_loss 0.099517342 v_loss 0.19875 entropy 0.523333333 loss 0.193659009
    /// approx_kl 0.040917802 clipfrac 0.5 explained_var 0.694717488
    /// ```
    #[test]
    fn total_loss_matches_cleanrl() {
        let old_logp = t(&[-0.7, -1.2, -0.3, -2.0, -0.9, -0.5]);
        let new_logp = t(&[-0.4, -1.3, -0.6, -1.5, -0.9, -0.45]);
        let adv = normalize_advantages(&t(&[1.5, -0.5, 2.0, -1.0, 0.3, -2.2]));
        assert_close(
            &adv,
            &[
                0.940_843_328,
                -0.327_709_474,
                1.257_981_528,
                -0.644_847_674,
                0.179_711_647,
                -1.405_979_355,
            ],
            1e-6,
            "normalized advantages",
        );
        let old_v = t(&[0.5, 1.0, -0.2, 2.0, 0.0, 0.7]);
        let new_v = t(&[0.9, 0.95, -0.3, 1.6, 0.1, 1.2]);
        let returns = t(&[1.4, 0.2, -0.25, 2.5, -0.3, 0.6]);
        let entropy = t(&[0.69, 0.6, 0.5, 0.65, 0.4, 0.3]);
        let cfg = PpoLossConfig {
            clip_eps: 0.2,
            vf_clip: Some(0.2),
            vf_coef: 0.5,
            ent_coef: 0.01,
        };
        let inputs = LossInputs {
            new_logp: &new_logp,
            old_logp: &old_logp,
            advantages: &adv,
            new_values: &new_v,
            old_values: &old_v,
            returns: &returns,
            entropy: &entropy,
        };
        let (loss, s) = total_loss(&cfg, &inputs);
        close(loss.double_value(&[]), 0.193_659_009, 1e-6, "loss");
        close(s.policy, 0.099_517_342, 1e-6, "pg_loss");
        close(s.value, 0.198_75, 1e-6, "v_loss");
        close(s.entropy, 0.523_333_333, 1e-6, "entropy");
        close(s.approx_kl, 0.040_917_802, 1e-6, "approx_kl");
        close(s.clip_fraction, 0.5, 1e-7, "clipfrac");
        close(
            explained_variance(&old_v, &returns),
            0.694_717_488,
            1e-6,
            "explained_var",
        );
    }
}
