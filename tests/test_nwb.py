"""NWB loading: exact counts, trial alignment, chopping, unit selection, behaviour, held-out units,
ground truth and every user error, on small files written here and on the real files in shared/."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from writers import new_nwb, save_nwb
from xfads_cli.config import DataConfig
from xfads_cli.data.nwb import describe_nwb, load_nwb, suggest_bin_ms
from xfads_cli.errors import UsageError

REAL = Path(os.environ.get("XFADS_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data/real"
FIXTURES = Path(__file__).resolve().parents[1] / "data_fixtures"

UNIT_IDS = [10, 11, 12, 13, 14]
QUALITY = ["good", "mua", "good", "noise", "good"]
HELDOUT = [False, False, True, False, True]
SNR = [1.0, 5.0, 2.0, 8.0, 4.0]
TRIAL_START = np.array([0.5, 2.6, 4.9, 7.2])
TRIAL_STOP = TRIAL_START + np.array([1.8, 1.5, 2.0, 1.7])
GO_TIME = TRIAL_START + 0.4
DURATION = 10.0
SIM_BIN_S = 0.01


# --------------------------------------------------------------------------------------------------
# Writing small NWB files


def spike_trains(seed: int = 0) -> list[np.ndarray]:
    """One unsorted spike train per unit in [0, DURATION), some spikes exactly on bin edges of the
    aligned test windows (go_time - 100 ms + k * 7 ms) to pin the half-open bin convention."""
    rng = np.random.default_rng(seed)
    trains = [rng.uniform(0, DURATION, size=n) for n in (120, 40, 200, 3, 80)]
    on_edges = np.array([GO_TIME[t] + (-100 / 1000) + k * (7 / 1000) for t in range(4) for k in (0, 5, 17)])
    trains[0] = rng.permutation(np.concatenate([trains[0], on_edges, [0.01, DURATION - 0.01]]))
    return trains


def write_nwb(path: Path, *, trials: bool = True, obs: bool = False, nan_align: bool = False,
              behaviour: bool = True, truth: bool = False, units: bool = True) -> Path:
    from pynwb import TimeSeries
    from pynwb.behavior import Position, SpatialSeries
    from pynwb.epoch import TimeIntervals

    nwb = new_nwb("test session", "test-id")
    if units:
        nwb.add_unit_column("quality", "sorting quality")
        nwb.add_unit_column("heldout", "held out for co-bps")
        nwb.add_unit_column("snr", "signal to noise")
        for j, train in enumerate(spike_trains()):
            extra = {}
            if obs:
                extra["obs_intervals"] = [[0.0, 3.0], [5.0, DURATION]] if j == 1 else [[0.0, DURATION]]
            nwb.add_unit(id=UNIT_IDS[j], spike_times=train, quality=QUALITY[j], heldout=HELDOUT[j], snr=SNR[j], **extra)
    if trials:
        nwb.add_trial_column("go_time", "go cue")
        nwb.add_trial_column("cond", "reach condition")
        nwb.add_trial_column("target", "target number")
        for t in range(4):
            go = np.nan if (nan_align and t == 2) else GO_TIME[t]
            nwb.add_trial(start_time=TRIAL_START[t], stop_time=TRIAL_STOP[t], go_time=go,
                          cond="ab"[t % 2], target=float(t % 2 + 1))
    stims = TimeIntervals(name="stims", description="stimulus presentations")
    stims.add_interval(start_time=1.0, stop_time=1.5)
    stims.add_interval(start_time=6.0, stop_time=6.5)
    nwb.add_time_intervals(stims)
    if behaviour:
        module = nwb.create_processing_module("behavior", "behaviour")
        t = np.arange(1000) / 100.0
        module.add(TimeSeries(name="speed", data=np.sin(t), unit="m/s", rate=100.0, starting_time=0.0))
        stamps = np.sort(np.random.default_rng(1).uniform(0, DURATION, 700))
        pos = SpatialSeries(name="pos", data=np.stack([stamps, 2 * stamps], axis=1), timestamps=stamps,
                            reference_frame="origin")
        module.add(Position(spatial_series=pos))
        nwb.add_acquisition(TimeSeries(name="lick", data=np.ones(40), unit="n", timestamps=np.arange(40) / 4.0))
    if truth:
        centres = (np.arange(int(DURATION / SIM_BIN_S)) + 0.5) * SIM_BIN_S
        latents, rates, retest = truth_arrays(centres)
        module = nwb.create_processing_module(
            "ground_truth", json.dumps({"system": "ring", "bin_ms": 10, "seed": 3, "params": {"k": 1}}))
        module.add(TimeSeries(name="true_latents", data=latents, unit="a.u.", timestamps=centres))
        module.add(TimeSeries(name="true_rates", data=rates, unit="Hz", timestamps=centres))
        module.add(TimeSeries(name="retest_counts", data=retest, unit="count", timestamps=centres))
    return save_nwb(nwb, path)


def truth_arrays(centres: np.ndarray):
    """latents [bin, 2], rates [bin, unit] Hz, retest counts [bin, unit] at the simulation bins."""
    latents = np.stack([np.sin(centres), np.cos(centres)], axis=1)
    rates = 10.0 * (np.arange(5) + 1)[None, :] + centres[:, None]
    retest = np.random.default_rng(2).poisson(0.3, size=rates.shape).astype(float)
    return latents, rates, retest


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nwb")
    return {
        "main": write_nwb(root / "main.nwb"),
        "obs": write_nwb(root / "obs.nwb", obs=True),
        "notrials": write_nwb(root / "notrials.nwb", trials=False),
        "nan": write_nwb(root / "nan.nwb", nan_align=True),
        "truth": write_nwb(root / "truth.nwb", truth=True),
    }


def brute_force_counts(trains: list[np.ndarray], starts: np.ndarray, n_bins: int, bin_s: float) -> np.ndarray:
    """[trial, time, neuron] counts by looping over every spike and every bin: edge <= t < next edge."""
    out = np.zeros((len(starts), n_bins, len(trains)))
    for i, start in enumerate(starts):
        edges = [start + k * bin_s for k in range(n_bins + 1)]
        for j, train in enumerate(trains):
            for t in train:
                for k in range(n_bins):
                    if edges[k] <= t < edges[k + 1]:
                        out[i, k, j] += 1
    return out


# --------------------------------------------------------------------------------------------------
# Counts, alignment, windows, chopping


def test_counts_match_brute_force_on_aligned_window(files):
    cfg = DataConfig(bin_ms=7.0, align="go_time", window_ms=(-100.0, 250.0))
    data = load_nwb(files["main"], cfg)
    n_bins = int(np.floor(350 / 7 + 1e-9))
    assert data.counts.shape == (4, n_bins, 5)
    np.testing.assert_allclose(data.start_s, GO_TIME - 0.1)
    expected = brute_force_counts(spike_trains(), GO_TIME + (-100 / 1000), n_bins, 7 / 1000)
    np.testing.assert_array_equal(data.counts, expected)
    assert data.counts.dtype == np.float32
    assert list(data.unit_ids) == [str(i) for i in UNIT_IDS]
    assert list(data.trial_ids) == [0, 1, 2, 3]


def test_shortest_window_is_shortest_trial_from_start(files):
    # data.trial_lengths=shortest: the old default (the default now keeps each trial's own length,
    # tests/test_variable_length.py)
    data = load_nwb(files["main"], DataConfig(bin_ms=20.0, trial_lengths="shortest"))
    shortest = np.min(TRIAL_STOP - TRIAL_START)
    assert data.n_time == int(np.floor(shortest / 0.02 + 1e-9))
    np.testing.assert_allclose(data.start_s, TRIAL_START)
    expected = brute_force_counts(spike_trains(), TRIAL_START, data.n_time, 0.02)
    np.testing.assert_array_equal(data.counts, expected)
    assert data.provenance["trials_from"] == "trials"


def test_other_interval_table(files):
    data = load_nwb(files["main"], DataConfig(intervals="stims", bin_ms=50.0))
    assert data.n_trials == 2 and data.n_time == 10
    np.testing.assert_allclose(data.start_s, [1.0, 6.0])


def test_chopping_without_trials(files):
    cfg = DataConfig(bin_ms=50.0, chop_ms=700.0, overlap_ms=200.0)
    data = load_nwb(files["notrials"], cfg)
    trains = spike_trains()
    first, last = min(t.min() for t in trains), max(t.max() for t in trains)
    n = int(np.floor((last - first - 0.7) / 0.5 + 1e-9)) + 1
    assert data.n_trials == n and data.n_time == 14
    np.testing.assert_allclose(data.start_s, first + 0.5 * np.arange(n))
    np.testing.assert_array_equal(data.trial_ids, np.arange(n))
    np.testing.assert_array_equal(data.counts, brute_force_counts(trains, data.start_s, 14, 0.05))
    assert data.provenance["trials_from"] == "chopped"


def test_nan_align_trials_dropped_with_warning(files):
    with pytest.warns(UserWarning, match="dropped 1 of 4"):
        data = load_nwb(files["nan"], DataConfig(align="go_time", window_ms=(0.0, 500.0)))
    assert list(data.trial_ids) == [0, 1, 3]
    np.testing.assert_allclose(data.start_s, GO_TIME[[0, 1, 3]])


def test_obs_intervals_mask_unobserved_bins(files):
    data = load_nwb(files["obs"], DataConfig(bin_ms=100.0, chop_ms=1000.0, trial_lengths="shortest"))
    edges = data.start_s[:, None] + np.arange(data.n_time + 1) * 0.1
    lo, hi = edges[:, :-1], edges[:, 1:]
    inside = ((lo >= 0.0) & (hi <= 3.0)) | ((lo >= 5.0) & (hi <= DURATION))
    np.testing.assert_array_equal(np.isnan(data.counts[:, :, 1]), ~inside)
    assert not np.isnan(data.counts[:, :, [0, 2, 3, 4]]).any()
    assert (~inside).any() and inside.any()


def test_default_auto_conditions_and_events(files):
    """data.condition and data.events default to 'auto': the 'cond' column (a, b twice each) and go_time
    (inside every trial), in bins from each trial's window start; nothing and no error when chopped."""
    data = load_nwb(files["main"], DataConfig())
    assert list(data.conditions) == ["a", "b", "a", "b"] and data.provenance["condition"] == "cond"
    assert list(data.events) == ["go_time"] and data.provenance["events"] == ["go_time"]
    np.testing.assert_allclose(data.events["go_time"], 0.4 / 0.02)
    chopped = load_nwb(files["notrials"], DataConfig())
    assert chopped.conditions is None and chopped.events == {} and chopped.provenance["condition"] is None
    # a trial whose align time is missing is dropped: the events follow the trials kept
    with pytest.warns(UserWarning, match="dropped 1 of 4 trials"):
        kept = load_nwb(files["nan"], DataConfig(align="go_time", window_ms=(-100.0, 300.0)))
    np.testing.assert_allclose(kept.events["go_time"], 0.1 / 0.02)
    assert len(kept.events["go_time"]) == kept.n_trials == 3


