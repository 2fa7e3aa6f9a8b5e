//! IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.
//!
//! An IDX file starts with the magic number `00 00 TT DD` (TT: element type, DD: number of dimensions), then DD
//! big-endian u32 dimension sizes, then the data. gradleak reads unsigned-byte files (TT = 0x08): images are
//! (N, H, W) with DD = 3, labels are (N,) with DD = 1.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::Tensor;

/// The dimensions and bytes of an unsigned-byte IDX array.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Decompresses `bytes` if they are gzip data (magic 1f 8b), else returns them unchanged.
pub fn maybe_gunzip(bytes: Vec<u8>) -> Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| anyhow::anyhow!("corrupt or truncated gzip data ({e})"))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Parses an unsigned-byte IDX array with `ndims` dimensions (plain or gzip bytes).
pub fn parse_idx(bytes: Vec<u8>, ndims: usize) -> Result<IdxArray> {
    let bytes = maybe_gunzip(bytes)?;
    if bytes.len() < 4 {
        bail!("{} bytes is too short for an IDX header", bytes.len());
    }
    let magic = u32::from_be_bytes(bytes[..4].try_into().unwrap());
    let expected = 0x0800 | ndims as u32;
    if magic != expected {
        bail!(
            "magic number 0x{magic:08x}, expected 0x{expected:08x} (unsigned bytes, {ndims} dimension{})",
            if ndims == 1 { "" } else { "s" }
        );
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        bail!("truncated header: {} bytes, expected at least {header}", bytes.len());
    }
    let dims: Vec<usize> =
        (0..ndims).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize).collect();
    let count = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).context("dimensions overflow")?;
    let have = bytes.len() - header;
    if have != count {
        bail!("dimensions {dims:?} need {count} data bytes, the file has {have} (truncated or corrupt?)");
    }
    let mut data = bytes;
    data.drain(..header);
    Ok(IdxArray { dims, data })
}

/// Reads an IDX file with `ndims` dimensions; errors name the file.
pub fn read_idx(path: &Path, ndims: usize) -> Result<IdxArray> {
    let bytes = fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse_idx(bytes, ndims).with_context(|| format!("{}: not a valid IDX file", path.display()))
}

/// Images (N, 1, H, W) in [0, 1] and labels (N,) from parsed IDX arrays; `what` names the files in errors.
pub fn images_and_labels(
    images: &IdxArray,
    labels: &IdxArray,
    what: &str,
    num_classes: i64,
) -> Result<(Tensor, Tensor)> {
    let (n, h, w) = (images.dims[0], images.dims[1], images.dims[2]);
    if labels.dims[0] != n {
        bail!("{what}: {n} images but {} labels; expected the same count", labels.dims[0]);
    }
    if let Some(bad) = labels.data.iter().find(|&&l| l as i64 >= num_classes) {
        bail!("{what}: label {bad} is out of range; expected 0..{}", num_classes - 1);
    }
    let pixels: Vec<f32> = images.data.iter().map(|&p| p as f32 / 255.0).collect();
    let x = Tensor::from_slice(&pixels).reshape([n as i64, 1, h as i64, w as i64]);
    let labels: Vec<i64> = labels.data.iter().map(|&l| l as i64).collect();
    Ok((x, Tensor::from_slice(&labels)))
}

/// Reads an image file and a label file as (N, 1, H, W) in [0, 1] and (N,) i64.
pub fn read_images_labels(images: &Path, labels: &Path, num_classes: i64) -> Result<(Tensor, Tensor)> {
    let x = read_idx(images, 3)?;
    let y = read_idx(labels, 1)?;
    images_and_labels(&x, &y, &format!("{} and {}", images.display(), labels.display()), num_classes)
}

/// `dir/stem` or `dir/stem.gz`, whichever exists.
pub fn find_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{}: no file {stem} or {stem}.gz", dir.display())
}

/// The four MNIST-layout files of a folder (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
/// `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`): ((x, y) train, (x, y) test).
pub type Pairs = ((Tensor, Tensor), (Tensor, Tensor));

