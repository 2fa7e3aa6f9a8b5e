#!/usr/bin/env python3
"""Reference MSE / PSNR / SSIM values for tests/image_metrics.rs, from scikit-image.

    python3 -m venv venv && venv/bin/pip install scikit-image==0.26.0
    venv/bin/python scripts/reference_image_metrics.py

Each image pair is built from a closed form that tests/image_metrics.rs repeats exactly (see `pair` below):

    x[c, i, j] = 0.5 + 0.4 * sin(0.37 i + 0.9 c + 0.1 seed) * cos(0.23 j - 0.6 c)
    y[c, i, j] = clip(x[c, i, j] + amp * (u - 0.5), 0, 1)

where u runs through a 32-bit linear congruential generator (state = 1664525 state + 1013904223 mod 2^32,
u = state / 2^32, started at `seed`, one draw per value in (c, i, j) order), then both images are multiplied by
`data_range`. Values are float64, channels first (channel_axis=0).

Prints one Rust tuple per pair: (channels, height, width, seed, amp, data_range, win_size (0: default),
mse, psnr, ssim), floats by repr() so they round-trip exactly.
"""

import math
from importlib.metadata import version

import numpy as np
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

# (channels, height, width, seed, amp, data_range, win_size or None)
CASES = [
    (1, 28, 28, 1, 0.2, 1.0, None),  # grey, MNIST size
    (1, 28, 28, 2, 0.8, 1.0, None),  # grey, heavy perturbation
    (3, 32, 32, 3, 0.2, 1.0, None),  # colour, CIFAR size
    (3, 32, 32, 4, 0.05, 1.0, None),  # colour, light perturbation
    (1, 32, 32, 5, 0.4, 1.0, None),
    (3, 28, 28, 6, 0.3, 1.0, None),
    (1, 8, 8, 7, 0.2, 1.0, 7),  # 8x8 digits: window 7
    (3, 8, 8, 8, 0.3, 1.0, 7),
    (1, 8, 8, 9, 0.5, 1.0, 3),
    (1, 11, 11, 10, 0.2, 1.0, None),  # exactly the window: a single SSIM value survives the crop
    (1, 28, 28, 11, 0.2, 255.0, None),  # 8-bit range
    (3, 16, 24, 12, 0.3, 1.0, None),  # not square
]


def pair(c, h, w, seed, amp, data_range):
    x = np.empty((c, h, w))
    y = np.empty((c, h, w))
    state = seed
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                v = 0.5 + 0.4 * math.sin(0.37 * i + 0.9 * ch + 0.1 * seed) * math.cos(0.23 * j - 0.6 * ch)
                state = (1664525 * state + 1013904223) % 2**32
                u = state / 2**32
                x[ch, i, j] = v * data_range
                y[ch, i, j] = min(max(v + amp * (u - 0.5), 0.0), 1.0) * data_range
    return x, y


def main():
    print(f"// scikit-image {version('scikit-image')}, numpy {np.__version__}")
    for c, h, w, seed, amp, data_range, win in CASES:
        x, y = pair(c, h, w, seed, amp, data_range)
        mse = mean_squared_error(x, y)
        psnr = peak_signal_noise_ratio(x, y, data_range=data_range)
        ssim = structural_similarity(
            x,
            y,
            win_size=win,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=data_range,
            channel_axis=0,
        )
        values = ", ".join(repr(float(v)) for v in (mse, psnr, ssim))
        print(f"({c}, {h}, {w}, {seed}, {amp!r}, {data_range!r}, {win or 0}, {values}),")


if __name__ == "__main__":
    main()
