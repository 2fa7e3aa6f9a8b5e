//! Reports of an audit: `report.json` (everything, flat arrays for pandas), `records.csv`, `report.md` and a
//! self-contained `report.html` with SVG plots. All written atomically.

mod html;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::audit::AuditManifest;
use crate::audit::{
    Agreement, AttackRecord, CellKeys, CellResult, LayerOrderRecord, LocalisationRecord, Record, SensitivityRecord,
    BEST,
};

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

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// One row per record, the same columns as `report.json`'s `records` (`source` empty but for `best`).
pub fn records_csv(records: &[&Record]) -> String {
    let mut s = String::from(
        "cell,dataset,model,batch_size,epoch,dropout,defense,epsilon,test_accuracy,layer,num_params,features,feature_dim,target,family,\
         source,bits,ci95_low,ci95_high,bits_per_dim,r2,accuracy,n_train,n_test,constant_fits,upper_bits,bound,warnings\n",
    );
    for r in records {
        let k = &r.keys;
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            k.cell,
            csv_field(&k.dataset),
            csv_field(&k.model),
            k.batch_size,
            k.epoch,
            k.dropout,
            csv_field(&k.defense),
            opt(k.epsilon),
            k.test_accuracy,
            csv_field(&r.layer),
            r.num_params,
            r.features,
            r.feature_dim,
            csv_field(&r.target),
            csv_field(&r.family),
            csv_field(r.source.as_deref().unwrap_or_default()),
            r.bits,
            r.ci95[0],
            r.ci95[1],
            opt(r.bits_per_dim),
            opt(r.r2),
            opt(r.accuracy),
            r.n_train,
            r.n_test,
            r.constant_fits,
            opt(r.upper_bits),
            r.bound.as_deref().unwrap_or_default(),
            csv_field(&r.warnings.join("; "))
        );
    }
    s
}

fn fmt_ci(ci: [f64; 2]) -> String {
    format!("[{:.2}, {:.2}]", ci[0], ci[1])
}

/// The (dataset, model) pairs of the finished cells, in grid order.
pub fn pairs(report: &Report) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for c in &report.cells {
        let pair = (c.keys.dataset.clone(), c.keys.model.clone());
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    out
}

/// The title of a report: `MODEL on DATASET`, or how many pairs a study covers.
pub fn title(report: &Report) -> String {
    match pairs(report).as_slice() {
        [(dataset, model)] => format!("{model} on {dataset}"),
        [] => format!("{} on {}", report.config.model, report.config.dataset),
        many => {
            let datasets: BTreeSet<&str> = many.iter().map(|p| p.0.as_str()).collect();
            let models: BTreeSet<&str> = many.iter().map(|p| p.1.as_str()).collect();
            format!("{} models on {} datasets", models.len(), datasets.len())
        }
    }
}

/// The families of `records` in order of first appearance (the configuration's order), without `best`.
pub fn families<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in records {
        if r.family != BEST && !out.contains(&r.family) {
            out.push(r.family.clone());
        }
    }
    out
}

/// The families of a report in the configuration's order (a family without an estimate in a layer, such as the
/// analytic one in a convolution, would otherwise move behind the families that have one there).
pub fn configured_families(report: &Report) -> Vec<String> {
    let mut out = families(report.records.iter().copied());
    let position =
        |f: &String| report.config.measure.families.iter().position(|c| c.to_string() == *f).unwrap_or(usize::MAX);
    out.sort_by_key(position);
    out
}

/// Whose bits the overview and the plots show, and how to name it: `best` with several families, the family
/// itself with one (where `best` is the same numbers).
pub fn headline(report: &Report) -> (String, String) {
    match families(report.records.iter().copied()).as_slice() {
        [one] => (one.clone(), format!("{one} family")),
        [] => (BEST.into(), "best family".into()),
        many => (BEST.into(), format!("best of {} per layer", many.join(", "))),
    }
}

/// One (layer, target) of a cell with its families side by side.
pub struct LayerRow<'a> {
    pub layer: &'a str,
    pub num_params: i64,
    pub features: &'a str,
    pub target: &'a str,
    /// The record of each family, in the order of [`families`].
    pub by_family: Vec<Option<&'a Record>>,
    pub best: Option<&'a Record>,
}

