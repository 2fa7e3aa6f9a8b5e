//! Latent-attribute sensitivity per layer: how far apart the gradients of samples with (group 1) and without
//! (group 0) a binary attribute are.
//!
//! Two complementary numbers per layer, computed on the layer's stored features (the full gradient when it is
//! stored, otherwise its sketch; the report says which):
//!
//! - **Subspace distance**: the top-k principal subspaces U_0, U_1 (d x k, orthonormal) of each group's *centred*
//!   gradients, and the normalised projection distance sqrt(1 - ||U_0^T U_1||_F^2 / k) in [0, 1]: 0 when the two
//!   groups vary along the same k directions, 1 when their directions are orthogonal. The singular values of
//!   U_0^T U_1 are the cosines of the principal angles, which are reported too. Centring makes this a statement
//!   about the shape of the two gradient clouds; where they sit is the next number's job.
//! - **Spread ratio**: ||m_1 - m_0||^2 / ((tr S_0 + tr S_1) / 2), the squared distance between the group means
//!   over the average within-group total variance (tr S_g: the trace of group g's covariance, with n_g - 1 in the
//!   denominator). It is scale-free. If the attribute made no difference to the mean, its expected value would be
//!   `spread_ratio_null` = (tr S_0 / n_0 + tr S_1 / n_1) / ((tr S_0 + tr S_1) / 2), about 1/n_0 + 1/n_1: read
//!   the ratio against that floor.
//!
//! Even two groups from one distribution have a subspace distance above 0 at finite sizes (their principal
//! directions are estimated with noise), so a null reference is reported: the mean distance after randomly
//! relabelling the updates with the same group sizes (`subspace_distance_null`). Read the distance against it.
//!
//! Intervals: percentile bootstrap, resampling within each group (seeded). Resampling duplicates rows, which
//! makes principal subspaces noisier, so the distance's interval sits somewhat above the point estimate.
//!
//! Computation: when the feature dimension d exceeds the number of updates N, the rows are first mapped to N
//! coordinates that keep every inner product (from the eigendecomposition of the N x N Gram matrix, built in f64
//! in column blocks), so wide layers cost O(N^2 d) once and then O(N^3) per resample.

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use super::Estimate;
use crate::gradients::store::GradientStore;
use crate::gradients::updates::SharedUpdates;
use crate::progress::Progress;
use crate::rng::{self, Stream};
use crate::stats::percentile_interval;

/// Settings of a latent sensitivity measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentConfig {
    /// Dimension of the principal subspaces compared.
    pub k: usize,
    /// Bootstrap resamples (within groups) for the intervals.
    pub bootstrap: usize,
    /// Random relabellings (group sizes kept) for the subspace distance's null reference.
    pub permutations: usize,
    pub seed: u64,
}

impl Default for LatentConfig {
    fn default() -> Self {
        LatentConfig { k: 5, bootstrap: 200, permutations: 20, seed: 0 }
    }
}

impl LatentConfig {
    /// Every count at least 1: no resamples would give a zero-width interval, no relabellings a NaN null. And at
    /// most its limit (`limits::MAX_SENSITIVITY_BOOTSTRAP`, `limits::MAX_PERMUTATIONS`): each is an SVD per group
    /// and layer.
    pub fn validate(&self) -> Result<()> {
        for (param, value) in [("k", self.k), ("bootstrap", self.bootstrap), ("permutations", self.permutations)] {
            if value < 1 {
                crate::param_bail!(param, "must be at least 1, got {value}");
            }
        }
        crate::limits::check_count("bootstrap", self.bootstrap, crate::limits::MAX_SENSITIVITY_BOOTSTRAP)?;
        crate::limits::check_count("permutations", self.permutations, crate::limits::MAX_PERMUTATIONS)
    }
}

/// The two measures on one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentLayer {
    pub name: String,
    /// `full` (the whole gradient) or `sketch` (its random projection).
    pub features: String,
    /// Feature dimension d.
    pub dim: i64,
    /// Updates without (n_0) and with (n_1) the attribute.
    pub group_sizes: [i64; 2],
    /// sqrt(1 - ||U_0^T U_1||_F^2 / k), in [0, 1].
    pub subspace_distance: Estimate,
    /// Mean subspace distance after randomly relabelling the updates (group sizes kept): what the distance is
    /// when the attribute makes no difference, at these group sizes. NaN with no permutations.
    pub subspace_distance_null: f64,
    /// Principal angles between the two subspaces, in degrees, smallest first.
    pub principal_angles_degrees: Vec<f64>,
    /// ||m_1 - m_0||^2 over the average within-group total variance.
    pub spread_ratio: Estimate,
    /// The spread ratio's expected value if the group means were equal.
    pub spread_ratio_null: f64,
}

