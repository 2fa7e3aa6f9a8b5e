//! The audit's TOML configuration: what to train or load, what to measure, and the grid of cells to sweep.
//!
//! Every section rejects unknown keys (the error names the key and the valid ones). All fields have defaults, so an
//! empty file (or no file) audits the embedded default: LeNet-5 on the embedded Fashion-MNIST subset, targets input +
//! label + one latent attribute, the linear family, with sensitivity.
//!
//! The sweep is one `[grid]` table, or several `[[grid]]` tables whose cells are joined (a study design is rarely a
//! full Cartesian product: architectures on every dataset, batch size on one of them, ...). Each grid may sweep
//! datasets and models too; pairs where the model does not fit the data (an image model on tabular data) are
//! skipped and listed in the report.

use std::path::{Path, PathBuf};

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_with::{serde_as, DisplayFromStr};

use crate::defenses::{Defense, DefensePlan};
use crate::gradients::sketch::SketchKind;
use crate::measure::attacks::Method;
use crate::measure::families::{self, Family};
use crate::measure::vinfo::Protocol;
use crate::train::OptimizerKind;

/// The TOML key of each parameter of the shared updates an audit computes.
pub const UPDATE_KEYS: &[(&str, &str)] = &[
    ("num_updates", "measure.updates"),
    ("batch_size", "grid.batch_size"),
    ("sketch_dim", "measure.sketch_dim"),
    ("sketch_kind", "measure.sketch"),
    ("full_max_params", "measure.sketch_dim"),
];

/// The TOML key of each training parameter.
pub const TRAINING_KEYS: &[(&str, &str)] = &[
    ("epochs", "training.epochs"),
    ("batch_size", "training.batch_size"),
    ("learning_rate", "training.lr"),
    ("momentum", "training.momentum"),
    ("weight_decay", "training.weight_decay"),
    ("dropout", "grid.dropout"),
    ("width", "width"),
    ("hidden", "hidden"),
    ("arch", "model"),
];

/// The TOML key of each reference-attack parameter.
pub const ATTACK_KEYS: &[(&str, &str)] = &[
    ("iterations", "measure.attack_iterations"),
    ("samples", "measure.attack_samples"),
    ("num_updates", "measure.attack_samples"),
    ("batch_size", "grid.batch_size"),
];

/// The TOML key of each measurement parameter named by the library.
pub const MEASURE_KEYS: &[(&str, &str)] = &[("layers", "measure.layers"), ("groups", "measure.groups")];

/// The TOML key of each sensitivity parameter.
pub const SENSITIVITY_KEYS: &[(&str, &str)] = &[("probes", "measure.probes"), ("k", "measure.latent_k")];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Seed of every random choice in the audit.
    pub seed: u64,
    /// Dataset name or path spec (see `gradleak data list`).
    pub dataset: String,
    /// Model architecture (see `gradleak models`), or a model file `torchscript:PATH`.
    pub model: String,
    /// Channel multiplier (AlexNet, VGG).
    pub width: f64,
    /// Hidden units (MLP).
    pub hidden: i64,
    pub training: TrainingConfig,
    pub measure: MeasureConfig,
    pub grid: Grids,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            seed: 0,
            dataset: "embedded".into(),
            model: "lenet5".into(),
            width: 1.0,
            hidden: 128,
            training: TrainingConfig::default(),
            measure: MeasureConfig::default(),
            grid: Grids::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    pub optimizer: OptimizerKind,
    pub epochs: usize,
    pub batch_size: i64,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Train on a seeded subset of this many training samples (0: all of them).
    pub samples: i64,
    /// An existing training run folder to audit instead of training (its dataset and model must match).
    pub run: Option<PathBuf>,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            optimizer: OptimizerKind::Adam,
            epochs: 2,
            batch_size: 64,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 0.0,
            samples: 0,
            run: None,
        }
    }
}

crate::keyword_enum! {
    /// How victims are split between fitting and scoring.
    pub enum ProtocolKind("protocol") {
        /// One split: 60% fit, 20% validation, 20% scored.
        Split = "split",
        /// K-fold cross-fitting: every victim scored once.
        CrossFit = "crossfit",
    }
}

