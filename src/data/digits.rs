//! scikit-learn's 8x8 digits (`digits.csv.gz`): 1,797 rows of 65 comma-separated integers, 64 pixels with values
//! 0..16 (row-major 8x8) then the label 0..9. Pixels are scaled to [0, 1] by dividing by 16. There is no official
//! split: a seeded stratified 80/20 split ([`super::stratified_split`], seed [`super::SPLIT_SEED`]) gives
//! 1,438 train and 359 test images.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::fetch::{file, Package, Registry};
use super::registry::{DatasetEntry, Source};
use super::{attributes, numbered, Dataset, InputShape};

pub const ENTRY: DatasetEntry = DatasetEntry {
    name: "digits",
    description: "scikit-learn's 8x8 handwritten digits (UCI optdigits test set), 17 grey levels",
    source: Source::Package(&PACKAGE),
    licence: "BSD-3-Clause (scikit-learn); data CC BY 4.0 (UCI)",
    input_shape: InputShape::Image { channels: 1, height: 8, width: 8 },
    classes: || numbered(10),
    attributes: attributes::grey_attribute_infos,
    counts: Some((1_438, 359)),
    split: "seeded stratified 80/20 (seed 2022)",
    load: |dir, name| load(&dir.join("digits.csv.gz"), name),
};

pub const PACKAGE: Package = Package {
    registry: Registry::Pypi,
    name: "scikit-learn",
    version: "1.9.1",
    files: &[file(
        "sklearn/datasets/data/digits.csv.gz",
        "digits.csv.gz",
        57_523,
        "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
    )],
};

/// Parses the CSV text into (N, 1, 8, 8) images in [0, 1] and (N,) labels.
pub fn parse(text: &str, what: &str) -> Result<(Tensor, Tensor)> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let values: Vec<&str> = line.split(',').map(str::trim).collect();
        if values.len() != 65 {
            bail!("{what}: line {}: {} values, expected 65 (64 pixels and a label)", i + 1, values.len());
        }
        for (j, v) in values.iter().enumerate() {
            let x: f64 = v.parse().map_err(|_| anyhow::anyhow!("{what}: line {}: '{v}' is not a number", i + 1))?;
            let (max, kind) = if j == 64 { (9.0, "label") } else { (16.0, "pixel") };
            if !(0.0..=max).contains(&x) || x.fract() != 0.0 {
                bail!("{what}: line {}: {kind} {v} is not an integer in 0..{max}", i + 1);
            }
            if j == 64 {
                labels.push(x as i64);
            } else {
                pixels.push((x / 16.0) as f32);
            }
        }
    }
    if labels.is_empty() {
        bail!("{what}: no data rows");
    }
    let n = labels.len() as i64;
    Ok((Tensor::from_slice(&pixels).reshape([n, 1, 8, 8]), Tensor::from_slice(&labels)))
}

/// Loads `digits.csv.gz` (or a plain `.csv`).
pub fn load(path: &Path, name: &str) -> Result<Dataset> {
    let bytes = fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let bytes = super::idx::maybe_gunzip(bytes).with_context(|| format!("{}", path.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("{}: not text", path.display()))?;
    let (x, y) = parse(&text, &path.display().to_string())?;
    let (train, test) = super::split_stratified(x, y, super::SPLIT_SEED)?;
    super::image_dataset(name, (0..10).map(|i| i.to_string()).collect(), train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pixel: u8, label: u8) -> String {
        let mut v = vec![pixel.to_string(); 64];
        v.push(label.to_string());
        v.join(",")
    }

    #[test]
    fn parses_and_splits_a_gzip_fixture() {
        use std::io::Write;
        let text: Vec<String> = (0..20).map(|i| row(i % 17, i % 2)).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("digits.csv.gz");
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text.join("\n").as_bytes()).unwrap();
        fs::write(&path, e.finish().unwrap()).unwrap();
        let d = load(&path, "digits").unwrap();
        assert_eq!((d.train.len(), d.test.len()), (16, 4));
        assert_eq!(d.train.inputs.size(), vec![16, 1, 8, 8]);
        assert!(d.train.inputs.max().double_value(&[]) <= 1.0);
        assert_eq!(d.class_counts(&d.test)[..2], [2, 2]);
        assert_eq!(d.attributes.len(), 5);
    }

    #[test]
    fn rejects_bad_rows() {
        let e = parse("1,2,3\n", "d.csv").unwrap_err().to_string();
        assert!(e.contains("d.csv: line 1: 3 values, expected 65"), "{e}");
        let e = parse(&row(17, 1), "d.csv").unwrap_err().to_string();
        assert!(e.contains("pixel 17 is not an integer in 0..16"), "{e}");
        let e = parse(&row(1, 10), "d.csv").unwrap_err().to_string();
        assert!(e.contains("label 10"), "{e}");
        assert!(parse("", "d.csv").unwrap_err().to_string().contains("no data rows"));
    }
}
