//! Model families: LeNet (DLG's sigmoid variant and a ReLU LeNet-5), AlexNet and VGG-11 adapted to small inputs,
//! CIFAR-style ResNet-20 and ResNet-18 with GroupNorm, and an MLP for tabular data.
//!
//! Every layer with trainable parameters has a stable, readable name (`conv1`, `layer2.0.conv1`, `fc3`, ...);
//! its parameters live in the `VarStore` as `<name>.weight` and `<name>.bias`. A model is a flat list of [`Op`]s,
//! so the forward pass reads like the architecture and every architecture shares one recording mechanism.
//!
//! All architectures take any of gradleak's input sizes (8x8 to 32x32, grey or colour): convolutions use "same"
//! padding, a 2x2 max-pool is skipped once the feature map is 1 pixel wide, and the classifiers after the
//! convolutions see a fixed size (adaptive average pooling) or a size computed from the input.

pub mod layers;

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

pub use layers::{ConvGeometry, Forward, LayerKind, LayerRecord, ParamLayer};

use crate::data::InputShape;
use crate::rng::{self, Stream};

/// The architectures gradleak builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// The LeNet of the DLG paper (Zhu et al., 2019): three 5x5 convolutions with sigmoid, one linear layer.
    Lenet,
    /// LeNet-5 with ReLU and max-pooling.
    Lenet5,
    /// AlexNet adapted to small inputs (3x3 convolutions, 2x2 pooling).
    Alexnet,
    /// VGG-11 (configuration "A") without batch normalisation; channel width scales with `width`.
    Vgg11,
    /// CIFAR-style ResNet-20 (3 stages of 3 basic blocks, 16/32/64 channels), GroupNorm.
    Resnet20,
    /// ResNet-18 with a 3x3 stem for small inputs (4 stages of 2 basic blocks, 64..512 channels), GroupNorm.
    Resnet18,
    /// Multi-layer perceptron: two ReLU hidden layers of `hidden` units.
    Mlp,
}

impl Arch {
    pub const ALL: [Arch; 7] =
        [Arch::Lenet, Arch::Lenet5, Arch::Alexnet, Arch::Vgg11, Arch::Resnet20, Arch::Resnet18, Arch::Mlp];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Lenet => "lenet",
            Arch::Lenet5 => "lenet5",
            Arch::Alexnet => "alexnet",
            Arch::Vgg11 => "vgg11",
            Arch::Resnet20 => "resnet20",
            Arch::Resnet18 => "resnet18",
            Arch::Mlp => "mlp",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Arch::Lenet => "LeNet of the DLG paper: 3 conv 5x5 + sigmoid, 1 linear",
            Arch::Lenet5 => "LeNet-5: 2 conv 5x5 + ReLU + max-pool, 3 linear",
            Arch::Alexnet => "AlexNet for small inputs: 5 conv 3x3 + ReLU, 3 linear",
            Arch::Vgg11 => "VGG-11 (config A), channels x width, 3 linear",
            Arch::Resnet20 => "ResNet-20 (CIFAR), GroupNorm",
            Arch::Resnet18 => "ResNet-18 with 3x3 stem, GroupNorm",
            Arch::Mlp => "MLP: 2 hidden ReLU layers",
        }
    }

    /// Whether the architecture needs image inputs (everything except the MLP).
    pub fn needs_images(self) -> bool {
        self != Arch::Mlp
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Arch::ALL.into_iter().find(|a| a.name() == s.to_ascii_lowercase()).with_context(|| {
            let names: Vec<_> = Arch::ALL.iter().map(|a| a.name()).collect();
            format!("unknown model '{s}'; expected one of: {}", names.join(", "))
        })
    }
}

/// Where dropout goes and how strong it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DropoutSpec {
    /// Probability of zeroing an activation, in [0, 1). 0 disables dropout.
    pub rate: f64,
    /// Names of the layers whose *input* gets dropout. Empty: the input of every linear layer after the first
    /// layer of the network (the classifier's hidden activations, where AlexNet and VGG put it).
    #[serde(default)]
    pub at: Vec<String>,
}

/// Everything needed to rebuild a model: stored beside every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    pub input: InputShape,
    pub num_classes: i64,
    /// Channel multiplier for AlexNet and VGG (1.0 = the published widths).
    #[serde(default = "default_width")]
    pub width: f64,
    /// Hidden units of the MLP.
    #[serde(default = "default_hidden")]
    pub hidden: i64,
    #[serde(default)]
    pub dropout: DropoutSpec,
}

