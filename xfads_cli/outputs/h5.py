"""HDF5 result files: stable dataset names, provenance in attributes, written atomically.

Every file carries root attributes `config` (resolved YAML), `checkpoint_sha256`, `input_sha256`,
`input_path`, `versions` (JSON), `metrics` (JSON) and `command`; readers need plain h5py only.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from xfads_cli.errors import UsageError


def check_output(path: Path, overwrite: bool) -> Path:
    """Fail before any work when `path` exists (without --overwrite) or its folder is missing."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it or choose another --out")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; --out must be a file path")
    if not path.parent.exists():
        raise UsageError(f"folder {path.parent} does not exist; create it or choose another --out")
    return path


def jsonable(value):
    """Plain JSON data: numpy scalars/arrays to Python, paths to str, non-finite floats to None
    (strict JSON has no NaN), unknown objects to their str()."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def to_json(value) -> str:
    return json.dumps(jsonable(value), sort_keys=False)


def write_h5(path: Path, datasets: dict[str, np.ndarray], attrs: dict, overwrite: bool = False) -> Path:
    """Write `datasets` (name -> array; string arrays become UTF-8) and root `attrs` (dicts and lists
    become JSON strings) to `path` via a temporary file in the same folder."""
    import h5py

    path = check_output(Path(path), overwrite)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        with h5py.File(tmp, "w") as f:
            for name, value in datasets.items():
                arr = np.asarray(value)
                if arr.dtype.kind in "UO":
                    f.create_dataset(name, data=arr.astype(str).astype(object), dtype=h5py.string_dtype())
                elif arr.ndim >= 2:
                    f.create_dataset(name, data=arr, compression="gzip", compression_opts=4)
                else:
                    f.create_dataset(name, data=arr)
            for key, value in attrs.items():
                f.attrs[key] = to_json(value) if isinstance(value, (dict, list, tuple)) else ("" if value is None else value)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
