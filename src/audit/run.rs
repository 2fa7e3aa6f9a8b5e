//! Running an audit: training (cached), then each cell of the grid, then the reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::Tensor;

use super::config::{AuditConfig, Cell};
use super::{AttackRecord, CellKeys, CellResult, Localisation, LocalisationStep, Record};
use crate::data::{self, Dataset};
use crate::gradients::updates::{compute_updates, SharedUpdates, UpdateConfig};
use crate::measure::layerwise::{group_features, layer_groups, layerwise, resolve_targets, target_names, NamedTarget};
use crate::measure::vinfo::{self, EstimateOptions, Family, Protocol};
use crate::models::{Arch, DropoutSpec, Model, ModelSpec};
use crate::progress::Progress;
use crate::rng::{self, Order};
use crate::train::{self, SavedRun, TrainConfig};
use crate::defenses;

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
    /// Keys of every cell of the sweep, in grid order.
    pub cells: Vec<String>,
    /// Dataset and model pairs of the grid that were left out, and why (a model that does not fit the data).
    #[serde(default)]
    pub skipped: Vec<String>,
}

/// What a finished run returns.
#[derive(Debug, Clone, Serialize)]
pub struct AuditSummary {
    pub out: PathBuf,
    pub cells_total: usize,
    pub cells_in_shard: usize,
    pub cells_computed: usize,
    pub cells_reused: usize,
    pub skipped: Vec<String>,
    pub seconds: f64,
}

pub const MANIFEST: &str = "audit.json";
pub const FORMAT: &str = "gradleak-audit/1";

