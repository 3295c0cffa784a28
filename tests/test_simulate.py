"""Synthetic recordings: dynamics, readout, NWB and plain-HDF5 writers, determinism, errors."""

from __future__ import annotations

import json
import uuid
import warnings

import h5py
import numpy as np
import pytest

from xfads_cli.commands import simulate as simulate_command
from xfads_cli.commands.simulate import simulate
from xfads_cli.data.binning import bin_edges, bin_spikes
from xfads_cli.data.simulate import (
    DESCRIPTIONS,
    SYSTEMS,
    TRIAL_GAP_BINS,
    get_system,
    simulate_arrays,
    simulate_latents,
)
from xfads_cli.errors import UsageError

SMALL = dict(neurons=6, trials=5, bins=30, bin_ms=20.0, seed=3)
LATENT_DIM = {"lorenz": 3, "vdp": 2, "ring": 2, "duffing": 2, "hopf": 2, "task": 3}


def read_nwb(path):
    """Everything the tests need from an NWB file, as numpy arrays (the file is closed after)."""
    from pynwb import NWBHDF5IO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pynwb's reader emits unrelated namespace warnings
        with NWBHDF5IO(str(path), "r") as io:
            nwb = io.read()
            gt = nwb.processing["ground_truth"]
            return {
                "identifier": nwb.identifier,
                "subject_id": nwb.subject.subject_id,
                "session_description": nwb.session_description,
                "unit_ids": np.asarray(nwb.units.id[:]),
                "spike_times": [np.asarray(nwb.units.get_unit_spike_times(i)) for i in range(len(nwb.units))],
                "readout_weight": np.asarray(nwb.units["readout_weight"].data[:]),
                "readout_bias": np.asarray(nwb.units["readout_bias"].data[:]),
                "trial_start": np.asarray(nwb.trials["start_time"].data[:]),
                "trial_stop": np.asarray(nwb.trials["stop_time"].data[:]),
                "condition": np.asarray(nwb.trials["condition"].data[:]),
                "trial_columns": list(nwb.trials.colnames),
                "events": {c: np.asarray(nwb.trials[c].data[:]) for c in ("stimulus_time", "go_time")
                           if c in nwb.trials.colnames},
                "gt_description": json.loads(gt.description),
                "series": {
                    name: {
                        "data": np.asarray(ts.data[:]),
                        "timestamps": np.asarray(ts.timestamps[:]),
                        "unit": ts.unit,
                    }
                    for name, ts in gt.data_interfaces.items()
                },
            }


def rebin(spike_times, start_s, bins, bin_s):
    """[trial, time, neuron] counts by np.histogram of each unit's spike times in each trial."""
    out = np.zeros((len(start_s), bins, len(spike_times)), dtype=np.int64)
    for k, start in enumerate(start_s):
        edges = start + np.arange(bins + 1) * bin_s
        for j, times in enumerate(spike_times):
            out[k, :, j] = np.histogram(times, bins=edges)[0]
    return out


# ----------------------------------------------------------------------------- arrays


