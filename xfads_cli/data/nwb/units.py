"""The units table: spike times checked and copied out, the data.units selection, held-out neurons.

Spike times are read as one flat column and split by its index (per-row access through pynwb is
orders of magnitude slower on 10^5 spikes); implausible times are a BadFile naming the unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xfads_cli.config import DataConfig
from xfads_cli.data.nwb.columns import read_column, text
from xfads_cli.data.nwb.query import select_units
from xfads_cli.data.selection import choose_heldout
from xfads_cli.errors import BadFile, UsageError, dtype_kind

# Times beyond this (seconds, ~300 years) are corrupt values, not a recording: float64 cannot even
# tell spikes 10 us apart there.
MAX_TIME_S = 1e10


@dataclass
class Units:
    """The selected units of a file, copied out of it.

    ids:     [neuron] unit ids as strings
    rows:    [neuron] their rows in the units table (ground-truth columns follow these rows)
    spikes:  per selected unit, spike times in seconds
    obs:     per selected unit, [k, 2] observation intervals in seconds, or None for no such column
    n_rows:  units in the table before selection
    t_first, t_last: first and last spike of any unit (widened by obs_intervals), seconds
    table:   the pynwb units table (valid only while the file is open)
    """

    ids: np.ndarray
    rows: np.ndarray
    spikes: list[np.ndarray]
    obs: list[np.ndarray] | None
    n_rows: int
    t_first: float
    t_last: float
    table: object


def read_units(nwb, selection: str | None) -> Units:
    """The units `selection` (a data.units expression, query.py; None: all) picks, with their spikes."""
    table = nwb.units
    if table is None:
        raise UsageError("the file has no units table (/units); xfads needs sorted spike times per unit")
    n_rows = len(table)
    if n_rows == 0:
        raise UsageError("the units table has no units; xfads needs at least one unit with spikes")
    if "spike_times" not in table.colnames:
        raise UsageError("the units table has no spike_times column; xfads needs sorted spike times per unit")
    unit_ids = np.asarray(table.id.data[:])
    _check_unique_ids(unit_ids)
    spikes = _spike_times(table, unit_ids)
    obs = _ragged(table, "obs_intervals") if "obs_intervals" in table.colnames else None
    if obs is not None:
        obs = [np.asarray(iv, dtype=np.float64).reshape(-1, 2) for iv in obs]
    t_first, t_last = _time_span(spikes, obs, n_rows)
    rows = _selected_rows(table, selection, spikes, n_rows)
    return Units(
        ids=np.array([text(i) for i in unit_ids[rows]]),
        rows=rows,
        spikes=[spikes[r] for r in rows],
        obs=None if obs is None else [obs[r] for r in rows],
        n_rows=n_rows,
        t_first=t_first,
        t_last=t_last,
        table=table,
    )


def _time_span(spikes: list[np.ndarray], obs: list[np.ndarray] | None, n_rows: int) -> tuple[float, float]:
    """First and last spike of any unit, widened by the observation intervals."""
    # _spike_times let only finite times through; per-unit extremes avoid a copy of every spike
    nonempty = [t for t in spikes if len(t)]
    if not nonempty:
        raise UsageError(f"the units table has {n_rows} units but no spikes; nothing to model")
    t_first, t_last = min(float(t.min()) for t in nonempty), max(float(t.max()) for t in nonempty)
    if obs is not None and any(len(iv) for iv in obs):
        bounds = np.concatenate(obs)
        t_first, t_last = min(t_first, float(np.nanmin(bounds))), max(t_last, float(np.nanmax(bounds)))
    return t_first, t_last


def _selected_rows(table, selection: str | None, spikes: list[np.ndarray], n_rows: int) -> np.ndarray:
    """The rows of the units table `selection` keeps: at least one, with at least one spike among them."""
    rows = np.arange(n_rows)
    if selection:
        rows = rows[select_units(table, selection)]
        if rows.size == 0:
            raise UsageError(f"units selection '{selection}' matches none of the {n_rows} units; loosen data.units")
        if sum(len(spikes[r]) for r in rows) == 0:
            raise UsageError(f"the {rows.size} units matching '{selection}' have no spikes; loosen data.units")
    return rows


def _ragged(table, name: str) -> list[np.ndarray]:
    """A ragged column as one array per row. Reads the flat data and the index once and splits them:
    per-row access through pynwb is orders of magnitude slower on 10^5 spikes."""
    values, ends = _ragged_parts(table, name)
    return np.split(values, ends[:-1])


def _ragged_parts(table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, [row] end of each row in them) of a ragged column; a non-ragged column has one
    value per row. A corrupt index (decreasing, or pointing past the data) is a BadFile."""
    from hdmf.common.table import VectorIndex

    data = table[name]
    if not isinstance(data, VectorIndex):  # a non-ragged column: one value per row
        values = np.asarray(data.data[:])
        return values, np.arange(1, len(values) + 1)
    ends = np.asarray(data.data[:])
    if ends.dtype.kind not in "iu" or ends.ndim != 1:
        raise BadFile(f"units column '{name}' has a corrupt index ({name}_index holds {ends.dtype} {ends.shape});"
                      " the file is malformed, re-export it")
    ends = ends.astype(np.int64)
    n_data = len(data.target.data)
    if len(ends) and (ends[0] < 0 or np.any(np.diff(ends) < 0) or ends[-1] > n_data):
        raise BadFile(
            f"units column '{name}' has a corrupt index: {name}_index must rise from 0 to the {n_data} stored"
            f" values but goes from {ends[0]} to {ends[-1]}{' and decreases' if np.any(np.diff(ends) < 0) else ''};"
            " the file is malformed, re-export it"
        )
    return np.asarray(data.target.data[: int(ends[-1]) if len(ends) else 0]), ends


