//! Upper bounds on what a shared update can tell, set beside the families' estimates (which are lower bounds: what
//! one family of attackers extracts). The derivations, their assumptions and what they do not promise are in
//! `docs/bounds.md`.
//!
//! - **DP capacity.** Under DP-SGD a victim's contribution is its per-sample gradient clipped to norm C (over all
//!   shared layers), and the release adds N(0, s^2 I) to the sum. That is a Gaussian channel with input power at
//!   most C^2, whose capacity in any dimension is at most C^2 / (2 s^2) nats. With noise multiplier sigma (s =
//!   sigma C) it is 1 / (2 sigma^2 ln 2) bits per release, for every layer subset and after any post-processing.
//! - **Entropy.** A categorical target with K possible values has at most log2 K bits to give.
//! - **Fisher information (dFIL, Guo et al. 2022).** For a release g(x) + N(0, s^2 I), I(x) = J^T J / s^2 with
//!   J = dg/dx; an unbiased reconstruction of a d-dimensional input has mean squared error per dimension at least
//!   d / tr I(x) = 1 / dFIL, dFIL = ||J||_F^2 / (s^2 d).
//! - **Consistency.** A held-out estimate is at most I(Y; G) + KL(p_Y || f[∅]): a lower confidence bound above the
//!   upper bound is an estimator error or a null model that misfits the targets (see [`excess`]).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::defenses::{Defense, DefensePlan, PostDefense};
use crate::measure::sensitivity::{Estimate, InputSensitivityReport};
use crate::rng::{self, Stream};
use crate::stats::bootstrap_means;

/// Names of the bounds, as written in the records' `bound` column.
pub const DP_CAPACITY: &str = "dp_capacity";
pub const LOG2_CLASSES: &str = "log2_classes";

/// The capacity, in bits, of `releases` Gaussian channels whose input has norm at most C and whose noise has
/// standard deviation `noise_multiplier * C` per dimension: releases / (2 sigma^2 ln 2). Infinite without noise.
pub fn dp_capacity_bits(noise_multiplier: f64, releases: u32) -> f64 {
    if noise_multiplier <= 0.0 {
        return f64::INFINITY;
    }
    releases as f64 / (2.0 * noise_multiplier * noise_multiplier * std::f64::consts::LN_2)
}

/// The Gaussian noise a defence list puts on one victim's contribution to a shared update, in the units of the
/// victim's own per-sample gradient (the function the sensitivity analysis differentiates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseNoise {
    /// Standard deviation s per coordinate. With DP-SGD at clip C and multiplier sigma, batch size B, and `noise`
    /// of standard deviation t added to the averaged update: s^2 = (sigma C)^2 + (B t)^2 (the update times B is the
    /// sum of the clipped gradients plus that noise).
    pub std: f64,
    /// The clipping norm, when DP-SGD clips each sample's gradient over all shared layers (the capacity bound
    /// needs it: without clipping the victim's contribution has no bounded power).
    pub clip: Option<f64>,
    /// Why the Fisher bound is not reported although there is noise (None when it is).
    pub fisher_caveat: Option<String>,
}

impl ReleaseNoise {
    /// The noise of `defenses` at `batch_size`; None when the update carries no Gaussian noise.
    pub fn of(defenses: &[Defense], batch_size: i64) -> Result<Option<ReleaseNoise>> {
        let plan = DefensePlan::new(defenses)?;
        let mut variance = 0.0;
        let mut clip = None;
        if let Some((c, sigma)) = plan.dp {
            variance += (sigma * c).powi(2);
            clip = Some(c);
        }
        let mut fisher_caveat = None;
        for d in &plan.post {
            match d {
                // Noise added to the update averaged over the batch: B times larger on the sum's scale.
                PostDefense::Noise { std } => variance += (batch_size as f64 * std).powi(2),
                // Pruning keeps the largest entries of the noisy update: which entries survive depends on the input
                // too, and the Jacobian of the pruned gradient (with its mask held fixed) does not count that.
                PostDefense::Prune { .. } => {
                    fisher_caveat = Some(
                        "prune: the kept entries depend on the input, which the Jacobian with a fixed mask does not \
                         count, so the Fisher bound is not reported"
                            .to_string(),
                    )
                }
                // Quantisation after the noise is post-processing: it can only lower the Fisher information, and
                // the sensitivity takes the Jacobian before it.
                PostDefense::Quantize { .. } => {}
                // So is the sign: a function of the noisy update alone.
                PostDefense::Sign => {}
            }
        }
        if variance <= 0.0 {
            return Ok(None);
        }
        Ok(Some(ReleaseNoise { std: variance.sqrt(), clip, fisher_caveat }))
    }

