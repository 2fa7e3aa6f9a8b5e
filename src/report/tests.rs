//! The interpretation's findings and their words, from hand-built records.

use super::interpret::{self, DefenceOutcome, Leak, Protection, ProtectionVerdict, Reconstruction, FULL_FRACTION};
use super::text::verdict_text;
use super::{CellSummary, Report};
use crate::audit::{AttackRecord, AuditConfig, CellKeys, LocalisationRecord, Record, BEST};
use crate::measure::localisation::{Localisation, LocalisationStep};

/// log2 of ten classes.
const LABEL_BOUND: f64 = std::f64::consts::LOG2_10;

fn keys(cell: &str, defense: &str, epsilon: Option<f64>, test_accuracy: f64) -> CellKeys {
    CellKeys {
        cell: cell.into(),
        dataset: "embedded".into(),
        model: "lenet5".into(),
        batch_size: 1,
        epoch: 2,
        dropout: 0.0,
        defense: defense.into(),
        epsilon,
        test_accuracy,
    }
}

/// A `best` record (from `linear`) of `cell` about `target` from `layer`, with an upper bound where given.
fn best(cell: &CellKeys, layer: &str, target: &str, bits: f64, ci95: [f64; 2], upper: Option<(f64, &str)>) -> Record {
    Record {
        keys: cell.clone(),
        layer: layer.into(),
        num_params: 10,
        features: "full".into(),
        feature_dim: 10,
        target: target.into(),
        family: BEST.into(),
        source: Some("linear".into()),
        bits,
        ci95,
        bits_per_dim: None,
        r2: None,
        accuracy: None,
        n_train: 6,
        n_test: 2,
        constant_fits: 0,
        repeats: 1,
        repeat_bits: Vec::new(),
        fit_se: 0.0,
        seed: 0,
        upper_bits: upper.map(|u| u.0),
        bound: upper.map(|u| u.1.to_string()),
        warnings: Vec::new(),
        pvi: Vec::new(),
    }
}

fn label_bound() -> Option<(f64, &'static str)> {
    Some((LABEL_BOUND, "log2_classes"))
}

/// An undefended cell: the label at its bound from every layer, the input from fc1 most, the attribute in part.
fn undefended(cell: &CellKeys) -> Vec<Record> {
    let mut out = Vec::new();
    for (layer, input, label) in [("conv1", 110.0, 3.22), ("fc1", 1194.9, 3.32), ("all", 1194.9, 3.32)] {
        out.push(best(cell, layer, "input", input, [input - 40.0, input + 40.0], None));
        out.push(best(cell, layer, "label", label, [label - 0.1, label.min(LABEL_BOUND)], label_bound()));
    }
    out.push(best(cell, "conv1", "attribute:thickness", 0.1, [-0.1, 0.3], Some((1.0, "log2_classes"))));
    out.push(best(cell, "fc1", "attribute:thickness", 0.61, [0.46, 0.75], Some((1.0, "log2_classes"))));
    out.push(best(cell, "all", "attribute:thickness", 0.61, [0.46, 0.75], Some((1.0, "log2_classes"))));
    out
}

/// A DP cell whose records all read `bits` [`ci`] (within the capacity `capacity`) but the label from fc1, which
/// reads `label_fc1`.
fn dp_cell(cell: &CellKeys, capacity: f64, label_fc1: (f64, [f64; 2])) -> Vec<Record> {
    let mut out = Vec::new();
    for layer in ["conv1", "fc1", "all"] {
        for target in ["input", "label", "attribute:thickness"] {
            let (bits, ci) = if layer == "fc1" && target == "label" { label_fc1 } else { (0.0, [0.0, 0.0]) };
            out.push(best(cell, layer, target, bits, ci, Some((capacity, "dp_capacity"))));
        }
    }
    out
}

