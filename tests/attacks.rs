//! Reference attacks on real MNIST images: DLG recovers an image from the sigmoid LeNet's gradient and fails when
//! the informative layers are protected or the update is noised; iDLG's label rule; Inverting Gradients; batches;
//! layer subsets; bad input. MNIST is read from the data folder (`$GRADLEAK_DATA`, default `data` in the crate
//! root); run `gradleak data fetch mnist` first: a missing dataset fails with the command to run.

use std::path::PathBuf;
use std::sync::OnceLock;

use gradleak::data::{self, Split};
use gradleak::gradients::batch_gradients;
use gradleak::measure::attacks::{self, objective, AttackConfig, LabelMode, LabelSource, Method, ShareConfig};
use gradleak::models::{Arch, Model, ModelSpec};
use gradleak::progress::Progress;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

fn data_dir() -> PathBuf {
    match std::env::var_os("GRADLEAK_DATA") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data"),
    }
}

/// The first 200 MNIST test images and labels, loaded once (tensors are not shareable across test threads, so the
/// values are cached). Also sets this test thread to one libtorch thread: attacks are long chains of small
/// operations, and intra-op threads only add synchronisation (many times slower on a busy machine).
fn mnist() -> Split {
    tch::set_num_threads(1);
    static CACHE: OnceLock<(Vec<f32>, Vec<i64>)> = OnceLock::new();
    let (pixels, labels) = CACHE.get_or_init(|| {
        let dir = data_dir();
        let d = data::load("mnist", &dir).unwrap_or_else(|e| {
            panic!("MNIST could not be loaded from {}: {e:#}\n(run `gradleak data fetch mnist` first)", dir.display())
        });
        let first = d.test.select(&Tensor::arange(200, (Kind::Int64, tch::Device::Cpu)));
        let pixels = Vec::<f32>::try_from(first.inputs.flatten(0, -1)).unwrap();
        let labels = Vec::<i64>::try_from(&first.labels).unwrap();
        (pixels, labels)
    });
    let n = labels.len() as i64;
    Split::new(
        Tensor::from_slice(pixels).reshape([n, 1, 28, 28]),
        Tensor::from_slice(labels),
        Tensor::zeros([n, 1], (Kind::Int64, tch::Device::Cpu)),
    )
}

fn spec(arch: Arch) -> ModelSpec {
    ModelSpec::new(arch, data::InputShape::Image { channels: 1, height: 28, width: 28 }, 10)
}

/// The DLG paper's setting: sigmoid LeNet in double precision, weights and biases uniform(-0.5, 0.5).
fn dlg_lenet(seed: u64) -> Model {
    let mut model = Model::new(&spec(Arch::Lenet), seed).unwrap();
    model.to_double();
    attacks::reinit_uniform(&model, 0.5, seed).unwrap();
    model
}

fn config(method: Method, iterations: usize) -> AttackConfig {
    AttackConfig { iterations, ..AttackConfig::new(method) }
}

fn share(samples: i64, batch_size: i64, defenses: &[&str]) -> ShareConfig {
    ShareConfig { samples, batch_size, defenses: defenses.iter().map(|d| d.parse().unwrap()).collect() }
}

fn attack(model: &Model, share: &ShareConfig, config: &AttackConfig) -> attacks::AttackReport {
    attacks::run_attacks(model, &mnist(), share, config, Progress::HIDDEN).unwrap()
}

