//! The findings of [`super::interpret`] in words: plain sentences, without markup, which the Markdown and HTML
//! writers (and the terminal) lay out alike.

use std::fmt;

use super::interpret::{
    self, AttackDisagreement, Bracket, DefenceOutcome, DefenceVerdict, FamilyReading, Headline, Leak, PairVerdict,
    Protection, ProtectionVerdict, Reconstruction, TargetVerdict, Verdict, ATTACK_FAILS_DB, NEGLIGIBLE_BITS,
};
use super::Report;
use crate::audit::{CellKeys, Record};

/// The title of a report: `MODEL on DATASET`, or how many pairs a study covers.
pub fn title(report: &Report) -> String {
    match (interpret::pairs(report).as_slice(), interpret::pair_counts(report)) {
        (_, Some((models, datasets))) => format!("{models} models on {datasets} datasets"),
        ([(dataset, model)], None) => format!("{model} on {dataset}"),
        _ => format!("{} on {}", report.config.model, report.config.dataset),
    }
}

/// How the reports name whose bits they show: `linear family`, or `best of linear, analytic per layer`.
pub fn headline_label(headline: &Headline) -> String {
    match headline {
        Headline::One(one) => format!("{one} family"),
        Headline::Best(many) if many.is_empty() => "best family".into(),
        Headline::Best(many) => format!("best of {} per layer", many.join(", ")),
    }
}

/// `[0.12, 0.34]`
pub fn fmt_ci(ci: [f64; 2]) -> String {
    format!("[{:.2}, {:.2}]", ci[0], ci[1])
}

/// The names of at most five layers, then how many more.
pub fn some_layers(layers: &[&str]) -> String {
    let shown = layers.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    match layers.len() {
        n if n > 5 => format!("{shown} and {} more", n - 5),
        _ => shown,
    }
}

/// `a`, `a and b`, `a, b and c`.
pub fn and_list<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [init @ .., last] => {
            format!("{} and {}", init.iter().map(|s| s.as_ref()).collect::<Vec<_>>().join(", "), last.as_ref())
        }
    }
}

/// `fc1`, or `all layers` for the row of every shared layer together.
fn layer_name(layer: &str) -> String {
    if layer == "all" {
        "all layers together".into()
    } else {
        layer.to_string()
    }
}

/// A target in a sentence: `the input`, `the label`, `the attribute thickness`.
pub fn target_name(target: &str) -> String {
    match target.strip_prefix("attribute:") {
        Some(name) => format!("the attribute {name}"),
        None => format!("the {target}"),
    }
}

/// `12.34%`
fn percent(v: f64) -> String {
    format!("{:.2}%", 100.0 * v)
}

/// `0.50`, or `0.37 to 0.50` for a range.
fn span(r: [f64; 2], one: impl Fn(f64) -> String) -> String {
    if r[0] == r[1] {
        one(r[0])
    } else {
        format!("{} to {}", one(r[0]), one(r[1]))
    }
}

impl fmt::Display for FamilyReading<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut clauses: Vec<String> = self
            .finds_more
            .iter()
            .map(|m| {
                format!(
                    "{} finds more than {} in {} of {} rows, most in {} ({:.2} vs {:.2} bits)",
                    m.family, m.other, m.rows, m.of, m.layer, m.bits, m.other_bits
                )
            })
            .collect();
        if !self.uncertain.is_empty() {
            clauses.push(format!(
                "in {} the largest estimate's interval reaches 0 where another family's stays above it",
                some_layers(&self.uncertain)
            ));
        }
        write!(f, "{}: {}", self.target, clauses.join("; "))
    }
}

