"""Opening an NWB file, local or remote, and turning pynwb's failures into one-line BadFile errors.

pynwb reads lazily, so a damaged dataset may fail long after the file opened: `open_nwb` also
catches those failures for as long as the file is open.
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from pathlib import Path

from xfads_cli.data.nwb.columns import text
from xfads_cli.data.source import RemoteSource, is_remote
from xfads_cli.errors import BadFile, UsageError, first_line

_EXPECTED = "expected an NWB 2.x file (HDF5) as written by pynwb or MatNWB"


@contextmanager
def open_nwb(path: Path | RemoteSource):
    """Yield (io, nwbfile), closing the file afterwards. pynwb's warnings are muted throughout: real
    files trigger many harmless ones (e.g. OpticalSeries checks) that would flood the terminal.
    A remote recording (data/source.py) is read through an h5py.File over its byte ranges. (A command
    that reads a file more than once opens it with data/opened.py instead.)"""
    if not is_remote(path) and not path.exists():
        raise UsageError(f"file not found: {path}; check the path (an .nwb file is expected)")
    if not is_remote(path) and not path.is_file():
        raise UsageError(f"{path} is a directory, not an NWB file; pass the path of an .nwb file")
    with nwb_errors(path), _remote_hdf5(path) as remote:
        io, nwb = read_nwb_file(path, remote)
        try:
            yield io, nwb
        finally:
            io.close()


def read_nwb_file(path: Path | RemoteSource, h5=None) -> tuple:
    """(io, nwbfile) of the NWB file at `path`, read by pynwb from the open h5py.File `h5` (None: pynwb
    opens the local path itself); the caller closes io. Failures are one-line BadFile errors."""
    from pynwb import NWBHDF5IO

    try:
        io = NWBHDF5IO(str(path), "r") if h5 is None else NWBHDF5IO(file=h5, mode="r")
    except OSError as exc:
        raise BadFile(f"cannot open {path.name} as HDF5 ({first_line(exc)}); {_EXPECTED}") from None
    try:
        return io, io.read()
    except Exception as exc:  # any failure here is the file's: not NWB, truncated, bad schema
        io.close()
        raise BadFile(f"{path.name} is not a readable NWB file ({_read_error(exc)}); {_EXPECTED}") from None


@contextmanager
def nwb_errors(path: Path | RemoteSource):
    """pynwb's warnings muted, and a lazily read dataset's failure as a one-line BadFile: pynwb reads
    lazily, so a damaged dataset fails only when it is read."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        except OSError as exc:
            raise BadFile(
                f"cannot read {path.name} ({first_line(exc)}); the file is damaged (truncated or corrupt), copy it again"
            ) from None


@contextmanager
def _remote_hdf5(path):
    """None for a local file (pynwb opens it by name), else the remote file's h5py.File."""
    if not is_remote(path):
        yield None
        return
    from xfads_cli.data.remote import open_hdf5

    try:
        with open_hdf5(path) as f:
            yield f
    except OSError as exc:  # h5py's own failure to open it (a network failure is a RemoteError)
        raise BadFile(f"cannot open {path.name} as HDF5 ({first_line(exc)}); {_EXPECTED}") from None


def nwb_version(io) -> str | None:
    """The file's NWB version as text (pynwb gives a (text, parsed) tuple in recent versions)."""
    version = getattr(io, "nwb_version", None)
    if isinstance(version, tuple):
        version = version[0]
    return text(version) if version is not None else None



def _read_error(exc: Exception) -> str:
    """Why pynwb could not read a file, in a few words. hdmf's ConstructError dumps the whole builder
    ("(root/units GroupBuilder {...}, 'Could not construct Units object due to: ...')"); keep the
    object's path and the reason."""
    message = " ".join(str(exc).split())
    reason = re.search(r"Could not construct (\w+) object due to: (.*?)['\"]?\)?$", message)
    if reason:
        where = re.match(r"\(?root(/\S*)?\s", message)
        at = f" at {where[1] or '/'}" if where else ""
        return f"{reason[1]}{at}: {reason[2][:200]}"
    return f"{type(exc).__name__}: {first_line(exc)}"
