//! The linear families: ridge regression with a Gaussian likelihood (continuous targets) and multinomial logistic
//! regression (class targets). Both standardise the features with training statistics, so their estimates do
//! not change when feature columns are rescaled or permuted, and both choose their L2 strength on the validation
//! part.

use anyhow::{anyhow, bail, Result};
use tch::{Device, Kind, Tensor};

use super::model::{
    conditional_variance, null_mean, ClassPrior, ClassValidation, ConditionalModel, FeatureMap, FeatureTransform,
    GaussianValidation, Part, Prediction, TargetRange,
};

/// Ridge strengths tried, relative to the mean eigenvalue of the Gram matrix of the standardised training
/// features: 10^-6 .. 10^3. Every strength is tried with every feature map.
const RIDGE_GRID_LOG10: std::ops::RangeInclusive<i32> = -6..=3;

/// Linear-Gaussian family: mean `W^T features(g) + b` from ridge regression in closed form, diagonal variance from
/// the validation residuals ([`conditional_variance`]).
///
/// The features are the raw gradient or its direction and log-norm ([`FeatureMap`]), standardised. The Gram matrix
/// is `X^T X` (primal, D x D) when there are at most as many features as training samples and `X X^T` (dual/kernel
/// form, N x N) otherwise, so each ridge strength costs one Cholesky factorisation of a min(N, D)-sized matrix.
/// The feature map and the strength maximise the validation PVI computed as the held-out PVI is
/// ([`GaussianValidation`]), over the whole grid; the constant predictor (PVI 0) is a candidate too.
///
/// The variances come from validation residuals, not training residuals: with D >= N ridge regression nearly
/// interpolates the training part, and training residuals would make the model grossly over-confident.
#[derive(Debug)]
pub struct RidgeGaussian {
    floor: Tensor,
    fitted: Option<RidgeFit>,
}

#[derive(Debug)]
struct RidgeFit {
    transform: FeatureTransform,
    weight: Tensor,
    y_mean: Tensor,
    /// Predictions are clipped to the range of the fitting targets.
    y_range: TargetRange,
    var: Tensor,
    lambda: f64,
    lambda_relative: f64,
    dual: bool,
    /// (feature map, relative strength, validation bits) of every candidate.
    tried: Vec<(&'static str, f64, f64)>,
}

/// The best ridge candidate so far.
struct RidgeCandidate {
    bits: f64,
    transform: FeatureTransform,
    weight: Tensor,
    var: Tensor,
    lambda: f64,
    lambda_relative: f64,
    dual: bool,
}

impl RidgeGaussian {
    /// `floor`: (K,) smallest variance per target dimension.
    pub fn new(floor: &Tensor) -> Self {
        RidgeGaussian { floor: floor.shallow_clone(), fitted: None }
    }
}

impl ConditionalModel for RidgeGaussian {
    fn fit(&mut self, train: Part<'_>, val: Part<'_>) -> Result<()> {
        let validation = GaussianValidation::new(train, val, &self.floor);
        let y_mean = train.y.mean_dim(0, false, Kind::Double);
        let y_range = TargetRange::fit(train.y, val.y);
        let yc = train.y - &y_mean;
        let mut best: Option<RidgeCandidate> = None;
        let mut tried = Vec::new();
        for map in FeatureMap::CANDIDATES {
            let transform = FeatureTransform::fit(map, train.x);
            let x = transform.apply(train.x);
            let xv = transform.apply(val.x);
            let (n, d) = (x.size()[0], x.size()[1]);
            let dual = d > n;
            let (gram, rhs, val_design) = if dual {
                (x.matmul(&x.tr()), yc.shallow_clone(), xv.matmul(&x.tr()))
            } else {
                (x.tr().matmul(&x), x.tr().matmul(&yc), xv.shallow_clone())
            };
            let m = gram.size()[0];
            let trace = gram.trace().double_value(&[]);
            let scale = if trace > 0.0 { trace / m as f64 } else { 1.0 };
            let eye = Tensor::eye(m, (Kind::Double, Device::Cpu));
            // This map's best strength: (validation bits, coefficients, variance, log10 of the relative strength).
            let mut map_best: Option<(f64, Tensor, Tensor, i32)> = None;
            for log10 in RIDGE_GRID_LOG10 {
                let lambda = scale * 10f64.powi(log10);
                // Coefficients in the Gram matrix's space: W (primal) or alpha (dual, W = X^T alpha).
                let (l, info) = (&gram + &eye * lambda).linalg_cholesky_ex(false, false);
                if info.int64_value(&[]) != 0 {
                    continue;
                }
                let coef = rhs.cholesky_solve(&l, false);
                let pred = val_design.matmul(&coef) + &y_mean;
                let (bits, var) = validation.score(&y_range.clip(&pred), &y_range.excess(&pred));
                tried.push((map.name(), 10f64.powi(log10), bits));
                if map_best.as_ref().is_none_or(|b| bits > b.0) {
                    map_best = Some((bits, coef, var, log10));
                }
            }
            if let Some((bits, coef, var, log10)) = map_best.filter(|m| best.as_ref().is_none_or(|b| m.0 > b.bits)) {
                let weight = if dual { x.tr().matmul(&coef) } else { coef };
                best = Some(RidgeCandidate {
                    bits,
                    transform,
                    weight,
                    var,
                    lambda: scale * 10f64.powi(log10),
                    lambda_relative: 10f64.powi(log10),
                    dual,
                });
            }
        }
        let best = best.ok_or_else(|| anyhow!("ridge regression failed: no feature map and strength gave a fit"))?;
        // The family holds the constant predictor (weights 0, the limit of infinite strength), which scores 0 bits on
        // validation. When no candidate beats it, take it, with the null model's mean: the features then carry no
        // usable information.
        let (weight, y_mean, var, lambda, lambda_relative) = if best.bits > 0.0 {
            (best.weight, y_mean, best.var, best.lambda, best.lambda_relative)
        } else {
            let mean = null_mean(train.y, val.y);
            let var = conditional_variance(&(val.y - &mean), train.y, val.y, &self.floor);
            (best.weight.zeros_like(), mean, var, f64::INFINITY, f64::INFINITY)
        };
        let fit = RidgeFit {
            transform: best.transform,
            weight,
            y_mean,
            y_range,
            var,
            lambda,
            lambda_relative,
            dual: best.dual,
            tried,
        };
        self.fitted = Some(fit);
        Ok(())
    }