/// Latent sensitivity of every measured layer to one attribute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentReport {
    pub attribute: String,
    pub updates: i64,
    pub k: usize,
    pub bootstrap: usize,
    pub seed: u64,
    pub layers: Vec<LatentLayer>,
}

impl LatentReport {
    /// A column (`subspace_distance` or `spread_ratio`) keyed by layer, e.g. for [`super::rank_agreement`].
    pub fn column(&self, name: &str) -> Result<Vec<(String, f64)>> {
        self.layers
            .iter()
            .map(|l| {
                let v = match name {
                    "subspace_distance" => l.subspace_distance.value,
                    "spread_ratio" => l.spread_ratio.value,
                    other => bail!("unknown latent column '{other}'; expected subspace_distance or spread_ratio"),
                };
                Ok((l.name.clone(), v))
            })
            .collect()
    }
}

/// The measures on one pair of groups (rows in common coordinates, f64).
struct PairMeasure {
    distance: f64,
    angles_degrees: Vec<f64>,
    ratio: f64,
    ratio_null: f64,
}

/// Orthonormal basis (r x k) of the top-k principal directions of the centred rows `c` (n x r).
fn principal_subspace(c: &Tensor, k: i64) -> Result<Tensor> {
    let (n, r) = (c.size()[0], c.size()[1]);
    if r <= n {
        // Eigenvectors of the r x r scatter matrix, largest eigenvalues last.
        let (_, vectors) = eigh(&c.transpose(0, 1).matmul(c))?;
        Ok(vectors.narrow(1, r - k, k))
    } else {
        // Through the n x n Gram matrix: u = C^T v / ||C^T v||.
        let (_, vectors) = eigh(&c.matmul(&c.transpose(0, 1)))?;
        let u = c.transpose(0, 1).matmul(&vectors.narrow(1, n - k, k));
        let norms = u.square().sum_dim_intlist([0i64].as_slice(), true, Kind::Double).sqrt().clamp_min(1e-300);
        Ok(u / norms)
    }
}

/// Eigenvalues (ascending) and eigenvectors of a symmetric matrix.
fn eigh(m: &Tensor) -> Result<(Tensor, Tensor)> {
    m.f_linalg_eigh("L").map_err(|e| anyhow::anyhow!("symmetric eigendecomposition failed: {e}"))
}

fn measure_pair(z0: &Tensor, z1: &Tensor, k: i64) -> Result<PairMeasure> {
    let stats = |z: &Tensor| {
        let mean = z.mean_dim([0i64].as_slice(), true, Kind::Double);
        let centred = z - &mean;
        let n = z.size()[0] as f64;
        let total_variance = centred.square().sum(Kind::Double).double_value(&[]) / (n - 1.0);
        (mean, centred, total_variance, n)
    };
    let (m0, c0, tv0, n0) = stats(z0);
    let (m1, c1, tv1, n1) = stats(z1);
    let within = (tv0 + tv1) / 2.0;
    let between = (m1 - m0).square().sum(Kind::Double).double_value(&[]);
    let (ratio, ratio_null) =
        if within > 0.0 { (between / within, (tv0 / n0 + tv1 / n1) / within) } else { (f64::NAN, f64::NAN) };
    let u0 = principal_subspace(&c0, k)?;
    let u1 = principal_subspace(&c1, k)?;
    let m = u0.transpose(0, 1).matmul(&u1);
    let overlap = m.square().sum(Kind::Double).double_value(&[]) / k as f64;
    let distance = (1.0 - overlap).max(0.0).sqrt();
    // Cosines of the principal angles: singular values of M = square roots of the eigenvalues of M^T M.
    let (eig, _) = eigh(&m.transpose(0, 1).matmul(&m))?;
    let mut angles_degrees: Vec<f64> =
        Vec::<f64>::try_from(eig.clamp(0.0, 1.0).sqrt().acos() * (180.0 / std::f64::consts::PI)).unwrap_or_default();
    angles_degrees.sort_by(|a, b| a.total_cmp(b));
    Ok(PairMeasure { distance, angles_degrees, ratio, ratio_null })
}

