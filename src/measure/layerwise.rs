//! Layer-wise V-information of shared updates: every layer, chosen groups of layers and all layers together, for
//! every target (the victim's input, label, latent attributes) and every family.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tch::{Kind, Tensor};

use crate::data::AttributeInfo;
use crate::gradients::updates::SharedUpdates;
use crate::measure::attack_families::AttackBackedFeatures;
use crate::measure::vinfo::{self, EstimateOptions, Family, Target, VInfoEstimate};
use crate::progress::Progress;

/// A measurable private quantity of the victims.
pub struct NamedTarget {
    /// `input`, `label` or `attribute:NAME`.
    pub name: String,
    pub target: Target,
}

/// Expands target specs into target names: `input`, `label`, `attribute` (the first), `attribute:NAME`,
/// `attributes` (every one) give `input`, `label` and `attribute:NAME`. Checks the attributes exist.
pub fn target_names(specs: &[String], attributes: &[AttributeInfo]) -> Result<Vec<String>> {
    let attribute = |name: &str| -> Result<String> {
        if !attributes.iter().any(|a| a.name == name) {
            let names: Vec<_> = attributes.iter().map(|a| a.name.as_str()).collect();
            bail!("no attribute '{name}'; the attributes are: {}", names.join(", "));
        }
        Ok(format!("attribute:{name}"))
    };
    let mut out = Vec::new();
    for spec in specs {
        match spec.as_str() {
            "input" | "label" => out.push(spec.clone()),
            "attribute" => out.push(attribute(&attributes.first().context("the data has no latent attributes")?.name)?),
            "attributes" => {
                for a in attributes {
                    out.push(attribute(&a.name)?);
                }
            }
            other => match other.strip_prefix("attribute:") {
                Some(name) => out.push(attribute(name)?),
                None => {
                    bail!("unknown target '{other}'; expected input, label, attribute, attribute:NAME or attributes")
                }
            },
        }
    }
    if let Some(twice) = out.iter().enumerate().find_map(|(i, t)| out[..i].contains(t).then_some(t)) {
        bail!("target '{twice}' is listed twice (attribute and attributes name the first attribute too)");
    }
    if out.is_empty() {
        bail!("no target to measure: the data has no latent attributes for `attributes`; add input or label");
    }
    Ok(out)
}

/// Resolves target specs (see [`target_names`]) to the victims' values in `updates`.
pub fn resolve_targets(
    specs: &[String],
    attributes: &[AttributeInfo],
    updates: &SharedUpdates,
) -> Result<Vec<NamedTarget>> {
    let names = target_names(specs, attributes)?;
    Ok(names
        .into_iter()
        .map(|name| {
            let target = match name.as_str() {
                "input" => Target::Continuous(updates.victim_input.flatten(1, -1).to_kind(Kind::Float)),
                "label" => Target::Categorical(updates.victim_label.shallow_clone()),
                attribute => {
                    let col =
                        attributes.iter().position(|a| Some(a.name.as_str()) == attribute.strip_prefix("attribute:"));
                    let col = col.expect("target_names checked the attribute") as i64;
                    Target::Categorical(updates.victim_attributes.select(1, col).contiguous())
                }
            };
            NamedTarget { name, target }
        })
        .collect())
}

/// A set of stored layers measured together.
pub struct LayerGroup {
    /// A layer name, `a+b` for a group, or `all`.
    pub name: String,
    /// Indices into `SharedUpdates::layers`.
    pub members: Vec<usize>,
}

/// Single layers (`layers`, or every stored one when empty), then `groups`, then `all` when asked and there are
/// several layers.
/// Checks the layers measured one by one (`layers`) and the groups measured together (`groups`) before anything
/// is computed: no layer twice in either, no empty group or name.
pub fn check_layer_lists(layers: &[String], groups: &[Vec<String>]) -> Result<()> {
    let twice = |list: &[String]| list.iter().enumerate().find_map(|(i, l)| list[..i].contains(l).then(|| l.clone()));
    if let Some(name) = twice(layers) {
        crate::param_bail!("layers", "lists layer '{name}' twice");
    }
    for g in groups {
        if g.is_empty() || g.iter().any(|n| n.trim().is_empty()) {
            crate::param_bail!("groups", "has an empty group or layer name ({g:?}); a group names one or more layers");
        }
        if let Some(name) = twice(g) {
            crate::param_bail!("groups", "lists layer '{name}' twice in the group {}", g.join("+"));
        }
    }
    Ok(())
}

