//! The audit: from a configuration to a layer-wise leakage report, over a grid of cells.
//!
//! For each cell (dataset, model, batch size, checkpoint epoch, dropout, DP setting, other defences, protected
//! layers) the audit
//! takes the trained model at that epoch, computes the shared updates of `measure.updates` victims, and measures
//! per layer, per layer group and for all shared layers together, for every target and family, the usable
//! information in bits (with a 95% CI), and per layer and target the `best` family's estimate (the largest); then
//! the input and latent-attribute sensitivity and their rank agreement with the `best` bits; then the localisation
//! (the fewest layers whose protection leaves the rest under a fraction of the unprotected leakage, measured);
//! optionally a reference attack.
//!
//! Every cell is keyed by a hash of everything that determines it and written to `cells/<key>.json` atomically
//! once finished, so an interrupted sweep loses at most the cell in progress and resumes where it stopped. Models are
//! trained once per dataset, model and dropout rate into `runs/<key>/` and reused.
//!
//! The modules follow a sweep: [`config`] (what to run), [`cache`] (the out folder, cell keys, merging shards),
//! `training` (the cached models), `cell` (measuring one cell), `sensitivity` (its sensitivity part) and `run`
//! (the sweep). The algorithms live in [`crate::measure`]; the reports are written by the caller from the
//! [`AuditOutcome`] (see [`crate::report`]).

pub mod cache;
mod cell;
pub mod config;
pub mod presets;
mod run;
mod sensitivity;
mod training;

/// The pseudo-family of the largest estimate per layer (or group) and target.
pub use crate::measure::layerwise::BEST;
pub use cache::{cell_key, collect_cells, merge, AuditManifest, MANIFEST};
pub use cell::{describe_cell, flag_excesses, run_cell};
pub use config::{AuditConfig, Cell};
pub use run::{run_audit, AuditOptions, AuditOutcome, AuditSummary};

use serde::{Deserialize, Serialize};

use crate::measure::layerwise::LayerwiseRow;
use crate::measure::localisation::Localisation;

/// The columns every row of a cell carries, so the flat arrays can be filtered in pandas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellKeys {
    /// The cell's key (hash of its full configuration).
    pub cell: String,
    pub dataset: String,
    pub model: String,
    pub batch_size: i64,
    pub epoch: usize,
    pub dropout: f64,
    /// A readable name of the cell's defences (`none` when there is none).
    pub defense: String,
    /// DP epsilon (one epoch of DP-SGD at this batch size, delta 1e-5), null without DP.
    pub epsilon: Option<f64>,
    /// Test accuracy of the checkpoint.
    pub test_accuracy: f64,
}

/// One V-information estimate: a (cell, layer or group, target, family) row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    #[serde(flatten)]
    pub keys: CellKeys,
    /// A layer name, a group `a+b`, or `all`.
    pub layer: String,
    pub num_params: i64,
    /// `full`, `sketch` (a random projection, a lower bound) or `mixed` for groups.
    pub features: String,
    pub feature_dim: i64,
    /// `input`, `label` or `attribute:NAME`.
    pub target: String,
    /// A family of `measure.families`, or `best` (see [`add_best`]).
    pub family: String,
    /// For `best`: the family it copies; null for the others.
    #[serde(default)]
    pub source: Option<String>,
    pub bits: f64,
    pub ci95: [f64; 2],
    pub bits_per_dim: Option<f64>,
    pub r2: Option<f64>,
    pub accuracy: Option<f64>,
    pub n_train: usize,
    pub n_test: usize,
    /// Fits in which the family's constant predictor won on validation (the layer then measures 0 bits there).
    #[serde(default)]
    pub constant_fits: usize,
    /// Repetitions of the protocol with independent partitions (`measure.repeats`).
    #[serde(default = "one")]
    pub repeats: usize,
    /// Each repetition's estimate (bits).
    #[serde(default)]
    pub repeat_bits: Vec<f64>,
    /// Standard error of `bits` from the fit's variability (the spread of `repeat_bits`), folded into `ci95`; 0
    /// with one repetition.
    #[serde(default)]
    pub fit_se: f64,
    /// The seed of the estimate's partitions, fits and bootstrap.
    #[serde(default)]
    pub seed: u64,
    /// An upper bound on the bits any attacker can get about the target from this update, where one applies
    /// (see `bound` and `docs/bounds.md`).
    #[serde(default)]
    pub upper_bits: Option<f64>,
    /// Which bound `upper_bits` is: `dp_capacity` (DP-SGD's Gaussian channel) or `log2_classes`.
    #[serde(default)]
    pub bound: Option<String>,
    /// What a user should know about the fits (an optimiser at its iteration cap, a lower confidence bound above
    /// `upper_bits`, ...).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// PVI (bits) of each victim of the cell, NaN where it was not scored: for the rank agreement's interval.
    #[serde(skip)]
    pub pvi: Vec<f64>,
}

