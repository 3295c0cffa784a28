"""Trials of different durations (issue 16, part 2): data.trial_lengths own (default) | shortest.

A small NWB file whose trials last 0.5 to 1.0 s, with spikes between the trials too: each trial keeps
its own bins, NaN-padded to the longest; SpikeData.lengths; 'shortest' gives the old windows exactly;
data.window_ms is clipped to each trial; inspect reports the lengths; fit + smooth + forecast write
`lengths` and NaN past each trial's end; bits/spike does not see the padding; HDF5 lengths.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from writers import new_nwb, save_nwb
from xfads_cli.cli import app
from xfads_cli.config import DataConfig
from xfads_cli.data.load import load_data
from xfads_cli.data.spikedata import padding_mask
from xfads_cli.scoring import bits_per_spike

BIN_S = 0.02
DURATIONS = np.array([0.6, 1.0, 0.8, 0.5, 1.0, 0.7, 0.9, 0.56, 0.64, 0.74])
STARTS = 0.3 + np.concatenate([[0.0], np.cumsum(DURATIONS[:-1] + 0.3)])  # 0.3 s between trials
STOPS = STARTS + DURATIONS
END = float(STOPS[-1] + 0.5)
LENGTHS = np.floor(DURATIONS / BIN_S + 1e-9).astype(int)  # [25, 50, 40, ...] whole 20 ms bins
TINY = ["--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=8", "--set", "model.encoder_hidden=8",
        "--set", "model.samples=2", "--set", "train.samples=2"]


def trains(seed: int = 0) -> list[np.ndarray]:
    """Spike times of 3 units over the whole recording, between the trials too, plus one spike just
    after each trial's stop and one just before each start (never counted into the trial)."""
    rng = np.random.default_rng(seed)
    out = [np.sort(rng.uniform(0.0, END, rng.poisson(rate * END))) for rate in (20.0, 35.0, 12.0)]
    out[0] = np.sort(np.concatenate([out[0], STOPS + 0.001, STARTS - 0.001]))
    return out


def write_file(path: Path) -> Path:
    nwb = new_nwb("variable-length trials", path.stem)
    for j, train in enumerate(trains()):
        nwb.add_unit(id=j, spike_times=train)
    nwb.add_trial_column("go_time", "go cue")
    nwb.add_trial_column("cond", "condition")
    for k in range(len(STARTS)):
        nwb.add_trial(start_time=STARTS[k], stop_time=STOPS[k], go_time=STARTS[k] + 0.2, cond="ab"[k % 2])
    return save_nwb(nwb, path)


