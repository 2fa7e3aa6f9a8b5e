//! A fuzz suite of the command line (issue 31): bad values drawn at random for every flag of each class (counts
//! that size work or memory, ranges, fractions, negative numbers after a space, non-numbers) and damaged input
//! files. Each run must end in time with a non-zero exit and no panic, and its message must name the flag or the
//! file: one line of gradleak's (exit 1), or clap's message about the flag (exit 2).
//!
//! `cargo test` runs a few cases per flag (`GRADLEAK_FUZZ_CASES`, default 2; about a minute on 2 cores). The long
//! run draws more, with another seed: `GRADLEAK_FUZZ_CASES=50 GRADLEAK_FUZZ_SEED=7 cargo test --release --test
//! reliability_fuzz -- --nocapture` (`docs/reliability.md`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use gradleak::arrays::write_npy;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

/// The longest a run of bad input may take: every case here fails on its input, before any real work.
const DEADLINE: Duration = Duration::from_secs(60);

/// What a flag takes, and so which values are wrong.
#[derive(Clone, Copy)]
enum Value {
    /// An integer count in [min, max].
    Count { min: i64, max: i64 },
    /// A number in (lo, hi) (`open`) or [lo, hi].
    Number { lo: f64, hi: f64, open: bool },
}

/// A command (its arguments before the flag) and the flags fuzzed on it.
struct Target {
    args: &'static [&'static str],
    flags: Vec<(&'static str, Value)>,
}

const fn count(min: i64, max: i64) -> Value {
    Value::Count { min, max }
}

const fn open(lo: f64, hi: f64) -> Value {
    Value::Number { lo, hi, open: true }
}

const VINFO: &[&str] = &["vinfo", "--features", "x.npy", "--target", "y.npy", "--kind", "continuous"];
const SPLIT: &[&str] =
    &["vinfo", "--features", "x.npy", "--target", "y.npy", "--kind", "continuous", "--protocol", "split"];

fn targets() -> Vec<Target> {
    vec![
        Target {
            args: VINFO,
            flags: vec![
                ("--bootstrap", count(1, 100_000)),
                ("--repeats", count(1, 100)),
                ("--folds", count(2, 100)),
                ("--epochs", count(1, 10_000)),
                ("--val-fraction", open(0.0, 1.0)),
                ("--variance-floor", open(0.0, 1.0)),
            ],
        },
        Target { args: SPLIT, flags: vec![("--test-fraction", open(0.0, 1.0))] },
        Target {
            args: &["sensitivity", "--model", "lenet5", "--dataset", "embedded"],
            flags: vec![("--probes", count(1, 256)), ("--bootstrap", count(1, 1_000)), ("--samples", count(1, 5_000))],
        },
        Target {
            args: &["attack", "--method", "ig", "--model", "lenet5", "--dataset", "embedded"],
            flags: vec![
                ("--iterations", count(1, 24_000)),
                ("--restarts", count(1, 16)),
                ("--samples", count(1, 5_000)),
                ("--batch-size", count(1, 5_000)),
                ("--lr", Value::Number { lo: 0.0, hi: f64::MAX, open: true }),
            ],
        },
        Target {
            args: &["train", "--dataset", "embedded", "--out", "run"],
            flags: vec![
                ("--epochs", count(1, 10_000)),
                ("--batch-size", count(1, 5_000)),
                ("--lr", Value::Number { lo: 0.0, hi: 10.0, open: false }),
                ("--momentum", Value::Number { lo: 0.0, hi: 0.999, open: false }),
                ("--hidden", count(1, 65_536)),
            ],
        },
        Target {
            args: &["grads", "--model", "lenet5", "--dataset", "embedded", "--out", "store"],
            flags: vec![
                ("--updates", count(1, 5_000)),
                ("--batch-size", count(1, 5_000)),
                ("--sketch-dim", count(1, i64::MAX)),
            ],
        },
        Target { args: &["models"], flags: vec![("--threads", count(0, 1024))] },
    ]
}

/// A value outside what `value` accepts, or not a number at all.
fn bad_value(value: Value, rng: &mut ChaCha8Rng) -> String {
    let junk = ["", "abc", "1x", "0x10", "--", "1,2"];
    if rng.random_bool(0.15) {
        return junk[rng.random_range(0..junk.len())].to_string();
    }
    match value {
        Value::Count { min, max } => {
            let mut options = vec![
                format!("-{}", rng.random_range(1..1_000_000_000_000i64)),
                "18446744073709551616".to_string(),
                format!("{}.5", rng.random_range(0..100)),
                "nan".to_string(),
            ];
            if min > i64::MIN {
                options.push((min - 1).to_string());
            }
            if max < i64::MAX {
                options.push(max.saturating_add(1).to_string());
                options.push(max.saturating_add(rng.random_range(1..i64::MAX / 4)).to_string());
                options.push(format!("1{}", "0".repeat(rng.random_range(12..19))));
            }
            options[rng.random_range(0..options.len())].clone()
        }
        Value::Number { lo, hi, open } => {
            let mut options = vec!["nan".to_string(), "inf".to_string(), "-inf".to_string()];
            options.push(format!("{}", lo - rng.random_range(1e-6..1e6)));
            if hi < f64::MAX {
                options.push(format!("{}", hi + rng.random_range(1e-3..1e6)));
            }
            if open {
                options.push(format!("{lo}"));
            }
            options[rng.random_range(0..options.len())].clone()
        }
    }
}

