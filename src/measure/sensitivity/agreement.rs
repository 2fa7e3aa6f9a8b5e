//! Agreement between two layer rankings: Spearman's rank correlation, ties given their average rank.
//!
//! Use it to compare a sensitivity column with a V-information column over the same layers: input sensitivity
//! against bits about the input, latent sensitivity against bits about the attribute. A value near 1 means both
//! measurements order the layers alike.

use anyhow::{bail, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::rng::{self, Stream};
use crate::stats::{bootstrap_means, percentile_interval};

/// Ranks 1..=n of `values`; tied values share the average of the ranks they span.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) hold ranks start+1..=end; their average is (start + 1 + end) / 2.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's rho: the Pearson correlation of the average ranks of `a` and `b`.
///
/// Errors when the lengths differ, with fewer than two values, with a non-finite value, or when a column is
/// constant (its ranks have no spread, so the correlation is undefined).
pub fn spearman(a: &[f64], b: &[f64]) -> Result<f64> {
    if a.len() != b.len() {
        bail!("rank correlation needs two columns of the same length, got {} and {}", a.len(), b.len());
    }
    if a.len() < 2 {
        bail!("rank correlation needs at least two layers, got {}", a.len());
    }
    if let Some(v) = a.iter().chain(b).find(|v| !v.is_finite()) {
        bail!("rank correlation: every value must be a finite number, got {v}");
    }
    let (ra, rb) = (average_ranks(a), average_ranks(b));
    let mean = (a.len() + 1) as f64 / 2.0;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        sab += (x - mean) * (y - mean);
        saa += (x - mean) * (x - mean);
        sbb += (y - mean) * (y - mean);
    }
    if saa == 0.0 || sbb == 0.0 {
        bail!("rank correlation is undefined: one column has the same value for every layer");
    }
    Ok(sab / (saa * sbb).sqrt())
}

/// Spearman agreement of two named columns over the layers they share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankAgreement {
    pub spearman: f64,
    /// The layers compared, in the order of the first column.
    pub layers: Vec<String>,
    /// Layers present in only one of the columns (left out).
    pub unmatched: Vec<String>,
}

/// Spearman's rho between two columns keyed by layer name (e.g. relative input sensitivity and bits about the
/// input). Layers that appear in one column only are left out and listed.
pub fn rank_agreement(first: &[(String, f64)], second: &[(String, f64)]) -> Result<RankAgreement> {
    for (column, name) in [(first, "first"), (second, "second")] {
        for (i, (layer, _)) in column.iter().enumerate() {
            if column[..i].iter().any(|(other, _)| other == layer) {
                bail!("rank agreement: layer '{layer}' appears twice in the {name} column");
            }
        }
    }
    let mut layers = Vec::new();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut unmatched = Vec::new();
    for (layer, x) in first {
        match second.iter().find(|(other, _)| other == layer) {
            Some((_, y)) => {
                layers.push(layer.clone());
                a.push(*x);
                b.push(*y);
            }
            None => unmatched.push(layer.clone()),
        }
    }
    unmatched.extend(second.iter().filter(|(l, _)| !first.iter().any(|(o, _)| o == l)).map(|(l, _)| l.clone()));
    if layers.len() < 2 {
        bail!(
            "rank agreement needs at least two layers present in both columns, found {} ({})",
            layers.len(),
            if layers.is_empty() { "none".to_string() } else { layers.join(", ") }
        );
    }
    Ok(RankAgreement { spearman: spearman(&a, &b)?, layers, unmatched })
}

/// One layer's per-sample values of a measurement (NaN where a sample has none), every layer over the same samples
/// in the same order, so layers can be compared sample by sample.
pub type PerSample = (String, Vec<f64>);

/// A paired comparison of two layers over the same samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairComparison {
    pub first: String,
    pub second: String,
    /// Mean over samples of first - second.
    pub difference: f64,
    /// Percentile bootstrap 95% interval of `difference`, resampling samples (pairs stay together).
    pub difference_ci95: [f64; 2],
    /// `greater` (first > second), `less`, or `indistinguishable` (the interval covers 0).
    pub verdict: String,
}

