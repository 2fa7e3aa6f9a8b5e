//! Inverting Gradients (Geiping et al., 2020): cosine distance between the gradients plus a total-variation prior,
//! minimised by signed Adam in the data range ([`super::adam`]), several restarts of which the best gradient match
//! is kept.

use anyhow::{bail, Result};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use super::adam::SignedAdam;
use super::attack::{reconstruct_each, Attack, Defaults, Reconstruction};
use super::batched;
use super::config::LabelMode;
use super::labels::LabelPlan;
use super::objective::{self, tensor};
use super::restarts::{self, RunOutcome, NONFINITE_START};
use super::target::AttackedUpdate;
use crate::optim::Stop;
use crate::rng;

/// Inverting Gradients.
pub struct InvertingGradients;

impl Attack for InvertingGradients {
    fn name(&self) -> &'static str {
        "Inverting Gradients"
    }

    /// Signed Adam (step 0.1) for 4800 iterations (the reference implementation's defaults) with total-variation
    /// weight 1e-4 on `[0, 1]` pixels (the reference code's 0.1 is tuned for normalised ImageNet images and
    /// over-smooths MNIST-like data; see `docs/attacks.md`).
    fn defaults(&self) -> Defaults {
        Defaults { iterations: 4800, lr: 0.1, tv_weight: 1e-4 }
    }

    /// Labels: inferred for a single image when the last layer is matched, optimised otherwise (as the reference
    /// implementation).
    fn reconstruct(
        &self,
        target: &AttackedUpdate,
        rng: &mut ChaCha8Rng,
        on_iteration: &mut dyn FnMut(),
    ) -> Result<Reconstruction> {
        let plan = label_plan(target)?;
        restarts::keep_best(target, &plan, rng, on_iteration, |rng, on_iteration| {
            run_signed_adam(target, &plan, rng, on_iteration)
        })
    }

    /// Single-sample updates are attacked all at once ([`batched`]), with fixed or optimised labels: the same
    /// steps, many victims per pass. Updates of batches run one update at a time.
    fn reconstruct_all(
        &self,
        targets: &[AttackedUpdate],
        rngs: &mut [ChaCha8Rng],
        on_iteration: &mut dyn FnMut(),
    ) -> Result<Vec<Reconstruction>> {
        if let Some(all) = batched::inverting_gradients_all(targets, rngs, on_iteration)? {
            return Ok(all);
        }
        reconstruct_each(self, targets, rngs, on_iteration)
    }
}

/// The labels of Inverting Gradients for one update (see [`InvertingGradients::reconstruct`]).
pub(super) fn label_plan(target: &AttackedUpdate) -> Result<LabelPlan> {
    let infer = target.batch_size() == 1 && target.last_layer_position().is_some();
    let auto = if infer { LabelMode::Infer } else { LabelMode::Optimize };
    LabelPlan::new(target, auto, InvertingGradients.name())
}

/// One run: signed Adam on cosine distance + total variation from standard normal values.
fn run_signed_adam(
    target: &AttackedUpdate,
    plan: &LabelPlan,
    rng: &mut ChaCha8Rng,
    on_iteration: &mut dyn FnMut(),
) -> Result<RunOutcome> {
    let (matcher, config, shape) = (&target.matcher, target.config, &target.shape);
    let kind = target.model.kind();
    let num_classes = target.model.spec.num_classes;
    let nx = shape.iter().product::<i64>() as usize;
    let mut x = tensor(&rng::standard_normal_f64(rng, nx), shape, kind);
    let mut z = matches!(plan, LabelPlan::Optimize).then(|| {
        tensor(&rng::standard_normal_f64(rng, (shape[0] * num_classes) as usize), &[shape[0], num_classes], kind)
    });
    let n = config.iterations;
    let mut adam = SignedAdam::new(&x, z.as_ref(), config.lr, n, config.data_range);
    let mut warning = None;
    let mut done = 0;
    let mut evaluations = 0;
    for it in 0..n {
        let xv = x.detach().set_requires_grad(true);
        let zv = z.as_ref().map(|z| z.detach().set_requires_grad(true));
        let grads = matcher.gradients(&xv, &plan.dummy(zv.as_ref()));
        let loss = if config.tv_weight > 0.0 {
            matcher.cosine(&grads) + objective::total_variation(&xv) * config.tv_weight
        } else {
            matcher.cosine(&grads)
        };
        evaluations += 1;
        let value = loss.double_value(&[]);
        let mut inputs = vec![&xv];
        inputs.extend(zv.as_ref());
        let g = if value.is_finite() { Tensor::run_backward(&[&loss], &inputs, false, false) } else { Vec::new() };
        let finite = !g.is_empty() && g.iter().all(|g| g.isfinite().all().int64_value(&[]) == 1);
        if !finite {
            if it == 0 {
                bail!("{NONFINITE_START}");
            }
            warning = Some(format!(
                "the attack loss became non-finite at iteration {}; stopped and kept the last finite state",
                it + 1
            ));
            break;
        }
        adam.step(it, &mut x, &g[0], z.as_mut(), g.get(1));
        done += 1;
        on_iteration();
    }
    for _ in done..n {
        on_iteration();
    }
    // Score the final state by the gradient match alone, as the reference implementation ranks restarts.
    let distance = matcher.cosine(&matcher.gradients(&x, &plan.dummy(z.as_ref()))).double_value(&[]);
    Ok(RunOutcome {
        x,
        label_logits: z,
        distance,
        iterations: done,
        evaluations: evaluations + 1,
        stop: if warning.is_some() { Stop::NonFinite } else { Stop::Iterations },
        warning,
    })
}
