"""The co baseline (issue 12): the NLB smoothing baseline, numpy only.

Held-in counts Gaussian-smoothed in time, log1p, standardised, then a Poisson GLM (log link, L2
penalty, intercept; `fit_poisson_glm`, a damped Newton solver) to each held-out neuron, fitted on
training trials with the smoothing width and the penalty chosen on a train/valid split of the
training trials (`fit_smoothing_glm`); `smoothing_glm_rates` predicts held-out rates from it.
Arrays are [trial, time, neuron], counts spikes per bin (NaN = missing bin).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xfads_cli.scoring.bits import poisson_nll
from xfads_cli.scoring.psth import PSEUDO_SPIKES
from xfads_cli.scoring.smoothing import gaussian_smooth

CO_SIGMAS_MS = (20.0, 40.0, 60.0, 80.0, 120.0)  # candidate held-in smoothing widths (NLB uses 50-ish ms)
GLM_ALPHAS = (1e-1, 1e-2, 1e-3, 1e-4)  # L2 penalty per row (sklearn PoissonRegressor's alpha), strong to weak
GLM_ROWS = 20_000  # at most about this many training bins (whole trials) fit the GLM
SELECT_ROWS = 8_000  # ... and at most about this many choose its smoothing width and penalty
GLM_FEATURES = 64  # more held-in neurons than this are reduced to their first principal components
ROWS_PER_FEATURE = 20  # ... and fewer features are kept when there are fewer than 20 training bins per feature
HESSIAN_ROWS = 2_000  # the GLM's Newton steps estimate the Hessian on at most this many rows

CO_GLM = "smoothing + Poisson GLM"


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
    x = gaussian_smooth(np.asarray(counts)[..., heldin], sigma_bins, renormalise_edges=True, centred=True,
                        fill_missing=True)
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
            return poisson_nll(predict_poisson_glm(Xv, W, b, glm_bounds(Xf, W, b)), Yv, constant=False), (W, b)

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
