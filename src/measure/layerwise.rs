//! Layer-wise V-information of shared updates: every layer, chosen groups of layers and all layers together, for
//! every target (the victim's input, label, latent attributes) and every family.

use anyhow::{Context, Result};
use serde::Serialize;

use crate::measure::families::{Family, FeatureSource, ReconstructionScore, Setup};
use crate::measure::groups::{group_features, LayerGroup};
use crate::measure::targets::NamedTarget;
use crate::measure::vinfo::{EstimateOptions, VInfoEstimate};

/// One estimate of the layer-wise table.
#[derive(Debug, Clone, Serialize)]
pub struct LayerwiseRow {
    pub layer: String,
    pub num_params: i64,
    /// `full`, `sketch` (a lower bound), `mixed` or `reconstruction` (what an attacker made of them).
    pub features: String,
    pub feature_dim: i64,
    pub target: String,
    pub estimate: VInfoEstimate,
}

/// What the layer-wise measurement found: its rows, and what the model-backed families showed of their work.
pub struct Layerwise {
    /// Every (group, target, family) estimate, groups outermost, families innermost in their given order.
    pub rows: Vec<LayerwiseRow>,
    /// The reconstructions of the victims' images, scored: (family, score by layer or group).
    pub image_scores: Vec<(String, ReconstructionScore)>,
    /// What each family did and could not do.
    pub notes: Vec<String>,
}

/// Every (group, target, family) estimate. Each family's source (built here, from `setup`) gives its features per
/// group and target: the gradient families the group's gradients (or sketches), the model-backed families what
/// their attacker reconstructs from them. A family has no row where its source has nothing (no closed form, a
/// target not measured from pixels).
pub fn layerwise(
    setup: &Setup,
    groups: &[LayerGroup],
    targets: &[NamedTarget],
    families: &[Family],
    opts: &EstimateOptions,
) -> Result<Layerwise> {
    let mut sources: Vec<Box<dyn FeatureSource + '_>> =
        families.iter().map(|f| f.source(setup)).collect::<Result<_>>()?;
    let bar = setup.progress.bar((groups.len() * targets.len() * families.len()) as u64, "V-information");
    let mut rows = Vec::new();
    for group in groups {
        let gradients = group_features(setup.updates, &group.members);
        for t in targets {
            for (family, source) in families.iter().zip(sources.iter_mut()) {
                let context = || format!("V-information of {} about {} ({family})", group.name, t.name);
                let Some(features) = source.features(group, &gradients, t).with_context(context)? else {
                    bar.inc(1);
                    continue;
                };
                let estimate = family.estimate(&features.values, &t.target, opts).with_context(context)?;
                rows.push(LayerwiseRow {
                    layer: group.name.clone(),
                    num_params: gradients.num_params,
                    features: features.kind,
                    feature_dim: features.values.size()[1],
                    target: t.name.to_string(),
                    estimate,
                });
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    let mut image_scores = Vec::new();
    let mut notes = Vec::new();
    for (family, source) in families.iter().zip(&sources) {
        image_scores.extend(source.image_scores()?.into_iter().map(|s| (family.to_string(), s)));
        notes.extend(source.notes());
    }
    Ok(Layerwise { rows, image_scores, notes })
}

/// The pseudo-family of the largest estimate per layer (or group) and target (see [`best_index`]).
pub const BEST: &str = "best";

/// The position of the largest of `bits` (the estimates of one layer and target, in the families' order): the first
/// of equal ones, never a NaN unless all are. None when there is none. The one rule for `best`, in the audit's
/// records and the command line's tables alike.
pub fn best_index(bits: impl IntoIterator<Item = f64>) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, b) in bits.into_iter().enumerate() {
        match best {
            Some((_, top)) if !(b > top || (top.is_nan() && !b.is_nan())) => {}
            _ => best = Some((i, b)),
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::best_index;

    #[test]
    fn the_best_index_is_the_first_of_the_largest_and_never_a_nan() {
        assert_eq!(best_index([1.0, 3.0, 2.0]), Some(1));
        assert_eq!(best_index([2.0, 2.0]), Some(0), "ties go to the first family");
        assert_eq!(best_index([f64::NAN, -1.0]), Some(1));
        assert_eq!(best_index([0.5, f64::NAN]), Some(0));
        assert_eq!(best_index([f64::NAN]), Some(0));
        assert_eq!(best_index([]), None);
    }
}
