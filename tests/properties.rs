//! Property-based tests of everything a user hands gradleak (issue 15): random valid and invalid `.npy` headers,
//! safetensors files, CSV text, audit configurations, defence and family names, and store manifests. The
//! properties: no panic, and either a result that agrees with the input or an error of one line.
//!
//! A fuzz target covers the array readers with coverage guidance (`fuzz/`, `scripts/fuzz.sh`).

use std::path::Path;

use gradleak::arrays::{npy_bytes, parse_csv, parse_npy, parse_safetensors};
use gradleak::audit::config::AuditConfig;
use gradleak::defenses::Defense;
use gradleak::gradients::store::GradientStore;
use gradleak::measure::families::Family;
use proptest::prelude::*;
use tch::{Kind, Tensor};

/// An error is one line: what a user sees after `error: `.
fn one_line(e: &anyhow::Error) -> Result<(), TestCaseError> {
    let text = format!("{e:#}");
    prop_assert!(!text.contains('\n'), "an error of several lines: {text}");
    prop_assert!(!text.is_empty());
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() }
}

/// Dimensions a hostile header might give: ordinary, zero, negative, and sizes whose product overflows.
fn dimension() -> impl Strategy<Value = i64> {
    prop_oneof![4 => 0i64..5, 1 => -3i64..0, 1 => Just(1i64 << 40), 1 => Just(i64::MAX), 1 => Just(1i64 << 62)]
}

fn npy_file() -> impl Strategy<Value = Vec<u8>> {
    let descr = prop_oneof![
        Just("<f4"),
        Just("<f8"),
        Just("<i8"),
        Just("|u1"),
        Just("|b1"),
        Just("<f2"),
        Just(">f4"),
        Just("<c8"),
        Just("x"),
    ];
    let fortran = prop_oneof![Just("False"), Just("True"), Just("0")];
    let shape = prop::collection::vec(dimension(), 0..4);
    let version = prop_oneof![Just(1u8), Just(2u8), Just(3u8), Just(7u8)];
    (descr, fortran, shape, version, 0usize..80, any::<bool>(), 0usize..200).prop_map(
        |(descr, fortran, shape, version, data, exact, cut)| {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            let shape_text = match dims.len() {
                1 => format!("({},)", dims[0]),
                _ => format!("({})", dims.join(", ")),
            };
            let header = format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape_text}, }}\n");
            let mut out = b"\x93NUMPY".to_vec();
            out.push(version);
            out.push(0);
            if version == 1 {
                out.extend_from_slice(&(header.len() as u16).to_le_bytes());
            } else {
                out.extend_from_slice(&(header.len() as u32).to_le_bytes());
            }
            out.extend_from_slice(header.as_bytes());
            // Either the size the header asks for (when it is small) or any other.
            let elements = shape.iter().try_fold(1i64, |acc, &d| if d < 0 { None } else { acc.checked_mul(d) });
            let wanted = elements.filter(|&e| e <= 64).map(|e| e as usize * 8);
            let data = if exact { wanted.unwrap_or(data) } else { data };
            out.resize(out.len() + data, 7);
            // Sometimes cut the file short, anywhere.
            if cut < out.len() && cut % 3 == 0 {
                out.truncate(cut);
            }
            out
        },
    )
}

