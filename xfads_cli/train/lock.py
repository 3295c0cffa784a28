"""One writer per run directory: an advisory lock held while `fit` (or `adapt`) writes RUN_DIR.

Two jobs given the same --out (a job array with a repeated index, a requeued job overlapping the old
one) would otherwise both train and interleave their checkpoints in one directory. The lock is
`RUN_DIR/.xfads.lock`, taken with flock(2): the kernel releases it when its process ends however it
ends, so a crashed fit never blocks the next one. The file holds the owner's pid, host and start time
for the error message; a normal exit empties it, so a non-empty file found unlocked means its owner
died while writing (e.g. SIGKILL), which is reported as a warning when the lock is taken over. On
NFS, Linux implements flock with POSIX locks, which the server arbitrates between nodes (needs
lockd, as most cluster file systems have); on systems without fcntl the lock is a no-op.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path

from xfads_cli.errors import UsageError

LOCK_NAME = ".xfads.lock"


class RunLock:
    """acquire() before the first write to `out`, release() after the last (also on errors)."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (creating RUN_DIR if needed); UsageError naming the owner when another process holds it."""
        try:
            import fcntl
        except ImportError:  # not POSIX
            return
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = _describe(_read(fd))
            os.close(fd)
            raise UsageError(f"{self.path.parent} is being written by another xfads process ({owner}); wait for it to "
                             "end or choose another --out") from None
        previous = _read(fd)
        if previous:
            warnings.warn(f"{self.path.parent}: taking over from a run that ended without releasing its lock "
                          f"({_describe(previous)}); its last completed checkpoint is kept", stacklevel=2)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        try:
            os.ftruncate(self._fd, 0)  # empty: a clean exit, not a crash
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None


def _read(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {"unreadable": True}


def _describe(owner: dict) -> str:
    if not owner or owner.get("unreadable"):
        return "owner unknown"
    return f"pid {owner.get('pid')} on {owner.get('host')}, started {owner.get('started')}"
