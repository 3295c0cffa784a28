"""Trivial baselines (xfads_cli/scoring/) against hand-computed values and known truths,
and their scores next to the model's (scoring/streamed.py, scoring/summary.py: SmoothedScores, ForecastScores, verdicts)."""

import math
import warnings

import numpy as np
import pytest

from xfads_cli import scoring as evaluation
from xfads_cli.data.spikedata import SpikeData
from xfads_cli import scoring as B
from xfads_cli.scoring import bits_per_spike, poisson_nll

NAN = np.nan


def _tiny():
    # 3 trials x 2 bins x 1 neuron, one missing bin
    return np.array([[[1.0], [2.0]], [[3.0], [0.0]], [[NAN], [4.0]]])


def test_loo_psth_equals_the_hand_computed_average_of_the_other_trials():
    counts = _tiny()
    rates = B.loo_psth(counts, [0, 1, 2])
    # trial 0: others are trials 1, 2. bin 0 sees 3 (trial 2 missing), bin 1 sees 0 + 4;
    # the pseudo-trial's rate is their mean (3 + 0 + 4 + 0.5) / (3 bins + 1)
    m0 = (7 + 0.5) / (3 + 1)
    assert rates[0, :, 0] == pytest.approx([(3 + m0) / (1 + 1), (4 + m0) / (2 + 1)])
    # trial 1: others 0 and 2 -> bin 0: 1 (one trial), bin 1: 2 + 4
    m1 = (1 + 2 + 4 + 0.5) / (3 + 1)
    assert rates[1, :, 0] == pytest.approx([(1 + m1) / 2, (6 + m1) / 3])
    # trial 2: its own missing bin is not subtracted from anything
    m2 = (1 + 2 + 3 + 0 + 0.5) / (4 + 1)
    assert rates[2, :, 0] == pytest.approx([(4 + m2) / 3, (2 + m2) / 3])
    # a pool that leaves a trial out uses it for nobody and does not subtract it from itself
    pool = B.psth_pool(counts, np.array([True, True, False]))
    m = (3 + 0 + 0.5) / (2 + 1)
    assert B.loo_psth(counts, [0], pool=pool)[0, :, 0] == pytest.approx([(3 + m) / 2, (0 + m) / 2])
    assert B.loo_psth(counts, [2], pool=pool)[0, :, 0] == pytest.approx([(4 + (6.5 / 5)) / 3, (2 + 6.5 / 5) / 3])


def test_loo_psth_never_gives_zero_rates_and_smoothing_keeps_a_constant():
    counts = np.zeros((4, 6, 2))
    counts[0, 2, 1] = 1.0  # neuron 0 never spikes; neuron 1 once, in trial 0
    for sigma in (0.0, 1.0, 4.0):
        rates = B.loo_psth(counts, range(4), sigma)
        assert (rates > 0).all() and np.isfinite(rates).all()
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "zero rates replaced" from the baseline
            poisson_nll(rates, counts)
    flat = np.full((5, 12, 1), 2.0)
    for sigma in (0.0, 2.0, 8.0):  # edges lose the same kernel mass above and below the line
        assert B.loo_psth(flat, range(5), sigma) == pytest.approx(np.full((5, 12, 1), (4 * 2 + (2 * 48 + 0.5) / 49) / 5))


def test_psth_width_is_chosen_by_leave_one_out_likelihood():
    rng = np.random.default_rng(0)
    t = np.arange(60)
    smooth = 1.0 + 0.8 * np.sin(2 * np.pi * t / 60)  # a slow PSTH: smoothing pools neighbouring bins
    counts = rng.poisson(np.broadcast_to(smooth[None, :, None], (40, 60, 3))).astype(float)
    sigma, losses = B.choose_psth_sigma(counts, np.arange(40) < 30)
    assert sigma > 0 and set(losses) == set(B.PSTH_SIGMAS_BINS)
    sharp = np.tile(np.array([0.1, 4.0]), 30)  # alternating bins: any smoothing blurs them
    counts = rng.poisson(np.broadcast_to(sharp[None, :, None], (40, 60, 3))).astype(float)
    assert B.choose_psth_sigma(counts)[0] == 0.0


