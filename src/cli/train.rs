//! `gradleak train`: train a model on a dataset, with a checkpoint per epoch.

use std::path::PathBuf;

use anyhow::{bail, Result};

use gradleak::data;
use gradleak::models::{DropoutSpec, ModelSpec};
use gradleak::progress::Progress;
use gradleak::train::{self, OptimizerKind, TrainConfig, METADATA_FILE};

use super::{keywords, Global};

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Dataset name (see `gradleak data list`).
    #[arg(long, default_value = "embedded")]
    pub dataset: String,
    /// Model architecture (see `gradleak models`), or a model file: torchscript:PATH.
    #[arg(long, default_value = "lenet5")]
    pub model: String,
    #[arg(long, value_parser = keywords::<OptimizerKind>(OptimizerKind::KEYWORDS), default_value = "adam")]
    pub optimizer: OptimizerKind,
    #[arg(long, default_value_t = 3)]
    pub epochs: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: i64,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Dropout rate (0 = none).
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// Linear layers whose input gets dropout, comma-separated (default: the classifier's hidden layers).
    #[arg(long, value_delimiter = ',')]
    pub dropout_at: Vec<String>,
    /// Channel multiplier for AlexNet and VGG.
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Hidden units of the MLP.
    #[arg(long, default_value_t = 128)]
    pub hidden: i64,
    /// Seed of every random choice (initial weights, batch order, dropout).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for checkpoints and training.json (default: runs/<model>-<dataset>-seed<seed>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Replace a training run already in the out folder.
    #[arg(long)]
    pub force: bool,
    /// Print a JSON summary instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// The flag of each library parameter this command sets.
pub const FLAGS: &[(&str, &str)] = &[
    ("epochs", "--epochs"),
    ("batch_size", "--batch-size"),
    ("learning_rate", "--lr"),
    ("momentum", "--momentum"),
    ("weight_decay", "--weight-decay"),
    ("dropout", "--dropout"),
    ("dropout_at", "--dropout-at"),
    ("width", "--width"),
    ("hidden", "--hidden"),
    ("arch", "--model"),
    ("out", "--out"),
    ("force", "--force"),
];

pub fn run(global: &Global, args: TrainArgs) -> Result<()> {
    ModelSpec::check_name(&args.model)?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!("runs/{}-{}-seed{}", slug(&args.model), slug(&args.dataset), args.seed))
    });
    if out.join(METADATA_FILE).exists() && !args.force {
        bail!("{}: already holds a training run; choose another --out or pass --force to replace it", out.display());
    }
    let config = TrainConfig {
        optimizer: args.optimizer,
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.lr,
        momentum: args.momentum,
        weight_decay: args.weight_decay,
        seed: args.seed,
    };
    // Check the hyperparameters before the (possibly slow) data load.
    config.validate(i64::MAX)?;
    let dataset = data::load(&args.dataset, &global.data_dir)?;
    let mut spec = ModelSpec::from_name(&args.model, dataset.input_shape, dataset.num_classes())?;
    spec.width = args.width;
    spec.hidden = args.hidden;
    spec.dropout = DropoutSpec { rate: args.dropout, at: args.dropout_at.clone() };
    let mut model = train::init_model(&spec, args.seed)?;
    if !args.json && !global.quiet {
        eprintln!(
            "training {} ({} parameters) on {} ({} train / {} test), {} epochs, writing to {}",
            spec.name(),
            model.num_params(),
            dataset.name,
            dataset.train.len(),
            dataset.test.len(),
            config.epochs,
            out.display()
        );
    }
    let run = train::train(&mut model, &dataset, &config, Some(&out), Progress::new(global.quiet || args.json))?;
    if args.json {
        let summary = serde_json::json!({
            "out": out,
            "metadata": out.join(METADATA_FILE),
            "final_test_accuracy": run.final_test_accuracy(),
            "run": run,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "{:>5} {:>10} {:>9} {:>9} {:>9} {:>8}",
        "epoch", "train loss", "train acc", "test loss", "test acc", "seconds"
    );
    for e in &run.epochs {
        let opt = |v: Option<f64>, pct: bool| match v {
            Some(v) if pct => format!("{:.2}%", 100.0 * v),
            Some(v) => format!("{v:.4}"),
            None => "-".into(),
        };
        println!(
            "{:>5} {:>10} {:>9} {:>9.4} {:>8.2}% {:>8.1}",
            e.epoch,
            opt(e.train_loss, false),
            opt(e.train_accuracy, true),
            e.test_loss,
            100.0 * e.test_accuracy,
            e.seconds
        );
    }
    println!("checkpoints and training.json in {}", out.display());
    Ok(())
}

/// A model or dataset name as a folder name: `torchscript:models/net.pt` -> `torchscript-models-net.pt`.
fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '-' }).collect()
}
