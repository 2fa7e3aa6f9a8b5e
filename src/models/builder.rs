//! The forward program of a model ([`Op`]s over named layers) and the [`Builder`] that writes it.
//!
//! Architectures (see `arch/`) call the builder's methods in forward order. The builder tracks the feature-map
//! shape, so layer sizes follow from the input, and creates each layer's parameters when it is added: the order
//! of the calls is the order in which layers draw their initial weights from the model's seeded stream.

use anyhow::Result;
use rand_chacha::ChaCha8Rng;
use tch::{nn, Tensor};

use super::layers::{ConvGeometry, Forward, ParamLayer};
use super::{DropoutSpec, ModelSpec};
use crate::data::InputShape;
use crate::rng::{self, Stream};

/// One step of the forward pass.
#[derive(Debug)]
pub(super) enum Op {
    /// A named layer, by index into `Model::layers`.
    Layer(usize),
    Sigmoid,
    Relu,
    MaxPool2,
    /// Adaptive average pooling to a fixed spatial size.
    AvgPool(i64),
    Flatten,
    Dropout(f64),
    /// A ResNet basic block: conv-norm-relu-conv-norm plus a shortcut, then ReLU.
    Residual(ResidualBlock),
}

#[derive(Debug)]
pub(super) struct ResidualBlock {
    conv1: usize,
    norm1: usize,
    conv2: usize,
    norm2: usize,
    /// A 1x1 convolution and norm when the shape changes.
    shortcut: Option<(usize, usize)>,
}

impl Op {
    /// Applies this step to `h`; `layers` are the model's named layers.
    pub(super) fn apply(&self, h: &Tensor, layers: &[ParamLayer], fwd: &mut Forward) -> Tensor {
        match self {
            Op::Layer(i) => layers[*i].forward(*i, h, fwd),
            Op::Sigmoid => h.sigmoid(),
            Op::Relu => h.relu(),
            Op::MaxPool2 => h.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
            Op::AvgPool(s) => h.adaptive_avg_pool2d([*s, *s]),
            Op::Flatten => h.flatten(1, -1),
            Op::Dropout(p) => fwd.dropout(h, *p),
            Op::Residual(r) => {
                let l = layers;
                let y = l[r.conv1].forward(r.conv1, h, fwd);
                let y = l[r.norm1].forward(r.norm1, &y, fwd).relu();
                let y = l[r.conv2].forward(r.conv2, &y, fwd);
                let y = l[r.norm2].forward(r.norm2, &y, fwd);
                let s = match r.shortcut {
                    Some((c, n)) => {
                        let s = l[c].forward(c, h, fwd);
                        l[n].forward(n, &s, fwd)
                    }
                    None => h.shallow_clone(),
                };
                (y + s).relu()
            }
        }
    }
}

/// Builds the op list while tracking the feature-map shape, so classifier sizes follow from the input.
pub(super) struct Builder<'a> {
    root: nn::Path<'a>,
    rng: ChaCha8Rng,
    layers: Vec<ParamLayer>,
    ops: Vec<Op>,
    /// (channels, height, width) of the current feature map; height = width = 1 once flattened.
    shape: (i64, i64, i64),
    flat: bool,
    dropout: DropoutSpec,
    /// Parameters so far, counted with checked arithmetic (None once the count overflowed).
    params: Option<i64>,
    /// Set when the parameters would exceed the limits: later layers are then built empty (nothing is allocated)
    /// and [`Builder::finish`] returns this error.
    too_large: Option<anyhow::Error>,
    arch: String,
}

impl<'a> Builder<'a> {
    /// An empty program for `spec`'s input; parameters go under `root`, initial weights come from the
    /// [`Stream::ModelInit`] stream of `seed`.
    pub(super) fn new(root: nn::Path<'a>, spec: &ModelSpec, seed: u64) -> Self {
        let shape = match spec.input {
            InputShape::Image { channels, height, width } => (channels, height, width),
            InputShape::Tabular { features } => (features, 1, 1),
        };
        Builder {
            root,
            rng: rng::rng(seed, Stream::ModelInit),
            layers: Vec::new(),
            ops: Vec::new(),
            shape,
            flat: matches!(spec.input, InputShape::Tabular { .. }),
            dropout: spec.dropout.clone(),
            params: Some(0),
            too_large: None,
            arch: format!("{} on input {} with {} classes", spec.arch, spec.input, spec.num_classes),
        }
    }

    /// The named layers and the program; checks that every layer named by `--dropout-at` is a linear layer.
    pub(super) fn finish(self, spec: &ModelSpec) -> Result<(Vec<ParamLayer>, Vec<Op>)> {
        let Builder { layers, ops, too_large, .. } = self;
        if let Some(e) = too_large {
            return Err(e);
        }
        for name in &spec.dropout.at {
            if !layers.iter().any(|l| l.kind.type_name() == "linear" && &l.name == name) {
                let linear: Vec<_> =
                    layers.iter().filter(|l| l.kind.type_name() == "linear").map(|l| l.name.as_str()).collect();
                crate::param_bail!(
                    "dropout_at",
                    "'{name}' is not a linear layer of {}; expected one of: {}",
                    spec.arch,
                    linear.join(", ")
                );
            }
        }
        Ok((layers, ops))
    }

    /// Height of the current feature map (1 once flattened).
    pub(super) fn height(&self) -> i64 {
        self.shape.1
    }

