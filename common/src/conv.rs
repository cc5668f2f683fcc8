//! CPU 2-D convolution for the actor's inference of convolutional torsos.
//!
//! The learner trains convolutional torsos with libtorch (`nn.Conv2d`, i.e.
//! `conv2d`); the actors, which do not link libtorch, run the same layers
//! here with ndarray. [`Conv2d`] matches PyTorch's semantics for square
//! kernels with the defaults `padding = 0` and `dilation = 1` and no groups:
//! the weight is `[out_channels, in_channels, k, k]`, the input and output are
//! NCHW, and an input of height `H` gives an output of height
//! `H' = (H - k) / stride + 1` (rounded down; rows and columns that do not fit
//! a whole kernel are dropped), the same for the width.
//!
//! For example the Nature DQN torso on a stack of four 84x84 frames
//! (`4x84x84`):
//!
//! | layer | filters | kernel | stride | output |
//! | --- | --- | --- | --- | --- |
//! | conv 1 | 32 | 8x8 | 4 | `32x20x20` |
//! | conv 2 | 64 | 4x4 | 2 | `64x9x9` |
//! | conv 3 | 64 | 3x3 | 1 | `64x7x7` |
//!
//! each followed by a ReLU; [`flatten`] then gives the `64 * 7 * 7 = 3136`
//! features of the linear layer that follows.
//!
//! [`Conv2d::forward`] uses im2col: for each observation it lays the input
//! patches out as a `[C*k*k, H'*W']` column matrix (one buffer reused across
//! the batch) and multiplies the weight, seen as `[O, C*k*k]`, by it in one
//! matrix product (ndarray's `general_mat_mul`, the `matrixmultiply` kernel
//! behind `.dot`, writing straight into the output). Single-threaded.
//!
//! Numerically each output is `bias + Σ w·x` summed in f32 in some order, so
//! it lies within `γ(n) · (|bias| + Σ |w|·|x|)` of the exact value, with
//! `n = C*k*k + 1`, `γ(n) = n·u / (1 − n·u)` and `u = 2⁻²⁴`; libtorch's result
//! obeys the same bound, though the two need not agree bit for bit.

use ndarray::linalg::general_mat_mul;
use ndarray::{s, Array1, Array2, Array4, ArrayView4};

/// A 2-D convolution layer with a square kernel, no padding and no dilation,
/// laid out as PyTorch's `nn.Conv2d`.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    /// `[out_channels, in_channels, k, k]`.
    pub weight: Array4<f32>,
    /// `[out_channels]`.
    pub bias: Array1<f32>,
    /// The step between kernel positions, the same along both axes.
    pub stride: usize,
}

impl Conv2d {
    /// Checks the shapes: a square kernel of side `k >= 1`, at least one input
    /// and one output channel, `bias.len() == out_channels` and `stride >= 1`.
    pub fn new(weight: Array4<f32>, bias: Array1<f32>, stride: usize) -> Result<Self, String> {
        let conv = Conv2d {
            weight,
            bias,
            stride,
        };
        conv.validate()?;
        Ok(conv)
    }

    fn validate(&self) -> Result<(), String> {
        let (o, c, kh, kw) = self.weight.dim();
        if kh != kw {
            return Err(format!(
                "conv2d: kernel must be square, weight is [{o}, {c}, {kh}, {kw}]"
            ));
        }
        if kh == 0 {
            return Err("conv2d: kernel size must be at least 1".to_string());
        }
        if o == 0 || c == 0 {
            return Err(format!(
                "conv2d: weight [{o}, {c}, {kh}, {kw}] has no output or no input channels"
            ));
        }
        if self.bias.len() != o {
            return Err(format!(
                "conv2d: bias has {} elements, expected out_channels = {o}",
                self.bias.len()
            ));
        }
        if self.stride == 0 {
            return Err("conv2d: stride must be at least 1".to_string());
        }
        Ok(())
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dim().0
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.weight.dim().1
    }

    /// Kernel side `k`.
    pub fn kernel_size(&self) -> usize {
        self.weight.dim().2
    }

    /// Output height and width for an `h x w` input:
    /// `((h - k) / stride + 1, (w - k) / stride + 1)`, or `None` when the
    /// input is smaller than the kernel (or the stride is 0).
    pub fn out_hw(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let k = self.kernel_size();
        if k == 0 || self.stride == 0 || h < k || w < k {
            return None;
        }
        Some(((h - k) / self.stride + 1, (w - k) / self.stride + 1))
    }

