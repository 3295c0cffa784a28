"""Bounded-memory smooth / forecast: results streamed block by block to HDF5 (H5Stream), scores
accumulated block by block (BitsPerSpike, SmoothedScores, ForecastScores)."""

import json
import warnings

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from xfads_cli import evaluation, inference, runs
from xfads_cli.commands import smooth as smooth_command
from xfads_cli.commands import forecast as forecast_command
from xfads_cli.cli import app
from xfads_cli.data.spikedata import SpikeData
from xfads_cli.errors import UsageError
from xfads_cli.outputs import metrics as M
from xfads_cli.outputs.h5 import H5Stream, write_h5

FAST = ["--set", "model.samples=4", "--set", "model.latent_dim=3", "--set", "model.dynamics_hidden=16",
        "--set", "model.encoder_hidden=16", "--set", "train.batch_size=8"]  # 20 trials: blocks of 8, 8, 4


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "vdp.h5"
    assert invoke("simulate", "vdp", "--out", path, "--neurons", 10, "--trials", 20, "--bins", 24, "--seed", 2).exit_code == 0
    return path


@pytest.fixture(scope="module")
def run_dir(recording, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    result = invoke("fit", recording, "--out", out, "--max-epochs", 1, "--json", "--quiet",
                    "--set", "data.heldout_fraction=0.3", *FAST)
    assert result.exit_code == 0, result.output
    return out


def in_memory(run_dir, recording):
    """What smooth_command.smooth / forecast_command.forecast compute, the whole-array way, with the same random stream
    (both seed torch's generator with the run's seed once the model is built)."""
    run = runs.load_run(run_dir, "cpu")
    data = runs.load_data_for_run(recording, run)
    model = runs.session_model(run, data)
    torch.manual_seed(run.config.seed)
    return run, data, model


def files_agree(streamed, reference):
    """Same datasets, dtypes, shapes, compression and chunking, equal values."""
    with h5py.File(streamed, "r") as a, h5py.File(reference, "r") as b:
        assert sorted(a) == sorted(b)
        for name in b:
            x, y = a[name], b[name]
            assert (x.dtype, x.shape, x.compression, x.compression_opts, x.chunks) == \
                   (y.dtype, y.shape, y.compression, y.compression_opts, y.chunks), name
            if x.dtype.kind == "O":
                assert list(x.asstr()[()]) == list(y.asstr()[()]), name
            else:
                np.testing.assert_allclose(x[()], y[()], rtol=1e-6, atol=1e-7, err_msg=name)
        return dict(a.attrs), dict(b.attrs)


# -- (1) streamed output == in-memory output ------------------------------------------------------------


def test_streamed_smooth_equals_the_in_memory_path(run_dir, recording, tmp_path):
    torch.manual_seed(7)  # whatever the global stream was before, the command seeds its own draws
    summary = smooth_command.smooth(run_dir, recording, tmp_path / "stream.h5", device="cpu")

    run, data, model = in_memory(run_dir, recording)
    arrays = inference.smooth_arrays(model, runs.as_tensor(data.counts, run), batch_size=run.config.train.batch_size)
    metrics = evaluation.score_smoothed(arrays["rates_mean"], data, baselines=True)
    metrics.update(evaluation.evaluate(model, data, run.config, forecast=False, smoothed=arrays["rates_mean"]))
    arrays.update({"counts": data.counts, "trial_ids": data.trial_ids, "split": data.split,
                   "unit_ids": data.unit_ids.astype(str), "heldout": data.heldout})
    write_h5(tmp_path / "memory.h5", arrays, {"metrics": metrics})

    attrs, _ = files_agree(tmp_path / "stream.h5", tmp_path / "memory.h5")
    streamed = json.loads(attrs["metrics"])
    assert {"co_bps", "co_baseline_bps", "retest_bps", "valid_co_bps", "valid_co_baseline_bps",
            "test_retest_oracle_bps"} <= set(streamed)
    assert streamed.keys() == metrics.keys()
    for key, value in metrics.items():
        assert streamed[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert summary["metrics"] == streamed


def test_streamed_forecast_equals_the_in_memory_path(run_dir, recording, tmp_path):
    torch.manual_seed(3)
    forecast_command.forecast(run_dir, recording, tmp_path / "stream.h5", context=16, horizon=8, samples=5, keep_samples=True,
                 device="cpu")

    run, data, model = in_memory(run_dir, recording)
    arrays = inference.forecast_arrays(model, runs.as_tensor(data.counts[:, :16], run), 8, n_samples=5,
                                 batch_size=run.config.train.batch_size, keep_samples=True)
    metrics = evaluation.score_forecast(arrays["rates_mean"], data, 16, baselines=True)
    arrays.update({"counts": data.counts[:, 16:24], "context_counts": data.counts[:, :16],
                   "true_rates": data.truth["rates"][:, 16:24], "trial_ids": data.trial_ids, "split": data.split,
                   "unit_ids": data.unit_ids.astype(str)})
    write_h5(tmp_path / "memory.h5", arrays, {})

    attrs, _ = files_agree(tmp_path / "stream.h5", tmp_path / "memory.h5")
    streamed = json.loads(attrs["metrics"])
    assert streamed.keys() == metrics.keys() == {"fp_bps", "fp_baseline_bps", "fp_oracle_bps"}
    for key, value in metrics.items():
        assert streamed[key] == pytest.approx(value, rel=1e-9), key
    assert attrs["context_bins"] == 16 and attrs["horizon_bins"] == 8


# -- (2) block-wise scores == whole-array scores -----------------------------------------------------


def _counts_and_rates(seed=0, shape=(23, 9, 6)):
    rng = np.random.default_rng(seed)
    rates = rng.gamma(2.0, 0.5, size=shape)
    counts = rng.poisson(rates).astype(np.float32)
    counts[rng.random(shape) < 0.05] = np.nan  # missing bins are dropped from both NLL terms
    return counts, (rates * rng.uniform(0.7, 1.3, size=shape)).astype(np.float32)


@pytest.mark.parametrize("blocks", [(23,), (8, 8, 7), (1, 5, 17), (4,) * 5 + (3,)])
def test_bits_per_spike_accumulator_equals_the_whole_array_metrics(blocks):
    counts, rates = _counts_and_rates()
    heldout = np.array([True, False, False, True, False, True])
    trials = np.random.default_rng(1).random(len(counts)) < 0.4
    whole = {
        "bps": M.bits_per_spike(rates, counts),
        "co_bps": M.co_bps(rates, counts, heldout),
        "subset_bps": M.bits_per_spike(rates[trials], counts[trials]),
        "subset_co_bps": M.co_bps(rates[trials], counts[trials], heldout),
    }
    scores = {"bps": M.BitsPerSpike(counts), "co_bps": M.BitsPerSpike(counts, neurons=heldout),
              "subset_bps": M.BitsPerSpike(counts, trials=trials),
              "subset_co_bps": M.BitsPerSpike(counts, neurons=heldout, trials=trials)}
    start = 0
    for size in blocks:
        for score in scores.values():
            score.add(rates[start : start + size])
        start += size
    for key, score in scores.items():
        assert score.value() == pytest.approx(whole[key], rel=1e-10), key
    assert M.bits_per_spike_blocked(rates, counts) == pytest.approx(M.oracle_bps(rates, counts), rel=1e-10)


def test_bits_per_spike_accumulator_edge_cases():
    counts, rates = _counts_and_rates()
    score = M.BitsPerSpike(counts)
    score.add(rates[:10])
    with pytest.raises(ValueError, match="10 of 23"):
        score.value()  # a score of part of the trials would be silently wrong
    with pytest.raises(ValueError, match="counts have 23"):
        score.add(rates)
    with warnings.catch_warnings():  # the null model of silent neurons is 0 where no spike is seen: exact, silent
        warnings.simplefilter("error")
        empty = M.BitsPerSpike(np.zeros((3, 4, 2)))
        empty.add(np.ones((3, 4, 2)))
        assert np.isnan(empty.value())  # no spikes: undefined, as bits_per_spike
        assert np.isnan(M.bits_per_spike(np.ones((3, 4, 2)), np.zeros((3, 4, 2))))


def _spike_data(seed=0):
    counts, rates = _counts_and_rates(seed)
    rng = np.random.default_rng(seed + 1)
    n_trial, _, n_neuron = counts.shape
    return SpikeData(
        counts=counts, bin_ms=20.0, unit_ids=np.arange(n_neuron).astype(str), trial_ids=np.arange(n_trial),
        split=rng.choice(["train", "valid", "test"], n_trial), session="s", heldout=np.arange(n_neuron) % 3 == 0,
        truth={"rates": rates, "retest_counts": rng.poisson(rates).astype(np.float32)},
    ), rng.gamma(2.0, 0.5, size=counts.shape).astype(np.float32)


def test_smoothed_and_forecast_scores_equal_the_whole_array_scores():
    data, rates = _spike_data()
    for split in ("valid", "test", "train"):
        mask = data.split == split
        scores = evaluation.SmoothedScores(data, trials=mask)
        for start in range(0, data.n_trials, 6):
            scores.add(rates[start : start + 6])
        sub = data.subset(split)
        expected = {"co_bps": M.co_bps(rates[mask], sub.counts, sub.heldout),
                    "retest_bps": M.bits_per_spike(rates[mask], sub.truth["retest_counts"]),
                    "retest_oracle_bps": M.oracle_bps(sub.truth["rates"], sub.truth["retest_counts"])}
        got = scores.result()
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=1e-10), (split, key)

    context, horizon = 5, 4
    forecast = evaluation.ForecastScores(data, context, horizon)
    for start in range(0, data.n_trials, 7):
        forecast.add(rates[start : start + 7, :horizon])
    observed = data.counts[:, context : context + horizon]
    got = forecast.result()
    assert got["fp_bps"] == pytest.approx(M.fp_bps(rates[:, :horizon], observed), rel=1e-10)
    assert got["fp_oracle_bps"] == pytest.approx(M.oracle_bps(data.truth["rates"][:, context:], observed), rel=1e-10)
    assert evaluation.ForecastScores(data, 7, 4).result() == {}  # trials end before context + horizon: nothing to score


# -- (3) a failure leaves nothing behind; (4) no silent overwrite --------------------------------------


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir())


