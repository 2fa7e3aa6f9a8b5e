//! The estimator: checks and prepares features and target, fits the family fold by fold and turns the held-out
//! log-likelihoods into pointwise V-information, the estimate and its bootstrap interval.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::model::{share_unseen_classes, Part, Prediction};
use super::protocol::{bootstrap_ci, Fold};
use super::{EstimateOptions, Predictor, Target, VInfoEstimate};
use crate::rng::{self, Stream};

/// A target after checks: class indices or an f64 matrix (with the variance floor of each dimension).
pub(crate) enum PreparedTarget {
    Classes {
        y: Tensor,
        classes: i64,
    },
    /// `scale_log2`: the exponent of the power of two the values were multiplied by ([`rescaling`]; 0 almost
    /// always).
    Values {
        y: Tensor,
        floor: Tensor,
        scale_log2: i32,
    },
}

/// Counts non-finite entries of a 2-D f64 tensor and names the first.
fn check_finite(what: &str, t: &Tensor) -> Result<()> {
    let bad = t.isfinite().logical_not();
    let count = bad.sum(Kind::Int64).int64_value(&[]);
    if count > 0 {
        let first = bad.view([-1]).nonzero().int64_value(&[0, 0]);
        let cols = t.size()[1].max(1);
        bail!(
            "{what}: {count} non-finite value{} (NaN or infinite); the first at sample {}, column {}",
            if count == 1 { "" } else { "s" },
            first / cols,
            first % cols
        );
    }
    Ok(())
}

/// Magnitudes within which squares and sums of squares stay normal f64 numbers: 2^-500 .. 2^500.
const SAFE_LOG2_MAGNITUDE: f64 = 500.0;

/// The exponent e of the power of two 2^e that brings the largest magnitude of `t` to [1, 2), when it lies outside
/// 2^±[`SAFE_LOG2_MAGNITUDE`]; `None` otherwise (and for an all-zero `t`). Multiplying by a power of two is exact,
/// and every family is invariant to one scale of the whole feature matrix (or target): features of 1e200 or 1e-200
/// give the answer standardised ones give, where squares would overflow to infinity or underflow to 0.
fn rescaling(t: &Tensor) -> Option<i32> {
    let max = t.abs().max().double_value(&[]);
    let log2 = max.log2();
    (max > 0.0 && log2.abs() > SAFE_LOG2_MAGNITUDE).then(|| -(log2.floor() as i32))
}

/// `x` times 2^`e`, in steps that stay within f64: a subnormal 1e-320 needs 2^1063, which is not a finite f64.
fn times_power_of_two(x: Tensor, e: i32) -> Tensor {
    let (half, rest) = (e / 2, e - e / 2);
    x * 2f64.powi(half) * 2f64.powi(rest)
}

/// Features as an (N, D) f64 matrix: (N,) becomes (N, 1); more dimensions are flattened per sample.
fn prepare_features(features: &Tensor) -> Result<Tensor> {
    let size = features.size();
    if size.is_empty() {
        bail!("features: expected an (N, D) array, got a scalar");
    }
    let n = size[0];
    if n == 0 {
        bail!("features: no samples (shape {size:?}); expected one row per sample");
    }
    let x = features.to_kind(Kind::Double).reshape([n, -1]).contiguous();
    if x.size()[1] == 0 {
        bail!("features: no columns (shape {size:?})");
    }
    check_finite("features", &x)?;
    Ok(match rescaling(&x) {
        Some(e) => times_power_of_two(x, e),
        None => x,
    })
}

