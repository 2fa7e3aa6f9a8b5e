//! The gradient store: a folder with `gradients.safetensors` (every array) and `manifest.json` (what they are).
//!
//! Tensor names in `gradients.safetensors` (N updates, B batch size, A attributes):
//!
//! | name                       | shape          | kind | what                                               |
//! |----------------------------|----------------|------|----------------------------------------------------|
//! | `grad.<layer>`             | (N, P_layer)   | f32  | the shared gradient: weight (row-major) then bias  |
//! | `sketch.<layer>`           | (N, k)         | f32  | its seeded random projection (large layers)        |
//! | `victim.input`             | (N, C, H, W) or (N, F) | f32 | the victim's (first batch member's) input |
//! | `victim.label`             | (N,)           | i64  | its class                                          |
//! | `victim.attributes`        | (N, A)         | i64  | its binary latent attributes                       |
//! | `victim.index`             | (N,)           | i64  | its index in the split                             |
//! | `batch.indices`            | (N, B)         | i64  | every batch member, victim first                   |
//! | `batch.labels`             | (N, B)         | i64  | their classes                                      |
//! | `batch.attribute_fraction` | (N, A)         | f32  | fraction of the batch with each attribute          |
//!
//! Both files are written under temporary names and renamed into place, the manifest last, so a folder with a
//! manifest always holds a complete store.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::data::{AttributeInfo, InputShape};
use crate::defenses::DpRecord;
use crate::gradients::updates::{LayerUpdates, SharedUpdates, UpdateConfig};
use crate::models::{LayerInfo, ModelSpec};

/// Version 2: sketches are drawn from `Stream::Sketch`, keyed by an FNV-1a hash of the layer name (version 1 used
/// std's `DefaultHasher`, whose output Rust does not promise to keep); sketches of the two versions differ.
pub const FORMAT: &str = "gradleak-gradient-store/2";
pub const TENSORS_FILE: &str = "gradients.safetensors";
pub const MANIFEST_FILE: &str = "manifest.json";

/// Where the model's weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// The training run folder, as given.
    pub run: String,
    pub epoch: usize,
    pub test_accuracy: f64,
}

/// One stored layer in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredLayer {
    #[serde(flatten)]
    pub info: LayerInfo,
    /// Whether `grad.<layer>` holds the full gradient.
    pub full: bool,
    /// Dimension of `sketch.<layer>`, when stored.
    pub sketch_dim: Option<i64>,
}

/// Everything needed to interpret and reproduce a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub gradleak_version: String,
    pub dataset: String,
    /// `train` or `test`.
    pub split: String,
    pub input_shape: InputShape,
    pub classes: Vec<String>,
    pub attributes: Vec<AttributeInfo>,
    pub model: ModelSpec,
    pub checkpoint: Option<CheckpointRef>,
    pub num_updates: i64,
    pub batch_size: i64,
    pub seed: u64,
    /// A readable name of the defences, e.g. `dp:clip=1,sigma=0.5 + prune:0.9`.
    pub defense: String,
    pub dp: Option<DpRecord>,
    pub config: UpdateConfig,
    pub layers: Vec<StoredLayer>,
    pub protected: Vec<String>,
}

/// A store on disk, loaded.
#[derive(Debug)]
pub struct GradientStore {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub updates: SharedUpdates,
}

/// Writes a store into `dir` (created if needed). Refuses a folder that already holds a store unless `overwrite`.
pub fn write_store(dir: &Path, manifest: &Manifest, updates: &SharedUpdates, overwrite: bool) -> Result<()> {
    let manifest_path = dir.join(MANIFEST_FILE);
    if manifest_path.exists() {
        if !overwrite {
            crate::param_bail!(
                "out",
                "{} already holds a gradient store; choose another `out` or pass `force`",
                dir.display()
            );
        }
        std::fs::remove_file(&manifest_path).with_context(|| format!("{}: cannot replace", manifest_path.display()))?;
    }
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for layer in &updates.layers {
        if let Some(full) = &layer.full {
            named.push((format!("grad.{}", layer.name), full.shallow_clone()));
        }
        if let Some(sketch) = &layer.sketch {
            named.push((format!("sketch.{}", layer.name), sketch.shallow_clone()));
        }
    }
    for (name, t) in [
        ("victim.input", &updates.victim_input),
        ("victim.label", &updates.victim_label),
        ("victim.attributes", &updates.victim_attributes),
        ("victim.index", &updates.victim_index),
        ("batch.indices", &updates.batch_indices),
        ("batch.labels", &updates.batch_labels),
        ("batch.attribute_fraction", &updates.batch_attribute_fraction),
    ] {
        named.push((name.to_string(), t.contiguous()));
    }
    crate::io::atomic_write_with(&dir.join(TENSORS_FILE), |tmp| {
        Tensor::write_safetensors(&named, tmp).map_err(Into::into)
    })?;
    crate::io::write_json(&manifest_path, manifest)
}

