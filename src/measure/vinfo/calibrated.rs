//! The calibration of a model-backed family on continuous targets: the target predicted from a reconstruction of
//! the same shape (an attack's estimate of the victim's input) by an affine map per dimension, with the Gaussian
//! likelihood of the linear family.
//!
//! A reconstruction algorithm R is a fixed function of the shared update and the model; the family is
//! `{ y ~ N(a + b * R(g), diag(v)) }`. Its slopes and intercepts are fitted on the training part by least squares,
//! dimension by dimension; the variance, the choice between per-dimension slopes and one shared slope, and the
//! constant predictor (no slope, PVI 0) on the validation part, the way held-out victims are scored
//! ([`GaussianValidation`]). Predictions are clipped to the targets' range, what is clipped away added to their
//! variance, as the other continuous families' are.
//! Two parameters per dimension, however long the gradient: a few hundred victims calibrate it.

use anyhow::{anyhow, bail, Result};
use tch::{Kind, Tensor};

use super::model::{
    conditional_variance, null_mean, ConditionalModel, GaussianValidation, Part, Prediction, TargetRange,
};

/// A reconstruction calibrated to the target by an affine map per dimension (see the module documentation).
#[derive(Debug)]
pub struct AffineCalibration {
    floor: Tensor,
    fitted: Option<CalibrationFit>,
}

#[derive(Debug)]
struct CalibrationFit {
    /// (K,) slopes and intercepts: the prediction is `intercept + slope * r`, clipped to `range`.
    slope: Tensor,
    intercept: Tensor,
    range: TargetRange,
    var: Tensor,
    /// `per_dimension`, `shared` or `constant`.
    form: &'static str,
    /// (form, validation bits) of every candidate.
    tried: Vec<(&'static str, f64)>,
}

impl AffineCalibration {
    /// `floor`: (K,) smallest variance per target dimension.
    pub fn new(floor: &Tensor) -> Self {
        AffineCalibration { floor: floor.shallow_clone(), fitted: None }
    }
}

impl ConditionalModel for AffineCalibration {
    fn fit(&mut self, train: Part<'_>, val: Part<'_>) -> Result<()> {
        let (k_x, k_y) = (train.x.size()[1], train.y.size()[1]);
        if k_x != k_y {
            bail!(
                "calibration of a reconstruction: it has {k_x} values per sample but the target has {k_y}; a \
                 model-backed family predicts each target value from its own reconstructed value"
            );
        }
        let validation = GaussianValidation::new(train, val, &self.floor);
        let range = TargetRange::fit(train.y, val.y);
        let x_mean = train.x.mean_dim(0, false, Kind::Double);
        let y_mean = train.y.mean_dim(0, false, Kind::Double);
        let xc = train.x - &x_mean;
        let yc = train.y - &y_mean;
        let sxy = (&xc * &yc).sum_dim_intlist(0, false, Kind::Double);
        let sxx = xc.square().sum_dim_intlist(0, false, Kind::Double);
        // A reconstructed value that never moves has no slope.
        let per_dimension = (&sxy / sxx.clamp_min(1e-300)).where_self(&sxx.gt(0.0), &sxx.zeros_like());
        let pooled = sxy.sum(Kind::Double) / sxx.sum(Kind::Double).clamp_min(1e-300);
        let shared = per_dimension.zeros_like() + pooled;

        let mut tried = Vec::new();
        let mut best: Option<(f64, &'static str, Tensor, Tensor)> = None;
        for (form, slope) in [("per_dimension", per_dimension), ("shared", shared)] {
            let intercept = &y_mean - &slope * &x_mean;
            let pred = &intercept + &slope * val.x;
            let (bits, var) = validation.score(&range.clip(&pred), &range.excess(&pred));
            tried.push((form, bits));
            if best.as_ref().is_none_or(|b| bits > b.0) {
                best = Some((bits, form, slope, var));
            }
        }
        let (bits, form, slope, var) = best.ok_or_else(|| anyhow!("calibration: no candidate was scored"))?;
        // The constant predictor scores 0 bits on validation: when no slope beats it, the reconstruction carries
        // nothing usable.
        let fit = if bits > 0.0 {
            let intercept = &y_mean - &slope * &x_mean;
            CalibrationFit { slope, intercept, range, var, form, tried }
        } else {
            let mean = null_mean(train.y, val.y);
            let var = conditional_variance(&(val.y - &mean), train.y, val.y, &self.floor);
            CalibrationFit { slope: slope.zeros_like(), intercept: mean, range, var, form: "constant", tried }
        };
        self.fitted = Some(fit);
        Ok(())
    }

    fn predict(&self, x: &Tensor) -> Result<Prediction> {
        let f = self.fitted.as_ref().ok_or_else(|| anyhow!("calibration used before fit"))?;
        Ok(f.range.predict(&(&f.intercept + &f.slope * x), &f.var))
    }

    fn constant(&self) -> bool {
        self.fitted.as_ref().is_some_and(|f| f.form == "constant")
    }

    fn summary(&self) -> serde_json::Value {
        match &self.fitted {
            None => serde_json::json!({}),
            Some(f) => serde_json::json!({
                "calibration": f.form,
                "mean_slope": f.slope.mean(Kind::Double).double_value(&[]),
                "validation_bits": f.tried.iter().map(|(form, b)| serde_json::json!({"form": form, "bits": b})).collect::<Vec<_>>(),
            }),
        }
    }
}