/// Rows in coordinates that keep all inner products, f64, with at most min(N, d) columns.
fn embed(features: &Tensor) -> Result<Tensor> {
    let (n, d) = (features.size()[0], features.size()[1]);
    if d <= n {
        return Ok(features.to_kind(Kind::Double));
    }
    // Gram matrix in f64, a block of columns at a time so a wide f32 layer is never copied whole to f64.
    let block = ((1i64 << 24) / n.max(1)).max(1);
    let mut gram = Tensor::zeros([n, n], (Kind::Double, features.device()));
    for start in (0..d).step_by(block as usize) {
        let part = features.narrow(1, start, block.min(d - start)).to_kind(Kind::Double);
        gram += part.matmul(&part.transpose(0, 1));
    }
    let (values, vectors) = eigh(&gram)?;
    Ok(vectors * values.clamp_min(0.0).sqrt().unsqueeze(0))
}

/// Latent sensitivity of one feature matrix `features` (N, d) to a binary `attribute` (N,) of 0/1 values.
pub fn latent_sensitivity_layer(
    name: &str,
    features: &Tensor,
    features_kind: &str,
    attribute: &Tensor,
    config: &LatentConfig,
) -> Result<LatentLayer> {
    if features.dim() != 2 {
        bail!("layer {name}: features must be a matrix (N, d), got shape {:?}", features.size());
    }
    let (n, d) = (features.size()[0], features.size()[1]);
    if attribute.size() != [n] {
        bail!("layer {name}: {n} updates need {n} attribute values, got shape {:?}", attribute.size());
    }
    let values: Vec<i64> = Vec::<i64>::try_from(attribute.to_kind(Kind::Int64))?;
    if let Some(v) = values.iter().find(|v| **v != 0 && **v != 1) {
        bail!("the attribute must be binary (0 or 1), found the value {v}");
    }
    let group1: Vec<i64> = (0..n).filter(|&i| values[i as usize] == 1).collect();
    let group0: Vec<i64> = (0..n).filter(|&i| values[i as usize] == 0).collect();
    let sizes = [group0.len() as i64, group1.len() as i64];
    for (g, &size) in sizes.iter().enumerate() {
        if size == 0 {
            bail!(
                "the attribute is {} for all {n} updates, so group {g} (attribute = {g}) is empty and there is \
                 nothing to compare",
                1 - g
            );
        }
    }
    let k = config.k as i64;
    if k < 1 {
        crate::param_bail!("k", "must be at least 1, got {k}");
    }
    let smallest = sizes[0].min(sizes[1]);
    if k >= smallest {
        crate::param_bail!(
            "k",
            "{k} is too large: the smaller group has {smallest} updates (group sizes {} and {}), and the top-k \
             principal directions of n centred updates need n > k",
            sizes[0],
            sizes[1]
        );
    }
    if k > d {
        crate::param_bail!("k", "{k} is larger than layer {name}'s feature dimension {d}");
    }
    if !bool::try_from(features.isfinite().all())? {
        bail!("layer {name}: the features contain NaN or infinite values");
    }
    let z = embed(features)?;
    let (i0, i1) = (Tensor::from_slice(&group0), Tensor::from_slice(&group1));
    let (z0, z1) = (z.index_select(0, &i0), z.index_select(0, &i1));
    let point = measure_pair(&z0, &z1, k)?;
    let mut rng = rng::rng(config.seed, Stream::LatentResamples);
    let (mut distances, mut ratios) = (Vec::new(), Vec::new());
    for _ in 0..config.bootstrap {
        let mut resample = |size: i64| {
            let idx: Vec<i64> = (0..size).map(|_| rng.random_range(0..size)).collect();
            Tensor::from_slice(&idx)
        };
        let (r0, r1) = (resample(sizes[0]), resample(sizes[1]));
        let m = measure_pair(&z0.index_select(0, &r0), &z1.index_select(0, &r1), k)?;
        distances.push(m.distance);
        ratios.push(m.ratio);
    }
    // Null reference: the same updates, randomly relabelled with the same group sizes.
    let mut null = Vec::with_capacity(config.permutations);
    let mut all: Vec<i64> = (0..n).collect();
    for _ in 0..config.permutations {
        all.shuffle(&mut rng);
        let (a, b) = all.split_at(sizes[0] as usize);
        let m =
            measure_pair(&z.index_select(0, &Tensor::from_slice(a)), &z.index_select(0, &Tensor::from_slice(b)), k)?;
        null.push(m.distance);
    }
    let subspace_distance_null = if null.is_empty() { f64::NAN } else { null.iter().sum::<f64>() / null.len() as f64 };
    let ci = |draws: Vec<f64>, p: f64| if config.bootstrap == 0 { [p, p] } else { percentile_interval(draws) };
    Ok(LatentLayer {
        name: name.to_string(),
        features: features_kind.to_string(),
        dim: d,
        group_sizes: sizes,
        subspace_distance: Estimate { value: point.distance, ci: ci(distances, point.distance), estimator_se: None },
        subspace_distance_null,
        principal_angles_degrees: point.angles_degrees,
        spread_ratio: Estimate { value: point.ratio, ci: ci(ratios, point.ratio), estimator_se: None },
        spread_ratio_null: point.ratio_null,
    })
}

