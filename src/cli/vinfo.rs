//! `gradleak vinfo`: usable (V-)information of a feature matrix about a target, from array files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Tensor;

use gradleak::arrays::{read_array, write_npy};
use gradleak::audit::{add_best, CellKeys, Record, BEST};
use gradleak::gradients::behind::LoadedModel;
use gradleak::gradients::store::GradientStore;
use gradleak::measure::families::{Behind, Family, Setup, SketchOnlyLayer};
use gradleak::measure::groups::layer_groups;
use gradleak::measure::layerwise::{best_index, layerwise};
use gradleak::measure::targets::{resolve, target_names};
use gradleak::measure::vinfo::{EstimateOptions, Protocol, Target, VInfoEstimate};
use gradleak::progress::Progress;

use super::Global;

#[derive(Debug, clap::Args)]
pub struct VinfoArgs {
    /// Features G, (N, D): .npy, .csv or .safetensors (file.safetensors:tensor names a tensor).
    #[arg(long, required_unless_present = "store", conflicts_with = "store")]
    pub features: Option<String>,
    /// Target Y: (N,) class codes or (N, K) values, same formats.
    #[arg(long, required_unless_present = "store", conflicts_with = "store")]
    pub target: Option<String>,
    /// categorical (classes) or continuous (real values).
    #[arg(long, required_unless_present = "store", conflicts_with = "store")]
    pub kind: Option<String>,
    /// A gradient store (from `gradleak grads`): measure every layer, the groups and all layers together, for
    /// every target.
    #[arg(long)]
    pub store: Option<PathBuf>,
    /// With --store: targets, comma-separated: input, label, attribute, attribute:NAME, attributes.
    #[arg(long, value_delimiter = ',', default_value = "input,label,attributes")]
    pub targets: Vec<String>,
    /// With --store: single layers to measure, comma-separated (default: every stored layer).
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<String>,
    /// With --store: a group of layers measured together, `a+b`; repeatable.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// With --store: do not measure all layers together.
    #[arg(long)]
    pub no_all: bool,
    /// Predictive families, comma-separated: linear, mlp, mlp:<hidden sizes, e.g. 256,128>, all (linear and mlp);
    /// with --store also the model-backed ones, which load the model behind the store: analytic, ig, dlg, idlg
    /// (`ig:ITERATIONS`), decoder (`decoder:AUX_UPDATES`). With --features a model-backed family calibrates the
    /// features as a reconstruction. With --store and several families, a `best` row (the largest estimate, its
    /// family as source) follows each layer and target.
    #[arg(long, default_value = "linear")]
    pub family: String,
    /// With --store and a model-backed family: the training run behind the store, when it is no longer where the
    /// store's manifest says (the checkpoint's epoch is the manifest's).
    #[arg(long, requires = "store")]
    pub run: Option<PathBuf>,
    /// Seed of every random choice (split, MLP initialisation and minibatches, bootstrap).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// crossfit (every sample scored once) or split (one train/validation/test split).
    #[arg(long, default_value = "crossfit")]
    pub protocol: String,
    /// Folds of cross-fitting.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Fraction of the fitting samples that validate (hyperparameters, early stopping, residual variances).
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    /// Fraction of all samples scored under --protocol split.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// Bootstrap resamples for the 95% interval.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Repetitions of the protocol with independent partitions; their spread (the fit's variability) is folded
    /// into the interval.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Continuous targets: smallest variance of a dimension, as a fraction of its variance.
    #[arg(long, default_value_t = 1e-4)]
    pub variance_floor: f64,
    /// MLP: most training epochs (early stopping usually ends sooner).
    #[arg(long, default_value_t = 200)]
    pub epochs: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Write the PVI (bits) of every sample to this .npy file: (N,), or (N, F) for F families, in the order
    /// printed; NaN for samples not scored (under --protocol split). With --store: (N, R), a column per row of
    /// the table (layer, target, family; `best` rows left out), in the order of the --json rows.
    #[arg(long)]
    pub pvi_out: Option<PathBuf>,
    /// Write the partition of every fit to this .npy file: int64 (F, N), F = repeats x folds in the order fitted,
    /// the role of each sample in fit k: 0 train, 1 validation, 2 test (scored). With --store every layer, target
    /// and family is fitted on these same partitions.
    #[arg(long)]
    pub split_out: Option<PathBuf>,
}

