//! The model initialisation of the DLG code, under which DLG's published reconstructions were made.

use anyhow::{bail, Result};
use rand::Rng;

use super::objective::tensor;
use crate::models::Model;
use crate::rng::{self, Stream};

/// Replaces every parameter by uniform values in `[-bound, bound]` from a generator seeded by `seed`: the
/// initialisation of the DLG code (`weights_init`: `uniform_(-0.5, 0.5)` on weights and biases), under which
/// gradients of the sigmoid LeNet are large and DLG's published reconstructions were made.
pub fn reinit_uniform(model: &Model, bound: f64, seed: u64) -> Result<()> {
    if !(bound.is_finite() && bound > 0.0) {
        bail!("the uniform initialisation bound must be a finite number > 0, got {bound}");
    }
    let mut rng = rng::rng(seed, Stream::UniformReinit);
    tch::no_grad(|| {
        for layer in model.layers() {
            for p in layer.tensors() {
                let values: Vec<f64> = (0..p.numel()).map(|_| rng.random_range(-bound..bound)).collect();
                let mut target = p.shallow_clone();
                target.copy_(&tensor(&values, &p.size(), p.kind()));
            }
        }
    });
    Ok(())
}
