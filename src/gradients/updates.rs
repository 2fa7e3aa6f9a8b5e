//! Shared updates: many (update, private facts) pairs from one checkpoint and one data split.
//!
//! Update i is the gradient a client would share for a batch of B samples (B = 1 by default), after the defences.
//! The *victim* of update i is the batch's first sample; victims are distinct across updates (so a victim never
//! appears in both the fitting and the scoring part of an estimate); the other B - 1 samples are drawn from the rest
//! of the split. Everything random follows from one seed: the batches, dropout masks, DP and Gaussian noise
//! (noise from a generator per update, so results do not depend on how the work is chunked).

use anyhow::Result;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::data::Split;
use crate::defenses::{self, Defense, DefensePlan};
use crate::gradients::per_sample::per_sample_gradients_with;
use crate::gradients::sketch::{Sketch, SketchKind};
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

/// Computes `config.num_updates` shared updates of `model` on `split`.
pub fn compute_updates(
    model: &Model,
    split: &Split,
    config: &UpdateConfig,
    progress: Progress,
) -> Result<SharedUpdates> {
    let plan = DefensePlan::new(&config.defenses)?;
    let n = config.num_updates;
    let b = config.batch_size;
    config.validate(split.len())?;
    let shared = plan.shared_layers(model, config.layers.as_deref())?;

    // Dropout as a defence: the same weights with dropout at the model's dropout sites.
    let dropout_model;
    let model = match plan.dropout {
        Some(rate) => {
            dropout_model = model.with_dropout(rate)?;
            &dropout_model
        }
        None => model,
    };

    let mut rng = rng::rng(config.seed, Stream::Victims);
    let batches = draw_batches(split.len(), n, b, &mut rng);

    let sketches: Vec<Option<Sketch>> = shared
        .iter()
        .map(|&l| {
            let layer = &model.layers()[l];
            (layer.num_params() > config.sketch_dim)
                .then(|| {
                    Sketch::new(
                        config.sketch_kind,
                        layer.num_params(),
                        config.sketch_dim,
                        rng::rng(config.seed, Stream::Sketch { layer: &layer.name }),
                    )
                })
                .transpose()
        })
        .collect::<Result<_>>()?;
    let mut full_parts: Vec<Vec<Tensor>> = shared.iter().map(|_| Vec::new()).collect();
    let mut sketch_parts: Vec<Vec<Tensor>> = shared.iter().map(|_| Vec::new()).collect();

    // Vectorised passes over chunks of whole batches, sized to keep per-sample gradients near 64 M floats.
    let total_params: i64 = model.num_params();
    let samples_per_chunk = ((1i64 << 26) / total_params).clamp(1, 512);
    let updates_per_chunk = (samples_per_chunk / b).max(1) as usize;
    let simple = b == 1 && plan.dp.is_none();
    let bar = progress.bar(n as u64, "shared updates");
    for (chunk_index, chunk) in batches.chunks(updates_per_chunk).enumerate() {
        let flat: Vec<i64> = chunk.iter().flatten().copied().collect();
        let idx = Tensor::from_slice(&flat);
        let x = split.inputs.index_select(0, &idx).to_kind(model.kind());
        let y = split.labels.index_select(0, &idx);
        let fwd = Forward::recording(true).with_dropout_rng(rng::rng(
            config.seed,
            Stream::UpdateDropout { chunk: config.stream_offset + chunk_index as u64 },
        ));
        let per_sample = per_sample_gradients_with(model, &x, &y, fwd, false);
        let per_sample: Vec<Tensor> = shared.iter().map(|&l| per_sample[l].detach()).collect();
        let updates: Vec<Tensor> = if simple && plan.post.is_empty() {
            per_sample
        } else {
            // One update per batch: rows of each layer, stacked.
            let mut rows: Vec<Vec<Tensor>> = shared.iter().map(|_| Vec::new()).collect();
            for (j, _) in chunk.iter().enumerate() {
                let update_index = config.stream_offset + (chunk_index * updates_per_chunk + j) as u64;
                let mut update_rng = rng::rng(config.seed, Stream::UpdateNoise { update: update_index });
                let members: Vec<Tensor> = per_sample.iter().map(|g| g.narrow(0, j as i64 * b, b)).collect();
                for (l, g) in defenses::aggregate(&members, &plan, &mut update_rng).into_iter().enumerate() {
                    rows[l].push(g);
                }
            }
            rows.iter().map(|r| Tensor::stack(r, 0)).collect()
        };
        for (l, g) in updates.into_iter().enumerate() {
            let g = g.to_kind(Kind::Float);
            if let Some(sketch) = &sketches[l] {
                sketch_parts[l].push(sketch.apply(&g));
            }
            let layer = &model.layers()[shared[l]];
            if layer.num_params() <= config.full_max_params || config.full_layers.contains(&layer.name) {
                full_parts[l].push(g);
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();

    let layers = shared
        .iter()
        .enumerate()
        .map(|(l, &index)| {
            let layer = &model.layers()[index];
            let cat = |parts: &[Tensor]| (!parts.is_empty()).then(|| Tensor::cat(parts, 0));
            LayerUpdates {
                name: layer.name.clone(),
                num_params: layer.num_params(),
                full: cat(&full_parts[l]),
                sketch: cat(&sketch_parts[l]),
            }
        })
        .collect();

    let batch_indices = Tensor::from_slice(&batches.concat()).reshape([n, b]);
    let victim_index = batch_indices.select(1, 0).contiguous();
    let members = split.attributes.index_select(0, &batch_indices.flatten(0, -1));
    let num_attributes = split.attributes.size()[1];
    Ok(SharedUpdates {
        layers,
        protected: plan.protected.clone(),
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
    })
}
