//! Latent attributes computed from the images themselves.
//!
//! Grey images (digits, clothes, face crops) get Morpho-MNIST-style shape measurements from the pixels and their
//! moments; colour photos get colour statistics. Each continuous measurement is binarised at its median on the
//! *training* split, so that both groups are about equally large there; the same threshold is applied to the
//! test split. The continuous values are kept in [`Split::attribute_values`](super::Split::attribute_values).

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::AttributeInfo;

/// Pixels above this value count as ink (grey images are scaled to [0, 1]).
pub const INK_LEVEL: f32 = 0.5;

fn info(name: &str, description: &str) -> AttributeInfo {
    AttributeInfo { name: name.to_string(), description: description.to_string() }
}

/// The attributes of grey images, in column order.
pub fn grey_attribute_infos() -> Vec<AttributeInfo> {
    vec![
        info("ink", "1 = more ink than the training median: fraction of pixels brighter than 0.5"),
        info(
            "thickness",
            "1 = thicker strokes than the training median: 2 x ink area / ink perimeter (pixels), \
             the width of a stroke whose length is half its perimeter",
        ),
        info(
            "slant",
            "1 = leaning further right than the training median: -mu11/mu02 from the intensity-weighted \
             second-order central moments (top to the right is positive)",
        ),
        info(
            "width",
            "1 = wider than the training median: soft bounding-box width, the sum over columns of each column's \
             brightest pixel (full columns count 1, faint edge columns a fraction)",
        ),
        info(
            "height",
            "1 = taller than the training median: soft bounding-box height, the sum over rows of each row's \
             brightest pixel",
        ),
    ]
}

/// The attributes of colour (RGB) images, in column order.
pub fn colour_attribute_infos() -> Vec<AttributeInfo> {
    vec![
        info("brightness", "1 = brighter than the training median: mean of R, G and B over the image"),
        info("redness", "1 = redder than the training median: mean red minus mean blue (warm vs cool colours)"),
        info("saturation", "1 = more saturated than the training median: mean HSV saturation (max-min)/max"),
        info("contrast", "1 = more contrast than the training median: standard deviation of the luminance"),
    ]
}

/// The attribute descriptions for images with `channels` channels (1: grey, 3: colour).
pub fn image_attribute_infos(channels: i64) -> Vec<AttributeInfo> {
    if channels == 3 {
        colour_attribute_infos()
    } else {
        grey_attribute_infos()
    }
}

/// Grey-image measurements, (N, 5) row-major, for `pixels` holding N images of h x w in [0, 1].
pub fn grey_values(pixels: &[f32], h: usize, w: usize) -> Vec<f32> {
    let per = h * w;
    let n = pixels.len().checked_div(per).unwrap_or(0);
    let mut out = Vec::with_capacity(n * 5);
    for img in pixels.chunks_exact(per.max(1)).take(n) {
        let ink = |y: usize, x: usize| img[y * w + x] > INK_LEVEL;
        let (mut area, mut perimeter) = (0usize, 0usize);
        let (mut col_max, mut row_max) = (vec![0f32; w], vec![0f32; h]);
        let (mut m, mut sx, mut sy) = (0f64, 0f64, 0f64);
        for y in 0..h {
            for x in 0..w {
                let p = img[y * w + x];
                col_max[x] = col_max[x].max(p);
                row_max[y] = row_max[y].max(p);
                let p = p as f64;
                m += p;
                sx += p * x as f64;
                sy += p * y as f64;
                if !ink(y, x) {
                    continue;
                }
                area += 1;
                perimeter += usize::from(x == 0 || !ink(y, x - 1));
                perimeter += usize::from(x + 1 == w || !ink(y, x + 1));
                perimeter += usize::from(y == 0 || !ink(y - 1, x));
                perimeter += usize::from(y + 1 == h || !ink(y + 1, x));
            }
        }
        let (mut mu11, mut mu02) = (0f64, 0f64);
        if m > 0.0 {
            let (cx, cy) = (sx / m, sy / m);
            for y in 0..h {
                for x in 0..w {
                    let p = img[y * w + x] as f64;
                    mu11 += p * (x as f64 - cx) * (y as f64 - cy);
                    mu02 += p * (y as f64 - cy) * (y as f64 - cy);
                }
            }
        }
        let slant = if mu02 > 0.0 { -mu11 / mu02 } else { 0.0 };
        let thickness = if perimeter > 0 { 2.0 * area as f64 / perimeter as f64 } else { 0.0 };
        let (width, height) = (col_max.iter().sum::<f32>(), row_max.iter().sum::<f32>());
        out.extend([area as f32 / per as f32, thickness as f32, slant as f32, width, height]);
    }
    out
}

