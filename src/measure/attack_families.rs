//! The features of attack-backed families: what a reconstruction algorithm makes of each shared update, which the
//! family then calibrates to the target (`vinfo::Family::Analytic`).
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
//!
//! The gradient-matching families (`ig`, `dlg`, `idlg`) attack every victim's update of each layer group with the
//! project's attacks ([`MatchingFeatures`]), as the update of one sample, and read the same targets off the
//! reconstruction: the image, the label the attack carries, an attribute measured on the image.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use tch::{Kind, Tensor};

use crate::data::{attributes, InputShape};
use crate::gradients::updates::SharedUpdates;
use crate::measure::attacks::analytic::{self, Inversion};
use crate::measure::attacks::{infer_labels, ssim_options, AttackConfig, Method, Target};
use crate::measure::decoder::DecoderFeatures;
use crate::measure::image_metrics;
use crate::measure::vinfo::Family;
use crate::models::{LayerKind, Model};
use crate::progress::Progress;
use crate::rng::{self, Stream};

/// An attack-backed family met a layer whose store keeps only its sketch: the attack needs the full gradient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SketchOnlyLayer {
    pub family: &'static str,
    pub layer: String,
    pub num_params: i64,
}

impl std::fmt::Display for SketchOnlyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} family: only a sketch of layer '{}' is stored; the attack needs its full gradient",
            self.family, self.layer
        )
    }
}

impl std::error::Error for SketchOnlyLayer {}

/// How well one layer's reconstructions match the victims' images (means over victims; PSNR over finite values).
pub struct ReconstructionScore {
    pub layer: String,
    pub samples: usize,
    pub mse: f64,
    pub psnr: f64,
    pub ssim: Option<f64>,
    /// The reconstructions (N, C, H, W), clipped to [0, 1].
    pub images: Tensor,
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

