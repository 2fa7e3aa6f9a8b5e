//! The model behind shared updates, and its data: a checkpoint of a training run, a model taken as it is (a
//! built-in architecture at its seeded initialisation, a TorchScript file), or the model a gradient store names.
//! The command line and the audit resolve models here; measurements read them through `measure::families::Behind`.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::store::GradientStore;
use crate::data::{self, Dataset};
use crate::models::{Model, ModelSpec};
use crate::train::SavedRun;

/// A model ready to be measured, with its dataset and where it came from.
pub struct LoadedModel {
    pub model: Model,
    pub dataset: Dataset,
    /// The checkpoint's epoch (0 for a model as it is).
    pub epoch: usize,
    /// The checkpoint's test accuracy, when the run recorded it.
    pub test_accuracy: Option<f64>,
    /// The run folder, or the model's name.
    pub source: String,
}

impl LoadedModel {
    /// The checkpoint of `run` at `epoch` (default: the last saved), with the run's dataset from `data_dir`.
    pub fn from_run(run: &Path, epoch: Option<usize>, data_dir: &Path) -> Result<LoadedModel> {
        let saved = SavedRun::open(run)?;
        let epoch = epoch.unwrap_or_else(|| saved.last_epoch());
        let model = saved.model_at(epoch)?;
        let dataset = data::load(&saved.run.dataset, data_dir)?;
        let test_accuracy = saved.run.epochs.iter().find(|e| e.epoch == epoch).map(|e| e.test_accuracy);
        Ok(LoadedModel { model, dataset, epoch, test_accuracy, source: run.display().to_string() })
    }

    /// The model `name` taken as it is for `dataset`: a built-in architecture's initialisation from `seed`, or a
    /// file's weights (`torchscript:PATH`).
    pub fn named(name: &str, dataset: Dataset, seed: u64) -> Result<LoadedModel> {
        let spec = ModelSpec::from_name(name, dataset.input_shape, dataset.num_classes())?;
        let model = Model::new(&spec, seed)?;
        Ok(LoadedModel { model, dataset, epoch: 0, test_accuracy: None, source: name.to_string() })
    }

    /// The model behind a gradient store: the checkpoint its manifest names (or the run in `run`, when it moved),
    /// checked against the manifest's model, and the store's dataset.
    pub fn behind_store(store: &GradientStore, run: Option<&Path>, data_dir: &Path) -> Result<LoadedModel> {
        let manifest = &store.manifest;
        let Some(checkpoint) = &manifest.checkpoint else {
            bail!("the store's manifest names no checkpoint; name the training run behind it")
        };
        let model = match (run, checkpoint.model_seed) {
            (Some(run), _) => SavedRun::open(run)?.model_at(checkpoint.epoch)?,
            (None, Some(seed)) => Model::new(&manifest.model, seed)?,
            (None, None) if checkpoint.run.starts_with("torchscript:") => {
                let spec = ModelSpec::from_name(&checkpoint.run, manifest.input_shape, manifest.classes.len() as i64)?;
                Model::new(&spec, 0)?
            }
            (None, None) => SavedRun::open(Path::new(&checkpoint.run))
                .and_then(|saved| saved.model_at(checkpoint.epoch))
                .with_context(|| {
                    format!(
                        "the manifest's run '{}' (epoch {}); name the run if it moved",
                        checkpoint.run, checkpoint.epoch
                    )
                })?,
        };
        if model.spec != manifest.model {
            bail!("the model loaded ({}) is not the store's ({})", model.spec.arch, manifest.model.arch);
        }
        let dataset = data::load(&manifest.dataset, data_dir)
            .with_context(|| format!("the store's dataset '{}'", manifest.dataset))?;
        let test_accuracy = Some(checkpoint.test_accuracy).filter(|a| a.is_finite());
        Ok(LoadedModel { model, dataset, epoch: checkpoint.epoch, test_accuracy, source: checkpoint.run.clone() })
    }
}
