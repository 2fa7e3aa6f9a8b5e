//! Benchmark: per-sample gradients of every layer, as samples per second and as a multiple of one batched
//! forward+backward pass of the same samples in batches of the same size. Inputs are random: the cost does not
//! depend on pixel values. `scripts/bench_per_sample_pytorch.py` measures the same models in Opacus and torch.func.
//!
//! Methods (layers above `K` = 4,096 parameters are the sketched ones; smaller layers are kept in full by every
//! sketched method, as a store keeps them):
//! - `batched`: one ordinary forward+backward pass of the batch (the baseline);
//! - `full`: every layer's per-sample gradient, materialised (the grad samplers);
//! - `sparse`: per-sample gradients, materialised, then the sparse JL sketch of each large layer;
//! - `kron`: the Kronecker sketch of each large layer from its input and output gradient, no per-sample gradient
//!   of a large layer formed;
//! - with 2 threads, `kron, 2 workers x 1 thread`: the same split over two threads with one libtorch thread each
//!   (a data-parallel split of the batches against libtorch's intra-op threads).
//!
//! Run: `cargo run --release --example bench_per_sample -- THREADS [MODELS] [--reps R] [--default-malloc]` (MODELS: comma-separated of lenet5,
//! resnet20, resnet18; default all). Prints one JSON object per line.

mod common;

use std::time::Instant;

use common::{arg, median};

use gradleak::data::InputShape;
use gradleak::gradients::per_sample::per_sample_factors;
use gradleak::gradients::sketch::{MatrixShape, Sketch, SketchKind};
use gradleak::gradients::{batch_gradients, per_sample_gradients};
use gradleak::models::{Arch, Forward, Model, ModelSpec};
use rand::SeedableRng;
use tch::{Kind, Tensor};

const K: i64 = 4096;

/// One benchmarked method: a pass over all the batches.
type Method<'a> = Box<dyn FnMut() + 'a>;

/// Moves borrowed models into scoped worker threads: each worker is the only user of its model and data.
struct SendRef<T>(T);
unsafe impl<T> Send for SendRef<T> {}

impl<T> SendRef<T> {
    /// Taken whole inside the worker (a closure would otherwise capture the fields one by one).
    fn into_inner(self) -> T {
        self.0
    }
}

/// The Kronecker sketch of every layer above `K` parameters (sparse where a layer has no matrix shape).
fn kron_sketches(model: &Model) -> Vec<Option<Sketch>> {
    model
        .layers()
        .iter()
        .map(|l| {
            (l.num_params() > K).then(|| {
                let shape = MatrixShape::of_layer(&l.kind);
                let rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
                Sketch::for_layer(SketchKind::Kron, shape, l.num_params(), K, rng).unwrap()
            })
        })
        .collect()
}

/// One pass of Kronecker-sketched per-sample gradients: large layers from their factors, small ones in full.
fn kron_pass(model: &Model, sketches: &[Option<Sketch>], x: &Tensor, y: &Tensor) {
    let factors =
        tch::with_grad(|| per_sample_factors(model, x, y, Forward::recording(false), false)).expect("a built-in model");
    let kept: Vec<Tensor> = factors
        .iter()
        .zip(sketches)
        .map(|(f, s)| match s {
            Some(sketch) => sketch.apply_to(f, None),
            None => f.gradients(),
        })
        .collect();
    assert_eq!(kept.len(), factors.len());
}