fn prepare_target(target: &Target, n: i64, variance_floor: f64) -> Result<PreparedTarget> {
    let t = target.tensor();
    let size = t.size();
    if size.is_empty() {
        bail!("target: expected one value or row per sample, got a scalar");
    }
    if size[0] != n {
        bail!("features have {n} samples but the target has {}", size[0]);
    }
    match target {
        Target::Categorical(_) => {
            if size.len() != 1 && !(size.len() == 2 && size[1] == 1) {
                bail!("categorical target: expected one class per sample, shape (N,), got {size:?}");
            }
            let v = t.to_kind(Kind::Double).reshape([n, 1]);
            check_finite("categorical target", &v)?;
            let values = Vec::<f64>::try_from(v.view([-1]))?;
            if let Some(i) = values.iter().position(|x| x.fract() != 0.0) {
                bail!("categorical target: value {} at sample {i} is not an integer class code", values[i]);
            }
            let mut codes: Vec<i64> = values.iter().map(|&x| x as i64).collect();
            let mut distinct = codes.clone();
            distinct.sort_unstable();
            distinct.dedup();
            if distinct.len() < 2 {
                bail!("categorical target: only one class ({}) in {n} samples; nothing to predict", distinct[0]);
            }
            let mut counts = vec![0usize; distinct.len()];
            for c in &mut codes {
                let index = distinct.binary_search(c).expect("every code is among the distinct ones");
                counts[index] += 1;
                *c = index as i64;
            }
            // A class seen in one sample is fitted or scored, never both: it can add nothing to the estimate (the
            // unseen-class rule, `share_unseen_classes`), only cost, as a softmax output per class.
            let singletons = counts.iter().filter(|&&k| k == 1).count();
            if 2 * singletons > distinct.len() {
                bail!(
                    "categorical target: {singletons} of its {} classes occur in one sample only; a class seen once \
                     is never both fitted and scored, so nothing about it can be measured (merge rare classes into \
                     one, or give more samples of each)",
                    distinct.len()
                );
            }
            let classes = distinct.len() as i64;
            if classes * n > crate::limits::MAX_CLASS_SAMPLES {
                bail!(
                    "categorical target: {classes} classes x {n} samples is beyond what the families fit in \
                     reasonable time (at most {} class-sample pairs); merge rare classes or measure fewer samples",
                    crate::limits::MAX_CLASS_SAMPLES
                );
            }
            Ok(PreparedTarget::Classes { y: Tensor::from_slice(&codes), classes })
        }
        Target::Continuous(_) => {
            let y = t.to_kind(Kind::Double).reshape([n, -1]).contiguous();
            if y.size()[1] == 0 {
                bail!("continuous target: no dimensions (shape {size:?})");
            }
            check_finite("continuous target", &y)?;
            let scale_log2 = rescaling(&y).unwrap_or(0);
            let y = if scale_log2 == 0 { y } else { times_power_of_two(y, scale_log2) };
            let var = y.var_dim(0, false, false);
            let mean_var = var.mean(Kind::Double).double_value(&[]);
            if mean_var <= 0.0 {
                bail!("continuous target: every dimension is constant; nothing to predict");
            }
            if !(variance_floor > 0.0 && variance_floor < 1.0) {
                bail!("the variance floor must be in (0, 1), got {variance_floor}");
            }
            // Dimensions constant over all samples fall back to a fraction of the mean variance.
            let floor = var.where_self(&var.gt(0.0), &(var.zeros_like() + mean_var)) * variance_floor;
            Ok(PreparedTarget::Values { y, floor, scale_log2 })
        }
    }
}

fn bits(nats: f64) -> f64 {
    nats / std::f64::consts::LN_2
}

/// What one fit scored: the log-likelihoods of the held-out samples under f[∅] and f[G], and the counts behind
/// accuracy and R^2.
struct FoldScores {
    lp_null: Tensor,
    lp_cond: Tensor,
    correct: i64,
    null_correct: i64,
    sse: f64,
    sst: f64,
    summary: serde_json::Value,
    constant: bool,
    warnings: Vec<String>,
    /// Scored samples of a class that no fitting sample had.
    unseen: i64,
}

/// A V-information estimator: a predictor family and the options of the estimate (protocol, bootstrap, seed).
///
/// Its unit of work is one fit: f[∅] and f[G] fitted on a fold's training and validation parts and scored on its
/// held-out part ([`Estimator::fit_fold`]). The protocol wraps it: one split, or cross-fitting over K folds so that
/// every sample is scored once; the PVI of the scored samples then gives the estimate and its interval.
#[derive(Debug, Clone)]
pub struct Estimator {
    pub predictor: Predictor,
    pub options: EstimateOptions,
}

impl Estimator {
    pub fn new(predictor: Predictor, options: EstimateOptions) -> Self {
        Estimator { predictor, options }
    }

