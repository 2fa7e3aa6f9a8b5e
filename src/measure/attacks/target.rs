//! The attacker's view of one shared update ([`AttackedUpdate`]): the checks of the update against the model, and the
//! matched layers with their targets and weights.

use anyhow::{bail, Context, Result};
use tch::Tensor;

use super::config::{invalid, AttackConfig, Setting};
use super::objective::{self, Matcher};
use crate::data::InputShape;
use crate::models::Model;

/// One shared update, checked, as an [`super::Attack`] receives it.
pub struct AttackedUpdate<'a> {
    pub model: &'a Model,
    /// The layers the client shared, by name, each a flat gradient (weight then bias) of the batch's mean loss.
    pub shared: &'a [(String, Tensor)],
    /// The matched layers: indices, shared gradients in the model's precision, weights.
    pub matcher: Matcher<'a>,
    /// (B, C, H, W) of the batch behind the update.
    pub shape: [i64; 4],
    /// The true labels, for [`super::LabelMode::Known`].
    pub known_labels: Option<&'a Tensor>,
    pub config: &'a AttackConfig,
}

impl<'a> AttackedUpdate<'a> {
    /// Checks the settings, the model (it must take images), the batch size and the shared update, and chooses the
    /// matched layers.
    pub fn new(
        model: &'a Model,
        shared: &'a [(String, Tensor)],
        batch_size: i64,
        known_labels: Option<&'a Tensor>,
        config: &'a AttackConfig,
    ) -> Result<Self> {
        config.validate()?;
        let InputShape::Image { channels, height, width } = model.spec.input else {
            bail!("the attacks reconstruct images; model {} takes {}", model.spec.arch, model.spec.input);
        };
        if batch_size < 1 {
            return Err(invalid(Setting::BatchSize, format!("the batch size must be at least 1, got {batch_size}")));
        }
        let matcher = matcher(model, shared, config)?;
        let shape = [batch_size, channels, height, width];
        Ok(AttackedUpdate { model, shared, matcher, shape, known_labels, config })
    }

    pub fn batch_size(&self) -> i64 {
        self.shape[0]
    }

    /// The position of the model's last layer among the matched layers.
    pub fn last_layer_position(&self) -> Option<usize> {
        let last = self.model.layers().len() - 1;
        self.matcher.layers.iter().position(|&l| l == last)
    }
}

/// The attacker's view of the matched layers: indices, targets (in the model's precision) and weights.
fn matcher<'a>(model: &'a Model, shared: &[(String, Tensor)], config: &AttackConfig) -> Result<Matcher<'a>> {
    let kind = model.kind();
    for (name, g) in shared {
        let index = model.layer_index(name).context("shared update")?;
        let layer = &model.layers()[index];
        let numel = g.numel() as i64;
        if numel != layer.num_params() {
            bail!(
                "shared update: layer '{name}' has {numel} values, but layer '{name}' of model {} has {} parameters \
                 (weight {:?}, bias {:?}); the update does not come from this model",
                model.spec.arch,
                layer.num_params(),
                layer.weight().size(),
                layer.bias().map(|b| b.size()).unwrap_or_default()
            );
        }
        let values = objective::to_vec(g);
        if values.iter().any(|v| !v.is_finite()) {
            bail!("shared update: layer '{name}' holds NaN or infinite values");
        }
    }
    let shared_names: Vec<&str> = shared.iter().map(|(n, _)| n.as_str()).collect();
    if shared.is_empty() {
        bail!("shared update: no layer was shared, there is nothing to attack");
    }
    let chosen: Vec<String> = if config.layers.is_empty() {
        shared_names.iter().map(|s| s.to_string()).collect()
    } else {
        config.layers.clone()
    };
    let mut layers = Vec::new();
    let mut targets = Vec::new();
    for name in &chosen {
        let index = model.layer_index(name).map_err(|e| invalid(Setting::Layers, format!("{e:#}")))?;
        if layers.contains(&index) {
            return Err(invalid(Setting::Layers, format!("the layers to match name '{name}' twice")));
        }
        let Some((_, g)) = shared.iter().find(|(n, _)| n == name) else {
            let message = format!(
                "layer '{name}' was not shared (a defence protects it), so the attacker cannot match it; shared \
                 layers: {}",
                shared_names.join(", ")
            );
            return Err(invalid(Setting::Layers, message));
        };
        layers.push(index);
        targets.push(g.detach().to_kind(kind).flatten(0, -1));
    }
    let weights = if config.layer_weights.is_empty() { vec![1.0; layers.len()] } else { config.layer_weights.clone() };
    Ok(Matcher { model, layers, targets, weights })
}