def test_conditions_and_split_and_provenance(files):
    data = load_nwb(files["main"], DataConfig(condition="cond", session="s1", split=(0.5, 0.25, 0.25)))
    assert list(data.conditions) == ["a", "b", "a", "b"]
    assert list(load_nwb(files["main"], DataConfig(condition="target")).conditions) == ["1", "2", "1", "2"]
    assert data.session == "s1" and load_nwb(files["main"], DataConfig()).session == "main"
    assert sorted(data.split) == ["test", "train", "train", "valid"]
    assert data.provenance["sha256"] == hashlib.sha256(files["main"].read_bytes()).hexdigest()
    assert data.provenance["format"] == "nwb" and data.provenance["path"] == str(files["main"].resolve())
    assert data.provenance["nwb_version"].startswith("2.")


# --------------------------------------------------------------------------------------------------
# Unit selection and held-out units


@pytest.mark.parametrize("expr, rows", [
    ('quality == "good"', [0, 2, 4]),
    ("quality == 'good'", [0, 2, 4]),
    ("quality != good", [1, 3]),
    ("snr > 3", [1, 3, 4]),
    ("snr >= 4", [1, 3, 4]),
    ("snr < 2", [0]),
    ("snr <= 2", [0, 2]),
    ("heldout", [2, 4]),
    ("not heldout", [0, 1, 3]),
    ("heldout == false", [0, 1, 3]),
])
def test_unit_selection(files, expr, rows):
    data = load_nwb(files["main"], DataConfig(units=expr, heldout_column="none"))
    assert list(data.unit_ids) == [str(UNIT_IDS[r]) for r in rows]
    full = load_nwb(files["main"], DataConfig(heldout_column="none"))
    np.testing.assert_array_equal(data.counts, full.counts[:, :, rows])


