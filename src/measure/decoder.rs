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

use crate::data::Split;
use crate::gradients::updates::{compute_updates, SharedUpdates, UpdateConfig};
use crate::measure::layerwise::{group_features, NamedTarget};
use crate::measure::vinfo::{ConditionalModel, Family, Mlp, MlpOptions, Part, Prediction, Target};
use crate::models::Model;
use crate::progress::Progress;

/// Auxiliary updates a decoder family trains on when none are given (`decoder` = `decoder:5000`).
pub const DEFAULT_AUX_UPDATES: usize = 5000;

/// Fraction of the auxiliary updates that stops the decoder's training early.
const VALIDATION_FRACTION: f64 = 0.1;

/// Where the auxiliary updates' noise and dropout streams start: beyond any victims' update.
const AUX_STREAM_OFFSET: u64 = 1 << 40;

/// The auxiliary updates of the decoder family among `families`, when there is one.
pub fn aux_updates_of(families: &[Family]) -> Option<usize> {
    families.iter().find_map(|f| match f {
        Family::Decoder { aux_updates } => Some(*aux_updates),
        _ => None,
    })
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
    /// The auxiliary updates the family asked for (`decoder:N`); fewer when the split has fewer samples left.
    requested: usize,
    victims: &'a SharedUpdates,
    aux: SharedUpdates,
    aux_targets: Vec<NamedTarget>,
    options: MlpOptions,
    seed: u64,
    /// The victims' decoded targets by (group, target).
    decoded: BTreeMap<(String, String), Tensor>,
    /// Per group and target: the decoder's held-out fit on the auxiliary updates, for the notes.
    fits: Vec<String>,
}

impl<'a> DecoderFeatures<'a> {
    /// A decoder attacker trained on `aux` (updates computed like the victims', from other samples) whose targets
    /// are `aux_targets`.
    pub fn new(
        victims: &'a SharedUpdates,
        aux: SharedUpdates,
        aux_targets: Vec<NamedTarget>,
        requested: usize,
        seed: u64,
    ) -> Self {
        DecoderFeatures {
            requested,
            victims,
            aux,
            aux_targets,
            options: MlpOptions::default(),
            seed,
            decoded: BTreeMap::new(),
            fits: Vec::new(),
        }
    }

    /// Auxiliary updates the decoders train on.
    pub fn aux_updates(&self) -> i64 {
        self.aux.num_updates()
    }

    /// The family's name, with the auxiliary updates it asked for.
    pub fn family(&self) -> String {
        Family::Decoder { aux_updates: self.requested }.to_string()
    }

    /// The victims' decoded inputs (N, K) by group, for the groups decoded so far.
    pub fn decoded_inputs(&self) -> Vec<(String, Tensor)> {
        self.decoded
            .iter()
            .filter(|((_, target), _)| target == "input")
            .map(|((group, _), t)| (group.clone(), t.shallow_clone()))
            .collect()
    }

    /// What the decoders were trained on, for the report's notes.
    pub fn notes(&self) -> Vec<String> {
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

    /// The decoded `target` of every victim from the group's layers `members` (indices into the updates' layers,
    /// the same in the auxiliary updates): (N, K) decoded values, or (N, C) class log-probabilities.
    pub fn features(&mut self, group: &str, members: &[usize], target: &str) -> Result<Option<Tensor>> {
        let key = (group.to_string(), target.to_string());
        if let Some(t) = self.decoded.get(&key) {
            return Ok(Some(t.shallow_clone()));
        }
        let Some(aux_target) = self.aux_targets.iter().find(|t| t.name == target) else {
            bail!("decoder family: the auxiliary updates have no target '{target}'")
        };
        let (aux_x, _, _) = group_features(&self.aux, members);
        let (victim_x, _, _) = group_features(self.victims, members);
        let n = aux_x.size()[0];
        let n_val = ((n as f64 * VALIDATION_FRACTION).round() as i64).max(1);
        if n - n_val < 2 {
            bail!("decoder family: {n} auxiliary updates are too few to train a decoder");
        }
        let x = aux_x.to_kind(Kind::Double);
        let (train_x, val_x) = (x.narrow(0, 0, n - n_val), x.narrow(0, n - n_val, n_val));
        let seed = self.seed ^ crate::rng::layer_key(group) ^ crate::rng::layer_key(target);
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
    fn victims_codes(&self, target: &str) -> Result<Tensor> {
        Ok(match target {
            "label" => self.victims.victim_label.shallow_clone(),
            other => {
                let Some(_) = other.strip_prefix("attribute:") else {
                    bail!("decoder family: unknown categorical target '{other}'")
                };
                // Attributes are binary.
                Tensor::from_slice(&[1i64])
            }
        })
    }
}
