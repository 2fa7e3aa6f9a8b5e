//! The predictor families V that the estimator fits: which models f[G] (and f[∅]) an estimate may choose from.
//!
//! A predictor turns a prepared target into a pair of [`ConditionalModel`]s, the null model f[∅] (no features)
//! and the conditional model f[G], which the [`super::Estimator`] fits and scores. The families a user names
//! (`linear`, `analytic`, `ig`, `decoder`, ...) live in `measure::families`: each chooses what it reads (a
//! gradient, an attack's reconstruction, a decoder's output) and the predictor that reads it.

use std::fmt;

use anyhow::Result;

use super::calibrated::AffineCalibration;
use super::linear::{LogisticRegression, RidgeGaussian};
use super::mlp::{Mlp, MlpOptions};
use super::model::{ClassFrequencies, ConditionalModel, GaussianMarginal};
use super::PreparedTarget;

/// Hidden sizes of the MLP predictor when none are given.
pub const DEFAULT_HIDDEN: [i64; 1] = [128];

/// The predictive family V of an estimate.
#[derive(Debug, Clone, PartialEq)]
pub enum Predictor {
    /// Logistic regression (categorical) or ridge regression with a Gaussian likelihood (continuous).
    Linear,
    /// A ReLU MLP: its hidden sizes and training settings.
    Mlp(MlpOptions),
    /// A calibration of features that already predict the target (an attack's reconstruction, a decoder's
    /// output): an affine map per dimension ([`AffineCalibration`]) for continuous targets, logistic regression
    /// for categorical ones.
    Calibration,
}

impl Predictor {
    /// The MLP with the default hidden sizes and settings.
    pub fn mlp() -> Self {
        Predictor::Mlp(MlpOptions::default())
    }

    /// The MLP with these hidden sizes and the default settings.
    pub fn mlp_hidden(hidden: &[i64]) -> Self {
        Predictor::Mlp(MlpOptions { hidden: hidden.to_vec(), ..MlpOptions::default() })
    }

    /// Checks the predictor's settings.
    pub fn validate(&self) -> Result<()> {
        match self {
            Predictor::Linear | Predictor::Calibration => Ok(()),
            Predictor::Mlp(options) => options.validate(),
        }
    }

    /// The null model f[∅] for `target`: class frequencies or a Gaussian marginal, whatever the predictor (the
    /// constant predictors that every family contains).
    pub(super) fn null_model(&self, target: &PreparedTarget) -> Box<dyn ConditionalModel> {
        match target {
            PreparedTarget::Classes { classes, .. } => Box::new(ClassFrequencies::new(*classes)),
            PreparedTarget::Values { floor, .. } => Box::new(GaussianMarginal::new(floor)),
        }
    }

    /// The conditional model f[G] for `target`; `seed` drives any randomness of its fit.
    pub(super) fn conditional_model(&self, target: &PreparedTarget, seed: u64) -> Box<dyn ConditionalModel> {
        match (target, self) {
            // A recovered label or a measured attribute is calibrated like any other feature.
            (PreparedTarget::Classes { classes, .. }, Predictor::Linear | Predictor::Calibration) => {
                Box::new(LogisticRegression::new(*classes))
            }
            (PreparedTarget::Classes { classes, .. }, Predictor::Mlp(options)) => {
                Box::new(Mlp::classifier(*classes, options, seed))
            }
            (PreparedTarget::Values { floor, .. }, Predictor::Linear) => Box::new(RidgeGaussian::new(floor)),
            (PreparedTarget::Values { floor, .. }, Predictor::Mlp(options)) => {
                Box::new(Mlp::gaussian(floor, options, seed))
            }
            (PreparedTarget::Values { floor, .. }, Predictor::Calibration) => Box::new(AffineCalibration::new(floor)),
        }
    }
}

impl fmt::Display for Predictor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Predictor::Linear => f.write_str("linear"),
            Predictor::Calibration => f.write_str("calibration"),
            Predictor::Mlp(options) => {
                let h: Vec<String> = options.hidden.iter().map(|h| h.to_string()).collect();
                write!(f, "mlp:{}", h.join(","))
            }
        }
    }
}
