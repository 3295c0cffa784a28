"""Evaluation metrics in Neural Latents Benchmark conventions (docs/metrics.md), numpy only.

Rates are expected spikes PER BIN; counts are observed spikes per bin; arrays are [trial, time, neuron]
(any leading shape works as long as the neuron axis is last). The Poisson NLL and bits per spike
themselves are xfads_cli/scores.py's (shared with the simulator's oracle), importable from here too.
"""

from __future__ import annotations

import numpy as np

from xfads_cli.scores import bits_from_nll, bits_per_spike, poisson_nll

BLOCK_TRIALS = 64  # trials per block when BitsPerSpike walks arrays already in memory


class BitsPerSpike:
    """bits_per_spike accumulated over blocks of trials, for rates too large to hold all at once.

    Both NLL terms are sums over entries and the null model (each neuron's mean count) depends on
    the counts only, so adding per-block sums gives the whole-array value up to float rounding.

    counts:  [trial, time, neuron] ALL evaluated counts (kept by reference, never copied whole);
    neurons: optional [neuron] bool mask of the neurons scored (co-bps: the held-out ones);
    trials:  optional [trial] bool mask of the trials scored, so one stream of blocks can feed
             several scores (e.g. one per split); the other trials' rates are passed over.
    add(rates) takes rates [block, time, neuron] (all neurons) for the next consecutive trials of
    `counts`; value() after the last trial equals
    bits_per_spike(rates[trials][..., neurons], counts[trials][..., neurons]), or NaN when a rate was
    negative where a count is observed: a Gaussian likelihood's expected values can be, and Poisson bits
    per spike are then undefined (bits_per_spike itself raises).
    """

    def __init__(self, counts: np.ndarray, neurons: np.ndarray | None = None, trials: np.ndarray | None = None):
        self.counts = counts
        self.neurons = slice(None) if neurons is None else np.asarray(neurons, dtype=bool)
        self.trials = np.ones(len(counts), dtype=bool) if trials is None else np.asarray(trials, dtype=bool)
        if self.trials.shape != (len(counts),):
            raise ValueError(f"trials mask {self.trials.shape} must be [trial] of counts {np.shape(counts)}")
        self.position = 0  # trials of `counts` covered by the blocks added so far
        self.nll_model = self.nll_null = self.total = 0.0
        self.undefined = False  # a negative rate where a count is observed
        self.neuron_mean = self._neuron_mean()

    def _counts(self, start: int, stop: int) -> np.ndarray:
        """Scored counts of trials start..stop-1 as float64 [scored trial, time, scored neuron]."""
        keep = self.trials[start:stop]
        return np.asarray(self.counts[start:stop][keep][..., self.neurons], dtype=np.float64)

    def _neuron_mean(self) -> np.ndarray:
        """np.nanmean over the scored trials and time per neuron, summed block by block."""
        total = seen = 0.0
        for start in range(0, len(self.counts), BLOCK_TRIALS):
            n = self._counts(start, start + BLOCK_TRIALS)
            flat = n.reshape(-1, n.shape[-1])
            total = total + np.nansum(flat, axis=0)
            seen = seen + (~np.isnan(flat)).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):  # a neuron never observed: NaN, as nanmean
            return np.asarray(total / seen, dtype=np.float64)

    def add(self, rates: np.ndarray) -> None:
        stop = self.position + len(rates)
        if stop > len(self.counts):
            raise ValueError(f"rates for {stop} trials added, counts have {len(self.counts)}")
        n = self._counts(self.position, stop)
        r = np.asarray(rates)[self.trials[self.position : stop]][..., self.neurons]
        self.position = stop
        if n.size == 0:
            return
        if (np.asarray(r) < 0)[~np.isnan(n)].any():
            self.undefined = True
        if not self.undefined:
            self.nll_model += poisson_nll(r, n, constant=False)
        self.nll_null += poisson_nll(np.broadcast_to(self.neuron_mean, n.shape), n, constant=False)
        self.total += float(np.nansum(n))

    def value(self) -> float:
        if self.position != len(self.counts):
            raise ValueError(f"rates of {self.position} of {len(self.counts)} trials added; add them all first")
        if self.undefined:
            return float("nan")
        return bits_from_nll(self.nll_null, self.nll_model, self.total)


def bits_per_spike_blocked(rates: np.ndarray, counts: np.ndarray, trials: np.ndarray | None = None) -> float:
    """bits_per_spike(rates[trials], counts[trials]) of arrays already in memory, BLOCK_TRIALS trials
    at a time: the float64 working copies stay block-sized (e.g. oracle bps of large simulated data)."""
    score = BitsPerSpike(counts, trials=trials)
    for start in range(0, len(counts), BLOCK_TRIALS):
        score.add(rates[start : start + BLOCK_TRIALS])
    return score.value()


