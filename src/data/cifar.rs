//! CIFAR-10 and CIFAR-100 in their binary versions ("CIFAR-10 binary version (suitable for C programs)").
//!
//! A CIFAR-10 record is 1 label byte then 3,072 pixel bytes (1,024 red, 1,024 green, 1,024 blue, each 32x32
//! row-major), so it maps directly onto (C, H, W). Files: `data_batch_1.bin` .. `data_batch_5.bin` (train) and
//! `test_batch.bin`, optionally `batches.meta.txt` with the class names. A CIFAR-100 record has 2 label bytes
//! (coarse, fine) before the pixels; files `train.bin` and `test.bin`, optionally `fine_label_names.txt`. The
//! fine label (100 classes) is the class. The folder may be the one holding the files or its parent with the
//! official `cifar-10-batches-bin` / `cifar-100-binary` folder in it. Latent attributes: colour statistics.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::registry::{DatasetEntry, Source};
use super::{attributes, numbered, Dataset, InputShape};

pub const CIFAR10_ENTRY: DatasetEntry = DatasetEntry {
    name: "cifar10",
    description: "CIFAR-10 binary batches you provide in <data>/cifar10 (or use cifar10:PATH)",
    source: Source::OwnFiles("your own files: data_batch_1..5.bin, test_batch.bin"),
    licence: "see CIFAR-10's terms",
    input_shape: InputShape::Image { channels: 3, height: 32, width: 32 },
    classes: || CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
    attributes: attributes::colour_attribute_infos,
    counts: Some((50_000, 10_000)),
    split: "official",
    load: load_cifar10,
};

pub const CIFAR100_ENTRY: DatasetEntry = DatasetEntry {
    name: "cifar100",
    description: "CIFAR-100 binary files you provide in <data>/cifar100 (or use cifar100:PATH); fine labels",
    source: Source::OwnFiles("your own files: train.bin, test.bin"),
    licence: "see CIFAR-100's terms",
    input_shape: InputShape::Image { channels: 3, height: 32, width: 32 },
    classes: || numbered(100),
    attributes: attributes::colour_attribute_infos,
    counts: Some((50_000, 10_000)),
    split: "official",
    load: load_cifar100,
};

pub const PIXELS: usize = 3 * 32 * 32;
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Record layout: number of label bytes before the pixels, which of them is the class, and the class count.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub label_bytes: usize,
    pub label_index: usize,
    pub num_classes: usize,
    pub name: &'static str,
}

pub const CIFAR10: Layout = Layout { label_bytes: 1, label_index: 0, num_classes: 10, name: "CIFAR-10" };
pub const CIFAR100: Layout = Layout { label_bytes: 2, label_index: 1, num_classes: 100, name: "CIFAR-100" };

/// Parses the records of one binary file into CHW pixels in [0, 1] and labels.
pub fn parse_records(bytes: &[u8], layout: Layout, what: &str) -> Result<(Vec<f32>, Vec<i64>)> {
    let record = layout.label_bytes + PIXELS;
    if bytes.is_empty() || bytes.len() % record != 0 {
        bail!(
            "{what}: {} bytes is not a whole number of {record}-byte {} records ({} label byte(s) + 3072 pixels)",
            bytes.len(),
            layout.name,
            layout.label_bytes
        );
    }
    let n = bytes.len() / record;
    let (mut pixels, mut labels) = (Vec::with_capacity(n * PIXELS), Vec::with_capacity(n));
    for (i, r) in bytes.chunks_exact(record).enumerate() {
        let label = r[layout.label_index] as usize;
        if label >= layout.num_classes {
            bail!("{what}: record {i} has label {label}, expected 0..{}", layout.num_classes - 1);
        }
        labels.push(label as i64);
        pixels.extend(r[layout.label_bytes..].iter().map(|&p| p as f32 / 255.0));
    }
    Ok((pixels, labels))
}

/// Reads and concatenates binary files into (N, 3, 32, 32) and (N,).
pub fn read_files(paths: &[PathBuf], layout: Layout) -> Result<(Tensor, Tensor)> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for p in paths {
        let bytes = fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?;
        let (x, y) = parse_records(&bytes, layout, &p.display().to_string())?;
        pixels.extend(x);
        labels.extend(y);
    }
    let n = labels.len() as i64;
    Ok((Tensor::from_slice(&pixels).reshape([n, 3, 32, 32]), Tensor::from_slice(&labels)))
}

/// `dir`, or its official subfolder `sub` when `dir` does not hold `probe` itself.
fn resolve(dir: &Path, sub: &str, probe: &str) -> PathBuf {
    if !dir.join(probe).is_file() && dir.join(sub).join(probe).is_file() {
        dir.join(sub)
    } else {
        dir.to_path_buf()
    }
}

/// Class names from a text file (one per line), or `default` when the file is absent.
fn class_names(path: &Path, expected: usize, default: Vec<String>) -> Result<Vec<String>> {
    if !path.is_file() {
        return Ok(default);
    }
    let text = fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != expected {
        bail!("{}: {} class names, expected {expected}", path.display(), names.len());
    }
    Ok(names)
}

fn require(path: PathBuf) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        bail!("{}: no such file", path.display())
    }
}

