//! Image metrics against scikit-image, and the Hungarian matching against brute force.
//!
//! Reference values: scikit-image 0.26.0 (numpy 2.4.6, scipy 1.17.1), computed by
//! `scripts/reference_image_metrics.py` on image pairs built from a closed form that [`pair`] repeats exactly:
//! `skimage.metrics.mean_squared_error(x, y)`, `peak_signal_noise_ratio(x, y, data_range=R)` and
//! `structural_similarity(x, y, win_size=W, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
//! data_range=R, channel_axis=0)` on float64 (C, H, W) arrays.
//!
//! Tolerances: both sides evaluate the same formulas in float64 on bit-identical inputs (the sine and cosine come
//! from the same C library); only the order of floating-point sums differs (scipy's filter loops, numpy's pairwise
//! mean), which moves results by a few units in the 15th digit: the largest differences measured over the 12 pairs
//! are 3.7e-15 for SSIM, 7.1e-15 dB for PSNR and 2.5e-15 relative for MSE (the test prints them). SSIM is held to
//! 1e-10 absolute, PSNR to 1e-9 dB and MSE to 1e-12 relative: far tighter than the 1e-4 that would matter for
//! SSIM reported to 3-4 digits, with room for a different summation order or C library.

use gradleak::measure::image_metrics::{
    match_reconstructions, min_cost_assignment, mse, pairwise_mse, psnr, ssim, SsimOptions,
};
use tch::{Kind, Tensor};

/// (channels, height, width, seed, amp, data_range, win_size (0: default), mse, psnr, ssim) from scikit-image.
type Case = (i64, i64, i64, u64, f64, f64, usize, f64, f64, f64);
#[rustfmt::skip]
const REFERENCE: &[Case] = &[
    (1, 28, 28, 1, 0.2, 1.0, 0, 0.003351737377550249, 24.74730017472845, 0.8747392720621207),
    (1, 28, 28, 2, 0.8, 1.0, 0, 0.048797152071549554, 13.116055238108705, 0.33104451346699193),
    (3, 32, 32, 3, 0.2, 1.0, 0, 0.0033058876173489918, 24.807119142233667, 0.8802478423110253),
    (3, 32, 32, 4, 0.05, 1.0, 0, 0.00020764091257245734, 36.82687071084309, 0.991071048814331),
    (1, 32, 32, 5, 0.4, 1.0, 0, 0.012948250430226042, 18.877889095619032, 0.6575393589669735),
    (3, 28, 28, 6, 0.3, 1.0, 0, 0.007721308843325085, 21.123090759266795, 0.7649052185932854),
    (1, 8, 8, 7, 0.2, 1.0, 7, 0.003329014309088025, 24.77684338113199, 0.873251887441984),
    (3, 8, 8, 8, 0.3, 1.0, 7, 0.00784811021109647, 21.05234906783184, 0.8233479764878142),
    (1, 8, 8, 9, 0.5, 1.0, 3, 0.023370744933228604, 16.313274444227293, 0.4395750449978668),
    (1, 11, 11, 10, 0.2, 1.0, 0, 0.003934883329625033, 24.050681400650745, 0.8107458657861694),
    (1, 28, 28, 11, 0.2, 255.0, 0, 210.54441275842817, 24.897366398818935, 0.8808105262125556),
    (3, 16, 24, 12, 0.3, 1.0, 0, 0.007640055266073153, 21.16903499845279, 0.7655741039409255),
];

/// The pair of `scripts/reference_image_metrics.py`: a smooth pattern and a clipped LCG-perturbed copy.
fn pair(c: i64, h: i64, w: i64, seed: u64, amp: f64, data_range: f64) -> (Tensor, Tensor) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    let mut state = seed;
    for ch in 0..c {
        for i in 0..h {
            for j in 0..w {
                let (ch, i, j) = (ch as f64, i as f64, j as f64);
                let v = 0.5 + 0.4 * (0.37 * i + 0.9 * ch + 0.1 * seed as f64).sin() * (0.23 * j - 0.6 * ch).cos();
                state = (1664525 * state + 1013904223) % (1 << 32);
                let u = state as f64 / (1u64 << 32) as f64;
                x.push(v * data_range);
                y.push((v + amp * (u - 0.5)).clamp(0.0, 1.0) * data_range);
            }
        }
    }
    (Tensor::from_slice(&x).reshape([c, h, w]), Tensor::from_slice(&y).reshape([c, h, w]))
}

