//! Seeded random projections (Johnson-Lindenstrauss sketches) of large layers' gradients.
//!
//! A layer with millions of weights cannot be stored for thousands of updates, so layers above a size k are also
//! stored as `S g`, a k-dimensional linear projection with a fixed, seeded S. Every predictor that reads the sketch
//! `S g` is also a predictor that reads `g` (compose it with S), so usable information measured on a sketch is a
//! lower bound on the usable information of the full gradient for the family closed under that composition (e.g.
//! linear models, MLPs). Norms and inner products are preserved in expectation (E ||S g||^2 = ||g||^2).
//!
//! Two kinds:
//! - `gaussian`: S has i.i.d. N(0, 1/k) entries; stored densely, so only for P x k up to 2^26 entries.
//! - `sparse` (default): the block construction of a sparse JL transform (Kane and Nelson, 2014): each input
//!   coordinate goes to s = 8 buckets, one in each of s blocks of the k outputs, with random signs, scaled by
//!   1/sqrt(s). Memory O(P s), time O(N P s), any layer size.

use anyhow::Result;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use tch::Tensor;

crate::keyword_enum! {
    /// The kind of random projection.
    pub enum SketchKind("sketch kind") {
        /// Dense i.i.d. N(0, 1/k) entries.
        Gaussian = "gaussian",
        /// A sparse JL transform (Kane and Nelson, 2014).
        Sparse = "sparse",
    }
}

/// Largest dense Gaussian projection matrix, in entries (256 MiB of f32).
pub const MAX_GAUSSIAN_ENTRIES: i64 = 1 << 26;
/// Nonzeros per input coordinate of the sparse sketch.
pub const SPARSE_NONZEROS: i64 = 8;

/// A fixed projection from `input_dim` to `dim` dimensions.
#[derive(Debug)]
pub struct Sketch {
    pub kind: SketchKind,
    pub input_dim: i64,
    pub dim: i64,
    projection: Projection,
}

#[derive(Debug)]
enum Projection {
    /// (P, k) matrix.
    Dense(Tensor),
    /// For each of s blocks: the output bucket (P,) and the signed weight (P,) of every input coordinate.
    Sparse(Vec<(Tensor, Tensor)>),
}

impl Sketch {
    /// A projection drawn from `rng`; the updates draw it from the layer's [`Stream::Sketch`], so sketches of one
    /// layer are comparable across checkpoints, batch sizes and defences.
    ///
    /// [`Stream::Sketch`]: crate::rng::Stream::Sketch
    pub fn new(kind: SketchKind, input_dim: i64, dim: i64, mut rng: ChaCha8Rng) -> Result<Sketch> {
        if dim < 1 {
            crate::param_bail!("sketch_dim", "must be at least 1, got {dim}");
        }
        let projection = match kind {
            SketchKind::Gaussian => {
                if input_dim * dim > MAX_GAUSSIAN_ENTRIES {
                    crate::param_bail!(
                        "sketch_kind",
                        "gaussian of a {input_dim}-parameter layer to {dim} dimensions needs {} entries (limit \
                         {MAX_GAUSSIAN_ENTRIES}); use sparse",
                        input_dim * dim
                    );
                }
                Projection::Dense(
                    crate::rng::gaussian(&mut rng, input_dim * dim, 1.0 / (dim as f64).sqrt())
                        .reshape([input_dim, dim]),
                )
            }
            SketchKind::Sparse => {
                let s = SPARSE_NONZEROS.min(dim);
                let block = dim / s;
                let scale = 1.0 / (s as f32).sqrt();
                let blocks = (0..s)
                    .map(|b| {
                        // The last block takes the remainder of dim / s.
                        let (start, len) = (b * block, if b == s - 1 { dim - b * block } else { block });
                        let buckets: Vec<i64> = (0..input_dim).map(|_| start + rng.random_range(0..len)).collect();
                        let signs: Vec<f32> =
                            (0..input_dim).map(|_| if rng.random::<bool>() { scale } else { -scale }).collect();
                        (Tensor::from_slice(&buckets), Tensor::from_slice(&signs))
                    })
                    .collect();
                Projection::Sparse(blocks)
            }
        };
        Ok(Sketch { kind, input_dim, dim, projection })
    }

    /// Projects rows: (N, P) -> (N, k), in the input's precision.
    pub fn apply(&self, g: &Tensor) -> Tensor {
        assert_eq!(g.size()[1], self.input_dim, "sketch input width");
        match &self.projection {
            Projection::Dense(m) => g.matmul(&m.to_kind(g.kind())),
            Projection::Sparse(blocks) => {
                let mut out = Tensor::zeros([g.size()[0], self.dim], (g.kind(), g.device()));
                for (buckets, signs) in blocks {
                    let _ = out.index_add_(1, buckets, &(g * signs.to_kind(g.kind())));
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use tch::Kind;

    fn seeded(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn check_preserves_geometry(kind: SketchKind) {
        let p = 5000;
        let k = 512;
        let sketch = Sketch::new(kind, p, k, seeded(7)).unwrap();
        tch::manual_seed(1);
        let x = Tensor::randn([64, p], (Kind::Double, tch::Device::Cpu));
        let sx = sketch.apply(&x);
        // Squared norms: each ratio has relative standard deviation about sqrt(2/k) = 0.0625; the mean of 64
        // ratios about 0.008. Allow 4 standard deviations.
        let ratio = sx.square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
            / x.square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
        let mean = ratio.mean(Kind::Double).double_value(&[]);
        assert!((mean - 1.0).abs() < 4.0 * 0.0625 / 8.0, "{kind:?}: mean norm ratio {mean}");
        let worst = (ratio - 1.0).abs().max().double_value(&[]);
        assert!(worst < 0.35, "{kind:?}: worst norm ratio error {worst}");
        // Linear: S(a x + y) = a S x + S y.
        let (a, b) = (x.get(0), x.get(1));
        let lhs = sketch.apply(&(&a * 3.0 + &b).unsqueeze(0));
        let rhs = sketch.apply(&a.unsqueeze(0)) * 3.0 + sketch.apply(&b.unsqueeze(0));
        assert!(lhs.allclose(&rhs, 1e-9, 1e-9, false), "{kind:?} is linear");
        // Same seed, same projection; another seed, another.
        let again = Sketch::new(kind, p, k, seeded(7)).unwrap().apply(&x);
        assert!(again.equal(&sx));
        let other = Sketch::new(kind, p, k, seeded(8)).unwrap().apply(&x);
        assert!(!other.allclose(&sx, 1e-3, 1e-3, false));
    }

    #[test]
    fn gaussian_sketch_preserves_norms_and_is_linear_and_seeded() {
        check_preserves_geometry(SketchKind::Gaussian);
    }

    #[test]
    fn sparse_sketch_preserves_norms_and_is_linear_and_seeded() {
        check_preserves_geometry(SketchKind::Sparse);
    }

    #[test]
    fn oversized_gaussian_sketch_is_refused_with_advice() {
        let err = Sketch::new(SketchKind::Gaussian, 2_359_296, 4096, seeded(0)).unwrap_err().to_string();
        assert!(err.contains("sketch_kind gaussian") && err.contains("use sparse"), "{err}");
    }
}