    /// The effective noise multiplier s / C under clipping (None without clipping).
    pub fn noise_multiplier(&self) -> Option<f64> {
        self.clip.map(|c| self.std / c)
    }

    /// The capacity bound in bits per release, when the victim's contribution is clipped.
    pub fn capacity_bits(&self) -> Option<f64> {
        self.noise_multiplier().map(|sigma| dp_capacity_bits(sigma, 1))
    }
}

/// An upper bound on the information a record's update can carry about its target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpperBound {
    pub bits: f64,
    /// [`DP_CAPACITY`] or [`LOG2_CLASSES`].
    pub bound: &'static str,
}

/// The smallest bound that applies to one release about a target: the DP capacity (when the update is clipped and
/// noised) and, for a categorical target with `classes` possible values, log2 of that. None when neither applies.
pub fn upper_bound(noise: Option<&ReleaseNoise>, classes: Option<usize>) -> Option<UpperBound> {
    let capacity = noise.and_then(|n| n.capacity_bits()).map(|bits| UpperBound { bits, bound: DP_CAPACITY });
    let entropy = classes.filter(|&k| k >= 1).map(|k| UpperBound { bits: (k as f64).log2(), bound: LOG2_CLASSES });
    match (capacity, entropy) {
        (Some(c), Some(e)) => Some(if e.bits < c.bits { e } else { c }),
        (c, e) => c.or(e),
    }
}

/// By how many bits a lower confidence bound exceeds an upper bound, when it does.
///
/// A held-out estimate is E[-log f[∅](Y)] - E[-log f[G](Y)] <= (H(Y) + KL(p_Y || f[∅])) - H(Y | G) = I(Y; G) +
/// KL(p_Y || f[∅]): a family can never beat the true conditional entropy, but its null model can misfit the
/// targets. An excess is an estimator error or a null model that misfits p_Y by at least that much.
pub fn excess(ci_low: f64, upper_bits: f64) -> Option<f64> {
    // A relative tolerance for rounding in the estimate's sums.
    let tolerance = 1e-9 * upper_bits.abs().max(1.0);
    (ci_low.is_finite() && upper_bits.is_finite() && ci_low > upper_bits + tolerance).then_some(ci_low - upper_bits)
}

/// What an estimate above its upper bound means, when its interval still reaches the bound (a lower confidence bound
/// above it is an [`excess`]). The label read at 3.42 bits where log2 10 = 3.32 (a TorchScript model, 120 updates):
/// honest as an estimate, since the held-out difference of log-losses is I(Y; G) + KL(p_Y || f[∅]) and the null
/// model misfits a small scored sample's labels; but read as a bug. The raw estimate is kept, and the note says
/// to read it as the bound.
pub fn above_bound(bits: f64, ci95: [f64; 2], upper_bits: f64, bound: &str) -> Option<String> {
    (bits.is_finite() && upper_bits.is_finite() && bits > upper_bits && excess(ci95[0], upper_bits).is_none()).then(
        || {
            format!(
                "the estimate {bits:.3} bits is above the {bound} bound {upper_bits:.3} bits, within its 95% interval \
             [{:.3}, {:.3}]: the null model misfits the few scored samples' targets (docs/bounds.md); read it as \
             {upper_bits:.3} bits (the raw estimate is kept)",
                ci95[0], ci95[1]
            )
        },
    )
}

/// The Fisher bound of one victim and one layer (or set of layers) from ||J||_F^2 of its release.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FisherBound {
    /// tr I(x) / d = ||J||_F^2 / (s^2 d).
    pub dfil: f64,
    /// The smallest mean squared error per input dimension of an unbiased reconstruction: 1 / dFIL.
    pub mse_bound: f64,
    /// The largest PSNR (dB, images in [0, 1]) that bound allows: 10 log10(dFIL).
    pub psnr_bound: f64,
}

