//! The private quantities of a victim that a measurement targets: its input, its label, a latent attribute. Parsed
//! once ([`TargetName`]), then resolved to the victims' values in a set of shared updates ([`NamedTarget`]).

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use tch::Kind;

use crate::data::AttributeInfo;
use crate::gradients::updates::SharedUpdates;
use crate::measure::vinfo::Target;

/// A measurable private quantity of a victim, written `input`, `label` or `attribute:NAME`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TargetName {
    /// The victim's input (continuous: image pixels, a record's features).
    Input,
    /// The victim's label (categorical).
    Label,
    /// A latent attribute of the victim (categorical), by name.
    Attribute(String),
}

impl TargetName {
    /// The attribute's name, for an attribute.
    pub fn attribute(&self) -> Option<&str> {
        match self {
            TargetName::Attribute(name) => Some(name),
            TargetName::Input | TargetName::Label => None,
        }
    }

    /// Whether the target is categorical (a label or an attribute) rather than continuous (the input).
    pub fn is_categorical(&self) -> bool {
        !matches!(self, TargetName::Input)
    }
}

impl fmt::Display for TargetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetName::Input => f.write_str("input"),
            TargetName::Label => f.write_str("label"),
            TargetName::Attribute(name) => write!(f, "attribute:{name}"),
        }
    }
}

impl FromStr for TargetName {
    type Err = anyhow::Error;
    /// Parses one resolved target (`input`, `label`, `attribute:NAME`); the specs a user writes (`attribute`,
    /// `attributes`) expand through [`target_names`].
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "input" => Ok(TargetName::Input),
            "label" => Ok(TargetName::Label),
            other => match other.strip_prefix("attribute:") {
                Some(name) if !name.is_empty() => Ok(TargetName::Attribute(name.to_string())),
                _ => bail!("unknown target '{other}'; expected input, label or attribute:NAME"),
            },
        }
    }
}

/// A target with the victims' values.
pub struct NamedTarget {
    pub name: TargetName,
    pub target: Target,
}

/// Expands target specs into target names: `input`, `label`, `attribute` (the first), `attribute:NAME`,
/// `attributes` (every one) give `input`, `label` and `attribute:NAME`. Checks the attributes exist.
pub fn target_names(specs: &[String], attributes: &[AttributeInfo]) -> Result<Vec<TargetName>> {
    let attribute = |name: &str| -> Result<TargetName> {
        if !attributes.iter().any(|a| a.name == name) {
            let names: Vec<_> = attributes.iter().map(|a| a.name.as_str()).collect();
            bail!("no attribute '{name}'; the attributes are: {}", names.join(", "));
        }
        Ok(TargetName::Attribute(name.to_string()))
    };
    let mut out = Vec::new();
    for spec in specs {
        match spec.as_str() {
            "input" => out.push(TargetName::Input),
            "label" => out.push(TargetName::Label),
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

/// The victims' values of `names` in `updates` (`attributes`: the columns of the updates' victim attributes).
pub fn resolve(
    names: &[TargetName],
    attributes: &[AttributeInfo],
    updates: &SharedUpdates,
) -> Result<Vec<NamedTarget>> {
    names
        .iter()
        .map(|name| {
            let target = match name {
                TargetName::Input => Target::Continuous(updates.victim_input.flatten(1, -1).to_kind(Kind::Float)),
                TargetName::Label => Target::Categorical(updates.victim_label.shallow_clone()),
                TargetName::Attribute(attribute) => {
                    let Some(col) = attributes.iter().position(|a| &a.name == attribute) else {
                        bail!("no attribute '{attribute}' in these updates")
                    };
                    Target::Categorical(updates.victim_attributes.select(1, col as i64).contiguous())
                }
            };
            Ok(NamedTarget { name: name.clone(), target })
        })
        .collect()
}

/// Resolves target specs (see [`target_names`]) to the victims' values in `updates`.
pub fn resolve_targets(
    specs: &[String],
    attributes: &[AttributeInfo],
    updates: &SharedUpdates,
) -> Result<Vec<NamedTarget>> {
    resolve(&target_names(specs, attributes)?, attributes, updates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_print_as_they_parse() {
        for text in ["input", "label", "attribute:sex"] {
            let t: TargetName = text.parse().unwrap();
            assert_eq!(t.to_string(), text);
        }
        assert_eq!("attribute:ink".parse::<TargetName>().unwrap().attribute(), Some("ink"));
        assert!(!TargetName::Input.is_categorical());
        for bad in ["attribute:", "inputs", ""] {
            assert!(bad.parse::<TargetName>().is_err(), "{bad}");
        }
    }
}
