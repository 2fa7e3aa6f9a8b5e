//! Sensitivity analysis: second derivatives against finite differences, the Hutchinson estimator against the exact
//! Jacobian, a layer constructed to be insensitive, latent sensitivity on known groups, and bad input.

mod common;

use common::{image, quadrant_dataset};
use gradleak::data::InputShape;
use gradleak::defenses::Defense;
use gradleak::gradients::updates::{compute_updates, UpdateConfig};
use gradleak::measure::sensitivity::input::{finite_difference_jvp, Linearisation, SharedGradientFn};
use gradleak::measure::sensitivity::latent::latent_sensitivity_layer;
use gradleak::measure::sensitivity::{input_sensitivity, latent_sensitivity, InputSensitivityConfig, LatentConfig};
use gradleak::models::{Arch, Model, ModelSpec};
use gradleak::progress::Progress;
use tch::{Kind, Tensor};

fn f64_model(arch: Arch, input: InputShape, seed: u64) -> Model {
    let mut spec = ModelSpec::new(arch, input, 5);
    spec.hidden = 12;
    let mut model = Model::new(&spec, seed).unwrap();
    model.to_double();
    model
}

fn batch(input: InputShape, n: i64, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let x = Tensor::rand(input.batch(n), (Kind::Double, tch::Device::Cpu));
    let y = Tensor::randint(5, [n], (Kind::Int64, tch::Device::Cpu));
    (x, y)
}

fn relative_error(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).norm().double_value(&[]) / b.norm().double_value(&[]).max(1e-300)
}

/// J v by double backpropagation against central finite differences of the gradients, every layer.
fn check_jvp_against_finite_differences(arch: Arch, input: InputShape, defenses: &[Defense], tolerance: f64) {
    let model = f64_model(arch, input, 11);
    let (x, y) = batch(input, 3, 12);
    let f = SharedGradientFn::new(&model, None, defenses, false, 5).unwrap();
    let ids = [0u64, 1, 2];
    let map = |x: &Tensor| f.eval(x, &y, &ids);
    let lin = Linearisation::new(&map, &x).unwrap();
    tch::manual_seed(13);
    let v = Tensor::randn(x.size(), (Kind::Double, tch::Device::Cpu));
    let jv = lin.jvp(&v).unwrap();
    let fd = finite_difference_jvp(&map, &x, &v, 1e-5).unwrap();
    for ((a, b), name) in jv.iter().zip(&fd).zip(f.layer_names()) {
        assert!(b.norm().double_value(&[]) > 0.0, "{arch} {name}: the gradient moves with the input");
        let err = relative_error(a, b);
        assert!(err < tolerance, "{arch} {name} ({defenses:?}): J v relative error {err:e}");
    }
}

#[test]
fn jvp_matches_finite_differences_with_sigmoid_and_relu() {
    // Central differences with eps = 1e-5 in f64: truncation ~eps^2 * (third derivative), round-off ~1e-16 / eps.
    check_jvp_against_finite_differences(Arch::Lenet, image(1, 12), &[], 1e-6);
    check_jvp_against_finite_differences(Arch::Lenet5, image(1, 12), &[], 1e-6);
    check_jvp_against_finite_differences(Arch::Mlp, InputShape::Tabular { features: 7 }, &[], 1e-6);
}

#[test]
fn jvp_matches_finite_differences_through_differentiable_defences() {
    // Clipping to a norm below every sample's (so the clipping is active), DP and plain noise (constants per
    // sample id, identical at x + eps v and x - eps v), and pruning with its mask. The noise is kept of the order
    // of the clipped gradient: a much larger constant would drown the finite differences in round-off.
    let clip = Defense::Dp { clip: 1e-3, noise_multiplier: 0.1 };
    let defenses = [clip, Defense::Noise { std: 1e-4 }, Defense::Prune { fraction: 0.5 }];
    check_jvp_against_finite_differences(Arch::Lenet, image(1, 12), &defenses, 1e-6);
    check_jvp_against_finite_differences(Arch::Mlp, InputShape::Tabular { features: 7 }, &defenses, 1e-6);
}

