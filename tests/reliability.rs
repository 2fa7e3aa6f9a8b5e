//! Bad input at every entry point: one line that names the file, key or flag, a non-zero exit, no panic, nothing
//! half-written (issue 15). Each case here once panicked, aborted, or gave a silent or wrong result.

use std::path::Path;
use std::process::Command;

use gradleak::arrays::write_npy;
use gradleak::audit::config::AuditConfig;
use gradleak::defenses::Defense;
use tch::{Kind, Tensor};

/// Runs the binary with one libtorch thread and no backtrace: (exit code, stdout, stderr).
fn gradleak(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gradleak"))
        .current_dir(dir)
        .args(args)
        .args(["--threads", "1", "--quiet"])
        .env("OMP_NUM_THREADS", "1")
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The command fails with exit code 1 and one line on stderr that contains `expected`.
#[track_caller]
fn fails_with(dir: &Path, args: &[&str], expected: &str) {
    let (code, _, stderr) = gradleak(dir, args);
    assert_eq!(code, 1, "{args:?}: exit {code}: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: not one line: {stderr}");
    assert!(stderr.starts_with("error: ") && stderr.contains(expected), "{args:?}: {stderr}");
}

/// A little-endian f32 `.npy` file with `shape` written as given and `data` bytes.
fn raw_npy(path: &Path, shape: &str, data: usize) {
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.resize(out.len() + data, 0);
    std::fs::write(path, out).unwrap();
}

#[test]
fn arrays_that_once_panicked_give_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_npy(&d.join("y.npy"), &Tensor::from_slice(&[0i64, 1, 0, 1])).unwrap();
    raw_npy(&d.join("empty.npy"), "(0, 5)", 0);
    raw_npy(&d.join("negative.npy"), "(-1, -1)", 4);
    raw_npy(&d.join("wraps.npy"), "(4611686018427387904, 4)", 0);
    fn vinfo(features: &str) -> [&str; 7] {
        ["vinfo", "--features", features, "--target", "y.npy", "--kind", "categorical"]
    }
    fails_with(d, &vinfo("empty.npy"), "features: no samples (shape [0, 5])");
    fails_with(
        d,
        &vinfo("negative.npy"),
        "negative.npy: not a valid .npy file: shape [-1, -1] has a negative dimension",
    );
    fails_with(d, &vinfo("wraps.npy"), "more bytes than this machine can address");
    write_npy(&d.join("g.npy"), &Tensor::randn([4, 3], (Kind::Float, tch::Device::Cpu))).unwrap();
    let mut wide = vinfo("g.npy").to_vec();
    wide.extend(["--family", "mlp:100000000"]);
    fails_with(d, &wide, "--family: family 'mlp:100000000': expected hidden sizes as integers in [1, 65536]");
}

#[test]
fn shapes_and_labels_that_would_exhaust_memory_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails_with(
        d,
        &["models", "lenet5", "--input", "1x100000x100000"],
        "lenet5 on input 1x100000x100000 images with 10 classes would have 1200000002692 parameters, more than the \
         2147483648 gradleak allows",
    );
    fails_with(d, &["models", "lenet5", "--input", "1x1000000000x1000000000"], "more parameters than can be counted");

    // An arrays dataset whose labels reach 10^12 (24 TB of class names once), then one with a NaN input.
    let arrays = d.join("arrays");
    std::fs::create_dir(&arrays).unwrap();
    let x = Tensor::rand([40, 6], (Kind::Float, tch::Device::Cpu));
    let mut labels: Vec<i64> = (0..40).map(|i| i % 2).collect();
    labels[7] = 1_000_000_000_000;
    write_npy(&arrays.join("x_train.npy"), &x).unwrap();
    write_npy(&arrays.join("y_train.npy"), &Tensor::from_slice(&labels)).unwrap();
    let train = ["train", "--dataset", "arrays:arrays", "--model", "mlp", "--epochs", "1", "--out", "run"];
    fails_with(d, &train, "y_train.npy: labels go up to 1000000000000, more than the 1048576 classes gradleak allows");
    labels[7] = 1;
    write_npy(&arrays.join("y_train.npy"), &Tensor::from_slice(&labels)).unwrap();
    let _ = x.get(3).get(2).fill_(f64::NAN);
    write_npy(&arrays.join("x_train.npy"), &x).unwrap();
    fails_with(d, &train, "x_train.npy: row 3 holds a NaN or infinite value (1 rows in all)");
    assert!(!d.join("run").exists(), "nothing is written for bad input");
}

