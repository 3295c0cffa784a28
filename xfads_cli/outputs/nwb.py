"""Write model results into a NEW NWB file: a byte copy of the input plus one processing module.

The input is never opened for writing: its bytes are copied to a temporary file next to the output
(hashed on the way), the copy gets a NEW identifier (uuid4: an NWB identifier names one file, and
nwbinspector, which DANDI runs, reports files that share one as CRITICAL), pynwb appends the module to
that copy, and the copy is renamed into place. A failure at any step removes the temporary file, so the output name only ever
holds a complete file. Nothing else of the input is changed: its subject, units and metadata are the
input's, so nwbinspector reports on the output what it reports on the input, plus at most suggestions
(BEST_PRACTICE_SUGGESTION) about the module, except in the cases noted below.

Layout of the module `module_name` (e.g. 'xfads_smooth', 'xfads_forecast'):
  - one TimeSeries per entry of `series`, data [trial * time, dim] (trial-major: row k * n_time + i is
    bin i of trial k), timestamps = bin centres in seconds, shared by the series on the same bins
    (the first holds them, the others link to it, as in `xfads simulate`'s ground truth); a forecast's
    context_counts cover the bins before the forecast and have their own timestamps;
  - series whose bin centres are evenly spaced (one trial, or windows of a continuous recording
    back to back) are stored with starting_time and rate instead of timestamps, as NWB's best
    practices ask (nwbinspector check_regular_timestamps): read them with TimeSeries.get_timestamps();
  - the module's description is JSON: {"description", "bin_ms", "n_trials", "n_time", "series",
    "source", "attrs"} where source is {"file", "identifier", "sha256"} of the input file (its name,
    its NWB identifier, the sha256 of its bytes) and attrs is the caller's provenance (resolved
    config, checkpoint and input sha256 ...).

The module is named 'xfads_<command>', not one of the schema's modality names (ecephys, behavior,
misc ...) that nwbinspector suggests (a BEST_PRACTICE_SUGGESTION only): model results are no
modality, and the fixed name is how readers find them and how an earlier output is recognised.
Cases in which the output has a message the input has not: overlapping windows of a continuous
recording (data.overlap_ms > 0) or trials out of time order give rows whose timestamps are not
ascending (check_timestamps_ascending, BEST_PRACTICE_VIOLATION), since rows are trial-major; a
series with fewer rows (trials x bins) than columns is reported as possibly transposed
(check_data_orientation, CRITICAL).

A source that already has a module of that name (typically an earlier xfads output given as input)
is refused with a UsageError rather than written under a suffixed name: readers find results by the
fixed module name, and two modules of the same kind in one file would make it ambiguous which run
produced which.

Note: pynwb migrates what it writes to its own schema: a file written by an older NWB version
(e.g. 2.4.0) comes out with the current nwb_version attribute and the current schema cached next
to the original one. The copy stays valid against the current schema and holds the same data.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from xfads_cli.atomic import atomic_path
from xfads_cli.data.provenance import file_sha256
from xfads_cli.errors import UsageError, first_line
from xfads_cli.outputs.h5 import jsonable

NWB_SUFFIX = ".nwb"  # the temporary copy keeps it: pynwb warns about other names


def write_nwb_copy(
    source: Path,
    out: Path,
    module_name: str,
    series: dict[str, np.ndarray],
    start_s: np.ndarray,
    bin_ms: float,
    description: str,
    attrs: dict,
    overwrite: bool = False,
    units: dict[str, str] | None = None,
    offsets: dict[str, int] | None = None,
    lengths: np.ndarray | None = None,
) -> Path:
    """Write `out` = a copy of the NWB file `source` plus processing module `module_name`.

    series:  name -> [trial, time, dim] array (all with the same trial and time counts)
    start_s: [trial] start time (s) of each trial's first bin (for forecasts: of the first forecast
             bin); bin i of trial k is stamped start_s[k] + (i + 0.5) * bin_ms / 1000
    units:   optional name -> unit string per series (default 'a.u.')
    offsets: optional name -> first bin of that series relative to start_s (default 0), for series that
             cover other bins than the rest (a forecast's context_counts: -context); series may differ
             in their number of bins, never in their number of trials
    lengths: optional [trial] bins of each trial (data.trial_lengths own): recorded as "lengths" in
             the module's JSON description; the series hold NaN past them (the padding)
    Returns `out`. UsageError for a missing/unreadable source, `out` equal to `source`, an existing
    `out` without `overwrite`, or a source that already holds `module_name`.
    """
    source, out = Path(source), Path(out)
    offsets = {name: int((offsets or {}).get(name, 0)) for name in series}
    n_trial, n_time = _check_series(series, start_s, bin_ms)
    _check_paths(source, out, overwrite)
    _check_module_free(source, module_name)
    meta = {
        "description": description,
        "bin_ms": float(bin_ms),
        "n_trials": n_trial,
        "n_time": n_time,
        "series": list(series),
        "attrs": jsonable(attrs),
    }
    if lengths is not None:
        meta["lengths"] = [int(n) for n in lengths]
    if any(offsets.values()) or len({np.shape(a)[1] for a in series.values()}) > 1:
        meta["series_bins"] = {name: {"n_time": int(np.shape(a)[1]), "offset_bins": offsets[name]}
                               for name, a in series.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out, NWB_SUFFIX) as tmp:
        sha256 = file_sha256(source, copy_to=tmp)  # copies bytes only: the input's read-only mode is not carried over
        meta["source"] = {"file": source.name, "identifier": _renew_identifier(tmp), "sha256": sha256}
        _append_module(tmp, source.name, module_name, json.dumps(meta), series, start_s, bin_ms, units or {}, offsets)
    return out


# --------------------------------------------------------------------------------------------------
# Checks (all before anything is copied)


def _check_series(series: dict[str, np.ndarray], start_s, bin_ms: float) -> tuple[int, int]:
    """(n_trial, n_time of the first series); ValueError for inconsistent shapes (a caller bug)."""
    if not series:
        raise ValueError("write_nwb_copy needs at least one series")
    shapes = {name: np.shape(arr) for name, arr in series.items()}
    for name, shape in shapes.items():
        if len(shape) != 3:
            raise ValueError(f"series '{name}' has shape {shape}, expected [trial, time, dim]")
        if "/" in name or not name:
            raise ValueError(f"series name '{name}' is not a valid NWB object name")
    if len({shape[0] for shape in shapes.values()}) != 1:
        raise ValueError(f"series differ in their number of trials: {shapes}")
    n_trial, n_time = next(iter(shapes.values()))[:2]
    if n_trial == 0 or any(shape[1] == 0 for shape in shapes.values()):
        raise ValueError(f"series have no bins ({shapes}); nothing to write")
    if np.shape(start_s) != (n_trial,):
        raise ValueError(f"start_s has shape {np.shape(start_s)}, expected ({n_trial},)")
    if not np.all(np.isfinite(np.asarray(start_s, dtype=np.float64))):
        raise ValueError("start_s must be finite: timestamps are computed from it")
    if not bin_ms > 0:
        raise ValueError(f"bin_ms must be positive, got {bin_ms}")
    return n_trial, n_time


def _check_paths(source: Path, out: Path, overwrite: bool) -> None:
    if not source.exists():
        raise UsageError(f"file not found: {source}; check the path (an .nwb file is expected)")
    if not source.is_file():
        raise UsageError(f"{source} is a directory, not an NWB file; pass the path of an .nwb file")
    if out.resolve() == source.resolve() or (out.exists() and os.path.samefile(out, source)):
        raise UsageError(f"output '{out}' is the input file; xfads never modifies its input, choose another output name")
    if out.is_dir():
        raise UsageError(f"output '{out}' is a directory; give a file name ending in .nwb")
    if out.exists() and not overwrite:
        raise UsageError(f"output '{out}' already exists; pass --overwrite to replace it")


def _check_module_free(source: Path, module_name: str) -> None:
    """UsageError when `source` is not HDF5 or already has processing/<module_name>. Read with h5py,
    which is quick and does not touch the file, so a multi-GB input is not copied just to fail."""
    import h5py

    try:
        with h5py.File(source, "r") as f:
            taken = f"processing/{module_name}" in f
    except OSError as exc:
        raise UsageError(
            f"cannot open {source.name} as HDF5 ({first_line(exc)}); expected an NWB 2.x file (HDF5)"
        ) from None
    if taken:
        raise UsageError(
            f"{source.name} already has a processing module '{module_name}' (is it an earlier xfads output?);"
            " pass the original recording as input"
        )


# --------------------------------------------------------------------------------------------------
# Writing


def _renew_identifier(path: Path) -> str | None:
    """Give the copy at `path` a new uuid4 identifier (the root dataset `identifier`, edited with h5py
    before pynwb opens the file: pynwb does not change an identifier it has read). Returns the old
    one, or None when there is none (not an NWB file: pynwb's read then says so)."""
    import uuid

    import h5py

    with h5py.File(path, "r+") as f:
        if not isinstance(f.get("identifier"), h5py.Dataset):
            return None
        old = f["identifier"][()]
        f["identifier"][()] = str(uuid.uuid4())
    return old.decode("utf-8", "replace") if isinstance(old, bytes) else str(old)


def _append_module(path: Path, source_name: str, module_name: str, description: str, series, start_s, bin_ms, units,
                   offsets):
    """Open the copy at `path` with pynwb in append mode and add the module. pynwb's warnings are
    muted as in data/nwb/opening.py: files written elsewhere trigger many harmless ones."""
    from pynwb import NWBHDF5IO

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # load_namespaces: extension types of the source are read (and written back) with their cached spec.
        io = NWBHDF5IO(str(path), mode="a", load_namespaces=True)
        try:
            try:
                nwb = io.read()
            except Exception as exc:  # the file's fault: not NWB, truncated, unknown schema
                raise UsageError(
                    f"{source_name} is not a readable NWB file ({type(exc).__name__}: {first_line(exc)});"
                    " expected an NWB 2.x file (HDF5) as written by pynwb or MatNWB"
                ) from None
            module = nwb.create_processing_module(name=module_name, description=description)
            for ts in _timeseries(series, start_s, bin_ms, units, offsets):
                module.add(ts)
            io.write(nwb)
        finally:
            io.close()


def _timeseries(series: dict[str, np.ndarray], start_s, bin_ms: float, units: dict[str, str],
                offsets: dict[str, int]) -> list:
    """One pynwb TimeSeries per series, data [trial * time, dim]; the first series of each time base
    (bins, offset) holds its timestamps (bin centres, s) and the others link to it, stored once; evenly
    spaced bin centres are stored as starting_time and rate instead (module docstring)."""
    from hdmf.backends.hdf5.h5_utils import H5DataIO
    from pynwb import TimeSeries

    bin_s = float(bin_ms) / 1000.0
    out, timings = [], {}
    for name, arr in series.items():
        n_trial, n_time = np.shape(arr)[:2]
        offset = offsets.get(name, 0)
        base = (n_time, offset)
        if base not in timings:
            centres = (np.asarray(start_s, dtype=np.float64)[:, None] + (np.arange(n_time) + offset + 0.5) * bin_s).ravel()
            timings[base] = ({"starting_time": float(centres[0]), "rate": 1.0 / bin_s} if _evenly_spaced(centres)
                             else {"timestamps": H5DataIO(centres, compression="gzip")})
        layout = {"n_trials": int(n_trial), "n_time": int(n_time), "bin_ms": float(bin_ms)}
        if offset:
            layout["offset_bins"] = offset
        data = np.ascontiguousarray(np.asarray(arr).reshape(n_trial * n_time, -1))
        ts = TimeSeries(
            name=name,
            data=H5DataIO(data, compression="gzip", shuffle=True),
            unit=units.get(name, "a.u."),
            **timings[base],
            description=(
                f"xfads '{name}' [trial * time, {data.shape[1]}]: row k * {n_time} + i is bin i of trial k;"
                " its time is the bin's centre (s)"
            ),
            comments=json.dumps(layout),
        )
        if "timestamps" in timings[base] and not isinstance(timings[base]["timestamps"], TimeSeries):
            timings[base] = {"timestamps": ts}  # the next series on these bins link to this one's
        out.append(ts)
    return out


def _evenly_spaced(times: np.ndarray) -> bool:
    """Whether nwbinspector's check_regular_timestamps would call `times` regular (over 2 of them, all
    steps equal to 9 decimals), so that they are better written as starting_time and rate."""
    return len(times) > 2 and len(np.unique(np.diff(times).round(decimals=9))) == 1