impl fmt::Display for AttackDisagreement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttackDisagreement::Understated { attack: a, gain, best } => write!(
                f,
                "{}: reconstructs at {:.1} dB, {gain:.1} dB above the mean-image guess, but the best family finds \
                 {:.2} bits {} about the input from {}: the families understate this leak",
                a.method,
                a.psnr,
                best.bits,
                fmt_ci(best.ci95),
                interpret::attack_layer(a)
            ),
            AttackDisagreement::Unused { attack: a, guess, best } => write!(
                f,
                "{}: {:.2} bits {} about the input from {}, but the reconstructions score {:.1} dB, within \
                 {ATTACK_FAILS_DB} dB of the mean-image guess ({guess:.1} dB): usable information this attack does \
                 not turn into an image",
                a.method,
                best.bits,
                fmt_ci(best.ci95),
                interpret::attack_layer(a),
                a.psnr
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The verdict in words.

/// One point of a pair's verdict: a label (`What leaks`), a sentence, and lines under it (one per target, or
/// per defence).
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictItem {
    pub label: &'static str,
    pub text: String,
    pub lines: Vec<String>,
}

/// A pair's verdict in words: which cell it reads, then its points.
#[derive(Debug, Clone, PartialEq)]
pub struct PairText {
    pub heading: String,
    pub items: Vec<VerdictItem>,
}

/// The verdict in words, one [`PairText`] per dataset and model pair.
pub fn verdict_text(verdict: &Verdict) -> Vec<PairText> {
    verdict.pairs.iter().map(pair_text).collect()
}

/// `batch size 1, epoch 2, no defence, test accuracy 70.50%`
fn cell_coordinates(k: &CellKeys) -> String {
    let defence = if k.defense == "none" { "no defence".to_string() } else { format!("defence {}", k.defense) };
    let eps = k.epsilon.map(|e| format!(", epsilon {e:.2}")).unwrap_or_default();
    format!(
        "batch size {}, epoch {}, {defence}{eps}, test accuracy {}",
        k.batch_size,
        k.epoch,
        percent(k.test_accuracy)
    )
}

fn pair_text(p: &PairVerdict) -> PairText {
    let k = p.cell;
    let heading = if p.cells == 1 {
        format!("{} on {} (cell {}: {})", k.model, k.dataset, k.cell, cell_coordinates(k))
    } else {
        let of = match (k.defense.as_str(), p.candidates) {
            ("none", 1) => "the cell without a defence".to_string(),
            ("none", n) => format!("the most leaking of the {n} cells without a defence"),
            (_, n) => format!("the most leaking of its {n} cells"),
        };
        format!(
            "{} on {}, {of} (cell {}: {}); the defences over all {} cells",
            k.model,
            k.dataset,
            k.cell,
            cell_coordinates(k),
            p.cells
        )
    };
    let mut items = vec![VerdictItem { label: "What leaks", text: what_leaks(&p.targets), lines: Vec::new() }];
    let brackets: Vec<String> =
        p.targets.iter().filter_map(|t| t.bracket.as_ref().map(|b| bracket_line(t.target, b))).collect();
    if !brackets.is_empty() {
        items.push(VerdictItem {
            label: "Tightest bracket",
            text: "per target, the largest lower bound of the best family and the most any attacker can get, where \
                   a bound applies:"
                .into(),
            lines: brackets,
        });
    }
    let protections: Vec<String> =
        p.targets.iter().filter_map(|t| t.protection.as_ref().map(|x| protection_line(t.target, x))).collect();
    if !protections.is_empty() {
        let fraction = p.targets.iter().find_map(|t| match &t.protection {
            Some(ProtectionVerdict::Measured(Protection::Layers { fraction, .. })) => Some(*fraction),
            _ => None,
        });
        let text = match fraction {
            Some(f) => format!(
                "the fewest layers whose protection (not sharing them) leaves the rest under {:.0}% of the bits:",
                100.0 * f
            ),
            None => "what not sharing layers does:".into(),
        };
        items.push(VerdictItem { label: "Layers to protect", text, lines: protections });
    }
    if let Some(d) = defence_item(p) {
        items.push(d);
    }
    PairText { heading, items }
}

/// One clause of "What leaks".
fn leak_clause(t: &TargetVerdict) -> String {
    let name = target_name(t.target);
    match &t.leak {
        Leak::Nothing => format!("nothing usable about {name} (every layer's 95% interval reaches 0)"),
        Leak::Fully { short, .. } if short.is_empty() => format!("{name} fully, from every layer"),
        Leak::Fully { bound, full, short } => {
            let short: Vec<String> = short.iter().map(|(l, b)| format!("{l}: {b:.2} of {bound:.2} bits")).collect();
            format!("{name} fully, from {} ({})", and_list(full), short.join(", "))
        }
        Leak::Partly { reconstruction: Some(Reconstruction { layer, psnr, guess, method }), .. } => format!(
            "{name}, reconstructable from {} at {psnr:.1} dB ({method}; the mean-image guess: {guess:.1} dB)",
            layer_name(layer)
        ),
        Leak::Partly { top, reconstruction: None } => {
            let of = top.upper_bits.map(|u| format!(" of at most {u:.2}")).unwrap_or_default();
            let part = if top.upper_bits.is_some() { " in part" } else { "" };
            format!("{name}{part}: {:.2} {}{of} bits, most from {}", top.bits, fmt_ci(top.ci95), layer_name(&top.layer))
        }
    }
}

fn what_leaks(targets: &[TargetVerdict]) -> String {
    if targets.iter().all(|t| t.leak.is_nothing()) {
        return "nothing: no layer's 95% interval lies above 0 for any target.".into();
    }
    let mut clauses: Vec<String> = targets.iter().filter(|t| !t.leak.is_nothing()).map(leak_clause).collect();
    clauses.extend(targets.iter().filter(|t| t.leak.is_nothing()).map(leak_clause));
    format!("{}.", clauses.join("; "))
}

/// `fc1 (analytic)`: where and by which family a `best` record was measured.
fn measured_by(r: &Record) -> String {
    let family = r.source.as_deref().unwrap_or(&r.family);
    format!("{family}, {}", layer_name(&r.layer))
}

fn bracket_line(target: &str, b: &Bracket) -> String {
    let lo = b.lower;
    if interpret::reads_nothing(lo) {
        let upper = b.upper.map(|(u, bound)| format!("; at most {u:.2} bits ({bound})")).unwrap_or_default();
        return format!(
            "{target}: no usable information found (the largest estimate: {:.2} {} bits, {}){upper}",
            lo.bits,
            fmt_ci(lo.ci95),
            measured_by(lo)
        );
    }
    let lower = format!("{:.2} {} bits ({})", lo.bits, fmt_ci(lo.ci95), measured_by(lo));
    match b.upper {
        Some((u, bound)) => {
            let at = if lo.bits >= interpret::FULL_FRACTION * u && u > 0.0 { ": at the bound" } else { "" };
            format!("{target}: from {lower} to at most {u:.2} bits ({bound}){at}")
        }
        None => format!("{target}: at least {lower}; no upper bound applies"),
    }
}

fn protection_line(target: &str, p: &ProtectionVerdict) -> String {
    match p {
        ProtectionVerdict::NothingFound => format!("{target}: nothing to protect (no usable information found)"),
        ProtectionVerdict::EveryLayerLeaks => {
            format!("{target}: none suffices: every layer gives it away fully, so only a defence keeps it")
        }
        ProtectionVerdict::Measured(Protection::Nothing { unprotected }) => {
            format!("{target}: nothing to protect ({unprotected:.2} bits for all layers together)")
        }
        ProtectionVerdict::Measured(Protection::Layers {
            protect,
            left,
            remaining,
            unprotected,
            measured_with,
            fewer,
            ..
        }) => {
            let protect: &[String] = protect;
            let count = protect.len() + left.len();
            if left.is_empty() {
                let fewer = fewer
                    .map(|(fewer, bits)| {
                        format!(": protecting {} still leaves {bits:.2} of {unprotected:.2} bits", and_list(fewer))
                    })
                    .unwrap_or_default();
                return format!("{target}: all {count} layers{fewer} (measured with {measured_with})");
            }
            let leaves = if *remaining < NEGLIGIBLE_BITS {
                format!("nothing usable ({remaining:.2} of {unprotected:.2} bits)")
            } else {
                format!("{remaining:.2} of {unprotected:.2} bits")
            };
            format!(
                "{target}: {} ({} of {count} layers), which leaves {leaves} in {} (measured with {measured_with})",
                and_list(protect),
                protect.len(),
                and_list(left)
            )
        }
    }
}

/// `test accuracy 70.50% (as without it: ...), epsilon 0.50`; `why` says why the accuracy is unchanged.
fn cost(o: &DefenceOutcome, why: bool) -> String {
    let same = match (o.same_accuracy, why) {
        (true, true) => " (as without it: the defence acts on the shared updates only)",
        (true, false) => " (as without it)",
        (false, _) => "",
    };
    let eps = o.epsilon.map(|e| format!(", epsilon {}", span(e, |v| format!("{v:.2}")))).unwrap_or_default();
    format!("test accuracy {}{same}{eps}", span(o.test_accuracy, percent))
}

/// What a defence still leaves, one clause per target.
fn leaves(o: &DefenceOutcome) -> String {
    let clauses: Vec<String> = o
        .leaks
        .iter()
        .map(|r| {
            let at = if o.cells > 1 {
                format!(", batch size {}, epoch {}", r.keys.batch_size, r.keys.epoch)
            } else {
                String::new()
            };
            format!("{} {:.2} {} bits ({}{at})", target_name(&r.target), r.bits, fmt_ci(r.ci95), layer_name(&r.layer))
        })
        .collect();
    and_list(&clauses)
}

fn defence_item(p: &PairVerdict) -> Option<VerdictItem> {
    let label = "Defence";
    let Some(DefenceVerdict { closing, others }) = &p.defences else {
        if p.targets.iter().all(|t| t.leak.is_nothing()) {
            return None;
        }
        return Some(VerdictItem {
            label,
            text: "this audit compares no defences: add some to its grid (for example `--dp none --dp \
                   clip=1,sigma=1`) to find one that closes the leak."
                .into(),
            lines: Vec::new(),
        });
    };
    // Why a defence keeps the accuracy is said once: after the closing one, or on the first line.
    let other_lines: Vec<String> = others
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let why = closing.is_none() && i == 0;
            if o.leaks.is_empty() {
                format!("{} closes it too, at a higher cost: {}", o.defense, cost(o, why))
            } else {
                format!("{} leaves {}; {}", o.defense, leaves(o), cost(o, why))
            }
        })
        .collect();
    let text = match closing {
        Some(c) => {
            let every = if c.cells > 1 { format!("each of its {} cells", c.cells) } else { "its cell".into() };
            let guarantee = c
                .guarantee
                .map(|g| format!(", and no attacker can get more than {g:.2} bits about any target (DP's capacity)"))
                .unwrap_or_default();
            format!(
                "{} closes it: {every} reads about 0 bits about every target from every layer{guarantee}; {}.",
                c.defense,
                cost(c, true)
            )
        }
        None => "no defence in the grid closes it:".into(),
    };
    Some(VerdictItem { label, text, lines: other_lines })
}
