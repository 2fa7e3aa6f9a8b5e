//! Closed-form recovery where it exists: the input of a fully connected layer from its weight and bias gradients.
//!
//! For `y = W x + b` and one sample, `dL/dW = delta x^T` and `dL/db = delta`: every row of the weight gradient is the
//! input scaled by that row's bias gradient (Phong et al., 2017; the first step of analytic attacks such as
//! Fowl et al.'s "Robbing the Fed"). The least-squares solution over all rows, `x = W_g^T b_g / |b_g|^2`, uses every
//! row at once. An update that averages several samples (batch size > 1), or a noised one, makes `W_g` a sum of
//! several outer products: it is then not rank one, and the recovery says so instead of returning a blend.

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::adam::SignedAdam;
use crate::models::{Forward, Model};

/// Largest relative residual `|W_g - b_g x^T| / |W_g|` at which the weight gradient counts as one outer product.
/// At batch size 1 the residual is rounding (about 1e-7 in f32); two samples give residuals of order 0.1 to 1.
pub const RANK_ONE_TOLERANCE: f64 = 1e-3;

/// The input of a fully connected layer recovered from one sample's gradients.
#[derive(Debug)]
pub struct LinearRecovery {
    /// The recovered input, (in_features,) f64.
    pub input: Tensor,
    /// `|W_g - b_g x^T| / |W_g|`: how far the weight gradient is from one outer product.
    pub residual: f64,
}

/// Recovers a fully connected layer's input from its weight gradient `weight_grad` (out, in) and bias gradient
/// `bias_grad` (out,) of a single sample. Errors, with the reason, when the gradients cannot come from one sample
/// (all bias gradients zero, or a weight gradient that is not rank one: a batch, noise, pruning or quantisation).
pub fn linear_layer_input(weight_grad: &Tensor, bias_grad: &Tensor) -> Result<LinearRecovery> {
    let (wg, bg) = (weight_grad.to_kind(Kind::Double), bias_grad.to_kind(Kind::Double));
    if wg.dim() != 2 || bg.dim() != 1 || wg.size()[0] != bg.size()[0] {
        bail!(
            "analytic recovery: expected a weight gradient (out, in) and a bias gradient (out,), got {:?} and {:?}",
            wg.size(),
            bg.size()
        );
    }
    let b_norm2 = bg.square().sum(Kind::Double).double_value(&[]);
    let w_norm = wg.square().sum(Kind::Double).double_value(&[]).sqrt();
    // Written so that NaN norms take this branch too.
    if b_norm2.is_nan() || w_norm.is_nan() || b_norm2 <= 0.0 || w_norm <= 0.0 {
        bail!(
            "analytic recovery: the layer's gradient is zero, so it carries no input (the sample's loss is flat there)"
        );
    }
    let (out_features, in_features) = (wg.size()[0], wg.size()[1]);
    let flat = Tensor::cat(&[wg.flatten(0, -1), bg], 0).unsqueeze(0);
    let (inputs, residuals) = linear_layer_inputs(&flat, in_features, out_features)?;
    let (input, residual) = (inputs.squeeze_dim(0), residuals[0]);
    if residual.is_nan() || residual > RANK_ONE_TOLERANCE {
        bail!(
            "analytic recovery: the weight gradient is not one outer product (relative residual {residual:.3}, \
             tolerance {RANK_ONE_TOLERANCE}); the update averages several samples or was noised, pruned or \
             quantised, and closed-form recovery needs one clean sample"
        );
    }
    Ok(LinearRecovery { input, residual })
}

