//! What the model-backed families share: scoring reconstructions against the victims' images, measuring an
//! attribute on a reconstruction, and the error of an attack that met a layer kept only as a sketch.

use anyhow::Result;
use tch::{Kind, Tensor};

use crate::data::{attributes, InputShape};
use crate::measure::attacks::ssim_options;
use crate::measure::image_metrics;
use crate::models::Model;

/// A model-backed family met a layer whose store keeps only its sketch: the attack needs the full gradient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SketchOnlyLayer {
    pub family: &'static str,
    pub layer: String,
    pub num_params: i64,
}

impl std::fmt::Display for SketchOnlyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} family: only a sketch of layer '{}' is stored; the attack needs its full gradient",
            self.family, self.layer
        )
    }
}

impl std::error::Error for SketchOnlyLayer {}

/// How well one layer's reconstructions match the victims' images (means over victims; PSNR over finite values).
pub struct ReconstructionScore {
    pub layer: String,
    pub samples: usize,
    pub mse: f64,
    pub psnr: f64,
    pub ssim: Option<f64>,
    /// The reconstructions (N, C, H, W), clipped to [0, 1].
    pub images: Tensor,
}

/// How close reconstructions (N, ...) of the victims' inputs come to them, as `layer`'s score; None for a model
/// that does not take images in [0, 1].
pub fn score_images(
    model: &Model,
    victims: &Tensor,
    layer: &str,
    images: &Tensor,
) -> Result<Option<ReconstructionScore>> {
    let InputShape::Image { height, width, .. } = model.spec.input else { return Ok(None) };
    let originals = victims.to_kind(Kind::Double);
    let images = images.to_kind(Kind::Double).reshape(originals.size()).clamp(0.0, 1.0);
    let mean = |v: Vec<f64>| {
        let finite: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
        finite.iter().sum::<f64>() / finite.len().max(1) as f64
    };
    let ssim = match ssim_options(height, width, 1.0) {
        Some(opts) => Some(mean(image_metrics::ssim(&images, &originals, &opts)?)),
        None => None,
    };
    Ok(Some(ReconstructionScore {
        layer: layer.to_string(),
        samples: images.size()[0] as usize,
        mse: mean(image_metrics::mse(&images, &originals)?),
        psnr: mean(image_metrics::psnr(&images, &originals, 1.0)?),
        ssim,
        images,
    }))
}

/// The column of attribute `name` among the attributes measured on a model's input images, None for tabular
/// models or attributes that are not measured from pixels.
pub(super) fn measured_attribute_column(model: &Model, name: &str) -> Option<usize> {
    let InputShape::Image { channels, .. } = model.spec.input else { return None };
    attributes::image_attribute_infos(channels).iter().position(|a| a.name == name)
}

/// Attribute `name` measured on reconstructed images (N, C, H, W), as an (N, 1) feature.
pub(super) fn attribute_on(model: &Model, images: &Tensor, name: &str) -> Result<Option<Tensor>> {
    let InputShape::Image { channels, .. } = model.spec.input else { return Ok(None) };
    let Some(column) = measured_attribute_column(model, name) else { return Ok(None) };
    let count = attributes::image_attribute_infos(channels).len() as i64;
    let values = attributes::image_values(&images.to_kind(Kind::Float))?;
    let table = Tensor::from_slice(&values).view([images.size()[0], count]);
    Ok(Some(table.narrow(1, column as i64, 1).contiguous()))
}
