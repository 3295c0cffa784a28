"""Write-then-rename, so that no output is ever seen half written under its final name."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def partial_name(path: Path, suffix: str | None = None) -> Path:
    """The temporary name for `path`: hidden, in the same folder (so os.replace is an atomic rename), with
    the same suffix unless told (pynwb, h5py and matplotlib look at it) and the pid (concurrent runs stay
    apart)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix if suffix is None else suffix}")


def partial_glob(path: Path) -> str:
    """Glob pattern (in path's folder) of the temporary files any process left for `path`."""
    path = Path(path)
    return f".{path.stem}.partial-*{path.suffix}"


@contextmanager
def atomic_path(path: Path, suffix: str | None = None) -> Iterator[Path]:
    """Yields the temporary path to write (partial_name); renamed onto `path` when the block ends cleanly,
    removed when it raises (also on Ctrl-C)."""
    tmp = partial_name(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
