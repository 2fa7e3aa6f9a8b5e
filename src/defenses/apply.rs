//! Applying defences to gradients: each defence once, on rows of per-sample (or per-update) gradients.
//!
//! Layers are lists of (N, P_l) tensors. Clipping, noise and pruning keep the autograd graph, so the same code
//! builds the shared update ([`aggregate`], one batch into one update) and the function whose input Jacobian the
//! sensitivity analysis takes ([`single_sample_updates`], every sample its own update of batch size one).
//! Quantisation is piecewise constant and is applied to updates only.

use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use super::{DefensePlan, PostDefense};
use crate::rng;

/// Norms below this are treated as this when clipping, so the square root has a finite derivative.
const TINY_SQUARED_NORM: f64 = 1e-300;

/// The norm of each sample's gradient over all `layers` together, (N,) in f64; differentiable, also at zero.
fn sample_norms(layers: &[Tensor]) -> Tensor {
    let n = layers[0].size()[0];
    layers
        .iter()
        .map(|g| {
            let squared = g.to_kind(Kind::Double).square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
            squared.clamp_min(TINY_SQUARED_NORM).sqrt().square()
        })
        .fold(Tensor::zeros([n], (Kind::Double, tch::Device::Cpu)), |acc, s| acc + s)
        .sqrt()
}

/// DP-SGD's clipping: each sample's gradient, over all layers together, scaled to norm at most `clip`.
pub fn clip_rows(layers: &[Tensor], clip: f64) -> Vec<Tensor> {
    let scale = (clip / (sample_norms(layers) + 1e-12)).clamp_max(1.0).to_kind(layers[0].kind()).unsqueeze(1);
    layers.iter().map(|g| g * &scale).collect()
}

/// (N, p) Gaussian noise of standard deviation `std` in `kind`: row n from `rngs[n]`.
fn noise_rows(rngs: &mut [ChaCha8Rng], p: i64, std: f64, kind: Kind) -> Tensor {
    let rows: Vec<Tensor> = rngs.iter_mut().map(|rng| rng::gaussian(rng, p, std)).collect();
    Tensor::stack(&rows, 0).to_kind(kind)
}

/// Zeroes, in each row, the `fraction` of entries with the smallest magnitude (ties broken by position). The mask
/// is computed from the values, so the kept entries keep their graph.
fn prune_rows(g: &Tensor, fraction: f64) -> Tensor {
    let p = g.size()[1];
    let k = ((fraction * p as f64).round() as i64).clamp(0, p);
    if k == 0 {
        return g.shallow_clone();
    }
    let (_, smallest) = g.detach().abs().topk(k, 1, false, true);
    g.scatter_value(1, &smallest, 0.0)
}

/// Symmetric uniform quantisation of each row to `bits` bits: levels -L..=L with L = 2^(bits-1) - 1 (L = 1 for one
/// bit: sign and zero), scaled by the row's largest magnitude. Not differentiable.
fn quantize_rows(g: &Tensor, bits: u32) -> Tensor {
    let levels = ((1i64 << (bits - 1)) - 1).max(1) as f64;
    let rows: Vec<Tensor> = (0..g.size()[0])
        .map(|i| {
            let row = g.get(i);
            let scale = row.abs().max().double_value(&[]);
            if scale == 0.0 {
                row
            } else {
                (row * (levels / scale)).round() * (scale / levels)
            }
        })
        .collect();
    Tensor::stack(&rows, 0)
}

/// Scaled signSGD on each row of one layer: every entry's sign times the row's mean magnitude, which keeps the
/// row's L1 norm (Karimireddy et al. 2019, "Error Feedback Fixes SignSGD").
fn sign_rows(g: &Tensor) -> Tensor {
    let scale = g.abs().mean_dim([1i64].as_slice(), true, g.kind());
    g.sign() * scale
}

/// Applies one defence that acts on updates (`noise`, `prune`, `quantize`, `sign`) to each row of one layer; row n draws
/// its noise from `rngs[n]`.
fn apply_post_rows(defense: &PostDefense, g: &Tensor, rngs: &mut [ChaCha8Rng]) -> Tensor {
    match defense {
        PostDefense::Noise { std } => g + noise_rows(rngs, g.size()[1], *std, g.kind()),
        PostDefense::Prune { fraction } => prune_rows(g, *fraction),
        PostDefense::Quantize { bits } => quantize_rows(g, *bits),
        PostDefense::Sign => sign_rows(g),
    }
}

/// Aggregates the per-sample gradients of one batch (each (B, P_l), shared layers only) into the shared update,
/// applying DP-SGD when planned, then the post-aggregation defences. Returns one flat vector per layer.
pub fn aggregate(per_sample: &[Tensor], plan: &DefensePlan, rng: &mut ChaCha8Rng) -> Vec<Tensor> {
    let batch = per_sample[0].size()[0];
    let update: Vec<Tensor> = match plan.dp {
        None => per_sample.iter().map(|g| g.mean_dim([0i64].as_slice(), false, g.kind())).collect(),
        Some((clip, sigma)) => clip_rows(per_sample, clip)
            .iter()
            .map(|g| {
                let summed = g.sum_dim_intlist([0i64].as_slice(), false, g.kind());
                let noise = rng::gaussian(rng, summed.numel() as i64, sigma * clip).to_kind(g.kind());
                (summed + noise) / batch as f64
            })
            .collect(),
    };
    if plan.post.is_empty() {
        return update;
    }
    let mut rows: Vec<Tensor> = update.iter().map(|g| g.unsqueeze(0)).collect();
    for d in &plan.post {
        rows = rows.iter().map(|g| apply_post_rows(d, g, std::slice::from_mut(rng))).collect();
    }
    rows.iter().map(|g| g.squeeze_dim(0)).collect()
}

/// The shared update of every sample as its own batch of one: each row of `per_sample` (one (N, P_l) tensor per
/// shared layer) clipped and noised as DP-SGD would, then the post-aggregation defences, row n drawing its noise
/// from `rngs[n]`. Keeps the graph: the defences that are not differentiable ([`Defense::under_differentiation`])
/// are left out.
pub fn single_sample_updates(per_sample: Vec<Tensor>, plan: &DefensePlan, rngs: &mut [ChaCha8Rng]) -> Vec<Tensor> {
    let mut g = per_sample;
    if let Some((clip, sigma)) = plan.dp {
        g = clip_rows(&g, clip);
        if sigma > 0.0 {
            g = g.iter().map(|t| t + noise_rows(rngs, t.size()[1], sigma * clip, t.kind())).collect();
        }
    }
    for d in &plan.post {
        if matches!(d.defense().under_differentiation(), super::UnderDifferentiation::Applied(_)) {
            g = g.iter().map(|t| apply_post_rows(d, t, rngs)).collect();
        }
    }
    g
}

/// Zeroes the `fraction` of entries with the smallest magnitude of a flat update (ties broken by position).
pub fn prune(g: &Tensor, fraction: f64) -> Tensor {
    prune_rows(&g.unsqueeze(0), fraction).squeeze_dim(0)
}

/// Scaled sign of a flat update (see [`sign_rows`]).
pub fn sign(g: &Tensor) -> Tensor {
    sign_rows(&g.unsqueeze(0)).squeeze_dim(0)
}

/// Symmetric uniform quantisation of a flat update to `bits` bits (see [`quantize_rows`]).
pub fn quantize(g: &Tensor, bits: u32) -> Tensor {
    quantize_rows(&g.unsqueeze(0), bits).squeeze_dim(0)
}