/// The (layer, target) rows of one cell's `records`, in their order.
pub fn layer_rows<'a>(records: &[&'a Record], families: &[String]) -> Vec<LayerRow<'a>> {
    let mut rows: Vec<LayerRow<'a>> = Vec::new();
    for &r in records {
        let index = match rows.iter().position(|x| x.layer == r.layer && x.target == r.target) {
            Some(i) => i,
            None => {
                rows.push(LayerRow {
                    layer: &r.layer,
                    num_params: r.num_params,
                    features: &r.features,
                    target: &r.target,
                    by_family: vec![None; families.len()],
                    best: None,
                });
                rows.len() - 1
            }
        };
        let row = &mut rows[index];
        if r.family == BEST {
            row.best = Some(r);
        } else if let Some(f) = families.iter().position(|f| *f == r.family) {
            row.by_family[f] = Some(r);
        }
    }
    rows
}

/// The names of at most five layers, then how many more.
fn some_layers(layers: &[&str]) -> String {
    let shown = layers.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    match layers.len() {
        n if n > 5 => format!("{shown} and {} more", n - 5),
        _ => shown,
    }
}

/// Bits below which an estimate or a bound counts as 0: a constant fit measures about 1e-16 bits (rounding).
const ZERO_BITS: f64 = 1e-9;

/// The smallest difference the reading reports: two perfect label predictors have intervals of zero width (every
/// victim scores log2 C less the mixture's 0.001 bits), and a difference of 0.001 bits between them is not a
/// finding.
const READING_MIN_BITS: f64 = 0.01;

/// Where the families of a cell disagree, one line per target that has something to say: which family finds more
/// than which (its 95% interval above 0, the other's estimate below that interval), in how many rows and where
/// most; and rows whose largest estimate has an interval reaching 0 where another family's stays above it (the
/// largest estimate is then not the most certain).
pub fn reading(rows: &[LayerRow], families: &[String]) -> Vec<String> {
    let mut targets: Vec<&str> = Vec::new();
    for r in rows {
        if !targets.contains(&r.target) {
            targets.push(r.target);
        }
    }
    let mut lines = Vec::new();
    for t in targets {
        let of_target: Vec<&LayerRow> = rows.iter().filter(|r| r.target == t).collect();
        let mut clauses = Vec::new();
        for (ia, a) in families.iter().enumerate() {
            for (ib, b) in families.iter().enumerate().filter(|(ib, _)| *ib != ia) {
                let both: Vec<(&str, &Record, &Record)> =
                    of_target.iter().filter_map(|r| Some((r.layer, r.by_family[ia]?, r.by_family[ib]?))).collect();
                let more: Vec<&(&str, &Record, &Record)> = both
                    .iter()
                    .filter(|(_, ra, rb)| {
                        ra.ci95[0] > ZERO_BITS && rb.bits < ra.ci95[0] && ra.bits - rb.bits >= READING_MIN_BITS
                    })
                    .collect();
                let Some((layer, ra, rb)) =
                    more.iter().max_by(|x, y| (x.1.bits - x.2.bits).total_cmp(&(y.1.bits - y.2.bits)))
                else {
                    continue;
                };
                clauses.push(format!(
                    "{a} finds more than {b} in {} of {} rows, most in {layer} ({:.2} vs {:.2} bits)",
                    more.len(),
                    both.len(),
                    ra.bits,
                    rb.bits
                ));
            }
        }
        let uncertain: Vec<&str> = of_target
            .iter()
            .filter(|r| {
                r.best.is_some_and(|best| {
                    best.ci95[0] <= ZERO_BITS
                        && r.by_family
                            .iter()
                            .flatten()
                            .any(|o| Some(&o.family) != best.source.as_ref() && o.ci95[0] > ZERO_BITS)
                })
            })
            .map(|r| r.layer)
            .collect();
        if !uncertain.is_empty() {
            clauses.push(format!(
                "in {} the largest estimate's interval reaches 0 where another family's stays above it",
                some_layers(&uncertain)
            ));
        }
        if !clauses.is_empty() {
            lines.push(format!("{t}: {}", clauses.join("; ")));
        }
    }
    lines
}

/// An attack succeeds where its PSNR beats the mean-image guess by at least this many dB.
const ATTACK_SUCCEEDS_DB: f64 = 3.0;
/// An attack fails where its PSNR is within this many dB of the mean-image guess.
const ATTACK_FAILS_DB: f64 = 1.0;

