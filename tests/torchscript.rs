//! TorchScript models against PyTorch's own numbers: the fixtures in tests/fixtures/ were written by
//! scripts/export_example.py (a CNN with BatchNorm, a residual block and a convolution without bias, exported with
//! torch.jit.script and torch.jit.trace, and torch.func.vmap(torch.func.grad(...)) per-sample gradients), so these
//! tests need no Python.

use std::path::PathBuf;

use gradleak::data::{InputShape, Split};
use gradleak::gradients::per_sample_gradients;
use gradleak::measure::attacks::{self, AttackConfig, Method, ShareConfig};
use gradleak::models::{Arch, Model, ModelSpec};
use gradleak::progress::Progress;
use tch::{Kind, Tensor};

const INPUT: InputShape = InputShape::Image { channels: 3, height: 16, width: 16 };

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn load(name: &str) -> Model {
    let spec = ModelSpec::from_name(&format!("torchscript:{}", fixture(name).display()), INPUT, 3).unwrap();
    Model::new(&spec, 0).unwrap()
}

fn reference() -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(fixture("example_cnn_reference.safetensors")).unwrap()
}

fn get<'a>(tensors: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &tensors.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name} in the fixture")).1
}

fn relative_error(got: &Tensor, expected: &Tensor) -> f64 {
    let diff = (got.to_kind(Kind::Double) - expected.to_kind(Kind::Double)).norm().double_value(&[]);
    diff / expected.to_kind(Kind::Double).norm().double_value(&[])
}

#[test]
fn layers_are_the_modules_that_own_parameters() {
    let model = load("example_cnn.pt");
    let names: Vec<&str> = model.layers().iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["stem.0", "stem.1", "block.conv1", "block.bn1", "block.conv2", "head.2"]);
    let vars: Vec<Vec<&str>> =
        model.layers().iter().map(|l| l.params.iter().map(|(n, _)| n.as_str()).collect()).collect();
    // The convolution without bias has its weight only; the others weight then bias.
    assert_eq!(vars[2], ["block.conv1.weight"]);
    assert_eq!(vars[3], ["block.bn1.weight", "block.bn1.bias"]);
    let counts: Vec<i64> = model.layers().iter().map(|l| l.num_params()).collect();
    assert_eq!(counts, [3 * 6 * 9 + 6, 12, 6 * 6 * 9, 12, 6 * 6 * 9 + 6, 4 * 6 * 3 + 3]);
    assert_eq!(model.num_params(), 921);
}

#[test]
fn per_sample_gradients_of_every_layer_equal_torch_func() {
    let reference = reference();
    let (inputs, labels) = (get(&reference, "inputs"), get(&reference, "labels"));
    for file in ["example_cnn.pt", "example_cnn_traced.pt"] {
        let model = load(file);
        // Evaluation mode (BatchNorm on its running statistics), as in PyTorch's eval().
        let logits = model.predict(inputs);
        let e = relative_error(&logits, get(&reference, "logits"));
        assert!(e < 1e-5, "{file}: logits differ by {e:.2e}");
        // `train = true` (a client's update) still computes a loaded module's gradients in evaluation mode.
        for train in [false, true] {
            let grads = per_sample_gradients(&model, inputs, labels, train, false);
            assert_eq!(grads.len(), model.layers().len());
            for (layer, g) in model.layers().iter().zip(&grads) {
                let parts: Vec<Tensor> = layer
                    .params
                    .iter()
                    .map(|(var, _)| get(&reference, &format!("grad.{var}")).flatten(1, -1))
                    .collect();
                let expected = Tensor::cat(&parts, 1);
                assert_eq!(g.size(), expected.size(), "{file}: {}", layer.name);
                for n in 0..inputs.size()[0] {
                    let e = relative_error(&g.get(n), &expected.get(n));
                    assert!(e < 1e-5, "{file}: layer {} sample {n}: relative error {e:.2e}", layer.name);
                }
            }
        }
    }
}

/// s(x) = sum over layers of <g_l(x), r_l> with fixed random r: its gradient with respect to x is a double
/// backward through the module, checked against central finite differences in double precision.
#[test]
fn gradients_are_differentiated_through_the_module_twice() {
    let mut model = load("example_cnn.pt");
    model.to_double();
    let reference = reference();
    let x0 = get(&reference, "inputs").narrow(0, 0, 2).to_kind(Kind::Double);
    let labels = get(&reference, "labels").narrow(0, 0, 2);
    tch::manual_seed(5);
    let grads = per_sample_gradients(&model, &x0, &labels, false, false);
    let directions: Vec<Tensor> = grads.iter().map(Tensor::randn_like).collect();
    let s = |x: &Tensor, create_graph: bool| -> Tensor {
        let g = per_sample_gradients(&model, x, &labels, false, create_graph);
        g.iter().zip(&directions).map(|(g, r)| (g * r).sum(Kind::Double)).reduce(|a, b| a + b).unwrap()
    };
    let x = x0.copy().set_requires_grad(true);
    let analytic = Tensor::run_backward(&[&s(&x, true)], &[&x], false, false).pop().unwrap();
    assert!(analytic.abs().sum(Kind::Double).double_value(&[]) > 0.0, "the second derivative is not all zero");
    let v = Tensor::randn_like(&x0);
    let h = 1e-5;
    let fd = tch::no_grad(|| (s(&(&x0 + &v * h), false) - s(&(&x0 - &v * h), false)) / (2.0 * h));
    let (fd, exact) = (fd.double_value(&[]), (&analytic * &v).sum(Kind::Double).double_value(&[]));
    assert!(
        (fd - exact).abs() <= 1e-5 * exact.abs().max(1e-3),
        "directional derivative {exact} vs finite difference {fd}"
    );
}

