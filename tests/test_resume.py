"""Preemption and exact resume of `xfads fit`.

A reference fit runs to completion in a subprocess; the same fit is then killed mid-epoch (SIGKILL:
last.pt is the last completed epoch's, the lost epoch is redone) or asked to stop (SIGTERM: exit code
75, last.pt holds the exact mid-epoch state), resumed, and must end with bit-identical parameters and
losses. The kill is made deterministic by tests/signal_launcher.py ("K:SIGNAME": the process signals
itself after its K-th optimisation step), not by timing. All fits run as subprocesses with one
torch thread so that the reference and the resumed run do the same arithmetic.
"""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from xfads_cli.cli import app
from xfads_cli.config import load_config
from xfads_cli.data.load import load_data
from xfads_cli.train.signals import EXIT_PREEMPTED

runner = CliRunner()
BATCH = 4
EPOCHS = 6
FAST = ["--set", "model.samples=3", "--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=8",
        "--set", "model.encoder_hidden=8", "--set", f"train.batch_size={BATCH}", "--set", "train.patience=100",
        "--seed", "3"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def fit_subprocess(recording, out, *extra, signal_at: str | None = None) -> subprocess.CompletedProcess:
    """`xfads fit` in a subprocess; signal_at 'K:SIGNAME': it signals itself after step K (tests/signal_launcher.py)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    program = ["-m", "xfads_cli"] if signal_at is None else [str(Path(__file__).resolve().parent / "signal_launcher.py"),
                                                             signal_at]
    cmd = [sys.executable, *program, "fit", str(recording), "--out", str(out), "--max-epochs", str(EPOCHS),
           "--quiet", *FAST, *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ring.h5"
    result = invoke("simulate", "ring", "--out", path, "--neurons", 6, "--trials", 16, "--bins", 12, "--seed", 2)
    assert result.exit_code == 0, result.output
    return path


@pytest.fixture(scope="module")
def steps_per_epoch(recording):
    n_train = load_data(recording, load_config().data).subset("train").n_trials
    steps = -(-n_train // BATCH)
    assert steps >= 3, "the test needs several steps per epoch"
    return steps


@pytest.fixture(scope="module")
def reference(recording, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    done = fit_subprocess(recording, out)
    assert done.returncode == 0, done.stderr
    return out


def losses(run) -> list[tuple]:
    with open(run / "metrics.csv") as f:
        return [(r["epoch"], r["train_loss"], r["valid_loss"], r["lr"]) for r in csv.DictReader(f)]


def assert_same_run(run, reference):
    assert losses(run) == losses(reference)
    for name in ("last.pt", "best.pt"):
        a = torch.load(run / name, weights_only=True)["model"]
        b = torch.load(reference / name, weights_only=True)["model"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)


def test_sigkill_mid_epoch_then_resume_is_exact(recording, reference, steps_per_epoch, tmp_path):
    out = tmp_path / "run"
    killed = fit_subprocess(recording, out, signal_at=f"{2 * steps_per_epoch + 2}:SIGKILL")
    assert killed.returncode == -9
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["train_state"]["partial"] is None  # epochs 0 and 1 completed
    resumed = fit_subprocess(recording, out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, reference)


def test_sigterm_saves_mid_epoch_state_exits_75_and_resumes_exactly(recording, reference, steps_per_epoch, tmp_path):
    out = tmp_path / "run"
    stopped = fit_subprocess(recording, out, signal_at=f"{3 * steps_per_epoch + 1}:SIGTERM")
    assert stopped.returncode == EXIT_PREEMPTED, stopped.stderr
    assert "preempted" in stopped.stderr and "Traceback" not in stopped.stderr
    ckpt = torch.load(out / "last.pt", weights_only=True)  # tensors and plain data only
    assert ckpt["epoch"] == 2
    assert ckpt["train_state"]["partial"]["epoch"] == 3 and ckpt["train_state"]["partial"]["step"] == 1
    assert not (out / "summary.json").exists()
    resumed = fit_subprocess(recording, out, "--resume-auto")  # requeue-style
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(out, reference)


def test_resume_auto_starts_fresh_without_last_pt_and_resumes_with_it(recording, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("seed: 0\n")  # what a run killed in its first epoch leaves
    first = invoke("fit", recording, "--out", out, "--max-epochs", 1, "--resume-auto", "--quiet", *FAST)
    assert first.exit_code == 0, first.output
    again = invoke("fit", recording, "--out", out, "--max-epochs", 2, "--resume-auto", "--quiet", *FAST)
    assert again.exit_code == 0, again.output
    assert [row[0] for row in losses(out)] == ["0", "1"]
    both = invoke("fit", recording, "--out", out, "--resume", "--resume-auto")
    assert both.exit_code == 2 and "exclusive" in both.output


def test_resume_auto_refuses_foreign_files(recording, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = invoke("fit", recording, "--out", out, "--resume-auto", "--quiet", *FAST)
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert (out / "notes.txt").read_text() == "mine"


def test_resume_on_other_data_is_a_clear_error(recording, tmp_path):
    """(was torch's 'size mismatch for local.net.0.weight ...' with exit 1)"""
    out = tmp_path / "run"
    assert invoke("fit", recording, "--out", out, "--max-epochs", 1, "--quiet", *FAST).exit_code == 0
    before = (out / "last.pt").read_bytes()
    other = tmp_path / "other.h5"
    assert invoke("simulate", "ring", "--out", other, "--neurons", 8, "--trials", 16, "--bins", 12).exit_code == 0
    for flag in ("--resume", "--resume-auto"):
        result = invoke("fit", other, "--out", out, "--max-epochs", 2, flag, "--quiet")
        assert result.exit_code == 2, result.output
        assert "gives 8 neurons but the run" in result.output and "trained on 6" in result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert (out / "last.pt").read_bytes() == before


def test_bad_input_creates_nothing(tmp_path):
    out = tmp_path / "deep" / "run"
    result = invoke("fit", tmp_path / "missing.nwb", "--out", out, "--quiet")
    assert result.exit_code == 2
    assert not (tmp_path / "deep").exists()


def test_deterministic_runs_repeat_exactly(recording, tmp_path):
    runs = []
    for name in ("a", "b"):
        result = invoke("fit", recording, "--out", tmp_path / name, "--max-epochs", 2, "--deterministic", "--quiet",
                        *FAST)
        assert result.exit_code == 0, result.output
        runs.append(losses(tmp_path / name))
    assert runs[0] == runs[1]
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the run


def test_preemption_handlers_set_a_flag_and_are_restored():
    import signal

    from xfads_cli.train.signals import catch_preemption

    before = signal.getsignal(signal.SIGUSR1)
    with catch_preemption() as stop:
        assert not stop()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop() and stop.signal == "SIGUSR1"
    assert signal.getsignal(signal.SIGUSR1) is before
