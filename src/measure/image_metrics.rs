//! How close a reconstructed image is to the original: MSE, PSNR, SSIM, and the optimal matching of a batch of
//! reconstructions to a batch of originals.
//!
//! Images are tch tensors shaped `(C, H, W)` (one image) or `(N, C, H, W)` (a batch); every function returns one
//! value per image (a single-element vector for a `(C, H, W)` tensor). Values are converted to `f64` and computed
//! on the CPU in plain Rust, so results do not depend on the tensor's kind or device.
//!
//! The definitions follow scikit-image, so numbers can be compared with papers that use it:
//! * [`mse`]: mean of the squared differences over all `C*H*W` values.
//! * [`psnr`]: `10 log10(data_range^2 / mse)` in dB, like `skimage.metrics.peak_signal_noise_ratio`; `+inf` for
//!   identical images.
//! * [`ssim`]: Wang et al. 2004 with a Gaussian window, exactly as
//!   `skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
//!   data_range=1.0, channel_axis=0)`: local means, variances and covariance from a Gaussian filter
//!   (sigma 1.5, truncated at 3.5 sigma: 11 taps; borders extended by mirror reflection `dcba|abcd|dcba`, as
//!   `scipy.ndimage`'s `reflect` mode), `K1 = 0.01`, `K2 = 0.03`, the SSIM map averaged after cropping
//!   `(win_size - 1) / 2` pixels at each border, then averaged over channels.
//!
//! Images smaller than the window: scikit-image refuses images with a side shorter than `win_size` (11 by
//! default), and so does [`ssim`], with an error that says what to do. For 8x8 images (e.g. the sklearn digits)
//! set [`SsimOptions::win_size`] to an odd value <= 8, e.g. 7: as in scikit-image's `win_size=7`, the Gaussian
//! filter stays the same (11 taps, reflected borders) and only the border crop shrinks to 3 pixels, so the result
//! equals scikit-image's with `win_size=7`.

use anyhow::{bail, ensure, Context, Result};
use tch::{Kind, Tensor};

/// Parameters of [`ssim`]; [`Default`] gives Wang et al. 2004 / scikit-image's Gaussian SSIM on `[0, 1]` data.
#[derive(Debug, Clone, PartialEq)]
pub struct SsimOptions {
    /// Range of the pixel values (max - min possible), 1.0 for images in `[0, 1]`, 255 for 8-bit.
    pub data_range: f64,
    /// Standard deviation of the Gaussian window, in pixels.
    pub sigma: f64,
    /// Stabiliser for the luminance term: `C1 = (K1 * data_range)^2`.
    pub k1: f64,
    /// Stabiliser for the contrast-structure term: `C2 = (K2 * data_range)^2`.
    pub k2: f64,
    /// Side of the window used for the size check and the border crop (scikit-image's `win_size`); `None`: the
    /// Gaussian filter's width, `2 * round(3.5 sigma) + 1` (11 for sigma 1.5). Must be odd.
    pub win_size: Option<usize>,
}

impl Default for SsimOptions {
    fn default() -> Self {
        SsimOptions { data_range: 1.0, sigma: 1.5, k1: 0.01, k2: 0.03, win_size: None }
    }
}

/// Gaussian truncation in standard deviations, as scikit-image's SSIM (11 taps for sigma 1.5).
const TRUNCATE: f64 = 3.5;

/// Images of one tensor as `f64`: (number of images, channels, height, width, values).
struct Images {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    values: Vec<f64>,
}

impl Images {
    fn from_tensor(t: &Tensor, what: &str) -> Result<Images> {
        let size = t.size();
        let (n, c, h, w) = match *size.as_slice() {
            [c, h, w] => (1, c, h, w),
            [n, c, h, w] => (n, c, h, w),
            _ => bail!("{what}: expected a (C, H, W) or (N, C, H, W) tensor, got shape {size:?}"),
        };
        ensure!(n > 0 && c > 0 && h > 0 && w > 0, "{what}: empty image tensor of shape {size:?}");
        let flat = t.to_kind(Kind::Double).to_device(tch::Device::Cpu).contiguous().view([-1]);
        let values = Vec::<f64>::try_from(&flat).with_context(|| format!("{what}: cannot read the values"))?;
        ensure!(values.iter().all(|v| v.is_finite()), "{what}: contains NaN or infinite values");
        Ok(Images { n: n as usize, c: c as usize, h: h as usize, w: w as usize, values })
    }

    fn image(&self, i: usize) -> &[f64] {
        let len = self.c * self.h * self.w;
        &self.values[i * len..(i + 1) * len]
    }
}

