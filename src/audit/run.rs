//! Running an audit: training (cached), then each cell of the grid, then the reports.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::config::{AuditConfig, Cell};
use super::{AttackRecord, CellKeys, CellResult, Localisation, LocalisationStep, Record};
use crate::data::{self, Dataset};
use crate::gradients::updates::{compute_updates, SharedUpdates, UpdateConfig};
use crate::measure::layerwise::{group_features, layer_groups, layerwise, resolve_targets, NamedTarget};
use crate::measure::vinfo::{self, EstimateOptions, Family, Protocol};
use crate::models::{Arch, DropoutSpec, Model, ModelSpec};
use crate::progress::Progress;
use crate::train::{self, SavedRun, TrainConfig};

/// How to run (not what to measure: that is the configuration, and it alone decides the cell keys).
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub out: PathBuf,
    pub data_dir: PathBuf,
    /// Allow an out folder that holds another configuration's results (finished cells with the same key are kept).
    pub resume: bool,
    /// Run only cells whose index i satisfies i % count == index.
    pub shard: Option<(usize, usize)>,
    pub progress: Progress,
    /// Print one line per finished cell.
    pub verbose: bool,
}

/// What `audit.json` in the out folder says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditManifest {
    pub format: String,
    pub gradleak_version: String,
    pub config_hash: String,
    pub config: AuditConfig,
    pub shard: Option<(usize, usize)>,
    /// Keys of every cell of the grid, in grid order.
    pub cells: Vec<String>,
}

/// What a finished run returns.
#[derive(Debug, Clone, Serialize)]
pub struct AuditSummary {
    pub out: PathBuf,
    pub cells_total: usize,
    pub cells_in_shard: usize,
    pub cells_computed: usize,
    pub cells_reused: usize,
    pub seconds: f64,
}

pub const MANIFEST: &str = "audit.json";
pub const FORMAT: &str = "gradleak-audit/1";

