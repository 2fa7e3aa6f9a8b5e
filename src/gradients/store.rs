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

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use safetensors::Dtype;
use tch::{Kind, Tensor};

use crate::data::{AttributeInfo, InputShape};
use crate::defenses::DpRecord;
use crate::gradients::sketch::SketchKind;
use crate::gradients::updates::{LayerUpdates, SharedUpdates, UpdateConfig};
use crate::models::{LayerInfo, ModelSpec};

/// Version 2: sketches are drawn from `Stream::Sketch`, keyed by an FNV-1a hash of the layer name (version 1 used
/// std's `DefaultHasher`, whose output Rust does not promise to keep); sketches of the two versions differ.
pub const FORMAT: &str = "gradleak-gradient-store/2";
pub const TENSORS_FILE: &str = "gradients.safetensors";
pub const MANIFEST_FILE: &str = "manifest.json";

/// The name in `gradients.safetensors` of a layer's full gradient.
pub fn grad_tensor(layer: &str) -> String {
    format!("grad.{layer}")
}

/// The name in `gradients.safetensors` of a layer's sketch.
pub fn sketch_tensor(layer: &str) -> String {
    format!("sketch.{layer}")
}

/// Where the model's weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointRef {
    /// The training run folder, as given; or the model's name (`torchscript:PATH`, a built-in architecture) for a
    /// model taken as it is.
    pub run: String,
    pub epoch: usize,
    /// NaN (written as null) for a model taken as it is, or a run that recorded none.
    #[serde(deserialize_with = "null_as_nan")]
    pub test_accuracy: f64,
    /// The seed of a built-in architecture's initial weights, for a model taken as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_seed: Option<u64>,
}

/// JSON has no NaN: serde_json writes it as null, which reads back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
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
    /// The sketch's kind when it is not the configured one (`kron` sketches a layer without a matrix shape, such
    /// as a group norm, with `sparse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sketch_kind: Option<SketchKind>,
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
    let mut named: Vec<(String, Tensor)> = Vec::new();
    for layer in &updates.layers {
        if let Some(full) = &layer.full {
            named.push((grad_tensor(&layer.name), full.shallow_clone()));
        }
        if let Some(sketch) = &layer.sketch {
            named.push((sketch_tensor(&layer.name), sketch.shallow_clone()));
        }
    }
    named.extend(fact_tensors(updates));
    let specs: Vec<TensorSpec> = named.iter().map(|(name, t)| TensorSpec::of(name, t)).collect();
    write_store_with(dir, manifest, &specs, overwrite, |file| {
        for (name, t) in &named {
            file.write_rows(name, 0, t)?;
        }
        Ok(())
    })
}

/// The tensors of a store that describe the victims and their batches (everything but the gradients).
pub fn fact_tensors(updates: &SharedUpdates) -> Vec<(String, Tensor)> {
    [
        ("victim.input", &updates.victim_input),
        ("victim.label", &updates.victim_label),
        ("victim.attributes", &updates.victim_attributes),
        ("victim.index", &updates.victim_index),
        ("batch.indices", &updates.batch_indices),
        ("batch.labels", &updates.batch_labels),
        ("batch.attribute_fraction", &updates.batch_attribute_fraction),
    ]
    .into_iter()
    .map(|(name, t)| (name.to_string(), t.contiguous()))
    .collect()
}

/// Writes a store whose tensors, declared by `specs`, are filled in by `fill` (e.g. chunk by chunk as updates are
/// computed, so that memory does not grow with the number of updates). The safetensors header comes first; the
/// file is written under a temporary name and renamed into place, then the manifest, so a folder with a manifest
/// always holds a complete store. Refuses a folder that already holds a store unless `overwrite`.
pub fn write_store_with(
    dir: &Path,
    manifest: &Manifest,
    specs: &[TensorSpec],
    overwrite: bool,
    fill: impl FnOnce(&mut TensorFile) -> Result<()>,
) -> Result<()> {
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
    crate::io::atomic_write_with(&dir.join(TENSORS_FILE), |tmp| {
        let mut file = TensorFile::create(tmp, specs)?;
        fill(&mut file)?;
        file.finish()
    })?;
    crate::io::write_json(&manifest_path, manifest)
}

/// The name, element kind and shape of one tensor of a store.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub kind: Kind,
    pub shape: Vec<i64>,
}

impl TensorSpec {
    pub fn of(name: &str, t: &Tensor) -> TensorSpec {
        TensorSpec { name: name.to_string(), kind: t.kind(), shape: t.size() }
    }

    fn dtype(&self) -> Result<Dtype> {
        match self.kind {
            Kind::Float => Ok(Dtype::F32),
            Kind::Int64 => Ok(Dtype::I64),
            Kind::Double => Ok(Dtype::F64),
            other => bail!("tensor '{}': a store holds f32, f64 or i64 tensors, not {other:?}", self.name),
        }
    }

    fn bytes(&self) -> u64 {
        self.shape.iter().product::<i64>() as u64 * self.kind.elt_size_in_bytes() as u64
    }
}

