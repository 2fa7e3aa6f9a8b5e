//! What an audit's records say: pure functions from its rows to typed findings, with the thresholds they use.
//! Nothing here is worded or laid out: [`super::text`] words the findings, [`super::markdown`] and
//! [`super::html`] lay them out.
//!
//! The findings, from the smallest to the largest: the families' disagreements in one cell
//! ([`family_readings`]), attacks against the bits ([`attack_disagreements`]), the bound check
//! ([`bound_check`]), what protecting layers leaves ([`protection`]), and the verdict a reader acts on
//! ([`verdict`]): what leaks and how much, the tightest bracket per target, which layers to protect, and which
//! defence of the grid closes the leak.

use std::collections::BTreeSet;

use super::{CellSummary, Report};
use crate::audit::{AttackRecord, CellKeys, Record, BEST};
use crate::measure::bounds::{DP_CAPACITY, LOG2_CLASSES};
use crate::measure::localisation::Localisation;

/// Bits below which an estimate or a bound counts as 0: a constant fit measures about 1e-16 bits (rounding).
pub const ZERO_BITS: f64 = 1e-9;

/// The smallest difference the reading reports: two perfect label predictors have intervals of zero width (every
/// victim scores log2 C less the mixture's 0.001 bits), and a difference of 0.001 bits between them is not a
/// finding.
pub const READING_MIN_BITS: f64 = 0.01;

/// An attack succeeds where its PSNR beats the mean-image guess by at least this many dB.
pub const ATTACK_SUCCEEDS_DB: f64 = 3.0;
/// An attack fails where its PSNR is within this many dB of the mean-image guess.
pub const ATTACK_FAILS_DB: f64 = 1.0;

/// A layer gives a target away fully where its estimate reaches this fraction of the most any attacker can get
/// (3.22 of the label's 3.32 bits: 97%).
pub const FULL_FRACTION: f64 = 0.95;

/// An estimate reads about 0 bits where its 95% interval reaches 0 or the estimate itself is below this many bits
/// (0.005 bits of a label are not a leak anyone acts on).
pub const NEGLIGIBLE_BITS: f64 = 0.01;

/// Whether a record reads about 0 bits: its 95% interval reaches 0, or its estimate is negligible.
pub fn reads_nothing(r: &Record) -> bool {
    r.ci95[0].is_nan() || r.bits.is_nan() || r.ci95[0] <= ZERO_BITS || r.bits < NEGLIGIBLE_BITS
}

/// A single layer's name: not `all` and not a group `a+b`.
pub fn is_single_layer(layer: &str) -> bool {
    layer != "all" && !layer.contains('+')
}

/// The first of the largest (NaN keys left out): `max_by` would take the last of equal values, and the reports
/// name the first layer (or family) that reaches a value, in the records' order.
fn first_max<T>(items: impl IntoIterator<Item = T>, key: impl Fn(&T) -> f64) -> Option<T> {
    let mut out: Option<(T, f64)> = None;
    for item in items {
        let k = key(&item);
        if k.is_nan() {
            continue;
        }
        if out.as_ref().is_none_or(|(_, best)| k > *best) {
            out = Some((item, k));
        }
    }
    out.map(|(item, _)| item)
}

/// Values in order of first appearance.
fn in_order<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------------------------
// The report's shape: pairs, families, whose bits the headline shows, rows of a cell.

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