#[test]
fn flags_out_of_range_name_the_flag_and_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails_with(d, &["train", "--batch-size", "0", "--out", "run"], "--batch-size must be at least 1, got 0");
    // Duplicate keys of a defence are an error, not "the last one wins".
    let e = "dp:clip=1,sigma=1,sigma=2".parse::<Defense>().unwrap_err().to_string();
    assert_eq!(e, "defence 'dp:clip=1,sigma=1,sigma=2': key 'sigma' is given twice; give clip and sigma once each");
    assert!("dp:clip=1,c=2,sigma=1".parse::<Defense>().unwrap_err().to_string().contains("key 'c' is given twice"));
    assert_eq!("dp:clip=1,sigma=2".parse::<Defense>().unwrap(), Defense::Dp { clip: 1.0, noise_multiplier: 2.0 });
}

/// Trains LeNet-5 one epoch on 200 embedded samples and stores 40 updates: the store the next tests edit.
fn small_store(d: &Path) {
    let (code, _, stderr) =
        gradleak(d, &["train", "--epochs", "1", "--out", "run", "--dataset", "embedded", "--batch-size", "128"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = gradleak(d, &["grads", "--run", "run", "--updates", "40", "--out", "store"]);
    assert_eq!(code, 0, "{stderr}");
}

/// A copy of `store` whose manifest is edited by `edit`.
fn edited_store(d: &Path, name: &str, edit: impl Fn(&mut serde_json::Value)) {
    let to = d.join(name);
    std::fs::create_dir(&to).unwrap();
    for f in ["gradients.safetensors", "manifest.json"] {
        std::fs::copy(d.join("store").join(f), to.join(f)).unwrap();
    }
    let path = to.join("manifest.json");
    let mut manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_string(&manifest).unwrap()).unwrap();
}

#[test]
fn stores_layers_and_counts_are_checked_before_measuring() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    small_store(d);
    // A store whose manifest lists a layer as neither full nor sketched, no layer, or a layer twice.
    edited_store(d, "neither", |m| {
        m["layers"][0]["full"] = false.into();
        m["layers"][0]["sketch_dim"] = serde_json::Value::Null;
    });
    edited_store(d, "empty", |m| m["layers"] = serde_json::json!([]));
    edited_store(d, "twice", |m| {
        let first = m["layers"][0].clone();
        m["layers"].as_array_mut().unwrap().push(first);
    });
    let vinfo = |store: &'static str| ["vinfo", "--store", store, "--targets", "label", "--bootstrap", "20"];
    fails_with(
        d,
        &vinfo("neither"),
        "neither/manifest.json: layer 'conv1' is stored neither in full ('full': false) nor as a sketch",
    );
    fails_with(d, &vinfo("empty"), "empty/manifest.json: 'layers' is empty");
    fails_with(d, &vinfo("twice"), "twice/manifest.json: layer 'conv1' is listed twice in 'layers'");
    let latent = ["sensitivity", "--store", "neither", "--attribute", "thickness"];
    fails_with(d, &latent, "neither/manifest.json: layer 'conv1' is stored neither");
    // A grads request that would store a layer as neither is refused when it is made.
    let grads = ["grads", "--run", "run", "--updates", "10", "--full-max-params", "10", "--sketch-dim", "1024"];
    fails_with(d, &[&grads[..], &["--out", "s10"]].concat(), "--full-max-params must be at least --sketch-dim (1024)");

    // Layers and groups: duplicates and empty groups are errors.
    let store = ["vinfo", "--store", "store", "--targets", "label", "--bootstrap", "20", "--no-all"];
    fails_with(d, &[&store[..], &["--layers", "fc3,fc3"]].concat(), "--layers lists layer 'fc3' twice");
    fails_with(
        d,
        &[&store[..], &["--layers", "fc3", "--group", "fc3+fc2+fc3"]].concat(),
        "--group lists layer 'fc3' twice in the group fc3+fc2+fc3",
    );
    fails_with(d, &[&store[..], &["--group", ""]].concat(), "--group has an empty group or layer name");

    // Counts of zero gave a zero-width interval and a NaN null column.
    let latent = ["sensitivity", "--store", "store", "--attribute", "thickness"];
    fails_with(d, &[&latent[..], &["--bootstrap", "0"]].concat(), "--bootstrap must be at least 1, got 0");
    fails_with(d, &[&latent[..], &["--permutations", "0"]].concat(), "--permutations must be at least 1, got 0");
    fails_with(d, &[&latent[..], &["--k", "0"]].concat(), "--k must be at least 1, got 0");

    // --pvi-out with --store wrote nothing: now a column per row of the table.
    let (code, stdout, stderr) =
        gradleak(d, &[&store[..], &["--layers", "fc3,fc2", "--pvi-out", "pvi.npy", "--json"]].concat());
    assert_eq!(code, 0, "{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let pvi = gradleak::arrays::read_npy(&d.join("pvi.npy")).unwrap();
    assert_eq!(pvi.size(), vec![40, 2]);
    let measured: Vec<&serde_json::Value> =
        rows["rows"].as_array().unwrap().iter().filter(|r| r["family"] != "best").collect();
    assert_eq!(measured.len(), 2);
    for (j, row) in measured.into_iter().enumerate() {
        let mean = pvi.select(1, j as i64).mean(Kind::Double).double_value(&[]);
        assert!((mean - row["bits"].as_f64().unwrap()).abs() < 1e-9, "column {j}: {mean} vs {row}");
    }
}

#[test]
fn audit_keys_are_checked_when_the_configuration_is_read() {
    let error = |toml: &str| format!("{:#}", AuditConfig::from_toml(toml).unwrap_err());
    for (toml, expected) in [
        ("[measure]\ngroups = [[]]\n", "measure.groups has an empty group or layer name ([])"),
        ("[measure]\ngroups = [[\"fc1\", \"fc1\"]]\n", "measure.groups lists layer 'fc1' twice in the group fc1+fc1"),
        ("[measure]\nlayers = [\"fc1\", \"fc1\"]\n", "measure.layers lists layer 'fc1' twice"),
        ("[training]\nsamples = -1\n", "training.samples must be at least 0, got -1"),
        ("[measure]\nlatent_k = 0\n", "measure.latent_k must be at least 1, got 0"),
        ("[measure]\nsketch_dim = 0\n", "measure.sketch_dim must be at least 1, got 0"),
        ("[measure]\nbootstrap = 0\n", "measure.bootstrap must be at least 1, got 0"),
        ("[measure]\nfolds = 1\n", "measure.folds must be at least 2, got 1"),
        ("[measure]\nattack_iterations = 0\n", "measure.attack_iterations must be at least 1, got 0"),
        ("[measure]\nsensitivity_samples = -1\n", "measure.sensitivity_samples must be at least 1, got -1"),
        ("[grid]\ndp = [\"clip=1,sigma=1,sigma=2\"]\n", "key 'sigma' is given twice"),
    ] {
        let e = error(toml);
        assert!(e.contains(expected), "{toml}: {e}");
        assert!(!e.contains("--"), "{toml}: a CLI flag in an audit error: {e}");
    }

    // Sizes that depend on the dataset: checked when it is loaded, before training, and nothing is written.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // (`training.samples` is an upper bound, "up to": a study over datasets of different sizes uses a smaller
    // training split whole, and the cells' notes say so; `tests/audit_study.rs` checks the note.)
    {
        let (toml, expected) = (
            "[grid]\nbatch_size = [100000]\n",
            "grid.batch_size must be in [1, 5000] (the train split of embedded has 5000 samples), got 100000",
        );
        std::fs::write(d.join("a.toml"), toml).unwrap();
        fails_with(d, &["audit", "--config", "a.toml", "--out", "out"], expected);
        assert!(!d.join("out").exists(), "{toml}: the out folder was written");
    }
}

#[test]
fn merge_refuses_a_folder_that_holds_another_audit_or_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tiny = "[training]\nepochs = 1\nsamples = 200\n[measure]\nupdates = 20\ntargets = [\"label\"]\n\
                families = [\"linear\"]\nsensitivity = false\nall_layers = false\nlayers = [\"fc3\"]\n";
    std::fs::write(d.join("a.toml"), format!("{tiny}bootstrap = 20\n")).unwrap();
    std::fs::write(d.join("b.toml"), format!("{tiny}bootstrap = 30\n")).unwrap();
    for (config, out) in [("a.toml", "a"), ("b.toml", "b")] {
        let (code, _, stderr) = gradleak(d, &["audit", "--config", config, "--out", out]);
        assert_eq!(code, 0, "{stderr}");
    }
    let before = std::fs::read(d.join("b/report.json")).unwrap();
    fails_with(d, &["merge", "a", "--out", "b"], "--out b holds the results of another audit configuration");
    // merge has no --resume: its advice must not offer one.
    let (_, _, stderr) = gradleak(d, &["merge", "a", "--out", "b"]);
    assert!(stderr.contains("merge into a new folder") && !stderr.contains("resume"), "{stderr}");
    assert_eq!(std::fs::read(d.join("b/report.json")).unwrap(), before, "the other audit's report was changed");
    std::fs::create_dir(d.join("r")).unwrap();
    std::fs::write(d.join("r/report.json"), "{}").unwrap();
    fails_with(d, &["merge", "a", "--out", "r"], "--out r is not empty and holds no audit");
    assert_eq!(std::fs::read_to_string(d.join("r/report.json")).unwrap(), "{}");
}

