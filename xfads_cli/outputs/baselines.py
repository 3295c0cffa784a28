"""Trivial baselines to put next to every model score (issue 12), numpy only.

A model's bits/spike mean little until they are set beside what a trivial predictor gets on the SAME
trials and bins. Arrays are [trial, time, neuron]; counts are spikes per bin (NaN = missing bin,
dropped everywhere); rates are expected counts per bin and are never zero (every estimate below
carries a pseudo-count), so metrics.poisson_nll never has to replace a zero rate.

fp baselines (forecast bins, all neurons):
- trial-aligned windows: `loo_psth`, the leave-one-out PSTH: for each trial, each neuron's average
  over all OTHER trials at the same bins, plus one pseudo-trial at the neuron's mean rate (a bin no
  other trial spiked in keeps a positive rate), optionally Gaussian-smoothed in time with the width
  chosen by leave-one-out likelihood on the training trials (`choose_psth_sigma`). With condition
  labels (`psth_pool(..., conditions=)`), the condition-aware version: the average over the other
  trials of the SAME condition (a trial alone in its condition: over all other trials);
- windows chopped out of a continuous recording (bin position carries no meaning): `mean_rate`, each
  neuron's mean over the training trials.

co baseline (held-out neurons): the NLB smoothing baseline, `fit_smoothing_glm`: held-in counts
Gaussian-smoothed in time, log1p, standardised, then a Poisson GLM (log link, L2 penalty, intercept;
`fit_poisson_glm`, a damped Newton solver) to each held-out neuron, fitted on training trials with
the smoothing width and the penalty chosen on a train/valid split of the training trials.

`verdicts` turns the `{split}_{fp,co}_bps` / `{split}_{fp,co}_baseline_bps` pairs of a metrics dict into
one plain sentence per score.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from xfads_cli.outputs.metrics import convolve_time

PSTH_SIGMAS_BINS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # candidate PSTH smoothing widths, in bins (wide: ~flat)
CO_SIGMAS_MS = (20.0, 40.0, 60.0, 80.0, 120.0)  # candidate held-in smoothing widths (NLB uses 50-ish ms)
GLM_ALPHAS = (1e-1, 1e-2, 1e-3, 1e-4)  # L2 penalty per row (sklearn PoissonRegressor's alpha), strong to weak
PSEUDO_SPIKES = 0.5  # pseudo-count of a neuron's mean rate: (spikes + 0.5) / (bins + 1) is never 0
SELECT_TRIALS = 256  # at most this many training trials score each PSTH width
GLM_ROWS = 20_000  # at most about this many training bins (whole trials) fit the GLM
SELECT_ROWS = 8_000  # ... and at most about this many choose its smoothing width and penalty
GLM_FEATURES = 64  # more held-in neurons than this are reduced to their first principal components
ROWS_PER_FEATURE = 20  # ... and fewer features are kept when there are fewer than 20 training bins per feature
HESSIAN_ROWS = 2_000  # the GLM's Newton steps estimate the Hessian on at most this many rows
BLOCK = 64  # trials per block when walking the recording

FP_PSTH = "leave-one-out PSTH"
FP_PSTH_CONDITION = f"condition-aware {FP_PSTH}"  # verdicts name the baseline by this leading text
FP_MEAN = "train-split mean rate"
CO_GLM = "smoothing + Poisson GLM"


def trial_aligned(provenance: dict) -> bool:
    """True unless the loader chopped the windows out of a continuous recording
    (SpikeData.provenance["trials_from"] == "chopped"); interval tables, simulated trials and HDF5
    tensors are trial-aligned."""
    return provenance.get("trials_from") != "chopped"


# -- time smoothing ---------------------------------------------------------------------------------


def gaussian_kernel(sigma_bins: float) -> np.ndarray:
    """Symmetric, normalised Gaussian taps over +-ceil(3 sigma) bins; sigma 0 is the identity [1]."""
    if sigma_bins <= 0:
        return np.ones(1)
    half = int(math.ceil(3 * sigma_bins))
    k = np.arange(-half, half + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / sigma_bins) ** 2)
    return w / w.sum()


def _smooth(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Convolve along axis -2 (time) with zeros beyond the window; x has no NaN."""
    return x.astype(np.float64) if len(w) == 1 else convolve_time(x, w)


