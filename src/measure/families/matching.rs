//! The gradient-matching families (`dlg`, `idlg`, `ig`: one per attack [`Method`]): every victim's update of each
//! layer group is attacked with the project's attacks, as the update of one sample, and the family reads its
//! targets off the reconstruction: the image (calibrated per pixel), the label the attack carries, an attribute
//! measured on the image.

use std::collections::BTreeMap;

use anyhow::Result;
use tch::{Kind, Tensor};

use super::reconstruction::{attribute_on, score_images};
use super::SketchOnlyLayer;
use super::{parse_count, Entry, Family, FamilyKind, FeatureSource, Features, ReconstructionScore, Setup};
use crate::data::InputShape;
use crate::gradients::updates::SharedUpdates;
use crate::measure::attacks::{AttackConfig, AttackedUpdate, Method};
use crate::measure::groups::{GroupFeatures, LayerGroup};
use crate::measure::targets::{NamedTarget, TargetName};
use crate::measure::vinfo::Predictor;
use crate::models::{LayerKind, Model};
use crate::progress::Progress;
use crate::rng::{self, Stream};

/// Iterations of a gradient-matching family when none are given (`ig` = `ig:200`): the attacks' own defaults
/// (4,800 for Inverting Gradients) are for one image at a time; a family attacks every victim of every group.
pub const DEFAULT_MATCHING_ITERATIONS: usize = 200;

/// A gradient-matching attack run for `iterations` on every victim's update of the layer group, calibrated like
/// the analytic family.
#[derive(Debug, Clone, Copy)]
pub struct Matching {
    pub method: Method,
    pub iterations: usize,
}

impl FamilyKind for Matching {
    fn name(&self) -> &'static str {
        self.method.name()
    }
    fn setting(&self) -> Option<String> {
        (self.iterations != DEFAULT_MATCHING_ITERATIONS).then(|| self.iterations.to_string())
    }
    fn predictor(&self) -> Predictor {
        Predictor::Calibration
    }
    fn reads_gradients(&self) -> bool {
        false
    }
    /// The attack matches every layer of the group.
    fn needs_full_gradient(&self, _layer: &LayerKind) -> bool {
        true
    }
    fn validate(&self) -> Result<()> {
        if self.iterations == 0 {
            anyhow::bail!("family '{}': the attack needs at least 1 iteration", self.method);
        }
        Ok(())
    }
    fn source<'a>(&self, setup: &Setup<'a>) -> Result<Box<dyn FeatureSource + 'a>> {
        let behind = setup.behind(self.name())?;
        let (method, iterations) = (self.method, self.iterations);
        Ok(Box::new(MatchingFeatures::new(behind.model, setup.updates, method, iterations, setup.seed, setup.progress)))
    }
}

/// The registry entry of the family of attack `method`.
pub(super) fn entry(method: Method) -> Entry {
    Entry {
        name: method.name(),
        usage: format!("{method}[:ITERATIONS]"),
        parse: Box::new(move |setting| {
            let example = format!("{method}:500");
            let iterations = parse_count(
                setting,
                DEFAULT_MATCHING_ITERATIONS,
                (1, crate::limits::MAX_ATTACK_ITERATIONS),
                "iterations",
                &example,
            )?;
            Ok(Family::new(Matching { method, iterations }))
        }),
    }
}

impl FeatureSource for MatchingFeatures<'_> {
    fn features(&mut self, group: &LayerGroup, _: &GroupFeatures, target: &NamedTarget) -> Result<Option<Features>> {
        Ok(MatchingFeatures::features(self, &group.name, &group.members, &target.name)?.map(Features::reconstruction))
    }

    /// How close each attacked group's reconstructions come to the victims' images, by group name.
    fn image_scores(&self) -> Result<Vec<ReconstructionScore>> {
        let mut out = Vec::new();
        for (group, m) in &self.by_group {
            if let Some(m) = m {
                out.extend(score_images(self.model, &self.updates.victim_input, group, &m.inputs)?);
            }
        }
        Ok(out)
    }

    /// What the attacker did and could not do, for the report's notes.
    fn notes(&self) -> Vec<String> {
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

    /// The family's features for `target` from the stored layers `members` named `group`; None where the attack
    /// cannot run or the target is not measured from pixels.
    pub fn features(&mut self, group: &str, members: &[usize], target: &TargetName) -> Result<Option<Tensor>> {
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
            TargetName::Input => Ok(Some(m.inputs.flatten(1, -1).to_kind(Kind::Float))),
            TargetName::Label => {
                let classes = self.model.spec.num_classes;
                Ok(Some(Tensor::from_slice(&m.labels).clamp(0, classes - 1).one_hot(classes).to_kind(Kind::Float)))
            }
            TargetName::Attribute(name) => attribute_on(self.model, &m.inputs, name),
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
            .map(|shared| AttackedUpdate::new(self.model, shared, 1, None, &self.config))
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