/// Found by the property below: a shape with a zero dimension holds no data, so it passed the size check, yet the
/// product of its other dimensions overflowed libtorch's strides (a panic inside tch).
#[test]
fn a_shape_of_no_data_whose_strides_overflow_gives_one_line() {
    for shape in ["(0, 4611686018427387904, 4611686018427387904)", "(3, 0, 4611686018427387904, 4)"] {
        let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}\n");
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        let err = parse_npy(&bytes).unwrap_err();
        assert!(format!("{err:#}").contains("product overflows"), "{shape}: {err:#}");
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn npy_headers_give_an_array_of_their_shape_or_one_line(bytes in npy_file()) {
        match parse_npy(&bytes) {
            Ok(t) => {
                // A parsed array has the header's shape and exactly the file's data.
                let header = String::from_utf8_lossy(&bytes);
                let shape: Vec<String> = t.size().iter().map(|d| d.to_string()).collect();
                prop_assert!(header.contains(&shape.join(", ")), "shape {:?} not in {header}", t.size());
            }
            Err(e) => one_line(&e)?,
        }
    }

    #[test]
    fn arbitrary_bytes_are_not_an_npy_file_but_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Err(e) = parse_npy(&bytes) {
            one_line(&e)?;
        }
    }

    #[test]
    fn npy_round_trips_any_array(values in prop::collection::vec(-1e6f64..1e6, 0..60), cols in 1i64..5) {
        let rows = values.len() as i64 / cols;
        let t = Tensor::from_slice(&values[..(rows * cols) as usize]).view([rows, cols]);
        for kind in [Kind::Double, Kind::Float, Kind::Int64] {
            let t = t.to_kind(kind);
            let back = parse_npy(&npy_bytes(&t).unwrap()).unwrap();
            prop_assert_eq!(back.size(), t.size());
            prop_assert!(back.equal(&t));
        }
    }

    #[test]
    fn csv_text_gives_a_rectangle_or_one_line(text in "[0-9,.e\\- \nxna]{0,120}") {
        match parse_csv(&text) {
            Ok(t) => {
                let rows = text.lines().filter(|l| !l.trim().is_empty()).count() as i64;
                prop_assert_eq!(t.dim(), 2);
                prop_assert!(t.size()[0] <= rows);
            }
            Err(e) => one_line(&e)?,
        }
    }

    #[test]
    fn safetensors_files_damaged_anywhere_give_tensors_or_one_line(
        rows in 0i64..4,
        cols in 1i64..4,
        position in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
        damage in 0u8..3,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.safetensors");
        let t = Tensor::arange(rows * cols, (Kind::Float, tch::Device::Cpu)).view([rows, cols]);
        Tensor::write_safetensors(&[("x", &t), ("y", &t.to_kind(Kind::Int64))], &path).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        match damage {
            0 => { let i = position.index(bytes.len()); bytes[i] = byte; }
            1 => bytes.truncate(cut.index(bytes.len())),
            _ => {}
        }
        match parse_safetensors(&bytes) {
            Ok(named) => {
                for (_, t) in &named {
                    prop_assert!(t.numel() as i64 <= bytes.len() as i64);
                }
                if damage == 2 {
                    prop_assert_eq!(named.len(), 2);
                }
            }
            Err(e) => one_line(&e)?,
        }
    }

    #[test]
    fn defence_and_family_names_parse_or_give_one_line(
        text in "(dp|prune|quantize|noise|dropout|protect|linear|mlp|analytic|decoder|ig|dlg)?[:=,+.0-9a-z\\-]{0,24}"
    ) {
        if let Err(e) = text.parse::<Defense>() {
            one_line(&e)?;
        }
        if let Err(e) = text.parse::<Family>() {
            one_line(&e)?;
        }
        if let Err(e) = Family::parse_list(&text) {
            one_line(&e)?;
        }
    }
}

/// A value for an audit key: right and wrong types, ordinary and hostile numbers.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        (-3i64..5).prop_map(|v| v.to_string()),
        Just("100000".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("0.5".to_string()),
        Just("-1.5".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("true".to_string()),
        Just("\"\"".to_string()),
        Just("\"fc1\"".to_string()),
        Just("\"lenet5\"".to_string()),
        Just("\"embedded\"".to_string()),
        Just("[]".to_string()),
        Just("[[]]".to_string()),
        Just("[1, 0, -1]".to_string()),
        Just("[\"fc1\", \"fc1\"]".to_string()),
        Just("[[\"fc1\", \"conv1\"]]".to_string()),
        Just("[\"linear\", \"mlp:0\"]".to_string()),
        Just("[\"clip=1,sigma=1\", \"none\"]".to_string()),
        Just("[\"clip=0,sigma=-1\"]".to_string()),
        Just("[[\"prune:0.9\"], [\"quantize:0\"]]".to_string()),
    ]
}

/// Keys of every section of an audit configuration, and some that do not exist.
const KEYS: &[(&str, &str)] = &[
    ("", "seed"),
    ("", "dataset"),
    ("", "model"),
    ("", "width"),
    ("", "hidden"),
    ("", "nonsense"),
    ("training", "epochs"),
    ("training", "batch_size"),
    ("training", "lr"),
    ("training", "momentum"),
    ("training", "weight_decay"),
    ("training", "samples"),
    ("measure", "updates"),
    ("measure", "layers"),
    ("measure", "groups"),
    ("measure", "targets"),
    ("measure", "families"),
    ("measure", "folds"),
    ("measure", "bootstrap"),
    ("measure", "repeats"),
    ("measure", "sketch_dim"),
    ("measure", "sensitivity_samples"),
    ("measure", "probes"),
    ("measure", "latent_k"),
    ("measure", "localisation_fraction"),
    ("measure", "attack_samples"),
    ("measure", "attack_iterations"),
    ("grid", "batch_size"),
    ("grid", "epoch"),
    ("grid", "dropout"),
    ("grid", "dp"),
    ("grid", "defense"),
    ("grid", "protect"),
    ("grid", "model"),
];

