//! `report.md`: the verdict first, then the numbers (an overview of the cells when there are several, then per
//! cell its layer table and what the findings say). One writer per section; the findings come from
//! [`super::interpret`] and their words from [`super::text`].

use std::fmt::Write as _;

use super::interpret::{self, BoundCheck, Protection};
use super::text::{self, fmt_ci};
use super::{CellSummary, Report};
use crate::audit::{AttackRecord, LayerOrderRecord, Record, SensitivityRecord, BEST};

/// The Markdown report.
pub fn markdown(report: &Report) -> String {
    let families = interpret::configured_families(report);
    let mut s = String::new();
    let _ = writeln!(s, "# gradleak audit: {}\n", text::title(report));
    verdict(&mut s, report);
    preamble(&mut s, report, &families);
    if report.cells.len() > 1 {
        overview(&mut s, report, families.len() > 1);
    }
    for cell in &report.cells {
        cell_section(&mut s, report, cell, &families);
    }
    s
}

/// What `gradleak audit` prints: the verdict, then the overview of a sweep or the section of its single cell.
pub fn summary(report: &Report) -> String {
    let families = interpret::configured_families(report);
    let mut s = String::new();
    verdict(&mut s, report);
    if report.cells.len() > 1 {
        overview(&mut s, report, families.len() > 1);
    } else if let Some(cell) = report.cells.first() {
        cell_section(&mut s, report, cell, &families);
    }
    s
}

/// The verdict: per dataset and model pair, what leaks, the tightest brackets, the layers to protect and the
/// defence that closes the leak.
fn verdict(s: &mut String, report: &Report) {
    let pairs = text::verdict_text(&interpret::verdict(report));
    if pairs.is_empty() {
        return;
    }
    s.push_str("## Verdict\n\n");
    for pair in pairs {
        let _ = writeln!(s, "{}:\n", pair.heading);
        for item in pair.items {
            let _ = writeln!(s, "- **{}**: {}", item.label, item.text);
            for line in item.lines {
                let _ = writeln!(s, "  - {line}");
            }
        }
        s.push('\n');
    }
}

/// What was measured and how to read the bits.
fn preamble(s: &mut String, report: &Report, families: &[String]) {
    let c = report.config;
    let _ = writeln!(
        s,
        "Seed {}; {} shared updates per cell from the {} split; families: {}; {} of {} cells finished.\n",
        c.seed,
        c.measure.updates,
        c.measure.split,
        c.measure.families.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", "),
        report.cells.len(),
        report.cells_total
    );
    let _ = writeln!(
        s,
        "Bits are usable information (V-information, Xu et al. 2020) about the target from the layer's shared \
         gradient, on held-out victims, with a bootstrap 95% interval. `sketch` means a random projection of the \
         gradient was used (a lower bound).\n"
    );
    if families.len() > 1 {
        let _ = writeln!(
            s,
            "Each family's estimate is a lower bound on the information in the gradient; `best` is, per layer and \
             target, the largest of them (with its interval and R^2 / accuracy; `source` names the family). Being \
             the largest of several estimates on the same victims it is slightly optimistic. The overview, the \
             localisation and the sensitivity agreement use `best`.\n"
        );
    }
    for line in report.skipped {
        let _ = writeln!(s, "_Skipped: {line}._\n");
    }
}

/// ` (family)` after a `best` value in a table with several families, nothing otherwise.
fn source_suffix(source: &Option<String>, several: bool) -> String {
    match source {
        Some(f) if several => format!(" ({f})"),
        _ => String::new(),
    }
}

/// The overview of a sweep: per cell and target, all layers' bits and the most leaking layer.
fn overview(s: &mut String, report: &Report, several: bool) {
    let (targets, rows) = interpret::overview(report);
    let label = text::headline_label(&interpret::headline(report));
    let with_source = if several { "; the family of each estimate in parentheses" } else { "" };
    let _ = writeln!(
        s,
        "## Overview\n\nPer cell and target ({label}): bits of all shared layers together, with the 95% interval, \
         and the most leaking single layer{with_source}.\n"
    );
    let mut header = String::from("| model | dataset | batch | epoch | defence | epsilon | test acc. |");
    let mut rule = String::from("|---|---|---:|---:|---|---:|---:|");
    for t in &targets {
        let _ = write!(header, " {t}: all layers | {t}: top layer |");
        rule.push_str("---:|---|");
    }
    let _ = writeln!(s, "{header}\n{rule}");
    for row in rows {
        let k = row.keys;
        let eps = k.epsilon.map(|e| format!("{e:.2}")).unwrap_or_else(|| "-".into());
        let _ = write!(
            s,
            "| {} | {} | {} | {} | {} | {eps} | {:.2}% |",
            k.model,
            k.dataset,
            k.batch_size,
            k.epoch,
            k.defense,
            100.0 * k.test_accuracy
        );
        for t in &targets {
            match row.targets.iter().find(|x| &x.target == t) {
                Some(e) => {
                    let _ = write!(
                        s,
                        " {:.2} {}{} | {} ({:.2}{}) |",
                        e.all_bits,
                        fmt_ci(e.all_ci),
                        source_suffix(&e.all_source, several),
                        e.top_layer,
                        e.top_bits,
                        e.top_source.as_deref().filter(|_| several).map(|f| format!(", {f}")).unwrap_or_default()
                    );
                }
                None => s.push_str(" | |"),
            }
        }
        s.push('\n');
    }
    s.push('\n');
}

