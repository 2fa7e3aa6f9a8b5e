//! The SVG plots of the HTML report: bars of bits per layer with their brackets, heatmaps over a grid axis, and
//! labelled scatter plots. Inline SVG, no scripts.

use std::fmt::Write as _;

use super::html::esc;
use crate::audit::Record;

/// The upper bound of a record, when it has a finite one.
pub fn upper(r: &Record) -> Option<f64> {
    r.upper_bits.filter(|u| u.is_finite())
}

/// A horizontal bar chart of bits per layer with 95% CI whiskers and, where one applies, the bracket up to the
/// upper bound (a red tick: no attacker can get more).
pub fn bars(title: &str, rows: &[&Record]) -> String {
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
pub fn heatmap(title: &str, records: &[&Record], axis: &dyn Fn(&Record) -> String) -> Option<String> {
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
pub fn scatter(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64, String)]) -> String {
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
