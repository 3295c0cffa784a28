"""Read NWB files into `SpikeData` (`load_nwb`) and summarise them for `xfads inspect` (`describe_nwb`).

Spike times come from the units table, trials from an interval table ('trials' or any
/intervals/<name>) or, without one, from fixed windows chopped out of the whole recording.
Behaviour is any TimeSeries in processing/* or acquisition, averaged onto the same bins.
Files written by `xfads simulate` also carry a `ground_truth` processing module, loaded into
`SpikeData.truth`.

Everything is copied into numpy arrays while the file is open; no pynwb object escapes this module.
"""

from __future__ import annotations

import json
import operator
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from xfads_cli.config import DataConfig
from xfads_cli.data.binning import bin_edges, bin_spikes, observed_bins, resample, window_starts
from xfads_cli.data.conditions import AUTO, BOUNDS, auto_condition, auto_events, event_bins
from xfads_cli.data.provenance import source_provenance
from xfads_cli.data.selection import choose_heldout
from xfads_cli.data.source import RemoteSource, is_remote, parse_source, source_text
from xfads_cli.data.spikedata import SpikeData, assign_split
from xfads_cli.errors import BadFile, UsageError, closest, dtype_kind, listing

TRUTH_MODULE = "ground_truth"
BIN_CHOICES_MS = (20, 50, 100)
# Population spikes per bin that `describe_nwb` aims for: the latent state is inferred from the
# whole population, so what matters is how many spikes all units fire together in one bin.
SPIKES_PER_BIN = 5.0
_EPS = 1e-9  # float slack for window edges computed from ms options
# Times beyond this (seconds, ~300 years) are corrupt values, not a recording: float64 cannot even
# tell spikes 10 us apart there.
MAX_TIME_S = 1e10
# Largest [trial, time, neuron] count array loading may build (8 GB as float32): beyond it the options
# (a tiny data.bin_ms, a huge window) or corrupt times are at fault, and numpy would fail or swap.
MAX_COUNTS = 2_000_000_000


# --------------------------------------------------------------------------------------------------
# Public API


def load_nwb(path: Path, cfg: DataConfig = DataConfig()) -> SpikeData:
    """Bin the units of an NWB file into trials as `cfg` says.

    Returns SpikeData with counts [trial, time, neuron] (NaN where a bin is not fully inside a unit's
    obs_intervals), behavior [trial, time, dim] when `cfg.behavior` names series, and for simulated
    files truth 'latents' [trial, time, latent], 'rates' [trial, time, neuron] in expected counts per
    bin and, when the bin is a whole multiple of the simulation bin, 'retest_counts'.
    Raises UsageError for anything the user can fix (paths, options, malformed files).
    """
    path = parse_source(path)
    if not (cfg.bin_ms > 0 and np.isfinite(cfg.bin_ms)):
        raise UsageError(f"data.bin_ms must be positive and finite, got {cfg.bin_ms}; e.g. --set data.bin_ms=20")
    bin_s = cfg.bin_ms / 1000.0
    notes: list[str] = []  # user warnings, issued after pynwb's own warnings are no longer muted
    with _open_nwb(path) as (io, nwb):
        units = _read_units(nwb, cfg.units)
        series = [_find_series(nwb, name) for name in cfg.behavior]
        times = [_series_times(ts) for _, _, ts in series]
        behaviour_end = max((float(np.nanmax(t)) for t in times if len(t)), default=-np.inf)
        windows = _trial_windows(nwb, cfg, units, behaviour_end, notes)
        edges = bin_edges(windows.starts, windows.n_bins, bin_s)
        behavior, behavior_names = _resample_behaviour(series, times, edges)
        truth, simulation = _read_truth(nwb, edges, cfg.bin_ms, units, notes)
        conditions, condition_column = _conditions(windows, cfg.condition)
        events = _events(windows, cfg.events, bin_s)
        heldout = _heldout(cfg, units)
        nwb_version = _nwb_version(io)
    for note in notes:
        warnings.warn(note, stacklevel=2)

    counts = bin_spikes(units.spikes, edges)
    if units.obs is not None:
        for j, intervals in enumerate(units.obs):
            counts[:, :, j][~observed_bins(intervals, edges)] = np.nan
    outside = _outside_trials(windows)
    for arr in (counts, behavior, *truth.values()):
        if arr is not None:
            arr[outside] = np.nan  # spikes (and samples) before or after a trial are not its own

    provenance = {
        **source_provenance(path),
        "format": "nwb",
        "nwb_version": nwb_version,
        "trials_from": windows.source,
        "condition": condition_column,
        "events": list(events),
    }
    if simulation is not None:
        provenance["simulation"] = simulation
    return SpikeData(
        counts=counts,
        bin_ms=float(cfg.bin_ms),
        unit_ids=units.ids,
        trial_ids=windows.trial_ids,
        split=assign_split(len(windows.starts), cfg.split, cfg.split_seed),
        session=cfg.session or path.stem,
        heldout=heldout,
        behavior=behavior,
        behavior_names=behavior_names,
        start_s=windows.starts,
        truth=truth,
        conditions=conditions,
        provenance=provenance,
        lengths=windows.lengths,
        events=events,
    )


