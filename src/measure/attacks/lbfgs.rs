//! L-BFGS with a strong-Wolfe line search on flat `f64` vectors, following `torch.optim.LBFGS`
//! (`line_search_fn="strong_wolfe"`): the same two-loop recursion, curvature test (`y.s > 1e-10`), first step
//! `min(1, 1/|g|_1) * lr`, stopping tests, and the same bracketing / zoom line search with cubic interpolation.
//!
//! One addition: a point where the objective (or its gradient) is not finite is treated as "too far" by the line
//! search, which then bisects towards the last finite point instead of interpolating. When no finite progress can
//! be made the optimiser stops with [`Stop::NonFinite`], keeping the last finite point.

/// Settings; the defaults are PyTorch's (`lr` 1, history 100 as in the DLG code).
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsOptions {
    /// Step length multiplier (the initial trial step of each line search).
    pub lr: f64,
    /// Number of (s, y) pairs kept.
    pub history: usize,
    /// Stop when the largest gradient entry is at most this.
    pub tolerance_grad: f64,
    /// Stop when the loss or the step changes by less than this.
    pub tolerance_change: f64,
    /// Line-search evaluations per iteration at most.
    pub max_line_search: usize,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        LbfgsOptions { lr: 1.0, history: 100, tolerance_grad: 1e-7, tolerance_change: 1e-9, max_line_search: 25 }
    }
}

/// Why the optimiser stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// The iteration budget is used up.
    Iterations,
    /// The gradient is (numerically) zero.
    Gradient,
    /// The loss or the step no longer changes.
    Stalled,
    /// The search direction is not a descent direction any more.
    NoDescent,
    /// The objective became non-finite and no finite progress could be made from the last finite point.
    NonFinite,
}

/// The result of [`minimize`].
#[derive(Debug, Clone)]
pub struct LbfgsResult {
    /// The best point found (the last accepted one).
    pub x: Vec<f64>,
    /// The loss there.
    pub loss: f64,
    /// Iterations done (search directions tried).
    pub iterations: usize,
    /// Objective evaluations done.
    pub evaluations: usize,
    /// Evaluations that returned a non-finite loss or gradient.
    pub nonfinite_evaluations: usize,
    pub stop: Stop,
}

/// An objective: the loss at a point and its gradient.
pub type Objective<'a> = dyn FnMut(&[f64]) -> (f64, Vec<f64>) + 'a;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    // Four accumulators let the compiler vectorise the reduction.
    let mut acc = [0.0f64; 4];
    let chunks = a.len() / 4;
    for i in 0..chunks {
        for k in 0..4 {
            acc[k] += a[4 * i + k] * b[4 * i + k];
        }
    }
    let mut sum = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for i in 4 * chunks..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

