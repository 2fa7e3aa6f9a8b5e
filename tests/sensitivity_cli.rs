//! `gradleak sensitivity` end to end on the built-in dataset: table, JSON, and one-line errors.

use std::path::Path;
use std::process::{Command, Output};

fn gradleak(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradleak")).current_dir(dir).args(args).arg("--quiet").output().expect("runs")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn err(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure, got: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn sensitivity_of_a_run_and_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(&gradleak(d, &["train", "--dataset", "embedded", "--model", "lenet5", "--epochs", "1", "--out", "run"]));
    ok(&gradleak(d, &["grads", "--run", "run", "--updates", "60", "--out", "store"]));

    let table = ok(&gradleak(
        d,
        &["sensitivity", "--run", "run", "--samples", "6", "--probes", "3", "--defense", "quantize:4"],
    ));
    assert!(table.contains("input sensitivity of lenet5 (epoch 1) on embedded train split: 6 samples"), "{table}");
    assert!(table.contains("quantize:4 NOT applied"), "{table}");
    for layer in ["conv1", "conv2", "fc1", "fc2", "fc3"] {
        assert!(table.lines().any(|l| l.starts_with(layer)), "{layer} row: {table}");
    }

    let out = ok(&gradleak(
        d,
        &[
            "sensitivity",
            "--run",
            "run",
            "--samples",
            "4",
            "--probes",
            "2",
            "--layers",
            "fc3,conv1",
            "--store",
            "store",
            "--attribute",
            "ink",
            "--k",
            "2",
            "--bootstrap",
            "20",
            "--permutations",
            "3",
            "--json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let input = &v["input"]["report"];
    assert_eq!(input["samples"], 4);
    assert_eq!(input["probes"], 2);
    let names: Vec<&str> = input["layers"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["conv1", "fc3"]);
    for l in input["layers"].as_array().unwrap() {
        let rel = &l["relative"];
        assert!(rel["value"].as_f64().unwrap() > 0.0);
        assert!(rel["ci"][0].as_f64().unwrap() <= rel["value"].as_f64().unwrap());
        assert!(l["jacobian_norm"]["estimator_se"].as_f64().unwrap() >= 0.0);
    }
    let latent = &v["latent"]["report"];
    assert_eq!(latent["attribute"], "ink");
    assert_eq!(latent["layers"].as_array().unwrap().len(), 2);
    let l0 = &latent["layers"][0];
    assert_eq!(l0["group_sizes"][0].as_i64().unwrap() + l0["group_sizes"][1].as_i64().unwrap(), 60);

    // Same seed, same numbers.
    let again = ok(&gradleak(
        d,
        &[
            "sensitivity",
            "--run",
            "run",
            "--samples",
            "4",
            "--probes",
            "2",
            "--layers",
            "fc3,conv1",
            "--bootstrap",
            "20",
            "--json",
        ],
    ));
    let w: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert_eq!(w["input"]["report"], v["input"]["report"]);

    // Errors: one line, naming what is wrong.
    let e = err(&gradleak(d, &["sensitivity", "--run", "run", "--layers", "conv9"]));
    assert!(e.contains("no layer 'conv9'") && e.contains("conv1, conv2, fc1, fc2, fc3"), "{e}");
    let e = err(&gradleak(d, &["sensitivity", "--store", "store", "--attribute", "colour"]));
    assert!(e.contains("no attribute 'colour'") && e.contains("ink"), "{e}");
    let e = err(&gradleak(d, &["sensitivity", "--store", "store", "--attribute", "ink", "--k", "40"]));
    assert!(e.contains("--k 40 is too large"), "{e}");
    let e = err(&gradleak(d, &["sensitivity", "--run", "run", "--attribute", "ink"]));
    assert!(e.contains("--store"), "{e}");
    let e = err(&gradleak(d, &["sensitivity", "--run", "run", "--samples", "100000"]));
    assert!(e.contains("--samples 100000 is larger"), "{e}");
    let e = err(&gradleak(d, &["sensitivity", "--run", "nowhere"]));
    assert!(e.contains("training run folder"), "{e}");
}
