//! Layers with trainable parameters, each under a stable name.
//!
//! gradleak studies the gradient of each *named layer* (weights and bias together), so the layers are written out
//! here instead of taken from `tch::nn`: every forward pass can record, per layer, the layer's input and its output
//! in the graph. The gradient of the loss with respect to that output is what per-sample gradient formulas (as in
//! Opacus' grad samplers) combine with the input.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use tch::{nn, Tensor};

/// Geometry of a 2-D convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConvGeometry {
    pub in_channels: i64,
    pub out_channels: i64,
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
}

impl ConvGeometry {
    /// The output's height (or width) for an input of height (or width) `side`.
    pub fn output_side(&self, side: i64) -> i64 {
        (side + 2 * self.padding - self.kernel) / self.stride + 1
    }
}

/// What a named layer computes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LayerKind {
    Linear {
        in_features: i64,
        out_features: i64,
    },
    Conv2d(ConvGeometry),
    GroupNorm {
        groups: i64,
        channels: i64,
        eps: f64,
    },
    /// A module of an exported model (e.g. TorchScript) that owns parameters: gradleak sees its parameters, not
    /// its computation, so it has no closed-form per-sample gradient.
    Module,
}

impl LayerKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            LayerKind::Linear { .. } => "linear",
            LayerKind::Conv2d(_) => "conv2d",
            LayerKind::GroupNorm { .. } => "group_norm",
            LayerKind::Module => "module",
        }
    }
}

/// A layer with trainable parameters, stored in the model's `VarStore` under `<name>.<parameter>`. A built-in
/// layer has a weight and a bias; a module of an exported model has whatever it owns (no bias, several weights).
#[derive(Debug)]
pub struct ParamLayer {
    pub name: String,
    pub kind: LayerKind,
    /// (variable name, tensor) in gradient order: `<name>.weight` first and `<name>.bias` last when present, the
    /// others in between in the module's order. A layer's gradient is these parameters' gradients, flattened, in
    /// this order. The variable name is the parameter's name in the `VarStore` and in checkpoints.
    pub params: Vec<(String, Tensor)>,
}

/// What one layer's forward pass recorded for per-sample gradients.
#[derive(Debug)]
pub struct LayerRecord {
    /// Index of the layer in `Model::layers()`.
    pub layer: usize,
    /// The layer's input (detached from nothing: it stays in the graph).
    pub input: Tensor,
    /// The layer's output, in the graph: d loss / d output is the output gradient. (No zero probe is added to it,
    /// which would cost an allocation and a pass over every activation.)
    pub output: Tensor,
}

/// Per-forward-pass context: training mode (dropout on), where dropout masks come from, and an optional recorder
/// of layer inputs.
#[derive(Debug, Default)]
pub struct Forward {
    /// Dropout is applied only when true.
    pub train: bool,
    /// When set, every named layer appends its [`LayerRecord`].
    pub records: Option<Vec<LayerRecord>>,
    /// Dropout masks drawn from this generator; without one, from libtorch's global generator (shared by every
    /// thread of the process, so only reproducible in a single-threaded program).
    pub dropout_rng: Option<ChaCha8Rng>,
    /// Dropout masks drawn per group of rows instead: `(rows, generators)`, the first `rows` rows of the batch from
    /// the first generator and so on, so that a sample's mask does not depend on which other samples share its pass.
    pub dropout_groups: Option<(i64, Vec<ChaCha8Rng>)>,
}

impl Forward {
    pub fn eval() -> Self {
        Forward::default()
    }
    pub fn train() -> Self {
        Forward { train: true, ..Default::default() }
    }
    /// A forward pass that records the input and output of every named layer.
    pub fn recording(train: bool) -> Self {
        Forward { train, records: Some(Vec::new()), ..Default::default() }
    }
    /// Draws dropout masks from a generator of our own (reproducible whatever other threads do).
    pub fn with_dropout_rng(mut self, rng: ChaCha8Rng) -> Self {
        self.dropout_rng = Some(rng);
        self
    }

    /// Draws the dropout masks of each group of `rows` rows from its own generator.
    pub fn with_dropout_groups(mut self, rows: i64, rngs: Vec<ChaCha8Rng>) -> Self {
        self.dropout_groups = Some((rows, rngs));
        self
    }

    /// Inverted dropout of rate `p` (identity outside training).
    pub fn dropout(&mut self, x: &Tensor, p: f64) -> Tensor {
        if !self.train || p == 0.0 {
            return x.shallow_clone();
        }
        let keep = 1.0 - p;
        let scale = (1.0 / keep) as f32;
        let draw = |rng: &mut ChaCha8Rng, count: usize, mask: &mut Vec<f32>| {
            mask.extend((0..count).map(|_| if rng.random::<f64>() < keep { scale } else { 0.0 }))
        };
        let mut mask = Vec::with_capacity(x.numel());
        if let Some((rows, rngs)) = self.dropout_groups.as_mut() {
            let per_row = x.numel() / x.size()[0].max(1) as usize;
            assert_eq!(x.size()[0], *rows * rngs.len() as i64, "dropout groups cover the batch");
            for rng in rngs.iter_mut() {
                draw(rng, per_row * *rows as usize, &mut mask);
            }
        } else if let Some(rng) = self.dropout_rng.as_mut() {
            draw(rng, x.numel(), &mut mask);
        } else {
            return x.dropout(p, true);
        }
        x * Tensor::from_slice(&mask).reshape(x.size()).to_kind(x.kind())
    }
}