#[test]
fn clipping_changes_the_jacobian_and_pruning_zeroes_its_rows() {
    let input = InputShape::Tabular { features: 6 };
    let model = f64_model(Arch::Mlp, input, 2);
    let (x, y) = batch(input, 2, 3);
    let ids = [0u64, 1];
    let jac = |defenses: &[Defense]| {
        let f = SharedGradientFn::new(&model, None, defenses, false, 0).unwrap();
        let map = |x: &Tensor| f.eval(x, &y, &ids);
        let lin = Linearisation::new(&map, &x).unwrap();
        (lin.jacobians().unwrap(), lin.values().iter().map(|t| t.shallow_clone()).collect::<Vec<_>>())
    };
    let (plain, _) = jac(&[]);
    let (pruned, values) = jac(&[Defense::Prune { fraction: 0.75 }]);
    for (j, (p, g)) in plain.iter().zip(pruned.iter().zip(&values)) {
        // Pruned entries (value 0) have zero Jacobian rows; kept entries keep the plain Jacobian's rows.
        let kept = g.ne(0.0).unsqueeze(2).to_kind(Kind::Double);
        assert!((p - j * &kept).abs().max().double_value(&[]) < 1e-12);
        let zero_rows = p.square().sum_dim_intlist([2i64].as_slice(), false, Kind::Double).eq(0.0);
        let count = zero_rows.sum(Kind::Int64).int64_value(&[]);
        let p_l = g.size()[1];
        assert!(count >= 2 * ((0.75 * p_l as f64).round() as i64), "{count} zero rows of {}", 2 * p_l);
    }
    // Clipping to C much smaller than the norm: g C / ||g||, whose Jacobian is (C / ||g||) (I - u u^T) J.
    let (clipped, clipped_values) = jac(&[Defense::Dp { clip: 1e-4, noise_multiplier: 0.0 }]);
    let (_, plain_values) = jac(&[]);
    let add = |a: Tensor, b: Tensor| a + b;
    let total = plain_values
        .iter()
        .map(|g| g.square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double))
        .reduce(add)
        .unwrap()
        .sqrt();
    let u: Vec<Tensor> = plain_values.iter().map(|g| g / total.unsqueeze(1)).collect();
    let jt_u = plain.iter().zip(&u).map(|(j, u)| u.unsqueeze(1).matmul(j).squeeze_dim(1)).reduce(add).unwrap();
    for (l, j) in plain.iter().enumerate() {
        let expected = (j - u[l].unsqueeze(2) * jt_u.unsqueeze(1)) * (total.reciprocal() * 1e-4).view([-1, 1, 1]);
        assert!(relative_error(&clipped[l], &expected) < 1e-9, "layer {l}");
        let norm = clipped_values[l].square().sum(Kind::Double).double_value(&[]);
        assert!(norm <= 2.0 * 1e-8 * 1.0001);
    }
}

