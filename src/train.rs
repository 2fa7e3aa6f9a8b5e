//! Training: SGD or Adam over a dataset's training split, a checkpoint per epoch, accuracy per epoch.
//!
//! A training run lives in one folder: `epoch-000.safetensors` (the initialisation), `epoch-001.safetensors`, ...
//! (for a TorchScript model also `epoch-000.pt`, ...: the trained module with its buffers, e.g. BatchNorm's
//! running statistics, which the safetensors checkpoint of the parameters does not hold) and `training.json` ([`TrainingRun`]: dataset, model, hyperparameters, seed, metrics per epoch). The metadata is
//! rewritten atomically after each epoch, so an interrupted run leaves a consistent folder. Everything random (the
//! initial weights, the batch order, dropout masks) follows from the seed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use tch::{nn, nn::OptimizerConfig, Kind, Tensor};

use crate::data::{Dataset, Split};
use crate::models::{Forward, Model, ModelSpec};
use crate::progress::Progress;
use crate::rng::{self, Stream};

pub const METADATA_FILE: &str = "training.json";

crate::keyword_enum! {
    /// The optimiser of a training run.
    pub enum OptimizerKind("optimizer") {
        /// Stochastic gradient descent with momentum.
        Sgd = "sgd",
        Adam = "adam",
    }
}

/// Hyperparameters of a training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub optimizer: OptimizerKind,
    pub epochs: usize,
    pub batch_size: i64,
    pub learning_rate: f64,
    /// SGD momentum (ignored by Adam).
    pub momentum: f64,
    pub weight_decay: f64,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            optimizer: OptimizerKind::Adam,
            epochs: 3,
            batch_size: 64,
            learning_rate: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Checks every hyperparameter's range; `train_size` bounds the batch size.
    pub fn validate(&self, train_size: i64) -> Result<()> {
        if !(1..=10_000).contains(&self.epochs) {
            crate::param_bail!("epochs", "must be in [1, 10000], got {}", self.epochs);
        }
        if self.batch_size < 1 {
            crate::param_bail!("batch_size", "must be at least 1, got {}", self.batch_size);
        }
        if self.batch_size > train_size {
            crate::param_bail!(
                "batch_size",
                "must be in [1, {train_size}] (the training split's size), got {}",
                self.batch_size
            );
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate <= 10.0) {
            crate::param_bail!("learning_rate", "must be in (0, 10], got {}", self.learning_rate);
        }
        if !(0.0..1.0).contains(&self.momentum) {
            crate::param_bail!("momentum", "must be in [0, 1), got {}", self.momentum);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            crate::param_bail!("weight_decay", "must be a finite number >= 0, got {}", self.weight_decay);
        }
        Ok(())
    }
}

/// Metrics after one epoch (epoch 0: the initialisation, before any step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    /// Mean training loss over the epoch's steps, in nats (null for epoch 0).
    pub train_loss: Option<f64>,
    /// Accuracy on the training split over the epoch's steps, as the model was at each step (null for epoch 0).
    pub train_accuracy: Option<f64>,
    pub test_loss: f64,
    pub test_accuracy: f64,
    pub seconds: f64,
    /// Checkpoint file name, relative to the run folder.
    pub checkpoint: String,
}

/// Everything about a training run: written as `training.json` beside its checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRun {
    pub gradleak_version: String,
    pub dataset: String,
    pub model: ModelSpec,
    pub config: TrainConfig,
    pub train_size: i64,
    pub test_size: i64,
    pub epochs: Vec<EpochMetrics>,
}

impl TrainingRun {
    pub fn final_test_accuracy(&self) -> f64 {
        self.epochs.last().map(|e| e.test_accuracy).unwrap_or(f64::NAN)
    }
}

pub fn checkpoint_name(epoch: usize) -> String {
    format!("epoch-{epoch:03}.safetensors")
}

/// The TorchScript file saved beside a checkpoint of a TorchScript model.
pub fn torchscript_checkpoint_name(epoch: usize) -> String {
    format!("epoch-{epoch:03}.pt")
}

/// Mean loss (nats) and accuracy of the model on a split, in evaluation mode.
pub fn evaluate(model: &Model, split: &Split) -> (f64, f64) {
    let n = split.len();
    let chunk = 1000;
    let (mut loss_sum, mut correct) = (0.0, 0i64);
    tch::no_grad(|| {
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let x = split.inputs.narrow(0, start, len).to_kind(model.kind());
            let y = split.labels.narrow(0, start, len);
            let logits = model.forward(&x, &mut Forward::eval());
            loss_sum += Model::loss(&logits, &y).double_value(&[]) * len as f64;
            correct += logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]);
            start += len;
        }
    });
    (loss_sum / n as f64, correct as f64 / n as f64)
}

/// Builds a model with initial weights from the training seed.
pub fn init_model(spec: &ModelSpec, seed: u64) -> Result<Model> {
    Model::new(spec, seed)
}

