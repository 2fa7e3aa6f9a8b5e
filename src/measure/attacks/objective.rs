//! The gradient of a dummy batch and its distance to the shared gradient, differentiable with respect to the dummy
//! input and labels (double backward).

use tch::{Kind, Tensor};

use crate::models::{flat_gradient, Forward, Model};

/// Labels of the dummy batch: fixed classes, or free logits whose softmax is the (soft) target.
pub enum DummyLabels<'a> {
    Hard(&'a Tensor),
    Soft(&'a Tensor),
}

impl DummyLabels<'_> {
    /// The sum over the batch of each sample's loss alone: the loss whose per-sample gradients a batch of
    /// single-sample attacks matches (for a batch of one, the loss of [`layer_gradients`]).
    pub fn summed_loss(&self, logits: &Tensor) -> Tensor {
        match self {
            DummyLabels::Hard(y) => crate::gradients::per_sample::summed_loss(logits, y),
            DummyLabels::Soft(z) => soft_losses(z, logits).sum(logits.kind()),
        }
    }
}

/// Each sample's loss against soft labels `z` (N,): `sum_k -softmax(z_n)_k log softmax(logits_n)_k`.
fn soft_losses(z: &Tensor, logits: &Tensor) -> Tensor {
    let target = z.softmax(-1, z.kind());
    let log_probs = logits.log_softmax(-1, logits.kind());
    (-(target * log_probs)).sum_dim_intlist([1i64].as_slice(), false, logits.kind())
}

/// Gradients of the batch's mean cross-entropy for the layers `layers` (indices into `model.layers()`), each a flat
/// vector (weight in row-major order, then bias), as [`crate::gradients::batch_gradients`] lays them out. With soft
/// labels the loss is `mean_n sum_k -softmax(z_n)_k log softmax(logits_n)_k`, the DLG code's
/// `cross_entropy_for_onehot`; with hard labels it is [`Model::loss`]. The graph is kept (`create_graph`), so the
/// result can be differentiated again. Evaluation mode: no dropout.
pub fn layer_gradients(model: &Model, x: &Tensor, labels: &DummyLabels, layers: &[usize]) -> Vec<Tensor> {
    let logits = model.forward(x, &mut Forward::eval());
    let loss = match labels {
        DummyLabels::Hard(y) => Model::loss(&logits, y),
        DummyLabels::Soft(z) => soft_losses(z, &logits).mean(logits.kind()),
    };
    let all = model.layers();
    let params: Vec<&Tensor> = layers.iter().flat_map(|&l| all[l].tensors()).collect();
    let grads = Tensor::run_backward(&[&loss], &params, true, true);
    let mut start = 0;
    layers
        .iter()
        .map(|&l| {
            let end = start + all[l].params.len();
            let flat = flat_gradient(&grads[start..end]);
            start = end;
            flat
        })
        .collect()
}

/// The matched layers, their shared gradients (targets) and weights.
pub struct Matcher<'a> {
    pub model: &'a Model,
    pub layers: Vec<usize>,
    pub targets: Vec<Tensor>,
    pub weights: Vec<f64>,
}

impl Matcher<'_> {
    pub fn gradients(&self, x: &Tensor, labels: &DummyLabels) -> Vec<Tensor> {
        layer_gradients(self.model, x, labels, &self.layers)
    }

    /// DLG's distance: `sum_l w_l ||g_l - t_l||^2`.
    pub fn squared_l2(&self, grads: &[Tensor]) -> Tensor {
        let kind = grads[0].kind();
        let terms: Vec<Tensor> = self.weighted(grads).map(|(g, t, w)| (g - t).square().sum(kind) * w).collect();
        Tensor::stack(&terms, 0).sum(kind)
    }

    /// Inverting Gradients' distance: `1 - <g, t>_w / (|g|_w |t|_w)` over the concatenated, weighted layers.
    pub fn cosine(&self, grads: &[Tensor]) -> Tensor {
        let kind = grads[0].kind();
        let sum = |terms: Vec<Tensor>| Tensor::stack(&terms, 0).sum(kind);
        let inner = sum(self.weighted(grads).map(|(g, t, w)| (g * t).sum(kind) * w).collect());
        let g_norm = sum(self.weighted(grads).map(|(g, _, w)| g.square().sum(kind) * w).collect());
        let t_norm = sum(self.weighted(grads).map(|(_, t, w)| t.square().sum(kind) * w).collect());
        cosine_distance(&inner, &g_norm, &t_norm)
    }

    /// (gradient, target, weight) of every layer with a non-zero weight.
    fn weighted<'b>(&'b self, grads: &'b [Tensor]) -> impl Iterator<Item = (&'b Tensor, &'b Tensor, f64)> + 'b {
        grads.iter().zip(&self.targets).zip(&self.weights).filter(|(_, w)| **w != 0.0).map(|((g, t), w)| (g, t, *w))
    }
}

/// `1 - inner / (sqrt(g_norm) sqrt(t_norm))` from an inner product and two squared norms (of any shape, element by
/// element): Inverting Gradients' distance. A tiny floor keeps the quotient finite for an all-zero gradient.
pub fn cosine_distance(inner: &Tensor, g_norm: &Tensor, t_norm: &Tensor) -> Tensor {
    (inner / ((g_norm.sqrt() * t_norm.sqrt()) + 1e-30)).neg() + 1.0
}

/// Anisotropic total variation as in Inverting Gradients: mean |horizontal difference| + mean |vertical difference|.
pub fn total_variation(x: &Tensor) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    let kind = x.kind();
    let mut terms = vec![Tensor::zeros([], (kind, tch::Device::Cpu))];
    if w > 1 {
        terms.push((x.narrow(3, 0, w - 1) - x.narrow(3, 1, w - 1)).abs().mean(kind));
    }
    if h > 1 {
        terms.push((x.narrow(2, 0, h - 1) - x.narrow(2, 1, h - 1)).abs().mean(kind));
    }
    Tensor::stack(&terms, 0).sum(kind)
}

/// A tensor of `shape` and `kind` holding `values`.
pub fn tensor(values: &[f64], shape: &[i64], kind: Kind) -> Tensor {
    Tensor::from_slice(values).reshape(shape).to_kind(kind)
}

/// A tensor's values as `f64`.
pub fn to_vec(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.detach().to_kind(Kind::Double).contiguous().flatten(0, -1)).unwrap_or_default()
}