def brute_force(starts: np.ndarray, n_bins: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """[trial, time, unit] counts by looping over spikes; bins not wholly inside [lo, hi] are NaN."""
    out = np.zeros((len(starts), n_bins, 3))
    for k, start in enumerate(starts):
        for i in range(n_bins):
            a, b = start + i * BIN_S, start + (i + 1) * BIN_S
            if a < lo[k] - 1e-9 or b > hi[k] + 1e-9:
                out[k, i] = np.nan
                continue
            for j, train in enumerate(trains()):
                out[k, i, j] = np.sum((train >= a) & (train < b))
    return out


@pytest.fixture(scope="module")
def nwb_file(tmp_path_factory) -> Path:
    return write_file(tmp_path_factory.mktemp("varlen") / "varlen.nwb")


def test_each_trial_keeps_its_own_bins(nwb_file):
    data = load_data(nwb_file, DataConfig(bin_ms=20.0))
    assert data.counts.shape == (len(STARTS), LENGTHS.max(), 3)
    np.testing.assert_array_equal(data.lengths, LENGTHS)
    pad = padding_mask(LENGTHS, data.n_time)
    assert np.isnan(data.counts[pad]).all() and not np.isnan(data.counts[~pad]).any()
    np.testing.assert_array_equal(data.counts, brute_force(STARTS, data.n_time, STARTS, STOPS))
    # the spike planted 1 ms after each stop (and before each start) is in no trial's bins
    for k in range(len(STARTS)):
        inside = [np.sum((t >= STARTS[k]) & (t < STARTS[k] + LENGTHS[k] * BIN_S)) for t in trains()]
        np.testing.assert_array_equal(np.nansum(data.counts[k], axis=0), inside)
    summary = data.summary()["trial_lengths"]
    assert summary["min_bins"] == 25 and summary["max_bins"] == 50 and summary["shorter_than_longest"] == 8
    assert summary["max_s"] == pytest.approx(1.0)


def test_shortest_reproduces_the_old_windows(nwb_file):
    old = load_data(nwb_file, DataConfig(bin_ms=20.0, trial_lengths="shortest"))
    assert old.counts.shape == (len(STARTS), LENGTHS.min(), 3) and not np.isnan(old.counts).any()
    np.testing.assert_array_equal(old.lengths, LENGTHS.min())
    never = np.full(len(STARTS), np.inf)
    np.testing.assert_array_equal(old.counts, brute_force(STARTS, LENGTHS.min(), -never, never))
    own = load_data(nwb_file, DataConfig(bin_ms=20.0))
    np.testing.assert_array_equal(own.counts[:, : LENGTHS.min()], old.counts)
    window = DataConfig(bin_ms=20.0, align="go_time", window_ms=(-300.0, 600.0), trial_lengths="shortest")
    fixed = load_data(nwb_file, window)  # the same window for all, spikes outside the trials counted
    np.testing.assert_array_equal(fixed.counts, brute_force(STARTS - 0.1, 45, -never, never))


def test_window_is_clipped_to_each_trial(nwb_file):
    data = load_data(nwb_file, DataConfig(bin_ms=20.0, align="go_time", window_ms=(-300.0, 600.0)))
    assert data.n_time == 45  # the window's bins, whatever the trials' lengths
    np.testing.assert_allclose(data.start_s, STARTS - 0.1)
    np.testing.assert_array_equal(data.counts, brute_force(STARTS - 0.1, 45, STARTS, STOPS))
    assert np.isnan(data.counts[:, :5]).all()  # the 100 ms before start_time
    np.testing.assert_array_equal(data.lengths, np.minimum(5 + LENGTHS, 45))


def test_spikedata_lengths_select_and_checks(nwb_file):
    data = load_data(nwb_file, DataConfig(bin_ms=20.0))
    part = data.select([1, 3])
    np.testing.assert_array_equal(part.lengths, LENGTHS[[1, 3]])
    assert part.summary()["trial_lengths"]["shorter_than_longest"] == 1
    with pytest.raises(ValueError, match="NaN past each trial's length"):
        type(data)(**{**data.__dict__, "counts": np.nan_to_num(data.counts)})
    with pytest.raises(ValueError, match="lengths"):
        type(data)(**{**data.__dict__, "lengths": LENGTHS + 100})


def test_inspect_reports_lengths(nwb_file):
    runner = CliRunner()
    res = runner.invoke(app, ["inspect", str(nwb_file), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)[0]
    assert report["loaded"]["trial_lengths"]["min_bins"] == 25
    assert report["defaults"]["trials_shorter_than_longest"] == 8
    text = runner.invoke(app, ["inspect", str(nwb_file)])
    assert text.exit_code == 0 and "shorter_than_longest=8" in text.stdout and "median_s" in text.stdout
    old = runner.invoke(app, ["inspect", str(nwb_file), "--json", "--set", "data.trial_lengths=shortest"])
    assert json.loads(old.stdout)[0]["loaded"]["bins"] == 25
    bad = runner.invoke(app, ["inspect", str(nwb_file), "--set", "data.trial_lengths=longest"])
    assert bad.exit_code == 2 and "own, shortest" in bad.output


def test_fit_smooth_forecast_write_lengths_and_nan_past_the_end(nwb_file, tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    res = runner.invoke(app, ["fit", str(nwb_file), "--out", str(run), "--max-epochs", "2", "--threads", "1",
                              "--quiet", "--set", "data.heldout_fraction=0.34", *TINY])
    assert res.exit_code == 0, res.output
    smooth = tmp_path / "smooth.h5"
    res = runner.invoke(app, ["smooth", str(run), str(nwb_file), "--out", str(smooth), "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    with h5py.File(smooth, "r") as f:
        np.testing.assert_array_equal(f["lengths"][()], LENGTHS)
        pad = padding_mask(LENGTHS, LENGTHS.max())
        for name in ("rates_mean", "rates_q95", "latents_mean", "latents_var"):
            assert np.isnan(f[name][()][pad]).all() and np.isfinite(f[name][()][~pad]).all(), name
    as_nwb = tmp_path / "smooth.nwb"
    res = runner.invoke(app, ["smooth", str(run), str(nwb_file), "--out", str(as_nwb), "--format", "nwb", "--threads",
                              "1", "--quiet"])
    assert res.exit_code == 0, res.output
    with h5py.File(as_nwb, "r") as f:
        module = f["processing/xfads_smooth"]
        assert json.loads(module.attrs["description"])["lengths"] == LENGTHS.tolist()
        rates = module["rates_mean/data"][()].reshape(len(LENGTHS), LENGTHS.max(), -1)  # row k * n_time + i
        assert np.isnan(rates[pad]).all() and np.isfinite(rates[~pad]).all()
    forecast = tmp_path / "forecast.h5"
    res = runner.invoke(app, ["forecast", str(run), str(nwb_file), "--out", str(forecast), "--context", "20",
                              "--horizon", "30", "--samples", "3", "--threads", "1", "--quiet"])
    assert res.exit_code == 0, res.output
    with h5py.File(forecast, "r") as f:
        np.testing.assert_array_equal(f["lengths"][()], LENGTHS)
        past = padding_mask(LENGTHS - 20, 30)  # horizon bin i is bin 20 + i of the trial
        rates = f["rates_mean"][()]
        assert np.isnan(rates[past]).all() and np.isfinite(rates[~past]).all()
        assert np.isfinite(json.loads(f.attrs["metrics"])["fp_bps"])


def test_bits_per_spike_ignores_the_padding(nwb_file):
    data = load_data(nwb_file, DataConfig(bin_ms=20.0))
    rates = np.random.default_rng(0).uniform(0.1, 1.0, data.counts.shape)
    inside = ~padding_mask(data.lengths, data.n_time)
    packed = bits_per_spike(rates[inside][None], data.counts[inside][None])  # [1, in-trial bins, neuron]
    assert bits_per_spike(rates, data.counts) == pytest.approx(packed, rel=1e-12)
    rates[~inside] = 1e3  # whatever a model says past a trial's end
    assert bits_per_spike(rates, data.counts) == pytest.approx(packed, rel=1e-12)


def test_hdf5_lengths_from_nan_padding_or_a_dataset(tmp_path):
    counts = np.random.default_rng(1).poisson(1.0, (4, 10, 3)).astype(np.float32)
    counts[1, 6:] = np.nan  # NaN padding: recognised as such
    path = tmp_path / "nan.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("spikes", data=counts)
        f.attrs["bin_ms"] = 10.0
    np.testing.assert_array_equal(load_data(path, DataConfig(bin_ms=10.0)).lengths, [10, 6, 10, 10])
    np.testing.assert_array_equal(load_data(path, DataConfig(bin_ms=20.0)).lengths, [5, 3, 5, 5])

    zeros = np.nan_to_num(counts)  # zero padding, with the lengths stored next to it
    path = tmp_path / "lengths.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("spikes", data=zeros)
        f.create_dataset("trial_lengths", data=[10, 6, 7, 10])
        f.attrs["bin_ms"] = 10.0
    data = load_data(path, DataConfig(bin_ms=10.0))
    np.testing.assert_array_equal(data.lengths, [10, 6, 7, 10])
    assert np.isnan(data.counts[2, 7:]).all() and not np.isnan(data.counts[2, :7]).any()
    with h5py.File(path, "a") as f:
        f["trial_lengths"][0] = 11
    res = CliRunner().invoke(app, ["inspect", str(path)])
    assert res.exit_code == 2 and "trial_lengths" in res.output and "Traceback" not in res.output


def test_backward_messages_of_a_trial_do_not_depend_on_its_padding():
    """A shorter trial padded with missing bins gets the smoother's messages it gets unpadded: the
    backward encoder reads each trial from its last observed bin."""
    import torch

    from xfads_cli.config import ModelConfig
    from xfads_cli.model.xfads import XFADS

    torch.manual_seed(0)
    model = XFADS.one_session(ModelConfig(latent_dim=3, rank_local=2, rank_backward=2, samples=4, encoder_hidden=8,
                              dynamics_hidden=8), 5, torch.ones(5, dtype=torch.bool), 0.02).double().eval()
    torch.nn.init.normal_(model.backward.proj.weight, std=0.3)
    y = torch.poisson(torch.full((2, 20, 5), 0.8), generator=torch.Generator().manual_seed(1)).double()
    padded = torch.cat([y, torch.full((2, 7, 5), float("nan"), dtype=torch.float64)], dim=1)
    padded[1, 20:] = torch.poisson(torch.full((7, 5), 0.8)).double()  # trial 1 is the longer one
    noise = torch.randn(model.noise_shape(2, 27), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    alone = model.posterior(y[:1], noise=noise[:20, :, :1])
    together = model.posterior(padded, noise=noise)
    torch.testing.assert_close(together.mean[:1, :20], alone.mean, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(together.samples[:, :1, :20], alone.samples, rtol=1e-10, atol=1e-10)
