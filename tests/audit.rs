//! The audit end to end on the embedded dataset (no fetch needed): configuration errors, a small sweep with its four
//! reports, resumption after a kill, out-folder protection, shards and merge, and the HTML in a real browser.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gradleak::audit::AuditConfig;

fn gradleak(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gradleak")).args(args).args(["--quiet", "--threads", "1"]).output().unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A small, fast audit: the MLP on the embedded data, one epoch, 60 updates, 2 x 2 cells.
const SMALL: &str = r#"
seed = 3
model = "mlp"
hidden = 32
[training]
epochs = 1
[measure]
updates = 60
targets = ["input", "label", "attribute:thickness"]
families = ["linear"]
bootstrap = 200
sketch_dim = 256
sensitivity_samples = 8
probes = 2
[grid]
batch_size = [1, 4]
dp = ["none", "clip=1,sigma=0.5"]
"#;

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("audit.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn configuration_errors_name_the_key_and_the_valid_ones() {
    let err = AuditConfig::from_toml("[measure]\nupdatez = 5\n").unwrap_err().to_string();
    assert!(err.contains("updatez") && err.contains("updates"), "{err}");
    let err = AuditConfig::from_toml("colour = 1\n").unwrap_err().to_string();
    assert!(err.contains("colour") && err.contains("dataset"), "{err}");
    // The configuration is validated as it is read.
    let no_cells = AuditConfig::from_toml("[grid]\nbatch_size = []\n").unwrap_err();
    assert!(no_cells.to_string().contains("the grid has no cells"));
    let bad_dp = AuditConfig::from_toml("[grid]\ndp = [\"clip=0,sigma=1\"]\n").unwrap_err();
    assert!(format!("{bad_dp:#}").contains("grid.dp") && format!("{bad_dp:#}").contains("C must be > 0"), "{bad_dp:#}");
    let misplaced = AuditConfig::from_toml("[grid]\ndefense = [[\"dropout:0.5\"]]\n").unwrap_err();
    assert!(format!("{misplaced:#}").contains("own axis"));
    let cells = AuditConfig::from_toml(SMALL).unwrap().cells().unwrap();
    assert_eq!(cells.len(), 4);
    // The sketch kind: a keyword, the default left out of the written configuration (so cells keep their keys).
    let kron = AuditConfig::from_toml("[measure]\nsketch = \"kron\"\n").unwrap();
    assert_eq!(kron.measure.sketch, gradleak::gradients::sketch::SketchKind::Kron);
    let default = AuditConfig::from_toml("").unwrap();
    assert!(!toml::to_string(&default).unwrap().contains("sketch ="), "the default sketch is not written");
    assert!(toml::to_string(&kron).unwrap().contains("sketch = \"kron\""));
    let err = format!("{:#}", AuditConfig::from_toml("[measure]\nsketch = \"dense\"\n").unwrap_err());
    assert!(err.contains("dense") && err.contains("kron") && err.contains("sparse"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[measure]\nfamilies = [\"forest\"]\n");
    let out = gradleak(&["audit", "--config", &path, "--out", &dir.path().join("o").display().to_string()]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    assert!(e.contains("measure.families") && e.contains("forest"), "{e}");
}

#[test]
fn a_sweep_writes_four_reports_resumes_and_refuses_another_audits_folder() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SMALL);
    let out = dir.path().join("out");
    let out_s = out.display().to_string();
    let run = gradleak(&["audit", "--config", &config, "--out", &out_s, "--json"]);
    assert!(run.status.success(), "{}", stderr(&run));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["summary"]["cells_computed"], 4);

    let r = report(&out);
    assert_eq!(r["seed"], 3);
    assert_eq!(r["cells"].as_array().unwrap().len(), 4);
    let records = r["records"].as_array().unwrap();
    // 3 layers + all, 3 targets, 1 family and `best` (the same numbers), 4 cells.
    assert_eq!(records.len(), 4 * 3 * 2 * 4);
    assert!(records.iter().all(|x| (x["family"] == "best") == x["source"].is_string()), "source only for best");
    for key in
        ["layer", "target", "family", "bits", "ci95", "batch_size", "epoch", "defense", "epsilon", "test_accuracy"]
    {
        assert!(records[0].get(key).is_some(), "records have '{key}'");
    }
    let with_dp: Vec<_> = records.iter().filter(|x| x["defense"].as_str().unwrap().contains("dp:")).collect();
    assert!(!with_dp.is_empty() && with_dp.iter().all(|x| x["epsilon"].as_f64().unwrap() > 0.0));
    assert!(records.iter().filter(|x| x["defense"] == "none").all(|x| x["epsilon"].is_null()));
    // The label is well predicted from the last layer's gradient without defences.
    let fc3_label = records
        .iter()
        .find(|x| x["layer"] == "fc3" && x["target"] == "label" && x["defense"] == "none" && x["batch_size"] == 1)
        .unwrap();
    assert!(fc3_label["bits"].as_f64().unwrap() > 1.0, "{fc3_label}");
    assert!(!r["sensitivity"].as_array().unwrap().is_empty());
    assert!(!r["agreement"].as_array().unwrap().is_empty());
    let localisations = r["localisation"].as_array().unwrap();
    assert!(!localisations.is_empty());
    for l in localisations {
        // The protected layers are the top of the ranking; what they leave is under the threshold, and protecting
        // one layer fewer (when the search measured it) was not enough.
        let ranking: Vec<&str> = l["ranking"].as_array().unwrap().iter().map(|x| x[0].as_str().unwrap()).collect();
        let protect: Vec<&str> = l["protect"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        let unprotected = l["unprotected_bits"].as_f64().unwrap();
        if unprotected <= 0.0 {
            assert!(protect.is_empty(), "nothing to localise: {l}");
            continue;
        }
        assert_eq!(protect, ranking[..protect.len()], "{l}");
        let threshold = l["fraction"].as_f64().unwrap() * unprotected;
        let steps = l["steps"].as_array().unwrap();
        let remaining_with = |k: usize| {
            steps
                .iter()
                .find(|s| s["protected"].as_array().unwrap().len() == k)
                .map(|s| s["remaining_bits"].as_f64().unwrap())
        };
        if protect.len() < ranking.len() {
            assert!(remaining_with(protect.len()).unwrap() <= threshold, "{l}");
        }
        if let Some(fewer) = remaining_with(protect.len() - 1) {
            assert!(fewer > threshold, "{l}");
        }
    }
    let csv = std::fs::read_to_string(out.join("records.csv")).unwrap();
    assert_eq!(csv.lines().count(), records.len() + 1);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    // One family: a row per record, as before (`best` would repeat every row).
    assert!(md.contains("| layer | parameters | features | target | family | bits | 95% CI |"), "{md}");
    assert!(!md.contains("| best |"), "{md}");
    // The verdict opens the report, and the numbers follow it: the label leaks from the undefended cells, and the
    // grid's defence either closes it or is said to leave something.
    let (verdict, overview) = (md.find("## Verdict").unwrap(), md.find("## Overview").unwrap());
    assert!(verdict < overview && overview < md.find("## Cell ").unwrap(), "{md}");
    let verdict = &md[verdict..overview];
    assert!(verdict.contains("- **What leaks**: ") && verdict.contains("the label"), "{verdict}");
    assert!(verdict.contains("- **Tightest bracket**: ") && verdict.contains("  - label: from "), "{verdict}");
    assert!(
        verdict.contains("- **Defence**: dp:clip=1,sigma=0.5 closes it")
            || verdict.contains("- **Defence**: no defence in the grid closes it:\n  - dp:clip=1,sigma=0.5 leaves"),
        "{verdict}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg"));
    let (verdict, overview) = (html.find("id=\"verdict\"").unwrap(), html.find("id=\"overview\"").unwrap());
    assert!(html.find("id=\"summary\"").unwrap() < verdict && verdict < overview);

    // The same command again recomputes nothing.
    let again = gradleak(&["audit", "--config", &config, "--out", &out_s, "--json"]);
    let summary: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(summary["summary"]["cells_computed"], 0);
    assert_eq!(summary["summary"]["cells_reused"], 4);
    assert_eq!(report(&out)["records"], r["records"], "same seed, same numbers");

    // Another configuration in the same folder is refused unless --resume.
    let other = write_config(dir.path(), &SMALL.replace("seed = 3", "seed = 4"));
    let refused = gradleak(&["audit", "--config", &other, "--out", &out_s]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("another audit configuration") && stderr(&refused).contains("--resume"));
}

/// The default families (linear and analytic) on LeNet-5: single-sample updates and DP-SGD.
const ANALYTIC: &str = r#"
seed = 1
model = "lenet5"
[training]
epochs = 1
[measure]
updates = 150
targets = ["input", "label", "attribute:thickness"]
bootstrap = 200
sensitivity = false
[grid]
dp = ["none", "clip=1,sigma=1"]
"#;

#[test]
fn the_analytic_family_reads_what_a_closed_form_attacker_gets_and_nothing_under_dp() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), ANALYTIC);
    let out = dir.path().join("out");
    let run = gradleak(&["audit", "--config", &config, "--out", &out.display().to_string()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let r = report(&out);
    assert_eq!(r["config"]["measure"]["families"], serde_json::json!(["linear", "analytic"]), "the default");
    let records = r["records"].as_array().unwrap();
    let find = |defense: &str, layer: &str, target: &str, family: &str| {
        records
            .iter()
            .find(|x| x["defense"] == defense && x["layer"] == layer && x["target"] == target && x["family"] == family)
    };
    let bits = |x: &serde_json::Value| x["bits"].as_f64().unwrap();
    // A closed form wherever a fully connected layer is shared; none for convolutions.
    for layer in ["conv1", "conv2"] {
        for target in ["input", "label", "attribute:thickness"] {
            assert!(find("none", layer, target, "analytic").is_none(), "{layer} / {target}");
            assert!(find("none", layer, target, "best").is_some(), "{layer} / {target}: best is linear's");
        }
    }
    for layer in ["fc1", "fc2", "fc3", "all"] {
        let input = find("none", layer, "input", "analytic").unwrap();
        assert_eq!(input["features"], "reconstruction");
        assert!(input["ci95"][0].as_f64().unwrap() > 0.0, "{layer}: {input}");
        assert_eq!(find("none", layer, "label", "analytic").is_some(), ["fc3", "all"].contains(&layer), "{layer}");
    }
    // iDLG's rule reads every label; the inversion from fc1 reads more of the image than the linear probe.
    let label = find("none", "fc3", "label", "analytic").unwrap();
    assert_eq!(label["accuracy"].as_f64(), Some(1.0), "{label}");
    let (analytic, linear) =
        (find("none", "all", "input", "analytic").unwrap(), find("none", "all", "input", "linear").unwrap());
    assert!(analytic["ci95"][0].as_f64().unwrap() > bits(linear), "{analytic} vs {linear}");
    assert_eq!(find("none", "all", "input", "best").unwrap()["source"], "analytic");
    // DP-SGD at sigma 1 leaves every family at most a few bits of the input.
    let dp = "dp:clip=1,sigma=1";
    for layer in ["fc1", "all"] {
        for family in ["linear", "analytic"] {
            let x = find(dp, layer, "input", family).unwrap();
            assert!(bits(x) <= 3.0, "{layer} / {family} under DP: {x}");
        }
    }
    // Each layer's reconstructions are scored against the victims and shown in a gallery.
    let attacks = r["attacks"].as_array().unwrap();
    let methods: Vec<&str> =
        attacks.iter().filter(|a| a["defense"] == "none").map(|a| a["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["analytic:fc1", "analytic:fc2", "analytic:fc3"]);
    for a in attacks {
        assert!(a["psnr"].as_f64().unwrap() > 0.0 && a["label_accuracy"].is_null(), "{a}");
        assert!(out.join(a["image"].as_str().unwrap()).exists(), "{a}");
    }
    // The report says where there is no closed form.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let conv1 = md.lines().find(|l| l.starts_with("| conv1 |") && l.contains("| input |")).unwrap();
    assert!(conv1.contains(" - |"), "{conv1}");
    assert!(md.contains("analytic: no closed form") && md.contains("recovered in closed form"), "{md}");
}

/// One cell with two families: the families' records, then a `best` record per layer and target.
const TWO_FAMILIES: &str = r#"
seed = 3
model = "mlp"
hidden = 32
[training]
epochs = 1
[measure]
updates = 60
targets = ["input", "label", "attribute:thickness"]
families = ["linear", "mlp:16"]
bootstrap = 100
sketch_dim = 256
sensitivity_samples = 8
probes = 2
"#;

#[test]
fn two_families_give_a_best_record_per_layer_and_target_that_localisation_and_agreement_use() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), TWO_FAMILIES);
    let out = dir.path().join("out");
    let run = gradleak(&["audit", "--config", &config, "--out", &out.display().to_string()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let r = report(&out);
    let records = r["records"].as_array().unwrap();
    // 3 layers + all, 3 targets, 2 families + best, 1 cell.
    assert_eq!(records.len(), 4 * 3 * 3);
    let bits = |x: &serde_json::Value| x["bits"].as_f64().unwrap();
    let best_of = |layer: &str, target: &str| {
        let best: Vec<_> =
            records.iter().filter(|x| x["layer"] == layer && x["target"] == target && x["family"] == "best").collect();
        assert_eq!(best.len(), 1, "one best record for {layer} / {target}");
        best[0]
    };
    for layer in ["fc1", "fc2", "fc3", "all"] {
        for target in ["input", "label", "attribute:thickness"] {
            let families: Vec<_> = records
                .iter()
                .filter(|x| x["layer"] == layer && x["target"] == target && x["family"] != "best")
                .collect();
            assert_eq!(families.len(), 2);
            assert!(families.iter().all(|x| x["source"].is_null()), "source is null but for best");
            let best = best_of(layer, target);
            let top = families.iter().map(|x| bits(x)).fold(f64::NEG_INFINITY, f64::max);
            assert_eq!(bits(best), top, "{layer} / {target}");
            // A copy of the first family with the most bits, naming it.
            let source = families.iter().find(|x| bits(x) == top).unwrap();
            assert_eq!(best["source"], source["family"]);
            for key in ["ci95", "r2", "accuracy", "n_train", "n_test", "constant_fits", "features", "num_params"] {
                assert_eq!(best[key], source[key], "{layer} / {target}: {key}");
            }
        }
    }

    let csv = std::fs::read_to_string(out.join("records.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let (family, source) =
        (header.iter().position(|c| *c == "family").unwrap(), header.iter().position(|c| *c == "source").unwrap());
    assert_eq!(source, family + 1);
    assert_eq!(csv.lines().count(), records.len() + 1);
    for line in csv.lines().skip(1) {
        // No field before `source` holds a comma in this configuration.
        let fields: Vec<&str> = line.split(',').collect();
        assert_eq!(fields[family] == "best", !fields[source].is_empty(), "{line}");
    }

    // The layer table: one row per layer and target, the families side by side, then best and source.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        md.contains("| layer | parameters | features | target | linear: bits [95% CI] | mlp:16: bits [95% CI] | best | source |"),
        "{md}"
    );
    for layer in ["fc1", "fc2", "fc3", "all"] {
        assert_eq!(md.lines().filter(|l| l.starts_with(&format!("| {layer} |"))).count(), 3, "{md}");
    }
    let fc1_input = best_of("fc1", "input");
    let row = md.lines().find(|l| l.starts_with("| fc1 |") && l.contains("| input |")).unwrap();
    assert!(row.contains(&format!("| {:.2} | {} |", bits(fc1_input), fc1_input["source"].as_str().unwrap())), "{row}");
    assert!(md.contains("**Reading**"), "{md}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<h2>Families side by side</h2>") && html.contains("<th>mlp:16</th><th>best</th>"));

    // Localisation ranks the layers by their best bits and measures what is left with the family that found the
    // most in all layers together.
    let localisations = r["localisation"].as_array().unwrap();
    assert_eq!(localisations.len(), 2, "input and the attribute (not the label)");
    for l in localisations {
        let target = l["target"].as_str().unwrap();
        assert_eq!(l["family"], "best");
        let all = best_of("all", target);
        assert_eq!(l["refit_family"], all["source"], "{l}");
        let ranking = l["ranking"].as_array().unwrap();
        assert_eq!(ranking.len(), 3);
        for entry in ranking {
            assert_eq!(entry[1].as_f64().unwrap(), bits(best_of(entry[0].as_str().unwrap(), target)), "{l}");
        }
        let top_single = ranking.iter().map(|e| e[1].as_f64().unwrap()).fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(l["unprotected_bits"].as_f64().unwrap(), bits(all).max(top_single), "{l}");
    }

    // The agreement ranks the same best bits against the sensitivity.
    let agreement = r["agreement"].as_array().unwrap();
    assert!(!agreement.is_empty());
    for a in agreement {
        assert_eq!(a["family"], "best");
        let (target, kind) = (a["target"].as_str().unwrap(), a["kind"].as_str().unwrap());
        let sens: Vec<(String, f64)> = r["sensitivity"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["target"] == target && x["kind"] == kind)
            .map(|x| (x["layer"].as_str().unwrap().to_string(), x["value"].as_f64().unwrap()))
            .collect();
        let best: Vec<(String, f64)> =
            ["fc1", "fc2", "fc3"].iter().map(|l| (l.to_string(), bits(best_of(l, target)))).collect();
        // Undefined where a column is constant (every layer's best is the constant fit's 0 bits): then null.
        let expected = gradleak::measure::sensitivity::rank_agreement(&sens, &best).ok().map(|e| e.spearman);
        assert_eq!(a["spearman"].as_f64(), expected.filter(|s| s.is_finite()), "{a}");
    }
}

/// A record of one cell (bits about `target` from `layer` by `family`) with its interval.
fn record(layer: &str, target: &str, family: &str, bits: f64, ci95: [f64; 2]) -> gradleak::audit::Record {
    let keys = gradleak::audit::CellKeys {
        cell: "c".into(),
        dataset: "embedded".into(),
        model: "mlp".into(),
        batch_size: 1,
        epoch: 1,
        dropout: 0.0,
        defense: "none".into(),
        epsilon: None,
        test_accuracy: 0.5,
    };
    gradleak::audit::Record {
        keys,
        layer: layer.into(),
        num_params: 10,
        features: "full".into(),
        feature_dim: 10,
        target: target.into(),
        family: family.into(),
        source: None,
        bits,
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
        upper_bits: None,
        bound: None,
        warnings: Vec::new(),
        pvi: Vec::new(),
    }
}

#[test]
fn best_records_take_the_first_of_equal_families_and_can_be_added_again() {
    use gradleak::audit::add_best;
    let record = |layer: &str, family: &str, bits: f64| record(layer, "label", family, bits, [bits - 0.1, bits + 0.1]);
    let records = vec![
        record("fc1", "linear", 1.0),
        record("fc1", "mlp:16", 2.0),
        record("fc2", "linear", 0.5),
        record("fc2", "mlp:16", 0.5),
        record("fc3", "linear", f64::NAN),
        record("fc3", "mlp:16", 0.1),
    ];
    let with_best = add_best(records);
    let summary: Vec<(&str, &str, Option<&str>, f64)> = with_best
        .iter()
        .map(|r| (r.layer.as_str(), r.family.as_str(), r.source.as_deref(), r.bits))
        .filter(|r| r.1 == "best")
        .collect();
    assert_eq!(
        summary,
        [
            ("fc1", "best", Some("mlp:16"), 2.0),
            ("fc2", "best", Some("linear"), 0.5),
            ("fc3", "best", Some("mlp:16"), 0.1)
        ]
    );
    // Each best record follows its layer's families.
    let order: Vec<&str> = with_best.iter().map(|r| r.family.as_str()).collect();
    assert_eq!(order, ["linear", "mlp:16", "best", "linear", "mlp:16", "best", "linear", "mlp:16", "best"]);
    // Applied again (a cell read back), nothing is counted twice; one family gains its own copy.
    assert_eq!(add_best(with_best.clone()).len(), with_best.len());
    let one = add_best(vec![record("fc1", "linear", 1.0)]);
    assert_eq!(one.len(), 2);
    assert_eq!((one[1].family.as_str(), one[1].source.as_deref(), one[1].bits), ("best", Some("linear"), 1.0));
}

#[test]
fn the_reading_says_which_family_finds_more_and_when_the_largest_estimate_is_the_less_certain() {
    use gradleak::report::{layer_rows, reading};
    let records = gradleak::audit::add_best(vec![
        record("fc1", "input", "linear", 100.0, [50.0, 150.0]),
        record("fc1", "input", "mlp:16", 10.0, [5.0, 15.0]),
        // Within the interval: no disagreement.
        record("fc2", "input", "linear", 80.0, [40.0, 120.0]),
        record("fc2", "input", "mlp:16", 70.0, [60.0, 80.0]),
        record("all", "input", "linear", 90.0, [70.0, 110.0]),
        record("all", "input", "mlp:16", 20.0, [15.0, 25.0]),
        // A constant fit (0 bits, up to rounding) finds nothing, even above a negative estimate.
        record("fc1", "label", "linear", 1e-16, [1e-16, 1e-16]),
        record("fc1", "label", "mlp:16", -0.05, [-0.3, 0.2]),
        // The largest estimate's interval reaches 0, the other's does not.
        record("fc1", "attribute:a", "linear", 0.4, [0.2, 0.6]),
        record("fc1", "attribute:a", "mlp:16", 0.5, [-0.2, 1.2]),
        // Two perfect label predictors: intervals of zero width 0.001 bits apart are not a finding.
        record("fc2", "label", "linear", 3.3206, [3.3206, 3.3206]),
        record("fc2", "label", "mlp:16", 3.3193, [3.3193, 3.3193]),
    ]);
    let records: Vec<&gradleak::audit::Record> = records.iter().collect();
    let families = gradleak::report::families(records.iter().copied());
    assert_eq!(families, ["linear", "mlp:16"]);
    let rows = layer_rows(&records, &families);
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[0].best.unwrap().source.as_deref(), Some("linear"));
    assert_eq!(
        reading(&rows, &families),
        [
            "input: linear finds more than mlp:16 in 2 of 3 rows, most in fc1 (100.00 vs 10.00 bits)",
            "attribute:a: in fc1 the largest estimate's interval reaches 0 where another family's stays above it",
        ]
    );
}

#[test]
fn a_killed_sweep_resumes_with_the_same_command_and_loses_at_most_one_cell() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SMALL);
    let out = dir.path().join("out");
    let out_s = out.display().to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradleak"))
        .args(["audit", "--config", &config, "--out", &out_s, "--quiet", "--threads", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as the first cell is written, while the second is in progress.
    let cells = out.join("cells");
    let started = Instant::now();
    let finished = |dir: &Path| {
        std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".json")).count())
            .unwrap_or(0)
    };
    while finished(&cells) < 1 && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = finished(&cells);
    assert!((1..4).contains(&before), "killed mid-sweep with {before} cells finished");
    assert!(!out.join("report.json").exists(), "no report before the sweep ends");
    for entry in std::fs::read_dir(&cells).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp") || name.starts_with('.'), "{name}");
    }

    let resumed = gradleak(&["audit", "--config", &config, "--out", &out_s, "--json"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let summary: serde_json::Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(summary["summary"]["cells_reused"].as_u64().unwrap() as usize, before);
    assert_eq!(summary["summary"]["cells_computed"].as_u64().unwrap() as usize, 4 - before);
    assert_eq!(report(&out)["cells"].as_array().unwrap().len(), 4);
}

#[test]
fn shards_merge_into_the_report_of_the_whole_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &SMALL.replace("sensitivity_samples = 8", "sensitivity = false"));
    let whole = dir.path().join("whole");
    assert!(gradleak(&["audit", "--config", &config, "--out", &whole.display().to_string()]).status.success());
    let mut shards = Vec::new();
    for i in 0..2 {
        let out = dir.path().join(format!("shard{i}"));
        let run = gradleak(&[
            "audit",
            "--config",
            &config,
            "--out",
            &out.display().to_string(),
            "--shard",
            &format!("{i}/2"),
        ]);
        assert!(run.status.success(), "{}", stderr(&run));
        assert_eq!(report(&out)["cells"].as_array().unwrap().len(), 2);
        shards.push(out.display().to_string());
    }
    let merged = dir.path().join("merged");
    let mut args = vec!["merge", "--out"];
    let merged_s = merged.display().to_string();
    args.push(&merged_s);
    args.extend(shards.iter().map(String::as_str));
    let m = gradleak(&args);
    assert!(m.status.success(), "{}", stderr(&m));
    assert_eq!(report(&merged)["records"], report(&whole)["records"]);
    let bad = gradleak(&["audit", "--config", &config, "--out", &merged_s, "--shard", "2/2"]);
    assert!(stderr(&bad).contains("need 0 <= I < N"));
}

