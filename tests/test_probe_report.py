"""Issue 24, items 5, 6 and 10 (plots): one epoch numbering on the terminal and in every file,
--max-epochs on a resumed run, the selection score told apart from the final table's score of the
same name, and plots with seconds on every time axis and the recording's trial ids in their titles."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from xfads_cli.cli import app
from xfads_cli.fitting import run_fit
from xfads_cli.config import load_config
from xfads_cli.progress import EpochProgress
from xfads_cli.scoring.selection import SELECT_SAMPLES

SMALL = ["model.samples=3", "model.latent_dim=2", "model.dynamics_hidden=8", "model.encoder_hidden=8",
         "train.batch_size=4", "seed=3"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ring.h5"
    result = CliRunner().invoke(app, ["simulate", "ring", "--out", str(path), "--neurons", "6", "--trials", "16",
                                      "--bins", "12", "--seed", "2"])
    assert result.exit_code == 0, result.output
    return path


def fit(recording, out, *, epochs: int, resume: bool = False, quiet: bool = True) -> dict:
    config = load_config(overrides=[*SMALL, f"train.max_epochs={epochs}"])
    with EpochProgress(epochs, quiet=quiet) as progress:
        return run_fit([recording], config, out, resume=resume, max_epochs=epochs, progress=progress, threads="1")


def metrics_rows(run) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(recording, tmp_path_factory):
    """A 4-epoch fit selecting on valid_fp_bps, and what its progress printed."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("fit") / "run"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        summary = fit(recording, out, epochs=4, quiet=False)
    return out, summary, err.getvalue()


def test_progress_names_an_epoch_by_its_metrics_csv_number(capsys):
    p = EpochProgress(10)
    p.resume("valid_fp_bps", None)
    p.update({"epoch": 6, "train_loss": 1.0, "valid_fp_bps": 0.2})
    line = capsys.readouterr().err
    assert line.startswith("epoch 6 (7/10)  ") and "best 0.2 at epoch 6," in line  # (7/10): epochs done


def test_a_resumed_runs_progress_counts_to_its_own_max_epochs(capsys):
    p = EpochProgress(300)  # the command line's default config; the resumed run's own says 8
    p.resume("valid_fp_bps", {"key": "valid_fp_bps", "epoch": 3, "score": 0.1}, total=8)
    p.update({"epoch": 6, "train_loss": 1.0, "valid_fp_bps": 0.05})
    line = capsys.readouterr().err
    assert line.startswith("epoch 6 (7/8)  ") and "best 0.1 at epoch 3," in line


def test_one_epoch_numbering_in_progress_summary_metrics_csv_and_checkpoints(run):
    out, summary, printed = run
    rows = metrics_rows(out)
    assert [int(r["epoch"]) for r in rows] == list(range(summary["epochs"]))
    best = summary["best_epoch"]
    assert float(rows[best][summary["selected_on"]]) == summary["best_score"]
    assert int(re.findall(r"at epoch (\d+),", printed)[-1]) == best
    assert re.findall(r"^epoch (\d+) ", printed, re.M) == [r["epoch"] for r in rows]
    assert torch.load(out / "best.pt", weights_only=True)["epoch"] == best
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == summary["epochs"] - 1

    from xfads_cli.fitting import training_line  # the line `xfads fit` ends with

    assert training_line(summary) == f"4 epochs (0-3), best epoch {best}; stopped: max_epochs=4 reached"


def test_max_epochs_counts_the_epochs_of_the_whole_run_when_resuming(recording, tmp_path):
    out = tmp_path / "run"
    fit(recording, out, epochs=2)
    more = fit(recording, out, epochs=3, resume=True)
    assert more["epochs"] == 3 and [r["epoch"] for r in metrics_rows(out)] == ["0", "1", "2"]
    assert more["stopped"] == ("max_epochs=3 reached (it counts the run's epochs from its start: "
                               "2 before this resume, 1 in it)")
    again = fit(recording, out, epochs=2, resume=True)  # fewer than the run already has: nothing to train
    assert again["epochs"] == 3 and len(metrics_rows(out)) == 3
    assert again["stopped"] == ("max_epochs=2 reached before this resume: the run already had 3 epochs "
                                "(max_epochs counts the run's epochs from its start; give more to train on)")

    from xfads_cli.fitting import training_line

    assert training_line(again).startswith("3 epochs (0-2), best epoch ")


