//! Reports of an audit: `report.json` (everything, flat arrays for pandas), `records.csv`, `report.md` and a
//! self-contained `report.html` with SVG plots. All written atomically.

mod html;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::audit::AuditManifest;
use crate::audit::{Agreement, AttackRecord, CellKeys, CellResult, LocalisationRecord, Record, SensitivityRecord};

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

/// One row per record, the same columns as `report.json`'s `records`.
pub fn records_csv(records: &[&Record]) -> String {
    let mut s = String::from(
        "cell,dataset,model,batch_size,epoch,dropout,defense,epsilon,test_accuracy,layer,num_params,features,feature_dim,target,family,\
         bits,ci95_low,ci95_high,bits_per_dim,r2,accuracy,n_train,n_test,constant_fits,warnings\n",
    );
    for r in records {
        let k = &r.keys;
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
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
            r.bits,
            r.ci95[0],
            r.ci95[1],
            opt(r.bits_per_dim),
            opt(r.r2),
            opt(r.accuracy),
            r.n_train,
            r.n_test,
            r.constant_fits,
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

/// Per finished cell and target (first family): the bits of all layers together and the most leaking layer.
pub struct OverviewRow<'a> {
    pub keys: &'a CellKeys,
    /// (target, bits of `all` (or of the single layer), its CI, the most leaking single layer and its bits).
    pub targets: Vec<(String, f64, [f64; 2], String, f64)>,
}

pub fn overview<'a>(report: &'a Report) -> (Vec<String>, Vec<OverviewRow<'a>>) {
    let family = report.records.first().map(|r| r.family.clone()).unwrap_or_default();
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
                    Some((t.clone(), all.bits, all.ci95, top.layer.clone(), top.bits))
                })
                .collect();
            OverviewRow { keys: &c.keys, targets: per_target }
        })
        .collect();
    (targets, rows)
}

/// The Markdown report: an overview of the cells when there are several, then per cell the layer table, the
/// localisation and the agreement.
pub fn markdown(report: &Report) -> String {
    let c = report.config;
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
    for line in report.skipped {
        let _ = writeln!(s, "_Skipped: {line}._\n");
    }
    if report.cells.len() > 1 {
        let (targets, rows) = overview(report);
        let family = report.records.first().map(|r| r.family.as_str()).unwrap_or_default();
        let _ = writeln!(
            s,
            "## Overview\n\nPer cell and target ({family} family): bits of all shared layers together, with the 95% \
             interval, and the most leaking single layer.\n"
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
                match row.targets.iter().find(|x| &x.0 == t) {
                    Some((_, bits, ci, top, top_bits)) => {
                        let _ = write!(s, " {bits:.2} {} | {top} ({top_bits:.2}) |", fmt_ci(*ci));
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
        let _ = writeln!(s, "| layer | parameters | features | target | family | bits | 95% CI | R^2 / accuracy |");
        let _ = writeln!(s, "|---|---:|---|---|---|---:|---|---:|");
        for r in report.records.iter().filter(|r| r.keys.cell == k.cell) {
            let extra = r.r2.or(r.accuracy).map(|v| format!("{v:.3}")).unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.2} | {} | {} |",
                r.layer,
                r.num_params,
                r.features,
                r.target,
                r.family,
                r.bits,
                fmt_ci(r.ci95),
                extra
            );
        }
        let fit_notes: Vec<String> = report
            .records
            .iter()
            .filter(|r| r.keys.cell == k.cell)
            .flat_map(|r| r.warnings.iter().map(move |w| format!("- {} / {} / {}: {w}", r.layer, r.target, r.family)))
            .collect();
        if !fit_notes.is_empty() {
            let _ = writeln!(s, "\n**Fit warnings**:\n\n{}", fit_notes.join("\n"));
        }
        let locs: Vec<_> =
            report.localisation.iter().filter(|r| r.keys.cell == k.cell).map(|r| &r.localisation).collect();
        if !locs.is_empty() {
            let _ = writeln!(s, "\n**Localisation** ({}):\n", locs[0].family);
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
                let _ = writeln!(
                    s,
                    "- {}: most in {}; protecting {} leaves {:.2} of {:.2} bits (target: under {:.0}%).",
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
            let _ = writeln!(s, "\n**Sensitivity vs V-information** (Spearman over layers):\n");
            for a in agree {
                let rho = a.spearman.map(|r| format!("{r:.2}")).unwrap_or_else(|| "n/a".into());
                let _ = writeln!(s, "- {} / {}: {rho} ({} layers)", a.target, a.kind, a.layers);
            }
        }
        for a in report.attacks.iter().filter(|a| a.keys.cell == k.cell) {
            let _ = writeln!(
                s,
                "\n**Attack {}** on {} updates: PSNR {:.1} dB, MSE {:.4}, label accuracy {:.0}%.",
                a.method,
                a.samples,
                a.psnr,
                a.mse,
                100.0 * a.label_accuracy
            );
        }
        for n in &cell.notes {
            let _ = writeln!(s, "\n_Note: {n}_");
        }
        s.push('\n');
    }
    s
}