def smooth_time(counts: np.ndarray, sigma_bins: float) -> np.ndarray:
    """Gaussian smoothing along time of [..., time, neuron], NaN bins treated as missing: each output
    is the kernel-weighted mean of the observed bins in reach (the edges renormalised), NaN only where
    no observed bin is in reach. A missing bin gets its neighbours' weighted mean."""
    x = np.asarray(counts, dtype=np.float64)
    w = gaussian_kernel(sigma_bins)
    observed = ~np.isnan(x)
    num = _smooth(np.where(observed, x, 0.0), w)
    den = _smooth(observed.astype(np.float64), w)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, num / np.maximum(den, 1e-300), np.nan)


# -- fp baselines -----------------------------------------------------------------------------------


def mean_rate(counts: np.ndarray, trials: np.ndarray | None = None) -> np.ndarray:
    """[neuron] mean count per bin over the `trials` ([trial] bool mask, default all) and all bins,
    NaN ignored, with a pseudo-count: (spikes + 0.5) / (observed bins + 1) > 0."""
    spikes, seen = _totals(counts, trials)
    return (spikes.sum(0) + PSEUDO_SPIKES) / (seen.sum(0) + 1.0)


def _totals(counts: np.ndarray, trials: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(spikes, observed) [time, neuron] summed over the `trials` mask, block by block, float64."""
    n_trial, n_time, n_neuron = counts.shape
    mask = np.ones(n_trial, bool) if trials is None else np.asarray(trials, dtype=bool)
    spikes = np.zeros((n_time, n_neuron))
    seen = np.zeros((n_time, n_neuron))
    for start in range(0, n_trial, BLOCK):
        x = np.asarray(counts[start : start + BLOCK][mask[start : start + BLOCK]], dtype=np.float64)
        observed = ~np.isnan(x)
        spikes += np.where(observed, x, 0.0).sum(0)
        seen += observed.sum(0)
    return spikes, seen


@dataclass(frozen=True)
class PsthPool:
    """Sums over the pooled trials that every leave-one-out PSTH starts from.

    spikes, seen: [time, neuron] spike counts and observed trials per bin; pool: [trial] bool.
    Condition-aware pools (conditions given to psth_pool) also hold codes: [trial] int index into
    labels (-1: no label, such a trial is predicted from all other trials and counts in no
    condition); labels: [condition] the distinct labels, sorted; condition_spikes, condition_seen:
    [condition, time, neuron] the same sums per condition; condition_trials: [condition] pooled
    trials per condition. None of these without conditions."""

    spikes: np.ndarray
    seen: np.ndarray
    pool: np.ndarray
    codes: np.ndarray | None = None
    labels: np.ndarray | None = None
    condition_spikes: np.ndarray | None = None
    condition_seen: np.ndarray | None = None
    condition_trials: np.ndarray | None = None

    @property
    def conditioned(self) -> bool:
        return self.codes is not None


def _unlabelled(label) -> bool:
    """A missing condition label: None, NaN or an empty / blank string."""
    if label is None:
        return True
    if isinstance(label, (float, np.floating)):
        return bool(np.isnan(label))
    return isinstance(label, (str, np.str_, bytes)) and not str(label).strip()


def condition_codes(conditions) -> tuple[np.ndarray, np.ndarray]:
    """(codes [trial] int, labels [condition]) of [trial] condition labels: codes index the sorted
    distinct labels (compared as strings), -1 where the label is missing (None, NaN, '')."""
    raw = np.asarray(conditions, dtype=object).reshape(-1)
    missing = np.array([_unlabelled(c) for c in raw], dtype=bool)
    text = np.array([str(c) for c in raw], dtype=object)
    labels = np.array(sorted(set(text[~missing])), dtype=object)
    codes = np.full(len(raw), -1, dtype=np.intp)
    if len(labels):
        codes[~missing] = np.searchsorted(labels.astype(str), text[~missing].astype(str))
    return codes, labels


def psth_pool(counts: np.ndarray, pool: np.ndarray | None = None, conditions=None) -> PsthPool:
    """The sums of `loo_psth` over the trials of `pool` ([trial] bool, default all) of counts
    [trial, time, neuron]; with `conditions` ([trial] labels, e.g. SpikeData.conditions) also per
    condition, which makes every loo_psth from this pool condition-aware. Extra memory:
    [condition, time, neuron] twice."""
    mask = np.ones(len(counts), bool) if pool is None else np.asarray(pool, dtype=bool)
    spikes, seen = _totals(counts, mask)
    if conditions is None:
        return PsthPool(spikes, seen, mask)
    codes, labels = condition_codes(conditions)
    if len(codes) != len(counts):
        raise ValueError(f"conditions has {len(codes)} labels for {len(counts)} trials")
    n_time, n_neuron = counts.shape[1:]
    c_spikes = np.zeros((len(labels), n_time, n_neuron))
    c_seen = np.zeros((len(labels), n_time, n_neuron))
    for start in range(0, len(counts), BLOCK):
        keep = mask[start : start + BLOCK] & (codes[start : start + BLOCK] >= 0)
        if not keep.any():
            continue
        x = np.asarray(counts[start : start + BLOCK][keep], dtype=np.float64)
        code = codes[start : start + BLOCK][keep]
        observed = ~np.isnan(x)
        for c in np.unique(code):
            c_spikes[c] += np.where(observed[code == c], x[code == c], 0.0).sum(0)
            c_seen[c] += observed[code == c].sum(0)
    c_trials = np.bincount(codes[mask & (codes >= 0)], minlength=len(labels))
    return PsthPool(spikes, seen, mask, codes, labels, c_spikes, c_seen, c_trials)


def loo_psth(counts: np.ndarray, rows, sigma_bins: float = 0.0, pool: PsthPool | None = None) -> np.ndarray:
    """Leave-one-out PSTH rates [len(rows), time, neuron] for the trials `rows` (indices) of counts
    [trial, time, neuron]: per neuron and bin,

        (K*(S - x_i) + m_i K*1) / (K*(D - d_i) + K*1)

    S and D: spikes and observed trials of the pool per bin, x_i and d_i: trial i's own (subtracted
    only when i is in the pool), m_i: the neuron's mean rate over the pooled bins without trial i
    ((spikes + 0.5) / (bins + 1)), acting as one pseudo-trial; K*: Gaussian smoothing in time (sigma
    in bins, zeros beyond the window, so numerator and denominator lose the same mass at the edges).
    With sigma 0 this is (sum over other trials + m_i) / (other trials observed + 1). Never 0.

    A condition-aware pool (psth_pool with conditions) takes S and D over the pooled trials of trial
    i's condition only; m_i stays the mean over all other pooled trials (the pseudo-trial pulls a
    condition with few trials toward the neuron's overall rate). A trial with no other pooled trial
    in its condition (or no label) uses the whole pool as above. Extra memory: the block's rates and
    at most min(block, conditions) smoothed [time, neuron] condition sums."""
    pool = psth_pool(counts) if pool is None else pool
    rows = np.asarray(rows, dtype=np.intp)
    x = np.asarray(counts[rows], dtype=np.float64)
    observed = ~np.isnan(x)
    own = pool.pool[rows][:, None, None]
    x_own = np.where(observed & own, x, 0.0)
    d_own = (observed & own).astype(np.float64)
    # the neuron's mean over the pooled bins of the other trials (the pseudo-trial's constant rate)
    m = (pool.spikes.sum(0) - x_own.sum(1) + PSEUDO_SPIKES) / (pool.seen.sum(0) - d_own.sum(1) + 1.0)
    w = gaussian_kernel(sigma_bins)
    ones = _smooth(np.ones((x.shape[1], 1)), w)  # [time, 1]: K*1, below 1 near the edges
    if not pool.conditioned:
        num = np.maximum(_smooth(pool.spikes, w) - _smooth(x_own, w), 0.0) + m[:, None, :] * ones
        den = np.maximum(_smooth(pool.seen, w) - _smooth(d_own, w), 0.0) + ones
        return num / den
    code = pool.codes[rows]
    labelled = code >= 0
    others = np.zeros(len(rows), dtype=np.intp)  # other pooled trials of the trial's own condition
    others[labelled] = pool.condition_trials[code[labelled]] - pool.pool[rows][labelled]
    same = others > 0
    S = np.empty_like(x)
    D = np.empty_like(x)
    if (~same).any():
        S[~same], D[~same] = _smooth(pool.spikes, w), _smooth(pool.seen, w)
    for c in np.unique(code[same]):  # smoothed one condition at a time: never [condition, time, neuron] at once
        at = same & (code == c)
        S[at], D[at] = _smooth(pool.condition_spikes[c], w), _smooth(pool.condition_seen[c], w)
    num = np.maximum(S - _smooth(x_own, w), 0.0) + m[:, None, :] * ones
    den = np.maximum(D - _smooth(d_own, w), 0.0) + ones
    return num / den


def _poisson_loss(rates: np.ndarray, counts: np.ndarray) -> float:
    """sum(r - n ln r) over observed entries: the Poisson NLL without its rate-free lgamma term."""
    n = np.asarray(counts, dtype=np.float64)
    keep = ~np.isnan(n)
    r = rates[keep]
    return float(np.sum(r - n[keep] * np.log(r)))


def choose_psth_sigma(counts: np.ndarray, trials: np.ndarray | None = None, sigmas=PSTH_SIGMAS_BINS,
                      max_trials: int = SELECT_TRIALS, conditions=None) -> tuple[float, dict]:
    """The PSTH smoothing width (bins) with the best leave-one-out Poisson likelihood over the
    `trials` ([trial] bool, e.g. the train split) of counts [trial, time, neuron]: each of (up to
    max_trials, evenly spaced) of them is predicted by the PSTH of the OTHER such trials (with
    `conditions`, [trial] labels: of the other such trials of its condition, as loo_psth). Returns
    (sigma, {sigma: loss}); ties go to the first (narrowest) width."""
    mask = np.ones(len(counts), bool) if trials is None else np.asarray(trials, dtype=bool)
    index = np.flatnonzero(mask)
    if len(index) < 2:
        return float(sigmas[0]), {}
    if len(index) > max_trials:
        index = index[np.linspace(0, len(index) - 1, max_trials).round().astype(int)]
    pool = psth_pool(counts, mask, conditions)
    losses = {}
    for sigma in sigmas:
        losses[float(sigma)] = sum(_poisson_loss(loo_psth(counts, index[i : i + BLOCK], sigma, pool),
                                                 counts[index[i : i + BLOCK]]) for i in range(0, len(index), BLOCK))
    best = min(losses, key=lambda s: (losses[s], s))
    return best, losses


def psth_gain_bps(counts: np.ndarray, trials: np.ndarray, conditions=None) -> float:
    """How much better the leave-one-out (condition-aware) PSTH of the `trials` ([trial] bool) of counts
    [trial, time, neuron] predicts each of them than the neurons' mean rate over them, in bits per spike,
    at the width choose_psth_sigma picks: > 0 when the recording has trial-locked structure that
    generalises to trials it was not averaged from. NaN with fewer than 2 trials."""
    mask = np.asarray(trials, dtype=bool)
    sigma, losses = choose_psth_sigma(counts, mask, conditions=conditions)
    if not losses:
        return float("nan")
    index = np.flatnonzero(mask)
    if len(index) > SELECT_TRIALS:  # the trials choose_psth_sigma scored
        index = index[np.linspace(0, len(index) - 1, SELECT_TRIALS).round().astype(int)]
    c = counts[index]
    mean = np.broadcast_to(np.nanmean(counts[mask], axis=(0, 1)), c.shape)
    spikes = float(np.nansum(c))
    return (_poisson_loss(mean, c) - losses[sigma]) / max(spikes, 1.0) / np.log(2)


# -- co baseline: smoothing + Poisson GLM -----------------------------------------------------------


def fit_poisson_glm(X: np.ndarray, Y: np.ndarray, penalty: float, *, iterations: int = 30, init=None,
                    tol: float = 1e-5, hessian_rows: int = HESSIAN_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Poisson regression with log link, one per column of Y: minimises per column

        sum_i [exp(x_i w + b) - y_i (x_i w + b)] + penalty / 2 * ||w||^2   (b unpenalised)

    by Newton's method with step halving (Armijo), at most `iterations` steps, over the rows where y
    is observed (NaN rows of a column are dropped for that column). X: [row, feature] (finite),
    Y: [row, output]; returns (W [feature, output], b [output]). init: (W, b) to start from (warm
    start), else W = 0 and b = log of each column's mean (+ a pseudo-count). Linear predictors are
    clipped to [-30, 30], so no step overflows; a column whose step finds no decrease stops there."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    n, p = X.shape
    k = Y.shape[1]
    m = ~np.isnan(Y)
    y0 = np.where(m, Y, 0.0)
    X1 = np.hstack([X, np.ones((n, 1))])
    reg = np.full(p + 1, float(penalty))
    reg[-1] = 1e-8 * max(n, 1)  # keeps the Hessian positive definite; b is in effect unpenalised
    theta = np.zeros((p + 1, k))
    if init is not None:
        theta[:p], theta[p] = init[0], init[1]
    else:
        theta[p] = np.log((y0.sum(0) + PSEUDO_SPIKES) / (m.sum(0) + 1.0))

    def objective(t: np.ndarray, cols) -> np.ndarray:
        eta = np.clip(X1 @ t, -30.0, 30.0)
        return np.sum(m[:, cols] * (np.exp(eta) - y0[:, cols] * eta), 0) + 0.5 * np.sum(reg[:, None] * t**2, 0)

    # the Hessian (one [feature, feature] product per output) dominates the cost: above hessian_rows rows
    # it is estimated on evenly spaced rows (sub-sampled Newton); gradient and line search use them all
    sub = np.linspace(0, n - 1, hessian_rows).round().astype(int) if n > hessian_rows else slice(None)
    X1h, weight = X1[sub], n / len(X1[sub])
    upper = np.triu_indices(p + 1)
    pairs = X1h[:, upper[0]] * X1h[:, upper[1]]  # [hessian row, feature pair]
    spikes = y0.sum(0)
    active = np.ones(k, bool)
    loss = objective(theta, slice(None))
    for _ in range(iterations):
        cols = np.flatnonzero(active)
        if not len(cols):
            break
        mu = np.exp(np.clip(X1 @ theta[:, cols], -30.0, 30.0)) * m[:, cols]
        grad = X1.T @ (mu - y0[:, cols]) + reg[:, None] * theta[:, cols]
        step = _newton_steps(pairs, upper, mu[sub] * weight, reg, grad)
        decrement = np.sum(grad * step, 0)  # > 0 for a descent direction
        done = decrement <= tol * (1.0 + spikes[cols])  # predicted gain below tol nats per spike
        t = np.ones(len(cols))
        accepted = done.copy()
        for _halving in range(40):
            todo = ~accepted
            if not todo.any():
                break
            trial = objective(theta[:, cols[todo]] - t[todo] * step[:, todo], cols[todo])
            ok = trial <= loss[cols[todo]] - 1e-4 * t[todo] * decrement[todo]
            idx = np.flatnonzero(todo)
            accepted[idx[ok]] = True
            t[idx[~ok]] /= 2
        moved = accepted & ~done
        theta[:, cols[moved]] -= t[moved] * step[:, moved]
        loss[cols] = objective(theta[:, cols], cols)
        active[cols[done | ~accepted]] = False  # converged, or no decrease along the Newton step
    return theta[:p], theta[p]


def _newton_steps(pairs: np.ndarray, upper: tuple, mu: np.ndarray, reg: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """H_j^-1 g_j for every output j, H_j = X^T diag(mu[:, j]) X + diag(reg), from pairs = the products
    X[:, a] * X[:, b] of the upper-triangle index pairs `upper`: all Hessians are one matrix product
    (many small BLAS calls crawl on a loaded machine), then one batched solve."""
    size = len(reg)
    flat = mu.T @ pairs  # [output, pair]
    hess = np.zeros((grad.shape[1], size, size))
    hess[:, upper[0], upper[1]] = flat
    hess[:, upper[1], upper[0]] = flat
    hess += np.diag(reg)
    try:
        return np.linalg.solve(hess, grad.T[..., None])[..., 0].T
    except np.linalg.LinAlgError:
        return np.stack([np.linalg.lstsq(h, g, rcond=None)[0] for h, g in zip(hess, grad.T)], axis=1)


def predict_poisson_glm(X: np.ndarray, W: np.ndarray, b: np.ndarray, bounds=None) -> np.ndarray:
    """exp(X W + b) with the linear predictor clipped to bounds = (low [output], high [output]), by
    default [-20, 20]: rates in (2e-9, 5e8), never 0."""
    low, high = (-20.0, 20.0) if bounds is None else bounds
    return np.exp(np.clip(np.asarray(X, dtype=np.float64) @ W + b, low, high))


def glm_bounds(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The range [output] of the linear predictor over the fitted rows X (within [-20, 20]): a GLM is
    not extrapolated past what it was fitted on (a feature outside the training range would
    otherwise send exp(x w + b) anywhere)."""
    eta = np.asarray(X, dtype=np.float64) @ W + b
    return np.clip(eta.min(0), -20.0, 20.0), np.clip(eta.max(0), -20.0, 20.0)


