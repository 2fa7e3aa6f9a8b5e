//! Datasets: real data with train/test splits, class labels and latent attributes that are not the label.
//!
//! Every dataset is loaded into a [`Dataset`] of two [`Split`]s held in memory as tensors. Images are scaled to
//! [0, 1] and shaped (N, C, H, W); tabular rows are standardised on the training split and shaped (N, F).
//! Latent attributes are binary (0/1) columns; the image ones are computed from the images themselves and
//! binarised at the training median so both groups are about equally large.

use std::fmt;

use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Shape of one input sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum InputShape {
    Image { channels: i64, height: i64, width: i64 },
    Tabular { features: i64 },
}

impl InputShape {
    /// Number of scalars in one sample.
    pub fn numel(&self) -> i64 {
        match *self {
            InputShape::Image { channels, height, width } => channels * height * width,
            InputShape::Tabular { features } => features,
        }
    }

    /// The shape of a batch of `n` samples.
    pub fn batch(&self, n: i64) -> Vec<i64> {
        match *self {
            InputShape::Image { channels, height, width } => vec![n, channels, height, width],
            InputShape::Tabular { features } => vec![n, features],
        }
    }
}

impl fmt::Display for InputShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputShape::Image { channels, height, width } => write!(f, "{channels}x{height}x{width} images"),
            InputShape::Tabular { features } => write!(f, "{features} tabular features"),
        }
    }
}

/// A latent attribute: a binary property of each sample that is not its class label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeInfo {
    /// Short machine name, e.g. `thickness` or `sex`.
    pub name: String,
    /// What 1 means and how it was computed.
    pub description: String,
}

/// One split of a dataset, in memory.
#[derive(Debug)]
pub struct Split {
    /// (N, C, H, W) in [0, 1], or (N, F) standardised; f32.
    pub inputs: Tensor,
    /// (N,) class indices, i64.
    pub labels: Tensor,
    /// (N, A) binary latent attributes, i64, columns in the order of [`Dataset::attributes`].
    pub attributes: Tensor,
}

impl Split {
    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows at `indices` (an i64 tensor), as a new split.
    pub fn select(&self, indices: &Tensor) -> Split {
        Split {
            inputs: self.inputs.index_select(0, indices),
            labels: self.labels.index_select(0, indices),
            attributes: self.attributes.index_select(0, indices),
        }
    }
}

/// A dataset ready for training and measurement.
#[derive(Debug)]
pub struct Dataset {
    /// Registry name, e.g. `mnist`.
    pub name: String,
    pub input_shape: InputShape,
    /// Class names, in label order.
    pub classes: Vec<String>,
    pub attributes: Vec<AttributeInfo>,
    pub train: Split,
    pub test: Split,
}

impl Dataset {
    pub fn num_classes(&self) -> i64 {
        self.classes.len() as i64
    }

    /// Column of an attribute by name, or an error listing the valid names.
    pub fn attribute_index(&self, name: &str) -> anyhow::Result<usize> {
        self.attributes.iter().position(|a| a.name == name).ok_or_else(|| {
            let names: Vec<_> = self.attributes.iter().map(|a| a.name.as_str()).collect();
            anyhow::anyhow!("dataset {} has no attribute '{name}'; its attributes are: {}", self.name, names.join(", "))
        })
    }
}