/// Where an attack and the families tell different stories about the input, one line each: an attack that
/// reconstructs (its PSNR at least 3 dB above the mean-image guess, which reads no gradient) where the `best`
/// family's interval for the layers it read reaches 0, or bits with an interval above 0 where the attack comes no
/// closer than the guess (within 1 dB). A model-backed family's reconstructions read one layer or group (its
/// `layer`); the reference attack reads all shared layers.
pub fn attack_reading(records: &[&Record], attacks: &[&AttackRecord]) -> Vec<String> {
    let mut lines = Vec::new();
    for a in attacks {
        let Some(guess) = a.guess_psnr else { continue };
        let layer = a.layer.as_deref().unwrap_or("all");
        let Some(best) = records
            .iter()
            .find(|r| r.family == BEST && r.target == "input" && r.layer == layer && r.keys.cell == a.keys.cell)
        else {
            continue;
        };
        let gain = a.psnr - guess;
        if gain >= ATTACK_SUCCEEDS_DB && best.ci95[0] <= ZERO_BITS {
            lines.push(format!(
                "{}: reconstructs at {:.1} dB, {gain:.1} dB above the mean-image guess, but the best family finds \
                 {:.2} bits {} about the input from {layer}: the families understate this leak",
                a.method,
                a.psnr,
                best.bits,
                fmt_ci(best.ci95)
            ));
        } else if gain < ATTACK_FAILS_DB && best.ci95[0] > ZERO_BITS {
            lines.push(format!(
                "{}: {:.2} bits {} about the input from {layer}, but the reconstructions score {:.1} dB, within \
                 {ATTACK_FAILS_DB} dB of the mean-image guess ({guess:.1} dB): usable information this attack does not \
                 turn into an image",
                a.method,
                best.bits,
                fmt_ci(best.ci95),
                a.psnr
            ));
        }
    }
    lines
}

/// One target of an overview row.
pub struct OverviewEntry {
    pub target: String,
    /// Bits of `all` (or of the most leaking single layer without an `all` row), its CI and, for `best`, its family.
    pub all_bits: f64,
    pub all_ci: [f64; 2],
    pub all_source: Option<String>,
    /// The most leaking single layer, its bits and, for `best`, its family.
    pub top_layer: String,
    pub top_bits: f64,
    pub top_source: Option<String>,
}

/// Per finished cell and target (the [`headline`] family): the bits of all layers together and the most leaking
/// layer.
pub struct OverviewRow<'a> {
    pub keys: &'a CellKeys,
    pub targets: Vec<OverviewEntry>,
}

pub fn overview<'a>(report: &'a Report) -> (Vec<String>, Vec<OverviewRow<'a>>) {
    let (family, _) = headline(report);
    let mut targets: Vec<String> = Vec::new();
    for r in &report.records {
        if !targets.contains(&r.target) {
            targets.push(r.target.clone());
        }
    }
    let rows = report
        .cells
        .iter()
        .map(|c| {
            let rows: Vec<&&Record> =
                report.records.iter().filter(|r| r.keys.cell == c.keys.cell && r.family == family).collect();
            let per_target = targets
                .iter()
                .filter_map(|t| {
                    let of_target: Vec<&&Record> = rows.iter().copied().filter(|r| &r.target == t).collect();
                    let singles = of_target.iter().filter(|r| r.layer != "all" && !r.layer.contains('+'));
                    let top = singles.max_by(|a, b| a.bits.total_cmp(&b.bits))?;
                    let all = of_target.iter().find(|r| r.layer == "all").unwrap_or(top);
                    Some(OverviewEntry {
                        target: t.clone(),
                        all_bits: all.bits,
                        all_ci: all.ci95,
                        all_source: all.source.clone(),
                        top_layer: top.layer.clone(),
                        top_bits: top.bits,
                        top_source: top.source.clone(),
                    })
                })
                .collect();
            OverviewRow { keys: &c.keys, targets: per_target }
        })
        .collect();
    (targets, rows)
}

/// ` (family)` after a `best` value in a table with several families, nothing otherwise.
fn source_suffix(source: &Option<String>, several: bool) -> String {
    match source {
        Some(f) if several => format!(" ({f})"),
        _ => String::new(),
    }
}

/// The R^2 (continuous targets) or accuracy (categorical) of a record, 3 decimals.
fn fit_quality(r: &Record) -> String {
    r.r2.or(r.accuracy).map(|v| format!("{v:.3}")).unwrap_or_default()
}