@pytest.mark.parametrize("expr, message", [
    ("qualty == good", "available columns: quality"),
    ("quality > 3", "only == and !="),
    ("snr == good", "numeric"),
    ("quality", "not boolean"),
    ("snr > 3; import os", "cannot parse"),
    ("__import__('os')", "cannot parse"),
    ('quality == "excellent"', "matches none"),
])
def test_unit_selection_errors(files, expr, message):
    with pytest.raises(UsageError, match=message):
        load_nwb(files["main"], DataConfig(units=expr))


def test_heldout_priority(files):
    by_column = load_nwb(files["main"], DataConfig())
    assert list(by_column.heldout) == HELDOUT
    explicit = load_nwb(files["main"], DataConfig(heldout_units=("10", "13")))
    assert list(explicit.heldout) == [True, False, False, True, False]
    frac = load_nwb(files["main"], DataConfig(heldout_fraction=0.4, split_seed=5))
    assert frac.heldout.sum() == 2
    again = load_nwb(files["main"], DataConfig(heldout_fraction=0.4, split_seed=5))
    np.testing.assert_array_equal(frac.heldout, again.heldout)
    assert load_nwb(files["main"], DataConfig(heldout_fraction=0.01)).heldout.sum() == 1
    assert not load_nwb(files["main"], DataConfig(heldout_column="absent")).heldout.any()
    selected = load_nwb(files["main"], DataConfig(units='quality == "good"'))
    assert list(selected.heldout) == [False, True, True]


