//! Adam (Kingma & Ba 2015, arXiv:1412.6980) with global gradient-norm clipping.
//!
//! Written out rather than taken from libtorch's C++ optimizer so that its
//! whole state (moments and step count) can be checkpointed and restored
//! exactly.

use tch::{Kind, Tensor};

/// Adam state for one parameter tensor (the policy keeps all its parameters
/// in one flat tensor; see [`crate::model::Policy::trainable`]).
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Number of steps taken.
    pub step: u64,
    /// First and second moments, shaped like the parameter.
    pub m: Tensor,
    pub v: Tensor,
}

impl Adam {
    pub fn new(param: &Tensor, eps: f64) -> Self {
        Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps,
            step: 0,
            m: param.zeros_like(),
            v: param.zeros_like(),
        }
    }

    /// Scales the gradient so its L2 norm is at most `max_norm`; returns the
    /// norm before clipping.
    pub fn clip_grad_norm(param: &Tensor, max_norm: f64) -> f64 {
        tch::no_grad(|| {
            let mut g = param.grad();
            if !g.defined() {
                return 0.0;
            }
            let norm = g.square().sum(Kind::Float).sqrt().double_value(&[]);
            let scale = max_norm / (norm + 1e-6);
            if scale < 1.0 {
                let _ = g.g_mul_scalar_(scale);
            }
            norm
        })
    }

    /// One Adam step with learning rate `lr` on `param` (the one given at construction).
    pub fn step(&mut self, param: &Tensor, lr: f64) {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - self.beta1.powi(t);
        let bc2 = 1.0 - self.beta2.powi(t);
        tch::no_grad(|| {
            let g = param.grad();
            if !g.defined() {
                return;
            }
            let (m, v) = (&mut self.m, &mut self.v);
            let _ = m.g_mul_scalar_(self.beta1);
            let _ = m.g_add_(&(&g * (1.0 - self.beta1)));
            let _ = v.g_mul_scalar_(self.beta2);
            let _ = v.g_add_(&(g.square() * (1.0 - self.beta2)));
            let denom = (v.sqrt() / bc2.sqrt()) + self.eps;
            let update = m.divide(&denom) * (lr / bc1);
            let mut p = param.shallow_clone();
            let _ = p.g_sub_(&update);
        });
    }

    pub fn zero_grad(param: &Tensor) {
        let mut g = param.grad();
        if g.defined() {
            let _ = g.zero_();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;
    use tch::Device;

    /// Our Adam against libtorch's own `torch.optim.Adam` on the same
    /// quadratic: the parameters must follow the same path.
    #[test]
    fn matches_libtorch_adam() {
        let target = Tensor::from_slice(&[1.0f32, -2.0, 3.0]);
        let loss_of =
            |p: &Tensor| (p - &target).square().sum(Kind::Float) + p.sin().sum(Kind::Float);

        let ours = Tensor::from_slice(&[0.5f32, 0.5, -0.5]).set_requires_grad(true);
        let mut adam = Adam::new(&ours, 1e-5);

        let vs = tch::nn::VarStore::new(Device::Cpu);
        let theirs = vs
            .root()
            .var_copy("p", &Tensor::from_slice(&[0.5f32, 0.5, -0.5]));
        let mut opt = tch::nn::Adam {
            beta1: 0.9,
            beta2: 0.999,
            wd: 0.0,
            eps: 1e-5,
            amsgrad: false,
        }
        .build(&vs, 0.05)
        .unwrap();
        for _ in 0..50 {
            Adam::zero_grad(&ours);
            loss_of(&ours).backward();
            adam.step(&ours, 0.05);
            opt.zero_grad();
            loss_of(&theirs).backward();
            opt.step();
        }
        let diff = (&ours - &theirs).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "diff {diff}: {ours} vs {theirs}");
        assert_eq!(adam.step, 50);
    }

    #[test]
    fn first_step_moves_each_parameter_by_lr() {
        // m̂ = g, v̂ = g² on the first step, so the update is lr·g/(|g|+eps).
        let p = Tensor::from_slice(&[1.0f32, 1.0]).set_requires_grad(true);
        let mut adam = Adam::new(&p, 1e-8);
        (&p * Tensor::from_slice(&[3.0f32, -0.5]))
            .sum(Kind::Float)
            .backward();
        adam.step(&p, 0.1);
        let got = Vec::<f32>::try_from(&p.detach()).unwrap();
        assert!(
            (got[0] - 0.9).abs() < 1e-6 && (got[1] - 1.1).abs() < 1e-6,
            "{got:?}"
        );
    }

    #[test]
    fn grad_norm_clipping_scales_to_the_limit() {
        let p = Tensor::from_slice(&[0.0f32, 0.0]).set_requires_grad(true);
        (&p * Tensor::from_slice(&[3.0f32, 4.0]))
            .sum(Kind::Float)
            .backward();
        let norm = Adam::clip_grad_norm(&p, 1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        let g = Vec::<f32>::try_from(&p.grad()).unwrap();
        assert!(
            (g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5,
            "{g:?}"
        );
        // under the limit: untouched
        let norm = Adam::clip_grad_norm(&p, 10.0);
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
