//! Benchmark: iterations per second of DLG (L-BFGS with strong-Wolfe line search, soft labels) and Inverting
//! Gradients (signed Adam, cosine distance + total variation) on the DLG paper's sigmoid LeNet with one 28x28 image,
//! in single and double precision. `scripts/bench_attacks_pytorch.py` runs the same attacks in PyTorch; run both
//! with `bash scripts/bench-attacks.sh`.
//!
//! An iteration of DLG is one L-BFGS direction with its line search (one or more evaluations of the gradient
//! distance and its gradient: a forward pass, a backward pass with a graph, and a second backward pass); an
//! iteration of Inverting Gradients is one evaluation and one Adam step. Evaluations per second are printed too,
//! since the two implementations' line searches may take different numbers of evaluations.
//!
//! Run alone: `cargo run --release --example bench_attacks -- [THREADS]`

use std::time::Instant;

use gradleak::data::InputShape;
use gradleak::gradients::batch_gradients;
use gradleak::measure::attacks::{self, AttackConfig, Method};
use gradleak::models::{Arch, Model, ModelSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

fn main() {
    let threads: i32 = std::env::args().nth(1).and_then(|t| t.parse().ok()).unwrap_or(1);
    tch::set_num_threads(threads);
    let spec = ModelSpec::new(Arch::Lenet, InputShape::Image { channels: 1, height: 28, width: 28 }, 10);
    for (precision, double) in [("f32", false), ("f64", true)] {
        let mut model = Model::new(&spec, 0).unwrap();
        if double {
            model.to_double();
        }
        attacks::reinit_uniform(&model, 0.5, 0).unwrap();
        tch::manual_seed(0);
        let x = Tensor::rand([1, 1, 28, 28], (model.kind(), tch::Device::Cpu));
        let y = Tensor::from_slice(&[3i64]);
        let grads = batch_gradients(&model, &x, &y, false, false);
        let shared: Vec<(String, Tensor)> =
            model.layers().iter().zip(grads).map(|(l, g)| (l.name.clone(), g.detach())).collect();
        for (method, iterations) in [(Method::Dlg, 100), (Method::Ig, 300)] {
            let config = AttackConfig { iterations, ..AttackConfig::new(method) };
            let mut best = (0.0f64, 0.0f64);
            for repeat in 0..3 {
                let mut rng = ChaCha8Rng::seed_from_u64(repeat);
                let started = Instant::now();
                let rec = attacks::reconstruct(&model, &shared, 1, &config, Some(&y), &mut rng, &mut || {}).unwrap();
                let seconds = started.elapsed().as_secs_f64();
                let rate = (rec.iterations as f64 / seconds, rec.evaluations as f64 / seconds);
                if rate.0 > best.0 {
                    best = rate;
                }
            }
            println!(
                "gradleak {:<4} {precision}: {:>7.1} iterations/s, {:>7.1} evaluations/s ({iterations} iterations, \
                 best of 3, {threads} thread{})",
                method.name(),
                best.0,
                best.1,
                if threads == 1 { "" } else { "s" }
            );
        }
    }
}