def test_heldout_errors(files):
    with pytest.raises(UsageError, match="unit '99'"):
        load_nwb(files["main"], DataConfig(heldout_units=("99",)))
    with pytest.raises(UsageError, match="not boolean"):
        load_nwb(files["main"], DataConfig(heldout_column="quality"))
    with pytest.raises(UsageError, match="all 3 units are held out"):
        load_nwb(files["main"], DataConfig(units='quality == "good"', heldout_units=("10", "12", "14")))


# --------------------------------------------------------------------------------------------------
# Behaviour


def test_behaviour_rate_series_is_averaged_in_bins(files):
    data = load_nwb(files["main"], DataConfig(bin_ms=50.0, behavior=("speed",), trial_lengths="shortest"))
    assert data.behavior.shape == (4, data.n_time, 1) and data.behavior_names == ["speed"]
    t = np.arange(1000) / 100.0
    for trial, k in [(0, 0), (2, 7), (3, data.n_time - 1)]:
        lo, hi = data.start_s[trial] + k * 0.05, data.start_s[trial] + (k + 1) * 0.05  # the loader's edges
        inside = (t >= lo) & (t < hi)
        assert data.behavior[trial, k, 0] == pytest.approx(np.sin(t[inside]).mean(), abs=1e-6)


def test_behaviour_spatial_series_by_name_and_container(files):
    cfg = DataConfig(bin_ms=100.0, behavior=("pos", "speed"))
    data = load_nwb(files["main"], cfg)
    assert data.behavior_names == ["pos[0]", "pos[1]", "speed"]
    stamps = np.sort(np.random.default_rng(1).uniform(0, DURATION, 700))
    inside = (stamps >= data.start_s[1] + 3 * 0.1) & (stamps < data.start_s[1] + 4 * 0.1)
    np.testing.assert_allclose(data.behavior[1, 3, :2], [stamps[inside].mean(), 2 * stamps[inside].mean()], rtol=1e-6)
    by_container = load_nwb(files["main"], DataConfig(bin_ms=100.0, behavior=("Position",)))
    np.testing.assert_array_equal(by_container.behavior, data.behavior[:, :, :2])
    by_path = load_nwb(files["main"], DataConfig(bin_ms=100.0, behavior=("Position/pos",)))
    np.testing.assert_array_equal(by_path.behavior, data.behavior[:, :, :2])
    lick = load_nwb(files["main"], DataConfig(intervals="stims", bin_ms=100.0, behavior=("lick",)))
    assert lick.behavior_names == ["lick"] and np.all(lick.behavior == 1.0)


