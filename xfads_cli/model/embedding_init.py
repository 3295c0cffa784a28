"""Where the meta model's sessions start in the embedding space (docs/model.md section 6, "Starting
embeddings"): a signature of each session's population dynamics from its counts alone, compared across
sessions.

Why: the embedding enters f only through the hypernetwork, whose adaptation U(e) V(e)^T is zero at
e = 0 and bilinear near it. With every session's embedding starting near 0 (an encoder that has not
learned to tell them apart) the gradient towards separating them is the product of two small numbers,
and in the minutes a user gives a fit the sessions stayed within a few hundredths of each other
(benchmarks/README.md, meta_embedding.py). Starting them apart, in an order that already follows the
sessions' dynamics where the data show it, gives the hypernetwork something to use from the first step.

The signature reads nothing neuron-specific (sessions have different neurons): the counts are smoothed,
z-scored per neuron and projected on their own top principal components; then

    [fraction of variance of each of the top k components,
     autocorrelation of the projections at lags 1, 2, 4, 8, 16 bins (time scale, oscillation),
     share of the variance the trial average explains (how task-locked the activity is)].

Across sessions each feature is standardised and the sessions' starting embeddings are their scores on
the principal axes of the features, scaled so the first axis has unit sd (the prior's scale).
"""

from __future__ import annotations

import numpy as np

LAGS = (1, 2, 4, 8, 16)
COMPONENTS = 4
SIGNATURE_SIZE = COMPONENTS + len(LAGS) + 1


def _smooth(x: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Gaussian smoothing along time of x [trial, time, neuron]."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    pad = np.pad(x, ((0, 0), (r, r), (0, 0)), mode="edge")
    return sum(w * pad[:, i : i + x.shape[1]] for i, w in enumerate(k))


def dynamics_signature(counts: np.ndarray) -> np.ndarray:
    """counts [trial, time, neuron] (NaN = missing) -> the feature vector of the module docstring."""
    x = np.nan_to_num(np.asarray(counts, dtype=np.float64))
    x = _smooth(x)
    x = (x - x.mean((0, 1))) / np.maximum(x.std((0, 1)), 1e-8)
    trials, T, n = x.shape
    flat = x.reshape(-1, n)
    _, s, vt = np.linalg.svd(flat, full_matrices=False)
    k = min(COMPONENTS, n)
    var = s**2 / max((s**2).sum(), 1e-12)
    frac = np.zeros(COMPONENTS)
    frac[:k] = var[:k]
    proj = (flat @ vt[:k].T).reshape(trials, T, k)
    proj = proj - proj.mean(1, keepdims=True)
    weights = var[:k] / var[:k].sum()
    acf = []
    for lag in LAGS:
        if lag >= T:
            acf.append(0.0)
            continue
        num = (proj[:, lag:] * proj[:, :-lag]).sum((0, 1))
        den = np.maximum((proj**2).sum((0, 1)), 1e-12)
        acf.append(float((weights * num / den).sum()))
    psth = x.mean(0, keepdims=True)
    locked = float((psth**2).sum() * trials / max((x**2).sum(), 1e-12))
    return np.concatenate([frac, acf, [locked]])


def starting_embeddings(signatures: list[np.ndarray], embed_dim: int) -> np.ndarray:
    """[session, embed]: the sessions' scores on the principal axes of their standardised signatures,
    the first axis at unit sd (zeros for fewer than 2 sessions or identical signatures). The sign of
    each axis is fixed (the session with the largest |score| on it is positive), so that the same data
    always starts in the same place."""
    F = np.stack(signatures)
    out = np.zeros((F.shape[0], embed_dim))
    if F.shape[0] < 2:
        return out
    sd = F.std(0)
    keep = sd > 1e-8 * np.maximum(np.abs(F).max(0), 1.0)
    if not keep.any():
        return out
    Z = (F[:, keep] - F[:, keep].mean(0)) / sd[keep]
    u, s, _ = np.linalg.svd(Z, full_matrices=False)
    scores = u * s
    m = min(embed_dim, scores.shape[1])
    first_sd = scores[:, 0].std()
    if first_sd < 1e-12:
        return out
    scores = scores[:, :m] / first_sd
    signs = np.sign(scores[np.abs(scores).argmax(0), np.arange(m)])
    out[:, :m] = scores * np.where(signs == 0, 1.0, signs)
    return out


# Shot counts at which a training session's signature is kept (`signature_ladder`): a signature depends
# on how many trials it is computed from (the trial average of 8 trials holds more noise than that of
# 80), so a new session's few shots are compared with the training sessions' signatures at that count.
LADDER = (1, 2, 4, 8, 16, 32, 64)


def signature_ladder(counts: np.ndarray, draws: int = 16, seed: int = 0) -> np.ndarray:
    """[len(LADDER), feature]: the mean signature of `draws` random subsets of n trials of counts
    [trial, time, neuron], for each n in LADDER (all trials, once, where n >= the trial count)."""
    rng = np.random.default_rng(seed)
    counts = np.asarray(counts)
    rows = []
    for n in LADDER:
        if n >= counts.shape[0]:
            rows.append(dynamics_signature(counts))
            continue
        rows.append(np.mean([dynamics_signature(counts[rng.choice(counts.shape[0], n, replace=False)])
                             for _ in range(draws)], axis=0))
    return np.stack(rows)


def ladder_row(n_trials: int) -> int:
    """The LADDER entry to compare n_trials shots with: the largest n <= n_trials."""
    return max(i for i, n in enumerate(LADDER) if n <= max(n_trials, 1))


def place_by_signature(shots: np.ndarray, signatures: np.ndarray, means: np.ndarray) -> np.ndarray:
    """Where a new session goes among the training sessions, from signatures alone: shots [feature] is
    its signature, signatures [session, feature] the training sessions' at the same number of trials,
    means [session, embed] their fitted embeddings. On the first principal axis of the standardised
    training signatures, the new session's score falls between two neighbouring training sessions
    (or beyond the last): its embedding is interpolated between theirs (or that last one's)."""
    mu, sd = signatures.mean(0), signatures.std(0)
    keep = sd > 1e-8 * np.maximum(np.abs(signatures).max(0), 1.0)
    if signatures.shape[0] < 2 or not keep.any():
        return means.mean(0)
    Z = (signatures[:, keep] - mu[keep]) / sd[keep]
    axis = np.linalg.svd(Z, full_matrices=False)[2][0]
    t = Z @ axis
    h = float(((shots[keep] - mu[keep]) / sd[keep]) @ axis)
    order = np.argsort(t)
    ts, ms = t[order], means[order]
    if h <= ts[0]:
        return ms[0]
    if h >= ts[-1]:
        return ms[-1]
    k = int(np.searchsorted(ts, h))  # ts[k - 1] < h <= ts[k]
    w = (h - ts[k - 1]) / max(ts[k] - ts[k - 1], 1e-12)
    return ms[k - 1] + w * (ms[k] - ms[k - 1])