fn pair(a: &Tensor, b: &Tensor) -> Result<(Images, Images)> {
    ensure!(a.size() == b.size(), "images of different shapes: {:?} and {:?}", a.size(), b.size());
    Ok((Images::from_tensor(a, "first image")?, Images::from_tensor(b, "second image")?))
}

fn mse_slices(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>() / a.len() as f64
}

/// Mean squared error of each image pair.
pub fn mse(a: &Tensor, b: &Tensor) -> Result<Vec<f64>> {
    let (a, b) = pair(a, b)?;
    Ok((0..a.n).map(|i| mse_slices(a.image(i), b.image(i))).collect())
}

/// Peak signal-to-noise ratio of each pair in dB, `10 log10(data_range^2 / mse)`; `+inf` for identical images.
pub fn psnr(a: &Tensor, b: &Tensor, data_range: f64) -> Result<Vec<f64>> {
    ensure!(data_range > 0.0 && data_range.is_finite(), "PSNR: data range must be > 0, got {data_range}");
    Ok(mse(a, b)?
        .into_iter()
        .map(|m| if m == 0.0 { f64::INFINITY } else { 10.0 * (data_range * data_range / m).log10() })
        .collect())
}

/// Mean structural similarity of each image pair (averaged over channels); see the module documentation.
pub fn ssim(a: &Tensor, b: &Tensor, opts: &SsimOptions) -> Result<Vec<f64>> {
    let SsimOptions { data_range, sigma, k1, k2, win_size } = *opts;
    ensure!(data_range > 0.0 && data_range.is_finite(), "SSIM: data range must be > 0, got {data_range}");
    ensure!(sigma > 0.0 && sigma.is_finite(), "SSIM: sigma must be > 0, got {sigma}");
    ensure!(k1 >= 0.0 && k2 >= 0.0, "SSIM: K1 and K2 must be >= 0, got {k1} and {k2}");
    let kernel = gaussian_kernel(sigma);
    let win = win_size.unwrap_or(kernel.len());
    ensure!(win % 2 == 1, "SSIM: the window size must be odd, got {win}");
    let (a, b) = pair(a, b)?;
    if a.h < win || a.w < win {
        bail!(
            "SSIM: {}x{} images are smaller than the {win}x{win} window; set the window size to an odd number \
             <= {} (e.g. 7 for 8x8 images, as scikit-image's win_size)",
            a.h,
            a.w,
            a.h.min(a.w)
        );
    }
    let c1 = (k1 * data_range).powi(2);
    let c2 = (k2 * data_range).powi(2);
    let plane = a.h * a.w;
    Ok((0..a.n)
        .map(|i| {
            let (x, y) = (a.image(i), b.image(i));
            let total: f64 = (0..a.c)
                .map(|ch| {
                    let r = ch * plane..(ch + 1) * plane;
                    ssim_plane(&x[r.clone()], &y[r], a.h, a.w, &kernel, win, c1, c2)
                })
                .sum();
            total / a.c as f64
        })
        .collect())
}

/// Normalised Gaussian taps, `radius = floor(3.5 sigma + 0.5)`, as `scipy.ndimage.gaussian_filter`.
fn gaussian_kernel(sigma: f64) -> Vec<f64> {
    let radius = (TRUNCATE * sigma + 0.5) as i64;
    let taps: Vec<f64> = (-radius..=radius).map(|x| (-0.5 / (sigma * sigma) * (x * x) as f64).exp()).collect();
    let sum: f64 = taps.iter().sum();
    taps.into_iter().map(|t| t / sum).collect()
}

/// Index `i` (possibly outside `0..n`) mirrored into `0..n` the way `scipy.ndimage` mode `reflect` does
/// (`d c b a | a b c d | d c b a`, repeating with period `2n`).
fn reflect(i: i64, n: usize) -> usize {
    let n = n as i64;
    let m = i.rem_euclid(2 * n);
    (if m < n { m } else { 2 * n - 1 - m }) as usize
}

