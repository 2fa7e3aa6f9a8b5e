//! Datasets: real data with train/test splits, class labels and latent attributes that are not the label.
//!
//! Every dataset is loaded into a [`Dataset`] of two [`Split`]s held in memory as tensors. Images are scaled to
//! [0, 1] and shaped (N, C, H, W); tabular rows are standardised on the training split and shaped (N, F).
//! Latent attributes are binary (0/1) columns; the image ones are computed from the images themselves and
//! binarised at the training median so both groups are about equally large.
//!
//! This file holds the core types and the stratified split; [`registry`] lists the named datasets, each defined
//! by a [`DatasetEntry`] in its reader's file (`mnist.rs`, `adult.rs`, ...) together with its loader and, for
//! fetchable ones, its [`fetch::Package`].

pub mod adult;
pub mod arrays_dataset;
pub mod attributes;
pub mod celeba;
pub mod cifar;
pub mod digits;
pub mod dogs_cats;
pub mod embedded;
pub mod fetch;
pub mod idx;
pub mod image_folder;
pub mod lfw;
pub mod mnist;
pub mod registry;

use std::fmt;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

pub use registry::{catalog, fetch, fetchable_names, load, DatasetEntry, DatasetInfo, Source, DATASETS};

use crate::rng::{self, Order};

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
    /// (N, A) f32: the continuous values the binary attributes were thresholded from (e.g. ink area, age in
    /// years); for attributes that are binary at the source (sex, CelebA's +1/-1 columns) the same 0/1 values.
    pub attribute_values: Tensor,
}

impl Split {
    /// A split whose raw attribute values are the binary attributes themselves.
    pub fn new(inputs: Tensor, labels: Tensor, attributes: Tensor) -> Split {
        let attribute_values = attributes.to_kind(tch::Kind::Float);
        Split { inputs, labels, attributes, attribute_values }
    }

