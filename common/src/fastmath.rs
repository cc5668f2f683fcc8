//! Branch-free elementwise maths for the actor's inference loop.
//!
//! `f32::tanh` calls libm once per element (glibc's `tanhf` → `expm1f`); at
//! 256 activations per env step that was over half of an actor's CPU time.
//! [`tanh_in_place`] computes the same function with straight-line
//! arithmetic that the compiler vectorizes over a slice.

/// ln 2 split in a part exact in f32 and a remainder (Cody–Waite reduction).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5·2²³: adding it rounds an f32 of magnitude < 2²² to an integer and
/// leaves that integer in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Beyond 10, 1 − 2/(e^{2|x|} + 1) is within 4.2·10⁻⁹ of 1 and rounds to
/// exactly 1 in f32, as the true tanh does.
const TANH_SATURATION: f32 = 10.0;

/// e^y for 0 ≤ y ≤ 20 (relative error below 2.6·10⁻⁷): y = n·ln 2 + r with
/// |r| ≤ ln2/2, e^r by its degree-6 Taylor polynomial (remainder
/// |r|⁷/7! < 1.3·10⁻⁷), times 2ⁿ assembled in the exponent bits.
#[inline(always)]
fn exp_small(y: f32) -> f32 {
    let k = y * std::f32::consts::LOG2_E + ROUND_MAGIC;
    let n = k.to_bits().wrapping_sub(ROUND_MAGIC.to_bits()) as i32;
    let nf = k - ROUND_MAGIC;
    let r = (y - nf * LN2_HI) - nf * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n + 127) << 23) as u32)
}

/// Below this, tanh x = x − x³/3 + 2x⁵/15 to within a relative
/// 17x⁶/315 < 6·10⁻⁸ (the next Taylor term).
const TANH_SMALL: f32 = 0.1;

/// tanh(x) within 3·10⁻⁷ (absolute) of the exact value, and within 10⁻⁶
/// relative for |x| < 0.1, so small inputs keep their precision; NaN for NaN.
///
/// tanh|x| = 1 − 2/(e^{2|x|} + 1); a relative error δ of the exponential
/// moves the result by at most δ/2. Near 0 that difference of two numbers
/// close to 1 loses relative precision, so small |x| use the series.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs().min(TANH_SATURATION); // NaN becomes 10 here, restored below
    let t = 1.0 - 2.0 / (exp_small(2.0 * a) + 1.0);
    let a2 = a * a;
    let series = a * (1.0 + a2 * (-1.0 / 3.0 + a2 * (2.0 / 15.0)));
    // Selects, not branches: the loop over a slice still vectorizes.
    let t = if a < TANH_SMALL { series } else { t };
    if x.is_nan() {
        x
    } else {
        t.copysign(x)
    }
}

/// [`tanh`] over a slice, in place.
pub fn tanh_in_place(xs: &mut [f32]) {
    for x in xs {
        *x = tanh(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every 1e-4 over [−12, 12] plus the neighbourhood of 0, against f64.
    #[test]
    fn tanh_matches_f64_reference() {
        let mut worst = (0.0f64, 0.0f32);
        let mut xs: Vec<f32> = (-120_000..=120_000).map(|i| i as f32 * 1e-4).collect();
        xs.extend((-40..=40).map(|e| 1.5f32.powi(e) * 1e-6));
        xs.extend([f32::MIN_POSITIVE, -0.0, 0.0, 20.0, -1e30, 1e30]);
        for x in xs {
            let err = (tanh(x) as f64 - (x as f64).tanh()).abs();
            if err > worst.0 {
                worst = (err, x);
            }
        }
        assert!(worst.0 <= 3e-7, "error {} at x = {}", worst.0, worst.1);
    }

    /// Small inputs keep their relative precision (and subnormals survive).
    #[test]
    fn tanh_is_relatively_precise_near_zero() {
        for x in [1e-6f32, 1e-30, f32::MIN_POSITIVE / 4.0] {
            assert_eq!(tanh(x), x);
        }
        for i in 1..=2000 {
            let x = i as f32 * 1e-4; // up to 0.2, across the switch at 0.1
            let rel = (tanh(x) as f64 / (x as f64).tanh() - 1.0).abs();
            let bound = if x < TANH_SMALL { 1e-6 } else { 3e-6 };
            assert!(rel < bound, "relative error {rel} at {x}");
        }
    }

    #[test]
    fn tanh_edge_values() {
        assert_eq!(tanh(0.0), 0.0);
        assert!(tanh(-0.0).is_sign_negative());
        assert_eq!(tanh(f32::INFINITY), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert!(tanh(f32::NAN).is_nan());
        // Odd, and never outside [−1, 1].
        for x in [0.3f32, 1.7, 5.0, 9.99, 10.01] {
            assert_eq!(tanh(-x), -tanh(x));
            assert!(tanh(x).abs() <= 1.0);
        }
    }

    #[test]
    fn slice_form_agrees_with_scalar() {
        let mut v: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.013).collect();
        let want: Vec<f32> = v.iter().map(|&x| tanh(x)).collect();
        tanh_in_place(&mut v);
        assert_eq!(v, want);
    }
}
