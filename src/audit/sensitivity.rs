//! The sensitivity part of a cell: input sensitivity per layer, latent-attribute sensitivity per layer, and their
//! rank agreement with the cell's V-information.

use anyhow::Result;

use super::config::{AuditConfig, Cell, SENSITIVITY_KEYS};
use super::{Agreement, CellKeys, Record, SensitivityRecord, BEST};
use crate::data::{Dataset, Split};
use crate::error::rename_params;
use crate::gradients::updates::SharedUpdates;
use crate::measure::sensitivity::{
    input_sensitivity, latent_sensitivity, rank_agreement, InputSensitivityConfig, LatentConfig,
};
use crate::models::Model;
use crate::progress::Progress;

/// Bits per single layer for one target and family (or `best`), as (layer, bits).
fn bits_column(records: &[Record], target: &str, family: &str, layers: &[String]) -> Vec<(String, f64)> {
    records
        .iter()
        .filter(|r| r.target == target && r.family == family && layers.contains(&r.layer))
        .map(|r| (r.layer.clone(), r.bits))
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub fn measure(
    config: &AuditConfig,
    dataset: &Dataset,
    model: &Model,
    split: &Split,
    cell: &Cell,
    updates: &SharedUpdates,
    records: &[Record],
    keys: &CellKeys,
    targets: &[String],
) -> Result<(Vec<SensitivityRecord>, Vec<Agreement>, Vec<String>)> {
    let (mut rows, mut agreement, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    if !config.measure.sensitivity {
        return Ok((rows, agreement, notes));
    }
    // The layers' bits are the `best` family's: the most any family found in each layer.
    let family = BEST.to_string();
    let shared: Vec<String> = updates.layers.iter().map(|l| l.name.clone()).collect();
    let row = |layer: &str, target: &str, kind: &str, value: f64, ci: [f64; 2]| SensitivityRecord {
        keys: keys.clone(),
        layer: layer.to_string(),
        target: target.to_string(),
        kind: kind.to_string(),
        value,
        ci95: ci,
    };

    if targets.iter().any(|t| t == "input") {
        // The first victims of the cell's updates, so sensitivity and V-information look at the same samples.
        let n = config.measure.sensitivity_samples.min(updates.num_updates());
        let idx = updates.victim_index.narrow(0, 0, n);
        let x = split.inputs.index_select(0, &idx).to_kind(model.kind());
        let y = split.labels.index_select(0, &idx);
        // The cell's dropout already lives in the model (`run_cell` sets its rate); the rest acts on the update.
        let defenses = cell.update_defenses();
        let sens_config = InputSensitivityConfig {
            probes: config.measure.probes,
            layers: Some(shared.clone()),
            defenses,
            seed: config.seed,
            ..Default::default()
        };
        let report = input_sensitivity(model, &x, &y, &sens_config, Progress::HIDDEN)
            .map_err(|e| rename_params(e, SENSITIVITY_KEYS))?;
        for note in &report.defenses.not_applied {
            notes.push(format!("input sensitivity: {} not applied: {}", note.defense, note.note));
        }
        for l in &report.layers {
            rows.push(row(&l.name, "input", "jacobian_norm", l.jacobian_norm.value, l.jacobian_norm.ci));
            rows.push(row(&l.name, "input", "relative", l.relative.value, l.relative.ci));
            rows.push(row(&l.name, "input", "per_parameter", l.per_parameter.value, l.per_parameter.ci));
        }
        let bits = bits_column(records, "input", &family, &shared);
        for kind in ["relative", "jacobian_norm"] {
            let column: Vec<(String, f64)> = report.column(kind)?;
            let a = rank_agreement(&column, &bits).ok();
            agreement.push(Agreement {
                keys: keys.clone(),
                target: "input".into(),
                kind: kind.into(),
                family: family.clone(),
                spearman: a.as_ref().map(|a| a.spearman).filter(|s| s.is_finite()),
                layers: a.map(|a| a.layers.len()).unwrap_or(0),
            });
        }
    }

    for target in targets.iter().filter(|t| t.starts_with("attribute:")) {
        let name = &target["attribute:".len()..];
        let column = dataset.attribute_index(name)?;
        let latent_config = LatentConfig { k: config.measure.latent_k, seed: config.seed, ..Default::default() };
        let report = match latent_sensitivity(updates, column, name, None, &latent_config, Progress::HIDDEN) {
            Ok(r) => r,
            Err(e) => {
                let e = rename_params(e, SENSITIVITY_KEYS);
                notes.push(format!("latent sensitivity of {name} not measured: {e:#}"));
                continue;
            }
        };
        for l in &report.layers {
            rows.push(row(&l.name, target, "subspace_distance", l.subspace_distance.value, l.subspace_distance.ci));
            rows.push(row(&l.name, target, "spread_ratio", l.spread_ratio.value, l.spread_ratio.ci));
        }
        let bits = bits_column(records, target, &family, &shared);
        for kind in ["subspace_distance", "spread_ratio"] {
            let a = rank_agreement(&report.column(kind)?, &bits).ok();
            agreement.push(Agreement {
                keys: keys.clone(),
                target: target.clone(),
                kind: kind.into(),
                family: family.clone(),
                spearman: a.as_ref().map(|a| a.spearman).filter(|s| s.is_finite()),
                layers: a.map(|a| a.layers.len()).unwrap_or(0),
            });
        }
    }
    Ok((rows, agreement, notes))
}