#[test]
fn hutchinson_agrees_with_the_exact_jacobian_norm_within_its_error() {
    let input = InputShape::Tabular { features: 8 };
    let model = f64_model(Arch::Mlp, input, 4);
    let (x, y) = batch(input, 4, 5);
    let f = SharedGradientFn::new(&model, None, &[], false, 0).unwrap();
    let ids = [0u64, 1, 2, 3];
    let map = |x: &Tensor| f.eval(x, &y, &ids);
    let lin = Linearisation::new(&map, &x).unwrap();
    let exact = lin.exact_squared_norms().unwrap();
    // The exact norms agree with the full Jacobians.
    for (j, e) in lin.jacobians().unwrap().iter().zip(&exact) {
        let direct = j.square().sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Double);
        assert!(relative_error(&direct, e) < 1e-12);
    }
    let probes = 300;
    let samples = lin.hutchinson(probes, 9, &ids).unwrap();
    let mut worst: f64 = 0.0;
    for (q, e) in samples.iter().zip(&exact) {
        let mean = q.mean_dim([0i64].as_slice(), false, Kind::Double);
        let se = (q.var_dim([0i64].as_slice(), true, false) / probes as f64).sqrt();
        let z = ((&mean - e).abs() / se.clamp_min(1e-300)).max().double_value(&[]);
        worst = worst.max(z);
        // And the estimate is close in relative terms too (Rademacher probes have low variance).
        assert!(relative_error(&mean, e) < 0.15);
    }
    assert!(worst < 4.0, "Hutchinson off by {worst:.2} standard errors");

    // The same through the report: Hutchinson layer means within 4 estimator standard errors of the exact ones.
    let config = InputSensitivityConfig { probes: 200, train: false, bootstrap: 200, ..Default::default() };
    let hutch = input_sensitivity(&model, &x, &y, &config, Progress::HIDDEN).unwrap();
    let exact_config = InputSensitivityConfig { exact: true, ..config.clone() };
    let exact_report = input_sensitivity(&model, &x, &y, &exact_config, Progress::HIDDEN).unwrap();
    assert_eq!(exact_report.estimator, "exact");
    for (h, e) in hutch.layers.iter().zip(&exact_report.layers) {
        let se = h.jacobian_norm.estimator_se.unwrap();
        let gap = (h.jacobian_norm.value - e.jacobian_norm.value).abs();
        assert!(gap < 4.0 * se + 1e-12, "{}: gap {gap:e}, se {se:e}", h.name);
        assert!(e.jacobian_norm.estimator_se.is_none());
        let (lo, hi) = (e.jacobian_norm.ci[0], e.jacobian_norm.ci[1]);
        assert!(lo <= e.jacobian_norm.value && e.jacobian_norm.value <= hi);
        // Per parameter and relative follow from the norm.
        let pp = e.jacobian_norm.value / (e.num_params as f64).sqrt();
        assert!((e.per_parameter.value - pp).abs() < 1e-12 * pp.max(1.0));
    }
}

#[test]
fn a_layer_whose_gradient_ignores_the_input_ranks_last() {
    // MLP fc1 -> relu -> fc2 -> relu -> fc3. Hidden units 0..6 of fc1 read the input; units 6..12 have zero
    // weights and a positive bias (constant, active). fc2 reads only the constant units, so its output, and fc3's
    // input, is the same for every x: fc3's gradient does not depend on x. fc2's gradient (g2 x h1(x)) and fc1's
    // (g1 x x, with g1 constant and nonzero on the constant units) do.
    let input = InputShape::Tabular { features: 5 };
    let model = f64_model(Arch::Mlp, input, 7);
    tch::no_grad(|| {
        let fc1 = &model.layers()[0];
        let fc2 = &model.layers()[1];
        let _ = fc1.weight().narrow(0, 6, 6).fill_(0.0);
        let _ = fc1.bias().unwrap().narrow(0, 6, 6).fill_(0.5);
        let _ = fc2.weight().narrow(1, 0, 6).fill_(0.0);
    });
    let (x, y) = batch(input, 16, 8);
    let config = InputSensitivityConfig { probes: 8, train: false, bootstrap: 100, ..Default::default() };
    let report = input_sensitivity(&model, &x, &y, &config, Progress::HIDDEN).unwrap();
    let names: Vec<&str> = report.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["fc1", "fc2", "fc3"]);
    for column in ["jacobian_norm", "relative", "per_parameter"] {
        let values = report.column(column).unwrap();
        let mut order = values.clone();
        order.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(order.last().unwrap().0, "fc3", "{column}: {values:?}");
        assert_eq!(values[2].1, 0.0, "{column}: fc3 is exactly insensitive");
        assert!(values[0].1 > 1e-3 && values[1].1 > 1e-3, "{column}: {values:?}");
    }
    assert!(report.layers[2].gradient_norm.value > 0.0, "fc3's gradient is not zero, only constant");
}

