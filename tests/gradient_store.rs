//! Shared updates, defences and the gradient store.

mod common;

use common::{image, quadrant_dataset};
use gradleak::defenses::{self, Defense, DefensePlan};
use gradleak::gradients::per_sample_gradients;
use gradleak::gradients::store::{self, GradientStore, Manifest};
use gradleak::gradients::updates::{compute_updates, SharedUpdates, UpdateConfig};
use gradleak::models::{Arch, Model, ModelSpec};
use gradleak::progress::Progress;
use gradleak::rng::{self, Stream};
use tch::{Kind, Tensor};

fn lenet5() -> (Model, gradleak::data::Dataset) {
    let data = quadrant_dataset(image(1, 16), 200, 50, 1);
    let model = Model::new(&ModelSpec::new(Arch::Lenet5, data.input_shape, data.num_classes()), 0).unwrap();
    (model, data)
}

fn rows_norm(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(gradleak::gradients::per_sample::row_norms(t)).unwrap()
}

#[test]
fn dp_clips_each_sample_over_all_layers_then_averages() {
    // Two layers, four samples with known gradients; no noise, so the update is the mean of the clipped gradients.
    let a = Tensor::from_slice(&[3.0f64, 0.0, 0.3, 0.0, 0.0, 0.0, 6.0, 8.0]).reshape([4, 2]);
    let b = Tensor::from_slice(&[4.0f64, 0.0, 0.4, 0.0]).reshape([4, 1]);
    // Sample norms over both layers: 5, 0.5, 0, 10.
    let plan = DefensePlan::new(&[Defense::Dp { clip: 1.0, noise_multiplier: 0.0 }]).unwrap();
    let update = defenses::aggregate(&[a, b], &plan, &mut rng::rng(0, Stream::UpdateNoise { update: 0 }));
    // Clipped: (0.6, 0 | 0.8), (0.3, 0 | 0.4) unchanged, zero, (0.6, 0.8 | 0).
    let expect_a = [(0.6 + 0.3 + 0.0 + 0.6) / 4.0, (0.0 + 0.0 + 0.0 + 0.8) / 4.0];
    let expect_b = [(0.8 + 0.4 + 0.0 + 0.0) / 4.0];
    let got_a = Vec::<f64>::try_from(&update[0]).unwrap();
    let got_b = Vec::<f64>::try_from(&update[1]).unwrap();
    for (g, e) in got_a.iter().chain(&got_b).zip(expect_a.iter().chain(&expect_b)) {
        assert!((g - e).abs() < 1e-12, "{g} vs {e}");
    }
}

#[test]
fn dp_noise_has_standard_deviation_sigma_clip_over_batch() {
    let batch = 4;
    let g = Tensor::zeros([batch, 20_000], (Kind::Double, tch::Device::Cpu));
    let plan = DefensePlan::new(&[Defense::Dp { clip: 2.0, noise_multiplier: 1.5 }]).unwrap();
    let update = defenses::aggregate(&[g], &plan, &mut rng::rng(3, Stream::UpdateNoise { update: 0 }));
    let std = update[0].std(true).double_value(&[]);
    let expected = 1.5 * 2.0 / batch as f64;
    // 20,000 draws: the sample std has relative standard error 1/sqrt(40,000) = 0.5%; allow 3%.
    assert!((std / expected - 1.0).abs() < 0.03, "std {std}, expected {expected}");
    let mean = update[0].mean(Kind::Double).double_value(&[]);
    assert!(mean.abs() < 4.0 * expected / (20_000f64).sqrt(), "noise is centred: {mean}");
}

