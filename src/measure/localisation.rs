//! Localisation: which layers hold a target's usable information, and the fewest of them whose protection (not
//! sharing them) leaves the rest under a fraction of the unprotected leakage, measured by re-estimating the rest.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::gradients::updates::SharedUpdates;
use crate::measure::families::Family;
use crate::measure::groups::group_features;
use crate::measure::targets::NamedTarget;
use crate::measure::vinfo::EstimateOptions;

/// One step of the localisation search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalisationStep {
    pub protected: Vec<String>,
    /// Usable information of all other layers together (bits): the larger of their joint estimate and their best
    /// single layer's (both lower bounds).
    pub remaining_bits: f64,
    /// The joint estimate's interval.
    pub ci95: [f64; 2],
}

/// Where a target's usable information sits, and what protecting the top layers leaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Localisation {
    pub target: String,
    /// Whose bits rank the layers (`single_bits`, `all_bits`): a family, or `best` in an audit.
    pub family: String,
    /// The family that measured the unprotected layers left at each step.
    #[serde(default)]
    pub refit_family: String,
    /// Layers by bits, most first.
    pub ranking: Vec<(String, f64)>,
    /// Bits of all shared layers together (the larger of the joint estimate and the best single layer's).
    pub unprotected_bits: f64,
    pub fraction: f64,
    /// The fewest top-ranked layers whose protection brought the rest under `fraction * unprotected_bits`; empty
    /// when the unprotected layers carry no usable information (nothing to localise).
    pub protect: Vec<String>,
    /// The protection sets measured while searching (by bisection over how many top layers), fewest first.
    pub steps: Vec<LocalisationStep>,
}

impl Localisation {
    /// Bits the unprotected layers keep once `protect` is protected: 0 when every layer is, NaN when not measured.
    pub fn remaining_bits(&self) -> f64 {
        if self.protect.is_empty() {
            return self.unprotected_bits;
        }
        match self.steps.iter().find(|s| s.protected == self.protect) {
            Some(step) => step.remaining_bits,
            None if self.protect.len() == self.ranking.len() => 0.0,
            None => f64::NAN,
        }
    }
}

/// The family that measures what protection leaves: `source` (the family that found the most) when it reads the
/// gradients, else the first of `families` that does. A model-backed family would need its attack rerun on every
/// protection set; the gradient family is the one that refits cheaply. None when no family reads the gradients.
pub fn refit_family<'f>(families: &'f [Family], source: Option<&str>) -> Option<&'f Family> {
    let mut gradient_families = families.iter().filter(|f| f.reads_gradients());
    let first = gradient_families.next()?;
    Some(
        std::iter::once(first)
            .chain(gradient_families)
            .find(|f| Some(f.to_string().as_str()) == source)
            .unwrap_or(first),
    )
}

/// Ranks the single layers of `updates` by their bits (`single_bits`: (layer, bits) for `target`, measured already
/// by `ranked_by`: a family's name, or `best`), then finds the fewest top layers whose protection leaves all the
/// others together under `fraction` of the unprotected bits, measuring the others with `family`. `all_bits`: the
/// joint estimate of every layer when it is measured already.
#[allow(clippy::too_many_arguments)]
pub fn localise(
    updates: &SharedUpdates,
    target: &NamedTarget,
    ranked_by: &str,
    family: &Family,
    single_bits: &[(String, f64)],
    all_bits: Option<f64>,
    fraction: f64,
    opts: &EstimateOptions,
) -> Result<Localisation> {
    let n_layers = updates.layers.len();
    let mut ranking: Vec<(String, f64)> = updates
        .layers
        .iter()
        .filter_map(|l| single_bits.iter().find(|(name, _)| *name == l.name).map(|(_, b)| (l.name.clone(), *b)))
        .collect();
    ranking.sort_by(|a, b| b.1.total_cmp(&a.1));
    // A set of layers carries at least what its best member carries (the family can ignore the others), so each
    // set's estimate is the larger of its joint estimate and its best member's: both are lower bounds.
    let best_of = |names: &[String]| {
        ranking.iter().filter(|(n, _)| names.contains(n)).map(|(_, b)| *b).fold(f64::NEG_INFINITY, f64::max)
    };
    let all_names: Vec<String> = ranking.iter().map(|(n, _)| n.clone()).collect();
    let joint = match all_bits {
        Some(b) => b,
        None => {
            let features = group_features(updates, &(0..n_layers).collect::<Vec<_>>()).values;
            family.estimate(&features, &target.target, opts)?.bits
        }
    };
    let unprotected = joint.max(best_of(&all_names));
    // No layer, alone or together, carrying usable information for this family leaves nothing to localise.
    let (protect, steps) = if unprotected <= 0.0 {
        (Vec::new(), Vec::new())
    } else {
        let threshold = fraction * unprotected;
        // What the layers left after protecting the top k carry. Protecting more layers never adds information,
        // so the smallest k that brings it under the threshold is found by bisection: a few joint fits, not one
        // per layer (ResNets share about 40 layers).
        let mut steps: Vec<(usize, LocalisationStep)> = Vec::new();
        let mut remaining_after = |k: usize| -> Result<f64> {
            let protected: Vec<String> = ranking[..k].iter().map(|(n, _)| n.clone()).collect();
            let rest: Vec<usize> = (0..n_layers).filter(|&i| !protected.contains(&updates.layers[i].name)).collect();
            let features = group_features(updates, &rest).values;
            let e = family
                .estimate(&features, &target.target, opts)
                .with_context(|| format!("localisation of {}", target.name))?;
            let rest_names: Vec<String> = rest.iter().map(|&i| updates.layers[i].name.clone()).collect();
            let remaining = e.bits.max(best_of(&rest_names));
            steps.push((k, LocalisationStep { protected, remaining_bits: remaining, ci95: e.ci95 }));
            Ok(remaining)
        };
        // Only ranked layers (those measured one by one) are candidates for protection.
        let (mut lo, mut hi, mut smallest) = (1, ranking.len().min(n_layers - 1), None);
        while lo <= hi {
            let k = (lo + hi) / 2;
            if remaining_after(k)? <= threshold {
                smallest = Some(k);
                hi = k - 1;
            } else {
                lo = k + 1;
            }
        }
        steps.sort_by_key(|(k, _)| *k);
        // Without a k under the threshold only protecting every layer leaves nothing.
        let protect = ranking[..smallest.unwrap_or(ranking.len())].iter().map(|(n, _)| n.clone()).collect();
        (protect, steps.into_iter().map(|(_, step)| step).collect())
    };
    Ok(Localisation {
        target: target.name.to_string(),
        family: ranked_by.to_string(),
        refit_family: family.to_string(),
        ranking,
        unprotected_bits: unprotected,
        fraction,
        protect,
        steps,
    })
}
