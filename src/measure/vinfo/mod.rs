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
//! use gradleak::measure::vinfo::{estimate, EstimateOptions, Family, Target};
//! # fn main() -> anyhow::Result<()> {
//! let g = tch::Tensor::randn([500, 64], (tch::Kind::Float, tch::Device::Cpu));
//! let labels = tch::Tensor::randint(10, [500], (tch::Kind::Int64, tch::Device::Cpu));
//! let est = estimate(&g, &Target::Categorical(labels), &Family::Linear, &EstimateOptions::default())?;
//! println!("{:.3} bits [{:.3}, {:.3}]", est.bits, est.ci95[0], est.ci95[1]);
//! # Ok(()) }
//! ```

mod linear;
mod mlp;
mod model;
mod protocol;

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use crate::rng::{self, Stream};

pub use linear::{lbfgs, LogisticRegression, RidgeGaussian};
pub use mlp::{Mlp, MlpOptions};
pub use model::{
    gaussian_log_prob, ClassFrequencies, ConditionalModel, GaussianMarginal, Part, Prediction, Standardiser,
};
pub use protocol::{bootstrap_ci, Fold, Protocol};

/// Hidden sizes of the MLP family when none are given.
pub const DEFAULT_HIDDEN: [i64; 1] = [128];

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

/// The predictive family V.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Family {
    /// Logistic regression (categorical) or ridge regression with a Gaussian likelihood (continuous).
    Linear,
    /// A ReLU MLP with these hidden layer sizes.
    Mlp { hidden: Vec<i64> },
}

impl Family {
    /// The MLP with the default hidden sizes.
    pub fn mlp() -> Self {
        Family::Mlp { hidden: DEFAULT_HIDDEN.to_vec() }
    }

    /// Short name: `linear` or `mlp`.
    pub fn name(&self) -> &'static str {
        match self {
            Family::Linear => "linear",
            Family::Mlp { .. } => "mlp",
        }
    }

    /// Parses `linear`, `mlp`, `mlp:256,128` (hidden sizes) or `all` (linear and the default MLP).
    pub fn parse_list(s: &str) -> Result<Vec<Family>> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(vec![Family::Linear, Family::mlp()]);
        }
        s.split('+').map(str::parse).collect()
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Family::Linear => f.write_str("linear"),
            Family::Mlp { hidden } => {
                let h: Vec<String> = hidden.iter().map(|h| h.to_string()).collect();
                write!(f, "mlp:{}", h.join(","))
            }
        }
    }
}

impl FromStr for Family {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let (name, hidden) = match s.split_once(':') {
            Some((n, h)) => (n, Some(h)),
            None => (s.as_str(), None),
        };
        match (name, hidden) {
            ("linear", None) => Ok(Family::Linear),
            ("mlp", None) => Ok(Family::mlp()),
            ("mlp", Some(h)) => {
                let hidden: Result<Vec<i64>, _> = h.split(',').map(|x| x.trim().parse::<i64>()).collect();
                match hidden {
                    Ok(hidden) if !hidden.is_empty() && hidden.iter().all(|&x| x > 0) => Ok(Family::Mlp { hidden }),
                    _ => bail!("family '{s}': expected hidden sizes as positive integers, e.g. mlp:256,128"),
                }
            }
            _ => bail!("unknown family '{s}'; expected linear, mlp, mlp:<hidden sizes> or all"),
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
    /// Continuous targets: the smallest variance of a dimension, as a fraction of that dimension's variance in the
    /// fitting data (dimensions that are constant there use the fraction of the mean variance over dimensions).
    pub variance_floor: f64,
    pub mlp: MlpOptions,
}

impl Default for EstimateOptions {
    fn default() -> Self {
        EstimateOptions {
            seed: 0,
            protocol: Protocol::default(),
            bootstrap: 1000,
            variance_floor: 1e-4,
            mlp: MlpOptions::default(),
        }
    }
}

/// The result of [`estimate`]: held-out entropies, their difference, and fit diagnostics.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VInfoEstimate {
    /// `linear` or `mlp:<hidden sizes>`.
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
    pub seed: u64,
    /// What each fit chose (regularisation, epochs, validation losses).
    pub fits: Vec<serde_json::Value>,
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

/// Target after checks: class indices or an f64 matrix.
enum Prepared {
    Classes { y: Tensor, classes: i64 },
    Values { y: Tensor, floor: Tensor },
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

/// Features as an (N, D) f64 matrix: (N,) becomes (N, 1); more dimensions are flattened per sample.
fn prepare_features(features: &Tensor) -> Result<Tensor> {
    let size = features.size();
    if size.is_empty() {
        bail!("features: expected an (N, D) array, got a scalar");
    }
    let n = size[0];
    let x = features.to_kind(Kind::Double).reshape([n, -1]).contiguous();
    if x.size()[1] == 0 {
        bail!("features: no columns (shape {size:?})");
    }
    check_finite("features", &x)?;
    Ok(x)
}

fn prepare_target(target: &Target, n: i64, variance_floor: f64) -> Result<Prepared> {
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
            for c in &mut codes {
                *c = distinct.binary_search(c).unwrap() as i64;
            }
            Ok(Prepared::Classes { y: Tensor::from_slice(&codes), classes: distinct.len() as i64 })
        }
        Target::Continuous(_) => {
            let y = t.to_kind(Kind::Double).reshape([n, -1]).contiguous();
            if y.size()[1] == 0 {
                bail!("continuous target: no dimensions (shape {size:?})");
            }
            check_finite("continuous target", &y)?;
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
            Ok(Prepared::Values { y, floor })
        }
    }
}

fn bits(nats: f64) -> f64 {
    nats / std::f64::consts::LN_2
}

