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
use crate::gradients::updates::{compute_updates, UpdateConfig};
use crate::measure::attack_families::{AttackBackedFeatures, ReconstructionScore};
use crate::measure::bounds::{excess, fisher_per_layer, upper_bound, ReleaseNoise};
use crate::measure::decoder::{self, DecoderFeatures};
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
    let samples = config.training.samples;
    if config.training.run.is_none() && samples > dataset.train.len() {
        notes.push(format!(
            "training.samples is {samples}, but {} has {} training samples: the model trained on all of them",
            dataset.name,
            dataset.train.len()
        ));
    }
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
    let analytic = config.measure.families.contains(&Family::Analytic);
    let matching = config.measure.families.iter().any(|f| matches!(f, Family::Matching { .. }));
    let update_config = UpdateConfig {
        num_updates,
        batch_size: cell.batch_size,
        seed: config.seed,
        defenses: cell.update_defenses(),
        layers: None,
        sketch_kind: config.measure.sketch,
        sketch_dim: config.measure.sketch_dim,
        // Large layers are measured on their sketch only: the full gradients would not be read, except the fully
        // connected layers' by the analytic family.
        full_max_params: config.measure.sketch_dim,
        // The analytic family reads the fully connected layers' full gradients, a gradient-matching family every
        // layer's.
        full_layers: model
            .layers()
            .iter()
            .filter(|l| matching || (analytic && matches!(l.kind, LayerKind::Linear { .. })))
            .map(|l| l.name.clone())
            .collect(),
        stream_offset: 0,
        chunk_samples: None,
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
        .map_err(|e| rename_params(e, super::config::MEASURE_KEYS))?;
    let families = &config.measure.families;
    let opts_v = estimate_options(config);
    let mut attackers =
        attack_backed.then(|| AttackBackedFeatures::new(&model, &updates, families, config.seed, progress));
    if let (Some(a), Some(aux_updates)) = (attackers.as_mut(), decoder::aux_updates_of(families)) {
        let aux = decoder::auxiliary_updates(&model, split, &updates, &update_config, aux_updates, progress)
            .map_err(|e| rename_params(e, UPDATE_KEYS))?;
        let aux_targets =
            resolve_targets(&config.measure.targets, &dataset.attributes, &aux).context("measure.targets")?;
        a.decoder = Some(DecoderFeatures::new(&updates, aux, aux_targets, aux_updates, config.seed));
    }
    let rows = layerwise(&updates, &groups, &targets, families, &opts_v, attackers.as_mut(), progress)?;
    let mut attacks = Vec::new();
    if let Some(a) = &attackers {
        notes.extend(a.notes());
        let scores = a.image_scores()?;
        if !scores.is_empty() {
            let guess = guess_psnr(split, &updates.victim_input)?;
            attacks.extend(family_galleries(scores, &updates.victim_input, &guess, &keys, out)?);
        }
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
            upper_bits: None,
            bound: None,
            warnings: row.estimate.warnings.clone(),
            pvi: row.estimate.pvi_by_sample(num_updates as usize),
        })
        .collect::<Vec<_>>();
    let mut records = add_best(records);
    let noise = ReleaseNoise::of(&update_config.defenses, cell.batch_size)?;
    for t in &targets {
        let classes = target_classes(dataset, &t.name)?;
        if let Some(b) = upper_bound(noise.as_ref(), classes) {
            for r in records.iter_mut().filter(|r| r.target == t.name) {
                r.upper_bits = Some(b.bits);
                r.bound = Some(b.bound.to_string());
            }
        }
    }
    flag_excesses(&mut records);

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
    let sensitivity = super::sensitivity::measure(
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
    notes.extend(sensitivity.notes);
    attacks.extend(run_attack(config, &model, split, cell, &keys, out, progress)?);
    if let Some(method) = config.measure.attack.filter(|_| !model.spec.takes_images()) {
        notes.push(format!("measure.attack = \"{method}\" did not run: the reference attacks reconstruct images"));
    }
    Ok(CellResult {
        keys,
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

fn targets_names(targets: &[NamedTarget]) -> Vec<String> {
    targets.iter().map(|t| t.name.clone()).collect()
}

/// The number of values a categorical target can take in the dataset (the label's classes; an attribute's distinct
/// values over both splits), None for the input.
fn target_classes(dataset: &Dataset, target: &str) -> Result<Option<usize>> {
    if target == "label" {
        return Ok(Some(dataset.num_classes() as usize));
    }
    let Some(name) = target.strip_prefix("attribute:") else { return Ok(None) };
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

/// The attack-backed families' reconstructions, scored against the victims, each with a gallery of the first
/// victims (originals above, reconstructions below): `method` is `FAMILY:LAYER`, `layer` the layer or group read.
fn family_galleries(
    scores: Vec<(String, ReconstructionScore)>,
    victims: &Tensor,
    guess: &Option<f64>,
    keys: &CellKeys,
    out: &Path,
) -> Result<Vec<AttackRecord>> {
    let dir = super::cache::attack_dir(out, &keys.cell);
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
            guess_psnr: *guess,
            psnr_bound: None,
            beats_bound: None,
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
