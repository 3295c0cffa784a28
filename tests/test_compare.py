"""`xfads compare` (commands/compare.py): every kind fitted into DIR/<kind> on the same data and budget,
summary.json and --json the same object, refusals before anything is written, --workers as subprocesses."""

from __future__ import annotations

import csv
import json
import math

import pytest
from typer.testing import CliRunner

from xfads_cli.cli import app
from xfads_cli.commands.compare import KINDS, parse_kinds, table_rows
from xfads_cli.errors import UsageError

runner = CliRunner()
# tiny models: one epoch of each of the four kinds takes well under a second on one thread
TINY = ["--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=16", "--set", "model.encoder_hidden=16",
        "--set", "model.samples=4", "--set", "eval.samples=10"]
ROW_NUMBERS = ("fp_bps", "retest_ratio", "s_per_epoch", "seconds")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    data = tmp_path_factory.mktemp("compare_data") / "vdp.h5"
    result = invoke("simulate", "vdp", "--out", data, "--neurons", 6, "--trials", 12, "--bins", 12)
    assert result.exit_code == 0, result.output
    return data


@pytest.fixture(scope="module")
def compared(recording, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare_out") / "cmp"
    result = invoke("compare", recording, "--out", out, "--max-epochs", 1, *TINY, "--json")
    assert result.exit_code == 0, result.output
    return out, result


def test_every_kind_is_fitted_into_its_run_directory(compared):
    out, result = compared
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["kinds"]) == list(KINDS)  # the default: all four, in order
    for kind, row in summary["kinds"].items():
        assert (out / kind / "best.pt").is_file()
        assert json.loads((out / kind / "summary.json").read_text())["kind"] == kind
        assert row["epochs"] == 1 and isinstance(row["parameters"], int) and row["parameters"] > 0
        for key in ROW_NUMBERS:
            assert isinstance(row[key], float) and math.isfinite(row[key]), (kind, key, row[key])
        assert row["co_bps"] is None  # no held-out neurons in this recording
        assert row["retest_ratio"] == pytest.approx(row["retest_bps"] / summary["baselines"]["retest_oracle_bps"])
    for key in ("fp_baseline_bps", "fp_oracle_bps", "retest_oracle_bps"):
        assert isinstance(summary["baselines"][key], float)
    assert summary["data"]["trials"] == 12 and summary["config"]["model"]["latent_dim"] == 2
    assert "kind" not in summary["config"]["model"]  # each row's own
    assert summary["config"]["train"]["max_epochs"] == 1
    # the same split and seed for every kind: the trivial baseline is the same number in every run
    baselines = {json.loads((out / k / "summary.json").read_text())["metrics"]["test_fp_baseline_bps"] for k in KINDS}
    assert len(baselines) == 1


def test_json_is_summary_json_and_the_table_is_on_stderr(compared):
    out, result = compared
    assert json.loads(result.stdout) == json.loads((out / "summary.json").read_text())
    for name in (*KINDS, "baseline", "oracle", "fp-bps", "s/epoch"):
        assert name in result.stderr
    assert "xfads compare" not in result.stdout


def test_table_rows_blank_what_the_data_do_not_give():
    summary = {"kinds": {"dkf": {"fp_bps": 0.1, "co_bps": None, "retest_ratio": None, "epochs": 3, "s_per_epoch": 0.5,
                                 "parameters": 1234},
                         "dvbf": {"error": "diverged"}},
               "baselines": {"fp_baseline_bps": 0.05}}
    assert table_rows(summary) == [["dkf", "0.1", "", "", "3", "0.5", "1,234"], ["dvbf", "failed", "", "", "", "", ""],
                                   ["baseline", "0.05", "", "", "", "", ""]]


def test_unknown_kind_is_one_line_and_writes_nothing(recording, tmp_path):
    result = invoke("compare", recording, "--out", tmp_path / "cmp", "--kinds", "xfads,dfk", "--max-epochs", 1)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "'dfk'" in lines[0] and "latent_sde" in lines[0] and "dkf" in lines[0]
    assert not (tmp_path / "cmp").exists()
    with pytest.raises(UsageError, match="twice"):
        parse_kinds("dkf,dkf")
    assert parse_kinds(" dvbf , xfads ") == ["dvbf", "xfads"]


def test_existing_directory_needs_overwrite(recording, tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = invoke("compare", recording, "--out", out, "--kinds", "dkf", "--max-epochs", 1, *TINY)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    result = invoke("compare", recording, "--out", out, "--kinds", "dkf", "--max-epochs", 1, *TINY, "--overwrite")
    assert result.exit_code == 0, result.output
    assert list(json.loads((out / "summary.json").read_text())["kinds"]) == ["dkf"]


def test_a_comparison_kind_fits_one_recording(recording, tmp_path):
    other = tmp_path / "other.h5"
    other.write_bytes(recording.read_bytes())
    result = invoke("compare", recording, other, "--out", tmp_path / "cmp", "--max-epochs", 1)
    assert result.exit_code == 2 and "one DATA file" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "cmp").exists()


def test_forecast_reads_a_comparison_run(compared, recording, tmp_path):
    out, _ = compared
    result = invoke("forecast", out / "dkf", recording, "--out", tmp_path / "f.h5", "--context", 8, "--horizon", 4,
                    "--samples", 5, "--no-grid", "--json")
    assert result.exit_code == 0, result.output
    assert "fp_bps" in json.loads(result.stdout)["metrics"]


def _train_losses(run_dir):
    with open(run_dir / "metrics.csv", newline="") as f:
        return [float(r["train_loss"]) for r in csv.DictReader(f)]


def test_workers_fit_as_subprocesses_like_in_turn(compared, recording, tmp_path):
    out, _ = compared
    par = tmp_path / "par"
    result = invoke("compare", recording, "--out", par, "--kinds", "dkf,xfads", "--workers", 2, "--max-epochs", 1, *TINY)
    assert result.exit_code == 0, result.output
    summary = json.loads((par / "summary.json").read_text())
    assert list(summary["kinds"]) == ["dkf", "xfads"]
    for kind in ("dkf", "xfads"):  # same config, seed and thread count: the same training
        assert _train_losses(par / kind) == _train_losses(out / kind)
        assert summary["kinds"][kind]["parameters"] == json.loads((out / "summary.json").read_text())["kinds"][kind]["parameters"]


def test_a_failed_fit_is_recorded_and_the_others_run(recording, tmp_path, monkeypatch):
    import xfads_cli.fitting as fitting
    from xfads_cli.errors import RunFailure

    real_fit = fitting.run_fit

    def failing_dkf(paths, config, out, **options):
        if config.model.kind == "dkf":
            raise RunFailure("non-finite loss 4 times; lower train.lr")
        return real_fit(paths, config, out, **options)

    monkeypatch.setattr(fitting, "run_fit", failing_dkf)
    out = tmp_path / "cmp"
    result = invoke("compare", recording, "--out", out, "--kinds", "dkf,xfads", "--max-epochs", 1, *TINY, "--json")
    assert result.exit_code == 1, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert json.loads(result.stdout) == summary
    assert summary["failed"] == {"dkf": "non-finite loss 4 times; lower train.lr"}
    assert summary["kinds"]["dkf"]["error"] and summary["kinds"]["xfads"]["epochs"] == 1
    assert "failed" in result.stderr and (out / "xfads" / "best.pt").is_file()
