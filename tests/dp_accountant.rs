//! The RDP accountant against Google's dp-accounting (`dp_accounting.rdp.RdpAccountant`).
//!
//! Reference values: dp-accounting 0.6.0 (with numpy 2.4, scipy 1.17), orders = its `DEFAULT_RDP_ORDERS`
//! (= `accountant::default_orders()`), computed by `scripts/reference_dp_epsilon.py`, i.e. for each setting
//!
//! ```python
//! acc = rdp.RdpAccountant(orders=ORDERS)
//! acc.compose(dp_accounting.SelfComposedDpEvent(
//!     dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps))
//! eps, order = acc.get_epsilon_and_optimal_order(delta)
//! ```
//!
//! Run that script to regenerate the tables. With the same orders our computation is the same, up to floating-point
//! rounding (log-gamma and log-erfc come from different libraries): the largest relative difference measured is
//! 3.9e-10 (q = 0.001, sigma = 20, where order 256 is optimal). The tests require 1e-8 relative for epsilon and
//! every RDP value (far tighter than the 1% that would matter), and the same optimal order.

use gradleak::defenses::accountant::{default_orders, epsilon, epsilon_with_orders, rdp};

/// (sample rate, noise multiplier, steps, delta, epsilon, optimal order) from dp-accounting 0.6.0.
const REFERENCE: &[(f64, f64, u64, f64, f64, f64)] = &[
    (0.004266666666666667, 1.1, 14062, 1e-05, 2.5965558697943036, 8.1),
    (0.01, 4.0, 10000, 1e-05, 1.0354900660362436, 17.0),
    (0.01, 2.0, 10000, 1e-05, 2.352913128781947, 8.9),
    (0.01, 0.5, 1000, 1e-05, 15.4721334181956, 2.0),
    (0.05, 0.3, 100, 1e-05, 89.82236734575258, 1.4),
    (0.001, 20.0, 100000, 1e-05, 0.05154945214879386, 256.0),
    (1.0, 1.0, 1, 1e-05, 4.728507067217623, 5.4),
    (1.0, 5.0, 100, 1e-06, 11.68862679916635, 3.5),
    (0.99, 2.0, 10, 1e-05, 8.01000898485718, 3.9),
    (0.5, 1.5, 50, 1e-05, 15.383875541789635, 2.5),
    (0.1, 1.0, 1, 1e-05, 2.1330059954307927, 6.0),
    (0.0001, 1.0, 10000000, 1e-05, 1.7635571562442511, 11.0),
    (0.004, 0.8, 100000, 1e-06, 15.30483373009408, 2.9),
    (0.02, 1.0, 5000, 0.001, 7.833877974561364, 2.7),
    (0.3, 10.0, 1, 1e-05, 0.12525452139316812, 128.0),
    (0.001, 0.6, 2000, 1e-05, 2.691442940222411, 4.7),
];

/// (sample rate, noise multiplier, RDP of one step at CURVE_ORDERS) from dp-accounting 0.6.0; infinity where the
/// fractional-order series does not converge within 1000 terms (the order is then excluded).
const CURVE_ORDERS: [f64; 11] = [1.1, 1.5, 2.0, 2.5, 3.3, 8.1, 10.9, 17.0, 63.0, 128.0, 1024.0];
#[rustfmt::skip]
const CURVES: &[(f64, f64, [f64; 11])] = &[
    (0.004266666666666667, 1.1, [1.3088543713225588e-05, 1.7713252208474904e-05, 2.339577600995332e-05, 2.936054929697007e-05, 3.899672753157795e-05, 9.965972767911822e-05, 0.00013779841926648913, 1.2272635944671613, 20.488120577148464, 47.39267169385879, 417.6782392360519]),
    (0.5, 1.5, [f64::INFINITY, f64::INFINITY, 0.1309456926833159, 0.17660556020316487, 0.25403533681992285, 1.061388004000697, 1.6729793623799096, 3.0421787200305657, 13.295673026206314, 27.745839412069067, 226.86173081176926]),
    (0.05, 0.3, [f64::INFINITY, 1.0263147957999537, 5.125592044624938, 8.896004568913165, 14.035108767147008, 41.58233360341024, 57.25722406245065, 91.26147890379333, 346.9559494639693, 708.0917903944583, 5685.890228235792]),
];

