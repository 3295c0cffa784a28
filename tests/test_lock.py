"""One writer per run directory (train/lock.py): a second fit on the same --out is refused, a lock
left by a killed fit is taken over with a warning, and the lock is released however fit ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
from typer.testing import CliRunner

from xfads_cli.cli import app
from xfads_cli.train.lock import LOCK_NAME, RunLock

SMALL = ["--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=8", "--set", "model.encoder_hidden=8",
         "--set", "model.samples=2", "--set", "train.samples=2", "--quiet"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def data(fixtures_dir):
    return fixtures_dir / "vdp_small.h5"


def test_held_lock_refuses_a_second_writer(data, tmp_path):
    out = tmp_path / "run"
    holder = RunLock(out)
    holder.acquire()
    try:
        result = invoke("fit", data, "--out", out, "--max-epochs", 1, *SMALL)
        assert result.exit_code == 2, result.output
        assert f"being written by another xfads process (pid {os.getpid()}" in result.output
        assert "choose another --out" in result.output
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        holder.release()
    ok = invoke("fit", data, "--out", out, "--max-epochs", 1, *SMALL)
    assert ok.exit_code == 0, ok.output
    assert (out / LOCK_NAME).read_text() == ""  # released cleanly
    # and a failing fit releases it too: the next command gets the lock
    bad = invoke("fit", data, "--out", out, "--max-epochs", 1, "--resume", *SMALL, "--set", "train.lr=-1")
    assert bad.exit_code == 2
    assert invoke("fit", data, "--out", out, "--max-epochs", 2, "--resume", *SMALL).exit_code == 0


def test_lock_of_a_killed_fit_is_taken_over_with_a_warning(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 4242, "host": "node7", "started": "2026-01-01 00:00:00"}))
    # the CLI prints warnings as one line on stderr; inside pytest they may be recorded instead
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("fit", data, "--out", out, "--max-epochs", 1, *SMALL)
    assert result.exit_code == 0, result.output
    said = result.output + " ".join(str(w.message) for w in caught)
    assert "taking over from a run that ended without releasing its lock (pid 4242 on node7" in said


def test_two_concurrent_fits_on_one_out(data, tmp_path):
    """The real case: two processes, same --out; the second is refused while the first trains."""
    out = tmp_path / "run"
    env = {**os.environ, "XFADS_THREADS": "1"}
    cmd = [sys.executable, "-m", "xfads_cli", "fit", str(data), "--out", str(out), "--max-epochs", "100000", *SMALL]
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "config.yaml").exists():  # written under the lock
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second = subprocess.run(cmd[:-len(SMALL)] + ["--resume-auto", *SMALL], env=env, capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert first.poll() is None  # the first fit is still training, undisturbed
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 75, err  # preempted cleanly: its last.pt is whole
    assert invoke("fit", data, "--out", out, "--max-epochs", 1, "--resume", *SMALL).exit_code == 0