    fn constant(&self) -> bool {
        self.fitted.as_ref().is_some_and(|f| f.lambda.is_infinite())
    }

    fn predict(&self, x: &Tensor) -> Result<Prediction> {
        let f = self.fitted.as_ref().ok_or_else(|| anyhow!("ridge model used before fit"))?;
        Ok(f.y_range.predict(&(f.transform.apply(x).matmul(&f.weight) + &f.y_mean), &f.var))
    }

    fn summary(&self) -> serde_json::Value {
        match &self.fitted {
            None => serde_json::json!({}),
            Some(f) => serde_json::json!({
                "features": f.transform.map.name(),
                "lambda": f.lambda,
                "lambda_relative": f.lambda_relative,
                "form": if f.dual { "dual" } else { "primal" },
                "validation_bits": f.tried.iter().map(|(map, l, b)| serde_json::json!({"features": map, "lambda_relative": l, "bits": b})).collect::<Vec<_>>(),
                "constant": f.lambda.is_infinite(),
            }),
        }
    }
}

/// L2 strengths tried for logistic regression (penalty `l2/2 |W|^2` added to the mean log-loss in nats), from
/// strong to weak; each fit starts from the previous one. Every strength is tried: the validation curve is not
/// always unimodal, and stopping at its first rise missed the minimum.
const LOGISTIC_GRID: [f64; 6] = [1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5];
/// L-BFGS iterations per strength at most; a fit that uses them all is reported as a warning.
const LOGISTIC_MAX_ITERATIONS: usize = 500;

/// Multinomial logistic regression with an L2 penalty on the weights (not the biases), fitted by L-BFGS
/// (deterministic, full batch, f64) on standardised features, raw or as direction and log-norm ([`FeatureMap`]).
/// The feature map and the strength minimise the validation log-loss (with the uniform mixture, as held-out samples
/// are scored); the constant predictor is a candidate too.
#[derive(Debug)]
pub struct LogisticRegression {
    classes: i64,
    /// Fit in the span of the training rows when there are more features than rows (the same optimum).
    row_space: bool,
    /// The feature maps tried ([`FeatureMap::CANDIDATES`]; the unit tests pin one).
    maps: &'static [FeatureMap],
    fitted: Option<LogisticFit>,
}

#[derive(Debug)]
struct LogisticFit {
    transform: FeatureTransform,
    weight: Tensor,
    bias: Tensor,
    l2: f64,
    iterations: usize,
    /// (feature map, strength, validation bits of log-loss) of every candidate.
    tried: Vec<(&'static str, f64, f64)>,
}

impl LogisticRegression {
    pub fn new(classes: i64) -> Self {
        LogisticRegression { classes, row_space: true, maps: &FeatureMap::CANDIDATES, fitted: None }
    }

