//! Shared updates: many (update, private facts) pairs from one checkpoint and one data split.
//!
//! Update i is the gradient a client would share for a batch of B samples (B = 1 by default), after the defences.
//! The *victim* of update i is the batch's first sample; victims are distinct across updates (so a victim never
//! appears in both the fitting and the scoring part of an estimate); the other B - 1 samples are drawn from the rest
//! of the split. Everything random follows from one seed: the batches, dropout masks, DP and Gaussian noise
//! (noise and dropout masks from generators per update, so results do not depend on how the work is chunked).
//!
//! [`UpdateRun`] plans a set of updates and computes them chunk by chunk, so a store can be written as it is
//! computed, with memory bounded by the chunk; [`compute_updates`] collects them in memory.

use anyhow::Result;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::data::Split;
use crate::defenses::{self, Defense, DefensePlan};
use crate::gradients::per_sample::{per_sample_factors, per_sample_gradients_with};
use crate::gradients::sketch::{MatrixShape, Sketch, SketchKind};
use crate::models::{Forward, Model};
use crate::progress::Progress;
use crate::rng::{self, Stream};

/// How to draw and store shared updates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateConfig {
    pub num_updates: i64,
    pub batch_size: i64,
    pub seed: u64,
    pub defenses: Vec<Defense>,
    /// Layers to store (default: every shared layer).
    pub layers: Option<Vec<String>>,
    pub sketch_kind: SketchKind,
    /// Layers with more parameters than this are also stored as a sketch of this dimension.
    pub sketch_dim: i64,
    /// Layers with at most this many parameters are stored in full; larger ones only as a sketch.
    pub full_max_params: i64,
    /// Layers stored in full whatever their size (beside their sketch): what the analytic family reads.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub full_layers: Vec<String>,
    /// Offset of these updates' noise and dropout streams: a second set of updates under the same seed (the
    /// decoder's auxiliary updates) starts beyond the first so that no draw repeats, while sketches stay the same.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stream_offset: u64,
    /// Samples per vectorised pass (default: from the model's size). The stored updates do not depend on it, so
    /// it is not recorded.
    #[serde(skip)]
    pub chunk_samples: Option<i64>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            num_updates: 1000,
            batch_size: 1,
            seed: 0,
            defenses: Vec::new(),
            layers: None,
            sketch_kind: SketchKind::Sparse,
            sketch_dim: 4096,
            full_max_params: 1 << 18,
            full_layers: Vec::new(),
            stream_offset: 0,
            chunk_samples: None,
        }
    }
}

/// One stored layer of a set of updates.
#[derive(Debug)]
pub struct LayerUpdates {
    pub name: String,
    pub num_params: i64,
    /// (N, P) full gradients, when the layer is small enough.
    pub full: Option<Tensor>,
    /// (N, k) sketch, when the layer is larger than k.
    pub sketch: Option<Tensor>,
    /// The sketch's kind (a `kron` run sketches layers without a matrix shape with `sparse`).
    pub sketch_kind: Option<SketchKind>,
}

impl LayerUpdates {
    /// What a measurement reads: the sketch when there is one (fitting predictors on hundreds of thousands of
    /// columns is out of reach; a predictor on the sketch is one on the gradient, so this is a lower bound),
    /// otherwise the full gradient.
    pub fn features(&self) -> &Tensor {
        self.sketch.as_ref().or(self.full.as_ref()).expect("a stored layer has its full gradient or a sketch")
    }

    /// `sketch` or `full`: which one [`LayerUpdates::features`] returns.
    pub fn features_kind(&self) -> &'static str {
        if self.sketch.is_some() {
            "sketch"
        } else {
            "full"
        }
    }
}

