"""flock(2) locks of the sweep: the kernel drops them when their process ends however it ends (also
SIGKILL), which is what tells a dead worker from a live one. On NFS, Linux maps flock to POSIX locks
that the server arbitrates between nodes (as for a run directory's lock, train/lock.py); on systems
without fcntl the locks are no-ops (one worker at a time then)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _flock(fd: int, blocking: bool) -> bool:
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except BlockingIOError:
        return False


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block (waiting for it)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock(fd, blocking=True)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class Liveness:
    """A worker's lock, held for the worker's lifetime: `alive(path)` is False once its process is gone."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        _flock(self._fd, blocking=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.path.unlink(missing_ok=True)


def alive(path: Path) -> bool:
    """Whether some process holds the lock on `path` (a missing file: its worker ended cleanly). Without
    fcntl nothing can be told: every worker counts as alive."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return True
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        return not _flock(fd, blocking=False)
    finally:
        os.close(fd)
