//! Reports of an audit: `report.json` (everything, flat arrays for pandas), `records.csv`, `report.md` and a
//! self-contained `report.html` with SVG plots. All written atomically.

mod html;

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::audit::AuditManifest;
use crate::audit::{Agreement, AttackRecord, CellKeys, CellResult, Localisation, Record, SensitivityRecord};

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
    pub cells: Vec<CellSummary>,
    pub records: Vec<&'a Record>,
    pub sensitivity: Vec<&'a SensitivityRecord>,
    pub agreement: Vec<&'a Agreement>,
    pub localisation: Vec<&'a Localisation>,
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
        "cell,batch_size,epoch,dropout,defense,epsilon,test_accuracy,layer,num_params,features,feature_dim,target,family,\
         bits,ci95_low,ci95_high,bits_per_dim,r2,accuracy,n_train,n_test\n",
    );
    for r in records {
        let k = &r.keys;
        let _ = writeln!(
            s,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            k.cell,
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
            r.n_test
        );
    }
    s
}

fn fmt_ci(ci: [f64; 2]) -> String {
    format!("[{:.2}, {:.2}]", ci[0], ci[1])
}

/// The Markdown report: per cell, the layer table, the localisation and the agreement.
pub fn markdown(report: &Report) -> String {
    let c = report.config;
    let mut s = String::new();
    let _ = writeln!(s, "# gradleak audit: {} on {}\n", c.model, c.dataset);
    let _ = writeln!(
        s,
        "Seed {}; {} shared updates per cell from the {} split; families: {}; {} of {} cells finished.\n",
        c.seed,
        c.measure.updates,
        c.measure.split,
        c.measure.families.join(", "),
        report.cells.len(),
        report.cells_total
    );
    let _ = writeln!(
        s,
        "Bits are usable information (V-information, Xu et al. 2020) about the target from the layer's shared \
         gradient, on held-out victims, with a bootstrap 95% interval. `sketch` means a random projection of the \
         gradient was used (a lower bound).\n"
    );
    for cell in &report.cells {
        let k = &cell.keys;
        let eps = k.epsilon.map(|e| format!(", epsilon {e:.2}")).unwrap_or_default();
        let _ = writeln!(
            s,
            "## Cell {}: batch size {}, epoch {}, defence {}{eps}, test accuracy {:.2}%\n",
            k.cell,
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
        let locs: Vec<_> = report.localisation.iter().filter(|l| l.keys.cell == k.cell).collect();
        if !locs.is_empty() {
            let _ = writeln!(s, "\n**Localisation** ({}):\n", locs[0].family);
            for l in locs {
                let top: Vec<String> = l.ranking.iter().take(3).map(|(n, b)| format!("{n} ({b:.1} bits)")).collect();
                let last = l.steps.last().map(|st| st.remaining_bits).unwrap_or(f64::NAN);
                let _ = writeln!(
                    s,
                    "- {}: most in {}; protecting {} leaves {:.2} of {:.2} bits (target: under {:.0}%).",
                    l.target,
                    top.join(", "),
                    l.protect.join(" + "),
                    if l.protect.len() == l.ranking.len() { 0.0 } else { last },
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
