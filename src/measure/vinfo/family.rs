//! Predictive families V: which predictors f[G] (and f[∅]) an estimate may choose from, with their settings.
//!
//! A family turns a prepared target into a pair of [`ConditionalModel`]s, the null model f[∅] (no features) and
//! the conditional model f[G], which the [`super::Estimator`] fits and scores. Adding a family is a variant here
//! and the file of its models.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};

use super::calibrated::AffineCalibration;
use super::linear::{LogisticRegression, RidgeGaussian};
use super::mlp::{Mlp, MlpOptions};
use super::model::{ClassFrequencies, ConditionalModel, GaussianMarginal};
use super::PreparedTarget;
use crate::measure::attacks::Method;

/// Hidden sizes of the MLP family when none are given.
pub const DEFAULT_HIDDEN: [i64; 1] = [128];

/// The predictive family V.
#[derive(Debug, Clone, PartialEq)]
pub enum Family {
    /// Logistic regression (categorical) or ridge regression with a Gaussian likelihood (continuous).
    Linear,
    /// A ReLU MLP: its hidden sizes and training settings.
    Mlp(MlpOptions),
    /// Closed-form gradient inversion, calibrated: its features are not the gradient but what the analytic attack
    /// makes of it (`measure::attack_families`): the reconstructed input, predicted per dimension by an affine map
    /// ([`AffineCalibration`]), or the recovered label or an attribute measured on the reconstruction, calibrated
    /// by logistic regression.
    Analytic,
    /// A gradient-matching attack (DLG, iDLG or Inverting Gradients) run for `iterations` on every victim's update
    /// of the layer group, calibrated like the analytic family (`measure::attack_families::MatchingFeatures`).
    Matching { method: Method, iterations: usize },
    /// A decoder trained on `aux_updates` updates the attacker simulates on its own data, applied to the victims'
    /// updates and calibrated like an attack's reconstruction (`measure::decoder`).
    Decoder { aux_updates: usize },
}

/// Iterations of a gradient-matching family when none are given (`ig` = `ig:200`): the attacks' own defaults
/// (4,800 for Inverting Gradients) are for one image at a time; a family attacks every victim of every group.
pub const DEFAULT_MATCHING_ITERATIONS: usize = 200;

impl Family {
    /// The MLP with the default hidden sizes and settings.
    pub fn mlp() -> Self {
        Family::Mlp(MlpOptions::default())
    }

    /// The MLP with these hidden sizes and the default settings.
    pub fn mlp_hidden(hidden: &[i64]) -> Self {
        Family::Mlp(MlpOptions { hidden: hidden.to_vec(), ..MlpOptions::default() })
    }

    /// Short name: `linear`, `mlp` or `analytic`.
    pub fn name(&self) -> &'static str {
        match self {
            Family::Linear => "linear",
            Family::Mlp(_) => "mlp",
            Family::Analytic => "analytic",
            Family::Decoder { .. } => "decoder",
            Family::Matching { method, .. } => match method {
                Method::Dlg => "dlg",
                Method::Idlg => "idlg",
                Method::Ig => "ig",
            },
        }
    }

    /// Whether the family reads the gradient itself (or its sketch). An attack-backed family reads what its attack
    /// reconstructs from the full gradient with the model's weights, which only an audit or a run can provide.
    pub fn reads_gradients(&self) -> bool {
        !matches!(self, Family::Analytic | Family::Matching { .. } | Family::Decoder { .. })
    }

    /// Parses `linear`, `mlp`, `mlp:256,128` (hidden sizes) or `all` (linear and the default MLP).
    pub fn parse_list(s: &str) -> Result<Vec<Family>> {
        if s.trim().eq_ignore_ascii_case("all") {
            return Ok(vec![Family::Linear, Family::mlp()]);
        }
        let families: Vec<Family> = s.split('+').map(str::parse).collect::<Result<_>>()?;
        if let Some(f) = families.iter().enumerate().find_map(|(i, f)| families[..i].contains(f).then_some(f)) {
            bail!("family '{f}' is listed twice");
        }
        Ok(families)
    }

    /// Checks the family's settings.
    pub fn validate(&self) -> Result<()> {
        match self {
            Family::Linear | Family::Analytic => Ok(()),
            Family::Matching { iterations, .. } if *iterations == 0 => {
                bail!("family '{self}': the attack needs at least 1 iteration")
            }
            Family::Matching { .. } => Ok(()),
            Family::Decoder { aux_updates } if *aux_updates < 20 => {
                bail!("family '{self}': a decoder needs at least 20 auxiliary updates")
            }
            Family::Decoder { .. } => Ok(()),
            Family::Mlp(options) => options.validate(),
        }
    }

    /// The null model f[∅] for `target`: class frequencies or a Gaussian marginal, whatever the family (the
    /// constant predictors that every family contains).
    pub(super) fn null_model(&self, target: &PreparedTarget) -> Box<dyn ConditionalModel> {
        match target {
            PreparedTarget::Classes { classes, .. } => Box::new(ClassFrequencies::new(*classes)),
            PreparedTarget::Values { floor, .. } => Box::new(GaussianMarginal::new(floor)),
        }
    }

    /// The conditional model f[G] for `target`; `seed` drives any randomness of its fit.
    pub(super) fn conditional_model(&self, target: &PreparedTarget, seed: u64) -> Box<dyn ConditionalModel> {
        match (target, self) {
            // A recovered label or a measured attribute is calibrated like any other feature.
            (
                PreparedTarget::Classes { classes, .. },
                Family::Linear | Family::Analytic | Family::Matching { .. } | Family::Decoder { .. },
            ) => Box::new(LogisticRegression::new(*classes)),
            (PreparedTarget::Classes { classes, .. }, Family::Mlp(options)) => {
                Box::new(Mlp::classifier(*classes, options, seed))
            }
            (PreparedTarget::Values { floor, .. }, Family::Linear) => Box::new(RidgeGaussian::new(floor)),
            (PreparedTarget::Values { floor, .. }, Family::Mlp(options)) => {
                Box::new(Mlp::gaussian(floor, options, seed))
            }
            (
                PreparedTarget::Values { floor, .. },
                Family::Analytic | Family::Matching { .. } | Family::Decoder { .. },
            ) => Box::new(AffineCalibration::new(floor)),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Family::Linear => f.write_str("linear"),
            Family::Analytic => f.write_str("analytic"),
            Family::Matching { iterations, .. } if *iterations == DEFAULT_MATCHING_ITERATIONS => {
                f.write_str(self.name())
            }
            Family::Matching { iterations, .. } => write!(f, "{}:{iterations}", self.name()),
            Family::Decoder { aux_updates } if *aux_updates == crate::measure::decoder::DEFAULT_AUX_UPDATES => {
                f.write_str("decoder")
            }
            Family::Decoder { aux_updates } => write!(f, "decoder:{aux_updates}"),
            Family::Mlp(options) => {
                let h: Vec<String> = options.hidden.iter().map(|h| h.to_string()).collect();
                write!(f, "mlp:{}", h.join(","))
            }
        }
    }
}

