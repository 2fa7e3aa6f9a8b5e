//! An audit across datasets and models (fetched real data: `gradleak data fetch all`, which `scripts/test.sh`
//! runs): pairs that do not fit are skipped and listed, every row names its dataset and model, small splits give
//! each victim once, and the report opens with an overview of the cells.

use std::process::Command;

fn gradleak(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gradleak")).args(args).args(["--quiet", "--threads", "1"]).output().unwrap()
}

const STUDY: &str = r#"
seed = 1
hidden = 32
[training]
epochs = 1
samples = 500
[measure]
updates = 200
targets = ["input", "label", "attribute"]
bootstrap = 100
sketch_dim = 128
sensitivity = false
[[grid]]
dataset = ["lfw-crops", "adult"]
model = ["lenet5", "mlp"]
"#;

#[test]
fn a_study_across_datasets_and_models_skips_what_does_not_fit_and_names_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("study.toml");
    std::fs::write(&config, STUDY).unwrap();
    let out = dir.path().join("out");
    let run = gradleak(&["audit", "--config", &config.display().to_string(), "--out", &out.display().to_string()]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();

    let skipped = report["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(skipped[0].as_str().unwrap().contains("lenet5 on adult"), "{skipped:?}");
    let cells: Vec<(String, String)> = report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["dataset"].as_str().unwrap().to_string(), c["model"].as_str().unwrap().to_string()))
        .collect();
    let pair = |d: &str, m: &str| (d.to_string(), m.to_string());
    assert_eq!(cells, [pair("lfw-crops", "lenet5"), pair("lfw-crops", "mlp"), pair("adult", "mlp")]);

    let records = report["records"].as_array().unwrap();
    let of = |dataset: &str, model: &str| {
        records.iter().filter(move |r| r["dataset"] == dataset && r["model"] == model).collect::<Vec<_>>()
    };
    // Each dataset's first attribute is its attribute target.
    assert!(of("adult", "mlp").iter().any(|r| r["target"] == "attribute:sex"));
    assert!(of("lfw-crops", "mlp").iter().any(|r| r["target"] == "attribute:ink"));
    // LFW crops has 160 training faces: each is a victim once (60% fit, 20% validation, 20% scored).
    let lfw = of("lfw-crops", "lenet5");
    assert!(lfw.iter().all(|r| r["n_train"].as_u64().unwrap() + r["n_test"].as_u64().unwrap() == 96 + 32));
    let notes = report["cells"][0]["notes"].as_array().unwrap();
    assert!(notes.iter().any(|n| n.as_str().unwrap().contains("160 updates")), "{notes:?}");
    // training.samples (500) is "up to": the 160 faces are all used, and the cell says so.
    assert!(
        notes.iter().any(|n| n.as_str().unwrap()
            == "training.samples is 500, but lfw-crops has 160 training samples: the model trained on all of them"),
        "{notes:?}"
    );
    // A single-sample update of an MLP's first layer holds the input itself (the outer product of the input and
    // the back-propagated error): the linear family recovers much of it.
    let lfw_mlp = of("lfw-crops", "mlp");
    let input_all = lfw.iter().chain(lfw_mlp.iter()).find(|r| r["target"] == "input" && r["layer"] == "all").unwrap();
    assert!(input_all["bits"].as_f64().unwrap() > 50.0, "{input_all}");

    let csv = std::fs::read_to_string(out.join("records.csv")).unwrap();
    assert!(csv.starts_with("cell,dataset,model,"), "{}", &csv[..80]);
    assert!(csv.lines().skip(1).any(|l| l.contains(",adult,mlp,")));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.starts_with("# gradleak audit: 2 models on 2 datasets"), "{}", &md[..80]);
    assert!(md.contains("## Overview") && md.contains("_Skipped: lenet5 on adult"));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("id=\"overview\"") && html.contains("<h2>mlp on adult</h2>"));
    // The terminal shows the overview and what was skipped.
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("## Overview") && stdout.contains("skipped: lenet5 on adult"), "{stdout}");
}
