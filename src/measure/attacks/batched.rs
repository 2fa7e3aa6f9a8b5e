//! Inverting Gradients on many single-sample updates at once: one dummy per victim, all in one batch, each matched
//! to its own update through the per-sample gradients of the dummies (the vectorised grad samplers of
//! [`crate::gradients::per_sample`], kept differentiable).
//!
//! Each victim's objective (cosine distance of its dummy's gradient to its update, plus the total variation of its
//! dummy) depends on its own dummy (and its own label logits, when labels are optimised) only, the model runs in
//! evaluation mode, and signed Adam works per coordinate:
//! the batch takes exactly the steps the one-at-a-time loop takes, up to floating-point rounding of the reductions.
//! Each victim draws its starts from its own generator, restart by restart, as in the loop. A test compares the
//! two.
//!
//! Where the time goes, and what this module does about it (`examples/bench_attacks_batched.rs`, LeNet-5, 64
//! victims, 2 threads, single precision):
//! - forming the dummies' per-sample gradients of the linear layers, then their double backward, allocated tens of
//!   megabytes per step (fc1 alone is 94,000 parameters per victim): the batch ran 2x as fast as the loop. The
//!   inner product and norm of a linear layer's per-sample gradient follow from its factors instead (see
//!   [`cosine_distances`]);
//! - an attack step is many small operations that split poorly over libtorch's threads, so the victims are split
//!   over workers with one libtorch thread each ([`on_workers`]).
//!
//! Together about 9 to 11x the loop's victims per second in single precision and 4x in double precision
//! (docs/benchmarks.md has the measured figures).

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{anyhow, Result};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::adam::SignedAdam;
use super::attack::Reconstruction;
use super::labels::{LabelPlan, LabelSource};
use super::objective::{self, tensor, DummyLabels};
use super::target::AttackedUpdate;
use crate::gradients::per_sample::per_sample_factors_of;
use crate::models::{Forward, LayerKind, Model};
use crate::optim::Stop;
use crate::rng;

/// Inverting Gradients on every target at once, when every update is one sample, all labels are fixed (inferred
/// or known) or all optimised, all updates match the same layers with the same weights, and the model is built
/// in; otherwise, or when an objective became non-finite, None, with `rngs` as they were (the one-at-a-time loop
/// then runs from the same starts and reports any error per update).
pub fn inverting_gradients_all(
    targets: &[AttackedUpdate],
    rngs: &mut [ChaCha8Rng],
    on_iteration: &mut dyn FnMut(),
) -> Result<Option<Vec<Reconstruction>>> {
    let workers = tch::get_num_threads().max(1) as usize;
    inverting_gradients_on(workers, targets, rngs, on_iteration)
}

/// [`inverting_gradients_all`] on at most `workers` threads (one libtorch thread each; at least
/// `MIN_VICTIMS_PER_WORKER` victims per worker); with 1, in the calling thread with libtorch's own threads.
pub fn inverting_gradients_on(
    workers: usize,
    targets: &[AttackedUpdate],
    rngs: &mut [ChaCha8Rng],
    on_iteration: &mut dyn FnMut(),
) -> Result<Option<Vec<Reconstruction>>> {
    // A loaded TorchScript model records no layer factors; it is attacked one update at a time.
    if targets.len() < 2 || targets[0].model.script().is_some() {
        return Ok(None);
    }
    let Ok(plans) = targets.iter().map(super::ig::label_plan).collect::<Result<Vec<_>>>() else { return Ok(None) };
    let Some(labels) = BatchLabels::of(targets, &plans) else { return Ok(None) };
    let starts = rngs.to_vec();
    let workers = workers.min(targets.len() / MIN_VICTIMS_PER_WORKER).max(1);
    let all = if workers == 1 {
        inverting_gradients(targets, &labels, rngs, on_iteration)?
    } else {
        on_workers(workers, targets, &labels, rngs, on_iteration)?
    };
    if all.is_none() {
        rngs.clone_from_slice(&starts);
    }
    Ok(all)
}

/// Fewer victims than this per worker are not worth a thread of their own.
const MIN_VICTIMS_PER_WORKER: usize = 8;

/// Lets a worker thread borrow the attack's inputs. Safe here because the workers only read what is shared (the
/// model's parameters, the victims' updates, the labels), libtorch allows concurrent forward and backward passes
/// through the same leaf tensors, and each worker writes only its own slice of generators.
struct Shared<T>(T);
unsafe impl<T> Send for Shared<T> {}