fn main() {
    // As the gradleak command does: large tensors reuse freed memory instead of faulting in fresh pages
    // (`--default-malloc` measures without).
    if !std::env::args().any(|a| a == "--default-malloc") {
        // SAFETY: no other thread and no tensor exist yet.
        unsafe { gradleak::limits::reuse_freed_memory() };
    }
    let args: Vec<String> = std::env::args().collect();
    let threads: i32 = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(1);
    let models =
        args.get(2).filter(|m| !m.starts_with("--")).cloned().unwrap_or_else(|| "lenet5,resnet20,resnet18".into());
    let reps: usize = arg("--reps").and_then(|v| v.parse().ok()).unwrap_or(3);
    tch::set_num_threads(threads);
    let _guard = tch::no_grad_guard();
    // (architecture, input, samples measured, batch size of every method)
    let cases = [
        (Arch::Lenet5, InputShape::Image { channels: 1, height: 28, width: 28 }, 2048, 256),
        (Arch::Resnet20, InputShape::Image { channels: 3, height: 32, width: 32 }, 512, 64),
        (Arch::Resnet18, InputShape::Image { channels: 3, height: 32, width: 32 }, 128, 32),
    ];
    for (arch, input, n, batch) in cases {
        if !models.split(',').any(|m| m == arch.name()) {
            continue;
        }
        let model = Model::new(&ModelSpec::new(arch, input, 10), 0).unwrap();
        tch::manual_seed(0);
        let x = Tensor::rand(input.batch(n), (Kind::Float, tch::Device::Cpu));
        let y = Tensor::randint(10, [n], (Kind::Int64, tch::Device::Cpu));
        let batches = || (0..n / batch).map(|i| (x.narrow(0, i * batch, batch), y.narrow(0, i * batch, batch)));
        let sparse_sketches: Vec<Option<Sketch>> = model
            .layers()
            .iter()
            .map(|l| {
                (l.num_params() > K).then(|| {
                    let rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
                    Sketch::for_layer(SketchKind::Sparse, None, l.num_params(), K, rng).unwrap()
                })
            })
            .collect();
        let kron_only = kron_sketches(&model);
        let workers: Vec<(Model, Vec<Option<Sketch>>)> = (0..2)
            .map(|_| {
                let model = Model::new(&ModelSpec::new(arch, input, 10), 0).unwrap();
                let kron = kron_sketches(&model);
                (model, kron)
            })
            .collect();
        let halves: Vec<Vec<(Tensor, Tensor)>> =
            (0..2).map(|w| batches().skip(w).step_by(2).map(|(a, b)| (a.copy(), b.copy())).collect()).collect();
        // Every method once per round, rounds interleaved, the median round per method: drift of a shared
        // machine then shifts all methods alike instead of whichever ran last.
        let mut methods: Vec<(&str, Method)> = vec![
            (
                "batched",
                Box::new(|| {
                    for (xb, yb) in batches() {
                        tch::with_grad(|| batch_gradients(&model, &xb, &yb, false, false));
                    }
                }),
            ),
            (
                "full",
                Box::new(|| {
                    for (xb, yb) in batches() {
                        tch::with_grad(|| per_sample_gradients(&model, &xb, &yb, false, false));
                    }
                }),
            ),
            (
                "sparse",
                Box::new(|| {
                    for (xb, yb) in batches() {
                        let grads = tch::with_grad(|| per_sample_gradients(&model, &xb, &yb, false, false));
                        let kept: Vec<Tensor> = grads
                            .iter()
                            .zip(&sparse_sketches)
                            .map(|(g, s)| match s {
                                Some(sparse) => sparse.apply(g),
                                None => g.shallow_clone(),
                            })
                            .collect();
                        assert_eq!(kept.len(), grads.len());
                    }
                }),
            ),
            (
                "kron",
                Box::new(|| {
                    for (xb, yb) in batches() {
                        kron_pass(&model, &kron_only, &xb, &yb);
                    }
                }),
            ),
        ];
        if threads == 2 {
            // Data-parallel instead of intra-op parallel: two workers with one libtorch thread each, each with its
            // own copy of the model, each computing the Kronecker sketches of half of the batches.
            let workers = &workers;
            let halves = &halves;
            methods.push((
                "kron, 2 workers x 1 thread",
                Box::new(move || {
                    std::thread::scope(|scope| {
                        for ((model, kron), half) in workers.iter().zip(halves) {
                            let work = SendRef((model, kron, half));
                            scope.spawn(move || {
                                let (model, kron, half) = work.into_inner();
                                tch::set_num_threads(1);
                                let _guard = tch::no_grad_guard();
                                for (xb, yb) in half {
                                    kron_pass(model, kron, xb, yb);
                                }
                            });
                        }
                    });
                }),
            ));
        }
        let mut seconds: Vec<Vec<f64>> = methods.iter().map(|_| Vec::new()).collect();
        for round in 0..=reps {
            for ((_, run), times) in methods.iter_mut().zip(&mut seconds) {
                let start = Instant::now();
                run();
                // Round 0 warms up.
                if round > 0 {
                    times.push(start.elapsed().as_secs_f64());
                }
            }
        }
        let results: Vec<(&str, f64)> =
            methods.iter().zip(seconds).map(|((name, _), times)| (*name, median(times))).collect();
        let batched = results[0].1;
        for (method, seconds) in results {
            println!(
                "{{\"side\": \"gradleak\", \"model\": \"{}\", \"method\": \"{method}\", \"threads\": {threads}, \
                 \"samples\": {n}, \"batch\": {batch}, \"seconds\": {seconds:.4}, \"samples_per_s\": {:.1}, \
                 \"x_batched\": {:.3}}}",
                arch.name(),
                n as f64 / seconds,
                seconds / batched
            );
        }
    }
}
