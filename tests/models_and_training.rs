//! Models build for every input gradleak supports, expose stable layer names, save and load checkpoints, and train
//! reproducibly. Uses small synthetic data so it runs without fetched datasets.

mod common;

use common::{image, quadrant_dataset};
use gradleak::data::InputShape;
use gradleak::models::{Arch, DropoutSpec, Forward, Model, ModelSpec};
use gradleak::progress::Progress;
use gradleak::train::{self, SavedRun, TrainConfig};
use tch::{Kind, Tensor};

#[test]
fn every_architecture_builds_for_every_supported_input() {
    let inputs = [image(1, 28), image(3, 32), image(1, 8), image(1, 25)];
    for arch in Arch::ALL {
        for input in inputs {
            let mut spec = ModelSpec::new(arch, input, 10);
            spec.width = 0.25; // keep AlexNet/VGG small for the test
            let model = Model::new(&spec, 0).unwrap_or_else(|e| panic!("{arch} on {input}: {e:#}"));
            let logits = model.predict(&Tensor::rand(input.batch(3), (Kind::Float, tch::Device::Cpu)));
            assert_eq!(logits.size(), vec![3, 10], "{arch} on {input}");
            let infos = model.layer_infos();
            let names: std::collections::HashSet<_> = infos.iter().map(|l| l.name.clone()).collect();
            assert_eq!(names.len(), infos.len(), "{arch}: layer names are unique");
            let total: i64 = model.vs.variables().values().map(|t| t.numel() as i64).sum();
            assert_eq!(total, model.num_params(), "{arch}: named layers hold every parameter");
        }
    }
    let mlp = Model::new(&ModelSpec::new(Arch::Mlp, InputShape::Tabular { features: 104 }, 2), 0).unwrap();
    assert_eq!(mlp.predict(&Tensor::zeros([5, 104], (Kind::Float, tch::Device::Cpu))).size(), vec![5, 2]);
}

#[test]
fn layer_names_are_stable_and_readable() {
    let names = |arch, input| -> Vec<String> {
        Model::new(&ModelSpec::new(arch, input, 10), 0).unwrap().layer_infos().into_iter().map(|l| l.name).collect()
    };
    assert_eq!(names(Arch::Lenet, image(1, 28)), ["conv1", "conv2", "conv3", "fc"]);
    assert_eq!(names(Arch::Lenet5, image(1, 28)), ["conv1", "conv2", "fc1", "fc2", "fc3"]);
    let resnet = names(Arch::Resnet20, image(3, 32));
    assert_eq!(resnet.len(), 1 + 1 + 9 * 4 + 2 * 2 + 1);
    for n in ["conv1", "norm1", "layer1.0.conv1", "layer2.0.shortcut.conv", "layer3.2.norm2", "fc"] {
        assert!(resnet.contains(&n.to_string()), "resnet20 has {n}");
    }
    assert_eq!(names(Arch::Resnet18, image(3, 32)).len(), 1 + 1 + 8 * 4 + 3 * 2 + 1);
    assert_eq!(names(Arch::Vgg11, image(3, 32)).len(), 8 + 3);
    // A layer's gradient is weight then bias: both exist under the layer's name in the VarStore.
    let model = Model::new(&ModelSpec::new(Arch::Resnet20, image(3, 32), 10), 0).unwrap();
    let vars = model.vs.variables();
    assert!(vars.contains_key("layer2.0.shortcut.conv.weight") && vars.contains_key("layer2.0.shortcut.conv.bias"));
}

#[test]
fn bad_model_configurations_are_clear_errors() {
    let tabular = InputShape::Tabular { features: 10 };
    let err = Model::new(&ModelSpec::new(Arch::Lenet, tabular, 2), 0).unwrap_err().to_string();
    assert!(err.contains("needs image inputs") && err.contains("use mlp"), "{err}");
    let mut spec = ModelSpec::new(Arch::Lenet5, image(1, 28), 10);
    spec.dropout = DropoutSpec { rate: 0.5, at: vec!["conv9".into()] };
    let err = format!("{:#}", Model::new(&spec, 0).unwrap_err());
    assert!(err.contains("'conv9'") && err.contains("fc1, fc2, fc3"), "{err}");
    spec.dropout = DropoutSpec { rate: 1.5, at: vec![] };
    assert!(Model::new(&spec, 0).unwrap_err().to_string().contains("dropout must be in [0, 1)"));
    assert!("resnet99".parse::<Arch>().unwrap_err().to_string().contains("lenet, lenet5"));
    let model = Model::new(&ModelSpec::new(Arch::Lenet5, image(1, 28), 10), 0).unwrap();
    assert!(model.layer_index("fc9").unwrap_err().to_string().contains("conv1, conv2, fc1, fc2, fc3"));
}