    /// Fits f[∅] and f[G] on `fold`'s training and validation samples and scores its test samples. `k`: the fold's
    /// index, which with the repetition's `seed` keys the fit's random stream.
    fn fit_fold(&self, x: &Tensor, target: &PreparedTarget, fold: &Fold, k: usize, seed: u64) -> Result<FoldScores> {
        let y = match target {
            PreparedTarget::Classes { y, .. } | PreparedTarget::Values { y, .. } => y,
        };
        let select = |idx: &[i64]| {
            let i = Tensor::from_slice(idx);
            (x.index_select(0, &i), y.index_select(0, &i))
        };
        let (xtr, ytr) = select(&fold.train);
        let (xva, yva) = select(&fold.val);
        let (xte, yte) = select(&fold.test);
        let train = Part { x: &xtr, y: &ytr };
        let val = Part { x: &xva, y: &yva };
        let seed = rng::derive(seed, Stream::FoldFit { fold: k as u64 });
        let mut null = self.predictor.null_model(target);
        let mut cond = self.predictor.conditional_model(target, seed);
        null.fit(train, val).context("fitting f[∅]")?;
        cond.fit(train, val).with_context(|| format!("fitting the {} family", self.predictor))?;
        let p_null = null.predict(&xte)?;
        let mut p_cond = cond.predict(&xte)?;
        let mut unseen = 0;
        if let (PreparedTarget::Classes { classes, .. }, Prediction::Categorical(ln), Prediction::Categorical(lc)) =
            (target, &p_null, &p_cond)
        {
            let seen = Tensor::cat(&[&ytr, &yva], 0).bincount(None::<Tensor>, *classes).gt(0);
            unseen = seen.index_select(0, &yte).logical_not().sum(Kind::Int64).int64_value(&[]);
            p_cond = Prediction::Categorical(share_unseen_classes(ln, lc, &seen));
        }
        let (mut correct, mut null_correct, mut sse, mut sst) = (0i64, 0i64, 0.0, 0.0);
        match (&p_null, &p_cond) {
            (Prediction::Categorical(ln), Prediction::Categorical(lc)) => {
                correct += lc.argmax(1, false).eq_tensor(&yte).sum(Kind::Int64).int64_value(&[]);
                null_correct += ln.argmax(1, false).eq_tensor(&yte).sum(Kind::Int64).int64_value(&[]);
            }
            (Prediction::Gaussian { mean: mn, .. }, Prediction::Gaussian { mean: mc, .. }) => {
                sse += (&yte - mc).square().sum(Kind::Double).double_value(&[]);
                sst += (&yte - mn).square().sum(Kind::Double).double_value(&[]);
            }
            _ => bail!("internal error: null and conditional predictions of different kinds"),
        }
        Ok(FoldScores {
            lp_null: p_null.log_prob(&yte),
            lp_cond: p_cond.log_prob(&yte),
            correct,
            null_correct,
            sse,
            sst,
            summary: cond.summary(),
            constant: cond.constant(),
            warnings: cond.warnings(),
            unseen,
        })
    }

