//! The predictive-family interface (fit on training data, log-probabilities of held-out data), the predictions it
//! returns, the two null models f[∅] and the feature standardiser every family shares.

use std::f64::consts::PI;

use anyhow::Result;
use tch::{Kind, Tensor};

/// Training or validation data of one fit: features (N, D) f64 and targets (class indices (N,) i64, or (N, K) f64).
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    pub x: &'a Tensor,
    pub y: &'a Tensor,
}

impl Part<'_> {
    pub fn len(&self) -> i64 {
        self.x.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a fitted model says about held-out samples.
#[derive(Debug)]
pub enum Prediction {
    /// Log-probabilities of every class, (N, C) f64, nats.
    Categorical(Tensor),
    /// A Gaussian with diagonal covariance: means (N, K) and variances (K,), or (N, K) when they differ by sample
    /// ([`TargetRange::predict`]), f64.
    Gaussian { mean: Tensor, var: Tensor },
}

/// Weight of the uniform distribution in every categorical prediction: the categorical families predict
/// (1 - e) p + e / C, so one confidently wrong held-out sample costs at most log2(C / e) bits (13.3 for 10 classes)
/// instead of hundreds, which let a handful of the few hundred scored victims swamp the estimate. A perfect
/// predictor loses -log2(1 - e + e / C) bits to it, about 0.0013 for 10 classes; the null model is mixed alike.
pub const UNIFORM_WEIGHT: f64 = 1e-3;

/// Mixes class log-probabilities (N, C) with the uniform distribution (see [`UNIFORM_WEIGHT`]).
pub fn mix_uniform(log_p: &Tensor) -> Tensor {
    let classes = *log_p.size().last().expect("class log-probabilities have a class dimension") as f64;
    let uniform = log_p.zeros_like() + (UNIFORM_WEIGHT / classes).ln();
    Tensor::stack(&[log_p + (1.0 - UNIFORM_WEIGHT).ln(), uniform], 0).logsumexp([0].as_slice(), false)
}

impl Prediction {
    /// A categorical prediction from a model's class log-probabilities, mixed with the uniform distribution.
    pub fn categorical(log_p: &Tensor) -> Prediction {
        Prediction::Categorical(mix_uniform(log_p))
    }

    /// Log-density (nats) of each held-out target: class indices (N,) i64 or values (N, K) f64. Returns (N,) f64.
    pub fn log_prob(&self, y: &Tensor) -> Tensor {
        match self {
            Prediction::Categorical(logp) => logp.gather(1, &y.unsqueeze(1), false).squeeze_dim(1),
            Prediction::Gaussian { mean, var } => gaussian_log_prob(y, mean, var),
        }
    }
}

/// Log-density (nats) of each row of `y` under independent Gaussians N(mean_ik, var_k), or N(mean_ik, var_ik) when
/// `var` is (N, K); (N,).
pub fn gaussian_log_prob(y: &Tensor, mean: &Tensor, var: &Tensor) -> Tensor {
    let r = y - mean;
    let quad = (&r * &r / var).sum_dim_intlist(1, false, Kind::Double);
    let log_var = (var * (2.0 * PI)).log();
    let norm = if var.dim() == 2 { log_var.sum_dim_intlist(1, false, Kind::Double) } else { log_var.sum(Kind::Double) };
    (quad + norm) * -0.5
}

/// Pseudo-observations with which each dimension's variance is shrunk towards the mean variance over dimensions.
pub const VARIANCE_SHRINKAGE: f64 = 10.0;

/// The variance per target dimension of a Gaussian model, from its residuals (n samples), shrunk towards the mean
/// over dimensions: (n v_k + m mean(v)) / (n + m) with m = [`VARIANCE_SHRINKAGE`], then floored.
///
/// Why: a dimension that is (nearly) constant where the variance is estimated (a border pixel, dark in all but one
/// of a few hundred samples) gets a variance near zero, and the one held-out sample where it is bright then costs
/// thousands of bits. Such dimensions swamp both entropies with noise, and their difference by more. The null
/// model and the conditional model are shrunk alike. Any variance is a member of the Gaussian family, so the
/// held-out log-loss stays an honest upper bound on H_V; shrinkage only makes it tighter and steadier.
pub fn shrunk_variance(residual: &Tensor, floor: &Tensor) -> Tensor {
    let n = residual.size()[0] as f64;
    let per_dim = residual.square().mean_dim(0, false, Kind::Double);
    let pooled = per_dim.mean(Kind::Double);
    ((per_dim * n + pooled * VARIANCE_SHRINKAGE) / (n + VARIANCE_SHRINKAGE)).maximum(floor)
}

/// The conditional Gaussian's variance per dimension: the null model's variance (as [`GaussianMarginal`] fits it on
/// training + validation) times the ratio of the predictor's squared validation residuals to the null model's, per
/// dimension, shrunk towards the pooled ratio with [`VARIANCE_SHRINKAGE`] pseudo-observations.
///
/// Estimating the ratio on the same validation samples for both models makes their sampling noise cancel: a
/// predictor that explains nothing gets ratio ~1 and the conditional entropy ~ the null one, instead of a variance
/// from fewer samples that misses rare bright pixels. Still one member of the Gaussian family, scored on held-out data.
pub fn conditional_variance(val_residual: &Tensor, train_y: &Tensor, val_y: &Tensor, floor: &Tensor) -> Tensor {
    let y = Tensor::cat(&[train_y, val_y], 0).to_kind(Kind::Double);
    let mean = y.mean_dim(0, false, Kind::Double);
    let null_var = shrunk_variance(&(&y - &mean), floor);
    let residual = val_residual.square().sum_dim_intlist(0, false, Kind::Double);
    let null_residual = (val_y.to_kind(Kind::Double) - &mean).square().sum_dim_intlist(0, false, Kind::Double);
    let pooled = residual.sum(Kind::Double) / null_residual.sum(Kind::Double).clamp_min(1e-300);
    let m = VARIANCE_SHRINKAGE;
    let ratio = (&residual + &null_var * &pooled * m) / (&null_residual + &null_var * m);
    (ratio * null_var).maximum(floor)
}

/// Scores continuous predictions of the validation part the way the estimator scores held-out samples: the
/// variance from [`conditional_variance`] and the mean PVI against
/// the null model f[∅] ([`GaussianMarginal`] on training + validation). Hyperparameters chosen by this score are
/// chosen for what is measured; the Gaussian log-loss with per-dimension residual variances, used before, weighed
/// a near-constant border pixel like a whole stroke and chose strengths that gave up most of the explained
/// variance.
pub struct GaussianValidation<'a> {
    train_y: &'a Tensor,
    val_y: &'a Tensor,
    floor: &'a Tensor,
    lp_null: Tensor,
}

