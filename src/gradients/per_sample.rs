//! Gradients of every named layer, per sample (vectorised) or averaged over a batch.
//!
//! Per-sample gradients come from one forward and one backward pass: the forward pass records each named layer's
//! input `a` and adds a zero probe to its output; one backward pass of the *summed* loss gives the gradient `g` at
//! every layer's output, separately for each sample (no layer mixes samples: GroupNorm normalises within a sample).
//! A small "grad sampler" per layer kind then combines `a` and `g` sample by sample, as Opacus does:
//!
//! | layer      | weight gradient of sample n                         | bias gradient        |
//! |------------|------------------------------------------------------|----------------------|
//! | linear     | `g[n]^T a[n]` (outer product)                        | `g[n]`               |
//! | conv2d     | cross-correlation of `a[n]` with `g[n]` (grouped conv) | `g[n]` summed        |
//! | group norm | `sum over positions of g[n] * normalise(a[n])`       | `g[n]` summed        |
//!
//! A layer's gradient is a flat vector: the weight gradient (in the weight's row-major order) then the bias
//! gradient (then, for a module of a loaded model, every parameter in [`crate::models::ParamLayer::params`]
//! order). With `create_graph` the result stays differentiable (for sensitivity and gradient-matching attacks).
//!
//! A model loaded from TorchScript records nothing inside its graph, so there is no layer input to combine: its
//! per-sample gradients come from one backward pass per sample ([`per_sample_by_loop`]), in evaluation mode so
//! that BatchNorm uses its running statistics and no sample's gradient depends on the others in its batch.

use tch::{Kind, Tensor};

use crate::models::{flat_gradient, ConvGeometry, Forward, LayerKind, Model};

/// Sum of the per-sample cross-entropy losses (nats), in the logits' precision.
pub fn summed_loss(logits: &Tensor, labels: &Tensor) -> Tensor {
    let log_probs = logits.log_softmax(-1, logits.kind());
    -log_probs.gather(1, &labels.unsqueeze(1), false).sum(logits.kind())
}

/// Per-sample gradients of every named layer: `result[l]` has shape (N, P_l), in the order of `model.layers()`.
///
/// `train` switches dropout on (as when a client computes its update). With `create_graph` the gradients can be
/// differentiated again, e.g. with respect to `inputs` when it requires grad.
pub fn per_sample_gradients(
    model: &Model,
    inputs: &Tensor,
    labels: &Tensor,
    train: bool,
    create_graph: bool,
) -> Vec<Tensor> {
    per_sample_gradients_with(model, inputs, labels, Forward::recording(train), create_graph)
}

/// [`per_sample_gradients`] with a given forward context (e.g. seeded dropout masks); it must be recording.
pub fn per_sample_gradients_with(
    model: &Model,
    inputs: &Tensor,
    labels: &Tensor,
    fwd: Forward,
    create_graph: bool,
) -> Vec<Tensor> {
    match per_sample_factors(model, inputs, labels, fwd, create_graph) {
        Some(factors) => factors.iter().map(LayerFactors::gradients).collect(),
        None => per_sample_by_loop(model, inputs, labels, create_graph),
    }
}

/// What a layer's per-sample gradients are made of: the layer's input and the gradient at its output, per sample.
#[derive(Debug)]
pub struct LayerFactors {
    pub kind: LayerKind,
    /// The layer's input `a`: (N, I) or (N, C, H, W).
    pub input: Tensor,
    /// The gradient of the summed loss at the layer's output `δ`: (N, O) or (N, O, H', W').
    pub output_grad: Tensor,
}

impl LayerFactors {
    /// The per-sample gradients (N, P) these factors make (the layer's grad sampler).
    pub fn gradients(&self) -> Tensor {
        sample_layer(self.kind, &self.input, &self.output_grad)
    }
}

/// One forward and one backward pass that give every named layer's [`LayerFactors`], in the order of
/// `model.layers()`; `None` for a loaded model, which records nothing inside its graph.
pub fn per_sample_factors(
    model: &Model,
    inputs: &Tensor,
    labels: &Tensor,
    fwd: Forward,
    create_graph: bool,
) -> Option<Vec<LayerFactors>> {
    per_sample_factors_of(model, inputs, fwd, create_graph, |logits| summed_loss(logits, labels))
}

