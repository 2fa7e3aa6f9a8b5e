//! L-BFGS: one loop and one two-loop recursion for both of gradleak's uses, generic over the vector type
//! ([`Vector`]). With [`LineSearch::StrongWolfe`] it follows `torch.optim.LBFGS` step by step (the attacks); with
//! [`LineSearch::Backtracking`] it is a plain Armijo L-BFGS (the logistic-regression probe).
//!
//! A point where the objective (or its gradient) is not finite is never accepted. When no finite progress can be
//! made the run stops with [`Stop::NonFinite`], keeping the last finite point.

use std::collections::VecDeque;

use super::line_search::{self, LineSearch};
use super::vector::Vector;

/// Settings; the defaults are PyTorch's (history 100 as in the DLG code).
#[derive(Debug, Clone, PartialEq)]
pub struct LbfgsOptions {
    /// Number of (s, y) pairs kept.
    pub history: usize,
    pub line_search: LineSearch,
    pub stop: StopRules,
}

impl Default for LbfgsOptions {
    fn default() -> Self {
        LbfgsOptions {
            history: 100,
            line_search: LineSearch::StrongWolfe { lr: 1.0, max_evaluations: 25 },
            stop: StopRules { gradient: Some(1e-7), change: Some(1e-9), relative_change: None },
        }
    }
}

/// When a run stops before its iteration budget (`None`: never for that reason).
#[derive(Debug, Clone, PartialEq)]
pub struct StopRules {
    /// The largest gradient entry is at most this (PyTorch's `tolerance_grad`).
    pub gradient: Option<f64>,
    /// The loss changes by less than this, or the step's largest entry is at most this (PyTorch's
    /// `tolerance_change`, which its strong-Wolfe search also uses: see [`LineSearch::StrongWolfe`]).
    pub change: Option<f64>,
    /// The loss changes by at most this times `max(|previous loss|, 1)`.
    pub relative_change: Option<f64>,
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
pub struct LbfgsResult<V> {
    /// The best point found (the last accepted one).
    pub x: V,
    /// The loss there.
    pub loss: f64,
    /// Iterations done (search directions tried).
    pub iterations: usize,
    /// Iterations that moved the point (all but a last one whose line search found no better point).
    pub steps: usize,
    /// Objective evaluations done.
    pub evaluations: usize,
    /// Evaluations that returned a non-finite loss or gradient.
    pub nonfinite_evaluations: usize,
    pub stop: Stop,
}

/// An objective: the loss at a point and its gradient.
pub type Objective<'a, V> = dyn FnMut(&V) -> (f64, V) + 'a;

/// A step pair and `1 / y.s`.
struct Pair<V> {
    s: V,
    y: V,
    rho: f64,
}

/// The newest step pairs, and the scaling `y.s / y.y` of the newest one.
struct History<V> {
    pairs: VecDeque<Pair<V>>,
    capacity: usize,
    gamma: Option<f64>,
}

impl<V: Vector> History<V> {
    fn new(capacity: usize) -> Self {
        History { pairs: VecDeque::new(), capacity: capacity.max(1), gamma: None }
    }

    /// Keeps a pair (s, y) with `sy` = s.y, `yy` = y.y, dropping the oldest when full.
    fn push(&mut self, s: V, y: V, sy: f64, yy: f64) {
        if self.pairs.len() == self.capacity {
            self.pairs.pop_front();
        }
        self.gamma = Some(sy / yy);
        self.pairs.push_back(Pair { s, y, rho: 1.0 / sy });
    }

    fn clear(&mut self) {
        self.pairs.clear();
        self.gamma = None;
    }

