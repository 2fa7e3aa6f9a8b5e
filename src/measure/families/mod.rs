//! Predictive families: what a family reads of each shared update, and the predictor that turns it into bits.
//!
//! A family is one registered thing ([`FamilyKind`], listed once in [`registry`]): its name and setting, the
//! predictor the estimator fits ([`Predictor`]), what it needs (the model behind the updates, full gradients of
//! which layers), and the [`FeatureSource`] it builds for one set of updates. The gradient families (`linear`,
//! `mlp`) read a group's gradients; the model-backed families read what an attacker makes of them: the closed form
//! (`analytic`), a gradient-matching attack (one family per attack [`Method`]: `dlg`, `idlg`, `ig`), a decoder
//! trained on simulated updates (`decoder`). The layer-wise driver (`measure::layerwise`) asks each family's source
//! for its features per group and target and never names a family.
//!
//! Adding a family is one file with its `FamilyKind` and `FeatureSource`, and one line in [`registry`]; a new
//! attack `Method` is a family without further edits.

mod analytic;
mod decoder;
mod gradient;
mod matching;
mod reconstruction;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Result};
use tch::Tensor;

use crate::data::{AttributeInfo, Split};
use crate::gradients::updates::{SharedUpdates, UpdateConfig};
use crate::measure::attacks::Method;
use crate::measure::groups::{GroupFeatures, LayerGroup};
use crate::measure::targets::{NamedTarget, TargetName};
use crate::measure::vinfo::{self, EstimateOptions, Predictor, Target, VInfoEstimate};
use crate::models::{LayerKind, Model};
use crate::progress::Progress;

pub use analytic::AnalyticFeatures;
pub use decoder::{auxiliary_updates, DEFAULT_AUX_UPDATES};
pub use gradient::{Linear, Mlp};
pub use matching::{Matching, DEFAULT_MATCHING_ITERATIONS};
pub use reconstruction::{score_images, ReconstructionScore, SketchOnlyLayer};

/// The model behind a set of shared updates, and how they were computed: what a model-backed family needs to
/// attack them (the model), to simulate more of them (the split the victims came from, the update settings) and to
/// read attributes (the attributes' columns). The audit's cell and a gradient store (`gradients::behind`) give it.
#[derive(Clone, Copy)]
pub struct Behind<'a> {
    pub model: &'a Model,
    /// The split the victims were drawn from: the attacker's auxiliary data comes from its other samples.
    pub split: &'a Split,
    /// How the victims' updates were computed (batch size, defences, layers, sketches).
    pub update_config: &'a UpdateConfig,
    /// The latent attributes' columns of the victims' data.
    pub attributes: &'a [AttributeInfo],
}

/// Everything a family may read to build its source for one set of shared updates.
#[derive(Clone, Copy)]
pub struct Setup<'a> {
    pub updates: &'a SharedUpdates,
    /// None where only the updates are known (a store read without its model, an array of features).
    pub behind: Option<Behind<'a>>,
    /// The targets that will be asked for.
    pub targets: &'a [TargetName],
    /// The seed of every random choice the family makes.
    pub seed: u64,
    pub progress: Progress,
}

impl<'a> Setup<'a> {
    /// The model behind the updates, or an error naming the family that needs it.
    pub fn behind(&self, family: &str) -> Result<Behind<'a>> {
        match self.behind {
            Some(b) => Ok(b),
            None => bail!("the {family} family needs the model and the full gradients (run it in an audit)"),
        }
    }
}

/// What a family reads of one group for one target.
pub struct Features {
    /// (N, K): one row per victim.
    pub values: Tensor,
    /// `full`, `sketch`, `mixed` (gradients) or `reconstruction` (what an attacker made of them).
    pub kind: String,
}

impl Features {
    /// What an attacker reconstructed (or a decoder decoded) of the victims.
    pub fn reconstruction(values: Tensor) -> Features {
        Features { values, kind: "reconstruction".into() }
    }
}

/// A family's reader of one set of shared updates: features per group and target, and what it could show of its
/// work (reconstructed images, notes).
pub trait FeatureSource {
    /// The features of `target` from `group` (whose gradients or sketches are `gradients`); None where the family
    /// has nothing for it (no closed form, a target not measured from pixels).
    fn features(
        &mut self,
        group: &LayerGroup,
        gradients: &GroupFeatures,
        target: &NamedTarget,
    ) -> Result<Option<Features>>;

    /// Reconstructions of the victims' images, scored, by layer or group: the attack's own success.
    fn image_scores(&self) -> Result<Vec<ReconstructionScore>> {
        Ok(Vec::new())
    }