#[test]
fn dlg_recovers_a_single_image_and_fails_without_the_informative_layers() {
    let model = dlg_lenet(0);
    let cfg = config(Method::Dlg, 200);
    let open = attack(&model, &share(1, 1, &[]), &cfg);
    let s = &open.updates[0].images[0];
    assert!(open.mean.psnr > 30.0, "DLG PSNR {:.2} dB (MSE {:.2e})", open.mean.psnr, s.mse);
    assert!(s.ssim.unwrap() > 0.95, "SSIM {:?}", s.ssim);
    assert!(s.label_correct, "label {} recovered as {}", s.label, s.recovered_label);
    assert_eq!(open.label_source, LabelSource::Optimized);
    assert!(open.warnings.is_empty(), "{:?}", open.warnings);
    let names: Vec<&str> = open.matched_layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv1", "conv2", "conv3", "fc"]);

    // Only conv1 shared: 312 gradient values for 784 pixels. The gradient is matched, the image is not recovered.
    let protected = attack(&model, &share(1, 1, &["protect:conv2+conv3+fc"]), &cfg);
    assert_eq!(protected.protected, ["conv2", "conv3", "fc"]);
    let names: Vec<&str> = protected.matched_layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv1"]);
    assert!(protected.mean.psnr < 15.0, "PSNR with only conv1 shared: {:.2} dB", protected.mean.psnr);
    // The same victim (same seed), so the comparison is between defences, not images.
    assert_eq!(protected.updates[0].indices, open.updates[0].indices);

    // Strong Gaussian noise on every shared coordinate.
    let noised = attack(&model, &share(1, 1, &["noise:0.1"]), &cfg);
    assert!(noised.mean.psnr < 15.0, "PSNR under noise 0.1: {:.2} dB", noised.mean.psnr);
    eprintln!(
        "DLG PSNR: open {:.2} dB, only conv1 shared {:.2} dB, noise 0.1 {:.2} dB",
        open.mean.psnr, protected.mean.psnr, noised.mean.psnr
    );
    assert_eq!(noised.defense, "noise:0.1");
}

#[test]
fn idlg_label_is_right_for_twenty_single_images() {
    // The rule only reads the last layer's gradient; one iteration keeps the test fast. Three models: DLG's
    // uniform initialisation, PyTorch's default initialisation, and the ReLU LeNet-5.
    let mut relu = Model::new(&spec(Arch::Lenet5), 3).unwrap();
    relu.to_double();
    let mut default = Model::new(&spec(Arch::Lenet), 2).unwrap();
    default.to_double();
    for (name, model) in [("lenet uniform", dlg_lenet(1)), ("lenet default", default), ("lenet5", relu)] {
        let report = attack(&model, &share(20, 1, &[]), &config(Method::Idlg, 1));
        assert_eq!(report.label_source, LabelSource::Inferred);
        let images: Vec<_> = report.updates.iter().flat_map(|u| &u.images).collect();
        assert_eq!(images.len(), 20);
        let wrong: Vec<_> = images.iter().filter(|s| !s.label_correct).map(|s| (s.label, s.recovered_label)).collect();
        assert!(wrong.is_empty(), "{name}: wrong labels (true, inferred): {wrong:?}");
        assert_eq!(report.mean.label_accuracy, 1.0);
        // Ten classes among the 20 victims would be a coincidence; the test must cover several.
        let mut classes: Vec<i64> = images.iter().map(|s| s.label).collect();
        classes.sort();
        classes.dedup();
        assert!(classes.len() >= 5, "{classes:?}");
    }
}

#[test]
fn idlg_recovers_the_image_with_the_inferred_label() {
    let report = attack(&dlg_lenet(4), &share(1, 1, &[]), &config(Method::Idlg, 300));
    assert!(report.mean.psnr > 30.0, "iDLG PSNR {:.2} dB", report.mean.psnr);
    eprintln!("iDLG PSNR {:.2} dB", report.mean.psnr);
    assert_eq!(report.mean.label_accuracy, 1.0);
}

#[test]
fn inverting_gradients_recovers_an_image() {
    // Signed Adam converges more slowly than L-BFGS on this small network: 800 steps (the paper uses 4800-24000).
    let report = attack(&dlg_lenet(0), &share(1, 1, &[]), &config(Method::Ig, 800));
    assert!(report.mean.psnr > 30.0, "IG PSNR {:.2} dB", report.mean.psnr);
    eprintln!("IG PSNR {:.2} dB, SSIM {:?}", report.mean.psnr, report.mean.ssim);
    assert_eq!(report.label_source, LabelSource::Inferred);
    assert_eq!(report.mean.label_accuracy, 1.0);
    // No check that the pixels lie in [0, 1]: `reconstruct` clamps its output, so such a check could not fail.
}

