//! The gradient families: probes that read a group's gradients (or their sketches) directly. `linear` fits a linear
//! model, `mlp` a ReLU network.

use anyhow::{bail, Result};

use super::{no_setting, Entry, Family, FamilyKind, FeatureSource, Features, Setup};
use crate::measure::groups::{GroupFeatures, LayerGroup};
use crate::measure::targets::NamedTarget;
use crate::measure::vinfo::{MlpOptions, Predictor, MAX_HIDDEN};

/// Logistic regression (categorical) or ridge regression with a Gaussian likelihood (continuous) on the gradient.
#[derive(Debug, Clone, Copy)]
pub struct Linear;

impl FamilyKind for Linear {
    fn name(&self) -> &'static str {
        "linear"
    }
    fn predictor(&self) -> Predictor {
        Predictor::Linear
    }
    fn source<'a>(&self, _setup: &Setup<'a>) -> Result<Box<dyn FeatureSource + 'a>> {
        Ok(Box::new(Gradients))
    }
}

/// A ReLU MLP on the gradient: its hidden sizes and training settings.
#[derive(Debug, Clone, Default)]
pub struct Mlp(pub MlpOptions);

impl FamilyKind for Mlp {
    fn name(&self) -> &'static str {
        "mlp"
    }
    fn setting(&self) -> Option<String> {
        // Always shown: `mlp` and `mlp:128` are the same family, printed the second way.
        Some(self.0.hidden.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(","))
    }
    fn predictor(&self) -> Predictor {
        Predictor::Mlp(self.0.clone())
    }
    fn source<'a>(&self, _setup: &Setup<'a>) -> Result<Box<dyn FeatureSource + 'a>> {
        Ok(Box::new(Gradients))
    }
    fn with_max_epochs(&self, epochs: usize) -> Option<Family> {
        Some(Family::new(Mlp(MlpOptions { max_epochs: epochs, ..self.0.clone() })))
    }
}

/// What the gradient families read: the group's gradients as they are.
struct Gradients;

impl FeatureSource for Gradients {
    fn features(&mut self, _: &LayerGroup, gradients: &GroupFeatures, _: &NamedTarget) -> Result<Option<Features>> {
        Ok(Some(Features { values: gradients.values.shallow_clone(), kind: gradients.kind.clone() }))
    }
}

pub(super) fn linear_entry() -> Entry {
    Entry { name: "linear", usage: "linear".into(), parse: Box::new(|setting| no_setting(setting, Family::linear())) }
}

pub(super) fn mlp_entry() -> Entry {
    Entry {
        name: "mlp",
        usage: "mlp[:HIDDEN SIZES]".into(),
        parse: Box::new(|setting| {
            let Some(h) = setting else { return Ok(Family::mlp()) };
            let hidden: Result<Vec<i64>, _> = h.split(',').map(|x| x.trim().parse::<i64>()).collect();
            match hidden {
                Ok(hidden) if !hidden.is_empty() && hidden.iter().all(|&x| (1..=MAX_HIDDEN).contains(&x)) => {
                    Ok(Family::new(Mlp(MlpOptions { hidden, ..MlpOptions::default() })))
                }
                _ => bail!("expected hidden sizes as integers in [1, {MAX_HIDDEN}], e.g. mlp:256,128"),
            }
        }),
    }
}
