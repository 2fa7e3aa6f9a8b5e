//! `gradleak sensitivity`: why a layer leaks. Input sensitivity (the Jacobian of each layer's gradient with respect
//! to the input) of a checkpoint, and latent-attribute sensitivity (how far apart the gradients of the two attribute
//! groups are) of a gradient store.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde_json::json;

use gradleak::defenses::{describe, Defense};
use gradleak::gradients::store::GradientStore;
use gradleak::measure::bounds::{fisher_of_release, LayerFisher, ReleaseNoise};
use gradleak::measure::sensitivity::{
    input_sensitivity_on_split, latent_sensitivity_of_store, Estimate, InputSensitivityConfig, InputSensitivityReport,
    LatentConfig, LatentReport,
};
use gradleak::progress::Progress;

use super::Global;

#[derive(Debug, clap::Args)]
pub struct SensitivityArgs {
    /// Training run folder (from `gradleak train`): input sensitivity of its checkpoint.
    #[arg(long, required_unless_present_any = ["store", "model"], conflicts_with = "model")]
    pub run: Option<PathBuf>,
    /// Checkpoint epoch (0 = initialisation; default: the last saved).
    #[arg(long, conflicts_with = "model")]
    pub epoch: Option<usize>,
    /// A model as it is instead of a run: `torchscript:PATH` (the file's weights) or a built-in architecture (its
    /// initialisation from --model-seed). Needs --dataset.
    #[arg(long, requires = "dataset")]
    pub model: Option<String>,
    /// The dataset of --model.
    #[arg(long, requires = "model")]
    pub dataset: Option<String>,
    /// Seed of a built-in --model's initial weights.
    #[arg(long, default_value_t = 0, requires = "model")]
    pub model_seed: u64,
    /// Split the samples come from.
    #[arg(long, default_value = "train", value_parser = ["train", "test"])]
    pub split: String,
    /// Samples (drawn at random from the split, seeded).
    #[arg(long, default_value_t = 64)]
    pub samples: i64,
    /// Hutchinson probes per sample.
    #[arg(long, default_value_t = 16)]
    pub probes: usize,
    /// Exact Jacobian norms, one input coordinate at a time (slow for large inputs; no probes).
    #[arg(long)]
    pub exact: bool,
    /// Layers to measure, comma-separated (default: all).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// A defence, repeatable: dp:clip=C,sigma=S | dropout:P | prune:F | quantize:B | noise:STD | sign | protect:L1+L2
    #[arg(long = "defense", alias = "defence")]
    pub defenses: Vec<Defense>,
    /// Samples per pass (default: from the model size, to bound memory).
    #[arg(long)]
    pub chunk: Option<i64>,
    /// Gradient store (from `gradleak grads`): latent sensitivity of its layers to --attribute.
    #[arg(long, requires = "attribute")]
    pub store: Option<PathBuf>,
    /// Binary latent attribute of the store's victims.
    #[arg(long, requires = "store")]
    pub attribute: Option<String>,
    /// Dimension of the principal subspaces compared.
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Random relabellings for the subspace distance's null reference.
    #[arg(long, default_value_t = 20)]
    pub permutations: usize,
    /// Bootstrap resamples for the 95% intervals.
    #[arg(long, default_value_t = 200)]
    pub bootstrap: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the input part measured on.
struct InputRun {
    /// The run folder, or the model's name.
    run: String,
    epoch: usize,
    arch: String,
    dataset: String,
    report: InputSensitivityReport,
    /// Under Gaussian noise (`dp`, `noise`): the Fisher bound on reconstruction per layer and victim.
    fisher: Option<(ReleaseNoise, Vec<LayerFisher>)>,
}

/// The flag of each library parameter this command sets.
pub const FLAGS: &[(&str, &str)] = &[
    ("probes", "--probes"),
    ("k", "--k"),
    ("bootstrap", "--bootstrap"),
    ("permutations", "--permutations"),
    ("samples", "--samples"),
];

pub fn run(global: &Global, args: SensitivityArgs) -> Result<()> {
    let progress = Progress::new(global.quiet || args.json);
    if args.samples < 1 {
        bail!("--samples must be at least 1, got {}", args.samples);
    }
    if !args.exact && args.probes < 1 {
        bail!("--probes must be at least 1, got {}", args.probes);
    }
    // Cheap checks of the settings and the store before the (possibly slow) input part.
    let latent_config =
        LatentConfig { k: args.k, bootstrap: args.bootstrap, permutations: args.permutations, seed: args.seed };
    if args.bootstrap < 1 {
        bail!("--bootstrap must be at least 1, got 0");
    }
    if args.store.is_some() {
        latent_config.validate()?;
    }
    let store = args.store.as_ref().map(|dir| GradientStore::open(dir)).transpose()?;
    let input = match args.run.is_some() || args.model.is_some() {
        true => Some(input_part(global, &args, progress)?),
        false => None,
    };
    let latent = match (&store, &args.attribute) {
        (Some(store), Some(attribute)) => {
            Some(latent_sensitivity_of_store(store, attribute, args.layers.as_deref(), &latent_config, progress)?)
        }
        _ => None,
    };
    if args.json {
        let value = json!({
            "input": input.as_ref().map(|i| json!({
                "run": i.run,
                "epoch": i.epoch,
                "model": i.arch,
                "dataset": i.dataset,
                "split": args.split,
                "defense": describe(&args.defenses),
                "report": i.report,
                "fisher": i.fisher.as_ref().map(|(noise, layers)| json!({ "noise": noise, "layers": layers })),
            })),
            "latent": latent.as_ref().map(|l| json!({ "store": args.store, "report": l })),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if let Some(i) = &input {
        print_input(i, &args);
    }
    if let Some(l) = &latent {
        if input.is_some() {
            println!();
        }
        print_latent(l, &args);
    }
    Ok(())
}

fn input_part(global: &Global, args: &SensitivityArgs, progress: Progress) -> Result<InputRun> {
    let checkpoint = super::CheckpointArgs {
        run: args.run.clone(),
        epoch: args.epoch,
        model: args.model.clone(),
        dataset: args.dataset.clone(),
        model_seed: args.model_seed,
        split: args.split.clone(),
    };
    let loaded = checkpoint.load(&global.data_dir)?;
    let (model, dataset, epoch) = (loaded.model, loaded.dataset, loaded.epoch);
    if let Some(names) = &args.layers {
        for name in names {
            model.layer_index(name)?;
        }
    }
    let split = dataset.split(&args.split)?;
    let config = InputSensitivityConfig {
        probes: args.probes,
        exact: args.exact,
        layers: args.layers.clone(),
        defenses: args.defenses.clone(),
        train: true,
        chunk_size: args.chunk,
        bootstrap: args.bootstrap,
        seed: args.seed,
    };
    let report = input_sensitivity_on_split(&model, split, args.samples, &config, progress)?;
    // The shared update of one victim (batch size 1), so the noise is DP's sigma*C plus any `noise`.
    let fisher = fisher_of_release(&report, &args.defenses, 1, args.bootstrap, args.seed)?;
    Ok(InputRun {
        run: loaded.source.clone(),
        epoch,
        arch: model.spec.name(),
        dataset: dataset.name.clone(),
        report,
        fisher,
    })
}

/// `value [lo, hi]` with 4 significant digits.
fn with_ci(e: &Estimate) -> String {
    format!("{:.4e} [{:.3e}, {:.3e}]", e.value, e.ci[0], e.ci[1])
}

/// Ranks (1 = largest) of a column; NaN last.
fn ranks(values: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| {
        let key = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
        key(values[b]).total_cmp(&key(values[a]))
    });
    let mut out = vec![0; values.len()];
    for (r, i) in order.into_iter().enumerate() {
        out[i] = r + 1;
    }
    out
}

fn print_input(i: &InputRun, args: &SensitivityArgs) {
    let r = &i.report;
    let estimator = if r.estimator == "exact" {
        "exact Jacobian".to_string()
    } else {
        format!("{} Rademacher probes each (Hutchinson)", r.probes)
    };
    println!(
        "input sensitivity of {} (epoch {}) on {} {} split: {} samples, {estimator}, seed {}",
        i.arch, i.epoch, i.dataset, args.split, r.samples, r.seed
    );
    if r.dropout_active {
        println!("dropout active while computing the gradients (masks drawn once per chunk, seeded, held fixed)");
    }
    for d in &r.defenses.applied {
        println!("defence {} applied: {}", d.defense, d.note);
    }
    for d in &r.defenses.not_applied {
        println!("defence {} NOT applied: {}", d.defense, d.note);
    }
    let relative: Vec<f64> = r.layers.iter().map(|l| l.relative.value).collect();
    let rank = ranks(&relative);
    println!(
        "{:<22} {:>9} {:>4} {:>36} {:>36} {:>10} {:>10} {:>10}",
        "layer", "params", "rank", "||J||_F / ||g|| [95% CI]", "||J||_F [95% CI]", "probe se", "/sqrt(P)", "||g||"
    );
    for (l, rank) in r.layers.iter().zip(rank) {
        let se = l.jacobian_norm.estimator_se.map(|s| format!("{s:.2e}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<22} {:>9} {:>4} {:>36} {:>36} {:>10} {:>10.3e} {:>10.3e}",
            l.name,
            l.num_params,
            rank,
            with_ci(&l.relative),
            with_ci(&l.jacobian_norm),
            se,
            l.per_parameter.value,
            l.gradient_norm.value
        );
    }
    let zero: usize = r.layers.iter().map(|l| l.zero_gradient_samples).sum();
    if zero > 0 {
        println!("({zero} layer-samples had an exactly zero gradient and are left out of the relative column)");
    }
    println!("rank: by relative sensitivity, 1 = the layer whose gradient moves most with the input");
    if let Some((noise, layers)) = &i.fisher {
        println!(
            "\nFisher bound on reconstruction (dFIL = ||J||_F^2 / (s^2 d), noise s = {:.4} per coordinate; mean over \
             samples [95% CI]; an unbiased reconstruction has MSE per value >= 1/dFIL; see docs/bounds.md)",
            noise.std
        );
        println!("{:<22} {:>36} {:>36} {:>24}", "layer", "dFIL", "MSE bound", "PSNR bound (dB)");
        for f in layers {
            println!(
                "{:<22} {:>36} {:>36} {:>24}",
                f.layer,
                with_ci(&f.dfil),
                with_ci(&f.mse_bound),
                format!("{:.1} [{:.1}, {:.1}]", f.psnr_bound.value, f.psnr_bound.ci[0], f.psnr_bound.ci[1])
            );
        }
        println!("per-sample values: --json (input.fisher.layers[].per_victim)");
    }
}

fn print_latent(l: &LatentReport, args: &SensitivityArgs) {
    let store = args.store.as_ref().map(|s| s.display().to_string()).unwrap_or_default();
    let sizes = l.layers.first().map(|x| format!(", groups {} / {}", x.group_sizes[0], x.group_sizes[1]));
    println!(
        "latent sensitivity to attribute '{}' ({store}: {} updates{}), top-{} principal subspaces, {} bootstrap \
         resamples, seed {}",
        l.attribute,
        l.updates,
        sizes.unwrap_or_default(),
        l.k,
        l.bootstrap,
        l.seed
    );
    let ratio: Vec<f64> = l.layers.iter().map(|x| x.spread_ratio.value).collect();
    let rank = ranks(&ratio);
    println!(
        "{:<22} {:>8} {:>8} {:>4} {:>26} {:>8} {:>36} {:>10}",
        "layer", "features", "dim", "rank", "subspace dist. [95% CI]", "null", "spread ratio [95% CI]", "null"
    );
    for (x, rank) in l.layers.iter().zip(rank) {
        let d = &x.subspace_distance;
        println!(
            "{:<22} {:>8} {:>8} {:>4} {:>26} {:>8.3} {:>36} {:>10.3e}",
            x.name,
            x.features,
            x.dim,
            rank,
            format!("{:.3} [{:.3}, {:.3}]", d.value, d.ci[0], d.ci[1]),
            x.subspace_distance_null,
            with_ci(&x.spread_ratio),
            x.spread_ratio_null
        );
    }
    println!(
        "rank: by spread ratio, 1 = the layer whose two groups' gradients are furthest apart; read each measure \
         against its null (distance: randomly relabelled groups; ratio: what equal group means would give)"
    );
}