fn default_width() -> f64 {
    1.0
}
fn default_hidden() -> i64 {
    128
}

impl ModelSpec {
    pub fn new(arch: Arch, input: InputShape, num_classes: i64) -> Self {
        ModelSpec {
            arch,
            input,
            num_classes,
            width: default_width(),
            hidden: default_hidden(),
            dropout: Default::default(),
        }
    }

    /// Checks ranges and that the architecture fits the input.
    pub fn validate(&self) -> Result<()> {
        if self.arch.needs_images() && !matches!(self.input, InputShape::Image { .. }) {
            bail!(
                "model '{}' needs image inputs, but the data is tabular ({}); use --model mlp",
                self.arch,
                self.input
            );
        }
        if !(self.dropout.rate >= 0.0 && self.dropout.rate < 1.0) {
            bail!("--dropout must be in [0, 1), got {}", self.dropout.rate);
        }
        if !(self.width.is_finite() && self.width > 0.0 && self.width <= 16.0) {
            bail!("--width must be in (0, 16], got {}", self.width);
        }
        if !(1..=1 << 16).contains(&self.hidden) {
            bail!("--hidden must be in [1, 65536], got {}", self.hidden);
        }
        if self.num_classes < 2 {
            bail!("a classifier needs at least 2 classes, got {}", self.num_classes);
        }
        Ok(())
    }
}

/// One step of the forward pass.
#[derive(Debug)]
enum Op {
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
struct ResidualBlock {
    conv1: usize,
    norm1: usize,
    conv2: usize,
    norm2: usize,
    /// A 1x1 convolution and norm when the shape changes.
    shortcut: Option<(usize, usize)>,
}

/// A summary row of a named layer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerInfo {
    pub name: String,
    #[serde(flatten)]
    pub kind: LayerKind,
    pub weight_shape: Vec<i64>,
    pub bias_shape: Vec<i64>,
    pub num_params: i64,
}

/// A built model: its parameters (in a `VarStore`), its named layers and its forward program.
pub struct Model {
    pub spec: ModelSpec,
    pub vs: nn::VarStore,
    layers: Vec<ParamLayer>,
    ops: Vec<Op>,
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model").field("spec", &self.spec).field("layers", &self.layers.len()).finish()
    }
}

/// Builds the op list while tracking the feature-map shape, so classifier sizes follow from the input.
struct Builder<'a> {
    root: nn::Path<'a>,
    rng: ChaCha8Rng,
    layers: Vec<ParamLayer>,
    ops: Vec<Op>,
    /// (channels, height, width) of the current feature map; height = width = 1 once flattened.
    shape: (i64, i64, i64),
    flat: bool,
    dropout: DropoutSpec,
}

impl<'a> Builder<'a> {
    fn push_layer(&mut self, layer: ParamLayer) -> usize {
        self.layers.push(layer);
        self.layers.len() - 1
    }

    fn conv(&mut self, name: &str, out_channels: i64, kernel: i64, stride: i64) -> usize {
        let (c, h, w) = self.shape;
        let padding = kernel / 2;
        let g = ConvGeometry { in_channels: c, out_channels, kernel, stride, padding };
        let layer = ParamLayer::conv2d(&self.root, name, g, &mut self.rng);
        let index = self.push_layer(layer);
        let out = |n: i64| (n + 2 * padding - kernel) / stride + 1;
        self.shape = (out_channels, out(h), out(w));
        index
    }

    fn conv_op(&mut self, name: &str, out_channels: i64, kernel: i64, stride: i64) {
        let i = self.conv(name, out_channels, kernel, stride);
        self.ops.push(Op::Layer(i));
    }

    fn norm(&mut self, name: &str) -> usize {
        let layer = ParamLayer::group_norm(&self.root, name, self.shape.0);
        self.push_layer(layer)
    }

    fn max_pool(&mut self) {
        let (c, h, w) = self.shape;
        if h >= 2 && w >= 2 {
            self.ops.push(Op::MaxPool2);
            self.shape = (c, h / 2, w / 2);
        }
    }

    fn avg_pool(&mut self, size: i64) {
        let (c, h, w) = self.shape;
        let size = size.min(h).min(w);
        self.ops.push(Op::AvgPool(size));
        self.shape = (c, size, size);
    }