fn hash_json<T: Serialize>(value: &T) -> String {
    let text = serde_json::to_string(value).expect("configurations serialise");
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The part of the configuration every cell depends on (everything but the grid).
fn shared_part(config: &AuditConfig) -> AuditConfig {
    AuditConfig { grid: Default::default(), ..config.clone() }
}

/// The key of a cell: a hash of the shared configuration and the cell.
pub fn cell_key(config: &AuditConfig, cell: &Cell) -> String {
    hash_json(&(shared_part(config), cell, env!("CARGO_PKG_VERSION")))
}

/// Runs (or resumes) an audit into `opts.out`, then writes the reports from every finished cell there.
pub fn run_audit(config: &AuditConfig, opts: &AuditOptions) -> Result<AuditSummary> {
    config.validate()?;
    let started = Instant::now();
    let cells = config.cells()?;
    let keys: Vec<String> = cells.iter().map(|c| cell_key(config, c)).collect();
    let manifest = AuditManifest {
        format: FORMAT.into(),
        gradleak_version: env!("CARGO_PKG_VERSION").into(),
        config_hash: hash_json(config),
        config: config.clone(),
        shard: opts.shard,
        cells: keys.clone(),
    };
    prepare_out(&opts.out, &manifest, opts.resume)?;

    let dataset = data::load(&config.dataset, &opts.data_dir)?;
    let max_epoch = cells.iter().map(|c| c.epoch).max().unwrap_or(0);
    if config.training.run.is_none() && max_epoch > config.training.epochs {
        bail!("grid.epoch asks for epoch {max_epoch}, but training.epochs is {}", config.training.epochs);
    }

    let selected: Vec<usize> =
        (0..cells.len()).filter(|i| opts.shard.map(|(index, count)| i % count == index).unwrap_or(true)).collect();
    let (mut computed, mut reused) = (0, 0);
    for (n, &i) in selected.iter().enumerate() {
        let path = opts.out.join("cells").join(format!("{}.json", keys[i]));
        if read_cell(&path).is_ok() {
            reused += 1;
            continue;
        }
        let cell_started = Instant::now();
        let saved = trained_run(config, &dataset, cells[i].dropout, opts)?;
        let result = run_cell(config, &dataset, &saved, &cells[i], &keys[i], opts)
            .with_context(|| format!("cell {} ({})", keys[i], describe_cell(&cells[i])))?;
        crate::io::write_json(&path, &result)?;
        computed += 1;
        if opts.verbose {
            eprintln!(
                "cell {}/{} {} ({}) done in {:.1} s",
                n + 1,
                selected.len(),
                keys[i],
                describe_cell(&cells[i]),
                cell_started.elapsed().as_secs_f64()
            );
        }
    }
    let results = collect_cells(&opts.out, &keys)?;
    crate::report::write_reports(&opts.out, &manifest, &results)?;
    Ok(AuditSummary {
        out: opts.out.clone(),
        cells_total: cells.len(),
        cells_in_shard: selected.len(),
        cells_computed: computed,
        cells_reused: reused,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A short description of a cell for progress lines and errors.
pub fn describe_cell(cell: &Cell) -> String {
    format!("batch {}, epoch {}, defence {}", cell.batch_size, cell.epoch, cell.defense_label())
}

/// Creates the out folder, or checks that it holds this audit (or `resume` is set), and writes `audit.json`.
fn prepare_out(out: &Path, manifest: &AuditManifest, resume: bool) -> Result<()> {
    let path = out.join(MANIFEST);
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let previous: AuditManifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not an audit manifest; choose another --out", path.display()))?;
        if previous.config_hash != manifest.config_hash && !resume {
            bail!(
                "{}: holds the results of another audit configuration; choose another --out, or pass --resume to \
                 keep its finished cells that this configuration shares",
                out.display()
            );
        }
    } else if out.is_dir() && std::fs::read_dir(out)?.next().is_some() && !resume {
        bail!("{}: is not empty and holds no audit; choose another --out", out.display());
    }
    std::fs::create_dir_all(out.join("cells")).with_context(|| format!("{}: cannot create", out.display()))?;
    crate::io::write_json(&path, manifest)
}

fn read_cell(path: &Path) -> Result<CellResult> {
    let text = std::fs::read_to_string(path)?;
    Ok(serde_json::from_str(&text)?)
}

/// The finished cells among `keys`, in grid order.
pub fn collect_cells(out: &Path, keys: &[String]) -> Result<Vec<CellResult>> {
    let mut results = Vec::new();
    for key in keys {
        let path = out.join("cells").join(format!("{key}.json"));
        if path.exists() {
            results.push(read_cell(&path).with_context(|| format!("{}: unreadable cell result", path.display()))?);
        }
    }
    Ok(results)
}

/// The training run for a dropout rate: the configured run folder, or one trained (once) into `runs/<key>`.
fn trained_run(config: &AuditConfig, dataset: &Dataset, dropout: f64, opts: &AuditOptions) -> Result<SavedRun> {
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
        return Ok(saved);
    }
    let arch: Arch = config.model.parse()?;
    let mut spec = ModelSpec::new(arch, dataset.input_shape, dataset.num_classes());
    spec.width = config.width;
    spec.hidden = config.hidden;
    spec.dropout = DropoutSpec { rate: dropout, at: Vec::new() };
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
    let key = hash_json(&(&dataset.name, &spec, &train_config));
    let dir = opts.out.join("runs").join(&key);
    if let Ok(saved) = SavedRun::open(&dir) {
        if saved.run.epochs.len() == t.epochs + 1 {
            return Ok(saved);
        }
    }
    // Absent or interrupted: train from the start.
    let _ = std::fs::remove_dir_all(&dir);
    let mut model = train::init_model(&spec, config.seed)?;
    if opts.verbose {
        eprintln!("training {arch} on {} (dropout {dropout}) for {} epochs", dataset.name, t.epochs);
    }
    train::train(&mut model, dataset, &train_config, Some(&dir), opts.progress)?;
    SavedRun::open(&dir)
}

fn estimate_options(config: &AuditConfig) -> EstimateOptions {
    let m = &config.measure;
    let protocol = if m.protocol == "crossfit" {
        Protocol::CrossFit { folds: m.folds, val_fraction: 0.2 }
    } else {
        Protocol::Split { val_fraction: 0.2, test_fraction: 0.2 }
    };
    // The same victims are split the same way for every layer of a cell: differences between layers are not split noise.
    EstimateOptions { seed: config.seed, protocol, bootstrap: m.bootstrap, ..Default::default() }
}

/// Measures one cell.
pub fn run_cell(
    config: &AuditConfig,
    dataset: &Dataset,
    saved: &SavedRun,
    cell: &Cell,
    key: &str,
    opts: &AuditOptions,
) -> Result<CellResult> {
    let started = Instant::now();
    let mut model = saved.model_at(cell.epoch)?;
    if (model.spec.dropout.rate - cell.dropout).abs() > 0.0 {
        // An external run trained without this dropout: the rate acts while the update is computed.
        model = model.with_dropout(cell.dropout)?;
    }
    let split = if config.measure.split == "train" { &dataset.train } else { &dataset.test };
    let update_config = UpdateConfig {
        num_updates: config.measure.updates,
        batch_size: cell.batch_size,
        seed: config.seed,
        defenses: cell.update_defenses(),
        layers: None,
        sketch_kind: crate::gradients::sketch::SketchKind::Sparse,
        sketch_dim: config.measure.sketch_dim,
        // Large layers are measured on their sketch only: the full gradients would not be read.
        full_max_params: config.measure.sketch_dim,
    };
    let dp = crate::gradients::dp_record(&update_config, dataset.train.len(), 1e-5, None)?;
    let updates = compute_updates(&model, split, &update_config, opts.progress)?;
    let test_accuracy =
        saved.run.epochs.iter().find(|e| e.epoch == cell.epoch).map(|e| e.test_accuracy).unwrap_or(f64::NAN);
    let keys = CellKeys {
        cell: key.to_string(),
        batch_size: cell.batch_size,
        epoch: cell.epoch,
        dropout: cell.dropout,
        defense: cell.defense_label(),
        epsilon: dp.and_then(|d| d.epsilon),
        test_accuracy,
    };

    let targets = resolve_targets(&config.measure.targets, &dataset.attributes, &updates).context("measure.targets")?;
    let groups = layer_groups(&updates, &config.measure.layers, &config.measure.groups, config.measure.all_layers)
        .context("measure.layers")?;
    let families: Vec<Family> = config.measure.families.iter().map(|f| f.parse()).collect::<Result<_>>()?;
    let opts_v = estimate_options(config);
    let records = layerwise(&updates, &groups, &targets, &families, &opts_v, opts.progress)?
        .into_iter()
        .map(|row| Record {
            keys: keys.clone(),
            layer: row.layer,
            num_params: row.num_params,
            features: row.features,
            feature_dim: row.feature_dim,
            target: row.target,
            family: row.estimate.family.clone(),
            bits: row.estimate.bits,
            ci95: row.estimate.ci95,
            bits_per_dim: row.estimate.bits_per_dim,
            r2: row.estimate.r2,
            accuracy: row.estimate.accuracy,
            n_train: row.estimate.n_train,
            n_test: row.estimate.n_test,
        })
        .collect::<Vec<_>>();

    let localisation = localise(config, &updates, &targets, &families[0], &records, &keys, &opts_v)?;
    let (sensitivity, agreement, notes) = super::sensitivity::measure(
        config,
        dataset,
        &model,
        split,
        cell,
        &updates,
        &records,
        &keys,
        &targets_names(&targets),
    )?;
    let attacks = run_attack(config, &model, split, cell, &keys, opts)?;
    Ok(CellResult {
        keys,
        cell: cell.clone(),
        records,
        sensitivity,
        agreement,
        localisation,
        attacks,
        notes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn targets_names(targets: &[NamedTarget]) -> Vec<String> {
    targets.iter().map(|t| t.name.clone()).collect()
}

/// For the input and each attribute: rank single layers by bits, then protect the top 1, 2, ... layers and measure
/// all the others together until they fall under `fraction` of the unprotected (all-layer) bits.
fn localise(
    config: &AuditConfig,
    updates: &SharedUpdates,
    targets: &[NamedTarget],
    family: &Family,
    records: &[Record],
    keys: &CellKeys,
    opts: &EstimateOptions,
) -> Result<Vec<Localisation>> {
    let n_layers = updates.layers.len();
    let mut out = Vec::new();
    if n_layers < 2 {
        return Ok(out);
    }
    let family_name = family.to_string();
    for t in targets.iter().filter(|t| t.name != "label") {
        let bits_of = |layer: &str| {
            records.iter().find(|r| r.layer == layer && r.target == t.name && r.family == family_name).map(|r| r.bits)
        };
        let mut ranking: Vec<(String, f64)> =
            updates.layers.iter().filter_map(|l| bits_of(&l.name).map(|b| (l.name.clone(), b))).collect();
        ranking.sort_by(|a, b| b.1.total_cmp(&a.1));
        // A set of layers carries at least what its best member carries (the family can ignore the others), so
        // each set's estimate is the larger of its joint estimate and its best member's: both are lower bounds.
        let best_of = |names: &[String]| {
            ranking.iter().filter(|(n, _)| names.contains(n)).map(|(_, b)| *b).fold(f64::NEG_INFINITY, f64::max)
        };
        let all_names: Vec<String> = ranking.iter().map(|(n, _)| n.clone()).collect();
        let joint = match bits_of("all") {
            Some(b) => b,
            None => {
                let (features, _, _) = group_features(updates, &(0..n_layers).collect::<Vec<_>>());
                vinfo::estimate(&features, &t.target, family, opts)?.bits
            }
        };
        let unprotected = joint.max(best_of(&all_names));
        let threshold = config.measure.localisation_fraction * unprotected.max(0.0);
        let mut steps = Vec::new();
        let mut protect = Vec::new();
        for k in 1..n_layers {
            let protected: Vec<String> = ranking[..k].iter().map(|(n, _)| n.clone()).collect();
            let rest: Vec<usize> = (0..n_layers).filter(|&i| !protected.contains(&updates.layers[i].name)).collect();
            let (features, _, _) = group_features(updates, &rest);
            let e = vinfo::estimate(&features, &t.target, family, opts)
                .with_context(|| format!("localisation of {}", t.name))?;
            let rest_names: Vec<String> = rest.iter().map(|&i| updates.layers[i].name.clone()).collect();
            let remaining = e.bits.max(best_of(&rest_names));
            steps.push(LocalisationStep { protected: protected.clone(), remaining_bits: remaining, ci95: e.ci95 });
            if remaining <= threshold {
                protect = protected;
                break;
            }
        }
        if protect.is_empty() {
            // Only protecting every layer leaves nothing.
            protect = ranking.iter().map(|(n, _)| n.clone()).collect();
        }
        out.push(Localisation {
            keys: keys.clone(),
            target: t.name.clone(),
            family: family_name.clone(),
            ranking,
            unprotected_bits: unprotected,
            fraction: config.measure.localisation_fraction,
            protect,
            steps,
        });
    }
    Ok(out)
}

fn run_attack(
    config: &AuditConfig,
    model: &Model,
    split: &crate::data::Split,
    cell: &Cell,
    keys: &CellKeys,
    opts: &AuditOptions,
) -> Result<Vec<AttackRecord>> {
    use crate::measure::attacks::{self, AttackConfig, Method, ShareConfig};
    let Some(method) = &config.measure.attack else { return Ok(Vec::new()) };
    if !model.spec.arch.needs_images() {
        return Ok(Vec::new());
    }
    let method =
        <Method as clap::ValueEnum>::from_str(method, true).map_err(|e| anyhow::anyhow!("measure.attack: {e}"))?;
    let mut attack_config = AttackConfig::new(method);
    attack_config.iterations = config.measure.attack_iterations;
    let share = ShareConfig {
        samples: config.measure.attack_samples as i64,
        batch_size: cell.batch_size,
        // The cell's dropout already lives in the model (see `run_cell`).
        defenses: cell.update_defenses(),
    };
    let report = attacks::run_attacks(model, split, &share, &attack_config, opts.progress)?;
    let dir = opts.out.join("cells").join(format!("{}-attack", keys.cell));
    attacks::write_outputs(&report, &dir)?;
    Ok(vec![AttackRecord {
        keys: keys.clone(),
        method: method.to_string(),
        samples: report.updates.len(),
        mse: report.mean.mse,
        psnr: report.mean.psnr,
        ssim: report.mean.ssim,
        label_accuracy: report.mean.label_accuracy,
        image: format!("cells/{}-attack/reconstructions.png", keys.cell),
    }])
}