def test_trial_aligned_psth_beats_the_mean_and_the_mean_baseline_scores_about_zero():
    rng = np.random.default_rng(1)
    t = np.arange(40)
    psth = 0.2 + 1.5 * np.exp(-0.5 * ((t[:, None] - np.array([10, 25, 32])) / 3.0) ** 2)  # [time, neuron]
    true = np.broadcast_to(psth, (60, 40, 3))
    counts = rng.poisson(true).astype(float)
    counts[rng.random(counts.shape) < 0.05] = NAN  # missing bins are dropped everywhere
    sigma, _ = B.choose_psth_sigma(counts, np.arange(60) < 48)
    rates = B.loo_psth(counts, range(60), sigma)
    oracle = bits_per_spike(true, counts)
    assert 0.8 * oracle < bits_per_spike(rates, counts) < oracle
    mean = B.mean_rate(counts, np.arange(60) < 48)
    assert abs(bits_per_spike(np.broadcast_to(mean, counts.shape), counts)) < 0.01


def test_mean_rate_is_nan_aware_with_a_pseudo_count():
    counts = _tiny()
    assert B.mean_rate(counts) == pytest.approx([(1 + 2 + 3 + 0 + 4 + 0.5) / (5 + 1)])
    assert B.mean_rate(counts, np.array([False, True, True])) == pytest.approx([(3 + 0 + 4 + 0.5) / (3 + 1)])
    assert B.mean_rate(np.zeros((2, 3, 1)))[0] > 0


def test_trial_aligned_unless_chopped():
    assert B.trial_aligned({"trials_from": "trials"}) and B.trial_aligned({"trials_from": "hdf5-plain trial tensors"})
    assert B.trial_aligned({}) and not B.trial_aligned({"trials_from": "chopped"})


def test_poisson_glm_recovers_known_weights():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(6000, 3))
    W = np.array([[0.5, -0.3], [0.0, 0.4], [-0.2, 0.1]])
    b = np.array([-0.5, 0.3])
    Y = rng.poisson(np.exp(X @ W + b)).astype(float)
    W_hat, b_hat = B.fit_poisson_glm(X, Y, penalty=1e-6)
    assert W_hat == pytest.approx(W, abs=0.04) and b_hat == pytest.approx(b, abs=0.04)
    # at the optimum (tight tolerance, exact Hessian) the penalised gradient vanishes: X^T (mu - y) + penalty w = 0
    penalty = 50.0
    W_p, b_p = B.fit_poisson_glm(X, Y, penalty=penalty, hessian_rows=10**6, tol=1e-14)
    mu = np.exp(X @ W_p + b_p)
    assert X.T @ (mu - Y) + penalty * W_p == pytest.approx(np.zeros_like(W_p), abs=1e-2)
    assert (mu - Y).sum(0) == pytest.approx([0, 0], abs=1e-2)
    assert np.abs(W_p).sum() < np.abs(W_hat).sum()  # the penalty shrinks


def test_poisson_glm_drops_missing_targets_and_survives_degenerate_columns():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 2))
    y = rng.poisson(np.exp(0.5 * X[:, 0] - 1)).astype(float)
    missing = rng.random(500) < 0.3
    y_nan = np.where(missing, NAN, y)
    W1, b1 = B.fit_poisson_glm(X, y_nan, 1.0)
    W2, b2 = B.fit_poisson_glm(X[~missing], y[~missing], 1.0)
    assert W1 == pytest.approx(W2, abs=1e-6) and b1 == pytest.approx(b2, abs=1e-6)
    # a silent output, a perfectly separable one and a duplicated, huge feature
    Xd = np.column_stack([X[:, 0], X[:, 0], 1e3 * X[:, 1]])
    Y = np.column_stack([np.zeros(500), (X[:, 0] > 0) * 3.0, y])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        W, b = B.fit_poisson_glm(Xd, Y, 1e-3)
        rates = B.predict_poisson_glm(Xd, W, b)
    assert np.isfinite(W).all() and np.isfinite(b).all() and (rates > 0).all() and np.isfinite(rates).all()
    assert rates[:, 0].max() < 1e-3  # the silent output predicts (almost) nothing