/// The flag of each library parameter this command sets.
pub const FLAGS: &[(&str, &str)] = &[
    ("layers", "--layers"),
    ("groups", "--group"),
    ("bootstrap", "--bootstrap"),
    ("repeats", "--repeats"),
    ("folds", "--folds"),
    ("val_fraction", "--val-fraction"),
    ("test_fraction", "--test-fraction"),
    ("epochs", "--epochs"),
    ("variance_floor", "--variance-floor"),
];

/// `file.safetensors:tensor` -> (file, Some(tensor)); anything else -> (path, None).
fn split_tensor_name(spec: &str) -> (PathBuf, Option<&str>) {
    if let Some((file, key)) = spec.rsplit_once(':') {
        if file.to_ascii_lowercase().ends_with(".safetensors") && !key.is_empty() {
            return (PathBuf::from(file), Some(key));
        }
    }
    (PathBuf::from(spec), None)
}

fn read(flag: &str, spec: &str) -> Result<Tensor> {
    let (path, key) = split_tensor_name(spec);
    read_array(&path, key).with_context(|| format!("--{flag}"))
}

pub fn run(global: &Global, args: VinfoArgs) -> Result<()> {
    if args.epochs == 0 {
        bail!("--epochs must be at least 1, got 0");
    }
    gradleak::limits::check_count("epochs", args.epochs, gradleak::limits::MAX_EPOCHS)?;
    let families: Vec<Family> = Family::parse_list(&args.family)
        .context("--family")?
        .into_iter()
        .map(|f| f.with_max_epochs(args.epochs))
        .collect();
    let protocol = match args.protocol.as_str() {
        "crossfit" => Protocol::CrossFit { folds: args.folds, val_fraction: args.val_fraction },
        "split" => Protocol::Split { val_fraction: args.val_fraction, test_fraction: args.test_fraction },
        p => bail!("--protocol: unknown protocol '{p}'; expected crossfit or split"),
    };
    let opts = EstimateOptions {
        seed: args.seed,
        protocol,
        bootstrap: args.bootstrap,
        repeats: args.repeats,
        variance_floor: args.variance_floor,
    };
    opts.validate()?;
    if let Some(store) = &args.store {
        return run_store(global, &args, store, &families, &opts);
    }
    let (features, target, kind) = (
        args.features.as_deref().unwrap_or_default(),
        args.target.as_deref().unwrap_or_default(),
        args.kind.as_deref().unwrap_or_default(),
    );
    let features = read("features", features)?;
    let y = read("target", target)?;
    let target = match kind {
        "categorical" => Target::Categorical(y),
        "continuous" => Target::Continuous(y),
        k => bail!("--kind: unknown kind '{k}'; expected categorical or continuous"),
    };
    let mut estimates = Vec::new();
    for family in &families {
        estimates.push(family.estimate(&features, &target, &opts)?);
    }
    if let Some(path) = &args.pvi_out {
        write_pvi(path, &estimates)?;
    }
    if let Some(path) = &args.split_out {
        write_split(path, &opts, features.size()[0] as usize)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json_report(&estimates))?);
    } else {
        print_table(&estimates);
    }
    Ok(())
}

fn write_pvi(path: &Path, estimates: &[VInfoEstimate]) -> Result<()> {
    let n = estimates[0].n_samples;
    let columns: Vec<Tensor> = estimates.iter().map(|e| Tensor::from_slice(&e.pvi_by_sample(n)).unsqueeze(1)).collect();
    let all = Tensor::cat(&columns, 1);
    let out = if estimates.len() == 1 { all.squeeze_dim(1) } else { all };
    write_npy(path, &out).context("--pvi-out")
}