/// A DP-SGD setting on the grid: none, or clipping norm and noise multiplier; written `none` or `clip=C,sigma=S`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpSetting(pub Option<(f64, f64)>);

impl fmt::Display for DpSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("none"),
            Some((clip, sigma)) => write!(f, "clip={clip},sigma={sigma}"),
        }
    }
}

impl FromStr for DpSetting {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.trim().eq_ignore_ascii_case("none") {
            return Ok(DpSetting(None));
        }
        let parsed = format!("dp:{s}").parse::<Defense>();
        // One message with its cause: serde reports only the top layer of an error.
        let defense = parsed.map_err(|e| anyhow::anyhow!("dp entry '{s}': {e:#}"))?;
        // A `dp:` string parses to a dp defence, which the plan holds as its DP setting.
        Ok(DpSetting(DefensePlan::new(&[defense])?.dp))
    }
}

#[serde_as]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeasureConfig {
    /// Shared updates per cell.
    pub updates: i64,
    /// Split the victims come from: `train` or `test`.
    pub split: String,
    /// Layers measured one by one (empty: every layer).
    pub layers: Vec<String>,
    /// Extra groups of layers measured together, e.g. `[["conv1", "conv2"]]`.
    pub groups: Vec<Vec<String>>,
    /// Also measure all shared layers together (the group `all`).
    pub all_layers: bool,
    /// `input`, `label`, `attribute` (the dataset's first), `attribute:NAME`, or `attributes` (every one).
    pub targets: Vec<String>,
    /// Predictive families (`measure::families::registry`): `linear`, `mlp:256,128`, `analytic`, `ig:500`, ...
    #[serde_as(as = "Vec<DisplayFromStr>")]
    pub families: Vec<Family>,
    /// `crossfit` (K-fold, every sample scored) or `split`.
    pub protocol: ProtocolKind,
    pub folds: usize,
    pub bootstrap: usize,
    /// Repetitions of the protocol with independent partitions, their spread folded into the intervals.
    pub repeats: usize,
    /// Dimension of the sketch of large layers.
    pub sketch_dim: i64,
    /// The sketch of large layers: `sparse` (JL), `gaussian` or `kron` (computed without per-sample gradients).
    #[serde(skip_serializing_if = "is_sparse")]
    pub sketch: SketchKind,
    /// Input and latent-attribute sensitivity.
    pub sensitivity: bool,
    pub sensitivity_samples: i64,
    pub probes: usize,
    /// Principal-subspace dimension for latent sensitivity.
    pub latent_k: usize,
    /// Localisation: protect the fewest layers that bring the rest under this fraction of the unprotected leakage.
    pub localisation_fraction: f64,
    /// Reference attack per cell: `dlg`, `idlg`, `ig` (none when absent).
    pub attack: Option<Method>,
    pub attack_samples: usize,
    pub attack_iterations: usize,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        MeasureConfig {
            updates: 600,
            split: "train".into(),
            layers: Vec::new(),
            groups: Vec::new(),
            all_layers: true,
            targets: vec!["input".into(), "label".into(), "attribute:thickness".into()],
            // The probe and the closed-form attacker: the attack reads far more of the input wherever a fully
            // connected layer is shared, and costs about half a minute on the default audit.
            families: vec![Family::linear(), Family::analytic()],
            protocol: ProtocolKind::Split,
            folds: 5,
            bootstrap: 1000,
            repeats: 1,
            sketch_dim: 1024,
            sketch: SketchKind::Sparse,
            sensitivity: true,
            sensitivity_samples: 32,
            probes: 8,
            latent_k: 5,
            localisation_fraction: 0.1,
            attack: None,
            attack_samples: 2,
            attack_iterations: 100,
        }
    }
}