impl Manifest {
    /// Every listed layer is stored in full or as a sketch (what a measurement reads), and listed once.
    pub fn check_layers(&self) -> Result<()> {
        if self.layers.is_empty() {
            bail!("'layers' is empty; a store holds at least one layer");
        }
        for (i, l) in self.layers.iter().enumerate() {
            let name = &l.info.name;
            if self.layers[..i].iter().any(|m| &m.info.name == name) {
                bail!("layer '{name}' is listed twice in 'layers'");
            }
            if !l.full && l.sketch_dim.is_none() {
                bail!("layer '{name}' is stored neither in full ('full': false) nor as a sketch ('sketch_dim': null)");
            }
            if l.sketch_dim.is_some_and(|k| k < 1) || l.info.num_params < 1 {
                bail!("layer '{name}': 'sketch_dim' and 'num_params' must be at least 1");
            }
        }
        Ok(())
    }
}

impl GradientStore {
    /// Reads and checks a store: every tensor the manifest promises, with consistent shapes.
    pub fn open(dir: &Path) -> Result<GradientStore> {
        let manifest_path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&manifest_path)
            .with_context(|| format!("{}: cannot read (is this a gradient store folder?)", manifest_path.display()))?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a valid store manifest", manifest_path.display()))?;
        if manifest.format != FORMAT {
            bail!("{}: format '{}', expected '{FORMAT}'", manifest_path.display(), manifest.format);
        }
        manifest.check_layers().with_context(|| format!("{}", manifest_path.display()))?;
        let tensors_path = dir.join(TENSORS_FILE);
        let named = Tensor::read_safetensors(&tensors_path)
            .map_err(|e| anyhow::anyhow!("{}: not a readable safetensors file ({e})", tensors_path.display()))?;
        let mut map: std::collections::HashMap<String, Tensor> = named.into_iter().collect();
        let n = manifest.num_updates;
        let mut take = |name: &str, cols: Option<i64>| -> Result<Tensor> {
            let t = map.remove(name).with_context(|| format!("{}: missing tensor '{name}'", tensors_path.display()))?;
            let size = t.size();
            if size.first() != Some(&n) || cols.is_some_and(|c| size.get(1) != Some(&c)) {
                bail!(
                    "{}: tensor '{name}' has shape {size:?}, the manifest expects {n} rows{}",
                    tensors_path.display(),
                    cols.map(|c| format!(" of {c} columns")).unwrap_or_default()
                );
            }
            Ok(t)
        };
        let mut layers = Vec::new();
        for l in &manifest.layers {
            let full =
                if l.full { Some(take(&format!("grad.{}", l.info.name), Some(l.info.num_params))?) } else { None };
            let sketch = match l.sketch_dim {
                Some(k) => Some(take(&format!("sketch.{}", l.info.name), Some(k))?),
                None => None,
            };
            layers.push(LayerUpdates { name: l.info.name.clone(), num_params: l.info.num_params, full, sketch });
        }
        let a = manifest.attributes.len() as i64;
        let b = manifest.batch_size;
        let updates = SharedUpdates {
            layers,
            protected: manifest.protected.clone(),
            victim_input: take("victim.input", None)?,
            victim_label: take("victim.label", None)?,
            victim_attributes: take("victim.attributes", Some(a))?,
            victim_index: take("victim.index", None)?,
            batch_indices: take("batch.indices", Some(b))?,
            batch_labels: take("batch.labels", Some(b))?,
            batch_attribute_fraction: take("batch.attribute_fraction", Some(a))?,
        };
        Ok(GradientStore { dir: dir.to_path_buf(), manifest, updates })
    }

    /// A stored layer by name, or an error listing the stored ones.
    pub fn layer(&self, name: &str) -> Result<&LayerUpdates> {
        self.updates.layers.iter().find(|l| l.name == name).with_context(|| {
            let names: Vec<_> = self.updates.layers.iter().map(|l| l.name.as_str()).collect();
            format!("{}: no layer '{name}' in the store; it holds: {}", self.dir.display(), names.join(", "))
        })
    }
}