    /// Fits every strength of the grid on one feature map, each starting from the previous fit. Returns the fit
    /// with the smallest validation log-loss (nats) and appends every candidate to `tried`.
    /// `freq`: the smoothed class frequencies of the training part, the biases' starting point. `validation` scores
    /// each candidate as held-out samples are scored.
    fn fit_map(
        &self,
        map: FeatureMap,
        train: Part<'_>,
        val: Part<'_>,
        freq: &Tensor,
        validation: &ClassValidation<'_>,
        tried: &mut Vec<(&'static str, f64, f64)>,
    ) -> (f64, LogisticFit) {
        let transform = FeatureTransform::fit(map, train.x);
        let x = transform.apply(train.x);
        let xv = transform.apply(val.x);
        // With more features than training samples (a sketched group of 40 ResNet layers: 40,000 features for a
        // few hundred victims), the penalised optimum lies in the span of the training rows: W = V Z with V
        // (D, n) the right singular vectors of X. Fitting Z on X V (n columns) is the same problem, with the same
        // penalty |Z|^2 = |W|^2, at a fraction of the cost per L-BFGS step.
        let basis = (self.row_space && x.size()[1] > x.size()[0]).then(|| {
            let (_, _, v) = x.svd(true, true);
            v.contiguous()
        });
        let (x, xv) = match &basis {
            Some(v) => (x.matmul(v), xv.matmul(v)),
            None => (x, xv),
        };
        let (n, d, c) = (x.size()[0], x.size()[1], self.classes);
        let onehot = train.y.one_hot(c).to_kind(Kind::Double);
        // Biases start at the smoothed log class frequencies, weights at 0.
        let mut theta = Tensor::cat(&[Tensor::zeros([d * c], (Kind::Double, Device::Cpu)), freq.log()], 0);
        let mut best: Option<(f64, Tensor, f64, usize)> = None;
        for &l2 in &LOGISTIC_GRID {
            let objective = |t: &Tensor| -> (f64, Tensor) {
                let w = t.narrow(0, 0, d * c).view([d, c]);
                let b = t.narrow(0, d * c, c);
                let logp = logistic_log_probs(&x, &w, &b);
                let loss = -(&logp * &onehot).sum(Kind::Double).double_value(&[]) / n as f64
                    + 0.5 * l2 * w.square().sum(Kind::Double).double_value(&[]);
                let g = (logp.exp() - &onehot) / n as f64;
                let gw = x.tr().matmul(&g) + &w * l2;
                let gb = g.sum_dim_intlist(0, false, Kind::Double);
                (loss, Tensor::cat(&[gw.view([-1]), gb], 0))
            };
            let (t, iterations) = lbfgs(&objective, theta, LOGISTIC_MAX_ITERATIONS, 1e-7);
            theta = t;
            let w = theta.narrow(0, 0, d * c).view([d, c]);
            let b = theta.narrow(0, d * c, c);
            let loss = validation.loss(&logistic_log_probs(&xv, &w, &b));
            let loss = if loss.is_finite() { loss } else { f64::INFINITY };
            tried.push((map.name(), l2, loss / std::f64::consts::LN_2));
            if best.as_ref().is_none_or(|b| loss < b.0) {
                best = Some((loss, theta.copy(), l2, iterations));
            }
        }
        let (loss, theta, l2, iterations) = best.expect("the strength grid is not empty");
        let mut weight = theta.narrow(0, 0, d * c).view([d, c]);
        if let Some(v) = &basis {
            weight = v.matmul(&weight);
        }
        let bias = theta.narrow(0, d * c, c);
        (loss, LogisticFit { transform, weight, bias, l2, iterations, tried: Vec::new() })
    }
}

fn logistic_log_probs(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Tensor {
    (x.matmul(weight) + bias).log_softmax(1, Kind::Double)
}

impl ConditionalModel for LogisticRegression {
    fn fit(&mut self, train: Part<'_>, val: Part<'_>) -> Result<()> {
        let c = self.classes;
        let freq = (train.y.bincount(None::<Tensor>, c).to_kind(Kind::Double) + 1.0) / (train.len() + c) as f64;
        let validation = ClassValidation::new(train, val, c);
        let mut tried = Vec::new();
        let mut best: Option<(f64, LogisticFit)> = None;
        for &map in self.maps {
            let (loss, fit) = self.fit_map(map, train, val, &freq, &validation, &mut tried);
            if best.as_ref().is_none_or(|b| loss < b.0) {
                best = Some((loss, fit));
            }
        }
        let (loss, mut fit) = best.ok_or_else(|| anyhow!("logistic regression: nothing fitted"))?;
        if !loss.is_finite() {
            bail!("logistic regression failed: the validation log-loss is not finite");
        }
        // The family holds the constant predictor (weights 0, the limit of infinite strength). When no candidate
        // beats it on validation, take it, with the null model's class frequencies: the features then carry no
        // usable information, and the estimate is 0 instead of the overfit fit's negative value.
        // The constant is scored with the prior of the training part, as the fits are; it then predicts the prior
        // of training and validation, which is f[∅] itself (PVI exactly 0).
        if validation.constant_loss() <= loss {
            fit.weight = fit.weight.zeros_like();
            fit.bias = ClassPrior::fit(&[train.y, val.y], c).log_p;
            fit.l2 = f64::INFINITY;
        }
        fit.tried = tried;
        self.fitted = Some(fit);
        Ok(())
    }

    fn predict(&self, x: &Tensor) -> Result<Prediction> {
        let f = self.fitted.as_ref().ok_or_else(|| anyhow!("logistic regression used before fit"))?;
        Ok(Prediction::categorical(&logistic_log_probs(&f.transform.apply(x), &f.weight, &f.bias)))
    }

    fn constant(&self) -> bool {
        self.fitted.as_ref().is_some_and(|f| f.l2.is_infinite())
    }

    fn warnings(&self) -> Vec<String> {
        match &self.fitted {
            Some(f) if f.l2.is_finite() && f.iterations >= LOGISTIC_MAX_ITERATIONS => vec![format!(
                "logistic regression: L-BFGS stopped at its {LOGISTIC_MAX_ITERATIONS}-iteration cap at l2 = {}; the \
                 fit may be short of its optimum",
                f.l2
            )],
            _ => Vec::new(),
        }
    }

    fn summary(&self) -> serde_json::Value {
        match &self.fitted {
            None => serde_json::json!({}),
            Some(f) => serde_json::json!({
                "features": f.transform.map.name(),
                "l2": f.l2,
                "lbfgs_iterations": f.iterations,
                "validation_bits": f.tried.iter().map(|(map, l2, b)| serde_json::json!({"features": map, "l2": l2, "bits": b})).collect::<Vec<_>>(),
            }),
        }
    }
}

/// Minimises a smooth function with L-BFGS (memory 10) and a backtracking Armijo line search
/// ([`crate::optim::LineSearch::Backtracking`]). `f` returns the value and the gradient at a flat f64 point. Stops
/// when the largest gradient entry is below `gtol`, when the value no longer changes (relative 1e-12) or after
/// `max_iter` iterations. Returns the point and the iterations that moved it.
pub fn lbfgs(f: &dyn Fn(&Tensor) -> (f64, Tensor), x0: Tensor, max_iter: usize, gtol: f64) -> (Tensor, usize) {
    use crate::optim::{minimize, LbfgsOptions, LineSearch, StopRules};
    // Below gtol: at most the largest float under it.
    let gradient = if gtol > 0.0 { f64::from_bits(gtol.to_bits() - 1) } else { f64::NEG_INFINITY };
    let options = LbfgsOptions {
        history: 10,
        line_search: LineSearch::Backtracking,
        stop: StopRules { gradient: Some(gradient), change: None, relative_change: Some(1e-12) },
    };
    let result = minimize(&mut |x: &Tensor| f(x), x0, max_iter, &options, &mut |_, _| {});
    (result.x, result.steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lbfgs_minimises_a_badly_scaled_quadratic() {
        // f(x) = sum_i c_i (x_i - 1)^2 with curvatures over 4 decades; the minimum is x = 1.
        let c = Tensor::from_slice(&[1e-2f64, 1.0, 10.0, 100.0]);
        let f = |x: &Tensor| {
            let r = x - 1.0;
            ((&c * &r * &r).sum(Kind::Double).double_value(&[]), &c * &r * 2.0)
        };
        let (x, _) = lbfgs(&f, Tensor::zeros([4], (Kind::Double, Device::Cpu)), 200, 1e-10);
        assert!((x - 1.0).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn a_confidently_wrong_held_out_sample_costs_at_most_log_c_over_e() {
        // Two well-separated classes: the fit is confident, and a held-out sample on the wrong side would cost
        // hundreds of nats without the uniform mixture.
        let opts = (Kind::Double, Device::Cpu);
        let x = Tensor::cat(&[Tensor::full([40, 1], -5.0, opts), Tensor::full([40, 1], 5.0, opts)], 0)
            + Tensor::linspace(-0.5, 0.5, 80, opts).unsqueeze(1);
        let y = Tensor::cat(
            &[Tensor::zeros([40], (Kind::Int64, Device::Cpu)), Tensor::ones([40], (Kind::Int64, Device::Cpu))],
            0,
        );
        // On the raw features, where 50 lies far beyond the training samples (its direction is that of 5).
        let mut model = LogisticRegression { maps: &[FeatureMap::Raw], ..LogisticRegression::new(2) };
        model.fit(Part { x: &x, y: &y }, Part { x: &x, y: &y }).unwrap();
        let far_wrong = Tensor::from_slice(&[50.0f64]).unsqueeze(1);
        let log_p = model.log_prob(&far_wrong, &Tensor::from_slice(&[0i64])).unwrap().double_value(&[0]);
        let bound = (super::super::model::UNIFORM_WEIGHT / 2.0).ln();
        assert!(log_p >= bound - 1e-12 && log_p < bound + 0.01, "log p = {log_p}, bound {bound}");
        // A right, confident prediction loses almost nothing to the mixture.
        let right = model.log_prob(&far_wrong, &Tensor::from_slice(&[1i64])).unwrap().double_value(&[0]);
        assert!(right > (1.0 - super::super::model::UNIFORM_WEIGHT).ln() - 1e-6, "{right}");
    }

    #[test]
    fn fitting_in_the_row_space_gives_the_primal_fit() {
        // 40 samples, 120 features, 3 classes with some signal in the first features.
        let opts = (Kind::Double, Device::Cpu);
        tch::manual_seed(7);
        let x = Tensor::randn([60, 120], opts);
        let y = (x.narrow(1, 0, 1).squeeze_dim(1) * 2.0 + x.narrow(1, 1, 1).squeeze_dim(1))
            .clamp(-1.4, 1.4)
            .round()
            .to_kind(Kind::Int64)
            + 1;
        let (train, val, test) = (x.narrow(0, 0, 40), x.narrow(0, 40, 10), x.narrow(0, 50, 10));
        let (ytr, yv, yte) = (y.narrow(0, 0, 40), y.narrow(0, 40, 10), y.narrow(0, 50, 10));
        let fit = |row_space: bool| {
            let mut m = LogisticRegression { row_space, ..LogisticRegression::new(3) };
            m.fit(Part { x: &train, y: &ytr }, Part { x: &val, y: &yv }).unwrap();
            (m.log_prob(&test, &yte).unwrap(), m.fitted.unwrap().l2)
        };
        let ((reduced, l2_reduced), (primal, l2_primal)) = (fit(true), fit(false));
        assert!(l2_primal.is_finite(), "the features predict the class better than the constant");
        assert_eq!(l2_reduced, l2_primal);
        let gap = (reduced - primal).abs().max().double_value(&[]);
        assert!(gap < 1e-4, "held-out log-probabilities differ by {gap}");
    }
}
