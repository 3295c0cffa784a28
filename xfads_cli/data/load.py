"""One entry point for every supported file: `load_data(path, cfg)` and `describe(path)`. A path is a
local file or a remote recording (an https://, s3:// or dandi:// URL: data/source.py, data/remote.py)."""

from __future__ import annotations

from pathlib import Path

from xfads_cli.config import DataConfig
from xfads_cli.data.source import RemoteSource, is_remote, parse_source
from xfads_cli.data.spikedata import SpikeData
from xfads_cli.errors import BadFile, UsageError, about_file

NWB_SUFFIXES = (".nwb",)
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def file_format(path: str | Path | RemoteSource) -> str:
    """'nwb' or 'hdf5' for a readable file, else a UsageError naming what is wrong."""
    import h5py

    path = parse_source(path)
    if is_remote(path):
        return _remote_format(path)
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
        with h5py.File(path, "r") as f:
            is_nwb = "nwb_version" in f.attrs or ("units" in f and "general" in f)
    except OSError as exc:
        raise BadFile(_open_error(path, exc)) from None
    return "nwb" if is_nwb or path.suffix.lower() in NWB_SUFFIXES else "hdf5"


def _remote_format(source: RemoteSource) -> str:
    """file_format of a remote recording: opening it reads the superblock and the root's attributes."""
    from xfads_cli.data.remote import open_hdf5

    try:
        with open_hdf5(source) as f:
            is_nwb = "nwb_version" in f.attrs or ("units" in f and "general" in f)
    except OSError:
        raise UsageError(f"{source} is not an HDF5 file; xfads reads NWB (.nwb, HDF5 backend) and HDF5 (.h5)"
                         " spike files") from None
    return "nwb" if is_nwb or source.suffix.lower() in NWB_SUFFIXES else "hdf5"


def _open_error(path: Path, exc: OSError) -> str:
    """One line for an HDF5 file that h5py cannot open; a cut-short copy gets its sizes named."""
    import re

    text = " ".join(str(exc).split())
    cut = re.search(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if cut:
        return (f"{path} is truncated: it has {int(cut[1]):,} of its {int(cut[2]):,} bytes (an interrupted copy"
                " or download?); copy the complete file again")
    reason = text.split("(", 1)[-1].rstrip(")") if "(" in text else text
    return f"{path} has an HDF5 signature but cannot be opened ({reason[:200]}); the file is damaged, copy it again"


def check_bin_ms(bin_ms) -> float:
    """data.bin_ms as a positive, finite number of milliseconds, else a UsageError."""
    import math

    if not (isinstance(bin_ms, (int, float)) and math.isfinite(bin_ms) and bin_ms > 0):
        raise UsageError(f"data.bin_ms must be > 0 and finite (a bin width in ms), got {bin_ms:g}; e.g. --set data.bin_ms=20"
                         if isinstance(bin_ms, (int, float)) else f"data.bin_ms must be a number, got {bin_ms!r}")
    return float(bin_ms)


def load_data(path: str | Path, cfg: DataConfig | None = None) -> SpikeData:
    """Load any supported recording into SpikeData according to `cfg` (defaults when None)."""
    cfg = cfg or DataConfig()
    check_bin_ms(cfg.bin_ms)
    path = parse_source(path)
    with about_file(path):
        if file_format(path) == "nwb":
            from xfads_cli.data.nwb import load_nwb

            return load_nwb(path, cfg)
        from xfads_cli.data.hdf5 import load_hdf5

        return load_hdf5(path, cfg)


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
