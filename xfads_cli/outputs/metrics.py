"""Evaluation metrics in Neural Latents Benchmark conventions (../shared/design/METRICS.md), numpy only.

Rates are expected spikes PER BIN; counts are observed spikes per bin; arrays are [trial, time, neuron]
(any leading shape works as long as the neuron axis is last).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

_lgamma = np.vectorize(math.lgamma, otypes=[np.float64])


def poisson_nll(rates: np.ndarray, counts: np.ndarray) -> float:
    """sum[r - n ln r + lgamma(n + 1)] over entries where n is observed (not NaN)."""
    r = np.asarray(rates, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    if r.shape != n.shape:
        raise ValueError(f"rates {r.shape} and counts {n.shape} differ in shape")
    keep = ~np.isnan(n)
    r, n = r[keep], n[keep]
    if np.isnan(r).any() or (r < 0).any():
        raise ValueError("rates must be finite and non-negative where counts are observed")
    if (r == 0).any():
        warnings.warn("zero rates replaced by 1e-9 in the Poisson NLL", RuntimeWarning, stacklevel=2)
        r = np.where(r == 0, 1e-9, r)
    return float(np.sum(r - n * np.log(r) + _lgamma(n + 1)))


def bits_per_spike(rates: np.ndarray, counts: np.ndarray) -> float:
    """(NLL(rbar, n) - NLL(r, n)) / nansum(n) / ln 2, rbar = each neuron's nanmean of n."""
    n = np.asarray(counts, dtype=np.float64)
    neuron_mean = np.nanmean(n.reshape(-1, n.shape[-1]), axis=0)
    rbar = np.broadcast_to(neuron_mean, n.shape)
    total = np.nansum(n)
    if total == 0:
        return float("nan")
    return (poisson_nll(rbar, n) - poisson_nll(rates, n)) / total / math.log(2)
