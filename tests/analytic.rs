//! Closed-form recovery of a fully connected layer's input: exact at batch size 1, refused at batch size > 1.

use gradleak::measure::attacks::analytic::linear_layer_input;
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
