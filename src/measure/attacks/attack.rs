//! The extension point: an [`Attack`] reconstructs the batch behind a shared update. [`Method::attack`] is the one
//! place a method is mapped to its implementation.

use anyhow::{Context, Result};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use super::config::{AttackConfig, Method};
use super::dlg::Dlg;
use super::idlg::Idlg;
use super::ig::InvertingGradients;
use super::labels::LabelSource;
use super::target::AttackedUpdate;
use crate::models::Model;
use crate::optim::Stop;

/// A method's published settings, the defaults of [`AttackConfig::new`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    pub iterations: usize,
    pub lr: f64,
    pub tv_weight: f64,
}

/// What one attack on one shared update produced.
#[derive(Debug)]
pub struct Reconstruction {
    /// (B, C, H, W), clipped to the data range.
    pub inputs: Tensor,
    /// The label of each reconstruction.
    pub labels: Vec<i64>,
    pub label_source: LabelSource,
    /// The gradient distance of the kept restart: squared L2 for DLG and iDLG, cosine distance for Inverting
    /// Gradients (without the prior).
    pub gradient_distance: f64,
    /// The distance reached by every restart.
    pub restart_distances: Vec<f64>,
    /// Iterations done, summed over restarts.
    pub iterations: usize,
    /// Objective evaluations (forward + double backward), summed over restarts.
    pub evaluations: usize,
    /// Why the kept restart stopped.
    pub stop: Stop,
    pub warnings: Vec<String>,
}

/// A gradient-inversion attack. It receives each shared update as a [`AttackedUpdate`] (the model, the shared layers, the
/// matched layers and the settings) and returns the reconstructed batch.
pub trait Attack {
    /// The method's name in messages.
    fn name(&self) -> &'static str;

    /// The published settings.
    fn defaults(&self) -> Defaults;

    /// Reconstructs the batch behind one shared update. `rng` draws the dummies' initialisation; `on_iteration` is
    /// called `iterations` times per restart (for progress bars), also when a run stops early.
    fn reconstruct(
        &self,
        target: &AttackedUpdate,
        rng: &mut ChaCha8Rng,
        on_iteration: &mut dyn FnMut(),
    ) -> Result<Reconstruction>;

    /// Reconstructs several shared updates of one model with one configuration, `rngs[i]` for `targets[i]`; errors
    /// name the update (from 1). One after the other, unless an attack batches them.
    fn reconstruct_all(
        &self,
        targets: &[AttackedUpdate],
        rngs: &mut [ChaCha8Rng],
        on_iteration: &mut dyn FnMut(),
    ) -> Result<Vec<Reconstruction>> {
        reconstruct_each(self, targets, rngs, on_iteration)
    }
}

/// [`Attack::reconstruct`] on each target in turn (`rngs[i]` for `targets[i]`); errors name the update (from 1).
pub fn reconstruct_each<A: Attack + ?Sized>(
    attack: &A,
    targets: &[AttackedUpdate],
    rngs: &mut [ChaCha8Rng],
    on_iteration: &mut dyn FnMut(),
) -> Result<Vec<Reconstruction>> {
    targets
        .iter()
        .zip(rngs)
        .enumerate()
        .map(|(i, (target, rng))| {
            attack.reconstruct(target, rng, on_iteration).with_context(|| format!("update {}", i + 1))
        })
        .collect()
}

impl Method {
    /// The method's implementation.
    pub fn attack(self) -> Box<dyn Attack> {
        match self {
            Method::Dlg => Box::new(Dlg),
            Method::Idlg => Box::new(Idlg),
            Method::Ig => Box::new(InvertingGradients),
        }
    }
}

/// Reconstructs the batch behind one shared update with `config.method`.
///
/// `shared` lists the layers the client shared, by name, each a flat gradient of the layer's parameters (weight
/// then bias) of the batch's mean loss; `batch_size` is the number of inputs behind it; `known_labels` is needed for
/// [`super::LabelMode::Known`]. The model's precision is the attack's precision. `on_iteration` is called after
/// every iteration (for progress bars).
pub fn reconstruct(
    model: &Model,
    shared: &[(String, Tensor)],
    batch_size: i64,
    config: &AttackConfig,
    known_labels: Option<&Tensor>,
    rng: &mut ChaCha8Rng,
    on_iteration: &mut dyn FnMut(),
) -> Result<Reconstruction> {
    let target = AttackedUpdate::new(model, shared, batch_size, known_labels, config)?;
    config.method.attack().reconstruct(&target, rng, on_iteration)
}
