//! Benchmark: LeNet-5 training throughput (samples/second) of gradleak's training loop, one epoch of 10,000
//! MNIST-shaped samples, batch 64, Adam. `scripts/bench_train_pytorch.py` runs the same loop in PyTorch; run both
//! with `bash scripts/bench-train.sh`.
//!
//! Run alone: `cargo run --release --example bench_train -- [THREADS]`

use std::time::Instant;

use gradleak::data::{AttributeInfo, Dataset, InputShape, Split};
use gradleak::models::{Arch, ModelSpec};
use gradleak::progress::Progress;
use gradleak::train::{self, TrainConfig};
use tch::{Kind, Tensor};

fn split(n: i64) -> Split {
    Split::new(
        Tensor::rand([n, 1, 28, 28], (Kind::Float, tch::Device::Cpu)),
        Tensor::randint(10, [n], (Kind::Int64, tch::Device::Cpu)),
        Tensor::zeros([n, 1], (Kind::Int64, tch::Device::Cpu)),
    )
}

fn main() {
    let threads: i32 = std::env::args().nth(1).and_then(|t| t.parse().ok()).unwrap_or(2);
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    let n = 10_000;
    let data = Dataset {
        name: "random-mnist-shaped".into(),
        input_shape: InputShape::Image { channels: 1, height: 28, width: 28 },
        classes: (0..10).map(|c| c.to_string()).collect(),
        attributes: vec![AttributeInfo { name: "none".into(), description: "unused".into() }],
        train: split(n),
        test: split(64),
    };
    let spec = ModelSpec::new(Arch::Lenet5, data.input_shape, 10);
    let config = TrainConfig { epochs: 1, batch_size: 64, ..Default::default() };
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let mut model = train::init_model(&spec, 0).unwrap();
        let started = Instant::now();
        train::train(&mut model, &data, &config, None, Progress::HIDDEN).unwrap();
        best = best.min(started.elapsed().as_secs_f64());
    }
    println!(
        "gradleak lenet5 training: {:.0} samples/s (best of 3 epochs of {n}, batch 64, {threads} threads)",
        n as f64 / best
    );
}