    /// The two-loop recursion: `H q`, with H the inverse-Hessian approximation of the pairs on `gamma * I`.
    fn apply(&self, mut q: V, gamma: f64) -> V {
        let mut alphas = Vec::with_capacity(self.pairs.len());
        for p in self.pairs.iter().rev() {
            let a = p.s.inner(&q) * p.rho;
            q.axpy(-a, &p.y);
            alphas.push(a);
        }
        q.scale(gamma);
        for (p, a) in self.pairs.iter().zip(alphas.iter().rev()) {
            let b = p.y.inner(&q) * p.rho;
            q.axpy(a - b, &p.s);
        }
        q
    }
}

/// Minimises `f` from `x0` for at most `iterations` iterations. `f` returns the loss and its gradient; `on_iteration`
/// is called after every iteration with (iteration, loss).
pub fn minimize<V: Vector>(
    f: &mut Objective<V>,
    x0: V,
    iterations: usize,
    options: &LbfgsOptions,
    on_iteration: &mut dyn FnMut(usize, f64),
) -> LbfgsResult<V> {
    let rules = &options.stop;
    let mut x = x0;
    let (mut loss, mut grad) = f(&x);
    let mut evaluations = 1;
    let mut nonfinite = 0;
    let (mut iteration, mut steps) = (0, 0);
    let mut stop = Stop::Iterations;
    if !(loss.is_finite() && grad.all_finite()) {
        (nonfinite, stop) = (1, Stop::NonFinite);
    } else if rules.gradient.is_some_and(|tol| grad.max_abs() <= tol) {
        stop = Stop::Gradient;
    }
    let mut history = History::new(options.history);
    while stop == Stop::Iterations && iteration < iterations {
        iteration += 1;
        // The direction -H g, each line search with its reference's sign convention and initial scaling.
        let mut d = match options.line_search {
            LineSearch::StrongWolfe { .. } => history.apply(grad.negated(), history.gamma.unwrap_or(1.0)),
            LineSearch::Backtracking => {
                let gamma = history.gamma.unwrap_or_else(|| 1.0 / grad.l1_norm().max(1.0));
                history.apply(grad.duplicate(), gamma).negated()
            }
        };
        let mut gtd = d.inner(&grad);
        let search = match options.line_search {
            LineSearch::StrongWolfe { lr, max_evaluations } => {
                let tolerance_change = rules.change.unwrap_or(0.0);
                if gtd > -tolerance_change {
                    stop = Stop::NoDescent;
                    iteration -= 1;
                    break;
                }
                let t = if iteration == 1 { (1.0f64).min(1.0 / grad.l1_norm()) * lr } else { lr };
                line_search::strong_wolfe(f, &x, t, &d, loss, &grad, gtd, max_evaluations, tolerance_change)
            }
            LineSearch::Backtracking => {
                if gtd >= 0.0 || !gtd.is_finite() {
                    history.clear();
                    d = grad.negated();
                    gtd = d.inner(&grad);
                }
                line_search::backtracking(f, &x, &d, loss, &grad, gtd)
            }
        };
        evaluations += search.evaluations;
        nonfinite += search.nonfinite;
        let t = search.t;
        if t == 0.0 {
            // No finite point with a lower loss was found along the direction.
            stop = if search.nonfinite > 0 { Stop::NonFinite } else { Stop::Stalled };
            on_iteration(iteration, loss);
            break;
        }
        let x_new = x.plus_scaled(t, &d);
        let y = search.g.minus(&grad);
        match options.line_search {
            LineSearch::StrongWolfe { .. } => {
                let s = d.scaled(t);
                let sy = s.inner(&y);
                if sy > 1e-10 {
                    let yy = y.inner(&y);
                    history.push(s, y, sy, yy);
                }
            }
            LineSearch::Backtracking => {
                let s = x_new.minus(&x);
                let (sy, yy) = (s.inner(&y), y.inner(&y));
                if sy > 1e-12 * yy.sqrt() * s.inner(&s).sqrt() {
                    history.push(s, y, sy, yy);
                }
            }
        }
        let prev_loss = loss;
        (x, loss, grad) = (x_new, search.f, search.g);
        steps += 1;
        on_iteration(iteration, loss);
        if iteration == iterations {
            break;
        }
        if rules.gradient.is_some_and(|tol| grad.max_abs() <= tol) {
            stop = Stop::Gradient;
        } else if rules.change.is_some_and(|tol| d.max_abs() * t.abs() <= tol || (loss - prev_loss).abs() < tol) {
            // Stalled against a region where the objective is not finite: say so.
            stop = if search.nonfinite > 0 { Stop::NonFinite } else { Stop::Stalled };
        } else if rules.relative_change.is_some_and(|r| (prev_loss - loss).abs() <= r * prev_loss.abs().max(1.0)) {
            stop = Stop::Stalled;
        }
    }
    LbfgsResult { x, loss, iterations: iteration, steps, evaluations, nonfinite_evaluations: nonfinite, stop }
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
        LbfgsOptions {
            stop: StopRules { gradient: Some(0.0), change: Some(0.0), relative_change: None },
            ..Default::default()
        }
    }

    #[test]
    fn minimises_rosenbrock() {
        let r = minimize(&mut |x: &Vec<f64>| rosenbrock(x), vec![-1.2, 1.0], 200, &exact(), &mut |_, _| {});
        assert!((r.x[0] - 1.0).abs() < 1e-8 && (r.x[1] - 1.0).abs() < 1e-8, "{r:?}");
        // PyTorch's tolerances stop earlier, near the minimum.
        let r =
            minimize(&mut |x: &Vec<f64>| rosenbrock(x), vec![-1.2, 1.0], 200, &LbfgsOptions::default(), &mut |_, _| {});
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
            let r = minimize(&mut |x: &Vec<f64>| rosenbrock(x), vec![-1.2, 1.0], iterations, &exact(), &mut |_, _| {});
            assert!((r.x[0] - x).abs() < 1e-9 && (r.x[1] - y).abs() < 1e-9, "{iterations}: {r:?}");
            assert_eq!((r.iterations, r.evaluations), (iterations, evaluations), "{r:?}");
        }
    }

    #[test]
    fn quadratic_in_few_iterations() {
        // A 50-dimensional convex quadratic with condition number 100: L-BFGS needs at most ~n iterations.
        let scales: Vec<f64> = (0..50).map(|i| 1.0 + 99.0 * i as f64 / 49.0).collect();
        let mut f = |x: &Vec<f64>| {
            let f = x.iter().zip(&scales).map(|(x, s)| 0.5 * s * (x - 1.0) * (x - 1.0)).sum();
            let g = x.iter().zip(&scales).map(|(x, s)| s * (x - 1.0)).collect();
            (f, g)
        };
        let mut iterations_to_converge = None;
        let r = minimize(&mut f, vec![0.0; 50], 100, &exact(), &mut |i, loss| {
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
        let mut f = |x: &Vec<f64>| if x[0] < 3.0 { (-x[0], vec![-1.0]) } else { (f64::NAN, vec![f64::NAN]) };
        let r = minimize(&mut f, vec![0.0], 100, &LbfgsOptions::default(), &mut |_, _| {});
        assert!(r.loss.is_finite() && r.x[0] < 3.0 && r.x[0] > 2.0, "{r:?}");
        assert!(r.nonfinite_evaluations > 0, "{r:?}");
        assert_eq!(r.stop, Stop::NonFinite, "{r:?}");
    }

    #[test]
    fn nonfinite_start_is_reported() {
        let mut f = |_: &Vec<f64>| (f64::INFINITY, vec![0.0]);
        let r = minimize(&mut f, vec![0.0], 10, &LbfgsOptions::default(), &mut |_, _| {});
        assert_eq!(r.stop, Stop::NonFinite);
        assert_eq!(r.iterations, 0);
    }
}