pub fn layer_groups(
    updates: &SharedUpdates,
    layers: &[String],
    groups: &[Vec<String>],
    all: bool,
) -> Result<Vec<LayerGroup>> {
    let stored: Vec<&str> = updates.layers.iter().map(|l| l.name.as_str()).collect();
    let index = |param: &'static str, name: &str| -> Result<usize> {
        match stored.iter().position(|s| *s == name) {
            Some(i) => Ok(i),
            None => {
                crate::param_bail!(param, "names layer '{name}', not among the shared layers: {}", stored.join(", "))
            }
        }
    };
    check_layer_lists(layers, groups)?;
    let mut out: Vec<LayerGroup> = Vec::new();
    if layers.is_empty() {
        out.extend(stored.iter().enumerate().map(|(i, s)| LayerGroup { name: s.to_string(), members: vec![i] }));
    } else {
        for name in layers {
            out.push(LayerGroup { name: name.clone(), members: vec![index("layers", name)?] });
        }
    }
    for g in groups {
        let members = g.iter().map(|n| index("groups", n)).collect::<Result<Vec<_>>>()?;
        out.push(LayerGroup { name: g.join("+"), members });
    }
    if all && stored.len() > 1 {
        out.push(LayerGroup { name: "all".into(), members: (0..stored.len()).collect() });
    }
    Ok(out)
}

/// Features of a group: each member's full gradient or its sketch, side by side; which kind; parameter count.
pub fn group_features(updates: &SharedUpdates, members: &[usize]) -> (Tensor, String, i64) {
    let parts: Vec<&Tensor> = members.iter().map(|&m| updates.layers[m].features()).collect();
    let full: Vec<bool> = members.iter().map(|&m| updates.layers[m].features_kind() == "full").collect();
    let kind = if full.iter().all(|&f| f) {
        "full"
    } else if full.iter().all(|&f| !f) {
        "sketch"
    } else {
        "mixed"
    };
    let params = members.iter().map(|&m| updates.layers[m].num_params).sum();
    (Tensor::cat(&parts, 1), kind.to_string(), params)
}

/// One estimate of the layer-wise table.
#[derive(Debug, Clone, Serialize)]
pub struct LayerwiseRow {
    pub layer: String,
    pub num_params: i64,
    /// `full`, `sketch` (a lower bound) or `mixed`.
    pub features: String,
    pub feature_dim: i64,
    pub target: String,
    pub estimate: VInfoEstimate,
}

/// Every (group, target, family) estimate. Families that read the gradient read each group's gradients (or
/// sketches); the attack-backed families (analytic, ig, dlg, idlg) read what their attacker in `attackers`
/// reconstructs from them, and have no row where their attack has nothing (no closed form, a target not measured
/// from pixels).
pub fn layerwise(
    updates: &SharedUpdates,
    groups: &[LayerGroup],
    targets: &[NamedTarget],
    families: &[Family],
    opts: &EstimateOptions,
    mut attackers: Option<&mut AttackBackedFeatures>,
    progress: Progress,
) -> Result<Vec<LayerwiseRow>> {
    let bar = progress.bar((groups.len() * targets.len() * families.len()) as u64, "V-information");
    let mut rows = Vec::new();
    for group in groups {
        let (gradients, kind, params) = group_features(updates, &group.members);
        for t in targets {
            for family in families {
                let context = || format!("V-information of {} about {} ({family})", group.name, t.name);
                let (features, features_kind) = if family.reads_gradients() {
                    (gradients.shallow_clone(), kind.clone())
                } else {
                    let Some(attackers) = attackers.as_deref_mut() else {
                        bail!("the {family} family needs the model and the full gradients (run it in an audit)")
                    };
                    match attackers.features(family, &group.name, &group.members, &t.name).with_context(context)? {
                        Some(features) => (features, "reconstruction".to_string()),
                        None => {
                            bar.inc(1);
                            continue;
                        }
                    }
                };
                let estimate = vinfo::estimate(&features, &t.target, family, opts).with_context(context)?;
                rows.push(LayerwiseRow {
                    layer: group.name.clone(),
                    num_params: params,
                    features: features_kind,
                    feature_dim: features.size()[1],
                    target: t.name.clone(),
                    estimate,
                });
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    Ok(rows)
}

/// The pseudo-family of the largest estimate per layer (or group) and target (see [`best_index`]).
pub const BEST: &str = "best";

/// The position of the largest of `bits` (the estimates of one layer and target, in the families' order): the first
/// of equal ones, never a NaN unless all are. None when there is none.
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
