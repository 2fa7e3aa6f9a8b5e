//! The architectures: one file per family, each defining its [`ArchDef`]s (name, description and a function that
//! builds the architecture through the shared [`Builder`]). [`Arch::def`] maps each [`Arch`] to its definition.
//!
//! Adding an architecture: a file here with its `ArchDef` and build function, then a variant of [`Arch`] with its
//! entry in [`Arch::ALL`] and in [`Arch::def`].

mod alexnet;
mod lenet;
mod mlp;
mod resnet;
mod vgg;

use std::fmt;
use std::str::FromStr;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::builder::Builder;
use super::ModelSpec;

/// The architectures gradleak builds. The serialised name is the lowercase variant name, the same as
/// [`Arch::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// The LeNet of the DLG paper (Zhu et al., 2019): three 5x5 convolutions with sigmoid, one linear layer.
    Lenet,
    /// LeNet-5 with ReLU and max-pooling.
    Lenet5,
    /// AlexNet adapted to small inputs (3x3 convolutions, 2x2 pooling); channel width scales with `width`.
    Alexnet,
    /// VGG-11 (configuration "A") without batch normalisation; channel width scales with `width`.
    Vgg11,
    /// CIFAR-style ResNet-20 (3 stages of 3 basic blocks, 16/32/64 channels), GroupNorm.
    Resnet20,
    /// ResNet-18 with a 3x3 stem for small inputs (4 stages of 2 basic blocks, 64..512 channels), GroupNorm.
    Resnet18,
    /// Multi-layer perceptron: two ReLU hidden layers of `hidden` units.
    Mlp,
    /// A TorchScript module loaded from a file (`torchscript:PATH`, see `models/torchscript.rs`); not built here.
    Torchscript,
}

/// What defines an architecture.
pub(in crate::models) struct ArchDef {
    /// Command-line name, e.g. `lenet5`.
    pub name: &'static str,
    /// One line for `gradleak models`.
    pub description: &'static str,
    /// Whether it needs image inputs (false: it takes tabular rows, and images flattened).
    pub needs_images: bool,
    /// Adds the layers and ops, in forward order, for `spec` (input shape, classes, width, hidden units).
    pub build: fn(&mut Builder, &ModelSpec),
}

impl Arch {
    pub const ALL: [Arch; 7] =
        [Arch::Lenet, Arch::Lenet5, Arch::Alexnet, Arch::Vgg11, Arch::Resnet20, Arch::Resnet18, Arch::Mlp];

    /// Formats of models loaded from a file, named `FORMAT:PATH`: the one place to add another format.
    pub const FILE_FORMATS: [Arch; 1] = [Arch::Torchscript];

    /// Whether the model is loaded from a file (`FORMAT:PATH`) rather than built.
    pub fn from_file(self) -> bool {
        Arch::FILE_FORMATS.contains(&self)
    }

    /// The definition of a built-in architecture (None for a file format).
    pub(in crate::models) fn def(self) -> Option<&'static ArchDef> {
        Some(match self {
            Arch::Lenet => &lenet::LENET,
            Arch::Lenet5 => &lenet::LENET5,
            Arch::Alexnet => &alexnet::ALEXNET,
            Arch::Vgg11 => &vgg::VGG11,
            Arch::Resnet20 => &resnet::RESNET20,
            Arch::Resnet18 => &resnet::RESNET18,
            Arch::Mlp => &mlp::MLP,
            Arch::Torchscript => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Torchscript => "torchscript",
            _ => self.def().map_or("", |d| d.name),
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Arch::Torchscript => "a module exported with torch.jit.script or torch.jit.trace (torchscript:PATH)",
            _ => self.def().map_or("", |d| d.description),
        }
    }

    /// Whether the architecture needs image inputs (the built-ins except the MLP; a file's module takes the
    /// dataset's inputs as they are, checked when it is loaded).
    pub fn needs_images(self) -> bool {
        self.def().is_some_and(|d| d.needs_images)
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
            let files: Vec<_> = Arch::FILE_FORMATS.iter().map(|a| format!("{}:PATH", a.name())).collect();
            format!("unknown model '{s}'; expected one of: {}, or {}", names.join(", "), files.join(", "))
        })
    }
}

/// `channels` scaled by the width multiplier, at least 1.
fn scaled(channels: i64, width: f64) -> i64 {
    ((channels as f64 * width).round() as i64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_match_the_serialised_names() {
        for a in Arch::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), serde_json::json!(a.name()));
            assert_eq!(a.name().parse::<Arch>().unwrap(), a);
            assert_eq!(Arch::ALL.iter().filter(|b| b.name() == a.name()).count(), 1);
        }
    }
}
