#!/usr/bin/env python3
"""Reference epsilons for tests/dp_accountant.rs, from Google's dp-accounting RDP accountant.

    python3 -m venv venv && venv/bin/pip install dp-accounting==0.6.0
    venv/bin/python scripts/reference_dp_epsilon.py

Prints one Rust tuple per setting: (sample rate, noise multiplier, steps, delta, epsilon, optimal order), with the
floats printed by repr() so they round-trip exactly; then, for three settings, the RDP of one step at a few orders.
The orders are dp-accounting's DEFAULT_RDP_ORDERS, which is also gradleak's `accountant::default_orders()`
(1.1, 1.2, ..., 10.9, 11, ..., 63, 128, 256, 512, 1024).
"""

from importlib.metadata import version

import dp_accounting
from absl import logging
from dp_accounting import rdp

# dp-accounting logs a warning for each fractional order whose series does not converge within 1000 terms (it then
# excludes that order, as gradleak does); keep the output to the table.
logging.set_verbosity(logging.ERROR)

ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [128, 256, 512, 1024]
assert ORDERS == list(rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS)

# (sample rate q, noise multiplier sigma, steps T, delta)
SETTINGS = [
    (256 / 60000, 1.1, 14062, 1e-5),  # MNIST DP-SGD tutorial: batch 256 of 60k, 60 epochs
    (0.01, 4.0, 10000, 1e-5),  # Abadi et al. 2016, large noise
    (0.01, 2.0, 10000, 1e-5),
    (0.01, 0.5, 1000, 1e-5),  # small noise
    (0.05, 0.3, 100, 1e-5),  # very small noise
    (0.001, 20.0, 100000, 1e-5),  # very large noise
    (1.0, 1.0, 1, 1e-5),  # no subsampling: plain Gaussian mechanism
    (1.0, 5.0, 100, 1e-6),
    (0.99, 2.0, 10, 1e-5),  # q near 1
    (0.5, 1.5, 50, 1e-5),
    (0.1, 1.0, 1, 1e-5),  # a single step
    (1e-4, 1.0, 10000000, 1e-5),  # huge number of steps
    (0.004, 0.8, 100000, 1e-6),
    (0.02, 1.0, 5000, 1e-3),
    (0.3, 10.0, 1, 1e-5),  # tiny epsilon
    (0.001, 0.6, 2000, 1e-5),
]


def main():
    print(f"// dp-accounting {version('dp-accounting')}")
    for q, sigma, steps, delta in SETTINGS:
        acc = rdp.RdpAccountant(orders=ORDERS)
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
        )
        acc.compose(event)
        eps, order = acc.get_epsilon_and_optimal_order(delta)
        print(f"({q!r}, {sigma!r}, {steps}, {delta!r}, {float(eps)!r}, {float(order)!r}),")
    # Per-step RDP curves at a few orders (inf where the fractional series does not converge).
    curve_orders = [1.1, 1.5, 2.0, 2.5, 3.3, 8.1, 10.9, 17, 63, 128, 1024]
    for q, sigma in [(256 / 60000, 1.1), (0.5, 1.5), (0.05, 0.3)]:
        acc = rdp.RdpAccountant(orders=curve_orders)
        acc.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)))
        values = ", ".join("f64::INFINITY" if v == float("inf") else repr(float(v)) for v in acc.rdp)
        print(f"({q!r}, {sigma!r}, [{values}]),")


if __name__ == "__main__":
    main()
