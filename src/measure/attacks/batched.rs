//! Inverting Gradients on many single-sample updates at once: one dummy per victim, all in one batch, each matched
//! to its own update through the per-sample gradients of the dummies (the vectorised grad samplers of
//! [`crate::gradients::per_sample`], kept differentiable).
//!
//! Each victim's objective (cosine distance of its dummy's gradient to its update, plus the total variation of its
//! dummy) depends on its own dummy only, the model runs in evaluation mode, and signed Adam works per coordinate:
//! the batch takes exactly the steps the one-at-a-time loop takes, up to floating-point rounding of the reductions.
//! Each victim draws its starts from its own generator, restart by restart, as in the loop. A test compares the
//! two; `examples/bench_attacks_batched.rs` measures the speed: in single precision 64 LeNet-5 victims go 2.0x as
//! fast as one at a time on 2 threads (1.6x on one), in double precision 1.0x (a double backward through the
//! network costs about as much per image in a batch as alone), so [`super::InvertingGradients`] batches
//! single-precision attacks only.

use anyhow::Result;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::adam::SignedAdam;
use super::attack::Reconstruction;
use super::labels::{LabelPlan, LabelSource};
use super::objective::{self, tensor};
use super::target::Target;
use crate::gradients::per_sample::per_sample_gradients;
use crate::optim::Stop;
use crate::rng;

/// Inverting Gradients on every target at once, when every update is one sample with a fixed label (inferred or
/// known) and all match the same layers with the same weights; otherwise, or when an objective became non-finite,
/// None, with `rngs` as they were (the one-at-a-time loop then runs from the same starts and reports any error per
/// update).
pub fn inverting_gradients_all(
    targets: &[Target],
    rngs: &mut [ChaCha8Rng],
    on_iteration: &mut dyn FnMut(),
) -> Result<Option<Vec<Reconstruction>>> {
    if targets.len() < 2 {
        return Ok(None);
    }
    let Ok(plans) = targets.iter().map(super::ig::label_plan).collect::<Result<Vec<_>>>() else { return Ok(None) };
    let Some((labels, source)) = fixed_labels(targets, &plans) else { return Ok(None) };
    let starts = rngs.to_vec();
    let all = inverting_gradients(targets, &labels, source, rngs, on_iteration)?;
    if all.is_none() {
        rngs.clone_from_slice(&starts);
    }
    Ok(all)
}

/// The labels of every victim when the batched attack applies: every update is one sample, its label is fixed
/// (inferred or known), and all updates match the same layers with the same weights. None otherwise (the attack
/// then runs one update at a time).
fn fixed_labels(targets: &[Target], plans: &[LabelPlan]) -> Option<(Tensor, LabelSource)> {
    let first = targets.first()?;
    let mut labels = Vec::with_capacity(targets.len());
    let mut source = LabelSource::Inferred;
    for (t, plan) in targets.iter().zip(plans) {
        let LabelPlan::Fixed(y, s) = plan else { return None };
        let same_layers = t.matcher.layers == first.matcher.layers && t.matcher.weights == first.matcher.weights;
        if t.batch_size() != 1 || !same_layers {
            return None;
        }
        labels.push(y.int64_value(&[0]));
        source = *s;
    }
    Some((Tensor::from_slice(&labels), source))
}

/// Per-victim cosine distances (V,) of the dummies' per-sample gradients to their updates, over the matched layers.
fn cosine_distances(targets: &[Target], x: &Tensor, labels: &Tensor, create_graph: bool) -> Tensor {
    let matcher = &targets[0].matcher;
    let model = matcher.model;
    let kind = model.kind();
    let grads = per_sample_gradients(model, x, labels, false, create_graph);
    let zero = || Tensor::zeros([x.size()[0]], (kind, tch::Device::Cpu));
    let (mut inner, mut g_norm, mut t_norm) = (zero(), zero(), zero());
    for (k, (&layer, &w)) in matcher.layers.iter().zip(&matcher.weights).enumerate() {
        if w == 0.0 {
            continue;
        }
        let t = Tensor::stack(&targets.iter().map(|t| t.matcher.targets[k].shallow_clone()).collect::<Vec<_>>(), 0);
        let g = &grads[layer];
        inner += (g * &t).sum_dim_intlist([1i64].as_slice(), false, kind) * w;
        g_norm += g.square().sum_dim_intlist([1i64].as_slice(), false, kind) * w;
        t_norm += t.square().sum_dim_intlist([1i64].as_slice(), false, kind) * w;
    }
    // As `Matcher::cosine`, victim by victim.
    objective::cosine_distance(&inner, &g_norm, &t_norm)
}