/// How many models and datasets a study covers, when it covers several pairs.
pub fn pair_counts(report: &Report) -> Option<(usize, usize)> {
    let pairs = pairs(report);
    (pairs.len() > 1).then(|| {
        let datasets: BTreeSet<&str> = pairs.iter().map(|p| p.0.as_str()).collect();
        let models: BTreeSet<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
        (models.len(), datasets.len())
    })
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

/// Whose bits the overview and the plots show: `best` with several families, the family itself with one (where
/// `best` is the same numbers).
pub enum Headline {
    /// The report's only family.
    One(String),
    /// `best` of these families (none: a report without records).
    Best(Vec<String>),
}

impl Headline {
    /// The `family` of the records shown.
    pub fn family(&self) -> &str {
        match self {
            Headline::One(f) => f,
            Headline::Best(_) => BEST,
        }
    }
}

pub fn headline(report: &Report) -> Headline {
    match families(report.records.iter().copied()) {
        one if one.len() == 1 => Headline::One(one[0].clone()),
        many => Headline::Best(many),
    }
}

/// The targets of a report in the configuration's order (input, label, attributes).
pub fn targets(report: &Report) -> Vec<String> {
    in_order(report.records.iter().map(|r| r.target.as_str())).into_iter().map(String::from).collect()
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

/// The records of one cell, in their order.
pub fn cell_records<'a>(report: &Report<'a>, cell: &str) -> Vec<&'a Record> {
    report.records.iter().copied().filter(|r| r.keys.cell == cell).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// The overview of a sweep.

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
    let headline = headline(report);
    let family = headline.family();
    let targets = targets(report);
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
                    let singles = of_target.iter().filter(|r| is_single_layer(&r.layer));
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

// ---------------------------------------------------------------------------------------------------------------
// Readings of one cell.

/// One family finding more than another about a target: its 95% interval above 0 and the other's estimate below
/// that interval, in `rows` of the `of` rows where both have an estimate; most in `layer`.
#[derive(Debug, Clone, PartialEq)]
pub struct FindsMore<'a> {
    pub family: &'a str,
    pub other: &'a str,
    pub rows: usize,
    pub of: usize,
    pub layer: &'a str,
    pub bits: f64,
    pub other_bits: f64,
}

/// Where the families of a cell disagree about one target.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyReading<'a> {
    pub target: &'a str,
    pub finds_more: Vec<FindsMore<'a>>,
    /// Layers whose largest estimate has an interval reaching 0 where another family's stays above it (the largest
    /// estimate is then not the most certain).
    pub uncertain: Vec<&'a str>,
}

/// Where the families of a cell disagree, per target that has something to say: which family finds more than
/// which, and rows whose largest estimate is not the most certain.
pub fn family_readings<'a>(rows: &[LayerRow<'a>], families: &'a [String]) -> Vec<FamilyReading<'a>> {
    let mut out = Vec::new();
    for t in in_order(rows.iter().map(|r| r.target)) {
        let of_target: Vec<&LayerRow> = rows.iter().filter(|r| r.target == t).collect();
        let mut finds_more = Vec::new();
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
                finds_more.push(FindsMore {
                    family: a,
                    other: b,
                    rows: more.len(),
                    of: both.len(),
                    layer,
                    bits: ra.bits,
                    other_bits: rb.bits,
                });
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
        if !finds_more.is_empty() || !uncertain.is_empty() {
            out.push(FamilyReading { target: t, finds_more, uncertain });
        }
    }
    out
}

/// An attack and the families telling different stories about the input.
#[derive(Debug, Clone, PartialEq)]
pub enum AttackDisagreement<'a> {
    /// The attack reconstructs (`gain` dB above the mean-image guess) where the `best` family's interval for the
    /// layers it read reaches 0: the families understate the leak.
    Understated { attack: &'a AttackRecord, gain: f64, best: &'a Record },
    /// The `best` family finds bits with an interval above 0 where the attack comes no closer than the guess.
    Unused { attack: &'a AttackRecord, guess: f64, best: &'a Record },
}

/// The layer or group an attack read: its own, or `all` for the reference attack, which reads every shared layer.
pub fn attack_layer(a: &AttackRecord) -> &str {
    a.layer.as_deref().unwrap_or("all")
}

/// Where an attack and the families tell different stories about the input: an attack that reconstructs (its
/// PSNR at least [`ATTACK_SUCCEEDS_DB`] above the mean-image guess, which reads no gradient) where the `best`
/// family's interval for the layers it read reaches 0, or bits with an interval above 0 where the attack comes no
/// closer than the guess (within [`ATTACK_FAILS_DB`]).
pub fn attack_disagreements<'a>(records: &[&'a Record], attacks: &[&'a AttackRecord]) -> Vec<AttackDisagreement<'a>> {
    let mut out = Vec::new();
    for &a in attacks {
        let Some(guess) = a.guess_psnr else { continue };
        let layer = attack_layer(a);
        let Some(&best) = records
            .iter()
            .find(|r| r.family == BEST && r.target == "input" && r.layer == layer && r.keys.cell == a.keys.cell)
        else {
            continue;
        };
        let gain = a.psnr - guess;
        if gain >= ATTACK_SUCCEEDS_DB && best.ci95[0] <= ZERO_BITS {
            out.push(AttackDisagreement::Understated { attack: a, gain, best });
        } else if gain < ATTACK_FAILS_DB && best.ci95[0] > ZERO_BITS {
            out.push(AttackDisagreement::Unused { attack: a, guess, best });
        }
    }
    out
}

/// The records of the families (not `best`) that have an upper bound, and those whose lower confidence bound
/// exceeds it, with the excess.
pub struct BoundCheck<'a> {
    pub bounded: usize,
    pub over: Vec<(&'a Record, f64)>,
}

/// What the reports' bound checks show.
pub fn bound_check<'a>(records: impl IntoIterator<Item = &'a Record>) -> BoundCheck<'a> {
    let bounded: Vec<&Record> = records.into_iter().filter(|r| r.family != BEST && r.upper_bits.is_some()).collect();
    let over = bounded
        .iter()
        .filter_map(|r| crate::measure::bounds::excess(r.ci95[0], r.upper_bits?).map(|e| (*r, e)))
        .collect();
    BoundCheck { bounded: bounded.len(), over }
}