/// [`per_sample_factors`] of any loss that is a sum of one term per sample, each a function of that sample's
/// logits only (so that the gradient at a layer's output is, sample by sample, that of the sample's own term).
pub fn per_sample_factors_of(
    model: &Model,
    inputs: &Tensor,
    mut fwd: Forward,
    create_graph: bool,
    summed_loss: impl FnOnce(&Tensor) -> Tensor,
) -> Option<Vec<LayerFactors>> {
    if model.script().is_some() {
        return None;
    }
    if fwd.records.is_none() {
        fwd.records = Some(Vec::new());
    }
    let logits = model.forward(inputs, &mut fwd);
    let loss = summed_loss(&logits);
    let records = fwd.records.take().unwrap_or_default();
    let probes: Vec<&Tensor> = records.iter().map(|r| &r.output_probe).collect();
    let output_grads = Tensor::run_backward(&[&loss], &probes, create_graph, create_graph);
    let mut per_layer: Vec<Option<LayerFactors>> = (0..model.layers().len()).map(|_| None).collect();
    for (record, g) in records.into_iter().zip(output_grads) {
        let kind = model.layers()[record.layer].kind;
        per_layer[record.layer] = Some(LayerFactors { kind, input: record.input, output_grad: g });
    }
    Some(
        per_layer
            .into_iter()
            .zip(model.layers())
            .map(|(f, layer)| f.unwrap_or_else(|| panic!("layer {} was not reached by the forward pass", layer.name)))
            .collect(),
    )
}

/// Per-sample gradients by ordinary backpropagation of each sample's loss alone, in evaluation mode: correct for
/// any model, at the cost of one forward and one backward pass per sample (see the README for the measured cost).
pub fn per_sample_by_loop(model: &Model, inputs: &Tensor, labels: &Tensor, create_graph: bool) -> Vec<Tensor> {
    let params: Vec<&Tensor> = model.layers().iter().flat_map(|l| l.tensors()).collect();
    let mut per_layer: Vec<Vec<Tensor>> = model.layers().iter().map(|_| Vec::new()).collect();
    for i in 0..inputs.size()[0] {
        // Backpropagation needs the forward graph, even when the caller computes without one.
        let grads = tch::with_grad(|| {
            let logits = model.forward(&inputs.narrow(0, i, 1), &mut Forward::eval());
            let loss = summed_loss(&logits, &labels.narrow(0, i, 1));
            Tensor::run_backward(&[&loss], &params, create_graph, create_graph)
        });
        for (rows, g) in per_layer.iter_mut().zip(split_by_layer(model, &grads)) {
            rows.push(g);
        }
    }
    per_layer.into_iter().map(|rows| Tensor::stack(&rows, 0)).collect()
}

/// One flat gradient per layer from the gradients of all parameters in layer order.
fn split_by_layer(model: &Model, grads: &[Tensor]) -> Vec<Tensor> {
    let mut start = 0;
    model
        .layers()
        .iter()
        .map(|l| {
            let end = start + l.params.len();
            let flat = flat_gradient(&grads[start..end]);
            start = end;
            flat
        })
        .collect()
}

/// The grad sampler of one layer kind: per-sample gradient (N, P) from the layer input and output gradient.
fn sample_layer(kind: LayerKind, input: &Tensor, output_grad: &Tensor) -> Tensor {
    match kind {
        LayerKind::Linear { .. } => sample_linear(input, output_grad),
        LayerKind::Conv2d(g) => sample_conv2d(input, output_grad, g),
        LayerKind::GroupNorm { groups, eps, .. } => sample_group_norm(input, output_grad, groups, eps),
        LayerKind::Module => unreachable!("modules of loaded models take the per-sample loop"),
    }
}

fn sample_linear(a: &Tensor, g: &Tensor) -> Tensor {
    // A batched outer product; bmm is about twice as fast as the equivalent einsum here.
    let weight = g.unsqueeze(2).bmm(&a.unsqueeze(1));
    Tensor::cat(&[weight.flatten(1, -1), g.shallow_clone()], 1)
}

