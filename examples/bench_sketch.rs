//! Benchmark: the sparse sketch of per-sample gradients, as gradleak computes it (a loop over the rows that reads
//! each coordinate's 8 buckets once for 8 rows) against the libtorch formulation of versions up to 0.6 (one
//! `index_add_` along the columns per block of buckets), in the same process on the same rows. The shapes are
//! LeNet-5's fc1 on 28x28 inputs (94,200 parameters) sketched to 4,096 dimensions, 256 rows per call.
//!
//! Run: `cargo run --release --example bench_sketch [-- --threads 2] [--reps 5]`

mod common;
use common::{arg, median};

use std::time::Instant;

use gradleak::gradients::sketch::{Sketch, SketchKind, SPARSE_NONZEROS};
use rand::SeedableRng;
use tch::{Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let threads: i32 = arg("--threads").and_then(|v| v.parse().ok()).unwrap_or(2);
    let reps: usize = arg("--reps").and_then(|v| v.parse().ok()).unwrap_or(5);
    tch::set_num_threads(threads);
    let (n, p, k) = (256i64, 94_200i64, 4096i64);
    let sketch = Sketch::new(SketchKind::Sparse, p, k, rand_chacha::ChaCha8Rng::seed_from_u64(1))?;
    tch::manual_seed(0);
    let g = Tensor::randn([n, p], (Kind::Float, tch::Device::Cpu));
    // The same kind of map for the libtorch side: in each block one bucket and one sign per coordinate.
    let s = SPARSE_NONZEROS;
    let block = k / s;
    let blocks: Vec<(Tensor, Tensor)> = (0..s)
        .map(|b| {
            let buckets = Tensor::randint_low(b * block, (b + 1) * block, [p], (Kind::Int64, tch::Device::Cpu));
            let signs = (Tensor::randint(2, [p], (Kind::Float, tch::Device::Cpu)) * 2.0 - 1.0) / (s as f64).sqrt();
            (buckets, signs)
        })
        .collect();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let started = Instant::now();
        let _ = sketch.apply(&g);
        ours.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        let mut out = Tensor::zeros([n, k], (Kind::Float, tch::Device::Cpu));
        for (buckets, signs) in &blocks {
            let _ = out.index_add_(1, buckets, &(&g * signs));
        }
        theirs.push(started.elapsed().as_secs_f64());
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!("sparse sketch of {n} x {p} to {k} ({s} nonzeros per coordinate), {threads} threads, median of {reps}");
    println!("gradleak loop:        {ours:.3} s ({:.0} rows/s)", n as f64 / ours);
    println!("libtorch index_add_:  {theirs:.3} s ({:.0} rows/s)", n as f64 / theirs);
    println!("speed-up: {:.1}x", theirs / ours);
    Ok(())
}
