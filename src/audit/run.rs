//! Running a sweep: load the datasets, check which cells fit, then train (cached) and measure each cell not yet
//! finished in the out folder. Writing the reports is the caller's (`gradleak audit` writes them from the result).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::cache::{self, AuditManifest};
use super::cell::{describe_cell, run_cell};
use super::config::{AuditConfig, Cell};
use super::training::{model_spec, trained_run, with_run_epochs};
use super::CellResult;
use crate::data::{self, Dataset};
use crate::measure::targets::target_names;
use crate::progress::Progress;

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

/// What a finished run did.
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

/// A finished run: the out folder's manifest, every finished cell of the sweep (in grid order), and a summary.
#[derive(Debug, Clone)]
pub struct AuditOutcome {
    pub manifest: AuditManifest,
    pub results: Vec<CellResult>,
    pub summary: AuditSummary,
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
                let e = crate::error::rename_params(e, super::config::TRAINING_KEYS);
                let line = format!("{} on {}: {e}", cell.model, cell.dataset);
                if !skipped.contains(&line) {
                    skipped.push(line);
                }
            }
        }
    }
    (fitting, skipped)
}

/// Checks the sizes that depend on a dataset before any model is trained: each `grid.batch_size` within the
/// victims' split. (`training.samples` is an upper bound: a smaller training split is used whole, and each cell's
/// notes say so.)
fn check_sizes(config: &AuditConfig, cells: &[Cell], datasets: &BTreeMap<String, Dataset>) -> Result<()> {
    // A reference attack reconstructs images: configured on a sweep without any, it would silently not run. (On a
    // study that mixes image and tabular data, the tabular cells' notes say it did not run there.)
    if let Some(method) = config.measure.attack {
        if cells.iter().all(|c| !matches!(datasets[&c.dataset].input_shape, data::InputShape::Image { .. })) {
            let names: Vec<&str> = datasets.keys().map(String::as_str).collect();
            bail!(
                "measure.attack = \"{method}\" reconstructs images, and no dataset of the sweep has them ({}); \
                 remove measure.attack",
                names.join(", ")
            );
        }
    }
    for cell in cells {
        let dataset = &datasets[&cell.dataset];
        let split = dataset.split(&config.measure.split).context("measure.split")?.len();
        if cell.batch_size > split {
            bail!(
                "grid.batch_size must be in [1, {split}] (the {} split of {} has {split} samples), got {}",
                config.measure.split,
                dataset.name,
                cell.batch_size
            );
        }
    }
    Ok(())
}

/// Runs (or resumes) an audit into `opts.out`: every cell of the sweep (or of the shard) not finished there yet.
pub fn run_audit(config: &AuditConfig, opts: &AuditOptions) -> Result<AuditOutcome> {
    let config = &with_run_epochs(config)?;
    config.validate()?;
    let started = Instant::now();
    let all_cells = config.cells()?;
    let datasets = load_datasets(config, &all_cells, &opts.data_dir)?;
    let (cells, skipped) = fitting_cells(config, all_cells, &datasets);
    if cells.is_empty() {
        bail!("no cell of the grid has a model that fits its dataset: {}", skipped.join("; "));
    }
    check_sizes(config, &cells, &datasets)?;
    let keys: Vec<String> = cells.iter().map(|c| cache::cell_key(config, c)).collect();
    let manifest = AuditManifest {
        format: cache::FORMAT.into(),
        gradleak_version: env!("CARGO_PKG_VERSION").into(),
        config_hash: cache::hash_json(config),
        config: config.clone(),
        shard: opts.shard,
        cells: keys.clone(),
        skipped: skipped.clone(),
    };
    cache::prepare_out(&opts.out, &manifest, cache::Writer::Audit { resume: opts.resume })?;

    let selected: Vec<usize> =
        (0..cells.len()).filter(|i| opts.shard.map(|(index, count)| i % count == index).unwrap_or(true)).collect();
    let path_of = |i: usize| cache::cell_path(&opts.out, &keys[i]);
    let (todo, done): (Vec<usize>, Vec<usize>) =
        selected.iter().partition(|&&i| cache::read_cell(&path_of(i), &keys[i]).is_err());
    // One bar over the cells of the sweep (finished ones count as done), above the bars of each cell's steps.
    let overall = opts.progress.bar(selected.len() as u64, "cells");
    overall.set_position(done.len() as u64);
    overall.reset_eta();
    for (n, &i) in todo.iter().enumerate() {
        let cell = &cells[i];
        overall.set_prefix(describe_cell(cell));
        let cell_started = Instant::now();
        let dataset = &datasets[&cell.dataset];
        let saved = trained_run(config, dataset, cell, &opts.out, opts.progress, opts.verbose)?;
        let result = run_cell(config, dataset, &saved, cell, &keys[i], &opts.out, opts.progress)
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
    let results = cache::collect_cells(&opts.out, &keys)?;
    let summary = AuditSummary {
        out: opts.out.clone(),
        cells_total: cells.len(),
        cells_in_shard: selected.len(),
        cells_computed: todo.len(),
        cells_reused: done.len(),
        skipped,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok(AuditOutcome { manifest, results, summary })
}