/// Colour measurements, (N, 4) row-major, for `pixels` holding N RGB images in (C, H, W) order with `hw` pixels.
pub fn colour_values(pixels: &[f32], hw: usize) -> Vec<f32> {
    let per = 3 * hw;
    let n = pixels.len().checked_div(per).unwrap_or(0);
    let mut out = Vec::with_capacity(n * 4);
    for img in pixels.chunks_exact(per.max(1)).take(n) {
        let (r, g, b) = (&img[..hw], &img[hw..2 * hw], &img[2 * hw..]);
        let (mut sr, mut sg, mut sb, mut sat, mut sl, mut sl2) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
        for i in 0..hw {
            let (pr, pg, pb) = (r[i] as f64, g[i] as f64, b[i] as f64);
            sr += pr;
            sg += pg;
            sb += pb;
            let (hi, lo) = (pr.max(pg).max(pb), pr.min(pg).min(pb));
            if hi > 0.0 {
                sat += (hi - lo) / hi;
            }
            let lum = 0.299 * pr + 0.587 * pg + 0.114 * pb;
            sl += lum;
            sl2 += lum * lum;
        }
        let k = hw as f64;
        let var = (sl2 / k - (sl / k).powi(2)).max(0.0);
        out.extend([((sr + sg + sb) / (3.0 * k)) as f32, ((sr - sb) / k) as f32, (sat / k) as f32, var.sqrt() as f32]);
    }
    out
}

/// A threshold chosen on the training split: 1 means `value > at` (or `>=` when `inclusive`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub at: f32,
    pub inclusive: bool,
}

impl Threshold {
    pub fn apply(&self, v: f32) -> i64 {
        i64::from(if self.inclusive { v >= self.at } else { v > self.at })
    }
}

/// The median threshold of each of the `a` columns of `values` (row-major (N, a)). Ties at the median go to
/// whichever side (`>` or `>=`) gives the training split the more even balance, which matters for measurements
/// that take few distinct values, such as bounding-box widths.
pub fn median_thresholds(values: &[f32], a: usize) -> Vec<Threshold> {
    let n = values.len().checked_div(a).unwrap_or(0);
    (0..a)
        .map(|j| {
            let mut col: Vec<f32> = (0..n).map(|i| values[i * a + j]).collect();
            col.sort_by(f32::total_cmp);
            let at = if n == 0 { 0.0 } else { col[(n - 1) / 2] };
            // Distance from an even split, in samples (x2 to stay in integers).
            let off = |count: usize| (2 * count).abs_diff(n);
            let above = col.iter().filter(|&&v| v > at).count();
            let at_or_above = col.iter().filter(|&&v| v >= at).count();
            Threshold { at, inclusive: off(at_or_above) < off(above) }
        })
        .collect()
}

/// Applies one threshold per column to row-major (N, a) values.
pub fn binarise(values: &[f32], thresholds: &[Threshold]) -> Vec<i64> {
    let a = thresholds.len();
    values.iter().enumerate().map(|(i, &v)| thresholds[i % a].apply(v)).collect()
}

/// Raw values and binary attributes of both splits, thresholded at the training medians.
pub struct Binarised {
    /// (N, A) i64 and (N, A) f32, for train and test.
    pub train: (Tensor, Tensor),
    pub test: (Tensor, Tensor),
    pub thresholds: Vec<Threshold>,
}

/// Binarises row-major (N, a) raw values of both splits at the training medians.
pub fn binarise_splits(train: Vec<f32>, test: Vec<f32>, a: usize) -> Binarised {
    let thresholds = median_thresholds(&train, a);
    let pack = |v: Vec<f32>| {
        let n = v.len().checked_div(a).unwrap_or(0) as i64;
        let bin = Tensor::from_slice(&binarise(&v, &thresholds)).reshape([n, a as i64]);
        (bin, Tensor::from_slice(&v).reshape([n, a as i64]))
    };
    Binarised { train: pack(train), test: pack(test), thresholds }
}

