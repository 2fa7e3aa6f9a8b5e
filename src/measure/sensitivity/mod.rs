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

pub use agreement::{rank_agreement, spearman, RankAgreement};
pub use input::{input_sensitivity, InputSensitivityConfig, InputSensitivityReport, LayerInputSensitivity};
pub use latent::{latent_sensitivity, latent_sensitivity_of_store, LatentConfig, LatentLayer, LatentReport};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
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

/// A seed for one purpose, derived from the user's seed (streams do not overlap across purposes).
pub(crate) fn derive_seed(seed: u64, purpose: u64) -> u64 {
    // SplitMix64 finaliser of seed + purpose * golden ratio.
    let mut z = seed.wrapping_add(purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The 2.5% and 97.5% percentiles (linear interpolation between order statistics) of `values`.
pub(crate) fn percentile_interval(mut values: Vec<f64>) -> [f64; 2] {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return [f64::NAN, f64::NAN];
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        let pos = q * (values.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
    };
    [at(0.025), at(0.975)]
}

/// Means of several per-sample columns, with percentile bootstrap intervals from shared resamples of the samples
/// (`resamples` of them, seeded). Non-finite entries of a column are left out of that column's mean.
pub(crate) fn bootstrap_means(columns: &[&[f64]], resamples: usize, seed: u64) -> Vec<(f64, [f64; 2])> {
    let n = columns.first().map(|c| c.len()).unwrap_or(0);
    let mean_of = |col: &[f64], idx: &mut dyn Iterator<Item = usize>| {
        let (mut sum, mut count) = (0.0, 0usize);
        for i in idx {
            if col[i].is_finite() {
                sum += col[i];
                count += 1;
            }
        }
        if count == 0 {
            f64::NAN
        } else {
            sum / count as f64
        }
    };
    let point: Vec<f64> = columns.iter().map(|c| mean_of(c, &mut (0..n))).collect();
    let mut draws: Vec<Vec<f64>> = columns.iter().map(|_| Vec::with_capacity(resamples)).collect();
    if n > 0 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..resamples {
            let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            for (c, col) in columns.iter().enumerate() {
                draws[c].push(mean_of(col, &mut idx.iter().copied()));
            }
        }
    }
    point
        .into_iter()
        .zip(draws)
        .map(|(p, d)| (p, if resamples == 0 || n == 0 { [p, p] } else { percentile_interval(d) }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_order_statistics() {
        let values: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(percentile_interval(values), [2.5, 97.5]);
        assert_eq!(percentile_interval(vec![3.0]), [3.0, 3.0]);
        assert!(percentile_interval(vec![f64::NAN]).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn bootstrap_interval_of_a_mean_has_the_normal_width() {
        // 400 values uniform on a grid over [0, 1): standard deviation 0.2887, standard error 0.01443; the 95%
        // interval should be about 2 * 1.96 * 0.01443 = 0.0566 wide.
        let values: Vec<f64> = (0..400).map(|i| ((i * 37) % 400) as f64 / 400.0).collect();
        let out = bootstrap_means(&[&values], 2000, 3);
        let (mean, [lo, hi]) = out[0];
        assert!((mean - 0.49875).abs() < 1e-12);
        assert!(lo < mean && mean < hi);
        let width = hi - lo;
        assert!((width / 0.0566 - 1.0).abs() < 0.1, "width {width}");
        // Same seed, same interval.
        assert_eq!(bootstrap_means(&[&values], 2000, 3)[0], out[0]);
    }
}
