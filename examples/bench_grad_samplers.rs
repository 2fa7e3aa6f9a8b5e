//! Benchmark: what a batch of per-sample gradients costs besides arithmetic, and which convolution grad sampler
//! is fastest for which layer.
//!
//! 1. Writing a fresh 96 MB tensor (a batch of 256 per-sample gradients of LeNet-5's fc1) against writing a reused
//!    one: the gap is the page faults of memory the allocator took from the system and gave back. The gradleak
//!    command keeps freed memory (`gradleak::limits::reuse_freed_memory`); `--default-malloc` measures without.
//!    This loop, which frees one block and asks for the same size again, faults either way: glibc's aligned
//!    allocation asks for a little more than the freed block. The per-sample passes do reuse (`bench_per_sample`
//!    with and without `--default-malloc`).
//! 2. Every convolution grad sampler on the layer shapes of LeNet-5, ResNet-20 and ResNet-18 (batch sizes of
//!    `bench_per_sample`), beside the one `ConvSampler::for_layer` chooses. All three agree to rounding
//!    (`gradients::per_sample` tests).
//!
//! Run: `cargo run --release --example bench_grad_samplers [-- --threads 2] [--default-malloc] [--reps 7]`.

mod common;

use std::time::Instant;

use common::{arg, median};
use gradleak::gradients::per_sample::ConvSampler;
use gradleak::models::ConvGeometry;
use tch::{Device, Kind, Tensor};

fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    let default_malloc = std::env::args().any(|a| a == "--default-malloc");
    if !default_malloc {
        // SAFETY: no other thread and no tensor exist yet.
        unsafe { gradleak::limits::reuse_freed_memory() };
    }
    tch::set_num_threads(arg("--threads").and_then(|v| v.parse().ok()).unwrap_or(2));
    let reps: usize = arg("--reps").and_then(|v| v.parse().ok()).unwrap_or(7);
    let _guard = tch::no_grad_guard();

    let shape = [256, 120 * 784 + 120];
    let mut reused = Tensor::empty(shape, (Kind::Float, Device::Cpu));
    let fill_reused = time(reps, || {
        let _ = reused.fill_(1.0);
    });
    let fill_fresh = time(reps, || {
        let _ = Tensor::empty(shape, (Kind::Float, Device::Cpu)).fill_(1.0);
    });
    println!(
        "{{\"what\": \"fill 96 MB\", \"malloc\": \"{}\", \"fresh_ms\": {:.2}, \"reused_ms\": {:.2}}}",
        if default_malloc { "default" } else { "reuse_freed_memory" },
        fill_fresh * 1e3,
        fill_reused * 1e3
    );

    let geom = |c, o, k, s, p| ConvGeometry { in_channels: c, out_channels: o, kernel: k, stride: s, padding: p };
    // (layer, geometry, batch, input side)
    let layers = [
        ("lenet5 conv1", geom(1, 6, 5, 1, 2), 256, 28),
        ("lenet5 conv2", geom(6, 16, 5, 1, 2), 256, 14),
        ("resnet20 conv1", geom(3, 16, 3, 1, 1), 64, 32),
        ("resnet20 layer1", geom(16, 16, 3, 1, 1), 64, 32),
        ("resnet20 layer2.0.conv1", geom(16, 32, 3, 2, 1), 64, 32),
        ("resnet20 layer2", geom(32, 32, 3, 1, 1), 64, 16),
        ("resnet20 layer3", geom(64, 64, 3, 1, 1), 64, 8),
        ("resnet18 layer1", geom(64, 64, 3, 1, 1), 32, 32),
        ("resnet18 layer2", geom(128, 128, 3, 1, 1), 32, 16),
        ("resnet18 layer3", geom(256, 256, 3, 1, 1), 32, 8),
        ("resnet18 layer4", geom(512, 512, 3, 1, 1), 32, 4),
    ];
    tch::manual_seed(0);
    for (name, geom, n, side) in layers {
        let a = Tensor::randn([n, geom.in_channels, side, side], (Kind::Float, Device::Cpu));
        let out_side = geom.output_side(side);
        let g = Tensor::randn([n, geom.out_channels, out_side, out_side], (Kind::Float, Device::Cpu));
        let chosen = ConvSampler::for_layer(geom, out_side * out_side);
        let timings: Vec<(ConvSampler, f64)> =
            ConvSampler::ALL.iter().map(|&s| (s, time(reps, || drop(s.sample(&a, &g, geom))))).collect();
        let fastest = timings.iter().min_by(|x, y| x.1.total_cmp(&y.1)).unwrap().0;
        let ms: Vec<String> = timings.iter().map(|(s, t)| format!("\"{s:?}\": {:.2}", t * 1e3)).collect();
        println!(
            "{{\"layer\": \"{name}\", \"batch\": {n}, {}, \"chosen\": \"{chosen:?}\", \"fastest\": \"{fastest:?}\"}}",
            ms.join(", ")
        );
    }
}