const REL_TOL: f64 = 1e-8;

#[test]
fn epsilon_matches_dp_accounting() {
    let mut worst = (0.0, 0.0, 0);
    for &(q, sigma, steps, delta, want_eps, want_order) in REFERENCE {
        let got = epsilon(q, sigma, steps, delta).unwrap();
        let rel = (got.epsilon - want_eps).abs() / want_eps;
        if rel > worst.0 {
            worst = (rel, q, steps);
        }
        assert!(
            rel <= REL_TOL,
            "q={q} sigma={sigma} T={steps} delta={delta}: epsilon {} vs dp-accounting {want_eps} (rel. diff {rel:e})",
            got.epsilon
        );
        assert_eq!(got.best_order, Some(want_order), "q={q} sigma={sigma} T={steps} delta={delta}");
    }
    eprintln!("largest relative difference to dp-accounting: {:e} (q={}, T={})", worst.0, worst.1, worst.2);
}

#[test]
fn rdp_curves_match_dp_accounting() {
    for &(q, sigma, ref want) in CURVES {
        let got = rdp(q, sigma, 1, &CURVE_ORDERS).unwrap();
        for ((a, g), w) in CURVE_ORDERS.iter().zip(&got).zip(want) {
            if w.is_infinite() {
                assert!(g.is_infinite(), "q={q} sigma={sigma} order {a}: {g}, dp-accounting excludes this order");
            } else {
                assert!((g - w).abs() <= REL_TOL * w, "q={q} sigma={sigma} order {a}: RDP {g} vs dp-accounting {w}");
            }
        }
    }
}

#[test]
fn mnist_tutorial_setting() {
    // Batch 256 of 60,000, sigma 1.1, 60 epochs: the literature's "epsilon about 3" used the older conversion
    // eps = rdp - log(delta) / (order - 1); the improved conversion gives about 2.6.
    let p = epsilon(256.0 / 60000.0, 1.1, 14062, 1e-5).unwrap();
    assert!((p.epsilon - 2.5966).abs() < 1e-3, "{p:?}");
    let orders = default_orders();
    let r = rdp(256.0 / 60000.0, 1.1, 14062, &orders).unwrap();
    let classic = orders.iter().zip(&r).map(|(a, r)| r + 1e5f64.ln() / (a - 1.0)).fold(f64::INFINITY, f64::min);
    assert!((classic - 3.0).abs() < 0.05, "classic conversion gives {classic}");
}

#[test]
fn epsilon_grows_with_steps_and_sample_rate_and_shrinks_with_noise() {
    let base = epsilon(0.01, 1.0, 1000, 1e-5).unwrap().epsilon;
    assert!(epsilon(0.01, 1.0, 2000, 1e-5).unwrap().epsilon > base);
    assert!(epsilon(0.02, 1.0, 1000, 1e-5).unwrap().epsilon > base);
    assert!(epsilon(0.01, 1.5, 1000, 1e-5).unwrap().epsilon < base);
    assert!(epsilon(0.01, 1.0, 1000, 1e-3).unwrap().epsilon < base);
}

#[test]
fn a_coarser_grid_never_gives_a_smaller_epsilon() {
    let coarse: Vec<f64> = (2..=64).map(f64::from).chain([128.0, 256.0, 512.0]).collect();
    for &(q, sigma, steps, delta, ..) in REFERENCE {
        let fine = epsilon(q, sigma, steps, delta).unwrap().epsilon;
        let c = epsilon_with_orders(q, sigma, steps, delta, &coarse).unwrap().epsilon;
        assert!(c >= fine * (1.0 - 1e-12), "q={q} sigma={sigma}: coarse {c} < fine {fine}");
    }
}
