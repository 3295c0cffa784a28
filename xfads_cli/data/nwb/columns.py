"""Reading pynwb table columns as numpy: one value per row, text decoded, labels normalised.

Shared by the units table (units.py, select.py) and the interval tables (windows.py, trial_columns.py).
"""

from __future__ import annotations

import numpy as np

from xfads_cli.errors import UsageError


def text(value) -> str:
    """A value read from the file as str: HDF5 hands back bytes and numpy scalars for strings and ids."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


def label(value) -> str:
    """A condition label: numbers without a spurious '.0', everything else as text."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return text(value)


def read_column(table, name: str, what: str) -> np.ndarray:
    """A one-value-per-row column as a numpy array; byte strings are decoded to str."""
    from hdmf.common.table import DynamicTableRegion, VectorIndex

    column = table[name]
    if isinstance(column, (VectorIndex, DynamicTableRegion)):
        raise UsageError(
            f"{what} column '{name}' holds lists or references, not one value per row; pick another column"
        )
    values = np.asarray(column.data[:])
    if values.ndim != 1:
        raise UsageError(f"{what} column '{name}' holds several values per row; pick a column with one value per row")
    if values.dtype.kind in "OSU":
        values = np.array([text(v) for v in values], dtype=object)
    return values
