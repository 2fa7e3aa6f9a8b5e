//! `gradleak dp-epsilon` end to end: output, JSON, and one-line errors naming the flag.

use std::process::{Command, Output};

fn gradleak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradleak")).arg("dp-epsilon").args(args).output().expect("runs")
}

#[test]
fn json_output_matches_the_library() {
    let out = gradleak(&[
        "--sample-rate",
        "0.01",
        "--noise-multiplier",
        "2",
        "--steps",
        "10000",
        "--delta",
        "1e-5",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = gradleak::defenses::accountant::epsilon(0.01, 2.0, 10000, 1e-5).unwrap();
    assert_eq!(v["epsilon"].as_f64(), Some(want.epsilon));
    assert_eq!(v["best_order"].as_f64(), want.best_order);
    // dp-accounting 0.6.0 gives 2.352913128781947 at order 8.9 (tests/dp_accountant.rs).
    assert!((want.epsilon - 2.352913128781947).abs() < 1e-8);
}

#[test]
fn no_noise_is_reported_as_infinite() {
    let out =
        gradleak(&["--sample-rate", "0.01", "--noise-multiplier", "0", "--steps", "5", "--delta", "1e-5", "--json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["epsilon"].is_null() && v["best_order"].is_null(), "{v}");
    let out = gradleak(&["--sample-rate", "0.01", "--noise-multiplier", "0", "--steps", "5", "--delta", "1e-5"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("epsilon = inf"));
}

#[test]
fn bad_values_give_one_line_errors_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--sample-rate", "0", "--noise-multiplier", "1", "--steps", "1", "--delta", "1e-5"], "--sample-rate"),
        (&["--sample-rate", "1.5", "--noise-multiplier", "1", "--steps", "1", "--delta", "1e-5"], "--sample-rate"),
        (
            &["--sample-rate", "0.1", "--noise-multiplier", "-1", "--steps", "1", "--delta", "1e-5"],
            "--noise-multiplier",
        ),
        (&["--sample-rate", "0.1", "--noise-multiplier", "1", "--steps", "0", "--delta", "1e-5"], "--steps"),
        (&["--sample-rate", "0.1", "--noise-multiplier", "1", "--steps", "-4", "--delta", "1e-5"], "--steps"),
        (&["--sample-rate", "0.1", "--noise-multiplier", "1", "--steps", "1", "--delta", "0"], "--delta"),
        (&["--sample-rate", "0.1", "--noise-multiplier", "1", "--steps", "1", "--delta", "1.01"], "--delta"),
    ];
    for (args, flag) in cases {
        let out = gradleak(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(flag), "{args:?}: {err}");
    }
}
