//! Input sensitivity per layer: the Jacobian J_l(x) = d g_l(x) / d x of layer l's per-sample (shared) gradient
//! with respect to the private input x.
//!
//! # What is reported
//!
//! Per layer, averaged over samples, with a percentile bootstrap 95% interval over samples:
//! - `jacobian_norm`: ||J_l(x)||_F. How far (in gradient space) the layer's gradient moves per unit move of the
//!   input, summed over all input directions.
//! - `relative`: ||J_l(x)||_F / ||g_l(x)||, scale-free and so comparable across layers whose gradients have very
//!   different magnitudes. Samples whose shared gradient is exactly zero are left out of this column.
//! - `per_parameter`: ||J_l(x)||_F / sqrt(P_l), the root mean square over the layer's P_l parameters of
//!   ||d g_{l,p} / d x||: a size-normalised sensitivity (a layer with more parameters does not score higher merely
//!   for having more of them).
//! - `gradient_norm`: ||g_l(x)|| itself.
//!
//! # Estimators
//!
//! Hutchinson (default): for Rademacher probes v in input space (E[v v^T] = I), E ||J v||^2 = ||J||_F^2. The
//! products J_l v for *all* layers come from the double-VJP trick: with the per-sample gradients G (built with
//! `create_graph`) and dual variables t_l of G_l's shape, h(t) = d <G, t> / d x = sum_l J_l^T t_l is computed once,
//! with a graph; it is linear in t, so d <h(t), v> / d t_l = J_l v for every layer at once. The cost per probe is
//! one backward pass through h's graph, whatever the number of layers; the graph is built once per chunk of
//! samples (samples are independent, so one pass serves the whole chunk). With K probes, the per-sample estimate
//! of ||J_l||_F^2 is the mean of K values ||J_l v_k||^2, its standard error is their standard deviation over
//! sqrt(K); ||J_l||_F is its square root, with the delta-method standard error se / (2 ||J_l||_F). The square root
//! of an unbiased estimate is biased low by about var / (8 ||J||_F^3); more probes make it negligible.
//!
//! Exact: J_l e_i for every input coordinate i (D backward passes through the same graph): for small inputs, and
//! to check the estimator.
//!
//! # Defences
//!
//! The differentiated function is the *shared* gradient of a single sample (batch size 1), so defences that act on
//! the gradient are applied inside it where they are differentiable: DP clipping (over all reported layers
//! together, as `gradleak grads` clips over the shared layers), dropout (masks drawn once per chunk from a seeded
//! generator of our own, and held fixed while differentiating), pruning (the mask of the kept entries is computed at x and held fixed), and
//! additive noise (DP or `noise`: a constant, so J is unchanged, but the noisy gradient's norm enters the relative
//! sensitivity). Quantisation is piecewise constant: its derivative is zero almost everywhere, so it is not applied
//! and the report says so. `protect` leaves the protected layers out.

