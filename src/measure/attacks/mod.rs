//! Reference gradient-inversion attacks, run on the same shared updates gradleak measures, restricted to any set of
//! layers, so that a layer's measured usable information can be set beside what a real attack recovers from it.
//!
//! * **DLG** (Zhu et al., 2019, "Deep Leakage from Gradients"): a dummy input and a soft dummy label (softmax of
//!   free logits) are optimised with L-BFGS so that their gradient matches the shared one in squared L2 distance,
//!   summed over the matched layers.
//! * **iDLG** (Zhao et al., 2020): the label is read off the last layer's gradient (for cross-entropy and one
//!   sample, only the true class's weight row has a negative sum), then only the input is optimised, as in DLG.
//! * **Inverting Gradients** (Geiping et al., 2020): cosine distance between the gradients plus a total-variation
//!   prior, Adam on the *signed* input gradient, inputs projected into the data range after every step, the
//!   learning rate divided by 10 at 3/8, 5/8 and 7/8 of the iterations, several restarts of which the best gradient
//!   match is kept.
//!
//! Every attack differentiates a function of the dummy's gradient (double backward). The attacker sees only what
//! the client shared: protected layers are missing, and pruned, quantised or noised values are what it matches.
//! With a batch of B > 1 the B reconstructions are matched to the B originals by an optimal assignment on MSE
//! (Hungarian) before they are scored. Every random choice (the victims, the defences' noise, the dummy's
//! initialisation) follows from one seed.

pub mod grid;
pub mod lbfgs;
pub mod objective;

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::data::{InputShape, Split};
use crate::defenses::{self, Defense};
use crate::gradients::updates::{compute_updates, UpdateConfig};
use crate::measure::image_metrics::{self, SsimOptions};
use crate::models::{LayerKind, Model};
use crate::progress::Progress;
use crate::rng::{self, Stream};
use lbfgs::{LbfgsOptions, Stop};
use objective::{DummyLabels, Matcher};

crate::keyword_enum! {
    /// The attack algorithm.
    pub enum Method("attack method") {
        /// Deep Leakage from Gradients: L2 gradient matching, soft labels, L-BFGS.
        Dlg = "dlg",
        /// Improved DLG: analytic label from the last layer, then DLG on the input.
        Idlg = "idlg",
        /// Inverting Gradients: cosine matching, total variation, signed Adam, restarts.
        Ig = "ig",
    }
}

crate::keyword_enum! {
    /// Where the attack's labels come from.
    pub enum LabelMode("label mode") {
        /// The method's own choice: DLG optimises soft labels; iDLG infers them from the last layer; Inverting
        /// Gradients infers the label of a single image when the last layer is matched and optimises labels
        /// otherwise (as the reference implementation).
        Auto = "auto",
        /// Optimise free label logits jointly with the input (soft labels, as DLG).
        Optimize = "optimize",
        /// Infer from the last layer's gradient (iDLG's rule; needs the last layer among the matched layers).
        Infer = "infer",
        /// The attacker knows the true labels (an upper bound on what an attack can do).
        Known = "known",
    }
}

/// How to attack one shared update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackConfig {
    pub method: Method,
    /// Optimisation iterations per restart (L-BFGS iterations for DLG and iDLG, Adam steps for Inverting
    /// Gradients).
    pub iterations: usize,
    /// Independent starts; the one whose gradient matches best is kept.
    pub restarts: usize,
    pub labels: LabelMode,
    /// Layers to match (empty: every shared layer).
    pub layers: Vec<String>,
    /// A weight per matched layer (empty: all 1).
    pub layer_weights: Vec<f64>,
    /// L-BFGS step multiplier (DLG, iDLG) or Adam step size (Inverting Gradients).
    pub lr: f64,
    /// Weight of the total-variation prior (Inverting Gradients).
    pub tv_weight: f64,
    /// L-BFGS history size (DLG, iDLG).
    pub history: usize,
    /// Range of valid input values: the box of Inverting Gradients, and the range reconstructions are clipped to
    /// before they are scored and drawn.
    pub data_range: (f64, f64),
    /// Seed of the dummies' initialisation (and, in [`run_attacks`], of the victims and the defences).
    pub seed: u64,
}