/// The HTML report renders in Debian's Chromium (headless): its DOM has the plots, and a screenshot is taken.
#[test]
fn the_html_report_renders_in_headless_chromium() {
    let browser = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
        .expect("this test needs Chromium: apt-get install chromium (scripts/test.sh installs it when run as root)");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &SMALL.replace("batch_size = [1, 4]", "batch_size = [1]"));
    let out = dir.path().join("out");
    let run = gradleak(&["audit", "--config", &config, "--out", &out.display().to_string()]);
    assert!(run.status.success(), "{}", stderr(&run));
    // The terminal shows the verdict, then the overview of the cells.
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.starts_with("## Verdict") && stdout.contains("\n## Overview"), "{stdout}");
    let url = format!("file://{}", out.join("report.html").display());
    let profile = dir.path().join("profile");
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ];
    let dom = Command::new(browser)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--dump-dom", &url])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("id=\"summary\"") && dom.contains("id=\"verdict\"") && dom.contains("<svg"),
        "rendered DOM: {}",
        &dom[..dom.len().min(500)]
    );
    let shot = dir.path().join("report.png");
    let status = Command::new(browser)
        .args(flags)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--window-size=1200,1600", &format!("--screenshot={}", shot.display()), &url])
        .output()
        .unwrap();
    assert!(shot.exists(), "screenshot: {}", String::from_utf8_lossy(&status.stderr));
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "a screenshot with content");
}