use anyhow::{bail, Context, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::Estimate;
use crate::defenses::{self, Defense, DefensePlan, UnderDifferentiation};
use crate::gradients::per_sample::per_sample_gradients_with;
use crate::models::{Forward, Model};
use crate::progress::Progress;
use crate::rng::{self, Stream};
use crate::stats::bootstrap_means;

/// A differentiable map from a batch of inputs (a leaf that requires grad) to per-layer, per-sample gradients:
/// one (N, P_l) tensor per layer, where row n depends on input n only.
pub type GradientMap<'a> = dyn Fn(&Tensor) -> Result<Vec<Tensor>> + 'a;

/// The per-sample gradients at a batch of inputs, linearised: Jacobian-vector products J_l v for every layer.
pub struct Linearisation {
    input: Tensor,
    values: Vec<Tensor>,
    /// Dual variables t_l (zeros, requiring grad) of the layers whose gradient has an autograd path.
    duals: Vec<Option<Tensor>>,
    /// h(t) = sum_l J_l^T t_l, with its graph; `None` when no gradient depends on the input through autograd.
    vjp: Option<Tensor>,
}

impl Linearisation {
    /// Evaluates `f` at `x` (copied into a leaf that requires grad) and builds h(t) = J^T t with a graph.
    ///
    /// Errors when no layer's gradient has a differentiable path from the input (the map detaches the input or
    /// returns constants), or when libtorch cannot differentiate the gradient twice.
    pub fn new(f: &GradientMap, x: &Tensor) -> Result<Linearisation> {
        let input = x.detach().copy().set_requires_grad(true);
        let values = f(&input)?;
        let n = input.size()[0];
        for (l, g) in values.iter().enumerate() {
            if g.dim() != 2 || g.size()[0] != n {
                bail!("gradient map: layer {l} has shape {:?}, expected ({n}, P)", g.size());
            }
        }
        let duals: Vec<Option<Tensor>> =
            values.iter().map(|g| g.requires_grad().then(|| Tensor::zeros_like(g).set_requires_grad(true))).collect();
        let terms: Vec<Tensor> =
            values.iter().zip(&duals).filter_map(|(g, t)| t.as_ref().map(|t| (g * t).sum(g.kind()))).collect();
        let no_path = || {
            anyhow::anyhow!(
                "the layer gradients have no differentiable path from the input (the input is detached or the \
                 gradients are constants), so their sensitivity to it cannot be computed"
            )
        };
        if terms.is_empty() {
            return Err(no_path());
        }
        let total = terms.into_iter().reduce(|a, b| a + b).expect("at least one term");
        let h = Tensor::f_run_backward(&[&total], &[&input], true, true)
            .context("cannot differentiate the layer gradients with respect to the input")?
            .pop()
            .expect("one input");
        if !h.defined() {
            return Err(no_path());
        }
        let vjp = h.requires_grad().then_some(h);
        let values = values.iter().map(|g| g.detach()).collect();
        Ok(Linearisation { input, values, duals, vjp })
    }

    /// The gradients at x, detached: one (N, P_l) tensor per layer.
    pub fn values(&self) -> &[Tensor] {
        &self.values
    }

    /// Number of samples N.
    pub fn samples(&self) -> i64 {
        self.input.size()[0]
    }

    /// Scalars per input sample, D.
    pub fn input_dim(&self) -> i64 {
        self.input.numel() as i64 / self.samples().max(1)
    }

    /// J_l(x_n) v_n for every layer l and sample n: one (N, P_l) tensor per layer. `v` has the input's shape.
    pub fn jvp(&self, v: &Tensor) -> Result<Vec<Tensor>> {
        if v.size() != self.input.size() {
            bail!("probe shape {:?} differs from the input shape {:?}", v.size(), self.input.size());
        }
        let zeros = |g: &Tensor| g.zeros_like();
        let Some(h) = &self.vjp else {
            // No gradient depends differentiably on x beyond constants: every J is zero.
            return Ok(self.values.iter().map(zeros).collect());
        };
        let connected: Vec<&Tensor> = self.duals.iter().flatten().collect();
        let inner = (h * v.to_kind(h.kind())).sum(h.kind());
        let mut grads = Tensor::f_run_backward(&[&inner], &connected, true, false)
            .context("cannot differentiate the input gradient again (second derivative)")?
            .into_iter();
        Ok(self
            .duals
            .iter()
            .zip(&self.values)
            .map(|(t, g)| match t {
                Some(_) => grads.next().filter(Tensor::defined).unwrap_or_else(|| zeros(g)),
                None => zeros(g),
            })
            .collect())
    }

    /// Hutchinson samples: for each layer a (K, N) f64 tensor of ||J_l(x_n) v_{k,n}||^2 with Rademacher probes.
    /// Probe k of sample n comes from a generator keyed by (`seed`, k, `ids[n]`), so values do not depend on
    /// how samples are chunked.
    pub fn hutchinson(&self, probes: usize, seed: u64, ids: &[u64]) -> Result<Vec<Tensor>> {
        let n = self.samples();
        if ids.len() as i64 != n {
            bail!("{} sample ids for {n} samples", ids.len());
        }
        let mut per_layer: Vec<Vec<Tensor>> = self.values.iter().map(|_| Vec::with_capacity(probes)).collect();
        for k in 0..probes {
            let v = rademacher(self.input_dim(), seed, k as u64, ids).reshape(self.input.size());
            for (l, jv) in self.jvp(&v)?.into_iter().enumerate() {
                per_layer[l].push(squared_rows(&jv));
            }
        }
        Ok(per_layer.iter().map(|p| Tensor::stack(p, 0)).collect())
    }

    /// Exact ||J_l(x_n)||_F^2 for every layer and sample (each an (N,) f64 tensor), from the D columns J e_i.
    pub fn exact_squared_norms(&self) -> Result<Vec<Tensor>> {
        let mut sums: Vec<Tensor> =
            self.values.iter().map(|_| Tensor::zeros([self.samples()], (Kind::Double, tch::Device::Cpu))).collect();
        self.for_each_column(|_, columns| {
            for (s, c) in sums.iter_mut().zip(columns) {
                *s += squared_rows(&c);
            }
        })?;
        Ok(sums)
    }

    /// The full Jacobians: for each layer an (N, P_l, D) tensor, column i = J_l e_i. For small models only.
    pub fn jacobians(&self) -> Result<Vec<Tensor>> {
        let mut columns: Vec<Vec<Tensor>> = self.values.iter().map(|_| Vec::new()).collect();
        self.for_each_column(|_, cols| {
            for (c, col) in columns.iter_mut().zip(cols) {
                c.push(col);
            }
        })?;
        Ok(columns.iter().map(|c| Tensor::stack(c, 2)).collect())
    }

    fn for_each_column(&self, mut visit: impl FnMut(i64, Vec<Tensor>)) -> Result<()> {
        let (n, d) = (self.samples(), self.input_dim());
        let options = (self.input.kind(), self.input.device());
        for i in 0..d {
            let e = Tensor::zeros([n, d], options);
            let _ = e.narrow(1, i, 1).fill_(1.0);
            visit(i, self.jvp(&e.reshape(self.input.size()))?);
        }
        Ok(())
    }
}

/// Squared Euclidean norm of each row, in f64.
fn squared_rows(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Double).square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
}