/// The Markdown layer table of one cell. One family: a row per record, as `records.csv` has them (`best` would
/// repeat every row). Several: a row per layer and target with each family's bits and interval side by side,
/// then `best`, its `source`, and the best estimate's R^2 / accuracy.
fn markdown_layer_table(s: &mut String, records: &[&Record], families: &[String]) {
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
    for row in layer_rows(records, families) {
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

/// `0.72 (dp_capacity)`, or `-` where no bound applies.
fn fmt_bound(r: &Record) -> String {
    match (r.upper_bits, &r.bound) {
        (Some(b), Some(name)) => format!("{b:.2} ({name})"),
        _ => "-".into(),
    }
}

/// The records of the families (not `best`) that have an upper bound, and among them those whose lower confidence
/// bound exceeds it, with the excess: what the reports' bound checks show.
pub fn bound_check<'a>(records: impl IntoIterator<Item = &'a Record>) -> (usize, Vec<(&'a Record, f64)>) {
    let bounded: Vec<&Record> = records.into_iter().filter(|r| r.family != BEST && r.upper_bits.is_some()).collect();
    let over = bounded
        .iter()
        .filter_map(|r| crate::measure::bounds::excess(r.ci95[0], r.upper_bits?).map(|e| (*r, e)))
        .collect();
    (bounded.len(), over)
}

/// The bound check of one cell's records: how many have an upper bound and which lower confidence bounds exceed
/// theirs.
fn markdown_bound_check(s: &mut String, records: &[&Record]) {
    let (bounded, over) = bound_check(records.iter().copied());
    if bounded == 0 {
        return;
    }
    let over: Vec<String> =
        over.iter().map(|(r, e)| format!("{} / {} / {} by {e:.3} bits", r.layer, r.target, r.family)).collect();
    if over.is_empty() {
        let _ = writeln!(
            s,
            "\n**Bound check**: no lower 95% bound of the {bounded} estimates with an upper bound exceeds it."
        );
    } else {
        let _ = writeln!(
            s,
            "\n**Bound check: {} of {} estimates exceed their upper bound** (an estimator error, or a null model that \
             misfits the targets by at least the excess; see docs/bounds.md): {}.",
            over.len(),
            bounded,
            over.join("; ")
        );
    }
}

/// The cell's Fisher bounds per layer (`dfil`, `mse_bound`, `psnr_bound` sensitivity rows), as a table.
fn markdown_fisher_table(s: &mut String, rows: &[&SensitivityRecord]) {
    let layers: Vec<&str> = {
        let mut out: Vec<&str> = Vec::new();
        for r in rows.iter().filter(|r| r.kind == "dfil") {
            if !out.contains(&r.layer.as_str()) {
                out.push(&r.layer);
            }
        }
        out
    };
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

/// The Markdown report: an overview of the cells when there are several, then per cell the layer table, the
/// localisation and the agreement.
pub fn markdown(report: &Report) -> String {
    let c = report.config;
    let families = configured_families(report);
    let several = families.len() > 1;
    let mut s = String::new();
    let _ = writeln!(s, "# gradleak audit: {}\n", title(report));
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
    if several {
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
    if report.cells.len() > 1 {
        let (targets, rows) = overview(report);
        let (_, label) = headline(report);
        let with_source = if several { "; the family of each estimate in parentheses" } else { "" };
        let _ = writeln!(
            s,
            "## Overview\n\nPer cell and target ({label}): bits of all shared layers together, with the 95% \
             interval, and the most leaking single layer{with_source}.\n"
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
    for cell in &report.cells {
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
        let records: Vec<&Record> = report.records.iter().copied().filter(|r| r.keys.cell == k.cell).collect();
        markdown_layer_table(&mut s, &records, &families);
        if several {
            let lines = reading(&layer_rows(&records, &families), &families);
            if lines.is_empty() {
                let _ = writeln!(s, "\n**Reading**: no family finds more than another beyond its 95% interval.");
            } else {
                let _ = writeln!(
                    s,
                    "\n**Reading** (a family finds more than another where the other's estimate is below its 95% \
                     interval):\n"
                );
                for line in lines {
                    let _ = writeln!(s, "- {line}");
                }
            }
        }
        markdown_bound_check(&mut s, &records);
        let fit_notes: Vec<String> = records
            .iter()
            .filter(|r| r.family != BEST)
            .flat_map(|r| r.warnings.iter().map(move |w| format!("- {} / {} / {}: {w}", r.layer, r.target, r.family)))
            .collect();
        if !fit_notes.is_empty() {
            let _ = writeln!(s, "\n**Fit warnings**:\n\n{}", fit_notes.join("\n"));
        }
        let locs: Vec<_> =
            report.localisation.iter().filter(|r| r.keys.cell == k.cell).map(|r| &r.localisation).collect();
        if !locs.is_empty() {
            if several {
                let _ = writeln!(
                    s,
                    "\n**Localisation** (layers ranked by their `best` bits; what protection leaves is measured with \
                     the family named):\n"
                );
            } else {
                let family = families.first().unwrap_or(&locs[0].family);
                let _ = writeln!(s, "\n**Localisation** ({family}):\n");
            }
            for l in locs {
                if l.protect.is_empty() {
                    let _ = writeln!(
                        s,
                        "- {}: no usable information found ({:.2} bits for all layers together): nothing to localise.",
                        l.target, l.unprotected_bits
                    );
                    continue;
                }
                let top: Vec<String> = l.ranking.iter().take(3).map(|(n, b)| format!("{n} ({b:.1} bits)")).collect();
                let refit = if l.refit_family.is_empty() { &l.family } else { &l.refit_family };
                let fitted = if several { format!("; the rest measured with {refit}") } else { String::new() };
                let _ = writeln!(
                    s,
                    "- {}: most in {}; protecting {} leaves {:.2} of {:.2} bits (target: under {:.0}%{fitted}).",
                    l.target,
                    top.join(", "),
                    l.protect.join(" + "),
                    l.remaining_bits(),
                    l.unprotected_bits,
                    100.0 * l.fraction
                );
            }
        }
        let agree: Vec<_> = report.agreement.iter().filter(|a| a.keys.cell == k.cell).collect();
        if !agree.is_empty() {
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
        let sensitivity: Vec<&SensitivityRecord> =
            report.sensitivity.iter().copied().filter(|r| r.keys.cell == k.cell).collect();
        let order: Vec<&LayerOrderRecord> =
            report.layer_order.iter().copied().filter(|r| r.keys.cell == k.cell).collect();
        let mut kinds: Vec<(&str, &str)> = Vec::new();
        for o in &order {
            if !kinds.contains(&(o.target.as_str(), o.kind.as_str())) {
                kinds.push((&o.target, &o.kind));
            }
        }
        if !kinds.is_empty() {
            let _ = writeln!(
                s,
                "\n**Layer order by sensitivity** (`>`: the paired 95% interval of the difference over the same \
                 samples excludes 0; `~`: indistinguishable):\n"
            );
            for (target, kind) in kinds {
                let means: Vec<(String, f64)> = sensitivity
                    .iter()
                    .filter(|r| r.target == target && r.kind == kind)
                    .map(|r| (r.layer.clone(), r.value))
                    .collect();
                let pairs: Vec<_> = order
                    .iter()
                    .filter(|o| o.target == target && o.kind == kind)
                    .map(|o| o.comparison.clone())
                    .collect();
                let text = crate::measure::sensitivity::order_text(&means, &pairs);
                let _ = writeln!(s, "- {target} / {kind}: {text}");
            }
        }
        markdown_fisher_table(&mut s, &sensitivity);
        let cell_attacks: Vec<&AttackRecord> =
            report.attacks.iter().copied().filter(|a| a.keys.cell == k.cell).collect();
        for a in &cell_attacks {
            let bound = match (a.psnr_bound, a.beats_bound) {
                (Some(b), Some(n)) => format!(
                    "; Fisher bound {b:.1} dB (mean over the victims), beaten by {n} of {} reconstructions (the \
                     attack's priors make it biased; the bound holds for unbiased ones)",
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
        if cell_attacks.iter().any(|a| a.guess_psnr.is_some()) {
            let lines = attack_reading(&records, &cell_attacks);
            if lines.is_empty() {
                let _ = writeln!(
                    s,
                    "\n**Attacks against the bits**: they agree (no attack reconstructs where the families find \
                     nothing, and no family finds bits where an attack gets no closer than the mean image)."
                );
            } else {
                let _ = writeln!(s, "\n**Attacks against the bits** (they disagree):\n");
                for line in lines {
                    let _ = writeln!(s, "- {line}");
                }
            }
        }
        for n in &cell.notes {
            let _ = writeln!(s, "\n_Note: {n}_");
        }
        s.push('\n');
    }
    s
}