def describe_nwb(path: Path) -> dict:
    """Plain JSON-serialisable summary of an NWB file for `xfads inspect`.

    Per-unit mean rates are spikes / observed time, where observed time is the unit's
    obs_intervals when given, else the recording's active time: the span from first to last spike
    (any unit) minus pauses, i.e. gaps between consecutive spikes of all units merged that are
    longer than max(10 s, 50 x the median such gap). That keeps files holding only a few trials
    cut from a long session (e.g. mc_maze_2trials) from reporting near-zero rates.

    suggested_bin_ms: the smallest of 20, 50, 100 ms at which the whole population fires at least
    5 spikes per bin on average (100 ms when none does).

    defaults: what `load_nwb(path, DataConfig())` would produce (trials source, trial and bin
    counts), or the error it would raise.
    """
    path = parse_source(path)
    with _open_nwb(path) as (io, nwb):
        info = {
            "path": source_text(path),
            "identifier": _text(nwb.identifier),
            "session_description": _text(nwb.session_description),
            "nwb_version": _nwb_version(io),
        }
        units = None
        try:
            units = _read_units(nwb, None)
            info["units"] = _describe_units(units)
        except BadFile:
            raise
        except UsageError as exc:
            info["units"] = {"count": 0, "error": str(exc)}
        info["intervals"] = {
            name: {"rows": len(table), "columns": list(table.colnames)}
            for name, table in _interval_tables(nwb).items()
        }
        info["behavior"] = [_describe_series(p, ts) for p, ts in _all_series(nwb)]
        info["ground_truth"] = _describe_truth(nwb)
        active = info["units"].get("active_s") or 0.0
        population_rate = info["units"].get("total_spikes", 0) / active if active > 0 else 0.0
        info["suggested_bin_ms"] = suggest_bin_ms(population_rate)
        info["defaults"] = _describe_defaults(nwb, units)
    return info


def suggest_bin_ms(population_rate_hz: float) -> int:
    """Smallest bin of BIN_CHOICES_MS where a population firing `population_rate_hz` spikes per second
    in total expects at least SPIKES_PER_BIN spikes per bin; the largest choice when none does."""
    for bin_ms in BIN_CHOICES_MS:
        if population_rate_hz * bin_ms / 1000.0 >= SPIKES_PER_BIN:
            return bin_ms
    return BIN_CHOICES_MS[-1]


# --------------------------------------------------------------------------------------------------
# Opening the file


@contextmanager
def _open_nwb(path: Path | RemoteSource):
    """Yield (io, nwbfile), closing the file afterwards. pynwb's warnings are muted throughout: real
    files trigger many harmless ones (e.g. OpticalSeries checks) that would flood the terminal.
    A remote recording (data/source.py) is read through an h5py.File over its byte ranges."""
    from pynwb import NWBHDF5IO

    if not is_remote(path) and not path.exists():
        raise UsageError(f"file not found: {path}; check the path (an .nwb file is expected)")
    if not is_remote(path) and not path.is_file():
        raise UsageError(f"{path} is a directory, not an NWB file; pass the path of an .nwb file")
    with warnings.catch_warnings(), _remote_hdf5(path) as remote:
        warnings.simplefilter("ignore")
        try:
            io = NWBHDF5IO(str(path), "r") if remote is None else NWBHDF5IO(file=remote, mode="r")
        except OSError as exc:
            raise BadFile(
                f"cannot open {path.name} as HDF5 ({_first_line(exc)}); expected an NWB 2.x file"
                " (HDF5) as written by pynwb or MatNWB"
            ) from None
        try:
            try:
                nwb = io.read()
            except Exception as exc:  # any failure here is the file's: not NWB, truncated, bad schema
                raise BadFile(
                    f"{path.name} is not a readable NWB file ({_read_error(exc)});"
                    " expected an NWB 2.x file (HDF5) as written by pynwb or MatNWB"
                ) from None
            try:
                yield io, nwb
            except OSError as exc:  # pynwb reads lazily: a damaged dataset fails only when it is read
                raise BadFile(
                    f"cannot read {path.name} ({_first_line(exc)}); the file is damaged (truncated or corrupt),"
                    " copy it again"
                ) from None
        finally:
            io.close()


@contextmanager
def _remote_hdf5(path):
    """None for a local file (pynwb opens it by name), else the remote file's h5py.File."""
    if not is_remote(path):
        yield None
        return
    from xfads_cli.data.remote import open_hdf5

    try:
        with open_hdf5(path) as f:
            yield f
    except OSError as exc:  # h5py's own failure to open it (a network failure is a RemoteError)
        raise BadFile(f"cannot open {path.name} as HDF5 ({_first_line(exc)}); expected an NWB 2.x file"
                      " (HDF5) as written by pynwb or MatNWB") from None


def _nwb_version(io) -> str | None:
    version = getattr(io, "nwb_version", None)
    if isinstance(version, tuple):
        version = version[0]
    return _text(version) if version is not None else None


# --------------------------------------------------------------------------------------------------
# Units


@dataclass
class _Units:
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


def _read_units(nwb, selection: str | None) -> _Units:
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

    # _spike_times let only finite times through; per-unit extremes avoid a copy of every spike
    nonempty = [t for t in spikes if len(t)]
    if not nonempty:
        raise UsageError(f"the units table has {n_rows} units but no spikes; nothing to model")
    t_first, t_last = min(float(t.min()) for t in nonempty), max(float(t.max()) for t in nonempty)
    if obs is not None and any(len(iv) for iv in obs):
        bounds = np.concatenate(obs)
        t_first, t_last = min(t_first, float(np.nanmin(bounds))), max(t_last, float(np.nanmax(bounds)))

    rows = np.arange(n_rows)
    if selection:
        rows = rows[_select_units(table, selection)]
        if rows.size == 0:
            raise UsageError(f"units selection '{selection}' matches none of the {n_rows} units; loosen data.units")
        if sum(len(spikes[r]) for r in rows) == 0:
            raise UsageError(f"the {rows.size} units matching '{selection}' have no spikes; loosen data.units")
    ids = np.array([_text(i) for i in unit_ids[rows]])
    return _Units(
        ids=ids,
        rows=rows,
        spikes=[spikes[r] for r in rows],
        obs=None if obs is None else [obs[r] for r in rows],
        n_rows=n_rows,
        t_first=t_first,
        t_last=t_last,
        table=table,
    )