/// The summary an audit prints with `--json`.
fn audit_summary(d: &Path, args: &[&str]) -> serde_json::Value {
    let (code, stdout, stderr) = gradleak(d, args);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    json["summary"].clone()
}

/// A report without its timings (every `seconds` field), which differ from run to run.
fn without_timings(bytes: &[u8]) -> serde_json::Value {
    fn strip(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.remove("seconds");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v = serde_json::from_slice(bytes).unwrap();
    strip(&mut v);
    v
}

#[test]
fn a_cell_file_that_holds_another_cell_is_recomputed_not_reported_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("a.toml"),
        "[training]\nepochs = 1\nsamples = 200\n[measure]\nupdates = 20\ntargets = [\"label\"]\n\
         families = [\"linear\"]\nsensitivity = false\nall_layers = false\nlayers = [\"fc3\"]\nbootstrap = 20\n\
         [grid]\nbatch_size = [1, 2]\n",
    )
    .unwrap();
    let args = ["audit", "--config", "a.toml", "--out", "out", "--json"];
    let first = audit_summary(d, &args);
    assert_eq!(first["cells_computed"], 2, "{first}");
    let report = std::fs::read(d.join("out/report.json")).unwrap();
    // Swap the two cells' files: each name now holds the other cell.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("out/audit.json")).unwrap()).unwrap();
    let keys: Vec<String> = manifest["cells"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().into()).collect();
    let path = |k: &str| d.join("out/cells").join(format!("{k}.json"));
    let (a, b) = (std::fs::read(path(&keys[0])).unwrap(), std::fs::read(path(&keys[1])).unwrap());
    std::fs::write(path(&keys[0]), &b).unwrap();
    std::fs::write(path(&keys[1]), &a).unwrap();
    // merge refuses to copy them; the audit recomputes both and reports what it reported before.
    fails_with(d, &["merge", "out", "--out", "merged"], "not a finished cell of this audit");
    let again = audit_summary(d, &args);
    assert_eq!((again["cells_computed"].as_u64(), again["cells_reused"].as_u64()), (Some(2), Some(0)), "{again}");
    assert_eq!(without_timings(&std::fs::read(d.join("out/report.json")).unwrap()), without_timings(&report));
}