fn axpy(alpha: f64, x: &[f64], y: &mut [f64]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

fn finite(f: f64, g: &[f64]) -> bool {
    f.is_finite() && g.iter().all(|v| v.is_finite())
}

/// Minimises `f` from `x0` for at most `iterations` iterations. `f` returns the loss and its gradient; `on_iteration`
/// is called after every iteration with (iteration, loss).
pub fn minimize(
    f: &mut Objective,
    x0: &[f64],
    iterations: usize,
    options: &LbfgsOptions,
    on_iteration: &mut dyn FnMut(usize, f64),
) -> LbfgsResult {
    let n = x0.len();
    let mut x = x0.to_vec();
    let (mut loss, mut grad) = f(&x);
    let mut evaluations = 1;
    let mut nonfinite = 0;
    let done = |x: Vec<f64>, loss, iterations, evaluations, nonfinite, stop| LbfgsResult {
        x,
        loss,
        iterations,
        evaluations,
        nonfinite_evaluations: nonfinite,
        stop,
    };
    if !finite(loss, &grad) {
        return done(x, loss, 0, evaluations, 1, Stop::NonFinite);
    }
    if max_abs(&grad) <= options.tolerance_grad {
        return done(x, loss, 0, evaluations, 0, Stop::Gradient);
    }
    let mut old_dirs: Vec<Vec<f64>> = Vec::new(); // y
    let mut old_steps: Vec<Vec<f64>> = Vec::new(); // s
    let mut ro: Vec<f64> = Vec::new();
    let mut h_diag = 1.0;
    let mut d: Vec<f64> = vec![0.0; n];
    let mut t = 0.0;
    let mut prev_grad: Vec<f64> = Vec::new();
    let mut al = vec![0.0; options.history.max(1)];
    let mut stop = Stop::Iterations;
    let mut iteration = 0;
    while iteration < iterations {
        iteration += 1;
        if iteration == 1 {
            d = grad.iter().map(|g| -g).collect();
        } else {
            let y: Vec<f64> = grad.iter().zip(&prev_grad).map(|(a, b)| a - b).collect();
            let s: Vec<f64> = d.iter().map(|v| v * t).collect();
            let ys = dot(&y, &s);
            if ys > 1e-10 {
                if old_dirs.len() == options.history.max(1) {
                    old_dirs.remove(0);
                    old_steps.remove(0);
                    ro.remove(0);
                }
                h_diag = ys / dot(&y, &y);
                old_dirs.push(y);
                old_steps.push(s);
                ro.push(1.0 / ys);
            }
            let mut q: Vec<f64> = grad.iter().map(|g| -g).collect();
            for i in (0..old_dirs.len()).rev() {
                al[i] = dot(&old_steps[i], &q) * ro[i];
                axpy(-al[i], &old_dirs[i], &mut q);
            }
            for v in q.iter_mut() {
                *v *= h_diag;
            }
            for i in 0..old_dirs.len() {
                let be_i = dot(&old_dirs[i], &q) * ro[i];
                axpy(al[i] - be_i, &old_steps[i], &mut q);
            }
            d = q;
        }
        prev_grad.clone_from(&grad);
        let prev_loss = loss;
        t = if iteration == 1 {
            (1.0f64).min(1.0 / grad.iter().map(|g| g.abs()).sum::<f64>()) * options.lr
        } else {
            options.lr
        };
        let gtd = dot(&grad, &d);
        if gtd > -options.tolerance_change {
            stop = Stop::NoDescent;
            iteration -= 1;
            break;
        }
        let ls = strong_wolfe(f, &x, t, &d, loss, &grad, gtd, options);
        evaluations += ls.evaluations;
        nonfinite += ls.nonfinite;
        t = ls.t;
        if t == 0.0 {
            // No finite point with a lower loss was found along the direction.
            stop = if ls.nonfinite > 0 { Stop::NonFinite } else { Stop::Stalled };
            on_iteration(iteration, loss);
            break;
        }
        axpy(t, &d, &mut x);
        loss = ls.f;
        grad = ls.g;
        on_iteration(iteration, loss);
        if iteration == iterations {
            break;
        }
        if max_abs(&grad) <= options.tolerance_grad {
            stop = Stop::Gradient;
            break;
        }
        if max_abs(&d) * t.abs() <= options.tolerance_change || (loss - prev_loss).abs() < options.tolerance_change {
            // Stalled against a region where the objective is not finite: say so.
            stop = if ls.nonfinite > 0 { Stop::NonFinite } else { Stop::Stalled };
            break;
        }
    }
    done(x, loss, iteration, evaluations, nonfinite, stop)
}

/// Cubic interpolation of the minimiser between two points with values and slopes, clamped to the bounds.
fn cubic_interpolate(x1: f64, f1: f64, g1: f64, x2: f64, f2: f64, g2: f64, bounds: Option<(f64, f64)>) -> f64 {
    let (lo, hi) = bounds.unwrap_or(if x1 <= x2 { (x1, x2) } else { (x2, x1) });
    if !(f1.is_finite() && f2.is_finite() && g1.is_finite() && g2.is_finite()) {
        return (lo + hi) / 2.0;
    }
    let d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2);
    let d2_square = d1 * d1 - g1 * g2;
    if d2_square >= 0.0 {
        let d2 = d2_square.sqrt();
        let min_pos = if x1 <= x2 {
            x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
        } else {
            x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
        };
        if min_pos.is_finite() {
            return min_pos.max(lo).min(hi);
        }
    }
    (lo + hi) / 2.0
}

struct LineSearch {
    f: f64,
    g: Vec<f64>,
    t: f64,
    evaluations: usize,
    nonfinite: usize,
}

/// One evaluation at `x + t d`; non-finite results become (+inf, zero gradient, +inf slope).
struct Probe<'a> {
    f: &'a mut Objective<'a>,
    x: &'a [f64],
    d: &'a [f64],
    evaluations: usize,
    nonfinite: usize,
}

impl Probe<'_> {
    fn at(&mut self, t: f64) -> (f64, Vec<f64>, f64) {
        let point: Vec<f64> = self.x.iter().zip(self.d).map(|(x, d)| x + t * d).collect();
        let (f, g) = (self.f)(&point);
        self.evaluations += 1;
        if finite(f, &g) {
            let gtd = dot(&g, self.d);
            (f, g, gtd)
        } else {
            self.nonfinite += 1;
            (f64::INFINITY, vec![0.0; self.x.len()], f64::INFINITY)
        }
    }
}