def _latent_population(seed=4, trials=50, time=40, neurons=16, heldout=4):
    """Trials of a smooth 2-D latent (random per trial) read out by every neuron."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, size=(trials, 1))
    t = np.arange(time)[None, :]
    latent = np.stack([np.sin(2 * np.pi * t / 25 + phase), np.cos(2 * np.pi * t / 25 + phase)], -1)
    C = rng.normal(size=(2, neurons))
    true = np.exp(latent @ C * 0.7 - 0.5)
    counts = rng.poisson(true).astype(float)
    mask = np.zeros(neurons, bool)
    mask[-heldout:] = True
    return true, counts, mask


def test_smoothing_glm_predicts_held_out_neurons_from_held_in_ones():
    true, counts, heldout = _latent_population()
    train = np.arange(len(counts)) < 40
    model = B.fit_smoothing_glm(counts, heldout, train, bin_ms=20.0)
    assert model.sigma_ms in B.CO_SIGMAS_MS and model.alpha in B.GLM_ALPHAS
    assert "smoothing + Poisson GLM" in model.describe() and f"{model.sigma_ms:g} ms" in model.describe()
    test = ~train
    rates = B.smoothing_glm_rates(model, counts[test])
    assert rates.shape == (10, 40, 4) and (rates > 0).all()
    score = bits_per_spike(rates, counts[test][..., heldout])
    oracle = bits_per_spike(true[test][..., heldout], counts[test][..., heldout])
    assert 0.3 * oracle < score < oracle
    # missing held-in bins are filled from their neighbours; missing held-out bins are not fitted
    holes = counts.copy()
    holes[np.random.default_rng(5).random(holes.shape) < 0.1] = NAN
    with_holes = B.fit_smoothing_glm(holes, heldout, train, bin_ms=20.0)
    rates = B.smoothing_glm_rates(with_holes, holes[test])
    assert np.isfinite(rates).all() and bits_per_spike(rates, holes[test][..., heldout]) > 0.3 * oracle
    # no held-out neuron, or no observed held-out count in training: no baseline
    assert B.fit_smoothing_glm(counts, np.zeros(16, bool), train, 20.0) is None
    blind = counts.copy()
    blind[np.ix_(train, np.arange(40), heldout)] = NAN
    assert B.fit_smoothing_glm(blind, heldout, train, 20.0) is None


def _spikedata(counts, heldout, trials_from="trials", split=None):
    n = len(counts)
    split = split if split is not None else np.array(["train"] * (n - 10) + ["valid"] * 5 + ["test"] * 5)
    return SpikeData(counts=counts.astype(np.float32), bin_ms=20.0, unit_ids=np.arange(counts.shape[2]).astype(str),
                     trial_ids=np.arange(n), split=split, session="s", heldout=heldout,
                     provenance={"trials_from": trials_from})


def test_scores_put_the_baselines_next_to_the_model_on_the_same_trials_and_bins():
    true, counts, heldout = _latent_population()
    data = _spikedata(counts, heldout)
    test = data.split == "test"
    sub = data.subset("test")
    base = evaluation.baselines_for(data)
    assert evaluation.baselines_for(data) is base  # one fit per recording
    # fp: the leave-one-out PSTH over ALL other trials (every split) at the forecast bins
    fc = evaluation.score_forecast(true[test][:, 30:], sub, 30, baselines=False)
    assert set(fc) == {"fp_bps"}
    index = np.flatnonzero(test)
    scores = evaluation.ForecastScores(sub, 30, 10, fp_baseline=base.fp_source(index, 30, 10))
    for block in (slice(0, 2), slice(2, 5)):  # block by block == whole
        scores.add(true[test][block, 30:])
    fp = scores.result()
    expected = B.loo_psth(data.counts, index, base.fp[1], B.psth_pool(data.counts))[:, 30:]
    assert fp["fp_baseline_bps"] == pytest.approx(bits_per_spike(expected, sub.counts[:, 30:]), rel=1e-9)
    assert fp["fp_bps"] == pytest.approx(fc["fp_bps"], rel=1e-9)
    # co: the GLM's held-out rates, scored on the same trials (a [trial] mask passes the others over)
    co = evaluation.SmoothedScores(data, trials=test, co_baseline=base.co_source(np.arange(data.n_trials)))
    for start in range(0, 50, 16):
        co.add(true[start : start + 16])
    result = co.result()
    glm = B.smoothing_glm_rates(base.co, data.counts[test])
    assert list(result) == ["co_bps", "co_baseline_bps"]
    assert result["co_baseline_bps"] == pytest.approx(bits_per_spike(glm, data.counts[test][..., heldout]), rel=1e-9)
    assert set(base.describe()) == {"fp", "co"} and base.describe()["fp"].startswith("leave-one-out PSTH")


def test_chopped_windows_get_the_train_mean_rate():
    _, counts, heldout = _latent_population()
    data = _spikedata(counts, heldout, trials_from="chopped")
    sub = data.subset("valid")
    fp = evaluation.score_forecast(np.ones((5, 10, 16)), sub, 30, baselines=False)
    scores = evaluation.ForecastScores(sub, 30, 10, fp_baseline=evaluation.baselines_for(data).fp_source(np.flatnonzero(data.split == "valid"), 30, 10))
    scores.add(np.ones((5, 10, 16)))
    mean = B.mean_rate(data.counts, data.split == "train")
    assert scores.result()["fp_baseline_bps"] == pytest.approx(
        bits_per_spike(np.broadcast_to(mean, (5, 10, 16)), sub.counts[:, 30:]), rel=1e-9)
    assert scores.result()["fp_bps"] == fp["fp_bps"]
    assert evaluation.baselines_for(data).describe()["fp"].startswith("train-split mean rate")


def test_verdicts_judge_the_most_honest_split_and_warn_when_the_model_loses():
    metrics = {"valid_fp_bps": 0.2, "valid_fp_baseline_bps": 0.1, "test_fp_bps": 0.081, "test_fp_baseline_bps": 0.052,
               "test_co_bps": -0.031, "test_co_baseline_bps": 0.070, "test_retest_bps": 0.3}
    described = {"fp": "leave-one-out PSTH (details)", "co": "smoothing + Poisson GLM (details)"}
    lines = B.verdicts(metrics, described, {"test": "25 test trials"})
    assert lines[0] == ("forecast: model 0.081 bits/spike vs leave-one-out PSTH 0.052 (1.56x) on 25 test trials: "
                        "the model is better")
    assert lines[1].startswith("warning: the model predicts the held-out neurons worse than the smoothing + Poisson GLM "
                               "on 25 test trials (-0.031 vs 0.070 bits/spike)")
    assert len(lines) == 2
    # valid when there is no test split; no line without a baseline; session prefixes for meta runs
    assert B.verdicts({"valid_fp_bps": 0.1, "valid_fp_baseline_bps": 0.2})[0].startswith("warning: the model forecasts")
    assert B.verdicts({"test_fp_bps": 0.1}) == []
    meta = B.verdicts({"a/valid_co_bps": 0.3, "a/valid_co_baseline_bps": 0.1},
                      {"a": {"co": "smoothing + Poisson GLM (x)"}}, {"a": {"valid": "3 valid trials"}})
    assert meta == ["a: held-out neurons: model 0.300 bits/spike vs smoothing + Poisson GLM 0.100 (3.00x) on 3 valid "
                    "trials: the model is better"]
    # a negative baseline gives no ratio; a non-finite model score is a warning; a NaN baseline no line
    assert "x)" not in B.verdicts({"fp_bps": 0.1, "fp_baseline_bps": -0.02})[0]
    undefined = B.verdicts({"fp_bps": math.nan, "fp_baseline_bps": 0.1})[0]
    assert undefined.startswith("warning:") and "undefined" in undefined and "worse" not in undefined
    assert "worse than" in B.verdicts({"fp_bps": -math.inf, "fp_baseline_bps": 0.1})[0]
    assert B.verdicts({"fp_bps": 0.1, "fp_baseline_bps": math.nan}) == []


def test_report_prints_the_verdicts_after_the_table_and_warnings_even_when_quiet(capsys):
    from xfads_cli.cli import _report

    summary = {"metrics": {"test_fp_bps": 0.2, "test_fp_baseline_bps": 0.1, "test_co_bps": 0.0, "test_co_baseline_bps": 0.1}}
    _report(summary, "title", json_out=False, quiet=False)  # no verdicts yet: judged from the metrics
    err = capsys.readouterr().err
    assert err.index("test_co_baseline_bps") < err.index("forecast: model 0.200 bits/spike vs trivial baseline 0.100")
    assert "warning: the model predicts the held-out neurons worse than the trivial baseline" in err
    assert len(summary["verdicts"]) == 2  # and --json users get them
    _report(summary, "title", json_out=False, quiet=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ")


# -- condition-aware leave-one-out PSTH ---------------------------------------------------------------


def _brute_loo_psth(counts, conditions, i, sigma, pool=None):
    """Trial i's condition-aware LOO PSTH [time, neuron] by the definition, one trial and bin at a time."""
    n_trial, n_time, n_neuron = counts.shape
    pool = np.ones(n_trial, bool) if pool is None else pool
    others = [j for j in range(n_trial) if pool[j] and j != i]
    same = [j for j in others if conditions[i] is not None and conditions[j] == conditions[i]]
    used = same or others  # a trial alone in its condition: all other trials
    x = np.nan_to_num(counts)
    seen = (~np.isnan(counts)).astype(float)
    m = (x[others].sum((0, 1)) + 0.5) / (seen[others].sum((0, 1)) + 1.0)  # [neuron]: over ALL other trials
    half = int(math.ceil(3 * sigma)) if sigma > 0 else 0
    taps = {k: math.exp(-0.5 * (k / sigma) ** 2) if sigma > 0 else 1.0 for k in range(-half, half + 1)}
    total = sum(taps.values())

    def K(v):  # Gaussian smoothing over time of [time, ...], zeros beyond the window
        return np.array([sum(taps[s - t] / total * v[s] for s in range(n_time) if abs(s - t) <= half)
                         for t in range(n_time)])

    S, D = x[used].sum(0), seen[used].sum(0)
    ones = K(np.ones(n_time))[:, None]
    return (K(S) + m * ones) / (K(D) + ones)