impl ParamLayer {
    pub fn linear(vs: &nn::Path, name: &str, in_features: i64, out_features: i64, rng: &mut impl Rng) -> Self {
        let p = sub_path(vs, name);
        // PyTorch's default initialisation for nn.Linear.
        let bound = 1.0 / (in_features as f64).sqrt();
        let weight = p.var_copy("weight", &uniform(rng, &[out_features, in_features], bound));
        let bias = p.var_copy("bias", &uniform(rng, &[out_features], bound));
        ParamLayer::with_weight_and_bias(name, LayerKind::Linear { in_features, out_features }, weight, bias)
    }

    pub fn conv2d(vs: &nn::Path, name: &str, g: ConvGeometry, rng: &mut impl Rng) -> Self {
        let p = sub_path(vs, name);
        // PyTorch's default initialisation for nn.Conv2d.
        let fan_in = g.in_channels * g.kernel * g.kernel;
        let bound = 1.0 / (fan_in as f64).sqrt();
        let weight = p.var_copy("weight", &uniform(rng, &[g.out_channels, g.in_channels, g.kernel, g.kernel], bound));
        let bias = p.var_copy("bias", &uniform(rng, &[g.out_channels], bound));
        ParamLayer::with_weight_and_bias(name, LayerKind::Conv2d(g), weight, bias)
    }

    pub fn group_norm(vs: &nn::Path, name: &str, channels: i64) -> Self {
        let p = sub_path(vs, name);
        let weight = p.var("weight", &[channels], nn::Init::Const(1.0));
        let bias = p.var("bias", &[channels], nn::Init::Const(0.0));
        let groups = group_count(channels);
        ParamLayer::with_weight_and_bias(name, LayerKind::GroupNorm { groups, channels, eps: 1e-5 }, weight, bias)
    }

    fn with_weight_and_bias(name: &str, kind: LayerKind, weight: Tensor, bias: Tensor) -> Self {
        let params = vec![(format!("{name}.weight"), weight), (format!("{name}.bias"), bias)];
        ParamLayer { name: name.to_string(), kind, params }
    }

    /// (in, out) features of a fully connected layer: a built-in linear layer, or a module that owns exactly a
    /// (out, in) weight and an (out) bias (the shape of `nn.Linear`; what it computes is the module's).
    pub fn linear_shape(&self) -> Option<(i64, i64)> {
        match self.kind {
            LayerKind::Linear { in_features, out_features } => Some((in_features, out_features)),
            LayerKind::Module => match (&self.params[..], self.bias()) {
                ([(_, w), (_, b)], Some(_)) => match (w.size().as_slice(), b.size().as_slice()) {
                    (&[out, inp], &[out_b]) if out == out_b => Some((inp, out)),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        }
    }

    /// The first parameter: the weight of a built-in layer.
    pub fn weight(&self) -> &Tensor {
        &self.params[0].1
    }

    /// The bias, when the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.params.iter().find(|(n, _)| short_name(n) == "bias").map(|(_, t)| t)
    }

    /// The parameter tensors, in gradient order.
    pub fn tensors(&self) -> impl Iterator<Item = &Tensor> {
        self.params.iter().map(|(_, t)| t)
    }

    /// Number of trainable scalars (all parameters).
    pub fn num_params(&self) -> i64 {
        self.tensors().map(|t| t.numel() as i64).sum()
    }

    /// The layer's own computation, without recording (built-in layers only: a module's computation lives in its
    /// model's graph).
    pub fn apply(&self, x: &Tensor) -> Tensor {
        let (w, b) = (self.weight(), self.bias());
        match self.kind {
            LayerKind::Linear { .. } => x.linear(w, b),
            LayerKind::Conv2d(g) => x.conv2d(w, b, [g.stride; 2], [g.padding; 2], [1, 1], 1),
            LayerKind::GroupNorm { groups, eps, .. } => x.group_norm(groups, Some(w), b, eps, false),
            LayerKind::Module => unreachable!("module '{}' runs inside its model's graph", self.name),
        }
    }

    /// Forward pass; records input and output when the context asks for it.
    pub fn forward(&self, index: usize, x: &Tensor, fwd: &mut Forward) -> Tensor {
        let y = self.apply(x);
        match fwd.records.as_mut() {
            None => y,
            Some(records) => {
                records.push(LayerRecord { layer: index, input: x.shallow_clone(), output: y.shallow_clone() });
                y
            }
        }
    }
}

/// A parameter's own name (`bias`) from its variable name (`features.0.bias`).
pub fn short_name(var: &str) -> &str {
    var.rsplit_once('.').map_or(var, |(_, p)| p)
}

/// A layer's gradient as one flat vector from its parameters' gradients (in [`ParamLayer::params`] order).
pub fn flat_gradient(grads: &[Tensor]) -> Tensor {
    let parts: Vec<Tensor> = grads.iter().map(|g| g.flatten(0, -1)).collect();
    Tensor::cat(&parts, 0)
}

/// Uniform(-bound, bound) values from our own seeded generator: initial weights then depend only on the model's
/// seed, not on libtorch's global generator (shared by every thread of the process).
fn uniform(rng: &mut impl Rng, shape: &[i64], bound: f64) -> Tensor {
    let n: i64 = shape.iter().product();
    let bound = bound as f32;
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    Tensor::from_slice(&values).reshape(shape)
}

/// The `VarStore` path of a dotted layer name (`layer1.0.conv1` -> `layer1` / `0` / `conv1`).
pub(super) fn sub_path<'a>(vs: &nn::Path<'a>, name: &str) -> nn::Path<'a> {
    let mut parts = name.split('.');
    let first = parts.next().unwrap_or(name);
    parts.fold(vs / first, |p, part| &p / part)
}

/// Groups for GroupNorm: up to 32, with at least two channels per group.
pub fn group_count(channels: i64) -> i64 {
    let mut g = 32;
    while g > 1 && (channels % g != 0 || channels / g < 2) {
        g /= 2;
    }
    g
}
