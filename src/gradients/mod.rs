//! Gradients as data: what a client shares, layer by layer.

pub mod per_sample;
pub mod sketch;
pub mod store;
pub mod updates;

pub use per_sample::{batch_gradients, per_sample_gradients};

use crate::data::Dataset;
use crate::defenses::describe;
use crate::defenses::DpRecord;
use crate::models::Model;
use store::{CheckpointRef, Manifest, StoredLayer};
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
