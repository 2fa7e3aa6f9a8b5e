//! Model families: LeNet (DLG's sigmoid variant and a ReLU LeNet-5), AlexNet and VGG-11 adapted to small inputs,
//! CIFAR-style ResNet-20 and ResNet-18 with GroupNorm, and an MLP for tabular data.
//!
//! Every layer with trainable parameters has a stable, readable name (`conv1`, `layer2.0.conv1`, `fc3`, ...);
//! its parameters live in the `VarStore` as `<name>.weight` and `<name>.bias`. A model is a flat list of ops,
//! so the forward pass reads like the architecture and every architecture shares one recording mechanism.
//!
//! All architectures take any of gradleak's input sizes (8x8 to 32x32, grey or colour): convolutions use "same"
//! padding, a 2x2 max-pool is skipped once the feature map is 1 pixel wide, and the classifiers after the
//! convolutions see a fixed size (adaptive average pooling) or a size computed from the input.
//!
//! A model can also come from a file of an exported format, named `FORMAT:PATH` ([`Arch::FILE_FORMATS`]): today
//! TorchScript (`torchscript.rs`), whose named layers are the modules that own parameters.
//!
//! Layout: `arch/` holds one file per family with the function that builds it, `builder.rs` the ops and the
//! builder every architecture goes through, `layers.rs` the named layers and the recording forward pass,
//! `torchscript.rs` the TorchScript loader.

mod arch;
mod builder;
pub mod layers;
mod torchscript;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

pub use arch::Arch;
pub use layers::{flat_gradient, ConvGeometry, Forward, LayerKind, LayerRecord, ParamLayer};
pub use torchscript::ScriptModule;

use crate::data::InputShape;
use builder::{Builder, Op};

/// Where dropout goes and how strong it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DropoutSpec {
    /// Probability of zeroing an activation, in [0, 1). 0 disables dropout.
    pub rate: f64,
    /// Names of the linear layers whose *input* gets dropout. Empty: the architecture's default sites, the inputs
    /// of fc2 and fc3 (LeNet-5, MLP) or of fc1 and fc2 (AlexNet, VGG-11); LeNet and the ResNets have none.
    #[serde(default)]
    pub at: Vec<String>,
}

/// Everything needed to rebuild a model: stored beside every checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    pub input: InputShape,
    pub num_classes: i64,
    /// Channel multiplier for AlexNet and VGG (1.0 = the published convolution widths; it also scales their
    /// hidden linear layers, 1024 and 512 units at 1.0).
    #[serde(default = "default_width")]
    pub width: f64,
    /// Hidden units of the MLP.
    #[serde(default = "default_hidden")]
    pub hidden: i64,
    #[serde(default)]
    pub dropout: DropoutSpec,
    /// The file of a model loaded from a file (`torchscript:PATH`); None for a built-in architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<ModelFile>,
}

/// The file a model is loaded from, with its checksum: a changed file is another model (training runs and audit
/// cells are keyed by the specification).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    pub path: PathBuf,
    pub sha256: String,
}

impl ModelFile {
    /// The file at `path` with its current checksum.
    pub fn of(path: &Path) -> Result<ModelFile> {
        let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read the model file", path.display()))?;
        Ok(ModelFile { path: path.to_path_buf(), sha256: crate::data::fetch::sha256_hex(&bytes) })
    }

