"""The fp baselines (issue 12): what a trivial predictor forecasts for the same trials and bins as a
model, numpy only.

Arrays are [trial, time, neuron]; counts are spikes per bin (NaN = missing bin, dropped everywhere);
rates are expected counts per bin and are never zero (every estimate carries a pseudo-count), so
poisson_nll never has to replace a zero rate.

- trial-aligned windows: `loo_psth`, the leave-one-out PSTH: for each trial, each neuron's average
  over all OTHER trials at the same bins, plus one pseudo-trial at the neuron's mean rate (a bin no
  other trial spiked in keeps a positive rate), optionally Gaussian-smoothed in time with the width
  chosen by leave-one-out likelihood on the training trials (`choose_psth_sigma`). With condition
  labels (`psth_pool(..., conditions=)`), the condition-aware version: the average over the other
  trials of the SAME condition (a trial alone in its condition: over all other trials);
- windows chopped out of a continuous recording (bin position carries no meaning): `mean_rate`, each
  neuron's mean over the training trials.

`psth_gain_bps` says how much the trial average predicts held-out trials (fit's choice of task inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xfads_cli.scoring.bits import poisson_nll
from xfads_cli.scoring.smoothing import convolve_time, gaussian_window

PSTH_SIGMAS_BINS = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # candidate PSTH smoothing widths, in bins (wide: ~flat)
PSEUDO_SPIKES = 0.5  # pseudo-count of a neuron's mean rate: (spikes + 0.5) / (bins + 1) is never 0
SELECT_TRIALS = 256  # at most this many training trials score each PSTH width
BLOCK = 64  # trials per block when walking the recording


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
    w = gaussian_window(sigma_bins, centred=True)
    ones = convolve_time(np.ones((x.shape[1], 1)), w)  # [time, 1]: K*1, below 1 near the edges
    if not pool.conditioned:
        num = np.maximum(convolve_time(pool.spikes, w) - convolve_time(x_own, w), 0.0) + m[:, None, :] * ones
        den = np.maximum(convolve_time(pool.seen, w) - convolve_time(d_own, w), 0.0) + ones
        return num / den
    code = pool.codes[rows]
    labelled = code >= 0
    others = np.zeros(len(rows), dtype=np.intp)  # other pooled trials of the trial's own condition
    others[labelled] = pool.condition_trials[code[labelled]] - pool.pool[rows][labelled]
    same = others > 0
    S = np.empty_like(x)
    D = np.empty_like(x)
    if (~same).any():
        S[~same], D[~same] = convolve_time(pool.spikes, w), convolve_time(pool.seen, w)
    for c in np.unique(code[same]):  # smoothed one condition at a time: never [condition, time, neuron] at once
        at = same & (code == c)
        S[at], D[at] = convolve_time(pool.condition_spikes[c], w), convolve_time(pool.condition_seen[c], w)
    num = np.maximum(S - convolve_time(x_own, w), 0.0) + m[:, None, :] * ones
    den = np.maximum(D - convolve_time(d_own, w), 0.0) + ones
    return num / den


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
        blocks = [index[i : i + BLOCK] for i in range(0, len(index), BLOCK)]
        losses[float(sigma)] = sum(poisson_nll(loo_psth(counts, rows, sigma, pool), counts[rows], constant=False)
                                   for rows in blocks)
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
    return (poisson_nll(mean, c, constant=False) - losses[sigma]) / max(spikes, 1.0) / np.log(2)
