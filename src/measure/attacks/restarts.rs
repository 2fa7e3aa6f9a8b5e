//! Restarts of an optimisation attack: independent runs from fresh random starts, of which the one whose gradient
//! matches best is kept.

use anyhow::{Context, Result};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::attack::Reconstruction;
use super::labels::LabelPlan;
use super::target::AttackedUpdate;
use crate::optim::Stop;

/// The error of a run whose objective is not finite at its start.
pub const NONFINITE_START: &str = "the gradient-matching loss is not finite at the start of the attack; the shared \
                                   update's values are too large for the model's precision";

/// One run's outcome.
pub struct RunOutcome {
    pub x: Tensor,
    /// The optimised label logits (with [`LabelPlan::Optimize`]).
    pub label_logits: Option<Tensor>,
    /// The gradient distance reached; the lowest is kept.
    pub distance: f64,
    pub iterations: usize,
    pub evaluations: usize,
    pub stop: Stop,
    pub warning: Option<String>,
}

/// Runs `run` `config.restarts` times (each drawing its start from `rng`) and keeps the lowest distance; the
/// reconstruction is clipped to the data range.
pub fn keep_best(
    target: &AttackedUpdate,
    plan: &LabelPlan,
    rng: &mut ChaCha8Rng,
    on_iteration: &mut dyn FnMut(),
    mut run: impl FnMut(&mut ChaCha8Rng, &mut dyn FnMut()) -> Result<RunOutcome>,
) -> Result<Reconstruction> {
    let config = target.config;
    let mut best: Option<(f64, Tensor, Option<Tensor>, Stop)> = None;
    let mut restart_distances = Vec::new();
    let (mut iterations, mut evaluations) = (0, 0);
    let mut warnings = Vec::new();
    for restart in 0..config.restarts {
        let run = run(rng, on_iteration)?;
        iterations += run.iterations;
        evaluations += run.evaluations;
        if let Some(w) = run.warning {
            warnings.push(if config.restarts > 1 { format!("restart {}: {w}", restart + 1) } else { w });
        }
        restart_distances.push(run.distance);
        if best.as_ref().is_none_or(|b| run.distance < b.0) {
            best = Some((run.distance, run.x, run.label_logits, run.stop));
        }
    }
    let (distance, x, logits, stop) = best.context("no restart ran")?;
    let (labels, label_source) = plan.recovered(logits)?;
    let (lo, hi) = config.data_range;
    Ok(Reconstruction {
        inputs: x.detach().clamp(lo, hi).to_kind(Kind::Float),
        labels,
        label_source,
        gradient_distance: distance,
        restart_distances,
        iterations,
        evaluations,
        stop,
        warnings,
    })
}