/// What protecting a target's top layers leaves, from a localisation record.
#[derive(Debug, Clone, PartialEq)]
pub enum Protection<'a> {
    /// The unprotected layers carry no usable information: nothing to localise.
    Nothing { unprotected: f64 },
    /// Protecting `protect` leaves `remaining` of `unprotected` bits in `left` (the target: under `fraction`),
    /// measured with `measured_with`.
    Layers {
        /// The most leaking layers, at most three, with their bits.
        top: Vec<(&'a str, f64)>,
        protect: &'a [String],
        /// The layers still shared.
        left: Vec<&'a str>,
        remaining: f64,
        unprotected: f64,
        fraction: f64,
        measured_with: &'a str,
        /// The largest protection set short of `protect` that the search measured, and what it left (more than the
        /// target): why protecting fewer layers does not do.
        fewer: Option<(&'a [String], f64)>,
    },
}

pub fn protection(l: &Localisation) -> Protection<'_> {
    if l.protect.is_empty() {
        return Protection::Nothing { unprotected: l.unprotected_bits };
    }
    Protection::Layers {
        top: l.ranking.iter().take(3).map(|(n, b)| (n.as_str(), *b)).collect(),
        protect: &l.protect,
        left: l.ranking.iter().map(|(n, _)| n.as_str()).filter(|n| !l.protect.iter().any(|p| p == n)).collect(),
        remaining: l.remaining_bits(),
        unprotected: l.unprotected_bits,
        fraction: l.fraction,
        measured_with: if l.refit_family.is_empty() { &l.family } else { &l.refit_family },
        fewer: l
            .steps
            .iter()
            .filter(|s| s.protected.len() < l.protect.len())
            .max_by_key(|s| s.protected.len())
            .map(|s| (s.protected.as_slice(), s.remaining_bits)),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The verdict.

/// The verdict of a report: one per (dataset, model) pair, in grid order.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict<'a> {
    pub pairs: Vec<PairVerdict<'a>>,
}

/// What the cells of one dataset and model pair say.
#[derive(Debug, Clone, PartialEq)]
pub struct PairVerdict<'a> {
    /// The cell whose leaks, brackets and protection are told: of the cells without a defence (all cells when
    /// every cell has one), the one that leaks the most about the first target (the first of equal ones).
    pub cell: &'a CellKeys,
    /// Cells of the pair.
    pub cells: usize,
    /// Cells `cell` was chosen from: those without a defence, or all.
    pub candidates: usize,
    /// Per target, in the configuration's order.
    pub targets: Vec<TargetVerdict<'a>>,
    /// Which defence of the grid closes the leak; `None` when the pair's cells have one defence setting only.
    pub defences: Option<DefenceVerdict<'a>>,
}

/// What one cell gives away about one target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetVerdict<'a> {
    pub target: &'a str,
    pub leak: Leak<'a>,
    pub bracket: Option<Bracket<'a>>,
    /// What protecting layers does; `None` when the cell did not localise the target (the label, or one layer).
    pub protection: Option<ProtectionVerdict<'a>>,
}

