//! Scoring: reconstructions are matched to the originals (Hungarian assignment on MSE) and each pair is scored
//! (MSE, PSNR, SSIM, label).

use anyhow::{ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::measure::image_metrics::{self, SsimOptions};

/// The scores of one reconstructed image against the original it was matched to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageScore {
    /// Position of the original in its batch.
    pub original: usize,
    /// Position of the reconstruction matched to it.
    pub reconstruction: usize,
    pub label: i64,
    pub recovered_label: i64,
    pub label_correct: bool,
    pub mse: f64,
    /// dB; null in JSON when the images are identical (infinite).
    pub psnr: f64,
    /// Null when the images are smaller than 3x3.
    pub ssim: Option<f64>,
}

/// SSIM settings for an image size: scikit-image's defaults (11x11 window) or the largest odd window that fits.
pub fn ssim_options(height: i64, width: i64, data_range: f64) -> Option<SsimOptions> {
    let side = height.min(width);
    if side < 3 {
        return None;
    }
    let win_size = (side < 11).then(|| (if side % 2 == 1 { side } else { side - 1 }) as usize);
    Some(SsimOptions { data_range, win_size, ..Default::default() })
}

/// Matches reconstructions to originals (Hungarian on MSE) and scores every pair. Both `(B, C, H, W)`; labels
/// `(B,)` each. Returns one score per original, in the originals' order.
pub fn score(
    reconstructions: &Tensor,
    recovered_labels: &[i64],
    originals: &Tensor,
    labels: &[i64],
    data_range: f64,
) -> Result<Vec<ImageScore>> {
    let r = reconstructions.to_kind(Kind::Double);
    let o = originals.to_kind(Kind::Double);
    ensure!(
        r.size() == o.size(),
        "scoring: {:?} reconstructions for {:?} originals; they must have the same shape",
        r.size(),
        o.size()
    );
    ensure!(r.dim() == 4, "scoring: expected (B, C, H, W) images, got shape {:?}", r.size());
    let assignment = image_metrics::match_reconstructions(&r, &o)?;
    let mut scores = Vec::with_capacity(assignment.len());
    let (h, w) = (r.size()[2], r.size()[3]);
    let ssim_opts = ssim_options(h, w, data_range);
    for (j, &i) in assignment.iter().enumerate() {
        let a = r.get(j as i64);
        let b = o.get(i as i64);
        let mse = image_metrics::mse(&a, &b)?[0];
        let psnr = image_metrics::psnr(&a, &b, data_range)?[0];
        let ssim = match &ssim_opts {
            Some(opts) => Some(image_metrics::ssim(&a, &b, opts)?[0]),
            None => None,
        };
        scores.push(ImageScore {
            original: i,
            reconstruction: j,
            label: labels[i],
            recovered_label: recovered_labels[j],
            label_correct: labels[i] == recovered_labels[j],
            mse,
            psnr,
            ssim,
        });
    }
    scores.sort_by_key(|s| s.original);
    Ok(scores)
}