/// Updates and the private facts behind them.
#[derive(Debug)]
pub struct SharedUpdates {
    pub layers: Vec<LayerUpdates>,
    /// Layers whose gradients were not shared (the `protect` defence).
    pub protected: Vec<String>,
    /// (N,) index of each victim in the split.
    pub victim_index: Tensor,
    /// (N, ...) the victims' inputs.
    pub victim_input: Tensor,
    /// (N,) the victims' labels.
    pub victim_label: Tensor,
    /// (N, A) the victims' binary attributes.
    pub victim_attributes: Tensor,
    /// (N, B) indices of every batch member (victim first).
    pub batch_indices: Tensor,
    /// (N, B) labels of every batch member.
    pub batch_labels: Tensor,
    /// (N, A) fraction of the batch with each attribute.
    pub batch_attribute_fraction: Tensor,
}

impl SharedUpdates {
    pub fn num_updates(&self) -> i64 {
        self.victim_index.size()[0]
    }
}

impl UpdateConfig {
    /// Checks the counts against a split of `split_size` samples.
    pub fn validate(&self, split_size: i64) -> Result<()> {
        let (n, b) = (self.num_updates, self.batch_size);
        if n < 1 {
            crate::param_bail!("num_updates", "must be at least 1, got {n}");
        }
        if n > split_size {
            crate::param_bail!(
                "num_updates",
                "{n} is larger than the split ({split_size} samples): victims must be distinct"
            );
        }
        if b < 1 || b > split_size {
            crate::param_bail!("batch_size", "must be in [1, {split_size}] (the split's size), got {b}");
        }
        if self.sketch_dim < 1 {
            crate::param_bail!("sketch_dim", "must be at least 1, got {}", self.sketch_dim);
        }
        if let Some(c) = self.chunk_samples.filter(|&c| c < 1) {
            crate::param_bail!("chunk_samples", "must be at least 1, got {c}");
        }
        if self.full_max_params < self.sketch_dim {
            crate::param_bail!(
                "full_max_params",
                "must be at least `sketch_dim` ({}), got {}: a layer with more parameters than it and at most \
                 `sketch_dim` would be stored neither in full nor as a sketch",
                self.sketch_dim,
                self.full_max_params
            );
        }
        Ok(())
    }
}

/// Draws batches: victims distinct (a random permutation), companions from the rest of the split.
fn draw_batches(split_size: i64, num_updates: i64, batch_size: i64, rng: &mut ChaCha8Rng) -> Vec<Vec<i64>> {
    let mut order: Vec<i64> = (0..split_size).collect();
    order.shuffle(rng);
    (0..num_updates as usize)
        .map(|i| {
            let victim = order[i];
            let mut batch = vec![victim];
            if batch_size > 1 {
                let companions = rand::seq::index::sample(rng, split_size as usize - 1, batch_size as usize - 1);
                // Indices of the split without the victim.
                batch.extend(companions.into_iter().map(|j| if (j as i64) < victim { j as i64 } else { j as i64 + 1 }));
            }
            batch
        })
        .collect()
}

/// Computes `config.num_updates` shared updates of `model` on `split`, all in memory.
pub fn compute_updates(
    model: &Model,
    split: &Split,
    config: &UpdateConfig,
    progress: Progress,
) -> Result<SharedUpdates> {
    let run = UpdateRun::new(model, split, config)?;
    let mut full_parts: Vec<Vec<Tensor>> = run.shared.iter().map(|_| Vec::new()).collect();
    let mut sketch_parts: Vec<Vec<Tensor>> = run.shared.iter().map(|_| Vec::new()).collect();
    run.for_each_chunk(split, progress, |chunk| {
        for (l, layer) in chunk.layers.into_iter().enumerate() {
            full_parts[l].extend(layer.full);
            sketch_parts[l].extend(layer.sketch);
        }
        Ok(())
    })?;
    let cat = |parts: &[Tensor]| (!parts.is_empty()).then(|| Tensor::cat(parts, 0));
    let layers = run
        .layout()
        .into_iter()
        .enumerate()
        .map(|(l, stored)| LayerUpdates {
            name: stored.name,
            num_params: stored.num_params,
            full: cat(&full_parts[l]),
            sketch: cat(&sketch_parts[l]),
            sketch_kind: stored.sketch.map(|(_, kind)| kind),
        })
        .collect();
    Ok(run.with_facts(split, layers))
}