impl<'a> GaussianValidation<'a> {
    pub fn new(train: Part<'a>, val: Part<'a>, floor: &'a Tensor) -> Self {
        let mut null = GaussianMarginal::new(floor);
        null.fit(train, val).expect("the Gaussian marginal fits any finite targets");
        let lp_null = null.log_prob(val.x, val.y).expect("fitted just above");
        GaussianValidation { train_y: train.y, val_y: val.y, floor, lp_null }
    }

    /// Mean validation PVI (bits) of the predicted means `pred` (N_val, K), clipped to the fitting targets' range,
    /// and the variance (K,) that goes with them. `excess`: the squared distance each prediction was clipped by
    /// ([`TargetRange::excess`]), added to the variance of that sample as held-out samples get it.
    pub fn score(&self, pred: &Tensor, excess: &Tensor) -> (f64, Tensor) {
        let var = conditional_variance(&(self.val_y - pred), self.train_y, self.val_y, self.floor);
        let lp = gaussian_log_prob(self.val_y, pred, &(excess + &var));
        let bits = (lp - &self.lp_null).mean(Kind::Double).double_value(&[]) / std::f64::consts::LN_2;
        (if bits.is_finite() { bits } else { f64::NEG_INFINITY }, var)
    }
}

/// The per-dimension range of the fitting targets (training and validation), to which the continuous families clip
/// their predicted means: a pixel is never predicted brighter than the brightest seen. A victim far outside the
/// training features then costs a bounded squared error instead of an arbitrary one (clipping also keeps R^2
/// meaningful).
///
/// What is clipped away is not thrown away: the squared distance between the prediction and the range is added to
/// that sample's variance ([`TargetRange::predict`]). A prediction beyond the range says that the target may lie
/// beyond it too; clipped alone, a held-out target outside the fitting range (a tail sample of an exact affine copy)
/// cost (distance^2 / 2 var) nats under a variance fitted to tiny residuals, thousands of bits, where the null model
/// pays a few. With the distance in the variance such a sample costs at most about what the null model pays
/// (`docs/vinfo.md`, "Predictions beyond the fitting range"), and a wild extrapolation to a target inside the range
/// costs the log of the distance, not its square. The variance is a function of the features, so the predictor is
/// still a member of a (heteroscedastic) Gaussian family.
#[derive(Debug)]
pub struct TargetRange {
    lo: Tensor,
    hi: Tensor,
}