    /// What the attacker did and could not do, for the report's notes.
    pub fn notes(&self) -> Vec<String> {
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

    /// How close each reconstructed layer's images come to the victims' (images in [0, 1] only): the attack's own
    /// success, beside the bits its calibration measures. In layer order.
    pub fn image_scores(&self) -> Result<Vec<ReconstructionScore>> {
        let mut out = Vec::new();
        for (&l, r) in &self.reconstructions {
            let layer = &self.model.layers()[l].name;
            out.extend(score_images(self.model, &self.updates.victim_input, layer, &r.inputs)?);
        }
        Ok(out)
    }

    /// The analytic family's features for `target` (`input`, `label` or `attribute:NAME`) from the stored layers
    /// `members` (indices into the updates' layers) named `group`; None when there is no closed form.
    pub fn features(&mut self, group: &str, members: &[usize], target: &str) -> Result<Option<Tensor>> {
        let features = match target {
            "label" => self.label(members)?,
            "input" => self.reconstruction(members)?.map(|r| r.flatten(1, -1).to_kind(Kind::Float)),
            other => match other.strip_prefix("attribute:") {
                Some(name) => self.attribute(members, name)?,
                None => bail!("analytic family: unknown target '{other}'"),
            },
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

/// How close reconstructions (N, ...) of the victims' inputs come to them, as `layer`'s score; None for a model
/// that does not take images in [0, 1].
pub fn score_images(
    model: &Model,
    victims: &Tensor,
    layer: &str,
    images: &Tensor,
) -> Result<Option<ReconstructionScore>> {
    let InputShape::Image { height, width, .. } = model.spec.input else { return Ok(None) };
    let originals = victims.to_kind(Kind::Double);
    let images = images.to_kind(Kind::Double).reshape(originals.size()).clamp(0.0, 1.0);
    let mean = |v: Vec<f64>| {
        let finite: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
        finite.iter().sum::<f64>() / finite.len().max(1) as f64
    };
    let ssim = match ssim_options(height, width, 1.0) {
        Some(opts) => Some(mean(image_metrics::ssim(&images, &originals, &opts)?)),
        None => None,
    };
    Ok(Some(ReconstructionScore {
        layer: layer.to_string(),
        samples: images.size()[0] as usize,
        mse: mean(image_metrics::mse(&images, &originals)?),
        psnr: mean(image_metrics::psnr(&images, &originals, 1.0)?),
        ssim,
        images,
    }))
}

/// The column of attribute `name` among the attributes measured on a model's input images, None for tabular
/// models or attributes that are not measured from pixels.
fn measured_attribute_column(model: &Model, name: &str) -> Option<usize> {
    let InputShape::Image { channels, .. } = model.spec.input else { return None };
    attributes::image_attribute_infos(channels).iter().position(|a| a.name == name)
}

/// Attribute `name` measured on reconstructed images (N, C, H, W), as an (N, 1) feature.
fn attribute_on(model: &Model, images: &Tensor, name: &str) -> Result<Option<Tensor>> {
    let InputShape::Image { channels, .. } = model.spec.input else { return Ok(None) };
    let Some(column) = measured_attribute_column(model, name) else { return Ok(None) };
    let count = attributes::image_attribute_infos(channels).len() as i64;
    let values = attributes::image_values(&images.to_kind(Kind::Float))?;
    let table = Tensor::from_slice(&values).view([images.size()[0], count]);
    Ok(Some(table.narrow(1, column as i64, 1).contiguous()))
}

/// One group's gradient-matching reconstructions of every victim.
struct Matched {
    /// (N, ...) in the model's input shape, in the attack's data range.
    inputs: Tensor,
    /// The label each reconstruction carries (inferred by iDLG's rule or optimised).
    labels: Vec<i64>,
}

/// A gradient-matching attacker (DLG, iDLG or Inverting Gradients) of one set of shared updates: every victim's
/// update of a layer group is attacked once (as the update of one sample: the attacker matches one dummy), all
/// victims together where the attack batches them, and the reconstructions serve every target of the group.
pub struct MatchingFeatures<'a> {
    model: &'a Model,
    updates: &'a SharedUpdates,
    config: AttackConfig,
    /// By group name; None where the attack could not run (the reason is in `skipped`).
    by_group: BTreeMap<String, Option<Matched>>,
    skipped: Vec<String>,
    progress: Progress,
}

impl<'a> MatchingFeatures<'a> {
    /// The attacker `method` with `iterations` per victim; its dummies are seeded from `seed`.
    pub fn new(
        model: &'a Model,
        updates: &'a SharedUpdates,
        method: Method,
        iterations: usize,
        seed: u64,
        progress: Progress,
    ) -> Self {
        let mut config = AttackConfig::new(method);
        config.iterations = iterations;
        config.seed = seed;
        if let InputShape::Tabular { .. } = model.spec.input {
            config.data_range = (-1e6, 1e6);
        }
        MatchingFeatures { model, updates, config, by_group: BTreeMap::new(), skipped: Vec::new(), progress }
    }

    /// What the attacker did and could not do, for the report's notes.
    pub fn notes(&self) -> Vec<String> {
        let method = self.config.method;
        let mut notes = Vec::new();
        let done: Vec<&str> = self.by_group.iter().filter(|(_, m)| m.is_some()).map(|(g, _)| g.as_str()).collect();
        if !done.is_empty() {
            notes.push(format!(
                "{method}: {} iterations on each victim's update of {}",
                self.config.iterations,
                done.join(", ")
            ));
        }
        if !self.skipped.is_empty() {
            notes.push(format!("{method}: not run for {}", self.skipped.join("; ")));
        }
        notes
    }

    /// How close each attacked group's reconstructions come to the victims' images, by group name.
    pub fn image_scores(&self) -> Result<Vec<ReconstructionScore>> {
        let mut out = Vec::new();
        for (group, m) in &self.by_group {
            if let Some(m) = m {
                out.extend(score_images(self.model, &self.updates.victim_input, group, &m.inputs)?);
            }
        }
        Ok(out)
    }

    /// The family's features for `target` from the stored layers `members` named `group`; None where the attack
    /// cannot run or the target is not measured from pixels.
    pub fn features(&mut self, group: &str, members: &[usize], target: &str) -> Result<Option<Tensor>> {
        if !self.by_group.contains_key(group) {
            let matched = match self.attack(members) {
                Ok(m) => Some(m),
                Err(e) => {
                    self.skipped.push(format!("{group} ({e:#})"));
                    None
                }
            };
            self.by_group.insert(group.to_string(), matched);
        }
        let Some(m) = &self.by_group[group] else { return Ok(None) };
        match target {
            "input" => Ok(Some(m.inputs.flatten(1, -1).to_kind(Kind::Float))),
            "label" => {
                let classes = self.model.spec.num_classes;
                Ok(Some(Tensor::from_slice(&m.labels).clamp(0, classes - 1).one_hot(classes).to_kind(Kind::Float)))
            }
            other => match other.strip_prefix("attribute:") {
                Some(name) => attribute_on(self.model, &m.inputs, name),
                None => bail!("{} family: unknown target '{other}'", self.config.method),
            },
        }
    }

    /// Attacks every victim's update of the group's layers.
    fn attack(&self, members: &[usize]) -> Result<Matched> {
        let n = self.updates.num_updates();
        let mut shared_of = Vec::with_capacity(n as usize);
        for u in 0..n {
            let mut shared = Vec::with_capacity(members.len());
            for &m in members {
                let layer = &self.updates.layers[m];
                let Some(full) = &layer.full else {
                    let (family, name) = (self.config.method.name(), layer.name.clone());
                    return Err(SketchOnlyLayer { family, layer: name, num_params: layer.num_params }.into());
                };
                shared.push((layer.name.clone(), full.get(u).to_kind(self.model.kind())));
            }
            shared_of.push(shared);
        }
        let targets = shared_of
            .iter()
            .map(|shared| Target::new(self.model, shared, 1, None, &self.config))
            .collect::<Result<Vec<_>>>()?;
        let mut rngs: Vec<_> =
            (0..n as u64).map(|u| rng::rng(self.config.seed, Stream::FamilyAttack { update: u })).collect();
        let bar = self.progress.bar(n as u64 * self.config.iterations as u64, format!("{} family", self.config.method));
        let reconstructions = self.config.method.attack().reconstruct_all(&targets, &mut rngs, &mut || bar.inc(1))?;
        bar.finish_and_clear();
        let inputs: Vec<Tensor> = reconstructions.iter().map(|r| r.inputs.narrow(0, 0, 1)).collect();
        let labels = reconstructions.iter().map(|r| r.labels.first().copied().unwrap_or(0)).collect();
        Ok(Matched { inputs: Tensor::cat(&inputs, 0), labels })
    }
}

/// The features of every attack-backed family of an audit cell: the analytic attacker and the gradient-matching
/// attackers, each created once and reused by every group and target.
pub struct AttackBackedFeatures<'a> {
    model: &'a Model,
    updates: &'a SharedUpdates,
    pub analytic: Option<AnalyticFeatures<'a>>,
    /// By family name (`ig`, `dlg:500`, ...).
    pub matching: BTreeMap<String, MatchingFeatures<'a>>,
    /// The decoder trained on auxiliary updates (set by the caller, who computes them).
    pub decoder: Option<DecoderFeatures<'a>>,
}

impl<'a> AttackBackedFeatures<'a> {
    /// The attackers of the attack-backed families among `families`.
    pub fn new(
        model: &'a Model,
        updates: &'a SharedUpdates,
        families: &[Family],
        seed: u64,
        progress: Progress,
    ) -> Self {
        let analytic = families.contains(&Family::Analytic).then(|| AnalyticFeatures::new(model, updates));
        let matching = families
            .iter()
            .filter_map(|f| match f {
                Family::Matching { method, iterations } => {
                    Some((f.to_string(), MatchingFeatures::new(model, updates, *method, *iterations, seed, progress)))
                }
                _ => None,
            })
            .collect();
        AttackBackedFeatures { model, updates, analytic, matching, decoder: None }
    }

    /// The features of attack-backed `family` for `target` from the group's layers; None where it has none.
    pub fn features(
        &mut self,
        family: &Family,
        group: &str,
        members: &[usize],
        target: &str,
    ) -> Result<Option<Tensor>> {
        match family {
            Family::Analytic => match &mut self.analytic {
                Some(a) => a.features(group, members, target),
                None => bail!("the analytic attacker was not set up"),
            },
            Family::Matching { .. } => match self.matching.get_mut(&family.to_string()) {
                Some(m) => m.features(group, members, target),
                None => bail!("the {family} attacker was not set up"),
            },
            Family::Decoder { .. } => match &mut self.decoder {
                Some(d) => d.features(group, members, target),
                None => bail!("the decoder was not set up"),
            },
            other => bail!("the {other} family reads the gradients, not an attack's reconstructions"),
        }
    }

    /// Every attacker's reconstructions of the victims' images, scored: (family, score), the analytic attacker's by
    /// layer, the others' by layer group, the decoder's from the input it decodes.
    pub fn image_scores(&self) -> Result<Vec<(String, ReconstructionScore)>> {
        let mut out = Vec::new();
        if let Some(a) = &self.analytic {
            out.extend(a.image_scores()?.into_iter().map(|s| (Family::Analytic.to_string(), s)));
        }
        for (family, m) in &self.matching {
            out.extend(m.image_scores()?.into_iter().map(|s| (family.clone(), s)));
        }
        if let Some(d) = &self.decoder {
            for (group, images) in d.decoded_inputs() {
                let score = score_images(self.model, &self.updates.victim_input, &group, &images)?;
                out.extend(score.map(|s| (d.family(), s)));
            }
        }
        Ok(out)
    }

    /// Every attacker's notes.
    pub fn notes(&self) -> Vec<String> {
        let mut notes: Vec<String> = self.analytic.iter().flat_map(|a| a.notes()).collect();
        notes.extend(self.matching.values().flat_map(|m| m.notes()));
        notes.extend(self.decoder.iter().flat_map(|d| d.notes()));
        notes
    }
}
