//! `gradleak grads`: shared updates of a checkpoint on a data split, written as a gradient store.

use std::path::PathBuf;

use anyhow::{Context, Result};

use gradleak::defenses::Defense;
use gradleak::gradients::sketch::SketchKind;
use gradleak::gradients::store::CheckpointRef;
use gradleak::gradients::updates::UpdateConfig;
use gradleak::gradients::{write_updates, StoreDescription};
use gradleak::progress::Progress;

use super::{keywords, CheckpointArgs, Global};

#[derive(Debug, clap::Args)]
pub struct GradsArgs {
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Number of shared updates.
    #[arg(long, default_value_t = 1000)]
    pub updates: i64,
    /// Samples per shared update (the victim is the first).
    #[arg(long, default_value_t = 1)]
    pub batch_size: i64,
    /// A defence, repeatable: dp:clip=C,sigma=S | dropout:P | prune:F | quantize:B | noise:STD | sign | protect:L1+L2
    #[arg(long = "defense", alias = "defence")]
    pub defenses: Vec<Defense>,
    /// DP accounting: delta (with a dp defence).
    #[arg(long, default_value_t = 1e-5)]
    pub delta: f64,
    /// DP accounting: steps (default: one epoch of the training set at this batch size).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Layers to store, comma-separated (default: all shared layers).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// Layers with more parameters are also stored as a sketch of this dimension.
    #[arg(long, default_value_t = 4096)]
    pub sketch_dim: i64,
    /// The sketch: sparse (JL), gaussian (dense) or kron (a Kronecker projection computed without forming
    /// per-sample gradients; fastest for large layers).
    #[arg(long, value_parser = keywords::<SketchKind>(SketchKind::KEYWORDS), default_value = "sparse")]
    pub sketch: SketchKind,
    /// Layers with more parameters are stored only as a sketch (default: the sketch dimension, as the audit stores
    /// them). Raise it to keep a large layer's full gradient too, which the analytic, ig, dlg and idlg families of
    /// `vinfo --store` need: forming and writing it is most of the time of `grads`.
    #[arg(long)]
    pub full_max_params: Option<i64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output folder for the store.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace a store already in the out folder.
    #[arg(long)]
    pub force: bool,
    /// Print the manifest as JSON.
    #[arg(long)]
    pub json: bool,
    /// Samples per vectorised pass (default: from the model's size); the store does not depend on it.
    #[arg(long, hide = true)]
    pub chunk: Option<i64>,
}

/// The flag of each library parameter this command sets.
pub const FLAGS: &[(&str, &str)] = &[
    ("num_updates", "--updates"),
    ("batch_size", "--batch-size"),
    ("sketch_dim", "--sketch-dim"),
    ("sketch_kind", "--sketch"),
    ("full_max_params", "--full-max-params"),
    ("chunk_samples", "--chunk"),
    ("out", "--out"),
    ("force", "--force"),
];

pub fn run(global: &Global, args: GradsArgs) -> Result<()> {
    let loaded = args.checkpoint.load(&global.data_dir)?;
    let (model, dataset, epoch) = (&loaded.model, &loaded.dataset, loaded.epoch);
    let split = dataset.split(&args.checkpoint.split)?;
    let config = UpdateConfig {
        num_updates: args.updates,
        batch_size: args.batch_size,
        seed: args.seed,
        defenses: args.defenses.clone(),
        layers: args.layers.clone(),
        sketch_kind: args.sketch,
        sketch_dim: args.sketch_dim,
        full_max_params: args.full_max_params.unwrap_or(args.sketch_dim),
        full_layers: Vec::new(),
        stream_offset: 0,
        chunk_samples: args.chunk,
    };
    let dp = gradleak::defenses::dp_record(
        &config.defenses,
        config.batch_size,
        dataset.train.len(),
        args.delta,
        args.steps,
    )?;
    let test_accuracy = loaded.test_accuracy.unwrap_or(f64::NAN);
    // A built-in architecture taken as it is is rebuilt from its seed (by `vinfo --store` for the model-backed
    // families); a run or a TorchScript file names its own weights.
    let builtin = args.checkpoint.model.as_deref().is_some_and(|m| !m.starts_with("torchscript:"));
    let model_seed = builtin.then_some(args.checkpoint.model_seed);
    let checkpoint = CheckpointRef { run: loaded.source.clone(), epoch, test_accuracy, model_seed };
    let description =
        StoreDescription { split: &args.checkpoint.split, checkpoint: Some(checkpoint), config: &config, dp };
    let progress = Progress::new(global.quiet || args.json);
    let manifest = write_updates(&args.out, model, dataset, split, description, args.force, progress)
        .with_context(|| format!("gradient store {}", args.out.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&manifest)?);
        return Ok(());
    }
    println!(
        "{} updates of {} (epoch {epoch}) on {} {} split, batch size {}, defence: {}",
        manifest.num_updates,
        manifest.model.arch,
        manifest.dataset,
        manifest.split,
        manifest.batch_size,
        manifest.defense
    );
    if let Some(dp) = &manifest.dp {
        let eps = dp.epsilon.map(|e| format!("{e:.3}")).unwrap_or_else(|| "infinite".into());
        println!("DP: epsilon {eps} at delta {} (q = {:.5}, {} steps)", dp.delta, dp.sample_rate, dp.steps);
    }
    println!("{:<24} {:>12} {:>6} {:>8}", "layer", "parameters", "full", "sketch");
    for l in &manifest.layers {
        let sketch = l.sketch_dim.map(|k| k.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:>12} {:>6} {:>8}",
            l.info.name,
            l.info.num_params,
            if l.full { "yes" } else { "no" },
            sketch
        );
    }
    if !manifest.protected.is_empty() {
        println!("not shared (protected): {}", manifest.protected.join(", "));
    }
    println!("written to {}", args.out.display());
    Ok(())
}