def test_unknown_behaviour_lists_available(files):
    message = r"no behaviour series 'sped'.*did you mean 'speed'.*available: lick, pos, speed"
    with pytest.raises(UsageError, match=message):
        load_nwb(files["main"], DataConfig(behavior=("sped",)))


# --------------------------------------------------------------------------------------------------
# Ground truth


def test_ground_truth_is_resampled_to_counts_per_bin(files):
    data = load_nwb(files["truth"], DataConfig(bin_ms=20.0, trial_lengths="shortest"))
    centres = (np.arange(int(DURATION / SIM_BIN_S)) + 0.5) * SIM_BIN_S
    latents, rates, retest = truth_arrays(centres)
    n_time = data.n_time
    # Each 20 ms bin holds exactly two 10 ms simulation bins: first = the one starting at the trial start.
    first = np.rint(data.start_s / SIM_BIN_S).astype(int)[:, None] + 2 * np.arange(n_time)[None, :]
    np.testing.assert_allclose(data.truth["latents"], 0.5 * (latents[first] + latents[first + 1]), atol=1e-6)
    np.testing.assert_allclose(data.truth["rates"], 0.5 * (rates[first] + rates[first + 1]) * 0.02, rtol=1e-5)
    np.testing.assert_allclose(data.truth["retest_counts"], retest[first] + retest[first + 1], atol=1e-5)
    assert data.provenance["simulation"]["system"] == "ring" and data.provenance["simulation"]["bin_ms"] == 10


def test_ground_truth_follows_unit_selection_and_bin_ratio(files):
    full = load_nwb(files["truth"], DataConfig(bin_ms=20.0))
    good = load_nwb(files["truth"], DataConfig(bin_ms=20.0, units='quality == "good"'))
    np.testing.assert_array_equal(good.truth["rates"], full.truth["rates"][:, :, [0, 2, 4]])
    np.testing.assert_array_equal(good.truth["retest_counts"], full.truth["retest_counts"][:, :, [0, 2, 4]])
    odd = load_nwb(files["truth"], DataConfig(bin_ms=15.0))
    assert "retest_counts" not in odd.truth and {"latents", "rates"} <= set(odd.truth)


