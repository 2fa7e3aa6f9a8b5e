//! TorchScript models: a module exported in Python with `torch.jit.script` or `torch.jit.trace` and saved as a
//! `.pt` file (`model = "torchscript:PATH"`).
//!
//! TorchScript is the one exported format whose graph libtorch's C++ autograd differentiates, and twice: the
//! attacks and the sensitivity analysis differentiate the parameter gradients with respect to the input.
//!
//! The named layers are the modules that own parameters, named by their module path (`features.0`,
//! `block.conv1`), in the module's registration order; a parameter of the root module is a layer of its own. The
//! parameters are the module's own tensors, registered in a `VarStore` under their state-dict names, so training
//! and checkpoints work as for the built-in models. Buffers (BatchNorm's running statistics) live in the module
//! only: they are saved by [`ScriptModule::save`] (a TorchScript file), not in safetensors checkpoints.
//!
//! gradleak cannot see inside the graph, so it has no per-layer recording: per-sample gradients come from one
//! backward pass per sample (see `gradients::per_sample`), in evaluation mode.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Result};
use tch::{nn, CModule, Device, Kind, Tensor};

use super::layers::{short_name, sub_path, LayerKind, ParamLayer};
use crate::data::InputShape;

/// A loaded TorchScript module. libtorch switches a module's mode in place, so the module sits behind a lock
/// together with the mode it is in.
#[derive(Debug)]
pub struct ScriptModule {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    module: CModule,
    train: bool,
}

/// Loads `path`, registers its parameters in `vs` and returns the module and its named layers. Checks that the
/// forward pass takes batches of `input` and returns logits of `num_classes` classes.
pub(super) fn load(
    path: &Path,
    vs: &nn::VarStore,
    input: InputShape,
    num_classes: i64,
) -> Result<(ScriptModule, Vec<ParamLayer>)> {
    if !path.is_file() {
        bail!("{}: no such TorchScript file", path.display());
    }
    // The optimising graph executor replaces parts of the graph by fused, differentiable subgraphs after a few
    // runs; the plain interpreter records every op for autograd, which double backward needs.
    tch::jit::set_graph_executor_optimize(false);
    let module = CModule::load_on_device(path, Device::Cpu)
        .map_err(|e| anyhow!("{}: not a TorchScript file ({})", path.display(), one_line(&e.to_string())))?;
    let named = module
        .named_parameters()
        .map_err(|e| anyhow!("{}: cannot read its parameters ({})", path.display(), one_line(&e.to_string())))?;
    if named.is_empty() {
        bail!("{}: the TorchScript module has no parameters, so it shares no gradient", path.display());
    }
    let layers = group_layers(vs, named);
    let kind = layers[0].weight().kind();
    if layers.iter().flat_map(|l| l.tensors()).any(|t| t.kind() != kind || !t.is_floating_point()) {
        bail!("{}: its parameters mix precisions; export it in one floating-point precision", path.display());
    }
    let script = ScriptModule { path: path.to_path_buf(), state: Mutex::new(State { module, train: true }) };
    script.check_shapes(input, num_classes, kind)?;
    Ok((script, layers))
}

/// Groups the parameters by owning module (`a.b.weight` -> layer `a.b`), in the module's order; within a layer,
/// `weight` first and `bias` last.
fn group_layers(vs: &nn::VarStore, named: Vec<(String, Tensor)>) -> Vec<ParamLayer> {
    let mut layers: Vec<ParamLayer> = Vec::new();
    for (var, tensor) in named {
        let (owner, param) = var.rsplit_once('.').unwrap_or((var.as_str(), var.as_str()));
        let path = if owner == var { vs.root() } else { sub_path(&vs.root(), owner) };
        // The VarStore keeps the module's own tensor (no copy), so optimiser steps change the module.
        let tensor = path.add(param, tensor, true);
        match layers.iter_mut().find(|l| l.name == owner) {
            Some(l) => l.params.push((var.clone(), tensor)),
            None => layers.push(ParamLayer {
                name: owner.to_string(),
                kind: LayerKind::Module,
                params: vec![(var, tensor)],
            }),
        }
    }
    for l in &mut layers {
        let rank = |var: &str| match short_name(var) {
            "weight" => 0,
            "bias" => 2,
            _ => 1,
        };
        l.params.sort_by_key(|(var, _)| rank(var));
    }
    layers
}

impl ScriptModule {
    /// The file the module was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Logits of the module in training mode (BatchNorm on batch statistics, dropout on) or evaluation mode.
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.run(x, train)
            .map_err(|e| anyhow!("{}: forward failed ({})", self.path.display(), one_line(&e.to_string())))
    }

    fn run(&self, x: &Tensor, train: bool) -> Result<Tensor, tch::TchError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.train != train {
            if train {
                state.module.f_set_train()?;
            } else {
                state.module.f_set_eval()?;
            }
            state.train = train;
        }
        state.module.forward_ts(&[x])
    }

    /// Converts parameters and buffers to `kind`, in place (the `VarStore` handles stay valid).
    pub fn to_kind(&self, kind: Kind) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.module.to(Device::Cpu, kind, false);
    }

    /// Saves the module, parameters and buffers, as TorchScript (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        crate::io::atomic_write_with(path, |tmp| state.module.save(tmp).map_err(anyhow::Error::from))
    }

    /// One forward pass on zeros of one and of three samples, in evaluation mode: the dataset's inputs must go in
    /// and a logit vector of its class count must come out.
    fn check_shapes(&self, input: InputShape, num_classes: i64, kind: Kind) -> Result<()> {
        for n in [1, 3] {
            let shape = input.batch(n);
            let x = Tensor::zeros(shape.as_slice(), (kind, Device::Cpu));
            let y = tch::no_grad(|| self.run(&x, false)).map_err(|e| {
                anyhow!(
                    "{}: its forward rejects the dataset's input ({input}, batch shape {shape:?}): {}",
                    self.path.display(),
                    one_line(&e.to_string())
                )
            })?;
            if y.size() != [n, num_classes] {
                bail!(
                    "{}: output shape {:?} for input batch shape {shape:?}; expected [{n}, {num_classes}] (logits of the \
                     dataset's {num_classes} classes)",
                    self.path.display(),
                    y.size()
                );
            }
        }
        Ok(())
    }
}

/// The informative line of a libtorch error (TorchScript errors carry a traceback; the last `...Error: ...` line
/// says what went wrong).
fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let line = lines.iter().rev().find(|l| l.contains("Error: ")).or(lines.first()).copied().unwrap_or("");
    line.to_string()
}
