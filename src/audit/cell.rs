//! Measuring one cell: the shared updates of the cell's checkpoint under its defences, then V-information per
//! layer, group and all layers (every family, and `best`), localisation, sensitivity with its rank agreement, and an
//! optional reference attack.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tch::Tensor;

use super::config::{AuditConfig, Cell, ATTACK_KEYS, UPDATE_KEYS};
use super::{add_best, AttackRecord, CellKeys, CellResult, LocalisationRecord, Record, BEST};
use crate::data::{Dataset, Split};
use crate::defenses;
use crate::error::rename_params;
use crate::gradients::sketch::SketchKind;
use crate::gradients::updates::{compute_updates, UpdateConfig};
use crate::measure::attack_families::AnalyticFeatures;
use crate::measure::layerwise::{layer_groups, layerwise, resolve_targets, NamedTarget};
use crate::measure::localisation::localise;
use crate::measure::vinfo::{EstimateOptions, Family};
use crate::models::{LayerKind, Model};
use crate::progress::Progress;
use crate::train::SavedRun;

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

fn estimate_options(config: &AuditConfig) -> EstimateOptions {
    // The same victims are split the same way for every layer of a cell: differences between layers are not split
    // noise.
    EstimateOptions {
        seed: config.seed,
        protocol: config.protocol(),
        bootstrap: config.measure.bootstrap,
        repeats: config.measure.repeats,
        ..Default::default()
    }
}

/// Measures one cell of the audit writing into `out` (attack outputs go to `cells/<key>-attack/`).
pub fn run_cell(
    config: &AuditConfig,
    dataset: &Dataset,
    saved: &SavedRun,
    cell: &Cell,
    key: &str,
    out: &Path,
    progress: Progress,
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
    let mut notes = model.gradient_notes();
    if num_updates < config.measure.updates {
        notes.push(format!(
            "measure.updates is {}, but the {} split of {} has {} samples: {num_updates} updates (one per victim)",
            config.measure.updates,
            config.measure.split,
            dataset.name,
            split.len()
        ));
    }
    // Attack-backed families (analytic) read the full gradients of the fully connected layers and need the model.
    let attack_backed = config.measure.families.iter().any(|f| !f.reads_gradients());
    let update_config = UpdateConfig {
        num_updates,
        batch_size: cell.batch_size,
        seed: config.seed,
        defenses: cell.update_defenses(),
        layers: None,
        sketch_kind: SketchKind::Sparse,
        sketch_dim: config.measure.sketch_dim,
        // Large layers are measured on their sketch only: the full gradients would not be read, except the fully
        // connected layers' by the analytic family.
        full_max_params: config.measure.sketch_dim,
        full_layers: if attack_backed {
            model
                .layers()
                .iter()
                .filter(|l| matches!(l.kind, LayerKind::Linear { .. }))
                .map(|l| l.name.clone())
                .collect()
        } else {
            Vec::new()
        },
    };
    let dp = defenses::dp_record(&update_config.defenses, update_config.batch_size, dataset.train.len(), 1e-5, None)?;
    let updates =
        compute_updates(&model, split, &update_config, progress).map_err(|e| rename_params(e, UPDATE_KEYS))?;
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
    let families = &config.measure.families;
    let opts_v = estimate_options(config);
    let mut analytic = attack_backed.then(|| AnalyticFeatures::new(&model, &updates));
    let rows = layerwise(&updates, &groups, &targets, families, &opts_v, analytic.as_mut(), progress)?;
    let mut attacks = Vec::new();
    if let Some(a) = &analytic {
        notes.extend(a.notes());
        attacks.extend(analytic_galleries(a, &updates.victim_input, &keys, out)?);
    }
    let records = rows
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
            constant_fits: row.estimate.constant_fits,
            source: None,
            warnings: row.estimate.warnings.clone(),
        })
        .collect::<Vec<_>>();
    let records = add_best(records);

    let mut localisation = Vec::new();
    if updates.layers.len() >= 2 {
        for t in targets.iter().filter(|t| t.name != "label") {
            let best_of =
                |layer: &str| records.iter().find(|r| r.layer == layer && r.target == t.name && r.family == BEST);
            let single: Vec<(String, f64)> =
                updates.layers.iter().filter_map(|l| best_of(&l.name).map(|r| (l.name.clone(), r.bits))).collect();
            let all = best_of("all");
            // Layers are ranked by their `best` bits, but what the protected layers leave needs fits of one
            // family: the one that found the most in all layers together (the source of the `best` "all" record),
            // or without an "all" row in the most leaking single layer. Another family may find more in what is
            // left; the remaining bits are this family's (and the best single layer's), a lower bound.
            let top_single =
                updates.layers.iter().filter_map(|l| best_of(&l.name)).max_by(|a, b| a.bits.total_cmp(&b.bits));
            let source = all.or(top_single).and_then(|r| r.source.as_deref());
            // An attack-backed family needs the model to refit: the first gradient family stands in for it.
            let refit = |f: &&Family| f.reads_gradients();
            let Some(first) = families.iter().find(refit) else { continue };
            let family =
                families.iter().filter(refit).find(|f| Some(f.to_string().as_str()) == source).unwrap_or(first);
            let found = localise(
                &updates,
                t,
                BEST,
                family,
                &single,
                all.map(|r| r.bits),
                config.measure.localisation_fraction,
                &opts_v,
            )?;
            localisation.push(LocalisationRecord { keys: keys.clone(), localisation: found });
        }
    }
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
    attacks.extend(run_attack(config, &model, split, cell, &keys, out, progress)?);
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

