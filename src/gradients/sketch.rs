//! Seeded random projections (Johnson-Lindenstrauss sketches) of large layers' gradients.
//!
//! A layer with millions of weights cannot be stored for thousands of updates, so layers above a size k are also
//! stored as `S g`, a k-dimensional linear projection with a fixed, seeded S. Every predictor that reads the sketch
//! `S g` is also a predictor that reads `g` (compose it with S), so usable information measured on a sketch is a
//! lower bound on the usable information of the full gradient for the family closed under that composition (e.g.
//! linear models, MLPs). Norms and inner products are preserved in expectation (E ||S g||^2 = ||g||^2).
//!
//! Three kinds:
//! - `gaussian`: S has i.i.d. N(0, 1/k) entries; stored densely, so only for P x k up to 2^26 entries.
//! - `sparse` (default): the block construction of a sparse JL transform (Kane and Nelson, 2014): each input
//!   coordinate goes to s = 8 buckets, one in each of s blocks of the k outputs, with random signs, scaled by
//!   1/sqrt(s). Memory O(P s), time O(N P s), any layer size.
//! - `kron`: a Kronecker-structured projection S = S_out ⊗ S_in of a layer's gradient seen as a matrix G (outputs x
//!   inputs, the bias as the column of a constant input 1): the sketch is vec(S_out G S_in^T), with Gaussian
//!   S_out (k_out x O, entries N(0, 1/k_out)) and S_in (k_in x I, N(0, 1/k_in)), k = k_out k_in. A per-sample
//!   gradient of a linear layer is the outer product δ a^T and a convolution's a sum of them over output
//!   positions, so its sketch is (S_out δ)(S_in a)^T summed over positions: computed from the layer's input and
//!   output gradient ([`Sketch::apply_factors`]) without forming the gradient, at about the cost of the layer's own
//!   backward pass (LoGra, Choe et al. 2024). It is still a fixed linear map of the gradient, so the lower-bound
//!   argument above holds unchanged; its norms are preserved in expectation with a larger variance than a dense
//!   Gaussian's. Layers without a matrix shape (group norm, modules of loaded models) take the sparse sketch.

use anyhow::Result;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use tch::{Kind, Tensor};

use crate::gradients::per_sample::LayerFactors;

crate::keyword_enum! {
    /// The kind of random projection.
    pub enum SketchKind("sketch kind") {
        /// Dense i.i.d. N(0, 1/k) entries.
        Gaussian = "gaussian",
        /// A sparse JL transform (Kane and Nelson, 2014).
        Sparse = "sparse",
        /// A Kronecker product of Gaussian projections of a layer's outputs and inputs (LoGra).
        Kron = "kron",
    }
}

/// The matrix view of a layer's gradient that the Kronecker sketch projects: O rows (outputs) by the layer's
/// inputs plus one column for the bias. A convolution's inputs are its receptive field, (C / groups) k k values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MatrixShape {
    Linear { in_features: i64, out_features: i64 },
    Conv(KronConv),
}

/// A 2-D convolution with square kernels, as the Kronecker sketch sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KronConv {
    pub in_channels: i64,
    pub out_channels: i64,
    pub kernel: i64,
    pub stride: i64,
    pub padding: i64,
    pub dilation: i64,
    pub groups: i64,
}

impl MatrixShape {
    /// The shape of a model layer's gradient, when it has one (linear and convolution layers with a bias).
    pub fn of_layer(kind: &crate::models::LayerKind) -> Option<MatrixShape> {
        use crate::models::LayerKind;
        match *kind {
            LayerKind::Linear { in_features, out_features } => Some(MatrixShape::Linear { in_features, out_features }),
            LayerKind::Conv2d(g) => Some(MatrixShape::Conv(KronConv {
                in_channels: g.in_channels,
                out_channels: g.out_channels,
                kernel: g.kernel,
                stride: g.stride,
                padding: g.padding,
                dilation: 1,
                groups: 1,
            })),
            LayerKind::GroupNorm { .. } | LayerKind::Module => None,
        }
    }

    /// (rows, columns) of the matrix view, the bias column included.
    pub fn matrix(&self) -> (i64, i64) {
        match *self {
            MatrixShape::Linear { in_features, out_features } => (out_features, in_features + 1),
            MatrixShape::Conv(c) => (c.out_channels, c.in_channels / c.groups * c.kernel * c.kernel + 1),
        }
    }

