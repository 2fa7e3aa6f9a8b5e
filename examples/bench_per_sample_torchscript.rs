//! Benchmark: per-sample gradients of a TorchScript model (one backward pass per sample, the only correct path
//! through a graph gradleak cannot see into) beside the built-in vectorised path on the same network with the same
//! weights: the DLG LeNet of tests/fixtures/lenet_dlg.pt and the built-in `lenet`, 3x16x16 inputs, 3 classes. Also
//! the example CNN of tests/fixtures/example_cnn.pt (no built-in equivalent) by the loop alone.
//!
//! Run: `cargo run --release --example bench_per_sample_torchscript [-- --threads 2]`

use std::path::PathBuf;
use std::time::Instant;

use gradleak::data::InputShape;
use gradleak::gradients::per_sample::{per_sample_by_loop, per_sample_gradients};
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

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    format!("torchscript:{}", path.display())
}

fn main() {
    let threads = std::env::args().skip_while(|a| a != "--threads").nth(1).and_then(|v| v.parse().ok()).unwrap_or(2);
    tch::set_num_threads(threads);
    let input = InputShape::Image { channels: 3, height: 16, width: 16 };
    let n = 256i64;
    tch::manual_seed(0);
    let x = Tensor::rand(input.batch(n), (Kind::Float, tch::Device::Cpu));
    let y = Tensor::randint(3, [n], (Kind::Int64, tch::Device::Cpu));

    let built_in = Model::new(&ModelSpec::new(Arch::Lenet, input, 3), 0).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("lenet.safetensors");
    built_in.save_weights(&weights).unwrap();
    let mut script = Model::new(&ModelSpec::from_name(&fixture("lenet_dlg.pt"), input, 3).unwrap(), 0).unwrap();
    script.load_weights(&weights).unwrap();
    let example = Model::new(&ModelSpec::from_name(&fixture("example_cnn.pt"), input, 3).unwrap(), 0).unwrap();

    let vectorised = time(5, || drop(per_sample_gradients(&built_in, &x, &y, false, false)));
    let built_in_loop = time(3, || drop(per_sample_by_loop(&built_in, &x, &y, false)));
    let script_loop = time(3, || drop(per_sample_gradients(&script, &x, &y, false, false)));
    let example_loop = time(3, || drop(per_sample_gradients(&example, &x, &y, false, false)));
    println!("threads: {threads}; {n} samples of 3x16x16; seconds (median)");
    println!("lenet, built-in, vectorised:        {vectorised:.4}");
    println!("lenet, built-in, batch-1 loop:      {built_in_loop:.4} ({:.1}x)", built_in_loop / vectorised);
    println!("lenet, TorchScript, batch-1 loop:   {script_loop:.4} ({:.1}x)", script_loop / vectorised);
    println!(
        "example CNN, TorchScript, loop:     {example_loop:.4} ({:.2} ms per sample)",
        example_loop * 1e3 / n as f64
    );
}
