"""docs/metrics.md test vectors and the named scores (co-bps, fp-bps, vel R2, psth R2)."""

import math

import numpy as np
import pytest

from xfads_cli.scoring import (
    bits_per_spike,
    co_bps,
    fp_bps,
    gaussian_smooth,
    gaussian_window,
    oracle_bps,
    poisson_nll,
    psth_r2,
    r2_score,
    ridge_cv,
    vel_r2,
)


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
    with pytest.warns(RuntimeWarning, match="rates of 0 where spikes were observed"):
        poisson_nll(np.array([0.0, 1.0]).reshape(1, 2, 1), n)


def test_zero_rate_on_zero_count_is_exact_and_silent():
    """A neuron silent in the evaluated bins has null-model rate 0 there: term 0, no warning (this warning
    used to end every fit on a real recording)."""
    import warnings

    r = np.array([0.0, 0.5, 2.0]).reshape(1, 3, 1)
    n = np.array([0.0, 1.0, 3.0]).reshape(1, 3, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = poisson_nll(r, n)
    assert got == pytest.approx(poisson_nll(r[:, 1:], n[:, 1:]), rel=1e-12)
    counts = np.zeros((2, 4, 2))
    counts[:, :, 1] = [[1, 0, 2, 1], [0, 1, 1, 0]]  # neuron 0 never fires
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(bits_per_spike(np.full(counts.shape, 0.6), counts))


def _poisson_data(seed=0, shape=(6, 20, 4)):
    rng = np.random.default_rng(seed)
    true = rng.uniform(0.2, 3.0, size=shape)
    return rng, true, rng.poisson(true).astype(float)


def test_co_bps_scores_only_heldout_columns():
    rng, true, n = _poisson_data()
    rates = true.copy()
    rates[..., :2] = 50.0  # absurd held-in rates must not matter
    mask = np.array([False, False, True, True])
    assert co_bps(rates, n, mask) == pytest.approx(bits_per_spike(true[..., 2:], n[..., 2:]))
    assert np.isnan(co_bps(rates, n, np.zeros(4, bool)))
    with pytest.raises(ValueError):
        co_bps(rates, n, np.ones(3, bool))


def test_fp_and_oracle_bps_are_plain_bps():
    _, true, n = _poisson_data(1)
    assert fp_bps(true, n) == bits_per_spike(true, n)
    assert oracle_bps(true, n) == bits_per_spike(true, n) > 0


def test_r2_score_known_cases():
    y = np.array([[1.0, 2.0], [2.0, 0.0], [3.0, 4.0], [4.0, 1.0]])
    assert r2_score(y, y) == 1.0
    assert r2_score(y, np.broadcast_to(y.mean(0), y.shape)) == pytest.approx(0.0, abs=1e-15)
    assert r2_score(y[:, 0], -y[:, 0]) < 0
    # column 0 perfect (1), column 1 mean prediction (0): uniform average 0.5
    pred = np.column_stack([y[:, 0], np.full(4, y[:, 1].mean())])
    assert r2_score(y, pred) == pytest.approx(0.5)
    # sklearn force_finite: constant column -> 1 if exact, else 0
    const = np.ones((3, 1))
    assert r2_score(const, const) == 1.0 and r2_score(const, const + 0.1) == 0.0
    assert np.isnan(r2_score(np.ones((1, 2)), np.ones((1, 2))))


def _brute_ridge(X, Y, alpha):
    """Augmented design [X, 1] with the intercept's penalty set to 0: no centring involved."""
    A = np.column_stack([X, np.ones(len(X))])
    P = alpha * np.eye(A.shape[1])
    P[-1, -1] = 0.0
    beta = np.linalg.solve(A.T @ A + P, A.T @ Y)
    return beta[:-1], beta[-1]


def test_ridge_cv_recovers_linear_map_and_matches_closed_form():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 5)) + 3.0  # non-zero mean: an intercept penalty would show
    W, b = rng.normal(size=(5, 2)), np.array([1.5, -4.0])
    Y = X @ W + b + 0.01 * rng.normal(size=(400, 2))
    w_hat, b_hat, alpha = ridge_cv(X, Y)
    np.testing.assert_allclose(w_hat, W, atol=5e-3)
    np.testing.assert_allclose(b_hat, b, atol=5e-2)
    assert alpha in np.logspace(-4, 0, 9)
    w1, b1, a1 = ridge_cv(X, Y, alphas=[30.0])
    w2, b2 = _brute_ridge(X, Y, 30.0)
    assert a1 == 30.0
    np.testing.assert_allclose(w1, w2, rtol=1e-9)
    np.testing.assert_allclose(b1, b2, rtol=1e-9)
    w1d, b1d, _ = ridge_cv(X, Y[:, 0], alphas=[30.0])
    assert w1d.shape == (5,) and isinstance(b1d, float)
    np.testing.assert_allclose(w1d, w2[:, 0], rtol=1e-9)


