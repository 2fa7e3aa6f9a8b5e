//! Labels: where an attack's labels come from ([`LabelPlan`]), iDLG's rule to read them off the last layer's
//! gradient ([`infer_labels`]), and which source an attack used ([`LabelSource`]).

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::config::{invalid, LabelMode, Setting};
use super::objective::{self, DummyLabels};
use super::target::AttackedUpdate;
use crate::models::Model;

/// Which labels an attack used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelSource {
    Optimized,
    Inferred,
    Known,
}

/// iDLG's label rule on the last layer's shared gradient (flat: weight (K, F) row-major, then bias (K)).
///
/// One sample: the gradient of weight row k is `(p_k - y_k) a` with activations `a >= 0` (after a sigmoid or ReLU),
/// so only the true class's row sums to a negative number: the label is the row with the smallest sum. For a batch
/// of B the rows of classes present in the batch tend to be negative: the labels are the classes with a negative
/// row sum, most negative first, repeated in that order to fill B (the B smallest sums when fewer than one is
/// negative). This is exact when B = 1 and a heuristic for B > 1 (exact for distinct labels with small predicted
/// probabilities).
pub fn infer_labels(model: &Model, last_gradient: &Tensor, batch_size: i64) -> Result<Vec<i64>> {
    let last = model.layers().last().context("the model has no layers")?;
    let Some((in_features, out_features)) = last.linear_shape() else {
        bail!("label inference needs a linear last layer; layer '{}' is a {}", last.name, last.kind.type_name());
    };
    ensure!(
        last_gradient.numel() as i64 == last.num_params(),
        "label inference: the gradient of '{}' has {} values, expected {}",
        last.name,
        last_gradient.numel(),
        last.num_params()
    );
    let rows = last_gradient
        .detach()
        .to_kind(Kind::Double)
        .flatten(0, -1)
        .narrow(0, 0, in_features * out_features)
        .reshape([out_features, in_features])
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
    let sums = objective::to_vec(&rows);
    let mut order: Vec<usize> = (0..sums.len()).collect();
    order.sort_by(|&a, &b| sums[a].total_cmp(&sums[b]).then(a.cmp(&b)));
    let negative: Vec<usize> = order.iter().copied().filter(|&k| sums[k] < 0.0).collect();
    let pool = if negative.is_empty() { &order[..(batch_size as usize).min(order.len())] } else { &negative[..] };
    Ok((0..batch_size as usize).map(|i| pool[i % pool.len()] as i64).collect())
}

/// The labels of an optimisation attack's dummy batch: fixed, or free logits optimised with the input.
pub enum LabelPlan {
    Fixed(Tensor, LabelSource),
    Optimize,
}

impl LabelPlan {
    /// The plan for `target.config.labels`; under [`LabelMode::Auto`] the method's choice `auto` (the method named
    /// `method` in messages).
    pub fn new(target: &AttackedUpdate, auto: LabelMode, method: &str) -> Result<Self> {
        let (mode, who) = match target.config.labels {
            LabelMode::Auto => (auto, method.to_string()),
            mode => (mode, format!("the label mode '{mode}'")),
        };
        let batch_size = target.batch_size();
        Ok(match mode {
            LabelMode::Known => {
                let Some(y) = target.known_labels else {
                    return Err(invalid(Setting::Labels, "known labels: the true labels were not given to the attack"));
                };
                if y.size() != [batch_size] {
                    let message = format!("known labels: expected {batch_size} labels, got shape {:?}", y.size());
                    return Err(invalid(Setting::Labels, message));
                }
                let num_classes = target.model.spec.num_classes;
                let values = objective::to_vec(y);
                if !values.iter().all(|&v| v >= 0.0 && v < num_classes as f64) {
                    let message = format!("known labels: labels must be in [0, {num_classes})");
                    return Err(invalid(Setting::Labels, message));
                }
                LabelPlan::Fixed(y.to_kind(Kind::Int64), LabelSource::Known)
            }
            LabelMode::Optimize | LabelMode::Auto => LabelPlan::Optimize,
            LabelMode::Infer => {
                let Some(p) = target.last_layer_position() else {
                    let message = format!(
                        "{who} infers labels from the gradient of the last layer '{}', which is not among the matched \
                         layers; match it too, or use the label mode 'optimize' or 'known'",
                        target.model.layers().last().map_or("", |l| l.name.as_str())
                    );
                    return Err(invalid(Setting::Labels, message));
                };
                let labels = infer_labels(target.model, &target.matcher.targets[p], batch_size)?;
                LabelPlan::Fixed(Tensor::from_slice(&labels), LabelSource::Inferred)
            }
        })
    }

    /// The dummy labels for the label logits `z` (given when the labels are optimised).
    pub fn dummy<'a>(&'a self, z: Option<&'a Tensor>) -> DummyLabels<'a> {
        match (self, z) {
            (LabelPlan::Fixed(y, _), _) => DummyLabels::Hard(y),
            (LabelPlan::Optimize, Some(z)) => DummyLabels::Soft(z),
            (LabelPlan::Optimize, None) => unreachable!("optimised labels have logits"),
        }
    }

    /// The recovered labels: the fixed ones, or the argmax of the optimised logits.
    pub fn recovered(&self, logits: Option<Tensor>) -> Result<(Vec<i64>, LabelSource)> {
        Ok(match self {
            LabelPlan::Fixed(y, source) => (objective::to_vec(y).into_iter().map(|v| v as i64).collect(), *source),
            LabelPlan::Optimize => {
                let z = logits.context("optimised labels are missing")?;
                let argmax = z.argmax(-1, false);
                (objective::to_vec(&argmax).into_iter().map(|v| v as i64).collect(), LabelSource::Optimized)
            }
        })
    }
}
