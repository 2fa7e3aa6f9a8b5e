//! The self-contained HTML report: tables and inline SVG plots, no scripts, no external files (attack images are
//! embedded as data URIs).

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;

use super::Report;
use crate::audit::{Record, BEST};
use crate::measure::bounds::DP_CAPACITY;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// DP cells whose brackets are drawn per pair, beyond the first cell.
const MAX_BRACKET_CELLS: usize = 4;

/// The upper bound of a record, when it has a finite one.
fn upper(r: &Record) -> Option<f64> {
    r.upper_bits.filter(|u| u.is_finite())
}

/// A horizontal bar chart of bits per layer with 95% CI whiskers and, where one applies, the bracket up to the
/// upper bound (a red tick: no attacker can get more).
fn bars(title: &str, rows: &[&Record]) -> String {
    let (w, row_h, left) = (760.0, 22.0, 170.0);
    let h = 40.0 + row_h * rows.len() as f64;
    let lo = rows.iter().map(|r| r.ci95[0].min(r.bits)).fold(0.0f64, f64::min);
    let hi =
        rows.iter().map(|r| r.ci95[1].max(r.bits).max(upper(r).unwrap_or(0.0))).fold(0.0f64, f64::max).max(lo + 1e-9);
    let x = |v: f64| left + (v - lo) / (hi - lo) * (w - left - 80.0);
    let mut s =
        format!("<figure><figcaption>{}</figcaption><svg width=\"{w}\" height=\"{h}\" role=\"img\">", esc(title));
    let _ = write!(s, "<line x1=\"{0}\" y1=\"20\" x2=\"{0}\" y2=\"{1}\" stroke=\"#888\"/>", x(0.0), h - 10.0);
    for (i, r) in rows.iter().enumerate() {
        let y = 24.0 + row_h * i as f64;
        let (x0, x1) = (x(0.0).min(x(r.bits)), x(0.0).max(x(r.bits)));
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\">{}</text>\
             <rect x=\"{x0:.1}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"#4878a8\"/>\
             <line x1=\"{:.1}\" y1=\"{}\" x2=\"{:.1}\" y2=\"{}\" stroke=\"#222\"/>\
             <text x=\"{:.1}\" y=\"{}\" font-size=\"11\">{:.2}</text>",
            left - 6.0,
            y + 13.0,
            esc(&r.layer),
            (x1 - x0).max(0.5),
            row_h - 6.0,
            x(r.ci95[0]),
            y + 8.0,
            x(r.ci95[1]),
            y + 8.0,
            x(r.ci95[1]) + 4.0,
            y + 13.0,
            r.bits
        );
        if let Some(u) = upper(r) {
            let _ = write!(
                s,
                "<line class=\"bracket\" x1=\"{:.1}\" y1=\"{}\" x2=\"{:.1}\" y2=\"{}\" stroke=\"#c33\" \
                 stroke-dasharray=\"3,2\"/><line class=\"upper\" x1=\"{:.1}\" y1=\"{}\" x2=\"{:.1}\" y2=\"{}\" \
                 stroke=\"#c33\" stroke-width=\"2\"><title>upper bound {u:.3} bits ({})</title></line>",
                x(r.ci95[1]),
                y + 8.0,
                x(u),
                y + 8.0,
                x(u),
                y + 1.0,
                x(u),
                y + row_h - 5.0,
                esc(r.bound.as_deref().unwrap_or_default())
            );
            // The bound's value, where it does not collide with the estimate's.
            if x(u) - x(r.ci95[1]) > 60.0 {
                let _ = write!(
                    s,
                    "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" fill=\"#c33\">&#8804; {u:.2}</text>",
                    x(u) + 4.0,
                    y + 13.0
                );
            }
        }
    }
    s.push_str("</svg></figure>");
    s
}