#[test]
fn restarts_keep_the_best_gradient_match() {
    for (method, iterations) in [(Method::Ig, 30), (Method::Dlg, 10)] {
        let cfg = AttackConfig { restarts: 3, ..config(method, iterations) };
        let report = attack(&dlg_lenet(5), &share(1, 1, &[]), &cfg);
        let u = &report.updates[0];
        assert_eq!(u.restart_distances.len(), 3);
        let best = u.restart_distances.iter().cloned().fold(f64::INFINITY, f64::min);
        assert_eq!(u.gradient_distance, best, "{method}: {:?}", u.restart_distances);
        // Restarts start from different points.
        assert!(u.restart_distances[0] != u.restart_distances[1], "{:?}", u.restart_distances);
        if method == Method::Ig {
            assert_eq!(u.iterations, 90);
        }
    }
}

#[test]
fn batches_are_reconstructed_and_matched_by_assignment() {
    let report = attack(&dlg_lenet(6), &share(1, 2, &[]), &config(Method::Dlg, 300));
    let u = &report.updates[0];
    assert_eq!(u.indices.len(), 2);
    assert_eq!(u.images.len(), 2);
    let mut matched: Vec<usize> = u.images.iter().map(|s| s.reconstruction).collect();
    matched.sort();
    assert_eq!(matched, [0, 1], "each reconstruction is matched to one original");
    assert_eq!(report.reconstructions.size(), [2, 1, 28, 28]);
    assert!(report.mean.psnr > 20.0, "batch of 2: PSNR {:?}", u.images.iter().map(|s| s.psnr).collect::<Vec<_>>());
    assert_eq!(report.mean.label_accuracy, 1.0);
    eprintln!("DLG batch of 2: PSNR {:?}", u.images.iter().map(|s| s.psnr).collect::<Vec<_>>());
}

#[test]
fn scoring_matches_swapped_reconstructions() {
    let split = mnist();
    let originals = split.inputs.narrow(0, 0, 3);
    let labels = Vec::<i64>::try_from(&split.labels.narrow(0, 0, 3)).unwrap();
    // Reconstructions in the order 2, 0, 1, slightly perturbed; labels follow the reconstructions.
    let order = Tensor::from_slice(&[2i64, 0, 1]);
    let recon = (originals.index_select(0, &order) + 0.01).clamp(0.0, 1.0);
    let found = vec![labels[2], labels[0], 7];
    let scores = attacks::score(&recon, &found, &originals, &labels, 1.0).unwrap();
    let pairs: Vec<(usize, usize)> = scores.iter().map(|s| (s.original, s.reconstruction)).collect();
    assert_eq!(pairs, [(0, 1), (1, 2), (2, 0)]);
    assert!(scores.iter().all(|s| s.psnr > 35.0 && s.mse < 1e-4), "{scores:?}");
    assert!(scores[0].label_correct && scores[2].label_correct);
    assert_eq!(scores[1].label_correct, labels[1] == 7);
}

#[test]
fn layer_subsets_and_weights() {
    let model = dlg_lenet(7);
    let mut cfg = config(Method::Dlg, 5);
    cfg.layers = vec!["conv1".into(), "fc".into()];
    cfg.layer_weights = vec![1.0, 0.25];
    let report = attack(&model, &share(1, 1, &[]), &cfg);
    let got: Vec<(&str, f64)> = report.matched_layers.iter().map(|l| (l.name.as_str(), l.weight)).collect();
    assert_eq!(got, [("conv1", 1.0), ("fc", 0.25)]);

    // A protected layer cannot be matched.
    cfg.layer_weights.clear();
    let e = attacks::run_attacks(&model, &mnist(), &share(1, 1, &["protect:fc"]), &cfg, Progress::HIDDEN).unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("'fc' was not shared") && e.contains("conv1, conv2, conv3"), "{e}");
    // An unknown layer lists the model's layers.
    cfg.layers = vec!["conv9".into()];
    let e =
        format!("{:#}", attacks::run_attacks(&model, &mnist(), &share(1, 1, &[]), &cfg, Progress::HIDDEN).unwrap_err());
    assert!(e.contains("no layer 'conv9'") && e.contains("conv1, conv2, conv3, fc"), "{e}");
    // iDLG needs the last layer for its label; optimised or known labels work without it.
    let mut idlg = config(Method::Idlg, 2);
    idlg.layers = vec!["conv1".into()];
    let e = format!(
        "{:#}",
        attacks::run_attacks(&model, &mnist(), &share(1, 1, &[]), &idlg, Progress::HIDDEN).unwrap_err()
    );
    assert!(e.contains("last layer 'fc'") && e.contains("label mode 'optimize'"), "{e}");
    idlg.labels = LabelMode::Known;
    let report = attack(&model, &share(1, 1, &[]), &idlg);
    assert_eq!(report.label_source, LabelSource::Known);
    assert_eq!(report.mean.label_accuracy, 1.0);
    // Weights must fit the layers.
    let mut bad = config(Method::Dlg, 2);
    bad.layers = vec!["conv1".into()];
    bad.layer_weights = vec![1.0, 2.0];
    let e = bad.validate().unwrap_err().to_string();
    assert!(e.contains("2 layer weights for 1 listed layers"), "{e}");
}

