//! Sensitivity analysis: *why* a layer's gradient leaks, with no attacker model.
//!
//! V-information says how much a layer's gradient tells a (restricted) attacker; sensitivity says how strongly the
//! gradient moves when the private quantity moves, and so cross-checks the layer ranking (Mo et al. 2022 use it to
//! validate their layer-wise results):
//!
//! - [`input`]: the Jacobian J_l(x) = d g_l(x) / d x of each layer's per-sample gradient with respect to the input,
//!   summarised by its Frobenius norm (absolute, relative to ||g_l(x)||, and per parameter). ||J_l||_F^2 is
//!   estimated with Hutchinson probes through double backpropagation, for all layers at once, or computed exactly
//!   for small inputs.
//! - [`latent`]: how far apart the gradients of samples with and without a latent attribute are: the distance
//!   between the two groups' top-k principal subspaces, and a between-group over within-group spread ratio.
//! - [`agreement`]: Spearman rank correlation across layers between a sensitivity column and a V-information
//!   column.
//!
//! Every random choice (probes, bootstrap resamples, defence noise) follows from one seed.

pub mod agreement;
pub mod input;
pub mod latent;

pub use agreement::{
    agreement_verdict, order_text, paired_comparisons, rank_agreement, spearman, spearman_interval, PairComparison,
    PerSample, RankAgreement,
};
pub use input::{
    input_sensitivity, input_sensitivity_on_split, InputSensitivityConfig, InputSensitivityReport,
    LayerInputSensitivity,
};
pub use latent::{latent_sensitivity, latent_sensitivity_of_store, LatentConfig, LatentLayer, LatentReport};

use serde::{Deserialize, Serialize};

/// A point estimate with a bootstrap 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// The estimate on all the data (for per-sample quantities: the mean over samples).
    pub value: f64,
    /// Percentile bootstrap 95% interval [2.5%, 97.5%].
    pub ci: [f64; 2],
    /// Standard error of `value` due to the estimator's own randomness (Hutchinson probes), when there is any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimator_se: Option<f64>,
}