/// Latent sensitivity of the stored layers of `updates` (all, or those named in `layers`) to attribute column
/// `column` (named `attribute`) of the victims.
pub fn latent_sensitivity(
    updates: &SharedUpdates,
    column: usize,
    attribute: &str,
    layers: Option<&[String]>,
    config: &LatentConfig,
    progress: Progress,
) -> Result<LatentReport> {
    config.validate()?;
    let columns = updates.victim_attributes.size().get(1).copied().unwrap_or(0);
    if column as i64 >= columns {
        bail!("attribute column {column} does not exist: the updates carry {columns} attributes");
    }
    let chosen: Vec<&crate::gradients::updates::LayerUpdates> = match layers {
        None => updates.layers.iter().collect(),
        Some(names) => names
            .iter()
            .map(|name| {
                updates.layers.iter().find(|l| &l.name == name).with_context(|| {
                    let held: Vec<_> = updates.layers.iter().map(|l| l.name.as_str()).collect();
                    format!("no layer '{name}' among the stored updates; they hold: {}", held.join(", "))
                })
            })
            .collect::<Result<_>>()?,
    };
    let values = updates.victim_attributes.select(1, column as i64);
    let bar = progress.bar(chosen.len() as u64, "latent sensitivity");
    let mut out = Vec::new();
    for layer in &chosen {
        let kind = layer.features_kind();
        // Resamples keyed by the layer's name: the same layer gets the same resamples whatever else is measured.
        let layer_seed = rng::derive(config.seed, Stream::LatentBootstrap { layer: &layer.name });
        let layer_config = LatentConfig { seed: layer_seed, ..config.clone() };
        out.push(
            latent_sensitivity_layer(&layer.name, layer.features(), kind, &values, &layer_config)
                .with_context(|| format!("attribute '{attribute}', layer {}", layer.name))?,
        );
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(LatentReport {
        attribute: attribute.to_string(),
        updates: updates.num_updates(),
        k: config.k,
        bootstrap: config.bootstrap,
        seed: config.seed,
        layers: out,
    })
}

/// [`latent_sensitivity`] on a gradient store, the attribute given by name.
pub fn latent_sensitivity_of_store(
    store: &GradientStore,
    attribute: &str,
    layers: Option<&[String]>,
    config: &LatentConfig,
    progress: Progress,
) -> Result<LatentReport> {
    let column = store.manifest.attributes.iter().position(|a| a.name == attribute).with_context(|| {
        let names: Vec<_> = store.manifest.attributes.iter().map(|a| a.name.as_str()).collect();
        format!(
            "{}: the store has no attribute '{attribute}'; its attributes are: {}",
            store.dir.display(),
            if names.is_empty() { "none".to_string() } else { names.join(", ") }
        )
    })?;
    if let Some(names) = layers {
        for name in names {
            store.layer(name)?;
        }
    }
    latent_sensitivity(&store.updates, column, attribute, layers, config, progress)
}