fn sample_conv2d(a: &Tensor, g: &Tensor, geom: ConvGeometry) -> Tensor {
    // Chosen by measurement (examples/bench_per_sample.rs): the grouped convolution is faster for LeNet's 5x5
    // kernels on few channels, the unfolded product for ResNet's 3x3 kernels on 16 to 512 channels.
    if geom.kernel >= 5 {
        sample_conv2d_grouped(a, g, geom)
    } else {
        sample_conv2d_unfolded(a, g, geom)
    }
}

/// Unfold the input (im2col) and multiply by the output gradient.
fn sample_conv2d_unfolded(a: &Tensor, g: &Tensor, geom: ConvGeometry) -> Tensor {
    let k = geom.kernel;
    // (N, C*k*k, L): each column is the receptive field of one output position, in the weight's (C, kh, kw) order.
    let columns = a.im2col([k, k], [1, 1], [geom.padding; 2], [geom.stride; 2]);
    let g = g.flatten(2, -1); // (N, out, L)
    let weight = g.bmm(&columns.transpose(1, 2)); // (N, out, C*k*k)
    let bias = g.sum_dim_intlist([2i64].as_slice(), false, g.kind());
    Tensor::cat(&[weight.flatten(1, -1), bias], 1)
}

fn sample_conv2d_grouped(a: &Tensor, g: &Tensor, geom: ConvGeometry) -> Tensor {
    let (n, c, h, w) = a.size4().expect("conv2d input is (N, C, H, W)");
    let (o, ho, wo) = (geom.out_channels, g.size()[2], g.size()[3]);
    let k = geom.kernel;
    // The weight gradient of sample n is the cross-correlation of its input with its output gradient (dilated by
    // the stride): one grouped convolution over all samples and input channels at once (Rochette et al., 2019),
    // which is faster than unfolding the input (im2col) and multiplying.
    let input = a.reshape([1, n * c, h, w]);
    let kernels = g.unsqueeze(1).expand([n, c, o, ho, wo], false).reshape([n * c * o, 1, ho, wo]);
    let correlation = input.conv2d(&kernels, None::<&Tensor>, [1, 1], [geom.padding; 2], [geom.stride; 2], n * c);
    let weight = correlation.narrow(2, 0, k).narrow(3, 0, k).reshape([n, c, o, k, k]).permute([0, 2, 1, 3, 4]);
    let bias = g.sum_dim_intlist([2i64, 3].as_slice(), false, g.kind());
    Tensor::cat(&[weight.reshape([n, -1]), bias], 1)
}

fn sample_group_norm(a: &Tensor, g: &Tensor, groups: i64, eps: f64) -> Tensor {
    let normalised = a.group_norm(groups, None::<&Tensor>, None::<&Tensor>, eps, false);
    let dims = [2i64, 3].as_slice();
    let weight = (g * normalised).sum_dim_intlist(dims, false, g.kind());
    let bias = g.sum_dim_intlist(dims, false, g.kind());
    Tensor::cat(&[weight, bias], 1)
}

/// Gradient of the batch's *mean* loss for every named layer, by ordinary backpropagation: `result[l]` is a flat
/// vector of P_l values. This is the update a client shares for a batch (before any defence).
pub fn batch_gradients(
    model: &Model,
    inputs: &Tensor,
    labels: &Tensor,
    train: bool,
    create_graph: bool,
) -> Vec<Tensor> {
    // A loaded module's update is computed in evaluation mode, as its per-sample gradients are.
    let train = train && model.script().is_none();
    let logits = model.forward(inputs, &mut Forward { train, ..Default::default() });
    let loss = Model::loss(&logits, labels);
    let params: Vec<&Tensor> = model.layers().iter().flat_map(|l| l.tensors()).collect();
    let grads = Tensor::run_backward(&[&loss], &params, create_graph, create_graph);
    split_by_layer(model, &grads)
}

/// Concatenation of the chosen layers' gradients along the last axis.
pub fn concat_layers(per_layer: &[Tensor], layers: &[usize]) -> Tensor {
    let parts: Vec<&Tensor> = layers.iter().map(|&l| &per_layer[l]).collect();
    Tensor::cat(&parts, -1)
}

/// Euclidean norm of each row of a (N, P) tensor, in f64 accumulation for stability.
pub fn row_norms(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Double).square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double).sqrt()
}