    pub fn len(&self) -> i64 {
        self.labels.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The same tensors, shared.
    pub fn shallow_clone(&self) -> Split {
        Split {
            inputs: self.inputs.shallow_clone(),
            labels: self.labels.shallow_clone(),
            attributes: self.attributes.shallow_clone(),
            attribute_values: self.attribute_values.shallow_clone(),
        }
    }

    /// The rows at `indices` (an i64 tensor), as a new split.
    pub fn select(&self, indices: &Tensor) -> Split {
        Split {
            inputs: self.inputs.index_select(0, indices),
            labels: self.labels.index_select(0, indices),
            attributes: self.attributes.index_select(0, indices),
            attribute_values: self.attribute_values.index_select(0, indices),
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

    /// The `train` or `test` split.
    pub fn split(&self, name: &str) -> anyhow::Result<&Split> {
        match name {
            "train" => Ok(&self.train),
            "test" => Ok(&self.test),
            _ => anyhow::bail!("unknown split '{name}'; expected train or test"),
        }
    }

    /// Fraction of 1s of each attribute in a split, in attribute order.
    pub fn attribute_balance(split: &Split) -> Vec<f64> {
        if split.is_empty() {
            return vec![0.0; split.attributes.size().get(1).copied().unwrap_or(0) as usize];
        }
        let mean = split.attributes.to_kind(Kind::Double).mean_dim(0, false, Kind::Double);
        Vec::<f64>::try_from(&mean).unwrap_or_default()
    }

    /// Number of samples of each class in a split.
    pub fn class_counts(&self, split: &Split) -> Vec<i64> {
        let counts = split.labels.bincount::<Tensor>(None, self.num_classes());
        Vec::<i64>::try_from(&counts).unwrap_or_default()
    }

    /// Column of an attribute by name, or an error listing the valid names.
    pub fn attribute_index(&self, name: &str) -> anyhow::Result<usize> {
        self.attributes.iter().position(|a| a.name == name).ok_or_else(|| {
            let names: Vec<_> = self.attributes.iter().map(|a| a.name.as_str()).collect();
            anyhow::anyhow!("dataset {} has no attribute '{name}'; its attributes are: {}", self.name, names.join(", "))
        })
    }
}

/// Seed of the stratified train/test splits of datasets without an official split (digits, LFW crops, CelebA
/// folders without a partition file, array folders without a test split).
pub const SPLIT_SEED: u64 = 2022;

/// Fraction of each class that goes to the test split when there is no official split.
pub const TEST_FRACTION: f64 = 0.2;

/// A seeded stratified split: within each class, samples are ordered by their [`Order::Split`] key and the first
/// `round(test_fraction * class size)` go to the test split. Returns (train, test) indices, each ascending.
pub fn stratified_split(labels: &[i64], test_fraction: f64, seed: u64) -> (Vec<i64>, Vec<i64>) {
    let mut classes: Vec<i64> = labels.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for c in classes {
        let mut members: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        members.sort_by_key(|&i| (rng::order_key(seed, Order::Split, i as u64), i));
        let k = (test_fraction * members.len() as f64).round() as usize;
        test.extend(members[..k].iter().map(|&i| i as i64));
        train.extend(members[k..].iter().map(|&i| i as i64));
    }
    train.sort_unstable();
    test.sort_unstable();
    (train, test)
}

/// An image dataset from (N, C, H, W) f32 images in [0, 1] and (N,) i64 labels of both splits; the latent
/// attributes are computed from the images (see [`attributes`]) and binarised at the training medians.
pub fn image_dataset(
    name: &str,
    classes: Vec<String>,
    train: (Tensor, Tensor),
    test: (Tensor, Tensor),
) -> Result<Dataset> {
    let size = train.0.size();
    let [_, channels, height, width] = size[..] else { bail!("{name}: expected (N, C, H, W) images, got {size:?}") };
    let infos = attributes::image_attribute_infos(channels);
    let b = attributes::binarise_splits(
        attributes::image_values(&train.0)?,
        attributes::image_values(&test.0)?,
        infos.len(),
    );
    Ok(Dataset {
        name: name.to_string(),
        input_shape: InputShape::Image { channels, height, width },
        classes,
        attributes: infos,
        train: Split { inputs: train.0, labels: train.1, attributes: b.train.0, attribute_values: b.train.1 },
        test: Split { inputs: test.0, labels: test.1, attributes: b.test.0, attribute_values: b.test.1 },
    })
}

/// Splits (x, y) by a seeded stratified split into ((x, y) train, (x, y) test).
pub fn split_stratified(x: Tensor, y: Tensor, seed: u64) -> Result<((Tensor, Tensor), (Tensor, Tensor))> {
    let labels = Vec::<i64>::try_from(&y)?;
    let (train, test) = stratified_split(&labels, TEST_FRACTION, seed);
    let (train, test) = (Tensor::from_slice(&train), Tensor::from_slice(&test));
    Ok(((x.index_select(0, &train), y.index_select(0, &train)), (x.index_select(0, &test), y.index_select(0, &test))))
}

/// Class names "0", "1", ..., for datasets whose classes are numbers.
fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// The optional descriptor of a user's dataset (`dataset.json` of an arrays or image folder): its fields, or the
/// defaults when there is no such file. A file that does not parse is an error naming it.
pub(crate) fn optional_descriptor<T: serde::de::DeserializeOwned + Default>(
    path: &std::path::Path,
) -> anyhow::Result<T> {
    use anyhow::Context;
    if !path.is_file() {
        return Ok(T::default());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_split_is_seeded_balanced_and_disjoint() {
        let labels: Vec<i64> = (0..100).map(|i| i % 2 + (i >= 90) as i64).collect();
        let (train, test) = stratified_split(&labels, 0.2, SPLIT_SEED);
        assert_eq!(train.len() + test.len(), 100);
        let mut all: Vec<i64> = train.iter().chain(&test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        for c in 0..3 {
            let total = labels.iter().filter(|&&l| l == c).count() as f64;
            let in_test = test.iter().filter(|&&i| labels[i as usize] == c).count() as f64;
            assert_eq!(in_test, (0.2 * total).round(), "class {c}");
        }
        assert_eq!(stratified_split(&labels, 0.2, SPLIT_SEED), (train.clone(), test.clone()));
        assert_ne!(stratified_split(&labels, 0.2, SPLIT_SEED + 1).1, test);
    }
}
