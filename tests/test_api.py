"""The public Python API (`import xfads`, docs/api.md; issue 29): fit -> Run -> smooth / forecast give the
numbers `xfads smooth` / `xfads forecast` write for the same run, recording and split, as numpy arrays
with named dims; continuous recordings as pynapple TsdFrames; `import xfads` stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import xfads
import writers
from xfads_cli.cli import app

TINY = {"model.latent_dim": 3, "model.dynamics_hidden": 16, "model.encoder_hidden": 16, "model.rank_local": 2,
        "model.rank_backward": 1, "model.samples": 4, "train.samples": 2}


def cli(*args) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def h5(path) -> tuple[dict, dict]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}, json.loads(f.attrs["metrics"])


def same(ours: np.ndarray, written: np.ndarray) -> None:
    if written.dtype.kind in "SO":
        written = written.astype(str)
    np.testing.assert_array_equal(np.asarray(ours), written)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    data = xfads.simulate("lorenz", root / "lorenz.nwb", neurons=12, trials=24, bins=50, seed=1)
    run = xfads.fit(data, root / "run", overrides=TINY, max_epochs=2, seed=0, threads=1, log=("tensorboard",))
    return data, run


def test_import_xfads_does_not_import_torch():
    code = "import sys, xfads; xfads.__all__; print('torch' in sys.modules, 'xfads_cli.runs' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_the_public_surface_is_small_and_resolves():
    assert sorted(xfads.__all__) == ["Forecast", "Run", "RunFailure", "Smoothed", "UsageError", "fit", "load_run",
                                     "simulate"]
    assert all(getattr(xfads, name) is not None for name in xfads.__all__)
    assert isinstance(xfads.__version__, str)
    with pytest.raises(AttributeError):
        xfads.not_a_name  # noqa: B018


def test_fit_returns_the_run_with_its_record(fitted):
    data, run = fitted
    assert isinstance(run, xfads.Run) and run.checkpoint.name == "best.pt"
    assert run.summary["epochs"] == 2 and [row["epoch"] for row in run.metrics] == [0.0, 1.0]
    assert run.config.model.latent_dim == 3 and run.config.seed == 0
    assert run.config.train.max_epochs == 2
    # log= is fit --log: the epochs reached TensorBoard's event files
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(run.path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("lr")] == [0, 1]


@pytest.mark.parametrize("split", ["all", "test"])
def test_smooth_equals_what_xfads_smooth_writes(fitted, tmp_path, split):
    data, run = fitted
    smoothed = run.smooth(data, split=split)
    cli("smooth", run.path, data, "--out", tmp_path / "s.h5", "--split", split, "--quiet")
    written, metrics = h5(tmp_path / "s.h5")
    n = 24 if split == "all" else int(np.sum(written["split"].astype(str) == "test"))
    assert smoothed.layout == "trials" and smoothed.rates_mean.shape == (n, 50, 12)
    assert smoothed.latents_mean.shape == (n, 50, 3)
    for name, dims in smoothed.dims.items():
        value = smoothed.truth[name[6:]] if name.startswith("truth_") else getattr(smoothed, name)
        assert np.ndim(value) == len(dims), name
        if name in written:
            same(value, written[name])
    assert set(smoothed.metrics) and all(metrics[k] == pytest.approx(v) for k, v in smoothed.metrics.items())
    np.testing.assert_allclose(smoothed.times, np.arange(50) * 0.02)
    assert smoothed.truth["rates"].shape == smoothed.rates_mean.shape


def test_forecast_equals_what_xfads_forecast_writes(fitted, tmp_path):
    data, run = fitted
    fc = run.forecast(data, context=30, horizon=20, split="test", samples=20)
    cli("forecast", run.path, data, "--out", tmp_path / "f.h5", "--context", 30, "--horizon", 20, "--split", "test",
        "--samples", 20, "--no-grid", "--quiet")
    written, metrics = h5(tmp_path / "f.h5")
    assert fc.rates_mean.shape == (len(written["trial_ids"]), 20, 12) and fc.context_counts.shape[1] == 30
    for name in ("rates_mean", "rates_q05", "rates_q50", "rates_q95", "latents_mean", "counts", "context_counts",
                 "true_rates", "trial_ids", "split", "start_s", "unit_ids", "lengths"):
        same(getattr(fc, name), written[name])
    assert {k: pytest.approx(v) for k, v in fc.metrics.items()} == {k: metrics[k] for k in fc.metrics}
    assert fc.dims["rates_mean"] == ("trial", "horizon", "neuron")


def test_a_forecast_past_the_trial_window_reads_on_in_the_recording_as_the_cli_does(fitted):
    data, run = fitted  # trials of 50 bins; the simulated recording ends with its last trial: nothing to read on
    with pytest.raises(xfads.UsageError, match="runs past the recording"):
        run.forecast(data, context=40, horizon=20, split="test", samples=4)


def test_a_loaded_run_gives_the_same_numbers_and_leaves_the_callers_random_state(fitted):
    import torch

    data, run = fitted
    loaded = xfads.load_run(run.path)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    np.testing.assert_array_equal(loaded.smooth(data).rates_mean, run.smooth(data).rates_mean)
    assert torch.equal(torch.rand(3), expected)  # the draws are the run's seed's, in a forked generator


def test_results_convert_to_xarray(fitted):
    pytest.importorskip("xarray")
    data, run = fitted
    ds = run.smooth(data, split="test").to_xarray()
    assert ds["rates_mean"].dims == ("trial", "time", "neuron") and ds["truth_latents"].dims[-1] == "true_latent"
    assert list(ds["neuron"].values) == [str(u) for u in run.smooth(data).unit_ids]
    fc = run.forecast(data, context=30, horizon=5, split="test", samples=4).to_xarray()
    assert fc["rates_mean"].dims == ("trial", "horizon", "neuron") and fc.attrs["context"] == 30


def test_bad_input_raises_usage_errors(fitted, tmp_path):
    data, run = fitted
    cases = [
        lambda: run.smooth(data, split="nope"),
        lambda: run.smooth(tmp_path / "missing.nwb"),
        lambda: run.forecast(data, context=0, horizon=5),
        lambda: run.forecast(data, context=30, horizon=5, at_s=[1.0]),  # at_s needs a recording without trials
        lambda: run.smooth(data).to_pynapple(),  # trials have no single time base
        lambda: xfads.load_run(tmp_path / "nothing"),
        lambda: xfads.load_run(run.path, overrides={"model.latent_dim": 4}),  # the model is the checkpoint's
        lambda: xfads.fit(data, tmp_path / "r", overrides={"model.no_such_key": 1}),
    ]
    for case in cases:
        with pytest.raises(xfads.UsageError):
            case()
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------------
# A recording without trials: smoothed whole, on its own clock, as pynapple objects
# ---------------------------------------------------------------------------------------------------

GAP = (9.0, 11.0)  # no unit observed: two segments


def write_continuous(path, n_units: int = 6, duration: float = 20.0, seed: int = 0):
    return writers.write_continuous(path, n_units=n_units, duration=duration, gap=GAP, seed=seed)


@pytest.fixture(scope="module")
def continuous(tmp_path_factory):
    root = tmp_path_factory.mktemp("api_continuous")
    data = write_continuous(root / "rec.nwb")
    options = TINY | {"data.chop_ms": 1000, "data.bin_ms": 50, "data.heldout_fraction": 0.34}
    return data, xfads.fit(data, root / "run", overrides=options, max_epochs=2, threads=1)


def test_a_recording_without_trials_is_smoothed_whole_as_xfads_smooth_writes_it(continuous, tmp_path):
    data, run = continuous
    smoothed = run.smooth(data)
    cli("smooth", run.path, data, "--out", tmp_path / "s.h5", "--quiet")
    written, metrics = h5(tmp_path / "s.h5")
    assert smoothed.layout == "continuous" and smoothed.segments.tolist() == [[0, 180], [180, 360]]
    assert smoothed.dims["rates_mean"] == ("time", "neuron") and smoothed.rates_mean.shape == (360, 6)
    for name in ("rates_mean", "rates_q05", "rates_q95", "latents_mean", "latents_var", "counts", "segments",
                 "unit_ids", "heldout"):
        same(getattr(smoothed, name), written[name])
    same(smoothed.times, written["timestamps"])
    assert smoothed.metrics["co_bps"] == pytest.approx(metrics["co_bps"])


def test_continuous_rates_as_a_pynapple_tsdframe_on_the_recordings_clock(continuous):
    nap = pytest.importorskip("pynapple")
    data, run = continuous
    smoothed = run.smooth(data)
    rates = smoothed.to_pynapple()
    assert isinstance(rates, nap.TsdFrame) and rates.shape == (360, 6)
    assert list(rates.columns) == list(smoothed.unit_ids)
    np.testing.assert_allclose(rates.t, smoothed.times + 0.025)  # bin centres
    np.testing.assert_allclose(rates.time_support.values, [[0.0, GAP[0]], [GAP[1], 20.0]], atol=1e-9)
    np.testing.assert_array_equal(rates.values, smoothed.rates_mean)
    latents = smoothed.to_pynapple("latents_mean")
    assert latents.shape == (360, 3)
    # pynapple's own tools apply: the rates over the second segment
    assert len(rates.restrict(nap.IntervalSet(start=GAP[1], end=20.0))) == 180


def test_forecasts_at_given_times_equal_xfads_forecast_at_s(continuous, tmp_path):
    data, run = continuous
    fc = run.forecast(data, at_s=[5.0, 15.0], context=20, horizon=10, samples=10)
    cli("forecast", run.path, data, "--at-s", "5,15", "--context", 20, "--horizon", 10, "--samples", 10,
        "--out", tmp_path / "f.h5", "--quiet")
    written, metrics = h5(tmp_path / "f.h5")
    assert fc.layout == "continuous" and fc.rates_mean.shape == (2, 10, 6)
    for name in ("rates_mean", "rates_q50", "latents_mean", "counts", "context_counts", "start_s", "at_s", "unit_ids"):
        same(getattr(fc, name), written[name])
    assert fc.metrics == pytest.approx({k: metrics[k] for k in fc.metrics})