# --------------------------------------------------------------------------------------------------
# Named scores (docs/metrics.md "Named scores")
# --------------------------------------------------------------------------------------------------


def co_bps(rates: np.ndarray, counts: np.ndarray, heldout_mask: np.ndarray) -> float:
    """Co-smoothing bits/spike: bps on the HELD-OUT neurons only.

    rates, counts: [trial, time, neuron] (rates in expected spikes per bin, all neurons);
    heldout_mask: [neuron] bool, True for neurons the encoder never read.
    NaN when no neuron is held out (the score is undefined, not zero).
    """
    mask = np.asarray(heldout_mask, dtype=bool)
    r, n = np.asarray(rates, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    if mask.shape != (n.shape[-1],) or r.shape != n.shape:
        raise ValueError(f"heldout_mask {mask.shape} must be [neuron] of rates {r.shape} / counts {n.shape}")
    if not mask.any():
        return float("nan")
    return bits_per_spike(r[..., mask], n[..., mask])


def fp_bps(forecast_rates: np.ndarray, counts: np.ndarray) -> float:
    """Forward-prediction bits/spike: bps of forecast rates on the bins after the context window.

    forecast_rates, counts: [trial, horizon, neuron], both restricted by the caller to the horizon
    bins only, all neurons. The null model is each neuron's mean over those horizon counts (as NLB).
    """
    return bits_per_spike(forecast_rates, counts)


def oracle_bps(true_rates: np.ndarray, counts: np.ndarray) -> float:
    """The same bps scored with the TRUE (simulated) rates: the best a model can do on these counts.

    true_rates, counts: [trial, time, neuron]. Model bps / oracle bps says how close a fit is.
    """
    return bits_per_spike(true_rates, counts)


# --------------------------------------------------------------------------------------------------
# Regression scores (sklearn semantics, numpy only)
# --------------------------------------------------------------------------------------------------


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


def gaussian_window(sigma_bins: float) -> np.ndarray:
    """NLB smooth_spk's kernel: scipy.signal.gaussian(int(6 sigma), sigma, sym=True) / its sum.

    The window spans about +-3 sigma (NLB's choice, kept for comparability); at least 1 tap, so a
    tiny sigma is the identity.
    """
    m = max(int(6 * sigma_bins), 1)
    k = np.arange(m) - (m - 1) / 2.0
    w = np.exp(-0.5 * (k / sigma_bins) ** 2) if sigma_bins > 0 else np.ones(1)
    return w / w.sum()


def convolve_time(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """np.convolve(column, w, 'same') (= scipy.signal.convolve 'same', zero outside) along axis -2.

    Written as a sum over the few kernel taps so it is vectorised over trials and neurons.
    """
    m, t = len(w), x.shape[-2]
    start = (m - 1) // 2  # 'same' keeps full-convolution outputs start .. start + t - 1
    pad = [(0, 0)] * x.ndim
    pad[-2] = (m - 1, m - 1)
    xp = np.pad(x, pad)
    out = np.zeros_like(x, dtype=np.float64)
    for k in range(m):
        lo = start - k + m - 1
        out += w[k] * xp[..., lo : lo + t, :]
    return out


def gaussian_smooth(counts: np.ndarray, sigma_bins: float, renormalise_edges: bool = False) -> np.ndarray:
    """Gaussian smoothing along time, per trial and neuron. counts: [trial, time, neuron] (or [time, neuron]).

    renormalise_edges=False replicates NLB smooth_spk on one trial exactly: convolution 'same' with
    the normalised window of gaussian_window, zeros beyond the trial, so the first and last ~3 sigma
    are attenuated and NaNs propagate. renormalise_edges=True divides by the kernel mass that fell on
    observed bins instead: a constant stays constant up to the edges and NaN bins count as missing
    (they stay NaN in the output). NLB smooths whole continuous sessions, where trial edges see real
    neighbouring data, so per trial the renormalised form is the closer analogue of its PSTHs.
    """
    x = np.asarray(counts, dtype=np.float64)
    w = gaussian_window(sigma_bins)
    if not renormalise_edges:
        return convolve_time(x, w)
    observed = ~np.isnan(x)
    mass = convolve_time(observed.astype(np.float64), w)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = convolve_time(np.where(observed, x, 0.0), w) / mass
    return np.where(observed, out, np.nan)


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
