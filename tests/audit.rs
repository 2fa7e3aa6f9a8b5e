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
    // 3 layers + all, 3 targets, 1 family, 4 cells.
    assert_eq!(records.len(), 4 * 3 * 4);
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
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("| layer | parameters |"));
    assert!(std::fs::read_to_string(out.join("report.html")).unwrap().contains("<svg"));

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
    assert!(gradleak(&["audit", "--config", &config, "--out", &out.display().to_string()]).status.success());
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
    assert!(dom.contains("id=\"summary\"") && dom.contains("<svg"), "rendered DOM: {}", &dom[..dom.len().min(500)]);
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

#[test]
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
    let Some(run) = in_small_tmpfs(&mount, "4m", &script) else {
        eprintln!("skipped: this machine does not allow unprivileged user namespaces (unshare -rm)");
        return;
    };
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
