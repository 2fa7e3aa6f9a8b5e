//! `gradleak attack` end to end on a training-run folder holding a LeNet initialisation for MNIST: table, JSON,
//! written files, and one-line errors. MNIST is read from `$GRADLEAK_DATA` (default `data` in the crate root).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gradleak::data::InputShape;
use gradleak::models::{Arch, Model, ModelSpec};
use gradleak::train::{checkpoint_name, EpochMetrics, TrainConfig, TrainingRun, METADATA_FILE};

fn data_dir() -> PathBuf {
    match std::env::var_os("GRADLEAK_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data"),
    }
}

/// A run folder with only the initialisation (epoch 0) of a LeNet for MNIST.
fn lenet_run(dir: &Path) {
    let spec = ModelSpec::new(Arch::Lenet, InputShape::Image { channels: 1, height: 28, width: 28 }, 10);
    let model = Model::new(&spec, 0).unwrap();
    model.save_weights(&dir.join(checkpoint_name(0))).unwrap();
    let run = TrainingRun {
        gradleak_version: env!("CARGO_PKG_VERSION").to_string(),
        dataset: "mnist".into(),
        model: spec,
        config: TrainConfig::default(),
        train_size: 60_000,
        test_size: 10_000,
        epochs: vec![EpochMetrics {
            epoch: 0,
            train_loss: None,
            train_accuracy: None,
            test_loss: 2.3,
            test_accuracy: 0.1,
            seconds: 0.0,
            checkpoint: checkpoint_name(0),
        }],
    };
    gradleak::io::write_json(&dir.join(METADATA_FILE), &run).unwrap();
}

fn gradleak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradleak"))
        .arg("attack")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir())
        .arg("--quiet")
        .output()
        .expect("runs")
}

fn failure(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure; stdout: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: ") && err.trim_end().lines().count() == 1, "one-line error expected: {err}");
    err
}

#[test]
fn attack_writes_report_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    lenet_run(&run);
    let out_dir = dir.path().join("attack");
    let run_s = run.to_str().unwrap();
    let out = gradleak(&[
        "--method",
        "dlg",
        "--run",
        run_s,
        "--samples",
        "2",
        "--iterations",
        "200",
        "--init-uniform",
        "0.5",
        "--out",
        out_dir.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["method"], "dlg");
    assert_eq!(v["config"]["iterations"], 200);
    assert_eq!(v["updates"].as_array().unwrap().len(), 2);
    // The DLG setting (uniform(-0.5, 0.5) weights, sigmoid LeNet): both images are recovered.
    let psnr = v["mean"]["psnr"].as_f64().unwrap();
    assert!(psnr > 30.0, "mean PSNR {psnr}");
    assert_eq!(v["mean"]["label_accuracy"].as_f64(), Some(1.0));
    for file in ["attack.json", "reconstructions.png", "reconstructions.safetensors"] {
        assert!(out_dir.join(file).is_file(), "{file} missing");
    }
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("attack.json")).unwrap()).unwrap();
    assert_eq!(written, v);

    // The table, one matched layer with a weight, a defence.
    let out = gradleak(&[
        "--method",
        "idlg",
        "--run",
        run_s,
        "--samples",
        "1",
        "--iterations",
        "3",
        "--layers",
        "fc",
        "--layer-weights",
        "2",
        "--defense",
        "protect:conv1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("defence: protect:conv1"), "{text}");
    assert!(text.contains("matched layers: fc (x2); labels: Inferred"), "{text}");
    assert!(text.contains("mean: MSE"), "{text}");
}

#[test]
fn bad_arguments_give_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    lenet_run(dir.path());
    let run = dir.path().to_str().unwrap();
    let e = failure(&gradleak(&["--method", "dlg", "--run", run, "--iterations", "0"]));
    assert!(e.contains("--iterations: the number of iterations must be at least 1"), "{e}");
    let e = failure(&gradleak(&["--method", "dlg", "--run", run, "--tv", "0.1"]));
    assert!(e.contains("--tv is a setting of --method ig"), "{e}");
    let e = failure(&gradleak(&["--method", "dlg", "--run", run, "--layer-weights", "1"]));
    assert!(e.contains("--layer-weights: 1 layer weights for 0 listed layers"), "{e}");
    let e = failure(&gradleak(&["--method", "dlg", "--run", run, "--epoch", "3"]));
    assert!(e.contains("no checkpoint for epoch 3"), "{e}");
    let e = failure(&gradleak(&["--method", "idlg", "--run", run, "--iterations", "2", "--layers", "conv1"]));
    assert!(e.contains("last layer 'fc'") && e.contains("--labels"), "{e}");
    let e = failure(&gradleak(&["--method", "dlg", "--run", run, "--iterations", "2", "--layers", "conv7"]));
    assert!(e.contains("no layer 'conv7'"), "{e}");
    let e = failure(&gradleak(&["--method", "dlg", "--run", &format!("{run}/missing")]));
    assert!(e.contains("training metadata"), "{e}");
}
