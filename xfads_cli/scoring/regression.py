"""Regression scores in Neural Latents Benchmark conventions (docs/metrics.md), numpy only: R^2 with
sklearn's semantics, the ridge decoder of vel R2 (behaviour decoded from rates), and psth R2
(predicted vs empirical condition-averaged PSTHs).

Rates are expected spikes PER BIN, counts observed spikes per bin, arrays [trial, time, neuron].
"""

from __future__ import annotations

import numpy as np

from xfads_cli.scoring.smoothing import gaussian_smooth


def r2_score(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination, uniform average over columns (sklearn r2_score semantics).

    y_true, y_pred: [sample] or [sample, output]. Per column 1 - SS_res / SS_tot; a constant column
    (SS_tot == 0) scores 1.0 if predicted exactly, else 0.0 (sklearn force_finite). NaN for < 2 samples.
    """
    yt, yp = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
    if yt.shape != yp.shape:
        raise ValueError(f"y_true {yt.shape} and y_pred {yp.shape} differ in shape")
    if yt.ndim == 1:
        yt, yp = yt[:, None], yp[:, None]
    if yt.shape[0] < 2:
        return float("nan")
    ss_res = np.sum((yt - yp) ** 2, axis=0)
    ss_tot = np.sum((yt - yt.mean(axis=0)) ** 2, axis=0)
    per_column = np.where(ss_res == 0, 1.0, 0.0)
    ok = ss_tot != 0
    per_column[ok] = 1.0 - ss_res[ok] / ss_tot[ok]
    return float(per_column.mean())


def _ridge_fit(X: np.ndarray, Y: np.ndarray, alphas) -> list[tuple[np.ndarray, np.ndarray]]:
    """Closed-form ridge with an unpenalised intercept, for each alpha; X [sample, feature], Y [sample, output].

    Centring X and Y removes the intercept from the penalty (sklearn Ridge, fit_intercept=True);
    the Gram matrix is formed once and reused across alphas.
    """
    x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
    Xc, Yc = X - x_mean, Y - y_mean
    gram, xty = Xc.T @ Xc, Xc.T @ Yc
    eye = np.eye(X.shape[1])
    fits = []
    for alpha in alphas:
        try:
            w = np.linalg.solve(gram + alpha * eye, xty)
        except np.linalg.LinAlgError:  # singular only when alpha == 0 and X is rank-deficient; sklearn falls back the same way
            w = np.linalg.lstsq(gram + alpha * eye, xty, rcond=None)[0]
        fits.append((w, y_mean - x_mean @ w))
    return fits


def ridge_cv(
    X: np.ndarray,
    Y: np.ndarray,
    alphas=np.logspace(-4, 0, 9),
    folds: int = 5,
    seed: int = 0,
    shuffle: bool = False,
) -> tuple[np.ndarray, np.ndarray | float, float]:
    """Ridge regression with alpha chosen by K-fold CV R^2; returns (weights, intercept, alpha).

    X: [sample, feature]; Y: [sample, output] or [sample]. weights: [feature, output] (or [feature]
    for 1-D Y), intercept: [output] (or a float). Semantics of NLB's GridSearchCV(Ridge()): minimise
    ||Y - X w - b||^2 + alpha ||w||^2 (b unpenalised); folds are CONTIGUOUS blocks (sklearn KFold
    without shuffle, sizes as np.array_split), score = r2_score per fold averaged over folds, ties go
    to the earliest alpha in `alphas`, then a refit on all samples. `seed` is used only when
    shuffle=True (contiguous folds are the NLB default and keep neighbouring time bins together).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    one_d = Y.ndim == 1
    Y2 = Y[:, None] if one_d else Y
    if X.ndim != 2 or Y2.ndim != 2 or X.shape[0] != Y2.shape[0]:
        raise ValueError(f"X {X.shape} must be [sample, feature] and Y {Y.shape} [sample(, output)]")
    if X.shape[0] < folds or folds < 2:
        raise ValueError(f"need folds >= 2 and at least {folds} samples, got {X.shape[0]}")
    alphas = np.atleast_1d(np.asarray(alphas, dtype=np.float64))
    order = np.random.default_rng(seed).permutation(X.shape[0]) if shuffle else np.arange(X.shape[0])
    scores = np.zeros(len(alphas))
    for test in np.array_split(order, folds):
        train = np.ones(X.shape[0], dtype=bool)
        train[test] = False
        for i, (w, b) in enumerate(_ridge_fit(X[train], Y2[train], alphas)):
            scores[i] += r2_score(Y2[test], X[test] @ w + b) / folds
    best = int(np.argmax(np.nan_to_num(scores, nan=-np.inf)))
    alpha = float(alphas[best])
    w, b = _ridge_fit(X, Y2, [alpha])[0]
    return (w[:, 0], float(b[0]), alpha) if one_d else (w, b, alpha)


def _lag_and_flatten(rates: np.ndarray, behavior: np.ndarray, lag_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Pair rates at t with behaviour at t + lag within each trial, flatten trials x time, drop NaN rows.

    rates: [trial, time, neuron], behavior: [trial, time, dim] -> ([row, neuron], [row, dim]).
    """
    r = np.asarray(rates, dtype=np.float64)
    b = np.asarray(behavior, dtype=np.float64)
    if r.ndim != 3 or b.ndim != 3 or r.shape[:2] != b.shape[:2]:
        raise ValueError(f"rates {r.shape} and behavior {b.shape} must be [trial, time, *] with equal trial/time")
    if not 0 <= lag_bins < r.shape[1]:
        raise ValueError(f"lag_bins must be in [0, {r.shape[1]}), got {lag_bins}")
    # the last `lag` bins of each trial have no behaviour inside the trial to predict: drop them
    r, b = r[:, : r.shape[1] - lag_bins], b[:, lag_bins:]
    r, b = r.reshape(-1, r.shape[-1]), b.reshape(-1, b.shape[-1])
    keep = ~(np.isnan(r).any(axis=1) | np.isnan(b).any(axis=1))
    return r[keep], b[keep]


def vel_r2(
    train_rates: np.ndarray,
    train_behavior: np.ndarray,
    eval_rates: np.ndarray,
    eval_behavior: np.ndarray,
    lag_bins: int = 0,
) -> float:
    """docs/metrics.md "vel R2": ridge decoder rates -> behaviour fit on TRAIN, R^2 on EVAL.

    *_rates: [trial, time, neuron] (held-in and held-out concatenated by the caller);
    *_behavior: [trial, time, dim]. Behaviour at t + lag_bins is predicted from rates at t within
    each trial; trials x time are flattened and rows with any NaN (rates or behaviour) are dropped.
    alpha by 5-fold contiguous CV over logspace(-4, 0, 9) on train (as NLB's GridSearchCV); returns
    the uniform-average R^2 over behaviour dims on eval (NaN if fewer than 2 eval rows remain).
    """
    x_train, y_train = _lag_and_flatten(train_rates, train_behavior, lag_bins)
    x_eval, y_eval = _lag_and_flatten(eval_rates, eval_behavior, lag_bins)
    w, b, _ = ridge_cv(x_train, y_train, alphas=np.logspace(-4, 0, 9), folds=5)
    return r2_score(y_eval, x_eval @ w + b)


# --------------------------------------------------------------------------------------------------
# PSTH R^2
# --------------------------------------------------------------------------------------------------


def _nanmean_trials(x: np.ndarray) -> np.ndarray:
    """Mean over axis 0 ignoring NaN, NaN (without a warning) where every trial is NaN."""
    seen = (~np.isnan(x)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(seen > 0, np.nansum(x, axis=0) / seen, np.nan)


def psth_r2(
    rates: np.ndarray,
    counts: np.ndarray,
    conditions: np.ndarray,
    bin_ms: float,
    sigma_ms: float = 50.0,
) -> float:
    """docs/metrics.md "psth R2": R^2 of predicted vs empirical condition-averaged PSTHs.

    rates, counts: [trial, time, neuron] (rates per bin, counts per bin); conditions: [trial] labels.
    Per condition with >= 2 trials (a single trial is no average, so such conditions are skipped):
    true PSTH = trial mean of gaussian_smooth(counts, sigma_ms / bin_ms, renormalise_edges=True),
    predicted PSTH = trial mean of rates, both [time, neuron]. Rows (condition x time) are stacked,
    rows with a NaN dropped, and r2_score gives the uniform average of per-neuron R^2.
    NaN if no condition has >= 2 trials.
    """
    r = np.asarray(rates, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    cond = np.asarray(conditions)
    if r.shape != n.shape or r.ndim != 3 or cond.shape != (n.shape[0],):
        raise ValueError(f"rates {r.shape}, counts {n.shape} must be [trial, time, neuron], conditions [trial] ({cond.shape})")
    smoothed = gaussian_smooth(n, sigma_ms / bin_ms, renormalise_edges=True)
    labels, sizes = np.unique(cond, return_counts=True)
    true_rows, pred_rows = [], []
    for label in labels[sizes >= 2]:
        trials = cond == label
        true_rows.append(_nanmean_trials(smoothed[trials]))
        pred_rows.append(_nanmean_trials(r[trials]))
    if not true_rows:
        return float("nan")
    true, pred = np.concatenate(true_rows), np.concatenate(pred_rows)
    keep = ~(np.isnan(true).any(axis=1) | np.isnan(pred).any(axis=1))
    return r2_score(true[keep], pred[keep])