/// How much of a target leaks.
#[derive(Debug, Clone, PartialEq)]
pub enum Leak<'a> {
    /// Every layer's 95% interval reaches 0 (or its estimate is negligible): no usable information found.
    Nothing,
    /// The `full` single layers give it away: their estimates reach [`FULL_FRACTION`] of `bound` bits, the most
    /// any attacker can get. `short`: the other single layers, with their bits.
    Fully { bound: f64, full: Vec<&'a str>, short: Vec<(&'a str, f64)> },
    /// Some of it: `top` is the most leaking single layer's `best` record (or the group's or all layers', where no
    /// single layer was measured), with its upper bound where one applies; `reconstruction` the attack that turns
    /// it into an image closest to the victims, where one does.
    Partly { top: &'a Record, reconstruction: Option<Reconstruction<'a>> },
}

impl Leak<'_> {
    pub fn is_nothing(&self) -> bool {
        matches!(self, Leak::Nothing)
    }
}

/// An attack (or a model-backed family's reconstructions) beating the mean-image guess by at least
/// [`ATTACK_SUCCEEDS_DB`].
#[derive(Debug, Clone, PartialEq)]
pub struct Reconstruction<'a> {
    pub method: &'a str,
    /// The layer or group read (`all`: every shared layer).
    pub layer: &'a str,
    pub psnr: f64,
    pub guess: f64,
}

/// The tightest bracket on what the update holds about a target: the largest `best` estimate (the tightest lower
/// bound: information in some layers is at most that in all), and the upper bound where one applies to the
/// update as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct Bracket<'a> {
    pub lower: &'a Record,
    /// Bits and the bound's name (`log2_classes`, `dp_capacity`).
    pub upper: Option<(f64, &'a str)>,
}

/// What protecting layers does for a target.
#[derive(Debug, Clone, PartialEq)]
pub enum ProtectionVerdict<'a> {
    /// From the cell's localisation.
    Measured(Protection<'a>),
    /// Every single layer gives the target away fully: not sharing some layers cannot keep it.
    EveryLayerLeaks,
    /// No usable information found: nothing to protect.
    NothingFound,
}

/// The defences of a pair's grid against the leak.
#[derive(Debug, Clone, PartialEq)]
pub struct DefenceVerdict<'a> {
    /// The cheapest defence whose every cell reads about 0 bits about every target: the highest test accuracy,
    /// then the largest epsilon (the least noise), then grid order.
    pub closing: Option<DefenceOutcome<'a>>,
    /// The other defences (not `none`), in grid order.
    pub others: Vec<DefenceOutcome<'a>>,
}

/// What one defence setting leaves, over its cells.
#[derive(Debug, Clone, PartialEq)]
pub struct DefenceOutcome<'a> {
    pub defense: &'a str,
    pub cells: usize,
    /// The lowest and highest test accuracy of its cells.
    pub test_accuracy: [f64; 2],
    /// The smallest and largest epsilon of its cells (DP only).
    pub epsilon: Option<[f64; 2]>,
    /// Whether a cell without a defence has the same test accuracy (the defence acts on the shared updates only).
    pub same_accuracy: bool,
    /// The most any attacker can get about any target from the whole update of any of its cells (DP's capacity),
    /// where every cell has it.
    pub guarantee: Option<f64>,
    /// Per target, the `best` record with the most bits among those that do not read about 0 (all cells): empty
    /// when the defence closes the leak.
    pub leaks: Vec<&'a Record>,
}

/// The verdict of a report: per pair, what leaks and how much, the tightest bracket per target, the layers to
/// protect, and the defence of the grid that closes the leak.
pub fn verdict<'a>(report: &'a Report) -> Verdict<'a> {
    let pairs = pairs(report)
        .iter()
        .filter_map(|(dataset, model)| {
            let cells: Vec<&CellSummary> =
                report.cells.iter().filter(|c| &c.keys.dataset == dataset && &c.keys.model == model).collect();
            pair_verdict(report, &cells)
        })
        .collect();
    Verdict { pairs }
}

/// The `best` records of a cell about a target.
fn best_of<'a>(report: &'a Report, cell: &str, target: &str) -> Vec<&'a Record> {
    report.records.iter().copied().filter(|r| r.keys.cell == cell && r.family == BEST && r.target == target).collect()
}

