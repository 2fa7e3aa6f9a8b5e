//! Benchmark: Inverting Gradients on many single-sample updates, all victims at once against the one-at-a-time
//! loop, in the same process on the same updates (LeNet-5 on the embedded 28x28 images, labels inferred).
//!
//! Three ways, interleaved `--reps` times (the machine is shared and noisy; the medians are compared):
//! - `loop`: one victim at a time, as `reconstruct_each` (libtorch's intra-op threads);
//! - `batched, 1 worker`: all victims in one batch, in the calling thread (libtorch's intra-op threads);
//! - `batched, N workers`: the victims split over `--threads` workers with one libtorch thread each (the default
//!   of `InvertingGradients::reconstruct_all`).
//!
//! Prints victims per second of each, the ratios of the medians, and the largest difference between the
//! batched and looped reconstructions (they take the same steps).
//!
//! Run: `cargo run --release --example bench_attacks_batched [-- --victims 64] [--iterations 20] [--threads 2]
//! [--reps 3] [--f64] [--layers fc1,fc3]`

mod common;
use common::{arg, median};

use std::time::Instant;

use gradleak::gradients::per_sample::per_sample_gradients;
use gradleak::measure::attacks::{self, AttackConfig, AttackedUpdate, InvertingGradients, Method, Reconstruction};
use gradleak::models::{Arch, Model, ModelSpec};
use gradleak::rng::{self, Stream};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

fn main() -> anyhow::Result<()> {
    let threads: i32 = arg("--threads").and_then(|v| v.parse().ok()).unwrap_or(2);
    let victims: i64 = arg("--victims").and_then(|v| v.parse().ok()).unwrap_or(64);
    let iterations: usize = arg("--iterations").and_then(|v| v.parse().ok()).unwrap_or(20);
    let reps: usize = arg("--reps").and_then(|v| v.parse().ok()).unwrap_or(3);
    let f64 = std::env::args().any(|a| a == "--f64");
    tch::set_num_threads(threads);
    let data = gradleak::data::embedded::load()?;
    let mut model = Model::new(&ModelSpec::new(Arch::Lenet5, data.input_shape, data.num_classes()), 0)?;
    if f64 {
        model.to_double();
    }
    let x = data.train.inputs.narrow(0, 0, victims).to_kind(model.kind());
    let y = data.train.labels.narrow(0, 0, victims);
    let grads = per_sample_gradients(&model, &x, &y, false, false);
    let shared: Vec<Vec<(String, Tensor)>> = (0..victims)
        .map(|i| model.layers().iter().zip(&grads).map(|(l, g)| (l.name.clone(), g.get(i).detach())).collect())
        .collect();
    let layers: Vec<String> = arg("--layers").map(|l| l.split(',').map(str::to_string).collect()).unwrap_or_default();
    let config = AttackConfig { iterations, layers, ..AttackConfig::new(Method::Ig) };
    let targets: Vec<AttackedUpdate> =
        shared.iter().map(|s| AttackedUpdate::new(&model, s, 1, None, &config)).collect::<anyhow::Result<_>>()?;
    let rngs = || -> Vec<ChaCha8Rng> {
        (0..victims as u64).map(|u| rng::rng(0, Stream::AttackUpdate { update: u })).collect()
    };
    let ig = InvertingGradients;
    let batched = |workers: usize| -> anyhow::Result<Vec<Reconstruction>> {
        attacks::batched_inverting_gradients_on(workers, &targets, &mut rngs(), &mut || {})?
            .ok_or_else(|| anyhow::anyhow!("the batched attack does not apply"))
    };

    let names = ["loop".to_string(), "batched, 1 worker".to_string(), format!("batched, {threads} workers")];
    let mut seconds: Vec<Vec<f64>> = vec![Vec::new(); 3];
    let mut gap: f64 = 0.0;
    for _ in 0..reps {
        let started = Instant::now();
        let looped = attacks::reconstruct_each(&ig, &targets, &mut rngs(), &mut || {})?;
        seconds[0].push(started.elapsed().as_secs_f64());
        for (k, workers) in [(1, 1), (2, threads as usize)] {
            let started = Instant::now();
            let result = batched(workers)?;
            seconds[k].push(started.elapsed().as_secs_f64());
            for (b, l) in result.iter().zip(&looped) {
                gap = gap.max((&b.inputs - &l.inputs).abs().max().double_value(&[]));
            }
        }
    }
    println!(
        "LeNet-5, {victims} victims, {iterations} IG iterations, {}, {threads} threads, median of {reps}",
        if f64 { "f64" } else { "f32" }
    );
    let loop_median = median(seconds[0].clone());
    for (name, s) in names.iter().zip(&seconds) {
        let m = median(s.clone());
        println!("{name:<20} {m:6.2} s  {:7.1} victims/s  {:5.1}x the loop", victims as f64 / m, loop_median / m);
    }
    println!("each run (s): {seconds:.2?}");
    println!("largest difference between batched and looped reconstructions: {gap:.1e}");
    Ok(())
}