#[test]
fn several_grids_join_their_cells_once_each_with_dataset_and_model_axes() {
    let config = AuditConfig::from_toml(
        r#"
        [[grid]]
        dataset = ["embedded", "digits"]
        model = ["lenet5", "mlp"]
        [[grid]]
        dataset = ["digits"]
        model = ["mlp"]
        batch_size = [1, 8]
        "#,
    )
    .unwrap();
    config.validate().unwrap();
    let cells = config.cells().unwrap();
    let pairs: Vec<(String, String, i64)> =
        cells.iter().map(|c| (c.dataset.clone(), c.model.clone(), c.batch_size)).collect();
    let pair = |d: &str, m: &str, b: i64| (d.to_string(), m.to_string(), b);
    assert_eq!(
        pairs,
        [
            pair("embedded", "lenet5", 1),
            pair("embedded", "mlp", 1),
            pair("digits", "lenet5", 1),
            pair("digits", "mlp", 1),
            // (digits, mlp, 1) of the second grid is the same cell: listed once.
            pair("digits", "mlp", 8),
        ]
    );
    // A single [grid] table still works, and axes left out take the top-level dataset and model.
    let one = AuditConfig::from_toml("dataset = \"digits\"\n[grid]\nbatch_size = [2]\n").unwrap();
    assert_eq!(one.cells().unwrap()[0].dataset, "digits");
    assert_eq!(one.cells().unwrap()[0].model, "lenet5");

    let err = AuditConfig::from_toml("[[grid]]\nmodels = [\"mlp\"]\n").unwrap_err().to_string();
    assert!(err.contains("models") && err.contains("model"), "{err}");
    let err = format!("{:#}", AuditConfig::from_toml("[[grid]]\n[[grid]]\nmodel = [\"gpt\"]\n").unwrap_err());
    assert!(err.contains("grid 2 of 2") && err.contains("gpt") && err.contains("resnet20"), "{err}");
}