/// (N, D) Rademacher signs (+1/-1, f64): row n from the generator of (seed, probe), stream `ids[n]`.
pub fn rademacher(dim: i64, seed: u64, probe: u64, ids: &[u64]) -> Tensor {
    let mut values = Vec::with_capacity(ids.len() * dim as usize);
    for &id in ids {
        let mut rng = rng::rng(seed, Stream::Probe { probe, sample: id });
        let mut bits = 0u64;
        for j in 0..dim {
            if j % 64 == 0 {
                bits = rng.random();
            }
            values.push(if bits >> (j % 64) & 1 == 1 { 1.0f64 } else { -1.0 });
        }
    }
    Tensor::from_slice(&values).reshape([ids.len() as i64, dim])
}

/// What happened to each requested defence.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DefenseReport {
    pub applied: Vec<DefenseNote>,
    pub not_applied: Vec<DefenseNote>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefenseNote {
    pub defense: String,
    pub note: String,
}

/// A model's shared per-sample gradient of chosen layers, with the differentiable defences applied: the function
/// whose input Jacobian the sensitivity measures. For fixed sample ids it is a deterministic function of the
/// inputs: noise and dropout masks come from generators keyed by the seed and the ids.
pub struct SharedGradientFn<'m> {
    base: &'m Model,
    dropout_model: Option<Model>,
    /// Indices of the reported (shared) layers, in model order.
    pub layers: Vec<usize>,
    /// Dropout (and any dropout the model was trained with) active, as when a client computes its update.
    pub train: bool,
    plan: DefensePlan,
    seed: u64,
    pub defenses: DefenseReport,
}

