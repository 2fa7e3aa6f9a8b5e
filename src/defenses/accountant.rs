//! Rényi-DP accountant for DP-SGD: the Poisson-subsampled Gaussian mechanism.
//!
//! One DP-SGD step samples every example independently with probability `q` (Poisson sampling), clips each
//! per-example gradient to L2 norm `C`, sums, adds `N(0, sigma^2 C^2)` noise and averages. Under the add/remove-one
//! adjacency, the Rényi divergence of order `alpha` between the outputs on neighbouring datasets is at most
//! `log(A_alpha) / (alpha - 1)` (Mironov, Talwar, Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian
//! Mechanism"), where
//!
//! ```text
//! A_alpha = E_{z ~ mu0} [ ((1 - q) + q * mu1(z) / mu0(z))^alpha ],   mu0 = N(0, sigma^2), mu1 = N(1, sigma^2).
//! ```
//!
//! * Integer orders: binomial expansion, `A = sum_i C(alpha, i) q^i (1-q)^(alpha-i) exp((i^2 - i) / (2 sigma^2))`.
//! * Fractional orders: the two-series method of Section 3.3 of the paper, splitting the integral at
//!   `z0 = sigma^2 log(1/q - 1) + 1/2`. Like dp-accounting (Google's `RdpAccountant`), the terms are added by
//!   absolute value, which is an upper bound on `A` (so never optimistic) and avoids cancellation; the series is cut
//!   once both parts stop increasing and the last term is below `e^-30` of the total, and an order whose series has not
//!   converged after 1000 terms is given infinite RDP (it then simply cannot be the optimal order; dp-accounting
//!   does the same).
//! * RDP is clamped at 0 from below (rounding can give `log A` a hair below 0 for huge `sigma` or tiny `q`, where
//!   dp-accounting warns and reports epsilon 0; the result is the same).
//!
//! Everything is computed in log space. RDP composes additively over the `T` steps, and is converted to
//! `(epsilon, delta)`-DP with the bound of Balle et al. 2020 ("Hypothesis testing interpretations and Rényi
//! differential privacy", Prop. 12) / Canonne, Kamath, Steinke 2020:
//!
//! ```text
//! epsilon = min over alpha of  rdp(alpha) + log((alpha - 1) / alpha) - (log(delta) + log(alpha)) / (alpha - 1)
//! ```
//!
//! minimised over a fixed grid of orders ([`default_orders`], the grid of dp-accounting). This is the computation
//! of `dp_accounting.rdp.RdpAccountant` (and of Opacus' RDP accountant), and the tests check it against
//! dp-accounting (16 settings, agreement better than 1e-9 relative).

use anyhow::{bail, Result};
use serde::Serialize;

/// The result of [`epsilon`]: the smallest epsilon over the grid of orders, and the order that gave it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrivacySpent {
    /// `f64::INFINITY` when no order gives a finite bound (e.g. `sigma = 0`: no noise, no privacy). Serialised as
    /// JSON `null` in that case (JSON has no infinity).
    #[serde(serialize_with = "finite_or_null")]
    pub epsilon: f64,
    /// The Rényi order at which the minimum is attained; `None` when epsilon is infinite.
    pub best_order: Option<f64>,
}

fn finite_or_null<S: serde::Serializer>(x: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if x.is_finite() {
        s.serialize_f64(*x)
    } else {
        s.serialize_none()
    }
}

/// The grid of Rényi orders used by default, the same as dp-accounting's `DEFAULT_RDP_ORDERS`:
/// 1.1, 1.2, ..., 10.9, then 11, 12, ..., 63, then 128, 256, 512, 1024 (156 orders).
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
    orders.extend((11..64).map(|a| a as f64));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

fn check_params(q: f64, sigma: f64) -> Result<()> {
    if !(q > 0.0 && q <= 1.0) {
        bail!("sample rate must be in (0, 1], got {q}");
    }
    if !(sigma >= 0.0 && sigma.is_finite()) {
        bail!("noise multiplier must be a finite number >= 0, got {sigma}");
    }
    Ok(())
}

/// RDP of `steps` compositions of the Poisson-subsampled Gaussian mechanism (sample rate `q`, noise multiplier
/// `sigma`) at each of `orders` (all > 1). Entries may be `f64::INFINITY` (`sigma = 0`, or an order whose series
/// did not converge).
pub fn rdp(q: f64, sigma: f64, steps: u64, orders: &[f64]) -> Result<Vec<f64>> {
    check_params(q, sigma)?;
    if steps == 0 {
        bail!("steps must be at least 1");
    }
    if let Some(a) = orders.iter().find(|a| !(**a > 1.0 && a.is_finite())) {
        bail!("Rényi orders must be finite and > 1, got {a}");
    }
    Ok(orders.iter().map(|&alpha| steps as f64 * rdp_one_step(q, sigma, alpha)).collect())
}