/// Estimates `I_V(G -> Y)` for one family. `features`: (N, D) (more dimensions are flattened per sample). See the
/// module documentation and `docs/vinfo.md`.
pub fn estimate(features: &Tensor, target: &Target, family: &Family, opts: &EstimateOptions) -> Result<VInfoEstimate> {
    let start = Instant::now();
    let x = prepare_features(features)?;
    let (n, d) = (x.size()[0], x.size()[1]);
    let prepared = prepare_target(target, n, opts.variance_floor)?;
    if opts.bootstrap == 0 {
        bail!("bootstrap resamples must be at least 1");
    }
    if let Family::Mlp { hidden } = family {
        if hidden.is_empty() || hidden.iter().any(|&h| h < 1) {
            bail!("MLP hidden sizes must be positive, got {hidden:?}");
        }
        opts.mlp.validate()?;
    }
    let folds = opts.protocol.folds(n as usize, opts.seed)?;
    let y = match &prepared {
        Prepared::Classes { y, .. } | Prepared::Values { y, .. } => y,
    };
    let mut pvi_index = Vec::new();
    let mut lp_null_all = Vec::new();
    let mut lp_cond_all = Vec::new();
    let (mut correct, mut null_correct, mut sse, mut sst) = (0i64, 0i64, 0.0, 0.0);
    let mut fits = Vec::new();
    for (k, fold) in folds.iter().enumerate() {
        let select = |idx: &[i64]| {
            let i = Tensor::from_slice(idx);
            (x.index_select(0, &i), y.index_select(0, &i))
        };
        let (xtr, ytr) = select(&fold.train);
        let (xva, yva) = select(&fold.val);
        let (xte, yte) = select(&fold.test);
        let train = Part { x: &xtr, y: &ytr };
        let val = Part { x: &xva, y: &yva };
        let seed = rng::derive(opts.seed, Stream::FoldFit { fold: k as u64 });
        let (mut null, mut cond): (Box<dyn ConditionalModel>, Box<dyn ConditionalModel>) = match (&prepared, family) {
            (Prepared::Classes { classes, .. }, Family::Linear) => {
                (Box::new(ClassFrequencies::new(*classes)), Box::new(LogisticRegression::new(*classes)))
            }
            (Prepared::Classes { classes, .. }, Family::Mlp { hidden }) => (
                Box::new(ClassFrequencies::new(*classes)),
                Box::new(Mlp::classifier(*classes, hidden, &opts.mlp, seed)),
            ),
            (Prepared::Values { floor, .. }, Family::Linear) => {
                (Box::new(GaussianMarginal::new(floor)), Box::new(RidgeGaussian::new(floor)))
            }
            (Prepared::Values { floor, .. }, Family::Mlp { hidden }) => {
                (Box::new(GaussianMarginal::new(floor)), Box::new(Mlp::gaussian(floor, hidden, &opts.mlp, seed)))
            }
        };
        null.fit(train, val).context("fitting f[∅]")?;
        cond.fit(train, val).with_context(|| format!("fitting the {family} family"))?;
        let p_null = null.predict(&xte)?;
        let p_cond = cond.predict(&xte)?;
        lp_null_all.push(p_null.log_prob(&yte));
        lp_cond_all.push(p_cond.log_prob(&yte));
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
        fits.push(cond.summary());
        pvi_index.extend_from_slice(&fold.test);
    }
    let lp_null = Vec::<f64>::try_from(Tensor::cat(&lp_null_all, 0))?;
    let lp_cond = Vec::<f64>::try_from(Tensor::cat(&lp_cond_all, 0))?;
    // Sort by sample index so that `pvi` lines up with the input order.
    let mut order: Vec<usize> = (0..pvi_index.len()).collect();
    order.sort_by_key(|&i| pvi_index[i]);
    let pvi: Vec<f64> = order.iter().map(|&i| bits(lp_cond[i] - lp_null[i])).collect();
    let pvi_index: Vec<i64> = order.iter().map(|&i| pvi_index[i]).collect();
    let m = pvi.len() as f64;
    let h_null_bits = -lp_null.iter().map(|&v| bits(v)).sum::<f64>() / m;
    let h_cond_bits = -lp_cond.iter().map(|&v| bits(v)).sum::<f64>() / m;
    let mean_pvi = pvi.iter().sum::<f64>() / m;
    if !mean_pvi.is_finite() {
        bail!("the estimate is not finite (h_null {h_null_bits} bits, h_cond {h_cond_bits} bits)");
    }
    let ci95 = bootstrap_ci(&pvi, opts.bootstrap, rng::derive(opts.seed, Stream::VinfoBootstrap));
    let (target_dims, continuous) = match &prepared {
        Prepared::Classes { classes, .. } => (*classes as usize, false),
        Prepared::Values { y, .. } => (y.size()[1] as usize, true),
    };
    Ok(VInfoEstimate {
        family: family.to_string(),
        target: target.kind_name().to_string(),
        bits: mean_pvi,
        ci95,
        h_null_bits,
        h_cond_bits,
        bits_per_dim: continuous.then(|| mean_pvi / target_dims as f64),
        r2: continuous.then(|| 1.0 - sse / sst),
        mse: continuous.then(|| sse / (m * target_dims as f64)),
        accuracy: (!continuous).then(|| correct as f64 / m),
        null_accuracy: (!continuous).then(|| null_correct as f64 / m),
        n_samples: n as usize,
        n_train: folds[0].train.len(),
        n_val: folds[0].val.len(),
        n_test: pvi.len(),
        n_features: d as usize,
        target_dims,
        protocol: opts.protocol,
        seed: opts.seed,
        fits,
        seconds: start.elapsed().as_secs_f64(),
        pvi,
        pvi_index,
    })
}
