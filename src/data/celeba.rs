//! A CelebA-style folder: face images plus `list_attr_celeba.txt`, optionally `list_eval_partition.txt`.
//!
//! `list_attr_celeba.txt` is CelebA's format: first line the number of images, second line the attribute names
//! separated by spaces, then one line per image: the file name and one `1` or `-1` per attribute. Images are read
//! from the folder's `img_align_celeba/` subfolder if there is one, else from the folder itself (PNG or JPEG).
//! Each is centre-cropped to a square and resized to 32x32 RGB.
//!
//! Label: `Smiling` (1 = smiling). Latent attributes: `Male`, `Young`, `Attractive`, `Heavy_Makeup`, taken as they
//! are from the file (1 for `1`, 0 for `-1`). Split: `list_eval_partition.txt` (`NAME 0|1|2`: train, validation,
//! test) when present, using partition 0 for training and 2 for testing (validation images are not loaded);
//! otherwise a seeded stratified 80/20 split on the label.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::registry::{DatasetEntry, Source};
use super::{AttributeInfo, Dataset, InputShape, Split};

pub const ENTRY: DatasetEntry = DatasetEntry {
    name: "celeba",
    description: "CelebA-style folder you provide in <data>/celeba (or use celeba:PATH); label Smiling",
    source: Source::OwnFiles("your own files: list_attr_celeba.txt, images"),
    licence: "see CelebA's terms",
    input_shape: InputShape::Image { channels: 3, height: DEFAULT_SIZE as i64, width: DEFAULT_SIZE as i64 },
    classes,
    attributes: attribute_infos,
    counts: None,
    split: "list_eval_partition.txt (0 train, 2 test) or seeded stratified 80/20",
    load,
};

pub const DEFAULT_SIZE: u32 = 32;
pub const LABEL: &str = "Smiling";
pub const LATENT: [(&str, &str); 4] = [
    ("Male", "1 = CelebA's Male attribute is set (annotated as male)"),
    ("Young", "1 = CelebA's Young attribute is set"),
    ("Attractive", "1 = CelebA's Attractive attribute is set (a subjective annotation)"),
    ("Heavy_Makeup", "1 = CelebA's Heavy_Makeup attribute is set"),
];

pub fn classes() -> Vec<String> {
    vec!["not smiling".to_string(), "smiling".to_string()]
}

pub fn attribute_infos() -> Vec<AttributeInfo> {
    LATENT.iter().map(|(n, d)| AttributeInfo { name: n.to_string(), description: d.to_string() }).collect()
}

/// The parsed attribute list: attribute names and, per image, its file name and 0/1 values.
#[derive(Debug, Clone)]
pub struct AttributeList {
    pub names: Vec<String>,
    pub rows: Vec<(String, Vec<i64>)>,
}

impl AttributeList {
    pub fn column(&self, name: &str, what: &str) -> Result<usize> {
        self.names
            .iter()
            .position(|n| n == name)
            .with_context(|| format!("{what}: the header has no attribute '{name}'; it has: {}", self.names.join(" ")))
    }
}

/// Parses the text of `list_attr_celeba.txt`.
pub fn parse_attributes(text: &str, what: &str) -> Result<AttributeList> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, first) = lines.next().with_context(|| format!("{what}: empty file"))?;
    let count: usize = first
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{what}: line 1 is '{}', expected the number of images", first.trim()))?;
    let (_, header) = lines.next().with_context(|| format!("{what}: no header line of attribute names"))?;
    let names: Vec<String> = header.split_whitespace().map(String::from).collect();
    if names.is_empty() || names.iter().any(|n| n == "1" || n == "-1") {
        bail!("{what}: line 2 should name the attributes, got '{}'", header.trim());
    }
    let mut rows = Vec::with_capacity(count);
    for (i, line) in lines {
        let mut fields = line.split_whitespace();
        let file = fields.next().unwrap_or_default().to_string();
        let values: Vec<&str> = fields.collect();
        if values.len() != names.len() {
            bail!(
                "{what}: line {}: {} values, expected {} (one per header attribute)",
                i + 1,
                values.len(),
                names.len()
            );
        }
        let values = values
            .iter()
            .map(|v| match *v {
                "1" => Ok(1),
                "-1" | "0" => Ok(0),
                _ => bail!("{what}: line {}: value '{v}', expected 1 or -1", i + 1),
            })
            .collect::<Result<Vec<i64>>>()?;
        rows.push((file, values));
    }
    if rows.len() != count {
        bail!("{what}: line 1 says {count} images, the file lists {}", rows.len());
    }
    Ok(AttributeList { names, rows })
}

