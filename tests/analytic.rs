//! Closed-form recovery of a fully connected layer's input: exact at batch size 1, refused at batch size > 1; the
//! batched formula the analytic family applies, the inversion of the layers below, and the family's calibration
//! against cases with a known answer.

mod common;

use common::{image, quadrant_dataset};
use gradleak::gradients::updates::{compute_updates, UpdateConfig};
use gradleak::measure::attacks::analytic::{
    invert_layer_input, layer_reads_the_input, linear_layer_input, linear_layer_inputs, Inversion,
};
use gradleak::measure::families::{AnalyticFeatures, FeatureSource};
use gradleak::measure::targets::TargetName;
use gradleak::measure::vinfo::{estimate, EstimateOptions, Predictor, Target};
use gradleak::models::{Arch, Forward, Model, ModelSpec};
use gradleak::progress::Progress;
use tch::{nn, nn::Module, Device, Kind, Tensor};

/// A two-layer network in f64; returns the first layer's weight and bias gradients for inputs `x` (B, 20) and
/// labels `y` (B,) under the mean cross-entropy.
fn first_layer_gradients(x: &Tensor, y: &Tensor) -> (Tensor, Tensor) {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let fc1 = nn::linear(vs.root() / "fc1", 20, 32, Default::default());
    let fc2 = nn::linear(vs.root() / "fc2", 32, 5, Default::default());
    let mut vs = vs;
    vs.double();
    let loss = fc2.forward(&fc1.forward(x).relu()).cross_entropy_for_logits(y);
    let grads = Tensor::run_backward(&[loss], &[&fc1.ws, fc1.bs.as_ref().unwrap()], false, false);
    (grads[0].shallow_clone(), grads[1].shallow_clone())
}

#[test]
fn a_linear_layers_input_is_recovered_exactly_from_one_samples_gradients() {
    tch::manual_seed(11);
    let x = Tensor::randn([1, 20], (Kind::Double, Device::Cpu));
    let y = Tensor::from_slice(&[2i64]);
    let (wg, bg) = first_layer_gradients(&x, &y);
    let r = linear_layer_input(&wg, &bg).unwrap();
    let error = (&r.input - x.squeeze_dim(0)).abs().max().double_value(&[]);
    assert!(error < 1e-5, "largest error {error}");
    assert!(r.residual < 1e-10, "residual {}", r.residual);
    // Also in f32, as shared updates are stored.
    let r32 = linear_layer_input(&wg.to_kind(Kind::Float), &bg.to_kind(Kind::Float)).unwrap();
    let error = (&r32.input - x.squeeze_dim(0)).abs().max().double_value(&[]);
    assert!(error < 1e-5, "f32: largest error {error}");
}

