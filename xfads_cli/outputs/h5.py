"""HDF5 result files: stable dataset names, provenance in attributes, written atomically
(at once with write_h5, or row block by row block with H5Stream).

Every file carries root attributes `config` (resolved YAML), `checkpoint_sha256`, `input_sha256`,
`input_path`, `versions` (JSON), `metrics` (JSON) and `command`; readers need plain h5py only.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from xfads_cli.atomic import check_writable, partial_name, remove_stale_partials
from xfads_cli.errors import UsageError


def check_output(path: Path, overwrite: bool, inputs=()) -> Path:
    """Fail before any work when `path` is one of the `inputs` the command reads (even with --overwrite:
    xfads never modifies its input), exists (without --overwrite), or its folder is missing or unwritable."""
    path = Path(path)
    for source in map(Path, inputs):
        if path.resolve() == source.resolve() or (path.exists() and source.exists() and os.path.samefile(path, source)):
            raise UsageError(f"output '{path}' is the input file {source.name}; xfads never modifies its input, "
                             "choose another output name")
    if path.exists() and not overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it or choose another --out")
    if path.is_dir():
        raise UsageError(f"{path} is a directory; --out must be a file path")
    if not path.parent.exists():
        raise UsageError(f"folder {path.parent} does not exist; create it or choose another --out")
    check_writable(path)
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
    with H5Stream(path, overwrite=overwrite) as out:
        for name, value in datasets.items():
            out.write(name, value)
        out.set_attrs(attrs)
    return out.path


class H5Stream:
    """An HDF5 result file written piece by piece, so results never need to be held all at once.

        with H5Stream(path, n_rows=n_trials) as out:
            for part in parts:                  # name -> [rows, ...] for the next consecutive rows
                out.append(part)
            out.write("trial_ids", trial_ids)   # a whole dataset at once
            out.set_attrs(attrs)

    Everything goes to a temporary file next to `path` (same folder, so the final os.replace is an
    atomic rename) that is renamed into place only when the block ends without an exception and
    every appended dataset holds all `n_rows` rows; otherwise the temporary file is removed and
    nothing appears at `path`. Datasets, dtypes, compression and chunks are those of write_h5 (it is
    a user of this class), so readers cannot tell a streamed file from one written at once.
    With `padding` (trials of different lengths) the file gets dataset `lengths` [row] and every
    appended block is NaN past its trials' lengths.
    """

    def __init__(self, path: Path, n_rows: int | None = None, overwrite: bool = False, padding=None):
        self.path = check_output(Path(path), overwrite)
        self.padding = padding  # data.spikedata.Padding: appended trials blanked past their lengths
        self.n_rows = n_rows
        self.overwrite = overwrite
        self.tmp = partial_name(self.path)
        self.rows_written: dict[str, int] = {}  # appended dataset -> rows filled so far
        self.file = None

    def __enter__(self) -> "H5Stream":
        import h5py

        remove_stale_partials(self.path)
        try:
            self.file = h5py.File(self.tmp, "w")
            if self.padding is not None:
                self.write("lengths", self.padding.lengths)
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.file.close()
            if exc_type is None:
                self._check_complete()
                # the run may have taken hours: do not replace a file someone else wrote meanwhile
                if self.path.exists() and not self.overwrite:
                    raise UsageError(f"{self.path} appeared while results were computed; pass --overwrite to replace it")
                os.replace(self.tmp, self.path)
        finally:
            self.tmp.unlink(missing_ok=True)
        return False

    def write(self, name: str, value) -> None:
        """Dataset `name` holding the whole array `value`."""
        _create_dataset(self.file, name, np.asarray(value))

    def append(self, part: dict[str, np.ndarray]) -> None:
        """Write each array of `part` [rows, ...] after the rows already appended under its name;
        the first part creates the dataset with n_rows rows (the rest of the shape from the part)."""
        if self.n_rows is None:
            raise ValueError("H5Stream.append needs n_rows (the total number of rows) at construction")
        if self.padding is not None:
            part = self.padding.blank(part)
        for name, value in part.items():
            arr = np.asarray(value)
            if name not in self.rows_written:
                _create_dataset(self.file, name, arr, n_rows=self.n_rows)
                self.rows_written[name] = 0
            start = self.rows_written[name]
            if start + len(arr) > self.n_rows:
                raise ValueError(f"dataset '{name}': {start + len(arr)} rows appended, more than n_rows={self.n_rows}")
            self.file[name][start : start + len(arr)] = arr
            self.rows_written[name] = start + len(arr)

    def set_attrs(self, attrs: dict) -> None:
        """Root attributes; dicts and lists become JSON strings, None an empty string."""
        for key, value in attrs.items():
            self.file.attrs[key] = to_json(value) if isinstance(value, (dict, list, tuple)) else ("" if value is None else value)

    def _check_complete(self) -> None:
        short = {name: rows for name, rows in self.rows_written.items() if rows != self.n_rows}
        if short:
            raise ValueError(f"incomplete datasets (rows written of {self.n_rows}): {short}; nothing was written")


def _create_dataset(f, name: str, arr: np.ndarray, n_rows: int | None = None):
    """The dataset for `arr` in the h5py file `f`: strings as UTF-8, gzip level 4 from 2-D up.
    With n_rows: an empty dataset of n_rows rows shaped like `arr` otherwise, filled later by rows."""
    import h5py

    if arr.dtype.kind in "UO":
        if n_rows is not None:
            raise ValueError(f"dataset '{name}': string datasets are written whole, not appended")
        return f.create_dataset(name, data=arr.astype(str).astype(object), dtype=h5py.string_dtype())
    shape = arr.shape if n_rows is None else (n_rows, *arr.shape[1:])
    compress = {"compression": "gzip", "compression_opts": 4, "chunks": _chunks(shape, arr.dtype.itemsize)} \
        if len(shape) >= 2 else {}
    if n_rows is None:
        return f.create_dataset(name, data=arr, **compress)
    return f.create_dataset(name, shape=shape, dtype=arr.dtype, **compress)


CHUNK_BYTES = 256 * 1024


def _chunks(shape: tuple, itemsize: int) -> tuple | bool:
    """Chunks of whole rows (trials), about CHUNK_BYTES each (at least one row). H5Stream appends
    blocks of rows: with chunks of whole rows, a chunk left part-filled by one block is completed by
    the next while it is still in h5py's 1 MiB chunk cache. h5py's own guess cuts every axis, so a
    block would touch a band of chunks larger than the cache, each then decompressed, patched and
    recompressed again per block (measured 4.5x slower for 16-trial blocks of [1000, 100, 50])."""
    if 0 in shape:
        return True  # HDF5 needs chunk sides >= 1: let h5py choose for an empty dataset
    row_bytes = itemsize * int(np.prod(shape[1:]))
    rows = int(np.clip(CHUNK_BYTES // row_bytes, 1, shape[0]))
    return (rows, *shape[1:])
