//! DLG (Zhu et al., 2019, "Deep Leakage from Gradients"): a dummy input and a soft dummy label (softmax of free
//! logits) are optimised with L-BFGS so that their gradient matches the shared one in squared L2 distance, summed
//! over the matched layers. The L-BFGS run ([`match_gradients`]) is shared with iDLG.

use anyhow::{bail, Result};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use super::attack::{Attack, Defaults, Reconstruction};
use super::config::LabelMode;
use super::labels::LabelPlan;
use super::objective::{self, tensor};
use super::restarts::{self, RunOutcome, NONFINITE_START};
use super::target::AttackedUpdate;
use crate::optim::{self, LbfgsOptions, LineSearch, Stop, StopRules};
use crate::rng;

/// Deep Leakage from Gradients.
pub struct Dlg;

impl Attack for Dlg {
    fn name(&self) -> &'static str {
        "DLG"
    }

    /// L-BFGS (step 1) for 300 iterations.
    fn defaults(&self) -> Defaults {
        Defaults { iterations: 300, lr: 1.0, tv_weight: 0.0 }
    }

    fn reconstruct(
        &self,
        target: &AttackedUpdate,
        rng: &mut ChaCha8Rng,
        on_iteration: &mut dyn FnMut(),
    ) -> Result<Reconstruction> {
        let plan = LabelPlan::new(target, LabelMode::Optimize, self.name())?;
        restarts::keep_best(target, &plan, rng, on_iteration, |rng, on_iteration| {
            match_gradients(target, &plan, rng, on_iteration)
        })
    }
}

/// One run of DLG and iDLG: L-BFGS (PyTorch's, with the strong-Wolfe line search) on the squared L2 gradient
/// distance, over the input and, with optimised labels, the label logits, from standard normal values.
pub fn match_gradients(
    target: &AttackedUpdate,
    plan: &LabelPlan,
    rng: &mut ChaCha8Rng,
    on_iteration: &mut dyn FnMut(),
) -> Result<RunOutcome> {
    let (matcher, config, shape) = (&target.matcher, target.config, &target.shape);
    let kind = target.model.kind();
    let nx = shape.iter().product::<i64>() as usize;
    let label_shape = [shape[0], target.model.spec.num_classes];
    let nl = if matches!(plan, LabelPlan::Optimize) { (label_shape[0] * label_shape[1]) as usize } else { 0 };
    // DLG's initialisation: standard normal input and label logits.
    let mut start = rng::standard_normal_f64(rng, nx);
    start.extend(rng::standard_normal_f64(rng, nl));
    let mut objective = |v: &Vec<f64>| -> (f64, Vec<f64>) {
        let x = tensor(&v[..nx], shape, kind).set_requires_grad(true);
        let z = (nl > 0).then(|| tensor(&v[nx..], &label_shape, kind).set_requires_grad(true));
        let grads = matcher.gradients(&x, &plan.dummy(z.as_ref()));
        let loss = matcher.squared_l2(&grads);
        let mut inputs = vec![&x];
        inputs.extend(z.as_ref());
        let g = Tensor::run_backward(&[&loss], &inputs, false, false);
        let mut flat = objective::to_vec(&g[0]);
        if let Some(gz) = g.get(1) {
            flat.extend(objective::to_vec(gz));
        }
        (loss.double_value(&[]), flat)
    };
    // No absolute tolerances: gradient distances differ by orders of magnitude between models, and a small
    // distance is not yet a good reconstruction. The run stops when the line search can make no progress.
    let options = LbfgsOptions {
        history: config.history,
        line_search: LineSearch::StrongWolfe { lr: config.lr, max_evaluations: 25 },
        stop: StopRules { gradient: Some(0.0), change: Some(0.0), relative_change: None },
    };
    let mut done = 0;
    let result = optim::minimize(&mut objective, start, config.iterations, &options, &mut |_, _| {
        done += 1;
        on_iteration();
    });
    for _ in done..config.iterations {
        on_iteration();
    }
    if result.iterations == 0 && result.stop == Stop::NonFinite {
        bail!("{NONFINITE_START}");
    }
    let warning = (result.stop == Stop::NonFinite).then(|| {
        format!(
            "the gradient-matching loss became non-finite after {} iterations; stopped and kept the last finite \
             state (distance {:.4e})",
            result.iterations, result.loss
        )
    });
    Ok(RunOutcome {
        x: tensor(&result.x[..nx], shape, kind),
        label_logits: (nl > 0).then(|| tensor(&result.x[nx..], &label_shape, kind)),
        distance: result.loss,
        iterations: result.iterations,
        evaluations: result.evaluations,
        stop: result.stop,
        warning,
    })
}
