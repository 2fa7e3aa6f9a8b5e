//! The MLP families: a ReLU network on standardised features, trained with Adam on minibatches and stopped early
//! on the validation part. For class targets it outputs logits (softmax likelihood); for continuous targets it
//! outputs the Gaussian mean (trained on standardised targets with the squared error), shrunk per dimension
//! towards the null model's mean by a factor fitted on validation, with the variances of ridge regression
//! ([`super::model::conditional_variance`]); the constant predictor wins when the network does not beat it on
//! validation.

use anyhow::{anyhow, bail, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::model::{
    conditional_variance, null_mean, shrinkage_towards_mean, ClassPrior, ClassValidation, ConditionalModel, FeatureMap,
    FeatureTransform, GaussianValidation, Part, Prediction, TargetRange,
};
use crate::rng::{self, Stream};

/// The widest hidden layer of an MLP: wider layers add nothing on the few thousand victims an estimate fits on,
/// and a typo (`mlp:100000000`) would exhaust memory.
pub const MAX_HIDDEN: i64 = 1 << 16;

/// An MLP predictor: its hidden sizes and training settings ([`super::Predictor::Mlp`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpOptions {
    /// Hidden layer sizes.
    pub hidden: Vec<i64>,
    /// Adam learning rate.
    pub learning_rate: f64,
    /// Decoupled weight decay (AdamW); 0 disables it.
    pub weight_decay: f64,
    pub batch_size: i64,
    pub max_epochs: usize,
    /// Stop after this many epochs without a better validation loss; the best epoch's weights are kept.
    pub patience: usize,
}

impl Default for MlpOptions {
    fn default() -> Self {
        MlpOptions {
            hidden: super::DEFAULT_HIDDEN.to_vec(),
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            batch_size: 128,
            max_epochs: 200,
            patience: 10,
        }
    }
}

impl MlpOptions {
    pub fn validate(&self) -> Result<()> {
        let max = MAX_HIDDEN;
        if self.hidden.is_empty() || self.hidden.iter().any(|&h| !(1..=max).contains(&h)) {
            bail!("MLP hidden sizes must be in [1, {max}], got {:?}", self.hidden);
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            bail!("the MLP learning rate must be positive, got {}", self.learning_rate);
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bail!("the MLP weight decay must be >= 0, got {}", self.weight_decay);
        }
        if self.batch_size < 1 || self.max_epochs < 1 || self.patience < 1 {
            bail!("the MLP batch size, epochs and patience must be >= 1");
        }
        crate::limits::check_count("epochs", self.max_epochs, crate::limits::MAX_EPOCHS)?;
        Ok(())
    }
}

/// What the network predicts.
#[derive(Debug)]
enum Task {
    Classes(i64),
    /// Gaussian mean; the variance floor (K,).
    Gaussian(Tensor),
}

/// An MLP predictive family (see the module documentation).
#[derive(Debug)]
pub struct Mlp {
    task: Task,
    opts: MlpOptions,
    seed: u64,
    fitted: Option<MlpFit>,
}

#[derive(Debug)]
struct MlpFit {
    _vs: nn::VarStore,
    net: nn::Sequential,
    transform: FeatureTransform,
    /// Target mean and scale (continuous targets).
    y_mean: Tensor,
    y_scale: Tensor,
    var: Option<Tensor>,
    /// Continuous targets: the null model's mean and each dimension's shrinkage towards it.
    mean: Tensor,
    shrink: Option<Tensor>,
    /// Continuous targets: predictions are clipped to the fitting targets' range before the shrinkage.
    range: TargetRange,
    /// Class targets, when the constant predictor was chosen: the class prior's log-probabilities (C,).
    prior: Option<Tensor>,
    /// The constant predictor was chosen.
    constant: bool,
    best_epoch: usize,
    epochs: usize,
    best_val_bits: f64,
}

impl Mlp {
    /// The network from `inputs` features to `outputs` values, its weights drawn from the seed. Its size is
    /// counted before any weight is allocated: wide inputs times wide hidden layers can exceed memory.
    fn network(&self, inputs: i64, outputs: i64) -> Result<(nn::VarStore, nn::Sequential)> {
        let widths: Vec<i64> =
            std::iter::once(inputs).chain(self.opts.hidden.iter().copied()).chain([outputs]).collect();
        let params =
            widths.windows(2).try_fold(0i64, |acc, w| acc.checked_add(w[0].checked_mul(w[1])?)?.checked_add(w[1]));
        crate::limits::check_params("the MLP family's network", params)?;
        let vs = nn::VarStore::new(Device::Cpu);
        let mut net = nn::seq();
        for (i, w) in widths.windows(2).enumerate() {
            let name = if i + 2 == widths.len() { "out".to_string() } else { format!("hidden{i}") };
            net = net.add(nn::linear(vs.root() / name, w[0], w[1], Default::default()));
            if i + 2 < widths.len() {
                net = net.add_fn(|t| t.relu());
            }
        }
        init_weights(&vs, self.seed);
        Ok((vs, net))
    }

