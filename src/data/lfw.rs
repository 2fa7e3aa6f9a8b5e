//! scikit-image's LFW subset (`lfw_subset.npy`): float64 (200, 25, 25) grey crops in [0, 1]; the first 100 are
//! faces (label 1), the other 100 non-faces cut from the backgrounds of the same photos (label 0). No identities
//! or attributes come with it, so the latent attributes are computed from the pixels like those of the digit
//! datasets (bright pixels play the role of ink). Split: seeded stratified 80/20 (160 train, 40 test).

use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::fetch::{file, Package, Registry};
use super::registry::{DatasetEntry, Source};
use super::{attributes, Dataset, InputShape};

pub const ENTRY: DatasetEntry = DatasetEntry {
    name: "lfw-crops",
    description: "scikit-image's LFW subset: 25x25 grey crops, 100 faces and 100 non-faces",
    source: Source::Package(&PACKAGE),
    licence: "BSD-3-Clause (scikit-image); images from LFW",
    input_shape: InputShape::Image { channels: 1, height: 25, width: 25 },
    classes,
    attributes: attributes::grey_attribute_infos,
    counts: Some((160, 40)),
    split: "seeded stratified 80/20 (seed 2022)",
    load: |dir, name| load(&dir.join("lfw_subset.npy"), name),
};

pub const PACKAGE: Package = Package {
    registry: Registry::Pypi,
    name: "scikit-image",
    version: "0.26.0",
    files: &[file(
        "skimage/data/lfw_subset.npy",
        "lfw_subset.npy",
        1_000_080,
        "9560ec2f5edfac01973f63a8a99d00053fecd11e21877e18038fbe500f8e872c",
    )],
};

pub fn classes() -> Vec<String> {
    vec!["non-face".to_string(), "face".to_string()]
}

/// Images (N, 1, H, W) and labels from an (N, H, W) array whose first half are faces.
pub fn from_array(a: &Tensor, what: &str) -> Result<(Tensor, Tensor)> {
    let size = a.size();
    let [n, h, w] = size[..] else { bail!("{what}: shape {size:?}, expected (N, H, W) grey images") };
    if n == 0 || n % 2 != 0 {
        bail!("{what}: {n} images, expected an even number (first half faces, second half non-faces)");
    }
    let x = a.to_kind(Kind::Float).reshape([n, 1, h, w]);
    let (lo, hi) = (x.min().double_value(&[]), x.max().double_value(&[]));
    if !(lo >= 0.0 && hi <= 1.0) {
        bail!("{what}: values span {lo}..{hi}, expected 0..1");
    }
    let y = Tensor::cat(
        &[
            Tensor::ones([n / 2], (Kind::Int64, tch::Device::Cpu)),
            Tensor::zeros([n / 2], (Kind::Int64, tch::Device::Cpu)),
        ],
        0,
    );
    Ok((x, y))
}

/// Loads `lfw_subset.npy`.
pub fn load(path: &Path, name: &str) -> Result<Dataset> {
    let a = crate::arrays::read_npy(path)?;
    let (x, y) = from_array(&a, &path.display().to_string()).with_context(|| "LFW crops".to_string())?;
    let (train, test) = super::split_stratified(x, y, super::SPLIT_SEED)?;
    super::image_dataset(name, classes(), train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_fixture_and_checks_shape_and_range() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lfw_subset.npy");
        let a = Tensor::rand([10, 5, 5], (Kind::Double, tch::Device::Cpu));
        crate::arrays::write_npy(&path, &a).unwrap();
        let d = load(&path, "lfw-crops").unwrap();
        assert_eq!((d.train.len(), d.test.len()), (8, 2));
        assert_eq!(d.class_counts(&d.train), vec![4, 4]);
        assert_eq!(d.train.inputs.kind(), Kind::Float);

        crate::arrays::write_npy(&path, &(a.shallow_clone() * 2.0)).unwrap();
        let e = format!("{:#}", load(&path, "lfw-crops").unwrap_err());
        assert!(e.contains("expected 0..1"), "{e}");
        crate::arrays::write_npy(&path, &a.narrow(0, 0, 3)).unwrap();
        assert!(format!("{:#}", load(&path, "lfw-crops").unwrap_err()).contains("even number"));
        crate::arrays::write_npy(&path, &a.view([10, 25])).unwrap();
        assert!(format!("{:#}", load(&path, "lfw-crops").unwrap_err()).contains("expected (N, H, W)"));
    }
}