def test_the_selection_score_and_the_tables_score_of_the_same_name_are_told_apart(run):
    _, summary, printed = run
    assert summary["selected_on"] == "valid_fp_bps" and "valid_fp_bps" in summary["metrics"]
    assert summary["metrics"]["valid_fp_bps"] != summary["best_score"]  # the two numbers
    best = f"{summary['best_score']:.4g}"
    assert f"best {best} at epoch {summary['best_epoch']}," in printed
    (note,) = [n for n in summary.get("notes", []) if "valid_fp_bps" in n]
    assert note == (f"best.pt was selected on valid_fp_bps {best} at epoch {summary['best_epoch']} (the progress "
                    f"line's 'best'): {SELECT_SAMPLES} fixed draws per trial, mean over the forecast grid's 5 "
                    "windows; the table's valid_fp_bps is best.pt scored again with eval.samples=100 draws, "
                    "bins 8-11 forecast from the first 8")


def test_a_co_bps_selection_note_says_the_draws_differ():
    from xfads_cli.scoring.selection import selection_note

    config = load_config()
    note = selection_note("valid_co_bps", 0.123456, 7, config, valid=None)
    assert note == ("best.pt was selected on valid_co_bps 0.1235 at epoch 7 (the progress line's 'best'); the "
                    "table's valid_co_bps is best.pt scored again with new posterior draws")
    assert selection_note("valid_loss", 1.0, 7, config, valid=None) is None


def test_without_a_forecast_grid_the_note_says_only_the_draws_differ(monkeypatch):
    from types import SimpleNamespace

    from xfads_cli.scoring import selection as fit_module

    monkeypatch.setattr(fit_module, "grid_windows", lambda valid, config: [])  # windows chopped from a recording
    note = fit_module.selection_note("valid_fp_bps", -0.5, 3, load_config(), SimpleNamespace(n_time=30))
    assert note.endswith(f"{SELECT_SAMPLES} fixed draws per trial, bins 20-29 forecast from the first 20; the "
                         "table's valid_fp_bps is best.pt scored again with eval.samples=100 draws")