    fn flatten(&mut self) {
        if !self.flat {
            let (c, h, w) = self.shape;
            self.ops.push(Op::Flatten);
            self.shape = (c * h * w, 1, 1);
            self.flat = true;
        }
    }

    /// A linear layer; `hidden` marks the classifier's hidden-activation inputs (default dropout sites).
    fn linear(&mut self, name: &str, out_features: i64, default_dropout_site: bool) {
        self.flatten();
        let in_features = self.shape.0;
        let d = &self.dropout;
        let here = if d.at.is_empty() { default_dropout_site } else { d.at.iter().any(|n| n == name) };
        if d.rate > 0.0 && here {
            self.ops.push(Op::Dropout(d.rate));
        }
        let i = {
            let layer = ParamLayer::linear(&self.root, name, in_features, out_features, &mut self.rng);
            self.push_layer(layer)
        };
        self.ops.push(Op::Layer(i));
        self.shape = (out_features, 1, 1);
    }

    fn residual(&mut self, prefix: &str, out_channels: i64, stride: i64) {
        let in_shape = self.shape;
        let conv1 = self.conv(&format!("{prefix}.conv1"), out_channels, 3, stride);
        let norm1 = self.norm(&format!("{prefix}.norm1"));
        let conv2 = self.conv(&format!("{prefix}.conv2"), out_channels, 3, 1);
        let norm2 = self.norm(&format!("{prefix}.norm2"));
        let shortcut = if stride != 1 || in_shape.0 != out_channels {
            let out_shape = self.shape;
            self.shape = in_shape;
            let conv = self.conv(&format!("{prefix}.shortcut.conv"), out_channels, 1, stride);
            let norm = self.norm(&format!("{prefix}.shortcut.norm"));
            debug_assert_eq!(self.shape, out_shape);
            Some((conv, norm))
        } else {
            None
        };
        self.ops.push(Op::Residual(ResidualBlock { conv1, norm1, conv2, norm2, shortcut }));
    }
}

fn scaled(channels: i64, width: f64) -> i64 {
    ((channels as f64 * width).round() as i64).max(1)
}