/// The axes of one grid; a cell is one value of each.
#[serde_as]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GridConfig {
    /// Datasets (empty: the top-level `dataset`).
    pub dataset: Vec<String>,
    /// Models (empty: the top-level `model`).
    pub model: Vec<String>,
    pub batch_size: Vec<i64>,
    /// Checkpoint epochs (0 = initialisation). Empty: the last trained epoch.
    pub epoch: Vec<usize>,
    /// Dropout rates: the model is trained with this rate and the update computed with it active.
    pub dropout: Vec<f64>,
    /// DP-SGD settings: `none` or `clip=C,sigma=S`.
    #[serde_as(as = "Vec<DisplayFromStr>")]
    pub dp: Vec<DpSetting>,
    /// Other defence lists (each a list of `prune:F`, `quantize:B`, `noise:STD`).
    #[serde_as(as = "Vec<Vec<DisplayFromStr>>")]
    pub defense: Vec<Vec<Defense>>,
    /// Protected layer lists.
    pub protect: Vec<Vec<String>>,
}

impl Default for GridConfig {
    fn default() -> Self {
        GridConfig {
            dataset: Vec::new(),
            model: Vec::new(),
            batch_size: vec![1],
            epoch: Vec::new(),
            dropout: vec![0.0],
            dp: vec![DpSetting(None)],
            defense: vec![Vec::new()],
            protect: vec![Vec::new()],
        }
    }
}

/// The grids of a sweep: written as one `[grid]` table or as several `[[grid]]` tables.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Grids(pub Vec<GridConfig>);

impl Default for Grids {
    fn default() -> Self {
        Grids(vec![GridConfig::default()])
    }
}

impl<'de> Deserialize<'de> for Grids {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Grids, D::Error> {
        struct OneOrMany;
        impl<'de> serde::de::Visitor<'de> for OneOrMany {
            type Value = Grids;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a [grid] table or a list of [[grid]] tables")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> std::result::Result<Grids, A::Error> {
                let one = GridConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Grids(vec![one]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Grids, A::Error> {
                let mut grids = Vec::new();
                while let Some(g) = seq.next_element::<GridConfig>()? {
                    grids.push(g);
                }
                Ok(Grids(grids))
            }
        }
        deserializer.deserialize_any(OneOrMany)
    }
}

/// One point of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub dataset: String,
    pub model: String,
    pub batch_size: i64,
    pub epoch: usize,
    pub dropout: f64,
    /// (clip, noise multiplier).
    pub dp: Option<(f64, f64)>,
    pub defenses: Vec<Defense>,
    pub protect: Vec<String>,
}

impl Cell {
    /// Defences applied to the shared update, in pipeline order (dropout lives in the model).
    pub fn update_defenses(&self) -> Vec<Defense> {
        let mut d = Vec::new();
        if !self.protect.is_empty() {
            d.push(Defense::Protect { layers: self.protect.clone() });
        }
        if let Some((clip, noise_multiplier)) = self.dp {
            d.push(Defense::Dp { clip, noise_multiplier });
        }
        d.extend(self.defenses.iter().cloned());
        d
    }

    /// A readable name of every defence of the cell, dropout included (`none` when there is none).
    pub fn defense_label(&self) -> String {
        let mut all = Vec::new();
        if self.dropout > 0.0 {
            all.push(Defense::Dropout { rate: self.dropout });
        }
        all.extend(self.update_defenses());
        crate::defenses::describe(&all)
    }
}

/// A TOML error as one line that names the key where it happened (`measure.families: unknown family ...`).
fn toml_error(text: &str, e: &toml::de::Error) -> anyhow::Error {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else { return anyhow::anyhow!("{message}") };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    // The table the error is in, and the key of the error's line (a heuristic for ordinary TOML layouts).
    let table = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let this_line = text[before.rfind('\n').map_or(0, |i| i + 1)..].lines().next().unwrap_or("");
    let key = this_line.split_once('=').map(|(k, _)| k.trim().to_string()).filter(|k| !k.is_empty());
    let name = match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}: "),
        (None, Some(k)) => format!("{k}: "),
        _ => String::new(),
    };
    anyhow::anyhow!("{name}{message} (line {line}, column {column})")
}

impl AuditConfig {
    /// The estimation protocol of the configured kind (60/20/20 split, or K-fold cross-fitting with 20% of each
    /// fold's fitting part for validation).
    pub fn protocol(&self) -> Protocol {
        match self.measure.protocol {
            ProtocolKind::CrossFit => Protocol::CrossFit { folds: self.measure.folds, val_fraction: 0.2 },
            ProtocolKind::Split => Protocol::Split { val_fraction: 0.2, test_fraction: 0.2 },
        }
    }