impl<'m> SharedGradientFn<'m> {
    /// The shared gradient of `layers` (default: every layer) of `model` under `defenses`. Noise is drawn from
    /// generators keyed by `seed` and each sample's id.
    pub fn new(
        model: &'m Model,
        layers: Option<&[String]>,
        defense_list: &[Defense],
        train: bool,
        seed: u64,
    ) -> Result<SharedGradientFn<'m>> {
        let plan = DefensePlan::new(defense_list)?;
        let mut chosen = plan.shared_layers(model, layers)?;
        chosen.sort_unstable();
        let mut report = DefenseReport::default();
        for d in defense_list {
            match d.under_differentiation() {
                UnderDifferentiation::Applied(note) => {
                    report.applied.push(DefenseNote { defense: d.to_string(), note: note.to_string() })
                }
                UnderDifferentiation::NotApplied(note) => {
                    report.not_applied.push(DefenseNote { defense: d.to_string(), note: note.to_string() })
                }
            }
        }
        // `with_dropout` keeps the model's precision (f64 in the finite-difference tests).
        let dropout_model = plan.dropout.map(|rate| model.with_dropout(rate)).transpose()?;
        Ok(SharedGradientFn { base: model, dropout_model, layers: chosen, train, plan, seed, defenses: report })
    }

    /// The model the gradients are computed with (with the dropout defence's rate when it is given).
    pub fn model(&self) -> &Model {
        self.dropout_model.as_ref().unwrap_or(self.base)
    }

    /// Whether dropout acts while the gradients are computed (training mode and a nonzero rate).
    pub fn dropout_active(&self) -> bool {
        self.train && self.model().spec.dropout.rate > 0.0
    }

    /// Names of the measured layers.
    pub fn layer_names(&self) -> Vec<String> {
        self.layers.iter().map(|&l| self.model().layers()[l].name.clone()).collect()
    }

    /// The shared gradients (one (N, P_l) tensor per measured layer) of samples `x` with labels `y`; `ids` key
    /// the noise of each sample. Differentiable with respect to `x` when it requires grad.
    pub fn eval(&self, x: &Tensor, y: &Tensor, ids: &[u64]) -> Result<Vec<Tensor>> {
        let model = self.model();
        let n = x.size()[0];
        if ids.len() as i64 != n || y.size() != [n] {
            bail!("{n} inputs need {n} labels and {n} ids, got {:?} labels and {} ids", y.size(), ids.len());
        }
        // Dropout masks from a generator keyed by the seed and the chunk's first sample: a deterministic function
        // of x, and the graph is built once per chunk, so the masks stay fixed while differentiating.
        let dropout_rng =
            rng::rng(self.seed, Stream::SensitivityDropout { first_sample: ids.first().copied().unwrap_or(0) });
        let fwd = Forward::recording(self.train).with_dropout_rng(dropout_rng);
        let all = per_sample_gradients_with(model, x, y, fwd, true);
        let g: Vec<Tensor> = self.layers.iter().map(|&l| all[l].shallow_clone()).collect();
        let mut noise_rngs: Vec<ChaCha8Rng> =
            ids.iter().map(|&id| rng::rng(self.seed, Stream::SensitivityNoise { sample: id })).collect();
        Ok(defenses::single_sample_updates(g, &self.plan, &mut noise_rngs))
    }
}

/// Settings of an input sensitivity estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSensitivityConfig {
    /// Hutchinson probes per sample (ignored with `exact`).
    pub probes: usize,
    /// Compute ||J||_F exactly, one input coordinate at a time (D backward passes per chunk).
    pub exact: bool,
    /// Layers to measure (default: every shared layer).
    pub layers: Option<Vec<String>>,
    pub defenses: Vec<Defense>,
    /// Dropout active (as when a client computes its update; `gradleak grads` does the same).
    pub train: bool,
    /// Samples per pass (default: chosen from the model size to bound memory).
    pub chunk_size: Option<i64>,
    /// Bootstrap resamples over samples for the intervals.
    pub bootstrap: usize,
    pub seed: u64,
}

impl Default for InputSensitivityConfig {
    fn default() -> Self {
        InputSensitivityConfig {
            probes: 16,
            exact: false,
            layers: None,
            defenses: Vec::new(),
            train: true,
            chunk_size: None,
            bootstrap: 1000,
            seed: 0,
        }
    }
}

