//! The optimiser of Inverting Gradients: PyTorch's Adam (betas 0.9, 0.999, eps 1e-8) stepping along the *sign* of
//! the input's gradient (the label logits, when optimised, along their gradient), the input projected into the data
//! range after every step, and the step size divided by 10 at 3/8, 5/8 and 7/8 of the iterations.

use tch::Tensor;

/// Adam moments of one tensor.
struct Adam {
    m: Tensor,
    v: Tensor,
}

impl Adam {
    fn new(like: &Tensor) -> Self {
        Adam { m: like.zeros_like(), v: like.zeros_like() }
    }

    /// One step of PyTorch's Adam (betas 0.9, 0.999, eps 1e-8) at step number `t` (from 1).
    fn step(&mut self, x: &Tensor, g: &Tensor, lr: f64, t: i32) -> Tensor {
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        self.m = &self.m * b1 + g * (1.0 - b1);
        self.v = &self.v * b2 + g.square() * (1.0 - b2);
        let c1 = 1.0 - f64::powi(b1, t);
        let c2 = 1.0 - f64::powi(b2, t);
        let denom = (&self.v / c2).sqrt() + eps;
        x - (&self.m / denom) * (lr / c1)
    }
}

/// Signed Adam on an input boxed in a range and, optionally, label logits.
pub struct SignedAdam {
    x: Adam,
    z: Option<Adam>,
    lr: f64,
    milestones: [usize; 3],
    range: (f64, f64),
}

impl SignedAdam {
    /// For `iterations` steps of size `lr` (before the decay) on the input `x`, kept in `range`, and the logits `z`.
    pub fn new(x: &Tensor, z: Option<&Tensor>, lr: f64, iterations: usize, range: (f64, f64)) -> Self {
        let n = iterations;
        let milestones = [n * 3 / 8, n * 5 / 8, n * 7 / 8];
        SignedAdam { x: Adam::new(x), z: z.map(Adam::new), lr, milestones, range }
    }

    /// Step `it` (from 0) with the gradients `gx` of the input and `gz` of the logits.
    pub fn step(&mut self, it: usize, x: &mut Tensor, gx: &Tensor, z: Option<&mut Tensor>, gz: Option<&Tensor>) {
        let lr = self.lr * 0.1f64.powi(self.milestones.iter().filter(|&&m| it >= m).count() as i32);
        let (lo, hi) = self.range;
        tch::no_grad(|| {
            *x = self.x.step(x, &gx.sign(), lr, it as i32 + 1).clamp(lo, hi);
            if let (Some(z), Some(adam), Some(gz)) = (z, self.z.as_mut(), gz) {
                *z = adam.step(z, gz, lr, it as i32 + 1);
            }
        });
    }
}
