"""The CLI end to end: CliRunner for the commands, a subprocess for the console entry point."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from xfads_cli.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def run_main(*args, cwd=None):
    """The installed entry point's code path (`python -m xfads_cli`), with real stdout/stderr."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "xfads_cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env)


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for name in ("fit", "smooth", "forecast", "embed", "adapt", "inspect", "simulate", "sweep"):
        assert name in result.output


def test_help_does_not_import_torch():
    code = "import sys; from xfads_cli import cli; assert 'torch' not in sys.modules and 'pynwb' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_simulate_then_inspect_json_names_ground_truth(tmp_path):
    out = tmp_path / "x.nwb"
    result = invoke("simulate", "lorenz", "--out", out, "--neurons", 12, "--trials", 6, "--bins", 30)
    assert result.exit_code == 0, result.output
    assert out.exists()
    result = run_main("inspect", out, "--json")
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    assert isinstance(reports, list) and len(reports) == 1  # a list for one file as for several
    report = reports[0]
    text = json.dumps(report)
    for series in ("true_latents", "true_rates", "retest_counts"):
        assert series in text
    assert report["loaded"]["trials"] == 6 and report["loaded"]["neurons"] == 12
    assert report["loaded"]["bins"] == 30


def test_simulate_refuses_to_overwrite(tmp_path):
    out = tmp_path / "x.h5"
    assert invoke("simulate", "vdp", "--out", out, "--neurons", 5, "--trials", 4, "--bins", 10).exit_code == 0
    before = out.read_bytes()
    result = invoke("simulate", "vdp", "--out", out, "--neurons", 5, "--trials", 4, "--bins", 10, "--seed", 9)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert out.read_bytes() == before
    again = invoke("simulate", "vdp", "--out", out, "--neurons", 5, "--trials", 4, "--bins", 10, "--seed", 9, "--overwrite")
    assert again.exit_code == 0 and out.read_bytes() != before


def test_inspect_the_bundled_real_fixture(fixtures_dir):
    result = run_main("inspect", fixtures_dir / "mc_maze_2trials.nwb", "--set", "data.behavior=hand_vel")
    assert result.returncode == 0, result.stderr
    assert "hand_vel" in result.stdout and "182" in result.stdout


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["inspect", "missing.nwb"], "no such file"),
        (["inspect", "notes.txt"], "not an HDF5 file"),
        (["inspect", "empty.h5"], "neither 'spikes'"),
        (["inspect", "plain.h5", "--set", "data.bin_ms=0"], "bin_ms must be > 0"),
        (["inspect", "plain.h5", "--set", "data.bin_mz=5"], "did you mean 'bin_ms'"),
        (["simulate", "lorenzz", "--out", "y.nwb"], "did you mean 'lorenz'"),
        (["simulate", "lorenz", "--out", "y.txt"], ".nwb"),
        (["inspect", "--no-such-flag"], "No such option"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(tmp_path, args, fragment):
    import h5py
    import numpy as np

    (tmp_path / "notes.txt").write_text("not a recording")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["other"] = np.zeros(2)
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["spikes"] = np.ones((3, 4, 2))
        f.attrs["bin_ms"] = 10.0
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_main(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_inspect_every_real_nwb_file(real_dir):
    files = sorted(real_dir.glob("*.nwb"))
    assert files
    result = run_main("inspect", *files, "--json")
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    assert isinstance(reports, list) and len(reports) == len(files)
    for report in reports:
        assert report["units"]["count"] > 0
        assert "intervals" in report and "behavior" in report
    by_name = {r["path"].split("/")[-1]: r for r in reports}
    assert "recognition_table" in by_name["human_mtl_sub-4_ses-4.nwb"]["intervals"]
    mtl_hints = " ".join(by_name["human_mtl_sub-4_ses-4.nwb"]["hints"])
    assert "--set data.intervals=" in mtl_hints and "--set data.bin_ms=100" in mtl_hints
    assert any(b["name"] == "hand_vel" for b in by_name["mc_maze_2trials.nwb"]["behavior"])
    assert any(b["name"] == "led1" for b in by_name["rat_hc_linear_track.nwb"]["behavior"])


def test_warnings_print_as_one_line():
    from xfads_cli.cli import _one_line_warning

    text = _one_line_warning(UserWarning("window past the end:\n  3 trials dropped"), UserWarning, "x.py", 1)
    assert text == "warning: window past the end: 3 trials dropped\n"


@pytest.mark.parametrize("likelihood, values, fragment", [
    ("poisson", [0.0, 1.5, 2.0], "non-integer counts (e.g. 1.5) but model.likelihood is poisson"),
    ("bernoulli", [0, 2, 1], "values other than 0 and 1 (e.g. 2) but model.likelihood is bernoulli"),
])
def test_counts_outside_the_likelihood_are_refused(tmp_path, likelihood, values, fragment):
    """Non-integer counts used to fit silently under the Poisson likelihood (issue 13 item 6)."""
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    counts = rng.poisson(1.0, (12, 8, 4)).astype(np.float32 if likelihood == "poisson" else np.int64)
    if likelihood == "bernoulli":
        counts = np.minimum(counts, 1)
    counts[3, 2, :3] = values
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f["spikes"] = counts
        f.attrs["bin_ms"] = 20.0
    out = tmp_path / "run"
    result = invoke("fit", path, "--out", out, "--max-epochs", "1", "--set", f"model.likelihood={likelihood}")
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output
    assert not out.exists()
    counts[3, 2, :3] = 0  # the same file with valid values fits
    with h5py.File(path, "w") as f:
        f["spikes"] = counts
        f.attrs["bin_ms"] = 20.0
    ok = invoke("fit", path, "--out", out, "--max-epochs", "1", "--quiet", "--set", f"model.likelihood={likelihood}",
                "--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=8", "--set", "model.encoder_hidden=8")
    assert ok.exit_code == 0, ok.output


def test_smooth_without_an_honest_score_says_why(tmp_path):
    """No held-out neurons and no ground truth: a note with the fix instead of an empty metrics table."""
    import h5py
    import numpy as np

    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["spikes"] = np.random.default_rng(1).poisson(1.0, (12, 8, 4)).astype(np.int64)
        f.attrs["bin_ms"] = 20.0
    small = ["--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=8", "--set", "model.encoder_hidden=8"]
    assert invoke("fit", path, "--out", tmp_path / "run", "--max-epochs", "1", "--quiet", *small).exit_code == 0
    result = invoke("smooth", tmp_path / "run", path, "--out", tmp_path / "s.h5")
    assert result.exit_code == 0, result.output
    assert "note: no quality number for smoothing here" in result.output
    assert "data.heldout_fraction=0.2" in result.output and "metric" not in result.output


def test_inspect_hints_name_the_options_to_paste():
    from xfads_cli.config import DataConfig
    from xfads_cli.commands.inspect import hints

    report = {"intervals": {"recognition_table": {}, "encoding_table": {}}, "defaults": {"trials_from": "chopped"},
              "suggested_bin_ms": 100, "loaded": {"bin_ms": 20.0}}
    got = hints(report, DataConfig())
    assert len(got) == 2
    assert "cut into 1000 ms windows" in got[0] and "--set data.intervals=recognition_table" in got[0]
    assert "--set data.bin_ms=100" in got[1]
    # options already chosen, or a trials table: nothing to suggest
    assert hints(report | {"loaded": {"bin_ms": 100.0}}, DataConfig(intervals="recognition_table", bin_ms=100.0)) == []
    assert hints({"intervals": {"x": {}}, "defaults": {"trials_from": "trials"}, "loaded": {}}, DataConfig()) == []