def test_an_exception_mid_stream_leaves_no_file_and_no_temporary(tmp_path):
    out = tmp_path / "out.h5"
    with pytest.raises(RuntimeError, match="disk on fire"):
        with H5Stream(out, n_rows=10) as stream:
            stream.append({"rates_mean": np.ones((4, 3, 2), np.float32)})
            assert stream.tmp.exists() and not out.exists()
            raise RuntimeError("disk on fire")
    assert _leftovers(tmp_path) == []


def test_a_stream_missing_rows_is_not_renamed_into_place(tmp_path):
    out = tmp_path / "out.h5"
    with pytest.raises(ValueError, match="incomplete"):
        with H5Stream(out, n_rows=10) as stream:
            stream.append({"rates_mean": np.ones((4, 3, 2), np.float32)})
    with pytest.raises(ValueError, match="more than n_rows"):
        with H5Stream(out, n_rows=3) as stream:
            stream.append({"rates_mean": np.ones((4, 3, 2), np.float32)})
    assert _leftovers(tmp_path) == []


def test_a_failing_smooth_command_leaves_no_file(run_dir, recording, tmp_path, monkeypatch):
    real, calls = inference._smooth_part, []

    def fails_on_the_second_block(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory, say")
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "_smooth_part", fails_on_the_second_block)
    with pytest.raises(RuntimeError, match="out of memory"):
        smooth_command.smooth(run_dir, recording, tmp_path / "smooth.h5", device="cpu")
    assert len(calls) == 2 and _leftovers(tmp_path) == []


