//! The line searches of [`super::lbfgs::minimize`]: PyTorch's strong-Wolfe search (bracketing, then a zoom with
//! cubic interpolation) and Armijo backtracking. Neither returns a point worse than (or less finite than) the start.

use super::lbfgs::Objective;
use super::vector::Vector;

/// How [`super::minimize`] finds a step along a search direction. Each search comes with the conventions of the
/// L-BFGS code it reproduces, so that both keep their results bit for bit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LineSearch {
    /// `torch.optim.LBFGS(line_search_fn="strong_wolfe")`: PyTorch's `_strong_wolfe` (c1 = 1e-4, c2 = 0.9) with at
    /// most `max_evaluations` evaluations per iteration, from the trial step `lr` (`min(1, 1/|g|_1) lr` at the first
    /// iteration). Step pairs are `(t d, Δg)`, kept when `y.s > 1e-10`; a direction whose slope is above
    /// `-tolerance_change` ends the run ([`super::Stop::NoDescent`]). One addition: a point where the objective is
    /// not finite counts as "too far", and the search bisects towards the last finite point.
    StrongWolfe { lr: f64, max_evaluations: usize },
    /// Backtracking from step 1, halving until a point with a finite loss meets the Armijo condition (c1 = 1e-4),
    /// giving up below 1e-20. Without step pairs the initial inverse Hessian is `I / max(|g|_1, 1)`; step pairs are
    /// `(Δx, Δg)`, kept when `s.y > 1e-12 |s| |y|`; a direction that does not descend is replaced by steepest descent
    /// and the pairs are dropped.
    Backtracking,
}

/// The outcome of one line search: step `t` with the loss and gradient there, or `t` = 0 (with the start's loss
/// and gradient) when no better point was found.
pub struct Step<V> {
    pub t: f64,
    pub f: f64,
    pub g: V,
    pub evaluations: usize,
    /// Evaluations whose loss (strong Wolfe: or gradient) was not finite.
    pub nonfinite: usize,
}

