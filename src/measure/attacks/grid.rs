//! A PNG grid of original images above their reconstructions, small images upscaled by pixel repetition.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use tch::{Kind, Tensor};

/// Smallest side, in output pixels, an image is upscaled to (by an integer factor).
const MIN_SIDE: i64 = 84;
/// Gap between images, in output pixels.
const GAP: usize = 4;
/// Background grey level.
const BACKGROUND: u8 = 255;

/// RGB bytes of a grid: rows of up to `columns` originals, each row followed by the matching reconstructions.
/// Returns (width, height, pixels). Values are mapped from `data_range` to 0..255 (clipped); one-channel images are
/// grey, three-channel images colour, other channel counts show their first channel.
pub fn grid_pixels(
    originals: &Tensor,
    reconstructions: &Tensor,
    columns: usize,
    data_range: (f64, f64),
) -> Result<(usize, usize, Vec<u8>)> {
    let size = originals.size();
    ensure!(size.len() == 4, "image grid: expected (N, C, H, W) images, got shape {size:?}");
    ensure!(
        reconstructions.size() == size,
        "image grid: {:?} reconstructions for {size:?} originals",
        reconstructions.size()
    );
    ensure!(columns > 0, "image grid: at least one column");
    let (n, c, h, w) = (size[0] as usize, size[1] as usize, size[2] as usize, size[3] as usize);
    ensure!(n > 0 && h > 0 && w > 0 && c > 0, "image grid: no images");
    let scale = ((MIN_SIDE as usize).div_ceil(h.min(w))).clamp(1, 16);
    let (cell_w, cell_h) = (w * scale, h * scale);
    let cols = columns.min(n);
    let rows = n.div_ceil(cols);
    let width = cols * cell_w + (cols + 1) * GAP;
    let height = rows * (2 * cell_h + GAP) + (rows + 1) * GAP;
    let mut pixels = vec![BACKGROUND; width * height * 3];
    let (lo, hi) = data_range;
    let read = |t: &Tensor| -> Result<Vec<u8>> {
        let t = ((t.to_kind(Kind::Double) - lo) * (255.0 / (hi - lo))).clamp(0.0, 255.0).round();
        let values = Vec::<f64>::try_from(t.contiguous().flatten(0, -1)).context("image grid: cannot read values")?;
        Ok(values.into_iter().map(|v| if v.is_finite() { v as u8 } else { 0 }).collect())
    };
    let images = [read(originals)?, read(reconstructions)?];
    let plane = h * w;
    for i in 0..n {
        let (row, col) = (i / cols, i % cols);
        for (k, values) in images.iter().enumerate() {
            let top = GAP + row * (2 * cell_h + GAP + GAP) + k * (cell_h + GAP);
            let left = GAP + col * (cell_w + GAP);
            let image = &values[i * c * plane..(i + 1) * c * plane];
            for y in 0..cell_h {
                for x in 0..cell_w {
                    let p = (y / scale) * w + x / scale;
                    let rgb = if c == 3 { [image[p], image[plane + p], image[2 * plane + p]] } else { [image[p]; 3] };
                    let o = ((top + y) * width + left + x) * 3;
                    pixels[o..o + 3].copy_from_slice(&rgb);
                }
            }
        }
    }
    Ok((width, height, pixels))
}

/// Writes the grid as an RGB PNG, atomically.
pub fn write_grid(
    path: &Path,
    originals: &Tensor,
    reconstructions: &Tensor,
    columns: usize,
    data_range: (f64, f64),
) -> Result<()> {
    let (width, height, pixels) = grid_pixels(originals, reconstructions, columns, data_range)?;
    crate::io::atomic_write_with(path, |tmp| {
        let file = std::fs::File::create(tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().context("PNG header")?;
        writer.write_image_data(&pixels).context("PNG data")?;
        writer.finish().context("PNG end")?;
        Ok(())
    })
    .with_context(|| format!("{}: cannot write the image grid", path.display()))
}
