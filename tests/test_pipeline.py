"""simulate -> fit -> smooth -> forecast through the CLI, outputs read back with plain h5py."""

import json
import math

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from xfads_cli.cli import app
from xfads_cli.scoring import bits_per_spike, co_bps

runner = CliRunner()
FAST = ["--set", "model.samples=4", "--set", "model.latent_dim=3", "--set", "model.dynamics_hidden=16",
        "--set", "model.encoder_hidden=16", "--set", "train.batch_size=8"]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "vdp.nwb"
    assert invoke("simulate", "vdp", "--out", path, "--neurons", 12, "--trials", 20, "--bins", 30, "--seed", 4).exit_code == 0
    return path


@pytest.fixture(scope="module")
def run_dir(recording, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    result = invoke("fit", recording, "--out", out, "--max-epochs", 3, "--json", "--quiet",
                    "--set", "data.heldout_fraction=0.25", *FAST)
    assert result.exit_code == 0, result.output
    return out


def test_fit_writes_the_run_directory(run_dir):
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.csv", "summary.json"):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["data"]["heldout_neurons"] == 3
    assert len((run_dir / "metrics.csv").read_text().strip().splitlines()) == 4
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)  # no code can run from a checkpoint
    assert {"model", "train_state", "config", "spec", "data", "versions", "epoch", "best"} <= set(ckpt)
    assert len(ckpt["data"]["sha256"]) == 64 and ckpt["config"]["model"]["latent_dim"] == 3


def test_smooth_output_reads_with_h5py_and_metrics_match(run_dir, recording, tmp_path):
    out = tmp_path / "smooth.h5"
    result = invoke("smooth", run_dir, recording, "--out", out, "--json", "--quiet")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    with h5py.File(out, "r") as f:
        assert f["latents_mean"].shape == (20, 30, 3) and f["latents_var"].shape == (20, 30, 3)
        for q in ("rates_mean", "rates_q05", "rates_q50", "rates_q95"):
            assert f[q].shape == (20, 30, 12)
        assert (f["rates_q05"][()] <= f["rates_q95"][()]).all()
        assert len(f.attrs["input_sha256"]) == 64 and "model:" in f.attrs["config"]
        heldout = f["heldout"][()]
        independent = co_bps(f["rates_mean"][()], f["counts"][()], heldout)
        assert json.loads(f.attrs["metrics"])["co_bps"] == pytest.approx(independent, rel=1e-6)
        assert set(f["split"].asstr()[()]) == {"train", "valid", "test"}
        assert json.loads(f.attrs["verdicts"]) == summary["verdicts"]
        assert json.loads(f.attrs["baselines"]) == summary["baselines"]
    assert summary["metrics"]["co_bps"] == pytest.approx(independent, rel=1e-6)
    # the smoothing baseline next to every co-bps, judged on the test trials
    assert {"co_baseline_bps", "valid_co_baseline_bps", "test_co_baseline_bps"} <= set(summary["metrics"])
    assert summary["baselines"]["co"].startswith("smoothing + Poisson GLM")
    assert len(summary["verdicts"]) == 1 and "smoothing + Poisson GLM" in summary["verdicts"][0]
    assert " test trials" in summary["verdicts"][0]


def test_forecast_output_and_fp_bps(run_dir, recording, tmp_path):
    out = tmp_path / "fc.h5"
    result = invoke("forecast", run_dir, recording, "--out", out, "--context", 20, "--horizon", 10, "--samples", 16,
                    "--json", "--quiet")
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as f:
        rates, counts = f["rates_mean"][()], f["counts"][()]
        assert rates.shape == (20, 10, 12) and counts.shape == (20, 10, 12)
        assert f["trial_ids"].shape == (20,)
        fp = json.loads(f.attrs["metrics"])["fp_bps"]
    assert fp == pytest.approx(bits_per_spike(rates, counts), rel=1e-6)
    assert math.isfinite(fp)
    summary = json.loads(result.stdout)  # simulated trials are trial-aligned: the leave-one-out PSTH
    assert math.isfinite(summary["metrics"]["fp_baseline_bps"])
    assert summary["baselines"]["fp"].startswith("leave-one-out PSTH")
    assert len(summary["verdicts"]) == 2 and "leave-one-out PSTH" in summary["verdicts"][0]
    assert "forecast grid:" in summary["verdicts"][1] and "worst: t" in summary["verdicts"][1]
    assert any(k.startswith("fp_bps@t") for k in summary["metrics"])


def test_forecast_beyond_the_window_reads_the_recording(run_dir, recording, tmp_path):
    # trials are 30 bins with 10-bin gaps, so 35 bins fit for every trial but the last one
    result = invoke("forecast", run_dir, recording, "--out", tmp_path / "x.h5", "--context", 25, "--horizon", 10)
    assert result.exit_code == 2 and "past the recording" in result.output
    ok = invoke("forecast", run_dir, recording, "--out", tmp_path / "y.h5", "--context", 25, "--horizon", 5, "--quiet")
    assert ok.exit_code == 0, ok.output


def test_smooth_nwb_format_writes_a_new_file(run_dir, recording, tmp_path):
    before = recording.read_bytes()
    out = tmp_path / "smooth.nwb"
    result = invoke("smooth", run_dir, recording, "--out", out, "--format", "nwb", "--split", "test", "--quiet")
    assert result.exit_code == 0, result.output
    assert recording.read_bytes() == before
    with h5py.File(out, "r") as f:
        assert "xfads_smooth" in f["processing"]


