"""The typed checkpoint (runs/checkpoint.py): the on-disk layout every command writes, safe loading, and
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
from xfads_cli.runs.checkpoint import FORMAT, Checkpoint, migrate

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


def test_old_state_dicts_load_in_the_per_session_layout():
    """Before the one model class, a single-session checkpoint's readout, held-in mask and forecast cap
    were top-level keys, and meta sessions had no cap: both load (the meta one uncapped), idempotently."""
    from xfads_cli.model.spec import build_model

    for name in ("single", "meta"):
        raw = torch.load(REGRESSION / f"{name}_best.pt", weights_only=True)
        once = migrate(raw)
        assert migrate(once)["model"].keys() == once["model"].keys()
        model = build_model(load_config(base=once["config"]), once["spec"])
        model.load_state_dict(once["model"])  # strict: every key matched
        if name == "single":
            assert "readout.weight" in raw["model"] and "readout.weight" not in once["model"]
            assert torch.equal(model.sessions[0].readout.weight, raw["model"]["readout.weight"])
            assert torch.equal(model.sessions[0].rate_ceiling, raw["model"]["rate_ceiling"])
        else:
            assert all(torch.isinf(s.rate_ceiling).all() for s in model.sessions)
    last = torch.load(REGRESSION / "single_run" / "last.pt", weights_only=True)
    moved = migrate(last)
    assert moved["train_state"]["optimizer"] is last["train_state"]["optimizer"]  # the usual order: untouched
    assert "sessions.0.readout.weight" in moved["best_model"]


def test_old_optimizer_moments_follow_their_parameters():
    """A single-session model with a Gaussian likelihood and task inputs orders its parameters
    differently now (session 0's right after the dynamics): last.pt's Adam moments, saved by position
    in the old order, are moved with them, so a resumed run continues with each parameter's own."""
    from xfads_cli.config import ModelConfig
    from xfads_cli.model.task_inputs import InputSpec
    from xfads_cli.model.xfads import XFADS

    model = XFADS.one_session(ModelConfig(latent_dim=2, dynamics_hidden=4, encoder_hidden=4, likelihood="gaussian"),
                              3, torch.ones(3, dtype=torch.bool), 0.02, InputSpec(clock_bins=10, n_clock=2))
    new_names = [k for k, _ in model.named_parameters()]
    shared = lambda prefix: [k for k in new_names if k.startswith(prefix)]  # noqa: E731
    old_names = ["m0", "raw_q0", "raw_q", *shared("dynamics."), "likelihood.raw_R", "readout.weight", "readout.bias",
                 *shared("local."), "input_readout.weight", "input_drive.weight", *shared("backward.")]
    params = dict(model.named_parameters())
    old = {k.removeprefix("sessions.0."): v.detach() for k, v in model.state_dict().items()}
    old_model = {"heldin": old["heldin"], **{k: old[k] for k in old_names}}  # the old state_dict's order
    as_new = lambda k: k if k in params else f"sessions.0.{k}"  # noqa: E731
    moments = {i: {"step": torch.tensor(3.0), "exp_avg": torch.full_like(params[as_new(k)], float(i)),
                   "exp_avg_sq": torch.ones_like(params[as_new(k)])} for i, k in enumerate(old_names)}
    groups = torch.optim.Adam([params[as_new(k)] for k in old_names], lr=0.01).state_dict()["param_groups"]
    optimizer = {"state": moments, "param_groups": groups}
    raw = {"format": FORMAT, "config": {}, "spec": {}, "model": old_model, "train_state": {"optimizer": optimizer}}
    moved = migrate(raw)["train_state"]["optimizer"]
    assert new_names != [as_new(k) for k in old_names]  # the orders do differ
    for j, name in enumerate(new_names):
        first = moved["state"][j]["exp_avg"].flatten()[0]
        assert first == old_names.index(name.removeprefix("sessions.0.")), name
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    opt.load_state_dict(moved)
    sum(p.sum() for p in model.parameters()).backward()
    opt.step()  # every moment has its parameter's shape