/// Victims shown per analytic gallery.
const GALLERY_VICTIMS: i64 = 8;

/// The analytic attacker's reconstructions of each layer it read, as attack records (mean MSE, PSNR, SSIM over all
/// victims) with a gallery of the first victims: `cells/<key>-attack/analytic-<layer>.png`.
fn analytic_galleries(
    analytic: &AnalyticFeatures,
    victims: &Tensor,
    keys: &CellKeys,
    out: &Path,
) -> Result<Vec<AttackRecord>> {
    let scores = analytic.image_scores()?;
    let dir = super::cache::attack_dir(out, &keys.cell);
    if !scores.is_empty() {
        std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let mut records = Vec::new();
    for s in scores {
        let shown = GALLERY_VICTIMS.min(s.images.size()[0]);
        let file = format!("analytic-{}.png", s.layer);
        crate::measure::attacks::grid::write_grid(
            &dir.join(&file),
            &victims.narrow(0, 0, shown),
            &s.images.narrow(0, 0, shown),
            shown as usize,
            (0.0, 1.0),
        )?;
        records.push(AttackRecord {
            keys: keys.clone(),
            method: format!("analytic:{}", s.layer),
            samples: s.samples,
            mse: s.mse,
            psnr: s.psnr,
            ssim: s.ssim,
            label_accuracy: None,
            image: format!("cells/{}-attack/{file}", keys.cell),
        });
    }
    Ok(records)
}

/// The cell's reference attack, when `measure.attack` names one and the model takes images.
fn run_attack(
    config: &AuditConfig,
    model: &Model,
    split: &Split,
    cell: &Cell,
    keys: &CellKeys,
    out: &Path,
    progress: Progress,
) -> Result<Vec<AttackRecord>> {
    use crate::measure::attacks::{self, AttackConfig, ShareConfig};
    let Some(method) = config.measure.attack else { return Ok(Vec::new()) };
    if !model.spec.takes_images() {
        return Ok(Vec::new());
    }
    let mut attack_config = AttackConfig::new(method);
    attack_config.iterations = config.measure.attack_iterations;
    let share = ShareConfig {
        samples: config.measure.attack_samples as i64,
        batch_size: cell.batch_size,
        // The cell's dropout already lives in the model (see `run_cell`).
        defenses: cell.update_defenses(),
    };
    let report = attacks::run_attacks(model, split, &share, &attack_config, progress)
        .map_err(|e| rename_params(e, ATTACK_KEYS))?;
    let dir = super::cache::attack_dir(out, &keys.cell);
    attacks::write_outputs(&report, &dir)?;
    Ok(vec![AttackRecord {
        keys: keys.clone(),
        method: method.to_string(),
        samples: report.updates.len(),
        mse: report.mean.mse,
        psnr: report.mean.psnr,
        ssim: report.mean.ssim,
        label_accuracy: Some(report.mean.label_accuracy),
        image: format!("cells/{}-attack/reconstructions.png", keys.cell),
    }])
}