/// Loads CIFAR-10 binary batches from `dir` (all present `data_batch_N.bin` for training, at least the first).
pub fn load_cifar10(dir: &Path, name: &str) -> Result<Dataset> {
    let dir = resolve(dir, "cifar-10-batches-bin", "test_batch.bin");
    let train: Vec<PathBuf> =
        (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).filter(|p| p.is_file()).collect();
    if train.is_empty() {
        bail!("{}: no data_batch_1.bin .. data_batch_5.bin (CIFAR-10 binary version)", dir.display());
    }
    let test = vec![require(dir.join("test_batch.bin"))?];
    let classes =
        class_names(&dir.join("batches.meta.txt"), 10, CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect())?;
    super::image_dataset(name, classes, read_files(&train, CIFAR10)?, read_files(&test, CIFAR10)?)
}

/// Loads CIFAR-100 binary files (`train.bin`, `test.bin`) from `dir`, with the fine labels as classes.
pub fn load_cifar100(dir: &Path, name: &str) -> Result<Dataset> {
    let dir = resolve(dir, "cifar-100-binary", "test.bin");
    let train = vec![require(dir.join("train.bin"))?];
    let test = vec![require(dir.join("test.bin"))?];
    let classes = class_names(&dir.join("fine_label_names.txt"), 100, (0..100).map(|i| i.to_string()).collect())?;
    super::image_dataset(name, classes, read_files(&train, CIFAR100)?, read_files(&test, CIFAR100)?)
}

/// `cifar:PATH`: CIFAR-10 or CIFAR-100, whichever binary version the folder (or its official subfolder) holds.
pub fn load_any(dir: &Path, name: &str) -> Result<Dataset> {
    let ten = resolve(dir, "cifar-10-batches-bin", "test_batch.bin").join("test_batch.bin");
    let hundred = resolve(dir, "cifar-100-binary", "test.bin").join("test.bin");
    match (ten.is_file(), hundred.is_file()) {
        (true, false) => load_cifar10(dir, name),
        (false, true) => load_cifar100(dir, name),
        (true, true) => {
            bail!("{}: holds both CIFAR-10 and CIFAR-100 files; use cifar10:PATH or cifar100:PATH", dir.display())
        }
        (false, false) => bail!(
            "{}: no CIFAR binary version (expected test_batch.bin and data_batch_N.bin, or test.bin and train.bin)",
            dir.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(labels: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, l) in labels.iter().enumerate() {
            out.extend_from_slice(l);
            // Red plane = i, green = 128, blue = 255.
            out.extend(std::iter::repeat_n(i as u8, 1024));
            out.extend(std::iter::repeat_n(128u8, 1024));
            out.extend(std::iter::repeat_n(255u8, 1024));
        }
        out
    }

    #[test]
    fn loads_cifar10_batches_from_the_official_subfolder() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("cifar-10-batches-bin");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("data_batch_1.bin"), records(&[&[3], &[5]])).unwrap();
        fs::write(sub.join("data_batch_2.bin"), records(&[&[9]])).unwrap();
        fs::write(sub.join("test_batch.bin"), records(&[&[0], &[1]])).unwrap();
        let d = load_cifar10(dir.path(), "cifar10").unwrap();
        assert_eq!(d.train.inputs.size(), vec![3, 3, 32, 32]);
        assert_eq!(Vec::<i64>::try_from(&d.train.labels).unwrap(), vec![3, 5, 9]);
        assert_eq!(d.classes[3], "cat");
        assert!((d.train.inputs.double_value(&[1, 0, 31, 31]) - 1.0 / 255.0).abs() < 1e-6);
        assert_eq!(d.train.inputs.double_value(&[1, 2, 0, 0]), 1.0);
        assert_eq!(d.attributes[0].name, "brightness");
    }

    #[test]
    fn loads_cifar100_fine_labels() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("train.bin"), records(&[&[4, 99], &[1, 7]])).unwrap();
        fs::write(dir.path().join("test.bin"), records(&[&[0, 42]])).unwrap();
        let d = load_cifar100(dir.path(), "cifar100").unwrap();
        assert_eq!(Vec::<i64>::try_from(&d.train.labels).unwrap(), vec![99, 7]);
        assert_eq!(d.num_classes(), 100);
    }

    #[test]
    fn rejects_wrong_record_size_labels_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = records(&[&[1], &[2]]);
        bytes.pop();
        fs::write(dir.path().join("data_batch_1.bin"), &bytes).unwrap();
        fs::write(dir.path().join("test_batch.bin"), records(&[&[1]])).unwrap();
        let e = format!("{:#}", load_cifar10(dir.path(), "cifar10").unwrap_err());
        assert!(e.contains("data_batch_1.bin: 6145 bytes is not a whole number of 3073-byte CIFAR-10 records"), "{e}");
        // CIFAR-100 files read as CIFAR-10: the record size does not fit.
        fs::write(dir.path().join("data_batch_1.bin"), records(&[&[1, 2], &[3, 4], &[5, 6]])).unwrap();
        let e = format!("{:#}", load_cifar10(dir.path(), "cifar10").unwrap_err());
        assert!(e.contains("3073-byte"), "{e}");
        fs::write(dir.path().join("data_batch_1.bin"), records(&[&[12]])).unwrap();
        let e = format!("{:#}", load_cifar10(dir.path(), "cifar10").unwrap_err());
        assert!(e.contains("record 0 has label 12, expected 0..9"), "{e}");
        fs::remove_file(dir.path().join("test_batch.bin")).unwrap();
        let e = format!("{:#}", load_cifar10(dir.path(), "cifar10").unwrap_err());
        assert!(e.contains("test_batch.bin: no such file"), "{e}");
        let e = format!("{:#}", load_cifar100(dir.path(), "cifar100").unwrap_err());
        assert!(e.contains("train.bin: no such file"), "{e}");
    }
}
