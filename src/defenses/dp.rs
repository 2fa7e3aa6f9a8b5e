//! The privacy a DP-SGD defence gives, as recorded beside shared updates.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{accountant, Defense, DefensePlan};

/// DP-SGD settings and the privacy they give, when the `dp` defence is used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpRecord {
    pub clip: f64,
    pub noise_multiplier: f64,
    /// Poisson sampling rate q = B / (training set size) used for the accountant.
    pub sample_rate: f64,
    /// Steps accounted for.
    pub steps: u64,
    pub delta: f64,
    /// Epsilon from the RDP accountant; null when not computed.
    pub epsilon: Option<f64>,
}

/// The DP record of `defenses` when they hold a `dp` defence, for batches of `batch_size` from a training set of
/// `train_size`: sample rate q = B / N, `steps` (default: one epoch, ceil(N / B)), delta, and epsilon from the RDP
/// accountant. `None` without a `dp` defence.
pub fn dp_record(
    defenses: &[Defense],
    batch_size: i64,
    train_size: i64,
    delta: f64,
    steps: Option<u64>,
) -> Result<Option<DpRecord>> {
    let Some((clip, noise_multiplier)) = DefensePlan::new(defenses)?.dp else { return Ok(None) };
    let sample_rate = (batch_size as f64 / train_size as f64).min(1.0);
    let steps = steps.unwrap_or_else(|| ((train_size + batch_size - 1) / batch_size) as u64);
    let spent = accountant::epsilon(sample_rate, noise_multiplier, steps, delta)?;
    Ok(Some(DpRecord {
        clip,
        noise_multiplier,
        sample_rate,
        steps,
        delta,
        epsilon: spent.epsilon.is_finite().then_some(spent.epsilon),
    }))
}