#[test]
fn dropout_acts_only_in_training_mode_and_where_asked() {
    let mut spec = ModelSpec::new(Arch::Mlp, InputShape::Tabular { features: 20 }, 3);
    spec.dropout = DropoutSpec { rate: 0.5, at: vec!["fc2".into()] };
    let model = Model::new(&spec, 0).unwrap();
    let x = Tensor::rand([64, 20], (Kind::Float, tch::Device::Cpu));
    let eval_a = model.predict(&x);
    let eval_b = model.predict(&x);
    assert!(eval_a.equal(&eval_b), "evaluation is deterministic");
    let train_a = tch::no_grad(|| model.forward(&x, &mut Forward::train()));
    assert!(!train_a.allclose(&eval_a, 1e-6, 1e-6, false), "dropout changes the training-mode output");
}

#[test]
fn checkpoints_round_trip_and_mismatches_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let a = Model::new(&ModelSpec::new(Arch::Lenet5, image(1, 28), 10), 1).unwrap();
    a.save_weights(&path).unwrap();
    let mut b = Model::new(&ModelSpec::new(Arch::Lenet5, image(1, 28), 10), 2).unwrap();
    assert!(!a.vs.variables()["conv1.weight"].equal(&b.vs.variables()["conv1.weight"]), "seeds give weights");
    b.load_weights(&path).unwrap();
    let x = Tensor::rand([2, 1, 28, 28], (Kind::Float, tch::Device::Cpu));
    assert!(a.predict(&x).equal(&b.predict(&x)));
    // Same architecture, other input: shapes differ.
    let mut c = Model::new(&ModelSpec::new(Arch::Lenet5, image(3, 32), 10), 0).unwrap();
    let err = format!("{:#}", c.load_weights(&path).unwrap_err());
    assert!(err.contains("w.safetensors") && err.contains("conv1.weight") && err.contains("expects"), "{err}");
    // Another architecture: names differ.
    let mut d = Model::new(&ModelSpec::new(Arch::Mlp, InputShape::Tabular { features: 784 }, 10), 0).unwrap();
    assert!(
        format!("{:#}", d.load_weights(&path).unwrap_err()).contains("'conv1.bias' is not a parameter of model mlp")
    );
    // Not a checkpoint at all.
    std::fs::write(dir.path().join("junk.safetensors"), b"garbage").unwrap();
    let err = format!("{:#}", d.load_weights(&dir.path().join("junk.safetensors")).unwrap_err());
    assert!(err.contains("junk.safetensors") && err.contains("not a readable safetensors"), "{err}");
}