impl TargetRange {
    pub fn fit(train_y: &Tensor, val_y: &Tensor) -> Self {
        let y = Tensor::cat(&[train_y, val_y], 0).to_kind(Kind::Double);
        TargetRange { lo: y.amin([0].as_slice(), false), hi: y.amax([0].as_slice(), false) }
    }

    /// Predicted means (N, K) clipped to the range.
    pub fn clip(&self, pred: &Tensor) -> Tensor {
        pred.clamp_tensor(Some(&self.lo), Some(&self.hi))
    }

    /// The squared distance of each predicted mean (N, K) from the range: 0 inside it.
    pub fn excess(&self, pred: &Tensor) -> Tensor {
        (pred - self.clip(pred)).square()
    }

    /// The Gaussian prediction around the means `pred` (N, K) clipped to the range, with variance `var` (K,) plus
    /// each sample's [`TargetRange::excess`].
    pub fn predict(&self, pred: &Tensor, var: &Tensor) -> Prediction {
        Prediction::Gaussian { mean: self.clip(pred), var: self.excess(pred) + var }
    }
}

/// The mean the null model predicts: the per-dimension mean of the training and validation targets.
pub fn null_mean(train_y: &Tensor, val_y: &Tensor) -> Tensor {
    Tensor::cat(&[train_y, val_y], 0).to_kind(Kind::Double).mean_dim(0, false, Kind::Double)
}

/// Per-dimension shrinkage of predictions towards the null mean, fitted on validation: the factor a_k in [0, 1]
/// that minimises the squared error of `mean_k + a_k (pred_k - mean_k)`. A dimension the predictor gets wrong (a
/// pixel constant in the training part that the network still moves) falls back to the null model's mean (a_k =
/// 0); the calibrated predictor is still a member of the family (its output layer scaled). Returns (K,) factors.
pub fn shrinkage_towards_mean(val_y: &Tensor, val_pred: &Tensor, mean: &Tensor) -> Tensor {
    let d = val_pred - mean;
    let r = val_y.to_kind(Kind::Double) - mean;
    let num = (&d * &r).sum_dim_intlist(0, false, Kind::Double);
    let den = d.square().sum_dim_intlist(0, false, Kind::Double);
    (num / den.clamp_min(1e-300)).clamp(0.0, 1.0)
}