#[test]
fn pruning_zeroes_the_smallest_fraction_and_keeps_the_largest() {
    let g = Tensor::from_slice(&[0.1f32, -5.0, 0.3, 2.0, -0.2, 1.0, 0.0, -3.0, 0.05, 4.0]);
    let pruned = defenses::prune(&g, 0.6);
    let values = Vec::<f32>::try_from(&pruned).unwrap();
    // Six of ten zeroed: 0, 0.05, 0.1, -0.2, 0.3 and 1.0; the four largest magnitudes stay.
    assert_eq!(values, vec![0.0, -5.0, 0.0, 2.0, 0.0, 0.0, 0.0, -3.0, 0.0, 4.0]);
    assert!(defenses::prune(&g, 0.0).equal(&g));
    assert_eq!(defenses::prune(&g, 1.0).count_nonzero(None::<i64>).int64_value(&[]), 0);
}

#[test]
fn quantization_uses_at_most_two_to_the_bits_levels_and_bounded_error() {
    tch::manual_seed(0);
    let g = Tensor::randn([10_000], (Kind::Float, tch::Device::Cpu));
    let scale = g.abs().max().double_value(&[]);
    for bits in [1u32, 2, 4, 8] {
        let q = defenses::quantize(&g, bits);
        let levels = q.unique_dim(0, true, false, false).0.size()[0];
        assert!(levels < (1 << bits) || (bits == 1 && levels <= 3), "{bits} bits: {levels} levels");
        let step = scale / ((1i64 << (bits - 1)) - 1).max(1) as f64;
        let err = (&q - &g).abs().max().double_value(&[]);
        assert!(err <= step / 2.0 + 1e-6, "{bits} bits: error {err} > half a step {}", step / 2.0);
    }
}

#[test]
fn the_sign_defence_keeps_each_sign_and_the_layers_mean_magnitude() {
    let g = Tensor::from_slice(&[0.5f64, -1.5, 0.0, 2.0]);
    // Mean magnitude 1.0: each entry becomes its sign (0 stays 0), and the L1 norm stays 4.
    assert_eq!(Vec::<f64>::try_from(&defenses::sign(&g)).unwrap(), vec![1.0, -1.0, 0.0, 1.0]);
    // Applied to the averaged update, layer by layer, after any noise.
    let per_sample =
        [Tensor::from_slice(&[1.0f64, -3.0, 2.0, 4.0]).view([2, 2]), Tensor::from_slice(&[0.2f64, -0.4]).view([2, 1])];
    let plan = DefensePlan::new(&["sign".parse::<Defense>().unwrap()]).unwrap();
    let update = defenses::aggregate(&per_sample, &plan, &mut rng::rng(0, Stream::UpdateNoise { update: 0 }));
    // Means: (1.5, 0.5), scale 1.0; and (-0.1), scale 0.1.
    assert_eq!(Vec::<f64>::try_from(&update[0]).unwrap(), vec![1.0, 1.0]);
    let second = Vec::<f64>::try_from(&update[1]).unwrap();
    assert!((second[0] + 0.1).abs() < 1e-15, "{second:?}");
}