def test_round_trip_of_xfads_simulate(tmp_path):
    from xfads_cli.commands.simulate import simulate
    from xfads_cli.data.simulate import simulate_arrays

    out = tmp_path / "sim.nwb"
    simulate("ring", out, neurons=6, trials=4, bins=30, bin_ms=10.0, seed=1)
    sim = simulate_arrays("ring", neurons=6, trials=4, bins=30, bin_ms=10.0, seed=1)
    data = load_nwb(out, DataConfig(bin_ms=10.0))
    np.testing.assert_array_equal(data.counts, sim["counts"])
    np.testing.assert_allclose(data.truth["rates"], sim["rates"], rtol=1e-5)
    np.testing.assert_allclose(data.truth["latents"], sim["latents"], atol=1e-5)
    np.testing.assert_array_equal(data.truth["retest_counts"], sim["retest_counts"])
    coarse = load_nwb(out, DataConfig(bin_ms=20.0))
    np.testing.assert_array_equal(coarse.truth["retest_counts"], sim["retest_counts"].reshape(4, 15, 2, 6).sum(2))
    with pytest.raises(UsageError, match="several values per row"):
        load_nwb(out, DataConfig(units="readout_weight > 0"))


# --------------------------------------------------------------------------------------------------
# Errors


def test_file_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        load_nwb(tmp_path / "missing.nwb", DataConfig())
    text = tmp_path / "notes.nwb"
    text.write_text("not hdf5")
    with pytest.raises(UsageError, match="not an HDF5 file; xfads reads NWB"):
        load_nwb(text, DataConfig())
    with h5py.File(tmp_path / "plain.h5", "w") as handle:
        handle["x"] = 1
    with pytest.raises(UsageError, match="not a readable NWB file"):
        load_nwb(tmp_path / "plain.h5", DataConfig())


def test_units_errors(tmp_path):
    from pynwb.misc import Units

    with pytest.raises(UsageError, match="no units table"):
        load_nwb(write_nwb(tmp_path / "nounits.nwb", units=False), DataConfig())

    def write(name, fill):
        nwb = new_nwb("x", name)
        fill(nwb)
        return save_nwb(nwb, tmp_path / name)

    empty = write("empty.nwb", lambda nwb: setattr(nwb, "units", Units(name="units", description="none")))
    with pytest.raises(UsageError, match="no units"):
        load_nwb(empty, DataConfig())
    silent = write("silent.nwb", lambda nwb: [nwb.add_unit(spike_times=np.array([], dtype=float)) for _ in range(2)])
    with pytest.raises(UsageError, match="2 units but no spikes"):
        load_nwb(silent, DataConfig())


def test_bad_spike_times_name_their_unit_and_count(tmp_path):
    """The check finds the units-table row of the first bad spike from the index alone (no [spike]-sized
    row array): the message names that unit's id and counts only its bad spikes."""
    def write(name, units):
        nwb = new_nwb("x", name)
        for uid, times in units:
            nwb.add_unit(spike_times=np.asarray(times, dtype=float), id=uid)
        return save_nwb(nwb, tmp_path / name)

    bad = write("bad.nwb", [(10, [0.1, 0.2]), (11, [0.3, -0.5, -0.25, 0.9]), (12, [-1.0, 0.4])])
    with pytest.raises(UsageError, match="unit 11 has 2 negative spike times"):
        load_nwb(bad, DataConfig())
    last = write("last.nwb", [(10, [0.1, 0.2]), (11, [0.3]), (12, [0.4, np.nan])])
    with pytest.raises(UsageError, match="unit 12 has 1 NaN spike time;"):
        load_nwb(last, DataConfig())