fn options(data_range: f64, win: usize) -> SsimOptions {
    SsimOptions { data_range, win_size: (win > 0).then_some(win), ..SsimOptions::default() }
}

#[test]
fn mse_psnr_ssim_match_scikit_image() {
    let (mut worst_mse, mut worst_psnr, mut worst_ssim) = (0.0f64, 0.0f64, 0.0f64);
    for &(c, h, w, seed, amp, range, win, want_mse, want_psnr, want_ssim) in REFERENCE {
        let (x, y) = pair(c, h, w, seed, amp, range);
        let case = format!("{c}x{h}x{w} seed {seed}");
        let m = mse(&x, &y).unwrap();
        let p = psnr(&x, &y, range).unwrap();
        let s = ssim(&x, &y, &options(range, win)).unwrap();
        assert_eq!((m.len(), p.len(), s.len()), (1, 1, 1));
        let (dm, dp, ds) = ((m[0] - want_mse).abs() / want_mse, (p[0] - want_psnr).abs(), (s[0] - want_ssim).abs());
        worst_mse = worst_mse.max(dm);
        worst_psnr = worst_psnr.max(dp);
        worst_ssim = worst_ssim.max(ds);
        assert!(dm <= 1e-12, "{case}: MSE {} vs scikit-image {want_mse}", m[0]);
        assert!(dp <= 1e-9, "{case}: PSNR {} vs scikit-image {want_psnr}", p[0]);
        assert!(ds <= 1e-10, "{case}: SSIM {} vs scikit-image {want_ssim}", s[0]);
    }
    eprintln!(
        "largest differences to scikit-image: MSE {worst_mse:e} (rel.), PSNR {worst_psnr:e} dB, SSIM {worst_ssim:e}"
    );
}

#[test]
fn a_batch_gives_the_values_of_its_images() {
    let cases: Vec<_> = REFERENCE.iter().filter(|r| (r.0, r.1, r.2) == (3, 32, 32)).collect();
    assert_eq!(cases.len(), 2);
    let pairs: Vec<_> = cases.iter().map(|r| pair(r.0, r.1, r.2, r.3, r.4, r.5)).collect();
    let xs = Tensor::stack(&pairs.iter().map(|p| p.0.shallow_clone()).collect::<Vec<_>>(), 0);
    let ys = Tensor::stack(&pairs.iter().map(|p| p.1.shallow_clone()).collect::<Vec<_>>(), 0);
    let s = ssim(&xs, &ys, &SsimOptions::default()).unwrap();
    let p = psnr(&xs, &ys, 1.0).unwrap();
    for (k, r) in cases.iter().enumerate() {
        assert!((s[k] - r.9).abs() <= 1e-10 && (p[k] - r.8).abs() <= 1e-9, "image {k}: {} {}", s[k], p[k]);
    }
}

#[test]
fn identical_images_score_perfectly() {
    let (x, _) = pair(3, 32, 32, 1, 0.0, 1.0);
    assert_eq!(mse(&x, &x).unwrap(), vec![0.0]);
    assert_eq!(psnr(&x, &x, 1.0).unwrap(), vec![f64::INFINITY]);
    assert!((ssim(&x, &x, &SsimOptions::default()).unwrap()[0] - 1.0).abs() < 1e-12);
}

#[test]
fn single_precision_input_is_converted_not_truncated() {
    let &(c, h, w, seed, amp, range, win, _, _, want) = &REFERENCE[0];
    let (x, y) = pair(c, h, w, seed, amp, range);
    let s = ssim(&x.to_kind(Kind::Float), &y.to_kind(Kind::Float), &options(range, win)).unwrap()[0];
    // Only the float32 rounding of the pixels (about 3e-8) separates this from the float64 reference.
    assert!((s - want).abs() < 1e-6, "{s} vs {want}");
}