/// A heatmap of bits: layers (rows) by the values of one grid axis (columns), averaged over the other axes.
fn heatmap(title: &str, records: &[&Record], axis: &dyn Fn(&Record) -> String) -> Option<String> {
    let columns: Vec<String> = {
        let mut seen = Vec::new();
        for r in records {
            let v = axis(r);
            if !seen.contains(&v) {
                seen.push(v);
            }
        }
        seen
    };
    if columns.len() < 2 {
        return None;
    }
    // Numeric axes (batch size, epoch) in increasing order; defences in grid order.
    let mut columns = columns;
    if columns.iter().all(|c| c.parse::<f64>().is_ok()) {
        columns.sort_by(|a, b| a.parse::<f64>().unwrap_or(0.0).total_cmp(&b.parse::<f64>().unwrap_or(0.0)));
    }
    let mut layers: Vec<String> = Vec::new();
    for r in records {
        if !layers.contains(&r.layer) {
            layers.push(r.layer.clone());
        }
    }
    let mean = |layer: &str, col: &str| {
        let v: Vec<f64> = records.iter().filter(|r| r.layer == layer && axis(r) == col).map(|r| r.bits).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let values: Vec<f64> = layers.iter().flat_map(|l| columns.iter().filter_map(|c| mean(l, c))).collect();
    let hi = values.iter().cloned().fold(f64::MIN, f64::max).max(1e-9);
    // Columns wide enough for their labels (a defence such as `dropout:0.5 + dp:clip=1,sigma=0.5`).
    let widest = columns.iter().map(|c| c.chars().count()).max().unwrap_or(0) as f64;
    let (cw, rh, left, top) = ((6.5 * widest + 12.0).max(110.0), 22.0, 170.0, 46.0);
    let (w, h) = (left + cw * columns.len() as f64 + 10.0, top + rh * layers.len() as f64 + 10.0);
    let mut s =
        format!("<figure><figcaption>{}</figcaption><svg width=\"{w}\" height=\"{h}\" role=\"img\">", esc(title));
    for (j, c) in columns.iter().enumerate() {
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{}</text>",
            left + cw * (j as f64 + 0.5),
            top - 8.0,
            esc(c)
        );
    }
    for (i, l) in layers.iter().enumerate() {
        let y = top + rh * i as f64;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"12\">{}</text>",
            left - 6.0,
            y + 15.0,
            esc(l)
        );
        for (j, c) in columns.iter().enumerate() {
            let Some(v) = mean(l, c) else { continue };
            let t = (v.max(0.0) / hi).clamp(0.0, 1.0);
            let shade = (255.0 - 200.0 * t) as u8;
            let _ = write!(
                s,
                "<rect x=\"{:.1}\" y=\"{y}\" width=\"{cw}\" height=\"{rh}\" fill=\"rgb({shade},{shade},255)\" stroke=\"#fff\"/>\
                 <text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" font-size=\"11\">{v:.2}</text>",
                left + cw * j as f64,
                left + cw * (j as f64 + 0.5),
                y + 15.0
            );
        }
    }
    s.push_str("</svg></figure>");
    Some(s)
}

/// A scatter plot with labelled points.
fn scatter(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64, String)]) -> String {
    let (w, h, pad) = (520.0, 320.0, 50.0);
    let finite: Vec<_> = points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in &finite {
        x0 = x0.min(p.0);
        x1 = x1.max(p.0);
        y0 = y0.min(p.1);
        y1 = y1.max(p.1);
    }
    if finite.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (dx, dy) = ((x1 - x0).max(1e-9) * 0.1, (y1 - y0).max(1e-9) * 0.1);
    let (x0, x1, y0, y1) = (x0 - dx, x1 + dx, y0 - dy, y1 + dy);
    let px = |v: f64| pad + (v - x0) / (x1 - x0) * (w - 2.0 * pad);
    let py = |v: f64| h - pad - (v - y0) / (y1 - y0) * (h - 2.0 * pad);
    let mut s = format!(
        "<figure><figcaption>{}</figcaption><svg width=\"{w}\" height=\"{h}\" role=\"img\">\
         <rect x=\"{pad}\" y=\"{pad}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"12\">{}</text>\
         <text x=\"14\" y=\"{}\" font-size=\"12\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text>\
         <text x=\"{pad}\" y=\"{}\" font-size=\"10\">{x0:.3}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{x1:.3}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{y0:.2}</text><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{y1:.2}</text>",
        esc(title),
        w - 2.0 * pad,
        h - 2.0 * pad,
        w / 2.0,
        h - 12.0,
        esc(x_label),
        h / 2.0,
        h / 2.0,
        esc(y_label),
        h - pad + 14.0,
        w - pad,
        h - pad + 14.0,
        pad - 4.0,
        h - pad,
        pad - 4.0,
        pad + 8.0,
    );
    for p in finite {
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#c0504d\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\">{}</text>",
            px(p.0),
            py(p.1),
            px(p.0) + 6.0,
            py(p.1) - 4.0,
            esc(&p.2)
        );
    }
    s.push_str("</svg></figure>");
    s
}