/// Input sensitivity of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerInputSensitivity {
    pub name: String,
    pub num_params: i64,
    /// ||J_l(x)||_F, mean over samples.
    pub jacobian_norm: Estimate,
    /// ||J_l(x)||_F / ||g_l(x)||, mean over samples with a nonzero gradient.
    pub relative: Estimate,
    /// ||J_l(x)||_F / sqrt(P_l), mean over samples.
    pub per_parameter: Estimate,
    /// ||g_l(x)|| of the shared (defended) gradient, mean over samples.
    pub gradient_norm: Estimate,
    /// Samples whose shared gradient is exactly zero (left out of `relative`).
    pub zero_gradient_samples: usize,
    /// Per-sample ||J_l(x_n)||_F, in sample order.
    #[serde(skip)]
    pub per_sample_jacobian_norm: Vec<f64>,
    /// Per-sample ||J_l(x_n)||_F / ||g_l(x_n)|| (NaN for a zero gradient), in sample order.
    #[serde(skip)]
    pub per_sample_relative: Vec<f64>,
}

impl LayerInputSensitivity {
    /// Per-sample values of a column (`jacobian_norm` or `relative`), for paired comparisons between layers.
    pub fn per_sample(&self, name: &str) -> Result<&[f64]> {
        match name {
            "jacobian_norm" => Ok(&self.per_sample_jacobian_norm),
            "relative" => Ok(&self.per_sample_relative),
            other => bail!("no per-sample values of sensitivity column '{other}'; expected jacobian_norm or relative"),
        }
    }
}

/// Input sensitivity of every measured layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSensitivityReport {
    pub samples: i64,
    /// `hutchinson-rademacher` or `exact`.
    pub estimator: String,
    /// Probes per sample (0 for the exact computation).
    pub probes: usize,
    pub input_dim: i64,
    pub chunk_size: i64,
    pub bootstrap: usize,
    pub seed: u64,
    /// Whether dropout acted while the gradients were computed (masks fixed per chunk, seeded).
    pub dropout_active: bool,
    pub defenses: DefenseReport,
    pub layers: Vec<LayerInputSensitivity>,
}

impl InputSensitivityReport {
    /// A column by name (`jacobian_norm`, `relative`, `per_parameter`, `gradient_norm`) keyed by layer, e.g.
    /// for [`super::rank_agreement`].
    pub fn column(&self, name: &str) -> Result<Vec<(String, f64)>> {
        let pick = |l: &LayerInputSensitivity| -> Result<f64> {
            Ok(match name {
                "jacobian_norm" => l.jacobian_norm.value,
                "relative" => l.relative.value,
                "per_parameter" => l.per_parameter.value,
                "gradient_norm" => l.gradient_norm.value,
                other => bail!(
                    "unknown sensitivity column '{other}'; expected jacobian_norm, relative, per_parameter or \
                     gradient_norm"
                ),
            })
        };
        self.layers.iter().map(|l| Ok((l.name.clone(), pick(l)?))).collect()
    }
}

/// Samples per chunk so that the chunk's per-sample gradients (several copies live in the double-backward
/// graph) stay near 2^22 floats per copy.
pub fn auto_chunk_size(model: &Model) -> i64 {
    ((1i64 << 22) / model.num_params().max(1)).clamp(1, 64)
}

/// Input sensitivity of each layer of `model` at `samples` samples of `split`, drawn without replacement from the
/// seed's `SensitivitySamples` stream.
pub fn input_sensitivity_on_split(
    model: &Model,
    split: &crate::data::Split,
    samples: i64,
    config: &InputSensitivityConfig,
    progress: Progress,
) -> Result<InputSensitivityReport> {
    use rand::seq::SliceRandom;
    if samples < 1 {
        crate::param_bail!("samples", "{samples} is below 1; draw at least one sample");
    }
    if samples > split.len() {
        crate::param_bail!("samples", "{samples} is larger than the split ({} samples)", split.len());
    }
    let mut order: Vec<i64> = (0..split.len()).collect();
    order.shuffle(&mut crate::rng::rng(config.seed, crate::rng::Stream::SensitivitySamples));
    let picked = Tensor::from_slice(&order[..samples as usize]);
    input_sensitivity(
        model,
        &split.inputs.index_select(0, &picked),
        &split.labels.index_select(0, &picked),
        config,
        progress,
    )
}