fn hash_json<T: Serialize>(value: &T) -> String {
    let text = serde_json::to_string(value).expect("configurations serialise");
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The part of the configuration every cell depends on: everything but the grid and the top-level dataset and
/// model, which a cell names itself.
fn shared_part(config: &AuditConfig) -> AuditConfig {
    AuditConfig { grid: Default::default(), dataset: String::new(), model: String::new(), ..config.clone() }
}

/// The key of a cell: a hash of the shared configuration and the cell.
pub fn cell_key(config: &AuditConfig, cell: &Cell) -> String {
    hash_json(&(shared_part(config), cell, env!("CARGO_PKG_VERSION")))
}

/// The model specification of a cell, checked against its dataset (an error when the model does not fit).
fn model_spec(config: &AuditConfig, dataset: &Dataset, model: &str, dropout: f64) -> Result<ModelSpec> {
    let arch: Arch = model.parse()?;
    let mut spec = ModelSpec::new(arch, dataset.input_shape, dataset.num_classes());
    spec.width = config.width;
    spec.hidden = config.hidden;
    spec.dropout = DropoutSpec { rate: dropout, at: Vec::new() };
    spec.validate()?;
    Ok(spec)
}

/// Loads every dataset the sweep names, once each, and checks the targets exist in each.
fn load_datasets(config: &AuditConfig, cells: &[Cell], data_dir: &Path) -> Result<BTreeMap<String, Dataset>> {
    let mut datasets = BTreeMap::new();
    for cell in cells {
        if !datasets.contains_key(&cell.dataset) {
            let dataset = data::load(&cell.dataset, data_dir)?;
            target_names(&config.measure.targets, &dataset.attributes)
                .with_context(|| format!("measure.targets on dataset {}", cell.dataset))?;
            datasets.insert(cell.dataset.clone(), dataset);
        }
    }
    Ok(datasets)
}

/// The cells whose model fits their dataset, and a line for each dataset and model pair left out.
fn fitting_cells(
    config: &AuditConfig,
    cells: Vec<Cell>,
    datasets: &BTreeMap<String, Dataset>,
) -> (Vec<Cell>, Vec<String>) {
    let mut skipped = Vec::new();
    let mut fitting = Vec::new();
    for cell in cells {
        match model_spec(config, &datasets[&cell.dataset], &cell.model, 0.0) {
            Ok(_) => fitting.push(cell),
            Err(e) => {
                let line = format!("{} on {}: {e}", cell.model, cell.dataset);
                if !skipped.contains(&line) {
                    skipped.push(line);
                }
            }
        }
    }
    (fitting, skipped)
}

/// With an existing training run, `training.epochs` is the run's last saved epoch (what an empty `grid.epoch`
/// audits), whatever the configuration says.
fn with_run_epochs(config: &AuditConfig) -> Result<AuditConfig> {
    let mut config = config.clone();
    if let Some(run) = &config.training.run {
        let saved = SavedRun::open(run).context("training.run")?;
        config.training.epochs = saved.last_epoch();
    }
    Ok(config)
}

/// Runs (or resumes) an audit into `opts.out`, then writes the reports from every finished cell there.
pub fn run_audit(config: &AuditConfig, opts: &AuditOptions) -> Result<AuditSummary> {
    let config = &with_run_epochs(config)?;
    config.validate()?;
    let started = Instant::now();
    let all_cells = config.cells()?;
    let datasets = load_datasets(config, &all_cells, &opts.data_dir)?;
    let (cells, skipped) = fitting_cells(config, all_cells, &datasets);
    if cells.is_empty() {
        bail!("no cell of the grid has a model that fits its dataset: {}", skipped.join("; "));
    }
    if config.training.run.is_none() {
        let max_epoch = cells.iter().map(|c| c.epoch).max().unwrap_or(0);
        if max_epoch > config.training.epochs {
            bail!("grid.epoch asks for epoch {max_epoch}, but training.epochs is {}", config.training.epochs);
        }
    }
    let keys: Vec<String> = cells.iter().map(|c| cell_key(config, c)).collect();
    let manifest = AuditManifest {
        format: FORMAT.into(),
        gradleak_version: env!("CARGO_PKG_VERSION").into(),
        config_hash: hash_json(config),
        config: config.clone(),
        shard: opts.shard,
        cells: keys.clone(),
        skipped: skipped.clone(),
    };
    prepare_out(&opts.out, &manifest, opts.resume)?;

    let selected: Vec<usize> =
        (0..cells.len()).filter(|i| opts.shard.map(|(index, count)| i % count == index).unwrap_or(true)).collect();
    let path_of = |i: usize| opts.out.join("cells").join(format!("{}.json", keys[i]));
    let (todo, done): (Vec<usize>, Vec<usize>) = selected.iter().partition(|&&i| read_cell(&path_of(i)).is_err());
    // One bar over the cells of the sweep (finished ones count as done), above the bars of each cell's steps.
    let overall = opts.progress.bar(selected.len() as u64, "cells");
    overall.set_position(done.len() as u64);
    overall.reset_eta();
    for (n, &i) in todo.iter().enumerate() {
        let cell = &cells[i];
        overall.set_prefix(describe_cell(cell));
        let cell_started = Instant::now();
        let dataset = &datasets[&cell.dataset];
        let saved = trained_run(config, dataset, cell, opts)?;
        let result = run_cell(config, dataset, &saved, cell, &keys[i], opts)
            .with_context(|| format!("cell {} ({})", keys[i], describe_cell(cell)))?;
        crate::io::write_json(&path_of(i), &result)?;
        overall.inc(1);
        if opts.verbose {
            let line = format!(
                "cell {}/{} {} ({}) done in {:.1} s",
                done.len() + n + 1,
                selected.len(),
                keys[i],
                describe_cell(cell),
                cell_started.elapsed().as_secs_f64()
            );
            opts.progress.println(&line);
        }
    }
    overall.finish_and_clear();
    let results = collect_cells(&opts.out, &keys)?;
    crate::report::write_reports(&opts.out, &manifest, &results)?;
    Ok(AuditSummary {
        out: opts.out.clone(),
        cells_total: cells.len(),
        cells_in_shard: selected.len(),
        cells_computed: todo.len(),
        cells_reused: done.len(),
        skipped,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A short description of a cell for progress lines and errors.
pub fn describe_cell(cell: &Cell) -> String {
    format!(
        "{} on {}, batch {}, epoch {}, defence {}",
        cell.model,
        cell.dataset,
        cell.batch_size,
        cell.epoch,
        cell.defense_label()
    )
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

/// The training run of a cell's dataset, model and dropout rate: the configured run folder, or one trained (once)
/// into `runs/<key>`.
fn trained_run(config: &AuditConfig, dataset: &Dataset, cell: &Cell, opts: &AuditOptions) -> Result<SavedRun> {
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
        if saved.run.model.arch.name() != cell.model {
            bail!(
                "training.run {}: a {} run, the audit's model is {}",
                run.display(),
                saved.run.model.arch,
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
        opts.progress.println(&format!(
            "training {} on {} (dropout {}) for {} epochs",
            cell.model, dataset.name, cell.dropout, t.epochs
        ));
    }
    match training_subset(dataset, t.samples, config.seed) {
        Some(subset) => train::train(&mut model, &subset, &train_config, Some(&dir), opts.progress)?,
        None => train::train(&mut model, dataset, &train_config, Some(&dir), opts.progress)?,
    };
    SavedRun::open(&dir)
}

/// The dataset with a seeded subset of `samples` training samples (None when the whole split is used).
fn training_subset(dataset: &Dataset, samples: i64, seed: u64) -> Option<Dataset> {
    if samples <= 0 || samples >= dataset.train.len() {
        return None;
    }
    let mut order: Vec<i64> = (0..dataset.train.len()).collect();
    order.sort_by_key(|&i| rng::order_key(seed, Order::TrainingSubset, i as u64));
    order.truncate(samples as usize);
    order.sort_unstable();
    Some(Dataset {
        name: dataset.name.clone(),
        input_shape: dataset.input_shape,
        classes: dataset.classes.clone(),
        attributes: dataset.attributes.clone(),
        train: dataset.train.select(&Tensor::from_slice(&order)),
        test: dataset.test.shallow_clone(),
    })
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
    let split = dataset.split(&config.measure.split).context("measure.split")?;
    // A split smaller than `measure.updates` (LFW crops has 160 training faces) gives each of its samples once.
    let num_updates = config.measure.updates.min(split.len());
    let mut notes = Vec::new();
    if num_updates < config.measure.updates {
        notes.push(format!(
            "measure.updates is {}, but the {} split of {} has {} samples: {num_updates} updates (one per victim)",
            config.measure.updates,
            config.measure.split,
            dataset.name,
            split.len()
        ));
    }
    let update_config = UpdateConfig {
        num_updates,
        batch_size: cell.batch_size,
        seed: config.seed,
        defenses: cell.update_defenses(),
        layers: None,
        sketch_kind: crate::gradients::sketch::SketchKind::Sparse,
        sketch_dim: config.measure.sketch_dim,
        // Large layers are measured on their sketch only: the full gradients would not be read.
        full_max_params: config.measure.sketch_dim,
    };
    let dp = defenses::dp_record(&update_config.defenses, update_config.batch_size, dataset.train.len(), 1e-5, None)?;
    let updates = compute_updates(&model, split, &update_config, opts.progress)?;
    let test_accuracy =
        saved.run.epochs.iter().find(|e| e.epoch == cell.epoch).map(|e| e.test_accuracy).unwrap_or(f64::NAN);
    let keys = CellKeys {
        cell: key.to_string(),
        dataset: cell.dataset.clone(),
        model: cell.model.clone(),
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
    let (sensitivity, agreement, sensitivity_notes) = super::sensitivity::measure(
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
    notes.extend(sensitivity_notes);
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

/// For the input and each attribute: rank single layers by bits, then find the fewest top layers whose protection
/// leaves all the others together under `fraction` of the unprotected (all-layer) bits, measuring the others.
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
        // No layer, alone or together, carrying usable information for this family leaves nothing to localise.
        let (protect, steps) = if unprotected <= 0.0 {
            (Vec::new(), Vec::new())
        } else {
            let threshold = config.measure.localisation_fraction * unprotected;
            // What the layers left after protecting the top k carry. Protecting more layers never adds
            // information, so the smallest k that brings it under the threshold is found by bisection: a few joint
            // fits, not one per layer (ResNets share about 40 layers).
            let mut steps: Vec<(usize, LocalisationStep)> = Vec::new();
            let mut remaining_after = |k: usize| -> Result<f64> {
                let protected: Vec<String> = ranking[..k].iter().map(|(n, _)| n.clone()).collect();
                let rest: Vec<usize> =
                    (0..n_layers).filter(|&i| !protected.contains(&updates.layers[i].name)).collect();
                let (features, _, _) = group_features(updates, &rest);
                let e = vinfo::estimate(&features, &t.target, family, opts)
                    .with_context(|| format!("localisation of {}", t.name))?;
                let rest_names: Vec<String> = rest.iter().map(|&i| updates.layers[i].name.clone()).collect();
                let remaining = e.bits.max(best_of(&rest_names));
                steps.push((k, LocalisationStep { protected, remaining_bits: remaining, ci95: e.ci95 }));
                Ok(remaining)
            };
            // Only ranked layers (those measured one by one) are candidates for protection.
            let (mut lo, mut hi, mut smallest) = (1, ranking.len().min(n_layers - 1), None);
            while lo <= hi {
                let k = (lo + hi) / 2;
                if remaining_after(k)? <= threshold {
                    smallest = Some(k);
                    hi = k - 1;
                } else {
                    lo = k + 1;
                }
            }
            steps.sort_by_key(|(k, _)| *k);
            // Without a k under the threshold only protecting every layer leaves nothing.
            let protect = ranking[..smallest.unwrap_or(ranking.len())].iter().map(|(n, _)| n.clone()).collect();
            (protect, steps.into_iter().map(|(_, step)| step).collect())
        };
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
    let method: Method = method.parse().context("measure.attack")?;
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