impl AttackConfig {
    /// The published settings of a method: DLG and iDLG run L-BFGS (step 1, history 100) for 300 iterations;
    /// Inverting Gradients runs signed Adam (step 0.1) for 4800 iterations (the reference implementation's
    /// defaults) with one restart and total-variation weight 1e-4 on `[0, 1]` pixels (the reference code's 0.1 is
    /// tuned for normalised ImageNet images and over-smooths MNIST-like data; see `docs/attacks.md`).
    pub fn new(method: Method) -> Self {
        let (iterations, lr, tv_weight) = match method {
            Method::Dlg | Method::Idlg => (300, 1.0, 0.0),
            Method::Ig => (4800, 0.1, 1e-4),
        };
        AttackConfig {
            method,
            iterations,
            restarts: 1,
            labels: LabelMode::Auto,
            layers: Vec::new(),
            layer_weights: Vec::new(),
            lr,
            tv_weight,
            history: 100,
            data_range: (0.0, 1.0),
            seed: 0,
        }
    }

    /// Checks every setting's range.
    pub fn validate(&self) -> Result<()> {
        if self.iterations == 0 {
            bail!("--iterations must be at least 1, got 0");
        }
        if self.restarts == 0 {
            bail!("--restarts must be at least 1, got 0");
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr must be a finite number > 0, got {}", self.lr);
        }
        if !(self.tv_weight.is_finite() && self.tv_weight >= 0.0) {
            bail!("--tv must be a finite number >= 0, got {}", self.tv_weight);
        }
        if self.history == 0 {
            bail!("the L-BFGS history must be at least 1");
        }
        let (lo, hi) = self.data_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            bail!("the data range must be two finite numbers lo < hi, got ({lo}, {hi})");
        }
        if !self.layer_weights.is_empty() {
            if self.layer_weights.len() != self.layers.len() {
                bail!(
                    "--layer-weights has {} values but --layers names {} layers; give one weight per layer",
                    self.layer_weights.len(),
                    self.layers.len()
                );
            }
            if let Some(w) = self.layer_weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
                bail!("--layer-weights must be finite numbers >= 0, got {w}");
            }
            if self.layer_weights.iter().all(|w| *w == 0.0) {
                bail!("--layer-weights are all 0: nothing would be matched");
            }
        }
        Ok(())
    }
}

/// Which labels an attack used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelSource {
    Optimized,
    Inferred,
    Known,
}

/// What one attack on one shared update produced.
#[derive(Debug)]
pub struct Reconstruction {
    /// (B, C, H, W), clipped to the data range.
    pub inputs: Tensor,
    /// The label of each reconstruction.
    pub labels: Vec<i64>,
    pub label_source: LabelSource,
    /// The gradient distance of the kept restart: squared L2 for DLG and iDLG, cosine distance for Inverting
    /// Gradients (without the prior).
    pub gradient_distance: f64,
    /// The distance reached by every restart.
    pub restart_distances: Vec<f64>,
    /// Iterations done, summed over restarts.
    pub iterations: usize,
    /// Objective evaluations (forward + double backward), summed over restarts.
    pub evaluations: usize,
    /// Why the kept restart stopped.
    pub stop: Stop,
    pub warnings: Vec<String>,
}