/// The shared update of one image as the attacker receives it.
fn one_update(model: &Model) -> (Vec<(String, Tensor)>, Tensor) {
    let split = mnist();
    let x = split.inputs.narrow(0, 0, 1).to_kind(Kind::Double);
    let y = split.labels.narrow(0, 0, 1);
    let grads = batch_gradients(model, &x, &y, false, false);
    let shared = model.layers().iter().zip(grads).map(|(l, g)| (l.name.clone(), g.detach())).collect();
    (shared, y)
}

#[test]
fn bad_input_gives_clear_errors() {
    let model = dlg_lenet(8);
    let (shared, y) = one_update(&model);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let run = |shared: &[(String, Tensor)], cfg: &AttackConfig, rng: &mut ChaCha8Rng| {
        attacks::reconstruct(&model, shared, 1, cfg, Some(&y), rng, &mut || {}).map(|_| ())
    };
    let cfg = config(Method::Dlg, 3);
    assert!(run(&shared, &cfg, &mut rng).is_ok());

    // A layer whose size does not fit the model.
    let mut wrong = shared.iter().map(|(n, g)| (n.clone(), g.shallow_clone())).collect::<Vec<_>>();
    wrong[0].1 = wrong[0].1.narrow(0, 0, 300);
    let e = format!("{:#}", run(&wrong, &cfg, &mut rng).unwrap_err());
    assert!(e.contains("layer 'conv1' has 300 values") && e.contains("312 parameters"), "{e}");
    // A layer the model does not have.
    let mut renamed = shared.iter().map(|(n, g)| (n.clone(), g.shallow_clone())).collect::<Vec<_>>();
    renamed[3].0 = "classifier".into();
    let e = format!("{:#}", run(&renamed, &cfg, &mut rng).unwrap_err());
    assert!(e.contains("no layer 'classifier'"), "{e}");
    // Non-finite values.
    let mut nan = shared.iter().map(|(n, g)| (n.clone(), g.shallow_clone())).collect::<Vec<_>>();
    nan[1].1 = nan[1].1.full_like(f64::NAN);
    let e = format!("{:#}", run(&nan, &cfg, &mut rng).unwrap_err());
    assert!(e.contains("'conv2' holds NaN or infinite values"), "{e}");
    // Values so large the distance overflows: an error, not a panic or a silent NaN.
    let huge: Vec<_> = shared.iter().map(|(n, g)| (n.clone(), g * 1e200)).collect();
    let e = format!("{:#}", run(&huge, &cfg, &mut rng).unwrap_err());
    assert!(e.contains("not finite at the start"), "{e}");
    // Zero iterations or restarts.
    let e = run(&shared, &config(Method::Dlg, 0), &mut rng).unwrap_err().to_string();
    assert!(e.contains("number of iterations must be at least 1"), "{e}");
    let e = run(&shared, &AttackConfig { restarts: 0, ..cfg.clone() }, &mut rng).unwrap_err().to_string();
    assert!(e.contains("number of restarts must be at least 1"), "{e}");
    // Nothing shared.
    let e = run(&[], &cfg, &mut rng).unwrap_err().to_string();
    assert!(e.contains("no layer was shared"), "{e}");

    // Images of a size the model does not take.
    let small =
        Model::new(&ModelSpec::new(Arch::Lenet, data::InputShape::Image { channels: 1, height: 16, width: 16 }, 10), 0)
            .unwrap();
    let e =
        format!("{:#}", attacks::run_attacks(&small, &mnist(), &share(1, 1, &[]), &cfg, Progress::HIDDEN).unwrap_err());
    assert!(e.contains("model lenet takes 1x16x16 images"), "{e}");
    // More victims than images.
    let e = format!(
        "{:#}",
        attacks::run_attacks(&model, &mnist(), &share(201, 1, &[]), &cfg, Progress::HIDDEN).unwrap_err()
    );
    assert!(e.contains("201 shared updates requested, more than the split's 200 images"), "{e}");
    // A tabular model.
    let mlp = Model::new(&ModelSpec::new(Arch::Mlp, data::InputShape::Tabular { features: 784 }, 10), 0).unwrap();
    let e =
        format!("{:#}", attacks::run_attacks(&mlp, &mnist(), &share(1, 1, &[]), &cfg, Progress::HIDDEN).unwrap_err());
    assert!(e.contains("reconstruct images"), "{e}");
}

