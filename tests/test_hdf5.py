import h5py
import numpy as np
import pytest

from xfads_cli.config import DataConfig
from xfads_cli.data.load import describe, load_data
from xfads_cli.errors import UsageError


def write_plain(path, n_trial=6, n_time=10, n_neuron=4, bin_ms=10.0, **extra):
    rng = np.random.default_rng(0)
    spikes = rng.poisson(1.0, size=(n_trial, n_time, n_neuron))
    with h5py.File(path, "w") as f:
        f.create_dataset("spikes", data=spikes)
        f.attrs["bin_ms"] = bin_ms
        for name, value in extra.items():
            f.create_dataset(name, data=value)
    return spikes


def test_plain_layout_reads_everything(tmp_path):
    path = tmp_path / "plain.h5"
    beh = np.arange(6 * 10 * 2, dtype=float).reshape(6, 10, 2)
    spikes = write_plain(
        path, behavior=beh, trial_ids=np.arange(10, 16), heldout=np.array([0, 0, 1, 1], bool),
        split=np.array([b"train"] * 4 + [b"valid", b"test"]), **{"truth/rates": np.ones((6, 10, 4))},
    )
    data = load_data(path, DataConfig(bin_ms=10))
    np.testing.assert_array_equal(data.counts, spikes)
    assert data.trial_ids.tolist() == list(range(10, 16))
    assert data.heldout.tolist() == [False, False, True, True]
    assert data.split.tolist()[-2:] == ["valid", "test"]
    assert data.behavior.shape == (6, 10, 2) and data.behavior_names == ["behavior[0]", "behavior[1]"]
    assert data.truth["rates"].shape == (6, 10, 4)
    assert data.provenance["format"] == "hdf5-plain" and len(data.provenance["sha256"]) == 64


def test_plain_layout_rebins_to_a_multiple(tmp_path):
    path = tmp_path / "plain.h5"
    beh = np.arange(6 * 10 * 1, dtype=float).reshape(6, 10, 1)
    spikes = write_plain(path, behavior=beh)
    data = load_data(path, DataConfig(bin_ms=20))
    np.testing.assert_array_equal(data.counts, spikes.reshape(6, 5, 2, 4).sum(2))
    np.testing.assert_allclose(data.behavior[..., 0], beh[..., 0].reshape(6, 5, 2).mean(2))
    assert data.split.tolist().count("valid") >= 1
    with pytest.raises(UsageError, match="whole multiple"):
        load_data(path, DataConfig(bin_ms=15))


def test_nlb_layout(tmp_path):
    path = tmp_path / "nlb.h5"
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        f["train_spikes_heldin"] = rng.poisson(1, (8, 5, 3))
        f["train_spikes_heldout"] = rng.poisson(1, (8, 5, 2))
        f["eval_spikes_heldin"] = rng.poisson(1, (4, 5, 3))
        f["train_behavior"] = rng.normal(size=(8, 5, 2))
        f["eval_behavior"] = rng.normal(size=(4, 5, 2))
        f.attrs["bin_ms"] = 5.0
    data = load_data(path, DataConfig(bin_ms=5))
    assert data.counts.shape == (12, 5, 5)
    assert data.heldout.tolist() == [False] * 3 + [True] * 2
    assert (data.split[8:] == "test").all() and set(data.split[:8]) == {"train", "valid"}
    assert np.isnan(data.counts[8:, :, 3:]).all() and np.isfinite(data.counts[:8]).all()
    assert data.behavior.shape == (12, 5, 2)
    assert describe(path)["format"] == "hdf5-nlb"


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ({"behavior": np.zeros((5, 10, 2))}, "first two dimensions must match"),
        ({"trial_ids": np.arange(3)}, "has 3 entries"),
        ({"heldout": np.zeros(7, bool)}, "7 entries"),
        ({"split": np.array([b"train"] * 5 + [b"bogus"])}, "bogus"),
    ],
)
def test_mismatched_shapes_are_usage_errors(tmp_path, extra, fragment):
    path = tmp_path / "bad.h5"
    write_plain(path, **extra)
    with pytest.raises(UsageError, match=fragment):
        load_data(path, DataConfig(bin_ms=10))


def test_not_a_spike_file(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["something"] = np.zeros(3)
    with pytest.raises(UsageError, match="neither 'spikes'"):
        load_data(path)
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(UsageError, match="not an HDF5 file"):
        load_data(text)
    with pytest.raises(UsageError, match="no such file"):
        load_data(tmp_path / "missing.nwb")
    with pytest.raises(UsageError, match="bin_ms must be > 0"):
        load_data(path, DataConfig(bin_ms=0))


def test_negative_counts_rejected(tmp_path):
    path = tmp_path / "neg.h5"
    with h5py.File(path, "w") as f:
        f["spikes"] = -np.ones((2, 3, 4))
        f.attrs["bin_ms"] = 20.0
    with pytest.raises(UsageError, match="negative"):
        load_data(path)


def test_plain_layout_events_and_conditions(tmp_path):
    """events/<name>: [trial] seconds from each trial's start, read as bins of the loaded width (NaN: none,
    or past the trial's length); the conditions dataset is the conditions, and both are in provenance."""
    path = tmp_path / "task.h5"
    go = np.array([0.025, 0.05, np.nan, 0.2, 0.095, 0.0])  # 10 bins of 10 ms: 0.2 s is past the trial
    write_plain(path, conditions=np.array([0, 1, 0, 1, 2, 2]), **{"events/go_time": go, "events/cue_time": np.zeros(6)},
                trial_lengths=np.array([10, 10, 10, 10, 9, 10]))
    data = load_data(path, DataConfig(bin_ms=10))
    assert sorted(data.events) == ["cue_time", "go_time"] and data.provenance["events"] == ["cue_time", "go_time"]
    np.testing.assert_allclose(data.events["go_time"], [2.5, 5.0, np.nan, np.nan, np.nan, 0.0])  # 9.5 > length 9
    assert data.conditions.tolist() == [0, 1, 0, 1, 2, 2] and data.provenance["condition"] == "conditions"
    coarse = load_data(path, DataConfig(bin_ms=20, events=("go_time",)))
    assert list(coarse.events) == ["go_time"]
    np.testing.assert_allclose(coarse.events["go_time"][:2], [1.25, 2.5])
    none = load_data(path, DataConfig(bin_ms=10, events=()))
    assert none.events == {} and none.provenance["events"] == []
    with pytest.raises(UsageError, match=r"no dataset 'events/go'.*its events: cue_time, go_time"):
        load_data(path, DataConfig(bin_ms=10, events=("go",)))
    plain = tmp_path / "plain.h5"
    write_plain(plain)
    assert load_data(plain, DataConfig(bin_ms=10)).events == {}
    assert load_data(plain, DataConfig(bin_ms=10)).provenance["condition"] is None


@pytest.mark.parametrize("extra, fragment", [
    ({"events/go_time": np.zeros(5)}, "has 5 entries but the file has 6 trials"),
    ({"events/go_time": np.array([b"a"] * 6)}, "not plain numbers"),
    ({"events": np.zeros(6)}, "'events' in .* is a dataset; it must be a group"),
])
def test_bad_events_are_errors(tmp_path, extra, fragment):
    path = tmp_path / "bad.h5"
    write_plain(path, **extra)
    with pytest.raises(UsageError, match=fragment):
        load_data(path, DataConfig(bin_ms=10))
    with pytest.raises(UsageError, match=fragment):  # inspect rejects broken content too
        describe(path)