/// The attacker's view of the matched layers: indices, targets (in the model's precision) and weights.
fn matcher<'a>(model: &'a Model, shared: &[(String, Tensor)], config: &AttackConfig) -> Result<Matcher<'a>> {
    let kind = model.kind();
    for (name, g) in shared {
        let index = model.layer_index(name).context("shared update")?;
        let layer = &model.layers()[index];
        let numel = g.numel() as i64;
        if numel != layer.num_params() {
            bail!(
                "shared update: layer '{name}' has {numel} values, but layer '{name}' of model {} has {} parameters \
                 (weight {:?}, bias {:?}); the update does not come from this model",
                model.spec.arch,
                layer.num_params(),
                layer.weight.size(),
                layer.bias.size()
            );
        }
        let values = objective::to_vec(g);
        if values.iter().any(|v| !v.is_finite()) {
            bail!("shared update: layer '{name}' holds NaN or infinite values");
        }
    }
    let shared_names: Vec<&str> = shared.iter().map(|(n, _)| n.as_str()).collect();
    if shared.is_empty() {
        bail!("shared update: no layer was shared, there is nothing to attack");
    }
    let chosen: Vec<String> = if config.layers.is_empty() {
        shared_names.iter().map(|s| s.to_string()).collect()
    } else {
        config.layers.clone()
    };
    let mut layers = Vec::new();
    let mut targets = Vec::new();
    for (i, name) in chosen.iter().enumerate() {
        let index = model.layer_index(name).context("--layers")?;
        if layers.contains(&index) {
            bail!("--layers names '{name}' twice");
        }
        let Some((_, g)) = shared.iter().find(|(n, _)| n == name) else {
            bail!(
                "--layers: layer '{name}' was not shared (a defence protects it), so the attacker cannot match it; \
                 shared layers: {}",
                shared_names.join(", ")
            );
        };
        let _ = i;
        layers.push(index);
        targets.push(g.detach().to_kind(kind).flatten(0, -1));
    }
    let weights = if config.layer_weights.is_empty() { vec![1.0; layers.len()] } else { config.layer_weights.clone() };
    Ok(Matcher { model, layers, targets, weights })
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
    let LayerKind::Linear { in_features, out_features } = last.kind else {
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

fn tensor(values: &[f64], shape: &[i64], kind: Kind) -> Tensor {
    Tensor::from_slice(values).reshape(shape).to_kind(kind)
}

enum LabelPlan {
    Fixed(Tensor, LabelSource),
    Optimize,
}

/// Reconstructs the batch behind one shared update.
///
/// `shared` lists the layers the client shared, by name, each a flat gradient of the layer's parameters (weight
/// then bias) of the batch's mean loss; `batch_size` is the number of inputs behind it; `known_labels` is needed for
/// [`LabelMode::Known`]. The model's precision is the attack's precision. `on_iteration` is called after every
/// iteration (for progress bars).
pub fn reconstruct(
    model: &Model,
    shared: &[(String, Tensor)],
    batch_size: i64,
    config: &AttackConfig,
    known_labels: Option<&Tensor>,
    rng: &mut ChaCha8Rng,
    on_iteration: &mut dyn FnMut(),
) -> Result<Reconstruction> {
    config.validate()?;
    let InputShape::Image { channels, height, width } = model.spec.input else {
        bail!("the attacks reconstruct images; model {} takes {}", model.spec.arch, model.spec.input);
    };
    ensure!(batch_size >= 1, "--batch-size must be at least 1, got {batch_size}");
    let matcher = matcher(model, shared, config)?;
    let num_classes = model.spec.num_classes;
    let last = model.layers().len() - 1;
    let last_position = matcher.layers.iter().position(|&l| l == last);
    let infer = |why: &str| -> Result<LabelPlan> {
        let Some(p) = last_position else {
            bail!(
                "{why} infers labels from the gradient of the last layer '{}', which is not among the matched layers; \
                 add it to --layers, or pass --labels optimize or --labels known",
                model.layers()[last].name
            );
        };
        let labels = infer_labels(model, &matcher.targets[p], batch_size)?;
        Ok(LabelPlan::Fixed(Tensor::from_slice(&labels), LabelSource::Inferred))
    };
    let plan = match (config.labels, config.method) {
        (LabelMode::Known, _) => {
            let Some(y) = known_labels else { bail!("--labels known: the true labels were not given to the attack") };
            ensure!(y.size() == [batch_size], "--labels known: expected {batch_size} labels, got shape {:?}", y.size());
            let values = objective::to_vec(y);
            ensure!(
                values.iter().all(|&v| v >= 0.0 && v < num_classes as f64),
                "--labels known: labels must be in [0, {num_classes})"
            );
            LabelPlan::Fixed(y.to_kind(Kind::Int64), LabelSource::Known)
        }
        (LabelMode::Optimize, _) | (LabelMode::Auto, Method::Dlg) => LabelPlan::Optimize,
        (LabelMode::Infer, _) => infer("--labels infer")?,
        (LabelMode::Auto, Method::Idlg) => infer("iDLG")?,
        (LabelMode::Auto, Method::Ig) => {
            if batch_size == 1 && last_position.is_some() {
                infer("Inverting Gradients")?
            } else {
                LabelPlan::Optimize
            }
        }
    };

    let shape = [batch_size, channels, height, width];
    let mut best: Option<(f64, Tensor, Option<Tensor>, Stop)> = None;
    let mut restart_distances = Vec::new();
    let (mut iterations, mut evaluations) = (0, 0);
    let mut warnings = Vec::new();
    for restart in 0..config.restarts {
        let run = match config.method {
            Method::Dlg | Method::Idlg => run_lbfgs(&matcher, &plan, &shape, num_classes, config, rng, on_iteration)?,
            Method::Ig => run_signed_adam(&matcher, &plan, &shape, num_classes, config, rng, on_iteration)?,
        };
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
    let (labels, label_source) = match &plan {
        LabelPlan::Fixed(y, source) => (objective::to_vec(y).into_iter().map(|v| v as i64).collect(), *source),
        LabelPlan::Optimize => {
            let z = logits.context("optimised labels are missing")?;
            let argmax = z.argmax(-1, false);
            (objective::to_vec(&argmax).into_iter().map(|v| v as i64).collect(), LabelSource::Optimized)
        }
    };
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

/// One restart's outcome.
struct RunOutcome {
    x: Tensor,
    label_logits: Option<Tensor>,
    distance: f64,
    iterations: usize,
    evaluations: usize,
    stop: Stop,
    warning: Option<String>,
}

const NONFINITE_START: &str = "the gradient-matching loss is not finite at the start of the attack; the shared \
                               update's values are too large for the model's precision";

/// DLG and iDLG: L-BFGS on the squared L2 gradient distance, over the input and, with optimised labels, the label
/// logits.
fn run_lbfgs(
    matcher: &Matcher,
    plan: &LabelPlan,
    shape: &[i64; 4],
    num_classes: i64,
    config: &AttackConfig,
    rng: &mut ChaCha8Rng,
    on_iteration: &mut dyn FnMut(),
) -> Result<RunOutcome> {
    let kind = matcher.model.kind();
    let nx = shape.iter().product::<i64>() as usize;
    let label_shape = [shape[0], num_classes];
    let nl = if matches!(plan, LabelPlan::Optimize) { (shape[0] * num_classes) as usize } else { 0 };
    // DLG's initialisation: standard normal input and label logits.
    let mut start = rng::standard_normal_f64(rng, nx);
    start.extend(rng::standard_normal_f64(rng, nl));
    let mut objective = |v: &[f64]| -> (f64, Vec<f64>) {
        let x = tensor(&v[..nx], shape, kind).set_requires_grad(true);
        let z = (nl > 0).then(|| tensor(&v[nx..], &label_shape, kind).set_requires_grad(true));
        let labels = match (plan, &z) {
            (LabelPlan::Fixed(y, _), _) => DummyLabels::Hard(y),
            (LabelPlan::Optimize, Some(z)) => DummyLabels::Soft(z),
            (LabelPlan::Optimize, None) => unreachable!("optimised labels have logits"),
        };
        let grads = matcher.gradients(&x, &labels);
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
        lr: config.lr,
        history: config.history,
        tolerance_grad: 0.0,
        tolerance_change: 0.0,
        ..Default::default()
    };
    let mut done = 0;
    let result = lbfgs::minimize(&mut objective, &start, config.iterations, &options, &mut |_, _| {
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

/// Adam moments of one tensor.
struct Adam {
    m: Tensor,
    v: Tensor,
}

impl Adam {
    fn new(like: &Tensor) -> Self {
        Adam { m: like.zeros_like(), v: like.zeros_like() }
    }

    /// One step of PyTorch's Adam (betas 0.9, 0.999, eps 1e-8) at step number `t` (from 1).
    fn step(&mut self, x: &Tensor, g: &Tensor, lr: f64, t: i32) -> Tensor {
        let (b1, b2, eps) = (0.9, 0.999, 1e-8);
        self.m = &self.m * b1 + g * (1.0 - b1);
        self.v = &self.v * b2 + g.square() * (1.0 - b2);
        let c1 = 1.0 - f64::powi(b1, t);
        let c2 = 1.0 - f64::powi(b2, t);
        let denom = (&self.v / c2).sqrt() + eps;
        x - (&self.m / denom) * (lr / c1)
    }
}

/// Inverting Gradients: signed Adam on cosine distance + total variation, boxed, step decay.
fn run_signed_adam(
    matcher: &Matcher,
    plan: &LabelPlan,
    shape: &[i64; 4],
    num_classes: i64,
    config: &AttackConfig,
    rng: &mut ChaCha8Rng,
    on_iteration: &mut dyn FnMut(),
) -> Result<RunOutcome> {
    let kind = matcher.model.kind();
    let nx = shape.iter().product::<i64>() as usize;
    let (lo, hi) = config.data_range;
    let mut x = tensor(&rng::standard_normal_f64(rng, nx), shape, kind);
    let mut z = matches!(plan, LabelPlan::Optimize).then(|| {
        tensor(&rng::standard_normal_f64(rng, (shape[0] * num_classes) as usize), &[shape[0], num_classes], kind)
    });
    let mut adam_x = Adam::new(&x);
    let mut adam_z = z.as_ref().map(Adam::new);
    let n = config.iterations;
    let milestones = [n * 3 / 8, n * 5 / 8, n * 7 / 8];
    let mut warning = None;
    let mut done = 0;
    let mut evaluations = 0;
    for it in 0..n {
        let lr = config.lr * 0.1f64.powi(milestones.iter().filter(|&&m| it >= m).count() as i32);
        let xv = x.detach().set_requires_grad(true);
        let zv = z.as_ref().map(|z| z.detach().set_requires_grad(true));
        let labels = match (plan, &zv) {
            (LabelPlan::Fixed(y, _), _) => DummyLabels::Hard(y),
            (LabelPlan::Optimize, Some(z)) => DummyLabels::Soft(z),
            (LabelPlan::Optimize, None) => unreachable!("optimised labels have logits"),
        };
        let grads = matcher.gradients(&xv, &labels);
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
        tch::no_grad(|| {
            x = adam_x.step(&x, &g[0].sign(), lr, it as i32 + 1).clamp(lo, hi);
            if let (Some(z), Some(adam), Some(gz)) = (z.as_mut(), adam_z.as_mut(), g.get(1)) {
                *z = adam.step(z, gz, lr, it as i32 + 1);
            }
        });
        done += 1;
        on_iteration();
    }
    for _ in done..n {
        on_iteration();
    }
    // Score the final state by the gradient match alone, as the reference implementation ranks restarts.
    let labels = match (plan, &z) {
        (LabelPlan::Fixed(y, _), _) => DummyLabels::Hard(y),
        (LabelPlan::Optimize, Some(z)) => DummyLabels::Soft(z),
        (LabelPlan::Optimize, None) => unreachable!("optimised labels have logits"),
    };
    let distance = matcher.cosine(&matcher.gradients(&x, &labels)).double_value(&[]);
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

/// The scores of one reconstructed image against the original it was matched to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageScore {
    /// Position of the original in its batch.
    pub original: usize,
    /// Position of the reconstruction matched to it.
    pub reconstruction: usize,
    pub label: i64,
    pub recovered_label: i64,
    pub label_correct: bool,
    pub mse: f64,
    /// dB; null in JSON when the images are identical (infinite).
    pub psnr: f64,
    /// Null when the images are smaller than 3x3.
    pub ssim: Option<f64>,
}

/// SSIM settings for an image size: scikit-image's defaults (11x11 window) or the largest odd window that fits.
fn ssim_options(height: i64, width: i64, data_range: f64) -> Option<SsimOptions> {
    let side = height.min(width);
    if side < 3 {
        return None;
    }
    let win_size = (side < 11).then(|| (if side % 2 == 1 { side } else { side - 1 }) as usize);
    Some(SsimOptions { data_range, win_size, ..Default::default() })
}

/// Matches reconstructions to originals (Hungarian on MSE) and scores every pair. Both `(B, C, H, W)`; labels
/// `(B,)` each. Returns one score per original, in the originals' order.
pub fn score(
    reconstructions: &Tensor,
    recovered_labels: &[i64],
    originals: &Tensor,
    labels: &[i64],
    data_range: f64,
) -> Result<Vec<ImageScore>> {
    let r = reconstructions.to_kind(Kind::Double);
    let o = originals.to_kind(Kind::Double);
    ensure!(
        r.size() == o.size(),
        "scoring: {:?} reconstructions for {:?} originals; they must have the same shape",
        r.size(),
        o.size()
    );
    ensure!(r.dim() == 4, "scoring: expected (B, C, H, W) images, got shape {:?}", r.size());
    let assignment = image_metrics::match_reconstructions(&r, &o)?;
    let mut scores = Vec::with_capacity(assignment.len());
    let (h, w) = (r.size()[2], r.size()[3]);
    let ssim_opts = ssim_options(h, w, data_range);
    for (j, &i) in assignment.iter().enumerate() {
        let a = r.get(j as i64);
        let b = o.get(i as i64);
        let mse = image_metrics::mse(&a, &b)?[0];
        let psnr = image_metrics::psnr(&a, &b, data_range)?[0];
        let ssim = match &ssim_opts {
            Some(opts) => Some(image_metrics::ssim(&a, &b, opts)?[0]),
            None => None,
        };
        scores.push(ImageScore {
            original: i,
            reconstruction: j,
            label: labels[i],
            recovered_label: recovered_labels[j],
            label_correct: labels[i] == recovered_labels[j],
            mse,
            psnr,
            ssim,
        });
    }
    scores.sort_by_key(|s| s.original);
    Ok(scores)
}

/// What is shared and attacked in [`run_attacks`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareConfig {
    /// Number of shared updates attacked (distinct victims).
    pub samples: i64,
    /// Inputs behind each update.
    pub batch_size: i64,
    /// Defences applied before sharing.
    pub defenses: Vec<Defense>,
}

/// The attack of one shared update.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateResult {
    pub update: usize,
    /// Split indices of the batch members.
    pub indices: Vec<i64>,
    pub gradient_distance: f64,
    pub restart_distances: Vec<f64>,
    pub iterations: usize,
    pub evaluations: usize,
    pub stop: Stop,
    pub images: Vec<ImageScore>,
}

/// Means over every attacked image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeanScores {
    pub mse: f64,
    pub psnr: f64,
    pub ssim: Option<f64>,
    pub label_accuracy: f64,
}

/// A matched layer and its weight in the gradient distance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatchedLayer {
    pub name: String,
    pub weight: f64,
}

/// Everything about an attack run; serialised as `attack.json`.
#[derive(Debug, Serialize)]
pub struct AttackReport {
    pub gradleak_version: String,
    pub method: Method,
    pub config: AttackConfig,
    pub share: ShareConfig,
    /// A readable name of the defences.
    pub defense: String,
    /// The matched layers and their weights.
    pub matched_layers: Vec<MatchedLayer>,
    /// Layers the client did not share.
    pub protected: Vec<String>,
    pub label_source: LabelSource,
    pub updates: Vec<UpdateResult>,
    pub mean: MeanScores,
    pub seconds: f64,
    pub iterations_per_second: f64,
    pub warnings: Vec<String>,
    /// (N*B, C, H, W) originals, by update then batch position.
    #[serde(skip)]
    pub originals: Tensor,
    /// (N*B, C, H, W) the reconstruction matched to each original.
    #[serde(skip)]
    pub reconstructions: Tensor,
}

/// Draws `share.samples` shared updates of `model` on `split` exactly as `gradleak grads` does with the same seed
/// (same victims, same defences), attacks each one and scores the reconstructions.
pub fn run_attacks(
    model: &Model,
    split: &Split,
    share: &ShareConfig,
    config: &AttackConfig,
    progress: Progress,
) -> Result<AttackReport> {
    config.validate()?;
    let InputShape::Image { .. } = model.spec.input else {
        bail!("the attacks reconstruct images; model {} takes {}", model.spec.arch, model.spec.input);
    };
    let data_shape = split.inputs.size();
    let expected = model.spec.input.batch(split.len());
    if data_shape != expected {
        bail!(
            "the data are {:?} images but model {} takes {} (batch shape {:?})",
            &data_shape[1..],
            model.spec.arch,
            model.spec.input,
            &expected[1..]
        );
    }
    if share.samples < 1 {
        bail!("--samples must be at least 1, got {}", share.samples);
    }
    if share.samples > split.len() {
        bail!(
            "--samples {} is larger than the split ({} images): victims must be distinct",
            share.samples,
            split.len()
        );
    }
    let update_config = UpdateConfig {
        num_updates: share.samples,
        batch_size: share.batch_size,
        seed: config.seed,
        defenses: share.defenses.clone(),
        layers: None,
        sketch_dim: i64::MAX,
        full_max_params: i64::MAX,
        ..Default::default()
    };
    let updates = compute_updates(model, split, &update_config, Progress::HIDDEN)?;
    let started = Instant::now();
    let total = (share.samples as u64) * (config.restarts as u64) * (config.iterations as u64);
    let bar = progress.bar(total, format!("attack {}", config.method));
    let b = share.batch_size;
    let mut results = Vec::new();
    let mut warnings = Vec::new();
    let mut originals = Vec::new();
    let mut reconstructions = Vec::new();
    let mut label_source = LabelSource::Optimized;
    let mut matched_layers = Vec::new();
    let (lo, hi) = config.data_range;
    for u in 0..share.samples {
        let shared: Vec<(String, Tensor)> = updates
            .layers
            .iter()
            .map(|l| (l.name.clone(), l.full.as_ref().expect("full gradients are stored").get(u)))
            .collect();
        let indices = updates.batch_indices.get(u);
        let labels = updates.batch_labels.get(u);
        let mut rng = rng::rng(config.seed, Stream::AttackUpdate { update: u as u64 });
        let rec = reconstruct(model, &shared, b, config, Some(&labels), &mut rng, &mut || bar.inc(1))
            .with_context(|| format!("update {}", u + 1))?;
        let original = split.inputs.index_select(0, &indices);
        let label_values: Vec<i64> = objective::to_vec(&labels).into_iter().map(|v| v as i64).collect();
        let images = score(&rec.inputs, &rec.labels, &original, &label_values, hi - lo)?;
        let order: Vec<i64> = images.iter().map(|s| s.reconstruction as i64).collect();
        originals.push(original.to_kind(Kind::Float));
        reconstructions.push(rec.inputs.index_select(0, &Tensor::from_slice(&order)));
        warnings.extend(rec.warnings.iter().map(|w| format!("update {}: {w}", u + 1)));
        label_source = rec.label_source;
        if matched_layers.is_empty() {
            let m = matcher(model, &shared, config)?;
            matched_layers = m
                .layers
                .iter()
                .zip(&m.weights)
                .map(|(&l, &weight)| MatchedLayer { name: model.layers()[l].name.clone(), weight })
                .collect();
        }
        results.push(UpdateResult {
            update: u as usize,
            indices: objective::to_vec(&indices).into_iter().map(|v| v as i64).collect(),
            gradient_distance: rec.gradient_distance,
            restart_distances: rec.restart_distances,
            iterations: rec.iterations,
            evaluations: rec.evaluations,
            stop: rec.stop,
            images,
        });
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let all: Vec<&ImageScore> = results.iter().flat_map(|r| &r.images).collect();
    let count = all.len() as f64;
    let ssims: Vec<f64> = all.iter().filter_map(|s| s.ssim).collect();
    let mean = MeanScores {
        mse: all.iter().map(|s| s.mse).sum::<f64>() / count,
        psnr: all.iter().map(|s| s.psnr).sum::<f64>() / count,
        ssim: (ssims.len() == all.len()).then(|| ssims.iter().sum::<f64>() / count),
        label_accuracy: all.iter().filter(|s| s.label_correct).count() as f64 / count,
    };
    let iterations: usize = results.iter().map(|r| r.iterations).sum();
    Ok(AttackReport {
        gradleak_version: env!("CARGO_PKG_VERSION").to_string(),
        method: config.method,
        config: config.clone(),
        share: share.clone(),
        defense: defenses::describe(&share.defenses),
        matched_layers,
        protected: updates.protected.clone(),
        label_source,
        updates: results,
        mean,
        seconds,
        iterations_per_second: iterations as f64 / seconds.max(1e-9),
        warnings,
        originals: Tensor::cat(&originals, 0),
        reconstructions: Tensor::cat(&reconstructions, 0),
    })
}

/// Replaces every parameter by uniform values in `[-bound, bound]` from a generator seeded by `seed`: the
/// initialisation of the DLG code (`weights_init`: `uniform_(-0.5, 0.5)` on weights and biases), under which
/// gradients of the sigmoid LeNet are large and DLG's published reconstructions were made.
pub fn reinit_uniform(model: &Model, bound: f64, seed: u64) -> Result<()> {
    if !(bound.is_finite() && bound > 0.0) {
        bail!("--init-uniform must be a finite number > 0, got {bound}");
    }
    let mut rng = rng::rng(seed, Stream::UniformReinit);
    tch::no_grad(|| {
        for layer in model.layers() {
            for p in [&layer.weight, &layer.bias] {
                let values: Vec<f64> = (0..p.numel()).map(|_| rng.random_range(-bound..bound)).collect();
                let mut target = p.shallow_clone();
                target.copy_(&tensor(&values, &p.size(), p.kind()));
            }
        }
    });
    Ok(())
}

/// Writes `attack.json`, `reconstructions.png` (originals above their reconstructions) and
/// `reconstructions.safetensors` (`originals`, `reconstructions`) into `dir`, atomically.
pub fn write_outputs(report: &AttackReport, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the output folder", dir.display()))?;
    let (lo, hi) = report.config.data_range;
    grid::write_grid(&dir.join("reconstructions.png"), &report.originals, &report.reconstructions, 10, (lo, hi))?;
    let named =
        [("originals", report.originals.contiguous()), ("reconstructions", report.reconstructions.contiguous())];
    crate::io::atomic_write_with(&dir.join("reconstructions.safetensors"), |tmp| {
        Tensor::write_safetensors(&named, tmp).map_err(Into::into)
    })?;
    crate::io::write_json(&dir.join("attack.json"), report)
}