    /// Convolves an NCHW batch `[N, C, H, W]` into `[N, O, H', W']`, adds the
    /// bias and, if `relu`, applies `max(x, 0)` (NaN stays NaN, as in torch).
    ///
    /// The input may have any memory layout (a permuted or strided view).
    ///
    /// # Panics
    ///
    /// If the layer is invalid (its public fields were set to something
    /// [`Conv2d::new`] rejects), if `C` differs from the weight's
    /// `in_channels`, or if the input is smaller than the kernel.
    pub fn forward(&self, x: ArrayView4<f32>, relu: bool) -> Array4<f32> {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let (n, c, h, w) = x.dim();
        let (o, wc, k, _) = self.weight.dim();
        assert_eq!(
            c, wc,
            "conv2d: input has {c} channels, the weight expects {wc} (input [{n}, {c}, {h}, {w}])"
        );
        let (oh, ow) = self
            .out_hw(h, w)
            .unwrap_or_else(|| panic!("conv2d: input {h}x{w} is smaller than the {k}x{k} kernel"));
        let stride = self.stride;
        let ckk = c * k * k;
        let ohw = oh * ow;

        // Row-major `[O, C, k, k]` is `[O, C*k*k]` with row index
        // `(ci * k + ki) * k + kj`, matching the column matrix below.
        let w2 = self
            .weight
            .to_shape((o, ckk))
            .expect("conv2d: weight reshapes to [O, C*k*k]");
        let mut out = Array4::<f32>::zeros((n, o, oh, ow));
        let mut cols = Array2::<f32>::zeros((ckk, ohw));
        // Tap (ki, kj) reads rows ki, ki + stride, ..., ki + (oh - 1) * stride
        // (< ki + h_span) and likewise columns.
        let (h_span, w_span) = ((oh - 1) * stride + 1, (ow - 1) * stride + 1);
        for (xb, mut ob) in x.outer_iter().zip(out.outer_iter_mut()) {
            for ci in 0..c {
                for ki in 0..k {
                    for kj in 0..k {
                        let row = (ci * k + ki) * k + kj;
                        let patch =
                            xb.slice(s![ci, ki..ki + h_span;stride, kj..kj + w_span;stride]);
                        cols.row_mut(row)
                            .into_shape_with_order((oh, ow))
                            .expect("conv2d: column rows are contiguous")
                            .assign(&patch);
                    }
                }
            }
            let mut ob2 = ob
                .view_mut()
                .into_shape_with_order((o, ohw))
                .expect("conv2d: output is contiguous");
            for (mut r, &b) in ob2.outer_iter_mut().zip(self.bias.iter()) {
                r.fill(b);
            }
            // ob2 = 1 * w2 · cols + 1 * bias
            general_mat_mul(1.0, &w2, &cols, 1.0, &mut ob2);
        }
        if relu {
            out.mapv_inplace(|v| if v < 0.0 { 0.0 } else { v });
        }
        out
    }
}