/// A predictive family V (scikit-learn style): `fit` on the training part, with the validation part for
/// hyperparameters, early stopping and residual variances; then [`predict`](ConditionalModel::predict) on held-out
/// features. Every random choice comes from a seed given at construction.
pub trait ConditionalModel {
    /// Fits the model.
    fn fit(&mut self, train: Part<'_>, val: Part<'_>) -> Result<()>;
    /// The predictive distribution of held-out samples with features `x` (N, D) f64.
    fn predict(&self, x: &Tensor) -> Result<Prediction>;
    /// Log-probabilities (nats) of held-out targets, (N,) f64.
    fn log_prob(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        Ok(self.predict(x)?.log_prob(y))
    }
    /// What the fit chose (regularisation strength, epochs, ...), for the report.
    fn summary(&self) -> serde_json::Value;
    /// Whether the fit chose the constant predictor (the family's member that ignores the features).
    fn constant(&self) -> bool {
        false
    }
    /// What a user should know about the fit (an optimiser that hit its iteration cap, ...).
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Pseudo-counts (per class) the class prior tries, besides the uniform distribution (the limit of an infinite
/// pseudo-count): 2^-6 .. 2^8.
const PRIOR_PSEUDO_COUNTS_LOG2: std::ops::RangeInclusive<i32> = -6..=8;

/// The class distribution the null model f[∅] predicts, and every categorical family's constant predictor.
///
/// Class frequencies smoothed with a pseudo-count a per class, `(count_c + a) / (n + C a)`, with a chosen by the
/// leave-one-out log-likelihood of the fitting samples (closed form) among [`PRIOR_PSEUDO_COUNTS_LOG2`] and the
/// uniform distribution. Why: with many classes and few samples of each, add-one frequencies are noisier than the
/// uniform distribution, so a null model built from them is *worse* than knowing nothing (9.81 bits against
/// log2 500 = 8.97 for 500 classes and 1,000 samples), and any family that merely stays near uniform then reports
/// the difference as information. Choosing a by held-out likelihood keeps the null at least as good as uniform in
/// expectation: uniform is one of the candidates.
#[derive(Debug)]
pub struct ClassPrior {
    /// (C,) log-probabilities, nats.
    pub log_p: Tensor,
    /// The chosen pseudo-count per class; infinite for the uniform distribution.
    pub pseudo_count: f64,
}

impl ClassPrior {
    /// The prior of `classes` classes fitted on the class indices of `parts` together.
    pub fn fit(parts: &[&Tensor], classes: i64) -> ClassPrior {
        let counts = Tensor::cat(parts, 0).bincount(None::<Tensor>, classes).to_kind(Kind::Double);
        let counts = Vec::<f64>::try_from(&counts).expect("class counts are a vector");
        let n: f64 = counts.iter().sum();
        let c = classes as f64;
        // Leave-one-out log-likelihood: each sample predicted from the others' counts.
        let loo = |a: f64| -> f64 {
            counts.iter().filter(|&&k| k > 0.0).map(|&k| k * (k - 1.0 + a).ln()).sum::<f64>()
                - n * (n - 1.0 + c * a).ln()
        };
        let mut best = (-n * c.ln(), f64::INFINITY);
        for a in PRIOR_PSEUDO_COUNTS_LOG2.map(|k| 2f64.powi(k)) {
            let ll = loo(a);
            if ll > best.0 {
                best = (ll, a);
            }
        }
        let a = best.1;
        let p: Vec<f64> = if a.is_finite() {
            counts.iter().map(|k| (k + a) / (n + c * a)).collect()
        } else {
            vec![1.0 / c; counts.len()]
        };
        ClassPrior { log_p: Tensor::from_slice(&p).log(), pseudo_count: a }
    }

    /// The prior's prediction for `rows` samples, mixed with the uniform distribution like every categorical one.
    pub fn predict(&self, rows: i64) -> Prediction {
        let classes = self.log_p.size()[0];
        Prediction::categorical(&self.log_p.unsqueeze(0).expand([rows, classes], false))
    }

    /// Mean log-loss (nats) of the class indices `y` under the prior.
    pub fn log_loss(&self, y: &Tensor) -> f64 {
        -self.predict(y.size()[0]).log_prob(y).mean(Kind::Double).double_value(&[])
    }
}

/// f[∅] for class targets: the [`ClassPrior`] of the training and validation parts.
#[derive(Debug)]
pub struct ClassFrequencies {
    classes: i64,
    prior: Option<ClassPrior>,
}

impl ClassFrequencies {
    pub fn new(classes: i64) -> Self {
        ClassFrequencies { classes, prior: None }
    }
}

impl ConditionalModel for ClassFrequencies {
    fn fit(&mut self, train: Part<'_>, val: Part<'_>) -> Result<()> {
        self.prior = Some(ClassPrior::fit(&[train.y, val.y], self.classes));
        Ok(())
    }

    fn predict(&self, x: &Tensor) -> Result<Prediction> {
        let prior = self.prior.as_ref().ok_or_else(|| anyhow::anyhow!("class frequencies used before fit"))?;
        Ok(prior.predict(x.size()[0]))
    }

    fn summary(&self) -> serde_json::Value {
        let a = self.prior.as_ref().map(|p| p.pseudo_count);
        serde_json::json!({"pseudo_count": a.filter(|a| a.is_finite()), "uniform": a.is_some_and(f64::is_infinite)})
    }
}

/// Scores class predictions of the validation part the way the estimator scores held-out samples: mixed with the
/// uniform distribution, and with the unseen-class rule ([`share_unseen_classes`]) against the prior of the
/// training part. Without the rule here too, a validation sample of a class absent from the training part cost a
/// fitted model far more than the constant one, and the constant won where the features predict the other classes.
pub struct ClassValidation<'a> {
    y: &'a Tensor,
    prior: ClassPrior,
    seen: Tensor,
}

impl<'a> ClassValidation<'a> {
    pub fn new(train: Part<'_>, val: Part<'a>, classes: i64) -> Self {
        let seen = train.y.bincount(None::<Tensor>, classes).gt(0);
        ClassValidation { y: val.y, prior: ClassPrior::fit(&[train.y], classes), seen }
    }

