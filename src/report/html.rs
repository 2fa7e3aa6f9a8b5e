//! The self-contained HTML report: the verdict first, then tables and inline SVG plots, no scripts, no external
//! files (attack images are embedded as data URIs). One writer per section; the findings come from
//! [`super::interpret`], their words from [`super::text`] and the plots from [`super::svg`].

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;

use super::interpret::{self, OverviewRow};
use super::svg::{bars, heatmap, scatter, upper};
use super::{text, CellSummary, Report};
use crate::audit::{CellKeys, Record, BEST};
use crate::measure::bounds::DP_CAPACITY;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Escaped text with its `code` spans (between backticks, as in the Markdown) as `<code>`.
fn esc_code(s: &str) -> String {
    esc(s)
        .split('`')
        .enumerate()
        .map(|(i, part)| if i % 2 == 1 { format!("<code>{part}</code>") } else { part.to_string() })
        .collect()
}

/// DP cells whose brackets are drawn per pair, beyond the first cell.
const MAX_BRACKET_CELLS: usize = 4;

const HEAD: &str = "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gradleak audit</title><style>\
     body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;font-size:13px}\
     td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eef}td:first-child{text-align:left}\
     figure{margin:1em 0}figcaption{font-weight:bold;margin-bottom:4px}\
     #verdict{border-left:4px solid #4878a8;padding:0.2em 1em;background:#f6f8fb}#verdict li{margin:0.2em 0}</style></head><body>";

/// The HTML page of a report; `out` is where attack images are read from.
pub fn page(report: &Report, out: &Path) -> String {
    let mut s = String::from(HEAD);
    summary(&mut s, report);
    if report.cells.is_empty() {
        s.push_str("<p>No cell is finished yet.</p></body></html>");
        return s;
    }
    verdict(&mut s, report);
    let headline = interpret::headline(report);
    let (family, label) = (headline.family(), text::headline_label(&headline));
    let families = interpret::configured_families(report);
    let several = families.len() > 1;
    // Targets in the configuration's order (input, label, attributes).
    let (targets, overview_rows) = interpret::overview(report);
    let pairs = interpret::pairs(report);
    let several_pairs = pairs.len() > 1;

    if report.cells.len() > 1 {
        s.push_str("<h2>Overview</h2>");
        overview_table(&mut s, &targets, &overview_rows, several);
    } else {
        s.push_str("<h2>Layer-wise leakage</h2>");
    }
    for (dataset, model) in &pairs {
        if several_pairs || report.cells.len() > 1 {
            let _ = write!(s, "<h2>{} on {}</h2>", esc(model), esc(dataset));
        }
        let plots = PairPlots { report, dataset, model, family, label: &label, targets: &targets };
        plots.write(&mut s);
    }
    localisation(&mut s, report, several, several_pairs);
    reconstructions(&mut s, report, out, several_pairs);
    bound_check(&mut s, report, several_pairs);
    if several {
        side_by_side(&mut s, report, &families, several_pairs);
    } else {
        all_records(&mut s, report, several_pairs);
    }
    s.push_str("</body></html>\n");
    s
}

/// The title, what was measured, and the pairs left out.
fn summary(s: &mut String, report: &Report) {
    let c = report.config;
    let _ = write!(
        s,
        "<h1>gradleak audit: {}</h1><p id=\"summary\">Seed {}; {} shared updates per cell; {} of {} cells \
         finished. Bits: usable information about the target from one layer's shared gradient, held-out, with 95% \
         intervals.</p>",
        esc(&text::title(report)),
        c.seed,
        c.measure.updates,
        report.cells.len(),
        report.cells_total
    );
    for line in report.skipped {
        let _ = write!(s, "<p class=\"skipped\">Skipped: {}.</p>", esc(line));
    }
}

/// The verdict: per dataset and model pair, what leaks, the tightest brackets, the layers to protect and the
/// defence that closes the leak.
fn verdict(s: &mut String, report: &Report) {
    let pairs = text::verdict_text(&interpret::verdict(report));
    if pairs.is_empty() {
        return;
    }
    s.push_str("<section id=\"verdict\"><h2>Verdict</h2>");
    for pair in pairs {
        let _ = write!(s, "<p>{}:</p><ul>", esc(&pair.heading));
        for item in pair.items {
            let _ = write!(s, "<li><b>{}</b>: {}", esc(item.label), esc_code(&item.text));
            if !item.lines.is_empty() {
                s.push_str("<ul>");
                for line in &item.lines {
                    let _ = write!(s, "<li>{}</li>", esc_code(line));
                }
                s.push_str("</ul>");
            }
            s.push_str("</li>");
        }
        s.push_str("</ul>");
    }
    s.push_str("</section>");
}

