//! Benchmark: Inverting Gradients on many single-sample updates, all victims in one batch against the
//! one-at-a-time loop, in the same process on the same updates (LeNet-5 on the embedded 28x28 images, double
//! precision as `gradleak attack` runs by default, labels inferred). Prints victims per second of both and their
//! ratio, and the largest difference between the two reconstructions (they take the same steps).
//!
//! Run: `cargo run --release --example bench_attacks_batched [-- --victims 64] [--iterations 20] [--threads 2]
//! [--f32]`

use std::time::Instant;

use gradleak::gradients::per_sample::per_sample_gradients;
use gradleak::measure::attacks::{self, Attack, AttackConfig, InvertingGradients, Method, Target};
use gradleak::models::{Arch, Model, ModelSpec};
use gradleak::rng::{self, Stream};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn main() -> anyhow::Result<()> {
    let threads: i32 = arg("--threads").and_then(|v| v.parse().ok()).unwrap_or(2);
    let victims: i64 = arg("--victims").and_then(|v| v.parse().ok()).unwrap_or(64);
    let iterations: usize = arg("--iterations").and_then(|v| v.parse().ok()).unwrap_or(20);
    let f32 = std::env::args().any(|a| a == "--f32");
    tch::set_num_threads(threads);
    let data = gradleak::data::embedded::load()?;
    let mut model = Model::new(&ModelSpec::new(Arch::Lenet5, data.input_shape, data.num_classes()), 0)?;
    if !f32 {
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
    let targets: Vec<Target> =
        shared.iter().map(|s| Target::new(&model, s, 1, None, &config)).collect::<anyhow::Result<_>>()?;
    let rngs = || -> Vec<ChaCha8Rng> {
        (0..victims as u64).map(|u| rng::rng(0, Stream::AttackUpdate { update: u })).collect()
    };
    let ig = InvertingGradients;

    let started = Instant::now();
    let looped = attacks::reconstruct_each(&ig, &targets, &mut rngs(), &mut || {})?;
    let loop_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let batched = ig.reconstruct_all(&targets, &mut rngs(), &mut || {})?;
    let batch_seconds = started.elapsed().as_secs_f64();

    let gap = batched
        .iter()
        .zip(&looped)
        .map(|(b, l)| (&b.inputs - &l.inputs).abs().max().double_value(&[]))
        .fold(0.0, f64::max);
    let rate = |s: f64| victims as f64 / s;
    println!(
        "LeNet-5, {victims} victims, {iterations} IG iterations, {}, {threads} threads",
        if f32 { "f32" } else { "f64" }
    );
    println!("one at a time: {loop_seconds:.2} s ({:.2} victims/s)", rate(loop_seconds));
    println!("batched:       {batch_seconds:.2} s ({:.2} victims/s)", rate(batch_seconds));
    println!(
        "speed-up: {:.1}x; largest difference between the reconstructions: {gap:.1e}",
        loop_seconds / batch_seconds
    );
    Ok(())
}