def _labelled_tiny():
    rng = np.random.default_rng(11)
    counts = rng.poisson(1.5, size=(8, 9, 2)).astype(float)
    counts[1, 3, 0] = counts[6, 0, 1] = counts[4, 8, 1] = NAN
    conditions = np.array(["a", "b", "a", "b", "a", "c", "b", None], dtype=object)  # c: a singleton; None: no label
    return counts, conditions


def test_condition_aware_loo_psth_equals_the_per_trial_definition():
    counts, conditions = _labelled_tiny()
    for sigma in (0.0, 1.0):
        pool = B.psth_pool(counts, conditions=conditions)
        assert pool.conditioned and list(pool.labels) == ["a", "b", "c"] and list(pool.condition_trials) == [3, 3, 1]
        rates = np.concatenate([B.loo_psth(counts, rows, sigma, pool) for rows in ([5, 0, 7], [1, 2, 3, 4, 6])])
        order = [5, 0, 7, 1, 2, 3, 4, 6]  # blocks in any order: each trial's rates depend on its own index only
        for k, i in enumerate(order):
            assert rates[k] == pytest.approx(_brute_loo_psth(counts, conditions, i, sigma), rel=1e-12), (sigma, i)
    # a pool without trials 0 and 3: trial 0 (not pooled) is predicted by all of a's pooled trials, trial
    # 3 by b's, trial 2 by trial 4 alone; with 2 and 4 out of the pool, a's trials fall back to everything
    mask = np.array([False, True, True, False, True, True, True, True])
    pool = B.psth_pool(counts, mask, conditions)
    for i in range(8):
        assert B.loo_psth(counts, [i], 1.0, pool)[0] == pytest.approx(
            _brute_loo_psth(counts, conditions, i, 1.0, mask), rel=1e-12), i
    lonely = mask & ~np.isin(np.arange(8), [2, 4])
    pool = B.psth_pool(counts, lonely, conditions)
    everything = B.loo_psth(counts, [0], 0.0, B.psth_pool(counts, lonely))
    assert B.loo_psth(counts, [0], 0.0, pool) == pytest.approx(everything)