/// Parses `list_eval_partition.txt` into file name -> partition (0 train, 1 validation, 2 test).
pub fn parse_partition(text: &str, what: &str) -> Result<HashMap<String, u8>> {
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            [] => {}
            [name, p @ ("0" | "1" | "2")] => {
                out.insert(name.to_string(), p.parse().unwrap_or(0));
            }
            _ => bail!("{what}: line {}: '{}', expected 'FILE 0|1|2'", i + 1, line.trim()),
        }
    }
    Ok(out)
}

/// Reads one image as CHW f32 in [0, 1], centre-cropped to a square and resized to `size` x `size`.
pub fn read_image(path: &Path, size: u32) -> Result<Vec<f32>> {
    let img = image::open(path).map_err(|e| anyhow::anyhow!("{}: cannot decode image ({e})", path.display()))?;
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let side = w.min(h);
    let cropped = image::imageops::crop_imm(&rgb, (w - side) / 2, (h - side) / 2, side, side).to_image();
    let resized = image::imageops::resize(&cropped, size, size, image::imageops::FilterType::Triangle);
    let hw = (size * size) as usize;
    let mut chw = vec![0f32; 3 * hw];
    for (i, p) in resized.pixels().enumerate() {
        for c in 0..3 {
            chw[c * hw + i] = p[c] as f32 / 255.0;
        }
    }
    Ok(chw)
}

/// Loads a CelebA-style folder with images resized to 32x32.
pub fn load(dir: &Path, name: &str) -> Result<Dataset> {
    load_sized(dir, name, DEFAULT_SIZE)
}

