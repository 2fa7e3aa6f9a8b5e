//! Defences a client can apply before sharing its update, composable in a list and recorded in every output.
//!
//! Written on the command line as `NAME:ARGS` (see [`Defense::from_str`]) and in JSON as tagged objects. They act
//! at three points of the pipeline:
//! - on the forward pass: `dropout` (active while the gradient is computed, as in training);
//! - on what is shared: `protect` (the named layers' gradients are not shared at all);
//! - on the batch's per-sample gradients: `dp` (DP-SGD: clip each sample's gradient over all shared layers to norm
//!   C, sum, add Gaussian noise of standard deviation sigma*C to each coordinate, divide by the batch size);
//! - on the averaged update, in the order given: `noise` (Gaussian, no clipping), `prune` (zero the smallest
//!   fraction of each layer's entries by magnitude, the DLG paper's defence), `quantize` (b-bit symmetric uniform
//!   quantisation per layer).
//!
//! [`accountant`] turns the DP-SGD parameters (sample rate, noise multiplier, steps) into an `(epsilon, delta)`
//! guarantee with a Rényi-DP accountant.

pub mod accountant;

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::gradients::per_sample::row_norms;

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
            Defense::Dropout { rate } if !(0.0..1.0).contains(rate) => {
                bail!("defence dropout: the rate must be in [0, 1), got {rate}")
            }
            Defense::Prune { fraction } if !(0.0..=1.0).contains(fraction) => {
                bail!("defence prune: the fraction must be in [0, 1], got {fraction}")
            }
            Defense::Quantize { bits } if !(1..=16).contains(bits) => {
                bail!("defence quantize: bits must be in [1, 16], got {bits}")
            }
            Defense::Noise { std } if !(std.is_finite() && *std >= 0.0) => {
                bail!("defence noise: the standard deviation must be >= 0, got {std}")
            }
            Defense::Protect { layers } if layers.is_empty() => bail!("defence protect: name at least one layer"),
            _ => {}
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
            Defense::Protect { layers } => write!(f, "protect:{}", layers.join("+")),
        }
    }
}

const SYNTAX: &str = "dp:clip=C,sigma=S | dropout:P | prune:F | quantize:B | noise:STD | protect:LAYER[+LAYER...]";

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
                    match k.trim() {
                        "clip" | "c" => clip = Some(v),
                        "sigma" | "noise_multiplier" => sigma = Some(v),
                        other => bail!("defence '{s}': unknown key '{other}'; expected clip and sigma"),
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
    pub post: Vec<Defense>,
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
                other => plan.post.push(other.clone()),
            }
        }
        Ok(plan)
    }
}

/// Gaussian values from a seeded generator (reproducible whatever the thread or chunking).
pub fn gaussian(rng: &mut ChaCha8Rng, numel: i64, std: f64) -> Tensor {
    use rand_distr::{Distribution, StandardNormal};
    let values: Vec<f32> = (0..numel).map(|_| StandardNormal.sample(rng)).collect::<Vec<f32>>();
    Tensor::from_slice(&values) * std
}

/// A generator for update `update` of a run seeded with `seed`.
pub fn update_rng(seed: u64, update: u64, purpose: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    rng.set_stream(update);
    rng
}

/// Aggregates the per-sample gradients of one batch (each (B, P_l), shared layers only) into the shared update,
/// applying DP-SGD when planned, then the post-aggregation defences. Returns one flat vector per layer.
pub fn aggregate(per_sample: &[Tensor], plan: &DefensePlan, rng: &mut ChaCha8Rng) -> Vec<Tensor> {
    let batch = per_sample[0].size()[0];
    let mut update: Vec<Tensor> = match plan.dp {
        None => per_sample.iter().map(|g| g.mean_dim([0i64].as_slice(), false, g.kind())).collect(),
        Some((clip, sigma)) => {
            // The clipping norm is over every shared layer together, as in DP-SGD.
            let squared: Tensor = per_sample
                .iter()
                .map(|g| row_norms(g).square())
                .fold(Tensor::zeros([batch], (Kind::Double, tch::Device::Cpu)), |acc, s| acc + s);
            let scale = (clip / (squared.sqrt() + 1e-12)).clamp_max(1.0).to_kind(per_sample[0].kind()).unsqueeze(1);
            per_sample
                .iter()
                .map(|g| {
                    let summed = (g * &scale).sum_dim_intlist([0i64].as_slice(), false, g.kind());
                    let noise = gaussian(rng, summed.numel() as i64, sigma * clip).to_kind(g.kind());
                    (summed + noise) / batch as f64
                })
                .collect()
        }
    };
    for d in &plan.post {
        update = update.into_iter().map(|g| apply_post(d, &g, rng)).collect();
    }
    update
}

/// Applies one post-aggregation defence to one layer's flat update.
pub fn apply_post(defense: &Defense, g: &Tensor, rng: &mut ChaCha8Rng) -> Tensor {
    match defense {
        Defense::Noise { std } => g + gaussian(rng, g.numel() as i64, *std).to_kind(g.kind()),
        Defense::Prune { fraction } => prune(g, *fraction),
        Defense::Quantize { bits } => quantize(g, *bits),
        _ => g.shallow_clone(),
    }
}

/// Zeroes the `fraction` of entries with the smallest magnitude (ties broken by position).
pub fn prune(g: &Tensor, fraction: f64) -> Tensor {
    let n = g.numel() as i64;
    let k = ((fraction * n as f64).round() as i64).clamp(0, n);
    if k == 0 {
        return g.shallow_clone();
    }
    let (_, smallest) = g.abs().topk(k, 0, false, true);
    g.index_fill(0, &smallest, 0.0)
}

/// Symmetric uniform quantisation to `bits` bits: levels -L..=L with L = 2^(bits-1) - 1 (L = 1 for one bit: sign
/// and zero), scaled by the largest magnitude.
pub fn quantize(g: &Tensor, bits: u32) -> Tensor {
    let levels = ((1i64 << (bits - 1)) - 1).max(1) as f64;
    let scale = g.abs().max().double_value(&[]);
    if scale == 0.0 {
        return g.shallow_clone();
    }
    (g * (levels / scale)).round() * (scale / levels)
}