/// Inverting Gradients through the exported DLG LeNet reconstructs as well as through the built-in `lenet` with the
/// same weights.
#[test]
fn inverting_gradients_through_the_module_matches_the_built_in_network() {
    let mut built_in = Model::new(&ModelSpec::new(Arch::Lenet, INPUT, 3), 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("lenet.safetensors");
    built_in.save_weights(&weights).unwrap();
    let mut script = load("lenet_dlg.pt");
    script.load_weights(&weights).unwrap();
    // In double precision, as `gradleak attack` runs: the built-in network is attacked all victims at once and the
    // module one at a time, and in single precision the two paths' rounding grows over 400 signed-Adam steps on
    // this flat objective into reconstructions 0.5 dB apart (measured), which says nothing about the module.
    built_in.to_double();
    script.to_double();

    // Blocky images (4x4 blocks of uniform colours), which the total-variation prior of Inverting Gradients suits.
    tch::manual_seed(7);
    let inputs = Tensor::rand([4, 3, 4, 4], (Kind::Float, tch::Device::Cpu)).upsample_nearest2d([16, 16], None, None);
    let labels = Tensor::from_slice(&[0i64, 1, 2, 1]);
    let double = inputs.to_kind(Kind::Double);
    let e = relative_error(&script.predict(&double), &built_in.predict(&double));
    assert!(e < 1e-5, "the two networks' logits differ by {e:.2e}");
    let split = Split::new(inputs.shallow_clone(), labels, Tensor::zeros([4, 0], (Kind::Int64, tch::Device::Cpu)));
    let config = AttackConfig { iterations: 400, ..AttackConfig::new(Method::Ig) };
    let share = ShareConfig { samples: 2, batch_size: 1, defenses: Vec::new() };
    let run = |model: &Model| attacks::run_attacks(model, &split, &share, &config, Progress::HIDDEN).unwrap();
    let (a, b) = (run(&built_in), run(&script));
    // What guessing each victim's mean grey level scores, for scale.
    let guess = |x: &Tensor| -(x - x.mean(Kind::Float)).square().mean(Kind::Float).log10().double_value(&[]) * 10.0;
    let victims: Vec<i64> = a.updates.iter().flat_map(|u| u.indices.clone()).collect();
    let baseline = victims.iter().map(|&i| guess(&inputs.get(i))).sum::<f64>() / victims.len() as f64;
    eprintln!(
        "IG PSNR: built-in {:.2} dB, TorchScript {:.2} dB, mean-grey guess {baseline:.2} dB",
        a.mean.psnr, b.mean.psnr
    );
    assert_eq!(a.updates[0].indices, b.updates[0].indices, "the same victims");
    assert!(a.mean.psnr > baseline + 3.0, "the attack reconstructs the victims: {:.2} dB", a.mean.psnr);
    assert!(
        (a.mean.psnr - b.mean.psnr).abs() < 0.5,
        "built-in {:.2} dB, TorchScript {:.2} dB",
        a.mean.psnr,
        b.mean.psnr
    );
    assert_eq!(a.mean.label_accuracy, b.mean.label_accuracy);
}

#[test]
fn bad_model_files_are_one_line_errors_naming_the_file_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let not_ts = dir.path().join("weights.pt");
    std::fs::write(&not_ts, b"not a zip archive").unwrap();
    let spec = ModelSpec::from_name(&format!("torchscript:{}", not_ts.display()), INPUT, 3).unwrap();
    let e = format!("{:#}", Model::new(&spec, 0).unwrap_err());
    assert!(e.contains("weights.pt: not a TorchScript file") && e.lines().count() == 1, "{e}");

    let path = fixture("example_cnn.pt");
    let name = format!("torchscript:{}", path.display());
    let wrong_classes = ModelSpec::from_name(&name, INPUT, 5).unwrap();
    let e = format!("{:#}", Model::new(&wrong_classes, 0).unwrap_err());
    assert!(e.contains("example_cnn.pt: output shape [1, 3]") && e.contains("expected [1, 5]"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");

    let grey = InputShape::Image { channels: 1, height: 16, width: 16 };
    let e = format!("{:#}", Model::new(&ModelSpec::from_name(&name, grey, 3).unwrap(), 0).unwrap_err());
    assert!(e.contains("example_cnn.pt: its forward rejects the dataset's input (1x16x16 images"), "{e}");
    assert_eq!(e.lines().count(), 1, "{e}");

    let e = format!("{:#}", ModelSpec::from_name("onnx:model.onnx", INPUT, 3).unwrap_err());
    assert!(e.contains("unknown model format 'onnx'") && e.contains("torchscript:PATH"), "{e}");
    let e = format!("{:#}", ModelSpec::from_name("torchscript:/nonexistent/model.pt", INPUT, 3).unwrap_err());
    assert!(e.contains("model.pt: cannot read the model file"), "{e}");
}