/// Loads a CelebA-style folder with images resized to `size` x `size`.
pub fn load_sized(dir: &Path, name: &str, size: u32) -> Result<Dataset> {
    let list_path = dir.join("list_attr_celeba.txt");
    let text = fs::read_to_string(&list_path).with_context(|| format!("{}: cannot read", list_path.display()))?;
    let what = list_path.display().to_string();
    let list = parse_attributes(&text, &what)?;
    let label_col = list.column(LABEL, &what)?;
    let latent_cols: Vec<usize> = LATENT.iter().map(|(n, _)| list.column(n, &what)).collect::<Result<_>>()?;
    let images_dir =
        if dir.join("img_align_celeba").is_dir() { dir.join("img_align_celeba") } else { dir.to_path_buf() };
    let labels: Vec<i64> = list.rows.iter().map(|(_, v)| v[label_col]).collect();

    let partition_path = dir.join("list_eval_partition.txt");
    let (train_idx, test_idx): (Vec<usize>, Vec<usize>) = if partition_path.is_file() {
        let text = fs::read_to_string(&partition_path)
            .with_context(|| format!("{}: cannot read", partition_path.display()))?;
        let parts = parse_partition(&text, &partition_path.display().to_string())?;
        let mut split = (Vec::new(), Vec::new());
        for (i, (file, _)) in list.rows.iter().enumerate() {
            match parts.get(file) {
                Some(0) => split.0.push(i),
                Some(2) => split.1.push(i),
                Some(_) => {}
                None => bail!("{}: no partition for image {file}", partition_path.display()),
            }
        }
        split
    } else {
        let (a, b) = super::stratified_split(&labels, super::TEST_FRACTION, super::SPLIT_SEED);
        (a.into_iter().map(|i| i as usize).collect(), b.into_iter().map(|i| i as usize).collect())
    };
    if train_idx.is_empty() || test_idx.is_empty() {
        bail!("{}: the split leaves {} train and {} test images", dir.display(), train_idx.len(), test_idx.len());
    }

    let make = |idx: &[usize]| -> Result<Split> {
        let mut pixels = Vec::with_capacity(idx.len() * 3 * (size * size) as usize);
        let (mut y, mut a) = (Vec::with_capacity(idx.len()), Vec::with_capacity(idx.len() * LATENT.len()));
        for &i in idx {
            let (file, values) = &list.rows[i];
            let path: PathBuf = images_dir.join(file);
            if !path.is_file() {
                bail!("{}: no such image (listed in {what})", path.display());
            }
            pixels.extend(read_image(&path, size)?);
            y.push(values[label_col]);
            a.extend(latent_cols.iter().map(|&c| values[c]));
        }
        let n = idx.len() as i64;
        Ok(Split::new(
            Tensor::from_slice(&pixels).reshape([n, 3, size as i64, size as i64]),
            Tensor::from_slice(&y),
            Tensor::from_slice(&a).reshape([n, LATENT.len() as i64]),
        ))
    };
    Ok(Dataset {
        name: name.to_string(),
        input_shape: InputShape::Image { channels: 3, height: size as i64, width: size as i64 },
        classes: classes(),
        attributes: attribute_infos(),
        train: make(&train_idx)?,
        test: make(&test_idx)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "5_o_Clock_Shadow Male Smiling Young Attractive Heavy_Makeup";

    /// Writes `n` 20x12 PNG images and an attribute list; image i is smiling when i is odd, male when i % 3 == 0.
    fn fixture(dir: &Path, n: usize) -> String {
        let img_dir = dir.join("img_align_celeba");
        fs::create_dir_all(&img_dir).unwrap();
        let mut list = format!("{n}\n{HEADER}\n");
        for i in 0..n {
            let file = format!("{:06}.png", i + 1);
            let img = image::RgbImage::from_fn(20, 12, |x, _| image::Rgb([(i * 20) as u8, (x * 10) as u8, 200]));
            img.save(img_dir.join(&file)).unwrap();
            let pm = |b: bool| if b { "1" } else { "-1" };
            list.push_str(&format!("{file} -1 {} {} 1 -1 {}\n", pm(i % 3 == 0), pm(i % 2 == 1), pm(i < 2)));
        }
        list
    }

    #[test]
    fn loads_with_and_without_partition() {
        let dir = tempfile::tempdir().unwrap();
        let list = fixture(dir.path(), 10);
        fs::write(dir.path().join("list_attr_celeba.txt"), &list).unwrap();
        let d = load(dir.path(), "celeba").unwrap();
        assert_eq!((d.train.len(), d.test.len()), (8, 2));
        assert_eq!(d.train.inputs.size(), vec![8, 3, 32, 32]);
        assert_eq!(d.class_counts(&d.test), vec![1, 1]);
        // Blue is 200/255 everywhere after the resize.
        let blue = d.train.inputs.select(1, 2) - 200.0 / 255.0;
        assert!(blue.abs().max().double_value(&[]) < 1e-6);
        let labels: Vec<i64> = (0..10).map(|i| i % 2).collect();
        let i = super::super::stratified_split(&labels, 0.2, super::super::SPLIT_SEED).0[0] as usize;
        let expected = vec![i64::from(i % 3 == 0), 1, 0, i64::from(i < 2)];
        assert_eq!(Vec::<i64>::try_from(d.train.attributes.get(0)).unwrap(), expected);

        let partition: String = (0..10).map(|i| format!("{:06}.png {}\n", i + 1, [0, 0, 1, 2, 0][i % 5])).collect();
        fs::write(dir.path().join("list_eval_partition.txt"), partition).unwrap();
        let d = load(dir.path(), "celeba").unwrap();
        assert_eq!((d.train.len(), d.test.len()), (6, 2));
    }

    #[test]
    fn rejects_count_header_and_missing_image_mismatches() {
        let dir = tempfile::tempdir().unwrap();
        let list = fixture(dir.path(), 10);
        let path = dir.path().join("list_attr_celeba.txt");
        fs::write(&path, list.replacen("10\n", "11\n", 1)).unwrap();
        let e = format!("{:#}", load(dir.path(), "celeba").unwrap_err());
        assert!(e.contains("list_attr_celeba.txt: line 1 says 11 images, the file lists 10"), "{e}");
        fs::write(&path, list.replace(" Heavy_Makeup", "")).unwrap();
        let e = format!("{:#}", load(dir.path(), "celeba").unwrap_err());
        assert!(e.contains("line 3: 6 values, expected 5"), "{e}");
        fs::write(&path, list.replace("Heavy_Makeup", "Bald")).unwrap();
        let e = format!("{:#}", load(dir.path(), "celeba").unwrap_err());
        assert!(e.contains("no attribute 'Heavy_Makeup'"), "{e}");
        fs::write(&path, list.replace("Smiling", "1")).unwrap();
        assert!(format!("{:#}", load(dir.path(), "celeba").unwrap_err()).contains("line 2 should name"));
        fs::write(&path, &list).unwrap();
        fs::remove_file(dir.path().join("img_align_celeba/000002.png")).unwrap();
        let e = format!("{:#}", load(dir.path(), "celeba").unwrap_err());
        assert!(e.contains("000002.png: no such image"), "{e}");
        fs::write(dir.path().join("img_align_celeba/000002.png"), b"not a png").unwrap();
        let e = format!("{:#}", load(dir.path(), "celeba").unwrap_err());
        assert!(e.contains("000002.png: cannot decode image"), "{e}");
        fs::write(&path, list.replacen(" 1 -1", " 2 -1", 1)).unwrap();
        assert!(format!("{:#}", load(dir.path(), "celeba").unwrap_err()).contains("value '2'"));
    }
}