impl<T> Shared<T> {
    /// Taking the whole wrapper (not its fields) makes a closure capture the wrapper, which is `Send`.
    fn into_inner(self) -> T {
        self.0
    }
}

/// [`inverting_gradients`] with the victims split into `workers` contiguous groups, each run on a thread of its
/// own with one libtorch thread: data-parallel rather than intra-op parallel, because an attack's passes are
/// many small operations that split poorly across threads (measured: `examples/bench_attacks_batched.rs`). Every
/// victim's steps depend on its own dummy only, so the split changes no result beyond floating-point rounding.
/// Progress is reported from the calling thread.
fn on_workers(
    workers: usize,
    targets: &[AttackedUpdate],
    labels: &BatchLabels,
    rngs: &mut [ChaCha8Rng],
    on_iteration: &mut dyn FnMut(),
) -> Result<Option<Vec<Reconstruction>>> {
    let per_worker = targets.len().div_ceil(workers);
    let done = AtomicUsize::new(0);
    let threads = tch::get_num_threads();
    let results: Vec<Result<Option<Vec<Reconstruction>>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .chunks(per_worker)
            .zip(rngs.chunks_mut(per_worker))
            .enumerate()
            .map(|(w, (group, group_rngs))| {
                let group_labels = labels.narrow(w * per_worker, group.len());
                let work = Shared((group, group_labels, group_rngs, &done));
                scope.spawn(move || {
                    let (group, group_labels, group_rngs, done) = work.into_inner();
                    tch::set_num_threads(1);
                    let mut count = || {
                        done.fetch_add(1, Ordering::Relaxed);
                    };
                    inverting_gradients(group, &group_labels, group_rngs, &mut count)
                })
            })
            .collect();
        let mut reported = 0;
        let mut report = |reported: &mut usize| {
            let now = done.load(Ordering::Relaxed);
            for _ in *reported..now {
                on_iteration();
            }
            *reported = now;
        };
        while !handles.iter().all(|h| h.is_finished()) {
            report(&mut reported);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        report(&mut reported);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a worker of the batched attack panicked"))))
            .collect()
    });
    // A worker's libtorch thread count is shared state; give the caller its own back.
    tch::set_num_threads(threads);
    let mut all = Vec::with_capacity(targets.len());
    for result in results {
        match result? {
            Some(group) => all.extend(group),
            None => return Ok(None),
        }
    }
    Ok(Some(all))
}

/// How the victims' labels enter the batched attack.
enum BatchLabels {
    /// Every victim's label is fixed (inferred or known).
    Fixed(Tensor, LabelSource),
    /// Every victim's label logits are optimised with its dummy (no last layer matched).
    Optimised,
}

impl BatchLabels {
    /// The victims' labels when the batched attack applies: every update is one sample, all labels are fixed or
    /// all optimised, and all updates match the same layers with the same weights. None otherwise (the attack
    /// then runs one update at a time).
    fn of(targets: &[AttackedUpdate], plans: &[LabelPlan]) -> Option<BatchLabels> {
        let first = targets.first()?;
        for t in targets {
            let same_layers = t.matcher.layers == first.matcher.layers && t.matcher.weights == first.matcher.weights;
            if t.batch_size() != 1 || !same_layers {
                return None;
            }
        }
        if plans.iter().all(|p| matches!(p, LabelPlan::Optimize)) {
            return Some(BatchLabels::Optimised);
        }
        let mut labels = Vec::with_capacity(targets.len());
        let mut source = LabelSource::Inferred;
        for plan in plans {
            let LabelPlan::Fixed(y, s) = plan else { return None };
            labels.push(y.int64_value(&[0]));
            source = *s;
        }
        Some(BatchLabels::Fixed(Tensor::from_slice(&labels), source))
    }

    /// The dummy labels of the batch, with its label logits `z` when they are optimised.
    fn dummy<'a>(&'a self, z: Option<&'a Tensor>) -> DummyLabels<'a> {
        match (self, z) {
            (BatchLabels::Fixed(y, _), _) => DummyLabels::Hard(y),
            (BatchLabels::Optimised, Some(z)) => DummyLabels::Soft(z),
            (BatchLabels::Optimised, None) => unreachable!("optimised labels have logits"),
        }
    }

    /// The labels of `count` victims from `start`.
    fn narrow(&self, start: usize, count: usize) -> BatchLabels {
        match self {
            BatchLabels::Fixed(y, source) => BatchLabels::Fixed(y.narrow(0, start as i64, count as i64), *source),
            BatchLabels::Optimised => BatchLabels::Optimised,
        }
    }
}

