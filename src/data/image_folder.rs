//! Your own images as a folder tree (dataset spec `folder:PATH`): one sub-folder per class, named by the class,
//! holding PNG or JPEG files.
//!
//! ```text
//! PATH/cat/001.png           PATH/train/cat/001.png      (or, with a split of your own:
//! PATH/dog/002.jpg           PATH/test/cat/101.png        train/ and test/, each with the same class folders)
//! ```
//!
//! Classes are the sub-folder names in sorted order. Without `train/` and `test/` folders, a seeded stratified
//! 80/20 split is used. Every image is resized to one size: the first image's, or `height` and `width` from an
//! optional `dataset.json` in `PATH` (`{"height": 32, "width": 32, "channels": 3}`). Images are grey (1 channel)
//! when every file is grey, else RGB (3 channels), unless `channels` says otherwise. Latent attributes are the
//! image statistics of [`super::attributes`], as for the other image datasets.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use image::imageops::FilterType;
use serde::Deserialize;
use tch::Tensor;

use super::Dataset;

/// The optional `dataset.json` of an image folder.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Descriptor {
    height: Option<u32>,
    width: Option<u32>,
    channels: Option<i64>,
}

/// The image files of each class folder of `dir`: (class names, files per class).
fn class_folders(dir: &Path) -> Result<(Vec<String>, Vec<Vec<PathBuf>>)> {
    let entries = fs::read_dir(dir).with_context(|| format!("{}: cannot read the folder", dir.display()))?;
    let mut classes: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    classes.sort();
    if classes.len() < 2 {
        bail!(
            "{}: {} class folder{} ({}); expected one sub-folder per class, at least 2",
            dir.display(),
            classes.len(),
            if classes.len() == 1 { "" } else { "s" },
            if classes.is_empty() { "none".to_string() } else { classes.join(", ") }
        );
    }
    let mut files = Vec::with_capacity(classes.len());
    for class in &classes {
        let folder = dir.join(class);
        let mut images: Vec<PathBuf> = fs::read_dir(&folder)
            .with_context(|| format!("{}: cannot read the folder", folder.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image(p))
            .collect();
        if images.is_empty() {
            bail!("{}: no PNG or JPEG files in class folder '{class}'", folder.display());
        }
        images.sort();
        files.push(images);
    }
    Ok((classes, files))
}

fn is_image(path: &Path) -> bool {
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    path.is_file() && matches!(ext.as_str(), "png" | "jpg" | "jpeg")
}

/// Decodes every file, resized to `height` x `width`, as (N, C, H, W) f32 in [0, 1].
fn read_images(files: &[&PathBuf], channels: i64, height: u32, width: u32) -> Result<Tensor> {
    let hw = height as usize * width as usize;
    let mut pixels = Vec::with_capacity(files.len() * channels as usize * hw);
    for path in files {
        let img = image::open(path).map_err(|e| anyhow::anyhow!("{}: cannot decode image ({e})", path.display()))?;
        let img = if img.width() == width && img.height() == height {
            img
        } else {
            img.resize_exact(width, height, FilterType::Triangle)
        };
        if channels == 1 {
            pixels.extend(img.to_luma8().pixels().map(|p| p[0] as f32 / 255.0));
        } else {
            let rgb = img.to_rgb8();
            for c in 0..3 {
                pixels.extend(rgb.pixels().map(|p| p[c] as f32 / 255.0));
            }
        }
    }
    Ok(Tensor::from_slice(&pixels).reshape([files.len() as i64, channels, height as i64, width as i64]))
}

/// Loads an image folder (see the module documentation).
pub fn load(dir: &Path, name: &str) -> Result<Dataset> {
    if !dir.is_dir() {
        bail!("{}: no such folder (expected one sub-folder of images per class)", dir.display());
    }
    let desc_path = dir.join("dataset.json");
    let desc: Descriptor = super::optional_descriptor(&desc_path)?;
    // (class names, files of the training part, files of the test part; None: a seeded split).
    let given_split = dir.join("train").is_dir() && dir.join("test").is_dir();
    let (classes, train_files, test_files) = if given_split {
        let (classes, train) = class_folders(&dir.join("train"))?;
        let (test_classes, test) = class_folders(&dir.join("test"))?;
        if let Some(c) = test_classes.iter().find(|c| !classes.contains(c)) {
            bail!(
                "{}: class folder '{c}' has no counterpart in {}",
                dir.join("test").display(),
                dir.join("train").display()
            );
        }
        let test = test_classes.iter().zip(test).map(|(c, f)| (classes.iter().position(|k| k == c).unwrap_or(0), f));
        (classes.clone(), labelled(train.into_iter().enumerate()), Some(labelled(test)))
    } else {
        let (classes, files) = class_folders(dir)?;
        (classes, labelled(files.into_iter().enumerate()), None)
    };
    let (width, height) = match (desc.width, desc.height) {
        (Some(w), Some(h)) if w > 0 && h > 0 => (w, h),
        (None, None) => {
            let first = &train_files[0].0;
            image::image_dimensions(first)
                .map_err(|e| anyhow::anyhow!("{}: cannot decode image ({e})", first.display()))?
        }
        _ => bail!("{}: give both height and width (each at least 1), or neither", desc_path.display()),
    };
    let source = if desc.width.is_some() { desc_path.clone() } else { train_files[0].0.clone() };
    let pixels = u64::from(width) * u64::from(height);
    if pixels > crate::limits::MAX_IMAGE_PIXELS {
        bail!(
            "{}: images of {height} x {width} pixels; at most {} pixels (4096 x 4096) per image",
            source.display(),
            crate::limits::MAX_IMAGE_PIXELS
        );
    }
    let count = (train_files.len() + test_files.as_ref().map_or(0, Vec::len)) as u64;
    let what = format!("{}: {count} images of {height} x {width} pixels", dir.display());
    crate::limits::check_allocation(&what, count * pixels * desc.channels.unwrap_or(3).clamp(1, 3) as u64 * 8)?;
    let all = train_files.iter().chain(test_files.iter().flatten());
    let channels = match desc.channels {
        Some(c @ (1 | 3)) => c,
        Some(c) => bail!("{}: channels {c}; expected 1 (grey) or 3 (RGB)", desc_path.display()),
        None => {
            let mut grey = true;
            for (path, _) in all {
                let img =
                    image::open(path).map_err(|e| anyhow::anyhow!("{}: cannot decode image ({e})", path.display()))?;
                grey &= !img.color().has_color();
            }
            if grey {
                1
            } else {
                3
            }
        }
    };
    let tensors = |files: &[(PathBuf, i64)]| -> Result<(Tensor, Tensor)> {
        let paths: Vec<&PathBuf> = files.iter().map(|(p, _)| p).collect();
        let labels: Vec<i64> = files.iter().map(|(_, l)| *l).collect();
        Ok((read_images(&paths, channels, height, width)?, Tensor::from_slice(&labels)))
    };
    let (train, test) = match &test_files {
        Some(test) => (tensors(&train_files)?, tensors(test)?),
        None => {
            let (x, y) = tensors(&train_files)?;
            super::split_stratified(x, y, super::SPLIT_SEED)?
        }
    };
    if train.1.numel() == 0 || test.1.numel() == 0 {
        bail!("{}: the split leaves {} train and {} test images", dir.display(), train.1.numel(), test.1.numel());
    }
    super::image_dataset(name, classes, train, test)
}

/// (file, class index) pairs, class by class.
fn labelled(classes: impl Iterator<Item = (usize, Vec<PathBuf>)>) -> Vec<(PathBuf, i64)> {
    classes.flat_map(|(c, files)| files.into_iter().map(move |f| (f, c as i64))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).unwrap();
    }

    #[test]
    fn classes_from_folders_resized_with_a_seeded_split() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for i in 0..5 {
            write_png(&d.join(format!("red/{i}.png")), 8, 8, [200, 10, 10]);
            write_png(&d.join(format!("blue/{i}.png")), 12, 6, [10, 10, 200]);
        }
        fs::write(d.join("blue/notes.txt"), "not an image").unwrap();
        let ds = load(d, "folder:x").unwrap();
        assert_eq!(ds.classes, ["blue", "red"]);
        // The first image (of class blue, sorted first) sets the size; the red ones are resized to it.
        assert_eq!(ds.input_shape, super::super::InputShape::Image { channels: 3, height: 6, width: 12 });
        assert_eq!((ds.train.len(), ds.test.len()), (8, 2));
        assert_eq!(ds.class_counts(&ds.test), [1, 1]);
        // Labels follow the class folder: red images (class 1) are red after the resize.
        let red = ds.train.labels.eq(1).nonzero().squeeze_dim(1);
        let x = ds.train.inputs.index_select(0, &red);
        assert!((x.select(1, 0).mean(tch::Kind::Float).double_value(&[]) - 200.0 / 255.0).abs() < 1e-3);
        assert_eq!(load(d, "folder:x").unwrap().train.labels, ds.train.labels);
    }

    #[test]
    fn given_split_grey_images_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for (part, n) in [("train", 3), ("test", 1)] {
            for class in ["a", "b"] {
                for i in 0..n {
                    let path = d.join(format!("{part}/{class}/{i}.png"));
                    fs::create_dir_all(path.parent().unwrap()).unwrap();
                    image::GrayImage::from_pixel(4, 4, image::Luma([100])).save(&path).unwrap();
                }
            }
        }
        fs::write(d.join("dataset.json"), r#"{"height": 6, "width": 6}"#).unwrap();
        let ds = load(d, "folder:x").unwrap();
        assert_eq!(ds.input_shape, super::super::InputShape::Image { channels: 1, height: 6, width: 6 });
        assert_eq!((ds.train.len(), ds.test.len()), (6, 2));

        let one = tempfile::tempdir().unwrap();
        write_png(&one.path().join("only/0.png"), 4, 4, [0, 0, 0]);
        let e = load(one.path(), "folder:x").unwrap_err().to_string();
        assert!(e.contains("1 class folder (only); expected one sub-folder per class, at least 2"), "{e}");
        fs::create_dir_all(one.path().join("empty")).unwrap();
        let e = load(one.path(), "folder:x").unwrap_err().to_string();
        assert!(e.contains("no PNG or JPEG files in class folder 'empty'"), "{e}");
        fs::write(d.join("dataset.json"), r#"{"size": 6}"#).unwrap();
        assert!(load(d, "folder:x").unwrap_err().to_string().contains("unknown field"));
    }
}