# --------------------------------------------------------------------------------------------------
# Plots: seconds on every time axis, the recording's trial ids in titles and legends


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, looked at before _save clears them."""
    plots = pytest.importorskip("xfads_cli.outputs.plots")
    pytest.importorskip("matplotlib")
    seen = []
    real_save = plots._save

    def save(fig, out):
        axes = [{"xlabel": ax.get_xlabel(), "title": ax.get_title(),
                 "x": [list(line.get_xdata()) for line in ax.lines],
                 "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []}
                for ax in fig.axes]
        seen.append(axes)
        return real_save(fig, out)

    monkeypatch.setattr(plots, "_save", save)
    return plots, seen


@pytest.mark.parametrize("n_latent", [1, 2, 3])
def test_latents_plot_time_in_seconds_and_trial_ids(figures, tmp_path, n_latent):
    plots, seen = figures
    rng = np.random.default_rng(0)
    means = np.cumsum(rng.normal(size=(6, 10, n_latent)), axis=1)
    truth = means @ rng.normal(size=(n_latent, 2))
    ids = np.array([40, 41, 17, 43, 44, 45])
    plots.plot_latents(means, tmp_path / "l.png", variances=np.ones_like(means), trials=[2, 4], truth=truth,
                       bin_ms=20.0, trial_ids=ids)
    trajectories, over_time, truth_panel = seen[0]
    seconds = [(b + 0.5) * 0.02 for b in range(10)]
    for panel in (over_time, truth_panel):
        assert panel["xlabel"] == "time in trial (s)" and panel["title"].startswith("trial id 17:")
        assert np.allclose(panel["x"][0], seconds)
    assert trajectories["legend"] == ["trial id 17", "trial id 44"]
    if n_latent == 1:
        assert trajectories["xlabel"] == "time in trial (s)" and np.allclose(trajectories["x"][0], seconds)


def test_forecast_plot_titles_name_the_recordings_trial_ids(figures, tmp_path):
    plots, seen = figures
    rng = np.random.default_rng(1)
    context, horizon = rng.poisson(1.0, (4, 6, 3)), rng.poisson(1.0, (4, 3, 3))
    mean = rng.gamma(2.0, 0.5, (4, 3, 3))
    plots.plot_forecast(context, horizon, mean, 0.5 * mean, 1.5 * mean, 20.0, tmp_path / "f.png", trials=[1, 3],
                        neurons=[0], trial_ids=np.array([5, 9, 11, 23]))
    titles = [panel["title"] for panel in seen[0][:-1]]
    assert titles == ["trial id 9, neuron 0", "trial id 23, neuron 0"]
    assert all(panel["xlabel"] == "time in trial (s)" for panel in seen[0][-1:])


def test_without_trial_ids_a_panel_names_the_row(figures, tmp_path):
    plots, seen = figures
    means = np.zeros((3, 4, 2))
    plots.plot_latents(means, tmp_path / "l.png", trials=[1], bin_ms=10.0)
    assert seen[0][1]["title"].startswith("trial in row 1:") and seen[0][0]["legend"] == ["trial in row 1"]


def test_training_plot_numbers_epochs_as_metrics_csv(figures, tmp_path):
    plots, seen = figures
    plots.plot_training([{"epoch": e, "train_loss": 1.0 / (e + 1)} for e in range(3)], tmp_path / "t.png")
    assert seen[0][0]["x"][0] == [0, 1, 2]


# --------------------------------------------------------------------------------------------------
# The commands: fit's closing line and --max-epochs help, smooth's and forecast's plots


def test_fit_ends_with_the_training_line_and_its_help_says_what_max_epochs_counts(recording, tmp_path):
    sets = [arg for s in SMALL for arg in ("--set", s)]
    res = CliRunner().invoke(app, ["fit", str(recording), "--out", str(tmp_path / "run"), "--max-epochs", "2",
                                   "--threads", "1", *sets])
    assert res.exit_code == 0, res.output
    assert re.search(r"xfads fit: 2 epochs \(0-1\), best epoch [01]; stopped: max_epochs=2 reached", res.output)
    help_text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", CliRunner().invoke(app, ["fit", "--help"]).output).split())
    assert "counted from the run's start, the epochs before the resume included" in help_text


def test_smooth_and_forecast_plots_name_trials_by_their_ids_in_seconds(run, recording, figures, tmp_path):
    plots, seen = figures
    out, _, _ = run
    for command in (["smooth", str(out), str(recording), "--out", str(tmp_path / "s.h5"), "--split", "test"],
                    ["forecast", str(out), str(recording), "--out", str(tmp_path / "f.h5"), "--split", "test",
                     "--context", "8", "--horizon", "4"]):
        res = CliRunner().invoke(app, [*command, "--plot", "--threads", "1"])
        assert res.exit_code == 0, res.output
    from xfads_cli.data.load import load_data

    test_ids = load_data(recording, load_config().data).subset("test").trial_ids
    latents, *_, forecast = seen
    assert latents[1]["xlabel"] == "time in trial (s)" and latents[1]["title"].startswith(f"trial id {test_ids[0]}:")
    assert forecast[0]["title"].startswith(f"trial id {test_ids[0]}, neuron ")
    assert all(panel["xlabel"] in ("", "time in trial (s)") for panel in forecast)