/// The victims' updates of the matched layers, stacked once per attack.
struct Stacked {
    /// Index into `model.layers()`.
    layer: usize,
    weight: f64,
    /// The victims' updates of this layer: (V, P); for a linear layer, the weight part as (V, O, I) in `matrix`.
    targets: Tensor,
    matrix: Option<Tensor>,
    /// Squared norms of the updates (V,).
    norms: Tensor,
}

fn stack_targets(targets: &[AttackedUpdate]) -> Vec<Stacked> {
    let matcher = &targets[0].matcher;
    let kind = matcher.model.kind();
    let layers = matcher.model.layers();
    matcher
        .layers
        .iter()
        .zip(&matcher.weights)
        .enumerate()
        .filter(|(_, (_, &w))| w != 0.0)
        .map(|(k, (&layer, &weight))| {
            let stacked =
                Tensor::stack(&targets.iter().map(|t| t.matcher.targets[k].shallow_clone()).collect::<Vec<_>>(), 0);
            let matrix = match layers[layer].kind {
                LayerKind::Linear { in_features, out_features } => {
                    Some(stacked.narrow(1, 0, out_features * in_features).reshape([-1, out_features, in_features]))
                }
                _ => None,
            };
            let norms = stacked.square().sum_dim_intlist([1i64].as_slice(), false, kind);
            Stacked { layer, weight, targets: stacked, matrix, norms }
        })
        .collect()
}

/// Per-victim cosine distances (V,) of the dummies' per-sample gradients to their updates, over the matched layers.
///
/// A linear layer's per-sample gradient is the outer product `δ aᵀ` (then the bias gradient `δ`), so its inner
/// product with the update `T` is `δᵀ (T a) + δᵀ t_bias` and its squared norm `|δ|² (|a|² + 1)`: no per-sample
/// gradient of a linear layer is formed, which is what makes the batch fast. Other layers use their grad samplers.
fn cosine_distances(
    model: &Model,
    stacked: &[Stacked],
    x: &Tensor,
    labels: &DummyLabels,
    create_graph: bool,
) -> Tensor {
    let kind = model.kind();
    // The loop's loss of each victim (the mean over a batch of one), summed over the victims.
    let summed_loss = |logits: &Tensor| labels.summed_loss(logits);
    let factors = per_sample_factors_of(model, x, Forward::recording(false), create_graph, summed_loss)
        .expect("batched attacks run on built-in models");
    let zero = || Tensor::zeros([x.size()[0]], (kind, tch::Device::Cpu));
    let (mut inner, mut g_norm, mut t_norm) = (zero(), zero(), zero());
    let rows = |t: Tensor| t.sum_dim_intlist([1i64].as_slice(), false, kind);
    for s in stacked {
        let f = &factors[s.layer];
        let (dot, square) = match &s.matrix {
            Some(matrix) => {
                let (a, delta) = (&f.input, &f.output_grad);
                let out = delta.size()[1];
                let bias = s.targets.narrow(1, s.targets.size()[1] - out, out);
                // δᵀ T rather than T a: MKL's batched product is much faster this way round (measured).
                let back = delta.unsqueeze(1).bmm(matrix).squeeze_dim(1);
                let a_norm = rows(a.square()) + 1.0;
                (rows(back * a) + rows(delta * bias), rows(delta.square()) * a_norm)
            }
            None => {
                let g = f.gradients();
                (rows(&g * &s.targets), rows(g.square()))
            }
        };
        inner += dot * s.weight;
        g_norm += square * s.weight;
        t_norm += &s.norms * s.weight;
    }
    // As `Matcher::cosine`, victim by victim.
    objective::cosine_distance(&inner, &g_norm, &t_norm)
}

/// Per-victim total variation (V,): `objective::total_variation` of each victim's image, for all at once.
fn total_variations(x: &Tensor) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    let kind = x.kind();
    let dims = [1i64, 2, 3];
    let mut tv = Tensor::zeros([x.size()[0]], (kind, tch::Device::Cpu));
    if w > 1 {
        tv += (x.narrow(3, 0, w - 1) - x.narrow(3, 1, w - 1)).abs().mean_dim(dims.as_slice(), false, kind);
    }
    if h > 1 {
        tv += (x.narrow(2, 0, h - 1) - x.narrow(2, 1, h - 1)).abs().mean_dim(dims.as_slice(), false, kind);
    }
    tv
}