#[test]
fn the_paper_preset_covers_six_datasets_and_every_model_family() {
    let config = gradleak::audit::presets::preset("paper").unwrap();
    config.validate().unwrap();
    let cells = config.cells().unwrap();
    let datasets: std::collections::BTreeSet<&str> = cells.iter().map(|c| c.dataset.as_str()).collect();
    let models: std::collections::BTreeSet<&str> = cells.iter().map(|c| c.model.as_str()).collect();
    assert_eq!(datasets.len(), 6, "{datasets:?}");
    assert_eq!(models.into_iter().collect::<Vec<_>>(), ["alexnet", "lenet5", "mlp", "resnet20", "vgg11"]);
    let batch_sizes: std::collections::BTreeSet<i64> = cells.iter().map(|c| c.batch_size).collect();
    assert!(batch_sizes.len() >= 3);
    assert!(cells.iter().any(|c| c.dropout > 0.0) && cells.iter().any(|c| c.dp.is_some()));
    assert!(cells.iter().any(|c| c.epoch == 0) && cells.iter().any(|c| c.epoch == config.training.epochs));
    // `--print-config` prints a configuration that reads back as the same audit.
    let printed = gradleak(&["audit", "--preset", "paper", "--print-config"]);
    assert!(printed.status.success(), "{}", stderr(&printed));
    let back = AuditConfig::from_toml(&String::from_utf8_lossy(&printed.stdout)).unwrap();
    assert_eq!(back, config);
}