#[test]
fn a_batch_of_two_is_refused_with_the_reason_not_blended() {
    tch::manual_seed(12);
    let x = Tensor::randn([2, 20], (Kind::Double, Device::Cpu));
    let y = Tensor::from_slice(&[1i64, 4]);
    let (wg, bg) = first_layer_gradients(&x, &y);
    let err = linear_layer_input(&wg, &bg).unwrap_err().to_string();
    assert!(err.contains("not one outer product") && err.contains("several samples"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // A zero gradient and mismatched shapes are errors too, not NaNs.
    let zero = linear_layer_input(&wg.zeros_like(), &bg.zeros_like()).unwrap_err().to_string();
    assert!(zero.contains("zero"), "{zero}");
    let shapes = linear_layer_input(&wg, &bg.narrow(0, 0, 3)).unwrap_err().to_string();
    assert!(shapes.contains("expected"), "{shapes}");
}

#[test]
fn the_batched_formula_gives_each_updates_input_and_says_which_are_blends() {
    tch::manual_seed(13);
    let mut flat = Vec::new();
    let mut inputs = Vec::new();
    for i in 0..3i64 {
        let x = Tensor::randn([1, 20], (Kind::Double, Device::Cpu));
        let (wg, bg) = first_layer_gradients(&x, &Tensor::from_slice(&[i]));
        flat.push(Tensor::cat(&[wg.flatten(0, -1), bg], 0));
        inputs.push(x.squeeze_dim(0));
    }
    // A fourth update averages two samples.
    let x2 = Tensor::randn([2, 20], (Kind::Double, Device::Cpu));
    let (wg, bg) = first_layer_gradients(&x2, &Tensor::from_slice(&[0i64, 3]));
    flat.push(Tensor::cat(&[wg.flatten(0, -1), bg.shallow_clone()], 0));
    let (recovered, residuals) = linear_layer_inputs(&Tensor::stack(&flat, 0), 20, 32).unwrap();
    for (i, x) in inputs.iter().enumerate() {
        let error = (recovered.get(i as i64) - x).abs().max().double_value(&[]);
        assert!(error < 1e-10, "update {i}: largest error {error}");
        assert!(residuals[i] < 1e-10, "update {i}: residual {}", residuals[i]);
    }
    assert!(residuals[3] > 1e-2, "a blend of two samples has residual {}", residuals[3]);
    // Its input is still the least-squares formula, not refused (the analytic family calibrates what it is worth).
    let single = (wg.tr().matmul(&bg) / bg.square().sum(Kind::Double)).to_kind(Kind::Double);
    assert!((recovered.get(3) - single).abs().max().double_value(&[]) < 1e-10);
    let err = linear_layer_inputs(&Tensor::stack(&flat, 0), 21, 32).unwrap_err().to_string();
    assert!(err.contains("a linear layer 21 -> 32 has 704 gradient values, got 672"), "{err}");
}

fn lenet5(seed: i64) -> (Model, gradleak::data::Dataset) {
    let data = quadrant_dataset(image(1, 16), 200, 50, seed);
    let model = Model::new(&ModelSpec::new(Arch::Lenet5, data.input_shape, data.num_classes()), 0).unwrap();
    (model, data)
}

fn fc1_input(model: &Model, x: &Tensor) -> Tensor {
    let mut fwd = Forward::recording(false);
    tch::no_grad(|| {
        let _ = model.forward(x, &mut fwd);
    });
    let fc1 = model.layer_index("fc1").unwrap();
    fwd.records.unwrap().into_iter().find(|r| r.layer == fc1).unwrap().input.flatten(1, -1)
}

#[test]
fn inverting_the_layers_below_matches_their_activations_and_a_batch_equals_one_at_a_time() {
    let (model, data) = lenet5(2);
    let fc1 = model.layer_index("fc1").unwrap();
    assert!(!layer_reads_the_input(&model, fc1, &[1, 16, 16]).unwrap());
    let x = data.train.inputs.narrow(0, 0, 3);
    let target = fc1_input(&model, &x);
    let inversion = Inversion { iterations: 150, ..Inversion::default() };
    let together = invert_layer_input(&model, fc1, &target, &[1, 16, 16], &inversion).unwrap();
    let start = Tensor::full([3, 1, 16, 16], 0.5, (Kind::Float, Device::Cpu));
    let mismatch = |x: &Tensor| (fc1_input(&model, x) - &target).square().sum(Kind::Double).double_value(&[]);
    let (before, after) = (mismatch(&start), mismatch(&together));
    assert!(after < 0.05 * before, "activation mismatch {before} -> {after}");
    assert!(bool::try_from(together.ge(0.0).all().logical_and(&together.le(1.0).all())).unwrap(), "in the box");
    for i in 0..3 {
        let alone = invert_layer_input(&model, fc1, &target.narrow(0, i, 1), &[1, 16, 16], &inversion).unwrap();
        let gap = (alone - together.narrow(0, i, 1)).abs().max().double_value(&[]);
        assert!(gap < 1e-5, "sample {i}: batched and alone differ by {gap}");
    }
    // An MLP's first layer reads the input itself: nothing to invert.
    let mlp = Model::new(&ModelSpec::new(Arch::Mlp, data.input_shape, data.num_classes()), 0).unwrap();
    assert!(layer_reads_the_input(&mlp, 0, &[1, 16, 16]).unwrap());
    assert!(!layer_reads_the_input(&mlp, 1, &[1, 16, 16]).unwrap());
}

#[test]
fn the_calibration_measures_a_noisy_reconstruction_as_its_gaussian_channel_does() {
    // y ~ N(0, I_8); the reconstruction r = 3 y + 1 + 3 e (e ~ N(0, I)) carries 0.5 log2(1 + 9 / 9) = 0.5 bit per
    // dimension: 4 bits in all. An independent reconstruction carries none.
    tch::manual_seed(21);
    let n = 6000;
    let y = Tensor::randn([n, 8], (Kind::Double, Device::Cpu));
    let r = &y * 3.0 + 1.0 + Tensor::randn([n, 8], (Kind::Double, Device::Cpu)) * 3.0;
    let opts = EstimateOptions { bootstrap: 200, ..Default::default() };
    let e = estimate(&r, &Target::Continuous(y.shallow_clone()), &Predictor::Calibration, &opts).unwrap();
    assert!((e.bits - 4.0).abs() < 0.25, "{} bits [{}, {}]", e.bits, e.ci95[0], e.ci95[1]);
    assert!(e.ci95[0] < 4.0 + 0.1 && e.ci95[1] > 4.0 - 0.1, "{:?}", e.ci95);
    let noise = Tensor::randn([n, 8], (Kind::Double, Device::Cpu));
    let e = estimate(&noise, &Target::Continuous(y.shallow_clone()), &Predictor::Calibration, &opts).unwrap();
    assert!(e.bits.abs() < 0.05, "independent: {} bits", e.bits);
    // A reconstruction of another shape is an error that says what was expected.
    let err = estimate(&r.narrow(1, 0, 7), &Target::Continuous(y), &Predictor::Calibration, &opts).unwrap_err();
    assert!(format!("{err:#}").contains("7 values per sample but the target has 8"), "{err:#}");
}

#[test]
fn the_analytic_family_reads_the_label_and_the_input_from_single_sample_updates_and_not_from_dp_updates() {
    let (model, data) = lenet5(4);
    let layers: Vec<String> = model.layers().iter().map(|l| l.name.clone()).collect();
    let config = UpdateConfig { num_updates: 150, seed: 1, full_layers: layers.clone(), ..Default::default() };
    let updates = compute_updates(&model, &data.train, &config, Progress::HIDDEN).unwrap();
    let index = |name: &str| updates.layers.iter().position(|l| l.name == name).unwrap();
    let mut attacker = AnalyticFeatures::new(&model, &updates);
    // iDLG's rule on the last layer is exact at batch size 1.
    let label = attacker.features("fc3", &[index("fc3")], &TargetName::Label).unwrap().unwrap();
    assert_eq!(
        Vec::<i64>::try_from(label.argmax(1, false)).unwrap(),
        Vec::<i64>::try_from(&updates.victim_label).unwrap()
    );
    // Convolutions have no closed form; fc1 without the last layer has no label.
    assert!(attacker.features("conv1", &[index("conv1")], &TargetName::Input).unwrap().is_none());
    assert!(attacker.features("fc1", &[index("fc1")], &TargetName::Label).unwrap().is_none());
    let notes = attacker.notes().join("\n");
    assert!(notes.contains("conv1 / input") && notes.contains("fc1 / label"), "{notes}");
    // The input from fc1, calibrated, carries information about the victims' images.
    let input = attacker.features("fc1", &[index("fc1")], &TargetName::Input).unwrap().unwrap();
    assert_eq!(input.size(), [150, 256]);
    let target = Target::Continuous(updates.victim_input.flatten(1, -1));
    let opts = EstimateOptions { bootstrap: 200, ..Default::default() };
    let e = estimate(&input, &target, &Predictor::Calibration, &opts).unwrap();
    assert!(e.ci95[0] > 0.0, "fc1 input: {} bits [{}, {}]", e.bits, e.ci95[0], e.ci95[1]);
    assert!(attacker.notes()[0].contains("the input of fc1 recovered in closed form"), "{:?}", attacker.notes());

    // DP-SGD noise makes every update a blend the calibration finds nothing in.
    let dp =
        UpdateConfig { defenses: vec![gradleak::defenses::Defense::Dp { clip: 1.0, noise_multiplier: 1.0 }], ..config };
    let noised = compute_updates(&model, &data.train, &dp, Progress::HIDDEN).unwrap();
    let mut attacker = AnalyticFeatures::new(&model, &noised);
    let input = attacker.features("fc1", &[index("fc1")], &TargetName::Input).unwrap().unwrap();
    let e = estimate(&input, &target, &Predictor::Calibration, &opts).unwrap();
    assert!(e.bits < 1.0, "under DP: {} bits [{}, {}]", e.bits, e.ci95[0], e.ci95[1]);
}
