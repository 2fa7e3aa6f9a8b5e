//! Loads every real dataset from the data folder (`$GRADLEAK_DATA`, default `data` in the crate root) and checks
//! counts, shapes, value ranges, labels and attribute balance. Run `gradleak data fetch all` first: a missing
//! dataset fails with the command to run, it is never skipped.

use std::path::PathBuf;

use gradleak::data::{self, Dataset, InputShape, Split};
use tch::Kind;

fn data_dir() -> PathBuf {
    match std::env::var_os("GRADLEAK_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data"),
    }
}

fn load(name: &str) -> Dataset {
    let dir = data_dir();
    data::load(name, &dir).unwrap_or_else(|e| {
        panic!(
            "dataset {name} could not be loaded from {}: {e:#}\n(run `gradleak data fetch all` first)",
            dir.display()
        )
    })
}

fn range(split: &Split) -> (f64, f64) {
    (split.inputs.min().double_value(&[]), split.inputs.max().double_value(&[]))
}

/// Common checks; `balance_tolerance` bounds |fraction of 1s - 0.5| on the training split for image attributes.
fn check(d: &Dataset, shape: InputShape, counts: (i64, i64), classes: usize, balance_tolerance: f64) {
    assert_eq!(d.input_shape, shape, "{}", d.name);
    assert_eq!((d.train.len(), d.test.len()), counts, "{}: train/test counts", d.name);
    assert_eq!(d.classes.len(), classes, "{}", d.name);
    for (which, s) in [("train", &d.train), ("test", &d.test)] {
        assert_eq!(s.inputs.size(), shape.batch(s.len()), "{} {which}: input shape", d.name);
        assert_eq!(s.inputs.kind(), Kind::Float, "{} {which}", d.name);
        assert_eq!(s.labels.kind(), Kind::Int64, "{} {which}", d.name);
        assert_eq!(s.attributes.kind(), Kind::Int64, "{} {which}", d.name);
        assert_eq!(s.attributes.size(), vec![s.len(), d.attributes.len() as i64], "{} {which}", d.name);
        assert_eq!(s.attribute_values.size(), s.attributes.size(), "{} {which}", d.name);
        let (lo, hi) = (s.labels.min().int64_value(&[]), s.labels.max().int64_value(&[]));
        assert!(lo >= 0 && hi < classes as i64, "{} {which}: labels span {lo}..{hi}", d.name);
        // Every class occurs in both splits.
        assert!(d.class_counts(s).iter().all(|&c| c > 0), "{} {which}: a class is empty", d.name);
        let bits = s.attributes.eq(0).logical_or(&s.attributes.eq(1)).all().int64_value(&[]);
        assert_eq!(bits, 1, "{} {which}: attributes are not 0/1", d.name);
        if matches!(shape, InputShape::Image { .. }) {
            let (lo, hi) = range(s);
            assert!(lo >= 0.0 && hi <= 1.0 && hi > 0.5, "{} {which}: pixel range {lo}..{hi}", d.name);
        }
    }
    if balance_tolerance < 0.5 {
        for (a, frac) in d.attributes.iter().zip(Dataset::attribute_balance(&d.train)) {
            assert!(
                (frac - 0.5).abs() <= balance_tolerance,
                "{}: attribute {} has {frac:.3} ones in train",
                d.name,
                a.name
            );
        }
    }
    // The test split is thresholded with the training medians, so it is only roughly balanced too.
    for (a, frac) in d.attributes.iter().zip(Dataset::attribute_balance(&d.test)) {
        assert!(frac > 0.05 && frac < 0.95, "{}: attribute {} has {frac:.3} ones in test", d.name, a.name);
    }
}

fn image(c: i64, h: i64, w: i64) -> InputShape {
    InputShape::Image { channels: c, height: h, width: w }
}

#[test]
fn mnist() {
    let d = load("mnist");
    check(&d, image(1, 28, 28), (60_000, 10_000), 10, 0.02);
    assert_eq!(d.class_counts(&d.test), vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]);
}

#[test]
fn fashion_mnist() {
    let d = load("fashion-mnist");
    check(&d, image(1, 28, 28), (60_000, 10_000), 10, 0.03);
    assert_eq!(d.class_counts(&d.train), vec![6_000; 10]);
    assert_eq!(d.classes[9], "Ankle boot");
}

#[test]
fn cifar_dogs_cats() {
    let d = load("cifar-dogs-cats");
    check(&d, image(3, 32, 32), (1_600, 400), 2, 0.01);
    assert_eq!(d.class_counts(&d.train), vec![800, 800]);
    assert_eq!(d.class_counts(&d.test), vec![200, 200]);
}