@dataclass(frozen=True)
class SmoothingGLM:
    """A fitted smoothing baseline (fit_smoothing_glm). heldin/heldout: [neuron] masks of the
    recording; features: log1p of the held-in counts smoothed with sigma_bins, NaN filled with `fill`,
    minus `center`, times `project` [heldin, feature] (scaling or principal components); bounds:
    the linear predictor's range on the training rows (glm_bounds), kept at prediction; floor:
    [heldout] lowest rate, 0.5 spike over the training bins (a neuron silent in training, whose GLM
    intercept runs off to -20, keeps the rate a pseudo-count gives it)."""

    sigma_ms: float
    sigma_bins: float
    alpha: float
    heldin: np.ndarray
    heldout: np.ndarray
    fill: np.ndarray
    center: np.ndarray
    project: np.ndarray
    W: np.ndarray
    b: np.ndarray
    bounds: tuple[np.ndarray, np.ndarray]
    floor: np.ndarray

    def describe(self) -> str:
        reduced = f", {self.project.shape[1]} principal components" if self.project.shape[1] < self.heldin.sum() else ""
        return (f"{CO_GLM} (held-in counts smoothed with a Gaussian of sigma {self.sigma_ms:g} ms, log1p{reduced}; "
                f"L2 alpha {self.alpha:g}; both chosen on the train split)")