    /// An MLP classifier over `classes` classes.
    pub fn classifier(classes: i64, opts: &MlpOptions, seed: u64) -> Self {
        Mlp { task: Task::Classes(classes), opts: opts.clone(), seed, fitted: None }
    }

    /// An MLP Gaussian decoder; `floor`: (K,) smallest variance per target dimension.
    pub fn gaussian(floor: &Tensor, opts: &MlpOptions, seed: u64) -> Self {
        Mlp { task: Task::Gaussian(floor.shallow_clone()), opts: opts.clone(), seed, fitted: None }
    }

    fn outputs(&self, y: &Tensor) -> i64 {
        match self.task {
            Task::Classes(c) => c,
            Task::Gaussian(_) => y.size()[1],
        }
    }
}

fn forward_f64(net: &nn::Sequential, x: &Tensor) -> Tensor {
    tch::no_grad(|| net.forward(&x.to_kind(Kind::Float))).to_kind(Kind::Double)
}

impl ConditionalModel for Mlp {
    fn fit(&mut self, train: Part<'_>, val: Part<'_>) -> Result<()> {
        self.opts.validate()?;
        let transform = FeatureTransform::fit(FeatureMap::Both, train.x);
        let x = transform.apply(train.x).to_kind(Kind::Float);
        let xv = transform.apply(val.x);
        let (y_mean, y_scale) = match self.task {
            Task::Classes(_) => {
                (Tensor::zeros([1], (Kind::Double, Device::Cpu)), Tensor::ones([1], (Kind::Double, Device::Cpu)))
            }
            Task::Gaussian(_) => {
                let m = train.y.mean_dim(0, false, Kind::Double);
                let s = train.y.std_dim(0, false, false);
                // Relative to the values' magnitude (as `Standardiser` does), so that a target of 1e-150 is scaled
                // like one of 1.
                let tiny = m.abs() * 1e-12 + 1e-300;
                let s = s.where_self(&s.gt_tensor(&tiny), &s.ones_like());
                (m, s)
            }
        };
        let y = match self.task {
            Task::Classes(_) => train.y.shallow_clone(),
            Task::Gaussian(_) => ((train.y - &y_mean) / &y_scale).to_kind(Kind::Float),
        };
        let (vs, net) = self.network(x.size()[1], self.outputs(train.y))?;
        let mut opt =
            nn::AdamW { wd: self.opts.weight_decay, ..Default::default() }.build(&vs, self.opts.learning_rate)?;
        // Continuous targets: each dimension's prediction is shrunk towards the null mean by a factor fitted on
        // validation (a pixel the network cannot predict falls back to the mean).
        let mean = null_mean(train.y, val.y);
        let range = TargetRange::fit(train.y, val.y);
        // Also the squared distance clipped away, shrunk alike (`TargetRange`).
        let calibrated = |net: &nn::Sequential| -> (Tensor, Tensor, Tensor) {
            let raw = forward_f64(net, &xv) * &y_scale + &y_mean;
            let pred = range.clip(&raw);
            let shrink = shrinkage_towards_mean(val.y, &pred, &mean);
            let excess = range.excess(&raw) * shrink.square();
            (&mean + (pred - &mean) * &shrink, shrink, excess)
        };
        let (validation, class_validation) = match &self.task {
            Task::Gaussian(floor) => (Some(GaussianValidation::new(train, val, floor)), None),
            Task::Classes(c) => (None, Some(ClassValidation::new(train, val, *c))),
        };
        // Validation loss in nats: the log-loss of the classes, or minus the validation PVI of the values (their
        // null model's log-loss is the same for every epoch, so it only shifts the loss).
        let val_loss = |net: &nn::Sequential| -> f64 {
            match &self.task {
                Task::Classes(_) => {
                    let classes = class_validation.as_ref().expect("class targets have a validation scorer");
                    classes.loss(&forward_f64(net, &xv).log_softmax(1, Kind::Double))
                }
                Task::Gaussian(_) => {
                    let validation = validation.as_ref().expect("continuous targets have a validation scorer");
                    let (pred, _, excess) = calibrated(net);
                    -validation.score(&pred, &excess).0 * std::f64::consts::LN_2
                }
            }
        };
        let n = x.size()[0] as usize;
        let mut order: Vec<i64> = (0..n as i64).collect();
        let mut rng = rng::rng(self.seed, Stream::MlpOrder);
        let mut best = (val_loss(&net), 0usize, snapshot(&vs));
        let mut epochs = 0;
        for epoch in 1..=self.opts.max_epochs {
            epochs = epoch;
            order.shuffle(&mut rng);
            for batch in order.chunks(self.opts.batch_size as usize) {
                let idx = Tensor::from_slice(batch);
                let out = net.forward(&x.index_select(0, &idx));
                let target = y.index_select(0, &idx);
                let loss = match self.task {
                    Task::Classes(_) => out.cross_entropy_for_logits(&target),
                    Task::Gaussian(_) => out.mse_loss(&target, tch::Reduction::Mean),
                };
                opt.backward_step(&loss);
            }
            let loss = val_loss(&net);
            if !loss.is_finite() {
                break;
            }
            if loss < best.0 {
                best = (loss, epoch, snapshot(&vs));
            } else if epoch - best.1 >= self.opts.patience {
                break;
            }
        }
        restore(&vs, &best.2);
        if !best.0.is_finite() {
            bail!("MLP training failed: the validation loss is not finite");
        }
        let (var, shrink, prior, constant) = match &self.task {
            // The family holds the constant predictor (the class prior): take it when the network does not beat it
            // on validation (scored with the training part's prior, as the network is), so that features without
            // usable information give exactly 0 bits instead of the network's distance from the prior.
            Task::Classes(c) => {
                let classes = class_validation.as_ref().expect("class targets have a validation scorer");
                let constant = classes.constant_loss() <= best.0;
                let prior = constant.then(|| ClassPrior::fit(&[train.y, val.y], *c).log_p);
                (None, None, prior, constant)
            }
            Task::Gaussian(floor) => {
                let (pred, mut shrink, _) = calibrated(&net);
                // The family holds the constant predictor (the null model's mean): take it when the network does
                // not beat it on validation, so that features without usable information give exactly 0 bits.
                let constant_pred = val.y.zeros_like() + &mean;
                let constant = best.0 >= 0.0;
                let residual = if constant {
                    shrink = shrink.zeros_like();
                    val.y - constant_pred
                } else {
                    val.y - pred
                };
                (Some(conditional_variance(&residual, train.y, val.y, floor)), Some(shrink), None, constant)
            }
        };
        self.fitted = Some(MlpFit {
            _vs: vs,
            net,
            transform,
            y_mean,
            y_scale,
            var,
            mean,
            shrink,
            range,
            prior,
            constant,
            best_epoch: best.1,
            epochs,
            best_val_bits: best.0 / std::f64::consts::LN_2,
        });
        Ok(())
    }