def _ragged(table, name: str) -> list[np.ndarray]:
    """A ragged column as one array per row. Reads the flat data and the index once and splits them:
    per-row access through pynwb is orders of magnitude slower on 10^5 spikes."""
    values, ends = _ragged_parts(table, name)
    return np.split(values, ends[:-1])


def _ragged_parts(table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, [row] end of each row in them) of a ragged column; a non-ragged column has one
    value per row. A corrupt index (decreasing, or pointing past the data) is a BadFile."""
    from hdmf.common.table import VectorIndex

    column = table[name]
    if not isinstance(column, VectorIndex):  # a non-ragged column: one value per row
        values = np.asarray(column.data[:])
        return values, np.arange(1, len(values) + 1)
    ends = np.asarray(column.data[:])
    if ends.dtype.kind not in "iu" or ends.ndim != 1:
        raise BadFile(f"units column '{name}' has a corrupt index ({name}_index holds {ends.dtype} {ends.shape});"
                      " the file is malformed, re-export it")
    ends = ends.astype(np.int64)
    n_data = len(column.target.data)
    if len(ends) and (ends[0] < 0 or np.any(np.diff(ends) < 0) or ends[-1] > n_data):
        raise BadFile(
            f"units column '{name}' has a corrupt index: {name}_index must rise from 0 to the {n_data} stored"
            f" values but goes from {ends[0]} to {ends[-1]}{' and decreases' if np.any(np.diff(ends) < 0) else ''};"
            " the file is malformed, re-export it"
        )
    return np.asarray(column.target.data[: int(ends[-1]) if len(ends) else 0]), ends


def _check_unique_ids(ids: np.ndarray) -> None:
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = values[np.argmax(counts > 1)]
        raise BadFile(
            f"the units table ids are not unique: id {_text(dup)} appears {counts.max()} times; every unit needs"
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
                f"units.spike_times of unit {_text(unit_ids[row])} has {count} "
                + what.format(s="s" if count > 1 else "", value=values[first]) + f"; {fix}"
            )
    return np.split(values, ends[:-1])


def _column(table, name: str, what: str) -> np.ndarray:
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
        values = np.array([_text(v) for v in values], dtype=object)
    return values


_SELECT = re.compile(
    r"^\s*(?P<neg>not\s+|!)?\s*(?P<col>[A-Za-z_][\w.]*)\s*"
    r"(?:(?P<op>==|!=|>=|<=|>|<)\s*(?P<val>\"[^\"]*\"|'[^']*'|[\w.+\-]+))?\s*$"
)
_OPS = {"==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}
_SELECT_HELP = "write 'column' (a boolean column), 'column == \"value\"' or 'column > number'"


def _select_units(table, expr: str) -> np.ndarray:
    """[row] bool mask of `expr`: 'col', 'not col', or 'col OP value' with OP one of == != > >= < <=.
    Parsed with a regex and compared with numpy; never evaluated as Python."""
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
    values = _column(table, name, "units")
    if op is None:
        if values.dtype.kind != "b":
            raise UsageError(
                f"units column '{name}' is not boolean; compare it instead, e.g. '{name} == \"good\"' or '{name} > 3'"
            )
        return ~values if match["neg"] else values.astype(bool)

    quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
    text = raw[1:-1] if quoted else raw
    if values.dtype.kind == "O":  # strings: equality only, compared as text
        if op not in ("==", "!="):
            raise UsageError(f"units column '{name}' holds text; only == and != work on it, e.g. '{name} == \"good\"'")
        return _OPS[op](values.astype(str), text)
    if values.dtype.kind == "b":
        if quoted or text.lower() not in ("true", "false", "1", "0") or op not in ("==", "!="):
            raise UsageError(f"units column '{name}' is boolean; write '{name}', 'not {name}' or '{name} == true'")
        return _OPS[op](values, text.lower() in ("true", "1"))
    if values.dtype.kind in "iuf":
        try:
            number = float(text)
        except ValueError:
            raise UsageError(f"units column '{name}' is numeric; compare it with a number, e.g. '{name} > 3'") from None
        with np.errstate(invalid="ignore"):
            return _OPS[op](values.astype(np.float64), number)
    raise UsageError(f"units column '{name}' has values of type {values.dtype} that cannot be compared; {_SELECT_HELP}")


# --------------------------------------------------------------------------------------------------
# Trials


@dataclass
class _Windows:
    """Where the trials are.

    starts:    [trial] window start in seconds
    n_bins:    bins per trial
    trial_ids: [trial] ids: the interval table's id column, or 0..n-1 for chopped windows
    table:     the pynwb interval table, None for chopped windows (valid while the file is open)
    rows:      [trial] the trials' rows in `table`, None for chopped windows
    source:    the table's name, or 'chopped'
    first, lengths: [trial] bins first..lengths-1 lie inside the trial; the others are NaN (before
               its start_time, or past its stop_time: the padding). None: all n_bins inside.
    """

    starts: np.ndarray
    n_bins: int
    trial_ids: np.ndarray
    table: object
    rows: np.ndarray | None
    source: str
    first: np.ndarray | None = None
    lengths: np.ndarray | None = None


def _interval_tables(nwb) -> dict:
    """Every interval table by name: /intervals/* plus 'trials'."""
    tables = dict(nwb.intervals.items()) if nwb.intervals is not None else {}
    if nwb.trials is not None:
        tables["trials"] = nwb.trials
    return tables


def _trial_windows(nwb, cfg: DataConfig, units: _Units, behaviour_end: float, notes: list[str]) -> _Windows:
    tables = _interval_tables(nwb)
    name = cfg.intervals if cfg.intervals is not None else ("trials" if "trials" in tables else None)
    if name is None:
        if cfg.align != "start_time" or cfg.window_ms is not None:
            notes.append("the file has no trials table: data.align and data.window_ms are ignored and the"
                         " recording is chopped into data.chop_ms windows; set data.intervals to use an interval table")
        return _chopped_windows(cfg, units)
    if name not in tables:
        raise UsageError(
            f"no interval table '{name}' in the file{closest(name, tables)}; available: {listing(tables)};"
            " set data.intervals to one of them, or leave it unset to chop the recording into windows"
        )
    return _aligned_windows(tables[name], name, cfg, units, behaviour_end, notes)


def _check_interval_table(table, name: str) -> None:
    """An interval table that cannot define trials whatever the options: no rows, start/stop times
    that are not numbers, infinite, absurdly large, all NaN, or a stop before its start."""
    if len(table) == 0:
        raise BadFile(
            f"interval table '{name}' has no rows, so it defines no trials; fill it or remove it"
            + (" (a file without a trials table is chopped into data.chop_ms windows)" if name == "trials" else "")
        )
    ids = np.asarray(table.id.data[:])
    times = {}
    for column in ("start_time", "stop_time"):
        if column not in table.colnames:
            continue
        values = _column(table, column, f"interval table '{name}'")
        if values.dtype.kind not in "iuf":
            raise BadFile(f"column '{column}' of interval table '{name}' holds {dtype_kind(values.dtype)}, not times in"
                          " seconds; the file is malformed, fix that column")
        values = values.astype(np.float64)
        bad = np.isinf(values) | (np.abs(values) > MAX_TIME_S)
        if bad.any():
            i = int(np.argmax(bad))
            raise BadFile(f"{column} of row {_text(ids[i])} of interval table '{name}' is {values[i]:g} s;"
                          " times are seconds from the session start, fix or remove that row")
        times[column] = values
    if "start_time" in times and np.isnan(times["start_time"]).all():
        raise BadFile(f"every start_time of interval table '{name}' is NaN; the table has no usable row, fix it")
    if len(times) == 2:
        backwards = times["stop_time"] < times["start_time"]
        if backwards.any():
            i = int(np.argmax(backwards))
            raise BadFile(
                f"row {_text(ids[i])} of interval table '{name}' stops before it starts (start_time"
                f" {times['start_time'][i]:g} s, stop_time {times['stop_time'][i]:g} s)"
                f"{f' and so do {int(backwards.sum()) - 1} more' if backwards.sum() > 1 else ''}; fix or remove those rows"
            )


def _check_size(n_trials: int, n_bins: int, n_units: int, cfg: DataConfig, what: str) -> None:
    """Refuse to build a count array too large to be meant (see MAX_COUNTS) before allocating it."""
    cells = float(n_trials) * float(n_bins) * float(n_units)
    if cells > MAX_COUNTS:
        raise UsageError(
            f"{what} at data.bin_ms={cfg.bin_ms:g} give {float(n_trials):.3g} trials x {float(n_bins):.3g} bins x"
            f" {n_units} units = {cells:.3g} counts ({cells * 4 / 1e9:.3g} GB); raise data.bin_ms"
            " (e.g. --set data.bin_ms=20) or use shorter windows"
        )


def _aligned_windows(table, name: str, cfg: DataConfig, units: _Units, behaviour_end: float, notes) -> _Windows:
    """Trials from the rows of an interval table: with data.trial_lengths 'own' each keeps its own
    bins (see _own_windows), with 'shortest' all get the same window around data.align."""
    _check_interval_table(table, name)
    columns = list(table.colnames)
    if cfg.align not in columns:
        raise UsageError(
            f"interval table '{name}' has no column '{cfg.align}'{closest(cfg.align, columns)};"
            f" set data.align to one of: {listing(columns)}"
        )
    align = _numeric_column(table, cfg.align, name)
    bounds = [_numeric_column(table, c, name) if c in columns else np.full(len(align), np.nan)
              for c in ("start_time", "stop_time")]
    rows = np.flatnonzero(np.isfinite(align))
    if rows.size < len(align):
        dropped = len(align) - rows.size
        notes.append(f"dropped {dropped} of {len(align)} trials of '{name}' that have no '{cfg.align}' time")
    if rows.size == 0:
        raise UsageError(f"no trial of '{name}' has a '{cfg.align}' time; choose another data.align column")
    if cfg.window_ms is not None:
        w0, w1 = (float(w) / 1000.0 for w in cfg.window_ms)
        if not w1 > w0:
            raise UsageError(f"data.window_ms must be [start, stop] with stop > start, got {list(cfg.window_ms)}")
    ids = np.asarray(table.id.data[:]).astype(np.int64)
    trial = _TrialTimes(align, *bounds, rows)
    if cfg.trial_lengths == "own":
        windows = _own_windows(trial, name, cfg, notes)
    else:
        windows = _shortest_windows(trial, name, cfg)
    _check_size(windows.rows.size, windows.n_bins, len(units.ids), cfg, f"{windows.rows.size} trial windows of"
                f" up to {windows.n_bins * cfg.bin_ms:g} ms")
    _check_inside_recording(windows, trial, name, cfg, units, behaviour_end)
    return replace(windows, trial_ids=ids[windows.rows], table=table, source=name)


@dataclass
class _TrialTimes:
    """[row] align, start_time and stop_time (s; NaN where unknown) of an interval table, and the
    rows with an align time."""

    align: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    rows: np.ndarray


def _shortest_windows(trial: _TrialTimes, name: str, cfg: DataConfig) -> _Windows:
    """The same window for every trial: data.window_ms around align, else [0, shortest duration]."""
    rows, bin_s = trial.rows, cfg.bin_ms / 1000.0
    if cfg.window_ms is not None:
        w0, w1 = (float(w) / 1000.0 for w in cfg.window_ms)
    else:
        durations = trial.stop[rows] - trial.align[rows]
        w0, w1 = 0.0, float(np.nanmin(durations)) if np.isfinite(durations).any() else np.nan
        if not w1 > 0:
            raise UsageError(
                f"cannot take the window from the trial durations of '{name}' (no trial has stop_time after"
                f" '{cfg.align}'); set data.window_ms, e.g. [-200, 500]"
            )
    n_bins = int(np.floor((w1 - w0) / bin_s + _EPS))
    if n_bins < 1:
        raise UsageError(
            f"the trial window ({(w1 - w0) * 1e3:g} ms) is shorter than one bin ({cfg.bin_ms:g} ms);"
            " widen data.window_ms or lower data.bin_ms"
        )
    full = np.full(rows.size, n_bins, dtype=np.int64)
    return _Windows(starts=trial.align[rows] + w0, n_bins=n_bins, trial_ids=rows, table=None, rows=rows,
                    source=name, first=np.zeros_like(full), lengths=full)


def _own_windows(trial: _TrialTimes, name: str, cfg: DataConfig, notes) -> _Windows:
    """Each trial from its align time to its own stop_time, or data.window_ms around align clipped
    to the trial's start_time..stop_time: only whole bins inside the trial are kept (first..lengths),
    the rest are NaN. The array is as long as the longest trial (or the window); trials without a
    whole bin inside are dropped with a note."""
    bin_s = cfg.bin_ms / 1000.0
    if cfg.window_ms is not None:
        w0, w1 = (float(w) / 1000.0 for w in cfg.window_ms)
        n_bins = int(np.floor((w1 - w0) / bin_s + _EPS))
        if n_bins < 1:
            raise UsageError(f"the trial window ({(w1 - w0) * 1e3:g} ms) is shorter than one bin ({cfg.bin_ms:g} ms);"
                             " widen data.window_ms or lower data.bin_ms")
    else:
        w0 = 0.0
        n_bins = _longest(trial, name, cfg)
    starts = trial.align + w0
    with np.errstate(invalid="ignore"):  # NaN start or stop: that side is not clipped
        first = np.ceil((trial.start - starts) / bin_s - _EPS)
        last = np.floor((trial.stop - starts) / bin_s + _EPS)
    first = np.clip(np.nan_to_num(first, nan=0.0), 0, n_bins).astype(np.int64)
    last = np.clip(np.nan_to_num(last, nan=float(n_bins) if cfg.window_ms is not None else 0.0), 0, n_bins)
    last = last.astype(np.int64)
    rows = trial.rows[last[trial.rows] > first[trial.rows]]
    if rows.size < trial.rows.size:
        notes.append(f"dropped {trial.rows.size - rows.size} of {trial.rows.size} trials of '{name}' without a whole"
                     f" {cfg.bin_ms:g} ms bin between their start_time and stop_time"
                     + (" inside data.window_ms" if cfg.window_ms is not None else f" after '{cfg.align}'"))
    if rows.size == 0:
        raise UsageError(f"no trial of '{name}' has a whole {cfg.bin_ms:g} ms bin inside it; lower data.bin_ms"
                         + (" or widen data.window_ms" if cfg.window_ms is not None else " or set data.window_ms"))
    if cfg.window_ms is None:
        n_bins = int(last[rows].max())
    return _Windows(starts=starts[rows], n_bins=n_bins, trial_ids=rows, table=None, rows=rows, source=name,
                    first=first[rows], lengths=last[rows])


def _longest(trial: _TrialTimes, name: str, cfg: DataConfig) -> int:
    """Bins of the longest trial from its align time to its stop_time (an upper bound of every trial's)."""
    durations = trial.stop[trial.rows] - trial.align[trial.rows]
    longest = float(np.nanmax(durations)) if np.isfinite(durations).any() else np.nan
    if not longest > 0:
        raise UsageError(
            f"cannot take the trials' lengths from '{name}' (no trial has stop_time after '{cfg.align}');"
            " set data.window_ms, e.g. [-200, 500]"
        )
    return max(int(np.floor(longest / (cfg.bin_ms / 1000.0) + _EPS)), 1)


def _check_inside_recording(windows: _Windows, trial: _TrialTimes, name: str, cfg: DataConfig, units: _Units,
                            behaviour_end: float) -> None:
    """UsageError when a window data.window_ms asks for leaves the recording (even where trial_lengths
    own clips it: so large a window is a mistake), or a trial's own bins do (not its padding)."""
    bin_s = cfg.bin_ms / 1000.0
    lo = windows.starts + (0 if cfg.window_ms is not None else windows.first) * bin_s
    hi = windows.starts + (windows.n_bins if cfg.window_ms is not None else windows.lengths) * bin_s
    stop = trial.stop
    rec_start = min(0.0, units.t_first)
    rec_end = max(units.t_last, float(np.nanmax(stop)) if np.isfinite(stop).any() else -np.inf, behaviour_end)
    outside = (lo < rec_start - _EPS) | (hi > rec_end + _EPS)
    if outside.any():
        w1 = windows.n_bins * bin_s
        window = list(cfg.window_ms) if cfg.window_ms is not None else [0, round(w1 * 1e3, 3)]
        raise UsageError(
            f"{int(outside.sum())} of {windows.rows.size} trial windows of '{name}' ({window} ms around '{cfg.align}')"
            f" extend outside the recording ({rec_start:.3f} to {rec_end:.3f} s); shorten data.window_ms"
        )


def _outside_trials(windows: _Windows) -> np.ndarray:
    """[trial, time] bool: the bins outside each trial (before `first`, from `lengths` on)."""
    n_trial = len(windows.starts)
    if windows.lengths is None:
        return np.zeros((n_trial, windows.n_bins), dtype=bool)
    bins = np.arange(windows.n_bins)[None, :]
    return (bins < windows.first[:, None]) | (bins >= windows.lengths[:, None])


def _chopped_windows(cfg: DataConfig, units: _Units) -> _Windows:
    # 'auto' finds nothing in windows chopped from a continuous recording; a named column is a mistake
    if cfg.condition not in (None, AUTO):
        raise UsageError(
            f"data.condition='{cfg.condition}' needs an interval table, but the file has no trials table;"
            " set data.intervals or unset data.condition"
        )
    named = [e for e in cfg.events if e != AUTO]
    if named:
        raise UsageError(
            f"data.events {listing(named)} need an interval table, but the file has no trials table;"
            " set data.intervals or set data.events=[]"
        )
    if not cfg.chop_ms > 0 or not 0 <= cfg.overlap_ms < cfg.chop_ms:
        raise UsageError(
            f"data.chop_ms must be positive and 0 <= data.overlap_ms < data.chop_ms, got {cfg.chop_ms:g}"
            f" and {cfg.overlap_ms:g}"
        )
    n_bins = int(np.floor(cfg.chop_ms / cfg.bin_ms + _EPS))
    if n_bins < 1:
        raise UsageError(
            f"data.chop_ms ({cfg.chop_ms:g}) is shorter than one bin ({cfg.bin_ms:g} ms); raise data.chop_ms"
        )
    step_s = (cfg.chop_ms - cfg.overlap_ms) / 1000.0
    n_windows = max(np.floor((units.t_last - units.t_first - cfg.chop_ms / 1000.0) / step_s + 1e-9) + 1, 0)
    _check_size(n_windows, n_bins, len(units.ids), cfg,
                f"{units.t_last - units.t_first:g} s of recording chopped into {cfg.chop_ms:g} ms windows")
    starts = window_starts(units.t_first, units.t_last, cfg.chop_ms / 1000.0, cfg.overlap_ms / 1000.0)
    if starts.size == 0:
        raise UsageError(
            f"the recording ({units.t_last - units.t_first:.3f} s) is shorter than one window of"
            f" data.chop_ms={cfg.chop_ms:g}; lower data.chop_ms"
        )
    ids = np.arange(starts.size)
    return _Windows(starts=starts, n_bins=n_bins, trial_ids=ids, table=None, rows=None, source="chopped")


def _numeric_column(table, column: str, name: str) -> np.ndarray:
    values = _column(table, column, f"interval table '{name}'")
    if values.dtype.kind not in "iuf":
        raise UsageError(f"column '{column}' of '{name}' is not numeric (seconds); set data.align to a time column")
    return values.astype(np.float64)


def _conditions(windows: _Windows, column: str | None) -> tuple[np.ndarray | None, str | None]:
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
    values = _column(windows.table, column, f"interval table '{windows.source}'")[windows.rows]
    return np.array([_label(v) for v in values]), column


def _events(windows: _Windows, names: tuple[str, ...], bin_s: float) -> dict[str, np.ndarray]:
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


def _event_times(windows: _Windows, name: str) -> np.ndarray | None:
    """[trial] float64 values of a numeric column for the loaded trials, or None when the column does not
    hold one number per row."""
    values = _optional_column(windows, name)
    return values.astype(np.float64) if values is not None and values.dtype.kind in "iuf" else None


def _optional_column(windows: _Windows, name: str) -> np.ndarray | None:
    """[trial] values of column `name` for the loaded trials, or None when it does not hold one value
    per row."""
    try:
        return _column(windows.table, name, f"interval table '{windows.source}'")[windows.rows]
    except UsageError:
        return None


# --------------------------------------------------------------------------------------------------
# Held-out neurons


def _heldout(cfg: DataConfig, units: _Units) -> np.ndarray:
    """[neuron] bool: explicit ids, else a seeded random fraction, else a boolean units column
    (the shared rule of `choose_heldout`; the column is read only when it decides)."""
    column = None
    uses_column = not cfg.heldout_units and not cfg.heldout_fraction > 0
    if uses_column and cfg.heldout_column in units.table.colnames:
        column = _column(units.table, cfg.heldout_column, "units")[units.rows]
        if column.dtype.kind not in "biu" or not np.isin(column, (0, 1)).all():
            raise UsageError(
                f"units column '{cfg.heldout_column}' is not boolean, so it cannot mark held-out units;"
                " set data.heldout_column to a boolean column (or to a name that does not exist)"
            )
    return choose_heldout(units.ids, cfg, column)


# --------------------------------------------------------------------------------------------------
# Behaviour


def _all_series(nwb, include_truth: bool = False):
    """(path, TimeSeries) for every series in processing/* and acquisition, looking one level into
    containers such as Position or BehavioralTimeSeries."""
    from pynwb import TimeSeries
    from pynwb.core import MultiContainerInterface

    def inside(obj, path):
        if isinstance(obj, TimeSeries):
            yield path, obj
        elif isinstance(obj, MultiContainerInterface):
            for child in obj.children:
                if isinstance(child, TimeSeries):
                    yield f"{path}/{child.name}", child

    for module_name, module in nwb.processing.items():
        if module_name == TRUTH_MODULE and not include_truth:
            continue
        for name, obj in module.data_interfaces.items():
            yield from inside(obj, f"processing/{module_name}/{name}")
    for name, obj in nwb.acquisition.items():
        yield from inside(obj, f"acquisition/{name}")


def _find_series(nwb, name: str):
    """(name, path, TimeSeries) for a behaviour name: a series name ('hand_vel'), the tail of its path
    ('kinematics/hand_vel'), or a container holding exactly one series ('Position')."""
    found = list(_all_series(nwb))
    hits = [(p, ts) for p, ts in found if p == name or p.endswith("/" + name)]
    if not hits:  # a container's name stands for its only series
        hits = [(p, ts) for p, ts in found if (p.rsplit("/", 1)[0] + "/").endswith("/" + name + "/")]
        if len(hits) > 1:
            raise UsageError(
                f"behaviour '{name}' is a container of {len(hits)} series; name one of them:"
                f" {listing(p.rsplit('/', 1)[1] for p, _ in hits)}"
            )
    if not hits:
        names = sorted({p.rsplit("/", 1)[1] for p, _ in found})
        raise UsageError(
            f"no behaviour series '{name}' in processing/* or acquisition{closest(name, names)};"
            f" available: {listing(names)}"
        )
    if len(hits) > 1:
        raise UsageError(
            f"behaviour name '{name}' is ambiguous; give its path instead, one of: {listing(p for p, _ in hits)}"
        )
    path, ts = hits[0]
    if np.dtype(ts.data.dtype).kind not in "biuf":
        raise UsageError(f"behaviour series '{path}' is not numeric ({ts.data.dtype}); choose another series")
    return name, path, ts


def _series_times(ts) -> np.ndarray:
    """[sample] time of every sample of a TimeSeries, in seconds."""
    n = int(ts.data.shape[0])
    if ts.timestamps is not None:
        return np.asarray(ts.timestamps[:], dtype=np.float64)
    start = ts.starting_time if ts.starting_time is not None else 0.0
    return float(start) + np.arange(n) / float(ts.rate)


def _series_values(ts, times: np.ndarray, t_lo: float, t_hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Samples of `ts` covering [t_lo, t_hi] (plus one on each side, for interpolation) as
    (times [sample], values [sample, dim]) in the series' unit (data * conversion + offset).
    Only that slice is read, so an hour of 1 kHz data costs nothing when trials are short."""
    if len(times) > 1 and np.all(np.diff(times) >= 0):
        i0 = max(int(np.searchsorted(times, t_lo, side="left")) - 1, 0)
        i1 = min(int(np.searchsorted(times, t_hi, side="right")) + 1, len(times))
    else:
        i0, i1 = 0, len(times)
    values = np.asarray(ts.data[i0:i1], dtype=np.float64)
    values = values.reshape(len(values), -1) * float(ts.conversion or 1.0) + float(getattr(ts, "offset", 0.0) or 0.0)
    return times[i0:i1], values


def _resample_behaviour(series, times, edges: np.ndarray) -> tuple[np.ndarray | None, list[str]]:
    """behavior [trial, time, dim] (the requested series side by side) and one label per dim."""
    if not series:
        return None, []
    blocks, names = [], []
    for (name, _, ts), t in zip(series, times):
        t_sel, values = _series_values(ts, t, float(edges.min()), float(edges.max()))
        blocks.append(resample(t_sel, values, edges))
        names += [name] if len(ts.data.shape) == 1 else [f"{name}[{i}]" for i in range(values.shape[1])]
    return np.concatenate(blocks, axis=2).astype(np.float32), names


# --------------------------------------------------------------------------------------------------
# Ground truth of simulated files


def _read_truth(nwb, edges: np.ndarray, bin_ms: float, units: _Units, notes) -> tuple[dict, dict | None]:
    """SpikeData.truth from the `ground_truth` module and its parsed JSON description.

    latents [trial, time, latent]; rates [trial, time, neuron] in expected counts per bin (the
    simulation's Hz times the bin); retest_counts [trial, time, neuron] summed over the simulation
    bins inside each bin, only when bin_ms is a whole multiple of the simulation's bin.
    """
    if TRUTH_MODULE not in nwb.processing:
        return {}, None
    module = nwb.processing[TRUTH_MODULE]
    simulation = _parse_simulation(module.description, notes)
    series = module.data_interfaces
    truth = {}
    if "true_latents" in series:
        truth["latents"] = _resample_series(series["true_latents"], edges)
    if "true_rates" in series:
        rates = _resample_series(series["true_rates"], edges, units, notes)
        if rates is not None:
            truth["rates"] = rates * np.float32(bin_ms / 1000.0)
    sim_bin_ms = simulation.get("bin_ms") if isinstance(simulation, dict) else None
    if "retest_counts" in series and isinstance(sim_bin_ms, (int, float)) and sim_bin_ms > 0:
        ratio = bin_ms / float(sim_bin_ms)
        if abs(ratio - round(ratio)) < 1e-6 and round(ratio) >= 1:
            retest = _resample_series(series["retest_counts"], edges, units, notes)
            if retest is not None:
                truth["retest_counts"] = retest * np.float32(round(ratio))
    return truth, simulation


def _parse_simulation(description, notes) -> dict:
    try:
        simulation = json.loads(_text(description))
    except (TypeError, ValueError):
        notes.append(f"the '{TRUTH_MODULE}' module's description is not JSON; simulation parameters are not recorded")
        return {}
    return simulation if isinstance(simulation, dict) else {"description": simulation}


def _resample_series(ts, edges: np.ndarray, units: _Units | None = None, notes=None) -> np.ndarray | None:
    """A ground-truth series on the bins, [trial, time, dim]; with `units`, only the columns of the
    selected units (column j belongs to row j of the units table). None when the columns do not
    match the units table."""
    times = _series_times(ts)
    t_sel, values = _series_values(ts, times, float(edges.min()), float(edges.max()))
    if units is not None:
        if values.shape[1] != units.n_rows:
            notes.append(
                f"ground truth '{ts.name}' has {values.shape[1]} columns but the units table has {units.n_rows}"
                " rows; it is left out"
            )
            return None
        values = values[:, units.rows]
    return resample(t_sel, values, edges)


# --------------------------------------------------------------------------------------------------
# describe_nwb helpers


def _describe_units(units: _Units) -> dict:
    spikes = units.spikes
    n_spikes = np.array([len(s) for s in spikes])
    active = _active_seconds(spikes)
    observed = np.full(len(spikes), active)
    for j, iv in enumerate(units.obs or []):
        if len(iv):
            observed[j] = float(np.sum(iv[:, 1] - iv[:, 0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(observed > 0, n_spikes / observed, 0.0)
    return {
        "count": len(spikes),
        "columns": list(units.table.colnames),
        "total_spikes": int(n_spikes.sum()),
        "start_s": units.t_first,
        "stop_s": units.t_last,
        "duration_s": units.t_last - units.t_first,
        "active_s": active,
        "rate_hz_quantiles": [float(q) for q in np.quantile(rates, [0, 0.25, 0.5, 0.75, 1])],
        "units_below_0.1hz": int(np.sum(rates < 0.1)),
        "has_obs_intervals": units.obs is not None,
    }


def _active_seconds(spikes: list[np.ndarray]) -> float:
    """Recording time with spiking: first-to-last spike minus gaps (all units merged) longer than
    max(10 s, 50 x the median gap), which are taken as pauses between recorded segments."""
    merged = np.sort(np.concatenate(spikes))
    merged = merged[np.isfinite(merged)]
    if merged.size < 2:
        return 0.0
    gaps = np.diff(merged)
    pause = max(10.0, 50.0 * float(np.median(gaps)))
    return float(np.sum(gaps[gaps <= pause]))


def _describe_series(path: str, ts) -> dict:
    entry = {"name": ts.name, "path": path, "shape": [int(n) for n in ts.data.shape], "unit": _text(ts.unit)}
    if ts.timestamps is not None:
        stamps = ts.timestamps
        entry["n_timestamps"] = int(len(stamps))
        if len(stamps):
            entry["time_range_s"] = [float(stamps[0]), float(stamps[len(stamps) - 1])]
    elif ts.rate is not None:
        entry["rate_hz"] = float(ts.rate)
        start = float(ts.starting_time or 0.0)
        entry["time_range_s"] = [start, start + (int(ts.data.shape[0]) - 1) / float(ts.rate)]
    return entry


def _describe_truth(nwb) -> dict | None:
    if TRUTH_MODULE not in nwb.processing:
        return None
    module = nwb.processing[TRUTH_MODULE]
    return {"series": sorted(module.data_interfaces), "simulation": _parse_simulation(module.description, [])}


def _describe_defaults(nwb, units: _Units | None) -> dict:
    cfg = DataConfig()
    if units is None:
        return {"error": "no units to load"}
    try:
        windows = _trial_windows(nwb, cfg, units, -np.inf, [])
    except BadFile:
        raise
    except UsageError as exc:
        return {"error": str(exc)}
    out = {
        "trials_from": "chopped" if windows.table is None else windows.source,
        "n_trials": int(len(windows.starts)),
        "bins_per_trial": windows.n_bins,
        "bin_ms": cfg.bin_ms,
    }
    shorter = 0 if windows.lengths is None else int(np.sum(windows.lengths < windows.n_bins))
    if shorter:  # bins_per_trial is the longest trial's; the others are padded with NaN
        out |= {"shortest_trial_bins": int(windows.lengths.min()), "trials_shorter_than_longest": shorter}
    return out


# --------------------------------------------------------------------------------------------------
# Small helpers


def _text(value) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


def _label(value) -> str:
    """A condition label: numbers without a spurious '.0', everything else as text."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return _text(value)


def _first_line(exc: Exception, limit: int = 200) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _read_error(exc: Exception) -> str:
    """Why pynwb could not read a file, in a few words. hdmf's ConstructError dumps the whole builder
    ("(root/units GroupBuilder {...}, 'Could not construct Units object due to: ...')"); keep the
    object's path and the reason."""
    text = " ".join(str(exc).split())
    reason = re.search(r"Could not construct (\w+) object due to: (.*?)['\"]?\)?$", text)
    if reason:
        where = re.match(r"\(?root(/\S*)?\s", text)
        at = f" at {where[1] or '/'}" if where else ""
        return f"{reason[1]}{at}: {reason[2][:200]}"
    return f"{type(exc).__name__}: {_first_line(exc)}"


# --------------------------------------------------------------------------------------------------
# Continuous sessions (data/recording.py)


def load_nwb_recording(path: Path, cfg: DataConfig = DataConfig()):
    """The session as a `Recording` (spike times, segments) when `cfg` defines no trials on it (no
    trials table and no data.intervals: the recording `load_nwb` chops into windows), else None.
    The units, their selection and the held-out neurons are `load_nwb`'s."""
    from xfads_cli.data.recording import Recording, observed_segments

    path = parse_source(path)
    with _open_nwb(path) as (io, nwb):
        if cfg.intervals is not None or nwb.trials is not None:
            return None
        units = _read_units(nwb, cfg.units)
        heldout = _heldout(cfg, units)
        nwb_version = _nwb_version(io)
    # Finite already (_spike_times). The units' times are views of the one column read, kept as they are
    # when every unit is kept and in order, so the recording holds its spikes once (8 bytes each); a unit
    # selection copies (views would keep the dropped units' spikes alive), as does an out-of-order unit
    # (a stable sort is linear on sorted input).
    whole = len(units.rows) == units.n_rows
    spikes = [t if whole and np.all(t[1:] >= t[:-1]) else np.sort(t, kind="stable")
              for t in (np.asarray(u, dtype=np.float64) for u in units.spikes)]
    provenance = {**source_provenance(path), "format": "nwb",
                  "nwb_version": nwb_version, "trials_from": "continuous"}
    return Recording(spikes=spikes, obs=units.obs, segments=observed_segments(units.t_first, units.t_last, units.obs),
                     unit_ids=units.ids, heldout=heldout, bin_ms=float(cfg.bin_ms), session=cfg.session or path.stem,
                     provenance=provenance)
