//! Benchmark: the cost of one layer-wise input sensitivity estimate (||J_l||_F for every layer, K Hutchinson probes)
//! per sample, as a multiple of one forward+backward pass per sample (a batched pass over the same samples, divided
//! by their number). The fit cost(K) = a + b K separates the one-off part (forward, per-sample gradients with a
//! graph, h = J^T t) from the per-probe part (one backward pass through h's graph). Inputs are random: the cost
//! does not depend on pixel values. Peak memory (the process's resident high-water mark) is printed after each
//! model; ResNet-18 runs one sample per pass to keep it bounded.
//!
//! Run: `cargo run --release --example bench_sensitivity [-- --threads 2] [--models lenet,resnet20,resnet18]
//! [--probes 1,4,16]`

mod common;
use common::arg;

use std::time::Instant;

use gradleak::data::InputShape;
use gradleak::gradients::batch_gradients;
use gradleak::measure::sensitivity::{input_sensitivity, InputSensitivityConfig};
use gradleak::models::{Arch, Model, ModelSpec};
use gradleak::progress::Progress;
use tch::{Kind, Tensor};

/// Fastest of `reps` timings of `f`, in seconds, after one warm-up call (the machine may be shared: the minimum is
/// the least disturbed run).
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.into_iter().fold(f64::INFINITY, f64::min)
}

/// The process's peak resident memory, in MiB (Linux).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
}

fn main() {
    let threads: i32 = arg("--threads").and_then(|v| v.parse().ok()).unwrap_or(2);
    tch::set_num_threads(threads);
    let models = arg("--models").unwrap_or_else(|| "lenet,resnet20,resnet18".into());
    let probes: Vec<usize> = arg("--probes")
        .unwrap_or_else(|| "1,4,16".into())
        .split(',')
        .map(|p| p.parse().expect("--probes: comma-separated whole numbers"))
        .collect();
    println!("threads: {threads}; cost per sample of all layers' ||J||_F, in forward+backward passes per sample");
    println!(
        "{:<16} {:>7} {:>6} {:>12} {:>7} {:>14} {:>10} {:>10} {:>10}",
        "model", "samples", "chunk", "fwd+bwd (ms)", "probes", "sensitivity ms", "x fwd+bwd", "per probe", "peak MiB"
    );
    for name in models.split(',') {
        let arch: Arch = name.parse().expect("a model name");
        let input = match arch {
            Arch::Lenet | Arch::Lenet5 => InputShape::Image { channels: 1, height: 28, width: 28 },
            _ => InputShape::Image { channels: 3, height: 32, width: 32 },
        };
        let (n, chunk, reps) = match arch {
            Arch::Resnet18 => (2i64, 1i64, 2usize),
            Arch::Resnet20 => (16, 16, 5),
            _ => (64, 64, 5),
        };
        let model = Model::new(&ModelSpec::new(arch, input, 10), 0).unwrap();
        tch::manual_seed(0);
        let x = Tensor::rand(input.batch(n), (Kind::Float, tch::Device::Cpu));
        let y = Tensor::randint(10, [n], (Kind::Int64, tch::Device::Cpu));
        let pass = time(2 * reps, || {
            let g = batch_gradients(&model, &x, &y, false, false);
            assert!(!g.is_empty());
        }) / n as f64;
        let mut costs = Vec::new();
        for &k in &probes {
            let config = InputSensitivityConfig {
                probes: k,
                train: false,
                chunk_size: Some(chunk),
                bootstrap: 0,
                ..Default::default()
            };
            let seconds = time(reps, || {
                let r = input_sensitivity(&model, &x, &y, &config, Progress::HIDDEN).unwrap();
                assert_eq!(r.layers.len(), model.layers().len());
            }) / n as f64;
            costs.push((k as f64, seconds));
        }
        // Least-squares line through (K, cost): slope = cost per probe.
        let m = costs.len() as f64;
        let (sx, sy) = costs.iter().fold((0.0, 0.0), |(a, b), (k, c)| (a + k, b + c));
        let (mx, my) = (sx / m, sy / m);
        let sxx: f64 = costs.iter().map(|(k, _)| (k - mx) * (k - mx)).sum();
        let sxy: f64 = costs.iter().map(|(k, c)| (k - mx) * (c - my)).sum();
        let slope = if sxx > 0.0 { sxy / sxx } else { f64::NAN };
        let peak = peak_rss_mib();
        for (i, (k, seconds)) in costs.iter().enumerate() {
            let label = format!("{arch} {}x{}", input.batch(1)[2], input.batch(1)[3]);
            let last = i + 1 == costs.len();
            println!(
                "{:<16} {:>7} {:>6} {:>12.3} {:>7} {:>14.2} {:>9.1}x {:>10} {:>10}",
                if i == 0 { label } else { String::new() },
                if i == 0 { n.to_string() } else { String::new() },
                if i == 0 { chunk.to_string() } else { String::new() },
                pass * 1e3,
                k,
                seconds * 1e3,
                seconds / pass,
                if last { format!("{:.1}x", slope / pass) } else { String::new() },
                if last { format!("{peak:.0}") } else { String::new() },
            );
        }
    }
}
