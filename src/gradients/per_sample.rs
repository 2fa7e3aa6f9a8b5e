//! Gradients of every named layer, per sample (vectorised) or averaged over a batch.
//!
//! Per-sample gradients come from one forward and one backward pass: the forward pass records each named layer's
//! input `a` and its output; one backward pass of the *summed* loss with respect to the outputs gives the gradient `g` at
//! every layer's output, separately for each sample (no layer mixes samples: GroupNorm normalises within a sample).
//! A small "grad sampler" per layer kind then combines `a` and `g` sample by sample, as Opacus does:
//!
//! | layer      | weight gradient of sample n                         | bias gradient        |
//! |------------|------------------------------------------------------|----------------------|
//! | linear     | `g[n]^T a[n]` (outer product)                        | `g[n]`               |
//! | conv2d     | `sum over positions of g[n] x the input window`     | `g[n]` summed        |
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
    let outputs: Vec<&Tensor> = records.iter().map(|r| &r.output).collect();
    let output_grads = Tensor::run_backward(&[&loss], &outputs, create_graph, create_graph);
    let mut per_layer: Vec<Option<LayerFactors>> = (0..model.layers().len()).map(|_| None).collect();
    for (record, g) in records.into_iter().zip(output_grads) {
        let kind = model.layers()[record.layer].kind;
        // Without create_graph nothing downstream is differentiated: a detached input lets the grad samplers write
        // their results in place instead of recording a graph through the activations.
        let input = if create_graph { record.input } else { record.input.detach() };
        per_layer[record.layer] = Some(LayerFactors { kind, input, output_grad: g });
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
/// any model, at the cost of one forward and one backward pass per sample (see docs/benchmarks.md for the measured cost).
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
    let (n, inputs, outputs) = (a.size()[0], a.size()[1], g.size()[1]);
    // A broadcast product, not a batched matrix product: with an inner dimension of 1, bmm is 2 to 4x slower.
    if differentiable(a, g) {
        let weight = g.unsqueeze(2) * a.unsqueeze(1);
        return Tensor::cat(&[weight.flatten(1, -1), g.shallow_clone()], 1);
    }
    // Written in place: for a wide layer this is the largest tensor of the pass, and a copy would double it.
    let out = Tensor::empty([n, outputs * inputs + outputs], (g.kind(), g.device()));
    let _ = g.unsqueeze(2).mul_out(&out.narrow(1, 0, outputs * inputs).view([n, outputs, inputs]), &a.unsqueeze(1));
    out.narrow(1, outputs * inputs, outputs).copy_(g);
    out
}

/// Whether a grad sampler's result must stay on the autograd graph (then it is built without in-place writes).
fn differentiable(a: &Tensor, g: &Tensor) -> bool {
    a.requires_grad() || g.requires_grad()
}

fn sample_conv2d(a: &Tensor, g: &Tensor, geom: ConvGeometry) -> Tensor {
    ConvSampler::for_layer(geom, g.size()[2] * g.size()[3]).sample(a, g, geom)
}

/// The ways to compute a convolution's per-sample gradients. All give the same values to rounding;
/// [`LayerFactors::gradients`] takes the one [`ConvSampler::for_layer`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvSampler {
    /// One product of the output gradient with the input window of each kernel offset.
    Shifted,
    /// The unfolded input (im2col) times the output gradient.
    Unfolded,
    /// One grouped convolution of the inputs with the output gradients (Rochette et al., 2019).
    Grouped,
}

impl ConvSampler {
    pub const ALL: [ConvSampler; 3] = [ConvSampler::Shifted, ConvSampler::Unfolded, ConvSampler::Grouped];

    /// The fastest for a layer whose output has `positions` positions, by measurement
    /// (`examples/bench_grad_samplers.rs`): LeNet's 5x5 kernels on few channels are fastest grouped; the shifted
    /// windows are 2 to 5x faster than unfolding where the output has many positions for few weights (ResNet's
    /// first stages); unfolding wins where it has few positions for many weights (ResNet-18's 256 and 512 channels
    /// on 8x8 and 4x4), whose shifted products would each write all the weights.
    pub fn for_layer(geom: ConvGeometry, positions: i64) -> ConvSampler {
        if geom.kernel >= 5 {
            ConvSampler::Grouped
        } else if 16 * positions >= geom.out_channels * geom.in_channels {
            ConvSampler::Shifted
        } else {
            ConvSampler::Unfolded
        }
    }