    /// Estimates `I_V(G -> Y)`. `features`: (N, D) (more dimensions are flattened per sample). See the module
    /// documentation and `docs/vinfo.md`.
    pub fn estimate(&self, features: &Tensor, target: &Target) -> Result<VInfoEstimate> {
        let (predictor, opts) = (&self.predictor, &self.options);
        let start = Instant::now();
        let x = prepare_features(features)?;
        let (n, d) = (x.size()[0], x.size()[1]);
        opts.validate()?;
        predictor.validate()?;
        let prepared = prepare_target(target, n, opts.variance_floor)?;
        let mut pvi_index = Vec::new();
        let mut lp_null_all = Vec::new();
        let mut lp_cond_all = Vec::new();
        let (mut correct, mut null_correct, mut sse, mut sst) = (0i64, 0i64, 0.0, 0.0);
        let mut fits = Vec::new();
        let (mut constant_fits, mut warnings, mut unseen) = (0usize, Vec::new(), 0i64);
        // The protocol is repeated with independent partitions; repetition 0 uses the seed itself.
        let mut first_folds = None;
        let mut repeat_of = Vec::new();
        for r in 0..opts.repeats {
            let seed = opts.repetition_seed(r);
            let folds = opts.protocol.folds(n as usize, seed)?;
            for (k, fold) in folds.iter().enumerate() {
                let scores = self.fit_fold(&x, &prepared, fold, k, seed)?;
                lp_null_all.push(scores.lp_null);
                lp_cond_all.push(scores.lp_cond);
                correct += scores.correct;
                null_correct += scores.null_correct;
                sse += scores.sse;
                sst += scores.sst;
                fits.push(scores.summary);
                constant_fits += usize::from(scores.constant);
                for w in scores.warnings {
                    if !warnings.contains(&w) {
                        warnings.push(w);
                    }
                }
                unseen += scores.unseen;
                pvi_index.extend_from_slice(&fold.test);
                repeat_of.extend(std::iter::repeat_n(r, fold.test.len()));
            }
            first_folds.get_or_insert(folds);
        }
        let folds = first_folds.expect("at least one repetition");
        if unseen > 0 {
            warnings.push(format!(
                "{unseen} of {} scored samples had a class that no fitting sample had; they add 0 bits (the \
                 unseen-class rule of docs/vinfo.md)",
                pvi_index.len()
            ));
        }
        let lp_null = Vec::<f64>::try_from(Tensor::cat(&lp_null_all, 0))?;
        let lp_cond = Vec::<f64>::try_from(Tensor::cat(&lp_cond_all, 0))?;
        // Per sample, the mean PVI over the repetitions that scored it, by sample index so that `pvi` lines up with
        // the input order.
        let mut order: Vec<usize> = (0..pvi_index.len()).collect();
        order.sort_by_key(|&i| pvi_index[i]);
        let (mut pvi, mut index, mut count) = (Vec::<f64>::new(), Vec::<i64>::new(), Vec::<f64>::new());
        for &i in &order {
            let value = bits(lp_cond[i] - lp_null[i]);
            if index.last() == Some(&pvi_index[i]) {
                *pvi.last_mut().expect("a sample") += value;
                *count.last_mut().expect("a sample") += 1.0;
            } else {
                pvi.push(value);
                index.push(pvi_index[i]);
                count.push(1.0);
            }
        }
        let pvi: Vec<f64> = pvi.iter().zip(&count).map(|(v, c)| v / c).collect();
        let pvi_index = index;
        let m = pvi.len() as f64;
        let scored = lp_null.len() as f64;
        let h_null_bits = -lp_null.iter().map(|&v| bits(v)).sum::<f64>() / scored;
        let h_cond_bits = -lp_cond.iter().map(|&v| bits(v)).sum::<f64>() / scored;
        let mean_pvi = pvi.iter().sum::<f64>() / m;
        if !mean_pvi.is_finite() {
            bail!("the estimate is not finite (h_null {h_null_bits} bits, h_cond {h_cond_bits} bits)");
        }
        // Each repetition's own estimate: their spread is the fit's variability (which samples fit, which score).
        let repeat_bits: Vec<f64> = (0..opts.repeats)
            .map(|r| {
                let values: Vec<f64> =
                    (0..lp_null.len()).filter(|&i| repeat_of[i] == r).map(|i| bits(lp_cond[i] - lp_null[i])).collect();
                values.iter().sum::<f64>() / values.len().max(1) as f64
            })
            .collect();
        let sampling = bootstrap_ci(&pvi, opts.bootstrap, rng::derive(opts.seed, Stream::VinfoBootstrap));
        let fit_se = fit_standard_error(&repeat_bits);
        let ci95 = fold_in(sampling, mean_pvi, fit_se);
        let (target_dims, continuous, scale_log2) = match &prepared {
            PreparedTarget::Classes { classes, .. } => (*classes as usize, false, 0),
            PreparedTarget::Values { y, scale_log2, .. } => (y.size()[1] as usize, true, *scale_log2),
        };
        let scale_bits = f64::from(scale_log2);
        Ok(VInfoEstimate {
            family: predictor.to_string(),
            target: target.kind_name().to_string(),
            bits: mean_pvi,
            ci95,
            // Differential entropies in the target's own units: h(Y) = h(sY) - K log2 s.
            h_null_bits: h_null_bits - target_dims as f64 * scale_bits * f64::from(continuous),
            h_cond_bits: h_cond_bits - target_dims as f64 * scale_bits * f64::from(continuous),
            bits_per_dim: continuous.then(|| mean_pvi / target_dims as f64),
            r2: continuous.then(|| 1.0 - sse / sst),
            // In the target's own units.
            mse: continuous.then(|| {
                let mse = sse / (scored * target_dims as f64);
                mse * 2f64.powi(-scale_log2) * 2f64.powi(-scale_log2)
            }),
            accuracy: (!continuous).then(|| correct as f64 / scored),
            null_accuracy: (!continuous).then(|| null_correct as f64 / scored),
            n_samples: n as usize,
            n_train: folds[0].train.len(),
            n_val: folds[0].val.len(),
            n_test: pvi.len(),
            n_features: d as usize,
            target_dims,
            protocol: opts.protocol,
            repeats: opts.repeats,
            repeat_bits,
            fit_se,
            seed: opts.seed,
            fits,
            constant_fits,
            warnings,
            seconds: start.elapsed().as_secs_f64(),
            pvi,
            pvi_index,
        })
    }
}

