//! The layer groups a measurement reads: single shared layers, chosen groups measured together, and all shared
//! layers; and a group's features (its members' full gradients or sketches side by side).

use anyhow::Result;
use tch::Tensor;

use crate::gradients::updates::SharedUpdates;

/// A set of stored layers measured together.
pub struct LayerGroup {
    /// A layer name, `a+b` for a group, or `all`.
    pub name: String,
    /// Indices into `SharedUpdates::layers`.
    pub members: Vec<usize>,
}

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

/// Single layers (`layers`, or every stored one when empty), then `groups`, then `all` when asked and there are
/// several layers.
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

/// What the gradient families read of a group: each member's full gradient or its sketch, side by side.
pub struct GroupFeatures {
    pub values: Tensor,
    /// `full`, `sketch` (a lower bound) or `mixed`.
    pub kind: String,
    /// Parameters of the group's layers.
    pub num_params: i64,
}

/// Features of a group: each member's full gradient or its sketch, side by side; which kind; parameter count.
pub fn group_features(updates: &SharedUpdates, members: &[usize]) -> GroupFeatures {
    let parts: Vec<&Tensor> = members.iter().map(|&m| updates.layers[m].features()).collect();
    let full: Vec<bool> = members.iter().map(|&m| updates.layers[m].features_kind() == "full").collect();
    let kind = if full.iter().all(|&f| f) {
        "full"
    } else if full.iter().all(|&f| !f) {
        "sketch"
    } else {
        "mixed"
    };
    let num_params = members.iter().map(|&m| updates.layers[m].num_params).sum();
    GroupFeatures { values: Tensor::cat(&parts, 1), kind: kind.to_string(), num_params }
}