    /// Per-sample gradients (N, P) from the layer's input `a` (N, C, H, W) and output gradient `g` (N, O, H', W').
    pub fn sample(self, a: &Tensor, g: &Tensor, geom: ConvGeometry) -> Tensor {
        match self {
            ConvSampler::Shifted => sample_conv2d_shifted(a, g, geom),
            ConvSampler::Unfolded => sample_conv2d_unfolded(a, g, geom),
            ConvSampler::Grouped => sample_conv2d_grouped(a, g, geom),
        }
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

/// One product per kernel offset: the weight gradient at offset (i, j) is the output gradient times the input
/// window that offset sees, `g[n] (O, L) x window[n]^T (L, C)`, so no k*k-times-larger unfolded input is formed.
fn sample_conv2d_shifted(a: &Tensor, g: &Tensor, geom: ConvGeometry) -> Tensor {
    let (n, c, _, w) = a.size4().expect("conv2d input is (N, C, H, W)");
    let (o, ho, wo) = (geom.out_channels, g.size()[2], g.size()[3]);
    let (k, s, p) = (geom.kernel, geom.stride, geom.padding);
    let (g, windows): (Tensor, Box<dyn Fn(i64, i64) -> Tensor>) = if s == 1 {
        // Laid on the padded input's rows (zeros in the k - 1 extra columns), the output gradient meets every
        // window as a contiguous slice of the flattened padded input: no window is copied. One more padded row
        // keeps the last window inside.
        let row = w + 2 * p;
        let flat = a.constant_pad_nd([p, p, p, p + 1]).reshape([n, c, -1]);
        let g = g.constant_pad_nd([0, row - wo]).reshape([n, o, ho * row]);
        (g, Box::new(move |i, j| flat.narrow(2, i * row + j, ho * row)))
    } else {
        let padded = a.constant_pad_nd([p, p, p, p]);
        let window = move |i: i64, j: i64| {
            let rows = padded.slice(2, i, i + (ho - 1) * s + 1, s);
            rows.slice(3, j, j + (wo - 1) * s + 1, s).reshape([n, c, ho * wo])
        };
        (g.reshape([n, o, ho * wo]), Box::new(window))
    };
    let per_offset = (0..k * k).map(|offset| g.bmm(&windows(offset / k, offset % k).transpose(1, 2))); // (N, O, C)
    let bias = g.sum_dim_intlist([2i64].as_slice(), false, g.kind());
    if differentiable(a, &g) {
        // (N, O, C, k*k) is the weight's row-major order.
        let weight = Tensor::stack(&per_offset.collect::<Vec<_>>(), 3);
        return Tensor::cat(&[weight.flatten(1, -1), bias], 1);
    }
    let out = Tensor::empty([n, o * c * k * k + o], (g.kind(), g.device()));
    let weight = out.narrow(1, 0, o * c * k * k).view([n, o, c, k * k]);
    for (offset, product) in per_offset.enumerate() {
        weight.select(3, offset as i64).copy_(&product);
    }
    out.narrow(1, o * c * k * k, o).copy_(&bias);
    out
}

fn sample_conv2d_grouped(a: &Tensor, g: &Tensor, geom: ConvGeometry) -> Tensor {
    let (n, c, h, w) = a.size4().expect("conv2d input is (N, C, H, W)");
    let (o, ho, wo) = (geom.out_channels, g.size()[2], g.size()[3]);
    let k = geom.kernel;
    // The weight gradient of sample n is the cross-correlation of its input with its output gradient (dilated by
    // the stride): one grouped convolution over all samples and input channels at once (Rochette et al., 2019).
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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Per-sample weight and bias gradients of `sum(conv(a) * g)` by autograd, one sample at a time (f64).
    fn autograd_conv(a: &Tensor, g: &Tensor, geom: ConvGeometry) -> Tensor {
        let k = geom.kernel;
        let rows: Vec<Tensor> = (0..a.size()[0])
            .map(|i| {
                let weight = Tensor::zeros([geom.out_channels, geom.in_channels, k, k], (Kind::Double, Device::Cpu))
                    .set_requires_grad(true);
                let bias = Tensor::zeros([geom.out_channels], (Kind::Double, Device::Cpu)).set_requires_grad(true);
                let out =
                    a.get(i).unsqueeze(0).conv2d(&weight, Some(&bias), [geom.stride; 2], [geom.padding; 2], [1, 1], 1);
                let loss = (out * g.get(i).unsqueeze(0)).sum(Kind::Double);
                let grads = Tensor::run_backward(&[&loss], &[&weight, &bias], false, false);
                Tensor::cat(&[grads[0].flatten(0, -1), grads[1].shallow_clone()], 0)
            })
            .collect();
        Tensor::stack(&rows, 0)
    }

    fn geometries() -> Vec<(ConvGeometry, i64, i64)> {
        let geom = |c, o, k, s, p| ConvGeometry { in_channels: c, out_channels: o, kernel: k, stride: s, padding: p };
        // (geometry, input height, input width): strided, padded, unpadded, 1x1, 5x5, non-square, an input whose
        // last rows and columns no window reaches.
        vec![
            (geom(3, 4, 3, 1, 1), 9, 7),
            (geom(3, 4, 3, 2, 1), 9, 8),
            (geom(2, 5, 3, 1, 0), 6, 10),
            (geom(4, 3, 1, 2, 0), 7, 7),
            (geom(2, 3, 5, 1, 2), 8, 6),
            (geom(2, 3, 5, 3, 1), 11, 9),
            (geom(3, 2, 3, 2, 0), 8, 8),
        ]
    }

    #[test]
    fn every_conv_grad_sampler_is_the_autograd_gradient() {
        tch::manual_seed(3);
        for (geom, h, w) in geometries() {
            let a = Tensor::randn([3, geom.in_channels, h, w], (Kind::Double, Device::Cpu));
            let (ho, wo) = (geom.output_side(h), geom.output_side(w));
            let g = Tensor::randn([3, geom.out_channels, ho, wo], (Kind::Double, Device::Cpu));
            let expected = autograd_conv(&a, &g, geom);
            for name in ConvSampler::ALL {
                // In place (no graph), then on the graph (stacked): the same values.
                for on_graph in [false, true] {
                    let a = if on_graph { a.copy().set_requires_grad(true) } else { a.shallow_clone() };
                    let got = tch::with_grad(|| name.sample(&a, &g, geom));
                    assert_eq!(got.requires_grad(), on_graph, "{name:?} {geom:?}");
                    let err = (&got - &expected).abs().max().double_value(&[]);
                    assert!(err < 1e-12, "{name:?} {geom:?} {h}x{w} on graph {on_graph}: {err:e}");
                }
            }
        }
    }

    #[test]
    fn the_shifted_sampler_differentiates_like_the_unfolded_one() {
        // Sensitivity and the gradient-matching attacks differentiate per-sample gradients with respect to the
        // input: the shifted windows' graph must give the unfolded product's input gradient.
        tch::manual_seed(4);
        for (geom, h, w) in geometries() {
            let a = Tensor::randn([2, geom.in_channels, h, w], (Kind::Double, Device::Cpu)).set_requires_grad(true);
            let (ho, wo) = (geom.output_side(h), geom.output_side(w));
            let g = Tensor::randn([2, geom.out_channels, ho, wo], (Kind::Double, Device::Cpu));
            let probe = Tensor::randn(
                [2, geom.out_channels * (geom.in_channels * geom.kernel * geom.kernel + 1)],
                (Kind::Double, Device::Cpu),
            );
            let input_gradient = |sampler: fn(&Tensor, &Tensor, ConvGeometry) -> Tensor| {
                tch::with_grad(|| {
                    let loss = (sampler(&a, &g, geom) * &probe).sum(Kind::Double);
                    Tensor::run_backward(&[&loss], &[&a], false, false).remove(0)
                })
            };
            let shifted = input_gradient(sample_conv2d_shifted);
            let unfolded = input_gradient(sample_conv2d_unfolded);
            let err = (&shifted - &unfolded).abs().max().double_value(&[]);
            assert!(err < 1e-12, "{geom:?} {h}x{w}: {err:e}");
        }
    }

    #[test]
    fn the_linear_grad_sampler_is_the_outer_product_in_place_or_on_the_graph() {
        tch::manual_seed(5);
        let a = Tensor::randn([4, 6], (Kind::Double, Device::Cpu));
        let g = Tensor::randn([4, 3], (Kind::Double, Device::Cpu));
        let expected = Tensor::cat(&[g.unsqueeze(2).bmm(&a.unsqueeze(1)).flatten(1, -1), g.shallow_clone()], 1);
        for on_graph in [false, true] {
            let a = if on_graph { a.copy().set_requires_grad(true) } else { a.shallow_clone() };
            let got = tch::with_grad(|| sample_linear(&a, &g));
            assert_eq!(got.requires_grad(), on_graph);
            assert!(got.allclose(&expected, 1e-14, 1e-14, false), "on graph {on_graph}");
        }
    }
}