/// Mounts a tmpfs of `size` at `mount` in a new user and mount namespace and runs `script` there (the mount
/// vanishes with it). None when this machine does not allow unprivileged namespaces.
fn in_small_tmpfs(mount: &Path, size: &str, script: &str) -> Option<std::process::Output> {
    let probe = Command::new("unshare").args(["-rm", "true"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return None;
    }
    let script = format!("set -e; mount -t tmpfs -o size={size} tmpfs '{}'; {script}", mount.display());
    Some(Command::new("unshare").args(["-rm", "sh", "-c", &script]).output().unwrap())
}

/// Ignored by default: it needs unprivileged user namespaces (`unshare -rm`) to mount a small tmpfs, which many
/// containers refuse. `scripts/test.sh` runs it wherever `unshare -rm true` succeeds; run with `--ignored`
/// elsewhere it fails, as a test that cannot run should.
#[test]
#[ignore = "needs unprivileged user namespaces (unshare -rm); scripts/test.sh runs it where they are allowed"]
fn a_full_disk_gives_a_one_line_error_and_leaves_the_previous_report_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &SMALL.replace("sensitivity_samples = 8", "sensitivity = false"));
    let out = dir.path().join("out");
    let first = gradleak(&["audit", "--config", &config, "--out", &out.display().to_string()]);
    assert!(first.status.success(), "{}", stderr(&first));
    let report_bytes = std::fs::read(out.join("report.json")).unwrap();
    let manifest_len = std::fs::metadata(out.join("audit.json")).unwrap().len();
    // Leave room for the manifest but not for the report: the run fails while writing its reports.
    let slack_kb = (manifest_len / 1024 + 8).max(16);
    assert!(report_bytes.len() as u64 > 2 * slack_kb * 1024, "the report is larger than the free space");

    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let kept = dir.path().join("kept");
    let bin = env!("CARGO_BIN_EXE_gradleak");
    let m = mount.display();
    let script = format!(
        "cp -a '{out}' '{m}/out'; \
         dd if=/dev/zero of='{m}/slack' bs=1k count={slack_kb} 2>/dev/null; \
         dd if=/dev/zero of='{m}/filler' bs=4k 2>/dev/null || true; rm '{m}/slack'; \
         set +e; '{bin}' audit --config '{config}' --out '{m}/out' --quiet --threads 1 2>'{d}/stderr'; \
         echo $? > '{d}/status'; set -e; \
         cp -a '{m}/out' '{kept}'; rm '{m}/filler'; \
         '{bin}' audit --config '{config}' --out '{m}/out' --quiet --threads 1 > /dev/null; \
         cp '{m}/out/report.json' '{d}/after-space.json'",
        out = out.display(),
        d = dir.path().display(),
        kept = kept.display(),
    );
    let run = in_small_tmpfs(&mount, "4m", &script)
        .expect("this machine does not allow unprivileged user namespaces (unshare -rm): the test cannot run");
    assert!(run.status.success(), "script: {}", String::from_utf8_lossy(&run.stderr));
    let status: i32 = std::fs::read_to_string(dir.path().join("status")).unwrap().trim().parse().unwrap();
    let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert_ne!(status, 0, "the run on a full disk fails");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("report.json") && err.contains("No space left on device"), "{err}");
    // The previous report is whole, and no temporary file is left behind.
    assert_eq!(std::fs::read(kept.join("report.json")).unwrap(), report_bytes);
    for entry in walk(&kept) {
        assert!(!entry.to_string_lossy().ends_with(".tmp"), "left behind: {}", entry.display());
    }
    // With space again, the same command finishes and writes the same report.
    let after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("after-space.json")).unwrap()).unwrap();
    assert_eq!(after["records"], report(&out)["records"]);
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn an_existing_training_run_is_audited_and_a_mismatched_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let train = |model: &str, out: &Path| {
        let o = gradleak(&[
            "train",
            "--model",
            model,
            "--hidden",
            "32",
            "--epochs",
            "1",
            "--out",
            &out.display().to_string(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let mlp_run = dir.path().join("mlp-run");
    train("mlp", &mlp_run);
    let with_run = |model: &str, run: &Path| {
        format!(
            "model = \"{model}\"\n[training]\nrun = \"{}\"\n[measure]\nupdates = 40\nsensitivity = false\nbootstrap = 50\n",
            run.display()
        )
    };
    let config = write_config(dir.path(), &with_run("mlp", &mlp_run));
    let out = dir.path().join("out");
    let ok = gradleak(&["audit", "--config", &config, "--out", &out.display().to_string()]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let trained: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mlp_run.join("training.json")).unwrap()).unwrap();
    let r = report(&out);
    assert_eq!(r["cells"][0]["test_accuracy"], trained["epochs"][1]["test_accuracy"], "the run's own checkpoint");
    assert!(!dir.path().join("out/runs").exists(), "nothing is trained");

    // The audit's model is not the run's.
    let config = write_config(dir.path(), &with_run("lenet5", &mlp_run));
    let refused = gradleak(&["audit", "--config", &config, "--out", &dir.path().join("o2").display().to_string()]);
    assert!(!refused.status.success());
    let e = stderr(&refused);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("training.run") && e.contains("mlp run") && e.contains("lenet5"), "{e}");

    // A checkpoint that does not belong to the run's model (a LeNet-5's weights in the MLP's place).
    let lenet_run = dir.path().join("lenet-run");
    train("lenet5", &lenet_run);
    std::fs::copy(lenet_run.join("epoch-001.safetensors"), mlp_run.join("epoch-001.safetensors")).unwrap();
    let config = write_config(dir.path(), &with_run("mlp", &mlp_run));
    let bad = gradleak(&["audit", "--config", &config, "--out", &dir.path().join("o3").display().to_string()]);
    assert!(!bad.status.success());
    let e = stderr(&bad);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("epoch-001.safetensors") && e.contains("mlp"), "{e}");
}