impl Model {
    /// Builds a model on the CPU (f32) with PyTorch's default initialisation, drawn from a generator seeded by
    /// `seed`: the same seed gives the same weights.
    pub fn new(spec: &ModelSpec, seed: u64) -> Result<Model> {
        spec.validate()?;
        let vs = nn::VarStore::new(Device::Cpu);
        let shape = match spec.input {
            InputShape::Image { channels, height, width } => (channels, height, width),
            InputShape::Tabular { features } => (features, 1, 1),
        };
        let mut b = Builder {
            root: vs.root(),
            rng: rng::rng(seed, Stream::ModelInit),
            layers: Vec::new(),
            ops: Vec::new(),
            shape,
            flat: matches!(spec.input, InputShape::Tabular { .. }),
            dropout: spec.dropout.clone(),
        };
        let k = spec.num_classes;
        let w = spec.width;
        match spec.arch {
            Arch::Lenet => {
                // Zhu et al.'s LeNet: strides 2, 2, 1; sigmoid keeps the gradient twice differentiable everywhere.
                for (name, stride) in [("conv1", 2), ("conv2", 2), ("conv3", 1)] {
                    b.conv_op(name, 12, 5, stride);
                    b.ops.push(Op::Sigmoid);
                }
                b.linear("fc", k, false);
            }
            Arch::Lenet5 => {
                b.conv_op("conv1", 6, 5, 1);
                b.ops.push(Op::Relu);
                b.max_pool();
                b.conv_op("conv2", 16, 5, 1);
                b.ops.push(Op::Relu);
                b.max_pool();
                b.linear("fc1", 120, false);
                b.ops.push(Op::Relu);
                b.linear("fc2", 84, true);
                b.ops.push(Op::Relu);
                b.linear("fc3", k, true);
            }
            Arch::Alexnet => {
                let plan: [(i64, bool); 5] = [(64, true), (192, true), (384, false), (256, false), (256, true)];
                for (i, (c, pool)) in plan.into_iter().enumerate() {
                    b.conv_op(&format!("conv{}", i + 1), scaled(c, w), 3, 1);
                    b.ops.push(Op::Relu);
                    if pool {
                        b.max_pool();
                    }
                }
                b.avg_pool(2);
                let hidden = scaled(1024, w);
                b.linear("fc1", hidden, true);
                b.ops.push(Op::Relu);
                b.linear("fc2", hidden, true);
                b.ops.push(Op::Relu);
                b.linear("fc3", k, false);
            }
            Arch::Vgg11 => {
                // Configuration A: 64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M.
                let plan: [&[i64]; 5] = [&[64], &[128], &[256, 256], &[512, 512], &[512, 512]];
                let mut n = 0;
                for block in plan {
                    for &c in block {
                        n += 1;
                        b.conv_op(&format!("conv{n}"), scaled(c, w), 3, 1);
                        b.ops.push(Op::Relu);
                    }
                    b.max_pool();
                }
                b.avg_pool(1);
                let hidden = scaled(512, w);
                b.linear("fc1", hidden, true);
                b.ops.push(Op::Relu);
                b.linear("fc2", hidden, true);
                b.ops.push(Op::Relu);
                b.linear("fc3", k, false);
            }
            Arch::Resnet20 | Arch::Resnet18 => {
                let (stem, stages): (i64, &[(i64, usize, i64)]) = if spec.arch == Arch::Resnet20 {
                    (16, &[(16, 3, 1), (32, 3, 2), (64, 3, 2)])
                } else {
                    (64, &[(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)])
                };
                let conv1 = b.conv("conv1", stem, 3, 1);
                let norm1 = b.norm("norm1");
                b.ops.extend([Op::Layer(conv1), Op::Layer(norm1), Op::Relu]);
                for (s, &(channels, blocks, stride)) in stages.iter().enumerate() {
                    for i in 0..blocks {
                        let stride = if i == 0 { stride } else { 1 };
                        // A stride-2 block on a 1-pixel map would not shrink it further; keep the layer names.
                        let stride = if b.shape.1 < 2 { 1 } else { stride };
                        b.residual(&format!("layer{}.{i}", s + 1), channels, stride);
                    }
                }
                b.avg_pool(1);
                b.linear("fc", k, false);
            }
            Arch::Mlp => {
                b.linear("fc1", spec.hidden, false);
                b.ops.push(Op::Relu);
                b.linear("fc2", spec.hidden, true);
                b.ops.push(Op::Relu);
                b.linear("fc3", k, true);
            }
        }
        let Builder { layers, ops, .. } = b;
        if !spec.dropout.at.is_empty() {
            for name in &spec.dropout.at {
                if !layers.iter().any(|l| l.kind.type_name() == "linear" && &l.name == name) {
                    let linear: Vec<_> =
                        layers.iter().filter(|l| l.kind.type_name() == "linear").map(|l| l.name.as_str()).collect();
                    bail!(
                        "--dropout-at: '{name}' is not a linear layer of {}; expected one of: {}",
                        spec.arch,
                        linear.join(", ")
                    );
                }
            }
        }
        Ok(Model { spec: spec.clone(), vs, layers, ops })
    }

    /// The named layers, in forward order.
    pub fn layers(&self) -> &[ParamLayer] {
        &self.layers
    }

    /// Summary rows of the named layers.
    pub fn layer_infos(&self) -> Vec<LayerInfo> {
        self.layers
            .iter()
            .map(|l| LayerInfo {
                name: l.name.clone(),
                kind: l.kind,
                weight_shape: l.weight.size(),
                bias_shape: l.bias.size(),
                num_params: l.num_params(),
            })
            .collect()
    }

    /// Index of a layer by name, or an error that lists the valid names.
    pub fn layer_index(&self, name: &str) -> Result<usize> {
        self.layers.iter().position(|l| l.name == name).with_context(|| {
            let names: Vec<_> = self.layers.iter().map(|l| l.name.as_str()).collect();
            format!("model {} has no layer '{name}'; its layers are: {}", self.spec.arch, names.join(", "))
        })
    }

    pub fn num_params(&self) -> i64 {
        self.layers.iter().map(|l| l.num_params()).sum()
    }

