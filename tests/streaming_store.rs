//! A store written chunk by chunk as its updates are computed is byte for byte the same whatever the chunk size,
//! and the same as the store of the updates computed in memory.

mod common;

use std::path::Path;

use common::{image, quadrant_dataset};
use gradleak::data::Dataset;
use gradleak::defenses::Defense;
use gradleak::gradients::sketch::SketchKind;
use gradleak::gradients::store::{self, GradientStore, MANIFEST_FILE, TENSORS_FILE};
use gradleak::gradients::updates::{compute_updates, UpdateConfig};
use gradleak::gradients::{write_updates, StoreDescription};
use gradleak::models::{Arch, Model, ModelSpec};
use gradleak::progress::Progress;

fn stream(dir: &Path, model: &Model, data: &Dataset, config: &UpdateConfig) {
    let description = StoreDescription { split: "train", checkpoint: None, config, dp: None };
    write_updates(dir, model, data, &data.train, description, false, Progress::HIDDEN).unwrap();
}

fn bytes(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    (std::fs::read(dir.join(TENSORS_FILE)).unwrap(), std::fs::read(dir.join(MANIFEST_FILE)).unwrap())
}

#[test]
fn streamed_stores_do_not_depend_on_the_chunk_size() {
    let data = quadrant_dataset(image(1, 16), 120, 10, 1);
    let mut spec = ModelSpec::new(Arch::Lenet5, data.input_shape, data.num_classes());
    spec.dropout.rate = 0.0;
    let model = Model::new(&spec, 1).unwrap();
    let small = UpdateConfig { num_updates: 41, seed: 3, sketch_dim: 256, full_max_params: 3000, ..Default::default() };
    let configs = [
        ("sparse, single samples", small.clone()),
        ("kron, single samples", UpdateConfig { sketch_kind: SketchKind::Kron, ..small.clone() }),
        ("kron, batches of 3", UpdateConfig { sketch_kind: SketchKind::Kron, batch_size: 3, ..small.clone() }),
        (
            "dropout and DP, batches of 2",
            UpdateConfig {
                batch_size: 2,
                defenses: vec![Defense::Dropout { rate: 0.3 }, Defense::Dp { clip: 1.0, noise_multiplier: 0.5 }],
                ..small.clone()
            },
        ),
        (
            "kron with noise and pruning",
            UpdateConfig {
                sketch_kind: SketchKind::Kron,
                defenses: vec![Defense::Noise { std: 0.01 }, Defense::Prune { fraction: 0.5 }],
                ..small.clone()
            },
        ),
    ];
    for (what, config) in configs {
        let dir = tempfile::tempdir().unwrap();
        let mut written = Vec::new();
        for chunk in [None, Some(8), Some(24), Some(1)] {
            let path = dir.path().join(format!("{chunk:?}"));
            stream(&path, &model, &data, &UpdateConfig { chunk_samples: chunk, ..config.clone() });
            written.push((chunk, bytes(&path)));
        }
        for (chunk, files) in &written[1..] {
            assert!(files.0 == written[0].1 .0, "{what}: tensors differ with chunks of {chunk:?}");
            assert!(files.1 == written[0].1 .1, "{what}: manifests differ with chunks of {chunk:?}");
        }
        // The same store as the updates computed in memory and written at once.
        let updates = compute_updates(&model, &data.train, &config, Progress::HIDDEN).unwrap();
        let manifest = gradleak::gradients::manifest(&model, &data, "train", None, &config, &updates, None);
        let in_memory = dir.path().join("memory");
        store::write_store(&in_memory, &manifest, &updates, false).unwrap();
        assert!(bytes(&in_memory) == written[0].1, "{what}: the streamed store differs from the in-memory one");
        let opened = GradientStore::open(&dir.path().join("None")).unwrap();
        assert_eq!(opened.manifest.num_updates, 41);
    }
}

#[test]
fn the_header_is_the_one_the_safetensors_crate_writes() {
    // The streamed file against tch's own writer of the same tensors.
    let data = quadrant_dataset(image(1, 16), 60, 10, 1);
    let model = Model::new(&ModelSpec::new(Arch::Lenet5, data.input_shape, data.num_classes()), 0).unwrap();
    let config = UpdateConfig { num_updates: 9, sketch_dim: 512, full_max_params: 3000, ..Default::default() };
    let dir = tempfile::tempdir().unwrap();
    stream(dir.path(), &model, &data, &config);
    let opened = GradientStore::open(dir.path()).unwrap();
    let mut named = Vec::new();
    for l in &opened.updates.layers {
        if let Some(full) = &l.full {
            named.push((format!("grad.{}", l.name), full.shallow_clone()));
        }
        if let Some(sketch) = &l.sketch {
            named.push((format!("sketch.{}", l.name), sketch.shallow_clone()));
        }
    }
    named.extend(store::fact_tensors(&opened.updates));
    let reference = dir.path().join("reference.safetensors");
    tch::Tensor::write_safetensors(&named, &reference).unwrap();
    assert!(std::fs::read(reference).unwrap() == std::fs::read(dir.path().join(TENSORS_FILE)).unwrap());
}
