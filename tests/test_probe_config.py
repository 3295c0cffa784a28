"""Issue 24 (hostile probes): YAML alias bombs and deep nesting in configs, --set values and sweep spaces;
bounded error messages; what `inspect` says about its config, the bin size it suggests and missing bins;
a run applied to another recording; a damaged checkpoint's message."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from xfads_cli.cli import app
from xfads_cli.config import Config, DataConfig, load_config
from xfads_cli.errors import UsageError

runner = CliRunner()
FIXTURES = Path(__file__).resolve().parents[1] / "data_fixtures"
RECORDING = FIXTURES / "lorenz_small.nwb"
MEMORY = 1 << 30  # the acceptance: under 1 GB


def alias_bomb(levels: int = 9) -> str:
    """A flow list of `levels` nested levels, 9 aliases each: 9**9 (~387 million) strings in ~370 bytes."""
    value = '&a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'
    names = "abcdefghijklmnop"
    for previous, name in zip(names, names[1 : levels]):
        value = f"&{name} [{value}" + f", *{previous}" * 8 + "]"
    return value


def limited_xfads(*args) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m xfads_cli ARGS` under a 1 GB address-space limit (a bomb that expands fails with
    MemoryError, exit code 1, instead of taking the machine's memory); also its duration in seconds."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    env = {**os.environ, "OMP_NUM_THREADS": "1", "XFADS_THREADS": "1"}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "xfads_cli", *map(str, args)], capture_output=True, text=True,
                            timeout=120, preexec_fn=limit, env=env)
    return result, time.monotonic() - start


@pytest.mark.parametrize("command", ["fit", "sweep", "inspect", "sessions"])
def test_an_alias_bomb_is_a_quick_one_line_error(tmp_path, command):
    bomb = tmp_path / "bomb.yaml"
    out = tmp_path / "out"
    if command == "fit":  # the probe: data.units a billion laughs
        bomb.write_text(f"data:\n  units: {alias_bomb()}\n")
        args = ["fit", RECORDING, "--config", bomb, "--out", out]
    elif command == "sweep":
        pytest.importorskip("optuna")
        bomb.write_text(f"train.lr: {{uniform: [{alias_bomb()}, 0.1]}}\n")
        args = ["sweep", RECORDING, "--space", bomb, "--out", out, "--trials", 1]
    elif command == "sessions":  # a sessions.yaml manifest of the meta model: a session's name
        bomb.write_text(f"sessions:\n  - path: {RECORDING}\n    name: {alias_bomb()}\n")
        args = ["fit", bomb, "--out", out, "--set", "model.kind=meta"]
    else:
        args = ["inspect", RECORDING, "--set", f"data.units={alias_bomb()}"]
    result, seconds = limited_xfads(*args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and "aliases" in result.stderr
    assert seconds < 30 and not out.exists()


def test_aliases_that_repeat_a_few_values_still_work(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  behavior: &names [hand_vel, hand_pos]\n  heldout_units: [a, b]\n"
                    "train:\n  lr: &lr 0.003\n  lr_final: *lr\n")
    cfg = load_config(path, ["data.heldout_units=[&u x, *u]"])
    assert cfg.data.behavior == ("hand_vel", "hand_pos") and cfg.train.lr_final == 0.003
    assert cfg.data.heldout_units == ("x", "x")


def test_deeply_nested_yaml_is_a_one_line_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("data:\n  units: " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(UsageError, match="nested too deeply"):
        load_config(path)
    with pytest.raises(UsageError, match="nested too deeply"):
        load_config(None, ["data.units=" + "[" * 2000 + "]" * 2000])


@pytest.mark.parametrize("section, key", [("data", "units"), ("model", "dynamics"), ("train", "lr")])
def test_error_messages_never_spell_out_a_huge_value(section, key):
    huge = [[f"unit{i}" for i in range(1000)]] * 1000  # a million strings, a few MB as text
    with pytest.raises(UsageError) as err:
        Config.from_dict({section: {key: huge}})
    assert len(str(err.value)) < 400 and f"{section}.{key}" in str(err.value)


def test_a_truncated_checkpoint_s_message_ends_on_a_whole_sentence(tmp_path):
    from xfads_cli.runs.checkpoint import Checkpoint

    whole, cut = tmp_path / "whole.pt", tmp_path / "cut.pt"
    torch.save({"format": "xfads-checkpoint/1", "model": {"w": torch.zeros(1000)}}, whole)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(RuntimeError) as raw:
        torch.load(cut, weights_only=True)
    with pytest.raises(UsageError) as err:
        Checkpoint.load(cut)
    message = str(err.value)
    reason = message.partition("(")[2].rpartition(")")[0]
    torch_text = " ".join(str(raw.value).split())
    assert reason and torch_text.startswith(reason) and torch_text[len(reason)] in ". "  # whole words, whole sentence
    assert "\n" not in message and "copy it again" in message


def write_counts(path: Path, seed: int, nan_at=(), lengths=None) -> Path:
    counts = np.random.default_rng(seed).poisson(1.0, (6, 20, 4)).astype(np.float32)
    for index in nan_at:
        counts[index] = np.nan
    with h5py.File(path, "w") as f:
        f["spikes"] = counts
        f.attrs["bin_ms"] = 20.0
        if lengths is not None:
            f["trial_lengths"] = np.asarray(lengths)
    return path


def test_a_run_applied_to_another_recording_names_both_files(tmp_path):
    from xfads_cli.data.load import load_data
    from xfads_cli.runs.rundir import data_provenance
    from xfads_cli.runs import Run, load_data_for_run, model_spec
    from xfads_cli.runs.checkpoint import Checkpoint

    trained_on, other = write_counts(tmp_path / "day1.h5", 0), write_counts(tmp_path / "day2.h5", 1)
    data = load_data(trained_on, DataConfig())
    checkpoint = Checkpoint(config={}, spec=model_spec(data), data=data_provenance(data))
    run = Run(model=None, config=Config(), checkpoint=checkpoint, path=tmp_path / "best.pt", sha256="")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same file: no note
        load_data_for_run(trained_on, run)
    with pytest.warns(UserWarning) as caught:
        load_data_for_run(other, run)  # same neurons and bins: applied, with a note
    (note,) = [str(w.message) for w in caught]
    assert "day2.h5" in note and "day1.h5" in note and "sha256" in note and "\n" not in note


def test_inspect_says_which_config_its_numbers_come_from(tmp_path):
    from xfads_cli.commands.inspect import inspect_files

    result = runner.invoke(app, ["inspect", str(RECORDING), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["config"] == "defaults"
    text = runner.invoke(app, ["inspect", str(RECORDING)], terminal_width=200).stdout
    assert "loaded with the default data options" in text and "--config" in text
    config = tmp_path / "lorenz.yaml"
    config.write_text("data:\n  split: [0.7, 0.1, 0.2]\n")
    given = json.loads(runner.invoke(app, ["inspect", str(RECORDING), "--config", str(config), "--json"]).stdout)[0]
    assert given["config"] != "defaults" and given["loaded"]["split"]["test"] == 12
    report = inspect_files([RECORDING], load_config(config).data, config_path=config)[0]
    assert report["config"] == f"--config {config}"


def test_the_bin_size_hint_spells_out_the_fit_command():
    from xfads_cli.commands.inspect import hints

    report = {"path": "rec.nwb", "suggested_bin_ms": 100, "loaded": {"bin_ms": 20.0}, "config": "defaults"}
    (hint,) = hints(report, DataConfig())
    assert "xfads fit rec.nwb --set data.bin_ms=100" in hint
    (hint,) = hints(report | {"config": "--config lab.yaml"}, DataConfig())
    assert "xfads fit rec.nwb --config lab.yaml --set data.bin_ms=100" in hint


def test_inspect_reports_missing_bins_but_not_padding(tmp_path):
    # 6 NaN counts inside the trials; trial 5 is 15 bins long, its last 5 bins padding
    path = write_counts(tmp_path / "gaps.h5", 0, nan_at=[(0, slice(3, 5), 1), (2, 7, slice(None))],
                        lengths=[20, 20, 20, 20, 20, 15])
    result = runner.invoke(app, ["inspect", str(path), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["loaded"]["missing"] == {"counts": 6, "fraction": 6 / (4 * (5 * 20 + 15))}
    text = runner.invoke(app, ["inspect", str(path)], terminal_width=200).stdout
    assert "6 counts (1.30% of the trials' bins x neurons) are NaN" in text
    complete = write_counts(tmp_path / "complete.h5", 0, lengths=[20, 20, 20, 20, 20, 15])
    assert "missing" not in json.loads(runner.invoke(app, ["inspect", str(complete), "--json"]).stdout)[0]["loaded"]