#[test]
fn reports_are_reproducible_and_name_what_was_applied() {
    let input = image(1, 12);
    let model = Model::new(&ModelSpec::new(Arch::Lenet, input, 4), 1).unwrap();
    tch::manual_seed(2);
    let x = Tensor::rand(input.batch(5), (Kind::Float, tch::Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 3, 0]);
    let config = InputSensitivityConfig {
        probes: 4,
        chunk_size: Some(2),
        layers: Some(vec!["fc".into(), "conv1".into()]),
        defenses: vec![Defense::Quantize { bits: 4 }, Defense::Noise { std: 0.01 }],
        seed: 3,
        ..Default::default()
    };
    let a = input_sensitivity(&model, &x, &y, &config, Progress::HIDDEN).unwrap();
    let b = input_sensitivity(&model, &x, &y, &config, Progress::HIDDEN).unwrap();
    assert_eq!(a, b);
    let names: Vec<&str> = a.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv1", "fc"], "model order");
    assert_eq!(a.defenses.not_applied.len(), 1);
    assert!(
        a.defenses.not_applied[0].defense.starts_with("quantize") && a.defenses.not_applied[0].note.contains("zero")
    );
    assert_eq!(a.defenses.applied.len(), 1);
    // Hutchinson probes do not depend on the chunking.
    let one_chunk = InputSensitivityConfig { chunk_size: Some(5), defenses: vec![], ..config.clone() };
    let two_chunks = InputSensitivityConfig { chunk_size: Some(2), ..one_chunk.clone() };
    let c = input_sensitivity(&model, &x, &y, &one_chunk, Progress::HIDDEN).unwrap();
    let d = input_sensitivity(&model, &x, &y, &two_chunks, Progress::HIDDEN).unwrap();
    for (l, m) in c.layers.iter().zip(&d.layers) {
        for (p, q) in l.per_sample_jacobian_norm.iter().zip(&m.per_sample_jacobian_norm) {
            assert!((p - q).abs() <= 1e-4 * p.abs().max(1e-6), "{}: {p} vs {q}", l.name);
        }
    }
    // Another seed, other probes.
    let e =
        input_sensitivity(&model, &x, &y, &InputSensitivityConfig { seed: 4, ..one_chunk }, Progress::HIDDEN).unwrap();
    assert_ne!(c.layers[0].per_sample_jacobian_norm, e.layers[0].per_sample_jacobian_norm);
    // JSON round trip.
    let json = serde_json::to_string(&a).unwrap();
    assert!(json.contains("\"relative\"") && json.contains("\"not_applied\""));
}

#[test]
fn bad_input_gives_clear_errors() {
    let input = InputShape::Tabular { features: 4 };
    let model = f64_model(Arch::Mlp, input, 0);
    let (x, y) = batch(input, 3, 0);
    let config = InputSensitivityConfig { layers: Some(vec!["conv9".into()]), ..Default::default() };
    let err = input_sensitivity(&model, &x, &y, &config, Progress::HIDDEN).unwrap_err().to_string();
    assert!(err.contains("no layer 'conv9'") && err.contains("fc1, fc2, fc3"), "{err}");
    let config = InputSensitivityConfig { probes: 0, ..Default::default() };
    let err = input_sensitivity(&model, &x, &y, &config, Progress::HIDDEN).unwrap_err().to_string();
    assert!(err.contains("probes must be at least 1"), "{err}");
    let config = InputSensitivityConfig {
        defenses: vec![Defense::Protect { layers: vec!["fc1".into(), "fc2".into(), "fc3".into()] }],
        ..Default::default()
    };
    let err = input_sensitivity(&model, &x, &y, &config, Progress::HIDDEN).unwrap_err().to_string();
    assert!(err.contains("protected"), "{err}");

    let wrong_shape = Tensor::zeros([3, 5], (Kind::Double, tch::Device::Cpu));
    let err =
        input_sensitivity(&model, &wrong_shape, &y, &Default::default(), Progress::HIDDEN).unwrap_err().to_string();
    assert!(err.contains("expects inputs of shape [3, 4]"), "{err}");
    let float_labels = y.to_kind(Kind::Float);
    let err =
        input_sensitivity(&model, &x, &float_labels, &Default::default(), Progress::HIDDEN).unwrap_err().to_string();
    assert!(err.contains("class indices"), "{err}");

    // No differentiable path to the input: a map that detaches it, and one that returns constants.
    let f = SharedGradientFn::new(&model, None, &[], false, 0).unwrap();
    let ids = [0u64, 1, 2];
    let detached = |x: &Tensor| f.eval(&x.detach(), &y, &ids);
    let err = Linearisation::new(&detached, &x).err().expect("detached input is refused").to_string();
    assert!(err.contains("no differentiable path from the input"), "{err}");
    let constant = |_: &Tensor| Ok(vec![Tensor::ones([3, 4], (Kind::Double, tch::Device::Cpu))]);
    let err = Linearisation::new(&constant, &x).err().expect("constants are refused").to_string();
    assert!(err.contains("no differentiable path from the input"), "{err}");
}