#[test]
fn soft_label_gradients_equal_batch_gradients_for_one_hot_targets() {
    let model = dlg_lenet(9);
    let split = mnist();
    let x = split.inputs.narrow(0, 0, 3).to_kind(Kind::Double);
    let y = split.labels.narrow(0, 0, 3);
    // Logits whose softmax is one-hot to double precision.
    let z = y.one_hot(10).to_kind(Kind::Double) * 200.0;
    let layers: Vec<usize> = (0..model.layers().len()).collect();
    let soft = objective::layer_gradients(&model, &x, &objective::DummyLabels::Soft(&z), &layers);
    let hard = objective::layer_gradients(&model, &x, &objective::DummyLabels::Hard(&y), &layers);
    let reference = batch_gradients(&model, &x, &y, false, false);
    for ((s, h), r) in soft.iter().zip(&hard).zip(&reference) {
        let scale = r.abs().max().double_value(&[]);
        assert!((s - r).abs().max().double_value(&[]) <= 1e-12 * scale.max(1.0));
        assert!((h - r).abs().max().double_value(&[]) <= 1e-12 * scale.max(1.0));
    }
}

#[test]
fn uniform_initialisation_is_seeded_and_bounded() {
    let a = dlg_lenet(11);
    let b = dlg_lenet(11);
    let c = dlg_lenet(12);
    for ((la, lb), lc) in a.layers().iter().zip(b.layers()).zip(c.layers()) {
        for ((pa, pb), pc) in la.tensors().zip(lb.tensors()).zip(lc.tensors()) {
            assert!(pa.equal(pb));
            assert!(!pa.equal(pc));
            assert!(pa.abs().max().double_value(&[]) <= 0.5);
            // Spread over the whole range, beyond PyTorch's default bound (1/sqrt(fan-in) <= 0.2 for every layer).
            assert!(pa.abs().max().double_value(&[]) > 0.25);
        }
    }
    assert!(attacks::reinit_uniform(&a, 0.0, 0).is_err());
}