    /// The number of gradient entries: weight and bias.
    pub fn num_params(&self) -> i64 {
        let (rows, cols) = self.matrix();
        rows * cols
    }
}

/// How the Kronecker sketch splits k = k_out k_in: k_out is the largest divisor of k that is at most the number of
/// outputs and at most sqrt(k), so neither factor maps into more dimensions than it reads when it can be avoided.
pub fn kron_split(dim: i64, outputs: i64) -> (i64, i64) {
    let limit = outputs.min((dim as f64).sqrt().floor() as i64).max(1);
    let k_out = (1..=limit).rev().find(|d| dim % d == 0).unwrap_or(1);
    (k_out, dim / k_out)
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
    /// Every input coordinate's s output buckets (one in each of s blocks of outputs) and signed weights.
    Sparse(SparseMap),
    /// S_out (k_out, O) and S_in (k_in, I + 1) of a layer of this shape.
    Kron { shape: MatrixShape, out: Tensor, inp: Tensor },
}

/// Rows the sparse sketch carries through one pass over its map.
const ROWS_PER_PASS: usize = 8;

/// The sparse sketch's map: for input coordinate `i`, its `per_coordinate` buckets and signed weights are at
/// `i * per_coordinate ..`, one per block of outputs.
#[derive(Debug)]
struct SparseMap {
    per_coordinate: usize,
    buckets: Vec<u32>,
    signs: Vec<f32>,
}

/// Element types the sparse sketch runs on.
trait SketchFloat:
    tch::kind::Element + Copy + Default + Send + Sync + std::ops::Mul<Output = Self> + std::ops::AddAssign
{
    fn of(weight: f32) -> Self;
}

impl SketchFloat for f32 {
    fn of(weight: f32) -> Self {
        weight
    }
}

impl SketchFloat for f64 {
    fn of(weight: f32) -> Self {
        weight as f64
    }
}

impl SparseMap {
    /// (N, P) -> (N, k), row by row on libtorch's thread count.
    ///
    /// A plain loop rather than libtorch's `index_add_` along columns, which walked the batch with a stride of a
    /// whole row per coordinate and was the sketch's whole cost. Each bucket still sums its coordinates' signed
    /// values in increasing coordinate order from zero, as `index_add_` did, so the sketches are the same to the
    /// bit (a test compares them).
    fn apply<T: SketchFloat>(&self, g: &Tensor, dim: i64) -> Tensor {
        let (n, p, k) = (g.size()[0] as usize, g.size()[1] as usize, dim as usize);
        let mut rows = vec![T::default(); n * p];
        g.contiguous().copy_data(&mut rows, n * p);
        let mut out = vec![T::default(); n * k];
        let workers = (tch::get_num_threads().max(1) as usize).min(n).max(1);
        let per_worker = n.div_ceil(workers).max(1);
        std::thread::scope(|scope| {
            for (inputs, outputs) in rows.chunks(per_worker * p).zip(out.chunks_mut(per_worker * k)) {
                scope.spawn(move || {
                    // The interleaved rows and sketches of one pass, reused by every pass of this worker.
                    let (mut xs, mut acc) =
                        (vec![T::default(); p * ROWS_PER_PASS], vec![T::default(); k * ROWS_PER_PASS]);
                    for (rows, sketches) in inputs.chunks(ROWS_PER_PASS * p).zip(outputs.chunks_mut(ROWS_PER_PASS * k))
                    {
                        self.sketch_rows(rows, sketches, &mut xs, &mut acc);
                    }
                });
            }
        });
        Tensor::from_slice(&out).reshape([n as i64, dim])
    }

