"""Data-parallel `xfads fit` under torchrun (2 CPU ranks, gloo, one thread each).

The training loss's Monte Carlo draws are keyed by (seed, epoch, trial), not taken from the global
RNG, and each rank's loss is scaled so that DDP's gradient average is the gradient of the
single-process loss on the whole global batch. A 2-rank fit therefore follows the single-process
fit with the same global batch: same per-epoch losses and parameters up to float64 round-off (the
sums are split across ranks). The trial count is chosen so that the last global batch holds ONE
trial: rank 1 then gets a zero-weight padding trial (every rank must run the same number of steps).
"""

import csv
import json
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
LAUNCHER = Path(__file__).resolve().parent / "signal_launcher.py"
EPOCHS = 3
MODEL = ["--set", "model.samples=3", "--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=8",
         "--set", "model.encoder_hidden=8", "--set", "train.dtype=float64", "--seed", "5"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def torchrun(*args, signal_at: str | None = None) -> subprocess.CompletedProcess:
    """`xfads fit ARGS` on 2 ranks; signal_at 'K:SIGNAME:RANK': that rank signals itself after step K."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    program = ["-m", "xfads_cli"] if signal_at is None else [str(LAUNCHER), signal_at]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           *program, "fit", *[str(a) for a in args]]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def why(done: subprocess.CompletedProcess) -> str:
    """A failed launch's cause first (CI shows the end of the log), then the tail of its stderr."""
    causes = [line for line in done.stderr.splitlines()
              if any(key in line for key in ("error", "Error", "terminate", "Fatal", "exitcode"))]
    return "\n".join(causes[-6:]) + "\n--- stderr tail ---\n" + done.stderr[-2500:]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "ring.h5"
    result = invoke("simulate", "ring", "--out", path, "--neurons", 6, "--trials", 16, "--bins", 12, "--seed", 2)
    assert result.exit_code == 0, result.output
    n_train = load_data(path, load_config().data).subset("train").n_trials
    batch = next(b for b in range(4, n_train) if n_train % b == 1)  # last global batch: one trial
    return path, ["--set", f"train.batch_size={batch}", *MODEL]


@pytest.fixture(scope="module")
def ddp_run(recording, tmp_path_factory):
    path, opts = recording
    out = tmp_path_factory.mktemp("ddp") / "run"
    done = torchrun(path, "--out", out, "--max-epochs", EPOCHS, *opts)
    assert done.returncode == 0, why(done)
    return out, done.stderr


def rows(run) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def assert_close_runs(a, b, rel=1e-9):
    ra, rb = rows(a), rows(b)
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb):
        for key in ("train_loss", "valid_loss", "lr"):
            assert float(x[key]) == pytest.approx(float(y[key]), rel=rel, abs=1e-12), (x["epoch"], key)
    pa = torch.load(a / "last.pt", weights_only=True)["model"]
    pb = torch.load(b / "last.pt", weights_only=True)["model"]
    for key in pa:
        torch.testing.assert_close(pa[key], pb[key], rtol=1e-7, atol=1e-9)


def test_two_ranks_follow_the_single_process_fit_and_only_rank0_writes(recording, ddp_run, tmp_path):
    path, opts = recording
    out, stderr = ddp_run
    single = tmp_path / "single"
    result = invoke("fit", path, "--out", single, "--max-epochs", EPOCHS, "--quiet", *opts)
    assert result.exit_code == 0, result.output
    assert_close_runs(out, single)
    assert sorted(p.name for p in out.iterdir()) == [".xfads.lock", "best.pt", "config.yaml", "last.pt", "metrics.csv",
                                                     "summary.json"]
    assert json.loads((out / "summary.json").read_text())["world_size"] == 2
    assert stderr.count(f"epoch 0 (1/{EPOCHS})") == 1 and stderr.count(f"wrote {out}") == 1  # rank 1 is silent


def test_one_rank_signalled_stops_all_ranks_and_the_run_resumes(recording, ddp_run, tmp_path):
    """SIGTERM reaches rank 1 only: the stop flag is all-reduced, both ranks stop after the same step,
    rank 0 saves the mid-epoch state and both exit 75. The run is then finished by ONE process, which
    (same global batch, keyed draws) continues the same trajectory."""
    path, opts = recording
    out = tmp_path / "run"
    stopped = torchrun(path, "--out", out, "--max-epochs", EPOCHS, *opts, signal_at="3:SIGTERM:1")
    assert stopped.returncode != 0
    assert stopped.stderr.count("preempted:") == 1, why(stopped)
    assert f"exitcode  : {EXIT_PREEMPTED}" in stopped.stderr or "75" in stopped.stderr
    state = torch.load(out / "last.pt", weights_only=True)["train_state"]
    assert state["partial"] is not None and state["partial"]["step"] >= 1
    resumed = invoke("fit", path, "--out", out, "--max-epochs", EPOCHS, "--resume", "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert_close_runs(out, ddp_run[0])


def test_two_rank_meta_fit_runs_and_writes_once(tmp_path):
    folder = tmp_path / "sessions"
    folder.mkdir()
    for i, neurons in enumerate((5, 7)):
        result = invoke("simulate", "hopf", "--out", folder / f"hopf{i}.h5", "--neurons", neurons, "--trials", 10,
                        "--bins", 10, "--param", 0.5 * i, "--seed", i)
        assert result.exit_code == 0, result.output
    out = tmp_path / "meta"
    done = torchrun(folder / "hopf0.h5", folder / "hopf1.h5", "--out", out, "--max-epochs", 2,
                    "--set", "model.read_in_dim=4", "--set", "train.batch_size=3", *MODEL)
    assert done.returncode == 0, why(done)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "meta" and summary["world_size"] == 2 and summary["epochs"] == 2
    assert done.stderr.count(f"wrote {out}") == 1


def test_distributed_flag_without_a_launcher_is_a_usage_error(recording, tmp_path, monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    path, _ = recording
    result = invoke("fit", path, "--out", tmp_path / "r", "--distributed")
    assert result.exit_code == 2 and "torchrun" in result.output
    assert not (tmp_path / "r").exists()