/// Inverting Gradients on every target at once (see the module documentation). `None` when a run's objective
/// became non-finite.
fn inverting_gradients(
    targets: &[AttackedUpdate],
    labels: &BatchLabels,
    rngs: &mut [ChaCha8Rng],
    on_iteration: &mut dyn FnMut(),
) -> Result<Option<Vec<Reconstruction>>> {
    let config = targets[0].config;
    let model = targets[0].model;
    let kind = model.kind();
    let shape = targets[0].shape;
    let classes = model.spec.num_classes;
    let v = targets.len();
    let nx = shape.iter().product::<i64>() as usize;
    let mut batch_shape = shape;
    batch_shape[0] = v as i64;
    // Per victim: the best restart's (distance, image, label logits) and every restart's distance.
    let mut best: Vec<Option<(f64, Tensor, Option<Tensor>)>> = (0..v).map(|_| None).collect();
    let mut restart_distances = vec![Vec::new(); v];
    let n = config.iterations;
    let stacked = stack_targets(targets);
    for _ in 0..config.restarts {
        // Each victim's generator draws its start, then (optimised labels) its label logits, as the loop does.
        let starts: Vec<Tensor> =
            rngs.iter_mut().map(|r| tensor(&rng::standard_normal_f64(r, nx), &shape, kind)).collect();
        let mut x = Tensor::cat(&starts, 0).reshape(batch_shape);
        let mut z = match labels {
            BatchLabels::Optimised => {
                let logits: Vec<Tensor> = rngs
                    .iter_mut()
                    .map(|r| tensor(&rng::standard_normal_f64(r, classes as usize), &[1, classes], kind))
                    .collect();
                Some(Tensor::cat(&logits, 0))
            }
            BatchLabels::Fixed(..) => None,
        };
        let mut adam = SignedAdam::new(&x, z.as_ref(), config.lr, n, config.data_range);
        for it in 0..n {
            let xv = x.detach().set_requires_grad(true);
            let zv = z.as_ref().map(|z| z.detach().set_requires_grad(true));
            let mut loss = cosine_distances(model, &stacked, &xv, &labels.dummy(zv.as_ref()), true);
            if config.tv_weight > 0.0 {
                loss += total_variations(&xv) * config.tv_weight;
            }
            let total = loss.sum(kind);
            if !total.double_value(&[]).is_finite() {
                return Ok(None);
            }
            let mut inputs = vec![&xv];
            inputs.extend(zv.as_ref());
            let g = Tensor::run_backward(&[&total], &inputs, false, false);
            if g.iter().any(|g| g.isfinite().all().int64_value(&[]) != 1) {
                return Ok(None);
            }
            adam.step(it, &mut x, &g[0], z.as_mut(), g.get(1));
            for _ in 0..v {
                on_iteration();
            }
        }
        // Score the final state by the gradient match alone, as the loop does.
        let distances = cosine_distances(model, &stacked, &x, &labels.dummy(z.as_ref()), false);
        let distances = Vec::<f64>::try_from(distances.to_kind(Kind::Double))?;
        for (i, d) in distances.into_iter().enumerate() {
            restart_distances[i].push(d);
            if best[i].as_ref().is_none_or(|b| d < b.0) {
                let logits = z.as_ref().map(|z| z.get(i as i64).unsqueeze(0).detach());
                best[i] = Some((d, x.get(i as i64).unsqueeze(0).detach(), logits));
            }
        }
    }
    let (lo, hi) = config.data_range;
    let fixed = match labels {
        BatchLabels::Fixed(y, source) => Some((Vec::<i64>::try_from(y)?, *source)),
        BatchLabels::Optimised => None,
    };
    let mut out = Vec::with_capacity(v);
    for (i, (b, distances)) in best.into_iter().zip(restart_distances).enumerate() {
        let (distance, x, logits) = b.expect("at least one restart ran");
        let (label, label_source) = match (&fixed, logits) {
            (Some((y, source)), _) => (y[i], *source),
            (None, Some(z)) => (z.argmax(-1, false).int64_value(&[0]), LabelSource::Optimized),
            (None, None) => unreachable!("optimised labels have logits"),
        };
        out.push(Reconstruction {
            inputs: x.clamp(lo, hi).to_kind(Kind::Float),
            labels: vec![label],
            label_source,
            gradient_distance: distance,
            restart_distances: distances,
            iterations: n * config.restarts,
            evaluations: (n + 1) * config.restarts,
            stop: Stop::Iterations,
            warnings: Vec::new(),
        });
    }
    Ok(Some(out))
}
