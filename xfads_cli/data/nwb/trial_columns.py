"""The task columns of the loaded trials: condition labels and event times.

Read from the trials' interval table, for the trials windows.py kept. 'auto' applies the shared rules
of data/conditions.py (also used by the HDF5 loader); chopped windows have no table, so neither.
"""

from __future__ import annotations

import numpy as np

from xfads_cli.data.conditions import AUTO, BOUNDS, auto_condition, auto_events, event_bins
from xfads_cli.data.nwb.columns import label, read_column
from xfads_cli.data.nwb.windows import Windows
from xfads_cli.errors import UsageError, closest, listing


def trial_conditions(windows: Windows, column: str | None) -> tuple[np.ndarray | None, str | None]:
    """([trial] condition labels as strings (3.0 -> '3') from the trials' interval table, or None; the
    column they come from). 'auto': data/conditions.py's rule (no conditions when nothing fits, and
    none for chopped windows); a named column must exist."""
    if column is None or (column == AUTO and windows.table is None):
        return None, None
    columns = list(windows.table.colnames)
    if column == AUTO:
        column = auto_condition(columns, lambda name: _optional_column(windows, name))
        if column is None:
            return None, None
    elif column not in columns:
        raise UsageError(
            f"interval table '{windows.source}' has no column '{column}'{closest(column, columns)};"
            f" set data.condition to one of: {listing(columns)}"
        )
    values = read_column(windows.table, column, f"interval table '{windows.source}'")[windows.rows]
    return np.array([label(v) for v in values]), column


def trial_events(windows: Windows, names: tuple[str, ...], bin_s: float) -> dict[str, np.ndarray]:
    """name -> [trial] float64 event time in bins from each trial window's start (NaN: no event, or
    outside the window), for the data.events columns ('auto': data/conditions.py's rule, none for
    chopped windows; named columns must exist and hold numbers: seconds on the recording's clock)."""
    if windows.table is None or not names:
        return {}
    columns = list(windows.table.colnames)
    read: dict[str, np.ndarray | None] = {}
    times = lambda c: read[c] if c in read else read.setdefault(c, _event_times(windows, c))  # noqa: E731
    chosen: list[str] = []
    for name in names:
        if name == AUTO:
            start, stop = (times(c) if c in columns else None for c in BOUNDS)
            nan = np.full(windows.rows.size, np.nan)
            found = auto_events(columns, times, nan if start is None else start, nan if stop is None else stop)
            chosen += [c for c in found if c not in chosen]
            continue
        if name not in columns or times(name) is None:
            where = f"interval table '{windows.source}'"
            numeric = [c for c in columns if c not in BOUNDS and times(c) is not None]
            problem = (f"{where} has no column '{name}'{closest(name, columns)}" if name not in columns
                       else f"column '{name}' of {where} does not hold one number per trial (event times in seconds)")
            raise UsageError(f"data.events: {problem}; numeric columns: {listing(numeric)}, or --set data.events=[]")
        if name not in chosen:
            chosen.append(name)
    lengths = windows.lengths if windows.lengths is not None else np.full(windows.rows.size, windows.n_bins)
    return {name: event_bins(times(name), windows.starts, bin_s, lengths) for name in chosen}


def _event_times(windows: Windows, name: str) -> np.ndarray | None:
    """[trial] float64 values of a numeric column for the loaded trials, or None when the column does not
    hold one number per row."""
    values = _optional_column(windows, name)
    return values.astype(np.float64) if values is not None and values.dtype.kind in "iuf" else None


def _optional_column(windows: Windows, name: str) -> np.ndarray | None:
    """[trial] values of column `name` for the loaded trials, or None when it does not hold one value
    per row."""
    try:
        return read_column(windows.table, name, f"interval table '{windows.source}'")[windows.rows]
    except UsageError:
        return None