/// A cell's grid coordinates, with its model and dataset when the report covers several.
fn cell_label(k: &CellKeys, several_pairs: bool) -> String {
    let coords = format!("b={} e={} {}", k.batch_size, k.epoch, k.defense);
    if several_pairs {
        format!("{} on {}, {coords}", k.model, k.dataset)
    } else {
        coords
    }
}

/// The overview table: per cell and target, all-layer bits and the most leaking layer (and with `several`
/// families, the family of each `best` value).
fn overview_table(s: &mut String, targets: &[String], rows: &[OverviewRow], several: bool) {
    s.push_str(
        "<table id=\"overview\"><tr><th>model</th><th>dataset</th><th>batch</th><th>epoch</th><th>defence</th>\
         <th>epsilon</th><th>test acc.</th>",
    );
    for t in targets {
        let _ = write!(s, "<th>{0}: all layers</th><th>{0}: top layer</th>", esc(t));
    }
    s.push_str("</tr>");
    for row in rows {
        let k = row.keys;
        let eps = k.epsilon.map(|e| format!("{e:.2}")).unwrap_or_else(|| "-".into());
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{eps}</td><td>{:.2}%</td>",
            esc(&k.model),
            esc(&k.dataset),
            k.batch_size,
            k.epoch,
            esc(&k.defense),
            100.0 * k.test_accuracy
        );
        for t in targets {
            match row.targets.iter().find(|x| &x.target == t) {
                Some(e) => {
                    let all_source = e.all_source.as_deref().filter(|_| several).map(|f| format!(" ({f})"));
                    let top_source = e.top_source.as_deref().filter(|_| several).map(|f| format!(", {f}"));
                    let _ = write!(
                        s,
                        "<td>{:.2} [{:.2}, {:.2}]{}</td><td>{} ({:.2}{})</td>",
                        e.all_bits,
                        e.all_ci[0],
                        e.all_ci[1],
                        esc(&all_source.unwrap_or_default()),
                        esc(&e.top_layer),
                        e.top_bits,
                        esc(&top_source.unwrap_or_default())
                    );
                }
                None => s.push_str("<td></td><td></td>"),
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
}

/// The plots of one dataset and model pair: bars of its first cell, the brackets of its DP cells, heatmaps across
/// its grid, sensitivity against V-information, and its privacy-utility trade-off. `family` is whose bits are
/// shown (see [`interpret::headline`]), `label` how to name it.
struct PairPlots<'r, 'a> {
    report: &'r Report<'a>,
    dataset: &'r str,
    model: &'r str,
    family: &'r str,
    label: &'r str,
    targets: &'r [String],
}

impl PairPlots<'_, '_> {
    fn write(&self, s: &mut String) {
        let Some(first) = self.report.cells.iter().find(|c| self.in_pair(&c.keys)) else { return };
        self.first_cell_bars(s, first);
        self.dp_brackets(s, first);
        self.heatmaps(s);
        self.sensitivity_scatter(s, first);
        self.tradeoff(s);
    }

    fn in_pair(&self, k: &CellKeys) -> bool {
        k.dataset == self.dataset && k.model == self.model
    }

    /// The shown family's records of one cell about one target.
    fn rows(&self, cell: &str, target: &str) -> Vec<&Record> {
        self.report
            .records
            .iter()
            .copied()
            .filter(|r| r.keys.cell == cell && r.target == target && r.family == self.family)
            .collect()
    }

    fn first_cell_bars(&self, s: &mut String, first: &CellSummary) {
        for t in self.targets {
            let rows = self.rows(&first.keys.cell, t);
            if !rows.is_empty() {
                let bracket = if rows.iter().any(|r| upper(r).is_some()) { "; red: the upper bound" } else { "" };
                s.push_str(&bars(
                    &format!("{t}: bits per layer ({}; cell {}){bracket}", self.label, cell_label(&first.keys, false)),
                    &rows,
                ));
            }
        }
    }

    /// The brackets of the DP cells (the first few): the estimate against the most any attacker can get.
    fn dp_brackets(&self, s: &mut String, first: &CellSummary) {
        let report = self.report;
        let dp_cells = report
            .cells
            .iter()
            .filter(|c| self.in_pair(&c.keys) && c.keys.cell != first.keys.cell)
            .filter(|c| {
                report.records.iter().any(|r| r.keys.cell == c.keys.cell && r.bound.as_deref() == Some(DP_CAPACITY))
            })
            .take(MAX_BRACKET_CELLS);
        for c in dp_cells {
            for t in self.targets {
                let rows = self.rows(&c.keys.cell, t);
                if !rows.is_empty() {
                    s.push_str(&bars(
                        &format!(
                            "{t}: bits per layer ({}; cell {}) and, in red, the most any attacker can get",
                            self.label,
                            cell_label(&c.keys, false)
                        ),
                        &rows,
                    ));
                }
            }
        }
    }

    fn heatmaps(&self, s: &mut String) {
        type Axis = (&'static str, fn(&Record) -> String);
        let axes: [Axis; 3] = [
            ("batch size", |r| r.keys.batch_size.to_string()),
            ("epoch", |r| r.keys.epoch.to_string()),
            ("defence", |r| r.keys.defense.clone()),
        ];
        for t in self.targets {
            let rows: Vec<&Record> = self
                .report
                .records
                .iter()
                .copied()
                .filter(|r| self.in_pair(&r.keys) && &r.target == t && r.family == self.family)
                .collect();
            for (name, axis) in &axes {
                let title = format!("{t}: bits ({}), layers x {name} (mean over the other axes)", self.label);
                if let Some(h) = heatmap(&title, &rows, axis) {
                    s.push_str(&h);
                }
            }
        }
    }

    fn sensitivity_scatter(&self, s: &mut String, first: &CellSummary) {
        let report = self.report;
        let sens: Vec<(f64, f64, String)> = report
            .sensitivity
            .iter()
            .filter(|x| x.keys.cell == first.keys.cell && x.target == "input" && x.kind == "relative")
            .filter_map(|x| {
                report
                    .records
                    .iter()
                    .find(|r| {
                        r.keys.cell == x.keys.cell
                            && r.layer == x.layer
                            && r.target == "input"
                            && r.family == self.family
                    })
                    .map(|r| (x.value, r.bits, x.layer.clone()))
            })
            .collect();
        if !sens.is_empty() {
            s.push_str(&scatter(
                "Sensitivity against V-information: input, relative sensitivity vs bits (first cell)",
                "relative sensitivity ||J||/||g||",
                "bits about the input",
                &sens,
            ));
        }
    }

    fn tradeoff(&self, s: &mut String) {
        let first_target = self.targets.first();
        let tradeoff: Vec<(f64, f64, String)> = self
            .report
            .records
            .iter()
            .filter(|r| {
                self.in_pair(&r.keys) && r.layer == "all" && r.family == self.family && Some(&r.target) == first_target
            })
            .map(|r| (r.keys.test_accuracy, r.bits, cell_label(&r.keys, false)))
            .collect();
        if tradeoff.len() > 1 {
            let t = first_target.cloned().unwrap_or_default();
            s.push_str(&scatter(
                &format!("Privacy-utility trade-off: all layers, bits about {t} vs test accuracy, one point per cell"),
                "test accuracy",
                "bits",
                &tradeoff,
            ));
        }
    }
}

/// The localisation of every cell, one row per cell and target.
fn localisation(s: &mut String, report: &Report, several: bool, several_pairs: bool) {
    if report.localisation.is_empty() {
        return;
    }
    let ranked = if several { "<p>Layers ranked by their best bits.</p>" } else { "" };
    let _ = write!(
        s,
        "<h2>Localisation</h2>{ranked}<table><tr><th>cell</th><th>target</th><th>most leaking layers</th>\
         <th>protect</th><th>remaining bits</th><th>unprotected bits</th><th>rest measured with</th></tr>"
    );
    for r in &report.localisation {
        let l = &r.localisation;
        let top: Vec<String> = l.ranking.iter().take(3).map(|(n, b)| format!("{n} ({b:.1})")).collect();
        let remaining = l.remaining_bits();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{remaining:.2}</td><td>{:.2}</td><td>{}</td></tr>",
            esc(&cell_label(&r.keys, several_pairs)),
            esc(&l.target),
            esc(&top.join(", ")),
            if l.protect.is_empty() { "nothing to localise".to_string() } else { esc(&l.protect.join(" + ")) },
            l.unprotected_bits,
            esc(if l.refit_family.is_empty() { &l.family } else { &l.refit_family })
        );
    }
    s.push_str("</table>");
}

/// Each attack's scores above its gallery of originals and reconstructions.
fn reconstructions(s: &mut String, report: &Report, out: &Path, several_pairs: bool) {
    if report.attacks.is_empty() {
        return;
    }
    s.push_str("<h2>Reconstructions</h2>");
    for a in &report.attacks {
        let bound = match (a.psnr_bound, a.beats_bound) {
            (Some(b), Some(n)) => format!(
                "; Fisher bound {b:.1} dB, beaten by {n} of {} (biased by the attack's priors)",
                a.samples as i64 * a.keys.batch_size
            ),
            _ => String::new(),
        };
        let _ = write!(
            s,
            "<p>{} on cell {}: PSNR {:.1} dB{}{}</p>",
            esc(&a.method),
            esc(&cell_label(&a.keys, several_pairs)),
            a.psnr,
            a.label_accuracy.map(|l| format!(", label accuracy {:.0}%", 100.0 * l)).unwrap_or_default(),
            esc(&bound)
        );
        if let Ok(bytes) = std::fs::read(out.join(&a.image)) {
            let _ = write!(
                s,
                "<img alt=\"originals (top) and reconstructions\" src=\"data:image/png;base64,{}\"/>",
                base64::engine::general_purpose::STANDARD.encode(bytes)
            );
        }
    }
}

/// Which lower confidence bounds exceed their upper bound, over every cell.
fn bound_check(s: &mut String, report: &Report, several_pairs: bool) {
    let check = interpret::bound_check(report.records.iter().copied());
    if check.bounded == 0 {
        return;
    }
    let over: Vec<String> = check
        .over
        .iter()
        .map(|(r, e)| {
            format!("{} / {} / {} / {}: {e:.3} bits", cell_label(&r.keys, several_pairs), r.layer, r.target, r.family)
        })
        .collect();
    s.push_str("<h2>Bound check</h2>");
    if over.is_empty() {
        let _ = write!(
            s,
            "<p id=\"bound-check\">No lower 95% bound of the {} estimates with an upper bound exceeds it.</p>",
            check.bounded
        );
    } else {
        let _ = write!(
            s,
            "<p id=\"bound-check\" class=\"warning\">{} of {} estimates exceed their upper bound (an estimator \
             error, or a null model that misfits the targets by at least the excess): {}.</p>",
            over.len(),
            check.bounded,
            esc(&over.join("; "))
        );
    }
}

/// Every record of a single-family report, one row each (`best` would repeat them).
fn all_records(s: &mut String, report: &Report, several_pairs: bool) {
    s.push_str(
        "<h2>All records</h2><table><tr><th>layer</th><th>cell</th><th>target</th><th>family</th><th>bits</th>\
         <th>95% CI</th><th>R^2 / acc.</th><th>features</th></tr>",
    );
    for r in report.records.iter().filter(|r| r.family != BEST) {
        let extra = r.r2.or(r.accuracy).map(|v| format!("{v:.3}")).unwrap_or_default();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>[{:.2}, {:.2}]</td><td>{extra}</td><td>{}</td></tr>",
            esc(&r.layer),
            esc(&cell_label(&r.keys, several_pairs)),
            esc(&r.target),
            esc(&r.family),
            r.bits,
            r.ci95[0],
            r.ci95[1],
            r.features
        );
    }
    s.push_str("</table>");
}

/// Per cell, the families side by side: a row per layer and target with each family's bits and interval, then
/// `best` and its source, and where the families disagree a reading.
fn side_by_side(s: &mut String, report: &Report, families: &[String], several_pairs: bool) {
    s.push_str(
        "<h2>Families side by side</h2><p>Bits [95% CI] of each family; <code>best</code> is the largest, \
         <code>source</code> its family (each estimate is a lower bound; the largest of several is slightly \
         optimistic).</p>",
    );
    for cell in &report.cells {
        let records = interpret::cell_records(report, &cell.keys.cell);
        let rows = interpret::layer_rows(&records, families);
        let _ = write!(
            s,
            "<h3>{}</h3><table class=\"families\"><tr><th>layer</th><th>target</th>",
            esc(&cell_label(&cell.keys, several_pairs))
        );
        for f in families {
            let _ = write!(s, "<th>{}</th>", esc(f));
        }
        s.push_str("<th>best</th><th>source</th><th>R^2 / acc. (best)</th><th>features</th></tr>");
        for row in &rows {
            let _ = write!(s, "<tr><td>{}</td><td>{}</td>", esc(row.layer), esc(row.target));
            for r in &row.by_family {
                match r {
                    Some(r) => {
                        let _ = write!(s, "<td>{:.2} [{:.2}, {:.2}]</td>", r.bits, r.ci95[0], r.ci95[1]);
                    }
                    None => s.push_str("<td>-</td>"),
                }
            }
            match row.best {
                Some(b) => {
                    let extra = b.r2.or(b.accuracy).map(|v| format!("{v:.3}")).unwrap_or_default();
                    let _ = write!(
                        s,
                        "<td>{:.2}</td><td>{}</td><td>{extra}</td>",
                        b.bits,
                        esc(b.source.as_deref().unwrap_or_default())
                    );
                }
                None => s.push_str("<td></td><td></td><td></td>"),
            }
            let _ = write!(s, "<td>{}</td></tr>", esc(row.features));
        }
        s.push_str("</table>");
        let readings = interpret::family_readings(&rows, families);
        if readings.is_empty() {
            s.push_str("<p class=\"reading\">Reading: no family finds more than another beyond its 95% interval.</p>");
        } else {
            s.push_str(
                "<p class=\"reading\">Reading (a family finds more than another where the other's estimate is below \
                 its 95% interval):</p><ul>",
            );
            for reading in readings {
                let _ = write!(s, "<li>{}</li>", esc(&reading.to_string()));
            }
            s.push_str("</ul>");
        }
    }
}