fn one() -> usize {
    1
}

impl Record {
    /// The record of one measured row of a cell (or a store) with keys `keys`; `victims`: the number of updates,
    /// by which each victim's PVI is laid out.
    pub fn measured(keys: &CellKeys, row: &LayerwiseRow, victims: usize) -> Record {
        let e = &row.estimate;
        Record {
            keys: keys.clone(),
            layer: row.layer.clone(),
            num_params: row.num_params,
            features: row.features.clone(),
            feature_dim: row.feature_dim,
            target: row.target.clone(),
            family: e.family.clone(),
            source: None,
            bits: e.bits,
            ci95: e.ci95,
            bits_per_dim: e.bits_per_dim,
            r2: e.r2,
            accuracy: e.accuracy,
            n_train: e.n_train,
            n_test: e.n_test,
            constant_fits: e.constant_fits,
            repeats: e.repeats,
            repeat_bits: e.repeat_bits.clone(),
            fit_se: e.fit_se,
            seed: e.seed,
            upper_bits: None,
            bound: None,
            warnings: e.warnings.clone(),
            pvi: e.pvi_by_sample(victims),
        }
    }
}

impl CellKeys {
    /// The keys of the updates in a gradient store: its cell is a hash of its manifest (what determines the
    /// updates), its test accuracy the checkpoint's (NaN when unknown).
    pub fn of_store(manifest: &crate::gradients::store::Manifest) -> CellKeys {
        let checkpoint = manifest.checkpoint.as_ref();
        CellKeys {
            cell: cache::hash_json(manifest),
            dataset: manifest.dataset.clone(),
            model: manifest.model.arch.to_string(),
            batch_size: manifest.batch_size,
            epoch: checkpoint.map(|c| c.epoch).unwrap_or(0),
            dropout: manifest.model.dropout.rate,
            defense: manifest.defense.clone(),
            epsilon: manifest.dp.as_ref().and_then(|d| d.epsilon),
            test_accuracy: checkpoint.map(|c| c.test_accuracy).unwrap_or(f64::NAN),
        }
    }
}

/// `records` with one `best` record after the records of each (cell, layer, target): a copy of the record with the
/// most bits among its families (the first family of equal ones), with `source` naming that family. Added with a
/// single family too, so `family == "best"` always selects one row per layer and target. Existing `best` records
/// are recomputed, so this can be applied again (cells written before `best` existed gain it when read).
pub fn add_best(records: Vec<Record>) -> Vec<Record> {
    use std::collections::HashMap;
    let records: Vec<Record> = records.into_iter().filter(|r| r.family != BEST).collect();
    let key = |r: &Record| (r.keys.cell.clone(), r.layer.clone(), r.target.clone());
    // Per key: its records' positions, in order (the families' order).
    let mut members: HashMap<(String, String, String), Vec<usize>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        members.entry(key(r)).or_default().push(i);
    }
    let mut out = Vec::with_capacity(records.len() + members.len());
    for (i, r) in records.iter().enumerate() {
        out.push(r.clone());
        let of_key = &members[&key(r)];
        if of_key.last() == Some(&i) {
            let top = crate::measure::layerwise::best_index(of_key.iter().map(|&j| records[j].bits))
                .expect("a key has a record");
            let top = &records[of_key[top]];
            out.push(Record { family: BEST.into(), source: Some(top.family.clone()), ..top.clone() });
        }
    }
    out
}

