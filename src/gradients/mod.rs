//! Gradients as data: what a client shares, layer by layer.

pub mod behind;
pub mod per_sample;
pub mod sketch;
pub mod store;
pub mod updates;

pub use per_sample::{batch_gradients, per_sample_gradients};

use std::path::Path;

use anyhow::Result;
use tch::Kind;

use crate::data::{Dataset, Split};
use crate::defenses::describe;
use crate::defenses::DpRecord;
use crate::models::Model;
use crate::progress::Progress;
use store::{CheckpointRef, Manifest, StoredLayer, TensorSpec};
use updates::{SharedUpdates, StoredLayout, UpdateConfig, UpdateRun};

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
    let layout: Vec<StoredLayout> = updates
        .layers
        .iter()
        .map(|l| StoredLayout {
            name: l.name.clone(),
            num_params: l.num_params,
            full: l.full.is_some(),
            sketch: l.sketch.as_ref().map(|s| (s.size()[1], l.sketch_kind.unwrap_or(config.sketch_kind))),
        })
        .collect();
    let run = StoreDescription { split, checkpoint, config, dp };
    manifest_of_layout(model, dataset, run, &layout, &updates.protected)
}

/// What a manifest records about how a store's updates were made, beside the model and data.
pub struct StoreDescription<'a> {
    pub split: &'a str,
    pub checkpoint: Option<CheckpointRef>,
    pub config: &'a UpdateConfig,
    pub dp: Option<DpRecord>,
}

/// The manifest of a store laid out as `layout` (known before any update is computed, so a store can be
/// streamed).
pub fn manifest_of_layout(
    model: &Model,
    dataset: &Dataset,
    run: StoreDescription,
    layout: &[StoredLayout],
    protected: &[String],
) -> Manifest {
    let infos = model.layer_infos();
    let config = run.config;
    let layers = layout
        .iter()
        .map(|l| StoredLayer {
            info: infos.iter().find(|i| i.name == l.name).expect("stored layers belong to the model").clone(),
            full: l.full,
            sketch_dim: l.sketch.map(|(k, _)| k),
            sketch_kind: l.sketch.map(|(_, kind)| kind).filter(|&kind| kind != config.sketch_kind),
        })
        .collect();
    Manifest {
        format: store::FORMAT.to_string(),
        gradleak_version: env!("CARGO_PKG_VERSION").to_string(),
        dataset: dataset.name.clone(),
        split: run.split.to_string(),
        input_shape: dataset.input_shape,
        classes: dataset.classes.clone(),
        attributes: dataset.attributes.clone(),
        model: model.spec.clone(),
        checkpoint: run.checkpoint,
        num_updates: config.num_updates,
        batch_size: config.batch_size,
        seed: config.seed,
        defense: describe(&config.defenses),
        dp: run.dp,
        config: config.clone(),
        layers,
        protected: protected.to_vec(),
    }
}

/// Computes the updates that `run.config` describes and writes them as a store in `dir`, chunk by chunk as they
/// are computed: memory depends on the chunk, not on the number of updates. Returns the manifest written.
pub fn write_updates(
    dir: &Path,
    model: &Model,
    dataset: &Dataset,
    split: &Split,
    run: StoreDescription,
    overwrite: bool,
    progress: Progress,
) -> Result<Manifest> {
    let config = run.config;
    let updates = UpdateRun::new(model, split, config)?;
    let layout = updates.layout();
    let facts = store::fact_tensors(&updates.with_facts(split, Vec::new()));
    let rows = config.num_updates;
    let mut specs = Vec::new();
    for l in &layout {
        if l.full {
            specs.push(TensorSpec {
                name: store::grad_tensor(&l.name),
                kind: Kind::Float,
                shape: vec![rows, l.num_params],
            });
        }
        if let Some((k, _)) = l.sketch {
            specs.push(TensorSpec { name: store::sketch_tensor(&l.name), kind: Kind::Float, shape: vec![rows, k] });
        }
    }
    specs.extend(facts.iter().map(|(name, t)| TensorSpec::of(name, t)));
    let manifest = manifest_of_layout(model, dataset, run, &layout, updates.protected());
    store::write_store_with(dir, &manifest, &specs, overwrite, |file| {
        for (name, t) in &facts {
            file.write_rows(name, 0, t)?;
        }
        updates.for_each_chunk(split, progress, |chunk| {
            for (l, layer) in layout.iter().zip(chunk.layers) {
                if let Some(full) = layer.full {
                    file.write_rows(&store::grad_tensor(&l.name), chunk.start, &full)?;
                }
                if let Some(sketch) = layer.sketch {
                    file.write_rows(&store::sketch_tensor(&l.name), chunk.start, &sketch)?;
                }
            }
            Ok(())
        })
    })?;
    Ok(manifest)
}
