"""write_nwb_copy: a new NWB file = input copy + one processing module; the input is never touched."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

import xfads_cli.outputs.nwb as outnwb
from xfads_cli.config import DataConfig
from xfads_cli.data.nwb import load_nwb
from xfads_cli.errors import UsageError
from xfads_cli.outputs.nwb import write_nwb_copy

BIN_MS = 20.0


def _fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def _series(n_trial=3, n_time=5, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "latent_mean": rng.normal(size=(n_trial, n_time, 2)).astype(np.float32),
        "rates_mean": rng.gamma(2.0, size=(n_trial, n_time, 4)).astype(np.float32),
    }


def _read_module(path: Path, name: str) -> dict:
    """{'description': str, series name: (data, timestamps)} read back with pynwb."""
    from pynwb import NWBHDF5IO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with NWBHDF5IO(str(path), "r") as io:
            module = io.read().processing[name]
            out = {"description": module.description}
            for key, ts in module.data_interfaces.items():
                out[key] = (np.asarray(ts.data[:]), np.asarray(ts.get_timestamps()), ts.unit)  # evenly spaced: a rate
    return out


def _write(source: Path, out: Path, series=None, module="xfads_smooth", **kw):
    series = series if series is not None else _series()
    n_trial = next(iter(series.values())).shape[0]
    kw.setdefault("attrs", {"checkpoint_sha256": "ab" * 32, "nan": float("nan"), "path": Path("/x"), "n": np.int64(3)})
    return write_nwb_copy(
        source, out, module, series, start_s=np.arange(n_trial) * 2.0 + 1.0, bin_ms=BIN_MS,
        description="posterior means", **kw,
    )


@pytest.fixture
def lorenz(fixtures_dir, tmp_path) -> Path:
    return fixtures_dir / "lorenz_small.nwb"


def test_copy_holds_series_and_source_is_unchanged(lorenz, tmp_path):
    before = _fingerprint(lorenz)
    series = _series()
    out = _write(lorenz, tmp_path / "sub" / "smooth.nwb", series, units={"rates_mean": "spikes/bin"})
    assert out == tmp_path / "sub" / "smooth.nwb" and out.is_file()
    assert _fingerprint(lorenz) == before

    got = _read_module(out, "xfads_smooth")
    centres = (np.arange(3)[:, None] * 2.0 + 1.0 + (np.arange(5) + 0.5) * BIN_MS / 1000).ravel()
    for name, arr in series.items():
        data, stamps, _ = got[name]
        assert data.shape == (15, arr.shape[2])
        np.testing.assert_array_equal(data, arr.reshape(15, -1))
        np.testing.assert_allclose(stamps, centres)
    assert got["rates_mean"][2] == "spikes/bin" and got["latent_mean"][2] == "a.u."
    meta = json.loads(got["description"])
    assert meta["description"] == "posterior means" and meta["n_trials"] == 3 and meta["n_time"] == 5
    assert meta["attrs"] == {"checkpoint_sha256": "ab" * 32, "nan": None, "path": "/x", "n": 3}
    assert list(tmp_path.joinpath("sub").iterdir()) == [out]  # no temporary file left behind


def test_copy_keeps_everything_else(lorenz, tmp_path):
    """The original content loads exactly as from the source (spikes, trials, ground truth)."""
    out = _write(lorenz, tmp_path / "smooth.nwb")
    a, b = load_nwb(lorenz), load_nwb(out)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.start_s, b.start_s)
    for key in a.truth:
        np.testing.assert_array_equal(a.truth[key], b.truth[key])


def test_existing_output_needs_overwrite(lorenz, tmp_path):
    out = _write(lorenz, tmp_path / "smooth.nwb")
    first = _fingerprint(out)
    with pytest.raises(UsageError, match="--overwrite"):
        _write(lorenz, out)
    assert _fingerprint(out) == first
    _write(lorenz, out, series=_series(seed=1), overwrite=True)
    data = _read_module(out, "xfads_smooth")["latent_mean"][0]
    np.testing.assert_array_equal(data, _series(seed=1)["latent_mean"].reshape(15, -1))


def test_output_equal_to_source_is_refused(lorenz, tmp_path):
    source = tmp_path / "rec.nwb"
    shutil.copyfile(lorenz, source)
    before = _fingerprint(source)
    for out in (source, tmp_path / "." / "rec.nwb"):
        with pytest.raises(UsageError, match="input file"):
            _write(source, out, overwrite=True)
    link = tmp_path / "link.nwb"
    link.symlink_to(source)
    with pytest.raises(UsageError, match="input file"):
        _write(source, link, overwrite=True)
    assert _fingerprint(source) == before


def test_module_already_in_source_is_refused(lorenz, tmp_path):
    first = _write(lorenz, tmp_path / "smooth.nwb")
    with pytest.raises(UsageError, match="'xfads_smooth'"):
        _write(first, tmp_path / "again.nwb")
    # A different module on top of an earlier output is fine: both are there.
    both = _write(first, tmp_path / "forecast.nwb", module="xfads_forecast")
    assert _read_module(both, "xfads_smooth") and _read_module(both, "xfads_forecast")
    assert not (tmp_path / "again.nwb").exists()


def test_failure_removes_temporary_file(lorenz, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outnwb, "_timeseries", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        _write(lorenz, tmp_path / "smooth.nwb")
    assert list(tmp_path.iterdir()) == []


def test_bad_sources(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        _write(tmp_path / "missing.nwb", tmp_path / "out.nwb")
    text = tmp_path / "notes.nwb"
    text.write_text("not hdf5")
    with pytest.raises(UsageError, match="HDF5"):
        _write(text, tmp_path / "out.nwb")
    import h5py

    plain = tmp_path / "plain.nwb"
    with h5py.File(plain, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(UsageError, match="not a readable NWB"):
        _write(plain, tmp_path / "out.nwb")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.nwb", "plain.nwb"]


def test_inconsistent_series_are_a_caller_bug(lorenz, tmp_path):
    bad = {"a": np.zeros((3, 5, 2)), "b": np.zeros((2, 5, 2))}
    with pytest.raises(ValueError, match="number of trials"):
        _write(lorenz, tmp_path / "x.nwb", series=bad)
    with pytest.raises(ValueError, match="trial, time, dim"):
        _write(lorenz, tmp_path / "x.nwb", series={"a": np.zeros((3, 5))})


def test_series_on_other_bins_get_their_own_timestamps(lorenz, tmp_path):
    """A forecast's context (4 bins before the forecast start) next to its 3 forecast bins."""
    series = {"rates_mean": np.ones((2, 3, 4)), "context_counts": np.zeros((2, 4, 4)), "counts": np.ones((2, 3, 4))}
    out = _write(lorenz, tmp_path / "f.nwb", series=series, module="xfads_forecast", offsets={"context_counts": -4})
    got = _read_module(out, "xfads_forecast")
    start = np.arange(2) * 2.0 + 1.0
    bin_s = BIN_MS / 1000
    np.testing.assert_allclose(got["rates_mean"][1], (start[:, None] + (np.arange(3) + 0.5) * bin_s).ravel())
    np.testing.assert_allclose(got["context_counts"][1], (start[:, None] + (np.arange(4) - 4 + 0.5) * bin_s).ravel())
    np.testing.assert_array_equal(got["counts"][1], got["rates_mean"][1])
    assert got["context_counts"][0].shape == (8, 4)
    meta = json.loads(got["description"])
    assert meta["series_bins"]["context_counts"] == {"n_time": 4, "offset_bins": -4}


