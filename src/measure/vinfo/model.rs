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
    /// A Gaussian with diagonal covariance: means (N, K) and variances (K,), f64.
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

/// Log-density (nats) of each row of `y` under independent Gaussians N(mean_ik, var_k); (N,).
pub fn gaussian_log_prob(y: &Tensor, mean: &Tensor, var: &Tensor) -> Tensor {
    let r = y - mean;
    let quad = (&r * &r / var).sum_dim_intlist(1, false, Kind::Double);
    let norm = (var * (2.0 * PI)).log().sum(Kind::Double);
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

/// Per-dimension variance for a Gaussian family: the mean squared residual (out-of-sample), floored.
pub fn floored_variance(residual: &Tensor, floor: &Tensor) -> Tensor {
    residual.square().mean_dim(0, false, Kind::Double).maximum(floor)
}

/// Mean Gaussian negative log-likelihood (nats) of `y` given `pred`, with the variance taken from these very
/// residuals (floored): the validation criterion of the Gaussian families.
pub fn gaussian_validation_loss(y: &Tensor, pred: &Tensor, floor: &Tensor) -> f64 {
    let var = floored_variance(&(y - pred), floor);
    -gaussian_log_prob(y, pred, &var).mean(Kind::Double).double_value(&[])
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

/// f[∅] for class targets: class frequencies of the training and validation parts with add-one (Laplace)
/// smoothing, so that a class unseen in fitting still has a finite log-loss.
#[derive(Debug)]
pub struct ClassFrequencies {
    classes: i64,
    log_p: Option<Tensor>,
}

impl ClassFrequencies {
    pub fn new(classes: i64) -> Self {
        ClassFrequencies { classes, log_p: None }
    }
}

impl ConditionalModel for ClassFrequencies {
    fn fit(&mut self, train: Part<'_>, val: Part<'_>) -> Result<()> {
        let y = Tensor::cat(&[train.y, val.y], 0);
        let counts = y.bincount(None::<Tensor>, self.classes).to_kind(Kind::Double) + 1.0;
        let total = counts.sum(Kind::Double);
        self.log_p = Some((counts / total).log());
        Ok(())
    }

    fn predict(&self, x: &Tensor) -> Result<Prediction> {
        let log_p = self.log_p.as_ref().ok_or_else(|| anyhow::anyhow!("class frequencies used before fit"))?;
        Ok(Prediction::categorical(&log_p.unsqueeze(0).expand([x.size()[0], self.classes], false)))
    }

    fn summary(&self) -> serde_json::Value {
        serde_json::json!({"smoothing": "add-one"})
    }
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