    /// Mean log-loss (nats) of the validation classes under class log-probabilities `log_p` (N_val, C).
    pub fn loss(&self, log_p: &Tensor) -> f64 {
        let null = self.prior.predict(self.y.size()[0]);
        let Prediction::Categorical(null) = null else { unreachable!("the class prior predicts classes") };
        let log_p = share_unseen_classes(&null, &mix_uniform(log_p), &self.seen);
        -log_p.gather(1, &self.y.unsqueeze(1), false).mean(Kind::Double).double_value(&[])
    }

    /// The mean log-loss of the constant predictor (the training part's prior).
    pub fn constant_loss(&self) -> f64 {
        self.prior.log_loss(self.y)
    }
}

/// The rule for classes that no fitting sample has: a held-out sample of such a class gets the same probability
/// under f[G] as under f[∅], so it adds exactly 0 to its PVI. No family can learn anything about a class it never
/// saw, and without the rule the estimate measured how the two models happen to spread their leftover mass (the
/// null's smoothing against a network's softmax), which showed up as bits on pure noise.
///
/// f[G] keeps its distribution over the seen classes, rescaled to the mass the null model leaves them; the unseen
/// classes get the null model's probabilities (equal for all of them). Both stay distributions. `seen`: (C,) bool.
/// Returns f[G]'s log-probabilities (N, C); unchanged when every class was seen.
pub fn share_unseen_classes(null_log_p: &Tensor, cond_log_p: &Tensor, seen: &Tensor) -> Tensor {
    if bool::try_from(seen.all()).expect("a boolean") {
        return cond_log_p.shallow_clone();
    }
    let seen = seen.unsqueeze(0).expand_as(cond_log_p);
    let neg_inf = cond_log_p.full_like(f64::NEG_INFINITY);
    let mass = |log_p: &Tensor| log_p.where_self(&seen, &neg_inf).logsumexp([1].as_slice(), true);
    // The null's mass on the seen classes (the same in every row), and f[G]'s.
    let (null_seen, cond_seen) = (mass(null_log_p), mass(cond_log_p));
    (cond_log_p - cond_seen + null_seen).where_self(&seen, null_log_p)
}

/// f[∅] for continuous targets: per-dimension mean and variance (floored) of the training and validation parts.
#[derive(Debug)]
pub struct GaussianMarginal {
    floor: Tensor,
    fitted: Option<(Tensor, Tensor)>,
}

impl GaussianMarginal {
    /// `floor`: (K,) smallest variance per dimension.
    pub fn new(floor: &Tensor) -> Self {
        GaussianMarginal { floor: floor.shallow_clone(), fitted: None }
    }
}

impl ConditionalModel for GaussianMarginal {
    fn fit(&mut self, train: Part<'_>, val: Part<'_>) -> Result<()> {
        let y = Tensor::cat(&[train.y, val.y], 0);
        let mean = y.mean_dim(0, false, Kind::Double);
        let var = shrunk_variance(&(&y - &mean), &self.floor);
        self.fitted = Some((mean, var));
        Ok(())
    }

    fn predict(&self, x: &Tensor) -> Result<Prediction> {
        let (mean, var) = self.fitted.as_ref().ok_or_else(|| anyhow::anyhow!("Gaussian marginal used before fit"))?;
        let n = x.size()[0];
        Ok(Prediction::Gaussian {
            mean: mean.unsqueeze(0).expand([n, mean.size()[0]], false).contiguous(),
            var: var.shallow_clone(),
        })
    }

    fn summary(&self) -> serde_json::Value {
        serde_json::json!({})
    }
}

/// How the features enter a linear model; the fit tries each and keeps the one that scores best on validation.
///
/// One layer's gradient is the outer product of the layer's input and the error signal that reaches it, so its
/// scale follows the sample's loss over orders of magnitude while its direction follows the input. A linear map
/// of the raw gradient must fit both at once and extrapolates wildly to the few samples with a large loss; a
/// linear map of the direction, with the log of the norm as one more feature, does not (the cosine-similarity
/// objective of Inverting Gradients is scale-free for the same reason). On LeNet-5 after two epochs the direction
/// explains several times the input variance the raw gradient does (`docs/vinfo.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureMap {
    /// The features as given.
    Raw,
    /// Each row divided by its Euclidean norm, followed by the log of the norm.
    Direction,
    /// Both side by side: the raw features, the direction and the log-norm (for the MLP, which learns what to use).
    Both,
}

