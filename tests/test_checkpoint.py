"""The typed checkpoint (train/checkpoint.py): the on-disk layout every command writes, safe loading, and
the migrations that keep checkpoints written by older versions loadable."""

import copy
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from xfads_cli.cli import app
from xfads_cli.config import load_config
from xfads_cli.errors import UsageError
from xfads_cli.train.checkpoint import FORMAT, Checkpoint, migrate

runner = CliRunner()
REGRESSION = Path(__file__).resolve().parent / "fixtures" / "regression"
FAST = ["--set", "model.samples=3", "--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=8",
        "--set", "model.encoder_hidden=8", "--set", "train.batch_size=4", "--seed", "1", "--quiet"]
BASE_KEYS = {"format", "config", "spec", "data", "versions", "model", "epoch", "best"}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    data = folder / "ring.h5"
    assert invoke("simulate", "ring", "--out", data, "--neurons", 5, "--trials", 12, "--bins", 10).exit_code == 0
    out = folder / "run"
    result = invoke("fit", data, "--out", out, "--max-epochs", 1, *FAST)
    assert result.exit_code == 0, result.output
    return out, data


def test_the_on_disk_layout_is_a_plain_dict_with_the_same_keys(run_dir):
    out, _ = run_dir
    best = torch.load(out / "best.pt", weights_only=True)
    last = torch.load(out / "last.pt", weights_only=True)
    assert set(best) == BASE_KEYS and best["format"] == FORMAT
    assert set(last) == BASE_KEYS | {"train_state", "best_model"}
    assert "device" not in last["config"]["train"]
    assert {"optimizer", "partial", "history", "best", "rng"} <= set(last["train_state"])
    assert best["best"] == last["best"] == {"epoch": 0, "score": best["best"]["score"], "key": best["best"]["key"]}
    ckpt = Checkpoint.load(out / "last.pt")
    assert ckpt.epoch == 0 and ckpt.train_state is not None and ckpt.adapted_from is None
    assert set(ckpt.to_dict()) == set(last)


def test_save_then_load_gives_the_same_checkpoint(run_dir, tmp_path):
    out, _ = run_dir
    ckpt = Checkpoint.load(out / "last.pt")
    path = tmp_path / "copy.pt"
    ckpt.save(path)
    again = Checkpoint.load(path)
    assert again.config == ckpt.config and again.spec == ckpt.spec and again.data == ckpt.data
    assert again.epoch == ckpt.epoch and again.best == ckpt.best
    assert all(torch.equal(again.model[k], v) for k, v in ckpt.model.items())
    assert [p.name for p in tmp_path.iterdir()] == ["copy.pt"]  # written through a temporary file + rename


def test_unreadable_or_foreign_files_are_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(UsageError, match="is not a readable xfads checkpoint") as err:
        Checkpoint.load(garbage)
    assert "\n" not in str(err.value)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else", "model": {}}, other)
    with pytest.raises(UsageError, match="is not an xfads checkpoint"):
        Checkpoint.load(other)
    incomplete = tmp_path / "incomplete.pt"
    torch.save({"format": FORMAT, "model": {}}, incomplete)
    with pytest.raises(UsageError, match="no config or spec"):
        Checkpoint.load(incomplete)


def test_checkpoints_written_before_the_typed_checkpoint_load():
    """tests/fixtures/regression/*.pt were written with train.device in their config."""
    for name in ("single", "meta"):
        raw = torch.load(REGRESSION / f"{name}_best.pt", weights_only=True)
        assert raw["config"]["train"]["device"] == "auto"
        ckpt = Checkpoint.load(REGRESSION / f"{name}_best.pt")
        assert "device" not in ckpt.config["train"]
        assert load_config(base=ckpt.config).train.dtype == "float64"


def test_migrations_are_idempotent_and_bring_old_meta_configs_up_to_date():
    raw = torch.load(REGRESSION / "meta_best.pt", weights_only=True)
    del raw["config"]["model"]["hyper_hidden"]  # meta runs from before model.hyper_hidden
    before = copy.deepcopy(raw["config"])
    once = migrate(raw)
    assert raw["config"] == before  # the input is not modified
    assert once["config"]["model"]["hyper_hidden"] == once["config"]["model"]["encoder_hidden"]
    assert "device" not in once["config"]["train"]
    assert migrate(once)["config"] == once["config"]


def test_a_run_whose_last_pt_holds_train_device_resumes(run_dir, tmp_path):
    out, data = run_dir
    old = tmp_path / "old"
    shutil.copytree(out, old)
    raw = torch.load(old / "last.pt", weights_only=True)
    raw["config"]["train"]["device"] = "auto"  # as written before train.device was removed
    torch.save(raw, old / "last.pt")
    result = invoke("fit", data, "--out", old, "--max-epochs", 2, "--resume", *FAST)
    assert result.exit_code == 0, result.output
    resumed = torch.load(old / "last.pt", weights_only=True)
    assert resumed["epoch"] == 1 and "device" not in resumed["config"]["train"]


def test_resume_from_a_last_pt_without_training_state_is_a_clear_error(run_dir, tmp_path):
    out, data = run_dir
    copy_ = tmp_path / "copy"
    shutil.copytree(out, copy_)
    shutil.copyfile(copy_ / "best.pt", copy_ / "last.pt")
    result = invoke("fit", data, "--out", copy_, "--max-epochs", 2, "--resume", *FAST)
    assert result.exit_code == 2 and "holds no training state" in result.output
