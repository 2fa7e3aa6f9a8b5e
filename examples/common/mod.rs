//! Helpers the benchmark examples share (`mod common;` in each).

/// The value after the flag `name` on the command line, if any.
pub fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

/// The median of timings (the upper one of an even count).
#[allow(dead_code)] // not every benchmark repeats its runs
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
