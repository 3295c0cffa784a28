"""Recordings without trials end to end: `smooth` gives one continuous trajectory per segment on the
recording's time base (commands/smooth.py, commands/forecast.py --at-s), streamed piece by piece."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import writers
from xfads_cli.cli import app

DURATION = 40.0
GAP = (18.0, 21.5)  # no unit observed: two segments
TINY = ["--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=8", "--set", "model.encoder_hidden=8",
        "--set", "model.rank_local=2", "--set", "model.rank_backward=1", "--set", "data.heldout_fraction=0.25",
        "--set", "data.chop_ms=1000", "--set", "data.bin_ms=50", "--set", "model.samples=4", "--set", "train.samples=2"]


def write_continuous(path: Path, n_units: int = 8, seed: int = 0) -> Path:
    """Units driven by a slow oscillation, observed in [0, 18) and [21.5, 40) s (no trials table)."""
    return writers.write_continuous(path, n_units=n_units, duration=DURATION, gap=GAP, seed=seed)


def invoke(*args) -> dict:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("continuous")
    data = write_continuous(root / "rec.nwb")
    invoke("fit", data, "--out", root / "run", "--max-epochs", 2, "--quiet", "--threads", 1, *TINY)
    return data, root / "run"


def test_smooth_gives_one_trajectory_per_segment_on_the_recording_time_base(fitted, tmp_path):
    data, run = fitted
    res = invoke("smooth", run, data, "--out", tmp_path / "s.h5", "--json", "--quiet")
    summary = json.loads(res.stdout)
    assert summary["layout"] == "continuous" and summary["segments"] == 2
    with h5py.File(tmp_path / "s.h5") as f:
        segments, stamps = f["segments"][()], f["timestamps"][()]
        assert segments.tolist() == [[0, 360], [360, 730]]  # 18 s and 18.5 s of 50 ms bins
        T = segments[-1, 1]
        assert f["latents_mean"].shape == (T, 2) and f["latents_var"].shape == (T, 2)
        for name in ("rates_mean", "rates_q05", "rates_q50", "rates_q95", "counts"):
            assert f[name].shape == (T, 8)
        np.testing.assert_allclose(stamps[:3], [0.0, 0.05, 0.10])
        np.testing.assert_allclose(stamps[360:362], [GAP[1], GAP[1] + 0.05])
        # the counts are the spikes binned on that time base, the whole segment
        from pynwb import NWBHDF5IO

        with NWBHDF5IO(str(data), "r") as io:
            spikes = io.read().units["spike_times"][0]
        edges = np.append(stamps[:360], GAP[0])
        np.testing.assert_array_equal(f["counts"][:360, 0], np.histogram(spikes, edges)[0])
        assert np.all(f["latents_var"][()] > 0) and np.isfinite(f["rates_mean"][()]).all()
        assert f.attrs["layout"] == "continuous" and "co_bps" in json.loads(f.attrs["metrics"])
    assert np.isfinite(summary["metrics"]["co_bps"])


def test_windows_option_keeps_the_training_windows(fitted, tmp_path):
    data, run = fitted
    res = invoke("smooth", run, data, "--out", tmp_path / "w.h5", "--windows", "--json", "--quiet")
    assert json.loads(res.stdout)["trials"] > 0
    with h5py.File(tmp_path / "w.h5") as f:
        assert f["rates_mean"].ndim == 3 and "segments" not in f


def test_trial_options_are_refused_on_a_whole_recording(fitted, tmp_path):
    data, run = fitted
    for extra in (["--split", "test"], ["--format", "nwb"]):
        res = CliRunner().invoke(app, ["smooth", str(run), str(data), "--out", str(tmp_path / "x.h5"), *extra])
        assert res.exit_code == 2 and res.output.count("error:") == 1 and "--windows" in res.output, res.output
        assert not (tmp_path / "x.h5").exists()


def test_forecast_at_given_times_of_the_recording(fitted, tmp_path):
    data, run = fitted
    times = tmp_path / "times.txt"
    times.write_text("5.0\n30.02\n")
    res = invoke("forecast", run, data, "--out", tmp_path / "f.h5", "--at-s", times, "--context-ms", 500,
                 "--horizon-ms", 250, "--samples", 5, "--json", "--quiet")
    summary = json.loads(res.stdout)
    assert summary["trials"] == 2 and summary["context_bins"] == 10 and summary["horizon_bins"] == 5
    assert {"fp_bps", "fp_baseline_bps"} <= set(summary["metrics"])
    with h5py.File(tmp_path / "f.h5") as f:
        assert f["rates_mean"].shape == (2, 5, 8) and f["context_counts"].shape == (2, 10, 8)
        np.testing.assert_allclose(f["start_s"][()], [5.0, 30.0])  # the bin edge nearest each time
        np.testing.assert_allclose(f["at_s"][()], [5.0, 30.02])
    # a time whose context would straddle the gap, and a trial-only option, are one-line errors
    for extra in (["--at-s", "21.7"], ["--at-s", "5", "--split", "test"], ["--at-s", "soon"]):
        res = CliRunner().invoke(app, ["forecast", str(run), str(data), "--out", str(tmp_path / "g.h5"), "--context-ms",
                                       "500", "--horizon-ms", "250", *extra])
        assert res.exit_code == 2 and res.output.count("error:") == 1, res.output
        assert not (tmp_path / "g.h5").exists()


def test_inspect_shows_the_segments(tmp_path):
    data = write_continuous(tmp_path / "rec.nwb", n_units=3)
    res = invoke("inspect", data, "--json", "--set", "data.bin_ms=50")
    report = json.loads(res.stdout)
    report = report[0] if isinstance(report, list) else report
    assert report["continuous"]["segments"] == 2 and report["continuous"]["bins"] == 730
    assert any("whole recording (2 segment(s)" in h for h in report["hints"])
    text = invoke("inspect", data, "--set", "data.bin_ms=50").stdout
    assert "continuous" in text and "segment_start_s" in text


def test_large_blocks_are_served_by_mmap_on_glibc():
    """heap.py: on Linux with glibc the mmap threshold is fixed (benchmarks/full_size.py shows why)."""
    import platform

    from xfads_cli.heap import serve_large_blocks_by_mmap

    on_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert serve_large_blocks_by_mmap() is on_glibc