/// The verdict of one pair's cells (`None` without cells).
pub fn pair_verdict<'a>(report: &'a Report, cells: &[&'a CellSummary]) -> Option<PairVerdict<'a>> {
    let targets = targets_of(report, cells);
    let undefended: Vec<&CellSummary> = cells.iter().copied().filter(|c| c.keys.defense == "none").collect();
    let candidates = if undefended.is_empty() { cells.to_vec() } else { undefended };
    let first_target = targets.first().copied().unwrap_or_default();
    let most = |c: &&CellSummary| {
        best_of(report, &c.keys.cell, first_target).iter().map(|r| r.bits).filter(|b| b.is_finite()).fold(0.0, f64::max)
    };
    let count = candidates.len();
    let cell = &first_max(candidates, most)?.keys;
    let defences = defence_verdict(report, cells, &targets);
    let targets = targets
        .into_iter()
        .filter_map(|t| {
            let records = best_of(report, &cell.cell, t);
            (!records.is_empty()).then(|| target_verdict(report, cell, t, &records))
        })
        .collect();
    Some(PairVerdict { cell, cells: cells.len(), candidates: count, targets, defences })
}

/// The targets measured in some of `cells`.
fn targets_of<'a>(report: &'a Report, cells: &[&CellSummary]) -> Vec<&'a str> {
    in_order(
        report.records.iter().filter(|r| cells.iter().any(|c| c.keys.cell == r.keys.cell)).map(|r| r.target.as_str()),
    )
}

/// What a cell gives away about `target`, from its `best` records.
fn target_verdict<'a>(
    report: &'a Report,
    cell: &'a CellKeys,
    target: &'a str,
    records: &[&'a Record],
) -> TargetVerdict<'a> {
    let leak = leak(report, cell, target, records);
    let bracket = bracket(records);
    let localised = report.localisation.iter().find(|l| l.keys.cell == cell.cell && l.localisation.target == target);
    let protection = match (localised, &leak) {
        (_, Leak::Nothing) => Some(ProtectionVerdict::NothingFound),
        (Some(l), _) => Some(ProtectionVerdict::Measured(protection(&l.localisation))),
        (None, Leak::Fully { short, .. }) if short.is_empty() => Some(ProtectionVerdict::EveryLayerLeaks),
        _ => None,
    };
    TargetVerdict { target, leak, bracket, protection }
}

/// How much of `target` a cell's `best` records give away.
pub fn leak<'a>(report: &'a Report, cell: &CellKeys, target: &str, records: &[&'a Record]) -> Leak<'a> {
    if records.iter().all(|r| reads_nothing(r)) {
        return Leak::Nothing;
    }
    let singles: Vec<&Record> = records.iter().copied().filter(|r| is_single_layer(&r.layer)).collect();
    let fully = |r: &Record| r.upper_bits.is_some_and(|u| u > ZERO_BITS && r.bits >= FULL_FRACTION * u);
    if let Some(bound) = singles.iter().find_map(|r| r.upper_bits) {
        let full: Vec<&str> = singles.iter().filter(|r| fully(r)).map(|r| r.layer.as_str()).collect();
        if !full.is_empty() {
            let short = singles.iter().filter(|r| !fully(r)).map(|r| (r.layer.as_str(), r.bits)).collect();
            return Leak::Fully { bound, full, short };
        }
    }
    // The most leaking single layer; a group or all layers where no single layer has an estimate.
    let Some(top) = first_max(singles, |r| r.bits).or_else(|| first_max(records.iter().copied(), |r| r.bits)) else {
        return Leak::Nothing;
    };
    let reconstruction = (target == "input").then(|| reconstruction(report, &cell.cell)).flatten();
    Leak::Partly { top, reconstruction }
}

/// The attack of a cell whose reconstructions come closest to the victims, where it beats the mean-image guess by
/// at least [`ATTACK_SUCCEEDS_DB`].
pub fn reconstruction<'a>(report: &'a Report, cell: &str) -> Option<Reconstruction<'a>> {
    let succeeding = report.attacks.iter().copied().filter(|a| a.keys.cell == cell).filter_map(|a| {
        let guess = a.guess_psnr?;
        (a.psnr - guess >= ATTACK_SUCCEEDS_DB).then_some((a, guess))
    });
    let (a, guess) = first_max(succeeding, |(a, _)| a.psnr)?;
    Some(Reconstruction { method: &a.method, layer: attack_layer(a), psnr: a.psnr, guess })
}