/// PyTorch's `_strong_wolfe` (c1 = 1e-4, c2 = 0.9). Returns t = 0 with the starting loss when no point better than
/// the start was found.
#[allow(clippy::too_many_arguments)]
fn strong_wolfe(
    f: &mut Objective,
    x: &[f64],
    mut t: f64,
    d: &[f64],
    f0: f64,
    g0: &[f64],
    gtd0: f64,
    options: &LbfgsOptions,
) -> LineSearch {
    let (c1, c2) = (1e-4, 0.9);
    let max_ls = options.max_line_search.max(1);
    let d_norm = max_abs(d);
    let mut probe = Probe { f, x, d, evaluations: 0, nonfinite: 0 };
    let (mut f_new, mut g_new, mut gtd_new) = probe.at(t);
    let (mut t_prev, mut f_prev, mut g_prev, mut gtd_prev) = (0.0, f0, g0.to_vec(), gtd0);
    let mut done = false;
    let mut ls_iter = 0;
    let mut bracket: Vec<f64>;
    let mut bracket_f: Vec<f64>;
    let mut bracket_g: Vec<Vec<f64>>;
    let mut bracket_gtd: Vec<f64>;
    loop {
        if ls_iter >= max_ls {
            bracket = vec![0.0, t];
            bracket_f = vec![f0, f_new];
            bracket_g = vec![g0.to_vec(), g_new.clone()];
            bracket_gtd = vec![gtd0, gtd_new];
            break;
        }
        if f_new > f0 + c1 * t * gtd0 || (ls_iter > 1 && f_new >= f_prev) {
            bracket = vec![t_prev, t];
            bracket_f = vec![f_prev, f_new];
            bracket_g = vec![g_prev, g_new.clone()];
            bracket_gtd = vec![gtd_prev, gtd_new];
            break;
        }
        if gtd_new.abs() <= -c2 * gtd0 {
            bracket = vec![t];
            bracket_f = vec![f_new];
            bracket_g = vec![g_new.clone()];
            bracket_gtd = vec![gtd_new];
            done = true;
            break;
        }
        if gtd_new >= 0.0 {
            bracket = vec![t_prev, t];
            bracket_f = vec![f_prev, f_new];
            bracket_g = vec![g_prev, g_new.clone()];
            bracket_gtd = vec![gtd_prev, gtd_new];
            break;
        }
        let min_step = t + 0.01 * (t - t_prev);
        let max_step = t * 10.0;
        let tmp = t;
        t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, Some((min_step, max_step)));
        t_prev = tmp;
        f_prev = f_new;
        g_prev = g_new.clone();
        gtd_prev = gtd_new;
        (f_new, g_new, gtd_new) = probe.at(t);
        ls_iter += 1;
    }

    // Zoom: shrink the bracket until the strong Wolfe conditions hold.
    let mut insufficient_progress = false;
    let (mut low, mut high) = if bracket_f[0] <= bracket_f[bracket_f.len() - 1] { (0, 1) } else { (1, 0) };
    while !done && ls_iter < max_ls && bracket.len() == 2 {
        if (bracket[1] - bracket[0]).abs() * d_norm < options.tolerance_change {
            break;
        }
        t = cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1], None);
        let (b_min, b_max) = (bracket[0].min(bracket[1]), bracket[0].max(bracket[1]));
        let eps = 0.1 * (b_max - b_min);
        if (b_max - t).min(t - b_min) < eps {
            if insufficient_progress || t >= b_max || t <= b_min {
                t = if (t - b_max).abs() < (t - b_min).abs() { b_max - eps } else { b_min + eps };
                insufficient_progress = false;
            } else {
                insufficient_progress = true;
            }
        } else {
            insufficient_progress = false;
        }
        (f_new, g_new, gtd_new) = probe.at(t);
        ls_iter += 1;
        if f_new > f0 + c1 * t * gtd0 || f_new >= bracket_f[low] {
            bracket[high] = t;
            bracket_f[high] = f_new;
            bracket_g[high] = g_new.clone();
            bracket_gtd[high] = gtd_new;
            (low, high) = if bracket_f[0] <= bracket_f[1] { (0, 1) } else { (1, 0) };
        } else {
            if gtd_new.abs() <= -c2 * gtd0 {
                done = true;
            } else if gtd_new * (bracket[high] - bracket[low]) >= 0.0 {
                bracket[high] = bracket[low];
                bracket_f[high] = bracket_f[low];
                bracket_g[high] = bracket_g[low].clone();
                bracket_gtd[high] = bracket_gtd[low];
            }
            bracket[low] = t;
            bracket_f[low] = f_new;
            bracket_g[low] = g_new.clone();
            bracket_gtd[low] = gtd_new;
        }
    }
    let low = if bracket.len() == 1 { 0 } else { low };
    let (mut t, mut f, mut g) = (bracket[low], bracket_f[low], std::mem::take(&mut bracket_g[low]));
    if !f.is_finite() || f > f0 {
        // Never return a point worse than (or less finite than) the start.
        (t, f, g) = (0.0, f0, g0.to_vec());
    }
    LineSearch { f, g, t, evaluations: probe.evaluations, nonfinite: probe.nonfinite }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rosenbrock(x: &[f64]) -> (f64, Vec<f64>) {
        let (a, b) = (x[0], x[1]);
        let f = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
        let g = vec![-2.0 * (1.0 - a) - 400.0 * a * (b - a * a), 200.0 * (b - a * a)];
        (f, g)
    }

    /// No tolerance stops, as the attacks run it.
    fn exact() -> LbfgsOptions {
        LbfgsOptions { tolerance_grad: 0.0, tolerance_change: 0.0, ..Default::default() }
    }

    #[test]
    fn minimises_rosenbrock() {
        let r = minimize(&mut rosenbrock, &[-1.2, 1.0], 200, &exact(), &mut |_, _| {});
        assert!((r.x[0] - 1.0).abs() < 1e-8 && (r.x[1] - 1.0).abs() < 1e-8, "{r:?}");
        // PyTorch's tolerances stop earlier, near the minimum.
        let r = minimize(&mut rosenbrock, &[-1.2, 1.0], 200, &LbfgsOptions::default(), &mut |_, _| {});
        assert!(r.loss < 1e-8 && r.iterations < 60, "{r:?}");
        assert!(r.stop != Stop::Iterations, "{r:?}");
    }

    #[test]
    fn follows_pytorch_lbfgs_step_by_step() {
        // torch.optim.LBFGS(lr=1, history_size=100, line_search_fn="strong_wolfe", tolerances 0) in float64 on
        // Rosenbrock from (-1.2, 1), torch 2.13.0: (iterations, x, y, closure evaluations).
        let reference = [
            (5, -1.0203084803940978, 1.0352769866467468, 7),
            (10, -0.6657084570888959, 0.41398308319536115, 12),
            (20, 0.5136224431368508, 0.2558152810317753, 26),
        ];
        for (iterations, x, y, evaluations) in reference {
            let r = minimize(&mut rosenbrock, &[-1.2, 1.0], iterations, &exact(), &mut |_, _| {});
            assert!((r.x[0] - x).abs() < 1e-9 && (r.x[1] - y).abs() < 1e-9, "{iterations}: {r:?}");
            assert_eq!((r.iterations, r.evaluations), (iterations, evaluations), "{r:?}");
        }
    }

    #[test]
    fn quadratic_in_few_iterations() {
        // A 50-dimensional convex quadratic with condition number 100: L-BFGS needs at most ~n iterations.
        let scales: Vec<f64> = (0..50).map(|i| 1.0 + 99.0 * i as f64 / 49.0).collect();
        let mut f = |x: &[f64]| {
            let f = x.iter().zip(&scales).map(|(x, s)| 0.5 * s * (x - 1.0) * (x - 1.0)).sum();
            let g = x.iter().zip(&scales).map(|(x, s)| s * (x - 1.0)).collect();
            (f, g)
        };
        let mut iterations_to_converge = None;
        let r = minimize(&mut f, &[0.0; 50], 100, &exact(), &mut |i, loss| {
            if loss < 1e-16 && iterations_to_converge.is_none() {
                iterations_to_converge = Some(i);
            }
        });
        assert!(r.x.iter().all(|v| (v - 1.0).abs() < 1e-7), "{r:?}");
        assert!(iterations_to_converge.is_some_and(|i| i <= 60), "{iterations_to_converge:?}");
    }

    #[test]
    fn stops_at_nonfinite_region_with_last_finite_point() {
        // Decreasing towards x = 3, undefined beyond: the optimiser must stay finite and stop.
        let mut f = |x: &[f64]| if x[0] < 3.0 { (-x[0], vec![-1.0]) } else { (f64::NAN, vec![f64::NAN]) };
        let r = minimize(&mut f, &[0.0], 100, &LbfgsOptions::default(), &mut |_, _| {});
        assert!(r.loss.is_finite() && r.x[0] < 3.0 && r.x[0] > 2.0, "{r:?}");
        assert!(r.nonfinite_evaluations > 0, "{r:?}");
        assert_eq!(r.stop, Stop::NonFinite, "{r:?}");
    }

    #[test]
    fn nonfinite_start_is_reported() {
        let mut f = |_: &[f64]| (f64::INFINITY, vec![0.0]);
        let r = minimize(&mut f, &[0.0], 10, &LbfgsOptions::default(), &mut |_, _| {});
        assert_eq!(r.stop, Stop::NonFinite);
        assert_eq!(r.iterations, 0);
    }
}
