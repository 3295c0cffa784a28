"""The command pipeline (runs/pipeline.py): a forecast or smooth parses the run's config once and opens
its recording once, whatever it reads from it (trials, longer windows for a long horizon, a meta
session's training trials), and hashes it once."""

from __future__ import annotations

from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from xfads_cli.cli import app
from xfads_cli.config import Config
from xfads_cli.data import provenance

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "data_fixtures"
CHECKPOINTS = Path(__file__).resolve().parent / "fixtures" / "regression"


@pytest.fixture
def counted(monkeypatch):
    """Counts of Config parses, and of h5py opens and sha256 reads per file name."""
    counts = {"parses": 0, "opens": {}, "hashes": {}}
    from_dict, h5_init, sha = Config.from_dict.__func__, h5py.File.__init__, provenance.file_sha256

    def parse(cls, raw):
        counts["parses"] += 1
        return from_dict(cls, raw)

    def h5_open(self, name, *args, **kwargs):
        key = Path(str(name)).name if isinstance(name, (str, Path)) else "<file object>"
        counts["opens"][key] = counts["opens"].get(key, 0) + 1
        return h5_init(self, name, *args, **kwargs)

    def hashed(path):
        counts["hashes"][Path(path).name] = counts["hashes"].get(Path(path).name, 0) + 1
        return sha(path)

    monkeypatch.setattr(Config, "from_dict", classmethod(parse))
    monkeypatch.setattr(h5py.File, "__init__", h5_open)
    monkeypatch.setattr(provenance, "file_sha256", hashed)
    return counts


def invoke(*args) -> None:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("case, recording, extra", [
    ("single", "vdp_small.h5", ["--context", 40, "--horizon", 20]),
    # a meta run: the session's embedding pooled over its training trials, read from the same open file;
    # 40 + 20 bins run past the 50-bin windows asked for: the longer windows are read from it too
    ("meta", "duffing_small.nwb", ["--context", 40, "--horizon", 20, "--set", "data.window_ms=[0,1000]"]),
])
def test_a_forecast_parses_its_config_once_and_opens_its_recording_once(counted, tmp_path, case, recording, extra):
    out = tmp_path / "forecast.h5"
    invoke("forecast", CHECKPOINTS / f"{case}_best.pt", FIXTURES / recording, "--out", out, "--quiet",
           "--threads", "1", "--samples", 4, "--no-grid", *extra)
    assert counted["parses"] == 1
    assert counted["opens"].get(recording) == 1, counted["opens"]
    assert counted["hashes"].get(recording) == 1, counted["hashes"]
    with h5py.File(out, "r") as f:  # (counted too, after the command)
        assert f["rates_mean"].shape[1] == extra[3]


def test_a_smooth_opens_its_recording_once(counted, tmp_path):
    invoke("smooth", CHECKPOINTS / "meta_best.pt", FIXTURES / "duffing_small.nwb", "--out", tmp_path / "s.h5",
           "--quiet", "--threads", "1", "--split", "test")
    assert counted["parses"] == 1
    assert counted["opens"].get("duffing_small.nwb") == 1, counted["opens"]
    assert counted["hashes"].get("duffing_small.nwb") == 1


def test_reading_commands_reject_overrides_of_the_trained_model(tmp_path):
    result = CliRunner().invoke(app, ["forecast", str(CHECKPOINTS / "single_best.pt"), str(FIXTURES / "vdp_small.h5"),
                                      "--out", str(tmp_path / "f.h5"), "--context", "40", "--horizon", "20",
                                      "--set", "model.latent_dim=7"])
    assert result.exit_code == 2
    assert "--set model.latent_dim" in result.output and "data.*" in result.output
    assert not (tmp_path / "f.h5").exists()