/// Separable Gaussian filter of an `h x w` plane: along rows (axis 0) first, then columns (axis 1).
fn gaussian_filter(src: &[f64], h: usize, w: usize, kernel: &[f64]) -> Vec<f64> {
    let r = (kernel.len() / 2) as i64;
    let mut tmp = vec![0.0; h * w];
    for i in 0..h {
        for j in 0..w {
            tmp[i * w + j] =
                kernel.iter().enumerate().map(|(k, wt)| wt * src[reflect(i as i64 + k as i64 - r, h) * w + j]).sum();
        }
    }
    let mut out = vec![0.0; h * w];
    for i in 0..h {
        for j in 0..w {
            out[i * w + j] =
                kernel.iter().enumerate().map(|(k, wt)| wt * tmp[i * w + reflect(j as i64 + k as i64 - r, w)]).sum();
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn ssim_plane(x: &[f64], y: &[f64], h: usize, w: usize, kernel: &[f64], win: usize, c1: f64, c2: f64) -> f64 {
    let filt = |v: &[f64]| gaussian_filter(v, h, w, kernel);
    let product = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(a, b)| a * b).collect::<Vec<f64>>();
    let (ux, uy) = (filt(x), filt(y));
    let (uxx, uyy, uxy) = (filt(&product(x, x)), filt(&product(y, y)), filt(&product(x, y)));
    let pad = (win - 1) / 2;
    let mut sum = 0.0;
    for i in pad..h - pad {
        for j in pad..w - pad {
            let k = i * w + j;
            let (mx, my) = (ux[k], uy[k]);
            let vx = uxx[k] - mx * mx;
            let vy = uyy[k] - my * my;
            let vxy = uxy[k] - mx * my;
            let a1 = 2.0 * mx * my + c1;
            let a2 = 2.0 * vxy + c2;
            let b1 = mx * mx + my * my + c1;
            let b2 = vx + vy + c2;
            sum += (a1 * a2) / (b1 * b2);
        }
    }
    sum / ((h - 2 * pad) * (w - 2 * pad)) as f64
}

/// The matrix of MSEs between every reconstruction (rows) and every original (columns); both tensors
/// `(N, C, H, W)` with the same image shape (the counts may differ).
pub fn pairwise_mse(reconstructions: &Tensor, originals: &Tensor) -> Result<Vec<Vec<f64>>> {
    let r = Images::from_tensor(reconstructions, "reconstructions")?;
    let o = Images::from_tensor(originals, "originals")?;
    ensure!(
        (r.c, r.h, r.w) == (o.c, o.h, o.w),
        "reconstructions are {}x{}x{} images but originals are {}x{}x{}",
        r.c,
        r.h,
        r.w,
        o.c,
        o.h,
        o.w
    );
    Ok((0..r.n).map(|i| (0..o.n).map(|j| mse_slices(r.image(i), o.image(j))).collect()).collect())
}

/// For each reconstruction, the index of the original it is matched to, so that the total MSE of the matched pairs
/// is smallest and no original is used twice (the Hungarian algorithm on [`pairwise_mse`]). Needs at most as many
/// reconstructions as originals.
pub fn match_reconstructions(reconstructions: &Tensor, originals: &Tensor) -> Result<Vec<usize>> {
    min_cost_assignment(&pairwise_mse(reconstructions, originals)?)
}

/// Minimum-cost assignment (Hungarian algorithm with potentials, O(n^2 m)) for an `n x m` cost matrix with
/// `n <= m`: returns, for each row, its column, all columns distinct, minimising the sum of the chosen costs. Ties
/// are broken deterministically.
pub fn min_cost_assignment(cost: &[Vec<f64>]) -> Result<Vec<usize>> {
    let n = cost.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let m = cost[0].len();
    ensure!(cost.iter().all(|row| row.len() == m), "assignment: the cost matrix rows have different lengths");
    ensure!(n <= m, "assignment: {n} rows cannot be matched to {m} distinct columns");
    ensure!(cost.iter().flatten().all(|c| c.is_finite()), "assignment: the cost matrix has NaN or infinite entries");
    // 1-based arrays with a virtual column 0, as in the classic formulation (e-maxx).
    let mut u = vec![0.0f64; n + 1];
    let mut v = vec![0.0f64; m + 1];
    let mut row_of_col = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        row_of_col[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        loop {
            used[j0] = true;
            let i0 = row_of_col[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost[i0 - 1][j - 1] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[row_of_col[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if row_of_col[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            row_of_col[j0] = row_of_col[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut col_of_row = vec![0usize; n];
    for j in 1..=m {
        if row_of_col[j] != 0 {
            col_of_row[row_of_col[j] - 1] = j - 1;
        }
    }
    Ok(col_of_row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_has_eleven_taps_for_sigma_one_and_a_half() {
        let k = gaussian_kernel(1.5);
        assert_eq!(k.len(), 11);
        assert!((k.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        assert!((k[5] / k[6] - (0.5f64 / 2.25).exp()).abs() < 1e-12);
    }

    #[test]
    fn reflect_mirrors_like_scipy() {
        let idx: Vec<usize> = (-5..9).map(|i| reflect(i, 4)).collect();
        // scipy 'reflect' on [a b c d]: ... c d | d c b a | a b c d | d c b a | a b ...
        assert_eq!(idx, vec![3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2, 1, 0, 0]);
    }
}
