import numpy as np
import pytest

from xfads_cli.data.spikedata import SpikeData, assign_split


@pytest.mark.parametrize("n", [3, 5, 10, 101])
def test_split_is_seeded_and_covers_every_split(n):
    a, b = assign_split(n, (0.8, 0.1, 0.1), seed=4), assign_split(n, (0.8, 0.1, 0.1), seed=4)
    np.testing.assert_array_equal(a, b)
    assert {"train", "valid", "test"} == set(a)
    assert (a == "train").sum() >= (a == "valid").sum()
    assert not np.array_equal(a, assign_split(n, (0.8, 0.1, 0.1), seed=5)) or n < 5


def test_too_few_trials_for_every_split_is_a_warning():
    """A 2-trial recording used to split train 1 / valid 1 / test 0 silently, and test metrics vanished."""
    with pytest.warns(UserWarning, match=r"train 1 / valid 1 / test 0: no test trials, so test metrics will be missing"):
        assign_split(2, (0.8, 0.1, 0.1), seed=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assign_split(3, (0.8, 0.1, 0.1), seed=0)
        assign_split(10, (0.8, 0.2, 0.0), seed=0)  # no test split asked for: nothing missing


def test_select_cuts_every_per_trial_field():
    counts = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    data = SpikeData(
        counts=counts, bin_ms=20.0, unit_ids=np.array(["a", "b"]), trial_ids=np.arange(4),
        split=np.array(["train", "valid", "train", "test"]), session="s", heldout=np.array([False, True]),
        behavior=np.zeros((4, 3, 1), np.float32), truth={"rates": counts.copy()}, start_s=np.arange(4.0),
        conditions=np.array(["x", "y", "z", "x"]), events={"go_time": np.array([0.5, np.nan, 2.0, 1.0])},
    )
    train = data.subset("train")
    assert train.conditions.tolist() == ["x", "z"] and train.events["go_time"].tolist() == [0.5, 2.0]
    assert data.select([3, 1]).events["go_time"][0] == 1.0 and np.isnan(data.select([3, 1]).events["go_time"][1])
    assert train.trial_ids.tolist() == [0, 2]
    np.testing.assert_array_equal(train.truth["rates"], counts[[0, 2]])
    assert train.start_s.tolist() == [0.0, 2.0] and train.behavior.shape == (2, 3, 1)
    assert data.summary()["split"] == {"train": 2, "valid": 1, "test": 1}


def test_shape_checks():
    base = dict(counts=np.zeros((2, 3, 4)), bin_ms=20, unit_ids=np.arange(4), trial_ids=np.arange(2),
                split=np.array(["train"] * 2), session="s", heldout=np.zeros(4, bool))
    assert SpikeData(**base).events == {}  # none by default
    with pytest.raises(ValueError, match=r"events\['go'\] has shape \(3,\)"):
        SpikeData(**base, events={"go": np.zeros(3)})
    with pytest.raises(ValueError, match="expected \\(2,\\) float"):
        SpikeData(**base, events={"go": np.zeros(2, dtype=np.int64)})  # bins are fractional: float
    with pytest.raises(ValueError, match="unit_ids"):
        SpikeData(counts=np.zeros((2, 3, 4)), bin_ms=20, unit_ids=np.arange(3), trial_ids=np.arange(2),
                  split=np.array(["train"] * 2), session="s", heldout=np.zeros(4, bool))