/// Roles of the samples in every fit (see `--split-out`): (F, N) int64, 0 train, 1 validation, 2 test.
fn write_split(path: &Path, opts: &EstimateOptions, n: usize) -> Result<()> {
    let fits = opts.fits(n)?;
    let mut roles = vec![-1i64; fits.len() * n];
    for (k, fit) in fits.iter().enumerate() {
        for (role, part) in [&fit.train, &fit.val, &fit.test].into_iter().enumerate() {
            for &i in part {
                roles[k * n + i as usize] = role as i64;
            }
        }
    }
    let roles = Tensor::from_slice(&roles).view([fits.len() as i64, n as i64]);
    write_npy(path, &roles).context("--split-out")
}

/// One family: its estimate. Several: the largest estimate at the top level (`best_family`) and every family under
/// `families`.
fn json_report(estimates: &[VInfoEstimate]) -> serde_json::Value {
    if estimates.len() == 1 {
        return serde_json::to_value(&estimates[0]).unwrap_or_default();
    }
    let best = &estimates[best_index(estimates.iter().map(|e| e.bits)).expect("at least one family")];
    let families: serde_json::Map<String, serde_json::Value> =
        estimates.iter().map(|e| (e.family.clone(), serde_json::to_value(e).unwrap_or_default())).collect();
    serde_json::json!({
        "bits": best.bits,
        "ci95": best.ci95,
        "best_family": best.family,
        "target": best.target,
        "n_samples": best.n_samples,
        "n_train": best.n_train,
        "n_val": best.n_val,
        "n_test": best.n_test,
        "n_features": best.n_features,
        "target_dims": best.target_dims,
        "seed": best.seed,
        "protocol": best.protocol,
        "families": families,
    })
}

fn print_table(estimates: &[VInfoEstimate]) {
    let e0 = &estimates[0];
    let what = if e0.target == "continuous" {
        format!("continuous target ({} dimensions)", e0.target_dims)
    } else {
        format!("categorical target ({} classes)", e0.target_dims)
    };
    println!(
        "V-information of {what} from {} features: {} samples, {}; {} train / {} validation per fit, {} scored; seed {}",
        e0.n_features, e0.n_samples, e0.protocol, e0.n_train, e0.n_val, e0.n_test, e0.seed
    );
    let continuous = e0.target == "continuous";
    let extra = if continuous {
        format!("{:>10} {:>8}", "bits/dim", "R^2")
    } else {
        format!("{:>9} {:>9}", "accuracy", "null acc")
    };
    println!(
        "{:<14} {:>10} {:>23} {:>11} {:>11} {extra} {:>8}",
        "family", "bits", "95% CI", "H(Y|∅)", "H(Y|G)", "seconds"
    );
    for e in estimates {
        let ci = format!("[{:.4}, {:.4}]", e.ci95[0], e.ci95[1]);
        let extra = if continuous {
            format!("{:>10.5} {:>8.4}", e.bits_per_dim.unwrap_or(f64::NAN), e.r2.unwrap_or(f64::NAN))
        } else {
            format!("{:>9.4} {:>9.4}", e.accuracy.unwrap_or(f64::NAN), e.null_accuracy.unwrap_or(f64::NAN))
        };
        println!(
            "{:<14} {:>10.4} {:>23} {:>11.4} {:>11.4} {extra} {:>8.2}",
            e.family, e.bits, ci, e.h_null_bits, e.h_cond_bits, e.seconds
        );
    }
    println!("bits: held-out H(Y|∅) - H(Y|G) per sample (mean pointwise V-information); negative values are kept.");
}

