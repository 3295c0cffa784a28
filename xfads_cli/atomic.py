"""Write-then-rename, so that no output is ever seen half written under its final name."""

from __future__ import annotations

import os
import re
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from xfads_cli.errors import UsageError


def partial_name(path: Path, suffix: str | None = None) -> Path:
    """The temporary name for `path`: hidden, in the same folder (so os.replace is an atomic rename), with
    the same suffix unless told (pynwb, h5py and matplotlib look at it), the host and the pid (concurrent
    runs stay apart, and remove_stale_partials can tell whether the writer still runs)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial-{socket.gethostname()}-{os.getpid()}"
                          f"{path.suffix if suffix is None else suffix}")


def partial_glob(path: Path, suffix: str | None = None) -> str:
    """Glob pattern (in path's folder) of the temporary files any process left for `path`."""
    path = Path(path)
    return f".{path.stem}.partial-*{path.suffix if suffix is None else suffix}"


def remove_stale_partials(path: Path, suffix: str | None = None) -> None:
    """Remove the temporary files of `path` whose writer no longer runs (killed by SIGKILL or a
    preemption, they stay otherwise), with a warning each. Those of running processes (a concurrent
    writer) stay; those written on another host, whose processes cannot be checked, are reported."""
    path = Path(path)
    suffix = path.suffix if suffix is None else suffix
    # host absent: a name from before hosts were recorded, judged on this host
    name = re.compile(rf"\.{re.escape(path.stem)}\.partial-(?:(.+)-)?(\d+){re.escape(suffix)}")
    for tmp in path.parent.glob(partial_glob(path, suffix)):
        match = name.fullmatch(tmp.name)
        if match is None:
            continue
        host, pid = match[1], int(match[2])
        if host not in (None, socket.gethostname()):
            warnings.warn(f"{tmp} was left by process {pid} on host {host}, which this run cannot check; "
                          "remove it if that process has ended", stacklevel=2)
        elif not _running(pid):
            try:
                size = tmp.stat().st_size
                tmp.unlink()
            except OSError:  # removed by another run meanwhile, or not ours to remove
                continue
            warnings.warn(f"removed {tmp} ({size / 1e6:.1f} MB), left by a run of {path.name} that was killed "
                          f"(process {pid})", stacklevel=2)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: it exists
        pass
    return True


def check_writable(path: Path) -> None:
    """UsageError unless a file can be created at `path`: in its folder, or (for a writer that creates
    it) the nearest folder above that exists. Checked before the work, whose results would otherwise
    be lost when they are written; tried by creating and removing path's temporary file there."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: {folder} is a file, not a folder; choose another --out")
    probe = folder / partial_name(path).name
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600))
        probe.unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write in folder {folder} ({exc.strerror or exc}); choose another --out, "
                         "or make the folder writable") from None


@contextmanager
def atomic_path(path: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yields the temporary path to write (partial_name); renamed onto `path` when the block ends cleanly,
    removed when it raises (also on Ctrl-C). Temporary files left by killed writers go first."""
    remove_stale_partials(path, suffix)
    tmp = partial_name(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