/// Raw image measurements (N, A) for an (N, C, H, W) f32 tensor in [0, 1], C = 1 or 3.
pub fn image_values(images: &Tensor) -> Result<Vec<f32>> {
    let size = images.size();
    let [_, c, h, w] = size[..] else { bail!("expected (N, C, H, W) images, got shape {size:?}") };
    if c != 1 && c != 3 {
        bail!("image attributes need 1 (grey) or 3 (RGB) channels, got {c}");
    }
    // In chunks, so that no second copy of a large dataset is held at once.
    let n = size[0];
    let mut out = Vec::with_capacity(n as usize * if c == 1 { 5 } else { 4 });
    for start in (0..n).step_by(4096) {
        let chunk = images.narrow(0, start, 4096.min(n - start)).to_kind(Kind::Float).contiguous();
        let pixels = Vec::<f32>::try_from(chunk.view([-1]))?;
        out.extend(if c == 1 {
            grey_values(&pixels, h as usize, w as usize)
        } else {
            colour_values(&pixels, (h * w) as usize)
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 6x6 image with a vertical bar 2 pixels wide and 4 tall at columns 2..4, rows 1..5.
    fn bar() -> Vec<f32> {
        let mut img = vec![0.0f32; 36];
        for y in 1..5 {
            for x in 2..4 {
                img[y * 6 + x] = 1.0;
            }
        }
        img
    }

    #[test]
    fn grey_measurements_of_a_bar() {
        let v = grey_values(&bar(), 6, 6);
        assert_eq!(v.len(), 5);
        assert!((v[0] - 8.0 / 36.0).abs() < 1e-6, "ink {}", v[0]);
        // area 8, perimeter 2*(2+4) = 12: thickness 2*8/12.
        assert!((v[1] - 16.0 / 12.0).abs() < 1e-6, "thickness {}", v[1]);
        assert!(v[2].abs() < 1e-6, "an upright bar has no slant, got {}", v[2]);
        assert_eq!((v[3], v[4]), (2.0, 4.0));
        // A faint edge column counts by its brightest pixel.
        let mut img = bar();
        img[2 * 6 + 4] = 0.25;
        let v = grey_values(&img, 6, 6);
        assert_eq!((v[3], v[4]), (2.25, 4.0));
    }

    #[test]
    fn slant_sign_follows_the_lean() {
        // A diagonal from bottom-left to top-right leans right: positive slant.
        let mut right = vec![0.0f32; 25];
        let mut left = vec![0.0f32; 25];
        for i in 0..5 {
            right[(4 - i) * 5 + i] = 1.0;
            left[i * 5 + i] = 1.0;
        }
        assert!(grey_values(&right, 5, 5)[2] > 0.5);
        assert!(grey_values(&left, 5, 5)[2] < -0.5);
        // An empty image gives zeros, not NaN.
        assert!(grey_values(&[0.0; 25], 5, 5).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn colour_measurements() {
        // 2 pixels: pure red and black. CHW order.
        let img = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let v = colour_values(&img, 2);
        assert!((v[0] - 1.0 / 6.0).abs() < 1e-6);
        assert!((v[1] - 0.5).abs() < 1e-6);
        assert!((v[2] - 0.5).abs() < 1e-6);
        assert!((v[3] - 0.299 / 2.0).abs() < 1e-6);
    }

    #[test]
    fn median_threshold_balances_ties() {
        let t = median_thresholds(&[1.0, 2.0, 2.0, 2.0, 3.0, 3.0], 1);
        // sorted 1,2,2,2,3,3: median 2; '>' gives 2/6, '>=' gives 5/6 -> '>' is closer to 1/2.
        assert_eq!(t[0], Threshold { at: 2.0, inclusive: false });
        let t = median_thresholds(&[1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0], 1);
        // median 2 (index 3); '>' gives 0, '>=' gives 4/7 -> inclusive.
        assert_eq!(t[0], Threshold { at: 2.0, inclusive: true });
        let b = binarise_splits(vec![0.0, 10.0, 1.0, 20.0, 2.0, 30.0, 3.0, 40.0], vec![0.5, 25.0], 2);
        assert_eq!(Vec::<i64>::try_from(b.train.0.view([-1])).unwrap(), vec![0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(Vec::<i64>::try_from(b.test.0.view([-1])).unwrap(), vec![0, 1]);
    }
}