fn attack(cell: &CellKeys, method: &str, layer: &str, psnr: f64, guess: f64) -> AttackRecord {
    AttackRecord {
        keys: cell.clone(),
        method: method.into(),
        layer: Some(layer.into()),
        samples: 600,
        mse: 0.01,
        psnr,
        ssim: None,
        label_accuracy: None,
        image: String::new(),
        psnr_bound: None,
        guess_psnr: Some(guess),
        beats_bound: None,
    }
}

fn localisation(cell: &CellKeys) -> LocalisationRecord {
    LocalisationRecord {
        keys: cell.clone(),
        localisation: Localisation {
            target: "input".into(),
            family: BEST.into(),
            refit_family: "linear".into(),
            ranking: vec![("fc1".into(), 1194.9), ("conv1".into(), 110.0)],
            unprotected_bits: 1194.9,
            fraction: 0.1,
            protect: vec!["fc1".into()],
            steps: vec![LocalisationStep { protected: vec!["fc1".into()], remaining_bits: 110.0, ci95: [70.0, 150.0] }],
        },
    }
}

/// The parts of a report, owned; [`Parts::report`] borrows them as one.
struct Parts {
    config: AuditConfig,
    cells: Vec<CellKeys>,
    records: Vec<Record>,
    attacks: Vec<AttackRecord>,
    localisation: Vec<LocalisationRecord>,
}

impl Parts {
    fn report(&self) -> Report<'_> {
        Report {
            format: "gradleak-report/1",
            gradleak_version: "test",
            libtorch_version: "test",
            seed: 0,
            config: &self.config,
            cells_total: self.cells.len(),
            skipped: &[],
            cells: self
                .cells
                .iter()
                .map(|k| CellSummary { keys: k.clone(), notes: Vec::new(), seconds: 1.0 })
                .collect(),
            records: self.records.iter().collect(),
            sensitivity: Vec::new(),
            agreement: Vec::new(),
            layer_order: Vec::new(),
            localisation: self.localisation.iter().collect(),
            attacks: self.attacks.iter().collect(),
        }
    }
}

fn single_cell() -> Parts {
    let cell = keys("a", "none", None, 0.705);
    Parts {
        config: AuditConfig::default(),
        records: undefended(&cell),
        attacks: vec![
            attack(&cell, "analytic:fc1", "fc1", 21.7, 11.0),
            // No closer than the guess: not a reconstruction.
            attack(&cell, "analytic:fc3", "fc3", 11.8, 11.0),
        ],
        localisation: vec![localisation(&cell)],
        cells: vec![cell],
    }
}