    /// Sketches up to [`ROWS_PER_PASS`] rows (P values each) into their sketches (k each) in one pass over the
    /// map, which is read once for all of them (8 buckets and weights per coordinate: megabytes for a large
    /// layer). The rows are interleaved into `xs` (P x R), so that each bucket update is one short vector
    /// operation across them, and summed into `acc` (k x R); rows past the last leave stale values in `xs`, whose
    /// sketches are not read.
    fn sketch_rows<T: SketchFloat>(&self, rows: &[T], sketches: &mut [T], xs: &mut [T], acc: &mut [T]) {
        const R: usize = ROWS_PER_PASS;
        let s = self.per_coordinate;
        let (p, k) = (xs.len() / R, acc.len() / R);
        for (r, row) in rows.chunks_exact(p).enumerate() {
            for (i, &x) in row.iter().enumerate() {
                xs[i * R + r] = x;
            }
        }
        acc.fill(T::default());
        let coordinates = xs.chunks_exact(R).zip(self.buckets.chunks_exact(s).zip(self.signs.chunks_exact(s)));
        for (x, (buckets, signs)) in coordinates {
            let x: &[T; R] = x.try_into().expect("R values");
            for (&b, &w) in buckets.iter().zip(signs) {
                let w = T::of(w);
                let start = b as usize * R;
                let out: &mut [T; R] = (&mut acc[start..start + R]).try_into().expect("R values");
                for q in 0..R {
                    out[q] += x[q] * w;
                }
            }
        }
        for (r, sketch) in sketches.chunks_exact_mut(k).enumerate() {
            for (b, value) in sketch.iter_mut().enumerate() {
                *value = acc[b * R + r];
            }
        }
    }
}

impl Sketch {
    /// A projection drawn from `rng`; the updates draw it from the layer's [`Stream::Sketch`], so sketches of one
    /// layer are comparable across checkpoints, batch sizes and defences.
    ///
    /// [`Stream::Sketch`]: crate::rng::Stream::Sketch
    ///
    /// A `kron` sketch needs the layer's matrix shape: use [`Sketch::for_layer`].
    pub fn new(kind: SketchKind, input_dim: i64, dim: i64, rng: ChaCha8Rng) -> Result<Sketch> {
        Sketch::for_layer(kind, None, input_dim, dim, rng)
    }