/// One cell: its heading and layer table, then what its records, localisation, sensitivity and attacks say.
fn cell_section(s: &mut String, report: &Report, cell: &CellSummary, families: &[String]) {
    let k = &cell.keys;
    let eps = k.epsilon.map(|e| format!(", epsilon {e:.2}")).unwrap_or_default();
    let _ = writeln!(
        s,
        "## Cell {}: {} on {}, batch size {}, epoch {}, defence {}{eps}, test accuracy {:.2}%\n",
        k.cell,
        k.model,
        k.dataset,
        k.batch_size,
        k.epoch,
        k.defense,
        100.0 * k.test_accuracy
    );
    let several = families.len() > 1;
    let records = interpret::cell_records(report, &k.cell);
    layer_table(s, &records, families);
    if several {
        family_reading(s, &records, families);
    }
    bound_check(s, &interpret::bound_check(records.iter().copied()));
    fit_warnings(s, &records);
    localisation(s, report, &k.cell, families);
    agreement(s, report, &k.cell, several);
    let sensitivity: Vec<&SensitivityRecord> =
        report.sensitivity.iter().copied().filter(|r| r.keys.cell == k.cell).collect();
    layer_order(s, report, &k.cell, &sensitivity);
    fisher_table(s, &sensitivity);
    let attacks: Vec<&AttackRecord> = report.attacks.iter().copied().filter(|a| a.keys.cell == k.cell).collect();
    attack_lines(s, &attacks);
    attacks_against_bits(s, &records, &attacks);
    for n in &cell.notes {
        let _ = writeln!(s, "\n_Note: {n}_");
    }
    s.push('\n');
}

/// The R^2 (continuous targets) or accuracy (categorical) of a record, 3 decimals.
fn fit_quality(r: &Record) -> String {
    r.r2.or(r.accuracy).map(|v| format!("{v:.3}")).unwrap_or_default()
}

/// `0.72 (dp_capacity)`, or `-` where no bound applies.
fn fmt_bound(r: &Record) -> String {
    match (r.upper_bits, &r.bound) {
        (Some(b), Some(name)) => format!("{b:.2} ({name})"),
        _ => "-".into(),
    }
}

/// The layer table of one cell. One family: a row per record, as `records.csv` has them (`best` would repeat
/// every row). Several: a row per layer and target with each family's bits and interval side by side, then
/// `best`, its `source`, and the best estimate's R^2 / accuracy.
fn layer_table(s: &mut String, records: &[&Record], families: &[String]) {
    // An upper-bound column where any record of the cell has a bound.
    let bounded = records.iter().any(|r| r.upper_bits.is_some());
    let (bound_head, bound_rule) = if bounded { (" upper bound |", "---:|") } else { ("", "") };
    if families.len() <= 1 {
        let _ = writeln!(
            s,
            "| layer | parameters | features | target | family | bits | 95% CI | R^2 / accuracy |{bound_head}"
        );
        let _ = writeln!(s, "|---|---:|---|---|---|---:|---|---:|{bound_rule}");
        for r in records.iter().filter(|r| r.family != BEST) {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2} | {} | {} |{}",
                r.layer,
                r.num_params,
                r.features,
                r.target,
                r.family,
                r.bits,
                fmt_ci(r.ci95),
                fit_quality(r),
                if bounded { format!(" {} |", fmt_bound(r)) } else { String::new() }
            );
        }
        return;
    }
    let mut header = String::from("| layer | parameters | features | target |");
    let mut rule = String::from("|---|---:|---|---|");
    for f in families {
        let _ = write!(header, " {f}: bits [95% CI] |");
        rule.push_str("---:|");
    }
    let _ =
        writeln!(s, "{header} best | source | R^2 / accuracy (best) |{bound_head}\n{rule}---:|---|---:|{bound_rule}");
    for row in interpret::layer_rows(records, families) {
        let _ = write!(s, "| {} | {} | {} | {} |", row.layer, row.num_params, row.features, row.target);
        for r in &row.by_family {
            match r {
                Some(r) => {
                    let _ = write!(s, " {:.2} {} |", r.bits, fmt_ci(r.ci95));
                }
                // The family has no estimate here (the analytic family where there is no closed form).
                None => s.push_str(" - |"),
            }
        }
        match row.best {
            Some(b) => {
                let source = b.source.as_deref().unwrap_or_default();
                let _ = write!(s, " {:.2} | {source} | {} |", b.bits, fit_quality(b));
            }
            None => s.push_str(" | | |"),
        }
        if bounded {
            let _ = write!(s, " {} |", row.best.map(fmt_bound).unwrap_or_default());
        }
        s.push('\n');
    }
}