    /// Counts a layer of `weights` weights and `biases` biases before it is allocated; false (the layer is then
    /// built empty) once the model is too large for the limits or this machine's memory.
    fn budget(&mut self, weights: Option<i64>, biases: i64) -> bool {
        if self.too_large.is_some() {
            return false;
        }
        self.params = self.params.zip(weights).and_then(|(p, w)| p.checked_add(w)?.checked_add(biases));
        match crate::limits::check_params(&self.arch, self.params) {
            Ok(()) => true,
            Err(e) => {
                self.too_large = Some(e);
                false
            }
        }
    }

    fn push_layer(&mut self, layer: ParamLayer) -> usize {
        self.layers.push(layer);
        self.layers.len() - 1
    }

    /// A "same"-padded convolution layer, without its op.
    fn conv_layer(&mut self, name: &str, out_channels: i64, kernel: i64, stride: i64) -> usize {
        let (c, h, w) = self.shape;
        let padding = kernel / 2;
        let weights = out_channels.checked_mul(c).and_then(|n| n.checked_mul(kernel * kernel));
        let g = if self.budget(weights, out_channels) {
            ConvGeometry { in_channels: c, out_channels, kernel, stride, padding }
        } else {
            ConvGeometry { in_channels: 0, out_channels: 0, kernel, stride, padding }
        };
        let layer = ParamLayer::conv2d(&self.root, name, g, &mut self.rng);
        let index = self.push_layer(layer);
        self.shape = (out_channels, g.output_side(h), g.output_side(w));
        index
    }

    /// A GroupNorm layer over the current channels, without its op.
    fn norm_layer(&mut self, name: &str) -> usize {
        let layer = ParamLayer::group_norm(&self.root, name, self.shape.0);
        self.push_layer(layer)
    }

    /// A convolution with "same" padding (`kernel / 2`).
    pub(super) fn conv(&mut self, name: &str, out_channels: i64, kernel: i64, stride: i64) {
        let i = self.conv_layer(name, out_channels, kernel, stride);
        self.ops.push(Op::Layer(i));
    }

    /// A GroupNorm over the current channels (see [`super::layers::group_count`]).
    pub(super) fn norm(&mut self, name: &str) {
        let i = self.norm_layer(name);
        self.ops.push(Op::Layer(i));
    }

    pub(super) fn relu(&mut self) {
        self.ops.push(Op::Relu);
    }

    pub(super) fn sigmoid(&mut self) {
        self.ops.push(Op::Sigmoid);
    }

    /// A 2x2 max-pool, skipped once the feature map is less than 2 pixels high or wide.
    pub(super) fn max_pool(&mut self) {
        let (c, h, w) = self.shape;
        if h >= 2 && w >= 2 {
            self.ops.push(Op::MaxPool2);
            self.shape = (c, h / 2, w / 2);
        }
    }

    /// Adaptive average pooling to `size` x `size` (or the current size, if smaller).
    pub(super) fn avg_pool(&mut self, size: i64) {
        let (c, h, w) = self.shape;
        let size = size.min(h).min(w);
        self.ops.push(Op::AvgPool(size));
        self.shape = (c, size, size);
    }

    fn flatten(&mut self) {
        if !self.flat {
            let (c, h, w) = self.shape;
            self.ops.push(Op::Flatten);
            // Saturating: a product beyond i64 is refused by the next layer's budget.
            self.shape = (c.saturating_mul(h).saturating_mul(w), 1, 1);
            self.flat = true;
        }
    }

    /// A linear layer (flattening first if needed). `default_dropout_site` marks the architecture's default
    /// dropout sites: with an empty `--dropout-at`, dropout goes on the input of exactly these layers; otherwise
    /// on the input of the layers it names.
    pub(super) fn linear(&mut self, name: &str, out_features: i64, default_dropout_site: bool) {
        self.flatten();
        let in_features = self.shape.0;
        let d = &self.dropout;
        let here = if d.at.is_empty() { default_dropout_site } else { d.at.iter().any(|n| n == name) };
        if d.rate > 0.0 && here {
            self.ops.push(Op::Dropout(d.rate));
        }
        let i = {
            let fits = self.budget(in_features.checked_mul(out_features), out_features);
            let (i, o) = if fits { (in_features, out_features) } else { (0, 0) };
            let layer = ParamLayer::linear(&self.root, name, i, o, &mut self.rng);
            self.push_layer(layer)
        };
        self.ops.push(Op::Layer(i));
        self.shape = (out_features, 1, 1);
    }

    /// A ResNet basic block named `prefix` (`layer1.0`, ...), with a 1x1 convolution shortcut when the shape
    /// changes.
    pub(super) fn residual(&mut self, prefix: &str, out_channels: i64, stride: i64) {
        let in_shape = self.shape;
        let conv1 = self.conv_layer(&format!("{prefix}.conv1"), out_channels, 3, stride);
        let norm1 = self.norm_layer(&format!("{prefix}.norm1"));
        let conv2 = self.conv_layer(&format!("{prefix}.conv2"), out_channels, 3, 1);
        let norm2 = self.norm_layer(&format!("{prefix}.norm2"));
        let shortcut = if stride != 1 || in_shape.0 != out_channels {
            let out_shape = self.shape;
            self.shape = in_shape;
            let conv = self.conv_layer(&format!("{prefix}.shortcut.conv"), out_channels, 1, stride);
            let norm = self.norm_layer(&format!("{prefix}.shortcut.norm"));
            debug_assert_eq!(self.shape, out_shape);
            Some((conv, norm))
        } else {
            None
        };
        self.ops.push(Op::Residual(ResidualBlock { conv1, norm1, conv2, norm2, shortcut }));
    }
}
