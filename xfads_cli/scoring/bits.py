"""Poisson bits per spike: the one implementation behind every bps xfads reports (docs/metrics.md),
from the simulator's oracle to the evaluation scores, whole arrays or accumulated piece by piece.

numpy only. Rates are expected spikes PER BIN; counts are observed spikes per bin; the neuron axis is
last. The named scores (co-bps, fp-bps, oracle bps) are bits_per_spike on the bins and neurons each
one scores.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

BLOCK_TRIALS = 64  # trials per block when BitsPerSpike walks arrays already in memory

_lgamma = np.vectorize(math.lgamma, otypes=[np.float64])


def poisson_nll(rates: np.ndarray, counts: np.ndarray, *, constant: bool = True) -> float:
    """sum[r - n ln r + lgamma(n + 1)] over entries where n is observed (not NaN).

    constant=False leaves out lgamma(n + 1): it does not depend on the rates, so it cancels in any
    difference of two NLLs of the same counts (bits per spike), and it costs more than the rest.
    """
    r = np.asarray(rates, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    if r.shape != n.shape:
        raise ValueError(f"rates {r.shape} and counts {n.shape} differ in shape")
    keep = ~np.isnan(n)
    if not keep.all():  # a copy only when some bins are missing
        r, n = r[keep], n[keep]
    if np.isnan(r).any() or (r < 0).any():
        raise ValueError("rates must be finite and non-negative where counts are observed")
    impossible = (r == 0) & (n > 0)  # an infinite NLL
    if impossible.any():
        warnings.warn(f"rates of 0 where spikes were observed ({int(impossible.sum())} bins) replaced by 1e-9 "
                      "in the Poisson NLL", RuntimeWarning, stacklevel=2)
        r = np.where(impossible, 1e-9, r)
    # where n = 0 the n ln r term is 0 whatever r, also r = 0 (a neuron silent in the evaluated bins
    # has a null-model mean of 0 there): exact, no warning
    terms = r - n * np.log(np.where(n > 0, r, 1.0))
    if constant:
        terms = terms + _lgamma(n + 1)
    return float(np.sum(terms))


def bits_from_nll(nll_null: float, nll_model: float, spikes: float) -> float:
    """The Poisson log-likelihood gain of a model over the null model per observed spike, in bits:
    (NLL(null) - NLL(model)) / spikes / ln 2, both NLLs over the same counts, which hold `spikes`
    spikes. NaN when there is no spike (undefined, not 0)."""
    if spikes == 0:
        return float("nan")
    return (nll_null - nll_model) / spikes / math.log(2)


def bits_per_spike(rates: np.ndarray, counts: np.ndarray) -> float:
    """(NLL(rbar, n) - NLL(r, n)) / nansum(n) / ln 2, rbar = each neuron's nanmean of n; NaN when
    no spike is observed (the rates are then not checked)."""
    n = np.asarray(counts, dtype=np.float64)
    neuron_mean = np.nanmean(n.reshape(-1, n.shape[-1]), axis=0)
    rbar = np.broadcast_to(neuron_mean, n.shape)
    total = np.nansum(n)
    if total == 0:
        return float("nan")
    return bits_from_nll(poisson_nll(rbar, n, constant=False), poisson_nll(rates, n, constant=False), total)


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


class HeldoutBits:
    """co-bps of a whole recording without trials fed piece by piece (`xfads smooth` of a continuous
    recording): bits per spike of the held-out neurons' rates over their mean rate in the session
    (the null model; its NLL from the totals at the end, as the mean is known only then)."""

    def __init__(self, heldout: np.ndarray):
        self.heldout = np.asarray(heldout, dtype=bool)
        self.nll_model = 0.0
        self.spikes = np.zeros(int(self.heldout.sum()))
        self.bins = np.zeros(int(self.heldout.sum()))

    def add(self, rates: np.ndarray, counts: np.ndarray) -> None:
        """rates, counts: [time, neuron] of consecutive bins."""
        n = counts[:, self.heldout]
        self.nll_model += poisson_nll(rates[:, self.heldout], n, constant=False)
        self.spikes += np.nansum(n, axis=0)
        self.bins += np.sum(~np.isnan(n), axis=0)

    def value(self) -> float:
        if not self.heldout.any():
            return math.nan
        # sum_t [rbar - n_t ln rbar] with rbar = spikes / bins: spikes - spikes ln rbar per neuron
        rbar = np.where(self.bins > 0, self.spikes / np.maximum(self.bins, 1), 0.0)
        null = float(np.sum(self.spikes - self.spikes * np.log(np.where(self.spikes > 0, rbar, 1.0))))
        return bits_from_nll(null, self.nll_model, float(self.spikes.sum()))


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
