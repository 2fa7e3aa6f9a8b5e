//! Percentile bootstrap intervals: the one resampling helper every measurement uses.

use rand::Rng;

use crate::rng::{self, Stream};

/// The `q` quantile of sorted values, interpolating linearly between order statistics.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The 2.5% and 97.5% percentiles (linear interpolation between order statistics) of the finite `values`; NaN
/// when there are none.
pub fn percentile_interval(mut values: Vec<f64>) -> [f64; 2] {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return [f64::NAN, f64::NAN];
    }
    values.sort_by(|a, b| a.total_cmp(b));
    [quantile(&values, 0.025), quantile(&values, 0.975)]
}

/// Means of several per-sample columns, with percentile bootstrap intervals from shared resamples of the samples
/// (`resamples` of them, drawn from `seed`'s [`Stream::Resamples`]). Non-finite entries of a column are left out
/// of that column's mean. Without resamples (or samples) the interval is the point itself.
pub fn bootstrap_means(columns: &[&[f64]], resamples: usize, seed: u64) -> Vec<(f64, [f64; 2])> {
    let n = columns.first().map(|c| c.len()).unwrap_or(0);
    let mean_of = |col: &[f64], idx: &mut dyn Iterator<Item = usize>| {
        let (mut sum, mut count) = (0.0, 0usize);
        for i in idx {
            if col[i].is_finite() {
                sum += col[i];
                count += 1;
            }
        }
        if count == 0 {
            f64::NAN
        } else {
            sum / count as f64
        }
    };
    let point: Vec<f64> = columns.iter().map(|c| mean_of(c, &mut (0..n))).collect();
    let mut draws: Vec<Vec<f64>> = columns.iter().map(|_| Vec::with_capacity(resamples)).collect();
    if n > 0 {
        let mut rng = rng::rng(seed, Stream::Resamples);
        for _ in 0..resamples {
            let idx: Vec<usize> = (0..n).map(|_| rng.random_range(0..n)).collect();
            for (c, col) in columns.iter().enumerate() {
                draws[c].push(mean_of(col, &mut idx.iter().copied()));
            }
        }
    }
    point
        .into_iter()
        .zip(draws)
        .map(|(p, d)| (p, if resamples == 0 || n == 0 { [p, p] } else { percentile_interval(d) }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_order_statistics() {
        let values: Vec<f64> = (0..=100).map(f64::from).collect();
        assert_eq!(percentile_interval(values), [2.5, 97.5]);
        assert_eq!(percentile_interval(vec![3.0]), [3.0, 3.0]);
        assert!(percentile_interval(vec![f64::NAN]).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn bootstrap_interval_of_a_mean_has_the_normal_width() {
        // 400 values uniform on a grid over [0, 1): standard deviation 0.2887, standard error 0.01443; the 95%
        // interval should be about 2 * 1.96 * 0.01443 = 0.0566 wide.
        let values: Vec<f64> = (0..400).map(|i| ((i * 37) % 400) as f64 / 400.0).collect();
        let out = bootstrap_means(&[&values], 2000, 3);
        let (mean, [lo, hi]) = out[0];
        assert!((mean - 0.49875).abs() < 1e-12);
        assert!(lo < mean && mean < hi);
        let width = hi - lo;
        assert!((width / 0.0566 - 1.0).abs() < 0.1, "width {width}");
        // Same seed, same interval.
        assert_eq!(bootstrap_means(&[&values], 2000, 3)[0], out[0]);
    }
}