/// The Fisher bound from the squared Frobenius norm of the release's input Jacobian, the noise's standard
/// deviation `noise_std` (in the Jacobian's units) and the input's dimension.
pub fn fisher_bound(squared_jacobian_norm: f64, noise_std: f64, input_dim: i64) -> FisherBound {
    let dfil = squared_jacobian_norm / (noise_std * noise_std * input_dim as f64);
    FisherBound { dfil, mse_bound: 1.0 / dfil, psnr_bound: 10.0 * dfil.log10() }
}

/// The Fisher bound of one layer (or `all` layers together) for every victim of an input sensitivity report, with
/// the means over victims and their percentile bootstrap intervals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerFisher {
    /// A layer's name, or `all`.
    pub layer: String,
    pub dfil: Estimate,
    pub mse_bound: Estimate,
    pub psnr_bound: Estimate,
    /// One bound per victim, in the report's sample order.
    pub per_victim: Vec<FisherBound>,
}

/// The Fisher bounds of `report`'s layers for the release of `defenses` on batches of `batch_size`, with the
/// noise they add; None without noise, or where a defence makes the bound inapplicable (its caveat).
pub fn fisher_of_release(
    report: &InputSensitivityReport,
    defenses: &[Defense],
    batch_size: i64,
    bootstrap: usize,
    seed: u64,
) -> Result<Option<(ReleaseNoise, Vec<LayerFisher>)>> {
    let Some(noise) = ReleaseNoise::of(defenses, batch_size)?.filter(|noise| noise.fisher_caveat.is_none()) else {
        return Ok(None);
    };
    let layers = fisher_per_layer(report, noise.std, bootstrap, seed);
    Ok(Some((noise, layers)))
}