/// A cell's grid coordinates, with its model and dataset when the report covers several.
fn cell_label(k: &crate::audit::CellKeys, several_pairs: bool) -> String {
    let coords = format!("b={} e={} {}", k.batch_size, k.epoch, k.defense);
    if several_pairs {
        format!("{} on {}, {coords}", k.model, k.dataset)
    } else {
        coords
    }
}

/// The overview table: per cell and target, all-layer bits and the most leaking layer (and with `several`
/// families, the family of each `best` value).
fn overview_table(targets: &[String], rows: &[super::OverviewRow], several: bool) -> String {
    let mut s = String::from(
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
    s
}

/// The plots of one dataset and model pair: bars of its first cell, heatmaps across its grid, sensitivity against
/// V-information, and its privacy-utility trade-off.
/// `family` is whose bits are shown (see [`super::headline`]), `label` how to name it.
fn pair_plots(
    report: &Report,
    dataset: &str,
    model: &str,
    (family, label): (&str, &str),
    targets: &[String],
) -> String {
    let mut s = String::new();
    let in_pair = |k: &crate::audit::CellKeys| k.dataset == dataset && k.model == model;
    let Some(first) = report.cells.iter().find(|c| in_pair(&c.keys)) else { return s };
    for t in targets {
        let rows: Vec<&Record> = report
            .records
            .iter()
            .copied()
            .filter(|r| r.keys.cell == first.keys.cell && &r.target == t && r.family == family)
            .collect();
        if !rows.is_empty() {
            let bracket = if rows.iter().any(|r| upper(r).is_some()) { "; red: the upper bound" } else { "" };
            s.push_str(&bars(
                &format!("{t}: bits per layer ({label}; cell {}){bracket}", cell_label(&first.keys, false)),
                &rows,
            ));
        }
    }

    // The brackets of the DP cells (the first few): the estimate against the most any attacker can get.
    let dp_cells: Vec<&super::CellSummary> = report
        .cells
        .iter()
        .filter(|c| in_pair(&c.keys) && c.keys.cell != first.keys.cell)
        .filter(|c| {
            report.records.iter().any(|r| r.keys.cell == c.keys.cell && r.bound.as_deref() == Some(DP_CAPACITY))
        })
        .take(MAX_BRACKET_CELLS)
        .collect();
    for c in dp_cells {
        for t in targets {
            let rows: Vec<&Record> = report
                .records
                .iter()
                .copied()
                .filter(|r| r.keys.cell == c.keys.cell && &r.target == t && r.family == family)
                .collect();
            if !rows.is_empty() {
                s.push_str(&bars(
                    &format!(
                        "{t}: bits per layer ({label}; cell {}) and, in red, the most any attacker can get",
                        cell_label(&c.keys, false)
                    ),
                    &rows,
                ));
            }
        }
    }

    type Axis = (&'static str, fn(&Record) -> String);
    let axes: [Axis; 3] = [
        ("batch size", |r| r.keys.batch_size.to_string()),
        ("epoch", |r| r.keys.epoch.to_string()),
        ("defence", |r| r.keys.defense.clone()),
    ];
    for t in targets {
        let rows: Vec<&Record> = report
            .records
            .iter()
            .copied()
            .filter(|r| in_pair(&r.keys) && &r.target == t && r.family == family)
            .collect();
        for (name, axis) in &axes {
            let title = format!("{t}: bits ({label}), layers x {name} (mean over the other axes)");
            if let Some(h) = heatmap(&title, &rows, axis) {
                s.push_str(&h);
            }
        }
    }

    let sens: Vec<(f64, f64, String)> = report
        .sensitivity
        .iter()
        .filter(|x| x.keys.cell == first.keys.cell && x.target == "input" && x.kind == "relative")
        .filter_map(|x| {
            report
                .records
                .iter()
                .find(|r| r.keys.cell == x.keys.cell && r.layer == x.layer && r.target == "input" && r.family == family)
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

    let tradeoff: Vec<(f64, f64, String)> = report
        .records
        .iter()
        .filter(|r| in_pair(&r.keys) && r.layer == "all" && r.family == family && Some(&r.target) == targets.first())
        .map(|r| (r.keys.test_accuracy, r.bits, cell_label(&r.keys, false)))
        .collect();
    if tradeoff.len() > 1 {
        let t = targets.first().cloned().unwrap_or_default();
        s.push_str(&scatter(
            &format!("Privacy-utility trade-off: all layers, bits about {t} vs test accuracy, one point per cell"),
            "test accuracy",
            "bits",
            &tradeoff,
        ));
    }
    s
}

/// The HTML page of a report; `out` is where attack images are read from.
pub fn page(report: &Report, out: &Path) -> String {
    let c = report.config;
    let mut s = String::from(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>gradleak audit</title><style>\
         body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;font-size:13px}\
         td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eef}td:first-child{text-align:left}\
         figure{margin:1em 0}figcaption{font-weight:bold;margin-bottom:4px}</style></head><body>",
    );
    let _ = write!(
        s,
        "<h1>gradleak audit: {}</h1><p id=\"summary\">Seed {}; {} shared updates per cell; {} of {} cells \
         finished. Bits: usable information about the target from one layer's shared gradient, held-out, with 95% \
         intervals.</p>",
        esc(&super::title(report)),
        c.seed,
        c.measure.updates,
        report.cells.len(),
        report.cells_total
    );
    for line in report.skipped {
        let _ = write!(s, "<p class=\"skipped\">Skipped: {}.</p>", esc(line));
    }
    if report.cells.is_empty() {
        s.push_str("<p>No cell is finished yet.</p></body></html>");
        return s;
    }
    let (family, label) = super::headline(report);
    let families = super::configured_families(report);
    let several = families.len() > 1;
    // Targets in the configuration's order (input, label, attributes).
    let (targets, overview_rows) = super::overview(report);
    let pairs = super::pairs(report);
    let several_pairs = pairs.len() > 1;

    if report.cells.len() > 1 {
        s.push_str("<h2>Overview</h2>");
        s.push_str(&overview_table(&targets, &overview_rows, several));
    } else {
        s.push_str("<h2>Layer-wise leakage</h2>");
    }
    for (dataset, model) in &pairs {
        if several_pairs || report.cells.len() > 1 {
            let _ = write!(s, "<h2>{} on {}</h2>", esc(model), esc(dataset));
        }
        s.push_str(&pair_plots(report, dataset, model, (&family, &label), &targets));
    }

    if !report.localisation.is_empty() {
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

    if !report.attacks.is_empty() {
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

    let (bounded, over) = super::bound_check(report.records.iter().copied());
    if bounded > 0 {
        let over: Vec<String> = over
            .iter()
            .map(|(r, e)| {
                format!(
                    "{} / {} / {} / {}: {e:.3} bits",
                    cell_label(&r.keys, several_pairs),
                    r.layer,
                    r.target,
                    r.family
                )
            })
            .collect();
        s.push_str("<h2>Bound check</h2>");
        if over.is_empty() {
            let _ = write!(
                s,
                "<p id=\"bound-check\">No lower 95% bound of the {bounded} estimates with an upper bound exceeds it.</p>"
            );
        } else {
            let _ = write!(
                s,
                "<p id=\"bound-check\" class=\"warning\">{} of {bounded} estimates exceed their upper bound (an \
                 estimator error, or a null model that misfits the targets by at least the excess): {}.</p>",
                over.len(),
                esc(&over.join("; "))
            );
        }
    }

    if several {
        s.push_str(&side_by_side(report, &families, several_pairs));
    } else {
        s.push_str(&all_records(report, several_pairs));
    }
    s.push_str("</body></html>\n");
    s
}

/// Every record of a single-family report, one row each (`best` would repeat them).
fn all_records(report: &Report, several_pairs: bool) -> String {
    let mut s = String::from(
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
    s
}

/// Per cell, the families side by side: a row per layer and target with each family's bits and interval, then
/// `best` and its source, and where the families disagree a reading.
fn side_by_side(report: &Report, families: &[String], several_pairs: bool) -> String {
    let mut s = String::from(
        "<h2>Families side by side</h2><p>Bits [95% CI] of each family; <code>best</code> is the largest, \
         <code>source</code> its family (each estimate is a lower bound; the largest of several is slightly \
         optimistic).</p>",
    );
    for cell in &report.cells {
        let records: Vec<&Record> = report.records.iter().copied().filter(|r| r.keys.cell == cell.keys.cell).collect();
        let rows = super::layer_rows(&records, families);
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
        let lines = super::reading(&rows, families);
        if lines.is_empty() {
            s.push_str("<p class=\"reading\">Reading: no family finds more than another beyond its 95% interval.</p>");
        } else {
            s.push_str(
                "<p class=\"reading\">Reading (a family finds more than another where the other's estimate is below \
                 its 95% interval):</p><ul>",
            );
            for line in lines {
                let _ = write!(s, "<li>{}</li>", esc(&line));
            }
            s.push_str("</ul>");
        }
    }
    s
}
