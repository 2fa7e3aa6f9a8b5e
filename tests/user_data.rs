//! Your own model on your own data, through the command line: the audit with the TorchScript fixture
//! (tests/fixtures/example_cnn.pt, 3x16x16 images, 3 classes) on an `arrays:` dataset and on a `folder:` dataset of
//! PNG files written here, `gradleak models --torchscript`, `gradleak train --model torchscript:...`, and the
//! one-line errors of bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gradleak::arrays::write_npy;
use tch::{Kind, Tensor};

fn gradleak(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradleak")).args(args).args(["--quiet", "--threads", "1"]).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn model() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/example_cnn.pt");
    format!("torchscript:{}", path.display())
}

/// Images of 3 classes, each a different bright colour channel over noise, with labels.
fn images(n: i64, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let labels = Tensor::arange(n, (Kind::Int64, tch::Device::Cpu)).remainder(3);
    let x = Tensor::rand([n, 3, 16, 16], (Kind::Float, tch::Device::Cpu)) * 0.5;
    let bright = labels.one_hot(3).to_kind(Kind::Float).view([n, 3, 1, 1]) * 0.5;
    (x + bright, labels)
}

/// An arrays folder: x_train.npy, y_train.npy and a named attribute column in a_train.csv (no test files: a seeded
/// split).
fn arrays_dataset(dir: &Path) {
    let (x, y) = images(90, 1);
    write_npy(&dir.join("x_train.npy"), &x).unwrap();
    write_npy(&dir.join("y_train.npy"), &y).unwrap();
    let mean: Vec<f32> = Vec::try_from(x.mean_dim([1i64, 2, 3].as_slice(), false, Kind::Float)).unwrap();
    let csv: String = std::iter::once("bright\n".to_string()).chain(mean.iter().map(|m| format!("{m}\n"))).collect();
    std::fs::write(dir.join("a_train.csv"), csv).unwrap();
    std::fs::write(dir.join("dataset.json"), r#"{"classes": ["r", "g", "b"], "attributes": [{"name": "bright", "description": "mean pixel above its median"}]}"#).unwrap();
}

/// A folder of PNG files, one sub-folder per class.
fn folder_dataset(dir: &Path) {
    let (x, y) = images(60, 2);
    let pixels = (x * 255.0).clamp(0.0, 255.0).to_kind(Kind::Uint8).permute([0, 2, 3, 1]).contiguous();
    for i in 0..60 {
        let class = ["red", "green", "blue"][y.int64_value(&[i]) as usize];
        let bytes = Vec::<u8>::try_from(pixels.get(i).view([-1])).unwrap();
        let path = dir.join(class).join(format!("{i:03}.png"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_raw(16, 16, bytes).unwrap().save(&path).unwrap();
    }
}

fn audit_config(dataset: &str, targets: &str) -> String {
    format!(
        r#"
seed = 1
dataset = "{dataset}"
model = "{}"
[training]
epochs = 1
batch_size = 16
[measure]
updates = 30
targets = {targets}
families = ["linear"]
bootstrap = 100
sketch_dim = 128
sensitivity_samples = 4
probes = 2
attack = "ig"
attack_samples = 1
attack_iterations = 5
"#,
        model()
    )
}

/// Runs the audit and checks its four reports; returns report.json.
fn audit(dir: &Path, dataset: &str, targets: &str) -> serde_json::Value {
    let config = dir.join("audit.toml");
    std::fs::write(&config, audit_config(dataset, targets)).unwrap();
    let out = dir.join("out");
    let run = gradleak(&["audit", "--config", &config.display().to_string(), "--out", &out.display().to_string()]);
    assert!(run.status.success(), "{}", stderr(&run));
    for file in ["report.json", "report.md", "report.html", "records.csv"] {
        assert!(out.join(file).is_file(), "{dataset}: no {file}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("block.conv1") && md.contains("head.2"), "the module's layers are reported:\n{md}");
    assert!(md.contains("one backward pass per sample, in evaluation mode (BatchNorm uses its frozen"), "{md}");
    // The audit trained the module: the run keeps each epoch as safetensors and as TorchScript.
    let runs: Vec<PathBuf> = std::fs::read_dir(out.join("runs")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].join("epoch-001.safetensors").is_file() && runs[0].join("epoch-001.pt").is_file());
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

fn records_of<'a>(r: &'a serde_json::Value, target: &str) -> Vec<&'a serde_json::Value> {
    r["records"].as_array().unwrap().iter().filter(|x| x["target"] == target).collect()
}

#[test]
fn audit_of_a_torchscript_model_on_arrays_writes_four_reports() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("arrays");
    std::fs::create_dir(&data).unwrap();
    arrays_dataset(&data);
    let r = audit(dir.path(), &format!("arrays:{}", data.display()), r#"["input", "label", "attribute:bright"]"#);
    // Six layers and `all`, three targets, the linear family and `best`.
    assert_eq!(records_of(&r, "label").len(), 7 * 2);
    assert_eq!(records_of(&r, "attribute:bright").len(), 7 * 2);
    // The last layer's gradient of a single sample gives its label away.
    let head = records_of(&r, "label").into_iter().find(|x| x["layer"] == "head.2" && x["family"] == "linear").unwrap();
    assert!(head["bits"].as_f64().unwrap() > 0.5, "{head}");
    assert!(!r["sensitivity"].as_array().unwrap().is_empty(), "sensitivity differentiated through the module");
    assert_eq!(r["attacks"].as_array().unwrap().len(), 1, "IG through the module");
}

#[test]
fn audit_of_a_torchscript_model_on_a_folder_of_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    folder_dataset(&data);
    let r = audit(dir.path(), &format!("folder:{}", data.display()), r#"["input", "label", "attribute:brightness"]"#);
    assert_eq!(records_of(&r, "label").len(), 7 * 2);
}

#[test]
fn models_lists_the_modules_and_train_saves_torchscript() {
    let path = model().trim_start_matches("torchscript:").to_string();
    let listed = gradleak(&["models", "--torchscript", &path, "--input", "3x16x16", "--classes", "3"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("6 named layers, 921 parameters"), "{text}");
    assert!(text
        .lines()
        .any(|l| l.starts_with("block.conv1") && l.contains("324") && l.contains("weight [6, 6, 3, 3]")));

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("arrays");
    std::fs::create_dir(&data).unwrap();
    arrays_dataset(&data);
    let out = dir.path().join("run");
    let dataset = format!("arrays:{}", data.display());
    let trained = gradleak(&[
        "train",
        "--model",
        &model(),
        "--dataset",
        &dataset,
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--out",
        &out.display().to_string(),
    ]);
    assert!(trained.status.success(), "{}", stderr(&trained));
    // The trained module loads as a model of its own, with the trained parameters.
    let saved = format!("torchscript:{}", out.join("epoch-001.pt").display());
    let again = gradleak(&["models", &saved, "--input", "3x16x16", "--classes", "3"]);
    assert!(again.status.success(), "{}", stderr(&again));
    let before = Tensor::read_safetensors(out.join("epoch-000.safetensors")).unwrap();
    let after = Tensor::read_safetensors(out.join("epoch-001.safetensors")).unwrap();
    let moved = before.iter().zip(&after).filter(|((_, a), (_, b))| !a.equal(b)).count();
    assert_eq!(moved, before.len(), "every parameter was trained");

    // grads and sensitivity read the run's TorchScript model.
    let grads = dir.path().join("grads");
    let g = gradleak(&[
        "grads",
        "--run",
        &out.display().to_string(),
        "--updates",
        "4",
        "--out",
        &grads.display().to_string(),
    ]);
    assert!(g.status.success(), "{}", stderr(&g));
}

fn one_line_error(args: &[&str], expected: &[&str]) {
    let out = gradleak(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    let e = stderr(&out);
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    for part in expected {
        assert!(e.contains(part), "'{part}' not in: {e}");
    }
}

#[test]
fn bad_input_gives_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("arrays");
    std::fs::create_dir(&data).unwrap();
    arrays_dataset(&data);
    let arrays = format!("arrays:{}", data.display());
    let out = d.join("run").display().to_string();

    let not_ts = d.join("model.pt");
    std::fs::write(&not_ts, "weights, but not TorchScript").unwrap();
    let bad_model = format!("torchscript:{}", not_ts.display());
    one_line_error(
        &["train", "--model", &bad_model, "--dataset", &arrays, "--out", &out],
        &["model.pt: not a TorchScript file"],
    );

    // Four classes where the module outputs three logits.
    let four = d.join("four");
    std::fs::create_dir(&four).unwrap();
    let (x, _) = images(20, 3);
    write_npy(&four.join("x_train.npy"), &x).unwrap();
    write_npy(&four.join("y_train.npy"), &Tensor::arange(20, (Kind::Int64, tch::Device::Cpu)).remainder(4)).unwrap();
    let four = format!("arrays:{}", four.display());
    one_line_error(
        &["train", "--model", &model(), "--dataset", &four, "--out", &out],
        &["example_cnn.pt: output shape [1, 3]", "expected [1, 4]"],
    );

    // Grey images where the module takes colour.
    let grey = d.join("grey");
    std::fs::create_dir(&grey).unwrap();
    write_npy(&grey.join("x_train.npy"), &Tensor::rand([20, 1, 16, 16], (Kind::Float, tch::Device::Cpu))).unwrap();
    write_npy(&grey.join("y_train.npy"), &Tensor::arange(20, (Kind::Int64, tch::Device::Cpu)).remainder(3)).unwrap();
    let grey = format!("arrays:{}", grey.display());
    one_line_error(
        &["train", "--model", &model(), "--dataset", &grey, "--out", &out],
        &["example_cnn.pt: its forward rejects the dataset's input (1x16x16 images"],
    );

    // A folder with a single class.
    let one = d.join("one");
    std::fs::create_dir_all(one.join("cats")).unwrap();
    image::RgbImage::new(16, 16).save(one.join("cats/0.png")).unwrap();
    let config = d.join("one.toml");
    std::fs::write(&config, audit_config(&format!("folder:{}", one.display()), r#"["label"]"#)).unwrap();
    one_line_error(
        &["audit", "--config", &config.display().to_string(), "--out", &d.join("o1").display().to_string()],
        &["1 class folder (cats); expected one sub-folder per class, at least 2"],
    );

    // Labels for fewer samples than there are inputs.
    write_npy(&data.join("y_train.npy"), &Tensor::arange(80, (Kind::Int64, tch::Device::Cpu)).remainder(3)).unwrap();
    one_line_error(
        &["train", "--model", &model(), "--dataset", &arrays, "--out", &out],
        &["y_train.npy has 80 rows but", "x_train.npy has 90"],
    );
    assert!(!d.join("run").exists(), "nothing written after an error");
}

/// `grads`, `attack` and `sensitivity` take a model as it is (`--model torchscript:PATH --dataset ...`), with the
/// file's own weights, as `train` and `audit` do.
#[test]
fn grads_attack_and_sensitivity_take_a_torchscript_model_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("arrays");
    std::fs::create_dir(&data).unwrap();
    arrays_dataset(&data);
    let dataset = format!("arrays:{}", data.display());
    let model = model();
    let store = dir.path().join("grads");
    let g = gradleak(&[
        "grads",
        "--model",
        &model,
        "--dataset",
        &dataset,
        "--updates",
        "6",
        "--out",
        &store.display().to_string(),
        "--json",
    ]);
    assert!(g.status.success(), "{}", stderr(&g));
    let manifest: serde_json::Value = serde_json::from_slice(&g.stdout).unwrap();
    assert_eq!(manifest["num_updates"], 6);
    assert_eq!(manifest["checkpoint"]["epoch"], 0);
    assert!(manifest["checkpoint"]["run"].as_str().unwrap().starts_with("torchscript:"), "{manifest}");

    let a = gradleak(&[
        "attack",
        "--model",
        &model,
        "--dataset",
        &dataset,
        "--method",
        "ig",
        "--samples",
        "2",
        "--iterations",
        "5",
        "--json",
    ]);
    assert!(a.status.success(), "{}", stderr(&a));
    let report: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(report["updates"].as_array().unwrap().len(), 2);

    let s = gradleak(&[
        "sensitivity",
        "--model",
        &model,
        "--dataset",
        &dataset,
        "--samples",
        "4",
        "--probes",
        "2",
        "--json",
    ]);
    assert!(s.status.success(), "{}", stderr(&s));
    let sens: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(sens["input"]["report"]["layers"].as_array().unwrap().len(), 6, "every module with parameters");

    // A model without its data, or both a run and a model, is refused before anything runs.
    for args in [
        vec!["grads", "--model", model.as_str(), "--out", "never"],
        vec!["grads", "--run", "r", "--model", model.as_str(), "--dataset", dataset.as_str(), "--out", "never"],
    ] {
        let out = gradleak(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains("--dataset") || stderr(&out).contains("--model"), "{}", stderr(&out));
    }
    assert!(!Path::new("never").exists());
}