def test_existing_output_is_kept_without_overwrite(tmp_path):
    out = tmp_path / "out.h5"
    write_h5(out, {"x": np.zeros(3)}, {"tag": "first"})
    with pytest.raises(UsageError, match="--overwrite"):
        H5Stream(out, n_rows=2)
    with pytest.raises(UsageError, match="--overwrite"):
        write_h5(out, {"x": np.ones(3)}, {"tag": "second"})
    with h5py.File(out, "r") as f:
        assert f.attrs["tag"] == "first"
    with H5Stream(out, n_rows=2, overwrite=True) as stream:
        stream.append({"x": np.ones((2, 5))})
        stream.set_attrs({"tag": "third"})
    with h5py.File(out, "r") as f:
        assert f.attrs["tag"] == "third" and f["x"].shape == (2, 5)
    assert _leftovers(tmp_path) == ["out.h5"]


def test_a_file_appearing_during_the_stream_is_not_replaced(tmp_path):
    out = tmp_path / "out.h5"
    with pytest.raises(UsageError, match="appeared"):
        with H5Stream(out, n_rows=1) as stream:
            stream.append({"x": np.ones((1, 2))})
            out.write_text("someone else's result")
    assert out.read_text() == "someone else's result" and _leftovers(tmp_path) == ["out.h5"]