    /// Logits for a batch of inputs shaped like the model's input (N, C, H, W) or (N, F).
    pub fn forward(&self, x: &Tensor, fwd: &mut Forward) -> Tensor {
        let mut h = if self.spec.arch.needs_images() { x.shallow_clone() } else { x.flatten(1, -1) };
        for op in &self.ops {
            h = match op {
                Op::Layer(i) => self.layers[*i].forward(*i, &h, fwd),
                Op::Sigmoid => h.sigmoid(),
                Op::Relu => h.relu(),
                Op::MaxPool2 => h.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
                Op::AvgPool(s) => h.adaptive_avg_pool2d([*s, *s]),
                Op::Flatten => h.flatten(1, -1),
                Op::Dropout(p) => fwd.dropout(&h, *p),
                Op::Residual(r) => {
                    let l = &self.layers;
                    let y = l[r.conv1].forward(r.conv1, &h, fwd);
                    let y = l[r.norm1].forward(r.norm1, &y, fwd).relu();
                    let y = l[r.conv2].forward(r.conv2, &y, fwd);
                    let y = l[r.norm2].forward(r.norm2, &y, fwd);
                    let s = match r.shortcut {
                        Some((c, n)) => {
                            let s = l[c].forward(c, &h, fwd);
                            l[n].forward(n, &s, fwd)
                        }
                        None => h.shallow_clone(),
                    };
                    (y + s).relu()
                }
            };
        }
        h
    }

    /// Evaluation-mode logits, without building a graph.
    pub fn predict(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| self.forward(x, &mut Forward::eval()))
    }

    /// Mean cross-entropy of logits against labels, in nats, computed in the logits' own precision.
    pub fn loss(logits: &Tensor, labels: &Tensor) -> Tensor {
        logits.log_softmax(-1, logits.kind()).nll_loss(labels)
    }

    /// Converts all parameters to f64 (for numerical checks against finite differences).
    pub fn to_double(&mut self) {
        self.vs.double();
        self.refresh_layer_handles();
    }

    /// Re-reads the layer tensors from the `VarStore` after a kind change or a load that replaced them.
    fn refresh_layer_handles(&mut self) {
        let vars = self.vs.variables();
        for l in &mut self.layers {
            l.weight = vars[&format!("{}.weight", l.name)].shallow_clone();
            l.bias = vars[&format!("{}.bias", l.name)].shallow_clone();
        }
    }

    /// Loads parameters from a safetensors checkpoint, checking that names and shapes match this model.
    pub fn load_weights(&mut self, path: &std::path::Path) -> Result<()> {
        let mut named = Tensor::read_safetensors(path)
            .with_context(|| format!("{}: not a readable safetensors checkpoint", path.display()))?;
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut vars = self.vs.variables();
        for (name, t) in &named {
            let Some(v) = vars.get_mut(name) else {
                bail!("{}: tensor '{name}' is not a parameter of model {}", path.display(), self.spec.arch);
            };
            if v.size() != t.size() {
                bail!(
                    "{}: tensor '{name}' has shape {:?}, model {} expects {:?}",
                    path.display(),
                    t.size(),
                    self.spec.arch,
                    v.size()
                );
            }
            tch::no_grad(|| v.copy_(t));
        }
        let mut names: Vec<&String> = vars.keys().collect();
        names.sort();
        for name in names {
            if !named.iter().any(|(n, _)| n == name) {
                bail!("{}: checkpoint has no tensor '{name}' that model {} needs", path.display(), self.spec.arch);
            }
        }
        Ok(())
    }

    /// Writes parameters to a safetensors file atomically (temporary name, then rename).
    pub fn save_weights(&self, path: &std::path::Path) -> Result<()> {
        let mut named: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        crate::io::atomic_write_with(path, |tmp| Tensor::write_safetensors(&named, tmp).map_err(anyhow::Error::from))
    }

    /// The same weights, in the same precision, with another dropout rate (dropout has no parameters), at the
    /// model's dropout sites.
    pub fn with_dropout(&self, rate: f64) -> Result<Model> {
        let mut spec = self.spec.clone();
        spec.dropout.rate = rate;
        let mut model = Model::new(&spec, 0)?;
        if self.kind() == Kind::Double {
            model.to_double();
        }
        let source = self.vs.variables();
        let mut target = model.vs.variables();
        tch::no_grad(|| {
            for (name, t) in target.iter_mut() {
                t.copy_(&source[name]);
            }
        });
        model.refresh_layer_handles();
        Ok(model)
    }

    /// The floating-point kind of the parameters.
    pub fn kind(&self) -> Kind {
        self.layers[0].weight.kind()
    }
}
