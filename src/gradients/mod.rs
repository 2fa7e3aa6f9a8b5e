//! Gradients as data: what a client shares, layer by layer.

pub mod per_sample;
pub mod sketch;
pub mod store;
pub mod updates;

pub use per_sample::{batch_gradients, per_sample_gradients};

use crate::data::Dataset;
use crate::defenses::describe;
use crate::models::Model;
use store::{CheckpointRef, DpRecord, Manifest, StoredLayer};
use updates::{SharedUpdates, UpdateConfig};

/// The manifest that describes `updates` of `model` on one split of `dataset`.
pub fn manifest(
    model: &Model,
    dataset: &Dataset,
    split: &str,
    checkpoint: Option<CheckpointRef>,
    config: &UpdateConfig,
    updates: &SharedUpdates,
    dp: Option<DpRecord>,
) -> Manifest {
    let infos = model.layer_infos();
    let layers = updates
        .layers
        .iter()
        .map(|l| StoredLayer {
            info: infos.iter().find(|i| i.name == l.name).expect("stored layers belong to the model").clone(),
            full: l.full.is_some(),
            sketch_dim: l.sketch.as_ref().map(|s| s.size()[1]),
        })
        .collect();
    Manifest {
        format: store::FORMAT.to_string(),
        gradleak_version: env!("CARGO_PKG_VERSION").to_string(),
        dataset: dataset.name.clone(),
        split: split.to_string(),
        input_shape: dataset.input_shape,
        classes: dataset.classes.clone(),
        attributes: dataset.attributes.clone(),
        model: model.spec.clone(),
        checkpoint,
        num_updates: updates.num_updates(),
        batch_size: config.batch_size,
        seed: config.seed,
        defense: describe(&config.defenses),
        dp,
        config: config.clone(),
        layers,
        protected: updates.protected.clone(),
    }
}

/// The DP record of a configuration with a `dp` defence: sample rate q = B / (training set size), `steps` (default:
/// one epoch, ceil(N / B)), delta, and epsilon from the RDP accountant. `None` without a `dp` defence.
pub fn dp_record(
    config: &UpdateConfig,
    train_size: i64,
    delta: f64,
    steps: Option<u64>,
) -> anyhow::Result<Option<DpRecord>> {
    let Some((clip, noise_multiplier)) = config.defenses.iter().find_map(|d| match d {
        crate::defenses::Defense::Dp { clip, noise_multiplier } => Some((*clip, *noise_multiplier)),
        _ => None,
    }) else {
        return Ok(None);
    };
    let sample_rate = (config.batch_size as f64 / train_size as f64).min(1.0);
    let steps = steps.unwrap_or_else(|| ((train_size + config.batch_size - 1) / config.batch_size) as u64);
    let spent = crate::defenses::accountant::epsilon(sample_rate, noise_multiplier, steps, delta)?;
    Ok(Some(DpRecord {
        clip,
        noise_multiplier,
        sample_rate,
        steps,
        delta,
        epsilon: spent.epsilon.is_finite().then_some(spent.epsilon),
    }))
}