/// The Fisher bounds of each layer of `report` and, with several layers, of all of them together (the sum of the
/// layers' squared Jacobian norms), for a release with Gaussian noise of standard deviation `noise_std` in the
/// units of the per-sample gradient.
pub fn fisher_per_layer(
    report: &InputSensitivityReport,
    noise_std: f64,
    bootstrap: usize,
    seed: u64,
) -> Vec<LayerFisher> {
    let mut columns: Vec<(String, Vec<f64>)> = report
        .layers
        .iter()
        .map(|l| (l.name.clone(), l.per_sample_jacobian_norm.iter().map(|v| v * v).collect()))
        .collect();
    if columns.len() > 1 {
        let all = (0..report.samples as usize).map(|n| columns.iter().map(|(_, sq)| sq[n]).sum()).collect();
        columns.push(("all".to_string(), all));
    }
    columns
        .into_iter()
        .map(|(layer, squared)| {
            let per_victim: Vec<FisherBound> =
                squared.iter().map(|&q| fisher_bound(q, noise_std, report.input_dim)).collect();
            let column = |f: fn(&FisherBound) -> f64| per_victim.iter().map(f).collect::<Vec<f64>>();
            let (dfil, mse, psnr) = (column(|b| b.dfil), column(|b| b.mse_bound), column(|b| b.psnr_bound));
            let means = bootstrap_means(
                &[&dfil, &mse, &psnr],
                bootstrap,
                rng::derive(seed, Stream::FisherBootstrap { layer: &layer }),
            );
            let est = |i: usize| Estimate { value: means[i].0, ci: means[i].1, estimator_se: None };
            LayerFisher { dfil: est(0), mse_bound: est(1), psnr_bound: est(2), per_victim, layer }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capacity_at_sigma_one_is_one_over_two_ln_two() {
        assert!((dp_capacity_bits(1.0, 1) - 0.721_347_520_444_481_7).abs() < 1e-12);
        assert!((dp_capacity_bits(0.5, 1) - 2.885_390_081_777_927).abs() < 1e-12);
        assert!((dp_capacity_bits(2.0, 3) - 3.0 * 0.721_347_520_444_481_7 / 4.0).abs() < 1e-12);
        assert_eq!(dp_capacity_bits(0.0, 1), f64::INFINITY);
    }

    #[test]
    fn the_capacity_bounds_the_water_filled_gaussian_channel_in_every_dimension() {
        // Capacity of d parallel channels, total power C^2 = 1 spread evenly (optimal by symmetry), noise sigma^2:
        // d/2 log2(1 + 1/(d sigma^2)), increasing in d towards 1/(2 sigma^2 ln 2).
        for sigma in [0.5, 1.0, 2.0] {
            let bound = dp_capacity_bits(sigma, 1);
            let mut previous = 0.0;
            for d in [1.0, 10.0, 1e3, 1e6] {
                let c = d / 2.0 * (1.0 + 1.0 / (d * sigma * sigma)).log2();
                assert!(c <= bound && c >= previous, "sigma {sigma}, d {d}: {c} vs {bound}");
                previous = c;
            }
            assert!((previous / bound - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn the_release_noise_adds_dp_and_batch_scaled_noise() {
        let dp = Defense::Dp { clip: 2.0, noise_multiplier: 0.5 };
        let n = ReleaseNoise::of(std::slice::from_ref(&dp), 8).unwrap().unwrap();
        assert_eq!(n.std, 1.0);
        assert_eq!(n.noise_multiplier(), Some(0.5));
        let both = ReleaseNoise::of(&[dp, Defense::Noise { std: 0.1 }], 10).unwrap().unwrap();
        assert!((both.std - 2f64.sqrt()).abs() < 1e-12);
        let plain = ReleaseNoise::of(&[Defense::Noise { std: 0.1 }], 4).unwrap().unwrap();
        assert!((plain.std - 0.4).abs() < 1e-12);
        assert_eq!(plain.capacity_bits(), None, "no clipping, no capacity");
        assert!(ReleaseNoise::of(&[Defense::Prune { fraction: 0.5 }], 1).unwrap().is_none());
        // The sign of a noisy update is post-processing: the noise, and so the bound, are the noise's alone.
        let signed = ReleaseNoise::of(&[Defense::Noise { std: 0.1 }, Defense::Sign], 4).unwrap().unwrap();
        assert_eq!((signed.std, signed.fisher_caveat.is_none()), (plain.std, true));
        assert!(ReleaseNoise::of(&[Defense::Sign], 1).unwrap().is_none(), "no noise, no Fisher bound");
        let pruned = ReleaseNoise::of(&[Defense::Noise { std: 1.0 }, Defense::Prune { fraction: 0.5 }], 1).unwrap();
        assert!(pruned.unwrap().fisher_caveat.is_some());
    }

    #[test]
    fn the_smallest_applicable_bound_is_chosen() {
        let n = ReleaseNoise { std: 0.5, clip: Some(1.0), fisher_caveat: None };
        assert_eq!(upper_bound(Some(&n), None).unwrap().bound, DP_CAPACITY);
        // log2 2 = 1 < 2.885.
        assert_eq!(upper_bound(Some(&n), Some(2)).unwrap(), UpperBound { bits: 1.0, bound: LOG2_CLASSES });
        assert_eq!(upper_bound(None, Some(10)).unwrap().bits, 10f64.log2());
        assert_eq!(upper_bound(None, None), None);
        // An estimate above log2 10 whose interval holds it is explained; one below, or beyond its interval, not.
        let note = above_bound(3.42, [3.10, 3.60], 10f64.log2(), LOG2_CLASSES).unwrap();
        assert!(note.starts_with("the estimate 3.420 bits is above the log2_classes bound 3.322 bits"), "{note}");
        assert!(note.contains("read it as 3.322 bits (the raw estimate is kept)"), "{note}");
        assert_eq!(above_bound(3.30, [3.10, 3.40], 10f64.log2(), LOG2_CLASSES), None);
        assert_eq!(above_bound(3.50, [3.40, 3.60], 10f64.log2(), LOG2_CLASSES), None, "an excess: flagged as such");
    }

    #[test]
    fn an_excess_is_reported_only_above_the_bound() {
        assert_eq!(excess(0.5, 0.7), None);
        assert_eq!(excess(0.7, 0.7), None);
        assert!((excess(1.0, 0.7).unwrap() - 0.3).abs() < 1e-12);
        assert_eq!(excess(f64::NAN, 0.7), None);
    }

    #[test]
    fn the_fisher_bound_inverts_dfil() {
        let b = fisher_bound(400.0, 2.0, 100);
        assert_eq!(b.dfil, 1.0);
        assert_eq!(b.mse_bound, 1.0);
        assert_eq!(b.psnr_bound, 0.0);
        let b = fisher_bound(4e4, 2.0, 100);
        assert!((b.psnr_bound - 20.0).abs() < 1e-12);
    }
}