def test_ridge_cv_picks_alpha_by_contiguous_kfold_r2():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(23, 8))  # few samples, many features: alpha matters
    Y = X[:, :2] + rng.normal(size=(23, 2))
    alphas = [1e-3, 1.0, 10.0, 100.0]
    cv = []
    for a in alphas:
        fold_scores = []
        for test in np.array_split(np.arange(23), 5):  # sklearn KFold: 5, 5, 5, 4, 4
            train = np.setdiff1d(np.arange(23), test)
            w, b = _brute_ridge(X[train], Y[train], a)
            pred, true = X[test] @ w + b, Y[test]
            fold_scores.append(np.mean(1 - ((true - pred) ** 2).sum(0) / ((true - true.mean(0)) ** 2).sum(0)))
        cv.append(np.mean(fold_scores))
    assert ridge_cv(X, Y, alphas=alphas)[2] == alphas[int(np.argmax(cv))]


def test_vel_r2_finds_the_lag():
    rng = np.random.default_rng(4)
    lag, trials, time = 3, 30, 25
    rates = rng.gamma(2.0, 1.0, size=(trials, time, 6))  # white in time: lag 0 carries no signal
    W = rng.normal(size=(6, 2))
    behavior = np.full((trials, time, 2), np.nan)  # the first `lag` bins are unknown
    behavior[:, lag:] = rates[:, :-lag] @ W + 0.01 * rng.normal(size=(trials, time - lag, 2))
    tr, ev = slice(0, 20), slice(20, None)
    right = vel_r2(rates[tr], behavior[tr], rates[ev], behavior[ev], lag_bins=lag)
    wrong = vel_r2(rates[tr], behavior[tr], rates[ev], behavior[ev], lag_bins=0)
    assert right > 0.999
    assert wrong < 0.2


def _direct_same_convolution(x, w):
    """scipy.signal.convolve(x, w, 'same') by definition: out[t] = sum_j x[j] w[t - j + (M - 1) // 2]."""
    m, out = len(w), np.zeros(len(x))
    for t in range(len(x)):
        for j in range(len(x)):
            k = t - j + (m - 1) // 2
            if 0 <= k < m:
                out[t] += x[j] * w[k]
    return out


def test_gaussian_window_is_nlb_kernel():
    w = gaussian_window(2.5)  # 50 ms at 20 ms bins: int(6 * 2.5) = 15 taps
    assert len(w) == 15 and w.sum() == pytest.approx(1.0) and w.argmax() == 7
    np.testing.assert_allclose(w, w[::-1])
    assert len(gaussian_window(0.1)) == 1


@pytest.mark.parametrize("sigma", [2.0, 2.5])  # odd (15) and even (12) window lengths
def test_gaussian_smooth_matches_direct_convolution(sigma):
    rng = np.random.default_rng(5)
    x = rng.poisson(2.0, size=(2, 30, 3)).astype(float)
    out = gaussian_smooth(x, sigma)
    w = gaussian_window(sigma)
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(out[i, :, j], _direct_same_convolution(x[i, :, j], w), atol=1e-12)
            np.testing.assert_allclose(out[i, :, j], np.convolve(x[i, :, j], w, "same"), atol=1e-12)