/// Trains `model` on `data`; writes checkpoints and metadata to `out_dir` when given. The batch order and the dropout
/// masks come from generators seeded by the config's seed (`Stream::TrainingOrder`, `Stream::TrainingDropout`);
/// libtorch's global generator is not used.
pub fn train(
    model: &mut Model,
    data: &Dataset,
    config: &TrainConfig,
    out_dir: Option<&Path>,
    progress: Progress,
) -> Result<TrainingRun> {
    config.validate(data.train.len())?;
    if model.spec.input != data.input_shape {
        bail!("model expects {} but dataset {} has {}", model.spec.input, data.name, data.input_shape);
    }
    let mut run = TrainingRun {
        gradleak_version: env!("CARGO_PKG_VERSION").to_string(),
        dataset: data.name.clone(),
        model: model.spec.clone(),
        config: config.clone(),
        train_size: data.train.len(),
        test_size: data.test.len(),
        epochs: Vec::new(),
    };
    let save = |run: &TrainingRun, model: &Model, epoch: usize| -> Result<()> {
        if let Some(dir) = out_dir {
            model.save_weights(&dir.join(checkpoint_name(epoch)))?;
            if model.script().is_some() {
                model.save_torchscript(&dir.join(torchscript_checkpoint_name(epoch)))?;
            }
            crate::io::write_json(&dir.join(METADATA_FILE), run)?;
        }
        Ok(())
    };

    let started = Instant::now();
    let (test_loss, test_accuracy) = evaluate(model, &data.test);
    run.epochs.push(EpochMetrics {
        epoch: 0,
        train_loss: None,
        train_accuracy: None,
        test_loss,
        test_accuracy,
        seconds: started.elapsed().as_secs_f64(),
        checkpoint: checkpoint_name(0),
    });
    save(&run, model, 0)?;

    let mut optimizer = match config.optimizer {
        OptimizerKind::Sgd => nn::Sgd { momentum: config.momentum, wd: config.weight_decay, ..Default::default() }
            .build(&model.vs, config.learning_rate)?,
        OptimizerKind::Adam => {
            nn::Adam { wd: config.weight_decay, ..Default::default() }.build(&model.vs, config.learning_rate)?
        }
    };
    // The batch order and the dropout masks come from generators seeded by the run's seed.
    let mut fwd = Forward::train().with_dropout_rng(rng::rng(config.seed, Stream::TrainingDropout));
    let mut rng = rng::rng(config.seed, Stream::TrainingOrder);
    if model.script().is_some() {
        // A TorchScript module's own dropout draws from libtorch's global generator.
        tch::manual_seed(config.seed as i64);
    }
    let n = data.train.len();
    let steps_per_epoch = (n + config.batch_size - 1) / config.batch_size;
    let kind = model.kind();
    for epoch in 1..=config.epochs {
        let started = Instant::now();
        let mut order: Vec<i64> = (0..n).collect();
        order.shuffle(&mut rng);
        let bar = progress.bar(steps_per_epoch as u64, format!("epoch {epoch}/{}", config.epochs));
        let (mut loss_sum, mut correct) = (0.0, 0i64);
        for batch in order.chunks(config.batch_size as usize) {
            let idx = Tensor::from_slice(batch);
            let x = data.train.inputs.index_select(0, &idx).to_kind(kind);
            let y = data.train.labels.index_select(0, &idx);
            let logits = model.try_forward(&x, &mut fwd)?;
            let loss = Model::loss(&logits, &y);
            optimizer.backward_step(&loss);
            let batch_loss = loss.double_value(&[]);
            if !batch_loss.is_finite() {
                crate::param_bail!(
                    "learning_rate",
                    "{} made training diverge at epoch {epoch} (the loss is {batch_loss}); lower it",
                    config.learning_rate
                );
            }
            loss_sum += batch_loss * batch.len() as f64;
            correct += tch::no_grad(|| logits.argmax(-1, false).eq_tensor(&y).sum(Kind::Int64).int64_value(&[]));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let (test_loss, test_accuracy) = evaluate(model, &data.test);
        run.epochs.push(EpochMetrics {
            epoch,
            train_loss: Some(loss_sum / n as f64),
            train_accuracy: Some(correct as f64 / n as f64),
            test_loss,
            test_accuracy,
            seconds: started.elapsed().as_secs_f64(),
            checkpoint: checkpoint_name(epoch),
        });
        save(&run, model, epoch)?;
    }
    Ok(run)
}

/// A saved training run: its metadata and folder.
#[derive(Debug, Clone)]
pub struct SavedRun {
    pub dir: PathBuf,
    pub run: TrainingRun,
}

impl SavedRun {
    /// Reads `training.json` in `dir`.
    pub fn open(dir: &Path) -> Result<SavedRun> {
        let path = dir.join(METADATA_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("{}: cannot read the training metadata (is this a training run folder?)", path.display())
        })?;
        let run: TrainingRun =
            serde_json::from_str(&text).with_context(|| format!("{}: not valid training metadata", path.display()))?;
        Ok(SavedRun { dir: dir.to_path_buf(), run })
    }

    /// The last saved epoch (0 when only the initialisation is saved).
    pub fn last_epoch(&self) -> usize {
        self.run.epochs.iter().map(|e| e.epoch).max().unwrap_or(0)
    }

    /// The model at a saved epoch (0 = initialisation).
    pub fn model_at(&self, epoch: usize) -> Result<Model> {
        let Some(m) = self.run.epochs.iter().find(|m| m.epoch == epoch) else {
            let saved: Vec<String> = self.run.epochs.iter().map(|m| m.epoch.to_string()).collect();
            bail!("{}: no checkpoint for epoch {epoch}; saved epochs: {}", self.dir.display(), saved.join(", "));
        };
        let spec = &self.run.model;
        let module = self.dir.join(torchscript_checkpoint_name(epoch));
        let mut model = if spec.file.is_some() && module.is_file() {
            // The module saved at that epoch, with its trained buffers; the specification stays the run's.
            let mut at_epoch = spec.clone();
            at_epoch.file = Some(crate::models::ModelFile::of(&module)?);
            let mut model = Model::new(&at_epoch, self.run.config.seed)?;
            model.spec = spec.clone();
            model
        } else {
            Model::new(spec, self.run.config.seed)?
        };
        model.load_weights(&self.dir.join(&m.checkpoint))?;
        Ok(model)
    }
}
