//! The learned family `decoder` (Wu et al. 2023, "Learning to Invert"): an attacker who owns auxiliary data of the
//! victims' kind simulates shared updates on it with the model, trains a decoder from the update (each layer's
//! gradient, or its sketch, as the gradient families read it) to the target, and applies it to the victims'
//! updates. The decoder's prediction is the feature that the family then calibrates on the fitting victims and
//! scores on the held-out ones, like an attack's reconstruction. The number of training pairs is the number of
//! auxiliary updates, whatever the number of victims.
//!
//! The decoder is the MLP family's network ([`Mlp`]): a Gaussian decoder of the target's values (input), a
//! classifier (label, attribute), trained on 90% of the auxiliary updates and stopped early on the other 10%.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use tch::{Kind, Tensor};

use super::reconstruction::score_images;
use super::{parse_count, Entry, Family, FamilyKind, FeatureSource, Features, ReconstructionScore, Setup};
use crate::data::Split;
use crate::gradients::updates::{compute_updates, SharedUpdates, UpdateConfig};
use crate::measure::groups::{group_features, GroupFeatures, LayerGroup};
use crate::measure::targets::{self, NamedTarget, TargetName};
use crate::measure::vinfo::{ConditionalModel, Mlp, MlpOptions, Part, Prediction, Predictor, Target};
use crate::models::Model;
use crate::progress::Progress;

/// Auxiliary updates a decoder family trains on when none are given (`decoder` = `decoder:5000`).
pub const DEFAULT_AUX_UPDATES: usize = 5000;

/// Fraction of the auxiliary updates that stops the decoder's training early.
const VALIDATION_FRACTION: f64 = 0.1;

/// Where the auxiliary updates' noise and dropout streams start: beyond any victims' update.
const AUX_STREAM_OFFSET: u64 = 1 << 40;

/// A decoder trained on `aux_updates` updates the attacker simulates on its own data, applied to the victims'
/// updates and calibrated like an attack's reconstruction.
#[derive(Debug, Clone, Copy)]
pub struct Decoder {
    pub aux_updates: usize,
}

/// The fewest auxiliary updates a decoder trains on.
const MIN_AUX_UPDATES: usize = 20;

impl FamilyKind for Decoder {
    fn name(&self) -> &'static str {
        "decoder"
    }
    fn setting(&self) -> Option<String> {
        (self.aux_updates != DEFAULT_AUX_UPDATES).then(|| self.aux_updates.to_string())
    }
    fn predictor(&self) -> Predictor {
        Predictor::Calibration
    }
    fn reads_gradients(&self) -> bool {
        false
    }
    fn validate(&self) -> Result<()> {
        if self.aux_updates < MIN_AUX_UPDATES {
            bail!(
                "family 'decoder:{}': a decoder needs at least {MIN_AUX_UPDATES} auxiliary updates",
                self.aux_updates
            );
        }
        Ok(())
    }
    /// Computes the auxiliary updates (the decoders train when a group and target are first asked for).
    fn source<'a>(&self, setup: &Setup<'a>) -> Result<Box<dyn FeatureSource + 'a>> {
        let behind = setup.behind(self.name())?;
        let aux = auxiliary_updates(
            behind.model,
            behind.split,
            setup.updates,
            behind.update_config,
            self.aux_updates,
            setup.progress,
        )?;
        let aux_targets = targets::resolve(setup.targets, behind.attributes, &aux)?;
        Ok(Box::new(DecoderFeatures::new(behind.model, setup.updates, aux, aux_targets, setup.seed)))
    }
}

pub(super) fn entry() -> Entry {
    Entry {
        name: "decoder",
        usage: "decoder[:AUXILIARY UPDATES]".into(),
        parse: Box::new(|setting| {
            let example = "decoder:20000";
            let aux_updates = parse_count(
                setting,
                DEFAULT_AUX_UPDATES,
                (MIN_AUX_UPDATES, crate::limits::MAX_AUX_UPDATES),
                "auxiliary updates",
                example,
            )?;
            Ok(Family::new(Decoder { aux_updates }))
        }),
    }
}

