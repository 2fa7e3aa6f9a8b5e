//! Measuring one cell: the shared updates of the cell's checkpoint under its defences, then V-information per
//! layer, group and all layers (every family, and `best`), localisation, sensitivity with its rank agreement, and an
//! optional reference attack.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tch::Tensor;

use super::config::{AuditConfig, Cell, ATTACK_KEYS, SENSITIVITY_KEYS, UPDATE_KEYS};
use super::{add_best, AttackRecord, CellKeys, CellResult, LocalisationRecord, Record, BEST};
use crate::data::{Dataset, Split};
use crate::defenses;
use crate::error::rename_params;
use crate::gradients::updates::{compute_updates, SharedUpdates, UpdateConfig};
use crate::measure::bounds::{excess, fisher_per_layer, upper_bound, ReleaseNoise};
use crate::measure::families::{Behind, ReconstructionScore, Setup};
use crate::measure::groups::layer_groups;
use crate::measure::layerwise::{layerwise, Layerwise};
use crate::measure::localisation::{localise, refit_family};
use crate::measure::targets::{resolve, target_names, NamedTarget, TargetName};
use crate::measure::vinfo::EstimateOptions;
use crate::models::Model;
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

/// What every stage of a cell reads: the audit's configuration, the cell, its data and model, and where it writes.
pub(super) struct CellContext<'a> {
    pub config: &'a AuditConfig,
    pub cell: &'a Cell,
    pub dataset: &'a Dataset,
    /// The split the victims come from (`measure.split`).
    pub split: &'a Split,
    pub model: Model,
    pub out: &'a Path,
    pub progress: Progress,
}

/// A cell's shared updates and what they were computed with.
pub(super) struct CellUpdates {
    pub config: UpdateConfig,
    pub updates: SharedUpdates,
    pub keys: CellKeys,
    /// The targets of `measure.targets`, with the victims' values in `updates`.
    pub targets: Vec<NamedTarget>,
}

/// Measures one cell of the audit writing into `out` (attack outputs go to `cells/<key>-attack/`), stage by stage:
/// the model, the shared updates, the V-information of every layer, group, target and family with its bounds, the
/// localisation, the sensitivity, the attacks.
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
    let (ctx, mut notes) = prepare(config, dataset, saved, cell, out, progress)?;
    let cu = compute_cell_updates(&ctx, saved, key)?;
    let (records, measured) = measure_information(&ctx, &cu)?;
    notes.extend(measured.notes);
    let mut attacks = family_galleries(&ctx, &cu, measured.image_scores)?;
    let localisation = localise_targets(&ctx, &cu, &records)?;
    let targets: Vec<String> = cu.targets.iter().map(|t| t.name.to_string()).collect();
    let sensitivity = super::sensitivity::measure(&ctx, &cu, &records, &targets)?;
    notes.extend(sensitivity.notes);
    attacks.extend(run_attack(&ctx, &cu.keys)?);
    if let Some(method) = config.measure.attack.filter(|_| !ctx.model.spec.takes_images()) {
        notes.push(format!("measure.attack = \"{method}\" did not run: the reference attacks reconstruct images"));
    }
    Ok(CellResult {
        keys: cu.keys,
        cell: cell.clone(),
        records,
        sensitivity: sensitivity.rows,
        agreement: sensitivity.agreement,
        layer_order: sensitivity.layer_order,
        localisation,
        attacks,
        notes,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The cell's model (the run's checkpoint at the cell's epoch, with the cell's dropout) and split, and the notes on
/// what the configuration asked for and the data could not give.
fn prepare<'a>(
    config: &'a AuditConfig,
    dataset: &'a Dataset,
    saved: &SavedRun,
    cell: &'a Cell,
    out: &'a Path,
    progress: Progress,
) -> Result<(CellContext<'a>, Vec<String>)> {
    let mut model = saved.model_at(cell.epoch)?;
    if (model.spec.dropout.rate - cell.dropout).abs() > 0.0 {
        // An external run trained without this dropout: the rate acts while the update is computed.
        model = model.with_dropout(cell.dropout)?;
    }
    let split = dataset.split(&config.measure.split).context("measure.split")?;
    let mut notes = model.gradient_notes();
    let samples = config.training.samples;
    if config.training.run.is_none() && samples > dataset.train.len() {
        notes.push(format!(
            "training.samples is {samples}, but {} has {} training samples: the model trained on all of them",
            dataset.name,
            dataset.train.len()
        ));
    }
    if config.measure.updates > split.len() {
        notes.push(format!(
            "measure.updates is {}, but the {} split of {} has {} samples: {} updates (one per victim)",
            config.measure.updates,
            config.measure.split,
            dataset.name,
            split.len(),
            split.len()
        ));
    }
    Ok((CellContext { config, cell, dataset, split, model, out, progress }, notes))
}

