"""`xfads generate`: synthetic recordings sampled from a fitted model (files, determinism, refusals, read-back
by inspect and fit) and the posterior-predictive statistics (scoring/predictive.py) against closed forms."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from xfads_cli.cli import app
from xfads_cli.scoring.predictive import (
    CountStats,
    compare,
    fano_factors,
    mmd_test,
    pairwise_correlations,
    pearson,
    pearson_columns,
    psth_noise_ceiling,
    report_lines,
)

runner = CliRunner()
SMALL = ["--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=8", "--set", "model.encoder_hidden=8",
         "--set", "model.samples=4"]
NEURONS, TRIALS, BINS = 8, 16, 20


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """(run directory, its training recording): a tiny vdp recording fitted for one epoch."""
    folder = tmp_path_factory.mktemp("generate")
    data = folder / "vdp.h5"
    result = invoke("simulate", "vdp", "--out", data, "--neurons", NEURONS, "--trials", TRIALS, "--bins", BINS)
    assert result.exit_code == 0, result.output
    run = folder / "run"
    result = invoke("fit", data, "--out", run, "--max-epochs", 1, "--quiet", *SMALL)
    assert result.exit_code == 0, result.output
    return run, data


def read_h5(path) -> dict:
    with h5py.File(path, "r") as f:
        arrays = {name: f[name][()] for name in ("spikes", "trial_ids", "unit_ids", "truth/latents", "truth/rates",
                                                 "truth/retest_counts")}
        return arrays | {"attrs": dict(f.attrs)}


# ------------------------------------------------------------------------------------------------ files


def test_h5_has_the_plain_layout_counts_and_provenance(fitted, tmp_path):
    from xfads_cli.data.provenance import file_sha256

    run, _ = fitted
    out = tmp_path / "gen.h5"
    result = invoke("generate", run, "--trials", 7, "--out", out, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["trials"] == 7 and summary["bins"] == BINS and summary["bins_from"] == "summary.json"
    got = read_h5(out)
    assert got["spikes"].shape == got["truth/rates"].shape == got["truth/retest_counts"].shape == (7, BINS, NEURONS)
    assert got["truth/latents"].shape == (7, BINS, 2)
    assert got["spikes"].dtype.kind == "i" and (got["spikes"] >= 0).all()  # non-negative integer counts
    assert (got["truth/rates"] > 0).all() and np.isfinite(got["truth/latents"]).all()
    assert summary["spikes"] == int(got["spikes"].sum())
    attrs = got["attrs"]
    assert attrs["bin_ms"] == 20.0 and attrs["seed"] == 0 and attrs["sampler"] == "ancestral"
    assert attrs["checkpoint_sha256"] == file_sha256(run / "best.pt")
    assert "model:" in attrs["config"] and "torch" in json.loads(attrs["versions"])
    assert list(got["unit_ids"].astype(str)) == [str(i) for i in range(NEURONS)]


def test_same_seed_same_file_other_seed_other_draws(fitted, tmp_path):
    run, _ = fitted
    for name, seed in (("a.h5", 5), ("b.h5", 5), ("c.h5", 6)):
        assert invoke("generate", run, "--trials", 5, "--bins", 12, "--seed", seed, "--out", tmp_path / name).exit_code == 0
    a, b, c = (read_h5(tmp_path / n) for n in ("a.h5", "b.h5", "c.h5"))
    for key in ("spikes", "truth/latents", "truth/rates", "truth/retest_counts"):
        assert np.array_equal(a[key], b[key]), key
    assert {k: v for k, v in a["attrs"].items() if k != "versions"} == \
        {k: v for k, v in b["attrs"].items() if k != "versions"}
    assert not np.array_equal(a["truth/latents"], c["truth/latents"])


def test_nwb_reads_back_through_inspect_and_fit(fitted, tmp_path):
    run, _ = fitted
    out = tmp_path / "gen.nwb"
    result = invoke("generate", run, "--trials", 12, "--bins", 15, "--out", out, "--seed", 1, "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(invoke("inspect", out, "--json").stdout)[0]
    loaded = report["loaded"]
    assert (loaded["trials"], loaded["bins"], loaded["neurons"], loaded["bin_ms"]) == (12, 15, NEURONS, 20.0)
    assert set(loaded["truth"]) == {"latents", "rates", "retest_counts"}
    assert report["ground_truth"]["simulation"]["checkpoint_sha256"]  # the provenance in the module's JSON
    result = invoke("fit", out, "--out", tmp_path / "refit", "--max-epochs", 1, "--quiet", *SMALL)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "refit" / "best.pt").is_file()


def test_output_is_never_overwritten_without_the_flag(fitted, tmp_path):
    run, _ = fitted
    out = tmp_path / "gen.h5"
    out.write_bytes(b"old")
    result = invoke("generate", run, "--trials", 3, "--out", out)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert out.read_bytes() == b"old"
    assert invoke("generate", run, "--trials", 3, "--out", out, "--overwrite").exit_code == 0
    assert read_h5(out)["spikes"].shape[0] == 3


@pytest.mark.parametrize("args, fragment", [
    (["--sampler", "ldidp", "--ddim-steps", 0], "--ddim-steps must be >= 1"),
    (["--sampler", "ldidp", "--bins", BINS + 3], "as long as the training ones"),
    (["--sampler", "gibbs"], "--sampler must be ancestral"),
    (["--trials", 0], "--trials must be >= 1"),
    (["--plot"], "--compare DATA"),
    (["--session", "nope"], "not a session of this run"),
])
def test_bad_options_exit_2_with_one_line_and_write_nothing(fitted, tmp_path, args, fragment):
    run, _ = fitted
    out = tmp_path / "gen.h5"
    result = invoke("generate", run, "--out", out, *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_ldidp_sampler_trains_on_the_runs_posterior_and_generates(fitted, tmp_path):
    run, data = fitted
    out = tmp_path / "ldidp.h5"
    result = invoke("generate", run, "--trials", 5, "--out", out, "--sampler", "ldidp", "--ldidp-steps", 20,
                    "--ddim-steps", 3, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    arrays = read_h5(out)
    assert arrays["spikes"].shape == (5, BINS, NEURONS) and arrays["truth/latents"].shape[:2] == (5, BINS)
    assert (arrays["spikes"] >= 0).all() and np.isfinite(arrays["truth/rates"]).all()
    record = json.loads(arrays["attrs"]["ldidp"]) if isinstance(arrays["attrs"]["ldidp"], str) else arrays["attrs"]["ldidp"]
    assert record["training_steps"] == 20 and record["ddim_steps"] == 3
    assert record["trajectories"] % 8 == 0 and 0 < record["trajectories"] <= 8 * TRIALS  # 8 draws per training trial
    # the same seed gives the same file
    again = tmp_path / "again.h5"
    assert invoke("generate", run, "--trials", 5, "--out", again, "--sampler", "ldidp", "--ldidp-steps", 20,
                  "--ddim-steps", 3, "--quiet").exit_code == 0
    assert np.array_equal(read_h5(again)["spikes"], arrays["spikes"])


def test_a_checkpoint_alone_needs_bins(fitted, tmp_path):
    run, _ = fitted
    lone = tmp_path / "lone.pt"
    shutil.copyfile(run / "best.pt", lone)
    result = invoke("generate", lone, "--trials", 2, "--out", tmp_path / "g.h5")
    assert result.exit_code == 2 and "--bins" in result.output
    assert invoke("generate", lone, "--trials", 2, "--bins", 4, "--out", tmp_path / "g.h5").exit_code == 0


def test_compare_reports_the_predictive_statistics(fitted, tmp_path):
    run, data = fitted
    out = tmp_path / "gen.h5"
    plot = []
    try:
        import matplotlib  # noqa: F401

        plot = ["--plot"]
    except ImportError:
        pass
    result = invoke("generate", run, "--trials", 40, "--out", out, "--compare", data, "--json", *plot)
    assert result.exit_code == 0, result.output
    assert "posterior-predictive check" in result.output and "MMD" in result.output
    predictive = json.loads(result.stdout)["predictive"]
    assert predictive["trials_generated"] == 40 and predictive["trials_real"] == TRIALS
    assert predictive["window_bins"] == BINS and predictive["neurons_compared"] == NEURONS
    assert 0 < predictive["mmd_p_value"] <= 1 and predictive["mmd"] >= 0
    assert len(predictive["per_neuron"]["rate_ratio"]) == NEURONS
    with h5py.File(out, "r") as f:  # the headline numbers travel with the file
        assert json.loads(f.attrs["predictive"])["mmd"] == pytest.approx(predictive["mmd"])
    if plot:
        assert (tmp_path / "gen.predictive.png").is_file()


def test_a_run_with_condition_inputs_generates_trials_of_each_condition(tmp_path):
    """Condition inputs: each generated trial gets a label, the compared recording's in turn (so both mix
    the conditions alike), else the run's labels in turn; the labels are written where the loaders read
    conditions (.h5 `conditions`, .nwb trials `condition`), so the generated file fits with them again."""
    from xfads_cli.data.load import load_data

    data = tmp_path / "task.h5"
    assert invoke("simulate", "task", "--out", data, "--neurons", NEURONS, "--trials", 24, "--bins", BINS).exit_code == 0
    real = load_data(data)
    assert real.conditions is not None and len(set(real.conditions)) > 1
    run = tmp_path / "run"
    result = invoke("fit", data, "--out", run, "--max-epochs", 1, "--quiet", *SMALL, "--set", "data.inputs=[clock,condition]")
    assert result.exit_code == 0, result.output
    out = tmp_path / "gen.h5"
    result = invoke("generate", run, "--trials", 30, "--out", out, "--compare", data, "--json")
    assert result.exit_code == 0, result.output
    labels = [str(c) for c in real.conditions]
    with h5py.File(out, "r") as f:
        written = [c.decode() if isinstance(c, bytes) else str(c) for c in f["conditions"][()]]
        assert "compared recording" in str(f.attrs["conditions_from"])
    assert written == [labels[k % len(labels)] for k in range(30)]
    assert [str(c) for c in load_data(out).conditions] == written
    nwb = tmp_path / "gen.nwb"
    assert invoke("generate", run, "--trials", 8, "--out", nwb).exit_code == 0
    balanced = [str(c) for c in load_data(nwb).conditions]
    names = sorted(set(labels))
    assert balanced == [names[k % len(names)] for k in range(8)]
    # --conditions: those labels only, compared with the real trials of those labels
    one = tmp_path / "one.h5"
    result = invoke("generate", run, "--trials", 6, "--out", one, "--conditions", names[0], "--compare", data, "--json")
    assert result.exit_code == 0, result.output
    assert [str(c) for c in load_data(one).conditions] == [names[0]] * 6
    assert json.loads(result.stdout)["predictive"]["trials_real"] == labels.count(names[0])
    bad = invoke("generate", run, "--trials", 6, "--out", tmp_path / "bad.h5", "--conditions", "nope")
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1 and "not among the run's" in bad.output
    assert not (tmp_path / "bad.h5").exists()


# ------------------------------------------------------------------------------------------------ statistics


def poisson_counts(rates, trials=300, bins=25, seed=0):
    """Poisson counts [trial, bin, neuron] of rates [neuron] or [bin, neuron]."""
    rates = np.asarray(rates, dtype=np.float64)
    rng = np.random.default_rng(seed)
    return rng.poisson(np.broadcast_to(rates, (trials, bins, rates.shape[-1]))).astype(np.float64)


def test_identical_recordings_compare_perfectly():
    counts = poisson_counts(np.linspace(0.5, 3.0, 6) * (1 + 0.5 * np.sin(np.arange(25) / 3))[:, None])
    report = compare(CountStats.of(counts), CountStats.of(counts), bin_ms=10.0, permutations=50)
    assert report["rate_ratio_median"] == pytest.approx(1.0) and report["rates_within_10pct"] == 1.0
    assert report["psth_r_median"] == pytest.approx(1.0)
    assert report["fano_ratio_median"] == pytest.approx(1.0) and report["pairwise_r"] == pytest.approx(1.0)
    assert report["mmd"] == pytest.approx(0.0, abs=1e-6) and report["mmd_p_value"] == 1.0
    assert report["per_neuron"]["rate_generated_hz"] == pytest.approx(report["per_neuron"]["rate_real_hz"])
    assert any("MMD" in line for line in report_lines(report))


def test_shifted_rates_are_detected():
    real = CountStats.of(poisson_counts(np.full(5, 2.0), seed=1))
    generated = CountStats.of(poisson_counts(np.full(5, 3.0), seed=2))
    report = compare(generated, real, bin_ms=20.0, permutations=100)
    assert report["rate_ratio_median"] == pytest.approx(1.5, rel=0.03)
    assert report["rates_within_10pct"] == 0.0
    assert report["mmd"] > 0.1 and report["mmd_p_value"] < 0.05
    # Poisson counts: Fano factors near 1 on both sides
    assert report["fano_generated_median"] == pytest.approx(1.0, abs=0.2)
    assert report["fano_real_median"] == pytest.approx(1.0, abs=0.2)


def test_same_distribution_is_not_rejected():
    real = CountStats.of(poisson_counts(np.full(4, 2.0), trials=150, seed=3))
    generated = CountStats.of(poisson_counts(np.full(4, 2.0), trials=150, seed=4))
    assert compare(generated, real, bin_ms=20.0, permutations=100)["mmd_p_value"] > 0.01


def test_closed_forms_of_the_pieces():
    sums = np.array([[1.0, 2.0, 5.0], [3.0, 4.0, 5.0], [5.0, 6.0, 5.0]])
    # Fano: var (ddof 1) / mean: column 0 -> 4 / 3, column 1 -> 4 / 4, a constant column -> 0
    assert fano_factors(sums) == pytest.approx([4 / 3, 1.0, 0.0])
    # correlations: columns 0 and 1 move together (r = 1); the constant column has none (NaN)
    pairs = pairwise_correlations(sums)
    assert pairs[0] == pytest.approx(1.0) and np.isnan(pairs[1:]).all()
    assert pearson(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert np.isnan(pearson(np.array([1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])))
    # MMD of two point masses a distance d apart, kernel width w: sqrt(2 - 2 exp(-d^2 / 2w^2)); w = median = d
    x, y = np.zeros((4, 2)), np.full((4, 2), 4.0)  # sqrt-transformed: (0, 0) vs (2, 2), d = sqrt(8)
    result = mmd_test(x, y, permutations=20)
    assert result["bandwidth"] == pytest.approx(np.sqrt(8.0))
    assert result["mmd"] == pytest.approx(np.sqrt(2 - 2 * np.exp(-0.5)))


def test_stats_accumulate_by_blocks_and_skip_missing_trials():
    counts = poisson_counts(np.array([1.0, 2.0]), trials=10, bins=6, seed=5)
    counts[3, 2, 0] = np.nan  # a missing bin: trial 3 leaves the trial sums, the bin the per-bin means
    whole, parts = CountStats.of(counts, window=4), CountStats(4)
    for block in (counts[:4], counts[4:]):
        parts.add(block)
    assert np.allclose(whole.psth, parts.psth) and np.allclose(whole.trial_sums, parts.trial_sums)
    assert whole.trial_sums.shape == (9, 2) and whole.n_trials == 10
    observed = counts[:, :4]
    assert whole.mean_rate == pytest.approx(np.nanmean(observed.reshape(-1, 2), axis=0))


def test_the_psth_noise_ceiling_is_what_the_true_rates_score():
    """A generator that knew the true rates would score r(true PSTH, real PSTH) against the real trials:
    the split-half estimate from the real counts alone must match it (Monte Carlo over recordings)."""
    rng = np.random.default_rng(3)
    shape = 0.3 + 0.25 * (1 + np.sin(np.arange(40)[:, None] / 4 + rng.uniform(0, 6, 12)))  # [bin, neuron]
    truth, estimates = [], []
    for seed in range(20):
        counts = poisson_counts(shape, trials=60, bins=40, seed=seed)
        truth.append(np.median(pearson_columns(shape, counts.mean(0))))
        estimates.append(psth_noise_ceiling(counts, 40, seed=seed))
    assert np.mean(estimates) == pytest.approx(np.mean(truth), abs=0.03)
    assert 0.5 < np.mean(truth) < 0.95  # a setting where the ceiling binds
    assert np.isnan(psth_noise_ceiling(poisson_counts(shape, trials=3, bins=40), 40))
