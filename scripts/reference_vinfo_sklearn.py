#!/usr/bin/env python3
"""Cross-checks gradleak's categorical V-information estimate (logistic family) against scikit-learn.

    python3 -m venv venv && venv/bin/pip install numpy scikit-learn safetensors
    gradleak vinfo --features G.npy --target Y.npy --kind categorical --family linear --json \\
        --split-out ROLES.npy > VINFO.json
    venv/bin/python scripts/reference_vinfo_sklearn.py --case NAME G.npy Y.npy ROLES.npy VINFO.json [--case ...]

`scripts/check-vinfo-sklearn.sh` runs the whole comparison on LeNet-5 gradients. For every fit k (a row of
ROLES.npy: 0 train, 1 validation, 2 test) this refits what gradleak fits, with scikit-learn:

- each of gradleak's two feature maps: the raw features, and each row over its norm (offset by 1e-6 of the median
  training norm) with the log of the norm appended;
- features standardised with the training part's mean and standard deviation (ddof 0); columns whose standard
  deviation is at rounding level of their mean (gradleak's `Standardiser`) are only centred;
- multinomial `LogisticRegression(solver="lbfgs", max_iter=5000, tol=1e-8)` at each strength of gradleak's grid,
  each from scratch. gradleak minimises the mean log-loss + l2/2 |W|^2 (biases not penalised); scikit-learn
  minimises C * summed log-loss + 1/2 |W|^2, so C = 1 / (n_train * l2). (With two classes scikit-learn fits one
  logit, not two: then C = 2 / (n_train * l2).) The tolerance is tighter than scikit-learn's default 1e-4, which
  stops the weak strengths (1e-4, 1e-5) short of their optimum, by up to 0.4 bits of validation log-loss on these
  gradients: a reference should be at the optimum;
- the map and strength with the lowest validation log-loss of the prediction mixed with 0.1% uniform (`UNIFORM_WEIGHT`);
- the constant predictor instead when it is at least as good on validation: the training part's class prior there,
  and then the null model's own prior, so those samples score 0 bits;
- null model: the class prior of training + validation (frequencies smoothed with a pseudo-count chosen by
  leave-one-out likelihood, the uniform distribution among the candidates), mixed alike;
- bits = mean over samples of -log2 p_null(y) + log2 p_model(y) (a sample scored by several repetitions: the mean
  of its values first, as gradleak does).

Prints gradleak's bits, scikit-learn's bits and the difference per case, with the strengths each side chose, and
exits with status 1 when any |difference| exceeds --threshold (0.2 bits). Runs on one thread: on 2 busy cores
scikit-learn's threaded loss was 14x slower than one thread.
"""

import argparse
import json
import math
import os
import sys
import time
import warnings
from importlib.metadata import version

# One thread for numpy and scikit-learn, set before they load.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

# src/measure/vinfo/linear.rs LOGISTIC_GRID, src/measure/vinfo/model.rs FeatureMap::CANDIDATES and UNIFORM_WEIGHT.
LOGISTIC_GRID = [1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5]
FEATURE_MAPS = ["raw", "direction"]
UNIFORM_WEIGHT = 1e-3