/// Where one stored layer's columns go, known before any update is computed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLayout {
    pub name: String,
    pub num_params: i64,
    /// Whether the full gradient (N, P) is stored.
    pub full: bool,
    /// The sketch's dimension and kind, when the layer is sketched.
    pub sketch: Option<(i64, SketchKind)>,
}

/// The updates of one chunk, in the order of [`UpdateRun::layout`].
#[derive(Debug)]
pub struct UpdateChunk {
    /// Index of the chunk's first update.
    pub start: i64,
    pub layers: Vec<ChunkLayer>,
}

/// One layer's rows of a chunk.
#[derive(Debug)]
pub struct ChunkLayer {
    pub full: Option<Tensor>,
    pub sketch: Option<Tensor>,
}

/// A planned set of shared updates: the batches, the defences and the sketches, fixed before anything is computed,
/// so that the updates can be computed (and written) chunk by chunk with the same result whatever the chunk size.
pub struct UpdateRun<'m> {
    base: &'m Model,
    /// The same weights with dropout, when dropout is a defence.
    dropout_model: Option<Model>,
    plan: DefensePlan,
    config: UpdateConfig,
    /// Model indices of the shared layers.
    pub shared: Vec<usize>,
    sketches: Vec<Option<Sketch>>,
    batches: Vec<Vec<i64>>,
    /// Updates per vectorised pass.
    pub updates_per_chunk: usize,
}

/// What one pass keeps in memory, in floats (256 MiB of f32): the chunk size follows from it.
const PASS_FLOATS: i64 = 1 << 26;

/// Floats a pass holds per sample for backpropagation, estimated from one sample: every named layer's input and
/// output, times 3 for the gradients and intermediate buffers of the backward pass.
fn activation_floats(model: &Model, split: &Split) -> i64 {
    let _guard = tch::no_grad_guard();
    let x = split.inputs.narrow(0, 0, 1).to_kind(model.kind());
    let mut fwd = Forward::recording(false);
    let _ = model.forward(&x, &mut fwd);
    let held: i64 = fwd.records.unwrap_or_default().iter().map(|r| (r.input.numel() + r.output.numel()) as i64).sum();
    3 * held
}

