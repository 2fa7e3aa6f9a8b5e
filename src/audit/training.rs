//! The trained models of an audit: one training run per dataset, model and dropout rate, trained once into
//! `runs/<key>/` of the out folder and reused (or an existing run named by `training.run`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::cache::hash_json;
use super::config::{AuditConfig, Cell};
use crate::data::Dataset;
use crate::models::{DropoutSpec, ModelSpec};
use crate::progress::Progress;
use crate::rng::{self, Order};
use crate::train::{self, SavedRun, TrainConfig};

/// The model specification of a cell, checked against its dataset (an error when the model does not fit).
pub(crate) fn model_spec(config: &AuditConfig, dataset: &Dataset, model: &str, dropout: f64) -> Result<ModelSpec> {
    let mut spec = ModelSpec::from_name(model, dataset.input_shape, dataset.num_classes())?;
    spec.width = config.width;
    spec.hidden = config.hidden;
    spec.dropout = DropoutSpec { rate: dropout, at: Vec::new() };
    spec.validate()?;
    Ok(spec)
}

/// With an existing training run, `training.epochs` is the run's last saved epoch (what an empty `grid.epoch`
/// audits), whatever the configuration says.
pub(crate) fn with_run_epochs(config: &AuditConfig) -> Result<AuditConfig> {
    let mut config = config.clone();
    if let Some(run) = &config.training.run {
        let saved = SavedRun::open(run).context("training.run")?;
        config.training.epochs = saved.last_epoch();
    }
    Ok(config)
}

/// The training run of a cell's dataset, model and dropout rate: the configured run folder, or one trained (once)
/// into `runs/<key>` under `out`.
pub(crate) fn trained_run(
    config: &AuditConfig,
    dataset: &Dataset,
    cell: &Cell,
    out: &Path,
    progress: Progress,
    verbose: bool,
) -> Result<SavedRun> {
    if let Some(run) = &config.training.run {
        let saved = SavedRun::open(run)?;
        if saved.run.dataset != dataset.name {
            bail!(
                "training.run {}: trained on {}, the audit's dataset is {}",
                run.display(),
                saved.run.dataset,
                dataset.name
            );
        }
        if saved.run.model.name() != cell.model {
            bail!(
                "training.run {}: a {} run, the audit's model is {}",
                run.display(),
                saved.run.model.name(),
                cell.model
            );
        }
        return Ok(saved);
    }
    let spec = model_spec(config, dataset, &cell.model, cell.dropout)?;
    let t = &config.training;
    let train_config = TrainConfig {
        optimizer: t.optimizer,
        epochs: t.epochs,
        batch_size: t.batch_size,
        learning_rate: t.lr,
        momentum: t.momentum,
        weight_decay: t.weight_decay,
        seed: config.seed,
    };
    let key = hash_json(&(&dataset.name, &spec, &train_config, t.samples));
    let dir = out.join("runs").join(&key);
    if let Ok(saved) = SavedRun::open(&dir) {
        if saved.run.epochs.len() == t.epochs + 1 {
            return Ok(saved);
        }
    }
    // Absent or interrupted: train from the start.
    let _ = std::fs::remove_dir_all(&dir);
    let mut model = train::init_model(&spec, config.seed)?;
    if verbose {
        progress.println(&format!(
            "training {} on {} (dropout {}) for {} epochs",
            cell.model, dataset.name, cell.dropout, t.epochs
        ));
    }
    let subset = training_subset(dataset, t.samples, config.seed)?;
    train::train(&mut model, subset.as_ref().unwrap_or(dataset), &train_config, Some(&dir), progress)
        .map_err(|e| crate::error::rename_params(e, super::config::TRAINING_KEYS))?;
    SavedRun::open(&dir)
}

/// The dataset with a seeded subset of `samples` training samples (None when the whole split is used: 0, or at
/// least its size; a study over datasets of different sizes reads `samples` as "up to", and the cells' notes say
/// when a split was smaller).
fn training_subset(dataset: &Dataset, samples: i64, seed: u64) -> Result<Option<Dataset>> {
    let n = dataset.train.len();
    if samples <= 0 || samples >= n {
        return Ok(None);
    }
    let mut order: Vec<i64> = (0..dataset.train.len()).collect();
    order.sort_by_key(|&i| rng::order_key(seed, Order::TrainingSubset, i as u64));
    order.truncate(samples as usize);
    order.sort_unstable();
    Ok(Some(Dataset {
        name: dataset.name.clone(),
        input_shape: dataset.input_shape,
        classes: dataset.classes.clone(),
        attributes: dataset.attributes.clone(),
        train: dataset.train.select(&Tensor::from_slice(&order)),
        test: dataset.test.shallow_clone(),
    }))
}