/// Input sensitivity of each layer of `model` at samples `inputs` (N, ...) with labels `labels` (N,).
pub fn input_sensitivity(
    model: &Model,
    inputs: &Tensor,
    labels: &Tensor,
    config: &InputSensitivityConfig,
    progress: Progress,
) -> Result<InputSensitivityReport> {
    let n = inputs.size().first().copied().unwrap_or(0);
    if n < 1 {
        bail!("input sensitivity needs at least one sample");
    }
    if labels.size() != [n] || labels.kind() != Kind::Int64 {
        bail!("{n} inputs need {n} class indices (i64), got labels of shape {:?} ({:?})", labels.size(), labels.kind());
    }
    let expected = model.spec.input.batch(n);
    if inputs.size() != expected {
        bail!(
            "model {} expects inputs of shape {expected:?} ({}), got {:?}",
            model.spec.arch,
            model.spec.input,
            inputs.size()
        );
    }
    if !config.exact && config.probes < 1 {
        crate::param_bail!("probes", "must be at least 1, got {}", config.probes);
    }
    if !config.exact {
        crate::limits::check_count("probes", config.probes, crate::limits::MAX_PROBES)?;
    }
    if config.bootstrap < 1 {
        crate::param_bail!("bootstrap", "must be at least 1, got 0");
    }
    crate::limits::check_count("bootstrap", config.bootstrap, crate::limits::MAX_SENSITIVITY_BOOTSTRAP)?;
    let chunk = match config.chunk_size {
        Some(c) if c < 1 => bail!("the chunk size must be at least 1, got {c}"),
        Some(c) => c,
        None => auto_chunk_size(model),
    };
    let f = SharedGradientFn::new(model, config.layers.as_deref(), &config.defenses, config.train, config.seed)?;
    let layer_count = f.layers.len();
    let mut squared: Vec<Vec<f64>> = vec![Vec::with_capacity(n as usize); layer_count];
    let mut squared_var: Vec<Vec<f64>> = vec![Vec::with_capacity(n as usize); layer_count];
    let mut grad_norms: Vec<Vec<f64>> = vec![Vec::with_capacity(n as usize); layer_count];
    let kind = f.model().kind();
    let mut input_dim = 0;
    let bar = progress.bar(n as u64, "input sensitivity");
    for start in (0..n).step_by(chunk as usize) {
        let len = chunk.min(n - start);
        let x = inputs.narrow(0, start, len).to_kind(kind);
        let y = labels.narrow(0, start, len);
        let ids: Vec<u64> = (start as u64..(start + len) as u64).collect();
        let map = |x: &Tensor| f.eval(x, &y, &ids);
        let lin = Linearisation::new(&map, &x)?;
        input_dim = lin.input_dim();
        for (l, g) in lin.values().iter().enumerate() {
            grad_norms[l].extend(Vec::<f64>::try_from(squared_rows(g).sqrt())?);
        }
        if config.exact {
            for (l, s) in lin.exact_squared_norms()?.iter().enumerate() {
                squared[l].extend(Vec::<f64>::try_from(s)?);
                squared_var[l].extend(std::iter::repeat_n(0.0, len as usize));
            }
        } else {
            let k = config.probes as i64;
            for (l, q) in lin.hutchinson(config.probes, config.seed, &ids)?.iter().enumerate() {
                // Mean over probes and the variance of that mean (sample variance / K; unknown with one probe).
                squared[l].extend(Vec::<f64>::try_from(q.mean_dim([0i64].as_slice(), false, Kind::Double))?);
                let var = if k > 1 {
                    Vec::<f64>::try_from(q.var_dim([0i64].as_slice(), true, false) / k as f64)?
                } else {
                    vec![f64::NAN; len as usize]
                };
                squared_var[l].extend(var);
            }
        }
        bar.inc(len as u64);
    }
    bar.finish_and_clear();

    let layers = f
        .layers
        .iter()
        .enumerate()
        .map(|(l, &index)| {
            let layer = &f.model().layers()[index];
            let p = layer.num_params() as f64;
            let norm: Vec<f64> = squared[l].iter().map(|s| s.max(0.0).sqrt()).collect();
            // Delta method: se(sqrt(s)) = se(s) / (2 sqrt(s)); zero when every probe gave zero.
            let norm_se: Vec<f64> = norm
                .iter()
                .zip(&squared_var[l])
                .map(|(&fro, &var)| if fro > 0.0 { var.sqrt() / (2.0 * fro) } else { 0.0 })
                .collect();
            let relative: Vec<f64> =
                norm.iter().zip(&grad_norms[l]).map(|(fro, g)| if *g > 0.0 { fro / g } else { f64::NAN }).collect();
            let relative_se: Vec<f64> = norm_se.iter().zip(&grad_norms[l]).map(|(se, g)| se / g).collect();
            let per_parameter: Vec<f64> = norm.iter().map(|fro| fro / p.sqrt()).collect();
            let zero_gradient_samples = grad_norms[l].iter().filter(|g| **g == 0.0).count();
            let means = bootstrap_means(
                &[&norm, &relative, &per_parameter, &grad_norms[l]],
                config.bootstrap,
                rng::derive(config.seed, Stream::SensitivityBootstrap { layer: index as u64 }),
            );
            let se_of_mean = |se: &[f64], valid: &[f64]| -> Option<f64> {
                if config.exact {
                    return None;
                }
                let kept: Vec<f64> = se.iter().zip(valid).filter(|(_, v)| v.is_finite()).map(|(s, _)| s * s).collect();
                let total: f64 = kept.iter().sum();
                (total.is_finite() && !kept.is_empty()).then(|| total.sqrt() / kept.len() as f64)
            };
            let est = |i: usize, se: Option<f64>| Estimate { value: means[i].0, ci: means[i].1, estimator_se: se };
            let norm_se_mean = se_of_mean(&norm_se, &norm);
            LayerInputSensitivity {
                name: layer.name.clone(),
                num_params: layer.num_params(),
                jacobian_norm: est(0, norm_se_mean),
                relative: est(1, se_of_mean(&relative_se, &relative)),
                per_parameter: est(2, norm_se_mean.map(|s| s / p.sqrt())),
                gradient_norm: est(3, None),
                zero_gradient_samples,
                per_sample_jacobian_norm: norm,
                per_sample_relative: relative,
            }
        })
        .collect();
    Ok(InputSensitivityReport {
        samples: n,
        estimator: if config.exact { "exact" } else { "hutchinson-rademacher" }.to_string(),
        probes: if config.exact { 0 } else { config.probes },
        input_dim,
        chunk_size: chunk,
        bootstrap: config.bootstrap,
        seed: config.seed,
        dropout_active: f.dropout_active(),
        defenses: f.defenses.clone(),
        layers,
    })
}

/// Central finite differences of a gradient map along `v`: (G(x + eps v) - G(x - eps v)) / (2 eps), per layer.
/// A numerical reference for [`Linearisation::jvp`] (use f64).
pub fn finite_difference_jvp(f: &GradientMap, x: &Tensor, v: &Tensor, eps: f64) -> Result<Vec<Tensor>> {
    let eval = |x: &Tensor| -> Result<Vec<Tensor>> {
        let x = x.detach().set_requires_grad(true);
        Ok(f(&x)?.iter().map(|g| g.detach()).collect())
    };
    let plus = eval(&(x + v * eps))?;
    let minus = eval(&(x - v * eps))?;
    Ok(plus.iter().zip(&minus).map(|(a, b)| (a - b) / (2.0 * eps)).collect())
}