/// Per-victim total variation (V,): `objective::total_variation` of each victim's image, as the loop computes it.
fn total_variations(x: &Tensor) -> Tensor {
    let per_victim: Vec<Tensor> = (0..x.size()[0]).map(|i| objective::total_variation(&x.narrow(0, i, 1))).collect();
    Tensor::stack(&per_victim, 0)
}

/// Inverting Gradients on every target at once (see the module documentation). `None` when a run's objective
/// became non-finite.
fn inverting_gradients(
    targets: &[Target],
    labels: &Tensor,
    source: LabelSource,
    rngs: &mut [ChaCha8Rng],
    on_iteration: &mut dyn FnMut(),
) -> Result<Option<Vec<Reconstruction>>> {
    let config = targets[0].config;
    let model = targets[0].model;
    let kind = model.kind();
    let shape = targets[0].shape;
    let v = targets.len();
    let nx = shape.iter().product::<i64>() as usize;
    let mut batch_shape = shape;
    batch_shape[0] = v as i64;
    // Per victim: the best restart's (distance, image) and every restart's distance.
    let mut best: Vec<Option<(f64, Tensor)>> = (0..v).map(|_| None).collect();
    let mut restart_distances = vec![Vec::new(); v];
    let n = config.iterations;
    for _ in 0..config.restarts {
        let starts: Vec<Tensor> =
            rngs.iter_mut().map(|r| tensor(&rng::standard_normal_f64(r, nx), &shape, kind)).collect();
        let mut x = Tensor::cat(&starts, 0).reshape(batch_shape);
        let mut adam = SignedAdam::new(&x, None, config.lr, n, config.data_range);
        for it in 0..n {
            let xv = x.detach().set_requires_grad(true);
            let mut loss = cosine_distances(targets, &xv, labels, true);
            if config.tv_weight > 0.0 {
                loss += total_variations(&xv) * config.tv_weight;
            }
            let total = loss.sum(kind);
            if !total.double_value(&[]).is_finite() {
                return Ok(None);
            }
            let g = Tensor::run_backward(&[&total], &[&xv], false, false).remove(0);
            if g.isfinite().all().int64_value(&[]) != 1 {
                return Ok(None);
            }
            adam.step(it, &mut x, &g, None, None);
            for _ in 0..v {
                on_iteration();
            }
        }
        // Score the final state by the gradient match alone, as the loop does.
        let distances = Vec::<f64>::try_from(cosine_distances(targets, &x, labels, false).to_kind(Kind::Double))?;
        for (i, d) in distances.into_iter().enumerate() {
            restart_distances[i].push(d);
            if best[i].as_ref().is_none_or(|b| d < b.0) {
                best[i] = Some((d, x.get(i as i64).unsqueeze(0).detach()));
            }
        }
    }
    let (lo, hi) = config.data_range;
    let label_values = Vec::<i64>::try_from(labels)?;
    Ok(Some(
        best.into_iter()
            .zip(restart_distances)
            .zip(label_values)
            .map(|((b, distances), label)| {
                let (distance, x) = b.expect("at least one restart ran");
                Reconstruction {
                    inputs: x.clamp(lo, hi).to_kind(Kind::Float),
                    labels: vec![label],
                    label_source: source,
                    gradient_distance: distance,
                    restart_distances: distances,
                    iterations: n * config.restarts,
                    evaluations: (n + 1) * config.restarts,
                    stop: Stop::Iterations,
                    warnings: Vec::new(),
                }
            })
            .collect(),
    ))
}