fn attack(method: &str, psnr: f64, guess: f64) -> gradleak::audit::AttackRecord {
    gradleak::audit::AttackRecord {
        keys: record("all", "input", "best", 0.0, [0.0, 0.0]).keys,
        method: method.into(),
        // A family's record names the layer it read last (`analytic:fc3`, `decoder:5000:fc3`).
        layer: method.rsplit_once(':').map(|(_, layer)| layer.to_string()),
        samples: 4,
        mse: 0.01,
        psnr,
        ssim: None,
        label_accuracy: None,
        image: String::new(),
        guess_psnr: Some(guess),
        psnr_bound: None,
        beats_bound: None,
    }
}

#[test]
fn the_report_flags_attacks_that_succeed_without_bits_and_bits_without_a_reconstruction() {
    let records = [
        record("all", "input", "best", 0.0, [0.0, 0.0]),
        record("fc3", "input", "best", 300.0, [280.0, 330.0]),
        record("fc1", "input", "best", 1000.0, [900.0, 1100.0]),
    ];
    let records: Vec<&gradleak::audit::Record> = records.iter().collect();
    // IG 10 dB above the guess from all layers, where the best family finds nothing: flagged.
    // The analytic attacker from fc3 no closer than the guess, where the families read 300 bits: flagged.
    // From fc1 both agree, for the analytic attacker and the decoder: no line.
    let attacks = [
        attack("ig", 20.0, 10.0),
        attack("analytic:fc3", 11.3, 11.0),
        attack("analytic:fc1", 24.0, 11.0),
        attack("decoder:5000:fc1", 15.0, 11.0),
    ];
    let attacks: Vec<&gradleak::audit::AttackRecord> = attacks.iter().collect();
    let lines = gradleak::report::attack_reading(&records, &attacks);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("ig: reconstructs at 20.0 dB") && lines[0].contains("understate"), "{}", lines[0]);
    assert!(lines[1].starts_with("analytic:fc3: 300.00 bits") && lines[1].contains("does not"), "{}", lines[1]);
    // Bits just short of the success margin, or an interval above 0, are not flagged.
    let quiet = [attack("ig", 12.9, 10.0)];
    let quiet: Vec<&gradleak::audit::AttackRecord> = quiet.iter().collect();
    assert!(gradleak::report::attack_reading(&records, &quiet).is_empty());
}