impl FeatureSource for DecoderFeatures<'_> {
    fn features(&mut self, group: &LayerGroup, _: &GroupFeatures, target: &NamedTarget) -> Result<Option<Features>> {
        Ok(DecoderFeatures::features(self, &group.name, &group.members, &target.name)?.map(Features::reconstruction))
    }

    /// The decoder's reconstruction is the input it decodes.
    fn image_scores(&self) -> Result<Vec<ReconstructionScore>> {
        let mut out = Vec::new();
        for (group, images) in self.decoded_inputs() {
            out.extend(score_images(self.model, &self.victims.victim_input, &group, &images)?);
        }
        Ok(out)
    }

    /// What the decoders were trained on, for the report's notes.
    fn notes(&self) -> Vec<String> {
        if self.fits.is_empty() {
            return Vec::new();
        }
        vec![format!(
            "decoder: an MLP (hidden {:?}) per group and target trained on {} auxiliary updates from samples that \
             are not victims ({}% of them stop its training); decoded: {}",
            self.options.hidden,
            self.aux.num_updates(),
            (VALIDATION_FRACTION * 100.0).round(),
            self.fits.join(", ")
        )]
    }
}

/// Updates the attacker simulates on its own data: the samples of the split that no victim's batch uses, up to
/// `count`, computed as the victims' are (same defences, batch size, layers and sketches) but with no full copies
/// beyond what the gradient families read.
pub fn auxiliary_updates(
    model: &Model,
    split: &Split,
    victims: &SharedUpdates,
    victim_config: &UpdateConfig,
    count: usize,
    progress: Progress,
) -> Result<SharedUpdates> {
    let used: std::collections::HashSet<i64> =
        Vec::<i64>::try_from(victims.batch_indices.flatten(0, -1))?.into_iter().collect();
    let rest: Vec<i64> = (0..split.len()).filter(|i| !used.contains(i)).collect();
    let needed = victim_config.batch_size.max(1) * 20;
    if (rest.len() as i64) < needed {
        bail!(
            "the decoder family needs samples that no victim uses: the split has {} left after the victims' \
             batches, fewer than {needed}; measure fewer updates",
            rest.len()
        );
    }
    let aux_split = split.select(&Tensor::from_slice(&rest));
    let aux_config = UpdateConfig {
        num_updates: (count as i64).min(rest.len() as i64 / victim_config.batch_size.max(1)),
        full_layers: Vec::new(),
        stream_offset: AUX_STREAM_OFFSET,
        ..victim_config.clone()
    };
    compute_updates(model, &aux_split, &aux_config, progress)
}

/// The decoder attacker of one cell: the auxiliary updates and their targets, and one decoder per group and target
/// (trained when first asked for).
pub struct DecoderFeatures<'a> {
    model: &'a Model,
    victims: &'a SharedUpdates,
    aux: SharedUpdates,
    aux_targets: Vec<NamedTarget>,
    options: MlpOptions,
    seed: u64,
    /// The victims' decoded targets by (group, target).
    decoded: BTreeMap<(String, TargetName), Tensor>,
    /// Per group and target: the decoder's held-out fit on the auxiliary updates, for the notes.
    fits: Vec<String>,
}

impl<'a> DecoderFeatures<'a> {
    /// A decoder attacker trained on `aux` (updates computed like the victims', from other samples) whose targets
    /// are `aux_targets`.
    pub fn new(
        model: &'a Model,
        victims: &'a SharedUpdates,
        aux: SharedUpdates,
        aux_targets: Vec<NamedTarget>,
        seed: u64,
    ) -> Self {
        DecoderFeatures {
            model,
            victims,
            aux,
            aux_targets,
            options: MlpOptions::default(),
            seed,
            decoded: BTreeMap::new(),
            fits: Vec::new(),
        }
    }

    /// The victims' decoded inputs (N, K) by group, for the groups decoded so far.
    pub fn decoded_inputs(&self) -> Vec<(String, Tensor)> {
        self.decoded
            .iter()
            .filter(|((_, target), _)| *target == TargetName::Input)
            .map(|((group, _), t)| (group.clone(), t.shallow_clone()))
            .collect()
    }