/// A tensor declared but not yet written: the safetensors crate lays out the header from it, so the file is
/// byte for byte what it writes for the same tensors in memory.
struct ShapedView {
    dtype: Dtype,
    shape: Vec<usize>,
    len: usize,
}

impl safetensors::View for ShapedView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&[])
    }
    fn data_len(&self) -> usize {
        self.len
    }
}

/// An open safetensors file being filled row by row.
pub struct TensorFile {
    file: std::fs::File,
    path: PathBuf,
    entries: std::collections::HashMap<String, Entry>,
}

/// Where one declared tensor's rows go, and how many bytes of it were written (to check that it was filled).
struct Entry {
    /// Absolute byte offset of its data.
    offset: u64,
    row_bytes: u64,
    rows: i64,
    kind: Kind,
    written: u64,
}

impl TensorFile {
    fn create(path: &Path, specs: &[TensorSpec]) -> Result<TensorFile> {
        let header = safetensors_header(specs)?;
        let mut file = std::fs::File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
        file.write_all(&header).with_context(|| format!("{}: cannot write", path.display()))?;
        let data_start = header.len() as u64;
        // Offsets as the header lays them out (sorted by kind, then name).
        let header_json: serde_json::Value = serde_json::from_slice(&header[8..])?;
        let mut entries = std::collections::HashMap::new();
        for spec in specs {
            let offsets = &header_json[&spec.name]["data_offsets"];
            let begin = offsets[0].as_u64().context("safetensors header offsets")?;
            let rows = spec.shape.first().copied().unwrap_or(1).max(1);
            let row_bytes = spec.bytes() / rows as u64;
            let entry = Entry { offset: data_start + begin, row_bytes, rows, kind: spec.kind, written: 0 };
            entries.insert(spec.name.clone(), entry);
        }
        let total = data_start + specs.iter().map(TensorSpec::bytes).sum::<u64>();
        file.set_len(total).with_context(|| format!("{}: cannot allocate {total} bytes", path.display()))?;
        Ok(TensorFile { file, path: path.to_path_buf(), entries })
    }

    /// Writes `t` as rows `first_row..` of tensor `name` (its trailing shape must match the declared one).
    pub fn write_rows(&mut self, name: &str, first_row: i64, t: &Tensor) -> Result<()> {
        use std::io::Seek;
        let entry = self.entries.get_mut(name).with_context(|| format!("tensor '{name}' was not declared"))?;
        let (row_bytes, kind) = (entry.row_bytes, entry.kind);
        let count = if t.dim() == 0 { 1 } else { t.size()[0] };
        let t = t.to_kind(kind).contiguous();
        let bytes = t.numel() as u64 * kind.elt_size_in_bytes() as u64;
        if first_row < 0 || first_row + count > entry.rows || bytes != count as u64 * row_bytes {
            bail!(
                "tensor '{name}': rows {first_row}..{} of shape {:?} do not fit its declaration",
                first_row + count,
                t.size()
            );
        }
        let mut buffer = vec![0u8; bytes as usize];
        t.copy_data_u8(&mut buffer, t.numel());
        self.file.seek(std::io::SeekFrom::Start(entry.offset + first_row as u64 * row_bytes))?;
        self.file.write_all(&buffer).with_context(|| format!("{}: cannot write", self.path.display()))?;
        entry.written += bytes;
        Ok(())
    }

    fn finish(self) -> Result<()> {
        for (name, entry) in &self.entries {
            let size = entry.row_bytes * entry.rows as u64;
            if entry.written != size {
                bail!("tensor '{name}': {} of {size} bytes were written", entry.written);
            }
        }
        self.file.sync_all().with_context(|| format!("{}: cannot sync", self.path.display()))
    }
}

/// The 8-byte length and JSON header the safetensors crate writes for these tensors.
fn safetensors_header(specs: &[TensorSpec]) -> Result<Vec<u8>> {
    let shapes: Vec<Vec<usize>> = specs.iter().map(|s| s.shape.iter().map(|&d| d as usize).collect()).collect();
    let declared: Vec<(String, ShapedView)> = specs
        .iter()
        .zip(shapes)
        .map(|(spec, shape)| {
            Ok((spec.name.clone(), ShapedView { dtype: spec.dtype()?, shape, len: spec.bytes() as usize }))
        })
        .collect::<Result<_>>()?;
    // With no data, the serialised file is exactly its header.
    safetensors::serialize(declared, None).map_err(|e| anyhow::anyhow!("safetensors header: {e}"))
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
            let full = if l.full { Some(take(&grad_tensor(&l.info.name), Some(l.info.num_params))?) } else { None };
            let sketch = match l.sketch_dim {
                Some(k) => Some(take(&sketch_tensor(&l.info.name), Some(k))?),
                None => None,
            };
            layers.push(LayerUpdates {
                name: l.info.name.clone(),
                num_params: l.info.num_params,
                full,
                sketch,
                sketch_kind: l.sketch_dim.map(|_| l.sketch_kind.unwrap_or(manifest.config.sketch_kind)),
            });
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