/// Issue 31: every count that sizes work or memory has a limit, checked before any work, and named as the user
/// wrote it. Each of these once aborted in the allocator or ran on past any limit.
#[test]
fn counts_beyond_their_limits_are_one_line_errors_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let x = Tensor::randn([40, 3], (Kind::Double, tch::Device::Cpu));
    write_npy(&d.join("x.npy"), &x).unwrap();
    write_npy(&d.join("y.npy"), &x.narrow(1, 0, 1).copy()).unwrap();
    let vinfo = ["vinfo", "--features", "x.npy", "--target", "y.npy", "--kind", "continuous"];
    let huge = "1000000000000";
    for (flag, limit) in [("--bootstrap", "100000"), ("--repeats", "100"), ("--folds", "100"), ("--epochs", "10000")] {
        fails_with(d, &[&vinfo[..], &[flag, huge]].concat(), &format!("{flag} must be at most {limit}, got {huge}"));
    }
    for (family, expected) in [
        ("ig:1000000000000", "--family: family 'ig:1000000000000': expected 1 to 24000 iterations"),
        ("decoder:1000000000000", "expected 20 to 1000000 auxiliary updates"),
    ] {
        fails_with(d, &[&vinfo[..], &["--family", family]].concat(), expected);
    }
    let model = ["--model", "lenet5", "--dataset", "embedded"];
    let sensitivity = [&["sensitivity"][..], &model[..]].concat();
    fails_with(d, &[&sensitivity[..], &["--probes", huge]].concat(), "--probes must be at most 256, got");
    fails_with(d, &[&sensitivity[..], &["--bootstrap", huge]].concat(), "--bootstrap must be at most 1000, got");
    let attack = [&["attack", "--method", "ig"][..], &model[..]].concat();
    fails_with(
        d,
        &[&attack[..], &["--iterations", huge]].concat(),
        "--iterations: the number of iterations must be at most 24000, got 1000000000000",
    );
    fails_with(
        d,
        &[&attack[..], &["--restarts", huge]].concat(),
        "--restarts: the number of restarts must be at most 16",
    );
    // The audit's keys.
    for (toml, expected) in [
        ("[measure]\nattack_iterations = 1000000000000\n", "measure.attack_iterations must be at most 24000"),
        ("[measure]\nbootstrap = 1000000000000\n", "measure.bootstrap must be at most 100000"),
        ("[measure]\nrepeats = 1000\n", "measure.repeats must be at most 100"),
        ("[measure]\nprobes = 100000\n", "measure.probes must be at most 256"),
        ("[measure]\nfolds = 1000\n", "measure.folds must be at most 100"),
        ("[grid]\nbatch_size = []\n", "grid.batch_size is empty"),
        ("[grid]\ndp = []\n", "grid.dp is empty"),
    ] {
        let e = format!("{:#}", AuditConfig::from_toml(toml).unwrap_err());
        assert!(e.contains(expected), "{toml}: {e}");
    }
}