/// RDP of one step at order `alpha > 1`; parameters already checked.
fn rdp_one_step(q: f64, sigma: f64, alpha: f64) -> f64 {
    if sigma == 0.0 {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * sigma * sigma);
    }
    if 2.0 * sigma * sigma == 0.0 {
        // sigma^2 underflows: (i^2 - i) / (2 sigma^2) would be 0/0 for i = 0, 1 and +inf for the others.
        return f64::INFINITY;
    }
    let log_a = if alpha.fract() == 0.0 && alpha <= u32::MAX as f64 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)
    };
    if log_a.is_nan() {
        // Not expected for valid parameters; an order without a usable value gives no bound.
        return f64::INFINITY;
    }
    // A_alpha >= 1 (a Rényi divergence is >= 0); rounding can give log(A) a hair below 0 when A is 1 to within
    // machine precision (huge sigma, tiny q).
    log_a.max(0.0) / (alpha - 1.0)
}

/// `log(exp(x) + exp(y))`.
fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY || b == f64::INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// `log |C(n, k)|` for real `n`, `k` through log-gamma (as `scipy.special.gammaln` gives `log |Gamma|`).
fn log_comb(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// `log(A_alpha)` for integer `alpha`, `0 < q < 1`.
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let n = alpha as f64;
    let mut log_a = f64::NEG_INFINITY;
    for i in 0..=alpha {
        let i = i as f64;
        let s = log_comb(n, i) + i * log_q + (n - i) * log_1mq + (i * i - i) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, s);
    }
    log_a
}

const MAX_TERMS_LOG_A_FRAC: usize = 1000;

/// `log(A_alpha)` for fractional `alpha`, `0 < q < 1` (Mironov et al. 2019, Sec. 3.3).
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let scale = std::f64::consts::SQRT_2 * sigma;
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for i in 0..MAX_TERMS_LOG_A_FRAC {
        let i = i as f64;
        let j = alpha - i;
        let log_coef = log_comb(alpha, i);
        let log_t0 = log_coef + i * log_q + j * log_1mq;
        let log_t1 = log_coef + j * log_q + i * log_1mq;
        let log_e0 = 0.5f64.ln() + log_erfc((i - z0) / scale);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / scale);
        let log_s0 = log_t0 + (i * i - i) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        // dp-accounting asks for strictly decreasing terms; we also accept a term equal to the previous one, which
        // only happens when rounding stalls it (e.g. huge sigma: z0 ~ 1e200 does not move when 1 is added, or the
        // erfc factor underflowed to exactly 0), and it must still be below e^-30 of the total.
        let falling = |s: f64, last: f64| s <= last;
        if falling(log_s0, last_s0) && falling(log_s1, last_s1) && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    // Not converged: this order gives no usable bound.
    f64::INFINITY
}

/// `log(erfc(x))`, accurate far into the upper tail where `erfc` itself underflows.
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x < 26.0 {
        // libm's erfc keeps full relative precision up to where it underflows (x ~ 26.5).
        return libm::erfc(x).ln();
    }
    // Asymptotic expansion: erfc(x) = exp(-x^2) / (x sqrt(pi)) * sum_k (-1)^k (2k-1)!! / (2x^2)^k. For x >= 26 the
    // ratio of successive terms is below (2k-1)/1352, so 12 terms are far below f64 precision.
    let inv = 1.0 / (2.0 * x * x);
    let (mut sum, mut term) = (1.0, 1.0);
    for k in 1..12 {
        term *= -((2 * k - 1) as f64) * inv;
        sum += term;
    }
    -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + sum.ln()
}

