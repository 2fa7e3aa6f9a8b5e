//! Defences a client can apply before sharing its update, composable in a list and recorded in every output.
//!
//! Written on the command line as `NAME:ARGS` (see [`Defense::from_str`]) and in JSON as tagged objects. They act
//! at four points of the pipeline:
//! - on the forward pass: `dropout` (active while the gradient is computed, as in training);
//! - on what is shared: `protect` (the named layers' gradients are not shared at all);
//! - on the batch's per-sample gradients: `dp` (DP-SGD: clip each sample's gradient over all shared layers to norm
//!   C, sum, add Gaussian noise of standard deviation sigma*C to each coordinate, divide by the batch size);
//! - on the averaged update, in the order given: `noise` (Gaussian, no clipping), `prune` (zero the smallest
//!   fraction of each layer's entries by magnitude, the DLG paper's defence), `quantize` (b-bit symmetric uniform
//!   quantisation per layer), `sign` (each entry's sign times the layer's mean magnitude, as scaled signSGD).
//!
//! Each defence is applied by one function of [`apply`], graph-preserving where it is differentiable, so the
//! shared update, the sensitivity analysis (which differentiates the shared gradient) and the attacks all use the
//! same code; [`Defense::under_differentiation`] says what happens to each under differentiation.
//!
//! [`accountant`] turns the DP-SGD parameters (sample rate, noise multiplier, steps) into an `(epsilon, delta)`
//! guarantee with a Rényi-DP accountant.

pub mod accountant;
pub mod apply;
pub mod dp;

pub use apply::{aggregate, prune, quantize, sign, single_sample_updates};
pub use dp::{dp_record, DpRecord};

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::models::Model;

/// One defence and its strength.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Defense {
    /// DP-SGD: per-sample clipping to `clip`, Gaussian noise of std `noise_multiplier * clip` on the sum.
    Dp { clip: f64, noise_multiplier: f64 },
    /// Dropout of rate `rate` at the model's dropout sites while the gradient is computed.
    Dropout { rate: f64 },
    /// Zero the `fraction` of each layer's gradient entries with the smallest magnitude.
    Prune { fraction: f64 },
    /// Round each layer's gradient to `bits`-bit symmetric levels scaled by its largest magnitude.
    Quantize { bits: u32 },
    /// Add Gaussian noise of standard deviation `std` to every shared coordinate.
    Noise { std: f64 },
    /// Share each entry's sign times the layer's mean magnitude (scaled signSGD, a one-bit compression; Bernstein et
    /// al. 2018, Karimireddy et al. 2019).
    Sign,
    /// Do not share these layers' gradients.
    Protect { layers: Vec<String> },
}

impl Defense {
    /// Checks the parameter ranges.
    pub fn validate(&self) -> Result<()> {
        match self {
            Defense::Dp { clip, noise_multiplier } => {
                if !(clip.is_finite() && *clip > 0.0) {
                    bail!("defence dp: the clipping norm C must be > 0, got {clip}");
                }
                if !(noise_multiplier.is_finite() && *noise_multiplier >= 0.0) {
                    bail!("defence dp: the noise multiplier sigma must be >= 0, got {noise_multiplier}");
                }
            }
            Defense::Dropout { rate } => {
                if !(0.0..1.0).contains(rate) {
                    bail!("defence dropout: the rate must be in [0, 1), got {rate}")
                }
            }
            Defense::Prune { fraction } => {
                if !(0.0..=1.0).contains(fraction) {
                    bail!("defence prune: the fraction must be in [0, 1], got {fraction}")
                }
            }
            Defense::Quantize { bits } => {
                if !(1..=16).contains(bits) {
                    bail!("defence quantize: bits must be in [1, 16], got {bits}")
                }
            }
            Defense::Noise { std } => {
                if !(std.is_finite() && *std >= 0.0) {
                    bail!("defence noise: the standard deviation must be >= 0, got {std}")
                }
            }
            Defense::Protect { layers } => {
                if layers.is_empty() {
                    bail!("defence protect: name at least one layer")
                }
            }
            Defense::Sign => {}
        }
        Ok(())
    }
}

