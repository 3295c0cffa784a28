"""The units selection language of data.units: 'col', 'not col' or 'col OP value'.

One comparison on one column of the units table, e.g. `quality == "good"`, `snr > 3` or `not noise`.
It is parsed with a regex and compared with numpy, never evaluated as Python: the option comes from
config files and the command line.
"""

from __future__ import annotations

import operator
import re

import numpy as np

from xfads_cli.data.nwb.columns import read_column
from xfads_cli.errors import UsageError, closest, listing

_SELECT = re.compile(
    r"^\s*(?P<neg>not\s+|!)?\s*(?P<col>[A-Za-z_][\w.]*)\s*"
    r"(?:(?P<op>==|!=|>=|<=|>|<)\s*(?P<val>\"[^\"]*\"|'[^']*'|[\w.+\-]+))?\s*$"
)
_OPS = {"==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_SELECT_HELP = "write 'column' (a boolean column), 'column == \"value\"' or 'column > number'"


def select_units(table, expr: str) -> np.ndarray:
    """[row] bool mask of `expr`: 'col', 'not col', or 'col OP value' with OP one of == != > >= < <=."""
    match = _SELECT.match(expr)
    if not match or (match["neg"] and match["op"]):
        raise UsageError(f"cannot parse units selection '{expr}'; {_SELECT_HELP}")
    name, op, raw = match["col"], match["op"], match["val"]
    columns = [c for c in table.colnames if c not in ("spike_times", "obs_intervals")]
    if name not in table.colnames:
        raise UsageError(
            f"units selection '{expr}': no units column '{name}'{closest(name, columns)};"
            f" available columns: {listing(columns)}"
        )
    values = read_column(table, name, "units")
    if op is None:
        if values.dtype.kind != "b":
            raise UsageError(
                f"units column '{name}' is not boolean; compare it instead, e.g. '{name} == \"good\"' or '{name} > 3'"
            )
        return ~values if match["neg"] else values.astype(bool)
    return _compare(values, name, op, raw)


def _compare(values: np.ndarray, name: str, op: str, raw: str) -> np.ndarray:
    """values OP raw, with raw read as the column's kind of value (text, boolean or number)."""
    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
    value = raw[1:-1] if quoted else raw
    if values.dtype.kind == "O":  # strings: equality only, compared as text
        if op not in ("==", "!="):
            raise UsageError(f"units column '{name}' holds text; only == and != work on it, e.g. '{name} == \"good\"'")
        return _OPS[op](values.astype(str), value)
    if values.dtype.kind == "b":
        if quoted or value.lower() not in ("true", "false", "1", "0") or op not in ("==", "!="):
            raise UsageError(f"units column '{name}' is boolean; write '{name}', 'not {name}' or '{name} == true'")
        return _OPS[op](values, value.lower() in ("true", "1"))
    if values.dtype.kind in "iuf":
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"units column '{name}' is numeric; compare it with a number, e.g. '{name} > 3'") from None
        with np.errstate(invalid="ignore"):
            return _OPS[op](values.astype(np.float64), number)
    raise UsageError(f"units column '{name}' has values of type {values.dtype} that cannot be compared; {_SELECT_HELP}")