    /// Errors when the file changed since the specification was made.
    fn check(&self) -> Result<()> {
        let now = ModelFile::of(&self.path)?;
        if now.sha256 != self.sha256 {
            bail!(
                "{}: the file changed since this model was specified (sha256 {}, recorded {}); train it again",
                self.path.display(),
                now.sha256,
                self.sha256
            );
        }
        Ok(())
    }
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
            file: None,
        }
    }

    /// The model named as `--model` and `model =` take it: a built-in architecture (`lenet5`) or a file of an
    /// exported format (`torchscript:PATH`), for inputs of `input` and `num_classes` classes.
    pub fn from_name(name: &str, input: InputShape, num_classes: i64) -> Result<Self> {
        let Some((format, path)) = name.split_once(':') else {
            return Ok(ModelSpec::new(name.parse()?, input, num_classes));
        };
        let Some(arch) = Arch::FILE_FORMATS.into_iter().find(|a| a.name() == format) else {
            let formats: Vec<_> = Arch::FILE_FORMATS.iter().map(|a| format!("{}:PATH", a.name())).collect();
            bail!("unknown model format '{format}' in '{name}'; expected {}", formats.join(", "));
        };
        let mut spec = ModelSpec::new(arch, input, num_classes);
        spec.file = Some(ModelFile::of(Path::new(path))?);
        Ok(spec)
    }

    /// Whether the model works on images (what the reconstruction attacks need): a built-in image architecture,
    /// or a model from a file on image inputs.
    pub fn takes_images(&self) -> bool {
        self.arch.needs_images() || (self.arch.from_file() && matches!(self.input, InputShape::Image { .. }))
    }

    /// Checks a model name without loading anything but the file's bytes: a built-in architecture, or a known
    /// format with a readable file.
    pub fn check_name(name: &str) -> Result<()> {
        ModelSpec::from_name(name, InputShape::Tabular { features: 1 }, 2).map(|_| ())
    }

    /// The model's name as `--model` takes it: `lenet5`, `torchscript:PATH`.
    pub fn name(&self) -> String {
        match &self.file {
            Some(f) => format!("{}:{}", self.arch, f.path.display()),
            None => self.arch.to_string(),
        }
    }

    /// Checks ranges and that the architecture fits the input.
    pub fn validate(&self) -> Result<()> {
        if self.arch.from_file() != self.file.is_some() {
            bail!("model {}: a file is given exactly for a model loaded from a file", self.arch);
        }
        if self.arch.from_file() && self.dropout.rate != 0.0 {
            crate::param_bail!(
                "dropout",
                "{} is a {} model: its dropout, if any, is part of its module; got {}",
                self.name(),
                self.arch,
                self.dropout.rate
            );
        }
        if self.arch.needs_images() && !matches!(self.input, InputShape::Image { .. }) {
            crate::param_bail!(
                "arch",
                "{} needs image inputs, but the data is tabular ({}); use mlp",
                self.arch,
                self.input
            );
        }
        if !(self.dropout.rate >= 0.0 && self.dropout.rate < 1.0) {
            crate::param_bail!("dropout", "must be in [0, 1), got {}", self.dropout.rate);
        }
        if !(self.width.is_finite() && self.width > 0.0 && self.width <= 16.0) {
            crate::param_bail!("width", "must be in (0, 16], got {}", self.width);
        }
        if !(1..=1 << 16).contains(&self.hidden) {
            crate::param_bail!("hidden", "must be in [1, 65536], got {}", self.hidden);
        }
        if self.num_classes < 2 {
            bail!("a classifier needs at least 2 classes, got {}", self.num_classes);
        }
        Ok(())
    }
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
    /// Every parameter (variable name, shape) of a module of a model loaded from a file; empty for built-in layers
    /// (a weight and a bias).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<(String, Vec<i64>)>,
}

/// A built model: its parameters (in a `VarStore`), its named layers and its forward program.
pub struct Model {
    pub spec: ModelSpec,
    pub vs: nn::VarStore,
    layers: Vec<ParamLayer>,
    program: Program,
}

/// How the logits are computed.
enum Program {
    /// A built-in architecture: ops over the named layers, which record their inputs for per-sample gradients.
    Ops(Vec<Op>),
    /// A loaded module whose graph libtorch runs and differentiates; gradleak sees only its parameters.
    Script(ScriptModule),
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model").field("spec", &self.spec).field("layers", &self.layers.len()).finish()
    }
}

impl Model {
    /// Builds a model on the CPU (f32) with PyTorch's default initialisation, drawn from a generator seeded by
    /// `seed`: the same seed gives the same weights.
    ///
    /// A model from a file (`torchscript:PATH`) has the file's weights, whatever the seed; loading checks that
    /// the file is the one specified and that its forward pass fits the input shape and class count.
    pub fn new(spec: &ModelSpec, seed: u64) -> Result<Model> {
        spec.validate()?;
        let vs = nn::VarStore::new(Device::Cpu);
        let (layers, program) = match (spec.arch.def(), &spec.file) {
            (Some(def), _) => {
                let mut b = Builder::new(vs.root(), spec, seed);
                (def.build)(&mut b, spec);
                let (layers, ops) = b.finish(spec)?;
                (layers, Program::Ops(ops))
            }
            (None, Some(file)) => {
                file.check()?;
                let (module, layers) = torchscript::load(&file.path, &vs, spec.input, spec.num_classes)?;
                (layers, Program::Script(module))
            }
            (None, None) => bail!("model {} needs a file", spec.arch),
        };
        let model = Model { spec: spec.clone(), vs, layers, program };
        if let Some(file) = &spec.file {
            model.check_finite(&file.path)?;
        }
        Ok(model)
    }