    /// What the family did and could not do, for the report's notes.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

/// One predictive family: its name, settings and needs, and how it builds its source.
pub trait FamilyKind: fmt::Debug + Send + Sync {
    /// The name a user writes (`linear`, `ig`, `decoder`).
    fn name(&self) -> &'static str;
    /// The setting written after `:` when it is not the default (`500` in `ig:500`).
    fn setting(&self) -> Option<String> {
        None
    }
    /// The predictor the estimator fits on the family's features.
    fn predictor(&self) -> Predictor;
    /// Whether the family reads the gradients themselves (or their sketches); a model-backed family reads what its
    /// attacker makes of them with the model, which only an audit or a store with its model can provide.
    fn reads_gradients(&self) -> bool {
        true
    }
    /// Whether the family reads the full gradient of a layer of this kind (kept beside its sketch).
    fn needs_full_gradient(&self, _layer: &LayerKind) -> bool {
        false
    }
    /// Checks the family's settings.
    fn validate(&self) -> Result<()> {
        self.predictor().validate()
    }
    /// The family's reader of one set of updates.
    fn source<'a>(&self, setup: &Setup<'a>) -> Result<Box<dyn FeatureSource + 'a>>;
    /// The same family with at most `epochs` epochs of training for its networks, where it trains any.
    fn with_max_epochs(&self, _epochs: usize) -> Option<Family> {
        None
    }
}

/// A predictive family, as configured: `linear`, `mlp:256,128`, `analytic`, `ig:500`, `decoder:20000`, ...
#[derive(Clone)]
pub struct Family(Arc<dyn FamilyKind>);

impl Family {
    pub fn new(kind: impl FamilyKind + 'static) -> Family {
        Family(Arc::new(kind))
    }

    /// The linear probe.
    pub fn linear() -> Family {
        Family::new(Linear)
    }

    /// The MLP probe with the default hidden sizes.
    pub fn mlp() -> Family {
        Family::new(Mlp::default())
    }

    /// The closed-form attacker.
    pub fn analytic() -> Family {
        Family::new(analytic::Analytic)
    }

    /// The name a user writes, without the setting.
    pub fn name(&self) -> &'static str {
        self.0.name()
    }

    pub fn predictor(&self) -> Predictor {
        self.0.predictor()
    }

    pub fn reads_gradients(&self) -> bool {
        self.0.reads_gradients()
    }

    pub fn needs_full_gradient(&self, layer: &LayerKind) -> bool {
        self.0.needs_full_gradient(layer)
    }

    pub fn validate(&self) -> Result<()> {
        self.0.validate()
    }

    pub fn source<'a>(&self, setup: &Setup<'a>) -> Result<Box<dyn FeatureSource + 'a>> {
        self.0.source(setup)
    }

    /// The family with at most `epochs` training epochs for its networks (the same family where it trains none).
    pub fn with_max_epochs(self, epochs: usize) -> Family {
        self.0.with_max_epochs(epochs).unwrap_or(self)
    }

    /// Parses a comma-separated list of families (`linear,mlp:256,128,analytic`: a bare number continues the MLP's
    /// hidden sizes before it), or `all` (linear and the default MLP). `+` separates too, as in earlier versions.
    pub fn parse_list(s: &str) -> Result<Vec<Family>> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(vec![Family::linear(), Family::mlp()]);
        }
        let mut items: Vec<String> = Vec::new();
        for token in s.split([',', '+']) {
            let number = !token.trim().is_empty() && token.trim().bytes().all(|b| b.is_ascii_digit());
            match items.last_mut() {
                Some(last) if number && last.trim().to_ascii_lowercase().starts_with("mlp:") => {
                    last.push(',');
                    last.push_str(token);
                }
                _ => items.push(token.to_string()),
            }
        }
        let families: Vec<Family> = items.iter().map(|item| item.parse()).collect::<Result<_>>()?;
        if let Some(f) = families.iter().enumerate().find_map(|(i, f)| families[..i].contains(f).then_some(f)) {
            bail!("family '{f}' is listed twice");
        }
        Ok(families)
    }

    /// Estimates the V-information of `features` about `target` with the family's predictor; the estimate carries
    /// the family's name.
    pub fn estimate(&self, features: &Tensor, target: &Target, opts: &EstimateOptions) -> Result<VInfoEstimate> {
        let mut estimate = vinfo::estimate(features, target, &self.predictor(), opts)?;
        estimate.family = self.to_string();
        Ok(estimate)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.setting() {
            Some(setting) => write!(f, "{}:{setting}", self.0.name()),
            None => f.write_str(self.0.name()),
        }
    }
}

impl fmt::Debug for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Family({self})")
    }
}

