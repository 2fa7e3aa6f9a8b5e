//! Timing of the V-information estimators on a problem the size of a layer's gradient against a 28x28 image:
//! 5,000 samples x 4,096 features, a 784-dimensional continuous target.
//!
//! `cargo run --release --example bench_vinfo [-- --quick]` (--quick: 1,000 samples, for a smoke test).

use std::time::Instant;

use gradleak::measure::vinfo::{estimate, EstimateOptions, MlpOptions, Predictor, Protocol, Target};
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, d, k) = (if quick { 1000 } else { 5000 }, 4096, 784);
    tch::manual_seed(0);
    let opt = (Kind::Float, Device::Cpu);
    // Features with a low-rank signal: the target is a noisy linear image of 32 latent factors that the features
    // also carry, spread over all columns.
    let z = Tensor::randn([n, 32], opt);
    let g = z.matmul(&Tensor::randn([32, d], opt)) * 0.3 + Tensor::randn([n, d], opt);
    let y = (z.matmul(&Tensor::randn([32, k], opt)) * 0.05 + Tensor::randn([n, k], opt) * 0.1 + 0.5).clamp(0.0, 1.0);
    let target = Target::Continuous(y);
    println!("{n} samples x {d} features -> {k}-dimensional target, {} libtorch threads", tch::get_num_threads());
    let split = Protocol::Split { val_fraction: 0.2, test_fraction: 0.2 };
    let runs: Vec<(&str, Predictor, Protocol)> = vec![
        ("ridge, split 60/20/20", Predictor::Linear, split),
        ("ridge, 5-fold cross-fitting", Predictor::Linear, Protocol::default()),
        ("mlp:128, split 60/20/20", Predictor::Mlp(MlpOptions { patience: 5, ..Default::default() }), split),
    ];
    for (name, family, protocol) in runs {
        let opts = EstimateOptions { protocol, ..Default::default() };
        let t = Instant::now();
        let e = estimate(&g, &target, &family, &opts)?;
        println!(
            "{name:<30} {:>7.2} s   {:>9.2} bits [{:.2}, {:.2}]  {:.4} bits/dim  R^2 {:.3}  fit: {}",
            t.elapsed().as_secs_f64(),
            e.bits,
            e.ci95[0],
            e.ci95[1],
            e.bits_per_dim.unwrap_or(f64::NAN),
            e.r2.unwrap_or(f64::NAN),
            e.fits[0]
        );
    }
    Ok(())
}
