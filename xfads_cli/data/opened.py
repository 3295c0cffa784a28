"""A recording file opened once for a whole command: its format, its h5py.File, the NWB file pynwb
read from it (on first use) and its provenance (hashed on first use).

    with open_file("x.nwb") as f:          # checks the path, opens the HDF5 file, decides the format
        data = read_trials(f, cfg)         # data/load.py: as many reads as the command needs,
        longer = read_trials(f, cfg2)      # with no second open, parse or hash of the file

Why: a command that reads a recording twice (a continuous recording and its training windows, a
forecast that needs longer windows) used to open it, let pynwb parse it and hash all of it each time;
on an hour-long or remote recording each of those costs seconds to minutes.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from xfads_cli.data.source import RemoteSource, is_remote, parse_source
from xfads_cli.errors import BadFile, UsageError

NWB_SUFFIXES = (".nwb",)


@dataclass
class OpenFile:
    """An open recording (see the module docstring); valid inside its `open_file` block only."""

    source: Path | RemoteSource
    format: str  # "nwb" or "hdf5"
    h5: object  # the h5py.File
    _stack: ExitStack = field(repr=False)
    _nwb: tuple | None = field(default=None, repr=False)
    _provenance: dict | None = field(default=None, repr=False)

    @contextmanager
    def nwb(self):
        """(io, nwbfile), read from the open file on first use; inside the block pynwb's warnings are
        muted and a damaged dataset read lazily is a one-line BadFile (data/nwb/opening.py)."""
        from xfads_cli.data.nwb.opening import nwb_errors, read_nwb_file

        with nwb_errors(self.source):
            if self._nwb is None:
                self._nwb = read_nwb_file(self.source, self.h5)
                self._stack.callback(self._nwb[0].close)
            yield self._nwb

    def provenance(self) -> dict:
        """{path, sha256} (a remote file: URL, ETag, size), computed once; a fresh dict each call."""
        from xfads_cli.data.provenance import source_provenance

        if self._provenance is None:
            self._provenance = source_provenance(self.source)
        return dict(self._provenance)


@contextmanager
def open_file(path: str | Path | RemoteSource) -> Iterator[OpenFile]:
    """Open a local or remote NWB / HDF5 recording once (UsageError naming what is wrong with a path
    that is not a readable HDF5 file)."""
    source = parse_source(path)
    with ExitStack() as stack:
        h5 = stack.enter_context(_remote(source) if is_remote(source) else _local(source))
        is_nwb = "nwb_version" in h5.attrs or ("units" in h5 and "general" in h5)
        fmt = "nwb" if is_nwb or source.suffix.lower() in NWB_SUFFIXES else "hdf5"
        yield OpenFile(source, fmt, h5, stack)


@contextmanager
def _local(path: Path):
    import h5py

    if not path.exists():
        raise UsageError(f"no such file: {path}; check the path (NWB .nwb or HDF5 .h5 files are supported)")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; pass NWB (.nwb) or HDF5 (.h5) files")
    try:
        is_hdf5 = h5py.is_hdf5(str(path))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not is_hdf5:
        raise UsageError(f"{path} is not an HDF5 file; xfads reads NWB (.nwb, HDF5 backend) and HDF5 (.h5) spike files")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise BadFile(open_error(path, exc)) from None
    with f:
        yield f


@contextmanager
def _remote(source: RemoteSource):
    """A remote recording's h5py.File: opening it reads the superblock and the root's attributes."""
    from xfads_cli.data.remote import open_hdf5

    stack = ExitStack()
    try:
        f = stack.enter_context(open_hdf5(source))
    except OSError:
        raise UsageError(f"{source} is not an HDF5 file; xfads reads NWB (.nwb, HDF5 backend) and HDF5 (.h5)"
                         " spike files") from None
    with stack:
        yield f


def open_error(path: Path, exc: OSError) -> str:
    """One line for an HDF5 file that h5py cannot open; a cut-short copy gets its sizes named."""
    import re

    text = " ".join(str(exc).split())
    cut = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if cut:
        return (f"{path} is truncated: it has {int(cut[1]):,} of its {int(cut[2]):,} bytes (an interrupted copy"
                " or download?); copy the complete file again")
    reason = text.split("(", 1)[-1].rstrip(")") if "(" in text else text
    return f"{path} has an HDF5 signature but cannot be opened ({reason[:200]}); the file is damaged, copy it again"