/// Where the families disagree beyond their intervals.
fn family_reading(s: &mut String, records: &[&Record], families: &[String]) {
    let rows = interpret::layer_rows(records, families);
    let readings = interpret::family_readings(&rows, families);
    if readings.is_empty() {
        let _ = writeln!(s, "\n**Reading**: no family finds more than another beyond its 95% interval.");
        return;
    }
    let _ = writeln!(
        s,
        "\n**Reading** (a family finds more than another where the other's estimate is below its 95% interval):\n"
    );
    for reading in readings {
        let _ = writeln!(s, "- {reading}");
    }
}

/// How many estimates have an upper bound, and which lower confidence bounds exceed theirs.
fn bound_check(s: &mut String, check: &BoundCheck) {
    if check.bounded == 0 {
        return;
    }
    let over: Vec<String> =
        check.over.iter().map(|(r, e)| format!("{} / {} / {} by {e:.3} bits", r.layer, r.target, r.family)).collect();
    if over.is_empty() {
        let _ = writeln!(
            s,
            "\n**Bound check**: no lower 95% bound of the {} estimates with an upper bound exceeds it.",
            check.bounded
        );
    } else {
        let _ = writeln!(
            s,
            "\n**Bound check: {} of {} estimates exceed their upper bound** (an estimator error, or a null model that \
             misfits the targets by at least the excess; see docs/bounds.md): {}.",
            over.len(),
            check.bounded,
            over.join("; ")
        );
    }
}

/// The families' fit warnings.
fn fit_warnings(s: &mut String, records: &[&Record]) {
    let notes: Vec<String> = records
        .iter()
        .filter(|r| r.family != BEST)
        .flat_map(|r| r.warnings.iter().map(move |w| format!("- {} / {} / {}: {w}", r.layer, r.target, r.family)))
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(s, "\n**Fit warnings**:\n\n{}", notes.join("\n"));
    }
}

/// Where each target's information sits and what protecting its top layers leaves.
fn localisation(s: &mut String, report: &Report, cell: &str, families: &[String]) {
    let locs: Vec<_> = report.localisation.iter().filter(|r| r.keys.cell == cell).map(|r| &r.localisation).collect();
    if locs.is_empty() {
        return;
    }
    let several = families.len() > 1;
    if several {
        let _ = writeln!(
            s,
            "\n**Localisation** (layers ranked by their `best` bits; what protection leaves is measured with the \
             family named):\n"
        );
    } else {
        let family = families.first().unwrap_or(&locs[0].family);
        let _ = writeln!(s, "\n**Localisation** ({family}):\n");
    }
    for l in locs {
        match interpret::protection(l) {
            Protection::Nothing { unprotected } => {
                let _ = writeln!(
                    s,
                    "- {}: no usable information found ({unprotected:.2} bits for all layers together): nothing to \
                     localise.",
                    l.target
                );
            }
            Protection::Layers { top, protect, remaining, unprotected, fraction, measured_with, .. } => {
                let top: Vec<String> = top.iter().map(|(n, b)| format!("{n} ({b:.1} bits)")).collect();
                let fitted = if several { format!("; the rest measured with {measured_with}") } else { String::new() };
                let _ = writeln!(
                    s,
                    "- {}: most in {}; protecting {} leaves {remaining:.2} of {unprotected:.2} bits (target: under \
                     {:.0}%{fitted}).",
                    l.target,
                    top.join(", "),
                    protect.join(" + "),
                    100.0 * fraction
                );
            }
        }
    }
}

/// The rank agreement of sensitivity and V-information.
fn agreement(s: &mut String, report: &Report, cell: &str, several: bool) {
    let agree: Vec<_> = report.agreement.iter().filter(|a| a.keys.cell == cell).collect();
    if agree.is_empty() {
        return;
    }
    let of = if several { ", `best` bits" } else { "" };
    let _ = writeln!(s, "\n**Sensitivity vs V-information** (Spearman over layers{of}):\n");
    for a in agree {
        let rho = a.spearman.map(|r| format!("{r:.2}")).unwrap_or_else(|| "n/a".into());
        let ci = match (a.spearman_ci95, &a.verdict) {
            (Some(ci), Some(v)) => format!(" {}: {v}", fmt_ci(ci)),
            _ => String::new(),
        };
        let _ = writeln!(s, "- {} / {}: {rho}{ci} ({} layers)", a.target, a.kind, a.layers);
    }
}

