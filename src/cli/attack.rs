//! `gradleak attack`: reference gradient-inversion attacks (DLG, iDLG, Inverting Gradients) on shared updates of a
//! checkpoint, restricted to any set of layers, after any defences.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use gradleak::defenses::Defense;
use gradleak::measure::attacks::{self, AttackConfig, LabelMode, Method, ShareConfig};
use gradleak::progress::Progress;

use super::{keywords, CheckpointArgs, Global};

#[derive(Debug, clap::Args)]
pub struct AttackArgs {
    /// Attack: dlg (Zhu et al. 2019), idlg (Zhao et al. 2020), ig (Inverting Gradients, Geiping et al. 2020).
    #[arg(long, value_parser = keywords::<Method>(Method::KEYWORDS))]
    pub method: Method,
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Number of shared updates to attack (distinct victims, drawn as `gradleak grads` draws them).
    #[arg(long, default_value_t = 4)]
    pub samples: i64,
    /// Inputs behind each shared update; all of them are reconstructed.
    #[arg(long, default_value_t = 1)]
    pub batch_size: i64,
    /// Iterations per restart (default: 300 for dlg and idlg, 4800 for ig).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Independent starts; the best gradient match is kept.
    #[arg(long, default_value_t = 1)]
    pub restarts: usize,
    /// Layers to match, comma-separated (default: every shared layer).
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<String>,
    /// A weight per layer of --layers, comma-separated (default: all 1).
    #[arg(long, value_delimiter = ',')]
    pub layer_weights: Vec<f64>,
    /// Where the labels come from (auto: the method's own choice).
    #[arg(long, value_parser = keywords::<LabelMode>(LabelMode::KEYWORDS), default_value = "auto")]
    pub labels: LabelMode,
    /// Step size (default: 1 for dlg and idlg (L-BFGS), 0.1 for ig (Adam)).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Total-variation weight of ig (default 1e-4).
    #[arg(long)]
    pub tv: Option<f64>,
    /// A defence applied before sharing, repeatable: dp:clip=C,sigma=S | dropout:P | prune:F | quantize:B |
    /// noise:STD | sign | protect:L1+L2
    #[arg(long = "defense", alias = "defence")]
    pub defenses: Vec<Defense>,
    /// Replace the checkpoint's weights by uniform(-BOUND, BOUND) values (seeded), the DLG paper's
    /// initialisation (0.5).
    #[arg(long, value_name = "BOUND")]
    pub init_uniform: Option<f64>,
    /// Attack in single precision (default: double, as gradleak's numerical checks).
    #[arg(long)]
    pub f32: bool,
    /// Seed of every random choice: victims, defence noise, dummy initialisation, --init-uniform.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Folder for attack.json, reconstructions.png and reconstructions.safetensors.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The flag of each library parameter this command sets.
pub const FLAGS: &[(&str, &str)] = &[
    ("iterations", "--iterations"),
    ("restarts", "--restarts"),
    ("lr", "--lr"),
    ("tv_weight", "--tv"),
    ("layers", "--layers"),
    ("layer_weights", "--layer-weights"),
    ("labels", "--labels"),
    ("samples", "--samples"),
    ("batch_size", "--batch-size"),
    ("num_updates", "--samples"),
];

pub fn run(global: &Global, args: AttackArgs) -> Result<()> {
    if global.threads == 0 {
        // An attack is a long chain of small operations: intra-op threads mostly add synchronisation (and are many
        // times slower when another process keeps a core busy). --threads N overrides this for large models.
        tch::set_num_threads(1);
    }
    let loaded = args.checkpoint.load(&global.data_dir)?;
    let (mut model, dataset, epoch) = (loaded.model, loaded.dataset, loaded.epoch);
    if !args.f32 {
        model.to_double();
    }
    if let Some(bound) = args.init_uniform {
        attacks::reinit_uniform(&model, bound, args.seed).context("--init-uniform")?;
    }
    let mut config = AttackConfig::new(args.method);
    if let Some(iterations) = args.iterations {
        config.iterations = iterations;
    }
    if let Some(lr) = args.lr {
        config.lr = lr;
    }
    if let Some(tv) = args.tv {
        if args.method != Method::Ig {
            bail!("--tv is a setting of --method ig (Inverting Gradients), not of {}", args.method);
        }
        config.tv_weight = tv;
    }
    config.restarts = args.restarts;
    config.labels = args.labels;
    config.layers = args.layers.clone();
    config.layer_weights = args.layer_weights.clone();
    config.seed = args.seed;
    config.validate()?;
    let split = dataset.split(&args.checkpoint.split)?;
    let share = ShareConfig { samples: args.samples, batch_size: args.batch_size, defenses: args.defenses.clone() };
    let report = attacks::run_attacks(&model, split, &share, &config, Progress::new(global.quiet || args.json))?;
    if let Some(dir) = &args.out {
        attacks::write_outputs(&report, dir)?;
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    let layers: Vec<String> = report
        .matched_layers
        .iter()
        .map(|l| if l.weight == 1.0 { l.name.clone() } else { format!("{} (x{})", l.name, l.weight) })
        .collect();
    println!(
        "{} on {} (epoch {epoch}) / {} {} split: {} update{} of batch size {}, defence: {}",
        report.method,
        model.spec.arch,
        dataset.name,
        args.checkpoint.split,
        args.samples,
        if args.samples == 1 { "" } else { "s" },
        args.batch_size,
        report.defense
    );
    println!(
        "matched layers: {}; labels: {:?}; {} iterations x {} restart{}",
        layers.join(", "),
        report.label_source,
        config.iterations,
        config.restarts,
        if config.restarts == 1 { "" } else { "s" }
    );
    println!(
        "{:>6} {:>6} {:>6} {:>6} {:>10} {:>8} {:>7} {:>12}",
        "update", "index", "label", "found", "MSE", "PSNR", "SSIM", "grad dist"
    );
    for u in &report.updates {
        for s in &u.images {
            let ssim = s.ssim.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
            println!(
                "{:>6} {:>6} {:>6} {:>6} {:>10.3e} {:>8.2} {:>7} {:>12.3e}",
                u.update + 1,
                u.indices[s.original],
                s.label,
                s.recovered_label,
                s.mse,
                s.psnr,
                ssim,
                u.gradient_distance
            );
        }
    }
    let m = &report.mean;
    let ssim = m.ssim.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into());
    println!("mean: MSE {:.3e}, PSNR {:.2} dB, SSIM {ssim}, label accuracy {:.3}", m.mse, m.psnr, m.label_accuracy);
    println!("{:.1} s, {:.1} iterations/s", report.seconds, report.iterations_per_second);
    if let Some(dir) = &args.out {
        println!("written to {}", dir.display());
    }
    Ok(())
}