/// The tightest bracket of a target from a cell's `best` records.
pub fn bracket<'a>(records: &[&'a Record]) -> Option<Bracket<'a>> {
    let lower = first_max(records.iter().copied().filter(|r| r.bits.is_finite()), |r| r.bits)?;
    // The bound of the whole update: the `all` row's; without one, the entropy of the target's classes (which
    // bounds every set of layers alike). A single layer's DP capacity does not bound the others.
    let upper =
        records.iter().find(|r| r.layer == "all").and_then(|r| Some((r.upper_bits?, r.bound.as_deref()?))).or_else(
            || {
                records
                    .iter()
                    .find(|r| r.bound.as_deref() == Some(LOG2_CLASSES))
                    .and_then(|r| Some((r.upper_bits?, LOG2_CLASSES)))
            },
        );
    Some(Bracket { lower, upper })
}

/// The defences of a pair's `cells` against the leak, when the cells have several defence settings.
fn defence_verdict<'a>(report: &'a Report, cells: &[&'a CellSummary], targets: &[&str]) -> Option<DefenceVerdict<'a>> {
    let defences = in_order(cells.iter().map(|c| c.keys.defense.as_str()));
    if defences.len() < 2 {
        return None;
    }
    let undefended_accuracy: Vec<f64> =
        cells.iter().filter(|c| c.keys.defense == "none").map(|c| c.keys.test_accuracy).collect();
    let outcomes: Vec<DefenceOutcome> = defences
        .into_iter()
        .filter(|d| *d != "none")
        .map(|defense| {
            let of: Vec<&CellKeys> = cells.iter().filter(|c| c.keys.defense == defense).map(|c| &c.keys).collect();
            defence_outcome(report, defense, &of, targets, &undefended_accuracy)
        })
        .collect();
    // The cheapest: the highest test accuracy, then the largest epsilon (the least noise), then grid order.
    // Its lowest test accuracy, then its smallest epsilon (none without DP: no noise at all), the larger the cheaper.
    let cost = |o: &DefenceOutcome| (o.test_accuracy[0], o.epsilon.map(|e| e[0]).unwrap_or(f64::INFINITY));
    let mut closing: Option<usize> = None;
    for (i, o) in outcomes.iter().enumerate().filter(|(_, o)| o.leaks.is_empty()) {
        if closing.is_none_or(|c| cost(o) > cost(&outcomes[c])) {
            closing = Some(i);
        }
    }
    let mut others = outcomes;
    let closing = closing.map(|i| others.remove(i));
    Some(DefenceVerdict { closing, others })
}

fn range(values: impl IntoIterator<Item = f64>) -> Option<[f64; 2]> {
    values.into_iter().fold(None, |acc, v| match acc {
        None => Some([v, v]),
        Some([lo, hi]) => Some([lo.min(v), hi.max(v)]),
    })
}

fn defence_outcome<'a>(
    report: &'a Report,
    defense: &'a str,
    cells: &[&CellKeys],
    targets: &[&str],
    undefended_accuracy: &[f64],
) -> DefenceOutcome<'a> {
    let records: Vec<&Record> = report
        .records
        .iter()
        .copied()
        .filter(|r| r.family == BEST && cells.iter().any(|c| c.cell == r.keys.cell))
        .collect();
    let leaks = targets
        .iter()
        .filter_map(|t| first_max(records.iter().copied().filter(|r| r.target == *t && !reads_nothing(r)), |r| r.bits))
        .collect();
    let capacities: Vec<Option<f64>> = cells
        .iter()
        .map(|c| {
            let all: Vec<&&Record> = records.iter().filter(|r| r.keys.cell == c.cell && r.layer == "all").collect();
            let bounds: Vec<f64> =
                all.iter().filter(|r| r.bound.as_deref() == Some(DP_CAPACITY)).filter_map(|r| r.upper_bits).collect();
            (!all.is_empty() && bounds.len() == all.len()).then(|| bounds.iter().copied().fold(0.0, f64::max))
        })
        .collect();
    let guarantee = capacities.iter().copied().collect::<Option<Vec<f64>>>().and_then(|b| range(b).map(|r| r[1]));
    let test_accuracy = range(cells.iter().map(|c| c.test_accuracy)).unwrap_or([f64::NAN; 2]);
    let epsilons: Vec<f64> = cells.iter().filter_map(|c| c.epsilon).collect();
    DefenceOutcome {
        defense,
        cells: cells.len(),
        test_accuracy,
        epsilon: if epsilons.len() == cells.len() { range(epsilons) } else { None },
        same_accuracy: cells.iter().all(|c| undefended_accuracy.contains(&c.test_accuracy)),
        guarantee,
        leaks,
    }
}