/// The sign of an interval: `above` 0, `below` 0, or None when it covers 0 (or is not finite).
fn sign_of(ci: [f64; 2]) -> Option<bool> {
    if ci[0] > 0.0 {
        Some(true)
    } else if ci[1] < 0.0 {
        Some(false)
    } else {
        None
    }
}

/// Every pair of layers compared on the same samples: the mean difference of their per-sample values and its
/// bootstrap interval. The samples are shared, so most of what varies between samples cancels in the difference,
/// and layers whose intervals overlap can still be ordered.
pub fn paired_comparisons(columns: &[PerSample], resamples: usize, seed: u64) -> Result<Vec<PairComparison>> {
    let n = columns.first().map(|(_, v)| v.len()).unwrap_or(0);
    if let Some((layer, v)) = columns.iter().find(|(_, v)| v.len() != n) {
        bail!("paired comparison: layer '{layer}' has {} samples, the first layer {n}", v.len());
    }
    let mut differences = Vec::new();
    let mut pairs = Vec::new();
    for i in 0..columns.len() {
        for j in i + 1..columns.len() {
            let (a, b) = (&columns[i].1, &columns[j].1);
            differences.push(a.iter().zip(b).map(|(x, y)| x - y).collect::<Vec<f64>>());
            pairs.push((i, j));
        }
    }
    let refs: Vec<&[f64]> = differences.iter().map(Vec::as_slice).collect();
    let means = bootstrap_means(&refs, resamples, rng::derive(seed, Stream::RankBootstrap));
    Ok(pairs
        .into_iter()
        .zip(means)
        .map(|((i, j), (difference, ci))| PairComparison {
            first: columns[i].0.clone(),
            second: columns[j].0.clone(),
            difference,
            difference_ci95: ci,
            verdict: match sign_of(ci) {
                Some(true) => "greater",
                Some(false) => "less",
                None => "indistinguishable",
            }
            .to_string(),
        })
        .collect())
}

/// The layers from the largest mean to the smallest, `>` between neighbours that the paired comparison orders and
/// `~` between neighbours it cannot tell apart: `fc1 > conv2 ~ conv1 > fc3`.
pub fn order_text(means: &[(String, f64)], pairs: &[PairComparison]) -> String {
    let mut sorted: Vec<&(String, f64)> = means.iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut text = String::new();
    for (k, (layer, _)) in sorted.iter().enumerate() {
        if k > 0 {
            let above = &sorted[k - 1].0;
            let decided = pairs.iter().any(|p| {
                (&p.first == above && &p.second == layer && p.verdict == "greater")
                    || (&p.first == layer && &p.second == above && p.verdict == "less")
            });
            text.push_str(if decided { " > " } else { " ~ " });
        }
        text.push_str(layer);
    }
    text
}

/// The verdict of a rank correlation's interval: `agree` (above 0), `disagree` (below 0) or `indistinguishable`.
pub fn agreement_verdict(ci: [f64; 2]) -> &'static str {
    match sign_of(ci) {
        Some(true) => "agree",
        Some(false) => "disagree",
        None => "indistinguishable",
    }
}