def test_gaussian_smooth_constant_signal_and_edges():
    x = np.full((1, 40, 1), 3.0)
    plain = gaussian_smooth(x, 2.0)
    np.testing.assert_allclose(plain[0, 8:-8, 0], 3.0)  # interior preserved (window spans +-6 bins)
    assert plain[0, 0, 0] < 3.0  # zero padding attenuates the edges (NLB semantics)
    np.testing.assert_allclose(gaussian_smooth(x, 2.0, renormalise_edges=True), 3.0)
    x[0, 10, 0] = np.nan  # a missing bin stays missing and does not leak into its neighbours
    renorm = gaussian_smooth(x, 2.0, renormalise_edges=True)
    assert np.isnan(renorm[0, 10, 0])
    np.testing.assert_allclose(np.delete(renorm[0, :, 0], 10), 3.0)


def _condition_data(seed=6, per_condition=15):
    rng = np.random.default_rng(seed)
    t = np.arange(40)
    profiles = np.stack([  # [condition, time, neuron], clearly different shapes
        np.stack([2 + np.sin(t / 6 + c + k) for k in range(5)], axis=-1) for c in range(3)
    ])
    conditions = np.repeat(np.arange(3), per_condition)
    true = profiles[conditions]
    return rng, conditions, true, rng.poisson(true).astype(float)


def test_psth_r2_perfect_and_shuffled():
    rng, conditions, true, n = _condition_data()
    # rates whose condition averages equal the smoothed-spike PSTHs exactly -> R^2 = 1
    smoothed = gaussian_smooth(n, 50 / 20, renormalise_edges=True)
    perfect = np.empty_like(smoothed)
    for c in range(3):
        perfect[conditions == c] = smoothed[conditions == c].mean(axis=0)
    assert psth_r2(perfect, n, conditions, bin_ms=20) == pytest.approx(1.0)
    good = psth_r2(true, n, conditions, bin_ms=20)
    shuffled = psth_r2(true[rng.permutation(len(true))], n, conditions, bin_ms=20)
    assert good > 0.9 and shuffled < good - 0.2


def test_psth_r2_needs_a_condition_with_two_trials():
    _, _, true, n = _condition_data(per_condition=1)
    assert np.isnan(psth_r2(true, n, np.arange(3), bin_ms=20))
    # single-trial conditions are skipped, the others still score
    conditions = np.array([0, 0, 1])
    assert np.isfinite(psth_r2(true, n, conditions, bin_ms=20))


def test_cross_check_with_nlb_tools():
    evaluation = pytest.importorskip("nlb_tools.evaluation")
    rng, true, n = _poisson_data(7, shape=(10, 30, 5))
    assert bits_per_spike(true, n) == pytest.approx(float(evaluation.bits_per_spike(true, n)), rel=1e-9)
    behavior = true[..., :2] @ rng.normal(size=(2, 2)) + 0.3 * rng.normal(size=(10, 30, 2))
    ours = vel_r2(true[:6], behavior[:6], true[6:], behavior[6:])
    theirs = evaluation.fit_and_eval_decoder(
        true[:6].reshape(-1, 5), behavior[:6].reshape(-1, 2), true[6:].reshape(-1, 5), behavior[6:].reshape(-1, 2)
    )
    assert ours == pytest.approx(theirs, rel=1e-6)


def test_cross_check_smoothing_with_scipy():
    signal = pytest.importorskip("scipy.signal")
    x = np.random.default_rng(8).poisson(1.0, size=50).astype(float)
    window = signal.windows.gaussian(int(6 * 2.5), 2.5, sym=True)
    window /= window.sum()
    np.testing.assert_allclose(gaussian_smooth(x[:, None], 2.5)[:, 0], signal.convolve(x, window, "same"))
