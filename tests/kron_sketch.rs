//! The Kronecker sketch computed from a layer's input and output gradient equals the sketch of the materialised
//! per-sample gradient, which here comes from autograd on each sample alone (not from gradleak's grad samplers).

mod common;

use common::{image, quadrant_dataset};
use gradleak::gradients::per_sample_gradients;
use gradleak::gradients::sketch::{kron_split, KronConv, MatrixShape, Sketch, SketchKind};
use gradleak::gradients::updates::{compute_updates, UpdateConfig};
use gradleak::models::{Arch, Model, ModelSpec};
use gradleak::progress::Progress;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

/// Each sample's gradient of <delta_n, layer(a_n)> with respect to (weight, bias), flattened weight first.
fn autograd_per_sample(
    a: &Tensor,
    delta: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    layer: impl Fn(&Tensor, &Tensor, &Tensor) -> Tensor,
) -> Tensor {
    let rows: Vec<Tensor> = (0..a.size()[0])
        .map(|n| {
            let w = weight.detach().set_requires_grad(true);
            let b = bias.detach().set_requires_grad(true);
            let out = layer(&a.narrow(0, n, 1), &w, &b);
            let loss = (out * delta.narrow(0, n, 1)).sum(Kind::Double);
            let grads = Tensor::run_backward(&[&loss], &[&w, &b], false, false);
            Tensor::cat(&[grads[0].flatten(0, -1), grads[1].flatten(0, -1)], 0)
        })
        .collect();
    Tensor::stack(&rows, 0)
}

fn assert_close(factored: &Tensor, materialised: &Tensor, what: &str) {
    let scale = materialised.abs().max().double_value(&[]);
    let err = (factored - materialised).abs().max().double_value(&[]);
    assert!(err <= 1e-5 * scale, "{what}: max error {err:.3e} against max entry {scale:.3e}");
    assert!(scale > 0.0, "{what}: a nonzero sketch");
}

fn sketch(shape: MatrixShape, dim: i64, seed: u64) -> Sketch {
    Sketch::for_layer(SketchKind::Kron, Some(shape), shape.num_params(), dim, ChaCha8Rng::seed_from_u64(seed)).unwrap()
}

#[test]
fn linear_factors_give_the_sketch_of_the_gradient() {
    tch::manual_seed(0);
    let (n, i, o) = (6, 37, 23);
    let a = Tensor::randn([n, i], F64);
    let delta = Tensor::randn([n, o], F64);
    let weight = Tensor::randn([o, i], F64);
    let bias = Tensor::randn([o], F64);
    let grads = autograd_per_sample(&a, &delta, &weight, &bias, |x, w, b| x.linear(w, Some(b)));
    let shape = MatrixShape::Linear { in_features: i, out_features: o };
    for dim in [64, 100, 7] {
        let s = sketch(shape, dim, 3);
        assert_close(&s.apply_factors(&a, &delta), &s.apply(&grads), &format!("linear, k = {dim}"));
    }
}

#[test]
fn convolution_factors_give_the_sketch_of_the_gradient() {
    let cases = [
        // (in, out, kernel, stride, padding, dilation, groups, input size)
        (3, 8, 3, 1, 1, 1, 1, 9),
        (3, 8, 3, 2, 1, 1, 1, 10),
        (4, 6, 5, 1, 0, 1, 1, 12),
        (4, 6, 3, 2, 2, 1, 2, 11),
        (6, 9, 3, 1, 1, 2, 3, 10),
        (4, 4, 3, 1, 1, 1, 4, 8),
    ];
    tch::manual_seed(1);
    for (c, o, k, stride, padding, dilation, groups, size) in cases {
        let conv = KronConv { in_channels: c, out_channels: o, kernel: k, stride, padding, dilation, groups };
        let layer =
            |x: &Tensor, w: &Tensor, b: &Tensor| x.conv2d(w, Some(b), [stride; 2], [padding; 2], [dilation; 2], groups);
        let n = 5;
        let a = Tensor::randn([n, c, size, size], F64);
        let weight = Tensor::randn([o, c / groups, k, k], F64);
        let bias = Tensor::randn([o], F64);
        let out_size = layer(&a, &weight, &bias).size();
        let delta = Tensor::randn(out_size.as_slice(), F64);
        let grads = autograd_per_sample(&a, &delta, &weight, &bias, layer);
        let shape = MatrixShape::Conv(conv);
        assert_eq!(grads.size()[1], shape.num_params());
        for dim in [64, 48] {
            let s = sketch(shape, dim, 5);
            assert_close(&s.apply_factors(&a, &delta), &s.apply(&grads), &format!("{conv:?}, k = {dim}"));
        }
    }
}

#[test]
fn the_split_of_k_divides_it_and_respects_the_outputs() {
    assert_eq!(kron_split(4096, 120), (64, 64));
    assert_eq!(kron_split(4096, 10), (8, 512));
    assert_eq!(kron_split(1021, 500), (1, 1021));
    assert_eq!(kron_split(100, 6), (5, 20));
    for (dim, outputs) in [(4096, 3), (1000, 1000), (12, 1), (1, 7)] {
        let (k_out, k_in) = kron_split(dim, outputs);
        assert_eq!(k_out * k_in, dim);
        assert!(k_out <= outputs.max(1) && k_out * k_out <= dim, "{dim}, {outputs}: {k_out} x {k_in}");
    }
}

#[test]
fn kron_updates_of_a_model_are_the_sketches_of_its_per_sample_gradients() {
    // The factored path of a set of updates (no per-sample gradient of a sketched layer is formed) against the
    // sketch of the per-sample gradients from the grad samplers, in f32, for single samples and batches of 3.
    let data = quadrant_dataset(image(1, 16), 60, 10, 1);
    let model = Model::new(&ModelSpec::new(Arch::Lenet5, data.input_shape, data.num_classes()), 2).unwrap();
    for batch_size in [1, 3] {
        let config = UpdateConfig {
            num_updates: 12,
            batch_size,
            seed: 7,
            sketch_kind: SketchKind::Kron,
            sketch_dim: 256,
            full_max_params: 256,
            ..Default::default()
        };
        let updates = compute_updates(&model, &data.train, &config, Progress::HIDDEN).unwrap();
        let idx = updates.batch_indices.flatten(0, -1);
        let x = data.train.inputs.index_select(0, &idx);
        let y = data.train.labels.index_select(0, &idx);
        let per_sample = per_sample_gradients(&model, &x, &y, true, false);
        let mut sketched = 0;
        for (l, stored) in updates.layers.iter().enumerate() {
            let layer = &model.layers()[l];
            assert_eq!(stored.name, layer.name);
            let Some(got) = &stored.sketch else { continue };
            sketched += 1;
            let s = Sketch::for_layer(
                SketchKind::Kron,
                MatrixShape::of_layer(&layer.kind),
                layer.num_params(),
                256,
                gradleak::rng::rng(7, gradleak::rng::Stream::Sketch { layer: &layer.name }),
            )
            .unwrap();
            let mean = per_sample[l].reshape([12, batch_size, -1]).mean_dim([1i64].as_slice(), false, Kind::Float);
            let expected = s.apply(&mean);
            let scale = expected.abs().max().double_value(&[]);
            let err = (got - &expected).abs().max().double_value(&[]);
            assert!(err <= 1e-4 * scale, "{}, batch {batch_size}: error {err:.2e} of {scale:.2e}", layer.name);
            assert!(stored.full.is_none(), "{} is above full_max_params", layer.name);
        }
        assert_eq!(sketched, 4, "conv2, fc1, fc2 and fc3 are sketched, conv1 (156 parameters) is not");
    }
}
