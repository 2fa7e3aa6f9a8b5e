//! The `gradleak vinfo` command: JSON output, the PVI file, and one-line errors with a non-zero exit.

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