/// The least-squares inputs of a fully connected layer for many shared updates at once: row i of `flat`
/// (N, out * in + out; the weight gradient row-major, then the bias gradient) gives `x_i = W_i^T b_i / |b_i|^2`.
///
/// Unlike [`linear_layer_input`] nothing is refused: an attacker applies the formula to whatever it receives, and
/// the family built on it (`measure::families`' `analytic`) measures what that is worth. An update whose bias
/// gradient is zero gives the zero vector. Returns the inputs (N, in) f64 and each update's relative residual
/// `|W_i - b_i x_i^T| / |W_i|` (0 for one clean sample, NaN for a zero weight gradient).
pub fn linear_layer_inputs(flat: &Tensor, in_features: i64, out_features: i64) -> Result<(Tensor, Vec<f64>)> {
    let (n, width) = (flat.size()[0], flat.size()[1]);
    if width != out_features * in_features + out_features {
        bail!(
            "analytic recovery: a linear layer {in_features} -> {out_features} has {} gradient values, got {width}",
            out_features * in_features + out_features
        );
    }
    let mut inputs = Vec::new();
    let mut residuals = Vec::with_capacity(n as usize);
    // In chunks: an f64 copy of a large layer's gradients for every update at once is not needed.
    for start in (0..n).step_by(64) {
        let rows = flat.narrow(0, start, 64.min(n - start)).to_kind(Kind::Double);
        let m = rows.size()[0];
        let w = rows.narrow(1, 0, out_features * in_features).view([m, out_features, in_features]);
        let b = rows.narrow(1, out_features * in_features, out_features);
        let b_norm2 = b.square().sum_dim_intlist(1, true, Kind::Double);
        let x = w.transpose(1, 2).matmul(&b.unsqueeze(2)).squeeze_dim(2) / b_norm2.clamp_min(1e-300);
        let x = x.where_self(&b_norm2.gt(0.0), &x.zeros_like());
        let w_norm = w.square().sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Double).sqrt();
        let gap = (&w - b.unsqueeze(2) * x.unsqueeze(1))
            .square()
            .sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Double)
            .sqrt();
        residuals.extend(Vec::<f64>::try_from(gap / w_norm)?);
        inputs.push(x);
    }
    Ok((Tensor::cat(&inputs, 0), residuals))
}

/// How a layer's recovered input is carried back to the model's input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Inversion {
    /// Steps of signed Adam (the optimiser of Inverting Gradients, step size divided by 10 at 3/8, 5/8, 7/8).
    pub iterations: usize,
    pub lr: f64,
    /// The box the input is kept in (images: [0, 1]).
    pub range: (f64, f64),
}

impl Default for Inversion {
    fn default() -> Self {
        Inversion { iterations: 200, lr: 0.1, range: (0.0, 1.0) }
    }
}

/// The layer input of `layer` that the model computes for inputs `x` (N, ...), flattened per sample.
fn layer_input(model: &Model, layer: usize, x: &Tensor) -> Result<Tensor> {
    let mut fwd = Forward::recording(false);
    let _ = model.forward(x, &mut fwd);
    let records = fwd.records.take().unwrap_or_default();
    let record = records.into_iter().find(|r| r.layer == layer);
    let record = record.with_context(|| format!("layer {} recorded no input", model.layers()[layer].name))?;
    Ok(record.input.flatten(1, -1))
}

/// Whether the input of `layer` is the model's input itself (an MLP's first layer): then a recovered layer input
/// is already the reconstruction.
pub fn layer_reads_the_input(model: &Model, layer: usize, input_shape: &[i64]) -> Result<bool> {
    let mut shape = vec![2];
    shape.extend_from_slice(input_shape);
    // Distinct values without a random draw (libtorch's global generator is not ours to move).
    let numel: i64 = shape.iter().product();
    let x = (Tensor::arange(numel, (model.kind(), tch::Device::Cpu)) / numel as f64).reshape(&shape);
    let h = tch::no_grad(|| layer_input(model, layer, &x))?;
    Ok(h.size() == x.flatten(1, -1).size() && bool::try_from(h.eq_tensor(&x.flatten(1, -1)).all())?)
}

/// Inputs whose activations at the input of `layer` match `targets` (N, in): signed Adam on the squared distance,
/// from the middle of the range, kept in the range, for every sample at once. Each sample's loss depends on its
/// own input only (the model runs in evaluation mode, without batch statistics) and Adam works per coordinate,
/// so inverting a batch equals inverting its samples one at a time. `input_shape`: one sample's shape, e.g.
/// [1, 28, 28]. Returns (N, ...) in the model's precision.
pub fn invert_layer_input(
    model: &Model,
    layer: usize,
    targets: &Tensor,
    input_shape: &[i64],
    inversion: &Inversion,
) -> Result<Tensor> {
    let n = targets.size()[0];
    let mut shape = vec![n];
    shape.extend_from_slice(input_shape);
    let (lo, hi) = inversion.range;
    let targets = targets.to_kind(model.kind());
    let mut x = Tensor::full(&shape, (lo + hi) / 2.0, (model.kind(), tch::Device::Cpu));
    let mut adam = SignedAdam::new(&x, None, inversion.lr, inversion.iterations, inversion.range);
    for it in 0..inversion.iterations {
        let xg = x.detach().set_requires_grad(true);
        let h = layer_input(model, layer, &xg)?;
        let loss = (h - &targets).square().sum(model.kind());
        let grad = Tensor::run_backward(&[&loss], &[&xg], false, false).remove(0);
        let mut next = xg.detach();
        adam.step(it, &mut next, &grad, None, None);
        x = next;
    }
    Ok(x.detach())
}