def test_forecast_nwb_format_writes_context_and_forecast(run_dir, recording, tmp_path):
    """The README's example: context and forecast differ in length (this crashed with 'series differ')."""
    before = recording.read_bytes()
    out = tmp_path / "forecast.nwb"
    result = invoke("forecast", run_dir, recording, "--out", out, "--format", "nwb", "--context", 20, "--horizon", 10,
                    "--quiet")
    assert result.exit_code == 0, result.output
    assert recording.read_bytes() == before
    with h5py.File(out, "r") as f:
        module = f["processing/xfads_forecast"]
        assert module["rates_mean/data"].shape[0] == 10 * module["context_counts/data"].shape[0] // 20
        context_t, forecast_t = module["context_counts/timestamps"][()], module["rates_mean/timestamps"][()]
    bin_s = (forecast_t[1] - forecast_t[0])
    assert abs(forecast_t[0] - context_t[19] - bin_s) < 1e-9  # the forecast's first bin follows the context's last


def test_resume_continues_from_last(recording, tmp_path):
    out = tmp_path / "run"
    assert invoke("fit", recording, "--out", out, "--max-epochs", 2, "--quiet", *FAST).exit_code == 0
    result = invoke("fit", recording, "--out", out, "--max-epochs", 4, "--resume", "--quiet")
    assert result.exit_code == 0, result.output
    epochs = [int(line.split(",")[0]) for line in (out / "metrics.csv").read_text().splitlines()[1:]]
    assert epochs == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["smooth", "{tmp}/nope", "{rec}", "--out", "{tmp}/s.h5"], "no such run directory"),
        (["smooth", "{run}", "{other}", "--out", "{tmp}/s.h5"], "neurons but the checkpoint"),
        (["forecast", "{run}", "{rec}", "--out", "{tmp}/f.h5", "--context", 10], "exactly one of --horizon"),
        (["fit", "{rec}", "--out", "{run}"], "already holds a run"),
        (["smooth", "{run}", "{rec}", "--out", "{tmp}/s.h5", "--split", "bogus"], "--split"),
        (["fit", "{rec}", "--out", "{tmp}/r", "--set", "model.dynamics=rnn"], "must be one of"),
    ],
)
def test_failure_paths(args, fragment, run_dir, recording, tmp_path):
    other = tmp_path / "other.nwb"
    invoke("simulate", "vdp", "--out", other, "--neurons", 5, "--trials", 4, "--bins", 30)
    filled = [str(a).format(tmp=tmp_path, rec=recording, run=run_dir, other=other) for a in args]
    result = invoke(*filled)
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "f.h5").exists()


def test_context_longer_than_trial_in_hdf5(tmp_path):
    path = tmp_path / "plain.h5"
    assert invoke("simulate", "ring", "--out", path, "--neurons", 6, "--trials", 8, "--bins", 12).exit_code == 0
    run = tmp_path / "run"
    assert invoke("fit", path, "--out", run, "--max-epochs", 1, "--quiet", *FAST).exit_code == 0
    result = invoke("forecast", run, path, "--out", tmp_path / "f.h5", "--context", 10, "--horizon", 5)
    assert result.exit_code == 2 and "shorten --context" in result.output
    assert not (tmp_path / "f.h5").exists()
    with h5py.File(path, "r") as f:
        assert np.asarray(f["spikes"]).shape == (8, 12, 6)


def test_behaviour_and_conditions_give_behavior_and_psth_r2(recording, fixtures_dir, tmp_path):
    run = tmp_path / "maze"
    result = invoke("fit", fixtures_dir / "mc_maze_2trials.nwb", "--out", run, "--max-epochs", 1, "--quiet",
                    "--set", "data.behavior=hand_vel", "--set", "data.split=[0.5,0.5,0]", *FAST)
    assert result.exit_code == 0, result.output
    result = invoke("smooth", run, fixtures_dir / "mc_maze_2trials.nwb", "--out", tmp_path / "m.h5", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert math.isfinite(metrics["valid_behavior_r2"])
    assert not any("vel" in k for k in metrics)  # named after what is decoded, not after velocity

    run2 = tmp_path / "cond"
    assert invoke("fit", recording, "--out", run2, "--max-epochs", 1, "--quiet", "--set", "data.condition=condition",
                  *FAST).exit_code == 0
    result = invoke("smooth", run2, recording, "--out", tmp_path / "c.h5", "--json", "--quiet")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert math.isfinite(metrics["test_psth_r2"]) and metrics["test_psth_r2"] <= 1.0


def test_behaviour_lag_longer_than_the_trial_skips_behavior_r2(tmp_path):
    """NLB file with 10-bin (50 ms) trials and the default 100 ms decoding lag: nothing to decode
    inside a trial, so fit finishes without a behavior_r2 score instead of crashing."""
    rng = np.random.default_rng(0)
    path = tmp_path / "short.h5"
    with h5py.File(path, "w") as f:
        f["train_spikes_heldin"] = rng.poisson(1.0, (8, 10, 4)).astype("f4")
        f["train_spikes_heldout"] = rng.poisson(1.0, (8, 10, 2)).astype("f4")
        f["eval_spikes_heldin"] = rng.poisson(1.0, (4, 10, 4)).astype("f4")
        f["train_behavior"] = rng.normal(size=(8, 10, 2)).astype("f4")
        f["eval_behavior"] = rng.normal(size=(4, 10, 2)).astype("f4")
        f.attrs["bin_ms"] = 5.0
    invoke("fit", path, "--out", tmp_path / "run", "--max-epochs", "1", "--quiet")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert not any(k.endswith("behavior_r2") for k in summary["metrics"])
