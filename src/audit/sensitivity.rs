//! The sensitivity part of a cell: input sensitivity per layer (with the Fisher bound on reconstruction where the
//! update is noised), latent-attribute sensitivity per layer, the layers' order from paired comparisons, and the
//! rank agreement with the cell's V-information, with its interval.

use anyhow::Result;

use super::cell::{CellContext, CellUpdates};
use super::config::SENSITIVITY_KEYS;
use super::{Agreement, LayerOrderRecord, Record, SensitivityRecord, BEST};
use crate::error::rename_params;
use crate::measure::bounds::{fisher_per_layer, ReleaseNoise};
use crate::measure::sensitivity::{
    agreement_verdict, input_sensitivity, latent_sensitivity, paired_comparisons, rank_agreement, spearman_interval,
    InputSensitivityConfig, LatentConfig, PerSample,
};
use crate::progress::Progress;

/// Bits per single layer for one target and family (or `best`), as (layer, bits).
fn bits_column(records: &[Record], target: &str, family: &str, layers: &[String]) -> Vec<(String, f64)> {
    records
        .iter()
        .filter(|r| r.target == target && r.family == family && layers.contains(&r.layer))
        .map(|r| (r.layer.clone(), r.bits))
        .collect()
}

/// Per-victim PVI per single layer for one target and family, for the rank agreement's interval.
fn pvi_columns(records: &[Record], target: &str, family: &str, layers: &[String]) -> Vec<PerSample> {
    records
        .iter()
        .filter(|r| r.target == target && r.family == family && layers.contains(&r.layer) && !r.pvi.is_empty())
        .map(|r| (r.layer.clone(), r.pvi.clone()))
        .collect()
}

/// What the sensitivity part of a cell measured.
#[derive(Default)]
pub struct SensitivityOutcome {
    pub rows: Vec<SensitivityRecord>,
    pub agreement: Vec<Agreement>,
    pub layer_order: Vec<LayerOrderRecord>,
    pub notes: Vec<String>,
}

/// The sensitivity part of a cell: its input and latent-attribute sensitivity for `targets`, and their agreement
/// with the cell's `records`.
pub(super) fn measure(
    ctx: &CellContext,
    cu: &CellUpdates,
    records: &[Record],
    targets: &[String],
) -> Result<SensitivityOutcome> {
    let (config, dataset, model, split, cell) = (ctx.config, ctx.dataset, &ctx.model, ctx.split, ctx.cell);
    let (updates, keys) = (&cu.updates, &cu.keys);
    let mut outcome = SensitivityOutcome::default();
    if !config.measure.sensitivity {
        return Ok(outcome);
    }
    let SensitivityOutcome { rows, agreement, layer_order, notes } = &mut outcome;
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
        // The Fisher bound needs noise on the release; its Jacobian is the one just estimated.
        match ReleaseNoise::of(&cell.update_defenses(), cell.batch_size)? {
            Some(noise) if noise.fisher_caveat.is_none() => {
                let images = model.spec.arch.needs_images();
                for f in fisher_per_layer(&report, noise.std, config.measure.bootstrap, config.seed) {
                    rows.push(row(&f.layer, "input", "dfil", f.dfil.value, f.dfil.ci));
                    rows.push(row(&f.layer, "input", "mse_bound", f.mse_bound.value, f.mse_bound.ci));
                    if images {
                        rows.push(row(&f.layer, "input", "psnr_bound", f.psnr_bound.value, f.psnr_bound.ci));
                    }
                }
            }
            Some(noise) => {
                notes.push(format!("Fisher bound not reported: {}", noise.fisher_caveat.unwrap_or_default()))
            }
            None => {}
        }
        let bits = bits_column(records, "input", &family, &shared);
        let pvi = pvi_columns(records, "input", &family, &shared);
        for kind in ["relative", "jacobian_norm"] {
            let column: Vec<(String, f64)> = report.column(kind)?;
            let per_sample: Vec<PerSample> = report
                .layers
                .iter()
                .map(|l| Ok((l.name.clone(), l.per_sample(kind)?.to_vec())))
                .collect::<Result<_>>()?;
            let a = rank_agreement(&column, &bits).ok();
            let ci = spearman_interval(&per_sample, &pvi, config.measure.bootstrap, config.seed);
            agreement.push(Agreement {
                keys: keys.clone(),
                target: "input".into(),
                kind: kind.into(),
                family: family.clone(),
                spearman: a.as_ref().map(|a| a.spearman).filter(|s| s.is_finite()),
                spearman_ci95: ci,
                verdict: ci.map(|ci| agreement_verdict(ci).to_string()),
                layers: a.map(|a| a.layers.len()).unwrap_or(0),
            });
            for comparison in paired_comparisons(&per_sample, config.measure.bootstrap, config.seed)? {
                layer_order.push(LayerOrderRecord {
                    keys: keys.clone(),
                    target: "input".into(),
                    kind: kind.into(),
                    comparison,
                });
            }
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
            // Latent sensitivity is a statistic of two groups of victims, not of single samples: no paired
            // resampling, so no interval.
            agreement.push(Agreement {
                keys: keys.clone(),
                target: target.clone(),
                kind: kind.into(),
                family: family.clone(),
                spearman: a.as_ref().map(|a| a.spearman).filter(|s| s.is_finite()),
                spearman_ci95: None,
                verdict: None,
                layers: a.map(|a| a.layers.len()).unwrap_or(0),
            });
        }
    }
    Ok(outcome)
}