def test_conditions_that_change_nothing_give_the_pooled_psth_bit_for_bit():
    counts, _ = _labelled_tiny()
    pooled = B.loo_psth(counts, range(8), 2.0, B.psth_pool(counts))
    one_label = B.psth_pool(counts, conditions=["x"] * 8)  # every trial the same condition
    singletons = B.psth_pool(counts, conditions=[str(k) for k in range(8)])  # every trial alone: all fall back
    unlabelled = B.psth_pool(counts, conditions=[None, "", NAN, None, None, " ", None, None])
    for pool in (one_label, singletons, unlabelled):
        assert np.array_equal(B.loo_psth(counts, range(8), 2.0, pool), pooled)
    assert len(unlabelled.labels) == 0
    with pytest.raises(ValueError, match="7 labels for 8 trials"):
        B.psth_pool(counts, conditions=["a"] * 7)


def test_condition_aware_width_is_chosen_with_the_condition_psth():
    rng = np.random.default_rng(12)
    sharp = np.tile(np.array([0.2, 4.0]), 20)  # condition a alternates bins; condition b the opposite phase
    true = np.stack([sharp if k % 2 else sharp[::-1] for k in range(60)])[..., None] * np.ones(3)
    counts = rng.poisson(true).astype(float)
    conditions = np.array(["a", "b"] * 30)
    train = np.arange(60) < 48
    aware, losses = B.choose_psth_sigma(counts, train, conditions=conditions)
    pooled, pooled_losses = B.choose_psth_sigma(counts, train)
    # pooled, the two phases average to a flat PSTH that only gains from smoothing; per condition any
    # smoothing blurs the alternation
    assert aware == 0.0 and pooled > 0.0
    assert losses[0.0] < pooled_losses[0.0]
    pool = B.psth_pool(counts, train, conditions)
    index = np.flatnonzero(train)
    assert losses[4.0] == pytest.approx(B.poisson_nll(B.loo_psth(counts, index, 4.0, pool), counts[index], constant=False), rel=1e-12)
    slow = 1.0 + 0.8 * np.sin(2 * np.pi * np.arange(40) / 40)
    true = np.stack([slow if k % 2 else 2.0 - slow for k in range(60)])[..., None] * np.ones(3)
    assert B.choose_psth_sigma(rng.poisson(true).astype(float), train, conditions=conditions)[0] > 0.0


