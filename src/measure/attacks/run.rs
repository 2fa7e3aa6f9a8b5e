//! The run over victims: draws the shared updates as `gradleak grads` does, attacks them all, scores every
//! reconstruction and sums it up in an [`AttackReport`].

use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::config::{invalid, AttackConfig, Method, Setting, ShareConfig};
use super::labels::LabelSource;
use super::objective;
use super::score::{score, ImageScore};
use super::target::AttackedUpdate;
use crate::data::{InputShape, Split};
use crate::defenses;
use crate::gradients::updates::{compute_updates, UpdateConfig};
use crate::models::Model;
use crate::optim::Stop;
use crate::progress::Progress;
use crate::rng::{self, Stream};

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
        let message = format!("the number of shared updates must be at least 1, got {}", share.samples);
        return Err(invalid(Setting::Samples, message));
    }
    if share.samples > split.len() {
        let message = format!(
            "{} shared updates requested, more than the split's {} images: victims must be distinct",
            share.samples,
            split.len()
        );
        return Err(invalid(Setting::Samples, message));
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
    // Every victim's shared update, checked, then attacked together (an attack may batch them).
    let victims = 0..share.samples;
    let shared: Vec<Vec<(String, Tensor)>> = victims
        .clone()
        .map(|u| {
            let full = |g: &Option<Tensor>| g.as_ref().expect("full gradients are stored").get(u);
            updates.layers.iter().map(|l| (l.name.clone(), full(&l.full))).collect()
        })
        .collect();
    let labels: Vec<Tensor> = victims.clone().map(|u| updates.batch_labels.get(u)).collect();
    let targets = shared
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(u, (shared, labels))| {
            AttackedUpdate::new(model, shared, share.batch_size, Some(labels), config)
                .with_context(|| format!("update {}", u + 1))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut rngs: Vec<ChaCha8Rng> =
        victims.clone().map(|u| rng::rng(config.seed, Stream::AttackUpdate { update: u as u64 })).collect();
    let reconstructions = config.method.attack().reconstruct_all(&targets, &mut rngs, &mut || bar.inc(1))?;
    let mut results = Vec::new();
    let mut warnings = Vec::new();
    let mut originals = Vec::new();
    let mut matched = Vec::new();
    let mut label_source = LabelSource::Optimized;
    let (lo, hi) = config.data_range;
    for ((u, rec), labels) in victims.zip(reconstructions).zip(&labels) {
        let indices = updates.batch_indices.get(u);
        let original = split.inputs.index_select(0, &indices);
        let label_values: Vec<i64> = objective::to_vec(labels).into_iter().map(|v| v as i64).collect();
        let images = score(&rec.inputs, &rec.labels, &original, &label_values, hi - lo)?;
        let order: Vec<i64> = images.iter().map(|s| s.reconstruction as i64).collect();
        originals.push(original.to_kind(Kind::Float));
        matched.push(rec.inputs.index_select(0, &Tensor::from_slice(&order)));
        warnings.extend(rec.warnings.iter().map(|w| format!("update {}: {w}", u + 1)));
        label_source = rec.label_source;
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
    let m = &targets[0].matcher;
    let matched_layers = m
        .layers
        .iter()
        .zip(&m.weights)
        .map(|(&l, &weight)| MatchedLayer { name: model.layers()[l].name.clone(), weight })
        .collect();
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
        reconstructions: Tensor::cat(&matched, 0),
    })
}