/// The smallest `epsilon` over `orders` for which RDP values `rdp` (one per order) imply `(epsilon, delta)`-DP,
/// with the bound of Balle et al. 2020, Prop. 12. Orders at or below 1.01 are not used by that bound (it is
/// numerically unstable there); an order whose RDP is small enough that `delta >= sqrt(1 - exp(-rdp))` gives
/// `epsilon = 0` (bound through the KL divergence), as in dp-accounting.
pub fn epsilon_from_rdp(orders: &[f64], rdp: &[f64], delta: f64) -> Result<PrivacySpent> {
    if !(delta > 0.0 && delta <= 1.0) {
        bail!("delta must be in (0, 1], got {delta}");
    }
    if orders.len() != rdp.len() {
        bail!("{} orders but {} RDP values", orders.len(), rdp.len());
    }
    if orders.is_empty() {
        bail!("no Rényi orders given");
    }
    let mut best = PrivacySpent { epsilon: f64::INFINITY, best_order: None };
    for (&a, &r) in orders.iter().zip(rdp) {
        if a.is_nan() || a < 1.0 {
            bail!("Rényi orders must be >= 1, got {a}");
        }
        if r.is_nan() || r < 0.0 {
            bail!("RDP at order {a} is {r}: expected a number >= 0");
        }
        let eps = if delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 && r.is_finite() {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        // Strictly smaller: the first order wins ties, like numpy's argmin.
        if eps < best.epsilon {
            best = PrivacySpent { epsilon: eps, best_order: Some(a) };
        }
    }
    // The bound can dip below zero for tiny RDP; epsilon is never negative.
    best.epsilon = best.epsilon.max(0.0);
    Ok(best)
}

/// Epsilon of DP-SGD with Poisson sample rate `q`, noise multiplier `sigma`, `steps` steps, at `delta`, over the
/// [`default_orders`].
pub fn epsilon(q: f64, sigma: f64, steps: u64, delta: f64) -> Result<PrivacySpent> {
    epsilon_with_orders(q, sigma, steps, delta, &default_orders())
}

/// [`epsilon`] over a given grid of orders (all > 1).
pub fn epsilon_with_orders(q: f64, sigma: f64, steps: u64, delta: f64, orders: &[f64]) -> Result<PrivacySpent> {
    if !(delta > 0.0 && delta <= 1.0) {
        bail!("delta must be in (0, 1], got {delta}");
    }
    let r = rdp(q, sigma, steps, orders)?;
    epsilon_from_rdp(orders, &r, delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_erfc_is_continuous_across_the_switch_to_the_asymptotic_series() {
        let below = log_erfc(26.0 - 1e-9);
        let above = log_erfc(26.0);
        assert!((below - above).abs() < 1e-6 * above.abs(), "{below} vs {above}");
        // Far tail: log erfc(x) ~ -x^2 - log(x sqrt(pi)).
        let x: f64 = 1000.0;
        let approx = -x * x - (x * std::f64::consts::PI.sqrt()).ln();
        assert!((log_erfc(x) - approx).abs() < 1e-5);
        assert!((log_erfc(0.0) - 0.0).abs() < 1e-15);
        assert!((log_erfc(-40.0) - 2f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn integer_orders_match_the_closed_form_for_order_two() {
        // A_2 = (1-q)^2 + 2q(1-q) + q^2 e^{1/sigma^2} = 1 + q^2 (e^{1/sigma^2} - 1).
        for (q, sigma) in [(0.01f64, 1.0f64), (0.3, 0.7), (0.9, 4.0)] {
            let want = (q * q * (1.0 / (sigma * sigma)).exp_m1()).ln_1p();
            let got = rdp(q, sigma, 1, &[2.0]).unwrap()[0];
            assert!((got - want).abs() <= 1e-12 * want, "q={q} sigma={sigma}: {got} vs {want}");
        }
    }

    #[test]
    fn fractional_orders_sit_between_their_integer_neighbours() {
        // RDP is non-decreasing in the order.
        let orders = [2.0, 2.5, 3.0, 7.0, 7.3, 8.0];
        let r = rdp(0.02, 0.9, 1, &orders).unwrap();
        assert!(r[0] <= r[1] && r[1] <= r[2], "{r:?}");
        assert!(r[3] <= r[4] && r[4] <= r[5], "{r:?}");
    }

    #[test]
    fn no_subsampling_is_the_plain_gaussian_mechanism() {
        let r = rdp(1.0, 2.0, 10, &[3.0, 1.5]).unwrap();
        assert_eq!(r, vec![10.0 * 3.0 / 8.0, 10.0 * 1.5 / 8.0]);
    }

    #[test]
    fn zero_noise_is_infinite_epsilon() {
        let p = epsilon(0.01, 0.0, 100, 1e-5).unwrap();
        assert!(p.epsilon.is_infinite() && p.best_order.is_none());
        assert_eq!(serde_json::to_value(&p).unwrap()["epsilon"], serde_json::Value::Null);
    }

    #[test]
    fn extreme_parameters_give_numbers_not_errors() {
        // Tiny noise: sigma^2 underflows, no usable guarantee.
        for sigma in [1e-200, 1e-160] {
            let p = epsilon(0.01, sigma, 10, 1e-5).unwrap();
            assert!(p.epsilon.is_infinite(), "sigma={sigma}: {p:?}");
        }
        // Huge noise or a vanishing sample rate: essentially no privacy loss.
        for (q, sigma) in [(0.01, 1e100), (0.01, 1e200), (1e-300, 1.0), (1e-17, 1.0)] {
            let p = epsilon(q, sigma, 1_000_000_000, 1e-5).unwrap();
            assert!(p.epsilon < 1e-3, "q={q} sigma={sigma}: {p:?}");
            let r = rdp(q, sigma, 1, &default_orders()).unwrap();
            assert!(r.iter().all(|v| v.is_finite() && *v >= 0.0), "q={q} sigma={sigma}: {r:?}");
        }
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(epsilon(0.0, 1.0, 1, 1e-5).is_err());
        assert!(epsilon(1.5, 1.0, 1, 1e-5).is_err());
        assert!(epsilon(f64::NAN, 1.0, 1, 1e-5).is_err());
        assert!(epsilon(0.1, -1.0, 1, 1e-5).is_err());
        assert!(epsilon(0.1, 1.0, 0, 1e-5).is_err());
        assert!(epsilon(0.1, 1.0, 1, 0.0).is_err());
        assert!(epsilon(0.1, 1.0, 1, 1.5).is_err());
        assert!(rdp(0.1, 1.0, 1, &[1.0]).is_err());
    }
}