#[test]
fn a_label_at_its_bound_from_every_layer_leaks_fully_and_no_layer_set_keeps_it() {
    let parts = single_cell();
    let report = parts.report();
    let verdict = interpret::verdict(&report);
    assert_eq!(verdict.pairs.len(), 1);
    let pair = &verdict.pairs[0];
    assert_eq!(pair.cell.cell, "a");
    let label = pair.targets.iter().find(|t| t.target == "label").unwrap();
    // conv1's 3.22 bits are 97% of the bound: full too.
    const { assert!(3.22 >= FULL_FRACTION * LABEL_BOUND) };
    match &label.leak {
        Leak::Fully { bound, full, short } => {
            assert_eq!(*bound, LABEL_BOUND);
            assert_eq!(full, &["conv1", "fc1"]);
            assert!(short.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(label.protection, Some(ProtectionVerdict::EveryLayerLeaks));
    let bracket = label.bracket.as_ref().unwrap();
    assert_eq!((bracket.lower.layer.as_str(), bracket.lower.bits), ("fc1", 3.32), "the first of the largest");
    assert_eq!(bracket.upper, Some((LABEL_BOUND, "log2_classes")));

    let text = verdict_text(&verdict);
    let what = &text[0].items[0];
    assert_eq!(what.label, "What leaks");
    assert!(what.text.contains("the label fully, from every layer"), "{}", what.text);
}

#[test]
fn a_label_short_of_its_bound_in_one_layer_names_the_full_layers_and_the_short_one() {
    let mut parts = single_cell();
    let conv1 = parts.records.iter_mut().find(|r| r.layer == "conv1" && r.target == "label").unwrap();
    (conv1.bits, conv1.ci95) = (2.1, [1.9, 2.3]);
    let report = parts.report();
    let verdict = interpret::verdict(&report);
    let label = verdict.pairs[0].targets.iter().find(|t| t.target == "label").unwrap();
    assert_eq!(label.leak, Leak::Fully { bound: LABEL_BOUND, full: vec!["fc1"], short: vec![("conv1", 2.1)] });
    // Not localised, and not every layer gives it away: nothing said about protecting layers.
    assert_eq!(label.protection, None);
    let text = &verdict_text(&verdict)[0].items[0].text;
    assert!(text.contains("the label fully, from fc1 (conv1: 2.10 of 3.32 bits)"), "{text}");
}

#[test]
fn the_input_is_reconstructable_from_the_layer_whose_attack_beats_the_guess() {
    let parts = single_cell();
    let report = parts.report();
    let verdict = interpret::verdict(&report);
    let input = verdict.pairs[0].targets.iter().find(|t| t.target == "input").unwrap();
    let Leak::Partly { top, reconstruction } = &input.leak else { panic!("{:?}", input.leak) };
    assert_eq!((top.layer.as_str(), top.bits), ("fc1", 1194.9));
    assert_eq!(reconstruction, &Some(Reconstruction { method: "analytic:fc1", layer: "fc1", psnr: 21.7, guess: 11.0 }));
    // No bound applies to the input without noise.
    assert_eq!(input.bracket.as_ref().unwrap().upper, None);
    // The localisation: protect fc1, which leaves conv1's 110 bits.
    let Some(ProtectionVerdict::Measured(Protection::Layers { protect, left, remaining, .. })) = &input.protection
    else {
        panic!("{:?}", input.protection)
    };
    assert_eq!(*protect, ["fc1".to_string()]);
    assert_eq!((left, *remaining), (&vec!["conv1"], 110.0));

    let text = verdict_text(&verdict);
    let items = &text[0].items;
    assert!(items[0].text.contains("the input, reconstructable from fc1 at 21.7 dB"), "{}", items[0].text);
    let attribute = "the attribute thickness in part: 0.61 [0.46, 0.75] of at most 1.00 bits, most from fc1";
    assert!(items[0].text.contains(attribute), "{}", items[0].text);
    let brackets = items.iter().find(|i| i.label == "Tightest bracket").unwrap();
    assert_eq!(
        brackets.lines[0],
        "input: at least 1194.90 [1154.90, 1234.90] bits (linear, fc1); no upper bound applies"
    );
    assert_eq!(
        brackets.lines[1],
        "label: from 3.32 [3.22, 3.32] bits (linear, fc1) to at most 3.32 bits (log2_classes): at the bound"
    );
    let protect = items.iter().find(|i| i.label == "Layers to protect").unwrap();
    assert!(protect.text.contains("under 10% of the bits"), "{}", protect.text);
    assert_eq!(
        protect.lines[0],
        "input: fc1 (1 of 2 layers), which leaves 110.00 of 1194.90 bits in conv1 (measured with linear)"
    );
    // One cell, no defence to compare: the verdict says how to find one.
    let defence = items.iter().find(|i| i.label == "Defence").unwrap();
    assert!(defence.text.contains("compares no defences"), "{}", defence.text);
}

#[test]
fn nothing_found_about_any_target_is_said_once() {
    let cell = keys("a", "none", None, 0.5);
    let parts = Parts {
        config: AuditConfig::default(),
        records: vec![
            best(&cell, "fc1", "input", 0.0, [0.0, 0.0], None),
            // An estimate whose interval reaches 0, and a negligible one: nothing either.
            best(&cell, "fc1", "label", 0.2, [-0.1, 0.5], label_bound()),
            best(&cell, "all", "label", 0.004, [0.001, 0.008], label_bound()),
        ],
        attacks: Vec::new(),
        localisation: Vec::new(),
        cells: vec![cell],
    };
    let report = parts.report();
    let verdict = interpret::verdict(&report);
    assert!(verdict.pairs[0].targets.iter().all(|t| t.leak == Leak::Nothing));
    let text = verdict_text(&verdict);
    assert!(text[0].items[0].text.starts_with("nothing"), "{:?}", text[0].items[0]);
    let brackets = text[0].items.iter().find(|i| i.label == "Tightest bracket").unwrap();
    assert_eq!(
        brackets.lines[1],
        "label: no usable information found (the largest estimate: 0.20 [-0.10, 0.50] bits, linear, fc1); at most \
         3.32 bits (log2_classes)"
    );
    assert!(text[0].items.iter().all(|i| i.label != "Defence"), "nothing to close");
}

/// A sweep: no defence, DP at sigma 0.5 (the label still leaks from fc1), at sigma 1 and at sigma 2 (nothing).
fn sweep() -> Parts {
    let none = keys("n", "none", None, 0.705);
    let half = keys("h", "dp:clip=1,sigma=0.5", Some(3.1), 0.705);
    let one = keys("o", "dp:clip=1,sigma=1", Some(0.5), 0.705);
    let two = keys("t", "dp:clip=1,sigma=2", Some(0.2), 0.705);
    let mut records = undefended(&none);
    records.extend(dp_cell(&half, 2.89, (0.10, [0.01, 0.18])));
    records.extend(dp_cell(&one, 0.72, (0.004, [-0.02, 0.03])));
    records.extend(dp_cell(&two, 0.2, (0.0, [0.0, 0.0])));
    Parts {
        config: AuditConfig::default(),
        records,
        attacks: Vec::new(),
        localisation: Vec::new(),
        cells: vec![none, half, one, two],
    }
}

#[test]
fn the_cheapest_defence_whose_cells_read_about_zero_closes_the_leak() {
    let parts = sweep();
    let report = parts.report();
    let verdict = interpret::verdict(&report);
    let pair = &verdict.pairs[0];
    assert_eq!(pair.cell.cell, "n", "the undefended cell");
    assert_eq!(pair.cells, 4);
    let defences = pair.defences.as_ref().unwrap();
    // sigma 1 and sigma 2 both read about 0; sigma 1 costs less (the larger epsilon, the same accuracy).
    let closing: &DefenceOutcome = defences.closing.as_ref().unwrap();
    assert_eq!(closing.defense, "dp:clip=1,sigma=1");
    assert_eq!((closing.test_accuracy, closing.epsilon), ([0.705, 0.705], Some([0.5, 0.5])));
    assert!(closing.same_accuracy && closing.leaks.is_empty());
    assert_eq!(closing.guarantee, Some(0.72));
    let others: Vec<(&str, usize)> = defences.others.iter().map(|o| (o.defense, o.leaks.len())).collect();
    assert_eq!(others, [("dp:clip=1,sigma=0.5", 1), ("dp:clip=1,sigma=2", 0)]);
    let still = defences.others[0].leaks[0];
    assert_eq!((still.layer.as_str(), still.target.as_str(), still.bits), ("fc1", "label", 0.10));

    let text = verdict_text(&verdict);
    assert!(
        text[0].heading.starts_with("lenet5 on embedded, the cell without a defence (cell n: "),
        "{}",
        text[0].heading
    );
    let defence = text[0].items.iter().find(|i| i.label == "Defence").unwrap();
    assert!(defence.text.starts_with("dp:clip=1,sigma=1 closes it"), "{}", defence.text);
    assert!(defence.text.contains("(as without it: the defence acts on the shared updates only)"), "{}", defence.text);
    assert!(defence.text.contains("no attacker can get more than 0.72 bits"), "{}", defence.text);
    assert!(defence.text.contains("test accuracy 70.50%") && defence.text.contains("epsilon 0.50"), "{}", defence.text);
    assert_eq!(
        defence.lines,
        [
            "dp:clip=1,sigma=0.5 leaves the label 0.10 [0.01, 0.18] bits (fc1); test accuracy 70.50% (as without it), \
             epsilon 3.10",
            "dp:clip=1,sigma=2 closes it too, at a higher cost: test accuracy 70.50% (as without it), epsilon 0.20",
        ]
    );
}

#[test]
fn a_defence_that_keeps_more_accuracy_is_cheaper_than_one_with_less_noise() {
    let mut parts = sweep();
    // sigma 2 now keeps a higher test accuracy than sigma 1 (say, a model trained for it).
    for r in parts.records.iter_mut().filter(|r| r.keys.cell == "t") {
        r.keys.test_accuracy = 0.72;
    }
    parts.cells[3].test_accuracy = 0.72;
    let report = parts.report();
    let verdict = interpret::verdict(&report);
    let defences = verdict.pairs[0].defences.as_ref().unwrap();
    let closing = defences.closing.as_ref().unwrap();
    assert_eq!((closing.defense, closing.same_accuracy), ("dp:clip=1,sigma=2", false));
}

#[test]
fn no_defence_closing_the_leak_says_what_each_leaves() {
    let mut parts = sweep();
    parts.records.retain(|r| r.keys.cell == "n" || r.keys.cell == "h");
    parts.cells.truncate(2);
    let report = parts.report();
    let verdict = interpret::verdict(&report);
    let defences = verdict.pairs[0].defences.as_ref().unwrap();
    assert!(defences.closing.is_none());
    assert_eq!(defences.others.len(), 1);
    let text = verdict_text(&verdict);
    let defence = text[0].items.iter().find(|i| i.label == "Defence").unwrap();
    assert_eq!(defence.text, "no defence in the grid closes it:");
    assert!(defence.lines[0].starts_with("dp:clip=1,sigma=0.5 leaves the label 0.10"), "{:?}", defence.lines);
}

#[test]
fn the_verdict_reads_the_most_leaking_undefended_cell() {
    let (small, large) = (keys("s", "none", None, 0.7), keys("l", "none", None, 0.7));
    let (small, large) = (CellKeys { batch_size: 8, ..small }, CellKeys { batch_size: 1, ..large });
    let parts = Parts {
        config: AuditConfig::default(),
        records: vec![
            best(&small, "fc1", "input", 20.0, [10.0, 30.0], None),
            best(&large, "fc1", "input", 900.0, [800.0, 1000.0], None),
        ],
        attacks: Vec::new(),
        localisation: Vec::new(),
        cells: vec![small, large],
    };
    let report = parts.report();
    let verdict = interpret::verdict(&report);
    assert_eq!(verdict.pairs[0].cell.cell, "l");
    assert!(verdict.pairs[0].defences.is_none(), "one defence setting: nothing to compare");
    let heading = &verdict_text(&verdict)[0].heading;
    assert!(heading.contains("the most leaking of the 2 cells without a defence") && heading.contains("batch size 1"));
}

#[test]
fn protecting_every_layer_says_what_protecting_one_fewer_left() {
    let mut parts = single_cell();
    let l = &mut parts.localisation[0].localisation;
    l.protect = vec!["fc1".into(), "conv1".into()];
    let report = parts.report();
    let verdict = interpret::verdict(&report);
    let input = verdict.pairs[0].targets.iter().find(|t| t.target == "input").unwrap();
    let Some(ProtectionVerdict::Measured(Protection::Layers { left, fewer, .. })) = &input.protection else {
        panic!("{:?}", input.protection)
    };
    assert!(left.is_empty());
    assert_eq!(*fewer, Some((&["fc1".to_string()][..], 110.0)));
    let text = verdict_text(&verdict);
    let protect = text[0].items.iter().find(|i| i.label == "Layers to protect").unwrap();
    assert_eq!(
        protect.lines[0],
        "input: all 2 layers: protecting fc1 still leaves 110.00 of 1194.90 bits (measured with linear)"
    );
}