    /// The decoded `target` of every victim from the group's layers `members` (indices into the updates' layers,
    /// the same in the auxiliary updates): (N, K) decoded values, or (N, C) class log-probabilities.
    pub fn features(&mut self, group: &str, members: &[usize], target: &TargetName) -> Result<Option<Tensor>> {
        let key = (group.to_string(), target.clone());
        if let Some(t) = self.decoded.get(&key) {
            return Ok(Some(t.shallow_clone()));
        }
        let Some(aux_target) = self.aux_targets.iter().find(|t| &t.name == target) else {
            bail!("decoder family: the auxiliary updates have no target '{target}'")
        };
        let aux_x = group_features(&self.aux, members).values;
        let victim_x = group_features(self.victims, members).values;
        let n = aux_x.size()[0];
        let n_val = ((n as f64 * VALIDATION_FRACTION).round() as i64).max(1);
        if n - n_val < 2 {
            bail!("decoder family: {n} auxiliary updates are too few to train a decoder");
        }
        let x = aux_x.to_kind(Kind::Double);
        let (train_x, val_x) = (x.narrow(0, 0, n - n_val), x.narrow(0, n - n_val, n_val));
        let seed = self.seed ^ crate::rng::layer_key(group) ^ crate::rng::layer_key(&target.to_string());
        let decoded = match &aux_target.target {
            Target::Continuous(y) => {
                let y = y.flatten(1, -1).to_kind(Kind::Double);
                let (train_y, val_y) = (y.narrow(0, 0, n - n_val), y.narrow(0, n - n_val, n_val));
                // The decoder's own variance floor: its mean is what the family reads.
                let var = train_y.var_dim([0i64].as_slice(), false, false);
                let floor = (var.clamp_min(var.mean(Kind::Double).double_value(&[]).max(1e-12)) * 1e-4).detach();
                let mut mlp = Mlp::gaussian(&floor, &self.options, seed);
                mlp.fit(Part { x: &train_x, y: &train_y }, Part { x: &val_x, y: &val_y })
                    .with_context(|| format!("training the decoder of {target} from {group}"))?;
                match mlp.predict(&victim_x.to_kind(Kind::Double))? {
                    Prediction::Gaussian { mean, .. } => mean,
                    Prediction::Categorical(_) => bail!("decoder family: a Gaussian decoder predicted classes"),
                }
            }
            Target::Categorical(codes) => {
                // Codes are class indices (labels) or binary attributes: the classes are 0..=max over the
                // auxiliary and victim codes.
                let victims = self.victims_codes(target)?;
                let classes = codes.max().int64_value(&[]).max(victims.max().int64_value(&[])) + 1;
                let y = codes.to_kind(Kind::Int64);
                let (train_y, val_y) = (y.narrow(0, 0, n - n_val), y.narrow(0, n - n_val, n_val));
                let mut mlp = Mlp::classifier(classes, &self.options, seed);
                mlp.fit(Part { x: &train_x, y: &train_y }, Part { x: &val_x, y: &val_y })
                    .with_context(|| format!("training the decoder of {target} from {group}"))?;
                match mlp.predict(&victim_x.to_kind(Kind::Double))? {
                    Prediction::Categorical(log_p) => log_p,
                    Prediction::Gaussian { .. } => bail!("decoder family: a classifier predicted values"),
                }
            }
        };
        let decoded = decoded.to_kind(Kind::Float);
        self.fits.push(format!("{group} / {target}"));
        self.decoded.insert(key, decoded.shallow_clone());
        Ok(Some(decoded))
    }

    /// The victims' codes of a categorical target, to size the classes.
    fn victims_codes(&self, target: &TargetName) -> Result<Tensor> {
        Ok(match target {
            TargetName::Label => self.victims.victim_label.shallow_clone(),
            // Attributes are binary.
            TargetName::Attribute(_) => Tensor::from_slice(&[1i64]),
            TargetName::Input => bail!("decoder family: the input is not a categorical target"),
        })
    }
}
