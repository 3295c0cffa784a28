"""One entry point for every supported file: `load_data(path, cfg)` and `describe(path)`; `read_trials`
and `read_continuous` of a file a command opened once (data/opened.py). A path is a
local file or a remote recording (an https://, s3:// or dandi:// URL: data/source.py, data/remote.py)."""

from __future__ import annotations

from pathlib import Path

from xfads_cli.config import DataConfig
from xfads_cli.data.opened import OpenFile, open_file
from xfads_cli.data.source import RemoteSource, is_remote, parse_source
from xfads_cli.data.spikedata import SpikeData
from xfads_cli.errors import UsageError, about_file

def file_format(path: str | Path | RemoteSource) -> str:
    """'nwb' or 'hdf5' for a readable file, else a UsageError naming what is wrong."""
    with open_file(path) as f:
        return f.format


def check_bin_ms(bin_ms) -> float:
    """data.bin_ms as a positive, finite number of milliseconds, else a UsageError."""
    import math

    if not (isinstance(bin_ms, (int, float)) and math.isfinite(bin_ms) and bin_ms > 0):
        raise UsageError(f"data.bin_ms must be > 0 and finite (a bin width in ms), got {bin_ms:g}; e.g. --set data.bin_ms=20"
                         if isinstance(bin_ms, (int, float)) else f"data.bin_ms must be a number, got {bin_ms!r}")
    return float(bin_ms)


def load_data(path: str | Path, cfg: DataConfig | None = None) -> SpikeData:
    """Load any supported recording into SpikeData according to `cfg` (defaults when None)."""
    path = parse_source(path)
    with about_file(path), open_file(path) as f:
        return read_trials(f, cfg)


def read_trials(f: OpenFile, cfg: DataConfig | None = None) -> SpikeData:
    """The trials of the open recording `f` (data/opened.py) as `cfg` defines them (defaults when None):
    an NWB file's trials, intervals or chopped windows, an HDF5 file's trial tensors."""
    cfg = cfg or DataConfig()
    check_bin_ms(cfg.bin_ms)
    with about_file(f.source):
        if f.format == "nwb":
            from xfads_cli.data.nwb import read_nwb

            return read_nwb(f, cfg)
        from xfads_cli.data.hdf5 import read_hdf5

        return read_hdf5(f, cfg)


def read_continuous(f: OpenFile, cfg: DataConfig):
    """The open recording `f` as one continuous `Recording` (data/recording.py) when `cfg` defines no
    trials on it; None when it has trials (or is an HDF5 file of trial tensors)."""
    if f.format != "nwb":
        return None
    from xfads_cli.data.nwb import read_nwb_recording

    with about_file(f.source):
        return read_nwb_recording(f, cfg)


def describe(path: str | Path) -> dict:
    """What is in a file, as plain data (the body of `xfads inspect`).

    Raises UsageError for a file that no option can make loadable: unreadable, corrupt content
    (`BadFile`), or an NWB file without usable units. Problems that options can fix (trial windows,
    bin sizes, ...) are left to the load that follows in `xfads inspect`."""
    path = parse_source(path)
    with about_file(path):
        if file_format(path) == "nwb":
            from xfads_cli.data.nwb import describe_nwb

            info = describe_nwb(path)
            info.setdefault("format", "nwb")
            if info.get("units", {}).get("error"):
                raise UsageError(info["units"]["error"])
        else:
            from xfads_cli.data.hdf5 import describe_hdf5

            info = describe_hdf5(path)
    info["path"] = str(path)
    if is_remote(path):
        from xfads_cli.data.remote import validated

        info["size_bytes"] = validated(path).size
    else:
        info["size_bytes"] = path.stat().st_size
    return info