/// Runs gradleak in `dir` with one thread: (exit code or None when killed by a signal, stderr). Fails the test on a
/// run past [`DEADLINE`].
fn run(dir: &Path, args: &[String]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradleak"))
        .current_dir(dir)
        .args(args)
        .arg("--quiet")
        .env("OMP_NUM_THREADS", "1")
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("{args:?}: still running after {DEADLINE:?} (a hang)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The rule for bad input: a non-zero exit (not a signal), no panic, and a message that names `name`.
#[track_caller]
fn refused(args: &[String], code: Option<i32>, stderr: &str, name: &str) {
    assert!(code.is_some(), "{args:?}: killed by a signal (an abort?): {stderr}");
    let code = code.unwrap();
    assert!(!stderr.contains("internal error") && !stderr.contains("panicked"), "{args:?}: a panic: {stderr}");
    assert!(stderr.starts_with("error: "), "{args:?}: exit {code}: {stderr}");
    match code {
        // gradleak's own: one line.
        1 => assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: not one line: {stderr}"),
        // clap's: its message and a hint.
        2 => {}
        _ => panic!("{args:?}: exit {code}: {stderr}"),
    }
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains(name), "{args:?}: the message does not name {name}: {stderr}");
}

fn cases() -> usize {
    std::env::var("GRADLEAK_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2)
}

fn seed() -> u64 {
    std::env::var("GRADLEAK_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(31)
}

fn arrays(d: &Path) {
    let x = Tensor::randn([40, 3], (Kind::Double, tch::Device::Cpu));
    write_npy(&d.join("x.npy"), &x).unwrap();
    write_npy(&d.join("y.npy"), &x.narrow(1, 0, 1).copy()).unwrap();
}

#[test]
fn bad_flag_values_are_refused_in_time_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    arrays(d);
    let mut rng = ChaCha8Rng::seed_from_u64(seed());
    let mut tried = 0;
    for target in targets() {
        for &(flag, value) in &target.flags {
            for _ in 0..cases() {
                let bad = bad_value(value, &mut rng);
                // Half the time after a space (a negative number must still reach the flag), half with `=`. (`--`
                // after a space ends the options, as in every Unix tool: only with `=` is it a value.)
                let mut args: Vec<String> = target.args.iter().map(|s| s.to_string()).collect();
                if (rng.random_bool(0.5) || bad.is_empty()) && bad != "--" {
                    args.extend([flag.to_string(), bad.clone()]);
                } else {
                    args.push(format!("{flag}={bad}"));
                }
                if flag != "--threads" {
                    args.extend(["--threads".into(), "1".into()]);
                }
                let (code, stderr) = run(d, &args);
                refused(&args, code, &stderr, flag);
                tried += 1;
            }
        }
    }
    eprintln!("{tried} bad flag values refused (seed {})", seed());
    assert!(!d.join("run").exists() && !d.join("store").exists(), "bad input wrote an output");
}

#[test]
fn damaged_input_files_are_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    arrays(d);
    let good = std::fs::read(d.join("x.npy")).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed() ^ 0x5eed);
    for case in 0..cases() * 8 {
        // Cut, overwritten bytes, or noise; as .npy or as .csv.
        let mut bytes = good.clone();
        match case % 3 {
            0 => bytes.truncate(rng.random_range(0..good.len())),
            1 => {
                for _ in 0..rng.random_range(1..8) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] = rng.random();
                }
            }
            _ => bytes = (0..rng.random_range(0..200)).map(|_| rng.random()).collect(),
        }
        let name = if case % 2 == 0 { "bad.npy" } else { "bad.csv" };
        std::fs::write(d.join(name), &bytes).unwrap();
        let args: Vec<String> =
            ["vinfo", "--features", name, "--target", "y.npy", "--kind", "continuous", "--threads", "1"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let (code, stderr) = run(d, &args);
        if code == Some(0) {
            // A flipped byte can leave a valid file (a value changed): a correct result, nothing to refuse.
            continue;
        }
        refused(&args, code, &stderr, "--features");
    }
}