#[test]
fn training_learns_saves_every_epoch_and_is_reproducible() {
    let data = quadrant_dataset(image(1, 16), 512, 256, 7);
    let spec = ModelSpec::new(Arch::Lenet5, data.input_shape, data.num_classes());
    let config = TrainConfig { epochs: 2, batch_size: 32, seed: 11, ..Default::default() };
    let dir_a = tempfile::tempdir().unwrap();
    let mut model_a = train::init_model(&spec, config.seed).unwrap();
    let run = train::train(&mut model_a, &data, &config, Some(dir_a.path()), Progress::HIDDEN).unwrap();
    assert_eq!(run.epochs.len(), 3, "epoch 0 (initialisation) plus two epochs");
    assert!(run.final_test_accuracy() > 0.9, "learns the quadrants: {:?}", run.epochs);
    assert!(run.epochs[0].test_accuracy < 0.5, "the initialisation does not know them");
    for e in 0..=2 {
        assert!(dir_a.path().join(train::checkpoint_name(e)).is_file());
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir_a.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary files left: {leftovers:?}");

    // Same seed, same weights, bit for bit; the saved run reloads to the same model.
    let mut model_b = train::init_model(&spec, config.seed).unwrap();
    train::train(&mut model_b, &data, &config, None, Progress::HIDDEN).unwrap();
    let (va, vb) = (model_a.vs.variables(), model_b.vs.variables());
    for (name, t) in &va {
        assert!(t.equal(&vb[name]), "{name} differs between two runs with the same seed");
    }
    let saved = SavedRun::open(dir_a.path()).unwrap();
    assert_eq!(saved.run, run);
    let reloaded = saved.model_at(2).unwrap();
    let x = data.test.inputs.narrow(0, 0, 8);
    assert!(reloaded.predict(&x).equal(&model_a.predict(&x)));
    assert!(saved.model_at(9).unwrap_err().to_string().contains("saved epochs: 0, 1, 2"));

    // Another seed, other weights.
    let mut model_c = train::init_model(&spec, 12).unwrap();
    train::train(&mut model_c, &data, &TrainConfig { seed: 12, ..config.clone() }, None, Progress::HIDDEN).unwrap();
    assert!(!model_c.vs.variables()["fc3.weight"].equal(&va["fc3.weight"]));
}

#[test]
fn out_of_range_hyperparameters_are_refused() {
    let data = quadrant_dataset(image(1, 8), 64, 16, 3);
    let spec = ModelSpec::new(Arch::Mlp, data.input_shape, data.num_classes());
    let cases = [
        (TrainConfig { epochs: 0, ..Default::default() }, "epochs must be in [1, 10000]"),
        (TrainConfig { batch_size: 65, ..Default::default() }, "batch_size must be in [1, 64]"),
        (TrainConfig { learning_rate: -1.0, ..Default::default() }, "learning_rate must be in (0, 10]"),
        (TrainConfig { learning_rate: f64::NAN, ..Default::default() }, "learning_rate must be in (0, 10]"),
        (TrainConfig { momentum: 1.0, ..Default::default() }, "momentum must be in [0, 1)"),
    ];
    for (config, expected) in cases {
        let mut model = Model::new(&spec, 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = train::train(&mut model, &data, &config, Some(dir.path()), Progress::HIDDEN).unwrap_err();
        assert!(err.to_string().contains(expected), "{err} should mention {expected}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing written on refusal");
    }
}

#[test]
fn training_with_dropout_is_reproducible_even_beside_other_threads() {
    let data = quadrant_dataset(image(1, 8), 256, 32, 4);
    let mut spec = ModelSpec::new(Arch::Lenet5, data.input_shape, data.num_classes());
    spec.dropout = DropoutSpec { rate: 0.3, at: vec![] };
    let config = TrainConfig { epochs: 1, batch_size: 16, seed: 21, ..Default::default() };
    // Another thread drawing from libtorch's global generator must not change our dropout masks.
    let noise = std::thread::spawn(|| {
        for _ in 0..200 {
            let _ = Tensor::rand([64], (Kind::Float, tch::Device::Cpu));
        }
    });
    let weights = || {
        let mut model = train::init_model(&spec, config.seed).unwrap();
        train::train(&mut model, &data, &config, None, Progress::HIDDEN).unwrap();
        model.vs.variables()["fc2.weight"].copy()
    };
    let (a, b) = (weights(), weights());
    noise.join().unwrap();
    assert!(a.equal(&b), "same seed, same dropout masks, same weights");
}

#[test]
fn a_model_with_other_dropout_keeps_its_weights_and_precision() {
    let mut model = Model::new(&ModelSpec::new(Arch::Mlp, InputShape::Tabular { features: 6 }, 3), 5).unwrap();
    model.to_double();
    let dropped = model.with_dropout(0.5).unwrap();
    assert_eq!(dropped.kind(), Kind::Double);
    assert_eq!(dropped.spec.dropout.rate, 0.5);
    let x = Tensor::rand([4, 6], (Kind::Double, tch::Device::Cpu));
    assert!(dropped.predict(&x).equal(&model.predict(&x)), "same weights: evaluation ignores dropout");
}