@pytest.mark.parametrize(
    "name, cfg",
    [
        # NWB 2.4.0 written in the wild (MatNWB/PyNWB): pynwb migrates it while appending.
        ("human_mtl_sub-4_ses-4.nwb", DataConfig(intervals="recognition_table", window_ms=(0, 1500))),
        ("mc_maze_2trials.nwb", DataConfig(split=(0.5, 0.5, 0.0))),  # 2 trials: no test split
        ("rat_hc_linear_track.nwb", DataConfig()),
    ],
)
def test_real_files(request, fixtures_dir, tmp_path, name, cfg):
    source = fixtures_dir / name  # bundled (mc_maze_2trials.nwb): runs on every clone
    if not source.is_file():
        source = request.getfixturevalue("real_dir") / name  # ../shared, skipped when absent
    before = _fingerprint(source)
    data = load_nwb(source, cfg)
    series = {"rates_mean": np.random.default_rng(0).random((data.n_trials, data.n_time, data.n_neurons), np.float32)}
    out = write_nwb_copy(
        source, tmp_path / name, "xfads_smooth", series, data.start_s, cfg.bin_ms, "test", {"input": name}
    )
    assert _fingerprint(source) == before
    got, stamps, _ = _read_module(out, "xfads_smooth")["rates_mean"]
    assert got.shape == (data.n_trials * data.n_time, data.n_neurons)
    np.testing.assert_allclose(stamps[: data.n_time], data.start_s[0] + (np.arange(data.n_time) + 0.5) * cfg.bin_ms / 1000)
    again = load_nwb(out, cfg)
    np.testing.assert_array_equal(again.counts, data.counts)