def standardise(train, *others):
    """gradleak's Standardiser: training mean and (ddof 0) standard deviation; near-constant columns only centred."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    scale = np.where(std > np.abs(mean) * 1e-12 + 1e-300, std, 1.0)
    return [(x - mean) / scale for x in (train, *others)]


def feature_map(name, train, *others):
    """gradleak's FeatureMap: "raw", or "direction": each row over its norm (offset by 1e-6 of the median training
    norm), then the log of that norm as one more column."""
    if name == "raw":
        return [train, *others]
    offset = max(np.median(np.linalg.norm(train, axis=1)) * 1e-6, np.finfo(np.float64).tiny)

    def direction(x):
        norm = np.linalg.norm(x, axis=1, keepdims=True) + offset
        return np.concatenate([x / norm, np.log(norm)], axis=1)

    return [direction(x) for x in (train, *others)]


def mix(log_p):
    """Mixes class log-probabilities (N, C) with the uniform distribution, in log space."""
    c = log_p.shape[1]
    return np.logaddexp(log_p + math.log1p(-UNIFORM_WEIGHT), math.log(UNIFORM_WEIGHT / c))


def frequencies(y, classes):
    """gradleak's class prior, (C,) log-probabilities: frequencies smoothed with a pseudo-count a per class, a chosen
    by the leave-one-out log-likelihood among 2^-6 .. 2^8 and the uniform distribution (a = inf)."""
    counts = np.bincount(y, minlength=classes).astype(float)
    n, seen = counts.sum(), counts[counts > 0]
    best_ll, best_a = -n * math.log(classes), math.inf
    for k in range(-6, 9):
        a = 2.0**k
        ll = (seen * np.log(seen - 1.0 + a)).sum() - n * math.log(n - 1.0 + classes * a)
        if ll > best_ll:
            best_ll, best_a = ll, a
    if math.isinf(best_a):
        return np.full(classes, -math.log(classes))
    return np.log((counts + best_a) / (n + classes * best_a))


def log_loss(log_p, y):
    return -log_p[np.arange(len(y)), y].mean()


def logistic_log_probs(model, x, classes):
    """(N, C) log-probabilities over all classes; classes absent from the training part get probability 0."""
    out = np.full((x.shape[0], classes), -np.inf)
    with np.errstate(divide="ignore"):
        out[:, model.classes_] = model.predict_log_proba(x)
    return out


def fit_one(x, y, roles, classes, tol, max_iter):
    """One fit: the chosen strength (inf = constant), the held-out PVI (bits) and sample indices, and diagnostics."""
    train, val, test = (np.flatnonzero(roles == r) for r in (0, 1, 2))
    ytr, yva, yte = y[train], y[val], y[test]
    # gradleak's rule for classes absent from the fitting data is not reproduced here: these cases have none.
    if len(np.unique(np.concatenate([ytr, yva]))) < classes or len(np.unique(ytr)) < classes:
        sys.exit("reference: a class is missing from a fit's training part; this reference does not handle that")
    n = len(train)
    binary = len(np.unique(ytr)) == 2
    best, tried, iterations = None, [], []
    for name in FEATURE_MAPS:
        xtr, xva, xte = standardise(*feature_map(name, x[train], x[val], x[test]))
        for l2 in LOGISTIC_GRID:
            c = (2.0 if binary else 1.0) / (n * l2)
            model = LogisticRegression(C=c, solver="lbfgs", max_iter=max_iter, tol=tol)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                model.fit(xtr, ytr)
            hit_cap = any(issubclass(w.category, ConvergenceWarning) for w in caught)
            iterations.append(int(np.max(model.n_iter_)))
            loss = log_loss(mix(logistic_log_probs(model, xva, classes)), yva)
            tried.append(loss / math.log(2))
            if best is None or loss < best[0]:
                best = (loss, (name, l2), model, hit_cap, xte)
    loss, l2, model, capped, xte = best
    constant_loss = log_loss(mix(np.tile(frequencies(ytr, classes), (len(val), 1))), yva)
    null = mix(frequencies(np.concatenate([ytr, yva]), classes)[None, :])[0]
    if constant_loss <= loss:
        l2, lp_model = ("const", math.inf), null[yte]
    else:
        lp_model = mix(logistic_log_probs(model, xte, classes))[np.arange(len(test)), yte]
    pvi = (lp_model - null[yte]) / math.log(2)
    return l2, pvi, test, tried, capped, iterations


def check_case(name, features, target, roles_path, vinfo_path, tol, max_iter):
    x = np.load(features).astype(np.float64)
    x = x.reshape(x.shape[0], -1)
    codes = np.load(target).reshape(-1)
    _, y = np.unique(codes, return_inverse=True)
    classes = int(y.max()) + 1
    roles = np.load(roles_path)
    with open(vinfo_path) as f:
        report = json.load(f)
    if "families" in report:
        report = report["families"]["linear"]
    if report["target"] != "categorical" or report["family"] != "linear":
        sys.exit(f"{vinfo_path}: expected a categorical estimate of the linear family")
    if roles.shape != (len(report["fits"]), x.shape[0]):
        sys.exit(f"{roles_path}: shape {roles.shape}, expected ({len(report['fits'])}, {x.shape[0]}) from {vinfo_path}")
    sums, counts = np.zeros(x.shape[0]), np.zeros(x.shape[0])
    same_l2, capped_fits, val_gap = 0, 0, 0.0
    sk_l2s, gl_l2s, sk_val, gl_val, sk_iter = [], [], [], [], []
    start = time.perf_counter()
    for k in range(roles.shape[0]):
        l2, pvi, test, tried, capped, iterations = fit_one(x, y, roles[k], classes, tol, max_iter)
        sums[test] += pvi
        counts[test] += 1
        fit = report["fits"][k]
        gl_l2 = ("const", math.inf) if fit["l2"] is None else (fit["features"], fit["l2"])
        sk_l2s.append(l2)
        gl_l2s.append(gl_l2)
        same_l2 += l2 == gl_l2
        capped_fits += capped
        gl_tried = [c["bits"] for c in fit["validation_bits"]]
        val_gap = max(val_gap, max(abs(a - b) for a, b in zip(tried, gl_tried)))
        sk_val.append(tried)
        gl_val.append(gl_tried)
        sk_iter.append(iterations)
    # A sample scored by several repetitions counts once, with the mean of its values.
    scored = counts > 0
    bits = float((sums[scored] / counts[scored]).mean())
    return {
        "case": name,
        "gradleak": report["bits"],
        "sklearn": bits,
        "diff": bits - report["bits"],
        "fits": roles.shape[0],
        "same_l2": same_l2,
        "gradleak_l2": gl_l2s,
        "sklearn_l2": sk_l2s,
        "val_gap": val_gap,
        "capped": capped_fits,
        "warnings": report.get("warnings", []),
        "grid": LOGISTIC_GRID,
        "gradleak_validation_bits": gl_val,
        "sklearn_validation_bits": sk_val,
        "sklearn_iterations": sk_iter,
        "sklearn_seconds": time.perf_counter() - start,
    }


def fmt_l2(values):
    return ",".join("const" if math.isinf(l2) else f"{name[0]}{l2:g}" for name, l2 in values)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--case",
        nargs=5,
        action="append",
        required=True,
        metavar=("NAME", "FEATURES", "TARGET", "ROLES", "VINFO_JSON"),
        help="features (N, D) .npy, class codes (N,) .npy, roles (F, N) .npy from --split-out, vinfo --json output",
    )
    parser.add_argument("--threshold", type=float, default=0.2, help="largest |difference| in bits (default 0.2)")
    parser.add_argument("--tol", type=float, default=1e-8, help="LogisticRegression tol (default 1e-8)")
    parser.add_argument("--max-iter", type=int, default=5000, help="LogisticRegression max_iter (default 5000)")
    parser.add_argument("--json", help="also write the per-case results to this file")
    args = parser.parse_args()

    versions = f"scikit-learn {version('scikit-learn')}, numpy {version('numpy')}"
    print(f"{versions}; tol {args.tol:g}, max_iter {args.max_iter}")
    results = [check_case(*case, args.tol, args.max_iter) for case in args.case]
    header = f"{'case':<16} {'gradleak':>9} {'sklearn':>9} {'diff':>8}  {'same l2':>7} {'val gap':>8}"
    print(f"{header}  strengths (gradleak | sklearn)")
    failed = False
    for r in results:
        bad = abs(r["diff"]) > args.threshold
        failed |= bad
        print(
            f"{r['case']:<16} {r['gradleak']:>9.3f} {r['sklearn']:>9.3f} {r['diff']:>+8.4f}  "
            f"{r['same_l2']:>3}/{r['fits']:<3} {r['val_gap']:>8.4f}  "
            f"{fmt_l2(r['gradleak_l2'])} | {fmt_l2(r['sklearn_l2'])}{'   FAIL' if bad else ''}"
        )
        if r["capped"]:
            print(f"  {r['case']}: scikit-learn reached max_iter in {r['capped']} chosen fit(s)")
        for w in r["warnings"]:
            print(f"  {r['case']}: gradleak: {w}")
    print(
        "bits: held-out mean PVI; same l2: fits where both chose the same strength (or the constant); val gap: largest "
        "difference of a validation log-loss (bits) over fits and strengths"
    )
    if args.json:
        with open(args.json, "w") as f:
            # inf (the constant predictor) as null, as gradleak writes it
            def finite(v):
                if isinstance(v, (list, tuple)):
                    return [finite(x) for x in v]
                return None if isinstance(v, float) and math.isinf(v) else v

            json.dump([{k: finite(v) for k, v in r.items()} for r in results], f, indent=1)
    if failed:
        print(f"FAILED: |gradleak - scikit-learn| > {args.threshold} bits", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