impl PartialEq for Family {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

/// A parser of the setting written after a family's name and `:` (None when there is none).
pub type SettingParser = Box<dyn Fn(Option<&str>) -> Result<Family> + Send + Sync>;

/// A family's entry in the registry: its name, how it is written, and its parser of the setting after `:`.
pub struct Entry {
    pub name: &'static str,
    /// How it is written, e.g. `ig[:ITERATIONS]`.
    pub usage: String,
    pub parse: SettingParser,
}

/// Every family, in the order they are listed to users.
pub fn registry() -> Vec<Entry> {
    let mut entries = vec![gradient::linear_entry(), gradient::mlp_entry(), analytic::entry()];
    entries.extend(Method::ALL.iter().map(|&m| matching::entry(m)));
    entries.push(decoder::entry());
    entries
}

/// How the families are written, for errors and help: `linear, mlp[:SIZES], analytic, ...`.
pub fn usage() -> String {
    registry().iter().map(|e| e.usage.as_str()).collect::<Vec<_>>().join(", ")
}

impl FromStr for Family {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let (name, setting) = match s.split_once(':') {
            Some((n, rest)) => (n, Some(rest)),
            None => (s.as_str(), None),
        };
        match registry().into_iter().find(|e| e.name == name) {
            Some(entry) => (entry.parse)(setting).map_err(|e| anyhow::anyhow!("family '{s}': {e}")),
            None => bail!("unknown family '{s}'; expected {}, or all (linear and mlp)", usage()),
        }
    }
}

/// A count written after a family's name (`ig:500`): from `min` to `max`, or the default when absent.
fn parse_count(
    setting: Option<&str>,
    default: usize,
    range: (usize, usize),
    what: &str,
    example: &str,
) -> Result<usize> {
    let (min, max) = range;
    match setting {
        None => Ok(default),
        Some(n) => match n.trim().parse::<usize>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => bail!("expected {min} to {max} {what}, e.g. {example}"),
        },
    }
}

/// A family that takes no setting.
fn no_setting(setting: Option<&str>, family: Family) -> Result<Family> {
    match setting {
        None => Ok(family),
        Some(_) => bail!("the {} family takes no setting", family.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_parse_and_print_their_settings() {
        for (text, shown) in [
            ("linear", "linear"),
            ("mlp", "mlp:128"),
            ("mlp:64,32", "mlp:64,32"),
            ("analytic", "analytic"),
            ("ig", "ig"),
            ("ig:500", "ig:500"),
            ("DLG:30", "dlg:30"),
            ("idlg", "idlg"),
            ("decoder", "decoder"),
            ("decoder:20000", "decoder:20000"),
        ] {
            let f: Family = text.parse().unwrap();
            assert_eq!(f.to_string(), shown);
            assert_eq!(f.to_string().parse::<Family>().unwrap(), f, "round trip of {text}");
        }
        assert!(Family::linear().reads_gradients() && Family::mlp().reads_gradients());
        for model_backed in ["analytic", "ig", "dlg", "idlg", "decoder"] {
            assert!(!model_backed.parse::<Family>().unwrap().reads_gradients(), "{model_backed}");
        }
        assert_eq!("ig".parse::<Family>().unwrap(), "ig:200".parse::<Family>().unwrap(), "200 is the default");
        for bad in ["ig:0", "ig:x", "decoder:5", "decoder:-1", "mlp:0", "mlp:x", "linear:3", "analytic:1"] {
            let e = bad.parse::<Family>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn family_lists_are_comma_separated_and_keep_the_mlp_sizes() {
        let list = Family::parse_list("linear,mlp:256,128,analytic").unwrap();
        let names: Vec<String> = list.iter().map(|f| f.to_string()).collect();
        assert_eq!(names, ["linear", "mlp:256,128", "analytic"]);
        assert_eq!(Family::parse_list("linear+ig:5").unwrap().len(), 2, "+ still separates");
        assert_eq!(Family::parse_list("all").unwrap(), vec![Family::linear(), Family::mlp()]);
        assert!(Family::parse_list("linear,,analytic").is_err(), "an empty item is an error");
        assert!(Family::parse_list("linear,128").is_err(), "a number continues only an MLP");
    }

    #[test]
    fn every_attack_method_is_a_family() {
        for &method in Method::ALL {
            let family: Family = method.name().parse().unwrap();
            assert_eq!(family.name(), method.name());
            assert!(registry().iter().any(|e| e.name == method.name()));
        }
    }

    #[test]
    fn the_full_gradients_a_family_reads() {
        let fc = LayerKind::Linear { in_features: 4, out_features: 2 };
        assert!(Family::analytic().needs_full_gradient(&fc));
        assert!(!Family::linear().needs_full_gradient(&fc));
        assert!("ig".parse::<Family>().unwrap().needs_full_gradient(&fc));
        assert!(!"decoder".parse::<Family>().unwrap().needs_full_gradient(&fc));
    }
}