#[test]
fn adult() {
    let d = load("adult");
    check(&d, InputShape::Tabular { features: 104 }, (30_162, 15_060), 2, 0.5);
    // Real sensitive attributes: their balance is the census's, not 50/50.
    let train = Dataset::attribute_balance(&d.train);
    let names: Vec<&str> = d.attributes.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["sex", "race", "age"]);
    assert!((train[0] - 0.324).abs() < 0.005, "female fraction {}", train[0]);
    assert!((train[1] - 0.140).abs() < 0.005, "non-white fraction {}", train[1]);
    assert!((train[2] - 0.5).abs() < 0.02, "older-than-median fraction {}", train[2]);
    // Income above 50K: about a quarter of the rows.
    assert_eq!(d.class_counts(&d.train), vec![22_654, 7_508]);
    assert_eq!(d.class_counts(&d.test), vec![11_360, 3_700]);
    // Numeric columns standardised on the training split.
    let numeric = d.train.inputs.narrow(1, 0, 6);
    let mean = numeric.mean_dim(0, false, Kind::Float).abs().max().double_value(&[]);
    let std = numeric.std_dim(0, false, false);
    assert!(mean < 1e-4, "numeric means {mean}");
    assert!((std - 1.0).abs().max().double_value(&[]) < 1e-3);
    // One-hot blocks: every training row has exactly 8 ones among the categorical features.
    let ones = d.train.inputs.narrow(1, 6, 98).sum_dim_intlist(1, false, Kind::Float);
    assert_eq!(ones.eq(8.0).all().int64_value(&[]), 1);
}

#[test]
fn digits() {
    let d = load("digits");
    check(&d, image(1, 8, 8), (1_438, 359), 10, 0.05);
    assert_eq!(d.train.len() + d.test.len(), 1_797);
}

#[test]
fn lfw_crops() {
    let d = load("lfw-crops");
    check(&d, image(1, 25, 25), (160, 40), 2, 0.05);
    assert_eq!(d.class_counts(&d.train), vec![80, 80]);
}

#[test]
fn embedded_needs_no_data_folder() {
    let d = data::load("embedded", &PathBuf::from("/nonexistent")).unwrap();
    check(&d, image(1, 28, 28), (5_000, 1_000), 10, 0.05);
}

#[test]
fn catalog_reports_every_fetchable_dataset_as_fetched() {
    let dir = data_dir();
    for info in data::catalog(&dir).iter().filter(|i| i.fetchable) {
        assert!(info.fetched, "{} is not in {}; run `gradleak data fetch all`", info.name, dir.display());
        let d = load(&info.name);
        assert_eq!(Some(d.input_shape), info.input_shape, "{}", info.name);
        assert_eq!((Some(d.train.len()), Some(d.test.len())), (info.train_count, info.test_count), "{}", info.name);
        assert_eq!(d.attributes, info.attributes, "{}", info.name);
        assert_eq!(d.classes, info.classes, "{}", info.name);
    }
}

/// Every model family takes one SGD step on every real dataset whose input it fits (image models on images, the MLP
/// on everything): the loss is finite and every named layer's weights move.
#[test]
fn every_model_trains_a_step_on_every_dataset_it_fits() {
    use gradleak::models::{Arch, Forward, Model, ModelSpec};
    use tch::nn::OptimizerConfig;
    for name in ["embedded", "mnist", "fashion-mnist", "cifar-dogs-cats", "adult", "digits", "lfw-crops"] {
        let d = load(name);
        let idx = tch::Tensor::arange(8, (Kind::Int64, tch::Device::Cpu));
        let batch = d.train.select(&idx);
        for arch in Arch::ALL {
            if arch.needs_images() && !matches!(d.input_shape, InputShape::Image { .. }) {
                continue;
            }
            let mut spec = ModelSpec::new(arch, d.input_shape, d.num_classes());
            spec.width = 0.125; // a narrow AlexNet/VGG: the step, not the size, is under test
            let model = Model::new(&spec, 1).unwrap();
            let before: Vec<tch::Tensor> = model.layers().iter().map(|l| l.weight().copy()).collect();
            let mut opt = tch::nn::Sgd::default().build(&model.vs, 0.1).unwrap();
            let logits = model.forward(&batch.inputs, &mut Forward::train());
            let loss = Model::loss(&logits, &batch.labels);
            assert!(loss.double_value(&[]).is_finite(), "{arch} on {name}: loss");
            opt.backward_step(&loss);
            for (layer, w) in model.layers().iter().zip(&before) {
                assert!(!layer.weight().equal(w), "{arch} on {name}: {} did not move", layer.name);
            }
        }
    }
}
