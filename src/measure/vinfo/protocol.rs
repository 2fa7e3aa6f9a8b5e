//! Which samples fit a model, which choose its hyperparameters and which are scored; the bootstrap interval.

use crate::rng::{self, Stream};
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// How the samples are divided between fitting, validation (hyperparameters, early stopping, residual
/// variance) and scoring.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Protocol {
    /// One seeded split: `test_fraction` of the samples are scored, `val_fraction` validate, the rest train.
    Split { val_fraction: f64, test_fraction: f64 },
    /// K-fold cross-fitting: every sample is scored once, by models fitted on the other folds; of those,
    /// `val_fraction` validate and the rest train.
    CrossFit { folds: usize, val_fraction: f64 },
}

impl Default for Protocol {
    fn default() -> Self {
        Protocol::CrossFit { folds: 5, val_fraction: 0.2 }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Protocol::Split { val_fraction, test_fraction } => write!(
                f,
                "split {:.0}/{:.0}/{:.0} (train/validation/test)",
                100.0 * (1.0 - val_fraction - test_fraction),
                100.0 * val_fraction,
                100.0 * test_fraction
            ),
            Protocol::CrossFit { folds, val_fraction } => {
                write!(f, "{folds}-fold cross-fitting ({:.0}% of each fitting part validates)", 100.0 * val_fraction)
            }
        }
    }
}

/// Sample indices of one fit: train, validate, score.
#[derive(Debug, Clone, PartialEq)]
pub struct Fold {
    pub train: Vec<i64>,
    pub val: Vec<i64>,
    pub test: Vec<i64>,
}

/// Smallest part sizes: a model needs a few training samples, the validation loss and the residual variance need
/// at least two, and so does a mean over scored samples.
pub const MIN_TRAIN: usize = 4;
pub const MIN_VAL: usize = 2;
pub const MIN_TEST: usize = 2;

/// `param`: the library's name of the fraction, which each front end renames to its flag.
fn check_fraction(param: &'static str, name: &str, v: f64) -> Result<()> {
    if !(v > 0.0 && v < 1.0) {
        return Err(crate::error::ParamError::sentence(param, format!("{name} must be in (0, 1), got {v}")));
    }
    Ok(())
}

impl Protocol {
    /// Checks the fractions and the number of folds.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Protocol::Split { val_fraction, test_fraction } => {
                check_fraction("val_fraction", "the validation fraction", val_fraction)?;
                check_fraction("test_fraction", "the test fraction", test_fraction)?;
                if val_fraction + test_fraction >= 1.0 {
                    bail!("validation and test fractions ({val_fraction} + {test_fraction}) leave no training samples");
                }
            }
            Protocol::CrossFit { folds, val_fraction } => {
                check_fraction("val_fraction", "the validation fraction", val_fraction)?;
                if folds < 2 {
                    crate::param_bail!("folds", "must be at least 2 (cross-fitting), got {folds}");
                }
                crate::limits::check_count("folds", folds, crate::limits::MAX_FOLDS)?;
            }
        }
        Ok(())
    }

    /// The fits for `n` samples, from `seed`. Errors when a part would be too small.
    pub fn folds(&self, n: usize, seed: u64) -> Result<Vec<Fold>> {
        self.validate()?;
        let mut perm: Vec<i64> = (0..n as i64).collect();
        perm.shuffle(&mut rng::rng(seed, Stream::Folds));
        let folds = match *self {
            Protocol::Split { val_fraction, test_fraction } => {
                let n_test = (n as f64 * test_fraction).round() as usize;
                let n_val = (n as f64 * val_fraction).round() as usize;
                let n_train = n.saturating_sub(n_test + n_val);
                vec![Fold {
                    test: perm[..n_test.min(n)].to_vec(),
                    val: perm[n_test.min(n)..(n_test + n_val).min(n)].to_vec(),
                    train: perm[(n - n_train)..].to_vec(),
                }]
            }
            Protocol::CrossFit { folds, val_fraction } => {
                if folds > n {
                    bail!("too few samples: {n} samples cannot make {folds} cross-fitting folds");
                }
                (0..folds)
                    .map(|k| {
                        let (lo, hi) = (k * n / folds, (k + 1) * n / folds);
                        let rest: Vec<i64> = perm[..lo].iter().chain(&perm[hi..]).copied().collect();
                        let n_val = (rest.len() as f64 * val_fraction).round() as usize;
                        Fold { test: perm[lo..hi].to_vec(), val: rest[..n_val].to_vec(), train: rest[n_val..].to_vec() }
                    })
                    .collect()
            }
        };
        for f in &folds {
            if f.train.len() < MIN_TRAIN || f.val.len() < MIN_VAL || f.test.len() < MIN_TEST {
                bail!(
                    "too few samples: {n} samples give {} training, {} validation and {} test samples under {self}; \
                     need at least {MIN_TRAIN}, {MIN_VAL} and {MIN_TEST}",
                    f.train.len(),
                    f.val.len(),
                    f.test.len()
                );
            }
        }
        Ok(folds)
    }
}

/// Percentile bootstrap 95% interval of the mean of `values`: `resamples` resamples with replacement, seeded
/// ([`crate::stats::bootstrap_means`]); NaN without values or resamples.
pub fn bootstrap_ci(values: &[f64], resamples: usize, seed: u64) -> [f64; 2] {
    if values.is_empty() || resamples == 0 {
        return [f64::NAN, f64::NAN];
    }
    crate::stats::bootstrap_means(&[values], resamples, seed)[0].1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_fitting_scores_every_sample_once_and_parts_are_disjoint() {
        let folds = Protocol::default().folds(103, 7).unwrap();
        let mut scored: Vec<i64> = folds.iter().flat_map(|f| f.test.clone()).collect();
        scored.sort();
        assert_eq!(scored, (0..103).collect::<Vec<_>>());
        for f in &folds {
            let mut all: Vec<i64> = f.train.iter().chain(&f.val).chain(&f.test).copied().collect();
            all.sort();
            assert_eq!(all, (0..103).collect::<Vec<_>>());
        }
        assert_eq!(folds, Protocol::default().folds(103, 7).unwrap());
        assert_ne!(folds, Protocol::default().folds(103, 8).unwrap());
    }

    #[test]
    fn split_sizes_and_too_few_samples() {
        let f = &Protocol::Split { val_fraction: 0.2, test_fraction: 0.2 }.folds(100, 0).unwrap()[0];
        assert_eq!((f.train.len(), f.val.len(), f.test.len()), (60, 20, 20));
        let e = Protocol::Split { val_fraction: 0.2, test_fraction: 0.2 }.folds(6, 0).unwrap_err();
        assert!(e.to_string().starts_with("too few samples"), "{e}");
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_shrinks_with_n() {
        let small: Vec<f64> = (0..100).map(|i| (i % 10) as f64).collect();
        let large: Vec<f64> = (0..10000).map(|i| (i % 10) as f64).collect();
        let [a, b] = bootstrap_ci(&small, 1000, 1);
        let [c, d] = bootstrap_ci(&large, 1000, 1);
        assert!(a < 4.5 && 4.5 < b && c < 4.5 && 4.5 < d);
        // The standard error of the mean is sd/sqrt(n) = 2.87/10 for n = 100, so the width is about 1.1; with
        // n = 10000 it is 10 times smaller.
        assert!((b - a - 1.13).abs() < 0.2, "{a} {b}");
        assert!((d - c) < (b - a) / 5.0);
    }
}