/// The layers ordered by sensitivity, from paired comparisons.
fn layer_order(s: &mut String, report: &Report, cell: &str, sensitivity: &[&SensitivityRecord]) {
    let order: Vec<&LayerOrderRecord> = report.layer_order.iter().copied().filter(|r| r.keys.cell == cell).collect();
    let mut kinds: Vec<(&str, &str)> = Vec::new();
    for o in &order {
        if !kinds.contains(&(o.target.as_str(), o.kind.as_str())) {
            kinds.push((&o.target, &o.kind));
        }
    }
    if kinds.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n**Layer order by sensitivity** (`>`: the paired 95% interval of the difference over the same samples \
         excludes 0; `~`: indistinguishable):\n"
    );
    for (target, kind) in kinds {
        let means: Vec<(String, f64)> = sensitivity
            .iter()
            .filter(|r| r.target == target && r.kind == kind)
            .map(|r| (r.layer.clone(), r.value))
            .collect();
        let pairs: Vec<_> =
            order.iter().filter(|o| o.target == target && o.kind == kind).map(|o| o.comparison.clone()).collect();
        let text = crate::measure::sensitivity::order_text(&means, &pairs);
        let _ = writeln!(s, "- {target} / {kind}: {text}");
    }
}

/// The cell's Fisher bounds per layer (`dfil`, `mse_bound`, `psnr_bound` sensitivity rows), as a table.
fn fisher_table(s: &mut String, rows: &[&SensitivityRecord]) {
    let mut layers: Vec<&str> = Vec::new();
    for r in rows.iter().filter(|r| r.kind == "dfil") {
        if !layers.contains(&r.layer.as_str()) {
            layers.push(&r.layer);
        }
    }
    if layers.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n**Fisher bound on reconstruction** (dFIL, Guo et al. 2022; mean over victims with a 95% interval: an \
         unbiased reconstruction has a mean squared error per input value of at least 1/dFIL, hence at most the PSNR \
         shown):\n"
    );
    let _ = writeln!(s, "| layer | dFIL | MSE bound | PSNR bound (dB) |\n|---|---:|---:|---:|");
    for layer in layers {
        let cell = |kind: &str| {
            rows.iter()
                .find(|r| r.layer == layer && r.kind == kind)
                .map(|r| format!("{:.3e} [{:.3e}, {:.3e}]", r.value, r.ci95[0], r.ci95[1]))
                .unwrap_or_else(|| "-".into())
        };
        let psnr = rows
            .iter()
            .find(|r| r.layer == layer && r.kind == "psnr_bound")
            .map(|r| format!("{:.1} {}", r.value, fmt_ci(r.ci95)))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(s, "| {layer} | {} | {} | {psnr} |", cell("dfil"), cell("mse_bound"));
    }
}

/// One line per attack (or model-backed family's reconstructions): its scores beside the mean-image guess's and
/// the Fisher bound's.
fn attack_lines(s: &mut String, attacks: &[&AttackRecord]) {
    for a in attacks {
        let bound = match (a.psnr_bound, a.beats_bound) {
            (Some(b), Some(n)) => format!(
                "; Fisher bound {b:.1} dB (mean over the victims), beaten by {n} of {} reconstructions (the attack's \
                 priors make it biased; the bound holds for unbiased ones)",
                a.samples as i64 * a.keys.batch_size
            ),
            _ => String::new(),
        };
        let guess = a.guess_psnr.map(|g| format!(" (the mean-image guess: {g:.1} dB)")).unwrap_or_default();
        let _ = writeln!(
            s,
            "\n**Attack {}** on {} updates: PSNR {:.1} dB{guess}, MSE {:.4}{}{bound}.",
            a.method,
            a.samples,
            a.psnr,
            a.mse,
            a.label_accuracy.map(|l| format!(", label accuracy {:.0}%", 100.0 * l)).unwrap_or_default()
        );
    }
}

/// Where the attacks and the families tell different stories about the input.
fn attacks_against_bits(s: &mut String, records: &[&Record], attacks: &[&AttackRecord]) {
    if !attacks.iter().any(|a| a.guess_psnr.is_some()) {
        return;
    }
    let disagreements = interpret::attack_disagreements(records, attacks);
    if disagreements.is_empty() {
        let _ = writeln!(
            s,
            "\n**Attacks against the bits**: they agree (no attack reconstructs where the families find nothing, and \
             no family finds bits where an attack gets no closer than the mean image)."
        );
        return;
    }
    let _ = writeln!(s, "\n**Attacks against the bits** (they disagree):\n");
    for d in disagreements {
        let _ = writeln!(s, "- {d}");
    }
}
