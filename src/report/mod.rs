//! Reports of an audit: `report.json` (everything, flat arrays for pandas), `records.csv`, `report.md` and a
//! self-contained `report.html` with SVG plots. All written atomically.
//!
//! Interpretation apart from formatting: [`interpret`] turns the records into typed findings (readings, the
//! verdict, and the thresholds they use), [`text`] words them, and `csv`, `markdown` and `html` lay them out,
//! one writer per section. The Markdown and HTML reports open with the verdict; the numbers follow it.

mod csv;
mod html;
pub mod interpret;
mod markdown;
mod svg;
pub mod text;

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::audit::AuditManifest;
use crate::audit::{
    Agreement, AttackRecord, CellKeys, CellResult, LayerOrderRecord, LocalisationRecord, Record, SensitivityRecord,
};

pub use csv::records_csv;
pub use interpret::{
    bound_check, configured_families, families, layer_rows, overview, pairs, verdict, LayerRow, OverviewEntry,
    OverviewRow,
};
pub use markdown::{markdown, summary};
pub use text::title;

/// The whole report, as `report.json`.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    pub format: &'static str,
    pub gradleak_version: &'static str,
    pub libtorch_version: &'static str,
    pub seed: u64,
    pub config: &'a crate::audit::AuditConfig,
    /// Cells of the grid and how many are finished.
    pub cells_total: usize,
    /// Dataset and model pairs of the grid left out, and why.
    pub skipped: &'a [String],
    pub cells: Vec<CellSummary>,
    pub records: Vec<&'a Record>,
    pub sensitivity: Vec<&'a SensitivityRecord>,
    pub agreement: Vec<&'a Agreement>,
    /// Pairs of layers ordered by sensitivity (paired bootstrap), or found indistinguishable.
    pub layer_order: Vec<&'a LayerOrderRecord>,
    pub localisation: Vec<&'a LocalisationRecord>,
    pub attacks: Vec<&'a AttackRecord>,
}

#[derive(Debug, Serialize)]
pub struct CellSummary {
    #[serde(flatten)]
    pub keys: CellKeys,
    pub notes: Vec<String>,
    pub seconds: f64,
}

pub fn build<'a>(manifest: &'a AuditManifest, results: &'a [CellResult]) -> Report<'a> {
    Report {
        format: "gradleak-report/1",
        gradleak_version: env!("CARGO_PKG_VERSION"),
        libtorch_version: "2.13.0",
        seed: manifest.config.seed,
        config: &manifest.config,
        cells_total: manifest.cells.len(),
        skipped: &manifest.skipped,
        cells: results
            .iter()
            .map(|r| CellSummary { keys: r.keys.clone(), notes: r.notes.clone(), seconds: r.seconds })
            .collect(),
        records: results.iter().flat_map(|r| &r.records).collect(),
        sensitivity: results.iter().flat_map(|r| &r.sensitivity).collect(),
        agreement: results.iter().flat_map(|r| &r.agreement).collect(),
        layer_order: results.iter().flat_map(|r| &r.layer_order).collect(),
        localisation: results.iter().flat_map(|r| &r.localisation).collect(),
        attacks: results.iter().flat_map(|r| &r.attacks).collect(),
    }
}

/// Writes the four reports into `out`.
pub fn write_reports(out: &Path, manifest: &AuditManifest, results: &[CellResult]) -> Result<()> {
    let report = build(manifest, results);
    crate::io::write_json(&out.join("report.json"), &report)?;
    crate::io::atomic_write(&out.join("records.csv"), records_csv(&report.records).as_bytes())?;
    crate::io::atomic_write(&out.join("report.md"), markdown(&report).as_bytes())?;
    crate::io::atomic_write(&out.join("report.html"), html::page(&report, out).as_bytes())?;
    Ok(())
}

/// Where the families of a cell disagree, one line per target that has something to say: which family finds more
/// than which (its 95% interval above 0, the other's estimate below that interval), in how many rows and where
/// most; and rows whose largest estimate has an interval reaching 0 where another family's stays above it (the
/// largest estimate is then not the most certain). See [`interpret::family_readings`].
pub fn reading(rows: &[LayerRow], families: &[String]) -> Vec<String> {
    interpret::family_readings(rows, families).iter().map(ToString::to_string).collect()
}

/// Where an attack and the families tell different stories about the input, one line each: an attack that
/// reconstructs (its PSNR at least 3 dB above the mean-image guess, which reads no gradient) where the `best`
/// family's interval for the layers it read reaches 0, or bits with an interval above 0 where the attack comes no
/// closer than the guess (within 1 dB). An model-backed family's reconstructions read one layer or group (its
/// `layer`); the reference attack reads all shared layers. See [`interpret::attack_disagreements`].
pub fn attack_reading(records: &[&Record], attacks: &[&AttackRecord]) -> Vec<String> {
    interpret::attack_disagreements(records, attacks).iter().map(ToString::to_string).collect()
}

#[cfg(test)]
mod tests;
