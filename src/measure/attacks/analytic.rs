//! Closed-form recovery where it exists: the input of a fully connected layer from its weight and bias gradients.
//!
//! For `y = W x + b` and one sample, `dL/dW = delta x^T` and `dL/db = delta`: every row of the weight gradient is the
//! input scaled by that row's bias gradient (Phong et al., 2017; the first step of analytic attacks such as
//! Fowl et al.'s "Robbing the Fed"). The least-squares solution over all rows, `x = W_g^T b_g / |b_g|^2`, uses every
//! row at once. An update that averages several samples (batch size > 1), or a noised one, makes `W_g` a sum of
//! several outer products: it is then not rank one, and the recovery says so instead of returning a blend.

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

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
    let input = wg.tr().matmul(&bg) / b_norm2;
    let residual =
        (&wg - bg.unsqueeze(1) * input.unsqueeze(0)).square().sum(Kind::Double).double_value(&[]).sqrt() / w_norm;
    if residual.is_nan() || residual > RANK_ONE_TOLERANCE {
        bail!(
            "analytic recovery: the weight gradient is not one outer product (relative residual {residual:.3}, \
             tolerance {RANK_ONE_TOLERANCE}); the update averages several samples or was noised, pruned or \
             quantised, and closed-form recovery needs one clean sample"
        );
    }
    Ok(LinearRecovery { input, residual })
}
