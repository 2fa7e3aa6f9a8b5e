//! Benchmark: per-sample gradients of 1,000 samples, vectorised, as a ratio to one batched forward+backward pass of
//! the same samples and to a loop of batch-1 passes. Inputs are random: the cost does not depend on pixel values.
//!
//! Run: `cargo run --release --example bench_per_sample [-- --threads 2]`

use std::time::Instant;

use gradleak::data::InputShape;
use gradleak::gradients::{batch_gradients, per_sample_gradients};
use gradleak::models::{Arch, Model, ModelSpec};
use tch::{Kind, Tensor};

/// Median of `reps` timings of `f`, in seconds.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

fn main() {
    let threads = std::env::args().skip_while(|a| a != "--threads").nth(1).and_then(|v| v.parse().ok()).unwrap_or(2);
    tch::set_num_threads(threads);
    let n = 1000i64;
    let chunk = 250i64;
    println!("threads: {threads}; {n} samples; vectorised per-sample gradients in chunks of {chunk}");
    println!(
        "{:<22} {:>12} {:>14} {:>12} {:>14} {:>14}",
        "model", "batched (s)", "per-sample (s)", "loop (s)", "x batched", "loop / vect."
    );
    for (arch, input) in [
        (Arch::Lenet, InputShape::Image { channels: 1, height: 28, width: 28 }),
        (Arch::Lenet5, InputShape::Image { channels: 1, height: 28, width: 28 }),
        (Arch::Resnet20, InputShape::Image { channels: 3, height: 32, width: 32 }),
    ] {
        let model = Model::new(&ModelSpec::new(arch, input, 10), 0).unwrap();
        tch::manual_seed(0);
        let x = Tensor::rand(input.batch(n), (Kind::Float, tch::Device::Cpu));
        let y = Tensor::randint(10, [n], (Kind::Int64, tch::Device::Cpu));
        let batched = time(5, || {
            let g = batch_gradients(&model, &x, &y, false, false);
            assert!(!g.is_empty());
        });
        let vectorised = time(3, || {
            let mut start = 0;
            while start < n {
                let g =
                    per_sample_gradients(&model, &x.narrow(0, start, chunk), &y.narrow(0, start, chunk), false, false);
                assert!(!g.is_empty());
                start += chunk;
            }
        });
        let looped = time(1, || {
            for i in 0..n {
                let g = batch_gradients(&model, &x.narrow(0, i, 1), &y.narrow(0, i, 1), false, false);
                assert!(!g.is_empty());
            }
        });
        println!(
            "{:<22} {:>12.3} {:>14.3} {:>12.3} {:>13.2}x {:>13.1}x",
            format!("{arch} {}x{}x{}", input.batch(1)[1], input.batch(1)[2], input.batch(1)[3]),
            batched,
            vectorised,
            looped,
            vectorised / batched,
            looped / vectorised
        );
    }
}