/// A percentile bootstrap 95% interval of Spearman's rho between the layer means of two per-sample measurements
/// taken on different samples (sensitivity samples; victims scored by V-information), resampling each set of
/// samples independently. Layers are matched by name; victims are kept where every matched layer has a value.
/// None with fewer than two matched layers or when fewer than half of the resamples give a defined correlation.
pub fn spearman_interval(first: &[PerSample], second: &[PerSample], resamples: usize, seed: u64) -> Option<[f64; 2]> {
    let matched: Vec<(&Vec<f64>, &Vec<f64>)> = first
        .iter()
        .filter_map(|(layer, a)| second.iter().find(|(other, _)| other == layer).map(|(_, b)| (a, b)))
        .collect();
    if matched.len() < 2 || resamples == 0 {
        return None;
    }
    // Samples (of each side) where every matched layer has a value.
    let complete = |cols: Vec<&Vec<f64>>| -> Vec<Vec<f64>> {
        let n = cols.iter().map(|c| c.len()).min().unwrap_or(0);
        let keep: Vec<usize> = (0..n).filter(|&i| cols.iter().all(|c| c[i].is_finite())).collect();
        cols.iter().map(|c| keep.iter().map(|&i| c[i]).collect()).collect()
    };
    let a = complete(matched.iter().map(|(a, _)| *a).collect());
    let b = complete(matched.iter().map(|(_, b)| *b).collect());
    let (na, nb) = (a[0].len(), b[0].len());
    if na == 0 || nb == 0 {
        return None;
    }
    let mut rng = rng::rng(seed, Stream::RankBootstrap);
    let mean_of = |col: &[f64], idx: &[usize]| idx.iter().map(|&i| col[i]).sum::<f64>() / idx.len() as f64;
    let mut draws = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        let ia: Vec<usize> = (0..na).map(|_| rng.random_range(0..na)).collect();
        let ib: Vec<usize> = (0..nb).map(|_| rng.random_range(0..nb)).collect();
        let ma: Vec<f64> = a.iter().map(|c| mean_of(c, &ia)).collect();
        let mb: Vec<f64> = b.iter().map(|c| mean_of(c, &ib)).collect();
        if let Ok(rho) = spearman(&ma, &mb) {
            draws.push(rho);
        }
    }
    (draws.len() * 2 >= resamples).then(|| percentile_interval(draws))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_get_the_average_rank() {
        assert_eq!(average_ranks(&[10.0, 20.0, 20.0, 5.0]), vec![2.0, 3.5, 3.5, 1.0]);
        assert_eq!(average_ranks(&[1.0, 1.0, 1.0]), vec![2.0, 2.0, 2.0]);
        assert_eq!(average_ranks(&[3.0, 1.0, 2.0]), vec![3.0, 1.0, 2.0]);
    }

    #[test]
    fn spearman_matches_hand_computed_values() {
        // No ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)). Ranks a = 1,2,3,4,5; b = 2,1,4,3,5: d^2 sum = 4;
        // rho = 1 - 24 / 120 = 0.8.
        let a = [0.1, 0.5, 0.9, 1.3, 2.0];
        let b = [7.0, 3.0, 40.0, 9.0, 100.0];
        assert!((spearman(&a, &b).unwrap() - 0.8).abs() < 1e-12);
        // Perfectly reversed: -1; monotone transform: 1.
        assert!((spearman(&a, &[5.0, 4.0, 3.0, 2.0, 1.0]).unwrap() + 1.0).abs() < 1e-12);
        let squares: Vec<f64> = a.iter().map(|v| v * v * v).collect();
        assert!((spearman(&a, &squares).unwrap() - 1.0).abs() < 1e-12);
        // With ties: a = 1, 2, 2, 3 -> ranks 1, 2.5, 2.5, 4; b = 1, 3, 2, 4 -> ranks 1, 3, 2, 4.
        // Centred (mean 2.5): a = -1.5, 0, 0, 1.5; b = -1.5, 0.5, -0.5, 1.5.
        // sum ab = 2.25 + 2.25 = 4.5; sum aa = 4.5; sum bb = 2.25 + 0.25 + 0.25 + 2.25 = 5.
        // rho = 4.5 / sqrt(4.5 * 5) = 0.9486832980505138.
        let rho = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((rho - 4.5 / (22.5f64).sqrt()).abs() < 1e-12, "{rho}");
        assert!((rho - 0.948_683_298_050_513_8).abs() < 1e-12);
    }

    #[test]
    fn bad_columns_are_refused_with_a_reason() {
        assert!(spearman(&[1.0, 2.0], &[1.0]).unwrap_err().to_string().contains("same length"));
        assert!(spearman(&[1.0], &[1.0]).unwrap_err().to_string().contains("at least two"));
        assert!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]).unwrap_err().to_string().contains("same value"));
        assert!(spearman(&[1.0, f64::NAN], &[1.0, 2.0]).unwrap_err().to_string().contains("finite"));
    }

    #[test]
    fn named_columns_are_matched_by_layer() {
        let s = |v: &[(&str, f64)]| v.iter().map(|(n, x)| (n.to_string(), *x)).collect::<Vec<_>>();
        let sens = s(&[("conv1", 3.0), ("conv2", 2.0), ("fc", 1.0), ("extra", 9.0)]);
        let vinfo = s(&[("fc", 0.1), ("conv1", 0.9), ("conv2", 0.5), ("other", 0.0)]);
        let r = rank_agreement(&sens, &vinfo).unwrap();
        assert_eq!(r.layers, vec!["conv1", "conv2", "fc"]);
        assert_eq!(r.unmatched, vec!["extra", "other"]);
        assert!((r.spearman - 1.0).abs() < 1e-12);
        let err = rank_agreement(&s(&[("a", 1.0), ("a", 2.0)]), &sens).unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
        let err = rank_agreement(&s(&[("a", 1.0)]), &sens).unwrap_err().to_string();
        assert!(err.contains("at least two layers"), "{err}");
    }

    #[test]
    fn paired_differences_order_layers_whose_own_intervals_overlap() {
        // Two layers share a large per-sample spread; the second is always 1% above the first.
        let base: Vec<f64> = (0..64).map(|i| 1.0 + (i % 7) as f64).collect();
        let higher: Vec<f64> = base.iter().map(|v| v * 1.01).collect();
        let noisy: Vec<f64> = base.iter().enumerate().map(|(i, v)| v * if i % 2 == 0 { 1.05 } else { 0.95 }).collect();
        let cols = vec![("a".to_string(), base), ("b".to_string(), higher), ("c".to_string(), noisy)];
        let pairs = paired_comparisons(&cols, 500, 1).unwrap();
        assert_eq!(pairs.len(), 3);
        assert_eq!((pairs[0].first.as_str(), pairs[0].second.as_str()), ("a", "b"));
        assert_eq!(pairs[0].verdict, "less");
        assert!(pairs[0].difference_ci95[1] < 0.0);
        assert_eq!(pairs[1].verdict, "indistinguishable", "a and c: {:?}", pairs[1]);
        // Same seed, same intervals.
        assert_eq!(paired_comparisons(&cols, 500, 1).unwrap(), pairs);
    }

    #[test]
    fn the_order_text_marks_neighbours_that_the_comparisons_cannot_tell_apart() {
        let pair = |first: &str, second: &str, verdict: &str| PairComparison {
            first: first.into(),
            second: second.into(),
            difference: 0.0,
            difference_ci95: [0.0, 0.0],
            verdict: verdict.into(),
        };
        let means = vec![("a".to_string(), 1.0), ("b".to_string(), 3.0), ("c".to_string(), 2.0)];
        let pairs = vec![pair("a", "b", "less"), pair("a", "c", "indistinguishable"), pair("b", "c", "greater")];
        assert_eq!(order_text(&means, &pairs), "b > c ~ a");
        let pairs = vec![pair("a", "b", "less"), pair("a", "c", "less"), pair("b", "c", "indistinguishable")];
        assert_eq!(order_text(&means, &pairs), "b ~ c > a");
    }

    #[test]
    fn the_spearman_interval_is_narrow_for_clear_rankings_and_covers_zero_for_ties() {
        let col = |scale: f64, spread: f64, n: usize| -> Vec<f64> {
            (0..n).map(|i| scale + spread * ((i * 13 % 17) as f64 / 17.0 - 0.5)).collect()
        };
        let layers = ["l1", "l2", "l3", "l4"];
        let clear_a: Vec<PerSample> =
            layers.iter().enumerate().map(|(k, l)| (l.to_string(), col(k as f64, 0.1, 40))).collect();
        let clear_b: Vec<PerSample> =
            layers.iter().enumerate().map(|(k, l)| (l.to_string(), col(10.0 * k as f64, 0.5, 60))).collect();
        let ci = spearman_interval(&clear_a, &clear_b, 400, 3).unwrap();
        assert_eq!(ci, [1.0, 1.0]);
        assert_eq!(agreement_verdict(ci), "agree");
        // Every layer the same up to noise: the ranks are a coin toss.
        let tied: Vec<PerSample> = layers
            .iter()
            .enumerate()
            .map(|(k, l)| (l.to_string(), (0..40).map(|i| ((i * 7 + k * 11) % 13) as f64).collect()))
            .collect();
        let ci = spearman_interval(&tied, &clear_b, 400, 3).unwrap();
        assert!(ci[0] < 0.0 && ci[1] > 0.0, "{ci:?}");
        assert_eq!(agreement_verdict(ci), "indistinguishable");
        assert_eq!(spearman_interval(&clear_a[..1], &clear_b, 400, 3), None);
    }
}