/// Rows x = z A + noise with z ~ N(0, diag(scales)) in k latent dimensions spanned by the rows of `a`.
fn low_rank(n: i64, a: &Tensor, scales: &[f64], shift: f64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let k = a.size()[0];
    let d = a.size()[1];
    let z = Tensor::randn([n, k], (Kind::Double, tch::Device::Cpu)) * Tensor::from_slice(scales);
    z.matmul(a) + Tensor::randn([n, d], (Kind::Double, tch::Device::Cpu)) * 0.05 + shift
}

fn orthonormal_rows(k: i64, d: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let (q, _) = Tensor::linalg_qr(&Tensor::randn([d, k], (Kind::Double, tch::Device::Cpu)), "reduced");
    q.transpose(0, 1)
}

#[test]
fn latent_sensitivity_separates_different_groups_from_identical_ones() {
    let (d, k) = (40, 3);
    let a = orthonormal_rows(k, d, 1);
    let b = orthonormal_rows(k, d, 2);
    let scales = [3.0, 2.0, 1.0];
    let labels = Tensor::cat(
        &[Tensor::zeros([300], (Kind::Int64, tch::Device::Cpu)), Tensor::ones([200], (Kind::Int64, tch::Device::Cpu))],
        0,
    );
    let config = LatentConfig { k: 3, bootstrap: 100, permutations: 10, seed: 0 };
    // Same distribution.
    let same = Tensor::cat(&[low_rank(300, &a, &scales, 0.0, 3), low_rank(200, &a, &scales, 0.0, 4)], 0);
    let s = latent_sensitivity_layer("same", &same, "full", &labels, &config).unwrap();
    // Different principal subspaces and shifted mean.
    let diff = Tensor::cat(&[low_rank(300, &a, &scales, 0.0, 5), low_rank(200, &b, &scales, 1.0, 6)], 0);
    let t = latent_sensitivity_layer("different", &diff, "full", &labels, &config).unwrap();
    assert_eq!(s.group_sizes, [300, 200]);
    assert!(s.subspace_distance.value < 0.1, "same: {:?}", s.subspace_distance);
    assert!(t.subspace_distance.value > 0.8, "different: {:?}", t.subspace_distance);
    assert!(s.subspace_distance.ci[1] < t.subspace_distance.ci[0]);
    // The relabelling null is near the same-distribution distance and far below the different one.
    assert!(s.subspace_distance_null < 0.15 && t.subspace_distance_null < 0.6, "{s:?} {t:?}");
    assert!(t.subspace_distance.value > t.subspace_distance_null + 0.3);
    // Ratio: the same distribution stays near its null value 1/300 + 1/200 (about 0.0083); a mean shift of 1 in
    // every one of 40 coordinates (squared distance 40) over a total variance of 14 + 2 gives about 2.8.
    assert!((s.spread_ratio_null - (1.0 / 300.0 + 1.0 / 200.0)).abs() < 0.002, "{}", s.spread_ratio_null);
    assert!(s.spread_ratio.value < 4.0 * s.spread_ratio_null, "{:?}", s.spread_ratio);
    assert!(t.spread_ratio.value > 2.0, "{:?}", t.spread_ratio);
    assert!(s.principal_angles_degrees.iter().all(|a| *a < 10.0), "{:?}", s.principal_angles_degrees);
    assert_eq!(t.principal_angles_degrees.len(), 3);

    // Wide features (d > N) go through the Gram embedding and give the same numbers as padding with zeros would
    // not change: append 2000 zero columns.
    let wide = Tensor::cat(&[diff.shallow_clone(), Tensor::zeros([500, 2000], (Kind::Double, tch::Device::Cpu))], 1)
        .to_kind(Kind::Float);
    let w = latent_sensitivity_layer("wide", &wide, "sketch", &labels, &config).unwrap();
    assert!((w.subspace_distance.value - t.subspace_distance.value).abs() < 1e-4);
    assert!((w.spread_ratio.value / t.spread_ratio.value - 1.0).abs() < 1e-4);
    assert_eq!(w.dim, 2040);
}