def test_recording_holds_sorted_spike_times(tmp_path):
    """A continuous recording keeps each unit's times (views where already sorted, a sorted copy where
    not) and takes its span from every unit."""
    from xfads_cli.data.nwb import load_nwb_recording

    nwb = new_nwb("x", "r")
    for times in ([0.5, 0.1, 3.0], [0.05, 0.2], [1.0, 4.5]):
        nwb.add_unit(spike_times=np.asarray(times))
    save_nwb(nwb, tmp_path / "r.nwb")
    rec = load_nwb_recording(tmp_path / "r.nwb", DataConfig(bin_ms=100.0))
    assert [t.tolist() for t in rec.spikes] == [[0.1, 0.5, 3.0], [0.05, 0.2], [1.0, 4.5]]
    assert rec.segments.tolist() == [[0.05, 4.5]]
    assert rec.counts(0, 0, 3)[:, :2].tolist() == [[1, 1], [0, 1], [0, 0]]  # bins from 0.05 s


@pytest.mark.parametrize("cfg, message", [
    (DataConfig(bin_ms=0.0), "bin_ms must be positive"),
    (DataConfig(bin_ms=-5.0), "bin_ms must be positive"),
    (DataConfig(window_ms=(-1000.0, 0.0), trial_lengths="shortest"), r"1 of 4 trial windows .* shorten data.window_ms"),
    (DataConfig(window_ms=(0.0, 5000.0), trial_lengths="shortest"), r"of 4 trial windows .*outside the recording"),
    (DataConfig(window_ms=(100.0, 50.0)), "stop > start"),
    (DataConfig(window_ms=(0.0, 10.0)), "shorter than one bin"),
    (DataConfig(intervals="trails"), r"no interval table 'trails'.*did you mean 'trials'.*available: stims, trials"),
    (DataConfig(align="go"), r"no column 'go'.*go_time"),
    (DataConfig(condition="color"), "no column 'color'"),
    (DataConfig(events=("gotime",)), r"data.events: .*no column 'gotime'.*did you mean 'go_time'.*numeric columns: go_time"),
    (DataConfig(events=("cond",)), r"column 'cond' .* does not hold one number per trial"),
])
def test_option_errors(files, cfg, message):
    with pytest.raises(UsageError, match=message):
        load_nwb(files["main"], cfg)


def test_chopping_errors(files):
    with pytest.raises(UsageError, match="shorter than one window"):
        load_nwb(files["notrials"], DataConfig(chop_ms=60_000.0))
    with pytest.raises(UsageError, match="overlap_ms"):
        load_nwb(files["notrials"], DataConfig(chop_ms=500.0, overlap_ms=500.0))
    with pytest.raises(UsageError, match="needs an interval table"):
        load_nwb(files["notrials"], DataConfig(condition="cond"))
    with pytest.raises(UsageError, match="need an interval table"):
        load_nwb(files["notrials"], DataConfig(events=("go_time",)))


def test_errors_are_one_line(files):
    with pytest.raises(UsageError) as info:
        load_nwb(files["main"], DataConfig(behavior=("nothing",)))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------
# describe_nwb


def test_describe_small_file(files):
    info = describe_nwb(files["main"])
    json.dumps(info)
    assert info["identifier"] == "test-id" and info["units"]["count"] == 5
    assert info["units"]["total_spikes"] == sum(len(t) for t in spike_trains())
    assert set(info["intervals"]) == {"trials", "stims"}
    assert info["intervals"]["trials"]["rows"] == 4 and "go_time" in info["intervals"]["trials"]["columns"]
    paths = {s["path"]: s for s in info["behavior"]}
    assert paths["processing/behavior/speed"]["rate_hz"] == 100.0
    assert paths["processing/behavior/Position/pos"]["n_timestamps"] == 700
    assert "acquisition/lick" in paths
    assert info["ground_truth"] is None
    assert info["defaults"] == {"trials_from": "trials", "n_trials": 4, "bins_per_trial": 100, "bin_ms": 20.0,
                                "shortest_trial_bins": 75, "trials_shorter_than_longest": 3}  # own lengths, NaN-padded
    assert info["suggested_bin_ms"] in (5, 10, 20, 50, 100)