/// The widest hidden layer of the MLP family: wider layers add nothing on the few thousand victims an estimate
/// fits on, and a typo (`mlp:100000000`) would exhaust memory.
pub const MAX_HIDDEN: i64 = 1 << 16;

impl FromStr for Family {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let (name, hidden) = match s.split_once(':') {
            Some((n, h)) => (n, Some(h)),
            None => (s.as_str(), None),
        };
        match (name, hidden) {
            ("linear", None) => Ok(Family::Linear),
            ("analytic", None) => Ok(Family::Analytic),
            ("decoder", aux) => {
                let aux_updates = match aux {
                    None => crate::measure::decoder::DEFAULT_AUX_UPDATES,
                    Some(n) => match n.trim().parse::<usize>() {
                        Ok(n) if (20..=crate::limits::MAX_AUX_UPDATES).contains(&n) => n,
                        _ => bail!(
                            "family '{s}': expected 20 to {} auxiliary updates, e.g. decoder:20000",
                            crate::limits::MAX_AUX_UPDATES
                        ),
                    },
                };
                Ok(Family::Decoder { aux_updates })
            }
            ("dlg" | "idlg" | "ig", iterations) => {
                let method: Method = name.parse()?;
                let iterations = match iterations {
                    None => DEFAULT_MATCHING_ITERATIONS,
                    Some(n) => match n.trim().parse::<usize>() {
                        Ok(n) if (1..=crate::limits::MAX_ATTACK_ITERATIONS).contains(&n) => n,
                        _ => bail!(
                            "family '{s}': expected 1 to {} iterations, e.g. {name}:500",
                            crate::limits::MAX_ATTACK_ITERATIONS
                        ),
                    },
                };
                Ok(Family::Matching { method, iterations })
            }
            ("mlp", None) => Ok(Family::mlp()),
            ("mlp", Some(h)) => {
                let hidden: Result<Vec<i64>, _> = h.split(',').map(|x| x.trim().parse::<i64>()).collect();
                match hidden {
                    Ok(hidden) if !hidden.is_empty() && hidden.iter().all(|&x| (1..=MAX_HIDDEN).contains(&x)) => {
                        Ok(Family::mlp_hidden(&hidden))
                    }
                    _ => {
                        bail!("family '{s}': expected hidden sizes as integers in [1, {MAX_HIDDEN}], e.g. mlp:256,128")
                    }
                }
            }
            _ => bail!(
                "unknown family '{s}'; expected linear, mlp, mlp:<hidden sizes>, analytic, ig, dlg, idlg (with \
                 :<iterations>), decoder (with :<auxiliary updates>) or all"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_backed_families_parse_and_print_their_settings() {
        for (text, shown) in [("ig", "ig"), ("ig:500", "ig:500"), ("DLG:30", "dlg:30"), ("idlg", "idlg")] {
            let f: Family = text.parse().unwrap();
            assert_eq!(f.to_string(), shown);
            assert!(!f.reads_gradients());
            assert_eq!(f.to_string().parse::<Family>().unwrap(), f, "round trip");
        }
        assert_eq!("ig".parse::<Family>().unwrap(), Family::Matching { method: Method::Ig, iterations: 200 });
        let d: Family = "decoder".parse().unwrap();
        assert_eq!(d, Family::Decoder { aux_updates: crate::measure::decoder::DEFAULT_AUX_UPDATES });
        assert_eq!(d.to_string(), "decoder");
        assert_eq!("decoder:20000".parse::<Family>().unwrap().to_string(), "decoder:20000");
        assert!(!d.reads_gradients());
        for bad in ["ig:0", "ig:x", "decoder:5", "decoder:-1"] {
            let e = bad.parse::<Family>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
