//! What to attack and how: the method ([`Method`]), its settings ([`AttackConfig`]), what is shared
//! ([`ShareConfig`]), and the error for a bad setting ([`invalid`]), which names the setting so that a front end
//! can point at its own spelling of it (the CLI adds the flag).

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::defenses::Defense;

crate::keyword_enum! {
    /// The attack algorithm; [`Method::attack`] gives its implementation.
    pub enum Method("attack method") {
        /// Deep Leakage from Gradients: L2 gradient matching, soft labels, L-BFGS.
        Dlg = "dlg",
        /// Improved DLG: analytic label from the last layer, then DLG on the input.
        Idlg = "idlg",
        /// Inverting Gradients: cosine matching, total variation, signed Adam, restarts.
        Ig = "ig",
    }
}

crate::keyword_enum! {
    /// Where the attack's labels come from.
    pub enum LabelMode("label mode") {
        /// The method's own choice: DLG optimises soft labels; iDLG infers them from the last layer; Inverting
        /// Gradients infers the label of a single image when the last layer is matched and optimises labels
        /// otherwise (as the reference implementation).
        Auto = "auto",
        /// Optimise free label logits jointly with the input (soft labels, as DLG).
        Optimize = "optimize",
        /// Infer from the last layer's gradient (iDLG's rule; needs the last layer among the matched layers).
        Infer = "infer",
        /// The attacker knows the true labels (an upper bound on what an attack can do).
        Known = "known",
    }
}

/// How to attack one shared update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackConfig {
    pub method: Method,
    /// Optimisation iterations per restart (L-BFGS iterations for DLG and iDLG, Adam steps for Inverting
    /// Gradients).
    pub iterations: usize,
    /// Independent starts; the one whose gradient matches best is kept.
    pub restarts: usize,
    pub labels: LabelMode,
    /// Layers to match (empty: every shared layer).
    pub layers: Vec<String>,
    /// A weight per matched layer (empty: all 1).
    pub layer_weights: Vec<f64>,
    /// L-BFGS step multiplier (DLG, iDLG) or Adam step size (Inverting Gradients).
    pub lr: f64,
    /// Weight of the total-variation prior (Inverting Gradients).
    pub tv_weight: f64,
    /// L-BFGS history size (DLG, iDLG).
    pub history: usize,
    /// Range of valid input values: the box of Inverting Gradients, and the range reconstructions are clipped to
    /// before they are scored and drawn.
    pub data_range: (f64, f64),
    /// Seed of the dummies' initialisation (and, in [`super::run_attacks`], of the victims and the defences).
    pub seed: u64,
}

impl AttackConfig {
    /// The published settings of a method ([`super::Attack::defaults`]), one restart, the method's own labels,
    /// every shared layer, L-BFGS history 100, `[0, 1]` pixels.
    pub fn new(method: Method) -> Self {
        let defaults = method.attack().defaults();
        AttackConfig {
            method,
            iterations: defaults.iterations,
            restarts: 1,
            labels: LabelMode::Auto,
            layers: Vec::new(),
            layer_weights: Vec::new(),
            lr: defaults.lr,
            tv_weight: defaults.tv_weight,
            history: 100,
            data_range: (0.0, 1.0),
            seed: 0,
        }
    }

    /// Checks every setting's range.
    pub fn validate(&self) -> Result<()> {
        use Setting::*;
        if self.iterations == 0 {
            return Err(invalid(Iterations, "the number of iterations must be at least 1, got 0"));
        }
        if self.restarts == 0 {
            return Err(invalid(Restarts, "the number of restarts must be at least 1, got 0"));
        }
        for (setting, what, value, max) in [
            (Iterations, "iterations", self.iterations, crate::limits::MAX_ATTACK_ITERATIONS),
            (Restarts, "restarts", self.restarts, crate::limits::MAX_RESTARTS),
        ] {
            if value > max {
                let message = format!("the number of {what} must be at most {max}, got {value} (docs/reliability.md)");
                return Err(invalid(setting, message));
            }
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid(StepSize, format!("the step size must be a finite number > 0, got {}", self.lr)));
        }
        if !(self.tv_weight.is_finite() && self.tv_weight >= 0.0) {
            let message = format!("the total-variation weight must be a finite number >= 0, got {}", self.tv_weight);
            return Err(invalid(TvWeight, message));
        }
        if self.history == 0 {
            return Err(invalid(History, "the L-BFGS history must be at least 1"));
        }
        let (lo, hi) = self.data_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            let message = format!("the data range must be two finite numbers lo < hi, got ({lo}, {hi})");
            return Err(invalid(DataRange, message));
        }
        if !self.layer_weights.is_empty() {
            if self.layer_weights.len() != self.layers.len() {
                let message = format!(
                    "{} layer weights for {} listed layers; list the layers to match and give one weight per layer",
                    self.layer_weights.len(),
                    self.layers.len()
                );
                return Err(invalid(LayerWeights, message));
            }
            if let Some(w) = self.layer_weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
                return Err(invalid(LayerWeights, format!("the layer weights must be finite numbers >= 0, got {w}")));
            }
            if self.layer_weights.iter().all(|w| *w == 0.0) {
                return Err(invalid(LayerWeights, "the layer weights are all 0: nothing would be matched"));
            }
        }
        Ok(())
    }
}

/// What is shared and attacked in [`super::run_attacks`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareConfig {
    /// Number of shared updates attacked (distinct victims).
    pub samples: i64,
    /// Inputs behind each update.
    pub batch_size: i64,
    /// Defences applied before sharing.
    pub defenses: Vec<Defense>,
}

/// A setting of [`AttackConfig`] or [`ShareConfig`] (or an input of [`super::reconstruct`]), named as the library
/// names it in a [`crate::error::ParamError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Iterations,
    Restarts,
    /// `lr`.
    StepSize,
    TvWeight,
    History,
    DataRange,
    Layers,
    LayerWeights,
    Labels,
    /// `samples`.
    Samples,
    BatchSize,
}

impl Setting {
    /// The parameter's name (the field of [`AttackConfig`] or [`ShareConfig`]).
    pub fn name(self) -> &'static str {
        match self {
            Setting::Iterations => "iterations",
            Setting::Restarts => "restarts",
            Setting::StepSize => "lr",
            Setting::TvWeight => "tv_weight",
            Setting::History => "history",
            Setting::DataRange => "data_range",
            Setting::Layers => "layers",
            Setting::LayerWeights => "layer_weights",
            Setting::Labels => "labels",
            Setting::Samples => "samples",
            Setting::BatchSize => "batch_size",
        }
    }
}

/// A setting out of range, or not usable with the model or the shared update: a [`crate::error::ParamError`] whose
/// message names the setting in words, so that a front end can put its own name for it in front.
pub(super) fn invalid(setting: Setting, message: impl Into<String>) -> anyhow::Error {
    crate::error::ParamError::sentence(setting.name(), message)
}
