"""Poisson bits per spike: the one implementation behind every bps xfads reports (docs/metrics.md),
from the simulator's oracle (data/simulate.py) to the evaluation scores (outputs/metrics.py).

numpy only and no import of the package, so every layer may use it. Rates are expected spikes PER
BIN; counts are observed spikes per bin; the neuron axis is last.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

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