pub fn read_folder(dir: &Path, num_classes: i64) -> Result<Pairs> {
    let train = read_images_labels(
        &find_file(dir, "train-images-idx3-ubyte")?,
        &find_file(dir, "train-labels-idx1-ubyte")?,
        num_classes,
    )?;
    let test = read_images_labels(
        &find_file(dir, "t10k-images-idx3-ubyte")?,
        &find_file(dir, "t10k-labels-idx1-ubyte")?,
        num_classes,
    )?;
    Ok((train, test))
}

/// Loads a folder of MNIST-layout IDX files (path spec `idx:PATH`), classes numbered from the labels.
pub fn load_folder(dir: &Path, name: &str) -> Result<super::Dataset> {
    let (train, test) = read_folder(dir, 256)?;
    let max = train.1.max().int64_value(&[]).max(test.1.max().int64_value(&[]));
    super::image_dataset(name, super::numbered(max as usize + 1), train, test)
}

/// The bytes of an IDX file holding `data` with dimensions `dims` (for tests and tools).
pub fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write_pair(dir: &Path, prefix: &str, n: u32, labels: &[u8], gz: bool) {
        let images: Vec<u8> = (0..n * 4).map(|i| (i * 17 % 256) as u8).collect();
        let (ib, lb) = (idx_bytes(&[n, 2, 2], &images), idx_bytes(&[labels.len() as u32], labels));
        let (ib, lb, ext) = if gz { (gzip(&ib), gzip(&lb), ".gz") } else { (ib, lb, "") };
        fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), ib).unwrap();
        fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), lb).unwrap();
    }

    #[test]
    fn reads_plain_and_gzip_folders() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "train", 3, &[0, 1, 2], false);
        write_pair(dir.path(), "t10k", 2, &[2, 0], true);
        let ((x, y), (xt, yt)) = read_folder(dir.path(), 3).unwrap();
        assert_eq!(x.size(), vec![3, 1, 2, 2]);
        assert_eq!(xt.size(), vec![2, 1, 2, 2]);
        assert_eq!(Vec::<i64>::try_from(&y).unwrap(), vec![0, 1, 2]);
        assert_eq!(Vec::<i64>::try_from(&yt).unwrap(), vec![2, 0]);
        assert!((x.double_value(&[0, 0, 0, 1]) - 17.0 / 255.0).abs() < 1e-6);
        assert!(x.max().double_value(&[]) <= 1.0);
    }

    #[test]
    fn rejects_wrong_magic_truncation_and_corrupt_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels");
        // An image file where a label file is expected: wrong number of dimensions in the magic.
        fs::write(&p, idx_bytes(&[1, 2, 2], &[0, 0, 0, 0])).unwrap();
        let e = format!("{:#}", read_idx(&p, 1).unwrap_err());
        assert!(e.contains("labels") && e.contains("magic number 0x00000803, expected 0x00000801"), "{e}");
        let mut bytes = idx_bytes(&[2, 2, 2], &[0; 8]);
        bytes.truncate(bytes.len() - 3);
        fs::write(&p, &bytes).unwrap();
        let e = format!("{:#}", read_idx(&p, 3).unwrap_err());
        assert!(e.contains("need 8 data bytes, the file has 5"), "{e}");
        let mut gz = gzip(&idx_bytes(&[2], &[1, 2]));
        gz.truncate(gz.len() / 2);
        fs::write(&p, &gz).unwrap();
        let e = format!("{:#}", read_idx(&p, 1).unwrap_err());
        assert!(e.contains("gzip"), "{e}");
        fs::write(&p, [0u8, 0]).unwrap();
        assert!(format!("{:#}", read_idx(&p, 1).unwrap_err()).contains("too short"));
    }

    #[test]
    fn rejects_count_mismatch_and_bad_labels() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "train", 3, &[0, 1], false);
        let e = format!(
            "{:#}",
            read_images_labels(
                &dir.path().join("train-images-idx3-ubyte"),
                &dir.path().join("train-labels-idx1-ubyte"),
                10
            )
            .unwrap_err()
        );
        assert!(e.contains("3 images but 2 labels"), "{e}");
        write_pair(dir.path(), "train", 2, &[0, 12], false);
        let e = format!("{:#}", read_folder(dir.path(), 10).unwrap_err());
        assert!(e.contains("label 12 is out of range"), "{e}");
    }
}