def _check_unique_ids(ids: np.ndarray) -> None:
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = values[np.argmax(counts > 1)]
        raise BadFile(
            f"the units table ids are not unique: id {text(dup)} appears {counts.max()} times; every unit needs"
            " its own id, fix units/id"
        )


def _spike_times(table, unit_ids: np.ndarray) -> list[np.ndarray]:
    """[unit] spike times in seconds (float64), after checking that they are plausible times:
    numbers, not NaN or infinite, not negative, not beyond MAX_TIME_S."""
    values, ends = _ragged_parts(table, "spike_times")
    if values.ndim != 1:
        raise BadFile(
            f"units.spike_times has shape {values.shape}; it must hold one spike time (seconds) per entry"
        )
    if values.dtype.kind not in "iuf":
        raise BadFile(f"units.spike_times holds {dtype_kind(values.dtype)}, not spike times; they must be seconds as numbers")
    # no [spike]-sized temporaries beyond one mask at a time: an hour of 1000 units is ~10^7 spikes
    values = values.astype(np.float64, copy=False)
    for bad, what, fix in (
        (np.isnan(values), "NaN spike time{s}", "remove or fix those spikes"),
        (np.isinf(values), "infinite spike time{s} (e.g. {value:g})", "remove or fix those spikes"),
        (values < 0, "negative spike time{s} (e.g. {value:g} s)",
         "NWB spike times are seconds from the session start (>= 0); shift the times or remove those spikes"),
        (values > MAX_TIME_S, f"spike time{{s}} beyond {MAX_TIME_S:g} s (~300 years; e.g. {{value:g}} s)",
         "spike times are seconds from the session start; fix or remove those spikes"),
    ):
        if bad.any():
            first = int(np.argmax(bad))
            row = int(np.searchsorted(ends, first, side="right"))  # the units-table row holding spike `first`
            count = int(np.sum(bad[(ends[row - 1] if row else 0):ends[row]]))
            raise BadFile(
                f"units.spike_times of unit {text(unit_ids[row])} has {count} "
                + what.format(s="s" if count > 1 else "", value=values[first]) + f"; {fix}"
            )
    return np.split(values, ends[:-1])


def read_heldout(cfg: DataConfig, units: Units) -> np.ndarray:
    """[neuron] bool: explicit ids, else a seeded random fraction, else a boolean units column
    (the shared rule of `choose_heldout`; the column is read only when it decides)."""
    values = None
    uses_column = not cfg.heldout_units and not cfg.heldout_fraction > 0
    if uses_column and cfg.heldout_column in units.table.colnames:
        values = read_column(units.table, cfg.heldout_column, "units")[units.rows]
        if values.dtype.kind not in "biu" or not np.isin(values, (0, 1)).all():
            raise UsageError(
                f"units column '{cfg.heldout_column}' is not boolean, so it cannot mark held-out units;"
                " set data.heldout_column to a boolean column (or to a name that does not exist)"
            )
    return choose_heldout(units.ids, cfg, values)
