"""Issue 24, items 2-4: an unwritable output location is refused before the work; a server that dies
mid-read is a transient failure (exit 1), never a wrong URL or a segmentation fault; temporary files
of killed writers are removed by the next run that writes the same output."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import warnings

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import FIXTURES
from range_server import RangeServer
from xfads_cli.atomic import atomic_path, partial_glob
from xfads_cli.cli import app
from xfads_cli.errors import UsageError
from xfads_cli.outputs.h5 import write_h5
from xfads_cli.runs.rundir import prepare_out

runner = CliRunner()
TINY = ["--set", "model.latent_dim=2", "--set", "model.dynamics_hidden=8", "--set", "model.encoder_hidden=8",
        "--threads", "1"]
HOST = socket.gethostname()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def cli(*args, code: str = "pass", env=None):
    """`python -m xfads_cli ARGS` with real stderr (and a segfault as a negative return code);
    `code` runs first (e.g. to patch a module)."""
    main = f"{code}; from xfads_cli.cli import main; main()"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, "-c", main, *map(str, args)], capture_output=True, text=True, env=env)


def one_error_line(output: str, *fragments) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in output, output
    assert all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


def dead_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


# --------------------------------------------------------------------------------------------------
# 2. An unwritable output location fails before the work, as one line (exit 2)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    data = folder / "plain.h5"
    with h5py.File(data, "w") as f:
        f["spikes"] = np.random.default_rng(1).poisson(1.0, (12, 8, 4)).astype(np.int64)
        f.attrs["bin_ms"] = 20.0
    result = invoke("fit", data, "--out", folder / "run", "--max-epochs", "1", "--quiet", *TINY)
    assert result.exit_code == 0, result.output
    return folder / "run", data


@pytest.mark.parametrize("command", ["smooth", "forecast", "simulate", "fit"])
def test_an_output_under_a_file_is_refused_before_the_work(small_run, tmp_path, command):
    """The folder of --out is a regular file: no file can be created there (root too)."""
    run, data = small_run
    blocker = tmp_path / "afile"
    blocker.write_text("")
    args = {
        "smooth": ["smooth", run, data, "--out", blocker / "s.h5"],
        "forecast": ["forecast", run, data, "--out", blocker / "f.h5", "--context", 3, "--horizon", 2],
        "simulate": ["simulate", "vdp", "--out", blocker / "sub" / "x.h5", "--neurons", 3, "--trials", 2, "--bins", 5],
        "fit": ["fit", data, "--out", blocker / "run", "--max-epochs", 1, *TINY],
    }[command]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    one_error_line(result.output, f"{blocker} is a file, not a folder", "choose another --out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and blocker.read_text() == ""



def test_a_sweep_under_a_file_is_refused_before_the_work(small_run, tmp_path):
    pytest.importorskip("optuna")
    run, data = small_run
    space = tmp_path / "space.yaml"
    space.write_text("train.lr: {log_uniform: [1.0e-3, 1.0e-2]}\n")
    blocker = tmp_path / "afile"
    blocker.write_text("")
    result = invoke("sweep", data, "--space", space, "--out", blocker / "sweep", "--trials", 1)
    assert result.exit_code == 2, result.output
    one_error_line(result.output, f"{blocker} is a file, not a folder", "choose another --out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "space.yaml"]

def test_a_folder_nobody_may_write_is_refused(small_run):
    """/sys refuses new files even to root: a real unwritable folder, not a mocked one."""
    try:
        os.close(os.open("/sys/.xfads-probe", os.O_WRONLY | os.O_CREAT))
        pytest.skip("/sys is writable here")
    except FileNotFoundError:
        pytest.skip("no /sys")
    except OSError:
        pass
    run, data = small_run
    result = invoke("smooth", run, data, "--out", "/sys/s.h5")
    assert result.exit_code == 2, result.output
    one_error_line(result.output, "cannot write in folder /sys", "choose another --out")


def test_adapt_and_fit_check_the_run_directory_before_creating_it(tmp_path):
    (tmp_path / "afile").write_text("")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        prepare_out(tmp_path / "afile" / "new" / "run", overwrite=False, resume=False)
    prepare_out(tmp_path / "new" / "run", overwrite=False, resume=False)  # missing folders are created
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["afile", "new", "run"]


# --------------------------------------------------------------------------------------------------
# 3. A server that dies after answering: exit 1 ("try again"), one line, no segfault


@pytest.mark.parametrize("answered", [1, 3, 5])
def test_a_server_that_dies_mid_read_is_transient(tmp_path, answered):
    """1: it answered the HEAD, then refused the first range request; 3: two range requests, then a
    read inside h5py failed (formerly a segfault at exit); 5: it refused the next load's HEAD."""
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(FIXTURES / "lorenz_small.nwb", served)
    with RangeServer(served) as server:
        server.mode = f"die-after:{answered}"
        url = server.url("lorenz_small.nwb")
        # no retries: remfile would back off for 25 s before giving up
        result = cli("inspect", url, code="import remfile.RemFile as r; r._num_request_retries = 0",
                     env={"XFADS_CACHE": str(tmp_path / "cache")})
    assert len(server.log) == answered, server.log
    assert result.returncode == 1, (result.returncode, result.stderr)
    one_error_line(result.stderr, url, "stopped answering", "try again")


