//! Vectorised per-sample gradients agree with a loop of batch-1 backward passes, for every model family.

use gradleak::data::InputShape;
use gradleak::gradients::{batch_gradients, per_sample_gradients};
use gradleak::models::{Arch, Model, ModelSpec};
use tch::{Kind, Tensor};

fn max_relative_error(model: &Model, x: &Tensor, y: &Tensor) -> (f64, String) {
    let vectorised = per_sample_gradients(model, x, y, false, false);
    let mut worst = (0.0, String::new());
    for n in 0..x.size()[0] {
        let looped = batch_gradients(model, &x.narrow(0, n, 1), &y.narrow(0, n, 1), false, false);
        for (l, layer) in model.layers().iter().enumerate() {
            let a = vectorised[l].get(n);
            let b = &looped[l];
            assert_eq!(a.size(), vec![layer.num_params()], "{}: one value per parameter", layer.name);
            let err = (&a - b).norm().double_value(&[]) / b.norm().double_value(&[]).max(1e-30);
            if err > worst.0 {
                worst = (err, format!("{} sample {n}", layer.name));
            }
        }
    }
    worst
}

fn cases() -> Vec<(Arch, InputShape)> {
    let img = |c, h| InputShape::Image { channels: c, height: h, width: h };
    vec![
        (Arch::Lenet, img(1, 28)),
        (Arch::Lenet5, img(3, 32)),
        (Arch::Alexnet, img(3, 32)),
        (Arch::Vgg11, img(1, 8)),
        (Arch::Resnet20, img(3, 32)),
        (Arch::Resnet18, img(1, 8)),
        (Arch::Mlp, InputShape::Tabular { features: 30 }),
    ]
}

fn spec(arch: Arch, input: InputShape) -> ModelSpec {
    let mut spec = ModelSpec::new(arch, input, 10);
    spec.width = 0.125; // small AlexNet/VGG: the formulas do not depend on width
    spec
}

#[test]
fn per_sample_gradients_match_the_batch_one_loop_in_f32() {
    for (arch, input) in cases() {
        let model = Model::new(&spec(arch, input), 3).unwrap();
        tch::manual_seed(5);
        let x = Tensor::rand(input.batch(4), (Kind::Float, tch::Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 3, 7, 9]);
        let (err, at) = max_relative_error(&model, &x, &y);
        // f32 has ~6e-8 unit round-off; sums over thousands of terms in different orders stay well under 1e-5.
        assert!(err < 1e-5, "{arch}: relative error {err:e} at {at}");
    }
}

#[test]
fn per_sample_gradients_match_the_batch_one_loop_in_f64() {
    for (arch, input) in cases() {
        let mut model = Model::new(&spec(arch, input), 4).unwrap();
        model.to_double();
        tch::manual_seed(6);
        let x = Tensor::rand(input.batch(3), (Kind::Double, tch::Device::Cpu));
        let y = Tensor::from_slice(&[1i64, 2, 8]);
        let (err, at) = max_relative_error(&model, &x, &y);
        assert!(err < 1e-11, "{arch}: relative error {err:e} at {at}");
    }
}

#[test]
fn batch_gradient_is_the_mean_of_per_sample_gradients() {
    let model = Model::new(&spec(Arch::Resnet20, InputShape::Image { channels: 3, height: 16, width: 16 }), 9).unwrap();
    let x = Tensor::rand([5, 3, 16, 16], (Kind::Float, tch::Device::Cpu));
    let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4]);
    let per_sample = per_sample_gradients(&model, &x, &y, false, false);
    let batch = batch_gradients(&model, &x, &y, false, false);
    for (l, layer) in model.layers().iter().enumerate() {
        let mean = per_sample[l].mean_dim([0i64].as_slice(), false, Kind::Float);
        let err = (&mean - &batch[l]).norm().double_value(&[]) / batch[l].norm().double_value(&[]);
        assert!(err < 1e-5, "{}: {err:e}", layer.name);
    }
}
