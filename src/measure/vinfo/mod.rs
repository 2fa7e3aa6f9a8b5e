//! Usable (V-)information of a feature matrix G about a target Y (Xu et al., ICLR 2020), with pointwise
//! V-information for every held-out sample (Ethayarajh et al., ICML 2022). Everything is in bits.
//!
//! For a predictive family V, `H_V(Y|G) = inf_{f in V} E[-log f[G](Y)]`, `H_V(Y|∅) = inf_{f in V} E[-log f[∅](Y)]`
//! and `I_V(G -> Y) = H_V(Y|∅) - H_V(Y|G)`. [`estimate`] fits f[∅] and f[G] on training samples (hyperparameters on
//! a validation part) and scores held-out samples: `PVI_i = -log2 f[∅](y_i) + log2 f[g_i](y_i)`; the estimate is
//! the mean PVI, with a bootstrap 95% interval over the scored samples. Negative estimates are reported as
//! measured. See `docs/vinfo.md` for the protocol and what the numbers mean.
//!
//! ```no_run
//! use gradleak::measure::vinfo::{estimate, EstimateOptions, Predictor, Target};
//! # fn main() -> anyhow::Result<()> {
//! let g = tch::Tensor::randn([500, 64], (tch::Kind::Float, tch::Device::Cpu));
//! let labels = tch::Tensor::randint(10, [500], (tch::Kind::Int64, tch::Device::Cpu));
//! let est = estimate(&g, &Target::Categorical(labels), &Predictor::Linear, &EstimateOptions::default())?;
//! println!("{:.3} bits [{:.3}, {:.3}]", est.bits, est.ci95[0], est.ci95[1]);
//! # Ok(()) }
//! ```

mod calibrated;
mod estimator;
mod linear;
mod mlp;
mod model;
mod predictor;
mod protocol;

use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::Tensor;

pub use calibrated::AffineCalibration;
pub use estimator::Estimator;
pub(crate) use estimator::PreparedTarget;
pub use linear::{lbfgs, LogisticRegression, RidgeGaussian};
pub use mlp::{Mlp, MlpOptions, MAX_HIDDEN};
pub use model::{
    gaussian_log_prob, ClassFrequencies, ConditionalModel, GaussianMarginal, Part, Prediction, Standardiser,
};
pub use predictor::{Predictor, DEFAULT_HIDDEN};
pub use protocol::{bootstrap_ci, Fold, Protocol};

/// What is predicted.
#[derive(Debug)]
pub enum Target {
    /// Class indices or any integer-valued codes, (N,) (integer or float tensor). Codes are mapped to classes in
    /// increasing order.
    Categorical(Tensor),
    /// Real values, (N,) or (N, K) (or more dimensions, flattened per sample).
    Continuous(Tensor),
}

impl Target {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Target::Categorical(_) => "categorical",
            Target::Continuous(_) => "continuous",
        }
    }

    fn tensor(&self) -> &Tensor {
        match self {
            Target::Categorical(t) | Target::Continuous(t) => t,
        }
    }
}

/// Everything [`estimate`] can be told. Every random choice (split, MLP initialisation and minibatches,
/// bootstrap) derives from `seed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EstimateOptions {
    pub seed: u64,
    pub protocol: Protocol,
    /// Bootstrap resamples of the PVI values for the 95% interval.
    pub bootstrap: usize,
    /// Repetitions of the protocol with independent partitions (1: one split or one cross-fitting). With more,
    /// each sample's PVI is averaged over the repetitions that scored it, and the spread of the repetitions'
    /// estimates (the fit's variability) is folded into the interval.
    pub repeats: usize,
    /// Continuous targets: the smallest variance of a dimension, as a fraction of that dimension's variance in the
    /// fitting data (dimensions that are constant there use the fraction of the mean variance over dimensions).
    pub variance_floor: f64,
}

impl Default for EstimateOptions {
    fn default() -> Self {
        EstimateOptions { seed: 0, protocol: Protocol::default(), bootstrap: 1000, repeats: 1, variance_floor: 1e-4 }
    }
}