def _conditioned_spikedata(seed=13, trials=90, time=40, neurons=6, provenance=None):
    """Three conditions whose neurons peak at different times (strong condition structure)."""
    rng = np.random.default_rng(seed)
    t = np.arange(time)[:, None]
    labels = np.array(["left", "right", "up"])[np.arange(trials) % 3]
    peaks = {"left": 8.0, "right": 20.0, "up": 32.0}
    true = np.stack([0.1 + 2.0 * np.exp(-0.5 * ((t - peaks[c] - np.arange(neurons)) / 2.5) ** 2) for c in labels])
    counts = rng.poisson(true).astype(np.float32)
    split = np.array((["train"] * 8 + ["valid", "test"]) * (trials // 10))
    return SpikeData(counts=counts, bin_ms=20.0, unit_ids=np.arange(neurons).astype(str), trial_ids=np.arange(trials),
                     split=split, session="s", heldout=np.zeros(neurons, bool), conditions=labels,
                     provenance={"trials_from": "trials", **(provenance or {})})


def _fp_baseline_bps(data, split="test", context=20, horizon=20):
    base = evaluation.baselines_for(data)
    index = np.flatnonzero(data.split == split)
    scores = evaluation.ForecastScores(data.subset(split), context, horizon,
                                       fp_baseline=base.fp_source(index, context, horizon))
    scores.add(np.ones((len(index), horizon, data.n_neurons)))
    return scores.result()["fp_baseline_bps"], base


def test_condition_aware_baseline_scores_higher_and_is_named_in_the_verdicts():
    from dataclasses import replace

    data = _conditioned_spikedata(provenance={"condition": "stimulus"})
    pooled_data = replace(data, conditions=None)
    aware, base = _fp_baseline_bps(data)
    pooled, pooled_base = _fp_baseline_bps(pooled_data)
    assert base.fp[2].conditioned and not pooled_base.fp[2].conditioned
    assert aware > pooled + 0.2  # the pooled PSTH smears three peaks into one broad bump
    index = np.flatnonzero(data.split == "test")
    direct = B.loo_psth(data.counts, index, base.fp[1], B.psth_pool(data.counts, conditions=data.conditions))[:, 20:40]
    assert aware == pytest.approx(bits_per_spike(direct, data.counts[index, 20:40]), rel=1e-9)
    text = base.describe()["fp"]
    assert text.startswith("condition-aware leave-one-out PSTH (each trial predicted by the other trials of the same "
                           "condition, data.condition 'stimulus', 3 conditions,")
    assert pooled_base.describe()["fp"].startswith("leave-one-out PSTH (each trial predicted by all other trials")
    line = B.verdicts({"test_fp_bps": 0.01, "test_fp_baseline_bps": aware}, base.describe())[0]
    assert line.startswith("warning: the model forecasts worse than the condition-aware leave-one-out PSTH on the "
                           "test trials")
    # without the column recorded by the loader: just data.condition
    anonymous = _conditioned_spikedata()
    _fp_baseline_bps(anonymous)
    assert "of the same condition, data.condition, 3 conditions" in evaluation.baselines_for(anonymous).describe()["fp"]