/// `[N, C, H, W]` to `[N, C*H*W]` in PyTorch's `flatten(1)` order for NCHW
/// input: index `(c * H + h) * W + w`. No copy when `x` is in standard
/// (row-major) layout.
pub fn flatten(x: Array4<f32>) -> Array2<f32> {
    let (n, c, h, w) = x.dim();
    let x = if x.is_standard_layout() {
        x
    } else {
        x.as_standard_layout().into_owned()
    };
    x.into_shape_with_order((n, c * h * w))
        .expect("flatten: standard layout reshapes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{arr1, Array};
    use rand::{Rng, SeedableRng};
    use rand_pcg::Pcg64;

    const U: f64 = 1.0 / (1u64 << 24) as f64;

    fn gamma(n: usize) -> f64 {
        let nu = n as f64 * U;
        nu / (1.0 - nu)
    }

    fn random4(rng: &mut Pcg64, shape: (usize, usize, usize, usize)) -> Array4<f32> {
        Array::from_shape_simple_fn(shape, || rng.random_range(-1.0f32..=1.0))
    }

    fn random1(rng: &mut Pcg64, n: usize) -> Array1<f32> {
        Array::from_shape_simple_fn(n, || rng.random_range(-1.0f32..=1.0))
    }

    /// Direct convolution in f64: the exact value (to f64 rounding) and
    /// `|bias| + Σ |w|·|x|` for each output, independent of `Conv2d`.
    fn reference(
        weight: &Array4<f32>,
        bias: &Array1<f32>,
        stride: usize,
        x: &Array4<f32>,
    ) -> (Array4<f64>, Array4<f64>) {
        let (n, c, h, w) = x.dim();
        let (o, _, k, _) = weight.dim();
        let oh = (h - k) / stride + 1;
        let ow = (w - k) / stride + 1;
        let mut y = Array4::<f64>::zeros((n, o, oh, ow));
        let mut abs = Array4::<f64>::zeros((n, o, oh, ow));
        for b in 0..n {
            for oc in 0..o {
                for i in 0..oh {
                    for j in 0..ow {
                        let mut acc = f64::from(bias[oc]);
                        let mut acc_abs = f64::from(bias[oc]).abs();
                        for ci in 0..c {
                            for ki in 0..k {
                                for kj in 0..k {
                                    let wv = f64::from(weight[[oc, ci, ki, kj]]);
                                    let xv =
                                        f64::from(x[[b, ci, i * stride + ki, j * stride + kj]]);
                                    acc += wv * xv;
                                    acc_abs += (wv * xv).abs();
                                }
                            }
                        }
                        y[[b, oc, i, j]] = acc;
                        abs[[b, oc, i, j]] = acc_abs;
                    }
                }
            }
        }
        (y, abs)
    }

    /// Checks `got` against the reference of (`weight`, `bias`, `stride`)
    /// within the f32 bound; `Err` names the first output outside it.
    fn check_bound(
        got: &Array4<f32>,
        weight: &Array4<f32>,
        bias: &Array1<f32>,
        stride: usize,
        x: &Array4<f32>,
    ) -> Result<(), String> {
        let (want, abs) = reference(weight, bias, stride, x);
        if got.dim() != want.dim() {
            return Err(format!("shape {:?}, want {:?}", got.dim(), want.dim()));
        }
        let (_, c, k, _) = weight.dim();
        let g = gamma(c * k * k + 1);
        for ((idx, &gv), (&wv, &av)) in got.indexed_iter().zip(want.iter().zip(abs.iter())) {
            let err = (f64::from(gv) - wv).abs();
            let tol = g * av + 1e-30;
            if err > tol {
                return Err(format!(
                    "output {idx:?}: got {gv}, want {wv}, |err| {err:e} > tol {tol:e}"
                ));
            }
        }
        Ok(())
    }

    // (N, C, H, W, O, k, stride)
    const SHAPES: &[(usize, usize, usize, usize, usize, usize, usize)] = &[
        (1, 1, 5, 5, 2, 3, 1),
        (3, 1, 6, 4, 3, 2, 1),
        // (8 - 3) / 2 and (13 - 3) / 3 leave a remainder.
        (3, 3, 8, 13, 4, 3, 2),
        (1, 2, 13, 8, 5, 3, 3),
        // k == H (and == W), and k == H < W.
        (3, 2, 5, 5, 3, 5, 1),
        (1, 3, 4, 9, 2, 4, 2),
        // 1x1 kernel with a stride.
        (3, 4, 7, 6, 3, 1, 2),
        (3, 2, 9, 6, 2, 2, 3),
        // The first two Nature CNN layers.
        (1, 4, 84, 84, 32, 8, 4),
        (1, 32, 20, 20, 64, 4, 2),
    ];

    #[test]
    fn matches_f64_reference_within_f32_bound() {
        let mut rng = Pcg64::seed_from_u64(0x_c0de_c0de);
        for &(n, c, h, w, o, k, stride) in SHAPES {
            let weight = random4(&mut rng, (o, c, k, k));
            let bias = random1(&mut rng, o);
            let x = random4(&mut rng, (n, c, h, w));
            let conv = Conv2d::new(weight.clone(), bias.clone(), stride).unwrap();
            let got = conv.forward(x.view(), false);
            let (oh, ow) = conv.out_hw(h, w).unwrap();
            assert_eq!(got.dim(), (n, o, oh, ow));
            assert_eq!(oh, (h - k) / stride + 1);
            check_bound(&got, &weight, &bias, stride, &x)
                .unwrap_or_else(|e| panic!("shape {:?}: {e}", (n, c, h, w, o, k, stride)));
        }
    }

    #[test]
    fn bound_check_is_not_vacuous() {
        let mut rng = Pcg64::seed_from_u64(7);
        for &(n, c, h, w, o, k, stride) in SHAPES {
            let shape = (n, c, h, w, o, k, stride);
            let weight = random4(&mut rng, (o, c, k, k));
            let bias = random1(&mut rng, o);
            let x = random4(&mut rng, (n, c, h, w));
            let run = |weight: Array4<f32>, bias: Array1<f32>| {
                Conv2d::new(weight, bias, stride)
                    .unwrap()
                    .forward(x.view(), false)
            };
            // Every tap of the last filter off by 1e-3: the output must fall
            // outside the bound, for every shape.
            let mut wrong = weight.clone();
            wrong
                .slice_mut(s![o - 1, .., .., ..])
                .mapv_inplace(|v| v + 1e-3);
            let got = run(wrong, bias.clone());
            assert!(
                check_bound(&got, &weight, &bias, stride, &x).is_err(),
                "shape {shape:?}: a perturbed filter passed the bound"
            );
            // A single tap or the bias off by 1e-3 must fail too, where the
            // worst-case bound is below 1e-3: up to about 128 terms of |w·x|
            // <= 1 (γ(128) * 128 ≈ 1e-3). With the Nature layers' 257 and
            // 513 terms the bound is a few 1e-3 and may cover it.
            if c * k * k < 128 {
                let mut wrong = weight.clone();
                wrong[[o - 1, c - 1, k / 2, k - 1]] += 1e-3;
                let got = run(wrong, bias.clone());
                assert!(
                    check_bound(&got, &weight, &bias, stride, &x).is_err(),
                    "shape {shape:?}: a perturbed weight passed the bound"
                );
                let mut wrong_bias = bias.clone();
                wrong_bias[o - 1] -= 1e-3;
                let got = run(weight.clone(), wrong_bias);
                assert!(
                    check_bound(&got, &weight, &bias, stride, &x).is_err(),
                    "shape {shape:?}: a perturbed bias passed the bound"
                );
            }
        }
    }

    #[test]
    fn non_standard_input_layout() {
        let mut rng = Pcg64::seed_from_u64(11);
        let (n, c, h, w) = (3, 3, 9, 7);
        let weight = random4(&mut rng, (4, c, 3, 3));
        let bias = random1(&mut rng, 4);
        let conv = Conv2d::new(weight.clone(), bias.clone(), 2).unwrap();
        // NHWC storage seen as NCHW.
        let nhwc = random4(&mut rng, (n, h, w, c));
        let x = nhwc.view().permuted_axes([0, 3, 1, 2]);
        assert!(!x.is_standard_layout());
        let got = conv.forward(x, false);
        let x_std = x.as_standard_layout().into_owned();
        check_bound(&got, &weight, &bias, 2, &x_std).unwrap();
        assert_eq!(got, conv.forward(x_std.view(), false));
        // The same weight in a non-standard layout (the fields are public).
        let storage = weight
            .clone()
            .permuted_axes([3, 2, 1, 0])
            .as_standard_layout()
            .into_owned();
        let odd_weight = storage.permuted_axes([3, 2, 1, 0]);
        assert!(!odd_weight.is_standard_layout());
        assert_eq!(odd_weight, weight);
        let odd = Conv2d {
            weight: odd_weight,
            bias,
            stride: 2,
        };
        assert_eq!(odd.forward(x, false), got);
    }

    #[test]
    fn hand_worked_stride_1() {
        // x = [[1,2,3],[4,5,6],[7,8,9]], kernel [[1,2],[3,4]], bias 0.5:
        // (0,0) 1+4+12+20 = 37, (0,1) 2+6+15+24 = 47,
        // (1,0) 4+10+21+32 = 67, (1,1) 5+12+24+36 = 77, each + 0.5.
        let x = Array::from_shape_vec((1, 1, 3, 3), (1..=9).map(|v| v as f32).collect()).unwrap();
        let weight = Array::from_shape_vec((1, 1, 2, 2), vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let conv = Conv2d::new(weight, arr1(&[0.5]), 1).unwrap();
        let y = conv.forward(x.view(), false);
        assert_eq!(y.dim(), (1, 1, 2, 2));
        assert_eq!(
            y.iter().copied().collect::<Vec<_>>(),
            [37.5, 47.5, 67.5, 77.5]
        );
    }

    #[test]
    fn hand_worked_stride_2() {
        // x[i][j] = 5i + j on 5x5 (and a sixth row that no kernel reaches:
        // (6 - 3) / 2 + 1 = 2). Channel 0: all-ones 3x3, bias 0, so
        // 9 * centre; channel 1: centre tap only, bias -1. Windows start at
        // rows/cols 0 and 2; centres 6, 8, 16, 18.
        let x = Array::from_shape_fn((1, 1, 6, 5), |(_, _, i, j)| (5 * i + j) as f32);
        let mut weight = Array4::<f32>::zeros((2, 1, 3, 3));
        weight.slice_mut(s![0, 0, .., ..]).fill(1.0);
        weight[[1, 0, 1, 1]] = 1.0;
        let conv = Conv2d::new(weight, arr1(&[0.0, -1.0]), 2).unwrap();
        assert_eq!(conv.out_hw(6, 5), Some((2, 2)));
        let y = conv.forward(x.view(), false);
        assert_eq!(y.dim(), (1, 2, 2, 2));
        let ch0: Vec<f32> = y.slice(s![0, 0, .., ..]).iter().copied().collect();
        let ch1: Vec<f32> = y.slice(s![0, 1, .., ..]).iter().copied().collect();
        assert_eq!(ch0, [54.0, 72.0, 144.0, 162.0]);
        assert_eq!(ch1, [5.0, 7.0, 15.0, 17.0]);
    }

    #[test]
    fn hand_worked_two_channels_batch() {
        // 1x1 kernel [2, 0.5], bias 1: 2*a + 0.5*b + 1 over two observations.
        let x = Array::from_shape_vec(
            (2, 2, 2, 2),
            vec![
                1.0, 2.0, 3.0, 4.0, 10.0, 20.0, 30.0, 40.0, // observation 0
                -1.0, 0.0, 1.0, 2.0, 2.0, 4.0, 6.0, 8.0, // observation 1
            ],
        )
        .unwrap();
        let weight = Array::from_shape_vec((1, 2, 1, 1), vec![2.0, 0.5]).unwrap();
        let conv = Conv2d::new(weight, arr1(&[1.0]), 1).unwrap();
        let y = conv.forward(x.view(), false);
        assert_eq!(y.dim(), (2, 1, 2, 2));
        let got: Vec<f32> = y.iter().copied().collect();
        assert_eq!(got, [8.0, 15.0, 22.0, 29.0, 0.0, 3.0, 6.0, 9.0]);
    }

    #[test]
    fn relu_only_when_asked() {
        // Kernel [[1, -1], [0, 0]], bias -0.5 on two 2x3 observations.
        let x = Array::from_shape_vec(
            (2, 1, 2, 3),
            vec![0.0, 1.0, 3.0, 0.0, 0.0, 0.0, 4.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        )
        .unwrap();
        let weight = Array::from_shape_vec((1, 1, 2, 2), vec![1.0, -1.0, 0.0, 0.0]).unwrap();
        let conv = Conv2d::new(weight, arr1(&[-0.5]), 1).unwrap();
        // Observation 0: 0-1-0.5 = -1.5, 1-3-0.5 = -2.5.
        // Observation 1: 4-1-0.5 = 2.5, 1-0-0.5 = 0.5.
        let plain: Vec<f32> = conv.forward(x.view(), false).iter().copied().collect();
        assert_eq!(plain, [-1.5, -2.5, 2.5, 0.5]);
        let relu: Vec<f32> = conv.forward(x.view(), true).iter().copied().collect();
        assert_eq!(relu, [0.0, 0.0, 2.5, 0.5]);
    }

    #[test]
    fn nature_cnn_shapes() {
        let mut rng = Pcg64::seed_from_u64(3);
        let layers = [(32, 4, 8, 4), (64, 32, 4, 2), (64, 64, 3, 1)];
        let convs: Vec<Conv2d> = layers
            .iter()
            .map(|&(o, c, k, s)| {
                let weight = random4(&mut rng, (o, c, k, k)) * 0.1;
                Conv2d::new(weight, random1(&mut rng, o), s).unwrap()
            })
            .collect();
        assert_eq!(convs[0].out_hw(84, 84), Some((20, 20)));
        assert_eq!(convs[1].out_hw(20, 20), Some((9, 9)));
        assert_eq!(convs[2].out_hw(9, 9), Some((7, 7)));
        let mut x = random4(&mut rng, (2, 4, 84, 84));
        let want = [(2, 32, 20, 20), (2, 64, 9, 9), (2, 64, 7, 7)];
        for (conv, want) in convs.iter().zip(want) {
            x = conv.forward(x.view(), true);
            assert_eq!(x.dim(), want);
            assert!(x.iter().all(|&v| v >= 0.0));
        }
        let flat = flatten(x);
        assert_eq!(flat.dim(), (2, 3136));
    }

    #[test]
    fn out_hw_and_new_validation() {
        let conv = Conv2d::new(Array4::zeros((2, 3, 4, 4)), Array1::zeros(2), 2).unwrap();
        assert_eq!(conv.in_channels(), 3);
        assert_eq!(conv.out_channels(), 2);
        assert_eq!(conv.kernel_size(), 4);
        assert_eq!(conv.out_hw(3, 10), None);
        assert_eq!(conv.out_hw(10, 3), None);
        assert_eq!(conv.out_hw(4, 4), Some((1, 1)));
        assert_eq!(conv.out_hw(5, 4), Some((1, 1)));
        assert_eq!(conv.out_hw(6, 11), Some((2, 4)));

        let err = Conv2d::new(Array4::zeros((2, 3, 4, 4)), Array1::zeros(3), 1).unwrap_err();
        assert!(err.contains("bias"), "{err}");
        assert!(Conv2d::new(Array4::zeros((2, 3, 4, 4)), Array1::zeros(2), 0).is_err());
        assert!(Conv2d::new(Array4::zeros((2, 3, 0, 0)), Array1::zeros(2), 1).is_err());
        assert!(Conv2d::new(Array4::zeros((2, 3, 3, 4)), Array1::zeros(2), 1).is_err());
        assert!(Conv2d::new(Array4::zeros((2, 0, 3, 3)), Array1::zeros(2), 1).is_err());
    }

    #[test]
    #[should_panic(expected = "input has 2 channels, the weight expects 3")]
    fn forward_rejects_wrong_channel_count() {
        let conv = Conv2d::new(Array4::zeros((2, 3, 2, 2)), Array1::zeros(2), 1).unwrap();
        conv.forward(Array4::zeros((1, 2, 4, 4)).view(), false);
    }

    #[test]
    #[should_panic(expected = "smaller than the 3x3 kernel")]
    fn forward_rejects_small_input() {
        let conv = Conv2d::new(Array4::zeros((1, 1, 3, 3)), Array1::zeros(1), 1).unwrap();
        conv.forward(Array4::zeros((1, 1, 2, 5)).view(), false);
    }

    #[test]
    fn flatten_order_is_c_h_w() {
        let (n, c, h, w) = (2, 3, 4, 5);
        let x = Array::from_shape_fn((n, c, h, w), |(b, ci, i, j)| {
            (b * 1000 + ci * 100 + i * 10 + j) as f32
        });
        let flat = flatten(x.clone());
        assert_eq!(flat.dim(), (2, 60));
        assert_eq!(flat[[0, 0]], 0.0);
        assert_eq!(flat[[0, 1]], 1.0); // w first
        assert_eq!(flat[[0, 5]], 10.0); // then h
        assert_eq!(flat[[0, 20]], 100.0); // then c
        assert_eq!(flat[[1, 59]], 1234.0);
        assert_eq!(flat[[1, 2 * 20 + 3 * 5 + 4]], 1234.0);
        for ((b, ci, i, j), &v) in x.indexed_iter() {
            assert_eq!(flat[[b, (ci * h + i) * w + j]], v);
        }
        // The same order from a non-standard (NHWC-stored) layout.
        let nhwc = x
            .clone()
            .permuted_axes([0, 2, 3, 1])
            .as_standard_layout()
            .into_owned();
        let nchw = nhwc.permuted_axes([0, 3, 1, 2]);
        assert!(!nchw.is_standard_layout());
        assert_eq!(flatten(nchw), flat);
    }
}