impl FeatureMap {
    /// The maps the linear families try, in this order.
    pub const CANDIDATES: [FeatureMap; 2] = [FeatureMap::Raw, FeatureMap::Direction];

    pub fn name(self) -> &'static str {
        match self {
            FeatureMap::Raw => "raw",
            FeatureMap::Direction => "direction",
            FeatureMap::Both => "raw+direction",
        }
    }
}

/// Row norms of `x` (N, D) as an (N, 1) column.
fn row_norms(x: &Tensor) -> Tensor {
    x.square().sum_dim_intlist(1, true, Kind::Double).sqrt()
}

/// A [`FeatureMap`] followed by a [`Standardiser`], both fitted on training features.
#[derive(Debug)]
pub struct FeatureTransform {
    pub map: FeatureMap,
    /// Added to every norm before its log, so that an all-zero gradient gets a finite feature: 10^-6 of the
    /// median training norm.
    norm_offset: f64,
    standardiser: Standardiser,
}

impl FeatureTransform {
    pub fn fit(map: FeatureMap, train_x: &Tensor) -> Self {
        let norm_offset = match map {
            FeatureMap::Raw => 0.0,
            FeatureMap::Direction | FeatureMap::Both => {
                (row_norms(train_x).median().double_value(&[]) * 1e-6).max(f64::MIN_POSITIVE)
            }
        };
        let mapped = Self::map_with(map, norm_offset, train_x);
        FeatureTransform { map, norm_offset, standardiser: Standardiser::fit(&mapped) }
    }

    fn map_with(map: FeatureMap, norm_offset: f64, x: &Tensor) -> Tensor {
        match map {
            FeatureMap::Raw => x.shallow_clone(),
            FeatureMap::Direction => {
                let norm = row_norms(x) + norm_offset;
                Tensor::cat(&[x / &norm, norm.log()], 1)
            }
            FeatureMap::Both => {
                Tensor::cat(&[x.shallow_clone(), Self::map_with(FeatureMap::Direction, norm_offset, x)], 1)
            }
        }
    }

    /// Mapped and standardised features, (N, D) or (N, D + 1).
    pub fn apply(&self, x: &Tensor) -> Tensor {
        self.standardiser.apply(&Self::map_with(self.map, self.norm_offset, x))
    }
}

/// Centres and scales each feature column with training statistics. Constant columns (standard deviation 0) are
/// only centred, so they become 0 and carry nothing.
#[derive(Debug)]
pub struct Standardiser {
    mean: Tensor,
    scale: Tensor,
}

impl Standardiser {
    pub fn fit(x: &Tensor) -> Self {
        let mean = x.mean_dim(0, true, Kind::Double);
        let std = x.std_dim(0, false, true);
        // A column whose spread is at rounding level of its magnitude is constant.
        let tiny = mean.abs() * 1e-12 + 1e-300;
        let scale = std.where_self(&std.gt_tensor(&tiny), &std.ones_like());
        Standardiser { mean, scale }
    }

    pub fn apply(&self, x: &Tensor) -> Tensor {
        (x - &self.mean) / &self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_direction_map_is_scale_free_and_finite_on_zero_rows() {
        let x = Tensor::from_slice(&[3.0f64, 4.0, 0.0, 0.0, -1.0, 0.0]).view([3, 2]);
        let t = FeatureTransform::fit(FeatureMap::Direction, &x);
        let mapped = FeatureTransform::map_with(FeatureMap::Direction, t.norm_offset, &x);
        // (3, 4) -> (0.6, 0.8, log 5); the zero row stays 0 with a finite log-norm.
        assert!((mapped.double_value(&[0, 0]) - 0.6).abs() < 1e-6 && (mapped.double_value(&[0, 1]) - 0.8).abs() < 1e-6);
        assert!((mapped.double_value(&[0, 2]) - 5f64.ln()).abs() < 1e-5);
        assert!(bool::try_from(mapped.isfinite().all()).unwrap());
        // Rescaling a row changes only its log-norm.
        let scaled = FeatureTransform::map_with(FeatureMap::Direction, t.norm_offset, &(&x * 1e3));
        let gap = (scaled.narrow(1, 0, 2) - mapped.narrow(1, 0, 2)).abs().max().double_value(&[]);
        assert!(gap < 1e-6, "{gap}");
    }
}
