//! The files of an attack run: `attack.json`, `reconstructions.png`, `reconstructions.safetensors`.

use std::path::Path;

use anyhow::{Context, Result};
use tch::Tensor;

use super::grid;
use super::run::AttackReport;

/// Writes `attack.json`, `reconstructions.png` (originals above their reconstructions) and
/// `reconstructions.safetensors` (`originals`, `reconstructions`) into `dir`, atomically.
pub fn write_outputs(report: &AttackReport, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the output folder", dir.display()))?;
    let (lo, hi) = report.config.data_range;
    grid::write_grid(&dir.join("reconstructions.png"), &report.originals, &report.reconstructions, 10, (lo, hi))?;
    let named =
        [("originals", report.originals.contiguous()), ("reconstructions", report.reconstructions.contiguous())];
    crate::io::atomic_write_with(&dir.join("reconstructions.safetensors"), |tmp| {
        Tensor::write_safetensors(&named, tmp).map_err(Into::into)
    })?;
    crate::io::write_json(&dir.join("attack.json"), report)
}