    /// The loaded module, for a model from a TorchScript file.
    pub fn script(&self) -> Option<&ScriptModule> {
        match &self.program {
            Program::Script(m) => Some(m),
            Program::Ops(_) => None,
        }
    }

    /// What a report should say about how this model's per-sample gradients were computed (nothing for the
    /// built-in architectures, whose layers have closed-form per-sample gradients).
    pub fn gradient_notes(&self) -> Vec<String> {
        match self.script() {
            Some(_) => vec![format!(
                "{} is a TorchScript model: its per-sample gradients come from one backward pass per sample, in \
                 evaluation mode (BatchNorm uses its frozen running statistics, dropout is off)",
                self.spec.name()
            )],
            None => Vec::new(),
        }
    }

    /// Saves a TorchScript model back as TorchScript (parameters and buffers, e.g. after training).
    pub fn save_torchscript(&self, path: &std::path::Path) -> Result<()> {
        match self.script() {
            Some(m) => m.save(path),
            None => bail!("model {} is built by gradleak, not loaded from TorchScript", self.spec.arch),
        }
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
                weight_shape: l.weight().size(),
                bias_shape: l.bias().map(|b| b.size()).unwrap_or_default(),
                num_params: l.num_params(),
                parameters: match l.kind {
                    LayerKind::Module => l.params.iter().map(|(n, t)| (n.clone(), t.size())).collect(),
                    _ => Vec::new(),
                },
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
    ///
    /// A loaded module's forward pass was checked on the input shape when it was loaded; in training mode it can
    /// still fail (BatchNorm on a batch of one), which [`Model::try_forward`] reports.
    pub fn forward(&self, x: &Tensor, fwd: &mut Forward) -> Tensor {
        self.try_forward(x, fwd).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// [`Model::forward`], with the error of a loaded module's forward pass.
    pub fn try_forward(&self, x: &Tensor, fwd: &mut Forward) -> Result<Tensor> {
        match &self.program {
            Program::Ops(ops) => {
                let mut h = if self.spec.arch.needs_images() { x.shallow_clone() } else { x.flatten(1, -1) };
                for op in ops {
                    h = op.apply(&h, &self.layers, fwd);
                }
                Ok(h)
            }
            // The module's own dropout and BatchNorm follow the training flag (no per-layer recording).
            Program::Script(m) => m.forward(x, fwd.train),
        }
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
        match &self.program {
            // Parameters and buffers (BatchNorm statistics), in place.
            Program::Script(m) => m.to_kind(Kind::Double),
            Program::Ops(_) => self.vs.double(),
        }
        self.refresh_layer_handles();
    }

    /// Re-reads the layer tensors from the `VarStore` after a kind change or a load that replaced them.
    fn refresh_layer_handles(&mut self) {
        let vars = self.vs.variables();
        for l in &mut self.layers {
            for (var, t) in &mut l.params {
                *t = vars[var.as_str()].shallow_clone();
            }
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
            // Integers would be converted to other weights without a word: a checkpoint is written in the
            // parameters' own type.
            if t.kind() != v.kind() {
                bail!(
                    "{}: tensor '{name}' is stored as {:?}, model {} expects {:?}",
                    path.display(),
                    t.kind(),
                    self.spec.arch,
                    v.kind()
                );
            }
            check_finite_tensor(path, name, t)?;
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

    /// Refuses a model with a NaN or infinite parameter or buffer (`source` names where it came from): every
    /// measurement of it would be NaN, or silently wrong.
    pub fn check_finite(&self, source: &std::path::Path) -> Result<()> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, t) in &vars {
            check_finite_tensor(source, name, t)?;
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
        if let Some(m) = self.script() {
            crate::param_bail!(
                "dropout",
                "{} is a TorchScript model: gradleak cannot add dropout ({rate}) to its module",
                m.path().display()
            );
        }
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
        self.layers[0].weight().kind()
    }
}

/// A checkpoint's tensor `name` must be finite.
fn check_finite_tensor(path: &std::path::Path, name: &str, t: &Tensor) -> Result<()> {
    if t.is_floating_point() {
        let bad = t.isfinite().logical_not().sum(tch::Kind::Int64).int64_value(&[]);
        if bad > 0 {
            bail!(
                "{}: tensor '{name}' holds {bad} NaN or infinite value{}; a model with them cannot be measured (did \
                 its training diverge?)",
                path.display(),
                if bad == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}