impl fmt::Display for Defense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defense::Dp { clip, noise_multiplier } => write!(f, "dp:clip={clip},sigma={noise_multiplier}"),
            Defense::Dropout { rate } => write!(f, "dropout:{rate}"),
            Defense::Prune { fraction } => write!(f, "prune:{fraction}"),
            Defense::Quantize { bits } => write!(f, "quantize:{bits}"),
            Defense::Noise { std } => write!(f, "noise:{std}"),
            Defense::Sign => f.write_str("sign"),
            Defense::Protect { layers } => write!(f, "protect:{}", layers.join("+")),
        }
    }
}

const SYNTAX: &str =
    "dp:clip=C,sigma=S | dropout:P | prune:F | quantize:B | noise:STD | sign | protect:LAYER[+LAYER...]";

impl FromStr for Defense {
    type Err = anyhow::Error;

    /// Parses `dp:clip=1,sigma=1.1`, `dropout:0.5`, `prune:0.9`, `quantize:8`, `noise:0.01`, `protect:conv1+fc`.
    fn from_str(s: &str) -> Result<Self> {
        let (name, args) = s.split_once(':').unwrap_or((s, ""));
        let number = |what: &str| -> Result<f64> {
            args.trim()
                .parse::<f64>()
                .with_context(|| format!("defence '{s}': {what} must be a number; syntax: {SYNTAX}"))
        };
        let defense = match name.trim() {
            "dp" => {
                let (mut clip, mut sigma) = (None, None);
                for kv in args.split(',').filter(|kv| !kv.trim().is_empty()) {
                    let (k, v) =
                        kv.split_once('=').with_context(|| format!("defence '{s}': expected key=value in '{kv}'"))?;
                    let v: f64 = v.trim().parse().with_context(|| format!("defence '{s}': '{v}' is not a number"))?;
                    let slot = match k.trim() {
                        "clip" | "c" => &mut clip,
                        "sigma" | "noise_multiplier" => &mut sigma,
                        other => bail!("defence '{s}': unknown key '{other}'; expected clip and sigma"),
                    };
                    // A key given twice is a typo or a merge gone wrong: which value was meant is not ours to guess.
                    if slot.replace(v).is_some() {
                        bail!("defence '{s}': key '{}' is given twice; give clip and sigma once each", k.trim());
                    }
                }
                Defense::Dp {
                    clip: clip.with_context(|| format!("defence '{s}': missing clip=C"))?,
                    noise_multiplier: sigma.with_context(|| format!("defence '{s}': missing sigma=S"))?,
                }
            }
            "dropout" => Defense::Dropout { rate: number("the rate")? },
            "prune" => Defense::Prune { fraction: number("the fraction")? },
            "quantize" | "quantise" => Defense::Quantize {
                bits: args.trim().parse().with_context(|| format!("defence '{s}': bits must be a whole number"))?,
            },
            "noise" => Defense::Noise { std: number("the standard deviation")? },
            "sign" if args.trim().is_empty() => Defense::Sign,
            "sign" => bail!("defence '{s}': sign takes no argument; syntax: {SYNTAX}"),
            "protect" => Defense::Protect {
                layers: args.split('+').map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect(),
            },
            other => bail!("unknown defence '{other}'; expected one of: {SYNTAX}"),
        };
        defense.validate()?;
        Ok(defense)
    }
}

/// A readable name of a list of defences, e.g. `dp:clip=1,sigma=0.5 + prune:0.9` (`none` when empty).
pub fn describe(defenses: &[Defense]) -> String {
    if defenses.is_empty() {
        "none".to_string()
    } else {
        defenses.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(" + ")
    }
}

/// The settings of a defence list, split by where they act.
#[derive(Debug, Clone, Default)]
pub struct DefensePlan {
    pub dropout: Option<f64>,
    pub protected: Vec<String>,
    pub dp: Option<(f64, f64)>,
    /// `noise`, `prune` and `quantize`, in the order given.
    pub post: Vec<PostDefense>,
}

/// A defence that acts on the aggregated update (after DP-SGD's noise, if any), in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum PostDefense {
    Noise { std: f64 },
    Prune { fraction: f64 },
    Quantize { bits: u32 },
    Sign,
}