    /// Reads a TOML file; unknown keys are errors that name the file.
    pub fn from_file(path: &Path) -> Result<AuditConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Self::from_toml(&text).with_context(|| format!("{}", path.display()))
    }

    /// Parses TOML (keywords, families and defences are parsed here, with the key in the error) and validates it.
    pub fn from_toml(text: &str) -> Result<AuditConfig> {
        let config: AuditConfig = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and that the grid has cells; model and dataset names are checked when they are loaded.
    pub fn validate(&self) -> Result<()> {
        let m = &self.measure;
        let t = &self.training;
        let at_least = |key: &str, value: i64, min: i64| -> Result<()> {
            if value < min {
                bail!("{key} must be at least {min}, got {value}");
            }
            Ok(())
        };
        if !(self.width.is_finite() && self.width > 0.0 && self.width <= 16.0) {
            bail!("width must be in (0, 16], got {}", self.width);
        }
        if !(1..=65536).contains(&self.hidden) {
            bail!("hidden must be in [1, 65536], got {}", self.hidden);
        }
        if !(1..=10_000).contains(&t.epochs) {
            bail!("training.epochs must be in [1, 10000], got {}", t.epochs);
        }
        at_least("training.batch_size", t.batch_size, 1)?;
        if !(t.lr.is_finite() && t.lr > 0.0 && t.lr <= 10.0) {
            bail!("training.lr must be in (0, 10], got {}", t.lr);
        }
        if !(0.0..1.0).contains(&t.momentum) {
            bail!("training.momentum must be in [0, 1), got {}", t.momentum);
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            bail!("training.weight_decay must be a finite number >= 0, got {}", t.weight_decay);
        }
        at_least("training.samples", t.samples, 0)?;
        at_least("measure.updates", m.updates, 10)?;
        if m.split != "train" && m.split != "test" {
            bail!("measure.split must be 'train' or 'test', got '{}'", m.split);
        }
        if m.targets.is_empty() {
            bail!("measure.targets is empty; expected some of: input, label, attribute, attribute:NAME, attributes");
        }
        if m.families.is_empty() {
            bail!("measure.families is empty; expected some of: {}", families::usage());
        }
        if let Some(f) = m.families.iter().enumerate().find_map(|(i, f)| m.families[..i].contains(f).then_some(f)) {
            bail!("measure.families lists '{f}' twice; list each family once");
        }
        if let Some(t) = m.targets.iter().enumerate().find_map(|(i, t)| m.targets[..i].contains(t).then_some(t)) {
            bail!("measure.targets lists '{t}' twice; list each target once");
        }
        at_least("measure.folds", m.folds as i64, 2)?;
        at_least("measure.bootstrap", m.bootstrap as i64, 1)?;
        at_least("measure.repeats", m.repeats as i64, 1)?;
        at_least("measure.sketch_dim", m.sketch_dim, 1)?;
        at_least("measure.sensitivity_samples", m.sensitivity_samples, 1)?;
        at_least("measure.probes", m.probes as i64, 1)?;
        at_least("measure.latent_k", m.latent_k as i64, 1)?;
        at_least("measure.attack_samples", m.attack_samples as i64, 1)?;
        at_least("measure.attack_iterations", m.attack_iterations as i64, 1)?;
        // Counts that size work or memory, at most their limits (`limits`, docs/reliability.md).
        use crate::limits::*;
        for (key, value, max) in [
            ("measure.bootstrap", m.bootstrap, MAX_BOOTSTRAP),
            ("measure.repeats", m.repeats, MAX_REPEATS),
            ("measure.folds", m.folds, MAX_FOLDS),
            ("measure.probes", m.probes, MAX_PROBES),
            ("measure.attack_iterations", m.attack_iterations, MAX_ATTACK_ITERATIONS),
        ] {
            if value > max {
                bail!("{key} must be at most {max}, got {value} (the limits are in docs/reliability.md)");
            }
        }
        if !(m.localisation_fraction > 0.0 && m.localisation_fraction < 1.0) {
            bail!("measure.localisation_fraction must be in (0, 1), got {}", m.localisation_fraction);
        }
        crate::measure::groups::check_layer_lists(&m.layers, &m.groups)
            .map_err(|e| crate::error::rename_params(e, MEASURE_KEYS))?;
        // An empty axis leaves its grid without cells: say which.
        for (i, g) in self.grid.0.iter().enumerate() {
            for (axis, empty) in [
                ("batch_size", g.batch_size.is_empty()),
                ("dropout", g.dropout.is_empty()),
                ("dp", g.dp.is_empty()),
                ("defense", g.defense.is_empty()),
                ("protect", g.protect.is_empty()),
            ] {
                if empty {
                    let which = if self.grid.0.len() > 1 {
                        format!(" (grid {} of {})", i + 1, self.grid.0.len())
                    } else {
                        String::new()
                    };
                    bail!(
                        "the grid has no cells{which}: grid.{axis} is empty; give at least one value, or leave the key \
                         out for its default"
                    );
                }
            }
        }
        let cells = self.cells()?;
        if cells.is_empty() {
            bail!("the grid has no cells: every grid axis needs at least one value");
        }
        if self.training.run.is_none() {
            if let Some(epoch) = cells.iter().map(|c| c.epoch).max().filter(|&e| e > t.epochs) {
                bail!("grid.epoch asks for epoch {epoch}, but training.epochs is {}", t.epochs);
            }
        }
        Ok(())
    }

    /// Every cell of the sweep, grid by grid in a fixed order, each cell once. `epoch` defaults to the last
    /// trained epoch. Whether a cell's model fits its dataset is checked when the data is loaded.
    pub fn cells(&self) -> Result<Vec<Cell>> {
        if self.grid.0.is_empty() {
            bail!("the grid has no cells: the list of [[grid]] tables is empty");
        }
        let mut cells: Vec<Cell> = Vec::new();
        for (i, g) in self.grid.0.iter().enumerate() {
            let name =
                if self.grid.0.len() > 1 { format!("grid {} of {}", i + 1, self.grid.0.len()) } else { "grid".into() };
            for cell in self.grid_cells(g).with_context(|| name)? {
                if !cells.contains(&cell) {
                    cells.push(cell);
                }
            }
        }
        Ok(cells)
    }

    fn grid_cells(&self, g: &GridConfig) -> Result<Vec<Cell>> {
        let or_top = |axis: &[String], top: &str| if axis.is_empty() { vec![top.to_string()] } else { axis.to_vec() };
        let datasets = or_top(&g.dataset, &self.dataset);
        let models = or_top(&g.model, &self.model);
        for m in &models {
            crate::models::ModelSpec::check_name(m).context("model")?;
        }
        let epochs = if g.epoch.is_empty() { vec![self.training.epochs] } else { g.epoch.clone() };
        for &b in &g.batch_size {
            if b < 1 {
                bail!("batch_size values must be at least 1, got {b}");
            }
        }
        for &d in &g.dropout {
            if !(0.0..1.0).contains(&d) {
                bail!("dropout values must be in [0, 1), got {d}");
            }
        }
        for list in &g.defense {
            for d in list {
                if matches!(d, Defense::Dp { .. } | Defense::Dropout { .. } | Defense::Protect { .. }) {
                    bail!("defense: put '{d}' on its own axis (dp, dropout, protect)");
                }
            }
        }
        let mut cells = Vec::new();
        // Datasets and models outermost: the cells of one trained model run one after another.
        for dataset in &datasets {
            for model in &models {
                for &epoch in &epochs {
                    for &dropout in &g.dropout {
                        for &batch_size in &g.batch_size {
                            for dp in &g.dp {
                                for d in &g.defense {
                                    for protect in &g.protect {
                                        cells.push(Cell {
                                            dataset: dataset.clone(),
                                            model: model.clone(),
                                            batch_size,
                                            epoch,
                                            dropout,
                                            dp: dp.0,
                                            defenses: d.clone(),
                                            protect: protect.clone(),
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(cells)
    }
}

/// The default sketch is not written into a configuration, so configurations (and the cells keyed by them) read
/// the same as before the key existed.
fn is_sparse(kind: &SketchKind) -> bool {
    *kind == SketchKind::Sparse
}