/// `--store`: the layer-wise table of a gradient store; with several families a `best` row per layer and target
/// (always in `--json`).
fn run_store(global: &Global, args: &VinfoArgs, dir: &Path, families: &[Family], opts: &EstimateOptions) -> Result<()> {
    let store = GradientStore::open(dir)?;
    let (updates, manifest) = (&store.updates, &store.manifest);
    let names =
        target_names(&args.targets, &manifest.attributes).with_context(|| format!("--targets ({})", dir.display()))?;
    let targets = resolve(&names, &manifest.attributes, updates).context("--targets")?;
    let groups: Vec<Vec<String>> =
        args.groups.iter().map(|g| g.split('+').map(|s| s.trim().to_string()).collect()).collect();
    let groups = layer_groups(updates, &args.layers, &groups, !args.no_all)?;
    let progress = Progress::new(global.quiet || args.json);
    let loaded = match families.iter().find(|f| !f.reads_gradients()) {
        Some(family) => Some(
            LoadedModel::behind_store(&store, args.run.as_deref(), &global.data_dir)
                .context("pass --run DIR if the run moved")
                .with_context(|| format!("the {family} family needs the model behind {}", dir.display()))?,
        ),
        None => None,
    };
    let split = match &loaded {
        Some(l) => Some(l.dataset.split(&manifest.split)?),
        None => None,
    };
    let behind = loaded.as_ref().zip(split).map(|(l, split)| Behind {
        model: &l.model,
        split,
        update_config: &manifest.config,
        attributes: &manifest.attributes,
    });
    let setup = Setup { updates, behind, targets: &names, seed: opts.seed, progress };
    let measured = layerwise(&setup, &groups, &targets, families, opts).map_err(with_full_gradient_hint)?;
    let notes = measured.notes;
    if measured.rows.is_empty() {
        bail!("no family measured anything: {}", notes.join("; "));
    }
    if let Some(path) = &args.pvi_out {
        let estimates: Vec<VInfoEstimate> = measured.rows.iter().map(|r| r.estimate.clone()).collect();
        write_pvi(path, &estimates)?;
    }
    if let Some(path) = &args.split_out {
        write_split(path, opts, updates.num_updates() as usize)?;
    }
    // The audit's records: each layer and target's families in order, then `best`, a copy of the largest estimate
    // (the first family of equal ones) with its family as `source`.
    let keys = CellKeys::of_store(manifest);
    let victims = updates.num_updates() as usize;
    let records = add_best(measured.rows.iter().map(|row| Record::measured(&keys, row, victims)).collect());
    if args.json {
        let json = serde_json::json!({
            "store": dir,
            "model": manifest.model.arch,
            "dataset": manifest.dataset,
            "defense": manifest.defense,
            "num_updates": manifest.num_updates,
            "notes": notes,
            "rows": records,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    println!(
        "{} updates of {} on {} (defence: {}), {}",
        manifest.num_updates,
        manifest.model.arch,
        manifest.dataset,
        manifest.defense,
        measured.rows[0].estimate.protocol
    );
    // With one family `best` would repeat every row: the text table shows it with several only.
    let several = families.len() > 1;
    println!(
        "{:<22} {:>10} {:>8} {:<22} {:<10} {:>10} {:>21} {:>9}{}",
        "layer",
        "parameters",
        "features",
        "target",
        "family",
        "bits",
        "95% CI",
        "R^2/acc",
        if several { "  source" } else { "" }
    );
    for r in records.iter().filter(|r| several || r.family != BEST) {
        let extra = r.r2.or(r.accuracy).map(|v| format!("{v:.3}")).unwrap_or_default();
        println!(
            "{:<22} {:>10} {:>8} {:<22} {:<10} {:>10.3} {:>21} {:>9}{}",
            r.layer,
            r.num_params,
            r.features,
            r.target,
            r.family,
            r.bits,
            format!("[{:.2}, {:.2}]", r.ci95[0], r.ci95[1]),
            extra,
            r.source.as_deref().map(|f| format!("  {f}")).unwrap_or_default()
        );
    }
    for note in &notes {
        println!("note: {note}");
    }
    Ok(())
}

/// Says how to keep a layer's full gradient when a model-backed family met only its sketch.
fn with_full_gradient_hint(e: anyhow::Error) -> anyhow::Error {
    match e.chain().find_map(|cause| cause.downcast_ref::<SketchOnlyLayer>()) {
        Some(only) => anyhow::anyhow!(
            "{e:#} (write the store again with `gradleak grads --full-max-params {}` or more to keep it)",
            only.num_params
        ),
        None => e,
    }
}