def _raw_features(counts: np.ndarray, heldin: np.ndarray, sigma_bins: float) -> np.ndarray:
    """log1p of smoothed held-in counts, [trial * time, heldin] (NaN where no observed bin in reach)."""
    x = smooth_time(np.asarray(counts)[..., heldin], sigma_bins)
    return np.log1p(x).reshape(-1, int(heldin.sum()))


def _standardiser(F: np.ndarray, max_features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fill, center, project) from training features F [row, heldin] (may hold NaN)."""
    seen = (~np.isnan(F)).sum(0)
    fill = np.where(seen > 0, np.nansum(F, axis=0) / np.maximum(seen, 1), 0.0)  # column means; 0 if never seen
    G = np.where(np.isnan(F), fill, F)
    center = G.mean(0)
    scale = G.std(0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    project = np.diag(1.0 / scale)
    if G.shape[1] > max_features:
        Z = (G - center) / scale
        eigval, eigvec = np.linalg.eigh(Z.T @ Z / len(Z))  # ascending
        comps = eigvec[:, ::-1][:, :max_features]  # [heldin, max_features], largest variance first
        sd = np.sqrt(np.maximum(eigval[::-1][:max_features], 0.0))
        project = project @ comps / np.where(sd > 1e-12, sd, 1.0)
    return fill, center, project


def _features(F: np.ndarray, fill, center, project) -> np.ndarray:
    return (np.where(np.isnan(F), fill, F) - center) @ project


def _evenly(index: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` (>= 2) of `index`, evenly spaced, in order."""
    limit = max(2, limit)
    return index if len(index) <= limit else index[np.linspace(0, len(index) - 1, limit).round().astype(int)]


