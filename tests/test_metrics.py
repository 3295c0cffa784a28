"""METRICS.md test vectors."""

import math

import numpy as np
import pytest

from xfads_cli.outputs.metrics import bits_per_spike, poisson_nll


def test_bps_vectors_from_metrics_md():
    n = np.array([0, 1, 2, 1], float).reshape(1, 4, 1)
    r = np.array([0.5, 1, 2, 1]).reshape(1, 4, 1)
    assert bits_per_spike(r, n) == pytest.approx(0.3196631, abs=1e-7)
    assert bits_per_spike(r, n) == pytest.approx((2 * math.log(2) - 0.5) / (4 * math.log(2)))
    assert bits_per_spike(np.full_like(n, n.mean()), n) == pytest.approx(0.0, abs=1e-12)
    n_nan = n.copy()
    n_nan[0, 0, 0] = np.nan
    assert bits_per_spike(r, n_nan) == pytest.approx(0.0849625, abs=1e-7)


def test_nll_rejects_bad_rates_and_warns_on_zero():
    n = np.ones((1, 2, 1))
    with pytest.raises(ValueError):
        poisson_nll(np.array([-1.0, 1.0]).reshape(1, 2, 1), n)
    with pytest.raises(ValueError):
        poisson_nll(np.array([np.nan, 1.0]).reshape(1, 2, 1), n)
    with pytest.warns(RuntimeWarning):
        poisson_nll(np.array([0.0, 1.0]).reshape(1, 2, 1), n)