#[test]
fn reports_are_reproducible_and_written() {
    let model = dlg_lenet(13);
    let cfg = config(Method::Dlg, 20);
    let r1 = attack(&model, &share(2, 1, &[]), &cfg);
    let r2 = attack(&model, &share(2, 1, &[]), &cfg);
    assert!(r1.reconstructions.equal(&r2.reconstructions));
    let d1: Vec<f64> = r1.updates.iter().map(|u| u.gradient_distance).collect();
    let d2: Vec<f64> = r2.updates.iter().map(|u| u.gradient_distance).collect();
    assert_eq!(d1, d2);
    let other = attack(&model, &share(2, 1, &[]), &AttackConfig { seed: 1, ..cfg.clone() });
    assert_ne!(other.updates[0].indices, r1.updates[0].indices, "the seed chooses the victims");

    let dir = tempfile::tempdir().unwrap();
    attacks::write_outputs(&r1, dir.path()).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("attack.json")).unwrap()).unwrap();
    assert_eq!(json["method"], "dlg");
    assert_eq!(json["updates"].as_array().unwrap().len(), 2);
    assert_eq!(json["mean"]["psnr"].as_f64(), Some(r1.mean.psnr));
    let psnr0 = json["updates"][0]["images"][0]["psnr"].as_f64().unwrap();
    assert_eq!(psnr0, r1.updates[0].images[0].psnr);
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(dir.path().join("reconstructions.png")).unwrap(),
    ));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    // Two 28x28 images upscaled x3 side by side, originals above reconstructions, 4-pixel gaps.
    assert_eq!((info.width, info.height), (2 * 84 + 3 * 4, 2 * 84 + 3 * 4));
    let tensors = Tensor::read_safetensors(dir.path().join("reconstructions.safetensors")).unwrap();
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"originals") && names.contains(&"reconstructions"), "{names:?}");
}

/// The shared update of each of the first `n` MNIST test images (batch size 1), and the images.
fn single_updates(model: &Model, n: i64) -> (Vec<Vec<(String, Tensor)>>, Tensor) {
    let split = mnist();
    let x = split.inputs.narrow(0, 0, n).to_kind(model.kind());
    let y = split.labels.narrow(0, 0, n);
    let grads = gradleak::gradients::per_sample::per_sample_gradients(model, &x, &y, false, false);
    let shared = (0..n)
        .map(|i| model.layers().iter().zip(&grads).map(|(l, g)| (l.name.clone(), g.get(i).detach())).collect())
        .collect();
    (shared, x)
}

