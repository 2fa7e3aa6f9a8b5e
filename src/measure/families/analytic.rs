//! The closed-form family `analytic`: what a closed-form attacker makes of each shared update, calibrated to the
//! target.
//!
//! The analytic family reads a layer group's updates the way a closed-form attacker does:
//! * **input**: the group's fully connected layer nearest the input gives its own input exactly at batch size 1
//!   (`x = W_g^T b_g / |b_g|^2`, [`analytic::linear_layer_inputs`]); the layers below it are then inverted by
//!   matching activations ([`analytic::invert_layer_input`]). The reconstruction is the feature, calibrated per
//!   pixel by an affine map.
//! * **label**: iDLG's rule on the last layer (the weight-gradient row with the smallest sum), when the group holds
//!   it; the one-hot recovered label is the feature, calibrated by logistic regression.
//! * **attribute:NAME**: the attribute's measurement (ink, thickness, brightness, ...) computed on the
//!   reconstruction, calibrated by logistic regression.
//!
//! A group without a fully connected layer (convolutions only) has no closed form and no analytic estimate. An
//! update that is not one clean sample (a batch, DP noise) still gets the formula applied: the calibration
//! measures what the blend is worth, usually nothing.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use super::reconstruction::{attribute_on, measured_attribute_column, score_images};
use super::SketchOnlyLayer;
use super::{no_setting, Entry, Family, FamilyKind, FeatureSource, Features, ReconstructionScore, Setup};
use crate::data::InputShape;
use crate::gradients::updates::SharedUpdates;
use crate::measure::attacks::analytic::{self, Inversion};
use crate::measure::attacks::infer_labels;
use crate::measure::groups::{GroupFeatures, LayerGroup};
use crate::measure::targets::{NamedTarget, TargetName};
use crate::measure::vinfo::Predictor;
use crate::models::{LayerKind, Model};

/// The closed-form attacker, calibrated: its features are what the analytic attack makes of the gradient.
#[derive(Debug, Clone, Copy)]
pub struct Analytic;

impl FamilyKind for Analytic {
    fn name(&self) -> &'static str {
        "analytic"
    }
    fn predictor(&self) -> Predictor {
        Predictor::Calibration
    }
    fn reads_gradients(&self) -> bool {
        false
    }
    /// The closed form reads the fully connected layers' full gradients.
    fn needs_full_gradient(&self, layer: &LayerKind) -> bool {
        matches!(layer, LayerKind::Linear { .. })
    }
    fn source<'a>(&self, setup: &Setup<'a>) -> Result<Box<dyn FeatureSource + 'a>> {
        let behind = setup.behind(self.name())?;
        Ok(Box::new(AnalyticFeatures::new(behind.model, setup.updates)))
    }
}

pub(super) fn entry() -> Entry {
    Entry {
        name: "analytic",
        usage: "analytic".into(),
        parse: Box::new(|setting| no_setting(setting, Family::analytic())),
    }
}

impl FeatureSource for AnalyticFeatures<'_> {
    fn features(&mut self, group: &LayerGroup, _: &GroupFeatures, target: &NamedTarget) -> Result<Option<Features>> {
        Ok(AnalyticFeatures::features(self, &group.name, &group.members, &target.name)?.map(Features::reconstruction))
    }

    /// How close each reconstructed layer's images come to the victims' (images in [0, 1] only): the attack's own
    /// success, beside the bits its calibration measures. In layer order.
    fn image_scores(&self) -> Result<Vec<ReconstructionScore>> {
        let mut out = Vec::new();
        for (&l, r) in &self.reconstructions {
            let layer = &self.model.layers()[l].name;
            out.extend(score_images(self.model, &self.updates.victim_input, layer, &r.inputs)?);
        }
        Ok(out)
    }

    /// What the attacker did and could not do, for the report's notes.
    fn notes(&self) -> Vec<String> {
        let mut notes: Vec<String> = self
            .reconstructions
            .iter()
            .map(|(&l, r)| {
                format!(
                    "analytic: the input of {} recovered in closed form (median rank-one residual {:.1e}){}",
                    self.model.layers()[l].name,
                    r.median_residual,
                    if r.inverted {
                        format!(
                            ", then carried to the input by {} steps of activation matching",
                            self.inversion.iterations
                        )
                    } else {
                        String::new()
                    }
                )
            })
            .collect();
        if self.model.script().is_some() {
            // Every layer of a loaded module is skipped: one line says why instead of the list.
            notes.push(
                "analytic: the closed form reads the inputs that gradleak's own layers record in the forward pass; a \
                 TorchScript model's graph records none, so the analytic family has no estimate for it"
                    .to_string(),
            );
        } else if !self.skipped.is_empty() {
            notes.push(format!(
                "analytic: no closed form (no fully connected layer, or for the label not the last layer) for {}",
                self.skipped.join(", ")
            ));
        }
        notes
    }
}

/// One linear layer's analytic reconstruction of every victim's input.
struct LayerReconstruction {
    /// (N, ...) in the model's input shape.
    inputs: Tensor,
    /// The median over updates of `|W_g - b_g x^T| / |W_g|`: rounding for single clean samples, large for batches
    /// and noised updates.
    median_residual: f64,
    inverted: bool,
}