#[test]
fn a_folder_dataset_that_declares_huge_images_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for class in ["a", "b"] {
        std::fs::create_dir_all(d.join("imgs").join(class)).unwrap();
        for i in 0..3 {
            image::GrayImage::new(4, 4).save(d.join("imgs").join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    std::fs::write(d.join("imgs/dataset.json"), r#"{"height": 100000, "width": 100000}"#).unwrap();
    fails_with(
        d,
        &["data", "show", "folder:imgs"],
        "imgs/dataset.json: images of 100000 x 100000 pixels; at most 16777216 pixels (4096 x 4096) per image",
    );
}

#[test]
fn negative_values_after_a_space_reach_the_flag_s_own_check() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fails_with(d, &["train", "--lr", "-1", "--out", "run"], "--lr must be in (0, 10], got -1");
    fails_with(d, &["train", "--momentum", "-0.5", "--out", "run"], "--momentum must be in [0, 1), got -0.5");
    // (Without the helper, which sets --threads itself.)
    let out = Command::new(env!("CARGO_BIN_EXE_gradleak")).args(["--threads=-1", "models"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr, "error: --threads must be in [0, 1024] (0: libtorch's default), got -1\n");
    let x = Tensor::randn([40, 3], (Kind::Double, tch::Device::Cpu));
    write_npy(&d.join("x.npy"), &x).unwrap();
    write_npy(&d.join("y.npy"), &x.narrow(1, 0, 1).copy()).unwrap();
    let vinfo = ["vinfo", "--features", "x.npy", "--target", "y.npy", "--kind", "continuous"];
    fails_with(
        d,
        &[&vinfo[..], &["--val-fraction", "0"]].concat(),
        "--val-fraction: the validation fraction must be in (0, 1), got 0",
    );
    fails_with(
        d,
        &[&vinfo[..], &["--protocol", "split", "--test-fraction", "-0.2"]].concat(),
        "--test-fraction: the test fraction must be in (0, 1), got -0.2",
    );
    fails_with(
        d,
        &[&vinfo[..], &["--variance-floor", "-1"]].concat(),
        "--variance-floor: the variance floor must be in (0, 1), got -1",
    );
}

/// Rewrites a safetensors file with `edit` applied to its (sorted) named tensors.
fn edit_checkpoint(path: &Path, edit: impl Fn(&mut Vec<(String, Tensor)>)) {
    let mut named = Tensor::read_safetensors(path).unwrap();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut named);
    Tensor::write_safetensors(&named, path).unwrap();
}

#[test]
fn every_command_refuses_a_checkpoint_with_nan_weights_or_a_wrong_dtype() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (code, _, stderr) =
        gradleak(d, &["train", "--epochs", "1", "--out", "run", "--dataset", "embedded", "--batch-size", "128"]);
    assert_eq!(code, 0, "{stderr}");
    let checkpoint = d.join("run/epoch-001.safetensors");
    let original = std::fs::read(&checkpoint).unwrap();
    // A NaN in one weight: grads wrote a store of NaN gradients and sensitivity ranked NaN layers.
    edit_checkpoint(&checkpoint, |named| {
        let _ = named[0].1.view([-1]).get(0).fill_(f64::NAN);
    });
    let nan = "epoch-001.safetensors: tensor 'conv1.bias' holds 1 NaN or infinite value; a model with them cannot be \
               measured";
    fails_with(d, &["grads", "--run", "run", "--updates", "10", "--out", "store"], nan);
    assert!(!d.join("store").exists(), "grads wrote a store");
    fails_with(d, &["sensitivity", "--run", "run", "--samples", "4", "--probes", "2"], nan);
    fails_with(d, &["attack", "--run", "run", "--method", "dlg", "--samples", "1", "--iterations", "2"], nan);
    // The same bytes declared I32 instead of F32 loaded as a different model.
    let mut bytes = original.clone();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + header_len].to_vec()).unwrap();
    let at = 8 + header.find("\"F32\"").expect("an F32 tensor in the header") + 1;
    bytes[at..at + 3].copy_from_slice(b"I32");
    std::fs::write(&checkpoint, bytes).unwrap();
    fails_with(
        d,
        &["grads", "--run", "run", "--updates", "10", "--out", "store"],
        "is stored as Int, model lenet5 expects Float",
    );
    std::fs::write(&checkpoint, original).unwrap();
    let (code, _, stderr) = gradleak(d, &["grads", "--run", "run", "--updates", "10", "--out", "store"]);
    assert_eq!(code, 0, "the original checkpoint: {stderr}");
}