def test_describe_truth_and_chopped_and_unitless(files, tmp_path):
    truth = describe_nwb(files["truth"])
    assert truth["ground_truth"]["series"] == ["retest_counts", "true_latents", "true_rates"]
    assert truth["ground_truth"]["simulation"]["seed"] == 3
    assert not any(s["path"].startswith("processing/ground_truth") for s in truth["behavior"])
    assert describe_nwb(files["notrials"])["defaults"]["trials_from"] == "chopped"
    unitless = describe_nwb(write_nwb(tmp_path / "u.nwb", units=False))
    assert unitless["units"]["count"] == 0 and "error" in unitless["defaults"]


def test_suggest_bin_ms():
    assert suggest_bin_ms(500.0) == 20  # 10 population spikes per 20 ms bin
    assert suggest_bin_ms(150.0) == 50
    assert suggest_bin_ms(0.01) == 100


# --------------------------------------------------------------------------------------------------
# Real recordings in shared/data/real


def real(name: str) -> Path:
    """A real recording: from data_fixtures/ when bundled there (mc_maze_2trials.nwb: always runs), else
    from ../shared/data/real, skipped on a clone without it."""
    if (FIXTURES / name).is_file():
        return FIXTURES / name
    path = REAL / name
    if not path.is_file():
        pytest.skip(f"real data file {path} not available")
    return path


@pytest.mark.parametrize("name", ["human_mtl_sub-4_ses-4.nwb", "mc_maze_2trials.nwb", "rat_hc_linear_track.nwb"])
def test_describe_real(name):
    info = describe_nwb(real(name))
    json.dumps(info)
    assert info["units"]["count"] > 0 and "error" not in info["defaults"]


def test_real_mc_maze_hand_velocity():
    path = real("mc_maze_2trials.nwb")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pynwb's own warnings must not reach the user
        data = load_nwb(path, DataConfig(behavior=("hand_vel",), split=(0.5, 0.5, 0.0)))  # 2 trials: no test split
    assert data.counts.shape[0] == 2 and data.n_neurons == 182
    inside = np.arange(data.n_time)[None, :] < data.lengths[:, None]  # each trial to its own stop_time
    assert data.behavior.shape == (2, data.n_time, 2) and np.isfinite(data.behavior[inside]).all()
    with h5py.File(path, "r") as handle:
        group = handle["processing/behavior/kinematics/hand_vel"]
        stamps, values = group["timestamps"][:], group["data"][:]
    trial, k = 1, 37
    edges = data.start_s[trial] + np.arange(data.n_time + 1) * 0.02
    inside = (stamps >= edges[k]) & (stamps < edges[k + 1])
    assert inside.sum() == 20
    np.testing.assert_allclose(data.behavior[trial, k], values[inside].mean(axis=0), rtol=1e-5)


def test_real_human_mtl_intervals_and_chopping():
    path = real("human_mtl_sub-4_ses-4.nwb")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # this file makes pynwb warn about its OpticalSeries
        trials = load_nwb(path, DataConfig(intervals="recognition_table", trial_lengths="shortest"))
        describe_nwb(path)
    assert trials.n_trials == 180 and trials.n_neurons == 35 and trials.n_time == 75
    assert trials.provenance["trials_from"] == "recognition_table"
    chopped = load_nwb(path, DataConfig())
    assert chopped.provenance["trials_from"] == "chopped"
    assert chopped.n_trials == 2821 and chopped.n_time == 50
    assert np.nansum(chopped.counts) > 0.99 * 214278


def test_real_rat_position():
    data = load_nwb(real("rat_hc_linear_track.nwb"), DataConfig(behavior=("led1",)))
    assert data.n_neurons == 31 and data.behavior_names == ["led1[0]", "led1[1]"]
    # The camera starts ~30 ms after the first spike, so only the very first bin lacks position.
    assert np.isfinite(data.behavior[1:]).all() and np.isfinite(data.behavior).mean() > 0.99