# --------------------------------------------------------------------------------------------------
# 4. Temporary files of killed writers are removed by the next write of the same output


def _partials(out, *names, size=1000):
    for name in names:
        (out.parent / name).write_bytes(b"\0" * size)


def test_the_next_write_removes_what_killed_writers_left(tmp_path):
    out, dead = tmp_path / "s.h5", dead_pid()
    stale = [f".s.partial-{HOST}-{dead}.h5", f".s.partial-{dead}.h5"]  # the second: no host recorded
    live = f".s.partial-{HOST}-{os.getppid()}.h5"  # a writer still running: the parent process
    other = f".s.partial-elsewhere-{dead}.h5"  # another host's process cannot be checked from here
    unrelated = [f".t.partial-{HOST}-{dead}.h5", f".s.partial-{HOST}-{dead}.nwb"]
    _partials(out, *stale, live, other, *unrelated)
    with pytest.warns(UserWarning) as caught:
        write_h5(out, {"x": np.arange(3)}, {})
    assert h5py.File(out, "r")["x"][()].tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, live, other, *unrelated])
    notes = sorted(str(w.message) for w in caught)
    assert len(notes) == 3 and "elsewhere" in notes[0] and "remove it if that process has ended" in notes[0]
    assert all(f"(process {dead})" in n and "(0.0 MB)" in n and "removed" in n for n in notes[1:]), notes


def test_atomic_path_removes_them_too(tmp_path):
    """NWB outputs, simulate, plots and checkpoints write through atomic_path (the NWB copy with its suffix)."""
    out, dead = tmp_path / "run.nwb", dead_pid()
    _partials(out, f".run.partial-{HOST}-{dead}.nwb")
    with pytest.warns(UserWarning, match="removed"):
        with atomic_path(out, ".nwb") as tmp:
            tmp.write_text("complete")
    assert [p.name for p in tmp_path.iterdir()] == ["run.nwb"]
    from xfads_cli.atomic import remove_stale_partials

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing left: nothing to say
        remove_stale_partials(out)


def test_a_rerun_after_sigkill_removes_the_partial_and_says_so(tmp_path):
    """One line on stderr names the removed file; the run itself succeeds."""
    out, dead = tmp_path / "x.h5", dead_pid()
    _partials(out, f".x.partial-{HOST}-{dead}.h5", size=1_400_000)
    result = cli("simulate", "vdp", "--out", out, "--neurons", 3, "--trials", 2, "--bins", 5,
                 env={"PYTHONWARNINGS": "default"})
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.glob(partial_glob(out))) == []
    notes = [line for line in result.stderr.splitlines() if "partial" in line]
    assert notes == [f"warning: removed {tmp_path}/.x.partial-{HOST}-{dead}.h5 (1.4 MB), left by a run of x.h5 "
                     f"that was killed (process {dead})"], result.stderr