/// The analytic attacker of one set of shared updates: reconstructions are computed once per layer and reused by
/// every group and target that needs them.
pub struct AnalyticFeatures<'a> {
    model: &'a Model,
    updates: &'a SharedUpdates,
    inversion: Inversion,
    /// By model layer index, so in forward order.
    reconstructions: BTreeMap<usize, LayerReconstruction>,
    /// Groups and targets without a closed form, for the report's notes.
    skipped: Vec<String>,
}

impl<'a> AnalyticFeatures<'a> {
    pub fn new(model: &'a Model, updates: &'a SharedUpdates) -> Self {
        let inversion = match model.spec.input {
            InputShape::Image { .. } => Inversion::default(),
            // Tabular features have no box; the inversion starts from 0 either way.
            InputShape::Tabular { .. } => Inversion { range: (-1e6, 1e6), ..Inversion::default() },
        };
        AnalyticFeatures { model, updates, inversion, reconstructions: BTreeMap::new(), skipped: Vec::new() }
    }

    /// The analytic family's features for `target` from the stored layers `members` (indices into the updates'
    /// layers) named `group`; None when there is no closed form.
    pub fn features(&mut self, group: &str, members: &[usize], target: &TargetName) -> Result<Option<Tensor>> {
        let features = match target {
            TargetName::Label => self.label(members)?,
            TargetName::Input => self.reconstruction(members)?.map(|r| r.flatten(1, -1).to_kind(Kind::Float)),
            TargetName::Attribute(name) => self.attribute(members, name)?,
        };
        if features.is_none() {
            self.skipped.push(format!("{group} / {target}"));
        }
        Ok(features)
    }

    /// Model layer index of a stored layer.
    fn model_layer(&self, member: usize) -> Result<usize> {
        self.model.layer_index(&self.updates.layers[member].name)
    }

    /// The one-hot label that iDLG's rule reads off the last layer's gradient, when the group holds that layer.
    fn label(&self, members: &[usize]) -> Result<Option<Tensor>> {
        let last = self.model.layers().len() - 1;
        for &m in members {
            if self.model_layer(m)? != last {
                continue;
            }
            let LayerKind::Linear { out_features, .. } = self.model.layers()[last].kind else { return Ok(None) };
            let Some(full) = &self.updates.layers[m].full else { return Ok(None) };
            let labels = (0..full.size()[0])
                .map(|i| Ok(infer_labels(self.model, &full.get(i), 1)?[0]))
                .collect::<Result<Vec<i64>>>()?;
            return Ok(Some(Tensor::from_slice(&labels).one_hot(out_features).to_kind(Kind::Float)));
        }
        Ok(None)
    }

    /// The measurement of attribute `name` on the reconstruction, for image models whose attributes are computed
    /// from the pixels.
    fn attribute(&mut self, members: &[usize], name: &str) -> Result<Option<Tensor>> {
        if measured_attribute_column(self.model, name).is_none() {
            return Ok(None);
        }
        let Some(images) = self.reconstruction(members)? else { return Ok(None) };
        attribute_on(self.model, &images, name)
    }

    /// The reconstruction from the group's fully connected layer nearest the input (N, ...), or None without one.
    fn reconstruction(&mut self, members: &[usize]) -> Result<Option<Tensor>> {
        let mut linear: Vec<(usize, usize)> = Vec::new();
        for &m in members {
            let layer = self.model_layer(m)?;
            if matches!(self.model.layers()[layer].kind, LayerKind::Linear { .. }) {
                linear.push((layer, m));
            }
        }
        let Some(&(layer, member)) = linear.iter().min() else { return Ok(None) };
        if !self.reconstructions.contains_key(&layer) {
            let r = self.reconstruct(layer, member)?;
            self.reconstructions.insert(layer, r);
        }
        Ok(Some(self.reconstructions[&layer].inputs.shallow_clone()))
    }

    fn reconstruct(&self, layer: usize, member: usize) -> Result<LayerReconstruction> {
        let l = &self.model.layers()[layer];
        let LayerKind::Linear { in_features, out_features } = l.kind else {
            bail!("analytic recovery needs a fully connected layer; '{}' is a {}", l.name, l.kind.type_name())
        };
        let Some(full) = &self.updates.layers[member].full else {
            let layer = l.name.clone();
            return Err(SketchOnlyLayer { family: "analytic", layer, num_params: l.num_params() }.into());
        };
        let (layer_inputs, residuals) = analytic::linear_layer_inputs(full, in_features, out_features)?;
        let mut finite: Vec<f64> = residuals.into_iter().filter(|r| r.is_finite()).collect();
        finite.sort_by(f64::total_cmp);
        let median_residual = finite.get(finite.len() / 2).copied().unwrap_or(f64::NAN);
        let shape = self.model.spec.input.batch(1)[1..].to_vec();
        let inverted = !analytic::layer_reads_the_input(self.model, layer, &shape)?;
        let inputs = if inverted {
            analytic::invert_layer_input(self.model, layer, &layer_inputs, &shape, &self.inversion)?
        } else {
            let n = layer_inputs.size()[0];
            layer_inputs.to_kind(self.model.kind()).reshape(self.model.spec.input.batch(n))
        };
        Ok(LayerReconstruction { inputs, median_residual, inverted })
    }
}
