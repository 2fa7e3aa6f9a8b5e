//! Agreement between two layer rankings: Spearman's rank correlation, ties given their average rank.
//!
//! Use it to compare a sensitivity column with a V-information column over the same layers: input sensitivity
//! against bits about the input, latent sensitivity against bits about the attribute. A value near 1 means both
//! measurements order the layers alike.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

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
}