#[test]
fn batched_inverting_gradients_takes_the_steps_of_the_one_at_a_time_loop() {
    for double in [false, true] {
        let mut model = Model::new(&spec(Arch::Lenet5), 4).unwrap();
        if double {
            model.to_double();
        }
        let (shared, _) = single_updates(&model, 4);
        let cfg = AttackConfig { restarts: 2, ..config(Method::Ig, 30) };
        let targets: Vec<attacks::AttackedUpdate> =
            shared.iter().map(|s| attacks::AttackedUpdate::new(&model, s, 1, None, &cfg).unwrap()).collect();
        let rngs = || -> Vec<ChaCha8Rng> {
            (0..4).map(|u| gradleak::rng::rng(7, gradleak::rng::Stream::AttackUpdate { update: u })).collect()
        };
        let mut calls = 0;
        let batched = attacks::batched_inverting_gradients(&targets, &mut rngs(), &mut || calls += 1).unwrap();
        let batched = batched.expect("single-sample updates with inferred labels are batched");
        assert_eq!(calls, 4 * 2 * 30, "progress is counted per victim, restart and iteration");
        let ig = attacks::InvertingGradients;
        let looped = attacks::reconstruct_each(&ig, &targets, &mut rngs(), &mut || {}).unwrap();
        for (i, (b, l)) in batched.iter().zip(&looped).enumerate() {
            let gap = (&b.inputs - &l.inputs).abs().max().double_value(&[]);
            assert!(gap < 1e-6, "double {double}, victim {i}: the reconstructions differ by {gap}");
            assert_eq!(b.labels, l.labels);
            assert_eq!(b.label_source, LabelSource::Inferred);
            for (db, dl) in b.restart_distances.iter().zip(&l.restart_distances) {
                assert!((db - dl).abs() < 1e-5, "double {double}, victim {i}: restart distances {db} vs {dl}");
            }
            assert_eq!((b.iterations, b.evaluations), (l.iterations, l.evaluations));
            let kept = b.restart_distances.iter().copied().fold(f64::MAX, f64::min);
            assert_eq!(b.gradient_distance, kept, "each victim keeps its best restart");
        }
        // The attack's own entry point gives the same reconstructions, whichever path it takes.
        let all = attacks::Attack::reconstruct_all(&ig, &targets, &mut rngs(), &mut || {}).unwrap();
        for (a, b) in all.iter().zip(&batched) {
            assert!((&a.inputs - &b.inputs).abs().max().double_value(&[]) < 1e-6);
        }
    }
    // Split over two workers (16 victims, 8 each), in both precisions: the loop's steps again, and progress is
    // still counted once per victim, restart and iteration.
    for double in [false, true] {
        let mut model = Model::new(&spec(Arch::Lenet5), 5).unwrap();
        if double {
            model.to_double();
        }
        let (shared, _) = single_updates(&model, 16);
        let cfg = config(Method::Ig, 12);
        let targets: Vec<attacks::AttackedUpdate> =
            shared.iter().map(|s| attacks::AttackedUpdate::new(&model, s, 1, None, &cfg).unwrap()).collect();
        let rngs = || -> Vec<ChaCha8Rng> {
            (0..16).map(|u| gradleak::rng::rng(3, gradleak::rng::Stream::AttackUpdate { update: u })).collect()
        };
        let ig = attacks::InvertingGradients;
        let looped = attacks::reconstruct_each(&ig, &targets, &mut rngs(), &mut || {}).unwrap();
        let mut calls = 0;
        let split = attacks::batched_inverting_gradients_on(2, &targets, &mut rngs(), &mut || calls += 1).unwrap();
        let split = split.expect("single-sample updates with inferred labels are batched");
        assert_eq!(calls, 16 * 12, "progress is counted per victim and iteration");
        assert_eq!(split.len(), 16);
        for (i, (b, l)) in split.iter().zip(&looped).enumerate() {
            let gap = (&b.inputs - &l.inputs).abs().max().double_value(&[]);
            assert!(gap < 1e-6, "double {double}, victim {i}: the reconstructions differ by {gap}");
            assert!((b.gradient_distance - l.gradient_distance).abs() < 1e-5, "double {double}, victim {i}");
            assert_eq!(b.labels, l.labels);
        }
    }
    // Optimised labels (no last layer matched: each victim's label logits are optimised with its dummy), on two
    // workers: the loop's steps and labels again.
    let model = Model::new(&spec(Arch::Lenet5), 4).unwrap();
    let (shared, _) = single_updates(&model, 16);
    let cfg = AttackConfig { layers: vec!["conv2".into(), "fc1".into()], restarts: 2, ..config(Method::Ig, 10) };
    let targets: Vec<attacks::AttackedUpdate> =
        shared.iter().map(|s| attacks::AttackedUpdate::new(&model, s, 1, None, &cfg).unwrap()).collect();
    let rngs = || -> Vec<ChaCha8Rng> { (0..16).map(ChaCha8Rng::seed_from_u64).collect() };
    let looped = attacks::reconstruct_each(&attacks::InvertingGradients, &targets, &mut rngs(), &mut || {}).unwrap();
    let batched = attacks::batched_inverting_gradients_on(2, &targets, &mut rngs(), &mut || {}).unwrap();
    let batched = batched.expect("single-sample updates with optimised labels are batched");
    for (i, (b, l)) in batched.iter().zip(&looped).enumerate() {
        let gap = (&b.inputs - &l.inputs).abs().max().double_value(&[]);
        assert!(gap < 1e-6, "optimised labels, victim {i}: the reconstructions differ by {gap}");
        assert!((b.gradient_distance - l.gradient_distance).abs() < 1e-5, "victim {i}");
        assert_eq!((&b.labels, b.label_source), (&l.labels, LabelSource::Optimized));
    }
    // Updates of batches are not batched (each needs a batch of dummies of its own).
    let (shared, _) = single_updates(&model, 4);
    let cfg = config(Method::Ig, 2);
    let targets: Vec<attacks::AttackedUpdate> =
        shared.chunks(2).map(|s| attacks::AttackedUpdate::new(&model, &s[0], 2, None, &cfg).unwrap()).collect();
    let mut rngs: Vec<ChaCha8Rng> = (0..2).map(ChaCha8Rng::seed_from_u64).collect();
    assert!(attacks::batched_inverting_gradients(&targets, &mut rngs, &mut || {}).unwrap().is_none());
}