    fn constant(&self) -> bool {
        self.fitted.as_ref().is_some_and(|f| f.constant)
    }

    fn predict(&self, x: &Tensor) -> Result<Prediction> {
        let f = self.fitted.as_ref().ok_or_else(|| anyhow!("MLP used before fit"))?;
        if let Some(log_p) = &f.prior {
            return Ok(Prediction::categorical(&log_p.unsqueeze(0).expand([x.size()[0], log_p.size()[0]], false)));
        }
        let out = forward_f64(&f.net, &f.transform.apply(x));
        Ok(match &f.var {
            None => Prediction::categorical(&out.log_softmax(1, Kind::Double)),
            Some(var) => {
                let pred = out * &f.y_scale + &f.y_mean;
                let shrink = f.shrink.as_ref().ok_or_else(|| anyhow!("MLP: missing shrinkage"))?;
                let clipped = f.range.clip(&pred);
                let var = f.range.excess(&pred) * shrink.square() + var;
                Prediction::Gaussian { mean: &f.mean + (clipped - &f.mean) * shrink, var }
            }
        })
    }

    fn summary(&self) -> serde_json::Value {
        match &self.fitted {
            None => serde_json::json!({}),
            Some(f) => serde_json::json!({
                "hidden": self.opts.hidden,
                "best_epoch": f.best_epoch,
                "epochs": f.epochs,
                // Classes: the validation log-loss; values: the validation PVI (higher is better).
                "validation_bits": if f.var.is_some() { -f.best_val_bits } else { f.best_val_bits },
                "constant": f.constant,
            }),
        }
    }
}

/// Initialises every layer as PyTorch does by default (uniform in +-1/sqrt(fan_in) for weights and biases), but
/// from a ChaCha stream seeded with `seed`, so a fit does not depend on libtorch's global generator (which other
/// threads may be drawing from).
fn init_weights(vs: &nn::VarStore, seed: u64) {
    let mut rng = rng::rng(seed, Stream::MlpInit);
    let vars = vs.variables();
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let t = &vars[name];
        let layer = name.rsplit_once('.').map_or(name.as_str(), |(l, _)| l);
        let fan_in = vars.get(&format!("{layer}.weight")).map_or(1, |w| w.size()[1]);
        let bound = 1.0 / (fan_in as f64).sqrt();
        let values: Vec<f32> = (0..t.numel()).map(|_| rng.random_range(-bound..bound) as f32).collect();
        tch::no_grad(|| t.shallow_clone().copy_(&Tensor::from_slice(&values).view(t.size().as_slice())));
    }
}

fn snapshot(vs: &nn::VarStore) -> Vec<Tensor> {
    vs.trainable_variables().iter().map(|t| t.detach().copy()).collect()
}

fn restore(vs: &nn::VarStore, saved: &[Tensor]) {
    tch::no_grad(|| {
        for (mut v, s) in vs.trainable_variables().into_iter().zip(saved) {
            v.copy_(s);
        }
    });
}