    /// A projection of a layer's gradient of `input_dim` entries. `kron` needs the layer's `shape`; a layer without
    /// one gets the sparse sketch (its `kind` says which it got).
    pub fn for_layer(
        kind: SketchKind,
        shape: Option<MatrixShape>,
        input_dim: i64,
        dim: i64,
        mut rng: ChaCha8Rng,
    ) -> Result<Sketch> {
        if dim < 1 {
            crate::param_bail!("sketch_dim", "must be at least 1, got {dim}");
        }
        let kind = match (kind, shape) {
            (SketchKind::Kron, None) => SketchKind::Sparse,
            (kind, _) => kind,
        };
        let projection = match kind {
            SketchKind::Kron => {
                let shape = shape.expect("a kron sketch has a matrix shape");
                assert_eq!(shape.num_params(), input_dim, "the matrix shape covers the layer's gradient");
                let (rows, cols) = shape.matrix();
                let (k_out, k_in) = kron_split(dim, rows);
                let out =
                    crate::rng::gaussian(&mut rng, k_out * rows, 1.0 / (k_out as f64).sqrt()).reshape([k_out, rows]);
                let inp = crate::rng::gaussian(&mut rng, k_in * cols, 1.0 / (k_in as f64).sqrt()).reshape([k_in, cols]);
                Projection::Kron { shape, out, inp }
            }
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
                let p = input_dim as usize;
                let (mut buckets, mut signs) = (vec![0u32; p * s as usize], vec![0f32; p * s as usize]);
                // Drawn block by block, each block's buckets then its signs, as the sketches of earlier versions.
                for b in 0..s {
                    // The last block takes the remainder of dim / s.
                    let (start, len) = (b * block, if b == s - 1 { dim - b * block } else { block });
                    for i in 0..p {
                        buckets[i * s as usize + b as usize] = (start + rng.random_range(0..len)) as u32;
                    }
                    for i in 0..p {
                        signs[i * s as usize + b as usize] = if rng.random::<bool>() { scale } else { -scale };
                    }
                }
                Projection::Sparse(SparseMap { per_coordinate: s as usize, buckets, signs })
            }
        };
        Ok(Sketch { kind, input_dim, dim, projection })
    }

    /// Projects rows: (N, P) -> (N, k), in the input's precision.
    pub fn apply(&self, g: &Tensor) -> Tensor {
        assert_eq!(g.size()[1], self.input_dim, "sketch input width");
        match &self.projection {
            Projection::Dense(m) => g.matmul(&m.to_kind(g.kind())),
            Projection::Sparse(map) => match g.kind() {
                Kind::Double => map.apply::<f64>(g, self.dim),
                _ => map.apply::<f32>(&g.to_kind(Kind::Float), self.dim).to_kind(g.kind()),
            },
            Projection::Kron { shape, out, inp } => {
                // Rows of the matrix view: each output's weights, then its bias.
                let (rows, cols) = shape.matrix();
                let n = g.size()[0];
                let weight = g.narrow(1, 0, rows * (cols - 1)).reshape([n, rows, cols - 1]);
                let bias = g.narrow(1, rows * (cols - 1), rows).reshape([n, rows, 1]);
                let matrix = Tensor::cat(&[weight, bias], 2);
                let (out, inp) = (out.to_kind(g.kind()), inp.to_kind(g.kind()));
                out.matmul(&matrix).matmul(&inp.tr()).reshape([n, self.dim])
            }
        }
    }

    /// Whether this sketch is cheaper computed from a layer's factors ([`Sketch::apply_factors`]) than from its
    /// per-sample gradients ([`Sketch::apply`]); the two agree to rounding. Only a `kron` sketch reads factors. A
    /// linear layer's factors are always cheaper. A convolution's input projection is a convolution with k_in
    /// filters where the grad sampler's costs as one with O: with k_in > O (a layer of few outputs sketched to
    /// nearly its size, such as ResNet-20's 32-channel layers at k = 4,096: k_in = 128) forming the gradient and
    /// projecting it is cheaper (`examples/bench_per_sample.rs`).
    pub fn reads_factors(&self) -> bool {
        match &self.projection {
            Projection::Kron { shape: MatrixShape::Conv(c), inp, .. } => inp.size()[0] <= c.out_channels / c.groups,
            Projection::Kron { .. } => true,
            _ => false,
        }
    }

    /// The sketch of each sample's gradient of the layer that `factors` describe, the cheaper way: from the factors
    /// where [`Sketch::reads_factors`], otherwise from the per-sample gradients, `gradients` when the caller has
    /// already formed them (for a layer also stored in full).
    pub fn apply_to(&self, factors: &LayerFactors, gradients: Option<&Tensor>) -> Tensor {
        match gradients {
            _ if self.reads_factors() => self.apply_factors(&factors.input, &factors.output_grad),
            Some(g) => self.apply(g),
            None => self.apply(&factors.gradients()),
        }
    }

    /// The sketch of each sample's gradient from the layer's input `a` and the gradient `delta` at its output (what
    /// a per-sample grad sampler combines), without forming the gradients. Only for `kron` sketches.
    ///
    /// Linear: `a` (N, I), `delta` (N, O). Convolution: `a` (N, C, H, W), `delta` (N, O, H', W').
    pub fn apply_factors(&self, a: &Tensor, delta: &Tensor) -> Tensor {
        let Projection::Kron { shape, out, inp } = &self.projection else {
            panic!("apply_factors needs a kron sketch, this one is {:?}", self.kind);
        };
        let kind = a.kind();
        let (out, inp) = (out.to_kind(kind), inp.to_kind(kind));
        let (_, cols) = shape.matrix();
        let n = a.size()[0];
        let k_out = out.size()[0];
        let k_in = inp.size()[0];
        let (inp_w, inp_b) = (inp.narrow(1, 0, cols - 1), inp.select(1, cols - 1));
        let sketch = match *shape {
            MatrixShape::Linear { .. } => {
                let projected_in = a.matmul(&inp_w.tr()) + &inp_b; // (N, k_in)
                let projected_out = delta.matmul(&out.tr()); // (N, k_out)
                projected_out.unsqueeze(2) * projected_in.unsqueeze(1)
            }
            MatrixShape::Conv(c) => {
                // S_in applied to every receptive field (the bias input is 1 everywhere) is a convolution with
                // k_in filters; with groups, the same filters per group.
                let g = c.groups;
                let per_group = c.in_channels / g;
                let filters = inp_w.reshape([k_in, per_group, c.kernel, c.kernel]).repeat([g, 1, 1, 1]);
                let projected_in =
                    a.conv2d(&filters, Some(&inp_b.repeat([g])), [c.stride; 2], [c.padding; 2], [c.dilation; 2], g); // (N, g k_in, H', W')
                let positions = projected_in.size()[2] * projected_in.size()[3];
                let projected_in = projected_in.reshape([n, g, k_in, positions]);
                // S_out restricted to each group's outputs, applied to that group's output gradient.
                let out_per_group = out.reshape([k_out, g, c.out_channels / g]).permute([1, 0, 2]);
                let delta = delta.reshape([n, g, c.out_channels / g, positions]);
                let projected_out = out_per_group.matmul(&delta); // (N, g, k_out, L)
                projected_out.matmul(&projected_in.transpose(2, 3)).sum_dim_intlist([1i64].as_slice(), false, kind)
            }
        };
        sketch.reshape([n, self.dim])
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
    fn kron_sketch_preserves_norms_on_average_and_is_linear_and_seeded() {
        // A linear layer 99 -> 50 (5,000 entries with the bias) to k = 512 = 16 x 32. For rows of i.i.d. entries
        // the norm ratio is about (|S_out|_F^2 / O) (|S_in|_F^2 / I), whose factors have relative standard
        // deviations sqrt(2 / (16 * 50)) = 0.05 and sqrt(2 / (32 * 100)) = 0.025: allow 4 of their combined 0.056.
        let shape = MatrixShape::Linear { in_features: 99, out_features: 50 };
        let sketch = Sketch::for_layer(SketchKind::Kron, Some(shape), 5000, 512, seeded(7)).unwrap();
        assert_eq!(kron_split(512, 50), (16, 32));
        tch::manual_seed(2);
        let x = Tensor::randn([64, 5000], (Kind::Double, tch::Device::Cpu));
        let sx = sketch.apply(&x);
        assert_eq!(sx.size(), [64, 512]);
        let ratio = sx.square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double)
            / x.square().sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
        let mean = ratio.mean(Kind::Double).double_value(&[]);
        assert!((mean - 1.0).abs() < 4.0 * 0.056, "mean norm ratio {mean}");
        let (a, b) = (x.get(0), x.get(1));
        let lhs = sketch.apply(&(&a * 3.0 + &b).unsqueeze(0));
        let rhs = sketch.apply(&a.unsqueeze(0)) * 3.0 + sketch.apply(&b.unsqueeze(0));
        assert!(lhs.allclose(&rhs, 1e-9, 1e-9, false), "kron is linear");
        let again = Sketch::for_layer(SketchKind::Kron, Some(shape), 5000, 512, seeded(7)).unwrap().apply(&x);
        assert!(again.equal(&sx));
        // Without a matrix shape, kron falls back to the sparse sketch.
        assert_eq!(Sketch::for_layer(SketchKind::Kron, None, 5000, 512, seeded(7)).unwrap().kind, SketchKind::Sparse);
    }

    /// The sparse sketch's loop gives, to the bit, what libtorch's `index_add_` along columns gave (the
    /// implementation up to 0.6, here rebuilt from the same draws), in both precisions and whatever the number of
    /// rows per worker.
    #[test]
    fn sparse_sketch_is_index_add_to_the_bit() {
        let (p, k) = (3001, 512);
        let sketch = Sketch::new(SketchKind::Sparse, p, k, seeded(11)).unwrap();
        let Projection::Sparse(map) = &sketch.projection else { panic!("a sparse map") };
        let s = map.per_coordinate;
        assert_eq!(s as i64, SPARSE_NONZEROS);
        for kind in [Kind::Float, Kind::Double] {
            tch::manual_seed(3);
            for n in [1, 5, 64] {
                let g = Tensor::randn([n, p], (kind, tch::Device::Cpu));
                let mut reference = Tensor::zeros([n, k], (kind, tch::Device::Cpu));
                for b in 0..s {
                    let buckets: Vec<i64> = (0..p as usize).map(|i| map.buckets[i * s + b] as i64).collect();
                    let signs: Vec<f32> = (0..p as usize).map(|i| map.signs[i * s + b]).collect();
                    let signs = Tensor::from_slice(&signs).to_kind(kind);
                    let _ = reference.index_add_(1, &Tensor::from_slice(&buckets), &(&g * signs));
                }
                assert!(sketch.apply(&g).equal(&reference), "{kind:?}, {n} rows");
            }
        }
        // Block b of the outputs takes bucket b of every coordinate.
        let block = k / s as i64;
        assert!(map.buckets.chunks(s).all(|c| c.iter().enumerate().all(|(b, &x)| x as i64 / block == b as i64)));
    }

    #[test]
    fn oversized_gaussian_sketch_is_refused_with_advice() {
        let err = Sketch::new(SketchKind::Gaussian, 2_359_296, 4096, seeded(0)).unwrap_err().to_string();
        assert!(err.contains("sketch_kind gaussian") && err.contains("use sparse"), "{err}");
    }
}