/// The result of [`estimate`]: held-out entropies, their difference, and fit diagnostics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VInfoEstimate {
    /// The family measured: the predictor's name (`linear`, `mlp:<hidden sizes>`, `calibration`), or the name of
    /// the family that chose the features and the predictor (`analytic`, `ig`, ...).
    pub family: String,
    /// `categorical` or `continuous`.
    pub target: String,
    /// Estimated `I_V(G -> Y)` in bits: the mean PVI of the scored samples (= `h_null_bits - h_cond_bits`).
    pub bits: f64,
    /// Percentile bootstrap 95% interval of `bits` over the scored samples.
    pub ci95: [f64; 2],
    /// Held-out log-loss of f[∅] in bits per sample (for continuous targets a differential entropy, summed over
    /// dimensions).
    pub h_null_bits: f64,
    /// Held-out log-loss of f[G] in bits per sample.
    pub h_cond_bits: f64,
    /// Continuous: `bits` divided by the number of target dimensions.
    pub bits_per_dim: Option<f64>,
    /// Continuous: held-out R^2 of the predicted means, `1 - SSE / SST` summed over all dimensions (weighted by
    /// variance), where SST uses the null model's means (fitted without the scored samples).
    pub r2: Option<f64>,
    /// Continuous: held-out mean squared error per target value.
    pub mse: Option<f64>,
    /// Categorical: held-out accuracy of the most probable class.
    pub accuracy: Option<f64>,
    /// Categorical: held-out accuracy of always predicting the most frequent class.
    pub null_accuracy: Option<f64>,
    /// Samples given.
    pub n_samples: usize,
    /// Training samples of each fit (the first fit's, under cross-fitting).
    pub n_train: usize,
    /// Validation samples of each fit (the first fit's, under cross-fitting).
    pub n_val: usize,
    /// Scored samples, over all fits.
    pub n_test: usize,
    /// Feature columns.
    pub n_features: usize,
    /// Target dimensions (continuous) or classes (categorical).
    pub target_dims: usize,
    pub protocol: Protocol,
    /// Repetitions of the protocol.
    pub repeats: usize,
    /// Each repetition's estimate (bits).
    pub repeat_bits: Vec<f64>,
    /// Standard error of `bits` from the fit's variability (the spread of `repeat_bits` over sqrt(repetitions));
    /// folded into `ci95`. 0 with one repetition.
    pub fit_se: f64,
    pub seed: u64,
    /// What each fit chose (regularisation, epochs, validation losses).
    pub fits: Vec<serde_json::Value>,
    /// Fits in which f[G] was the constant predictor (no strength or epoch beat it on validation): those scored
    /// samples have PVI 0.
    pub constant_fits: usize,
    /// What a user should know about the fits (an optimiser at its iteration cap, ...).
    pub warnings: Vec<String>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// PVI (bits) of each scored sample, in the order of `pvi_index`. Not in the JSON summary.
    #[serde(skip)]
    pub pvi: Vec<f64>,
    /// Sample index of each entry of `pvi`, increasing.
    #[serde(skip)]
    pub pvi_index: Vec<i64>,
}

impl VInfoEstimate {
    /// PVI by sample index for `n` samples; NaN for samples that were not scored (under a split protocol).
    pub fn pvi_by_sample(&self, n: usize) -> Vec<f64> {
        let mut out = vec![f64::NAN; n];
        for (&i, &v) in self.pvi_index.iter().zip(&self.pvi) {
            if let Some(slot) = out.get_mut(i as usize) {
                *slot = v;
            }
        }
        out
    }
}

/// Estimates `I_V(G -> Y)` for one predictor: [`Estimator::estimate`]. `features`: (N, D) (more dimensions are
/// flattened per sample). See the module documentation and `docs/vinfo.md`.
pub fn estimate(
    features: &Tensor,
    target: &Target,
    predictor: &Predictor,
    opts: &EstimateOptions,
) -> Result<VInfoEstimate> {
    Estimator::new(predictor.clone(), opts.clone()).estimate(features, target)
}