impl PostDefense {
    /// The defence as a user names it.
    pub fn defense(&self) -> Defense {
        match *self {
            PostDefense::Noise { std } => Defense::Noise { std },
            PostDefense::Prune { fraction } => Defense::Prune { fraction },
            PostDefense::Quantize { bits } => Defense::Quantize { bits },
            PostDefense::Sign => Defense::Sign,
        }
    }
}

impl DefensePlan {
    pub fn new(defenses: &[Defense]) -> Result<Self> {
        let mut plan = DefensePlan::default();
        for d in defenses {
            d.validate()?;
            match d {
                Defense::Dropout { rate } => {
                    if plan.dropout.replace(*rate).is_some() {
                        bail!("defence dropout is given twice");
                    }
                }
                Defense::Protect { layers } => plan.protected.extend(layers.iter().cloned()),
                Defense::Dp { clip, noise_multiplier } => {
                    if plan.dp.replace((*clip, *noise_multiplier)).is_some() {
                        bail!("defence dp is given twice");
                    }
                }
                Defense::Noise { std } => plan.post.push(PostDefense::Noise { std: *std }),
                Defense::Prune { fraction } => plan.post.push(PostDefense::Prune { fraction: *fraction }),
                Defense::Quantize { bits } => plan.post.push(PostDefense::Quantize { bits: *bits }),
                Defense::Sign => plan.post.push(PostDefense::Sign),
            }
        }
        Ok(plan)
    }
}

impl DefensePlan {
    /// The shared layers among `chosen` (default: every layer of `model`), in the order given, without
    /// duplicates: `protect` leaves its layers out. Errors on an unknown layer, and when nothing is left.
    pub fn shared_layers(&self, model: &Model, chosen: Option<&[String]>) -> Result<Vec<usize>> {
        for name in &self.protected {
            model.layer_index(name)?;
        }
        let chosen: Vec<usize> = match chosen {
            Some(names) => names.iter().map(|name| model.layer_index(name)).collect::<Result<_>>()?,
            None => (0..model.layers().len()).collect(),
        };
        let mut shared = Vec::with_capacity(chosen.len());
        for l in chosen {
            if !shared.contains(&l) && !self.protected.contains(&model.layers()[l].name) {
                shared.push(l);
            }
        }
        if shared.is_empty() {
            bail!("no layer is left to share: every chosen layer is protected");
        }
        Ok(shared)
    }
}

/// What a defence does when the shared gradient is differentiated with respect to the input (sensitivity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnderDifferentiation {
    /// Applied inside the differentiated function; the note says how.
    Applied(&'static str),
    /// Left out (its derivative carries no information); the note says why.
    NotApplied(&'static str),
}

impl Defense {
    /// Whether the defence is applied when the shared gradient is differentiated, and how.
    pub fn under_differentiation(&self) -> UnderDifferentiation {
        use UnderDifferentiation::{Applied, NotApplied};
        match self {
            Defense::Dp { noise_multiplier, .. } if *noise_multiplier > 0.0 => Applied(
                "per-sample clipping over the measured layers, differentiated; the Gaussian noise is a constant (J \
                 unchanged) that enters the relative sensitivity through ||g||",
            ),
            Defense::Dp { .. } => Applied("per-sample clipping over the measured layers, differentiated"),
            Defense::Dropout { .. } => Applied("masks drawn once per chunk of samples (seeded), held fixed"),
            Defense::Prune { .. } => {
                Applied("mask of the kept entries computed at x and held fixed: J of the pruned entries is zero")
            }
            Defense::Noise { .. } => {
                Applied("additive constant: J unchanged; the noisy gradient's norm enters the relative sensitivity")
            }
            Defense::Protect { .. } => Applied("protected layers are not shared: left out"),
            Defense::Quantize { .. } => NotApplied(
                "piecewise constant: its derivative is zero almost everywhere, so the Jacobian is taken before \
                 quantisation",
            ),
            Defense::Sign => NotApplied(
                "piecewise constant up to the layer's scale: the sign's derivative is zero almost everywhere, so the \
                 Jacobian is taken before it",
            ),
        }
    }
}