proptest! {
    #![proptest_config(config())]

    #[test]
    fn audit_configurations_are_valid_with_cells_or_one_line(
        entries in prop::collection::vec((0..KEYS.len(), toml_value()), 0..6)
    ) {
        let mut sections: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for (k, value) in &entries {
            let (section, key) = KEYS[*k];
            let lines = sections.entry(section).or_default();
            if !lines.iter().any(|l| l.starts_with(&format!("{key} ="))) {
                lines.push(format!("{key} = {value}"));
            }
        }
        let mut text = sections.get("").map(|l| l.join("\n") + "\n").unwrap_or_default();
        for (section, lines) in sections.iter().filter(|(s, _)| !s.is_empty()) {
            text += &format!("[{section}]\n{}\n", lines.join("\n"));
        }
        match AuditConfig::from_toml(&text) {
            // A configuration that passes has a grid of cells, each with sizes the validation promised.
            Ok(config) => match config.cells() {
                Ok(cells) => {
                    prop_assert!(!cells.is_empty(), "{text}");
                    for cell in cells {
                        prop_assert!(cell.batch_size >= 1 && (0.0..1.0).contains(&cell.dropout), "{text}: {cell:?}");
                    }
                }
                Err(e) => one_line(&e)?,
            },
            Err(e) => {
                one_line(&e)?;
                // The audit names its TOML keys, never a CLI flag.
                prop_assert!(!format!("{e:#}").contains(" --"), "{text}: {e:#}");
            }
        }
    }
}

/// A small store, made once for the manifest properties: one epoch of LeNet-5 on the embedded digits, 12 updates.
fn template_store() -> &'static Path {
    static STORE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let run = |args: &[&str]| {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_gradleak"))
                    .current_dir(dir.path())
                    .args(args)
                    .args(["--threads", "1", "--quiet"])
                    .env("OMP_NUM_THREADS", "1")
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
            };
            run(&["train", "--epochs", "1", "--out", "run", "--dataset", "embedded", "--batch-size", "128"]);
            run(&["grads", "--run", "run", "--updates", "12", "--out", "store", "--sketch-dim", "64"]);
            dir
        })
        .path()
}

/// An edit of one manifest field to a value a hand (or a bug) might leave there.
fn manifest_edit() -> impl Strategy<Value = (usize, usize, serde_json::Value)> {
    let value = prop_oneof![
        Just(serde_json::json!(null)),
        Just(serde_json::json!(false)),
        Just(serde_json::json!(true)),
        Just(serde_json::json!(0)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(64)),
        Just(serde_json::json!(1i64 << 40)),
        Just(serde_json::json!("fc1")),
        Just(serde_json::json!([])),
    ];
    (0usize..8, 0usize..6, value)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..config() })]

    #[test]
    fn edited_store_manifests_open_whole_or_give_one_line(edits in prop::collection::vec(manifest_edit(), 1..4)) {
        let template = template_store().join("store");
        let dir = tempfile::tempdir().unwrap();
        for f in ["gradients.safetensors", "manifest.json"] {
            std::fs::copy(template.join(f), dir.path().join(f)).unwrap();
        }
        let path = dir.path().join("manifest.json");
        let mut m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for (field, layer, value) in edits {
            // A field of one of the listed layers (an earlier edit may have emptied or replaced the list).
            let mut layer_field = |key: &str, value: serde_json::Value| {
                if let Some(list) = m["layers"].as_array_mut().filter(|l| !l.is_empty()) {
                    let l = layer % list.len();
                    if let Some(entry) = list[l].as_object_mut() {
                        entry.insert(key.to_string(), value);
                    }
                }
            };
            match field {
                0 => layer_field("full", value),
                1 => layer_field("sketch_dim", value),
                2 => layer_field("name", value),
                3 => layer_field("num_params", value),
                4 => m["num_updates"] = value,
                5 => m["batch_size"] = value,
                6 => m["layers"] = value,
                _ => {
                    if let Some(list) = m["layers"].as_array_mut().filter(|l| !l.is_empty()) {
                        list.push(list[0].clone());
                    }
                }
            }
        }
        std::fs::write(&path, serde_json::to_string(&m).unwrap()).unwrap();
        match GradientStore::open(dir.path()) {
            // A store that opens has, for every layer, what a measurement reads, with a row per update.
            Ok(store) => {
                let n = store.manifest.num_updates;
                for layer in &store.updates.layers {
                    prop_assert_eq!(layer.features().size()[0], n);
                }
            }
            Err(e) => one_line(&e)?,
        }
    }
}