#[test]
fn defences_parse_print_and_refuse_bad_values() {
    for text in
        ["dp:clip=1,sigma=1.1", "dropout:0.5", "prune:0.9", "quantize:8", "noise:0.01", "sign", "protect:conv1+fc3"]
    {
        let d: Defense = text.parse().unwrap();
        assert_eq!(d.to_string(), text);
    }
    let bad = [
        ("dp:clip=0,sigma=1", "C must be > 0"),
        ("dp:clip=1,sigma=-1", "sigma must be >= 0"),
        ("dp:sigma=1", "missing clip"),
        ("prune:1.5", "fraction must be in [0, 1]"),
        ("dropout:1", "rate must be in [0, 1)"),
        ("quantize:0", "bits must be in [1, 16]"),
        ("noise:abc", "must be a number"),
        ("shuffle:1", "unknown defence 'shuffle'"),
        ("sign:1", "sign takes no argument"),
    ];
    for (text, expected) in bad {
        let err = text.parse::<Defense>().unwrap_err().to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
    assert_eq!(defenses::describe(&[]), "none");
}

fn updates(model: &Model, data: &gradleak::data::Dataset, config: &UpdateConfig) -> SharedUpdates {
    compute_updates(model, &data.train, config, Progress::HIDDEN).unwrap()
}

#[test]
fn batch_one_updates_are_the_victims_own_gradients() {
    let (model, data) = lenet5();
    let config = UpdateConfig { num_updates: 40, seed: 5, ..Default::default() };
    let u = updates(&model, &data, &config);
    assert_eq!(u.num_updates(), 40);
    let victims = Vec::<i64>::try_from(&u.victim_index).unwrap();
    let distinct: std::collections::HashSet<_> = victims.iter().collect();
    assert_eq!(distinct.len(), 40, "victims are distinct");
    // The stored update of victim 7 is that sample's gradient.
    let i = 7;
    let x = data.train.inputs.get(victims[i]).unsqueeze(0);
    let y = data.train.labels.get(victims[i]).unsqueeze(0);
    let direct = per_sample_gradients(&model, &x, &y, false, false);
    for (l, layer) in u.layers.iter().enumerate() {
        let stored = layer.full.as_ref().unwrap().get(i as i64);
        assert!(stored.allclose(&direct[l].get(0), 1e-5, 1e-7, false), "{}", layer.name);
    }
    assert!(u.victim_label.equal(&data.train.labels.index_select(0, &u.victim_index)));
    // fc1 (16*4*4*120 + 120 = 30,840 parameters) is above the default sketch size: it also has a sketch.
    let fc1 = u.layers.iter().find(|l| l.name == "fc1").unwrap();
    assert_eq!(fc1.sketch.as_ref().unwrap().size(), vec![40, 4096]);
    assert!(u.layers.iter().find(|l| l.name == "conv1").unwrap().sketch.is_none());
}

#[test]
fn batched_updates_average_their_members_and_record_the_batch() {
    let (model, data) = lenet5();
    let config = UpdateConfig { num_updates: 10, batch_size: 8, seed: 2, ..Default::default() };
    let u = updates(&model, &data, &config);
    assert_eq!(u.batch_indices.size(), vec![10, 8]);
    for i in 0..10 {
        let members = Vec::<i64>::try_from(&u.batch_indices.get(i)).unwrap();
        let distinct: std::collections::HashSet<_> = members.iter().collect();
        assert_eq!(distinct.len(), 8, "batch members are distinct");
    }
    let idx = u.batch_indices.get(3);
    let direct = per_sample_gradients(
        &model,
        &data.train.inputs.index_select(0, &idx),
        &data.train.labels.index_select(0, &idx),
        false,
        false,
    );
    for (l, layer) in u.layers.iter().enumerate() {
        let mean = direct[l].mean_dim([0i64].as_slice(), false, Kind::Float);
        assert!(layer.full.as_ref().unwrap().get(3).allclose(&mean, 1e-5, 1e-7, false), "{}", layer.name);
    }
    let fraction = data.train.attributes.index_select(0, &idx).to_kind(Kind::Float).mean(Kind::Float);
    assert!((u.batch_attribute_fraction.double_value(&[3, 0]) - fraction.double_value(&[])).abs() < 1e-6);
}

#[test]
fn protected_layers_are_not_shared_and_dp_bounds_the_update_norm() {
    let (model, data) = lenet5();
    let config = UpdateConfig {
        num_updates: 12,
        batch_size: 4,
        defenses: vec![
            Defense::Protect { layers: vec!["fc3".into()] },
            Defense::Dp { clip: 0.5, noise_multiplier: 0.0 },
        ],
        ..Default::default()
    };
    let u = updates(&model, &data, &config);
    let names: Vec<_> = u.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv1", "conv2", "fc1", "fc2"]);
    assert_eq!(u.protected, ["fc3"]);
    // Without noise the update is an average of vectors of norm <= C over the shared layers.
    let all = Tensor::cat(&u.layers.iter().map(|l| l.full.as_ref().unwrap().shallow_clone()).collect::<Vec<_>>(), 1);
    for norm in rows_norm(&all) {
        assert!(norm <= 0.5 + 1e-6, "update norm {norm} exceeds C");
    }
    let err = compute_updates(
        &model,
        &data.train,
        &UpdateConfig {
            num_updates: 5,
            defenses: vec![Defense::Protect { layers: vec!["fc9".into()] }],
            ..Default::default()
        },
        Progress::HIDDEN,
    )
    .unwrap_err();
    assert!(err.to_string().contains("no layer 'fc9'") && err.to_string().contains("conv1, conv2, fc1"), "{err}");
}

#[test]
fn dropout_changes_updates_reproducibly() {
    let (model, data) = lenet5();
    let plain = updates(&model, &data, &UpdateConfig { num_updates: 8, seed: 4, ..Default::default() });
    let config =
        UpdateConfig { num_updates: 8, seed: 4, defenses: vec![Defense::Dropout { rate: 0.5 }], ..Default::default() };
    let a = updates(&model, &data, &config);
    let b = updates(&model, &data, &config);
    let fc1 = |u: &SharedUpdates| u.layers[2].full.as_ref().unwrap().shallow_clone();
    assert!(fc1(&a).equal(&fc1(&b)), "same seed, same dropout masks");
    assert!(!fc1(&a).allclose(&fc1(&plain), 1e-4, 1e-6, false), "dropout changes fc1's gradient");
}

#[test]
fn bad_update_requests_are_refused() {
    let (model, data) = lenet5();
    let cases = [
        (UpdateConfig { num_updates: 201, ..Default::default() }, "larger than the split (200 samples)"),
        (UpdateConfig { num_updates: 5, batch_size: 201, ..Default::default() }, "batch_size must be in [1, 200]"),
        (UpdateConfig { num_updates: 5, layers: Some(vec!["conv7".into()]), ..Default::default() }, "no layer 'conv7'"),
    ];
    for (config, expected) in cases {
        let err = compute_updates(&model, &data.train, &config, Progress::HIDDEN).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
    }
}

fn manifest_for(model: &Model, data: &gradleak::data::Dataset, config: &UpdateConfig, u: &SharedUpdates) -> Manifest {
    gradleak::gradients::manifest(model, data, "train", None, config, u, None)
}

#[test]
fn stores_round_trip_and_corruption_is_reported() {
    let (model, data) = lenet5();
    let config = UpdateConfig { num_updates: 20, batch_size: 2, seed: 9, ..Default::default() };
    let u = updates(&model, &data, &config);
    let manifest = manifest_for(&model, &data, &config, &u);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    store::write_store(&path, &manifest, &u, false).unwrap();
    let opened = GradientStore::open(&path).unwrap();
    assert_eq!(opened.manifest, manifest);
    for (a, b) in opened.updates.layers.iter().zip(&u.layers) {
        assert!(a.features().equal(b.features()), "{}", a.name);
    }
    assert!(opened.updates.batch_indices.equal(&u.batch_indices));
    assert!(opened.layer("fc7").unwrap_err().to_string().contains("it holds: conv1, conv2, fc1, fc2, fc3"));

    let again = store::write_store(&path, &manifest, &u, false).unwrap_err().to_string();
    assert!(again.contains("already holds a gradient store"), "{again}");

    // A manifest that promises more updates than the arrays hold.
    let mut wrong = manifest.clone();
    wrong.num_updates = 21;
    gradleak::io::write_json(&path.join(store::MANIFEST_FILE), &wrong).unwrap();
    let err = format!("{:#}", GradientStore::open(&path).unwrap_err());
    assert!(err.contains("gradients.safetensors") && err.contains("expects 21 rows"), "{err}");
    // Truncated arrays.
    gradleak::io::write_json(&path.join(store::MANIFEST_FILE), &manifest).unwrap();
    let bytes = std::fs::read(path.join(store::TENSORS_FILE)).unwrap();
    std::fs::write(path.join(store::TENSORS_FILE), &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", GradientStore::open(&path).unwrap_err());
    assert!(err.contains("not a readable safetensors"), "{err}");
    // Not a store.
    let err = format!("{:#}", GradientStore::open(dir.path()).unwrap_err());
    assert!(err.contains("is this a gradient store folder"), "{err}");
}
