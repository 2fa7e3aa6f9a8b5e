//! The `gradleak vinfo` command: JSON output, the PVI file, the split file, `best` rows of a store table, and
//! one-line errors with a non-zero exit.

use std::path::Path;
use std::process::Command;

use gradleak::arrays::{read_npy, write_npy};
use tch::{Kind, Tensor};

fn gradleak(args: &[&str]) -> (bool, String, String) {
    // One libtorch thread: the problems are small, and it keeps the test quick on a busy machine.
    let out = Command::new(env!("CARGO_BIN_EXE_gradleak")).args(args).args(["--threads", "1"]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`gradleak`] run in `dir` (relative paths are inside it), without progress bars.
fn gradleak_in(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gradleak"))
        .current_dir(dir)
        .args(args)
        .args(["--threads", "1", "--quiet"])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// 300 samples: 4 features, a binary label that is the sign of the first feature (flipped with probability
/// about 0.16 through noise), and a 2-column continuous target.
fn write_data(dir: &Path) {
    let g: Vec<f64> = (0..1200).map(|i| ((i * 7919 % 1000) as f64 / 1000.0 - 0.5) * 2.0).collect();
    let g = Tensor::from_slice(&g).view([300, 4]);
    let noise: Vec<f64> = (0..300).map(|i| (i * 104729 % 997) as f64 / 997.0 - 0.5).collect();
    let noise = Tensor::from_slice(&noise);
    let label = (g.select(1, 0) + &noise * 0.5).gt(0.0).to_kind(Kind::Int64);
    let y = Tensor::stack(&[g.select(1, 1) * 2.0 + &noise, noise.shallow_clone()], 1);
    write_npy(&dir.join("g.npy"), &g).unwrap();
    write_npy(&dir.join("label.npy"), &label).unwrap();
    write_npy(&dir.join("y.npy"), &y).unwrap();
    write_npy(&dir.join("short.npy"), &label.narrow(0, 0, 299)).unwrap();
}

#[test]
fn json_output_and_pvi_file() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let (ok, stdout, stderr) = gradleak(&[
        "vinfo",
        "--features",
        &p("g.npy"),
        "--target",
        &p("label.npy"),
        "--kind",
        "categorical",
        "--json",
        "--pvi-out",
        &p("pvi.npy"),
        "--bootstrap",
        "200",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let bits = v["bits"].as_f64().unwrap();
    assert!(bits > 0.2, "{stdout}");
    assert_eq!(v["ci95"].as_array().unwrap().len(), 2);
    assert_eq!((v["n_test"].as_u64(), v["n_samples"].as_u64()), (Some(300), Some(300)));
    assert!(v["n_train"].as_u64().unwrap() > 0);
    let pvi = read_npy(&dir.path().join("pvi.npy")).unwrap();
    assert_eq!(pvi.size(), vec![300]);
    assert!((pvi.mean(Kind::Double).double_value(&[]) - bits).abs() < 1e-9);

    let (ok, stdout, stderr) = gradleak(&[
        "vinfo",
        "--features",
        &p("g.npy"),
        "--target",
        &p("y.npy"),
        "--kind",
        "continuous",
        "--family",
        "all",
        "--json",
        "--epochs",
        "20",
        "--protocol",
        "split",
        "--pvi-out",
        &p("pvi2.npy"),
        "--bootstrap",
        "200",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["families"]["linear"]["bits"].as_f64().unwrap() > 0.5, "{stdout}");
    assert!(v["families"]["mlp:128"]["r2"].is_number(), "{stdout}");
    assert_eq!(v["n_test"].as_u64(), Some(60));
    let pvi = read_npy(&dir.path().join("pvi2.npy")).unwrap();
    assert_eq!(pvi.size(), vec![300, 2]);
    assert_eq!(pvi.isnan().sum(Kind::Int64).int64_value(&[]), 2 * 240);

    let (ok, stdout, _) =
        gradleak(&["vinfo", "--features", &p("g.npy"), "--target", &p("y.npy"), "--kind", "continuous"]);
    assert!(ok && stdout.contains("bits/dim") && stdout.contains("linear"), "{stdout}");
}

#[test]
fn bad_input_exits_non_zero_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let cases: [(Vec<String>, &str); 5] = [
        (vec![p("g.npy"), p("short.npy"), "categorical".into(), "linear".into()], "300 samples but the target has 299"),
        (vec![p("g.npy"), p("label.npy"), "categorical".into(), "forest".into()], "--family: unknown family 'forest'"),
        (vec![p("g.npy"), p("label.npy"), "ordinal".into(), "linear".into()], "--kind: unknown kind 'ordinal'"),
        (vec![p("missing.npy"), p("label.npy"), "categorical".into(), "linear".into()], "--features"),
        (vec![p("g.npy"), p("g.txt"), "categorical".into(), "linear".into()], "--target"),
    ];
    for (args, expected) in cases {
        let (ok, _, stderr) = gradleak(&[
            "vinfo",
            "--features",
            &args[0],
            "--target",
            &args[1],
            "--kind",
            &args[2],
            "--family",
            &args[3],
        ]);
        assert!(!ok, "{args:?} succeeded");
        assert!(stderr.starts_with("error: ") && stderr.contains(expected), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    }
}

/// Roles of the samples in each fit: (F, N) with 0 train, 1 validation, 2 test.
fn roles(path: &Path) -> (Vec<i64>, Vec<Vec<i64>>) {
    let t = read_npy(path).unwrap();
    assert_eq!(t.kind(), Kind::Int64);
    let size = t.size();
    let rows = (0..size[0]).map(|k| Vec::<i64>::try_from(t.get(k)).unwrap()).collect();
    (size, rows)
}

fn count(row: &[i64], role: i64) -> usize {
    row.iter().filter(|&&r| r == role).count()
}

#[test]
fn split_file_has_every_fit_and_its_roles_and_store_rows_end_with_best() {
    let dir = tempfile::tempdir().unwrap();
    write_data(dir.path());
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let vinfo = |extra: &[&str]| {
        let mut args = vec!["vinfo", "--features", "g.npy", "--target", "label.npy", "--kind", "categorical", "--json"];
        args.extend_from_slice(&["--bootstrap", "20"]);
        args.extend_from_slice(extra);
        let args: Vec<String> = args.iter().map(|a| if a.ends_with(".npy") { p(a) } else { a.to_string() }).collect();
        let (ok, stdout, stderr) = gradleak(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(ok, "{stderr}");
        serde_json::from_str::<serde_json::Value>(&stdout).unwrap()
    };

    // Cross-fitting, 3 repetitions of 4 folds: 12 fits in the order fitted; within each repetition every sample is
    // scored exactly once, and the repetitions partition the samples differently.
    let v = vinfo(&["--folds", "4", "--repeats", "3", "--split-out", "cf.npy"]);
    let (size, fits) = roles(&dir.path().join("cf.npy"));
    assert_eq!(size, vec![12, 300]);
    assert!(fits.iter().flatten().all(|r| (0..=2).contains(r)));
    for rep in fits.chunks(4) {
        for i in 0..300 {
            assert_eq!(rep.iter().filter(|f| f[i] == 2).count(), 1, "sample {i}");
        }
        for f in rep {
            // 75 scored; of the other 225, 20% (45) validate.
            assert_eq!((count(f, 0), count(f, 1), count(f, 2)), (180, 45, 75));
        }
    }
    assert_ne!(fits[0], fits[4]);
    assert_ne!(fits[4], fits[8]);
    assert_eq!((v["n_train"].as_u64(), v["n_val"].as_u64()), (Some(180), Some(45)));
    // One fit summary in the JSON per row of the file.
    assert_eq!(v["fits"].as_array().unwrap().len(), 12);

    // One split: the fractions, and the same partition as a second run (seeded).
    let v = vinfo(&["--protocol", "split", "--val-fraction", "0.1", "--test-fraction", "0.3", "--split-out", "s.npy"]);
    let (size, fits) = roles(&dir.path().join("s.npy"));
    assert_eq!(size, vec![1, 300]);
    assert_eq!((count(&fits[0], 0), count(&fits[0], 1), count(&fits[0], 2)), (180, 30, 90));
    assert_eq!(v["n_test"].as_u64(), Some(90));
    vinfo(&["--protocol", "split", "--val-fraction", "0.1", "--test-fraction", "0.3", "--split-out", "s2.npy"]);
    assert_eq!(fits, roles(&dir.path().join("s2.npy")).1);

    // --store: every layer and target is fitted on the same partitions as an array of as many samples.
    let d = dir.path();
    let run = |args: &[&str]| {
        let (ok, _, stderr) = gradleak_in(d, args);
        assert!(ok, "{stderr}");
    };
    run(&["train", "--dataset", "embedded", "--model", "lenet5", "--epochs", "1", "--out", "run"]);
    run(&["grads", "--run", "run", "--updates", "60", "--layers", "conv1,fc3", "--out", "store"]);
    run(&["vinfo", "--store", "store", "--targets", "label", "--bootstrap", "20", "--split-out", "store-split.npy"]);
    write_npy(&d.join("g60.npy"), &read_npy(&d.join("g.npy")).unwrap().narrow(0, 0, 60)).unwrap();
    write_npy(&d.join("label60.npy"), &read_npy(&d.join("label.npy")).unwrap().narrow(0, 0, 60)).unwrap();
    let (ok, _, stderr) = gradleak(&[
        "vinfo",
        "--features",
        &p("g60.npy"),
        "--target",
        &p("label60.npy"),
        "--kind",
        "categorical",
        "--bootstrap",
        "20",
        "--split-out",
        &p("split60.npy"),
    ]);
    assert!(ok, "{stderr}");
    let (size, store_fits) = roles(&d.join("store-split.npy"));
    assert_eq!(size, vec![5, 60]);
    assert_eq!(store_fits, roles(&d.join("split60.npy")).1);

    // Several families: after each layer's families a `best` row, the largest estimate, names its family.
    let (ok, stdout, stderr) = gradleak_in(
        d,
        &[
            "vinfo",
            "--store",
            "store",
            "--targets",
            "label",
            "--bootstrap",
            "20",
            "--family",
            "linear+mlp:16",
            "--json",
        ],
    );
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = v["rows"].as_array().unwrap();
    // conv1, fc3 and all: linear, mlp:16, best.
    assert_eq!(rows.len(), 3 * 3);
    for block in rows.chunks(3) {
        let family: Vec<&str> = block.iter().map(|r| r["family"].as_str().unwrap()).collect();
        assert_eq!(family, ["linear", "mlp:16", "best"]);
        let bits: Vec<f64> = block.iter().map(|r| r["bits"].as_f64().unwrap()).collect();
        let top = if bits[1] > bits[0] { 1 } else { 0 };
        assert_eq!((bits[2], &block[2]["source"]), (bits[top], &block[top]["family"]), "{block:?}");
        assert!(block[0]["source"].is_null() && block[1]["source"].is_null());
    }
}

/// The model-backed families read a store through the model behind it: the checkpoint its manifest names (or
/// `--run` when the run moved), or a built-in model rebuilt from its recorded seed. iDLG's rule reads every label
/// of a single-sample update from the last layer, so the analytic and ig families' labels from fc3 are exact.
#[test]
fn model_backed_families_read_a_store_through_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| gradleak_in(d, args);
    let vinfo = |store: &str, extra: &[&str]| {
        let mut args = vec!["vinfo", "--store", store, "--targets", "input,label", "--family", "linear+analytic+ig:5"];
        args.extend_from_slice(&["--protocol", "split", "--bootstrap", "20", "--json"]);
        args.extend_from_slice(extra);
        run(&args)
    };
    let rows_of = |stdout: &str| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(stdout).unwrap();
        v["rows"].as_array().unwrap().clone()
    };
    let row = |rows: &[serde_json::Value], layer: &str, target: &str, family: &str| -> Option<serde_json::Value> {
        rows.iter().find(|r| r["layer"] == layer && r["target"] == target && r["family"] == family).cloned()
    };
    assert!(run(&["train", "--dataset", "embedded", "--model", "lenet5", "--epochs", "1", "--out", "run"]).0);
    assert!(run(&["grads", "--run", "run", "--updates", "60", "--layers", "conv1,fc3", "--out", "store"]).0);

    let (ok, stdout, stderr) = vinfo("store", &[]);
    assert!(ok, "{stderr}");
    let rows = rows_of(&stdout);
    for family in ["analytic", "ig:5"] {
        let label = row(&rows, "fc3", "label", family).unwrap_or_else(|| panic!("{family} on fc3: {rows:?}"));
        assert_eq!(label["accuracy"].as_f64(), Some(1.0), "{family}: iDLG's rule is exact at batch size 1");
        assert_eq!(label["features"], "reconstruction");
    }
    // No closed form from a convolution: no analytic row there, and the `best` row still belongs to its own
    // layer and target (the largest estimate among that block's families).
    assert!(row(&rows, "conv1", "input", "analytic").is_none());
    for best in rows.iter().filter(|r| r["family"] == "best") {
        let block: Vec<&serde_json::Value> = rows
            .iter()
            .filter(|r| r["layer"] == best["layer"] && r["target"] == best["target"] && r["family"] != "best")
            .collect();
        let top = block.iter().map(|r| r["bits"].as_f64().unwrap()).fold(f64::MIN, f64::max);
        assert_eq!(best["bits"].as_f64(), Some(top), "{best:?}");
    }
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(v["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().starts_with("analytic: no closed form")));

    // The run moved: the manifest's folder is gone, which the error says, and --run finds it.
    std::fs::rename(d.join("run"), d.join("moved")).unwrap();
    let (ok, _, stderr) = vinfo("store", &[]);
    assert!(!ok);
    assert!(stderr.contains("the manifest's run 'run'") && stderr.contains("--run DIR"), "{stderr}");
    let (ok, moved, stderr) = vinfo("store", &["--run", "moved"]);
    assert!(ok, "{stderr}");
    assert_eq!(rows_of(&moved), rows, "the same model gives the same estimates");
    // The gradient families alone need no model.
    assert!(run(&["vinfo", "--store", "store", "--targets", "label", "--bootstrap", "20"]).0);

    // By default a layer above the sketch dimension keeps only its sketch: the analytic attack on fc1 says so and
    // how to keep the full gradient; with the flag it runs.
    let fc1 = ["grads", "--run", "moved", "--updates", "60", "--layers", "fc1"];
    assert!(run(&[&fc1[..], &["--out", "sketched"]].concat()).0);
    let analytic = ["--targets", "input", "--family", "linear+analytic", "--bootstrap", "20", "--run", "moved"];
    let (ok, _, stderr) = run(&[&["vinfo", "--store", "sketched"][..], &analytic[..]].concat());
    assert!(!ok);
    let hint = "only a sketch of layer 'fc1' is stored; the attack needs its full gradient (write the store again \
                with `gradleak grads --full-max-params 94200` or more to keep it)";
    assert!(stderr.contains(hint) && stderr.lines().count() == 1, "{stderr}");
    assert!(run(&[&fc1[..], &["--full-max-params", "94200", "--out", "full"]].concat()).0);
    let (ok, _, stderr) = run(&[&["vinfo", "--store", "full"][..], &analytic[..]].concat());
    assert!(ok, "{stderr}");

    // A built-in model as it is: rebuilt from the seed its store records.
    assert!(
        run(&[
            "grads",
            "--model",
            "lenet5",
            "--dataset",
            "embedded",
            "--model-seed",
            "3",
            "--updates",
            "60",
            "--layers",
            "fc3",
            "--out",
            "as-is"
        ])
        .0
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("as-is").join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["checkpoint"]["model_seed"].as_u64(), Some(3));
    let (ok, stdout, stderr) = vinfo("as-is", &["--no-all"]);
    assert!(ok, "{stderr}");
    let label = row(&rows_of(&stdout), "fc3", "label", "analytic").expect("an analytic row");
    assert_eq!(label["accuracy"].as_f64(), Some(1.0));
}