impl<'m> UpdateRun<'m> {
    pub fn new(model: &'m Model, split: &Split, config: &UpdateConfig) -> Result<UpdateRun<'m>> {
        let plan = DefensePlan::new(&config.defenses)?;
        config.validate(split.len())?;
        let shared = plan.shared_layers(model, config.layers.as_deref())?;
        // Dropout as a defence: the same weights with dropout at the model's dropout sites.
        let dropout_model = plan.dropout.map(|rate| model.with_dropout(rate)).transpose()?;
        let mut rng = rng::rng(config.seed, Stream::Victims);
        let batches = draw_batches(split.len(), config.num_updates, config.batch_size, &mut rng);
        let sketches: Vec<Option<Sketch>> = shared
            .iter()
            .map(|&l| {
                let layer = &model.layers()[l];
                (layer.num_params() > config.sketch_dim)
                    .then(|| {
                        Sketch::for_layer(
                            config.sketch_kind,
                            MatrixShape::of_layer(&layer.kind),
                            layer.num_params(),
                            config.sketch_dim,
                            rng::rng(config.seed, Stream::Sketch { layer: &layer.name }),
                        )
                    })
                    .transpose()
            })
            .collect::<Result<_>>()?;
        let mut run = UpdateRun {
            base: model,
            dropout_model,
            plan,
            config: config.clone(),
            shared,
            sketches,
            batches,
            updates_per_chunk: 1,
        };
        // Vectorised passes over chunks of whole batches, sized to keep what a pass holds per sample near
        // PASS_FLOATS: every per-sample gradient, or, when the sketches come from the layers' factors, the
        // activations and the per-sample gradients of the layers stored in full.
        let per_sample = if run.factored() {
            let sketched: i64 = run.sketches.iter().flatten().map(|s| s.dim).sum();
            let full: i64 = run.layout().iter().filter(|l| l.full).map(|l| l.num_params).sum();
            sketched + full + activation_floats(run.model(), split)
        } else {
            model.num_params()
        };
        let samples_per_chunk = config.chunk_samples.unwrap_or((PASS_FLOATS / per_sample.max(1)).clamp(1, 512));
        run.updates_per_chunk = (samples_per_chunk / config.batch_size).max(1) as usize;
        Ok(run)
    }

    fn model(&self) -> &Model {
        self.dropout_model.as_ref().unwrap_or(self.base)
    }

    fn stores_full(&self, layer: &str, num_params: i64) -> bool {
        num_params <= self.config.full_max_params || self.config.full_layers.iter().any(|l| l == layer)
    }

    /// What every shared layer stores.
    pub fn layout(&self) -> Vec<StoredLayout> {
        self.shared
            .iter()
            .zip(&self.sketches)
            .map(|(&l, sketch)| {
                let layer = &self.model().layers()[l];
                StoredLayout {
                    name: layer.name.clone(),
                    num_params: layer.num_params(),
                    full: self.stores_full(&layer.name, layer.num_params()),
                    sketch: sketch.as_ref().map(|s| (s.dim, s.kind)),
                }
            })
            .collect()
    }

    /// The protected (not shared) layers.
    pub fn protected(&self) -> &[String] {
        &self.plan.protected
    }

    /// Whether the sketches can be computed from each sample's layer input and output gradient: Kronecker
    /// sketches, and defences that are linear in the per-sample gradients (averaging, dropout, protection).
    fn factored(&self) -> bool {
        self.config.sketch_kind == SketchKind::Kron
            && self.plan.dp.is_none()
            && self.plan.post.is_empty()
            && self.model().script().is_none()
    }

    /// Computes the updates chunk by chunk, in order, and hands each chunk to `sink`.
    pub fn for_each_chunk(
        &self,
        split: &Split,
        progress: Progress,
        mut sink: impl FnMut(UpdateChunk) -> Result<()>,
    ) -> Result<()> {
        let model = self.model();
        let b = self.config.batch_size;
        let layout = self.layout();
        let bar = progress.bar(self.config.num_updates as u64, "shared updates");
        for (chunk_index, chunk) in self.batches.chunks(self.updates_per_chunk).enumerate() {
            let start = chunk_index * self.updates_per_chunk;
            // libtorch's kernels round differently for passes of a few samples: padding every pass to a multiple
            // of 8 samples (with copies of the last batch, dropped afterwards) keeps the stored bits independent
            // of the chunk size.
            let padded = chunk.len().next_multiple_of(8 / gcd(8, b as usize));
            let flat: Vec<i64> = (0..padded).flat_map(|j| chunk[j.min(chunk.len() - 1)].iter().copied()).collect();
            let idx = Tensor::from_slice(&flat);
            let x = split.inputs.index_select(0, &idx).to_kind(model.kind());
            let y = split.labels.index_select(0, &idx);
            let update_stream = |j: usize| self.config.stream_offset + (start + j.min(chunk.len() - 1)) as u64;
            let dropout = (0..padded)
                .map(|j| rng::rng(self.config.seed, Stream::UpdateDropout { update: update_stream(j) }))
                .collect();
            let fwd = Forward::recording(true).with_dropout_groups(b, dropout);
            let real = chunk.len() as i64 * b;
            let layers = if self.factored() {
                self.factored_chunk(model, (&x, &y), fwd, chunk.len() as i64, &layout)
            } else {
                let per_sample = per_sample_gradients_with(model, &x, &y, fwd, false);
                let per_sample: Vec<Tensor> =
                    self.shared.iter().map(|&l| per_sample[l].detach().narrow(0, 0, real)).collect();
                let updates: Vec<Tensor> = if b == 1 && self.plan.dp.is_none() && self.plan.post.is_empty() {
                    per_sample
                } else {
                    // One update per batch: rows of each layer, stacked.
                    let mut rows: Vec<Vec<Tensor>> = self.shared.iter().map(|_| Vec::new()).collect();
                    for j in 0..chunk.len() {
                        let mut update_rng =
                            rng::rng(self.config.seed, Stream::UpdateNoise { update: update_stream(j) });
                        let members: Vec<Tensor> = per_sample.iter().map(|g| g.narrow(0, j as i64 * b, b)).collect();
                        for (l, g) in defenses::aggregate(&members, &self.plan, &mut update_rng).into_iter().enumerate()
                        {
                            rows[l].push(g);
                        }
                    }
                    rows.iter().map(|r| Tensor::stack(r, 0)).collect()
                };
                updates
                    .into_iter()
                    .zip(&layout)
                    .zip(&self.sketches)
                    .map(|((g, stored), sketch)| {
                        let g = g.to_kind(Kind::Float);
                        ChunkLayer { sketch: sketch.as_ref().map(|s| s.apply(&g)), full: stored.full.then_some(g) }
                    })
                    .collect()
            };
            sink(UpdateChunk { start: start as i64, layers })?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        Ok(())
    }

    /// A chunk whose sketches come from the layers' factors: no sketched layer's per-sample gradient is formed.
    fn factored_chunk(
        &self,
        model: &Model,
        (x, y): (&Tensor, &Tensor),
        fwd: Forward,
        updates: i64,
        layout: &[StoredLayout],
    ) -> Vec<ChunkLayer> {
        let b = self.config.batch_size;
        let factors = per_sample_factors(model, x, y, fwd, false).expect("factored runs are on built-in models");
        // Computed on the whole (padded) pass, as the kernels round differently for a few samples; then the real
        // rows, and each batch's mean: the update without DP or post-processing (the sketch is linear).
        let update_rows = |t: Tensor| -> Tensor {
            let t = t.narrow(0, 0, updates * b);
            let t = if b == 1 {
                t
            } else {
                let cols = t.size()[1];
                t.reshape([updates, b, cols]).mean_dim([1i64].as_slice(), false, t.kind())
            };
            t.to_kind(Kind::Float)
        };
        self.shared
            .iter()
            .zip(layout)
            .zip(&self.sketches)
            .map(|((&l, stored), sketch)| {
                let f = &factors[l];
                // Formed only for a layer stored in full or sketched without its factors, and then once.
                let needs_gradients = stored.full || sketch.as_ref().is_some_and(|s| !s.reads_factors());
                let gradients = needs_gradients.then(|| f.gradients());
                let sketch = sketch.as_ref().map(|s| update_rows(s.apply_to(f, gradients.as_ref())));
                let full = gradients.filter(|_| stored.full).map(update_rows);
                ChunkLayer { full, sketch }
            })
            .collect()
    }

    /// The updates' private facts (victims, batches) beside the given stored layers.
    pub fn with_facts(&self, split: &Split, layers: Vec<LayerUpdates>) -> SharedUpdates {
        let (n, b) = (self.config.num_updates, self.config.batch_size);
        let batch_indices = Tensor::from_slice(&self.batches.concat()).reshape([n, b]);
        let victim_index = batch_indices.select(1, 0).contiguous();
        let members = split.attributes.index_select(0, &batch_indices.flatten(0, -1));
        let num_attributes = split.attributes.size()[1];
        SharedUpdates {
            layers,
            protected: self.plan.protected.clone(),
            victim_input: split.inputs.index_select(0, &victim_index),
            victim_label: split.labels.index_select(0, &victim_index),
            victim_attributes: split.attributes.index_select(0, &victim_index),
            batch_labels: split.labels.index_select(0, &batch_indices.flatten(0, -1)).reshape([n, b]),
            batch_attribute_fraction: members.to_kind(Kind::Float).reshape([n, b, num_attributes]).mean_dim(
                [1i64].as_slice(),
                false,
                Kind::Float,
            ),
            batch_indices,
            victim_index,
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
