//! Upper bounds beside the measured lower bounds, end to end: on DP cells every record carries the capacity (or
//! log2 classes) bound and no family's lower 95% bound exceeds it; the Fisher bound sits beside the sensitivity and
//! the attack; the consistency check fires on an estimate above its bound; rankings come with intervals.

use std::process::Command;

use gradleak::audit::{flag_excesses, CellKeys, Record};

fn gradleak(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gradleak")).args(args).args(["--quiet", "--threads", "1"]).output().unwrap()
}

/// LeNet-5 on the embedded data, one epoch, batch size 1, DP at sigma 0.5 and 1, with sensitivity and a short
/// Inverting Gradients attack.
const DP_CELLS: &str = r#"
seed = 5
model = "lenet5"
[training]
epochs = 1
[measure]
updates = 150
targets = ["input", "label", "attribute:thickness"]
bootstrap = 200
sensitivity_samples = 8
probes = 4
attack = "ig"
attack_samples = 2
attack_iterations = 40
[grid]
dp = ["clip=1,sigma=0.5", "clip=1,sigma=1"]
"#;

#[test]
fn dp_cells_carry_their_bounds_and_no_lower_bound_exceeds_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("audit.toml");
    std::fs::write(&config, DP_CELLS).unwrap();
    let out = dir.path().join("out");
    let run = gradleak(&["audit", "--config", &config.display().to_string(), "--out", &out.display().to_string()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let records = r["records"].as_array().unwrap();
    let capacity = |sigma: f64| 1.0 / (2.0 * sigma * sigma * std::f64::consts::LN_2);
    let mut checked = 0;
    for x in records {
        let defense = x["defense"].as_str().unwrap();
        let sigma = if defense.contains("sigma=0.5") { 0.5 } else { 1.0 };
        let upper = x["upper_bits"].as_f64().unwrap_or_else(|| panic!("no bound on a DP record: {x}"));
        // The input's bound is the channel's capacity; a binary attribute has at most 1 bit, the label log2 10.
        let expected = match x["target"].as_str().unwrap() {
            "input" => (capacity(sigma), "dp_capacity"),
            "label" => (capacity(sigma).min(10f64.log2()), "dp_capacity"),
            _ if capacity(sigma) < 1.0 => (capacity(sigma), "dp_capacity"),
            _ => (1.0, "log2_classes"),
        };
        assert!((upper - expected.0).abs() < 1e-12, "{x}");
        assert_eq!(x["bound"], expected.1, "{x}");
        let low = x["ci95"][0].as_f64().unwrap();
        assert!(low <= upper, "lower bound above the upper bound: {x}");
        assert!(!x["warnings"].to_string().contains("inconsistent"), "{x}");
        checked += 1;
    }
    assert!(checked > 40, "{checked} records");
    // sigma = 1, one release: 1 / (2 ln 2) bits.
    let unit = records.iter().find(|x| x["defense"] == "dp:clip=1,sigma=1" && x["target"] == "input").unwrap();
    assert!((unit["upper_bits"].as_f64().unwrap() - 0.7213).abs() < 5e-5);

    // The Fisher bound per layer and for all layers, beside the input sensitivity.
    let sensitivity = r["sensitivity"].as_array().unwrap();
    for layer in ["conv1", "conv2", "fc1", "fc2", "fc3", "all"] {
        for kind in ["dfil", "mse_bound", "psnr_bound"] {
            let rows: Vec<_> = sensitivity.iter().filter(|s| s["layer"] == layer && s["kind"] == kind).collect();
            assert_eq!(rows.len(), 2, "{layer} / {kind}: one per DP cell");
            for s in rows {
                let (v, lo, hi) =
                    (s["value"].as_f64().unwrap(), s["ci95"][0].as_f64().unwrap(), s["ci95"][1].as_f64().unwrap());
                assert!(v.is_finite() && lo <= v && v <= hi, "{s}");
            }
        }
    }
    // More noise, less Fisher information: dFIL at sigma 1 is a quarter of that at sigma 0.5 up to the clipping's
    // randomness (the same samples and probes, the same clipped Jacobians).
    let dfil = |defense: &str| {
        sensitivity.iter().find(|s| s["layer"] == "all" && s["kind"] == "dfil" && s["defense"] == defense).unwrap()
            ["value"]
            .as_f64()
            .unwrap()
    };
    let ratio = dfil("dp:clip=1,sigma=1") / dfil("dp:clip=1,sigma=0.5");
    assert!((ratio - 0.25).abs() < 1e-9, "{ratio}");
    // The attack beside its own victims' bound.
    for a in r["attacks"].as_array().unwrap().iter().filter(|a| a["method"] == "ig") {
        assert!(a["psnr_bound"].as_f64().unwrap().is_finite(), "{a}");
        assert!(a["beats_bound"].as_u64().unwrap() <= 2, "{a}");
    }
    // Rankings with intervals: every pair of layers compared, and the agreement's interval with its verdict.
    let order = r["layer_order"].as_array().unwrap();
    assert_eq!(order.iter().filter(|o| o["kind"] == "relative").count(), 2 * 10, "5 layers: 10 pairs per cell");
    for o in order {
        assert!(["greater", "less", "indistinguishable"].contains(&o["verdict"].as_str().unwrap()), "{o}");
    }
    let agreement = r["agreement"].as_array().unwrap();
    for a in agreement.iter().filter(|a| a["target"] == "input") {
        if a["spearman_ci95"].is_null() {
            assert!(a["verdict"].is_null(), "{a}");
        } else {
            let ci = a["spearman_ci95"].as_array().unwrap();
            assert!(ci[0].as_f64().unwrap() <= ci[1].as_f64().unwrap(), "{a}");
            assert!(["agree", "disagree", "indistinguishable"].contains(&a["verdict"].as_str().unwrap()), "{a}");
        }
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for part in
        ["upper bound |", "**Bound check**: no lower 95% bound", "Fisher bound on reconstruction", "Layer order"]
    {
        assert!(md.contains(part), "report.md lacks '{part}'");
    }
    let csv = std::fs::read_to_string(out.join("records.csv")).unwrap();
    assert!(csv.lines().next().unwrap().contains(",upper_bits,bound,"), "{}", csv.lines().next().unwrap());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("class=\"upper\"") && html.contains("id=\"bound-check\""));
}

fn record(ci95: [f64; 2], upper: Option<f64>) -> Record {
    let keys = CellKeys {
        cell: "c".into(),
        dataset: "embedded".into(),
        model: "lenet5".into(),
        batch_size: 1,
        epoch: 1,
        dropout: 0.0,
        defense: "dp:clip=1,sigma=1".into(),
        epsilon: None,
        test_accuracy: 0.5,
    };
    Record {
        keys,
        layer: "fc1".into(),
        num_params: 10,
        features: "full".into(),
        feature_dim: 10,
        target: "label".into(),
        family: "linear".into(),
        source: None,
        bits: (ci95[0] + ci95[1]) / 2.0,
        ci95,
        bits_per_dim: None,
        r2: None,
        accuracy: Some(0.5),
        n_train: 6,
        n_test: 2,
        constant_fits: 0,
        repeats: 1,
        repeat_bits: Vec::new(),
        fit_se: 0.0,
        seed: 0,
        upper_bits: upper,
        bound: upper.map(|_| "dp_capacity".to_string()),
        warnings: Vec::new(),
        pvi: Vec::new(),
    }
}

#[test]
fn the_consistency_check_fires_on_a_lower_bound_above_the_upper_bound() {
    // 1 bit at least, where no attacker can get more than 1 / (2 ln 2) = 0.72 bits: the check must say so, with
    // the excess.
    let mut records =
        vec![record([1.0, 1.3], Some(0.7213)), record([0.2, 0.9], Some(0.7213)), record([2.0, 3.0], None)];
    flag_excesses(&mut records);
    assert_eq!(records[0].warnings.len(), 1, "{:?}", records[0].warnings);
    let w = &records[0].warnings[0];
    assert!(w.contains("inconsistent with the dp_capacity bound") && w.contains("by 0.279 bits"), "{w}");
    assert!(records[1].warnings.is_empty(), "an interval that reaches above the bound is not an excess");
    assert!(records[2].warnings.is_empty(), "no bound, nothing to check");
}
