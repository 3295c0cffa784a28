"""One entry point for every supported file: `load_data(path, cfg)` and `describe(path)`."""

from __future__ import annotations

from pathlib import Path

from xfads_cli.config import DataConfig
from xfads_cli.data.spikedata import SpikeData
from xfads_cli.errors import UsageError

NWB_SUFFIXES = (".nwb",)
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")


def file_format(path: str | Path) -> str:
    """'nwb' or 'hdf5' for a readable file, else a UsageError naming what is wrong."""
    import h5py

    path = Path(path)
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
        raise UsageError(f"{path} looks like HDF5 but cannot be opened ({exc}); the file may be truncated") from None
    return "nwb" if is_nwb or path.suffix.lower() in NWB_SUFFIXES else "hdf5"


def load_data(path: str | Path, cfg: DataConfig | None = None) -> SpikeData:
    """Load any supported recording into SpikeData according to `cfg` (defaults when None)."""
    cfg = cfg or DataConfig()
    if not cfg.bin_ms > 0:
        raise UsageError(f"data.bin_ms must be > 0, got {cfg.bin_ms:g}; e.g. --set data.bin_ms=20")
    path = Path(path)
    if file_format(path) == "nwb":
        from xfads_cli.data.nwb import load_nwb

        return load_nwb(path, cfg)
    from xfads_cli.data.hdf5 import load_hdf5

    return load_hdf5(path, cfg)


def describe(path: str | Path) -> dict:
    """What is in a file, as plain data (the body of `xfads inspect`)."""
    path = Path(path)
    if file_format(path) == "nwb":
        from xfads_cli.data.nwb import describe_nwb

        info = describe_nwb(path)
        info.setdefault("format", "nwb")
    else:
        from xfads_cli.data.hdf5 import describe_hdf5

        info = describe_hdf5(path)
    info["path"] = str(path)
    info["size_bytes"] = path.stat().st_size
    return info
