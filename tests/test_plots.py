"""Plots: each function writes a non-empty PNG from small random data; missing matplotlib is a UsageError."""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from xfads_cli.errors import UsageError  # noqa: E402
from xfads_cli.outputs import plots  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BIN_MS = 20.0


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == PNG_MAGIC


def _rates(shape, seed=0):
    """(counts, mean, lo, hi) [trial, time, neuron] in spikes per bin."""
    rng = np.random.default_rng(seed)
    mean = rng.gamma(2.0, 0.2, size=shape)
    counts = rng.poisson(mean).astype(np.float32)
    return counts, mean, 0.5 * mean, 1.5 * mean


@pytest.fixture(autouse=True)
def _no_warnings():
    """Plots must not spam the terminal (e.g. all-NaN means, layout warnings)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_training(tmp_path):
    history = [
        {"epoch": e, "train_loss": 2.0 / (e + 1), "valid_loss": 2.2 / (e + 1), "lr": 1e-3,
         "valid_co_bps": 0.01 * e, "valid_fp_bps": float("nan") if e % 2 else 0.02 * e}
        for e in range(8)
    ]
    history[3]["valid_loss"] = None
    out = plots.plot_training(history, tmp_path / "plots" / "training.png")
    assert out == tmp_path / "plots" / "training.png" and _is_png(out)
    # Without bps columns, and with nothing recorded at all.
    assert _is_png(plots.plot_training([{"epoch": 0, "train_loss": 1.0, "valid_loss": float("nan")}], tmp_path / "a.png"))
    assert _is_png(plots.plot_training([], tmp_path / "b.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "plots"]  # no temporaries left


def test_training_axes_count_epochs_from_0_and_legends_read_as_words(tmp_path, monkeypatch):
    seen = {}
    real_save = plots._save

    def save(fig, out):  # look at the figure before _save clears it
        loss_ax, bps_ax = fig.axes
        seen["x"] = list(loss_ax.lines[0].get_xdata())
        seen["labels"] = [t.get_text() for ax in fig.axes for t in ax.get_legend().get_texts()]
        seen["ticks"] = [t for t in bps_ax.get_xticks() if 0 <= t <= 2]
        return real_save(fig, out)

    monkeypatch.setattr(plots, "_save", save)
    history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "valid_loss": 1.1 / (e + 1), "valid_retest_bps": 0.1 * e,
                "valid_retest_oracle_bps": 0.5} for e in range(3)]
    plots.plot_training(history, tmp_path / "t.png")
    assert seen["x"] == [0, 1, 2]  # as metrics.csv and the console number them
    assert seen["labels"][-2:] == ["validation test-retest bps (smoothed rates)",
                                   "validation test-retest bps of the true rates"]
    assert all("_" not in label for label in seen["labels"])
    assert seen["ticks"] and all(float(t).is_integer() for t in seen["ticks"])
    assert plots.metric_label("test_fp_baseline_bps") == "test fp-bps of the baseline"
    assert plots.metric_label("lr") == "lr"


def test_psth(tmp_path):
    counts, mean, lo, hi = _rates((12, 15, 9))
    counts[0, :5, 2] = np.nan  # missing bins
    counts[:, :, 8] = np.nan  # a neuron never observed: ranked last, not plotted by default
    assert plots._pick_neurons(counts, None, 6)[-1] != 8
    assert _is_png(plots.plot_psth(counts, mean, lo, hi, BIN_MS, tmp_path / "psth.png"))
    conditions = np.array(["left", "right", "up"] * 4)
    out = plots.plot_psth(counts, mean, lo, hi, BIN_MS, tmp_path / "cond.png", neurons=[0, 8], conditions=conditions)
    assert _is_png(out)
    with pytest.raises(UsageError, match="neuron"):
        plots.plot_psth(counts, mean, lo, hi, BIN_MS, tmp_path / "bad.png", neurons=[9])
    with pytest.raises(ValueError, match="rates_lo"):
        plots.plot_psth(counts, mean, lo[:, :3], hi, BIN_MS, tmp_path / "bad.png")


def test_forecast(tmp_path):
    context, *_ = _rates((5, 10, 6), seed=1)
    horizon, mean, lo, hi = _rates((5, 6, 6), seed=2)
    assert _is_png(plots.plot_forecast(context, horizon, mean, lo, hi, BIN_MS, tmp_path / "fc.png"))
    out = plots.plot_forecast(context, None, mean, lo, hi, BIN_MS, tmp_path / "future.png", trials=[4], neurons=[1, 2])
    assert _is_png(out)
    with pytest.raises(ValueError, match="context_counts"):
        plots.plot_forecast(context[:, :, :2], horizon, mean, lo, hi, BIN_MS, tmp_path / "bad.png")


@pytest.mark.parametrize("n_latent", [1, 2, 3])
def test_latents(tmp_path, n_latent):
    rng = np.random.default_rng(n_latent)
    means = np.cumsum(rng.normal(size=(6, 20, n_latent)), axis=1)
    variances = rng.gamma(2.0, 0.05, size=means.shape)
    truth = means @ rng.normal(size=(n_latent, 3)) + 0.01 * rng.normal(size=(6, 20, 3))
    assert _is_png(plots.plot_latents(means, tmp_path / "plain.png"))
    assert _is_png(plots.plot_latents(means, tmp_path / "full.png", variances=variances, trials=[1, 3], truth=truth))


def test_affine_fit_recovers_a_linear_map():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(4, 30, 3))
    truth = means @ rng.normal(size=(3, 2)) + np.array([1.0, -2.0])
    truth[0, 0, 0] = np.nan  # skipped, not propagated
    mapped, r2 = plots.affine_fit(means, truth)
    assert r2 == pytest.approx(1.0) and mapped.shape == truth.shape
    _, r2 = plots.affine_fit(means, rng.normal(size=(4, 30, 2)))
    assert r2 < 0.2


def test_missing_matplotlib_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    with pytest.raises(UsageError, match=r"pip install 'xfads\[plot\]'"):
        plots.plot_training([{"epoch": 0, "train_loss": 1.0}], tmp_path / "t.png")
    assert list(tmp_path.iterdir()) == []