/// Armijo backtracking from step 1 along `d`, whose slope at `x` is `slope`.
pub fn backtracking<V: Vector>(f: &mut Objective<V>, x: &V, d: &V, f0: f64, g0: &V, slope: f64) -> Step<V> {
    let mut step = 1.0;
    let (mut evaluations, mut nonfinite) = (0, 0);
    loop {
        let (f_new, g_new) = f(&x.plus_scaled(step, d));
        evaluations += 1;
        if f_new.is_finite() && f_new <= f0 + 1e-4 * step * slope {
            return Step { t: step, f: f_new, g: g_new, evaluations, nonfinite };
        }
        if !f_new.is_finite() {
            nonfinite += 1;
        }
        step *= 0.5;
        if step < 1e-20 {
            return Step { t: 0.0, f: f0, g: g0.duplicate(), evaluations, nonfinite };
        }
    }
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

/// One evaluation at `x + t d`; a non-finite result becomes (+inf, zero gradient, +inf slope).
struct Probe<'a, 'f, V> {
    f: &'a mut Objective<'f, V>,
    x: &'a V,
    d: &'a V,
    evaluations: usize,
    nonfinite: usize,
}

impl<V: Vector> Probe<'_, '_, V> {
    fn at(&mut self, t: f64) -> (f64, V, f64) {
        let (f, g) = (self.f)(&self.x.plus_scaled(t, self.d));
        self.evaluations += 1;
        if f.is_finite() && g.all_finite() {
            let gtd = g.inner(self.d);
            (f, g, gtd)
        } else {
            self.nonfinite += 1;
            (f64::INFINITY, self.x.zeros(), f64::INFINITY)
        }
    }
}

/// PyTorch's `_strong_wolfe` (c1 = 1e-4, c2 = 0.9) from trial step `t` along `d`, whose slope at `x` is `gtd0`.
#[allow(clippy::too_many_arguments)]
pub fn strong_wolfe<V: Vector>(
    f: &mut Objective<V>,
    x: &V,
    mut t: f64,
    d: &V,
    f0: f64,
    g0: &V,
    gtd0: f64,
    max_evaluations: usize,
    tolerance_change: f64,
) -> Step<V> {
    let (c1, c2) = (1e-4, 0.9);
    let max_ls = max_evaluations.max(1);
    let d_norm = d.max_abs();
    let mut probe = Probe { f, x, d, evaluations: 0, nonfinite: 0 };
    let (mut f_new, mut g_new, mut gtd_new) = probe.at(t);
    let (mut t_prev, mut f_prev, mut g_prev, mut gtd_prev) = (0.0, f0, g0.duplicate(), gtd0);
    let mut done = false;
    let mut ls_iter = 0;
    let mut bracket: Vec<f64>;
    let mut bracket_f: Vec<f64>;
    let mut bracket_g: Vec<V>;
    let mut bracket_gtd: Vec<f64>;
    loop {
        if ls_iter >= max_ls {
            bracket = vec![0.0, t];
            bracket_f = vec![f0, f_new];
            bracket_g = vec![g0.duplicate(), g_new.duplicate()];
            bracket_gtd = vec![gtd0, gtd_new];
            break;
        }
        if f_new > f0 + c1 * t * gtd0 || (ls_iter > 1 && f_new >= f_prev) {
            bracket = vec![t_prev, t];
            bracket_f = vec![f_prev, f_new];
            bracket_g = vec![g_prev, g_new.duplicate()];
            bracket_gtd = vec![gtd_prev, gtd_new];
            break;
        }
        if gtd_new.abs() <= -c2 * gtd0 {
            bracket = vec![t];
            bracket_f = vec![f_new];
            bracket_g = vec![g_new.duplicate()];
            bracket_gtd = vec![gtd_new];
            done = true;
            break;
        }
        if gtd_new >= 0.0 {
            bracket = vec![t_prev, t];
            bracket_f = vec![f_prev, f_new];
            bracket_g = vec![g_prev, g_new.duplicate()];
            bracket_gtd = vec![gtd_prev, gtd_new];
            break;
        }
        let min_step = t + 0.01 * (t - t_prev);
        let max_step = t * 10.0;
        let tmp = t;
        t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, Some((min_step, max_step)));
        t_prev = tmp;
        f_prev = f_new;
        g_prev = g_new.duplicate();
        gtd_prev = gtd_new;
        (f_new, g_new, gtd_new) = probe.at(t);
        ls_iter += 1;
    }

    // Zoom: shrink the bracket until the strong Wolfe conditions hold.
    let mut insufficient_progress = false;
    let (mut low, mut high) = if bracket_f[0] <= bracket_f[bracket_f.len() - 1] { (0, 1) } else { (1, 0) };
    while !done && ls_iter < max_ls && bracket.len() == 2 {
        if (bracket[1] - bracket[0]).abs() * d_norm < tolerance_change {
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
            bracket_g[high] = g_new.duplicate();
            bracket_gtd[high] = gtd_new;
            (low, high) = if bracket_f[0] <= bracket_f[1] { (0, 1) } else { (1, 0) };
        } else {
            if gtd_new.abs() <= -c2 * gtd0 {
                done = true;
            } else if gtd_new * (bracket[high] - bracket[low]) >= 0.0 {
                bracket[high] = bracket[low];
                bracket_f[high] = bracket_f[low];
                bracket_g[high] = bracket_g[low].duplicate();
                bracket_gtd[high] = bracket_gtd[low];
            }
            bracket[low] = t;
            bracket_f[low] = f_new;
            bracket_g[low] = g_new.duplicate();
            bracket_gtd[low] = gtd_new;
        }
    }
    let low = if bracket.len() == 1 { 0 } else { low };
    let (t, f) = (bracket[low], bracket_f[low]);
    let (evaluations, nonfinite) = (probe.evaluations, probe.nonfinite);
    if !f.is_finite() || f > f0 {
        // Never return a point worse than (or less finite than) the start.
        return Step { t: 0.0, f: f0, g: g0.duplicate(), evaluations, nonfinite };
    }
    Step { t, f, g: bracket_g.swap_remove(low), evaluations, nonfinite }
}