/// The gradient-matching families on LeNet-5 (one epoch on the embedded data), fc3 and all layers, with and
/// without DP.
const MATCHING: &str = r#"
seed = 2
model = "lenet5"
[training]
epochs = 1
[measure]
updates = 120
layers = ["fc3"]
targets = ["input", "label"]
families = ["ig:60", "idlg:10"]
bootstrap = 200
sensitivity = false
[grid]
dp = ["none", "clip=1,sigma=1"]
"#;

#[test]
fn the_gradient_matching_families_read_what_their_attack_reconstructs_and_nothing_under_dp() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), MATCHING);
    let out = dir.path().join("out");
    let run = gradleak(&["audit", "--config", &config, "--out", &out.display().to_string()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let r = report(&out);
    let records = r["records"].as_array().unwrap();
    let find = |defense: &str, layer: &str, target: &str, family: &str| {
        records
            .iter()
            .find(|x| x["defense"] == defense && x["layer"] == layer && x["target"] == target && x["family"] == family)
            .unwrap_or_else(|| panic!("no {defense} / {layer} / {target} / {family} record"))
    };
    // Matching every layer of a single-sample update, Inverting Gradients reads the image (an interval above 0) and
    // carries the label iDLG's rule reads off the last layer: every victim's label.
    let input = find("none", "all", "input", "ig:60");
    assert_eq!(input["features"], "reconstruction");
    assert!(input["ci95"][0].as_f64().unwrap() > 0.0, "{input}");
    for family in ["ig:60", "idlg:10"] {
        for layer in ["fc3", "all"] {
            let label = find("none", layer, "label", family);
            assert_eq!(label["accuracy"].as_f64(), Some(1.0), "{label}");
        }
    }
    // Under DP at sigma 1 the update is mostly noise: a few bits at most, and within the capacity bound.
    for family in ["ig:60", "idlg:10"] {
        for target in ["input", "label"] {
            let x = find("dp:clip=1,sigma=1", "all", target, family);
            assert!(x["bits"].as_f64().unwrap() <= 3.0, "{x}");
            assert!(x["ci95"][0].as_f64().unwrap() <= x["upper_bits"].as_f64().unwrap(), "{x}");
        }
    }
    // Each family's reconstructions of each group are scored against the victims, with a gallery.
    let attacks = r["attacks"].as_array().unwrap();
    for family in ["ig:60", "idlg:10"] {
        for layer in ["fc3", "all"] {
            let a = attacks
                .iter()
                .find(|a| a["defense"] == "none" && a["method"] == format!("{family}:{layer}").as_str())
                .unwrap_or_else(|| panic!("no {family} record for {layer}: {attacks:?}"));
            assert_eq!(a["layer"], layer);
            assert!(a["psnr"].as_f64().unwrap() > 0.0 && out.join(a["image"].as_str().unwrap()).exists(), "{a}");
        }
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("ig:60: bits [95% CI] | idlg:10: bits [95% CI]"), "the configured order");
    assert!(md.contains("ig: 60 iterations on each victim's update of all, fc3"), "{md}");
}

/// The decoder family on LeNet-5 (one epoch on the embedded data), conv1 only, with and without DP.
const DECODER: &str = r#"
seed = 4
model = "lenet5"
[training]
epochs = 1
[measure]
updates = 120
layers = ["conv1"]
all_layers = false
targets = ["input", "label"]
families = ["linear", "decoder:400"]
bootstrap = 200
sensitivity = false
[grid]
dp = ["none", "clip=1,sigma=1"]
"#;

#[test]
fn the_decoder_family_learns_from_auxiliary_updates_what_a_probe_on_the_victims_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), DECODER);
    let out = dir.path().join("out");
    let run = gradleak(&["audit", "--config", &config, "--out", &out.display().to_string()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let r = report(&out);
    let records = r["records"].as_array().unwrap();
    let find = |defense: &str, target: &str, family: &str| {
        records
            .iter()
            .find(|x| {
                x["defense"] == defense && x["layer"] == "conv1" && x["target"] == target && x["family"] == family
            })
            .unwrap_or_else(|| panic!("no {defense} / {target} / {family} record"))
    };
    // 400 simulated updates teach the decoder more of the image than the 72 fitting victims teach a linear probe.
    let (decoder, linear) = (find("none", "input", "decoder:400"), find("none", "input", "linear"));
    assert_eq!(decoder["features"], "reconstruction");
    assert!(decoder["ci95"][0].as_f64().unwrap() > linear["bits"].as_f64().unwrap(), "{decoder} vs {linear}");
    assert!(find("none", "label", "decoder:400")["ci95"][0].as_f64().unwrap() > 1.0);
    // Under DP at sigma 1: nothing, within the capacity bound.
    for target in ["input", "label"] {
        let x = find("dp:clip=1,sigma=1", target, "decoder:400");
        assert!(x["bits"].as_f64().unwrap() <= 3.0, "{x}");
        assert!(x["ci95"][0].as_f64().unwrap() <= x["upper_bits"].as_f64().unwrap(), "{x}");
    }
    // The decoded images are scored and shown like an attack's: closer to the victims than the split's mean image.
    let attacks = r["attacks"].as_array().unwrap();
    let a = attacks
        .iter()
        .find(|a| a["defense"] == "none" && a["method"] == "decoder:400:conv1")
        .unwrap_or_else(|| panic!("no decoder record: {attacks:?}"));
    assert_eq!(a["layer"], "conv1");
    assert!(a["psnr"].as_f64().unwrap() > a["guess_psnr"].as_f64().unwrap(), "{a}");
    assert!(out.join(a["image"].as_str().unwrap()).exists(), "{a}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("trained on 400 auxiliary updates from samples that are not victims"), "{md}");
}
