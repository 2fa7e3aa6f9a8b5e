//! The vector operations L-BFGS needs, for flat `f64` vectors (the attacks) and libtorch tensors (the logistic
//! probe). Each implementation keeps the arithmetic of the code it replaced (the same products, sums and their
//! order), so that results are reproducible bit for bit.

use tch::{Kind, Tensor};

/// A point, gradient or direction of an L-BFGS run.
pub trait Vector: Sized {
    /// A deep copy: in-place operations on it leave `self` alone.
    fn duplicate(&self) -> Self;
    /// Zeros of the same size.
    fn zeros(&self) -> Self;
    /// The inner product.
    fn inner(&self, other: &Self) -> f64;
    /// The largest absolute entry.
    fn max_abs(&self) -> f64;
    /// The sum of the absolute entries.
    fn l1_norm(&self) -> f64;
    /// Whether every entry is finite.
    fn all_finite(&self) -> bool;
    /// `-self`.
    fn negated(&self) -> Self;
    /// `self * a`.
    fn scaled(&self, a: f64) -> Self;
    /// `self + t * d`.
    fn plus_scaled(&self, t: f64, d: &Self) -> Self;
    /// `self - other`.
    fn minus(&self, other: &Self) -> Self;
    /// `self *= a`.
    fn scale(&mut self, a: f64);
    /// `self += a * x`.
    fn axpy(&mut self, a: f64, x: &Self);
}

impl Vector for Vec<f64> {
    fn duplicate(&self) -> Self {
        self.clone()
    }

    fn zeros(&self) -> Self {
        vec![0.0; self.len()]
    }

    fn inner(&self, other: &Self) -> f64 {
        // Four accumulators let the compiler vectorise the reduction.
        let (a, b) = (self, other);
        let mut acc = [0.0f64; 4];
        let chunks = a.len() / 4;
        for i in 0..chunks {
            for k in 0..4 {
                acc[k] += a[4 * i + k] * b[4 * i + k];
            }
        }
        let mut sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        for i in 4 * chunks..a.len() {
            sum += a[i] * b[i];
        }
        sum
    }

    fn max_abs(&self) -> f64 {
        self.iter().fold(0.0f64, |m, v| m.max(v.abs()))
    }

    fn l1_norm(&self) -> f64 {
        self.iter().map(|v| v.abs()).sum()
    }

    fn all_finite(&self) -> bool {
        self.iter().all(|v| v.is_finite())
    }

    fn negated(&self) -> Self {
        self.iter().map(|v| -v).collect()
    }

    fn scaled(&self, a: f64) -> Self {
        self.iter().map(|v| v * a).collect()
    }

    fn plus_scaled(&self, t: f64, d: &Self) -> Self {
        self.iter().zip(d).map(|(x, d)| x + t * d).collect()
    }

    fn minus(&self, other: &Self) -> Self {
        self.iter().zip(other).map(|(a, b)| a - b).collect()
    }

    fn scale(&mut self, a: f64) {
        for v in self.iter_mut() {
            *v *= a;
        }
    }

    fn axpy(&mut self, a: f64, x: &Self) {
        for (yi, xi) in self.iter_mut().zip(x) {
            *yi += a * xi;
        }
    }
}

/// Flat tensors; each operation is one libtorch kernel (reductions in double precision).
impl Vector for Tensor {
    fn duplicate(&self) -> Self {
        self.copy()
    }

    fn zeros(&self) -> Self {
        self.zeros_like()
    }

    fn inner(&self, other: &Self) -> f64 {
        self.dot(other).double_value(&[])
    }

    fn max_abs(&self) -> f64 {
        self.abs().max().double_value(&[])
    }

    fn l1_norm(&self) -> f64 {
        self.abs().sum(Kind::Double).double_value(&[])
    }

    fn all_finite(&self) -> bool {
        self.isfinite().all().int64_value(&[]) == 1
    }

    fn negated(&self) -> Self {
        -self
    }

    fn scaled(&self, a: f64) -> Self {
        self * a
    }

    fn plus_scaled(&self, t: f64, d: &Self) -> Self {
        self + d * t
    }

    fn minus(&self, other: &Self) -> Self {
        self - other
    }

    fn scale(&mut self, a: f64) {
        *self *= a;
    }

    fn axpy(&mut self, a: f64, x: &Self) {
        *self += x * a;
    }
}