#[test]
fn images_smaller_than_the_window_are_refused_clearly() {
    let (x, y) = pair(1, 8, 8, 3, 0.2, 1.0);
    let err = ssim(&x, &y, &SsimOptions::default()).unwrap_err().to_string();
    assert!(err.contains("8x8") && err.contains("11x11") && err.contains("window size"), "{err}");
    let err = ssim(&x, &y, &SsimOptions { win_size: Some(9), ..SsimOptions::default() }).unwrap_err().to_string();
    assert!(err.contains("9x9"), "{err}");
    let err = ssim(&x, &y, &SsimOptions { win_size: Some(6), ..SsimOptions::default() }).unwrap_err().to_string();
    assert!(err.contains("odd"), "{err}");
}

#[test]
fn bad_inputs_are_refused() {
    let (x, y) = pair(1, 12, 12, 3, 0.2, 1.0);
    assert!(mse(&x, &y.narrow(1, 0, 11)).is_err());
    assert!(mse(&x.view([144]), &y.view([144])).is_err());
    assert!(psnr(&x, &y, 0.0).is_err());
    let nan = x.copy();
    let _ = nan.get(0).get(0).get(0).fill_(f64::NAN);
    assert!(ssim(&nan, &y, &SsimOptions::default()).unwrap_err().to_string().contains("NaN"));
}

/// Minimum total cost by trying every injective map of rows to columns.
fn brute_force(cost: &[Vec<f64>]) -> f64 {
    fn go(cost: &[Vec<f64>], row: usize, used: &mut Vec<bool>) -> f64 {
        if row == cost.len() {
            return 0.0;
        }
        let mut best = f64::INFINITY;
        for j in 0..used.len() {
            if !used[j] {
                used[j] = true;
                best = best.min(cost[row][j] + go(cost, row + 1, used));
                used[j] = false;
            }
        }
        best
    }
    go(cost, 0, &mut vec![false; cost[0].len()])
}

#[test]
fn hungarian_matches_brute_force() {
    let mut state: u64 = 12345;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut checked = 0;
    for n in 1..=7usize {
        for m in n..=(n + 2).min(8) {
            for trial in 0..20 {
                // Every third matrix has small integer costs, so that there are ties.
                let cost: Vec<Vec<f64>> = (0..n)
                    .map(|_| {
                        (0..m)
                            .map(|_| if trial % 3 == 0 { (next() * 4.0).floor() } else { next() * 10.0 - 3.0 })
                            .collect()
                    })
                    .collect();
                let a = min_cost_assignment(&cost).unwrap();
                let mut cols = a.clone();
                cols.sort_unstable();
                cols.dedup();
                assert_eq!(cols.len(), n, "{n}x{m}: columns reused in {a:?}");
                assert!(a.iter().all(|&j| j < m));
                let total: f64 = a.iter().enumerate().map(|(i, &j)| cost[i][j]).sum();
                let best = brute_force(&cost);
                assert!((total - best).abs() <= 1e-9, "{n}x{m} trial {trial}: {total} vs brute force {best}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 20 * (3 + 3 + 3 + 3 + 3 + 3 + 2));
}

#[test]
fn hungarian_edge_cases() {
    assert_eq!(min_cost_assignment(&[]).unwrap(), Vec::<usize>::new());
    assert_eq!(min_cost_assignment(&[vec![5.0]]).unwrap(), vec![0]);
    assert!(min_cost_assignment(&[vec![1.0], vec![2.0]]).is_err());
    assert!(min_cost_assignment(&[vec![1.0, f64::NAN]]).is_err());
    assert!(min_cost_assignment(&[vec![1.0, 2.0], vec![1.0]]).is_err());
}

#[test]
fn shuffled_reconstructions_are_matched_back() {
    let originals = Tensor::stack(&(0..5).map(|s| pair(3, 16, 16, s, 0.0, 1.0).0).collect::<Vec<_>>(), 0);
    let noisy = Tensor::stack(&(0..5).map(|s| pair(3, 16, 16, s, 0.3, 1.0).1).collect::<Vec<_>>(), 0);
    let perm = [3i64, 0, 4, 1, 2];
    let shuffled = noisy.index_select(0, &Tensor::from_slice(&perm));
    let a = match_reconstructions(&shuffled, &originals).unwrap();
    assert_eq!(a, perm.iter().map(|&p| p as usize).collect::<Vec<_>>());
    let c = pairwise_mse(&shuffled, &originals).unwrap();
    assert_eq!((c.len(), c[0].len()), (5, 5));
}