#[test]
fn latent_sensitivity_refuses_empty_groups_and_large_k() {
    let x = Tensor::randn([10, 6], (Kind::Double, tch::Device::Cpu));
    let config = LatentConfig { k: 2, bootstrap: 10, permutations: 5, seed: 0 };
    let ones = Tensor::ones([10], (Kind::Int64, tch::Device::Cpu));
    let err = latent_sensitivity_layer("l", &x, "full", &ones, &config).unwrap_err().to_string();
    assert!(err.contains("group 0") && err.contains("empty"), "{err}");
    let labels = Tensor::from_slice(&[0i64, 0, 0, 0, 0, 0, 0, 1, 1, 1]);
    let big = LatentConfig { k: 3, ..config.clone() };
    let err = latent_sensitivity_layer("l", &x, "full", &labels, &big).unwrap_err().to_string();
    assert!(err.contains("k 3 is too large") && err.contains("smaller group has 3"), "{err}");
    let not_binary = Tensor::from_slice(&[0i64, 2, 0, 1, 0, 0, 0, 1, 1, 1]);
    let err = latent_sensitivity_layer("l", &x, "full", &not_binary, &config).unwrap_err().to_string();
    assert!(err.contains("binary"), "{err}");
    let _ = x.get(4).get(2).fill_(f64::NAN);
    let labels = Tensor::from_slice(&[0i64, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
    let err = latent_sensitivity_layer("l", &x, "full", &labels, &config).unwrap_err().to_string();
    assert!(err.contains("NaN"), "{err}");
}

#[test]
fn latent_sensitivity_on_shared_updates_and_a_store() {
    let data = quadrant_dataset(image(1, 12), 120, 10, 3);
    let model = Model::new(&ModelSpec::new(Arch::Lenet, data.input_shape, data.num_classes()), 0).unwrap();
    let config = UpdateConfig { num_updates: 100, sketch_dim: 256, ..Default::default() };
    let updates = compute_updates(&model, &data.train, &config, Progress::HIDDEN).unwrap();
    let latent = LatentConfig { k: 2, bootstrap: 20, permutations: 5, seed: 1 };
    let report = latent_sensitivity(&updates, 0, "right", None, &latent, Progress::HIDDEN).unwrap();
    assert_eq!(report.layers.len(), 4);
    let kinds: Vec<&str> = report.layers.iter().map(|l| l.features.as_str()).collect();
    // Every layer has more than 256 parameters (conv1: 312): stored in full and as a sketch, measured on the
    // sketch (a layer's features are its sketch when it has one).
    assert!(updates.layers.iter().all(|l| l.full.is_some() && l.sketch.is_some()));
    assert_eq!(kinds, ["sketch", "sketch", "sketch", "sketch"]);
    for l in &report.layers {
        assert_eq!(l.group_sizes[0] + l.group_sizes[1], 100);
        assert!((0.0..=1.0).contains(&l.subspace_distance.value));
        // The attribute is the label's parity, which drives the last layer's gradient: far above the null.
        assert!(l.spread_ratio.value.is_finite());
    }
    let fc = report.layers.last().unwrap();
    assert!(fc.spread_ratio.value > 5.0 * fc.spread_ratio_null, "{fc:?}");

    let dir = tempfile::tempdir().unwrap();
    let manifest = gradleak::gradients::manifest(&model, &data, "train", None, &config, &updates, None);
    gradleak::gradients::store::write_store(dir.path(), &manifest, &updates, false).unwrap();
    let store = gradleak::gradients::store::GradientStore::open(dir.path()).unwrap();
    let from_store = gradleak::measure::sensitivity::latent_sensitivity_of_store(
        &store,
        "right",
        Some(&["fc".to_string()]),
        &latent,
        Progress::HIDDEN,
    )
    .unwrap();
    assert_eq!(from_store.layers.len(), 1);
    // Same numbers, intervals included: resamples are keyed by the layer, not by what else is measured.
    assert_eq!(&from_store.layers[0], fc);
    let err =
        gradleak::measure::sensitivity::latent_sensitivity_of_store(&store, "colour", None, &latent, Progress::HIDDEN)
            .unwrap_err()
            .to_string();
    assert!(err.contains("no attribute 'colour'") && err.contains("right"), "{err}");
    let err = gradleak::measure::sensitivity::latent_sensitivity_of_store(
        &store,
        "right",
        Some(&["fc9".to_string()]),
        &latent,
        Progress::HIDDEN,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no layer 'fc9'") && err.contains("conv1"), "{err}");
}

/// dFIL = ||J||_F^2 / (s^2 d) (Guo et al. 2022) from the Hutchinson estimate against the exact Jacobian, f64, under
/// DP-SGD clipping (whose derivative enters J): every layer and all layers together within 5%.
#[test]
fn the_fisher_bound_from_hutchinson_agrees_with_the_exact_jacobian_within_five_percent() {
    use gradleak::measure::bounds::{fisher_bound, ReleaseNoise};
    let defenses = [Defense::Dp { clip: 1.0, noise_multiplier: 1.0 }];
    let noise = ReleaseNoise::of(&defenses, 1).unwrap().unwrap();
    assert_eq!(noise.std, 1.0);
    for (arch, input) in [(Arch::Mlp, InputShape::Tabular { features: 8 }), (Arch::Lenet, image(1, 12))] {
        let model = f64_model(arch, input, 3);
        let (x, y) = batch(input, 6, 8);
        let base =
            InputSensitivityConfig { defenses: defenses.to_vec(), train: false, bootstrap: 10, ..Default::default() };
        let hutch = input_sensitivity(
            &model,
            &x,
            &y,
            &InputSensitivityConfig { probes: 256, ..base.clone() },
            Progress::HIDDEN,
        )
        .unwrap();
        let exact =
            input_sensitivity(&model, &x, &y, &InputSensitivityConfig { exact: true, ..base }, Progress::HIDDEN)
                .unwrap();
        // Mean dFIL over the samples, per layer and for all layers (the sum of the layers' squared norms).
        let dfil = |report: &gradleak::measure::sensitivity::InputSensitivityReport, layer: Option<usize>| -> f64 {
            (0..report.samples as usize)
                .map(|n| {
                    let squared: f64 = report
                        .layers
                        .iter()
                        .enumerate()
                        .filter(|(l, _)| layer.is_none_or(|k| k == *l))
                        .map(|(_, l)| l.per_sample_jacobian_norm[n].powi(2))
                        .sum();
                    fisher_bound(squared, noise.std, report.input_dim).dfil
                })
                .sum::<f64>()
                / report.samples as f64
        };
        let layers = (0..exact.layers.len()).map(Some).chain([None]);
        for layer in layers {
            let (h, e) = (dfil(&hutch, layer), dfil(&exact, layer));
            assert!(e > 0.0, "{arch:?} {layer:?}: the exact dFIL is {e}");
            assert!((h / e - 1.0).abs() < 0.05, "{arch:?} layer {layer:?}: Hutchinson {h:e}, exact {e:e}");
        }
    }
}