/// One sensitivity value of a layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityRecord {
    #[serde(flatten)]
    pub keys: CellKeys,
    pub layer: String,
    /// `input` or `attribute:NAME`.
    pub target: String,
    /// `jacobian_norm`, `relative`, `per_parameter` (input); `subspace_distance`, `spread_ratio` (attributes).
    pub kind: String,
    pub value: f64,
    pub ci95: [f64; 2],
}

/// Spearman rank correlation across layers between a sensitivity kind and V-information for one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    #[serde(flatten)]
    pub keys: CellKeys,
    pub target: String,
    pub kind: String,
    /// The family whose bits are ranked: `best` in an audit.
    pub family: String,
    pub spearman: Option<f64>,
    /// Percentile bootstrap 95% interval of `spearman`, resampling the sensitivity samples and the scored victims.
    #[serde(default)]
    pub spearman_ci95: Option<[f64; 2]>,
    /// `agree` (interval above 0), `disagree` (below 0) or `indistinguishable` (the interval covers 0).
    #[serde(default)]
    pub verdict: Option<String>,
    pub layers: usize,
}

/// A paired comparison of two layers' sensitivity over the same samples: which is larger, or neither.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerOrderRecord {
    #[serde(flatten)]
    pub keys: CellKeys,
    /// `input` or `attribute:NAME`.
    pub target: String,
    /// The sensitivity kind compared (`relative`, `subspace_distance`, ...).
    pub kind: String,
    #[serde(flatten)]
    pub comparison: crate::measure::sensitivity::PairComparison,
}

/// Where a target's usable information sits in a cell, and what protecting its top layers leaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalisationRecord {
    #[serde(flatten)]
    pub keys: CellKeys,
    #[serde(flatten)]
    pub localisation: Localisation,
}

/// A reference attack's mean scores in a cell.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackRecord {
    #[serde(flatten)]
    pub keys: CellKeys,
    pub method: String,
    /// The layer or layer group the attack read; null for the reference attack, which reads every shared layer.
    #[serde(default)]
    pub layer: Option<String>,
    pub samples: usize,
    pub mse: f64,
    pub psnr: f64,
    pub ssim: Option<f64>,
    /// Null for an attack that does not recover labels (the analytic reconstruction of one layer's input).
    pub label_accuracy: Option<f64>,
    /// PNG grid of originals and reconstructions, relative to the out folder.
    pub image: String,
    /// Under noise: the mean over the attacked victims of the PSNR that the Fisher bound allows an unbiased
    /// reconstruction of each, from the layers the attack read (see `docs/bounds.md`).
    #[serde(default)]
    pub psnr_bound: Option<f64>,
    /// PSNR of the split's mean image taken as every attacked victim's reconstruction: what a guess that reads no
    /// gradient scores (mean over the victims). An attack succeeds where it beats this.
    #[serde(default)]
    pub guess_psnr: Option<f64>,
    /// Victims whose reconstruction beat their own bound (priors such as clamping and total variation make an
    /// attack biased, which the bound does not cover).
    #[serde(default)]
    pub beats_bound: Option<usize>,
}

/// Everything measured in one cell: `cells/<key>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    pub keys: CellKeys,
    pub cell: Cell,
    pub records: Vec<Record>,
    pub sensitivity: Vec<SensitivityRecord>,
    pub agreement: Vec<Agreement>,
    /// Layer pairs ordered by sensitivity, from paired bootstrap intervals of their difference.
    #[serde(default)]
    pub layer_order: Vec<LayerOrderRecord>,
    pub localisation: Vec<LocalisationRecord>,
    pub attacks: Vec<AttackRecord>,
    /// What the sensitivity analysis applied of the defences, and what it could not.
    pub notes: Vec<String>,
    pub seconds: f64,
}