/// The shared updates of the cell's victims under its defences, keeping the full gradients of the layers that a
/// configured family reads in full, and the cell's keys.
fn compute_cell_updates(ctx: &CellContext, saved: &SavedRun, key: &str) -> Result<CellUpdates> {
    let (config, cell, model) = (ctx.config, ctx.cell, &ctx.model);
    // A split smaller than `measure.updates` (LFW crops has 160 training faces) gives each of its samples once.
    let num_updates = config.measure.updates.min(ctx.split.len());
    let families = &config.measure.families;
    let update_config = UpdateConfig {
        num_updates,
        batch_size: cell.batch_size,
        seed: config.seed,
        defenses: cell.update_defenses(),
        layers: None,
        sketch_kind: config.measure.sketch,
        sketch_dim: config.measure.sketch_dim,
        // Large layers are measured on their sketch only, except where a family reads the full gradient.
        full_max_params: config.measure.sketch_dim,
        full_layers: model
            .layers()
            .iter()
            .filter(|l| families.iter().any(|f| f.needs_full_gradient(&l.kind)))
            .map(|l| l.name.clone())
            .collect(),
        stream_offset: 0,
        chunk_samples: None,
    };
    let dp =
        defenses::dp_record(&update_config.defenses, update_config.batch_size, ctx.dataset.train.len(), 1e-5, None)?;
    let updates =
        compute_updates(model, ctx.split, &update_config, ctx.progress).map_err(|e| rename_params(e, UPDATE_KEYS))?;
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
    let names = target_names(&config.measure.targets, &ctx.dataset.attributes).context("measure.targets")?;
    let targets = resolve(&names, &ctx.dataset.attributes, &updates).context("measure.targets")?;
    Ok(CellUpdates { config: update_config, updates, keys, targets })
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

/// The V-information of every layer, group and all layers, for every target and family, with a `best` record
/// per layer and target and each record's upper bound; and what the model-backed families showed of their work.
fn measure_information(ctx: &CellContext, cu: &CellUpdates) -> Result<(Vec<Record>, Layerwise)> {
    let (config, updates) = (ctx.config, &cu.updates);
    let names: Vec<TargetName> = cu.targets.iter().map(|t| t.name.clone()).collect();
    let groups = layer_groups(updates, &config.measure.layers, &config.measure.groups, config.measure.all_layers)
        .map_err(|e| rename_params(e, super::config::MEASURE_KEYS))?;
    let behind =
        Behind { model: &ctx.model, split: ctx.split, update_config: &cu.config, attributes: &ctx.dataset.attributes };
    let setup = Setup { updates, behind: Some(behind), targets: &names, seed: config.seed, progress: ctx.progress };
    let measured = layerwise(&setup, &groups, &cu.targets, &config.measure.families, &estimate_options(config))
        .map_err(|e| rename_params(e, UPDATE_KEYS))?;
    let num_updates = updates.num_updates() as usize;
    let records = measured.rows.iter().map(|row| Record::measured(&cu.keys, row, num_updates)).collect();
    let mut records = add_best(records);
    let noise = ReleaseNoise::of(&cu.config.defenses, ctx.cell.batch_size)?;
    for t in &names {
        let classes = target_classes(ctx.dataset, t)?;
        if let Some(b) = upper_bound(noise.as_ref(), classes) {
            for r in records.iter_mut().filter(|r| r.target == t.to_string()) {
                r.upper_bits = Some(b.bits);
                r.bound = Some(b.bound.to_string());
            }
        }
    }
    flag_excesses(&mut records);
    Ok((records, measured))
}

/// Per target other than the label: where its `best` bits sit, and the fewest top layers whose protection leaves
/// the rest under `measure.localisation_fraction`, measured with the refit family [`refit_family`] chooses.
fn localise_targets(ctx: &CellContext, cu: &CellUpdates, records: &[Record]) -> Result<Vec<LocalisationRecord>> {
    let (config, updates) = (ctx.config, &cu.updates);
    let mut localisation = Vec::new();
    if updates.layers.len() < 2 {
        return Ok(localisation);
    }
    for t in cu.targets.iter().filter(|t| t.name != TargetName::Label) {
        let target = t.name.to_string();
        let best_of = |layer: &str| records.iter().find(|r| r.layer == layer && r.target == target && r.family == BEST);
        let single: Vec<(String, f64)> =
            updates.layers.iter().filter_map(|l| best_of(&l.name).map(|r| (l.name.clone(), r.bits))).collect();
        let all = best_of("all");
        // The family that found the most in all layers together (the source of the `best` "all" record), or
        // without an "all" row in the most leaking single layer.
        let top_single =
            updates.layers.iter().filter_map(|l| best_of(&l.name)).max_by(|a, b| a.bits.total_cmp(&b.bits));
        let source = all.or(top_single).and_then(|r| r.source.as_deref());
        let Some(family) = refit_family(&config.measure.families, source) else { continue };
        let found = localise(
            updates,
            t,
            BEST,
            family,
            &single,
            all.map(|r| r.bits),
            config.measure.localisation_fraction,
            &estimate_options(config),
        )?;
        localisation.push(LocalisationRecord { keys: cu.keys.clone(), localisation: found });
    }
    Ok(localisation)
}

/// The number of values a categorical target can take in the dataset (the label's classes; an attribute's distinct
/// values over both splits), None for the input.
fn target_classes(dataset: &Dataset, target: &TargetName) -> Result<Option<usize>> {
    let name = match target {
        TargetName::Input => return Ok(None),
        TargetName::Label => return Ok(Some(dataset.num_classes() as usize)),
        TargetName::Attribute(name) => name,
    };
    let column = dataset.attribute_index(name)? as i64;
    let values =
        Tensor::cat(&[dataset.train.attributes.select(1, column), dataset.test.attributes.select(1, column)], 0);
    Ok(Some(values.unique_dim(0, false, false, false).0.size()[0] as usize))
}

/// Warns on every record whose lower confidence bound lies above its upper bound: an estimator error, or a null
/// model that misfits the targets by at least the excess (`docs/bounds.md`).
pub fn flag_excesses(records: &mut [Record]) {
    for r in records.iter_mut() {
        let Some(upper) = r.upper_bits else { continue };
        if let Some(over) = excess(r.ci95[0], upper) {
            r.warnings.push(format!(
                "inconsistent with the {} bound: the lower 95% bound {:.3} bits exceeds the most any attacker can \
                 get, {upper:.3} bits, by {over:.3} bits (an estimator error, or a null model that misfits the \
                 targets by at least that much; see docs/bounds.md)",
                r.bound.as_deref().unwrap_or("upper"),
                r.ci95[0],
            ));
        } else if let Some(note) =
            crate::measure::bounds::above_bound(r.bits, r.ci95, upper, r.bound.as_deref().unwrap_or("upper"))
        {
            r.warnings.push(note);
        }
    }
}

/// The mean PSNR of the split's mean image as a guess of each of `victims` (images in [0, 1]): the score of an
/// attacker who reads no gradient. None for non-image data or no victims.
fn guess_psnr(split: &Split, victims: &Tensor) -> Result<Option<f64>> {
    if victims.dim() != 4 || victims.size()[0] == 0 || split.inputs.dim() != 4 {
        return Ok(None);
    }
    let victims = victims.to_kind(tch::Kind::Double);
    let mean = split.inputs.to_kind(tch::Kind::Double).mean_dim([0i64].as_slice(), true, tch::Kind::Double);
    let guess = mean.expand_as(&victims).contiguous();
    let scores: Vec<f64> =
        crate::measure::image_metrics::psnr(&guess, &victims, 1.0)?.into_iter().filter(|v| v.is_finite()).collect();
    Ok((!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64))
}

/// Victims shown per analytic gallery.
const GALLERY_VICTIMS: i64 = 8;

/// The model-backed families' reconstructions, scored against the victims, each with a gallery of the first
/// victims (originals above, reconstructions below): `method` is `FAMILY:LAYER`, `layer` the layer or group read.
fn family_galleries(
    ctx: &CellContext,
    cu: &CellUpdates,
    scores: Vec<(String, ReconstructionScore)>,
) -> Result<Vec<AttackRecord>> {
    if scores.is_empty() {
        return Ok(Vec::new());
    }
    let (victims, keys) = (&cu.updates.victim_input, &cu.keys);
    let guess = guess_psnr(ctx.split, victims)?;
    let dir = super::cache::attack_dir(ctx.out, &keys.cell);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let mut records = Vec::new();
    for (family, s) in scores {
        let shown = GALLERY_VICTIMS.min(s.images.size()[0]);
        let file = format!("{}-{}.png", family.replace(':', "-"), s.layer);
        crate::measure::attacks::grid::write_grid(
            &dir.join(&file),
            &victims.narrow(0, 0, shown),
            &s.images.narrow(0, 0, shown),
            shown as usize,
            (0.0, 1.0),
        )?;
        records.push(AttackRecord {
            keys: keys.clone(),
            method: format!("{family}:{}", s.layer),
            layer: Some(s.layer.clone()),
            samples: s.samples,
            mse: s.mse,
            psnr: s.psnr,
            ssim: s.ssim,
            label_accuracy: None,
            image: format!("cells/{}-attack/{file}", keys.cell),
            guess_psnr: guess,
            psnr_bound: None,
            beats_bound: None,
        });
    }
    Ok(records)
}

/// The cell's reference attack, when `measure.attack` names one and the model takes images.
fn run_attack(ctx: &CellContext, keys: &CellKeys) -> Result<Vec<AttackRecord>> {
    use crate::measure::attacks::{self, AttackConfig, ShareConfig};
    let (config, model, split, cell, out, progress) =
        (ctx.config, &ctx.model, ctx.split, ctx.cell, ctx.out, ctx.progress);
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
    let fisher = attack_against_fisher(config, model, split, &share, &report)?;
    Ok(vec![AttackRecord {
        keys: keys.clone(),
        method: method.to_string(),
        layer: None,
        samples: report.updates.len(),
        mse: report.mean.mse,
        psnr: report.mean.psnr,
        ssim: report.mean.ssim,
        label_accuracy: Some(report.mean.label_accuracy),
        image: format!("cells/{}-attack/reconstructions.png", keys.cell),
        guess_psnr: guess_psnr(split, &report.originals)?,
        psnr_bound: fisher.map(|f| f.0),
        beats_bound: fisher.map(|f| f.1),
    }])
}

/// Under noise: the Fisher bound on the PSNR of each attacked victim from the layers the attack matched (mean over
/// victims), and how many reconstructions beat their own victim's bound. None without noise.
fn attack_against_fisher(
    config: &AuditConfig,
    model: &Model,
    split: &Split,
    share: &crate::measure::attacks::ShareConfig,
    report: &crate::measure::attacks::AttackReport,
) -> Result<Option<(f64, usize)>> {
    use crate::measure::sensitivity::{input_sensitivity, InputSensitivityConfig};
    let Some(noise) = ReleaseNoise::of(&share.defenses, share.batch_size)? else { return Ok(None) };
    if noise.fisher_caveat.is_some() {
        return Ok(None);
    }
    // (split index of the victim, PSNR of its reconstruction)
    let scored: Vec<(i64, f64)> =
        report.updates.iter().flat_map(|u| u.images.iter().map(move |im| (u.indices[im.original], im.psnr))).collect();
    if scored.is_empty() {
        return Ok(None);
    }
    let index = Tensor::from_slice(&scored.iter().map(|s| s.0).collect::<Vec<i64>>());
    let x = split.inputs.index_select(0, &index).to_kind(model.kind());
    let y = split.labels.index_select(0, &index);
    let sens_config = InputSensitivityConfig {
        probes: config.measure.probes,
        layers: Some(report.matched_layers.iter().map(|l| l.name.clone()).collect()),
        defenses: share.defenses.clone(),
        seed: config.seed,
        ..Default::default()
    };
    let sens = input_sensitivity(model, &x, &y, &sens_config, Progress::HIDDEN)
        .map_err(|e| rename_params(e, SENSITIVITY_KEYS))?;
    // The bound of the layers the attack read together: the `all` entry, or the one layer's own.
    let Some(read) = fisher_per_layer(&sens, noise.std, 0, config.seed).pop() else { return Ok(None) };
    let bounds: Vec<f64> = read.per_victim.iter().map(|b| b.psnr_bound).collect();
    let beats = scored.iter().zip(&bounds).filter(|((_, psnr), bound)| psnr > bound).count();
    Ok(Some((bounds.iter().sum::<f64>() / bounds.len() as f64, beats)))
}