#[test]
fn measurements_that_cannot_run_or_repeat_a_row_are_refused_not_silently_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Tabular data without attributes.
    let arrays = d.join("tab");
    std::fs::create_dir(&arrays).unwrap();
    write_npy(&arrays.join("x_train.npy"), &Tensor::rand([60, 5], (Kind::Float, tch::Device::Cpu))).unwrap();
    let labels: Vec<i64> = (0..60).map(|i| i % 2).collect();
    write_npy(&arrays.join("y_train.npy"), &Tensor::from_slice(&labels)).unwrap();
    let audit = |name: &str, toml: &str, expected: &str| {
        let toml = format!("dataset = \"arrays:tab\"\nmodel = \"mlp\"\n[training]\nepochs = 1\n{toml}");
        std::fs::write(d.join(name), toml).unwrap();
        fails_with(d, &["audit", "--config", name, "--out", "out"], expected);
        assert!(!d.join("out").exists(), "{name}: the out folder was written");
    };
    // An audit of 0 records, reported as success.
    audit(
        "a.toml",
        "[measure]\ntargets = [\"attributes\"]\n",
        "measure.targets on dataset arrays:tab: no target to measure: the data has no latent attributes",
    );
    // An empty attacks array and no note.
    audit(
        "b.toml",
        "[measure]\ntargets = [\"label\"]\nattack = \"idlg\"\n",
        "measure.attack = \"idlg\" reconstructs images, and no dataset of the sweep has them (arrays:tab)",
    );
    // Duplicate rows.
    for (toml, expected) in [
        ("[measure]\ntargets = [\"label\", \"label\"]\n", "measure.targets lists 'label' twice"),
        ("[measure]\nfamilies = [\"linear\", \"linear\"]\n", "measure.families lists 'linear' twice"),
    ] {
        let e = format!("{:#}", AuditConfig::from_toml(toml).unwrap_err());
        assert!(e.contains(expected), "{toml}: {e}");
    }
    let x = Tensor::randn([40, 3], (Kind::Double, tch::Device::Cpu));
    write_npy(&d.join("x.npy"), &x).unwrap();
    write_npy(&d.join("y.npy"), &x.narrow(1, 0, 1).copy()).unwrap();
    let vinfo = ["vinfo", "--features", "x.npy", "--target", "y.npy", "--kind", "continuous"];
    fails_with(d, &[&vinfo[..], &["--family", "linear+linear"]].concat(), "--family: family 'linear' is listed twice");

    // A test split with a class the training split never has: a model with an extra class and 0.00% accuracy.
    write_npy(&arrays.join("x_test.npy"), &Tensor::rand([10, 5], (Kind::Float, tch::Device::Cpu))).unwrap();
    let test_labels: Vec<i64> = (0..10).map(|i| if i < 5 { 7 } else { 1 }).collect();
    write_npy(&arrays.join("y_test.npy"), &Tensor::from_slice(&test_labels)).unwrap();
    fails_with(
        d,
        &["train", "--dataset", "arrays:tab", "--model", "mlp", "--epochs", "1", "--out", "run"],
        "tab: the test split has label 7 that the training split never has",
    );
}

#[test]
fn a_stopped_grads_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let out = d.join(format!("store{signal}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_gradleak"))
            .current_dir(d)
            .args(["grads", "--model", "lenet5", "--dataset", "embedded", "--updates", "5000", "--out"])
            .arg(&out)
            .args(["--threads", "1", "--quiet"])
            .env("OMP_NUM_THREADS", "1")
            .spawn()
            .unwrap();
        let temporary = |out: &Path| {
            std::fs::read_dir(out)
                .map(|entries| {
                    entries.filter_map(Result::ok).any(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
                })
                .unwrap_or(false)
        };
        let started = std::time::Instant::now();
        while !temporary(&out) {
            assert!(child.try_wait().unwrap().is_none(), "grads ended before writing");
            assert!(started.elapsed().as_secs() < 120, "no temporary file after 2 minutes");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // SAFETY: sends a signal to the child started above.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(signal), "{status:?}");
        assert!(!temporary(&out), "signal {signal}: a temporary file was left in {}", out.display());
        assert!(!out.join("manifest.json").exists());
    }
}