def fit_smoothing_glm(counts: np.ndarray, heldout: np.ndarray, trials: np.ndarray, bin_ms: float,
                      sigmas_ms=CO_SIGMAS_MS, alphas=GLM_ALPHAS, max_rows: int = GLM_ROWS,
                      select_rows: int = SELECT_ROWS, max_features: int = GLM_FEATURES) -> SmoothingGLM | None:
    """The NLB smoothing baseline fitted on the `trials` ([trial] bool, the train split) of counts
    [trial, time, neuron]: held-in -> held-out Poisson GLM on smoothed held-in counts.

    The smoothing width (sigmas_ms) and the penalty (alphas, per row) are chosen by the held-out
    Poisson likelihood of every 5th of (at most ~select_rows bins of) those trials, predicted by a GLM
    fit on the others: the width first at alpha 1e-2, then the penalty at that width (with a single
    training trial: 60 ms and the strongest penalty). The GLM is then refitted on (at most ~max_rows
    bins of) all of them. Trials are taken whole and evenly spaced. Features: at most max_features and
    one per ROWS_PER_FEATURE fitted bins (principal components beyond). None when there is no
    held-out or held-in neuron or no observed held-out count in those trials."""
    heldout = np.asarray(heldout, dtype=bool)
    heldin = ~heldout
    n_time = max(counts.shape[1], 1)

    def n_features(rows: int) -> int:  # principal components if the held-in neurons outnumber the rows
        return min(max_features, max(1, rows // ROWS_PER_FEATURE))

    index = _evenly(np.flatnonzero(np.asarray(trials, dtype=bool)), max_rows // n_time)
    if not heldout.any() or not heldin.any() or not len(index):
        return None

    def load(rows: np.ndarray) -> np.ndarray:
        return np.asarray(counts[rows], dtype=np.float64)

    def targets(x: np.ndarray) -> np.ndarray:
        return x[..., heldout].reshape(-1, int(heldout.sum()))

    fit_counts = load(index)
    Y = targets(fit_counts)
    if not (~np.isnan(Y)).any():
        return None
    sigmas_ms, alphas = [float(s) for s in sigmas_ms], [float(a) for a in alphas]
    # without trials to choose on: the NLB-like width and the strongest penalty
    sigma, alpha = (60.0 if 60.0 in sigmas_ms else sigmas_ms[0]), max(alphas)
    chosen = _evenly(np.arange(len(index)), select_rows // n_time)
    inner = np.zeros(len(chosen), bool)
    inner[4::5] = True  # every 5th of them validates the choices
    if not inner.any():
        inner[-1] = True
    rows_valid = np.repeat(inner, n_time)
    select_counts = fit_counts[chosen]
    Ys = targets(select_counts)
    if (~inner).any() and (~np.isnan(Ys[rows_valid])).any():
        Yf, Yv = Ys[~rows_valid], Ys[rows_valid]

        def split_features(s: float) -> tuple[np.ndarray, np.ndarray]:
            raw = _raw_features(select_counts, heldin, s / bin_ms)
            stand = _standardiser(raw[~rows_valid], n_features(int((~rows_valid).sum())))
            return _features(raw[~rows_valid], *stand), _features(raw[rows_valid], *stand)

        def score(features, a: float, init=None):
            Xf, Xv = features
            W, b = fit_poisson_glm(Xf, Yf, a * len(Xf), init=init)
            return _poisson_loss(predict_poisson_glm(Xv, W, b, glm_bounds(Xf, W, b)), Yv), (W, b)

        features = {s: split_features(s) for s in sigmas_ms}
        by_sigma = {s: score(features[s], 1e-2 if 1e-2 in alphas else alpha)[0] for s in sigmas_ms}
        sigma = min(sigmas_ms, key=lambda s: (by_sigma[s], s))
        by_alpha, init = {}, None
        for a in sorted(alphas, reverse=True):  # strong to weak penalty, each warm-started from the last
            by_alpha[a], init = score(features[sigma], a, init)
        alpha = min(alphas, key=lambda a: (by_alpha[a], -a))
    raw = _raw_features(fit_counts, heldin, sigma / bin_ms)
    fill, center, project = _standardiser(raw, n_features(len(raw)))
    X = _features(raw, fill, center, project)
    W, b = fit_poisson_glm(X, Y, alpha * len(X))
    floor = PSEUDO_SPIKES / ((~np.isnan(Y)).sum(0) + 1.0)
    return SmoothingGLM(sigma, sigma / bin_ms, alpha, heldin, heldout, fill, center, project, W, b,
                        glm_bounds(X, W, b), floor)


def smoothing_glm_rates(model: SmoothingGLM, counts: np.ndarray) -> np.ndarray:
    """Held-out rates [trial, time, heldout] predicted from the held-in counts of counts
    [trial, time, neuron] (all neurons; the held-out columns are not read)."""
    n_trial, n_time = counts.shape[:2]
    F = _raw_features(counts, model.heldin, model.sigma_bins)
    X = _features(F, model.fill, model.center, model.project)
    return np.maximum(predict_poisson_glm(X, model.W, model.b, model.bounds), model.floor).reshape(n_trial, n_time, -1)


# -- verdicts ---------------------------------------------------------------------------------------

_KEY = re.compile(r"^(?:(?P<session>.+)/)?(?:(?P<split>train|valid|test)_)?(?P<score>fp|co)_bps$")
_JUDGE_ORDER = ("test", "valid", "", "train")  # the most honest split present is judged
_WHAT = {"fp": ("forecast", "forecasts"), "co": ("held-out neurons", "predicts the held-out neurons")}


def _name(description: str | None) -> str:
    """A baseline's short name: its description up to the details in brackets."""
    return description.split(" (")[0] if description else "trivial baseline"


def verdicts(metrics: dict, baselines: dict | None = None, trials: dict | None = None) -> list[str]:
    """One plain line per score that has a baseline next to it: fp (forecast) and co (held-out
    neurons), judged on the test split when the metrics have it, else valid, else the unprefixed
    (selected trials) score, else train. A model that does not beat its baseline gets a line starting
    'warning: '.

    metrics: {[session/][split_]fp_bps, ..._fp_baseline_bps, ...co_bps, ...co_baseline_bps};
    baselines: {"fp": description, "co": description} (names the baseline: the text before " ("),
    or {session: {...}} for several sessions; trials: {split: "25 test trials"} (split "" for
    unprefixed scores), or {session: {...}}: how the judged trials are described."""
    groups: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
    for key, value in metrics.items():
        match = _KEY.match(key)
        if not match:
            continue
        base_key = key[: -len("_bps")] + "_baseline_bps"
        if base_key not in metrics:
            continue
        session, split, score = match.group("session") or "", match.group("split") or "", match.group("score")
        groups.setdefault(session, {}).setdefault(score, {})[split] = (float(value), float(metrics[base_key]))
    lines = []
    for session, scores in groups.items():
        names = (baselines or {}).get(session, baselines) if session else baselines
        labels = (trials or {}).get(session, trials) if session else trials
        prefix = f"{session}: " if session else ""
        for score in ("fp", "co"):
            found = scores.get(score, {})
            split = next((s for s in _JUDGE_ORDER if s in found and math.isfinite(found[s][1])), None)
            if split is None:
                continue
            model, base = found[split]
            name = _name((names or {}).get(score) if isinstance(names, dict) else None)
            label = (labels or {}).get(split) if isinstance(labels, dict) else None
            where = label or (f"the {split} trials" if split else "the selected trials")
            noun, verb = _WHAT[score]
            if math.isnan(model):  # e.g. a Gaussian mean below 0 where spikes were counted: no Poisson score
                lines.append(f"warning: {prefix}the model's {score}-bps on {where} is undefined (nan; the "
                             f"{name} gets {base:.3f} bits/spike); see docs/metrics.md, 'When a number is missing'")
            elif math.isfinite(model) and model > base:
                ratio = f" ({model / base:.2f}x)" if base > 0 else ""
                lines.append(f"{prefix}{noun}: model {model:.3f} bits/spike vs {name} {base:.3f}{ratio} "
                             f"on {where}: the model is better")
            else:
                lines.append(f"warning: {prefix}the model {verb} {'no better than' if model == base else 'worse than'} "
                             f"the {name} on {where} ({model:.3f} vs {base:.3f} bits/spike); "
                             "train longer (xfads fit --time-limit) or check the data options")
    return lines