impl EstimateOptions {
    /// Checks the protocol and the counts: bootstrap resamples and repetitions at least 1 and at most their limits
    /// (`limits::MAX_BOOTSTRAP`, `limits::MAX_REPEATS`), so that neither can exhaust memory or run for hours.
    pub fn validate(&self) -> Result<()> {
        self.protocol.validate()?;
        if !(self.variance_floor > 0.0 && self.variance_floor < 1.0) {
            let message = format!("the variance floor must be in (0, 1), got {}", self.variance_floor);
            return Err(crate::error::ParamError::sentence("variance_floor", message));
        }
        if self.bootstrap == 0 {
            crate::param_bail!("bootstrap", "must be at least 1, got 0");
        }
        crate::limits::check_count("bootstrap", self.bootstrap, crate::limits::MAX_BOOTSTRAP)?;
        if self.repeats == 0 {
            crate::param_bail!("repeats", "must be at least 1, got 0");
        }
        crate::limits::check_count("repeats", self.repeats, crate::limits::MAX_REPEATS)
    }

    /// The seed of repetition `r` of the protocol: the seed itself for the first, an independent one derived from it
    /// for the others.
    pub fn repetition_seed(&self, r: usize) -> u64 {
        if r == 0 {
            self.seed
        } else {
            rng::derive(self.seed, Stream::Repeat { repeat: r as u64 })
        }
    }

    /// Every fit of an estimate on `n` samples, in the order [`Estimator::estimate`] fits them: the protocol's
    /// folds of repetition 0, then of repetition 1, ... (`repeats` x folds in all). The same for every family,
    /// target and feature matrix with `n` samples.
    pub fn fits(&self, n: usize) -> Result<Vec<Fold>> {
        let mut fits = Vec::new();
        for r in 0..self.repeats {
            fits.extend(self.protocol.folds(n, self.repetition_seed(r))?);
        }
        Ok(fits)
    }
}

/// The standard error of the mean of the repetitions' estimates: the fit's variability left in the average
/// (0 with one repetition, where it cannot be measured).
fn fit_standard_error(repeat_bits: &[f64]) -> f64 {
    let r = repeat_bits.len();
    if r < 2 {
        return 0.0;
    }
    let mean = repeat_bits.iter().sum::<f64>() / r as f64;
    let var = repeat_bits.iter().map(|b| (b - mean).powi(2)).sum::<f64>() / (r - 1) as f64;
    (var / r as f64).sqrt()
}

/// Widens the sampling interval `[lo, hi]` around `point` by the fit's standard error, each side in quadrature with
/// 1.96 `fit_se` (independent sources of error add their variances).
fn fold_in(sampling: [f64; 2], point: f64, fit_se: f64) -> [f64; 2] {
    if fit_se == 0.0 {
        return sampling;
    }
    let fit = 1.96 * fit_se;
    let below = (point - sampling[0]).max(0.0);
    let above = (sampling[1] - point).max(0.0);
    [point - below.hypot(fit), point + above.hypot(fit)]
}
