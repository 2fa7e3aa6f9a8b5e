//! The `embedded` dataset: a stratified subset of Fashion-MNIST compiled into the binary, so that gradleak runs
//! with no fetch at all. `scripts/make-embedded-subset.py` builds the four gzip IDX files in
//! `assets/fashion-mnist-subset/` from the Debian package `dataset-fashion-mnist`: the first 500 images of each
//! class of the official training set and the first 100 of each class of the official test set (5,000 + 1,000).
//! Fashion-MNIST is under the MIT licence; see `assets/README.md`.

use anyhow::{Context, Result};

use super::mnist::fashion_classes;
use super::registry::{DatasetEntry, Source};
use super::{attributes, idx, Dataset, InputShape};

pub const ENTRY: DatasetEntry = DatasetEntry {
    name: "embedded",
    description: "Fashion-MNIST subset compiled into gradleak: 500 train + 100 test images per class",
    source: Source::BuiltIn("built in (assets/fashion-mnist-subset, from Debian package dataset-fashion-mnist)"),
    licence: "MIT",
    input_shape: InputShape::Image { channels: 1, height: 28, width: 28 },
    classes: fashion_classes,
    attributes: attributes::grey_attribute_infos,
    counts: Some((5_000, 1_000)),
    split: "first 500 (train) / 100 (test) images of each class of the official splits",
    load: |_, _| load(),
};

const TRAIN_IMAGES: &[u8] = include_bytes!("../../assets/fashion-mnist-subset/train-images-idx3-ubyte.gz");
const TRAIN_LABELS: &[u8] = include_bytes!("../../assets/fashion-mnist-subset/train-labels-idx1-ubyte.gz");
const TEST_IMAGES: &[u8] = include_bytes!("../../assets/fashion-mnist-subset/t10k-images-idx3-ubyte.gz");
const TEST_LABELS: &[u8] = include_bytes!("../../assets/fashion-mnist-subset/t10k-labels-idx1-ubyte.gz");

/// SHA-256 of the four embedded files, as printed by `scripts/make-embedded-subset.py`.
pub const CHECKSUMS: [(&str, &str); 4] = [
    ("train-images-idx3-ubyte.gz", "b240910d2f9a3dad10993db98ccd0cce3dd9149f4e70b24a0b03b57d41908dae"),
    ("train-labels-idx1-ubyte.gz", "ae0d767c2f6dbbdea3abe9cbf56dacf5c2069a5513b4a9e0ff10b1923bc33661"),
    ("t10k-images-idx3-ubyte.gz", "04516f9d284037ea6cce7310aafaed77e8f8c1547f1127ef4aa754c46f47f8f5"),
    ("t10k-labels-idx1-ubyte.gz", "540f63e62544edb8406d1292429a47e6cdb42e4fa2eaa233f072b34e1f6bc46c"),
];

/// The embedded files in the order of [`CHECKSUMS`].
pub fn files() -> [&'static [u8]; 4] {
    [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS]
}

/// Loads the embedded Fashion-MNIST subset.
pub fn load() -> Result<Dataset> {
    let parse = |bytes: &[u8], ndims, name: &str| {
        idx::parse_idx(bytes.to_vec(), ndims).with_context(|| format!("embedded {name}"))
    };
    let pair = |images: &[u8], labels: &[u8], prefix: &str| {
        let x = parse(images, 3, &format!("{prefix}-images-idx3-ubyte.gz"))?;
        let y = parse(labels, 1, &format!("{prefix}-labels-idx1-ubyte.gz"))?;
        idx::images_and_labels(&x, &y, &format!("embedded {prefix} files"), 10)
    };
    let train = pair(TRAIN_IMAGES, TRAIN_LABELS, "train")?;
    let test = pair(TEST_IMAGES, TEST_LABELS, "t10k")?;
    super::image_dataset("embedded", fashion_classes(), train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_files_match_their_recorded_checksums() {
        for ((name, sha), bytes) in CHECKSUMS.iter().zip(files()) {
            assert_eq!(super::super::fetch::sha256_hex(bytes), *sha, "{name}");
        }
    }

    #[test]
    fn embedded_subset_is_stratified_and_balanced() {
        let d = load().unwrap();
        assert_eq!(d.train.inputs.size(), vec![5000, 1, 28, 28]);
        assert_eq!(d.test.inputs.size(), vec![1000, 1, 28, 28]);
        assert_eq!(d.class_counts(&d.train), vec![500; 10]);
        assert_eq!(d.class_counts(&d.test), vec![100; 10]);
        let (lo, hi) = (d.train.inputs.min().double_value(&[]), d.train.inputs.max().double_value(&[]));
        assert!(lo >= 0.0 && hi <= 1.0 && hi > 0.99);
        for (j, frac) in Dataset::attribute_balance(&d.train).iter().enumerate() {
            assert!((0.4..=0.6).contains(frac), "{}: {frac}", d.attributes[j].name);
        }
        assert_eq!(d.train.attribute_values.size(), vec![5000, 5]);
    }
}