@pytest.mark.parametrize("system", SYSTEMS)
def test_arrays_shapes_and_readout(system):
    a = simulate_arrays(system, **SMALL)
    n, k, t, lat = SMALL["neurons"], SMALL["trials"], SMALL["bins"], LATENT_DIM[system]
    assert a["latents"].shape == (k, t, lat)
    for key in ("rates", "rates_hz", "counts", "retest_counts"):
        assert a[key].shape == (k, t, n), key
    assert a["C"].shape == (n, lat) and a["d"].shape == (n,)
    # Latents are standardised over all trials and bins.
    flat = a["latents"].reshape(-1, lat)
    np.testing.assert_allclose(flat.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(flat.std(0), 1, atol=1e-9)
    # log-rate = C z + d exactly, and Hz = expected count / bin width.
    np.testing.assert_allclose(np.log(a["rates"]), a["latents"] @ a["C"].T + a["d"], atol=1e-9)
    np.testing.assert_allclose(a["rates_hz"], a["rates"] / 0.02)
    # The log-rate modulation is meaningful but not extreme.
    assert np.all((np.log(a["rates"]).reshape(-1, n).std(0) > 0.3) & (np.log(a["rates"]).reshape(-1, n).std(0) < 1.5))
    assert a["counts"].dtype.kind == "i" and a["counts"].min() >= 0
    assert not np.array_equal(a["counts"], a["retest_counts"])
    np.testing.assert_allclose(a["start_s"], np.arange(5) * (30 + TRIAL_GAP_BINS) * 0.02)
    assert system in DESCRIPTIONS


def test_mean_rate_near_base_rate():
    a = simulate_arrays("vdp", neurons=30, trials=20, bins=50, base_rate_hz=25.0)
    assert 15.0 < a["counts"].mean() / 0.02 < 40.0


def test_determinism():
    a, b = simulate_arrays("lorenz", **SMALL), simulate_arrays("lorenz", **SMALL)
    for key in ("latents", "rates", "counts", "retest_counts", "C", "d"):
        np.testing.assert_array_equal(a[key], b[key])
    c = simulate_arrays("lorenz", **{**SMALL, "seed": 4})
    assert not np.allclose(a["latents"], c["latents"])
    assert not np.array_equal(a["counts"], c["counts"])


# the task's trials start near rest on purpose (its pulses, not its start, set the trajectory)
@pytest.mark.parametrize("system", [s for s in SYSTEMS if s != "task"])
def test_trials_start_independently(system):
    """Every trial draws its own start: across 40 trials the first bin's latents spread about as widely
    as all bins together do (variance 1 after standardising; 0.9-1.4 here), not only by the half bin of
    process noise that would separate trials sharing one start (variance below 0.03)."""
    z = simulate_arrays(system, neurons=6, trials=40, bins=20, seed=3)["latents"]
    assert z[:, 0].var(axis=0).mean() > 0.3


# ----------------------------------------------------------------------------- dynamics


def raw_latents(system, param, trials=20, bins=100, seed=0):
    spec = get_system(system)
    return simulate_latents(spec, spec.params(param), trials, bins, 0.02, np.random.default_rng(seed))


def test_hopf_mu_sets_regime():
    r_focus = np.linalg.norm(raw_latents("hopf", -1.0), axis=-1)
    r_cycle = np.linalg.norm(raw_latents("hopf", 1.0), axis=-1)
    # mu < 0: the amplitude decays towards the noise floor; mu > 0: it settles on r = sqrt(mu) = 1.
    assert r_focus[:, -25:].mean() < 0.3 * r_focus[:, :25].mean()
    assert 0.8 < r_cycle[:, -25:].mean() < 1.2


def test_duffing_alpha_sets_wells():
    x_single = raw_latents("duffing", -1.0)[:, -50:, 0]
    x_double = raw_latents("duffing", 1.0)[:, -50:, 0]
    # alpha < 0: one well at 0, so each trial oscillates around 0. alpha > 0: wells at +-1, so a
    # trial spends its time on one side and rarely near the barrier at 0.
    assert np.mean(np.abs(x_single.mean(axis=1))) < 0.25 < 0.45 < np.mean(np.abs(x_double.mean(axis=1)))
    assert np.mean(np.abs(x_double) < 0.3) < 0.5 * np.mean(np.abs(x_single) < 0.3)


def test_ring_stays_on_circle_and_rotates():
    z = raw_latents("ring", 0.75)
    r = np.linalg.norm(z, axis=-1)
    assert abs(r[:, -50:].mean() - 1.0) < 0.1
    turns = np.unwrap(np.arctan2(z[..., 1], z[..., 0]), axis=1)
    # 0.75 Hz for 2 s = 1.5 turns per trial on average.
    assert 1.2 < (turns[:, -1] - turns[:, 0]).mean() / (2 * np.pi) < 1.8


def test_vdp_limit_cycle_and_lorenz_attractor():
    x = raw_latents("vdp", 1.5)[..., 0]
    assert 1.7 < np.abs(x[:, -50:]).max(axis=1).mean() < 2.3  # VdP cycle amplitude ~2
    z = raw_latents("lorenz", None)
    assert np.all(np.abs(z[..., 0]) < 25) and np.all((z[..., 2] > 0) & (z[..., 2] < 55))
    # Both lobes are visited in some trial.
    assert (z[..., 0] > 5).any() and (z[..., 0] < -5).any()


def test_param_changes_latents():
    a = simulate_arrays("duffing", **SMALL, param=-1.0)
    b = simulate_arrays("duffing", **SMALL, param=1.0)
    assert not np.allclose(a["latents"], b["latents"])
    assert a["params"]["alpha"] == -1.0 and b["params"]["alpha"] == 1.0


# ----------------------------------------------------------------------------- NWB


@pytest.mark.parametrize("system", SYSTEMS)
def test_nwb_roundtrip(tmp_path, system):
    path = tmp_path / f"{system}.nwb"
    summary = simulate(system, path, **SMALL)
    a = simulate_arrays(system, **SMALL)
    f = read_nwb(path)
    k, t, n, bin_s = SMALL["trials"], SMALL["bins"], SMALL["neurons"], 0.02

    assert summary["path"] == str(path) and summary["spikes"] == int(a["counts"].sum())
    assert str(uuid.UUID(f["identifier"])) == f["identifier"]  # a fresh uuid4 per file (tests/test_nwb_inspector.py)
    assert f["subject_id"] == f"xfads-simulate-{system}-seed3"
    assert system in f["session_description"]
    np.testing.assert_array_equal(f["unit_ids"], np.arange(n))
    np.testing.assert_allclose(f["trial_start"], np.arange(k) * (t + 10) * bin_s)
    np.testing.assert_allclose(f["trial_stop"] - f["trial_start"], t * bin_s)
    if system == "task":  # its condition, and its events on the file's clock (trial start + offset)
        np.testing.assert_array_equal(f["condition"], a["conditions"])
        assert f["trial_columns"] == ["start_time", "stop_time", "condition", "stimulus_time", "go_time"]
        for name, offset in a["events"].items():
            np.testing.assert_allclose(f["events"][name], f["trial_start"] + offset)
    else:
        np.testing.assert_array_equal(f["condition"], 0)
        assert f["trial_columns"] == ["start_time", "stop_time", "condition"] and f["events"] == {}

    # Spike times re-binned give back exactly the counts that were drawn, with either binning.
    np.testing.assert_array_equal(rebin(f["spike_times"], f["trial_start"], t, bin_s), a["counts"])
    edges = bin_edges(f["trial_start"], t, bin_s)
    np.testing.assert_array_equal(bin_spikes(f["spike_times"], edges), a["counts"])
    assert all(np.all(np.diff(s) >= 0) for s in f["spike_times"])

    desc = f["gt_description"]
    assert {k: desc[k] for k in ("system", "bin_ms", "seed", "neurons", "trials", "bins")} == {
        "system": system, "bin_ms": 20.0, "seed": 3, "neurons": n, "trials": k, "bins": t,
    }
    assert desc["params"] == a["params"]

    series = f["series"]
    assert set(series) == {"true_latents", "true_rates", "retest_counts"}
    centres = (f["trial_start"][:, None] + (np.arange(t) + 0.5) * bin_s).ravel()
    for s in series.values():
        np.testing.assert_allclose(s["timestamps"], centres)
    assert series["true_latents"]["unit"] == "a.u." and series["true_rates"]["unit"] == "Hz"
    assert series["retest_counts"]["unit"] == "spikes"
    np.testing.assert_allclose(series["true_latents"]["data"], a["latents"].reshape(k * t, -1), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(series["true_rates"]["data"], a["rates_hz"].reshape(k * t, n), rtol=1e-6)
    np.testing.assert_array_equal(series["retest_counts"]["data"], a["retest_counts"].reshape(k * t, n))
    np.testing.assert_allclose(f["readout_weight"], a["C"])
    np.testing.assert_allclose(f["readout_bias"], a["d"])


# ----------------------------------------------------------------------------- plain HDF5


@pytest.mark.parametrize("suffix", [".h5", ".hdf5"])
def test_h5_layout(tmp_path, suffix):
    path = tmp_path / f"rec{suffix}"
    summary = simulate("hopf", path, **SMALL, param=0.5)
    a = simulate_arrays("hopf", **SMALL, param=0.5)
    with h5py.File(path, "r") as f:
        assert f.attrs["bin_ms"] == 20.0 and f.attrs["system"] == "hopf" and f.attrs["seed"] == 3
        assert json.loads(f.attrs["params_json"])["mu"] == 0.5
        np.testing.assert_array_equal(f["spikes"][()], a["counts"])
        assert f["spikes"].dtype.kind in "ui"
        np.testing.assert_array_equal(f["trial_ids"][()], np.arange(5))
        np.testing.assert_array_equal(f["unit_ids"][()], np.arange(6))
        assert f["truth/latents"].dtype == np.float32 and f["truth/latents"].shape == (5, 30, 2)
        np.testing.assert_allclose(f["truth/rates"][()], a["rates"], rtol=1e-6)  # counts per bin
        np.testing.assert_array_equal(f["truth/retest_counts"][()], a["retest_counts"])
        assert "split" not in f
        assert f["spikes"].compression == "gzip"
    assert summary["format"] == "h5" and summary["truth"] == ["latents", "rates", "retest_counts"]
    assert 0 < summary["oracle_bits_per_spike"] < 2


def test_h5_task_conditions_and_events(tmp_path):
    path = tmp_path / "task.h5"
    simulate("task", path, **SMALL)
    a = simulate_arrays("task", **SMALL)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["conditions"][()], a["conditions"])
        assert sorted(f["events"]) == ["go_time", "stimulus_time"]
        for name in ("stimulus_time", "go_time"):  # seconds from each trial's start
            np.testing.assert_array_equal(f[f"events/{name}"][()], a["events"][name])
    other = tmp_path / "hopf.h5"
    simulate("hopf", other, **SMALL)
    with h5py.File(other, "r") as f:
        assert "conditions" not in f and "events" not in f


def test_fixture_sized_files_are_small(tmp_path):
    for suffix in (".nwb", ".h5"):
        path = tmp_path / f"big{suffix}"
        simulate("lorenz", path, neurons=40, trials=60, bins=100)
        assert path.stat().st_size < 2_000_000, (suffix, path.stat().st_size)


# ----------------------------------------------------------------------------- errors


def test_bad_suffix(tmp_path):
    with pytest.raises(UsageError, match=r"\.nwb or \.h5"):
        simulate("vdp", tmp_path / "x.mat", **SMALL)


def test_existing_output_needs_overwrite(tmp_path):
    path = tmp_path / "x.h5"
    path.write_bytes(b"old")
    with pytest.raises(UsageError, match="--overwrite"):
        simulate("vdp", path, **SMALL)
    assert path.read_bytes() == b"old"
    simulate("vdp", path, **SMALL, overwrite=True)
    with h5py.File(path, "r") as f:
        assert "spikes" in f


def test_unknown_system_suggests(tmp_path):
    with pytest.raises(UsageError, match="did you mean 'lorenz'") as err:
        simulate("lorentz", tmp_path / "x.nwb", **SMALL)
    assert "hopf" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"neurons": 0}, {"trials": 0}, {"bins": 0}, {"bins": 2.5}, {"bin_ms": 0.0}, {"bin_ms": float("nan")},
        {"base_rate_hz": -1.0}, {"seed": -1},
    ],
)
def test_bad_arguments(tmp_path, kwargs):
    with pytest.raises(UsageError):
        simulate("ring", tmp_path / "x.h5", **{**SMALL, **kwargs})
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("system,param", [("vdp", -1.0), ("hopf", float("inf")), ("lorenz", 1000.0)])
def test_param_out_of_range(system, param):
    with pytest.raises(UsageError, match="--param"):
        simulate_arrays(system, **SMALL, param=param)


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def broken(path, sim):
        path.write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setitem(simulate_command.WRITERS, ".h5", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        simulate("vdp", tmp_path / "x.h5", **SMALL)
    assert not any(tmp_path.iterdir())
